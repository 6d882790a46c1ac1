//! Batch normalisation in training followed by a leaky ReLU, as one backend operation with loops
//! on the CPU backends.
//!
//! Burn's default `batch_norm_train` gathers each channel's values through transposed copies of
//! the activation and its backward runs a dozen whole-tensor operations; on flex that cost as
//! much as the FMP net's convolutions. The CPU backends here read each channel's planes in
//! place, once for the statistics and once for the output (the same backward). wgpu runs Burn's
//! formulation from tensor operations, each channel's sums taken one dimension at a time (see
//! `channel_total`); it is also the reference the loops are tested against. The leaky
//! ReLU that follows every batch norm of the FMP net is applied in the same pass (its slope is an
//! argument; 1 leaves the output as it is): one full read and write of the activation fewer each
//! way, and one tensor fewer kept for the backward pass.

use burn::backend::TensorMetadata;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::nn::{BatchNorm, conv::Conv2d};
use burn::prelude::*;
use rayon::prelude::*;

use crate::channel::{channel_total, per_channel};
use crate::conv::{conv2d_stride1_leaky_relu, stride1_bias_padding};
use crate::cpu::{CpuBackend, all_f32, par_blocks, sums};
use crate::graph::record;
use crate::leaky_relu;

/// The backend operations behind [`batch_norm_train`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Remote, Autodiff)]
pub trait BatchNormTrainBackend: Backend {
    /// Normalises `x` `[n, c, ...]` per channel with the batch's mean and biased variance, then
    /// scales by `gamma` and shifts by `beta` (`[c]`) and applies the leaky ReLU of
    /// `settings.slope`: the output, the mean and the variance.
    #[fusion(default)]
    fn bn_train_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        settings: NormSettings,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference_forward::<Self>(x, gamma, beta, settings)
    }

    /// The gradients of `x`, `gamma` and `beta` given the output's, `grad`.
    #[fusion(default)]
    fn bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        settings: NormSettings,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference_backward::<Self>(x, gamma, beta, mean, variance, settings, grad)
    }
}

/// The constants of [`BatchNormTrainBackend`]'s operation.
#[derive(Clone, Copy, Debug)]
pub struct NormSettings {
    /// Added to the variance before its square root.
    pub epsilon: f64,
    /// The slope of the leaky ReLU applied to the output for negative values; 1 for none.
    pub slope: f64,
}

/// Burn's training batch norm followed by the leaky ReLU of Burn's operations: output, mean,
/// variance.
fn reference_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    settings: NormSettings,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let (output, mean, variance) = reference_norm_forward::<B>(x, gamma, beta, settings.epsilon);
    let output = leaky_relu::reference_forward_unless_linear::<B>(output, settings.slope);
    (output, mean, variance)
}

/// The gradients of [`reference_forward`]: input, gamma, beta.
fn reference_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    mean: FloatTensor<B>,
    variance: FloatTensor<B>,
    settings: NormSettings,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let grad = if settings.slope == 1.0 {
        grad
    } else {
        // The normalised values before the activation, recomputed from the statistics.
        let shape = x.shape();
        let per_channel = |v| per_channel::<B>(v, &shape);
        let std = B::float_sqrt(B::float_add_scalar(
            variance.clone(),
            settings.epsilon.into(),
        ));
        let scale = B::float_div(gamma.clone(), std);
        let shift = B::float_sub(beta, B::float_mul(mean.clone(), scale.clone()));
        let normalised = B::float_add(
            B::float_mul(x.clone(), per_channel(scale)),
            per_channel(shift),
        );
        leaky_relu::reference_backward::<B>(normalised, settings.slope, grad)
    };
    reference_norm_backward::<B>(x, gamma, mean, variance, settings.epsilon, grad)
}

/// `gamma / sqrt(variance + epsilon)` and `beta - mean * that`, per channel: the output is
/// `x * scale + shift` before the activation. Forward and backward compute it alike from the
/// f32 statistics, so that the backward pass sees the signs the forward pass saw.
fn affine([gamma, beta, mean, variance]: [&[f32]; 4], epsilon: f64) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = (gamma.iter().zip(variance))
        .map(|(&g, &v)| (f64::from(g) / (f64::from(v) + epsilon).sqrt()) as f32)
        .collect();
    let shift = (beta.iter().zip(mean).zip(&scale))
        .map(|((&b, &m), &s)| b - m * s)
        .collect();
    (scale, shift)
}

/// Training batch norm from Burn's tensor operations: output, mean, biased variance. As Burn's
/// `batch_norm_train`, but each channel's sums are taken one dimension at a time
/// ([`channel_total`]).
fn reference_norm_forward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let [c, count] = [shape[1], shape.num_elements() / shape[1].max(1)];
    let mean = B::float_mul_scalar(channel_total::<B>(x.clone()), (1.0 / count as f64).into());
    let centred = B::float_sub(x, mean.clone());
    let squares = B::float_mul(centred.clone(), centred.clone());
    let variance = B::float_mul_scalar(channel_total::<B>(squares), (1.0 / count as f64).into());
    let scale = B::float_mul(
        inverse_std::<B>(variance.clone(), epsilon),
        per_channel::<B>(gamma, &shape),
    );
    let output = B::float_add(B::float_mul(centred, scale), per_channel::<B>(beta, &shape));
    let statistic = |v| B::float_reshape(v, [c].into());
    (output, statistic(mean), statistic(variance))
}

/// The gradients of [`reference_norm_forward`] (Burn's `batch_norm_train_backward`, with the channel
/// sums of [`channel_total`]): input, gamma, beta.
fn reference_norm_backward<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    mean: FloatTensor<B>,
    variance: FloatTensor<B>,
    epsilon: f64,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let [c, count] = [shape[1], shape.num_elements() / shape[1].max(1)];
    let inverse_std = inverse_std::<B>(per_channel::<B>(variance, &shape), epsilon);
    let normalised = B::float_mul(
        B::float_sub(x, per_channel::<B>(mean, &shape)),
        inverse_std.clone(),
    );
    let beta_grad = channel_total::<B>(grad.clone());
    let gamma_grad = channel_total::<B>(B::float_mul(grad.clone(), normalised.clone()));
    let per_value = |total: FloatTensor<B>| B::float_mul_scalar(total, (1.0 / count as f64).into());
    let centred_grad = B::float_sub(grad, per_value(beta_grad.clone()));
    let projected = B::float_mul(normalised, per_value(gamma_grad.clone()));
    let scale = B::float_mul(per_channel::<B>(gamma, &shape), inverse_std);
    let x_grad = B::float_mul(scale, B::float_sub(centred_grad, projected));
    let parameter = |v| B::float_reshape(v, [c].into());
    (x_grad, parameter(gamma_grad), parameter(beta_grad))
}

/// `1 / sqrt(variance + epsilon)`.
fn inverse_std<B: Backend>(variance: FloatTensor<B>, epsilon: f64) -> FloatTensor<B> {
    B::float_recip(B::float_sqrt(B::float_add_scalar(variance, epsilon.into())))
}

/// `[n, c, values per channel and image]` of a tensor.
fn channel_layout(x: &impl TensorMetadata) -> [usize; 3] {
    let shape = x.shape();
    let [n, c] = [shape[0], shape[1]];
    [n, c, shape.num_elements() / (n * c).max(1)]
}

/// For each channel, the sums over the batch and the planes of `f(channel)(value, other)`, where
/// `other` is the matching value of `second` (planes in f32 lanes, channels in f64: a channel
/// sums up to millions of values). One read of both tensors for all `K` sums.
fn channel_sums<const K: usize, F: Fn(f32, f32) -> [f32; K]>(
    first: &[f32],
    second: &[f32],
    [n, c, plane]: [usize; 3],
    f: impl Fn(usize) -> F + Sync,
) -> Vec<[f64; K]> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let f = f(ch);
            let mut totals = [0f64; K];
            for i in 0..n {
                let at = (i * c + ch) * plane..(i * c + ch + 1) * plane;
                let part = sums(&first[at.clone()], &second[at], &f);
                for (total, v) in totals.iter_mut().zip(part) {
                    *total += v;
                }
            }
            totals
        })
        .collect()
}

/// Each channel's mean and biased variance over the batch and the planes, reading `x` from
/// memory once: each plane's sum and then its squared deviations from its own mean (while it is
/// in cache), the planes combined by Chan, Golub and LeVeque's pairwise formula. Unlike
/// E[x^2] - mean^2 this does not cancel when the mean is large against the spread.
fn channel_statistics(x: &[f32], [n, c, plane]: [usize; 3]) -> Vec<(f64, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes: Vec<(f64, f64)> = (0..n)
                .map(|i| {
                    let values = &x[(i * c + ch) * plane..][..plane];
                    let [sum] = sums(values, values, |v, _| [v]);
                    let mean = sum / plane as f64;
                    let centre = mean as f32;
                    let [squares] = sums(values, values, |v, _| [(v - centre) * (v - centre)]);
                    // Around the f32 centre; shifted to the plane's f64 mean.
                    let offset = mean - f64::from(centre);
                    (mean, squares - plane as f64 * offset * offset)
                })
                .collect();
            let mean = planes.iter().map(|(m, _)| m).sum::<f64>() / n as f64;
            let squares: f64 = (planes.iter())
                .map(|(m, q)| q + plane as f64 * (m - mean) * (m - mean))
                .sum();
            (mean, squares / (n * plane) as f64)
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
    par_blocks(first.len(), plane, |index, out| {
        let f = f(index % c);
        let at = index * plane..(index + 1) * plane;
        for ((o, &a), &b) in out.iter_mut().zip(&first[at.clone()]).zip(&second[at]) {
            *o = f(a, b);
        }
    })
}

impl<B: CpuBackend> BatchNormTrainBackend for B {
    fn bn_train_forward(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        beta: FloatTensor<B>,
        settings: NormSettings,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        if !all_f32(&[&x, &gamma, &beta]) {
            return reference_forward::<B>(x, gamma, beta, settings);
        }
        let layout = channel_layout(&x);
        let shape = x.shape();
        let xs = B::f32s(&x);
        let xs = &*xs;
        let (mean, variance): (Vec<f32>, Vec<f32>) = channel_statistics(xs, layout)
            .into_iter()
            .map(|(mean, variance)| (mean as f32, variance as f32))
            .unzip();
        let (gamma, beta) = (B::f32s(&gamma), B::f32s(&beta));
        let (scale, shift) = affine([&gamma, &beta, &mean, &variance], settings.epsilon);
        let slope = settings.slope as f32;
        let output = map_planes(xs, xs, layout, |ch| {
            let (scale, shift) = (scale[ch], shift[ch]);
            move |v, _| leaky_relu::leaky(v * scale + shift, slope)
        });
        let channels = [gamma.len()];
        (
            B::float(output, shape),
            B::float(mean, channels),
            B::float(variance, channels),
        )
    }

    fn bn_train_backward(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        beta: FloatTensor<B>,
        mean: FloatTensor<B>,
        variance: FloatTensor<B>,
        settings: NormSettings,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        if !all_f32(&[&x, &grad, &gamma, &beta, &mean, &variance]) {
            return reference_backward::<B>(x, gamma, beta, mean, variance, settings, grad);
        }
        let layout @ [n, c, plane] = channel_layout(&x);
        let count = (n * plane) as f64;
        let shape = x.shape();
        let [gamma, beta, mean, variance] = [&gamma, &beta, &mean, &variance].map(B::f32s);
        let [xs, gs] = [&x, &grad].map(B::f32s);
        let (xs, gs) = (&*xs, &*gs);
        let epsilon = settings.epsilon;
        let inv_std: Vec<f64> = variance
            .iter()
            .map(|&v| 1.0 / (v as f64 + epsilon).sqrt())
            .collect();
        // The output's gradient before the activation, from the sign the forward pass saw.
        let (forward_scale, forward_shift) = affine([&gamma, &beta, &mean, &variance], epsilon);
        let leaky = settings.slope as f32;
        let through = |ch: usize| {
            let (scale, shift) = (forward_scale[ch], forward_shift[ch]);
            // The factor from the comparison as a number, not a choice: the compiler made the
            // choice a branch per value, and the signs are unpredictable. Exactly 1 or `leaky`.
            move |g: f32, v: f32| {
                let positive = f32::from(u8::from(v * scale + shift > 0.0));
                g * (positive + leaky * (1.0 - positive))
            }
        };
        // Per channel: the sum of the gradient before the activation, and of it times
        // (x - mean) (times inv_std, the gradient of gamma).
        let (grad_sum, grad_centred): (Vec<f64>, Vec<f64>) = channel_sums(gs, xs, layout, |ch| {
            let (mean, through) = (mean[ch], through(ch));
            move |g, v| {
                let g = through(g, v);
                [g, g * (v - mean)]
            }
        })
        .into_iter()
        .map(|[sum, centred]| (sum, centred))
        .unzip();
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
            let through = through(ch);
            move |g, v| scale * (through(g, v) - grad_mean - (v - mean) * slope)
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
        settings: NormSettings,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let mut statistics = None;
        let output = record::<B, C, _, 3>(
            [x, gamma, beta],
            |[x, gamma, beta]| {
                let (output, mean, variance) =
                    B::bn_train_forward(x.clone(), gamma.clone(), beta.clone(), settings);
                statistics = Some((mean.clone(), variance.clone()));
                // The input, the parameters and the batch statistics, as the forward pass had
                // them.
                (output, (x, [gamma, beta, mean, variance], settings))
            },
            |(x, [gamma, beta, mean, variance], settings), grad| {
                let (x, gamma, beta) =
                    B::bn_train_backward(x, gamma, beta, mean, variance, settings, grad);
                [x, gamma, beta]
            },
        );
        let (mean, variance) = statistics.expect("the forward pass ran");
        (output, Self::from_inner(mean), Self::from_inner(variance))
    }

    fn bn_train_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        settings: NormSettings,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Only reached when differentiating a gradient: not needed for training, so the results
        // are constants.
        let (x_grad, gamma_grad, beta_grad) = B::bn_train_backward(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            mean.into_primitive(),
            variance.into_primitive(),
            settings,
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
    batch_norm_leaky_relu(norm, x, 1.0)
}

/// [`batch_norm`] followed by the leaky ReLU of `slope` ([`crate::leaky_relu`]), in one
/// operation.
pub fn batch_norm_leaky_relu(norm: &BatchNorm, x: Tensor<4>, slope: f64) -> Tensor<4> {
    if !training(norm, &x) {
        return crate::leaky_relu(norm.forward(x), slope);
    }
    let settings = NormSettings {
        epsilon: norm.epsilon,
        slope,
    };
    let (output, mean, variance) = Dispatch::bn_train_forward(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        norm.beta.val().into_dispatch(),
        settings,
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

/// `conv` ([`crate::conv2d`]), then `norm` and the leaky ReLU of `slope`
/// ([`batch_norm_leaky_relu`]).
///
/// Outside training, batch norm is a per-channel scale and shift with its running statistics,
/// so it is folded into the convolution's weight and bias (`scale * weight`, `scale * (bias -
/// mean) + beta`) and the leaky ReLU is applied as the convolution writes its output: neither
/// Burn's inference batch norm nor the activation makes a pass of its own over the activations.
pub fn conv2d_batch_norm_leaky_relu(
    conv: &Conv2d,
    norm: &BatchNorm,
    x: Tensor<4>,
    slope: f64,
) -> Tensor<4> {
    match stride1_bias_padding(conv) {
        Some((bias, padding)) if !training(norm, &x) => {
            let device = x.device();
            let [mean, variance] =
                [&norm.running_mean, &norm.running_var].map(|s| s.value().to_device(&device));
            let scale = norm.gamma.val() / (variance + norm.epsilon).sqrt();
            let weight = conv.weight.val() * scale.clone().reshape([-1, 1, 1, 1]);
            let bias = (bias - mean) * scale + norm.beta.val();
            conv2d_stride1_leaky_relu(x, weight, bias, padding, slope)
        }
        _ => batch_norm_leaky_relu(norm, crate::conv2d(conv, x), slope),
    }
}

/// Whether `norm` normalises `x` with its batch's statistics, as Burn's `BatchNorm::forward`
/// decides: on an autodiff device, unless the layer is frozen.
fn training(norm: &BatchNorm, x: &Tensor<4>) -> bool {
    x.device().is_autodiff() && norm.training.is_enabled()
}
