//! Matrix products on the CPU backends' f32 buffers, called from the operations' loops.
//!
//! The products go to the gemm crate (flex's own matrix kernels) with the strides of the
//! operands as they lie, so that transposed operands are never copied and results land in the
//! caller's buffers.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::cpu::written;

/// A strided view of an f32 matrix.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    values: &'a [f32],
    shape: [usize; 2],
    /// Steps between rows and between columns.
    strides: [usize; 2],
}

impl<'a> View<'a> {
    /// `values` as a row-major `[rows, cols]` matrix.
    pub(crate) fn rows(values: &'a [f32], shape: [usize; 2]) -> Self {
        assert!(
            values.len() >= shape[0] * shape[1],
            "matrix larger than its values"
        );
        Self {
            values,
            shape,
            strides: [shape[1], 1],
        }
    }

    /// `values` from `offset` on as a `[rows, cols]` matrix whose rows are `row_stride` apart
    /// and whose columns are adjacent.
    pub(crate) fn strided(
        values: &'a [f32],
        offset: usize,
        shape: [usize; 2],
        row_stride: usize,
    ) -> Self {
        let values = &values[offset..];
        assert!(
            shape[0] == 0 || values.len() >= (shape[0] - 1) * row_stride + shape[1],
            "matrix larger than its values"
        );
        Self {
            values,
            shape,
            strides: [row_stride, 1],
        }
    }

    pub(crate) fn transposed(self) -> Self {
        Self {
            values: self.values,
            shape: [self.shape[1], self.shape[0]],
            strides: [self.strides[1], self.strides[0]],
        }
    }

    /// Columns `columns` of the view.
    fn columns(self, columns: std::ops::Range<usize>) -> Self {
        Self {
            values: &self.values[columns.start * self.strides[1]..],
            shape: [self.shape[0], columns.len()],
            strides: self.strides,
        }
    }
}

/// Columns of the product each thread computes at least, when a product is split.
const PART_COLUMNS: usize = 32;

/// `product` (row-major `[m, n]`) set to `lhs @ rhs`, or added to with `accumulate`.
///
/// With `parallel`, the product's columns are split in parts that threads compute with one
/// single-threaded product each, reading only their part of `rhs`: at the LeNet dense layer's
/// shape (64 x 2450 by 2450 x 500) that ran at 209 GFLOP/s on two cores, against 96 for gemm's
/// own threading and 84 on one thread. Callers that already run one product per thread pass
/// false.
pub(crate) fn multiply(
    product: &mut [f32],
    lhs: View,
    rhs: View,
    accumulate: bool,
    parallel: bool,
) {
    assert_eq!(product.len(), lhs.shape[0] * rhs.shape[1], "product size");
    // SAFETY: `product` is initialised and holds the m * n values of the result.
    unsafe {
        multiply_into(
            product.as_mut_ptr(),
            rhs.shape[1],
            lhs,
            rhs,
            accumulate,
            parallel,
        )
    }
}

/// [`multiply`] into the `[m, n]` matrix whose rows start `row_stride` apart in `product`.
pub(crate) fn multiply_strided(
    product: &mut [f32],
    row_stride: usize,
    lhs: View,
    rhs: View,
    accumulate: bool,
    parallel: bool,
) {
    let ([m, _], [_, n]) = (lhs.shape, rhs.shape);
    assert!(
        n <= row_stride && (m == 0 || product.len() >= (m - 1) * row_stride + n),
        "product size"
    );
    // SAFETY: `product` is initialised and holds every cell of the result at that stride.
    unsafe {
        multiply_into(
            product.as_mut_ptr(),
            row_stride,
            lhs,
            rhs,
            accumulate,
            parallel,
        )
    }
}

/// `lhs @ rhs` as a new row-major `[m, n]` matrix, as [`multiply`] computes it. The kernels write
/// every value, so the buffer is not zero-filled first (for LeNet's dense layer, 5 MB per step).
pub(crate) fn product(lhs: View, rhs: View, parallel: bool) -> Vec<f32> {
    let len = lhs.shape[0] * rhs.shape[1];
    let fill = |product: &mut [MaybeUninit<f32>]| {
        // SAFETY: the buffer has room for the m * n values; without `accumulate` they are
        // written, never read.
        unsafe {
            multiply_into(
                product.as_mut_ptr().cast(),
                rhs.shape[1],
                lhs,
                rhs,
                false,
                parallel,
            )
        }
    };
    // SAFETY: `multiply_into` writes all m * n values.
    unsafe { written(len, fill) }.0
}

/// [`multiply`] into the `[m, n]` matrix at `product` whose rows are `row_stride` apart.
///
/// # Safety
/// `product` must be valid for writes of every cell of the result at that stride, and for
/// reads of them if `accumulate`.
unsafe fn multiply_into(
    product: *mut f32,
    row_stride: usize,
    lhs: View,
    rhs: View,
    accumulate: bool,
    parallel: bool,
) {
    let ([m, k], [k2, n]) = (lhs.shape, rhs.shape);
    assert_eq!(k, k2, "inner dimensions of a matrix product");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for row in 0..m {
                // SAFETY: the caller's buffer holds each row's n values at the stride.
                unsafe { product.add(row * row_stride).write_bytes(0, n) };
            }
        }
        return;
    }
    let width = if parallel {
        PART_COLUMNS.max(n.div_ceil(2 * rayon::current_num_threads()))
    } else {
        n
    };
    let parts = n.div_ceil(width);
    let product = Shared(product);
    (0..parts).into_par_iter().for_each(|part| {
        let columns = part * width..((part + 1) * width).min(n);
        let rhs = rhs.columns(columns.clone());
        let product = &product;
        // SAFETY: `product` holds m * n values and each part writes only its own columns of
        // it; `View::rows` checked that each operand's values cover its shape with its
        // strides (transposing swaps both; `columns` moves the start by whole columns).
        unsafe {
            gemm_into(
                product.0.add(columns.start),
                row_stride,
                lhs,
                rhs,
                accumulate,
            )
        }
    });
}

/// The product's buffer, written by several threads at disjoint columns.
struct Shared(*mut f32);

// SAFETY: see `multiply`: threads write disjoint cells.
unsafe impl Sync for Shared {}

/// `lhs @ rhs` into the row-major matrix at `dst` whose rows are `row_stride` apart, on this
/// thread.
///
/// # Safety
/// `dst` must be valid for writes of every cell of the `[m, n]` result with that stride, and
/// `lhs` and `rhs` must cover their shapes.
unsafe fn gemm_into(dst: *mut f32, row_stride: usize, lhs: View, rhs: View, accumulate: bool) {
    let stride = |s: usize| isize::try_from(s).expect("stride fits in isize");
    unsafe {
        gemm::gemm(
            lhs.shape[0],
            rhs.shape[1],
            lhs.shape[1],
            dst,
            1,
            stride(row_stride),
            accumulate,
            lhs.values.as_ptr(),
            stride(lhs.strides[1]),
            stride(lhs.strides[0]),
            rhs.values.as_ptr(),
            stride(rhs.strides[1]),
            stride(rhs.strides[0]),
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}
