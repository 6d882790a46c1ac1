//! LeNet-5's trainable subsampling (S2, S4) as one backend operation: each 2x2 block of a map
//! summed, times the map's coefficient, plus the map's bias.
//!
//! Written with Burn's operations it is an average pool, a scaling, a broadcast product and a
//! broadcast sum, and backward the pool's backward plus two reductions over the batch: on flex the
//! pooling's backward alone was 7% of a LeNet-5 training step. On the CPU backends here one pass
//! over each map computes it each way. The other backends run Burn's operations, which are also
//! the reference the loops are tested against.

use std::mem::MaybeUninit;

use burn::backend::TensorMetadata;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;
use rayon::prelude::*;

use crate::channel::{channel_total, per_channel};
use crate::cpu::{CpuBackend, all_f32, par_blocks, written, zeroed};
use crate::graph::record;

/// The backend operations behind [`subsample2x2`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Remote, Autodiff)]
pub trait SubsampleBackend: Backend {
    /// `coefficient[c] * (sum of each disjoint 2x2 block of x[n, c]) + bias[c]` for `x`
    /// `[n, c, h, w]` (an odd last row or column is left out, as pooling does).
    #[fusion(default)]
    fn subsample_forward(
        x: FloatTensor<Self>,
        coefficient: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference_forward::<Self>(x, coefficient, bias)
    }

    /// The gradients of `x`, `coefficient` and `bias` given the output's, `grad`.
    #[fusion(default)]
    fn subsample_backward(
        x: FloatTensor<Self>,
        coefficient: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        reference_backward::<Self>(x, coefficient, grad)
    }
}

/// The sum of each 2x2 block, from Burn's average pooling.
fn block_sums<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let mean = B::avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false);
    B::float_mul_scalar(mean, 4.0.into())
}

/// A per-map vector `[c]` broadcast to `shape` `[n, c, h, w]`.
fn per_map<B: Backend>(v: FloatTensor<B>, shape: Shape) -> FloatTensor<B> {
    B::float_expand(per_channel::<B>(v, &shape), shape)
}

/// The sum of `t` `[n, c, h, w]` per map: `[c]` (one dimension at a time: see
/// [`channel_total`]).
fn map_sums<B: Backend>(t: FloatTensor<B>) -> FloatTensor<B> {
    let c = t.shape()[1];
    B::float_reshape(channel_total::<B>(t), [c].into())
}

fn reference_forward<B: Backend>(
    x: FloatTensor<B>,
    coefficient: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let sums = block_sums::<B>(x);
    let shape = sums.shape();
    let scaled = B::float_mul(sums, per_map::<B>(coefficient, shape.clone()));
    B::float_add(scaled, per_map::<B>(bias, shape))
}

fn reference_backward<B: Backend>(
    x: FloatTensor<B>,
    coefficient: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = grad.shape();
    let sums = block_sums::<B>(x.clone());
    let scaled_grad = B::float_mul(grad.clone(), per_map::<B>(coefficient, shape));
    let pooled_grad = B::avg_pool2d_backward(x, scaled_grad, [2, 2], [2, 2], [0, 0], true, false);
    let x_grad = B::float_mul_scalar(pooled_grad, 4.0.into());
    let coefficient_grad = map_sums::<B>(B::float_mul(grad.clone(), sums));
    (x_grad, coefficient_grad, map_sums::<B>(grad))
}

/// `[n, c, h, w]` of the input and `[oh, ow]` of the output.
fn geometry(x: &impl TensorMetadata) -> ([usize; 4], [usize; 2]) {
    let dims: [usize; 4] = x.shape().dims();
    (dims, [dims[2] / 2, dims[3] / 2])
}

impl<B: CpuBackend> SubsampleBackend for B {
    fn subsample_forward(
        x: FloatTensor<B>,
        coefficient: FloatTensor<B>,
        bias: FloatTensor<B>,
    ) -> FloatTensor<B> {
        if !all_f32(&[&x, &coefficient, &bias]) {
            return reference_forward::<B>(x, coefficient, bias);
        }
        let ([n, c, h, w], [oh, ow]) = geometry(&x);
        let [xs, coefficient, bias] = [&x, &coefficient, &bias].map(B::f32s);
        let out = par_blocks(n * c * oh * ow, oh * ow, |plane, out| {
            let x = &xs[plane * h * w..][..h * w];
            let (k, b) = (coefficient[plane % c], bias[plane % c]);
            for (i, row) in out.chunks_mut(ow.max(1)).enumerate() {
                let (top, bottom) = (&x[2 * i * w..][..w], &x[(2 * i + 1) * w..][..w]);
                for (j, o) in row.iter_mut().enumerate() {
                    let sum = top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1];
                    *o = k * sum + b;
                }
            }
        });
        B::float(out, [n, c, oh, ow])
    }

    fn subsample_backward(
        x: FloatTensor<B>,
        coefficient: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
        if !all_f32(&[&x, &coefficient, &grad]) {
            return reference_backward::<B>(x, coefficient, grad);
        }
        let ([n, c, h, w], [oh, ow]) = geometry(&x);
        let [xs, coefficient, gs] = [&x, &coefficient, &grad].map(B::f32s);
        let len = n * c * h * w;
        // Per plane: the sums of grad * block sum and of grad, for the map's two parameters.
        let fill = |x_grad: &mut [MaybeUninit<f32>]| -> Vec<(f64, f64)> {
            x_grad
                .par_chunks_mut((h * w).max(1))
                .enumerate()
                .map(|(plane, x_grad)| {
                    // Every plane zeroed, even one too small to pool (no output cells).
                    let x_grad = zeroed(x_grad);
                    let x = &xs[plane * h * w..][..h * w];
                    let grad = &gs[plane * oh * ow..][..oh * ow];
                    let k = coefficient[plane % c];
                    let (mut weighted, mut total) = (0f64, 0f64);
                    for (i, grad) in grad.chunks(ow.max(1)).enumerate() {
                        let (top, bottom) = (&x[2 * i * w..][..w], &x[(2 * i + 1) * w..][..w]);
                        let mut row_weighted = 0f32;
                        for (j, &g) in grad.iter().enumerate() {
                            let sum =
                                top[2 * j] + top[2 * j + 1] + bottom[2 * j] + bottom[2 * j + 1];
                            row_weighted += g * sum;
                        }
                        weighted += f64::from(row_weighted);
                        total += f64::from(grad.iter().sum::<f32>());
                        for row in [2 * i, 2 * i + 1] {
                            let target = &mut x_grad[row * w..][..2 * ow];
                            for (pair, &g) in target.chunks_exact_mut(2).zip(grad) {
                                pair.fill(k * g);
                            }
                        }
                    }
                    (weighted, total)
                })
                .collect()
        };
        // SAFETY: the planes cover the gradient, and each was zeroed before it was written.
        let (x_grad, plane_sums) = unsafe { written(len, fill) };
        let (mut coefficient_grad, mut bias_grad) = (vec![0f64; c], vec![0f64; c]);
        for (plane, (weighted, total)) in plane_sums.into_iter().enumerate() {
            coefficient_grad[plane % c] += weighted;
            bias_grad[plane % c] += total;
        }
        let as_f32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<_>>();
        (
            B::float(x_grad, [n, c, h, w]),
            B::float(as_f32(coefficient_grad), [c]),
            B::float(as_f32(bias_grad), [c]),
        )
    }
}

impl SubsampleBackend for burn_cubecl::CubeBackend {}

impl<B: SubsampleBackend, C: CheckpointStrategy> SubsampleBackend for Autodiff<B, C> {
    fn subsample_forward(
        x: FloatTensor<Self>,
        coefficient: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        record::<B, C, _, 3>(
            [x, coefficient, bias],
            |[x, coefficient, bias]| {
                let output = B::subsample_forward(x.clone(), coefficient.clone(), bias);
                (output, (x, coefficient))
            },
            |(x, coefficient), grad| {
                let (x, coefficient, bias) = B::subsample_backward(x, coefficient, grad);
                [x, coefficient, bias]
            },
        )
    }

    fn subsample_backward(
        x: FloatTensor<Self>,
        coefficient: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        // Only reached when differentiating a gradient: not needed for training, so the results
        // are constants.
        let (x, coefficient, bias) = B::subsample_backward(
            x.into_primitive(),
            coefficient.into_primitive(),
            grad.into_primitive(),
        );
        (
            Self::from_inner(x),
            Self::from_inner(coefficient),
            Self::from_inner(bias),
        )
    }
}

/// LeNet-5's subsampling of `x` `[n, c, h, w]`: each disjoint 2x2 block summed, times
/// `coefficient[c]`, plus `bias[c]`; differentiable on every backend.
pub fn subsample2x2(x: Tensor<4>, coefficient: Tensor<1>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::subsample_forward(
        x.into_dispatch(),
        coefficient.into_dispatch(),
        bias.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map one row high has no 2x2 block: no output, and every input gradient is zero (the
    /// loops write each plane of the gradient even when there is nothing to pool).
    #[test]
    fn a_map_too_small_to_pool_gets_a_zero_gradient() {
        use burn::backend::Flex;
        let [n, c, h, w] = [2, 3, 1, 5];
        let x = Flex::float(vec![1.0; n * c * h * w], [n, c, h, w]);
        let coefficient = Flex::float(vec![0.5; c], [c]);
        let grad = Flex::float(Vec::new(), [n, c, 0, 2]);
        let (x_grad, coefficient_grad, bias_grad) =
            <Flex as SubsampleBackend>::subsample_backward(x, coefficient, grad);
        assert_eq!(x_grad.shape().dims::<4>(), [n, c, h, w]);
        assert!(Flex::f32s(&x_grad).iter().all(|&v| v == 0.0));
        assert!(Flex::f32s(&coefficient_grad).iter().all(|&v| v == 0.0));
        assert!(Flex::f32s(&bias_grad).iter().all(|&v| v == 0.0));
    }
}
