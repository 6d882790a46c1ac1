//! Backend name -> Burn device. In Burn 0.22 the backend is the device, so this is the only
//! place that knows which backends exist.

use std::{str::FromStr, sync::Mutex};

use anyhow::{Context, bail};
use burn::{
    backend::{Backend, Dispatch, DispatchDevice},
    prelude::*,
    tensor::{
        DeviceKind,
        wgpu::{WgpuBackend, wgpu},
    },
};
use serde::{Deserialize, Serialize};

use crate::remote::WorkerAddress;

/// A backend the user can pick with `backend = ...` or `--backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// Burn's maintained CPU backend (multi-threaded, SIMD): the fast CPU choice.
    #[default]
    Flex,
    /// The ndarray CPU backend the course asks for (it runs the project's own CPU operations, as flex does).
    Ndarray,
    /// The GPU through wgpu on Vulkan (Mesa's lavapipe counts, slowly, when there is no GPU).
    Wgpu,
}

impl BackendName {
    /// Name as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Flex => "flex",
            Self::Ndarray => "ndarray",
            Self::Wgpu => "wgpu",
        }
    }
}

impl std::fmt::Display for BackendName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default device of `backend`. For wgpu the adapter is acquired now, on Vulkan only (a
/// silent fallback to OpenGL would be ~25x slower), and its absence is an error that says what
/// to do.
pub fn init(backend: BackendName) -> anyhow::Result<Device> {
    match backend {
        BackendName::Flex | BackendName::Ndarray => Ok(cpu_device(backend)),
        BackendName::Wgpu => open_wgpu(DeviceKind::DefaultDevice).map_err(|e| {
            anyhow::anyhow!(
                "no usable GPU adapter for --backend wgpu (Vulkan): {e}. Install a Vulkan driver \
                 (without a GPU, Mesa's software one: apt-get install mesa-vulkan-drivers \
                 libvulkan1) or use --backend flex"
            )
        }),
    }
}

fn cpu_device(backend: BackendName) -> Device {
    match backend {
        // Deprecated upstream in favour of flex, but the course asks for it by name.
        #[allow(deprecated)]
        BackendName::Ndarray => Device::ndarray(),
        _ => Device::flex(),
    }
}

/// The wgpu device of adapter `kind` on Vulkan. A wgpu runtime can be initialised once per
/// process and adapter: the answer for each is kept.
fn open_wgpu(kind: DeviceKind) -> Result<Device, String> {
    static OPENED: Mutex<Vec<(String, Result<Device, String>)>> = Mutex::new(Vec::new());
    let key = format!("{kind:?}");
    let mut opened = crate::panics::lock(&OPENED);
    if let Some((_, device)) = opened.iter().find(|(k, _)| *k == key) {
        return device.clone();
    }
    let device = Device::wgpu_options()
        .device_kind(kind)
        .graphics_api(WgpuBackend::Vulkan)
        .init()
        .map_err(|e| e.to_string());
    opened.push((key, device.clone()));
    device
}

/// `devices` in a config or `--devices`: the devices a run trains on, one replica of the model
/// on each, every batch split evenly between them (Burn's multi-device strategy).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "WrittenList", into = "String")]
pub enum DeviceList {
    /// The backend's default device alone.
    #[default]
    Default,
    /// These devices: this machine's by their index in `train devices`, and workers' (other
    /// machines serving theirs, `train worker`). An index given twice is two replicas on one
    /// device (the CPU backends have one device: `0,0` runs two replicas on the CPU).
    Entries(Vec<DeviceEntry>),
    /// Every device of the backend on this machine, once.
    All,
}

/// One entry of a [`DeviceList`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceEntry {
    /// This machine's device, by its index in `train devices`.
    Local(usize),
    /// A worker's devices: `ws://host:port` or `ws://host:port/N`.
    Worker(WorkerAddress),
}

impl FromStr for DeviceList {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "all" => Ok(Self::All),
            "default" => Ok(Self::Default),
            list => list
                .split(',')
                .map(|entry| match entry.trim() {
                    worker if worker.contains("://") => worker.parse().map(DeviceEntry::Worker),
                    index => index.parse().map(DeviceEntry::Local).map_err(|_| {
                        format!(
                            "expected device indices as `train devices` lists them (e.g. 0,1), \
                             workers (ws://HOST:PORT) or \"all\", got \"{text}\""
                        )
                    }),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Self::Entries),
        }
    }
}

impl std::fmt::Display for DeviceEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local(index) => write!(f, "{index}"),
            Self::Worker(address) => write!(f, "{address}"),
        }
    }
}

impl std::fmt::Display for DeviceList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::All => f.write_str("all"),
            Self::Entries(entries) => {
                let entries: Vec<String> = entries.iter().map(DeviceEntry::to_string).collect();
                f.write_str(&entries.join(","))
            }
        }
    }
}

/// How `devices` is written in TOML: `"0,1"`, `"all"`, `"0,ws://gpu:4000"` or `[0, 1]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum WrittenList {
    Indices(Vec<usize>),
    Text(String),
}

impl TryFrom<WrittenList> for DeviceList {
    type Error = String;

    fn try_from(written: WrittenList) -> Result<Self, String> {
        match written {
            WrittenList::Indices(indices) => Ok(Self::Entries(
                indices.into_iter().map(DeviceEntry::Local).collect(),
            )),
            WrittenList::Text(text) => text.parse(),
        }
    }
}

impl From<DeviceList> for String {
    fn from(list: DeviceList) -> Self {
        list.to_string()
    }
}

/// One device a backend can train on, as `train devices` lists it.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// Its name: the GPU's own, or the CPU's model and threads.
    pub name: String,
    /// Discrete GPU, integrated GPU, virtual GPU, or CPU.
    pub kind: &'static str,
    /// How wgpu addresses it; `None` for the CPU backends.
    wgpu: Option<DeviceKind>,
}

impl Adapter {
    /// Opens the device.
    pub fn open(&self, backend: BackendName) -> anyhow::Result<Device> {
        match &self.wgpu {
            None => Ok(cpu_device(backend)),
            Some(kind) => open_wgpu(kind.clone())
                .map_err(|e| anyhow::anyhow!("{} did not start: {e}", self.name)),
        }
    }
}

/// The devices `backend` can train on, in the order `--devices` indexes them: the CPU for the
/// CPU backends; the Vulkan adapters for wgpu, as wgpu enumerates them.
pub fn adapters(backend: BackendName) -> Vec<Adapter> {
    if backend != BackendName::Wgpu {
        return vec![Adapter {
            name: cpu_name(),
            kind: "CPU",
            wgpu: None,
        }];
    }
    let vulkan = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: vulkan,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let mut adapters = Vec::new();
    // Each kind counts from zero: `DiscreteGpu(1)` is the second discrete adapter.
    let mut counts = [0; 3];
    let mut next = |kind: usize| {
        counts[kind] += 1;
        counts[kind] - 1
    };
    for adapter in futures_lite::future::block_on(instance.enumerate_adapters(vulkan)) {
        let info = adapter.get_info();
        let (kind, label) = match info.device_type {
            wgpu::DeviceType::DiscreteGpu => (DeviceKind::DiscreteGpu(next(0)), "discrete GPU"),
            wgpu::DeviceType::IntegratedGpu => {
                (DeviceKind::IntegratedGpu(next(1)), "integrated GPU")
            }
            wgpu::DeviceType::VirtualGpu => (DeviceKind::VirtualGpu(next(2)), "virtual GPU"),
            wgpu::DeviceType::Cpu => (DeviceKind::Cpu, "CPU (software renderer)"),
            // wgpu cannot be asked for an adapter of an unknown kind by index.
            wgpu::DeviceType::Other => continue,
        };
        // wgpu addresses one software renderer only.
        let software = kind == DeviceKind::Cpu;
        if software && adapters.iter().any(|a: &Adapter| a.kind == label) {
            continue;
        }
        adapters.push(Adapter {
            name: info.name,
            kind: label,
            wgpu: Some(kind),
        });
    }
    adapters
}

/// The devices of `list` for `backend`, opened: the default device alone, or those listed.
/// Refused where this build is known to crash on one.
pub fn init_all(backend: BackendName, list: &DeviceList) -> anyhow::Result<Vec<Device>> {
    let devices = open_all(backend, list)?;
    for device in &devices {
        if let Some(refusal) = known_crash(backend, device) {
            bail!("{refusal}");
        }
    }
    Ok(devices)
}

/// Set to try CubeCL's SPIR-V on Mesa's software driver all the same (a newer Mesa or CubeCL).
const SPIRV_ON_LAVAPIPE: &str = "CNN_SPIRV_ON_LAVAPIPE";

/// Why this build must not run on `device`, if it must not: Mesa's software Vulkan driver
/// (lavapipe, `llvmpipe` adapters) ends the process with a segmentation fault compiling the
/// SPIR-V of CubeCL 0.11 (Mesa 22.3.6 and 25.0.7; docs/gpu.md), so a build with the `spirv`
/// feature is refused there, with the way on.
pub fn known_crash(backend: BackendName, device: &Device) -> Option<String> {
    if backend != BackendName::Wgpu || std::env::var_os(SPIRV_ON_LAVAPIPE).is_some() {
        return None;
    }
    let name = describe(backend, device);
    crashes_on(&name).then(|| {
        format!(
            "{name}: Mesa's software Vulkan driver crashes on the SPIR-V kernels of this build \
             (the `spirv` feature; docs/gpu.md). Use the default build, which compiles WGSL, or \
             --backend flex; {SPIRV_ON_LAVAPIPE}=1 tries it all the same"
        )
    })
}

/// Whether a device of this description (see [`describe`]) crashes on the kernels this build
/// compiles for it: SPIR-V on lavapipe.
fn crashes_on(description: &str) -> bool {
    description.contains("llvmpipe") && description.contains("wgpu<spirv>")
}

/// The devices of `list`, opened: this machine's, then each worker's where it stands.
fn open_all(backend: BackendName, list: &DeviceList) -> anyhow::Result<Vec<Device>> {
    let entries = match list {
        DeviceList::Default => return Ok(vec![init(backend)?]),
        DeviceList::All => None,
        DeviceList::Entries(entries) => Some(entries.clone()),
    };
    let local = |entries: &Option<Vec<DeviceEntry>>| match entries {
        None => true,
        Some(entries) => entries.iter().any(|e| matches!(e, DeviceEntry::Local(_))),
    };
    let adapters = match local(&entries) {
        true => adapters(backend),
        false => Vec::new(),
    };
    if adapters.is_empty() && local(&entries) {
        // The default device's error says what to install.
        init(backend)?;
        bail!("devices {list}: {backend} found no device it can address");
    }
    let entries = entries.unwrap_or_else(|| (0..adapters.len()).map(DeviceEntry::Local).collect());
    if entries.is_empty() {
        bail!("devices: none given; `train devices` lists them");
    }
    let mut devices = Vec::new();
    for entry in &entries {
        let index = match entry {
            DeviceEntry::Worker(address) => {
                devices.extend(crate::remote::open(address)?);
                continue;
            }
            DeviceEntry::Local(index) => *index,
        };
        let adapter = adapters.get(index).ok_or_else(|| {
            let known: Vec<String> = adapters
                .iter()
                .enumerate()
                .map(|(i, a)| format!("{i}: {}", a.name))
                .collect();
            anyhow::anyhow!(
                "devices {list}: {backend} has no device {index}; it has {} ({}). \
                 `train devices` lists them",
                adapters.len(),
                known.join("; ")
            )
        })?;
        let device = adapter
            .open(backend)
            .with_context(|| format!("devices {list}: device {index}"))?;
        devices.push(device);
    }
    Ok(devices)
}

/// What the device is, for summaries and benchmark tables: the GPU's own name and the compiler
/// wgpu uses on it for wgpu, the CPU model and thread count for the CPU backends.
pub fn describe(backend: BackendName, device: &Device) -> String {
    if let Some(worker) = crate::remote::description(device) {
        return worker;
    }
    match backend {
        BackendName::Wgpu => {
            let name = device
                .identity()
                .map(|identity| identity.name)
                .unwrap_or_else(|| "unknown wgpu adapter".into());
            format!("{name}, {}", compiler(device))
        }
        BackendName::Flex | BackendName::Ndarray => cpu_name(),
    }
}

/// The CPU's model and the number of threads the CPU backends run on (rayon's, which
/// `RAYON_NUM_THREADS` sets).
fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {} threads", rayon::current_num_threads())
}

/// The runtime name Burn gives a wgpu device, which names the compiler its kernels go through:
/// `wgpu<spirv>` (CubeCL's SPIR-V compiler, with tensor-core matrix products) or `wgpu<wgsl>`
/// (the fallback where the Vulkan adapter lacks the features SPIR-V needs).
pub fn compiler(device: &Device) -> String {
    let name = <Dispatch as Backend>::name(device.as_dispatch());
    name.find("wgpu<")
        .and_then(|start| {
            let rest = &name[start..];
            rest.find('>').map(|end| rest[..=end].to_string())
        })
        .unwrap_or(name)
}

/// The file where CubeCL keeps wgpu's kernel tuning results between runs: under
/// `<outermost Cargo workspace>/target/environment/` when run inside a source tree, else under
/// the user's cache folder (`$XDG_CACHE_HOME/cubecl`, by default `~/.cache/cubecl`). A
/// `cubecl.toml` in the working folder or above it moves it (`[environment.path] directory =
/// "..."`).
pub fn tuning_cache() -> std::path::PathBuf {
    use burn_cubecl::cubecl::config::RuntimeConfig;
    use burn_cubecl::cubecl::{config::CubeClRuntimeConfig, environment};
    // Loading the configuration activates the environment it names.
    let _ = CubeClRuntimeConfig::get();
    environment::path()
}

/// What one allocation and the whole device may hold, in bytes, where the backend says (wgpu:
/// the adapter's largest buffer, and its memory where the Vulkan driver states it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// The largest single buffer.
    pub largest_buffer: u64,
    /// The device's memory, if stated.
    pub total: Option<u64>,
}

/// The memory limits of `device`: `None` on the CPU backends, which allocate from system memory.
pub fn memory_limits(device: &Device) -> Option<MemoryLimits> {
    match device.clone().inner().as_dispatch() {
        DispatchDevice::Cube(cube) => {
            let memory = cube.client().properties().memory.clone();
            Some(MemoryLimits {
                largest_buffer: memory.max_page_size,
                total: memory.max_memory(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spirv_on_lavapipe_is_known_to_crash_and_nothing_else() {
        assert!(crashes_on("llvmpipe (LLVM 15.0.6, 256 bits), wgpu<spirv>"));
        assert!(!crashes_on("llvmpipe (LLVM 15.0.6, 256 bits), wgpu<wgsl>"));
        assert!(!crashes_on("NVIDIA H100 80GB HBM3, wgpu<spirv>"));
    }

    fn local(indices: &[usize]) -> DeviceList {
        DeviceList::Entries(indices.iter().map(|&i| DeviceEntry::Local(i)).collect())
    }

    #[test]
    fn device_lists_read_as_flags_and_as_toml() {
        assert_eq!("all".parse(), Ok(DeviceList::All));
        assert_eq!("0, 2,2".parse(), Ok(local(&[0, 2, 2])));
        let mixed: DeviceList = "0, ws://gpu:4000/1".parse().unwrap();
        assert_eq!(mixed.to_string(), "0,ws://gpu:4000/1");
        let err = "0,ws://gpu".parse::<DeviceList>().unwrap_err();
        assert!(err.contains("the port is missing"), "{err}");
        let err = "0,x".parse::<DeviceList>().unwrap_err();
        assert!(
            err.contains("\"0,x\"") && err.contains("train devices"),
            "{err}"
        );
        assert!("".parse::<DeviceList>().is_err());
        assert_eq!(local(&[0, 1]).to_string(), "0,1");

        #[derive(Deserialize, Serialize)]
        struct Config {
            devices: DeviceList,
        }
        let read = |text: &str| toml::from_str::<Config>(text).map(|c| c.devices);
        assert_eq!(read("devices = [1, 0]").unwrap(), local(&[1, 0]));
        assert_eq!(read("devices = \"all\"").unwrap(), DeviceList::All);
        assert!(read("devices = \"every\"").is_err());
        assert!(read("devices = [-1]").is_err());
        let written = toml::to_string(&Config {
            devices: local(&[0, 1]),
        })
        .unwrap();
        assert_eq!(written.trim(), "devices = \"0,1\"");
    }

    #[test]
    fn the_cpu_backends_have_one_device_that_can_be_repeated() {
        for backend in [BackendName::Flex, BackendName::Ndarray] {
            assert_eq!(adapters(backend).len(), 1);
            let two = init_all(backend, &local(&[0, 0])).unwrap();
            assert_eq!(two.len(), 2);
            let err = init_all(backend, &local(&[0, 1])).unwrap_err();
            assert!(
                format!("{err:#}").contains(&format!("{backend} has no device 1")),
                "{err:#}"
            );
        }
    }
}
