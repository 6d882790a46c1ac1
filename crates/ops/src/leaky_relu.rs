//! Leaky ReLU as one backend operation: a single pass forward and backward on the CPU.
//!
//! Burn's `leaky_relu` builds a mask and selects through it (on flex nine times relu's time at the
//! FMP net's shapes); the composite `slope * x + (1 - slope) * relu(x)` runs four whole-tensor
//! operations forward and as many backward. The CPU backends here map each value once each way;
//! wgpu runs that composite, which is also the reference the loops are tested against.

use burn::backend::TensorMetadata;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use crate::cpu::{CpuBackend, all_f32, map};
use crate::graph::record;

/// The backend operations behind [`leaky_relu`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Remote, Autodiff)]
pub trait LeakyReluBackend: Backend {
    /// `x` where positive, `slope * x` elsewhere.
    #[fusion(default)]
    fn leaky_relu_forward(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        reference_forward::<Self>(x, slope)
    }

    /// The input's gradient given the output's: `grad` where `x` is positive, `slope * grad`
    /// elsewhere.
    #[fusion(default)]
    fn leaky_relu_backward(
        x: FloatTensor<Self>,
        slope: f64,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference_backward::<Self>(x, slope, grad)
    }
}

/// The leaky ReLU of `slope` on one value, as the CPU loops apply it: branch-free, so that it
/// vectorises (the signs of activations are unpredictable); exactly `z` for slope 1.
#[inline(always)]
pub(crate) fn leaky(z: f32, slope: f32) -> f32 {
    z.max(0.0) + slope * z.min(0.0)
}

/// `slope * x + (1 - slope) * relu(x)`: the same function from operations every backend has.
pub(crate) fn reference_forward<B: Backend>(x: FloatTensor<B>, slope: f64) -> FloatTensor<B> {
    let linear = B::float_mul_scalar(x.clone(), slope.into());
    let positive = B::float_mul_scalar(B::relu(x), (1.0 - slope).into());
    B::float_add(linear, positive)
}

/// [`reference_forward`], or `x` itself for slope 1 (the operations that end in an optional
/// leaky ReLU take slope 1 for none).
pub(crate) fn reference_forward_unless_linear<B: Backend>(
    x: FloatTensor<B>,
    slope: f64,
) -> FloatTensor<B> {
    if slope == 1.0 {
        x
    } else {
        reference_forward::<B>(x, slope)
    }
}

/// The gradient of [`reference_forward`]: `slope * grad + (1 - slope) * relu'(x) * grad`.
pub(crate) fn reference_backward<B: Backend>(
    x: FloatTensor<B>,
    slope: f64,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let linear = B::float_mul_scalar(grad.clone(), slope.into());
    let positive = B::relu_backward(B::relu(x), grad);
    B::float_add(linear, B::float_mul_scalar(positive, (1.0 - slope).into()))
}

impl<B: CpuBackend> LeakyReluBackend for B {
    fn leaky_relu_forward(x: FloatTensor<B>, slope: f64) -> FloatTensor<B> {
        if !all_f32(&[&x]) {
            return reference_forward::<B>(x, slope);
        }
        let xs = B::f32s(&x);
        let slope = slope as f32;
        let out = map(&xs, &xs, move |v, _| leaky(v, slope));
        B::float(out, x.shape())
    }

    fn leaky_relu_backward(x: FloatTensor<B>, slope: f64, grad: FloatTensor<B>) -> FloatTensor<B> {
        if !all_f32(&[&x, &grad]) {
            return reference_backward::<B>(x, slope, grad);
        }
        let slope = slope as f32;
        let out = map(&B::f32s(&x), &B::f32s(&grad), move |v, g| {
            g * if v > 0.0 { 1.0 } else { slope }
        });
        B::float(out, x.shape())
    }
}

impl LeakyReluBackend for burn_cubecl::CubeBackend {}

impl<B: LeakyReluBackend, C: CheckpointStrategy> LeakyReluBackend for Autodiff<B, C> {
    fn leaky_relu_forward(x: FloatTensor<Self>, slope: f64) -> FloatTensor<Self> {
        record::<B, C, _, 1>(
            [x],
            |[x]| (B::leaky_relu_forward(x.clone(), slope), (x, slope)),
            |(x, slope), grad| [B::leaky_relu_backward(x, slope, grad)],
        )
    }

    fn leaky_relu_backward(
        x: FloatTensor<Self>,
        slope: f64,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        // Only reached when differentiating a gradient: not needed for training, so the result
        // is a constant.
        Self::from_inner(B::leaky_relu_backward(
            x.into_primitive(),
            slope,
            grad.into_primitive(),
        ))
    }
}

/// Leaky ReLU of `x`: `x` where positive, `slope * x` elsewhere, differentiable on every
/// backend; `x` itself for slope 1.
pub fn leaky_relu<const D: usize>(x: Tensor<D>, slope: f64) -> Tensor<D> {
    if slope == 1.0 {
        return x;
    }
    Tensor::from_dispatch(Dispatch::leaky_relu_forward(x.into_dispatch(), slope))
}
