//! `train bench`: times training steps of a config's model on each backend, on real batches.

use std::time::Instant;

use burn::{
    data::{dataloader::batcher::Batcher, dataset::Dataset},
    train::TrainStep,
};
use data::{ImageBatcher, ImageDataset, Splits};
use serde::Serialize;

use crate::{RunConfig, device, device::BackendName};

/// Timing of one backend.
#[derive(Debug, Serialize)]
pub struct BackendTiming {
    /// Backend name.
    pub backend: String,
    /// Device description, or why the backend is unavailable.
    pub device: String,
    /// Milliseconds of each timed step (forward, loss, backward, optimiser step, synced).
    pub step_ms: Vec<f64>,
    /// Median of `step_ms`.
    pub median_ms: f64,
    /// Minimum of `step_ms`.
    pub min_ms: f64,
    /// Training images per second at the median.
    pub images_per_second: f64,
    /// Estimated seconds for one epoch over the training split at the median.
    pub epoch_seconds: f64,
}

/// Times `steps` training steps after `warmup` untimed ones, at the config's batch size, for
/// each backend in turn. An unavailable backend is reported and skipped.
pub fn run(
    config: &RunConfig,
    backends: &[BackendName],
    warmup: usize,
    steps: usize,
) -> Result<Vec<BackendTiming>, String> {
    let kind = config.dataset_kind();
    let folder = data::locate(kind, config.data_dir.as_deref(), true).map_err(|e| e.to_string())?;
    let splits = Splits::load(kind, &folder).map_err(|e| e.to_string())?;
    let train_set = ImageDataset::new(splits.train_images, splits.train_labels);
    let network = config.network(kind.classes());
    let mut results = Vec::new();
    for &backend in backends {
        let device = match device::init(backend) {
            Ok(device) => device,
            Err(reason) => {
                println!("{backend:>8}: unavailable: {reason}");
                continue;
            }
        };
        device.seed(config.seed);
        let mut model = network.init(&device.clone().autodiff());
        let batcher = ImageBatcher::new(kind, train_set.image_shape(), model.input_size())?;
        let mut optimizer = config.optimizer();
        let batch_size = config.batch_size.min(train_set.len());
        let mut times = Vec::with_capacity(steps);
        for step in 0..warmup + steps {
            let start = (step * batch_size) % (train_set.len() - batch_size + 1);
            let items = train_set
                .get_many((start..start + batch_size).collect())
                .expect("indices are in range");
            let batch = batcher.batch(items, &device.clone().autodiff());
            let began = Instant::now();
            let output = TrainStep::step(&model, batch);
            model = model.optimize(
                &mut optimizer,
                config.optimizer.learning_rate().into(),
                output.grads,
            );
            device
                .sync()
                .map_err(|e| format!("{backend}: device sync failed: {e:?}"))?;
            if step >= warmup {
                times.push(began.elapsed().as_secs_f64() * 1e3);
            }
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let timing = BackendTiming {
            backend: backend.to_string(),
            device: device::describe(backend, &device),
            median_ms: median,
            min_ms: sorted[0],
            images_per_second: batch_size as f64 / (median / 1e3),
            epoch_seconds: train_set.len().div_ceil(batch_size) as f64 * median / 1e3,
            step_ms: times,
        };
        println!(
            "{:>8}: median {:8.1} ms  min {:8.1} ms  {:8.0} img/s  ~{:7.1} s/epoch  ({})",
            timing.backend,
            timing.median_ms,
            timing.min_ms,
            timing.images_per_second,
            timing.epoch_seconds,
            timing.device
        );
        results.push(timing);
    }
    Ok(results)
}
