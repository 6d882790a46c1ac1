//! The backend operations the course's networks use where Burn's are slower or absent.
//!
//! Each operation is one module in the shape of Burn's custom-kernel example: a backend trait
//! (kept inside this crate), the differentiable public function, a reference formulation from
//! Burn's own tensor operations (which wgpu runs unless the operation has a kernel, and the tests
//! compare against), one CPU implementation as loops over contiguous f32 buffers that serves both
//! CPU backends, flex and ndarray (`cpu::CpuBackend` is how they read and build tensors), and
//! the backward pass recorded on Burn's autodiff graph.
//!
//! Names say which formulation a function is, in every module: `reference_forward` /
//! `reference_backward` are the reference formulation from Burn's tensor operations;
//! `burns_forward` / `burns_backward` are Burn's own operation, the fallback where the loops do
//! not apply (another dtype, an empty shape).
//!
//! - [`conv2d`], [`conv2d_stride1`]: stride-1 convolution (unfold + matrix products; on wgpu as
//!   tensor operations, a group of images per product); [`conv2d_leaky_relu`] with the leaky
//!   ReLU applied as the output is written.
//! - [`linear`]: a dense layer (matrix products split by columns across threads on the CPU).
//! - [`batch_norm`], [`batch_norm_leaky_relu`]: training-mode batch normalisation, optionally
//!   with the leaky ReLU that follows it in the same pass (channel loops on the CPU);
//!   [`conv2d_batch_norm_leaky_relu`] with the convolution before it, into which it is folded
//!   outside training.
//! - [`leaky_relu`]: one pass each way on the CPU.
//! - [`scaled_tanh`]: LeNet-5's squashing `a tanh(s x)`, one vectorised pass each way on the CPU.
//! - [`subsample2x2`]: LeNet-5's trainable 2x2 subsampling, one pass each way on the CPU.
//! - [`fractional_max_pool2d`] over [`PoolRegions`] (of [`Span`]s), and [`max_pool2x2`],
//!   LeNet's max-pool as the same operation over fixed windows; CubeCL kernels on wgpu.
//! - [`Sgd`]: Burn's SGD update as one pass per parameter on the CPU, recorded as Burn records it.
//!
//! On Burn's remote backend (a device another machine serves), every
//! operation runs its reference formulation, which goes over the wire as Burn's own operations.
//!
//! On wgpu, the convolution, the pooling and the SGD step are recorded by fusion as whole
//! operations (`#[fusion(meta = ..)]`) that run on the Cube backend: the convolution's and the
//! SGD step's tensor operations, fused with their neighbours, gave wrong results in training.

// Burn marks NdArray deprecated; the course asks for it, so every operation serves it too.
#![allow(deprecated)]

mod batch_norm;
mod channel;
mod conv;
mod cpu;
mod fractional_max_pool;
mod graph;
mod leaky_relu;
mod linear;
mod matmul;
mod remote;
mod sgd;
mod subsample;
mod tanh;

pub use batch_norm::{batch_norm, batch_norm_leaky_relu, conv2d_batch_norm_leaky_relu};
pub use conv::{conv2d, conv2d_leaky_relu, conv2d_stride1};
pub use fractional_max_pool::{PoolRegions, Span, fractional_max_pool2d, max_pool2x2};
pub use leaky_relu::leaky_relu;
pub use linear::linear;
pub use sgd::Sgd;
pub use subsample::subsample2x2;
pub use tanh::scaled_tanh;
