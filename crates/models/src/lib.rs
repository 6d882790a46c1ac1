//! The course's convolutional networks, written once for every Burn backend.
//!
//! In Burn 0.22 a tensor's backend is its [`Device`](burn::prelude::Device): the same model code
//! runs on flex, ndarray or wgpu depending on the device it is initialised on. Every network
//! reports the square input size it expects ([`Network::input_size`]), so the data pipeline pads
//! images to what the model asks for instead of hard-coding it.

mod lenet;
mod network;
mod step;

pub use lenet::{LeNet5Classic, LeNet5ClassicConfig, LeNet5Modern, LeNet5ModernConfig};
pub use network::{Network, NetworkConfig};
pub use step::ImageBatch;
