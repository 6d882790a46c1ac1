//! Batch normalisation in training, as one backend operation with loops on the CPU backends.
//!
//! Burn's default `batch_norm_train` gathers each channel's values through transposed copies of
//! the activation and its backward runs a dozen whole-tensor operations; on flex that cost as
//! much as the FMP net's convolutions. The CPU backends here read each channel's planes in
//! place, once for the statistics and once for the output (twice and once backward). wgpu keeps
//! Burn's own operation, which is also the reference the loops are tested against.

use burn::backend::TensorMetadata;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::nn::BatchNorm;
use burn::prelude::*;
use rayon::prelude::*;

use crate::cpu::{CpuBackend, all_f32};
use crate::graph::record;

/// The backend operations behind [`batch_norm_train`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Autodiff)]
pub trait BatchNormTrainBackend: Backend {
    /// Normalises `x` `[n, c, ...]` per channel with the batch's mean and biased variance, then
    /// scales by `gamma` and shifts by `beta` (`[c]`): the output, the mean and the variance.
    #[fusion(default)]
    fn bn_train_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burns_forward::<Self>(x, gamma, beta, epsilon)
    }

    /// The gradients of `x`, `gamma` and `beta` given the output's, `grad`.
    #[fusion(default)]
    fn bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burns_backward::<Self>(x, gamma, mean, variance, epsilon, grad)
    }
}

/// Burn's own training batch norm: output, mean, variance.
fn burns_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let result = B::batch_norm_train(x, gamma, beta, epsilon);
    (result.output, result.mean, result.variance)
}

/// Burn's own gradients of it: input, gamma, beta.
fn burns_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    variance: FloatTensor<B>,
    epsilon: f64,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let result = B::batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
    (result.x_grad, result.gamma_grad, result.beta_grad)
}

/// `[n, c, values per channel and image]` of a tensor.
fn channel_layout(x: &impl TensorMetadata) -> [usize; 3] {
    let shape = x.shape();
    let [n, c] = [shape[0], shape[1]];
    [n, c, shape.num_elements() / (n * c).max(1)]
}

/// The sum of `f(a[i], b[i])` over two equal-length slices: in eight f32 lanes (which the
/// compiler vectorises; a plane holds at most a few thousand values), returned as f64.
fn plane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let (chunks_a, chunks_b) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = (chunks_a.remainder().iter())
        .zip(chunks_b.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    let mut lanes = [0f32; 8];
    for (x, y) in chunks_a.zip(chunks_b) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += f(x, y);
        }
    }
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// For each channel, the sum over the batch and the planes of `f(channel)(value, other)`, where
/// `other` is the matching value of `second` (planes in f32 lanes, channels in f64: a channel
/// sums up to millions of values).
fn channel_sums<F: Fn(f32, f32) -> f32>(
    first: &[f32],
    second: &[f32],
    [n, c, plane]: [usize; 3],
    f: impl Fn(usize) -> F + Sync,
) -> Vec<f64> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let f = f(ch);
            (0..n)
                .map(|i| {
                    let at = (i * c + ch) * plane..(i * c + ch + 1) * plane;
                    plane_sum(&first[at.clone()], &second[at], &f)
                })
                .sum()
        })
        .collect()
}

/// `out[i] = f(channel)(first[i], second[i])` over every value, planes in parallel.
fn map_planes<F: Fn(f32, f32) -> f32>(
    first: &[f32],
    second: &[f32],
    [_, c, plane]: [usize; 3],
    f: impl Fn(usize) -> F + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; first.len()];
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(index, out)| {
            let f = f(index % c);
            let at = index * plane..(index + 1) * plane;
            for ((o, &a), &b) in out.iter_mut().zip(&first[at.clone()]).zip(&second[at]) {
                *o = f(a, b);
            }
        });
    out
}

impl<B: CpuBackend> BatchNormTrainBackend for B {
    fn bn_train_forward(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        beta: FloatTensor<B>,
        epsilon: f64,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        if !all_f32(&[&x]) {
            return burns_forward::<B>(x, gamma, beta, epsilon);
        }
        let layout @ [n, _, plane] = channel_layout(&x);
        let count = (n * plane) as f64;
        let shape = x.shape();
        let xs = B::f32s(&x);
        let xs = &*xs;
        let mean: Vec<f64> = channel_sums(xs, xs, layout, |_| |v, _| v)
            .into_iter()
            .map(|s| s / count)
            .collect();
        // Two passes: the centred sum of squares does not cancel as E[x^2] - mean^2 can.
        let variance: Vec<f64> = channel_sums(xs, xs, layout, |ch| {
            let mean = mean[ch] as f32;
            move |v, _| (v - mean) * (v - mean)
        })
        .into_iter()
        .map(|s| s / count)
        .collect();
        let (gamma, beta) = (B::f32s(&gamma), B::f32s(&beta));
        let scale: Vec<f32> = (0..gamma.len())
            .map(|ch| (gamma[ch] as f64 / (variance[ch] + epsilon).sqrt()) as f32)
            .collect();
        let shift: Vec<f32> = (0..gamma.len())
            .map(|ch| beta[ch] - mean[ch] as f32 * scale[ch])
            .collect();
        let output = map_planes(xs, xs, layout, |ch| {
            let (scale, shift) = (scale[ch], shift[ch]);
            move |v, _| v * scale + shift
        });
        let channels = [gamma.len()];
        let as_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
        (
            B::float(output, shape),
            B::float(as_f32(mean), channels),
            B::float(as_f32(variance), channels),
        )
    }

    fn bn_train_backward(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        mean: FloatTensor<B>,
        variance: FloatTensor<B>,
        epsilon: f64,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        if !all_f32(&[&x, &grad]) {
            return burns_backward::<B>(x, gamma, mean, variance, epsilon, grad);
        }
        let layout @ [n, c, plane] = channel_layout(&x);
        let count = (n * plane) as f64;
        let shape = x.shape();
        let [xs, gs, gamma, mean, variance] = [&x, &grad, &gamma, &mean, &variance].map(B::f32s);
        let (xs, gs) = (&*xs, &*gs);
        let inv_std: Vec<f64> = variance
            .iter()
            .map(|&v| 1.0 / (v as f64 + epsilon).sqrt())
            .collect();
        let grad_sum = channel_sums(gs, gs, layout, |_| |g, _| g);
        // sum of grad * (x - mean); times inv_std it is the gradient of gamma.
        let grad_centred = channel_sums(gs, xs, layout, |ch| {
            let mean = mean[ch];
            move |g, v| g * (v - mean)
        });
        // dx = gamma * inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), x_hat = (x - mean) * inv_std
        let scale: Vec<f32> = (0..c)
            .map(|ch| (gamma[ch] as f64 * inv_std[ch]) as f32)
            .collect();
        let grad_mean: Vec<f32> = grad_sum.iter().map(|s| (s / count) as f32).collect();
        let slope: Vec<f32> = (0..c)
            .map(|ch| (grad_centred[ch] * inv_std[ch].powi(2) / count) as f32)
            .collect();
        let x_grad = map_planes(gs, xs, layout, |ch| {
            let (scale, grad_mean, mean, slope) = (scale[ch], grad_mean[ch], mean[ch], slope[ch]);
            move |g, v| scale * (g - grad_mean - (v - mean) * slope)
        });
        let gamma_grad = (0..c)
            .map(|ch| (grad_centred[ch] * inv_std[ch]) as f32)
            .collect();
        let beta_grad = grad_sum.into_iter().map(|s| s as f32).collect();
        (
            B::float(x_grad, shape),
            B::float(gamma_grad, [c]),
            B::float(beta_grad, [c]),
        )
    }
}

impl BatchNormTrainBackend for burn_cubecl::CubeBackend {}

impl<B: BatchNormTrainBackend, C: CheckpointStrategy> BatchNormTrainBackend for Autodiff<B, C> {
    fn bn_train_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let mut statistics = None;
        let output = record::<B, C, _, 3>(
            [x, gamma, beta],
            |[x, gamma, beta]| {
                let (output, mean, variance) =
                    B::bn_train_forward(x.clone(), gamma.clone(), beta, epsilon);
                statistics = Some((mean.clone(), variance.clone()));
                // The input, gamma and the batch statistics, as the forward pass had them.
                (output, ([x, gamma, mean, variance], epsilon))
            },
            |([x, gamma, mean, variance], epsilon), grad| {
                let (x, gamma, beta) =
                    B::bn_train_backward(x, gamma, mean, variance, epsilon, grad);
                [x, gamma, beta]
            },
        );
        let (mean, variance) = statistics.expect("the forward pass ran");
        (output, Self::from_inner(mean), Self::from_inner(variance))
    }

    fn bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Only reached when differentiating a gradient: not needed for training, so the results
        // are constants.
        let (x_grad, gamma_grad, beta_grad) = B::bn_train_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            mean.into_primitive(),
            variance.into_primitive(),
            epsilon,
            grad.into_primitive(),
        );
        (
            Self::from_inner(x_grad),
            Self::from_inner(gamma_grad),
            Self::from_inner(beta_grad),
        )
    }
}

/// `norm` applied to `x` `[n, c, h, w]` as Burn's `BatchNorm::forward` does, with the training
/// pass (batch statistics, running statistics updated) through [`BatchNormTrainBackend`].
pub fn batch_norm(norm: &BatchNorm, x: Tensor<4>) -> Tensor<4> {
    if !(x.device().is_autodiff() && norm.training.is_enabled()) {
        return norm.forward(x);
    }
    let (output, mean, variance) = Dispatch::bn_train_forward(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        norm.beta.val().into_dispatch(),
        norm.epsilon,
    );
    let (mean, variance) = (
        Tensor::<1>::from_dispatch(mean),
        Tensor::<1>::from_dispatch(variance),
    );
    let running = |state: &burn::module::RunningState<Tensor<1>>, batch: Tensor<1>| {
        let device = batch.device();
        let updated = state
            .value_sync()
            .to_device(&device)
            .mul_scalar(1.0 - norm.momentum)
            .add(batch.detach().mul_scalar(norm.momentum));
        state.update(updated.detach());
    };
    running(&norm.running_mean, mean);
    running(&norm.running_var, variance);
    Tensor::from_dispatch(output)
}
