//! The CPU backends' tensors (flex and ndarray) as the operations' loops read and write them:
//! contiguous f32 (and i32 index) buffers. One loop implementation serves both backends.

use std::borrow::Cow;

use rayon::prelude::*;

#[allow(deprecated)]
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

/// `f(a[i], b[i])` for every value, in parallel blocks.
///
/// The output is zeroed first and then assigned in a plain slice loop, which the compiler
/// vectorises; writing uninitialised memory from an iterator instead left the loop scalar (LeNet-5's
/// evaluation took 1.6 times as long).
pub(crate) fn map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    const BLOCK: usize = 1 << 14;
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(BLOCK)
        .zip(a.par_chunks(BLOCK).zip(b.par_chunks(BLOCK)))
        .for_each(|(out, (a, b))| {
            for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
    out
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

#[allow(deprecated)]
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
    #[allow(deprecated)]
    fn ndarray_tensors_read_in_logical_order() {
        reads_logical_order::<NdArray>();
    }
}
