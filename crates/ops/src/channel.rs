//! Per-channel sums and broadcasts from Burn's tensor operations, for the formulations that
//! wgpu runs.

use burn::backend::{Backend, TensorMetadata, tensor::FloatTensor};
use burn::prelude::*;

/// Each channel's sum of `x` `[n, c, ...]`, as `[1, c, 1, ...]`, one dimension at a time, so
/// that no reduction runs over more values than one dimension holds. Burn's batch norm sums a
/// channel as one row of a transposed copy (`n * h * w` values), and on wgpu CubeCL's
/// reductions over rows that long came out wrong (Burn 0.22.1 on lavapipe: docs/gpu.md).
pub(crate) fn channel_total<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    (2..rank)
        .rev()
        .chain([0])
        .fold(x, |total, dim| B::float_sum_dim(total, dim))
}

/// `v` `[c]` as `[1, c, 1, ...]`, to broadcast against a tensor of `shape`.
pub(crate) fn per_channel<B: Backend>(v: FloatTensor<B>, shape: &Shape) -> FloatTensor<B> {
    let dims: Vec<usize> = (0..shape.num_dims())
        .map(|d| if d == 1 { shape[1] } else { 1 })
        .collect();
    B::float_reshape(v, Shape::from(dims))
}
