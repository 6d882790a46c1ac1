//! `train summary`: the layer table of a config's network (PyTorch's `print(model)` and
//! torchinfo's summary), and for an FMP net the sizes from the image to the 1x1 output.

use std::path::PathBuf;

use anyhow::Result;
use data::ImageBatcher;
use models::{Layer, NetworkConfig, fmp_sizes};

use crate::{Overrides, RunConfig, output::grouped};

/// Print every layer of the config's network (state-dict name, output shape, parameters,
/// multiply-adds), the totals, and for FMP nets the size chain, padding and pooling ratios.
#[derive(clap::Args)]
pub struct SummaryArgs {
    /// The run config whose network is described, e.g. configs/fmp_mnist.toml.
    config: PathBuf,
}

/// Runs `train summary`.
pub fn run(args: SummaryArgs) -> Result<()> {
    let config = RunConfig::load(&args.config, &Overrides::default())?;
    say!("{}", describe(&config)?.trim_end());
    Ok(())
}

/// The whole summary as text.
fn describe(config: &RunConfig) -> Result<String> {
    let network = config.network();
    let kind = config.dataset_kind();
    let (side, input) = (kind.image_side(), network.input_size());
    // The same check training makes: the images must fit the network's input.
    ImageBatcher::new(kind, (kind.channels(), side, side), input)?;
    let before = (input - side) / 2;
    let mut out = format!(
        "{} for {} ({} x {side} x {side} images",
        network.name(),
        kind.name(),
        kind.channels()
    );
    out += &match input - side {
        0 => "; no padding)\n\n".to_string(),
        pad => format!(
            ", zero-padded to {input} x {input}: {before} pixels before, {} after)\n\n",
            pad - before
        ),
    };
    out += &table(&network.layers());
    if let NetworkConfig::FmpNet(fmp) = &network {
        let sizes = fmp_sizes(fmp.alpha, fmp.layers);
        let chain: Vec<String> = sizes[1..].iter().map(usize::to_string).collect();
        out += &format!(
            "\nsizes, computed backwards from the 1x1 output: {side} -> padded to {input} -> {}\n",
            chain.join(" -> ")
        );
        let ratios: Vec<String> = (0..fmp.layers)
            .map(|i| {
                let (from, to) = (sizes[1 + 2 * i], sizes[2 + 2 * i]);
                format!("{from}/{to} = {:.3}", from as f64 / to as f64)
            })
            .collect();
        out += &format!(
            "pooling ratio per FMP layer (alpha = {:.4}): {}\n",
            fmp.alpha,
            ratios.join(", ")
        );
    }
    Ok(out)
}

/// The layer table with its totals.
fn table(layers: &[Layer]) -> String {
    let mut out = format!(
        "{:<18} {:<28} {:>16} {:>12} {:>16}\n",
        "layer", "kind", "output", "params", "mult-adds"
    );
    for l in layers {
        let [c, h, w] = l.output;
        out += &format!(
            "{:<18} {:<28} {:>16} {:>12} {:>16}\n",
            l.name,
            l.kind,
            format!("{c} x {h} x {w}"),
            grouped(l.params as u64),
            grouped(l.mult_adds)
        );
    }
    let params: usize = layers.iter().map(|l| l.params).sum();
    let mult_adds: u64 = layers.iter().map(|l| l.mult_adds).sum();
    out += &format!(
        "{:<18} {:<28} {:>16} {:>12} {:>16}\n",
        "total",
        "",
        "",
        grouped(params as u64),
        grouped(mult_adds)
    );
    out += &format!(
        "one image: {:.3} GFLOP forward, about {:.3} GFLOP per training image (3 x forward)\n",
        2.0 * mult_adds as f64 / 1e9,
        6.0 * mult_adds as f64 / 1e9
    );
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn shipped(name: &str) -> RunConfig {
        let path = Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .join("../../configs")
        .join(name);
        RunConfig::load(&path, &Overrides::default()).unwrap()
    }

    #[test]
    fn the_fmp_summary_shows_the_chain_padding_and_ratios() {
        let text = describe(&shipped("fmp_mnist.toml")).unwrap();
        for expected in [
            "fmp for mnist (1 x 28 x 28 images, zero-padded to 36 x 36: 4 pixels before, 4 after)",
            "28 -> padded to 36 -> 35 -> 25 -> 24 -> 17 -> 16 -> 11 -> 10 -> 7 -> 6 -> 4 -> 3 -> 2 -> 1",
            "35/25 = 1.400",
            "blocks.0.pool",
            "fmp 35 -> 25",
            "classifier",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        // The CIFAR net: 94 from 32 leaves 62 pixels, 31 on each side; 74.6 M parameters in
        // its convolutions plus batch norm's.
        let text = describe(&shipped("fmp_cifar.toml")).unwrap();
        assert!(text.contains("31 pixels before, 31 after"), "{text}");
        assert!(text.contains("94 -> 93 -> 74"), "{text}");
    }

    #[test]
    fn the_lenet_summary_totals_its_parameters() {
        let text = describe(&shipped("lenet_mnist.toml")).unwrap();
        assert!(text.contains("no padding"), "{text}");
        let total = text.lines().find(|l| l.starts_with("total")).unwrap();
        assert!(
            total.contains("1,256,080") && total.contains("6,522,000"),
            "{total}"
        );
        let text = describe(&shipped("lenet_classic_mnist.toml")).unwrap();
        assert!(text.contains("2 pixels before, 2 after"), "{text}");
        assert!(text.contains("60,850"), "{text}");
    }

    #[test]
    fn a_network_smaller_than_the_images_is_a_named_error() {
        let mut config = shipped("fmp_mnist.toml");
        if let crate::config::ModelSpec::Fmp(fmp) = &mut config.model {
            fmp.layers = 1;
        }
        let err = format!("{:#}", describe(&config).unwrap_err());
        assert!(
            err.contains("28x28") && err.contains("input is 4x4"),
            "{err}"
        );
    }
}
