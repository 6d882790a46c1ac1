//! Dense layers as one backend operation, with threaded matrix products on the CPU.
//!
//! Flex's matrix product leaves the threading to gemm, which at LeNet's dense layer (64 x 2450
//! by 2450 x 500) ran slower on two threads than on one. Here the CPU backends split each
//! product by columns across threads (`matmul::multiply`). wgpu runs Burn's matrix products,
//! which are also the reference the loops are tested against.

use burn::backend::TensorMetadata;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::nn::Linear;
use burn::prelude::*;

use crate::cpu::{CpuBackend, all_f32};
use crate::graph::record;
use crate::matmul::{View, multiply, product};

/// The backend operations behind [`linear`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Remote, Autodiff)]
pub trait LinearBackend: Backend {
    /// `x` `[m, k]` times `weight` `[k, n]`, plus `bias` `[n]` on every row.
    #[fusion(default)]
    fn linear_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        burns_forward::<Self>(x, weight, bias)
    }

    /// The gradients of `x`, `weight` and the bias given the output's, `grad`.
    #[fusion(default)]
    fn linear_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        burns_backward::<Self>(x, weight, grad)
    }
}

fn burns_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let product = B::float_matmul(x, weight);
    let shape = product.shape();
    let bias = B::float_reshape(bias, [1, shape[1]].into());
    B::float_add(product, B::float_expand(bias, shape))
}

fn burns_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let n = grad.shape()[1];
    let x_grad = B::float_matmul(grad.clone(), B::float_transpose(weight));
    let weight_grad = B::float_matmul(B::float_transpose(x), grad.clone());
    let bias_grad = B::float_reshape(B::float_sum_dim(grad, 0), [n].into());
    (x_grad, weight_grad, bias_grad)
}

impl<B: CpuBackend> LinearBackend for B {
    fn linear_forward(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: FloatTensor<B>,
    ) -> FloatTensor<B> {
        if !all_f32(&[&x, &weight, &bias]) {
            return burns_forward::<Self>(x, weight, bias);
        }
        let ([m, k], [_, n]) = (x.shape().dims(), weight.shape().dims());
        let [x, weight, bias] = [&x, &weight, &bias].map(B::f32s);
        // The bias in every row, then the product added to it.
        let mut output: Vec<f32> = bias.repeat(m);
        let (x, weight) = (View::rows(&x, [m, k]), View::rows(&weight, [k, n]));
        multiply(&mut output, x, weight, true, true);
        B::float(output, [m, n])
    }

    fn linear_backward(
        x: FloatTensor<B>,
        weight: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        if !all_f32(&[&x, &weight, &grad]) {
            return burns_backward::<Self>(x, weight, grad);
        }
        let ([m, k], [_, n]) = (x.shape().dims(), weight.shape().dims());
        let [x, weight, grad] = [&x, &weight, &grad].map(B::f32s);
        let (x, weight, grad) = (View::rows(&x, [m, k]), View::rows(&weight, [k, n]), &*grad);
        let x_grad = product(View::rows(grad, [m, n]), weight.transposed(), true);
        let weight_grad = product(x.transposed(), View::rows(grad, [m, n]), true);
        let mut bias_grad = vec![0f64; n];
        for row in grad.chunks(n.max(1)) {
            for (total, &g) in bias_grad.iter_mut().zip(row) {
                *total += f64::from(g);
            }
        }
        (
            B::float(x_grad, [m, k]),
            B::float(weight_grad, [k, n]),
            B::float(
                bias_grad.into_iter().map(|v| v as f32).collect::<Vec<_>>(),
                [n],
            ),
        )
    }
}

impl LinearBackend for burn_cubecl::CubeBackend {}

impl<B: LinearBackend, C: CheckpointStrategy> LinearBackend for Autodiff<B, C> {
    fn linear_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        record::<B, C, _, 3>(
            [x, weight, bias],
            |[x, weight, bias]| {
                let output = B::linear_forward(x.clone(), weight.clone(), bias);
                (output, [x, weight])
            },
            |[x, weight], grad| {
                let (x, weight, bias) = B::linear_backward(x, weight, grad);
                [x, weight, bias]
            },
        )
    }

    fn linear_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Only reached when differentiating a gradient: not needed for training, so the results
        // are constants.
        let (x_grad, weight_grad, bias_grad) = B::linear_backward(
            x.into_primitive(),
            weight.into_primitive(),
            grad.into_primitive(),
        );
        (
            Self::from_inner(x_grad),
            Self::from_inner(weight_grad),
            Self::from_inner(bias_grad),
        )
    }
}

/// `layer` applied to `x` `[batch, d_input]`, as `Linear::forward` computes it; layers with a
/// bias and the weight stored `[d_input, d_output]` (Burn's default) run through
/// [`LinearBackend`].
pub fn linear(layer: &Linear, x: Tensor<2>) -> Tensor<2> {
    let weight = layer.weight.val();
    match &layer.bias {
        Some(bias) if weight.dims()[0] == x.dims()[1] => {
            Tensor::from_dispatch(Dispatch::linear_forward(
                x.into_dispatch(),
                weight.into_dispatch(),
                bias.val().into_dispatch(),
            ))
        }
        _ => layer.forward(x),
    }
}
