//! Fractional max-pooling on the GPU: CubeCL kernels for the Cube backend, which wgpu reaches
//! through fusion (the trait's `#[fusion(meta = ..)]` registration).
//!
//! Forward: one thread per output, the maximum over its region's (at most four) corners and the
//! index of the cell that held it. Backward: one thread per input cell, the sum of the gradients
//! of the outputs whose maximum it held. Regions overlap by at most one row and column, so a cell
//! is read by at most four outputs, found through a per-row and per-column inverse of the
//! regions; a gather needs no float atomics, which WGSL lacks.

use burn::backend::ops::IntTensorOps;
use burn::backend::{
    TensorMetadata,
    cubecl::dtype_to_storage_type,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, IntDType, Shape, TensorData};
use burn_cubecl::{
    CubeBackend,
    cubecl::{self, calculate_cube_count_elemwise, prelude::*},
    kernel::into_contiguous,
    ops::numeric::empty_device_contiguous_dtype,
    tensor::CubeTensor,
};

use super::{FractionalMaxPoolBackend, PoolRegions, Span};

/// Row `index` of a `[_, 2]` table of indices.
#[cube]
fn pair<I: Int>(table: &Tensor<I>, index: usize) -> (usize, usize) {
    (
        usize::cast_from(table[2 * index]),
        usize::cast_from(table[2 * index + 1]),
    )
}

/// `x` `[n, c, h, w]` pooled over `rows`/`cols`, the first and last cell of every interval
/// (`[batch * groups * out_h, 2]` and `[batch * groups * out_w, 2]`).
#[cube(launch)]
fn fmp_forward_kernel<F: Float, I: Int>(
    x: &Tensor<F>,
    rows: &Tensor<I>,
    cols: &Tensor<I>,
    maxima: &mut Tensor<F>,
    argmax: &mut Tensor<I>,
    #[comptime] per_channel: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= maxima.len() {
        terminate!();
    }
    let channels = x.shape(1);
    let (h, w) = (x.shape(2), x.shape(3));
    let (oh, ow) = (maxima.shape(2), maxima.shape(3));
    let j = pos % ow;
    let i = (pos / ow) % oh;
    let plane = pos / (oh * ow);
    let group = if per_channel { plane } else { plane / channels };

    let (r0, r1) = pair(rows, group * oh + i);
    let (c0, c1) = pair(cols, group * ow + j);

    // The corners in row-major order; `>` keeps the first of equal maxima, as the flex loop does.
    let base = plane * h * w;
    let mut best = r0 * w + c0;
    let mut value = x[base + best];
    let top_right = r0 * w + c1;
    if x[base + top_right] > value {
        best = top_right;
        value = x[base + top_right];
    }
    let bottom_left = r1 * w + c0;
    if x[base + bottom_left] > value {
        best = bottom_left;
        value = x[base + bottom_left];
    }
    let bottom_right = r1 * w + c1;
    if x[base + bottom_right] > value {
        best = bottom_right;
        value = x[base + bottom_right];
    }
    maxima[pos] = value;
    argmax[pos] = I::cast_from(best as u32);
}

/// The input gradient `[n, c, h, w]` from the output gradient and argmax `[n, c, out_h, out_w]`:
/// `rows`/`cols` give, per input row and column, the range `[lo, hi)` of outputs whose interval
/// holds it (`[batch * groups * h, 2]` and `[batch * groups * w, 2]`).
#[cube(launch)]
fn fmp_backward_kernel<F: Float, I: Int>(
    grad: &Tensor<F>,
    argmax: &Tensor<I>,
    rows: &Tensor<I>,
    cols: &Tensor<I>,
    output: &mut Tensor<F>,
    #[comptime] per_channel: bool,
    #[define(F, I)] _dtypes: [ElemType; 2],
) {
    let pos = ABSOLUTE_POS;
    if pos >= output.len() {
        terminate!();
    }
    let channels = output.shape(1);
    let (h, w) = (output.shape(2), output.shape(3));
    let (oh, ow) = (grad.shape(2), grad.shape(3));
    let x = pos % w;
    let y = (pos / w) % h;
    let plane = pos / (h * w);
    let group = if per_channel { plane } else { plane / channels };

    let (r_lo, r_hi) = pair(rows, group * h + y);
    let (c_lo, c_hi) = pair(cols, group * w + x);

    let cell = I::cast_from((y * w + x) as u32);
    let mut sum = F::new(0.0);
    for i in r_lo..r_hi {
        for j in c_lo..c_hi {
            let out = (plane * oh + i) * ow + j;
            if argmax[out] == cell {
                sum += grad[out];
            }
        }
    }
    output[pos] = sum;
}

/// The first and last cell of every interval, `[spans, 2]`.
fn interval_ends(spans: &[Span]) -> Vec<i32> {
    spans
        .iter()
        .flat_map(|s| [s.start as i32, (s.start + s.len - 1) as i32])
        .collect()
}

/// For every input cell along an axis of `side` cells, the range `[lo, hi)` of the intervals
/// that hold it, `[groups * side, 2]` (`[0, 0)` when none does). `spans` holds `out` intervals
/// per group; they are ordered, so the intervals holding a cell are consecutive.
fn covering_intervals(spans: &[Span], out: usize, side: usize) -> Vec<i32> {
    let groups = spans.len() / out;
    let mut ranges = vec![(u32::MAX, 0u32); groups * side];
    for (k, span) in spans.iter().enumerate() {
        let (group, i) = (k / out, (k % out) as u32);
        for cell in span.start..span.start + span.len {
            let range = &mut ranges[group * side + cell as usize];
            *range = (range.0.min(i), range.1.max(i + 1));
        }
    }
    ranges
        .into_iter()
        .flat_map(|(lo, hi)| {
            if lo < hi {
                [lo as i32, hi as i32]
            } else {
                [0, 0]
            }
        })
        .collect()
}

/// `values` as an `i32` tensor `[len / 2, 2]` on the device of `like`.
fn index_pairs(values: Vec<i32>, like: &CubeTensor) -> CubeTensor {
    let len = values.len();
    let data = TensorData::new(values, [len / 2, 2]);
    let tensor = CubeBackend::int_from_data(data, &like.device);
    CubeBackend::int_cast(tensor, IntDType::I32)
}

/// The launch grid of an elementwise kernel over `elements`.
fn grid(client: &cubecl::client::Client, elements: usize) -> (CubeCount, CubeDim) {
    let dim = CubeDim::new(client, elements);
    (calculate_cube_count_elemwise(client, elements, dim), dim)
}

impl FractionalMaxPoolBackend for CubeBackend {
    fn fmp_forward(
        x: FloatTensor<Self>,
        regions: PoolRegions,
    ) -> (FloatTensor<Self>, IntTensor<Self>) {
        let x = into_contiguous(x);
        let [n, c, _, _] = x.shape().dims();
        let [oh, ow] = regions.out;
        let rows = index_pairs(interval_ends(&regions.rows), &x);
        let cols = index_pairs(interval_ends(&regions.cols), &x);
        let shape = Shape::new([n, c, oh, ow]);
        let maxima = empty_device_contiguous_dtype(
            x.client.clone(),
            x.device.clone(),
            shape.clone(),
            x.dtype,
        );
        let argmax =
            empty_device_contiguous_dtype(x.client.clone(), x.device.clone(), shape, DType::I32);
        let (count, dim) = grid(&x.client, maxima.meta.num_elements());
        let dtypes = [
            dtype_to_storage_type(x.dtype),
            dtype_to_storage_type(DType::I32),
        ];
        fmp_forward_kernel::launch(
            &x.client,
            count,
            dim,
            x.clone().into_tensor_arg(),
            rows.into_tensor_arg(),
            cols.into_tensor_arg(),
            maxima.clone().into_tensor_arg(),
            argmax.clone().into_tensor_arg(),
            regions.groups > 1,
            dtypes,
        );
        (maxima, argmax)
    }

    fn fmp_backward(
        grad: FloatTensor<Self>,
        argmax: IntTensor<Self>,
        regions: PoolRegions,
        input: [usize; 2],
    ) -> FloatTensor<Self> {
        let grad = into_contiguous(grad);
        let argmax = into_contiguous(argmax);
        let [n, c, oh, ow] = grad.shape().dims();
        let [h, w] = input;
        let rows = index_pairs(covering_intervals(&regions.rows, oh, h), &grad);
        let cols = index_pairs(covering_intervals(&regions.cols, ow, w), &grad);
        let output = empty_device_contiguous_dtype(
            grad.client.clone(),
            grad.device.clone(),
            Shape::new([n, c, h, w]),
            grad.dtype,
        );
        let (count, dim) = grid(&grad.client, output.meta.num_elements());
        let dtypes = [
            dtype_to_storage_type(grad.dtype),
            dtype_to_storage_type(argmax.dtype),
        ];
        fmp_backward_kernel::launch(
            &grad.client,
            count,
            dim,
            grad.clone().into_tensor_arg(),
            argmax.into_tensor_arg(),
            rows.into_tensor_arg(),
            cols.into_tensor_arg(),
            output.clone().into_tensor_arg(),
            regions.groups > 1,
            dtypes,
        );
        output
    }
}
