//! One type for any of the course's networks, and one for their configurations.

use burn::prelude::*;
use ops::PoolRegions;

use crate::observe::Observer;

use crate::{
    FmpNet, FmpNetConfig, LeNet5Classic, LeNet5ClassicConfig, LeNet5Modern, LeNet5ModernConfig,
};

/// Which network to build, with its parameters.
#[derive(Clone, Debug)]
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
    /// Floating-point operations of one forward pass of one image: two per multiply-add of the
    /// convolution and dense layers (see [`NetworkConfig::layers`]). A training step costs
    /// about three times this per image (forward, then the gradients of both the activations
    /// and the weights).
    pub fn forward_flops(&self) -> u64 {
        2 * self.layers().iter().map(|l| l.mult_adds).sum::<u64>()
    }

    /// The architecture's name, as written in configs and summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LeNet5Modern(_) => "lenet5_modern",
            Self::LeNet5Classic(_) => "lenet5_classic",
            Self::FmpNet(_) => "fmp",
        }
    }

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
        self.forward_observed(images, None)
    }

    /// [`forward`](Self::forward), each layer's output and each FMP layer's regions shown to
    /// `observer` if there is one, in the order of [`NetworkConfig::layers`].
    pub fn forward_observed(&self, images: Tensor<4>, observer: Option<Observer>) -> Tensor<2> {
        match self {
            Self::LeNet5Modern(net) => net.forward_observed(images, observer),
            Self::LeNet5Classic(net) => net.forward_observed(images, observer),
            Self::FmpNet(net) => net.forward_observed(images, observer),
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

    /// Whether forward passes draw pooling regions (an FMP net), so that repeated passes over
    /// the same images differ and their average is worth taking.
    pub fn draws_pooling_regions(&self) -> bool {
        matches!(self, Self::FmpNet(_))
    }

    /// Makes the next forward passes repeatable: an FMP net restarts its pooling-region
    /// generator at `seed` (see [`FmpNet::reseed`]); the LeNets are deterministic already.
    pub fn reseed(&self, seed: u64) {
        if let Self::FmpNet(net) = self {
            net.reseed(seed);
        }
    }

    /// The pooling regions of the next forward pass of `batch` images, per FMP layer (none for
    /// the LeNets); see [`FmpNet::next_regions`].
    pub fn next_regions(&self, batch: usize) -> Vec<PoolRegions> {
        match self {
            Self::FmpNet(net) => net.next_regions(batch),
            _ => Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_flops_match_the_sizes_quoted_for_the_course() {
        // A training image costs about 3 forward passes: FMP-MNIST ~0.12 GFLOP, the large
        // FMP-CIFAR net ~89 GFLOP.
        let mnist = NetworkConfig::FmpNet(FmpNetConfig::default());
        assert_eq!(mnist.forward_flops(), 40_622_720);
        let cifar = NetworkConfig::FmpNet(FmpNetConfig {
            channels: 3,
            layers: 12,
            filters: 160,
            alpha: 2f64.cbrt(),
            ..FmpNetConfig::default()
        });
        assert_eq!(cifar.forward_flops(), 29_678_053_760);
        assert!((3.0 * cifar.forward_flops() as f64 / 1e9 - 89.0).abs() < 0.1);
        // LeNets, by hand: modern 784,000 + 9,800,000 + 2,450,000 + 10,000.
        let modern = NetworkConfig::LeNet5Modern(LeNet5ModernConfig::new());
        assert_eq!(modern.forward_flops(), 13_044_000);
        let classic = NetworkConfig::LeNet5Classic(LeNet5ClassicConfig::new());
        assert_eq!(
            classic.forward_flops(),
            235_200 + 300_000 + 96_000 + 20_160 + 1_680
        );
    }
}
