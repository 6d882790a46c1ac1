//! `train loader-bench`: throughput of the training data loader alone.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;

use crate::{Overrides, RunConfig, accumulate::MicroBatcher, files::write_json, plan::loader};

/// Time the training data loader (augmentation, padding, batching) in images per second.
#[derive(clap::Args)]
pub struct LoaderBenchArgs {
    /// The config whose dataset, augmentation, batch size and workers are timed.
    config: PathBuf,
    /// Batches to read.
    #[arg(long, default_value_t = 50)]
    batches: usize,
    /// Also write the timing as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Loader worker threads, replacing `workers`.
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    overrides: Overrides,
}

/// Throughput of the training data loader: shuffling, augmentation, padding, batching.
#[derive(Debug, Serialize)]
pub struct LoaderTiming {
    /// Batches read.
    pub batches: usize,
    /// Images read.
    pub images: usize,
    /// Loader worker threads.
    pub workers: usize,
    /// Whether any augmentation was on.
    pub augmented: bool,
    /// Seconds for all batches.
    pub seconds: f64,
    /// Images per second.
    pub images_per_second: f64,
}

/// Reads `--batches` training batches through the run's loader (as `train` builds it, with the
/// config's augmentation and workers) into CPU (flex) tensors, and times them.
pub fn run(args: LoaderBenchArgs) -> Result<()> {
    crate::files::check_output_file("--json", args.json.as_deref())?;
    let mut config = RunConfig::load(&args.config, &args.overrides)?;
    config.workers = args.workers.unwrap_or(config.workers);
    let (train_set, batcher) = super::training_set(&config)?;
    let batcher = MicroBatcher::new(batcher, config.batch_size, 1);
    let loader = loader(&config, batcher, train_set, true, &Device::flex());
    let began = Instant::now();
    let mut images = 0;
    let mut read = 0;
    while read < args.batches {
        let mut any = false;
        for batch in loader.iter() {
            images += batch
                .map_err(|e| anyhow::anyhow!("loader: {e}"))?
                .targets
                .dims()[0];
            read += 1;
            any = true;
            if read == args.batches {
                break;
            }
        }
        if !any {
            bail!("the training set yields no batches");
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    let timing = LoaderTiming {
        batches: read,
        images,
        workers: config.workers,
        augmented: !config.augment.is_off(),
        seconds,
        images_per_second: images as f64 / seconds,
    };
    say!(
        "loader: {} batches, {} images in {:.2} s: {:.0} images/s ({} workers, augmentation {})",
        timing.batches,
        timing.images,
        timing.seconds,
        timing.images_per_second,
        timing.workers,
        if timing.augmented { "on" } else { "off" }
    );
    write_json(args.json.as_deref(), &timing)
}
