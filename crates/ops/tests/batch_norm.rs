//! The training batch norm operation against Burn's own `BatchNorm` (its default composite
//! operation) and against plain f64 loops, on every backend: output, running statistics and the
//! gradients of the input, gamma and beta; and with the leaky ReLU in the same operation, against
//! Burn's batch norm followed by a leaky ReLU from Burn's operations.

mod common;

use burn::module::{Param, RunningState};
use burn::nn::{BatchNormConfig, PaddingConfig2d, conv::Conv2dConfig};
use burn::{prelude::*, tensor::Distribution};
use common::{BACKENDS, close_within, device, f32s};

const SHAPE: [usize; 4] = [3, 4, 5, 6];

#[test]
fn training_batch_norm_matches_burns_and_plain_loops_on_every_backend() {
    for backend in BACKENDS {
        let device = device(backend).autodiff();
        // Channels with other means and spreads, as after a convolution.
        let x = Tensor::<4>::random(SHAPE, Distribution::Normal(0.0, 1.0), &device)
            * Tensor::<1>::from_floats([0.5, 1.0, 2.0, 4.0], &device).reshape([1, 4, 1, 1])
            + Tensor::<1>::from_floats([-3.0, 0.0, 1.0, 10.0], &device).reshape([1, 4, 1, 1]);
        let x = x.detach();
        let upstream = Tensor::<4>::random(SHAPE, Distribution::Normal(0.0, 1.0), &device);
        // A fresh layer per run: clones would share their running statistics.
        let layer = || burn::nn::BatchNorm {
            gamma: burn::module::Param::from_tensor(Tensor::<1>::from_floats(
                [0.5, 1.5, -1.0, 2.0],
                &device,
            )),
            beta: burn::module::Param::from_tensor(Tensor::<1>::from_floats(
                [0.1, -0.2, 0.3, 0.0],
                &device,
            )),
            ..BatchNormConfig::new(4).init(&device)
        };

        let run = |ours: bool| {
            let norm = layer();
            let input = x.clone().require_grad();
            let output = if ours {
                ops::batch_norm(&norm, input.clone())
            } else {
                norm.forward(input.clone())
            };
            let grads = (output.clone() * upstream.clone()).sum().backward();
            [
                f32s(output),
                f32s(input.grad(&grads).unwrap()),
                f32s(norm.gamma.grad(&grads).unwrap()),
                f32s(norm.beta.grad(&grads).unwrap()),
                f32s(norm.running_mean.value_sync()),
                f32s(norm.running_var.value_sync()),
            ]
        };
        let ours = run(true);
        let burns = run(false);
        let names = [
            "output",
            "x grad",
            "gamma grad",
            "beta grad",
            "running mean",
            "running var",
        ];
        for ((a, b), name) in ours.iter().zip(&burns).zip(names) {
            close_within(a, b, 1e-4, &format!("{backend} {name}"));
        }

        // Plain f64 loops for the output and the gamma gradient (sum of upstream * x_hat).
        let xs: Vec<f64> = f32s(x.clone()).into_iter().map(f64::from).collect();
        let gs: Vec<f64> = f32s(upstream.clone()).into_iter().map(f64::from).collect();
        let [n, c, h, w] = SHAPE;
        let plane = h * w;
        let gamma = [0.5, 1.5, -1.0, 2.0];
        let beta = [0.1, -0.2, 0.3, 0.0];
        let mut output = vec![0f32; xs.len()];
        let mut gamma_grad = vec![0f32; c];
        for ch in 0..c {
            let at = |i: usize, k: usize| (i * c + ch) * plane + k;
            let cells: Vec<usize> = (0..n)
                .flat_map(|i| (0..plane).map(move |k| at(i, k)))
                .collect();
            let mean = cells.iter().map(|&j| xs[j]).sum::<f64>() / cells.len() as f64;
            let var =
                cells.iter().map(|&j| (xs[j] - mean).powi(2)).sum::<f64>() / cells.len() as f64;
            let inv = 1.0 / (var + 1e-5).sqrt();
            for &j in &cells {
                output[j] = ((xs[j] - mean) * inv * gamma[ch] + beta[ch]) as f32;
                gamma_grad[ch] += (gs[j] * (xs[j] - mean) * inv) as f32;
            }
        }
        close_within(
            &ours[0],
            &output,
            1e-4,
            &format!("{backend} output vs loops"),
        );
        close_within(
            &ours[2],
            &gamma_grad,
            1e-3,
            &format!("{backend} gamma grad vs loops"),
        );
    }
}

#[test]
fn batch_norm_with_leaky_relu_matches_the_two_operations_on_every_backend() {
    let slope = 0.3;
    for backend in BACKENDS {
        let device = device(backend).autodiff();
        // Half the values below zero after normalisation: both sides of the activation.
        let x = Tensor::<4>::random(SHAPE, Distribution::Normal(1.0, 2.0), &device).detach();
        let upstream = Tensor::<4>::random(SHAPE, Distribution::Normal(0.0, 1.0), &device);
        let run = |fused: bool| {
            let mut norm = BatchNormConfig::new(4).init(&device);
            norm.gamma = burn::module::Param::from_tensor(Tensor::<1>::from_floats(
                [0.5, 1.5, -1.0, 2.0],
                &device,
            ));
            let input = x.clone().require_grad();
            let output = if fused {
                ops::batch_norm_leaky_relu(&norm, input.clone(), slope)
            } else {
                let normalised = norm.forward(input.clone());
                normalised.clone().mul_scalar(slope)
                    + burn::tensor::activation::relu(normalised).mul_scalar(1.0 - slope)
            };
            let grads = (output.clone() * upstream.clone()).sum().backward();
            [
                f32s(output),
                f32s(input.grad(&grads).unwrap()),
                f32s(norm.gamma.grad(&grads).unwrap()),
                f32s(norm.beta.grad(&grads).unwrap()),
            ]
        };
        let (fused, separate) = (run(true), run(false));
        for ((a, b), name) in
            fused
                .iter()
                .zip(&separate)
                .zip(["output", "x grad", "gamma grad", "beta grad"])
        {
            close_within(a, b, 1e-4, &format!("{backend} {name}"));
        }
    }
}

#[test]
fn evaluation_uses_the_running_statistics() {
    let device = device("flex");
    let norm = BatchNormConfig::new(2).init(&device);
    let x = Tensor::<4>::from_floats([[[[1.0, 3.0]], [[-2.0, 6.0]]]], &device);
    // Running mean 0 and variance 1 at initialisation: the input comes back (up to epsilon).
    close_within(
        &f32s(ops::batch_norm(&norm, x.clone())),
        &f32s(x),
        1e-4,
        "inference",
    );
}

/// A channel whose mean is large against its spread (1000 and 0.05): the batch variance must not
/// cancel, as E[x^2] - mean^2 in f32 would (its rounding alone is larger than the variance).
/// The normalised output then has mean 0 and variance var / (var + epsilon), checked in f64 to
/// within the rounding of the f32 output (`x * scale + shift` near 20000 in magnitude).
#[test]
fn batch_statistics_hold_for_a_large_mean_and_a_small_spread() {
    let shape = [8, 2, 9, 10];
    for backend in BACKENDS {
        let device = device(backend).autodiff();
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 0.05), &device) + 1000.0;
        let norm = BatchNormConfig::new(2).init(&device);
        let output = f32s(ops::batch_norm(&norm, x.clone()));
        let inputs = f32s(x);
        let [n, c, h, w] = shape;
        for ch in 0..c {
            let cells: Vec<usize> = (0..n)
                .flat_map(|i| (i * c + ch) * h * w..(i * c + ch + 1) * h * w)
                .collect();
            let stats = |v: &[f32]| {
                let mean = cells.iter().map(|&j| f64::from(v[j])).sum::<f64>() / cells.len() as f64;
                let var = cells
                    .iter()
                    .map(|&j| (f64::from(v[j]) - mean).powi(2))
                    .sum::<f64>()
                    / cells.len() as f64;
                (mean, var)
            };
            let (_, var) = stats(&inputs);
            let (out_mean, out_var) = stats(&output);
            let expected = var / (var + 1e-5);
            assert!(
                out_mean.abs() < 5e-3,
                "{backend} channel {ch}: mean {out_mean}"
            );
            assert!(
                (out_var - expected).abs() < 1e-2 * expected,
                "{backend} channel {ch}: variance {out_var}, expected {expected}"
            );
        }
    }
}

/// Batch norm at the FMP nets' widest layers (FMP-MNIST's first at batch 64, FMP-CIFAR's first
/// at batch 8), on wgpu against flex: output, running statistics and gradients. Burn's own
/// formulation sums each channel's `n * h * w` values as one row, and CubeCL's reductions over
/// rows that long were wrong on wgpu (by 5 to 30% here). Slope 1 (no leaky ReLU): a value that
/// normalises to within rounding of 0 could take the other slope on the other backend.
#[test]
fn batch_norm_of_large_maps_matches_flex_on_wgpu() {
    for shape in [[64, 32, 35, 35], [8, 4, 93, 93]] {
        let flex = Device::flex().autodiff();
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.5, 2.0), &flex).inner();
        let upstream = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &flex).inner();
        let run = |backend: &str| {
            let device = device(backend).autodiff();
            // Fresh on each backend (gamma 1, beta 0): copies would share running statistics.
            let norm = BatchNormConfig::new(shape[1]).init(&device);
            let x = x.clone().to_device(&device).autodiff().require_grad();
            let output = ops::batch_norm_leaky_relu(&norm, x.clone(), 1.0);
            let grads = (output.clone() * upstream.clone().to_device(&device))
                .sum()
                .backward();
            [
                f32s(output),
                f32s(norm.running_mean.value_sync()),
                f32s(norm.running_var.value_sync()),
                f32s(x.grad(&grads).unwrap()),
                f32s(norm.gamma.grad(&grads).unwrap()),
                f32s(norm.beta.grad(&grads).unwrap()),
            ]
        };
        let expected = run("flex");
        let names = [
            "output",
            "running mean",
            "running var",
            "x grad",
            "gamma grad",
            "beta grad",
        ];
        for ((ours, theirs), name) in run("wgpu").iter().zip(&expected).zip(names) {
            let norm = |v: &[f32]| v.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            let diff: Vec<f32> = ours.iter().zip(theirs).map(|(a, b)| a - b).collect();
            let relative = norm(&diff) / norm(theirs);
            assert!(
                relative <= 1e-4,
                "{shape:?} {name}: {relative:.2e} of the norm from flex's"
            );
        }
    }
}

/// Outside training, the convolution with batch norm and the leaky ReLU runs as one convolution
/// with the normalisation folded into its weight and bias: the same output as the three
/// operations, with running statistics, scale and shift far from their initial values. On an
/// inference device, and on a training device with the layer frozen, where the gradients of the
/// input and the convolution's parameters flow through the folded weight and bias.
#[test]
fn outside_training_the_folded_convolution_matches_the_three_operations_on_every_backend() {
    let slope = 0.3;
    for backend in BACKENDS {
        for autodiff in [false, true] {
            let device = match autodiff {
                true => device(backend).autodiff(),
                false => device(backend),
            };
            let what = |name: &str| format!("{backend} (autodiff {autodiff}) {name}");
            let conv = Conv2dConfig::new([3, 4], [2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(&device);
            let floats = |v: [f32; 4]| Tensor::<1>::from_floats(v, &device);
            let norm = burn::nn::BatchNorm {
                gamma: Param::from_tensor(floats([0.5, 1.5, -1.0, 2.0])),
                beta: Param::from_tensor(floats([0.1, -0.2, 0.3, 0.0])),
                running_mean: RunningState::new(floats([0.3, -0.5, 0.0, 2.0])),
                running_var: RunningState::new(floats([0.2, 1.0, 3.0, 0.05])),
                training: Param::from_bool(false),
                ..BatchNormConfig::new(4).init(&device)
            };
            // [2, 3, 4, 5] in, [2, 4, 5, 6] out.
            let x = Tensor::<4>::random(
                SHAPE.map(|d| d - 1),
                Distribution::Normal(0.0, 1.0),
                &device,
            )
            .detach();
            let upstream =
                Tensor::<4>::random([2, 4, 5, 6], Distribution::Normal(0.0, 1.0), &device);
            let run = |fused: bool| {
                let input = if autodiff {
                    x.clone().require_grad()
                } else {
                    x.clone()
                };
                let output = if fused {
                    ops::conv2d_batch_norm_leaky_relu(&conv, &norm, input.clone(), slope)
                } else {
                    let normalised = norm.forward(conv.forward(input.clone()));
                    normalised.clone().mul_scalar(slope)
                        + burn::tensor::activation::relu(normalised).mul_scalar(1.0 - slope)
                };
                let mut values = vec![f32s(output.clone())];
                if autodiff {
                    let grads = (output * upstream.clone()).sum().backward();
                    values.push(f32s(input.grad(&grads).unwrap()));
                    values.push(f32s(conv.weight.grad(&grads).unwrap()));
                    values.push(f32s(conv.bias.as_ref().unwrap().grad(&grads).unwrap()));
                }
                values
            };
            let (fused, separate) = (run(true), run(false));
            assert_eq!(fused.len(), separate.len());
            for ((a, b), name) in
                fused
                    .iter()
                    .zip(&separate)
                    .zip(["output", "x grad", "weight grad", "bias grad"])
            {
                close_within(a, b, 1e-4, &what(name));
            }
        }
    }
}
