//! The course's convolutional networks, written once for every Burn backend.
//!
//! - [`LeNet5Modern`] and [`LeNet5Classic`]: LeNet-5 as Rosebrock and as LeCun et al. wrote it.
//! - [`FmpNet`]: Graham's fractional max-pooling network, with its sizes computed backwards from
//!   the output ([`fmp_sizes`]), its pooling regions ([`RegionKind`], [`RegionSampler`]) and
//!   its pooling layer ([`FractionalMaxPool2d`]); [`FmpNetConfig`] is also the `[model]` table
//!   of a run config.
//! - [`Network`] / [`NetworkConfig`]: any of them, as the trainer sees it, with the training
//!   and inference steps of Burn's `Learner` on an [`ImageBatch`], and the table of its
//!   [`Layer`]s (names, shapes, parameters, multiply-adds) from the configuration alone.
//!
//! In Burn 0.22 a tensor's backend is its [`Device`](burn::prelude::Device): the same model code
//! runs on flex, ndarray or wgpu depending on the device it is initialised on. The operations
//! this project writes itself (convolution, pooling, batch norm, ...) live in the `ops` crate.
//! Every network reports the square input size it expects ([`Network::input_size`]), so the
//! data pipeline pads images to what the model asks for instead of hard-coding it.

mod fmp;
mod layers;
mod lenet;
mod network;
mod observe;
mod step;

pub use fmp::{
    FmpNet, FmpNetConfig, FractionalMaxPool2d, InvalidConfig, RegionKind, RegionSampler, fmp_sizes,
};
pub use layers::Layer;
pub use lenet::{LeNet5Classic, LeNet5ClassicConfig, LeNet5Modern, LeNet5ModernConfig};
pub use network::{Network, NetworkConfig};
pub use observe::Observer;
pub use step::ImageBatch;
