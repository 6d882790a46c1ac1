//! Reading and building flex tensors in the backend operations' loop implementations.

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Element, Shape, TensorData};

/// Whether every tensor holds f32 values, the type the loops serve.
pub(crate) fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// The f32 values of `x`.
///
/// # Panics
/// If `x` is not contiguous f32: the operations check the type and call `to_contiguous` first.
pub(crate) fn values(x: &FlexTensor) -> &[f32] {
    x.as_slice().expect("a contiguous f32 tensor")
}

/// A flex tensor of `shape` holding `values`.
pub(crate) fn tensor<E: Element>(values: Vec<E>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}
