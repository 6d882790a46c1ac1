//! The plan of a run: every decision that follows from the config and the devices, made once.
//! How a batch is split between the devices and into micro-batches, how many optimiser steps an
//! epoch takes, and how the start-up line describes it; `train` and `bench` both run by it.

use std::sync::Arc;

use anyhow::Result;
use burn::{
    data::dataloader::{DataLoader, DataLoaderBuilder},
    prelude::*,
};
use data::{ImageBatcher, ImageDataset};
use models::{ImageBatch, NetworkConfig};

use crate::{RunConfig, accumulate, accumulate::MicroBatcher, config::split_batch, device};

/// A batch on devices: each device an equal share of every batch, in micro-batches where the
/// config's `accumulate` asks for them or where `auto` finds a share too big for the device.
pub struct RunPlan {
    /// One model replica on each; the first sums the gradients and steps the optimiser.
    pub devices: Vec<Device>,
    /// The devices as `train devices` names them.
    pub device_names: Vec<String>,
    /// Images per optimiser step.
    pub batch_size: usize,
    /// Images each device takes from a batch.
    pub per_device: usize,
    /// Micro-batches per device and step (1: none).
    pub micro_batches: usize,
}

impl RunPlan {
    /// `config`'s batch on `devices`, at most `images` images (`None`: no limit; `bench` passes
    /// the training split's size, since it times whole batches of it). The first device decides
    /// `accumulate = "auto"`.
    pub fn new(config: &RunConfig, devices: Vec<Device>, images: Option<usize>) -> Result<Self> {
        let batch_size = config.batch_size.min(images.unwrap_or(usize::MAX));
        let device_names: Vec<String> = devices
            .iter()
            .map(|d| device::describe(config.backend, d))
            .collect();
        // The training split may be smaller than a batch (`bench` on a sample).
        let split = |micro_batches| {
            split_batch(batch_size, devices.len(), micro_batches).map_err(|e| {
                match batch_size < config.batch_size {
                    true => anyhow::anyhow!(
                        "{e} (the batch is the training split's {batch_size} images)"
                    ),
                    false => anyhow::Error::msg(e),
                }
            })
        };
        let per_device = split(1)?;
        let micro_batches = accumulate::micro_batches(
            config.accumulate,
            per_device,
            &config.network(),
            &devices[0],
            &device_names[0],
        )?;
        split(micro_batches)?;
        Ok(Self {
            devices,
            device_names,
            batch_size,
            per_device,
            micro_batches,
        })
    }

    /// The first device: it evaluates, and it steps the optimiser.
    pub fn device(&self) -> &Device {
        &self.devices[0]
    }

    /// Seeds the first device, which draws the initial weights, and each worker's device (its
    /// dropout masks are drawn on the worker) with `seed` plus its position, so that a seed
    /// repeats a run on workers too.
    pub fn seed(&self, seed: u64) {
        self.device().seed(seed);
        for (position, device) in self.devices.iter().enumerate().skip(1) {
            if crate::remote::description(device).is_some() {
                device.seed(seed + position as u64);
            }
        }
    }

    /// The first device's name.
    pub fn device_name(&self) -> &str {
        &self.device_names[0]
    }

    /// Images per micro-batch on one device.
    pub fn micro_batch(&self) -> usize {
        self.per_device / self.micro_batches
    }

    /// Optimiser steps in an epoch of `train_images`: Burn gives each device a slice of the
    /// training set (the last one the remainder), steps all devices at once and steps the
    /// optimiser after `micro_batches` of them.
    pub fn steps_per_epoch(&self, train_images: usize) -> usize {
        let n = self.devices.len();
        let largest_slice = train_images - (n - 1) * (train_images / n);
        largest_slice
            .div_ceil(self.micro_batch())
            .div_ceil(self.micro_batches)
    }

    /// `batch 64 split between 2 devices as 2 micro-batches of 16 each`, for the start-up line.
    pub fn batching(&self) -> String {
        let several = self.devices.len() > 1;
        let mut text = format!("batch {}", self.batch_size);
        if several {
            text += &format!(" split between {} devices", self.devices.len());
        }
        if self.micro_batches > 1 {
            text += &format!(
                " as {} micro-batches of {}",
                self.micro_batches,
                self.micro_batch()
            );
            if several {
                text += " each";
            }
        }
        text
    }

    /// The devices for the start-up line: one by name, several counted.
    pub fn on(&self) -> String {
        let first = self.device_name();
        match self.devices.len() {
            1 => first.to_string(),
            n if self.device_names.iter().all(|name| name == first) => {
                format!("{n} devices: {n} x {first}")
            }
            n => format!("{n} devices: {}", self.device_names.join("; ")),
        }
    }

    /// What to say before training: micro-batches likely too big for the device, and a software
    /// renderer taken for a GPU.
    pub fn warnings(&self, network: &NetworkConfig) -> Vec<String> {
        let name = self.device_name();
        let sizes = [self.per_device, self.micro_batches];
        let mut warnings: Vec<String> =
            accumulate::warn_if_too_big(self.device(), name, network, sizes)
                .into_iter()
                .collect();
        if crate::remote::description(self.device()).is_some() {
            warnings.push(format!(
                "warning: the first device, {name}, steps the optimiser and evaluates: every \
                 device's gradients travel to it over the network at every step. List a device \
                 of this machine first (e.g. --devices 0,{})",
                name.trim_start_matches("worker ")
            ));
        }
        if name.contains("llvmpipe") {
            warnings.push(format!(
                "note: the wgpu adapter is Mesa's software renderer ({name}): no GPU was found, \
                 and --backend flex is much faster on this machine"
            ));
        }
        warnings
    }

    /// The error for a batch that did not fit the device (`details`: the backend's words), with
    /// the `--accumulate` that would fit.
    pub fn does_not_fit(&self, network: &NetworkConfig, details: &str) -> anyhow::Error {
        let sizes = [self.per_device, self.micro_batches];
        accumulate::does_not_fit(self.device(), self.device_name(), network, sizes, details)
    }

    /// Training batches: one per device and micro-batch.
    pub fn train_batcher(&self, batcher: ImageBatcher) -> MicroBatcher {
        let per_step = self.devices.len() * self.micro_batches;
        MicroBatcher::new(batcher, self.batch_size, per_step)
    }

    /// Evaluation batches: whole micro-batches, on the first device.
    pub fn eval_batcher(&self, batcher: ImageBatcher) -> MicroBatcher {
        MicroBatcher::new(batcher, self.batch_size, self.micro_batches)
    }
}

/// A data loader over `dataset` making batches on `device` with `batcher`, at the batcher's
/// batch size and the config's worker count; for training, shuffled and distorted by
/// `[augment]`, both seeded by the run's seed.
pub fn loader(
    config: &RunConfig,
    batcher: MicroBatcher,
    dataset: ImageDataset,
    train: bool,
    device: &Device,
) -> Arc<dyn DataLoader<ImageBatch>> {
    let batch_size = batcher.images();
    let builder = if train {
        DataLoaderBuilder::new(batcher.with_augmentation(&config.augment, config.seed))
            .shuffle(config.seed)
    } else {
        DataLoaderBuilder::new(batcher)
    };
    builder
        .batch_size(batch_size)
        .num_workers(config.workers)
        .set_device(device.clone())
        .build(dataset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Overrides, accumulate::Accumulate};

    /// The quick start's config at `batch_size` and `accumulate`, on `devices` replicas on the
    /// CPU, its batch at most `images`.
    fn plan(
        batch_size: usize,
        accumulate: usize,
        devices: usize,
        images: Option<usize>,
    ) -> Result<RunPlan> {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/quickstart.toml");
        let overrides = Overrides {
            batch_size: Some(batch_size),
            accumulate: Some(Accumulate::Fixed(accumulate)),
            ..Overrides::default()
        };
        let config = RunConfig::load(&path, &overrides)?;
        RunPlan::new(&config, vec![Device::flex(); devices], images)
    }

    #[test]
    fn a_batch_splits_between_devices_and_micro_batches_and_says_so() {
        let two = plan(64, 2, 2, None).unwrap();
        assert_eq!(
            [two.per_device, two.micro_batches, two.micro_batch()],
            [32, 2, 16]
        );
        assert_eq!(
            two.batching(),
            "batch 64 split between 2 devices as 2 micro-batches of 16 each"
        );
        assert!(two.on().starts_with("2 devices: 2 x "), "{}", two.on());
        // 1,000 images: the larger slice is 500, 32 micro-batches of 16, 16 steps.
        assert_eq!(two.steps_per_epoch(1000), 16);
        let one = plan(64, 2, 1, None).unwrap();
        assert_eq!(one.batching(), "batch 64 as 2 micro-batches of 32");
        assert_eq!(one.steps_per_epoch(1000), 16);
        assert_eq!(one.on(), one.device_name());
    }

    #[test]
    fn a_batch_that_does_not_split_is_named_with_what_to_change() {
        let err = plan(12, 2, 1, Some(9)).err().unwrap().to_string();
        assert!(
            err.contains("batch_size 9 does not split into 2 equal micro-batches")
                && err.ends_with("(the batch is the training split's 9 images)"),
            "{err}"
        );
        let err = plan(12, 2, 5, None).err().unwrap().to_string();
        assert!(
            err.contains("does not split evenly between 5 devices"),
            "{err}"
        );
    }
}
