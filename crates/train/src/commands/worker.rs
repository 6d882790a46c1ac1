//! `train worker`: serves this machine's devices to training runs on other machines, which name
//! it in their `--devices` (`ws://host:port`).

use std::net::{IpAddr, Ipv4Addr, TcpListener};

use anyhow::{Context, Result, bail};

use crate::device::{self, BackendName, DeviceEntry, DeviceList};
use crate::remote::{self, TOKEN_VARIABLE};

/// Serve this machine's devices to a training run on another machine (`--devices
/// ws://HOST:PORT` there). Runs until Ctrl-C.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Port to listen on (0: one the system picks, printed at start).
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// IP address to listen on: 127.0.0.1 serves this machine only; an interface's address,
    /// or 0.0.0.0 for all of them, serves others, and then needs a token in CNN_WORKER_TOKEN.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Backend whose devices to serve.
    #[arg(long, value_enum, default_value_t)]
    backend: BackendName,
    /// This machine's devices to serve, as `train devices` lists them (e.g. 0,1) or all. The
    /// backend's default device when absent.
    #[arg(long)]
    devices: Option<DeviceList>,
}

/// Runs `train worker`: opens the devices, binds the port, says what to give the trainer, then
/// serves until stopped.
pub fn run(args: WorkerArgs) -> Result<()> {
    if !args.host.is_loopback() && remote::token().is_none() {
        bail!(
            "--host {}: a worker listening beyond this machine needs a token, since anyone who \
             reaches the port could run code on its devices: set {TOKEN_VARIABLE} to a secret \
             of your choosing here and on the training machine. The traffic is not encrypted; \
             on a network you do not trust, keep --host 127.0.0.1 and tunnel over SSH (README, \
             \"On several machines\")",
            args.host
        );
    }
    let list = args.devices.unwrap_or_default();
    if let DeviceList::Entries(entries) = &list
        && let Some(DeviceEntry::Worker(address)) =
            entries.iter().find(|e| matches!(e, DeviceEntry::Worker(_)))
    {
        bail!("--devices {address}: a worker serves this machine's devices only");
    }
    let devices = device::init_all(args.backend, &list)?;
    let listener = TcpListener::bind((args.host, args.port)).with_context(|| {
        format!(
            "cannot listen on {}:{}: pick another --port (0 lets the system pick one)",
            args.host, args.port
        )
    })?;
    let port = listener.local_addr()?.port();
    for (index, device) in devices.iter().enumerate() {
        say!(
            "device {index}: {} ({})",
            device::describe(args.backend, device),
            args.backend
        );
    }
    let address = format!("ws://{}:{port}", reachable_name(args.host));
    say!(
        "worker serving {} device(s) at {address}: on the training machine, add it to the \
         devices, e.g. --devices 0,{address}{}. Ctrl-C stops it.",
        devices.len(),
        match remote::token() {
            Some(_) => format!(" (with the same {TOKEN_VARIABLE})"),
            None => String::new(),
        }
    );
    remote::serve(devices, listener)
}

/// The name other machines reach `host` by: itself, or the machine's name where it listens on
/// every interface.
fn reachable_name(host: IpAddr) -> String {
    if !host.is_unspecified() {
        return match host {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "THIS-MACHINE".into())
}
