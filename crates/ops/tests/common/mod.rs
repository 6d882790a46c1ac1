//! What the operations' tests share: a device of every backend the operations serve, and
//! reading values back from one.
// Each test file uses a different subset.
#![allow(dead_code)]

use std::sync::OnceLock;

use burn::{prelude::*, tensor::wgpu::WgpuBackend};

/// The backends, by name, in the order the tests run them.
pub const BACKENDS: [&str; 3] = ["flex", "ndarray", "wgpu"];

/// The device of `backend`: wgpu on Vulkan, which is Mesa's lavapipe on a machine without a GPU
/// (CI installs it, so its absence fails the test rather than skipping it).
pub fn device(backend: &str) -> Device {
    match backend {
        "flex" => Device::flex(),
        // Deprecated upstream in favour of flex, but the course asks for it by name.
        #[allow(deprecated)]
        "ndarray" => Device::ndarray(),
        "wgpu" => {
            // A wgpu runtime can be initialised once per process.
            static WGPU: OnceLock<Result<Device, String>> = OnceLock::new();
            WGPU.get_or_init(|| {
                Device::wgpu_options()
                    .graphics_api(WgpuBackend::Vulkan)
                    .init()
                    .map_err(|e| e.to_string())
            })
            .clone()
            .unwrap_or_else(|e| {
                panic!("no Vulkan adapter ({e}): apt-get install mesa-vulkan-drivers libvulkan1")
            })
        }
        other => panic!("no backend {other}"),
    }
}
