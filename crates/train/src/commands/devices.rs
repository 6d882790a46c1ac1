//! `train devices`: the devices each backend can train on, with the index `--devices` takes.

use anyhow::Result;

use crate::device::{self, BackendName};
use crate::remote::{self, WorkerAddress};

/// List the devices each backend sees, with the index `--devices` takes.
#[derive(clap::Args)]
pub struct DevicesArgs {
    /// Backends to list, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "flex,ndarray,wgpu"
    )]
    backends: Vec<BackendName>,
    /// List the devices the worker at this address serves (ws://HOST:PORT; `train worker`)
    /// instead; may be repeated.
    #[arg(long, value_name = "ws://HOST:PORT")]
    remote: Vec<WorkerAddress>,
}

/// Runs `train devices`: opens each device to name the compiler wgpu uses on it.
pub fn run(args: DevicesArgs) -> Result<()> {
    if !args.remote.is_empty() {
        return list_workers(&args.remote);
    }
    for backend in args.backends {
        say!("{backend}:");
        let adapters = device::adapters(backend);
        if adapters.is_empty() {
            let reason = match device::init(backend) {
                Err(e) => format!("{e:#}"),
                Ok(_) => "only a default device, which --devices cannot name by index".into(),
            };
            say!("  none: {reason}");
        }
        for (index, adapter) in adapters.iter().enumerate() {
            let detail = match (backend, adapter.open(backend)) {
                (BackendName::Wgpu, Ok(device)) => match device::known_crash(backend, &device) {
                    Some(_) => format!(
                        "{}, refused: Mesa's software driver crashes on this build's SPIR-V \
                         (the default build compiles WGSL)",
                        device::compiler(&device)
                    ),
                    None => device::compiler(&device),
                },
                (_, Ok(_)) => "one device: repeat its index (0,0) for replicas sharing it".into(),
                (_, Err(e)) => format!("cannot start: {e:#}"),
            };
            say!("  {index}  {}: {}, {detail}", adapter.name, adapter.kind);
        }
        if backend == BackendName::Wgpu {
            say!(
                "  kernel tuning results kept in {}",
                device::tuning_cache().display()
            );
        }
    }
    say!(
        "Train on several with --devices 0,1 (or devices = \"0,1\" in the config), or --devices all; \
         add other machines' with `train worker` there and --devices 0,ws://HOST:PORT here."
    );
    Ok(())
}

/// Lists the devices each worker serves, as `--devices` names them.
fn list_workers(workers: &[WorkerAddress]) -> Result<()> {
    for address in workers {
        let all = WorkerAddress {
            device: None,
            ..address.clone()
        };
        let devices = remote::open(&all)?;
        say!("{}: {} device(s)", all.url, devices.len());
        for (index, _) in devices.iter().enumerate() {
            say!("  {}/{index}", all.url);
        }
    }
    say!(
        "Train on a worker's devices with --devices 0,ws://HOST:PORT (all of them) or \
         ws://HOST:PORT/N (one); the worker printed what each device is when it started."
    );
    Ok(())
}
