//! The course's convolutional networks, written once for every Burn backend.
//!
//! In Burn 0.22 a tensor's backend is its [`Device`](burn::prelude::Device): the same model code
//! runs on flex, ndarray or wgpu depending on the device it is initialised on. Every network
//! reports the square input size it expects ([`Network::input_size`]), so the data pipeline pads
//! images to what the model asks for instead of hard-coding it.

// As `pool`: the ops serve NdArray too.
#[allow(deprecated)]
mod activation;
#[allow(deprecated)]
mod conv;
mod flex;
mod fmp;
mod graph;
mod lenet;
// As `pool`: the op serves NdArray too.
#[allow(deprecated)]
mod linear;
mod matmul;
mod network;
// As `pool`: the op serves NdArray too.
#[allow(deprecated)]
mod norm;
// Burn marks NdArray deprecated; the course asks for it, so the op serves it too.
#[allow(deprecated)]
mod pool;
mod regions;
// As `pool`: the op serves NdArray too.
#[allow(deprecated)]
mod sgd;
mod step;

pub use activation::{LeakyReluBackend, leaky_relu};
pub use conv::{Conv2dBackend, conv2d, conv2d_stride1};
pub use fmp::{FmpNet, FmpNetConfig, FractionalMaxPool2d};
pub use lenet::{LeNet5Classic, LeNet5ClassicConfig, LeNet5Modern, LeNet5ModernConfig};
pub use linear::{LinearBackend, linear};
pub use network::{Network, NetworkConfig};
pub use norm::{BatchNormTrainBackend, batch_norm};
pub use pool::{
    FractionalMaxPoolBackend, fmp_backward_tensor_ops, fmp_forward_tensor_ops,
    fractional_max_pool2d, max_pool2x2,
};
pub use regions::{
    PoolRegions, RegionKind, RegionSampler, Span, fmp_sizes, overlapping_pseudorandom,
};
pub use sgd::{MomentumState, Sgd, SgdBackend, SgdState, SgdStep};
pub use step::ImageBatch;
