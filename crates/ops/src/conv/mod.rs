//! 2-D convolution with stride 1, as one backend operation: unfold + matrix products, as loops
//! on the CPU backends (flex, ndarray) and as Burn tensor operations on wgpu.
//!
//! Flex's own convolution runs one small matrix product per 512-pixel tile of each image, after a
//! single-threaded NCHW -> NHWC copy, and Burn computes the weight gradient as a convolution whose
//! kernel is the whole output map: a matrix product four columns wide for a 2x2 kernel. At the FMP
//! net's and LeNet's shapes that took most of a training step. Here each thread takes its own
//! images: it unfolds a few of them at a time (channels first, so each copy is a run of input
//! pixels), runs single-threaded matrix products into a buffer it reuses, and for the backward
//! pass adds its share of the weight gradient into its own sum. Everything a thread touches stays
//! small enough for its caches. Kernels of up to four cells are unfolded whole (one product);
//! larger ones (LeNet's 5x5) along their columns only, with one product per kernel row reading
//! the unfolded rows at that row's offset, which copies each input value 5 times instead of 25.
//!
//! On wgpu the same unfold + matrix products run as Burn tensor operations, a group of images at
//! a time, for kernels of up to four cells: Burn's own convolution there has only a direct kernel
//! for a dense convolution on WGSL, and its weight gradient is a convolution whose kernel is the
//! whole output map, both far slower than Burn's matrix kernels at the CIFAR net's widths. Larger
//! kernels and empty shapes keep Burn's convolution. Fusion records the convolution as one
//! operation and runs it on the Cube backend's kernels, its results contiguous: left to fusion,
//! the formulation's slices, transposes and reshapes were fused with the operations around the
//! convolution, and in a network the weight gradients came out wrong (docs/gpu.md).

mod cpu;
mod tensor_ops;

use burn::backend::TensorMetadata;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::nn::{PaddingConfig2d, conv::Conv2d};
use burn::prelude::*;
use burn::tensor::ops::ConvOptions;

use crate::graph::record;
use crate::leaky_relu::{self, LeakyReluBackend};
use tensor_ops::{reference_backward, reference_forward};

/// The backend operations behind [`conv2d`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Remote, Autodiff)]
pub trait Conv2dBackend: Backend {
    /// Convolves `x` `[n, c, h, w]` with `weight` `[out, c, kh, kw]` at stride 1, zero-padded by
    /// `padding` (rows, columns) on both sides, adds `bias` `[out]` and applies the leaky ReLU
    /// of `slope` (1 for none; not negative, so that the output keeps its input's sign).
    ///
    /// Fusion records the operation whole (its output shape is known) and runs the Cube
    /// backend's when the stream executes: fused into the surrounding elementwise kernels, the
    /// tensor-op formulation's views gave wrong values on wgpu (Burn 0.22.1).
    #[fusion(meta = forward_spec)]
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        slope: f64,
    ) -> FloatTensor<Self> {
        let output = reference_forward::<Self>(x, weight, bias, padding);
        leaky_relu::reference_forward_unless_linear::<Self>(output, slope)
    }

    /// The gradients of `x`, `weight` and `bias` given the gradient of the output before the
    /// activation, `grad`. Without `input_gradient` the input's is not computed and comes back
    /// as zeros: a network's first layer, whose input is the images, needs none, and it costs
    /// as much as the weight's.
    #[fusion(meta = backward_specs)]
    fn conv2d_stride1_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        grad: FloatTensor<Self>,
        input_gradient: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference_backward::<Self>(x, weight, bias, padding, grad, input_gradient)
    }
}

/// The output of [`Conv2dBackend::conv2d_stride1`] as fusion records it: `[n, out, oh, ow]`.
fn forward_spec(
    x: &TensorSpec,
    weight: &TensorSpec,
    _bias: &TensorSpec,
    padding: &[usize; 2],
    _slope: &f64,
) -> TensorSpec {
    let [n, _, h, w] = x.shape.dims::<4>();
    let [out, _, kh, kw] = weight.shape.dims::<4>();
    // Impossible shapes are left to the backend, which reports them; any shape will do here.
    let side = |size: usize, pad: usize, kernel: usize| (size + 2 * pad + 1).saturating_sub(kernel);
    let shape = Shape::new([n, out, side(h, padding[0], kh), side(w, padding[1], kw)]);
    TensorSpec::new(shape, x.dtype)
}

/// The outputs of [`Conv2dBackend::conv2d_stride1_backward`] as fusion records them: shaped as
/// the input, the weight and the bias.
fn backward_specs(
    x: &TensorSpec,
    weight: &TensorSpec,
    bias: &TensorSpec,
    _padding: &[usize; 2],
    _grad: &TensorSpec,
    _input_gradient: &bool,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (x.clone(), weight.clone(), bias.clone())
}

pub(super) fn options(padding: [usize; 2]) -> ConvOptions<2> {
    ConvOptions::new([1, 1], padding, [1, 1], 1)
}

/// Burn's own convolution.
pub(super) fn burns_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
) -> FloatTensor<B> {
    B::conv2d(x, weight, Some(bias), options(padding))
}

/// Burn's own gradients of the convolution: input (zeros without `input_gradient`), weight,
/// bias.
pub(super) fn burns_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    padding: [usize; 2],
    grad: FloatTensor<B>,
    input_gradient: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let x_grad = match input_gradient {
        true => B::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options(padding)),
        false => unwanted_gradient::<B>(&x),
    };
    let weight_grad = B::conv2d_weight_backward(x.clone(), weight, grad.clone(), options(padding));
    (x_grad, weight_grad, B::conv2d_bias_backward(x, bias, grad))
}

/// Zeros shaped as `x`: the input's gradient where it is not wanted.
pub(super) fn unwanted_gradient<B: Backend>(x: &FloatTensor<B>) -> FloatTensor<B> {
    B::float_zeros(x.shape(), &x.device(), x.dtype().into())
}

impl<B: Conv2dBackend + LeakyReluBackend, C: CheckpointStrategy> Conv2dBackend for Autodiff<B, C> {
    fn conv2d_stride1(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        slope: f64,
    ) -> FloatTensor<Self> {
        // Images need no gradient: only an input on the graph does.
        let input_gradient = x.is_tracked();
        record::<B, C, _, 3>(
            [x, weight, bias],
            |[x, weight, bias]| {
                let output =
                    B::conv2d_stride1(x.clone(), weight.clone(), bias.clone(), padding, slope);
                // The activation's gradient needs the sign of its input, which its output keeps.
                let activated = (slope != 1.0).then(|| output.clone());
                let state = ([x, weight, bias], padding, slope, activated, input_gradient);
                (output, state)
            },
            |([x, weight, bias], padding, slope, activated, input_gradient), grad| {
                let grad = match activated {
                    Some(output) => B::leaky_relu_backward(output, slope, grad),
                    None => grad,
                };
                let (x, weight, bias) =
                    B::conv2d_stride1_backward(x, weight, bias, padding, grad, input_gradient);
                [x, weight, bias]
            },
        )
    }

    fn conv2d_stride1_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: [usize; 2],
        grad: FloatTensor<Self>,
        input_gradient: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Only reached when differentiating a gradient: not needed for training, so the results
        // are constants.
        let (x_grad, weight_grad, bias_grad) = B::conv2d_stride1_backward(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            padding,
            grad.into_primitive(),
            input_gradient,
        );
        (
            Self::from_inner(x_grad),
            Self::from_inner(weight_grad),
            Self::from_inner(bias_grad),
        )
    }
}

/// `conv` applied to `x` `[n, c, h, w]`, as `Conv2d::forward` computes it. Convolutions with
/// stride 1, no dilation, one group, a bias and the same padding on both sides (every one in
/// this project's networks) run through [`conv2d_stride1`]; others through Burn's module.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    conv2d_leaky_relu(conv, x, 1.0)
}

/// [`conv2d`] followed by the leaky ReLU of `slope` ([`crate::leaky_relu`]); through
/// [`conv2d_stride1`]'s operation, the activation is applied as the output is written.
pub fn conv2d_leaky_relu(conv: &Conv2d, x: Tensor<4>, slope: f64) -> Tensor<4> {
    match stride1_bias_padding(conv) {
        Some((bias, padding)) => {
            conv2d_stride1_leaky_relu(x, conv.weight.val(), bias, padding, slope)
        }
        None => crate::leaky_relu(conv.forward(x), slope),
    }
}

/// The bias and the padding with which [`conv2d`] runs `conv` through [`conv2d_stride1`], if it
/// does: stride 1, no dilation, one group, a bias and the same padding on both sides.
pub(crate) fn stride1_bias_padding(conv: &Conv2d) -> Option<(Tensor<1>, [usize; 2])> {
    let plain = conv.stride == [1, 1] && conv.dilation == [1, 1] && conv.groups == 1;
    let bias = conv.bias.as_ref().filter(|_| plain)?;
    Some((bias.val(), symmetric_padding(conv)?))
}

/// `x` `[n, c, h, w]` convolved at stride 1 with `weight` `[out, c, kh, kw]`, zero-padded by
/// `padding` (rows, columns) on both sides, plus `bias` `[out]`: [`Conv2dBackend`]'s operation.
pub fn conv2d_stride1(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    padding: [usize; 2],
) -> Tensor<4> {
    conv2d_stride1_leaky_relu(x, weight, bias, padding, 1.0)
}

/// [`conv2d_stride1`] followed by the leaky ReLU of `slope`, in one operation where the slope is
/// not negative (a negative one flips the sign the backward pass reads from the output).
pub(crate) fn conv2d_stride1_leaky_relu(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    padding: [usize; 2],
    slope: f64,
) -> Tensor<4> {
    if slope < 0.0 {
        return crate::leaky_relu(conv2d_stride1(x, weight, bias, padding), slope);
    }
    Tensor::from_dispatch(Dispatch::conv2d_stride1(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        padding,
        slope,
    ))
}

/// The rows and columns of zeros `conv` adds on each side at stride 1, if both sides get the
/// same (`Same` does for odd kernels).
fn symmetric_padding(conv: &Conv2d) -> Option<[usize; 2]> {
    let [kh, kw] = conv.kernel_size;
    match conv.padding {
        PaddingConfig2d::Valid => Some([0, 0]),
        PaddingConfig2d::Same if kh % 2 == 1 && kw % 2 == 1 => Some([kh / 2, kw / 2]),
        PaddingConfig2d::Explicit(top, left, bottom, right) if top == bottom && left == right => {
            Some([top, left])
        }
        _ => None,
    }
}

#[cfg(test)]
mod test_values {
    //! What the unit tests of the convolution's formulations share.

    /// Irregular values in [-1, 1).
    fn values(count: usize, seed: usize) -> Vec<f32> {
        (0..count)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// `a` within 1e-5 (relative, plus as much absolute) of `b`.
    pub fn close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (a, b) in a.iter().zip(b) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{what}: {a} vs {b}"
            );
        }
    }

    /// The values of one convolution, padded by 1: input `[5, 3, 6, 7]`, weight `[4, 3, 3, 2]`,
    /// bias `[4]` and output gradient `[5, 4, 6, 8]`.
    pub fn case() -> [Vec<f32>; 4] {
        [
            values(5 * 3 * 6 * 7, 1),
            values(4 * 3 * 3 * 2, 2),
            vec![0.5, -1.0, 0.0, 2.0],
            values(5 * 4 * 6 * 8, 3),
        ]
    }
}
