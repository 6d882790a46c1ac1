//! The leaky ReLU (`ops::leaky_relu`) on every backend against values worked out by hand.

mod common;

use burn::{prelude::*, tensor::TensorData};
use common::{BACKENDS, device};

/// Output and input gradient on every backend (the loops on flex and ndarray, the reference
/// formulation on wgpu) against values worked out by hand, zero and both signs included.
#[test]
fn leaky_relu_and_its_gradient_match_hand_values() {
    for backend in BACKENDS {
        let device = device(backend).autodiff();
        let x = Tensor::<2>::from_floats([[-3.0, -0.5, 0.0], [0.25, 2.0, -1.0]], &device)
            .require_grad();
        let upstream = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
        let y = ops::leaky_relu(x.clone(), 0.25);
        let grads = (y.clone() * upstream).sum().backward();
        y.into_data().assert_approx_eq::<f32>(
            &TensorData::from([[-0.75, -0.125, 0.0], [0.25, 2.0, -0.25]]),
            Default::default(),
        );
        // relu'(0) is 0, so at 0 the gradient takes the slope, as Burn's relu gives.
        x.grad(&grads).unwrap().into_data().assert_approx_eq::<f32>(
            &TensorData::from([[0.25, 0.5, 0.75], [4.0, 5.0, 1.5]]),
            Default::default(),
        );
    }
}
