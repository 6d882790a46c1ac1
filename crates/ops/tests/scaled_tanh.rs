//! LeCun's squashing function (`ops::scaled_tanh`) on every backend against f64.

mod common;

use burn::prelude::*;
use common::{BACKENDS, device, f32s};

/// Output and input gradient of LeCun's squashing function against f64, on every backend
/// (the loops on flex and ndarray, the reference formulation on wgpu) and through Burn's
/// operations,
/// saturated ends included. The gradient is computed from the f32 output, as PyTorch's
/// is: near saturation `a^2 - y^2` keeps the absolute error of `y`'s rounding, hence an
/// absolute tolerance scaled by the upstream gradient.
#[test]
fn scaled_tanh_and_its_gradient_match_f64() {
    let (a, s) = (1.7159, 2.0 / 3.0);
    let values: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) * 0.173).collect();
    let upstream: Vec<f32> = (0..200).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
    let exact = |x: f32| a * (s * f64::from(x)).tanh();
    let exact_slope = |x: f32| a * s * (1.0 - (s * f64::from(x)).tanh().powi(2));
    for (backend, loops) in BACKENDS.into_iter().flat_map(|b| [(b, true), (b, false)]) {
        let device = device(backend).autodiff();
        let x = Tensor::<1>::from_floats(values.as_slice(), &device).require_grad();
        let y = if loops {
            ops::scaled_tanh(x.clone(), a, s)
        } else {
            x.clone().mul_scalar(s).tanh().mul_scalar(a)
        };
        let weights = Tensor::<1>::from_floats(upstream.as_slice(), &device);
        let grads = (y.clone() * weights).sum().backward();
        let y = f32s(y);
        let x_grad = f32s(x.grad(&grads).unwrap());
        for (i, &v) in values.iter().enumerate() {
            let (g, u) = (f64::from(x_grad[i]), f64::from(upstream[i]));
            assert!(
                (f64::from(y[i]) - exact(v)).abs() < 4e-7,
                "y({v}): {}",
                y[i]
            );
            let expected = u * exact_slope(v);
            assert!(
                (g - expected).abs() <= 1e-6 * u.abs() + 1e-7 * expected.abs(),
                "{backend}: gradient at {v} (ops: {loops}): {g}, exact {expected}"
            );
        }
    }
}
