//! Graham's fractional max-pooling network (arXiv 1412.6071): the sizes computed backwards from
//! the 1x1 output, the pooling regions, the pooling layer, and the network itself.

mod layer;
mod regions;
mod sizes;

use burn::{
    nn::{
        BatchNorm, BatchNormConfig, Dropout, DropoutConfig, PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig},
    },
    prelude::*,
};
use ops::{
    PoolRegions, batch_norm_leaky_relu, conv2d, conv2d_batch_norm_leaky_relu, conv2d_leaky_relu,
};

use crate::observe::{Observer, show};
use serde::{Deserialize, Serialize};

pub use layer::FractionalMaxPool2d;
pub use regions::{RegionKind, RegionSampler};
pub use sizes::fmp_sizes;

/// The FMP network's hyper-parameters. A run config's `[model]` table (`kind = "fmp"`) reads
/// into this struct, so each key, its meaning and its default are written here once. The
/// defaults are Graham's MNIST network. `channels`, `num_classes` and `seed` come from the
/// run's dataset and seed, not from the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FmpNetConfig {
    /// Image channels: 1 for MNIST, 3 for CIFAR-10.
    #[serde(skip)]
    pub channels: usize,
    /// Number of output classes.
    #[serde(skip)]
    pub num_classes: usize,
    /// Number of (convolution, FMP) blocks.
    pub layers: usize,
    /// Filter growth `k`: block `n` has `k * n` filters, the head `k * (layers + 1)`.
    pub filters: usize,
    /// Pooling ratio, in (1, 2]: sqrt 2 for MNIST, cube root of 2 for CIFAR-10.
    pub alpha: f64,
    /// Overlapping 2x2 windows (true) or disjoint regions.
    pub overlapping: bool,
    /// Pseudorandom (true) or random region sequences.
    pub pseudorandom: bool,
    /// Draw regions per image and channel (PyTorch) instead of per image (Graham).
    pub per_channel: bool,
    /// Dropout of the last layer; it grows linearly from 0 in the first block.
    pub max_dropout: f64,
    /// Slope of the leaky ReLU for negative inputs (Graham: 1/3).
    pub leaky_slope: f64,
    /// Batch normalisation after every convolution but the last.
    pub batch_norm: bool,
    /// Seed of the pooling regions.
    #[serde(skip)]
    pub seed: u64,
}

impl Default for FmpNetConfig {
    fn default() -> Self {
        Self {
            channels: 1,
            num_classes: 10,
            layers: 6,
            filters: 32,
            alpha: std::f64::consts::SQRT_2,
            overlapping: true,
            pseudorandom: true,
            per_channel: false,
            max_dropout: 0.5,
            leaky_slope: 1.0 / 3.0,
            batch_norm: true,
            seed: 0,
        }
    }
}

/// The largest input side a net may need: far beyond Graham's nets (36 for MNIST, 94 for
/// CIFAR-10).
pub const MAX_INPUT_SIDE: usize = 2048;
/// The most convolution parameters a net may have: 16 GiB of f32 weights.
pub const MAX_PARAMETERS: u128 = 1 << 32;

/// A hyper-parameter the network cannot be built with.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidConfig {
    /// The field, as written in the `[model]` table.
    pub field: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl FmpNetConfig {
    /// Checks the values `init` relies on, naming the offending field.
    pub fn check(&self) -> Result<(), InvalidConfig> {
        let invalid = |field, problem: String| Err(InvalidConfig { field, problem });
        if !(self.alpha > 1.0 && self.alpha <= 2.0) {
            return invalid("alpha", format!("{} is outside (1, 2]", self.alpha));
        }
        for (field, value) in [
            ("layers", self.layers),
            ("filters", self.filters),
            ("channels", self.channels),
            ("num_classes", self.num_classes),
        ] {
            if value == 0 {
                return invalid(field, "expected at least 1".into());
            }
        }
        if !(0.0..1.0).contains(&self.max_dropout) {
            return invalid(
                "max_dropout",
                format!("{} is outside [0, 1)", self.max_dropout),
            );
        }
        if !(0.0..=1.0).contains(&self.leaky_slope) {
            return invalid(
                "leaky_slope",
                format!("{} is outside [0, 1]", self.leaky_slope),
            );
        }
        // The sizes grow by at least two per block, walking back from the output as
        // `fmp_sizes` does: a bounded walk finds a net too large before any size can wrap.
        let mut side = 2;
        for _ in 0..self.layers {
            side = sizes::pooled_from(self.alpha, side) + 1;
            if side > MAX_INPUT_SIDE {
                return invalid(
                    "layers",
                    format!(
                        "{} blocks at alpha {} need an input of more than {MAX_INPUT_SIDE} \
                         pixels a side; use fewer layers or a smaller alpha",
                        self.layers, self.alpha
                    ),
                );
            }
        }
        // Counted wide, after bounding `filters`, so that the count itself cannot wrap.
        if self.filters > u32::MAX as usize || self.parameters() > MAX_PARAMETERS {
            return invalid(
                "filters",
                format!(
                    "{} filters per block over {} blocks make more than {MAX_PARAMETERS} \
                     parameters; use fewer",
                    self.filters, self.layers
                ),
            );
        }
        Ok(())
    }

    /// The convolutions' weights and biases, counted without building the net (`layers` and
    /// `filters` bounded as `check` bounds them first).
    fn parameters(&self) -> u128 {
        let (k, layers) = (self.filters as u128, self.layers as u128);
        let conv = |inputs: u128, outputs: u128, area: u128| inputs * outputs * area + outputs;
        let blocks: u128 = (0..layers)
            .map(|i| {
                conv(
                    if i == 0 { self.channels as u128 } else { k * i },
                    k * (i + 1),
                    4,
                )
            })
            .sum();
        let head = k * (layers + 1);
        blocks + conv(k * layers, head, 4) + conv(head, self.num_classes as u128, 1)
    }

    /// The spatial sizes from input to output (see [`fmp_sizes`]).
    pub fn sizes(&self) -> Vec<usize> {
        fmp_sizes(self.alpha, self.layers)
    }

    /// Builds the network on `device`.
    ///
    /// # Panics
    /// If [`FmpNetConfig::check`] fails.
    pub fn init(&self, device: &Device) -> FmpNet {
        if let Err(e) = self.check() {
            panic!("FmpNetConfig: {e}");
        }
        let sizes = self.sizes();
        let sampler = RegionSampler::new(self.seed);
        let kind = RegionKind {
            overlapping: self.overlapping,
            pseudorandom: self.pseudorandom,
        };
        let conv = |from: usize, to: usize, kernel: usize| {
            Conv2dConfig::new([from, to], [kernel, kernel])
                .with_padding(PaddingConfig2d::Valid)
                .init(device)
        };
        let norm = |features: usize| {
            self.batch_norm
                .then(|| BatchNormConfig::new(features).init(device))
        };
        // Dropout rises linearly over the L + 1 sites: 0 after the first block, max at the head.
        let dropout = |site: usize| {
            DropoutConfig::new(self.max_dropout * site as f64 / self.layers as f64).init()
        };
        let k = self.filters;
        let blocks = (0..self.layers)
            .map(|i| FmpBlock {
                conv: conv(if i == 0 { self.channels } else { k * i }, k * (i + 1), 2),
                norm: norm(k * (i + 1)),
                dropout: dropout(i),
                pool: FractionalMaxPool2d::new(
                    sizes[2 + 2 * i],
                    kind,
                    self.per_channel,
                    sampler.clone(),
                ),
            })
            .collect();
        let head_filters = k * (self.layers + 1);
        let pool_inputs = (0..self.layers)
            .map(|i| [k * (i + 1), sizes[1 + 2 * i], sizes[1 + 2 * i]])
            .collect();
        FmpNet {
            pool_inputs,
            blocks,
            head: conv(k * self.layers, head_filters, 2),
            head_norm: norm(head_filters),
            head_dropout: dropout(self.layers),
            classifier: conv(head_filters, self.num_classes, 1),
            leaky_slope: self.leaky_slope,
            input_size: sizes[0],
            sampler,
        }
    }
}

/// One block: 2x2 convolution, optional batch norm, leaky ReLU, dropout, fractional max-pooling.
#[derive(Module, Debug)]
struct FmpBlock {
    conv: Conv2d,
    norm: Option<BatchNorm>,
    dropout: Dropout,
    pool: FractionalMaxPool2d,
}

/// Graham's FMP network: blocks of (2x2 conv, FMP), a 2x2 convolution down to 1x1 and a 1x1
/// convolution to the classes, with no dense layer.
#[derive(Module, Debug)]
pub struct FmpNet {
    blocks: Vec<FmpBlock>,
    head: Conv2d,
    head_norm: Option<BatchNorm>,
    head_dropout: Dropout,
    classifier: Conv2d,
    #[module(skip)]
    leaky_slope: f64,
    #[module(skip)]
    input_size: usize,
    #[module(skip)]
    sampler: RegionSampler,
    /// `[channels, height, width]` entering each pooling layer.
    #[module(skip)]
    pool_inputs: Vec<[usize; 3]>,
}

impl FmpNet {
    /// Side of the square input, computed backwards from the 1x1 output.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// Restarts the pooling-region generator (shared by every copy of this network) at `seed`,
    /// so that the next forward passes draw the same regions as after `init` with that seed.
    pub fn reseed(&self, seed: u64) {
        self.sampler.reseed(seed);
    }

    /// The regions each pooling layer will use in the next forward pass of `batch` images,
    /// in layer order. Drawing them advances the generator as that pass would, so to see the
    /// regions of a pass, [`reseed`](Self::reseed), draw, reseed again and run it: that is how
    /// another implementation (the PyTorch module in `scripts/`) is checked on the same regions.
    pub fn next_regions(&self, batch: usize) -> Vec<PoolRegions> {
        self.pooling_layers()
            .map(|(pool, [c, h, w])| pool.draw([batch, c, h, w]))
            .collect()
    }

    /// Logits `[batch, classes]` for images `[batch, channels, input, input]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_observed(x, None)
    }

    /// [`forward`](Self::forward), each layer's output (and each FMP layer's regions) shown to
    /// `observer` if there is one.
    pub fn forward_observed(&self, x: Tensor<4>, mut observer: Option<Observer>) -> Tensor<2> {
        let o = &mut observer;
        let mut x = x;
        for block in &self.blocks {
            x = self.convolve(x, &block.conv, &block.norm, o);
            let (pooled, regions) = block.pool.pool(block.dropout.forward(x));
            if let Some(observe) = o {
                observe(pooled.clone(), Some(&regions));
            }
            x = pooled;
        }
        let x = self.convolve(x, &self.head, &self.head_norm, o);
        let x = conv2d(&self.classifier, self.head_dropout.forward(x));
        show(o, &x);
        x.flatten(1, 3)
    }

    /// The convolution, then batch norm (if any) and the leaky ReLU; with batch norm the
    /// convolution's output is shown too when observed, as the layer table lists it (otherwise
    /// the three run as one operation, which outside training never forms that output).
    fn convolve(
        &self,
        x: Tensor<4>,
        conv: &Conv2d,
        norm: &Option<BatchNorm>,
        o: &mut Option<Observer>,
    ) -> Tensor<4> {
        let x = match norm {
            Some(norm) if o.is_none() => {
                conv2d_batch_norm_leaky_relu(conv, norm, x, self.leaky_slope)
            }
            Some(norm) => {
                let x = conv2d(conv, x);
                show(o, &x);
                batch_norm_leaky_relu(norm, x, self.leaky_slope)
            }
            None => conv2d_leaky_relu(conv, x, self.leaky_slope),
        };
        show(o, &x);
        x
    }

    /// The pooling layers with the `[channels, height, width]` of their inputs, for timing them
    /// alone.
    pub fn pooling_layers(&self) -> impl Iterator<Item = (&FractionalMaxPool2d, [usize; 3])> {
        self.blocks
            .iter()
            .map(|b| &b.pool)
            .zip(self.pool_inputs.iter().copied())
    }

    /// Parameters of the convolutions alone (weights and biases, no batch norm).
    pub fn convolution_params(&self) -> usize {
        self.blocks
            .iter()
            .map(|b| b.conv.num_params())
            .chain([self.head.num_params(), self.classifier.num_params()])
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_whose_sizes_do_not_fit_are_named_errors() {
        let check = |config: FmpNetConfig| config.check().map_err(|e| e.to_string());
        assert!(check(FmpNetConfig::default()).is_ok());
        let cifar = FmpNetConfig {
            layers: 12,
            filters: 160,
            alpha: 2f64.cbrt(),
            channels: 3,
            ..FmpNetConfig::default()
        };
        assert!(check(cifar.clone()).is_ok());
        for (config, field) in [
            (
                FmpNetConfig {
                    layers: 68,
                    alpha: 2.0,
                    ..FmpNetConfig::default()
                },
                "layers",
            ),
            (
                FmpNetConfig {
                    layers: 1_000_000_000_000,
                    ..FmpNetConfig::default()
                },
                "layers",
            ),
            (
                FmpNetConfig {
                    filters: 1 << 62,
                    ..FmpNetConfig::default()
                },
                "filters",
            ),
            (
                FmpNetConfig {
                    filters: 100_000,
                    ..cifar
                },
                "filters",
            ),
            (
                FmpNetConfig {
                    leaky_slope: f64::NAN,
                    ..FmpNetConfig::default()
                },
                "leaky_slope",
            ),
        ] {
            let err = check(config).unwrap_err();
            assert!(err.starts_with(field), "{err}");
        }
        // The largest net that fits has every size in range.
        let largest = (1..)
            .map(|layers| FmpNetConfig {
                layers,
                alpha: 2.0,
                ..FmpNetConfig::default()
            })
            .take_while(|c| c.check().is_ok())
            .last()
            .unwrap();
        assert!(largest.sizes()[0] <= MAX_INPUT_SIDE);
        assert!(largest.sizes().windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn mnist_net_matches_grahams_layout() {
        let net = FmpNetConfig::default().init(&Device::flex());
        assert_eq!(net.input_size(), 36);
        // 32n filters for n = 1..6, then 224 and 10: 462,026 convolution parameters.
        assert_eq!(net.convolution_params(), 462_026);
        let x = Tensor::<4>::zeros([2, 1, 36, 36], &Device::flex());
        assert_eq!(net.forward(x).dims(), [2, 10]);
    }

    #[test]
    fn cifar_nets_have_the_papers_parameter_counts() {
        let cifar = |filters| FmpNetConfig {
            channels: 3,
            layers: 12,
            filters,
            alpha: 2f64.cbrt(),
            ..FmpNetConfig::default()
        };
        let device = Device::flex();
        let large = cifar(160).init(&device);
        assert_eq!(large.input_size(), 94);
        assert_eq!(large.convolution_params(), 74_584_490);
        assert_eq!(cifar(64).init(&device).convolution_params(), 11_942_474);
    }

    #[test]
    fn cifar_net_runs_forward_and_backward_on_94x94() {
        let device = Device::flex().autodiff();
        let net = FmpNetConfig {
            channels: 3,
            layers: 12,
            filters: 64,
            alpha: 2f64.cbrt(),
            ..FmpNetConfig::default()
        }
        .init(&device);
        let x = Tensor::<4>::random([2, 3, 94, 94], burn::tensor::Distribution::Default, &device);
        let logits = net.forward(x);
        assert_eq!(logits.dims(), [2, 10]);
        let grads = logits.sum().backward();
        let first = net.blocks[0]
            .conv
            .weight
            .grad(&grads)
            .expect("first conv is trained");
        assert_eq!(first.dims(), [64, 3, 2, 2]);
        assert!(first.abs().sum().into_scalar::<f32>() > 0.0);
    }

    #[test]
    fn dropout_grows_linearly_to_the_maximum() {
        let net = FmpNetConfig::default().init(&Device::flex());
        let probs: Vec<f64> = net
            .blocks
            .iter()
            .map(|b| b.dropout.prob)
            .chain([net.head_dropout.prob])
            .collect();
        let expected: Vec<f64> = (0..=6).map(|i| 0.5 * i as f64 / 6.0).collect();
        assert_eq!(probs, expected);
    }

    #[test]
    fn bad_values_are_named() {
        let bad = |config: FmpNetConfig| config.check().unwrap_err().to_string();
        let err = bad(FmpNetConfig {
            alpha: 2.5,
            ..FmpNetConfig::default()
        });
        assert!(err.contains("alpha"), "{err}");
        let err = bad(FmpNetConfig {
            max_dropout: 1.0,
            ..FmpNetConfig::default()
        });
        assert!(err.contains("max_dropout"), "{err}");
    }
}
