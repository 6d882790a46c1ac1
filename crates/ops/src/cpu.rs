//! The CPU backends' tensors (flex and ndarray) as the operations' loops read and write them:
//! contiguous f32 (and i32 index) buffers. One loop implementation serves both backends.

use std::borrow::Cow;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use burn::backend::ndarray::NdArrayTensor;
use burn::backend::{
    Backend, Flex, TensorMetadata,
    flex::FlexTensor,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{DType, Shape, TensorData};

/// A CPU backend whose tensors the loops can read in place and build from vectors.
pub(crate) trait CpuBackend: Backend {
    /// The values of `x` in row-major order: borrowed when `x` is laid out contiguously, copied
    /// otherwise.
    ///
    /// # Panics
    /// If `x` does not hold f32 values: the operations check with [`all_f32`] first and fall
    /// back to their reference formulation for other types.
    fn f32s(x: &FloatTensor<Self>) -> Cow<'_, [f32]>;

    /// The values of an index tensor, as [`CpuBackend::f32s`] for i32 (`None` for other types).
    fn i32s(x: &IntTensor<Self>) -> Option<Cow<'_, [i32]>>;

    /// A float tensor of `shape` holding `values`.
    fn float(values: Vec<f32>, shape: impl Into<Shape>) -> FloatTensor<Self>;

    /// An index tensor of `shape` holding `values`.
    fn int(values: Vec<i32>, shape: impl Into<Shape>) -> IntTensor<Self>;
}

/// Whether every tensor holds f32 values, the type the loops serve.
pub(crate) fn all_f32<T: TensorMetadata>(tensors: &[&T]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// `block` zeroed, as initialised values.
///
/// The loops write their outputs into zeroed blocks as plain slices, which the compiler
/// vectorises (writing uninitialised memory from an iterator left them scalar: LeNet-5's
/// evaluation took 1.6 times as long). Zeroing each block just before its pass writes it, while
/// it is in cache, costs little; zeroing a whole output first (`vec![0.0; len]`) cost about as
/// much as the pass itself.
pub(crate) fn zeroed(block: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for value in block.iter_mut() {
        value.write(0.0);
    }
    // SAFETY: every value was just written, and MaybeUninit<f32> has the layout of f32.
    unsafe { &mut *(block as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `len` values that `fill` writes into uninitialised memory, and what `fill` returns: for the
/// passes that write every value of an output, so that it is neither zero-filled nor copied.
///
/// # Safety
///
/// `fill` must initialise every one of the `len` values it is given.
pub(crate) unsafe fn written<T, R>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]) -> R,
) -> (Vec<T>, R) {
    let mut values = Vec::with_capacity(len);
    let result = fill(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: `fill` initialised the `len` values, as the caller promised.
    unsafe { values.set_len(len) };
    (values, result)
}

/// `len` values computed in parallel blocks of `block` values: `fill(index, values)` writes
/// block `index` (the last may be shorter), each [`zeroed`] first.
pub(crate) fn par_blocks(
    len: usize,
    block: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let fill_blocks = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(block.max(1))
            .enumerate()
            .for_each(|(index, values)| fill(index, zeroed(values)))
    };
    // SAFETY: the blocks cover the `len` values, and `zeroed` initialised each.
    unsafe { written(len, fill_blocks) }.0
}

/// Runs `f` compiled for the widest vector instructions this CPU has (AVX-512 or AVX2 with FMA
/// on x86-64, detected at run time as gemm does). The workspace is built for the x86-64 baseline,
/// SSE2's four f32 lanes; loops that compute rather than move data (LeCun's tanh) gain from more.
/// `f` must be inlined into it, hence `#[inline(always)]` on it and on what it calls.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// `f(a[i], b[i])` for every value, in parallel blocks.
pub(crate) fn map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    const BLOCK: usize = 1 << 14;
    par_blocks(a.len(), BLOCK, |index, out| {
        let at = index * BLOCK..;
        vectorised(
            #[inline(always)]
            || {
                for ((o, &a), &b) in out.iter_mut().zip(&a[at.clone()]).zip(&b[at]) {
                    *o = f(a, b);
                }
            },
        )
    })
}

/// The sums of `f(a[i], b[i])` (`K` values each) over two equal-length slices, returned as f64.
/// Blocks of values are first mapped into a buffer and then summed in sixteen f32 lanes: two
/// plain loops that the compiler vectorises. The operations sum planes and rows of at most a few
/// thousand values this way, and add those sums in f64.
pub(crate) fn sums<const K: usize>(
    a: &[f32],
    b: &[f32],
    f: impl Fn(f32, f32) -> [f32; K],
) -> [f64; K] {
    const BLOCK: usize = 64;
    const LANES: usize = 16;
    let mut sums = [0f64; K];
    let mut mapped = [[0f32; BLOCK]; K];
    for (a, b) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let len = a.len();
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            let values = f(x, y);
            for k in 0..K {
                mapped[k][i] = values[k];
            }
        }
        for (sum, mapped) in sums.iter_mut().zip(&mapped) {
            let mut lanes = [0f32; LANES];
            let chunks = mapped[..len].chunks_exact(LANES);
            let tail: f32 = chunks.remainder().iter().sum();
            for chunk in chunks {
                for (lane, &v) in lanes.iter_mut().zip(chunk) {
                    *lane += v;
                }
            }
            *sum += f64::from(lanes.iter().sum::<f32>() + tail);
        }
    }
    sums
}

/// `x`'s values as `E`, borrowed when laid out contiguously; `None` if `x` holds another type.
macro_rules! flex_values {
    ($x:expr, $e:ty) => {
        match $x.as_slice::<$e>() {
            Some(values) => Some(Cow::Borrowed(values)),
            None => $x
                .to_contiguous()
                .as_slice::<$e>()
                .map(|v| Cow::Owned(v.to_vec())),
        }
    };
}

impl CpuBackend for Flex {
    fn f32s(x: &FlexTensor) -> Cow<'_, [f32]> {
        flex_values!(x, f32).expect("an f32 tensor")
    }

    fn i32s(x: &FlexTensor) -> Option<Cow<'_, [i32]>> {
        flex_values!(x, i32)
    }

    fn float(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape.into()))
    }

    fn int(values: Vec<i32>, shape: impl Into<Shape>) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape.into()))
    }
}

/// The values an ndarray tensor's storage holds, borrowed when laid out in standard order.
macro_rules! ndarray_values {
    ($storage:expr) => {{
        let view = $storage.view();
        match view.to_slice() {
            Some(values) => Cow::Borrowed(values),
            None => Cow::Owned(view.iter().copied().collect()),
        }
    }};
}

impl CpuBackend for burn::backend::NdArray {
    fn f32s(x: &NdArrayTensor) -> Cow<'_, [f32]> {
        match x {
            NdArrayTensor::F32(storage) => ndarray_values!(storage),
            other => panic!("an f32 tensor, not {:?}", other.dtype()),
        }
    }

    fn i32s(x: &NdArrayTensor) -> Option<Cow<'_, [i32]>> {
        match x {
            NdArrayTensor::I32(storage) => Some(ndarray_values!(storage)),
            _ => None,
        }
    }

    fn float(values: Vec<f32>, shape: impl Into<Shape>) -> NdArrayTensor {
        NdArrayTensor::from_data(TensorData::new(values, shape.into()))
    }

    fn int(values: Vec<i32>, shape: impl Into<Shape>) -> NdArrayTensor {
        NdArrayTensor::from_data(TensorData::new(values, shape.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// A transposed view is read in its logical row-major order on both backends (copied, as it
    /// is not contiguous), a contiguous one in place; index tensors likewise; other types are
    /// `None`.
    fn reads_logical_order<B: CpuBackend>() {
        let x = B::float((0..6).map(|v| v as f32).collect(), [2, 3]);
        assert!(matches!(
            B::f32s(&x),
            Cow::Borrowed([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
        ));
        let transposed = B::float_swap_dims(x, 0, 1);
        assert_eq!(*B::f32s(&transposed), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let indices = B::int_swap_dims(B::int(vec![0, 1, 2, 3, 4, 5], [3, 2]), 0, 1);
        assert_eq!(B::i32s(&indices).as_deref(), Some(&[0, 2, 4, 1, 3, 5][..]));
        let wide = B::int_cast(indices, burn::tensor::IntDType::I64);
        assert!(B::i32s(&wide).is_none());
        assert!(all_f32(&[&transposed]));
    }

    #[test]
    fn flex_tensors_read_in_logical_order() {
        reads_logical_order::<Flex>();
    }

    #[test]
    fn ndarray_tensors_read_in_logical_order() {
        reads_logical_order::<NdArray>();
    }
}
