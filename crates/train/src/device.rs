//! Backend name -> Burn device. In Burn 0.22 the backend is the device, so this is the only
//! place that knows which backends exist.

use std::sync::OnceLock;

use burn::{
    backend::{Backend, Dispatch, DispatchDevice},
    prelude::*,
    tensor::wgpu::WgpuBackend,
};
use serde::{Deserialize, Serialize};

/// A backend the user can pick with `backend = ...` or `--backend`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// Burn's maintained CPU backend (multi-threaded, SIMD): the fast CPU choice.
    #[default]
    Flex,
    /// The ndarray CPU backend the course asks for (much slower than flex).
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

/// The device for `backend`. For wgpu the adapter is acquired now, on Vulkan only (a silent
/// fallback to OpenGL would be ~25x slower), and its absence is an error that says what to do.
pub fn init(backend: BackendName) -> anyhow::Result<Device> {
    match backend {
        BackendName::Flex => Ok(Device::flex()),
        // Deprecated upstream in favour of flex, but the course asks for it by name.
        #[allow(deprecated)]
        BackendName::Ndarray => Ok(Device::ndarray()),
        BackendName::Wgpu => {
            // A wgpu runtime can be initialised once per process: keep the answer.
            static WGPU: OnceLock<Result<Device, String>> = OnceLock::new();
            WGPU.get_or_init(|| {
                Device::wgpu_options()
                    .graphics_api(WgpuBackend::Vulkan)
                    .init()
                    .map_err(|e| {
                        format!(
                            "no usable GPU adapter for --backend wgpu (Vulkan): {e}. Install a Vulkan \
                             driver (without a GPU, Mesa's software one: apt-get install \
                             mesa-vulkan-drivers libvulkan1) or use --backend flex"
                        )
                    })
            })
            .clone()
            .map_err(anyhow::Error::msg)
        }
    }
}

/// What the device is, for summaries and benchmark tables: the GPU's own name and the compiler
/// wgpu uses on it for wgpu, the CPU model and thread count for the CPU backends.
pub fn describe(backend: BackendName, device: &Device) -> String {
    match backend {
        BackendName::Wgpu => {
            let name = device
                .identity()
                .map(|identity| identity.name)
                .unwrap_or_else(|| "unknown wgpu adapter".into());
            format!("{name}, {}", compiler(device))
        }
        BackendName::Flex | BackendName::Ndarray => {
            let model = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|info| {
                    info.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split(':').nth(1))
                        .map(|s| s.trim().to_string())
                })
                .unwrap_or_else(|| std::env::consts::ARCH.to_string());
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
            format!("{model}, {threads} threads")
        }
    }
}

/// The runtime name Burn gives a wgpu device, which names the compiler its kernels go through:
/// `wgpu<spirv>` (CubeCL's SPIR-V compiler, with tensor-core matrix products) or `wgpu<wgsl>`
/// (the fallback where the Vulkan adapter lacks the features SPIR-V needs).
fn compiler(device: &Device) -> String {
    let name = <Dispatch as Backend>::name(device.as_dispatch());
    name.find("wgpu<")
        .and_then(|start| {
            let rest = &name[start..];
            rest.find('>').map(|end| rest[..=end].to_string())
        })
        .unwrap_or(name)
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
