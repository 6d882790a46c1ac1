//! Fractional max-pooling as a dedicated backend operation.
//!
//! The regions ([`PoolRegions`]) are an argument: how they are drawn is the network's business.
//! The forward pass keeps, for every output, the flat index of the input cell that held the
//! maximum; the backward pass adds each output gradient at that index and nowhere else. The CPU
//! backends (flex, ndarray) run both as parallel loops over image planes, the Cube backend (wgpu)
//! as the GPU kernels of [`cube`]. [`reference_forward`] / [`reference_backward`] are
//! the same computation written with Burn's tensor operations: the reference the loops and
//! kernels are tested against.

mod cube;

use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::backend::TensorMetadata;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch,
    autodiff::checkpoint::strategy::CheckpointStrategy,
    backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::prelude::*;
use burn::tensor::{DType, IndexingUpdateOp, IntDType, TensorData};
use rayon::prelude::*;

use crate::cpu::{CpuBackend, par_blocks, written};
use crate::graph::record;

/// One pooling interval along an axis: `len` cells from `start` (`len` is 1 or 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// First cell.
    pub start: u32,
    /// Number of cells.
    pub len: u32,
}

/// The regions of one FMP application to a batch: per image (and channel, if not shared),
/// independent row and column intervals.
#[derive(Clone, Debug)]
pub struct PoolRegions {
    /// 1 when the channels of an image share its regions (Graham), else the channel count.
    pub groups: usize,
    /// Output height and width.
    pub out: [usize; 2],
    /// `[batch][group][out_h]` row intervals, flattened.
    pub rows: Arc<[Span]>,
    /// `[batch][group][out_w]` column intervals, flattened.
    pub cols: Arc<[Span]>,
}

impl PoolRegions {
    /// The regions of a plain 2x2 max-pool at stride 2 (LeNet's) over `batch` images of
    /// `input` (height, width): disjoint windows, a last odd row or column left out.
    pub fn windows(batch: usize, input: [usize; 2]) -> Self {
        let out = input.map(|side| side / 2);
        let spans = |side: usize| -> Arc<[Span]> {
            (0..batch * side)
                .map(|i| Span {
                    start: (2 * (i % side)) as u32,
                    len: 2,
                })
                .collect()
        };
        Self {
            groups: 1,
            out,
            rows: spans(out[0]),
            cols: spans(out[1]),
        }
    }

    /// Whether these are the regions of [`PoolRegions::windows`].
    pub fn are_windows(&self) -> bool {
        let regular = |spans: &[Span], side: usize| {
            spans.iter().enumerate().all(|(i, span)| {
                *span
                    == Span {
                        start: (2 * (i % side)) as u32,
                        len: 2,
                    }
            })
        };
        self.groups == 1 && regular(&self.rows, self.out[0]) && regular(&self.cols, self.out[1])
    }

    /// Row and column intervals of image `n`, channel `c`.
    pub fn of(&self, n: usize, c: usize) -> (&[Span], &[Span]) {
        let g = n * self.groups + if self.groups == 1 { 0 } else { c };
        let [h, w] = self.out;
        (
            &self.rows[g * h..(g + 1) * h],
            &self.cols[g * w..(g + 1) * w],
        )
    }

    /// Number of images the regions were drawn for.
    pub fn batch(&self) -> usize {
        self.rows.len() / (self.groups * self.out[0])
    }
}

/// The backend operations behind [`fractional_max_pool2d`].
#[backend_extension(Flex, NdArray, Cube, Fusion, Remote, Autodiff)]
pub trait FractionalMaxPoolBackend: Backend {
    /// Pools `x` `[n, c, h, w]` over `regions`: the maxima `[n, c, out_h, out_w]` and, for each,
    /// the index `row * w + col` of the cell that held it.
    ///
    /// Backends without loops of their own run Burn's max-pool for [`PoolRegions::windows`]
    /// (its indices are the same `row * w + col`) and [`reference_forward`] otherwise.
    /// Fusion records the operation as it is (the output shapes are known from the regions) and
    /// runs the Cube kernel when the stream executes.
    #[fusion(meta = forward_specs)]
    fn fmp_forward(
        x: FloatTensor<Self>,
        regions: PoolRegions,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        if regions.are_windows() {
            let pooled = Self::max_pool2d_with_indices(
                x,
                [2, 2],
                [2, 2],
                [0, 0],
                [1, 1],
                false,
                IntDType::I32,
            );
            (pooled.output, pooled.indices)
        } else {
            reference_forward::<Self>(x, &regions)
        }
    }

    /// The gradient of the input `[n, c, input[0], input[1]]`: `grad` added at `argmax`, the
    /// indices [`Self::fmp_forward`] returned for `regions`.
    #[fusion(meta = backward_spec)]
    fn fmp_backward(
        grad: FloatTensor<Self>,
        argmax: IntTensor<Self>,
        _regions: PoolRegions,
        input: [usize; 2],
    ) -> FloatTensor<Self> {
        reference_backward::<Self>(grad, argmax, input)
    }
}

/// The outputs of [`FractionalMaxPoolBackend::fmp_forward`] as fusion records them: the maxima in
/// the input's float type and `i32` indices, both `[n, c, out_h, out_w]`.
fn forward_specs(x: &TensorSpec, regions: &PoolRegions) -> (TensorSpec, TensorSpec) {
    let [n, c, _, _] = x.shape.dims::<4>();
    let shape = Shape::new([n, c, regions.out[0], regions.out[1]]);
    (
        TensorSpec::new(shape.clone(), x.dtype),
        TensorSpec::new(shape, DType::I32),
    )
}

/// The output of [`FractionalMaxPoolBackend::fmp_backward`] as fusion records it.
fn backward_spec(
    grad: &TensorSpec,
    _argmax: &TensorSpec,
    _regions: &PoolRegions,
    input: &[usize; 2],
) -> TensorSpec {
    let [n, c, _, _] = grad.shape.dims::<4>();
    TensorSpec::new(Shape::new([n, c, input[0], input[1]]), grad.dtype)
}

/// Fractional max-pooling of `x` `[n, c, h, w]` over `regions`, differentiable on every backend.
pub fn fractional_max_pool2d(x: Tensor<4>, regions: &PoolRegions) -> Tensor<4> {
    let (pooled, _argmax) = Dispatch::fmp_forward(x.into_dispatch(), regions.clone());
    Tensor::from_dispatch(pooled)
}

/// Max-pooling of `x` `[n, c, h, w]` over disjoint 2x2 windows at stride 2, differentiable on
/// every backend: [`fractional_max_pool2d`] over [`PoolRegions::windows`], whose flex loops were
/// 2.7 times faster than Burn's max-pool at LeNet's first layer.
pub fn max_pool2x2(x: Tensor<4>) -> Tensor<4> {
    let [n, _, h, w] = x.dims();
    fractional_max_pool2d(x, &PoolRegions::windows(n, [h, w]))
}

/// The flat input index of every region's four corners: `[n, groups, 4, out_h * out_w]`.
/// A 1-wide interval repeats its cell, which leaves the maximum unchanged.
fn corner_indices(regions: &PoolRegions, width: usize) -> Vec<i32> {
    let [oh, ow] = regions.out;
    let mut out = Vec::with_capacity(regions.batch() * regions.groups * 4 * oh * ow);
    for n in 0..regions.batch() {
        for g in 0..regions.groups {
            let (rows, cols) = regions.of(n, g);
            for (dr, dc) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                for r in rows {
                    let row = (r.start + dr.min(r.len - 1)) as usize;
                    for c in cols {
                        let col = (c.start + dc.min(c.len - 1)) as usize;
                        out.push((row * width + col) as i32);
                    }
                }
            }
        }
    }
    out
}

/// [`FractionalMaxPoolBackend::fmp_forward`] from Burn tensor operations: gather the four corners
/// of every region, take the maximum over them, and map its position back to the input index.
fn reference_forward<B: Backend>(
    x: FloatTensor<B>,
    regions: &PoolRegions,
) -> (FloatTensor<B>, IntTensor<B>) {
    let [n, c, h, w] = x.shape().dims();
    let [oh, ow] = regions.out;
    let p = oh * ow;
    let device = x.device();
    let corners = TensorData::new(corner_indices(regions, w), [n, regions.groups, 4, p]);
    let corners = B::int_expand(B::int_from_data(corners, &device), [n, c, 4, p].into());
    let flat = B::float_reshape(x, [n, c, h * w].into());
    let candidates = B::float_gather(
        2,
        flat,
        B::int_reshape(corners.clone(), [n, c, 4 * p].into()),
    );
    let candidates = B::float_reshape(candidates, [n, c, 4, p].into());
    let (maxima, which) = B::float_max_dim_with_indices(candidates, 2, IntDType::I32);
    let argmax = B::int_gather(2, corners, which);
    (
        B::float_reshape(maxima, [n, c, oh, ow].into()),
        B::int_reshape(argmax, [n, c, oh, ow].into()),
    )
}

/// [`FractionalMaxPoolBackend::fmp_backward`] from Burn tensor operations: a scatter-add.
fn reference_backward<B: Backend>(
    grad: FloatTensor<B>,
    argmax: IntTensor<B>,
    input: [usize; 2],
) -> FloatTensor<B> {
    let [n, c, oh, ow] = grad.shape().dims();
    let [h, w] = input;
    let zeros = B::float_zeros([n, c, h * w].into(), &grad.device(), grad.dtype().into());
    let grad = B::float_reshape(grad, [n, c, oh * ow].into());
    let argmax = B::int_reshape(argmax, [n, c, oh * ow].into());
    let summed = B::float_scatter(2, zeros, argmax, grad, IndexingUpdateOp::Add);
    B::float_reshape(summed, [n, c, h, w].into())
}

/// First and last cell of an interval (equal when it is 1 wide).
fn ends(span: &Span) -> (usize, usize) {
    (span.start as usize, (span.start + span.len - 1) as usize)
}

impl<B: CpuBackend> FractionalMaxPoolBackend for B {
    fn fmp_forward(x: FloatTensor<B>, regions: PoolRegions) -> (FloatTensor<B>, IntTensor<B>) {
        if x.dtype() != DType::F32 {
            return reference_forward::<B>(x, &regions);
        }
        let [n, c, h, w] = x.shape().dims();
        let [oh, ow] = regions.out;
        let input = B::f32s(&x);
        // Every value is written below: no zero fill first.
        let len = n * c * oh * ow;
        let fill = |maxima: &mut [MaybeUninit<f32>], argmax: &mut [MaybeUninit<i32>]| {
            maxima
                .par_chunks_mut(oh * ow)
                .zip(argmax.par_chunks_mut(oh * ow))
                .enumerate()
                .for_each(|(plane, (maxima, argmax))| {
                    let (rows, cols) = regions.of(plane / c, plane % c);
                    let input = &input[plane * h * w..(plane + 1) * h * w];
                    let outputs = maxima.chunks_exact_mut(ow).zip(argmax.chunks_exact_mut(ow));
                    for (row, (maxima, argmax)) in rows.iter().zip(outputs) {
                        // First and last cell of each interval (equal when it is 1 wide), as in
                        // `corner_indices`: four candidates per region, compared without branches
                        // because on real data the winner is unpredictable.
                        let (r0, r1) = ends(row);
                        for ((col, max), arg) in cols.iter().zip(maxima).zip(argmax) {
                            let (c0, c1) = ends(col);
                            let mut best = r0 * w + c0;
                            let mut value = input[best];
                            for i in [r0 * w + c1, r1 * w + c0, r1 * w + c1] {
                                // `>` keeps the first of equal maxima, in row-major order.
                                let candidate = input[i];
                                let better = candidate > value;
                                best = if better { i } else { best };
                                value = if better { candidate } else { value };
                            }
                            max.write(value);
                            arg.write(best as i32);
                        }
                    }
                });
        };
        // SAFETY: the planes cover both buffers, and each wrote every region of its plane.
        let (maxima, (argmax, ())) =
            unsafe { written(len, |maxima| written(len, |argmax| fill(maxima, argmax))) };
        (
            B::float(maxima, [n, c, oh, ow]),
            B::int(argmax, [n, c, oh, ow]),
        )
    }

    fn fmp_backward(
        grad: FloatTensor<B>,
        argmax: IntTensor<B>,
        _regions: PoolRegions,
        input: [usize; 2],
    ) -> FloatTensor<B> {
        let indices = match B::i32s(&argmax) {
            Some(indices) if grad.dtype() == DType::F32 => indices,
            _ => return reference_backward::<B>(grad, argmax, input),
        };
        let [n, c, oh, ow] = grad.shape().dims();
        let [h, w] = input;
        let grad = B::f32s(&grad);
        let p = oh * ow;
        let out = par_blocks(n * c * h * w, h * w, |plane, out| {
            let grad = &grad[plane * p..(plane + 1) * p];
            for (g, &i) in grad.iter().zip(&indices[plane * p..(plane + 1) * p]) {
                out[i as usize] += g;
            }
        });
        B::float(out, [n, c, h, w])
    }
}

impl<B: FractionalMaxPoolBackend, C: CheckpointStrategy> FractionalMaxPoolBackend
    for Autodiff<B, C>
{
    fn fmp_forward(
        x: FloatTensor<Self>,
        regions: PoolRegions,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        let [_, _, h, w] = x.shape().dims();
        let mut indices = None;
        let pooled = record::<B, C, _, 1>(
            [x],
            |[x]| {
                let (pooled, argmax) = B::fmp_forward(x, regions.clone());
                indices = Some(argmax.clone());
                (pooled, (argmax, regions, [h, w]))
            },
            |(argmax, regions, input), grad| [B::fmp_backward(grad, argmax, regions, input)],
        );
        (pooled, indices.expect("the forward pass ran"))
    }

    fn fmp_backward(
        grad: FloatTensor<Self>,
        argmax: IntTensor<Self>,
        regions: PoolRegions,
        input: [usize; 2],
    ) -> FloatTensor<Self> {
        // Only reached when differentiating a gradient: not needed for training, so the result
        // is a constant.
        Self::from_inner(B::fmp_backward(
            grad.into_primitive(),
            argmax,
            regions,
            input,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The CPU backends' loops (flex, ndarray) against the tensor-op formulation (the reference)
    /// on the same values: maxima, indices and the input gradient, for regions shared by an
    /// image's channels and per channel, with 1- and 2-wide intervals.
    #[test]
    fn cpu_loops_match_the_tensor_op_formulation() {
        let ([n, c], side, out) = ([3, 4], 8, 4);
        for groups in [1, c] {
            // Different intervals per image and group, all inside the 8-cell side.
            let spans = |shift: usize| -> Arc<[Span]> {
                (0..n * groups * out)
                    .map(|k| {
                        let (g, i) = (k / out, k % out);
                        let wide = (g * 3 + i + shift).is_multiple_of(2);
                        let start = 2 * i + usize::from(!wide && (g + shift) % 2 == 1);
                        Span {
                            start: start as u32,
                            len: if wide { 2 } else { 1 },
                        }
                    })
                    .collect()
            };
            let regions = PoolRegions {
                groups,
                out: [out; 2],
                rows: spans(0),
                cols: spans(1),
            };
            let devices = [Device::flex(), Device::ndarray()];
            for device in devices {
                let what = format!("{device:?}, {groups} groups");
                let x = Tensor::<4>::random([n, c, side, side], Distribution::Default, &device);
                let grad = Tensor::<4>::random([n, c, out, out], Distribution::Default, &device);
                let (maxima, argmax) =
                    Dispatch::fmp_forward(x.clone().into_dispatch(), regions.clone());
                let (ref_maxima, ref_argmax) =
                    reference_forward::<Dispatch>(x.into_dispatch(), &regions);
                let floats = |t| Tensor::<4>::from_dispatch(t).into_data();
                let ints = |t| {
                    Tensor::<4, Int>::from_dispatch(t)
                        .into_data()
                        .convert::<i64>()
                };
                assert_eq!(ints(argmax.clone()), ints(ref_argmax.clone()), "{what}");
                assert_eq!(floats(maxima), floats(ref_maxima), "{what}");
                let x_grad = Dispatch::fmp_backward(
                    grad.clone().into_dispatch(),
                    argmax,
                    regions.clone(),
                    [side, side],
                );
                let ref_x_grad =
                    reference_backward::<Dispatch>(grad.into_dispatch(), ref_argmax, [side, side]);
                assert_eq!(floats(x_grad), floats(ref_x_grad), "{what}");
            }
        }
    }
}
