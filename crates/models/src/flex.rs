//! Reading and building flex tensors in the backend operations' loop implementations.

use burn::backend::flex::FlexTensor;
use burn::tensor::{Element, Shape, TensorData};

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
