use burn::prelude::*;

use crate::{
    FmpNet, FmpNetConfig, LeNet5Classic, LeNet5ClassicConfig, LeNet5Modern, LeNet5ModernConfig,
};

/// Which network to build, with its parameters.
#[derive(Config, Debug)]
pub enum NetworkConfig {
    /// Rosebrock's "modern" LeNet (ReLU, max-pooling, 28x28 input).
    LeNet5Modern(LeNet5ModernConfig),
    /// LeCun et al. 1998 LeNet-5 (scaled tanh, trainable subsampling, 32x32 input).
    LeNet5Classic(LeNet5ClassicConfig),
    /// Graham's fractional max-pooling network.
    FmpNet(FmpNetConfig),
}

/// Any of the course's networks: one type for the trainer, the evaluator and the benchmarks.
// One value per run, moved rarely: the size gap between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    /// See [`LeNet5Modern`].
    LeNet5Modern(LeNet5Modern),
    /// See [`LeNet5Classic`].
    LeNet5Classic(LeNet5Classic),
    /// See [`FmpNet`].
    FmpNet(FmpNet),
}

impl NetworkConfig {
    /// Side of the square input the network will expect, without building it.
    pub fn input_size(&self) -> usize {
        match self {
            Self::LeNet5Modern(_) => LeNet5Modern::INPUT_SIZE,
            Self::LeNet5Classic(_) => LeNet5Classic::INPUT_SIZE,
            Self::FmpNet(config) => config.sizes()[0],
        }
    }

    /// Builds the network with freshly initialised weights on `device`.
    pub fn init(&self, device: &Device) -> Network {
        match self {
            Self::LeNet5Modern(config) => Network::LeNet5Modern(config.init(device)),
            Self::LeNet5Classic(config) => Network::LeNet5Classic(config.init(device)),
            Self::FmpNet(config) => Network::FmpNet(config.init(device)),
        }
    }
}

impl Network {
    /// Class scores (logits), `[batch, classes]`, for images `[batch, channels, size, size]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::LeNet5Modern(net) => net.forward(images),
            Self::LeNet5Classic(net) => net.forward(images),
            Self::FmpNet(net) => net.forward(images),
        }
    }

    /// Side of the square input the network expects, in pixels.
    pub fn input_size(&self) -> usize {
        match self {
            Self::LeNet5Modern(_) => LeNet5Modern::INPUT_SIZE,
            Self::LeNet5Classic(_) => LeNet5Classic::INPUT_SIZE,
            Self::FmpNet(net) => net.input_size(),
        }
    }

    /// Human-readable name of the architecture, as written in configs and summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LeNet5Modern(_) => "lenet5_modern",
            Self::LeNet5Classic(_) => "lenet5_classic",
            Self::FmpNet(_) => "fmp",
        }
    }
}
