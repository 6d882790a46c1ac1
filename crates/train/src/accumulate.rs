//! Gradient accumulation: a batch run as micro-batches whose gradients are summed before one
//! optimiser step, so that a batch too big for a device trains with the same meaning (the same
//! learning rate, the same mean gradient; only batch norm sees the micro-batches).

use std::{fmt, str::FromStr};

use anyhow::{Result, bail};
use burn::{data::dataloader::batcher::Batcher, prelude::*};
use data::{Augmentation, ImageBatcher, ImageItem};
use models::{ImageBatch, NetworkConfig};
use serde::{Deserialize, Serialize};

use crate::device::{self, MemoryLimits};

/// `accumulate` in a config or `--accumulate`: micro-batches per batch, or `auto` for the
/// fewest that fit the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "Written", into = "Written")]
pub enum Accumulate {
    /// This many micro-batches (1: none).
    Fixed(usize),
    /// The fewest micro-batches whose activations fit the device's limits.
    Auto,
}

impl Default for Accumulate {
    fn default() -> Self {
        Self::Fixed(1)
    }
}

impl FromStr for Accumulate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            number => match number.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::Fixed(n)),
                _ => Err(format!(
                    "expected a number of micro-batches (1 or more) or \"auto\", got \"{text}\""
                )),
            },
        }
    }
}

impl fmt::Display for Accumulate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto => f.write_str("auto"),
        }
    }
}

/// How `accumulate` is written in TOML: a number or a word.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
enum Written {
    Number(i64),
    Word(String),
}

impl TryFrom<Written> for Accumulate {
    type Error = String;

    fn try_from(written: Written) -> Result<Self, String> {
        match written {
            Written::Number(n) => n.to_string().parse(),
            Written::Word(word) => word.parse(),
        }
    }
}

impl From<Accumulate> for Written {
    fn from(accumulate: Accumulate) -> Self {
        match accumulate {
            Accumulate::Fixed(n) => Written::Number(n as i64),
            Accumulate::Auto => Written::Word("auto".into()),
        }
    }
}

/// Bytes of f32 activations one training image needs on a device: the largest single tensor
/// (a layer's output) and all of a step's (the forward pass keeps about three tensors per layer
/// for the backward pass, and the backward pass holds gradients of the same sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageFootprint {
    /// The largest layer output of one image.
    pub largest_tensor: u64,
    /// All tensors of one image's training step.
    pub step: u64,
}

/// Tensors of a layer's output size alive at once in a training step, per layer.
const TENSORS_PER_LAYER: u64 = 6;

impl ImageFootprint {
    /// The footprint of `network`, from its layer table.
    pub fn of(network: &NetworkConfig) -> Self {
        let sizes: Vec<u64> = network
            .layers()
            .iter()
            .map(|layer| layer.output.iter().product::<usize>() as u64 * 4)
            .collect();
        Self {
            largest_tensor: sizes.iter().copied().max().unwrap_or(0),
            step: sizes.iter().sum::<u64>() * TENSORS_PER_LAYER,
        }
    }

    /// Whether `images` per micro-batch fit within `limits`.
    fn fits(&self, images: usize, limits: MemoryLimits) -> bool {
        let images = images as u64;
        images * self.largest_tensor <= limits.largest_buffer
            && limits.total.is_none_or(|total| images * self.step <= total)
    }
}

/// The fewest micro-batches, a divisor of `batch_size` not below `at_least`, whose size fits
/// `limits`; `None` when not even one image does.
pub fn fewest_fitting(
    batch_size: usize,
    at_least: usize,
    footprint: ImageFootprint,
    limits: MemoryLimits,
) -> Option<usize> {
    (at_least.max(1)..=batch_size)
        .filter(|&n| batch_size.is_multiple_of(n))
        .find(|&n| footprint.fits(batch_size / n, limits))
}

/// `limits` in words, for messages.
pub fn describe_limits(limits: MemoryLimits) -> String {
    let mib = |bytes: u64| bytes as f64 / (1024.0 * 1024.0);
    match limits.total {
        Some(total) => format!(
            "largest buffer {:.0} MiB, memory {:.0} MiB",
            mib(limits.largest_buffer),
            mib(total)
        ),
        None => format!("largest buffer {:.0} MiB", mib(limits.largest_buffer)),
    }
}

/// Micro-batches per batch for `accumulate` on `device`: the number given, or for `auto` the
/// fewest that fit the device (1 on the CPU backends, which allocate from system memory).
pub fn micro_batches(
    accumulate: Accumulate,
    batch_size: usize,
    network: &NetworkConfig,
    device: &Device,
    device_name: &str,
) -> Result<usize> {
    if let Accumulate::Fixed(n) = accumulate {
        return Ok(n);
    }
    let Some(limits) = device::memory_limits(device) else {
        return Ok(1);
    };
    let footprint = ImageFootprint::of(network);
    match fewest_fitting(batch_size, 1, footprint, limits) {
        Some(n) => Ok(n),
        None => bail!(
            "accumulate = \"auto\": not even one image of {} fits {device_name} ({}): one \
             image's largest activation takes {:.0} MiB; use a smaller network or a device with \
             more memory",
            network.name(),
            describe_limits(limits),
            footprint.largest_tensor as f64 / (1024.0 * 1024.0)
        ),
    }
}

/// A warning, before training, that micro-batches of `batch_size / micro_batches` images will
/// likely not fit `device` by the footprint estimate, naming the `--accumulate` that would; a
/// failed allocation would otherwise show only after the first step's kernels are compiled.
pub fn warn_if_too_big(
    device: &Device,
    device_name: &str,
    network: &NetworkConfig,
    [batch_size, micro_batches]: [usize; 2],
) -> Option<String> {
    let limits = device::memory_limits(device)?;
    let footprint = ImageFootprint::of(network);
    if footprint.fits(batch_size / micro_batches, limits) {
        return None;
    }
    let advice = match fewest_fitting(batch_size, micro_batches + 1, footprint, limits) {
        Some(n) => format!("--accumulate {n} (or auto) would fit"),
        None => "no divisor of the batch fits: pass a smaller --batch-size".into(),
    };
    Some(format!(
        "warning: {} images at a time likely exceed {device_name} ({}): the largest activation \
         of one image takes {:.1} MiB; {advice}",
        batch_size / micro_batches,
        describe_limits(limits),
        footprint.largest_tensor as f64 / (1024.0 * 1024.0)
    ))
}

/// The error for a batch that did not fit `device`: its limits and the fewest micro-batches that
/// would fit by the footprint estimate (more than `micro_batches`, which did not).
pub fn does_not_fit(
    device: &Device,
    device_name: &str,
    network: &NetworkConfig,
    [batch_size, micro_batches]: [usize; 2],
    details: &str,
) -> anyhow::Error {
    let running = if micro_batches > 1 {
        format!("micro-batches of {}", batch_size / micro_batches)
    } else {
        format!("batch_size {batch_size}")
    };
    let Some(limits) = device::memory_limits(device) else {
        return anyhow::anyhow!(
            "{device_name} ran out of memory at {running}: try a smaller --batch-size or \
             --accumulate. Details: {details}"
        );
    };
    let advice = match fewest_fitting(
        batch_size,
        micro_batches + 1,
        ImageFootprint::of(network),
        limits,
    ) {
        Some(n) => format!(
            "--accumulate {n} (micro-batches of {}) would fit; --accumulate auto picks it",
            batch_size / n
        ),
        None => format!("no divisor of batch_size {batch_size} fits: pass a smaller --batch-size"),
    };
    anyhow::anyhow!(
        "{device_name} ({}) could not allocate a buffer at {running}: {advice}. Details: \
         {details}",
        describe_limits(limits)
    )
}

/// The batcher of a run: batches of `batch_size / micro_batches` images, each marked, when
/// there are several per step, with its share of the `batch_size` images of a step.
#[derive(Clone)]
pub struct MicroBatcher {
    batcher: ImageBatcher,
    batch_size: usize,
    micro_batches: usize,
}

impl MicroBatcher {
    /// `batcher`'s images in `micro_batches` batches per step of `batch_size` images.
    pub fn new(batcher: ImageBatcher, batch_size: usize, micro_batches: usize) -> Self {
        Self {
            batcher,
            batch_size,
            micro_batches,
        }
    }

    /// Images per (micro-)batch.
    pub fn images(&self) -> usize {
        self.batch_size / self.micro_batches
    }

    /// The same batching of distorted images (see [`ImageBatcher::with_augmentation`]).
    pub fn with_augmentation(self, augmentation: &Augmentation, seed: u64) -> Self {
        Self {
            batcher: self.batcher.with_augmentation(augmentation, seed),
            ..self
        }
    }
}

impl Batcher<ImageItem, ImageBatch> for MicroBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ImageBatch {
        crate::panics::injected_fault();
        let share = match self.micro_batches {
            1 => 1.0,
            _ => items.len() as f32 / self.batch_size as f32,
        };
        let mut batch: ImageBatch = self.batcher.batch(items, device);
        batch.share = share;
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_a_number_or_auto_and_anything_else_named() {
        #[derive(Deserialize)]
        struct Table {
            accumulate: Accumulate,
        }
        let parse = |text: &str| toml::from_str::<Table>(text).map(|t| t.accumulate);
        assert_eq!(parse("accumulate = 4").unwrap(), Accumulate::Fixed(4));
        assert_eq!(parse("accumulate = \"auto\"").unwrap(), Accumulate::Auto);
        for bad in ["accumulate = 0", "accumulate = -2", "accumulate = \"most\""] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("accumulate") && err.contains("\"auto\""),
                "{err}"
            );
        }
        assert_eq!("auto".parse::<Accumulate>(), Ok(Accumulate::Auto));
        assert_eq!("3".parse::<Accumulate>(), Ok(Accumulate::Fixed(3)));
        assert!("0".parse::<Accumulate>().is_err());
    }

    #[test]
    fn fewest_fitting_divides_the_batch_and_respects_both_limits() {
        let footprint = ImageFootprint {
            largest_tensor: 10,
            step: 100,
        };
        let buffer_only = MemoryLimits {
            largest_buffer: 125,
            total: None,
        };
        // 50 images: 500 bytes; 12 fit one buffer; the smallest divisor of 50 giving <= 12 is 5.
        assert_eq!(fewest_fitting(50, 1, footprint, buffer_only), Some(5));
        assert_eq!(fewest_fitting(50, 6, footprint, buffer_only), Some(10));
        let with_memory = MemoryLimits {
            total: Some(300),
            ..buffer_only
        };
        // Three images' steps fit 300 bytes: 50 / 25 = 2 images.
        assert_eq!(fewest_fitting(50, 1, footprint, with_memory), Some(25));
        let tiny = MemoryLimits {
            largest_buffer: 5,
            total: None,
        };
        assert_eq!(fewest_fitting(50, 1, footprint, tiny), None);
    }
}
