//! The layer table of a network, from its configuration alone: each layer's name (as in the
//! exported state dict), output shape, trainable parameters and multiply-adds. `train summary`
//! prints it; [`NetworkConfig::forward_flops`] sums it.

use crate::{NetworkConfig, lenet::C3_TABLE};

/// One layer of a network.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// The layer's name: its prefix in the state dict where it has parameters.
    pub name: String,
    /// What the layer does, e.g. `conv 5x5 same`, `max-pool 2x2, relu`, `fmp`.
    pub kind: String,
    /// Output shape of one image, `[channels, height, width]` (`[features, 1, 1]` for dense).
    pub output: [usize; 3],
    /// Trainable parameters (batch norm's running statistics are not).
    pub params: usize,
    /// Multiply-adds of one image's forward pass: those of convolutions and dense layers, as
    /// the layer defines them (LeNet-5's C3 by its 60 links); pooling, activations and
    /// normalisation, linear in the activations' size, count none.
    pub mult_adds: u64,
}

/// A convolution producing `out` maps of `side` x `side` from `inputs` maps (or links) with a
/// kernel of `area` cells, with a bias per map.
fn conv(name: &str, kind: &str, [out, side]: [usize; 2], inputs: usize, area: usize) -> Layer {
    Layer {
        name: name.into(),
        kind: kind.into(),
        output: [out, side, side],
        params: out * inputs * area + out,
        mult_adds: (side * side * out * inputs * area) as u64,
    }
}

/// A layer without multiply-adds: pooling, subsampling, normalisation.
fn plain(name: &str, kind: &str, output: [usize; 3], params: usize) -> Layer {
    Layer {
        name: name.into(),
        kind: kind.into(),
        output,
        params,
        mult_adds: 0,
    }
}

impl NetworkConfig {
    /// The network's layers in order, from the configuration alone.
    pub fn layers(&self) -> Vec<Layer> {
        match self {
            Self::LeNet5Modern(c) => vec![
                conv("conv1", "conv 5x5 same", [20, 28], 1, 25),
                plain("pool1", "max-pool 2x2, relu", [20, 14, 14], 0),
                conv("conv2", "conv 5x5 same", [50, 14], 20, 25),
                plain("pool2", "max-pool 2x2, relu", [50, 7, 7], 0),
                conv("fc1", "dense, relu", [500, 1], 50 * 7 * 7, 1),
                conv("fc2", "dense", [c.num_classes, 1], 500, 1),
            ],
            Self::LeNet5Classic(c) => {
                let links: usize = C3_TABLE.iter().map(|t| t.len()).sum();
                let mut c3 = conv("c3", "partial conv 5x5, tanh", [16, 10], links, 25);
                // One kernel per link, one bias per map: not 16 maps x 60 links.
                c3.params = links * 25 + 16;
                c3.mult_adds = (10 * 10 * links * 25) as u64;
                vec![
                    conv("c1", "conv 5x5, tanh", [6, 28], 1, 25),
                    plain("s2", "subsampling 2x2, tanh", [6, 14, 14], 2 * 6),
                    c3,
                    plain("s4", "subsampling 2x2, tanh", [16, 5, 5], 2 * 16),
                    conv("c5", "conv 5x5, tanh", [120, 1], 16, 25),
                    conv("f6", "dense, tanh", [84, 1], 120, 1),
                    conv("output", "dense", [c.num_classes, 1], 84, 1),
                ]
            }
            Self::FmpNet(c) => {
                let sizes = c.sizes();
                let k = c.filters;
                let norm = |name: String, maps: usize, side: usize| {
                    plain(
                        &name,
                        "batch norm, leaky relu",
                        [maps, side, side],
                        2 * maps,
                    )
                };
                let mut layers = Vec::new();
                for i in 0..c.layers {
                    let (maps, side) = (k * (i + 1), sizes[1 + 2 * i]);
                    let inputs = if i == 0 { c.channels } else { k * i };
                    let kind = if c.batch_norm {
                        "conv 2x2"
                    } else {
                        "conv 2x2, leaky relu"
                    };
                    layers.push(conv(
                        &format!("blocks.{i}.conv"),
                        kind,
                        [maps, side],
                        inputs,
                        4,
                    ));
                    if c.batch_norm {
                        layers.push(norm(format!("blocks.{i}.norm"), maps, side));
                    }
                    let pooled = sizes[2 + 2 * i];
                    let kind = format!("fmp {side} -> {pooled}");
                    layers.push(plain(
                        &format!("blocks.{i}.pool"),
                        &kind,
                        [maps, pooled, pooled],
                        0,
                    ));
                }
                let head = k * (c.layers + 1);
                let kind = if c.batch_norm {
                    "conv 2x2"
                } else {
                    "conv 2x2, leaky relu"
                };
                layers.push(conv("head", kind, [head, 1], k * c.layers, 4));
                if c.batch_norm {
                    layers.push(norm("head_norm".into(), head, 1));
                }
                layers.push(conv("classifier", "conv 1x1", [c.num_classes, 1], head, 1));
                layers
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::*;

    use crate::{FmpNetConfig, LeNet5ClassicConfig, LeNet5ModernConfig, NetworkConfig};

    fn params(config: &NetworkConfig) -> usize {
        config.layers().iter().map(|l| l.params).sum()
    }

    #[test]
    fn parameters_add_up_to_burns_count_of_the_built_network() {
        let device = Device::flex();
        let fmp = |batch_norm, channels, filters| {
            NetworkConfig::FmpNet(FmpNetConfig {
                batch_norm,
                channels,
                filters,
                ..FmpNetConfig::default()
            })
        };
        for config in [
            NetworkConfig::LeNet5Modern(LeNet5ModernConfig::new()),
            NetworkConfig::LeNet5Classic(LeNet5ClassicConfig::new()),
            fmp(true, 1, 32),
            fmp(false, 3, 8),
        ] {
            // Burn also counts batch norm's running mean and variance: two per channel.
            let running: usize = config
                .layers()
                .iter()
                .filter(|l| l.kind.starts_with("batch norm"))
                .map(|l| 2 * l.output[0])
                .sum();
            let burn = config.init(&device).num_params();
            assert_eq!(params(&config) + running, burn, "{config:?}");
        }
    }

    #[test]
    fn the_tables_match_the_counts_worked_out_by_hand() {
        let modern = NetworkConfig::LeNet5Modern(LeNet5ModernConfig::new());
        let layers = modern.layers();
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2"]);
        // 20*25+20, 50*20*25+50, 2450*500+500, 500*10+10.
        let counts: Vec<usize> = layers.iter().map(|l| l.params).collect();
        assert_eq!(counts, [520, 0, 25_050, 0, 1_225_500, 5_010]);
        assert_eq!(params(&modern), 1_256_080);
        assert_eq!(layers[3].output, [50, 7, 7]);
        // LeCun's table: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164, output 850.
        let classic = NetworkConfig::LeNet5Classic(LeNet5ClassicConfig::new()).layers();
        let counts: Vec<usize> = classic.iter().map(|l| l.params).collect();
        assert_eq!(counts, [156, 12, 1_516, 32, 48_120, 10_164, 850]);
        assert_eq!(classic[2].mult_adds, 150_000);
        // Graham's MNIST net: 462,026 convolution parameters, pooled 35 -> 25 first.
        let fmp = NetworkConfig::FmpNet(FmpNetConfig::default()).layers();
        let conv: usize = fmp
            .iter()
            .filter(|l| l.kind.starts_with("conv"))
            .map(|l| l.params)
            .sum();
        assert_eq!(conv, 462_026);
        assert_eq!(fmp[2].name, "blocks.0.pool");
        assert_eq!(
            (fmp[2].kind.as_str(), fmp[2].output),
            ("fmp 35 -> 25", [32, 25, 25])
        );
        assert_eq!(fmp.last().unwrap().output, [10, 1, 1]);
    }
}
