//! LeNet-5's trainable 2x2 subsampling (`ops::subsample2x2`) on every backend against f64 loops.

mod common;

use burn::prelude::*;
use common::{BACKENDS, device, f32s};

/// Output and the three gradients on every backend (the loops on flex and ndarray, the
/// reference formulation on wgpu) against f64 loops, on maps with an odd row and column.
#[test]
fn subsampling_and_its_gradients_match_f64_loops() {
    let [n, c, h, w] = [3, 2, 5, 7];
    let [oh, ow] = [h / 2, w / 2];
    let irregular = |count: usize, seed: usize| -> Vec<f32> {
        (0..count)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    };
    let (x, upstream) = (irregular(n * c * h * w, 1), irregular(n * c * oh * ow, 2));
    let (coefficient, bias) = ([0.7f32, -1.3], [0.25f32, -0.5]);
    // f64 loops: the output, and the gradients of the upstream-weighted sum.
    let mut y = vec![0f64; n * c * oh * ow];
    let mut x_grad = vec![0f64; x.len()];
    let (mut k_grad, mut b_grad) = ([0f64; 2], [0f64; 2]);
    for plane in 0..n * c {
        let ch = plane % c;
        for i in 0..oh {
            for j in 0..ow {
                let cells = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .map(|(di, dj)| plane * h * w + (2 * i + di) * w + 2 * j + dj);
                let sum: f64 = cells.iter().map(|&k| f64::from(x[k])).sum();
                let out = plane * oh * ow + i * ow + j;
                let g = f64::from(upstream[out]);
                y[out] = f64::from(coefficient[ch]) * sum + f64::from(bias[ch]);
                for k in cells {
                    x_grad[k] += f64::from(coefficient[ch]) * g;
                }
                k_grad[ch] += g * sum;
                b_grad[ch] += g;
            }
        }
    }
    let close = |got: Vec<f32>, expected: &[f64], what: &str| {
        assert_eq!(got.len(), expected.len(), "{what}");
        for (g, e) in got.iter().zip(expected) {
            assert!(
                (f64::from(*g) - e).abs() < 1e-5 * (1.0 + e.abs()),
                "{what}: {g} vs {e}"
            );
        }
    };
    for backend in BACKENDS {
        let device = device(backend).autodiff();
        let input = Tensor::<1>::from_floats(x.as_slice(), &device)
            .reshape([n, c, h, w])
            .require_grad();
        let k = Tensor::<1>::from_floats(coefficient, &device).require_grad();
        let b = Tensor::<1>::from_floats(bias, &device).require_grad();
        let out = ops::subsample2x2(input.clone(), k.clone(), b.clone());
        let weights = Tensor::<1>::from_floats(upstream.as_slice(), &device);
        let grads = (out.clone() * weights.reshape([n, c, oh, ow]))
            .sum()
            .backward();
        close(f32s(out), &y, "output");
        close(f32s(input.grad(&grads).unwrap()), &x_grad, "x");
        close(f32s(k.grad(&grads).unwrap()), &k_grad, "coefficient");
        close(f32s(b.grad(&grads).unwrap()), &b_grad, "bias");
    }
}
