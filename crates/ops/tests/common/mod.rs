//! What the operations' tests share: a device of every backend the operations serve, reading
//! values back from one, and comparing them with a reference.
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

/// The values of `t`, read back from its device.
pub fn f32s<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// The values of `t`, as f64 for comparing with f64 loops.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    f32s(t).into_iter().map(f64::from).collect()
}

/// `ours` within `tolerance` (relative, plus as much absolute) of `expected`.
pub fn close_within<T: Copy + Into<f64>>(ours: &[T], expected: &[T], tolerance: f64, what: &str) {
    assert_eq!(ours.len(), expected.len(), "{what}");
    for (i, (a, b)) in ours.iter().zip(expected).enumerate() {
        let (a, b): (f64, f64) = ((*a).into(), (*b).into());
        assert!(
            (a - b).abs() <= tolerance * (1.0 + b.abs()),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

/// [`close_within`] 1e-4.
pub fn close(ours: &[f64], expected: &[f64], what: &str) {
    close_within(ours, expected, 1e-4, what);
}

/// [`close`] for the output and the three gradients.
pub fn close_all(ours: &[Vec<f64>; 4], expected: &[Vec<f64>; 4], what: &str) {
    for ((a, b), name) in
        ours.iter()
            .zip(expected)
            .zip(["output", "x grad", "weight grad", "bias grad"])
    {
        close(a, b, &format!("{what}: {name}"));
    }
}
