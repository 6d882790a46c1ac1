//! Workers: devices another machine serves to a run, through Burn's remote backend over
//! WebSocket. A worker address is `ws://host:port` (all the devices it serves) or
//! `ws://host:port/N` (its device `N`). The token both sides check comes from the environment,
//! never from a config or a flag, so that it is neither saved with a run nor shown by `ps`.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use anyhow::{Context, Result, anyhow};
use burn::prelude::*;
use burn::server::{RemoteServer, ServeError, TokenAuthorizer, WebSocketTransport};
use burn::tensor::remote::{ConnectError, RemoteHost};

/// The environment variable that holds the token a worker requires and a trainer presents.
pub const TOKEN_VARIABLE: &str = "CNN_WORKER_TOKEN";

/// A worker as `--devices` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerAddress {
    /// `ws://host:port`.
    pub url: String,
    /// The host, as a name or an address (an IPv6 one without its brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// One of its devices, by the index `train devices --remote` lists; `None`: all of them.
    pub device: Option<usize>,
}

impl FromStr for WorkerAddress {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("worker \"{text}\": {why}; write ws://HOST:PORT or ws://HOST:PORT/DEVICE")
        };
        let Some(rest) = text.strip_prefix("ws://") else {
            return Err(match text.split_once("://") {
                Some(("wss", _)) => bad(
                    "wss:// is not served (a worker speaks unencrypted WebSocket; tunnel it over \
                     SSH to encrypt it, README \"On several machines\")",
                ),
                Some((scheme, _)) => bad(&format!("{scheme}:// is not a worker's address")),
                None => bad("not a ws:// address"),
            });
        };
        let (authority, device) = match rest.split_once('/') {
            None | Some((_, "")) => (rest.trim_end_matches('/'), None),
            Some((authority, index)) => match index.parse::<usize>() {
                Ok(index) => (authority, Some(index)),
                Err(_) => return Err(bad(&format!("\"{index}\" is not a device index"))),
            },
        };
        let Some((host, port)) = authority.rsplit_once(':') else {
            return Err(bad("the port is missing"));
        };
        if host.is_empty() {
            return Err(bad("the host is missing"));
        }
        let port = match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(bad(&format!("\"{port}\" is not a port"))),
        };
        Ok(Self {
            url: format!("ws://{authority}"),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            device,
        })
    }
}

impl fmt::Display for WorkerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.device {
            Some(index) => write!(f, "{}/{index}", self.url),
            None => f.write_str(&self.url),
        }
    }
}

/// The token of [`TOKEN_VARIABLE`], if set and not empty.
pub fn token() -> Option<String> {
    std::env::var(TOKEN_VARIABLE).ok().filter(|t| !t.is_empty())
}

/// The workers' devices opened so far, with the worker's `ws://host:port` and what the device
/// is called: the remote backend's own name for a device is its internal registry entry.
static OPENED: Mutex<Vec<Opened>> = Mutex::new(Vec::new());

struct Opened {
    device: Device,
    worker: WorkerAddress,
    name: String,
}

/// The devices `address` names, connected (each retried for a few seconds by Burn). Errors
/// name the worker and say what to do.
pub fn open(address: &WorkerAddress) -> Result<Vec<Device>> {
    let mut host = RemoteHost::websocket(&address.url);
    if let Some(token) = token() {
        host = host.with_credential(token);
    }
    let devices: Vec<(usize, Device)> = match address.device {
        None => host
            .devices()
            .map_err(|e| connect_error(address, e))?
            .into_iter()
            .enumerate()
            .collect(),
        Some(index) => {
            let device = Device::remote_options(&host)
                .device_index(index)
                .init()
                .map_err(|e| connect_error(address, e))?;
            vec![(index, device)]
        }
    };
    let mut opened = crate::panics::lock(&OPENED);
    for (index, device) in &devices {
        if !opened.iter().any(|o| o.device == *device) {
            opened.push(Opened {
                device: device.clone(),
                worker: address.clone(),
                name: format!("worker {}/{index}", address.url),
            });
        }
    }
    Ok(devices.into_iter().map(|(_, device)| device).collect())
}

/// What `device` is called, if it is a worker's: `worker ws://host:port/N`.
pub fn description(device: &Device) -> Option<String> {
    let opened = crate::panics::lock(&OPENED);
    opened
        .iter()
        .find(|o| o.device == *device)
        .map(|o| o.name.clone())
}

/// Whether any of `devices` is a worker's.
pub fn any_worker(devices: &[Device]) -> bool {
    devices.iter().any(|device| description(device).is_some())
}

/// The names of the workers' devices among `devices`.
fn workers(devices: &[Device]) -> Vec<String> {
    devices.iter().filter_map(description).collect()
}

/// The names of the workers' devices among `devices` whose worker no longer accepts a
/// connection: after a failed step, the ones that went away.
pub fn silent(devices: &[Device]) -> Vec<String> {
    let opened = crate::panics::lock(&OPENED);
    opened
        .iter()
        .filter(|o| devices.contains(&o.device) && !accepts(&o.worker))
        .map(|o| o.name.clone())
        .collect()
}

/// What failed in a command on `devices` that Burn's remote backend ended with a panic whose
/// message is `cause`: the workers that stopped answering, or, where all still answer, a step on
/// every worker's device. `None` where no device is a worker's: the panic is not theirs.
pub fn lost(devices: &[Device], cause: &str) -> Option<String> {
    let workers = workers(devices);
    if workers.is_empty() {
        return None;
    }
    let silent = silent(devices);
    // Burn's message runs over several lines of nested causes; the first says what failed.
    let cause = cause.lines().next().unwrap_or(cause);
    Some(match silent.is_empty() {
        true => format!(
            "a step on {} failed ({cause}); the worker's output says why",
            workers.join(", ")
        ),
        false => format!("{} stopped answering ({cause})", silent.join(" and ")),
    })
}

/// Whether something listens at the worker's host and port (within a few seconds).
fn accepts(worker: &WorkerAddress) -> bool {
    use std::net::{TcpStream, ToSocketAddrs};
    let Ok(addresses) = (worker.host.as_str(), worker.port).to_socket_addrs() else {
        return false;
    };
    addresses.into_iter().any(|address| {
        TcpStream::connect_timeout(&address, std::time::Duration::from_secs(3)).is_ok()
    })
}

fn connect_error(address: &WorkerAddress, error: ConnectError) -> anyhow::Error {
    let what = match error {
        ConnectError::Unreachable { reason } => format!(
            "no worker answered ({reason}): start `train worker` on that machine, or check \
             the host and port"
        ),
        ConnectError::Unauthorized => match token() {
            Some(_) => format!(
                "the worker refused the token: set {TOKEN_VARIABLE} to the token the worker was \
                 started with"
            ),
            None => format!(
                "the worker requires a token and none is set: set {TOKEN_VARIABLE} to the token \
                 the worker was started with"
            ),
        },
        ConnectError::NoSuchDevice { device_count } => format!(
            "the worker serves {device_count} device(s), numbered from 0 (`train devices \
             --remote {}` lists them)",
            address.url
        ),
        ConnectError::IncompatibleProtocol { .. } => {
            format!("{error}: run the same release of train on both machines")
        }
        other => other.to_string(),
    };
    anyhow!("devices: worker {address}: {what}")
}

/// Serves `devices` on `listener` until Ctrl-C or SIGTERM, to one trainer at a time or
/// several; a trainer that goes away has its session's tensors freed. With a token in
/// [`TOKEN_VARIABLE`], only trainers presenting it are served.
pub fn serve(devices: Vec<Device>, listener: std::net::TcpListener) -> Result<()> {
    log_sessions();
    let mut server = RemoteServer::new(devices);
    if let Some(token) = token() {
        let authorizer = TokenAuthorizer::new(token).context("the token is empty")?;
        server = server.with_authorizer(authorizer);
    }
    server
        .serve(WebSocketTransport::from_listener(listener))
        .map_err(|e| match e {
            ServeError::MixedBackends => {
                anyhow!("a worker serves the devices of one backend only")
            }
            other => anyhow!("the worker stopped: {other}"),
        })
}

/// Burn's server logs its sessions through `tracing` to stdout, with its own subscriber unless
/// the program installed one. This one logs the same lines (`RUST_LOG`, else info with wgpu's
/// from warnings up), coloured only on a terminal: a worker's output is often kept in a file.
fn log_sessions() {
    use tracing_subscriber::{EnvFilter, prelude::*};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,wgpu=warn"));
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_filter(filter);
    // Fails where a subscriber is already installed (a second server in one process): it logs.
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_addresses_read_with_and_without_a_device() {
        let all: WorkerAddress = "ws://gpu-box:4000".parse().unwrap();
        assert_eq!((all.url.as_str(), all.device), ("ws://gpu-box:4000", None));
        assert_eq!((all.host.as_str(), all.port), ("gpu-box", 4000));
        assert_eq!(all.to_string(), "ws://gpu-box:4000");
        let one: WorkerAddress = "ws://10.0.0.2:4000/1".parse().unwrap();
        assert_eq!(
            (one.url.as_str(), one.device),
            ("ws://10.0.0.2:4000", Some(1))
        );
        assert_eq!(one.to_string(), "ws://10.0.0.2:4000/1");
        let v6: WorkerAddress = "ws://[::1]:4000/".parse().unwrap();
        assert_eq!(
            (v6.url.as_str(), v6.host.as_str()),
            ("ws://[::1]:4000", "::1")
        );
        for (text, why) in [
            ("wss://gpu:4000", "wss:// is not served"),
            ("http://gpu:4000", "http:// is not a worker's address"),
            ("gpu:4000", "not a ws:// address"),
            ("ws://gpu", "the port is missing"),
            ("ws://:4000", "the host is missing"),
            ("ws://gpu:http", "\"http\" is not a port"),
            ("ws://gpu:0", "\"0\" is not a port"),
            ("ws://gpu:4000/x", "\"x\" is not a device index"),
        ] {
            let err = text.parse::<WorkerAddress>().unwrap_err();
            assert!(
                err.contains(why) && err.contains(text) && err.contains("ws://HOST:PORT"),
                "{text}: {err}"
            );
        }
    }
}
