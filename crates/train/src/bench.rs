//! `train bench`: times training steps of a config's model on each backend, on real batches.

use std::time::Instant;

use burn::{
    data::{dataloader::batcher::Batcher, dataset::Dataset},
    prelude::*,
    tensor::Distribution,
    train::TrainStep,
};
use data::{DatasetKind, ImageBatcher, ImageDataset, Splits};
use models::{FmpNet, Network};
use serde::{Deserialize, Serialize};

use crate::{RunConfig, device, device::BackendName};

/// Timing of one backend (also the format `scripts/torch_reference.py` writes).
#[derive(Debug, Serialize, Deserialize)]
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
    /// Floating-point operations of one training image (3 x the forward pass, see
    /// `NetworkConfig::forward_flops`), in GFLOP.
    pub gflop_per_image: f64,
    /// Achieved GFLOP/s at the median step.
    pub gflop_per_second: f64,
    /// The backend's own ceiling on this device, measured: GFLOP/s of a 2048^3 f32 matrix
    /// product (median of the timed runs). Absent in timings from before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matmul_gflop_per_second: Option<f64>,
    /// `gflop_per_second` as a share of `matmul_gflop_per_second`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matmul_share: Option<f64>,
    /// Most memory the device's allocator held after a training step, in MiB, where the backend
    /// reports it (wgpu; the CPU backends do not). Pools keep freed pages, so this tracks the
    /// step's peak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_memory_mib: Option<f64>,
    /// Median milliseconds of an evaluation pass (forward only, no autodiff) over one batch.
    pub eval_median_ms: f64,
    /// Images per second evaluated, at `eval_median_ms`.
    pub eval_images_per_second: f64,
    /// For FMP nets: median milliseconds of the pooling layers alone, forward and backward, at
    /// the shapes of a training step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling_median_ms: Option<f64>,
    /// `pooling_median_ms` as a share of the median step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling_share: Option<f64>,
}

impl BackendTiming {
    /// One line per figure, as the bench table shows it.
    pub fn print(&self) {
        println!(
            "{:>8}: median {:8.1} ms  min {:8.1} ms  {:8.1} img/s  {:7.1} GFLOP/s  ~{:7.1} s/epoch  ({})",
            self.backend,
            self.median_ms,
            self.min_ms,
            self.images_per_second,
            self.gflop_per_second,
            self.epoch_seconds,
            self.device
        );
        println!(
            "{:>8}  evaluation (forward only): {:.1} ms per batch, {:.1} img/s",
            "", self.eval_median_ms, self.eval_images_per_second
        );
        if let (Some(peak), Some(share)) = (self.matmul_gflop_per_second, self.matmul_share) {
            println!(
                "{:>8}  {:.1}% of the {peak:.1} GFLOP/s a 2048^3 matrix product reaches here",
                "",
                share * 100.0
            );
        }
        if let Some(mib) = self.device_memory_mib {
            println!("{:>8}  device memory held after a step: {mib:.0} MiB", "");
        }
        if let (Some(ms), Some(share)) = (self.pooling_median_ms, self.pooling_share) {
            println!(
                "{:>8}  FMP layers alone (forward + backward): {ms:.1} ms, {:.1}% of a step",
                "",
                share * 100.0
            );
        }
    }

    /// Timings written earlier as JSON by `train bench --json` or `scripts/torch_reference.py`.
    pub fn read_all(path: &std::path::Path) -> Result<Vec<Self>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The config's dataset and its whole training split (located, downloaded if need be, verified).
fn training_set(config: &RunConfig) -> Result<(DatasetKind, ImageDataset), String> {
    let kind = config.dataset_kind();
    let folder = data::locate(kind, config.data_dir.as_deref(), true).map_err(|e| e.to_string())?;
    let splits = Splits::load(kind, &folder).map_err(|e| e.to_string())?;
    Ok((
        kind,
        ImageDataset::new(splits.train_images, splits.train_labels),
    ))
}

/// The median and the minimum of `times`.
fn median_and_min(times: &[f64]) -> (f64, f64) {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() / 2], sorted[0])
}

/// Milliseconds of the pooling layers' forward and backward passes at the network's shapes.
fn time_pooling(
    net: &FmpNet,
    batch_size: usize,
    device: &Device,
    warmup: usize,
    steps: usize,
) -> Result<Vec<f64>, String> {
    let mut times = Vec::with_capacity(steps);
    for step in 0..warmup + steps {
        let inputs: Vec<Tensor<4>> = net
            .pooling_layers()
            .map(|(_, [c, h, w])| {
                Tensor::random([batch_size, c, h, w], Distribution::Default, device).require_grad()
            })
            .collect();
        device
            .sync()
            .map_err(|e| format!("device sync failed: {e:?}"))?;
        let began = Instant::now();
        let loss = net
            .pooling_layers()
            .zip(inputs)
            .map(|((pool, _), x)| pool.forward(x).sum())
            .reduce(|a, b| a + b)
            .expect("an FMP net has pooling layers");
        // The gradients are computed here; they are not needed afterwards.
        let _gradients = loss.backward();
        device
            .sync()
            .map_err(|e| format!("device sync failed: {e:?}"))?;
        if step >= warmup {
            times.push(began.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}

/// Side of the square matrices whose product measures a device's practical peak.
const MATMUL_SIDE: usize = 2048;

/// GFLOP/s of `MATMUL_SIDE`^3 f32 matrix products on `device`: the median of `steps` timed
/// products after `warmup` untimed ones.
fn matmul_gflops(device: &Device, warmup: usize, steps: usize) -> Result<f64, String> {
    let shape = [MATMUL_SIDE, MATMUL_SIDE];
    let a = Tensor::<2>::random(shape, Distribution::Default, device);
    let b = Tensor::<2>::random(shape, Distribution::Default, device);
    let mut times = Vec::with_capacity(steps);
    for step in 0..warmup + steps.max(1) {
        device
            .sync()
            .map_err(|e| format!("device sync failed: {e:?}"))?;
        let began = Instant::now();
        let product = a.clone().matmul(b.clone());
        device
            .sync()
            .map_err(|e| format!("device sync failed: {e:?}"))?;
        drop(product);
        if step >= warmup {
            times.push(began.elapsed().as_secs_f64());
        }
    }
    let flops = 2.0 * (MATMUL_SIDE as f64).powi(3);
    Ok(flops / median_and_min(&times).0 / 1e9)
}

/// Times `steps` training steps after `warmup` untimed ones, at the config's batch size, for
/// each backend in turn. An unavailable backend is reported and skipped.
pub fn run(
    config: &RunConfig,
    backends: &[BackendName],
    warmup: usize,
    steps: usize,
) -> Result<Vec<BackendTiming>, String> {
    let (kind, train_set) = training_set(config)?;
    let network = config.network();
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
        let mut reserved = None::<u64>;
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
            if let Some(usage) = device.memory_pool_usage() {
                reserved = Some(reserved.unwrap_or(0).max(usage.bytes_reserved));
            }
        }
        let (median, min) = median_and_min(&times);
        // Evaluation: the trained model on the plain device, as the test pass runs it.
        let evaluated = model.valid().to_device(&device);
        let mut eval_times = Vec::with_capacity(steps);
        for step in 0..warmup + steps {
            let items = train_set
                .get_many((0..batch_size).collect())
                .expect("indices are in range");
            let batch = batcher.batch(items, &device);
            let began = Instant::now();
            let logits = evaluated.forward(batch.images);
            drop(logits);
            device
                .sync()
                .map_err(|e| format!("{backend}: device sync failed: {e:?}"))?;
            if step >= warmup {
                eval_times.push(began.elapsed().as_secs_f64() * 1e3);
            }
        }
        let eval_median = median_and_min(&eval_times).0;
        let pooling = match &model {
            Network::FmpNet(net) => {
                let times =
                    time_pooling(net, batch_size, &device.clone().autodiff(), warmup, steps)
                        .map_err(|e| format!("{backend}: {e}"))?;
                Some(median_and_min(&times).0)
            }
            _ => None,
        };
        // Last: its large buffers must not disturb the timings above.
        let peak = matmul_gflops(&device, warmup, steps).map_err(|e| format!("{backend}: {e}"))?;
        let gflop_per_image = 3.0 * network.forward_flops() as f64 / 1e9;
        let gflop_per_second = gflop_per_image * batch_size as f64 / (median / 1e3);
        let timing = BackendTiming {
            gflop_per_image,
            gflop_per_second,
            matmul_gflop_per_second: Some(peak),
            matmul_share: Some(gflop_per_second / peak),
            backend: backend.to_string(),
            device: device::describe(backend, &device),
            median_ms: median,
            min_ms: min,
            pooling_median_ms: pooling,
            device_memory_mib: reserved.map(|bytes| bytes as f64 / (1024.0 * 1024.0)),
            eval_median_ms: eval_median,
            eval_images_per_second: batch_size as f64 / (eval_median / 1e3),
            pooling_share: pooling.map(|p| p / median),
            images_per_second: batch_size as f64 / (median / 1e3),
            epoch_seconds: train_set.len().div_ceil(batch_size) as f64 * median / 1e3,
            step_ms: times,
        };
        timing.print();
        results.push(timing);
    }
    Ok(results)
}

/// Training images per second by backend, as an SVG bar chart with the values written on the
/// bars.
pub fn chart(title: &str, timings: &[BackendTiming]) -> Result<String, String> {
    use plotters::prelude::*;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let top = timings
            .iter()
            .map(|t| t.images_per_second)
            .fold(1.0, f64::max)
            * 1.15;
        let names: Vec<String> = timings.iter().map(|t| t.backend.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..names.len() as f64 - 0.5, 0.0..top)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("images / s")
            .x_labels(names.len() + 1)
            .x_label_formatter(&|x| {
                // Only the bar centres (whole numbers) carry a backend's name.
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(timings.iter().enumerate().map(|(i, t)| {
                let x = i as f64;
                Rectangle::new(
                    [(x - 0.35, 0.0), (x + 0.35, t.images_per_second)],
                    BLUE.mix(0.6).filled(),
                )
            }))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(timings.iter().enumerate().map(|(i, t)| {
                Text::new(
                    format!("{:.1}", t.images_per_second),
                    (i as f64 - 0.1, t.images_per_second + top * 0.06),
                    ("sans-serif", 14),
                )
            }))
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
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

/// Reads `batches` training batches through the run's loader (as `train` builds it, with the
/// config's augmentation and workers) into CPU (flex) tensors, and times them.
pub fn loader(config: &RunConfig, batches: usize) -> Result<LoaderTiming, String> {
    let (kind, train_set) = training_set(config)?;
    let input_size = config.network().input_size();
    let batcher = ImageBatcher::new(kind, train_set.image_shape(), input_size)?;
    let loader = crate::fit::loader(config, &batcher, train_set, true, &Device::flex());
    let began = Instant::now();
    let mut images = 0;
    let mut read = 0;
    while read < batches {
        let mut any = false;
        for batch in loader.iter() {
            let batch = batch.map_err(|e| format!("loader: {e}"))?;
            images += batch.targets.dims()[0];
            read += 1;
            any = true;
            if read == batches {
                break;
            }
        }
        if !any {
            return Err("the training set yields no batches".into());
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
    println!(
        "loader: {} batches, {} images in {:.2} s: {:.0} images/s ({} workers, augmentation {})",
        timing.batches,
        timing.images,
        timing.seconds,
        timing.images_per_second,
        timing.workers,
        if timing.augmented { "on" } else { "off" }
    );
    Ok(timing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(backend: &str, images_per_second: f64) -> BackendTiming {
        BackendTiming {
            backend: backend.into(),
            device: "test".into(),
            step_ms: vec![1.0],
            median_ms: 1.0,
            min_ms: 1.0,
            images_per_second,
            epoch_seconds: 1.0,
            gflop_per_image: 1.0,
            gflop_per_second: 1.0,
            matmul_gflop_per_second: Some(2.0),
            matmul_share: Some(0.5),
            eval_median_ms: 1.0,
            eval_images_per_second: 1.0,
            pooling_median_ms: None,
            pooling_share: None,
            device_memory_mib: None,
        }
    }

    #[test]
    fn timings_from_elsewhere_are_read_back_and_bad_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torch.json");
        // As scripts/torch_reference.py writes it: no pooling fields.
        let mut json = serde_json::to_value([timing("torch-cpu", 2390.0)]).unwrap();
        json[0].as_object_mut().unwrap().remove("pooling_median_ms");
        std::fs::write(&path, json.to_string()).unwrap();
        let read = BackendTiming::read_all(&path).unwrap();
        assert_eq!(read[0].backend, "torch-cpu");
        assert_eq!(read[0].images_per_second, 2390.0);
        std::fs::write(&path, "[{\"backend\": 1}]").unwrap();
        let err = BackendTiming::read_all(&path).unwrap_err();
        assert!(err.contains("torch.json"), "{err}");
    }

    #[test]
    fn the_chart_names_every_backend_and_value() {
        let svg = chart("title", &[timing("flex", 125.5), timing("ndarray", 3.25)]).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["title", "flex", "ndarray", "125.5", "3.2", "images / s"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }
}
