//! The backend operations the course's networks use where Burn's are slower or absent.
//!
//! Each operation is one module in the shape of Burn's custom-kernel example: a backend trait
//! (kept inside this crate), the differentiable public function, a reference formulation from
//! Burn's own tensor operations (which the other backends run and the tests compare against),
//! the flex (CPU) implementation as loops over contiguous f32 buffers, and the backward pass
//! recorded on Burn's autodiff graph. On ndarray and wgpu they fall back to the reference.
//!
//! - [`conv2d`], [`conv2d_stride1`]: stride-1 convolution (unfold + matrix products on flex).
//! - [`linear`]: a dense layer (matrix products split by columns across threads on flex).
//! - [`batch_norm`]: training-mode batch normalisation (channel loops on flex).
//! - [`leaky_relu`]: one pass each way on flex.
//! - [`fractional_max_pool2d`] over [`PoolRegions`] (of [`Span`]s), and [`max_pool2x2`],
//!   LeNet's max-pool as the same operation over fixed windows.
//! - [`Sgd`]: Burn's SGD update as one pass per parameter on flex, recorded as Burn records it.

// Burn marks NdArray deprecated; the course asks for it, so every operation serves it too.
#[allow(deprecated)]
mod batch_norm;
#[allow(deprecated)]
mod conv;
mod flex;
#[allow(deprecated)]
mod fractional_max_pool;
mod graph;
#[allow(deprecated)]
mod leaky_relu;
#[allow(deprecated)]
mod linear;
mod matmul;
#[allow(deprecated)]
mod sgd;

pub use batch_norm::batch_norm;
pub use conv::{conv2d, conv2d_stride1};
pub use fractional_max_pool::{PoolRegions, Span, fractional_max_pool2d, max_pool2x2};
pub use leaky_relu::leaky_relu;
pub use linear::linear;
pub use sgd::Sgd;
