//! One model code, three backends: the same weights must give the same outputs everywhere.

use burn::{prelude::*, tensor::Tolerance};
use models::{LeNet5ClassicConfig, LeNet5ModernConfig, NetworkConfig};
use train::{BackendName, device};

/// Forward outputs of `network` (initialised on flex) on every backend, for one random batch.
fn outputs(network: NetworkConfig, size: usize) -> Vec<(BackendName, TensorData)> {
    let flex = Device::flex();
    flex.seed(7);
    let model = network.init(&flex);
    let input = Tensor::<4>::random(
        [3, 1, size, size],
        burn::tensor::Distribution::Default,
        &flex,
    )
    .into_data();
    [BackendName::Flex, BackendName::Ndarray, BackendName::Wgpu]
        .into_iter()
        .map(|backend| {
            let device = device::init(backend).unwrap_or_else(|e| panic!("{backend}: {e}"));
            let model = model.clone().to_device(&device);
            assert_eq!(model.num_params(), network.init(&flex).num_params());
            let output = model.forward(Tensor::from_data(input.clone(), &device));
            assert_eq!(output.dims(), [3, 10], "{backend}");
            (backend, output.into_data())
        })
        .collect()
}

fn assert_all_equal(results: Vec<(BackendName, TensorData)>) {
    let (_, reference) = &results[0];
    for (backend, data) in &results[1..] {
        // f32 kernels sum in different orders: agree to 1e-4 relative / absolute.
        data.assert_approx_eq::<f32>(reference, Tolerance::absolute(1e-4).set_relative(1e-4));
        println!("{backend} matches flex");
    }
}

#[test]
fn lenet_modern_is_the_same_on_every_backend() {
    assert_all_equal(outputs(
        NetworkConfig::LeNet5Modern(LeNet5ModernConfig::new()),
        28,
    ));
}

#[test]
fn lenet_classic_is_the_same_on_every_backend() {
    assert_all_equal(outputs(
        NetworkConfig::LeNet5Classic(LeNet5ClassicConfig::new()),
        32,
    ));
}
