//! `train bench`: times training steps, an evaluation pass, the pooling layers and the matrix
//! product ceiling of a config's model on each backend, on real batches.

mod chart;
mod loader;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::{
    data::{
        dataloader::{DataLoaderIterator, Progress, batcher::Batcher},
        dataset::{Dataset, DatasetError},
    },
    optim::GradientsAccumulator,
    prelude::*,
    tensor::Distribution,
    train::{TrainStep, train::MultiDevicesTrainStep},
};
use data::{ImageBatcher, ImageDataset};
use models::{FmpNet, ImageBatch, Network};
use serde::{Deserialize, Serialize};

use crate::{
    BackendName, Overrides, RunConfig, device,
    files::{check_output_file, write_atomic, write_json},
    panics,
    plan::RunPlan,
    remote,
    timing::{median_and_min, time_ms},
};

pub use chart::chart;
pub use loader::{LoaderBenchArgs, run as run_loader};

/// The most timed or warm-up steps `bench` takes: hours of steps on any backend.
const MAX_STEPS: usize = 100_000;

/// Time training steps of the config's model on each backend (median/min ms per step).
#[derive(clap::Args)]
pub struct BenchArgs {
    /// The config whose model, dataset and batch size are timed.
    config: PathBuf,
    /// Backends to time, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "flex,ndarray,wgpu"
    )]
    backends: Vec<BackendName>,
    /// Timed steps per backend; 0 times nothing and gathers the `--include`d timings alone into
    /// one table, JSON and chart.
    #[arg(long, default_value_t = 10)]
    steps: usize,
    /// Untimed warm-up steps per backend (kernel compilation, autotuning, allocation).
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also write the timings as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also draw images per second by backend as an SVG bar chart in this file.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Timings measured elsewhere to show in the same table, chart and JSON (files written by
    /// `--json` or by scripts/torch_reference.py); repeatable.
    #[arg(long)]
    include: Vec<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

/// Runs `train bench`: times every backend, adds the included timings, writes chart and JSON.
pub fn run(args: BenchArgs) -> Result<()> {
    for (flag, value) in [("--steps", args.steps), ("--warmup", args.warmup)] {
        if value > MAX_STEPS {
            bail!("{flag}: {value} is more than the {MAX_STEPS} allowed");
        }
    }
    check_output_file("--json", args.json.as_deref())?;
    check_output_file("--chart", args.chart.as_deref())?;
    let config = RunConfig::load(&args.config, &args.overrides)?;
    let name = args
        .config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned());
    let mut timings = match args.steps {
        0 => Vec::new(),
        steps => time_backends(&config, name, &args.backends, [args.warmup, steps])?,
    };
    for path in &args.include {
        timings.extend(BackendTiming::read_all(path)?);
    }
    if timings.is_empty() {
        match args.steps {
            0 => bail!("nothing to time: --steps 0 and no --include; give --steps or --include"),
            _ => bail!(
                "nothing was timed: no backend of {} is available here (see above)",
                args.backends
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    if !args.include.is_empty() {
        say!("{}", table(&timings).trim_end());
    }
    if let Some(path) = &args.chart {
        let title = match args.steps {
            0 => "Training images per second".to_string(),
            _ => format!(
                "{}: training images per second, batch {}",
                args.config.display(),
                config.batch_size
            ),
        };
        write_atomic(path, chart(&title, &timings)?.as_bytes())?;
    }
    write_json(args.json.as_deref(), &timings)
}

/// Timing of one backend (also the format `scripts/torch_reference.py` writes).
#[derive(Debug, Serialize, Deserialize)]
pub struct BackendTiming {
    /// Backend name.
    pub backend: String,
    /// The config timed (its file name without `.toml`), where recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Device description, or why the backend is unavailable.
    pub device: String,
    /// Milliseconds of each timed step (forward, loss, backward, optimiser step, synced).
    pub step_ms: Vec<f64>,
    /// Median of `step_ms`.
    pub median_ms: f64,
    /// Minimum of `step_ms`.
    pub min_ms: f64,
    /// The first training step, warm-up included: on a GPU most of it compiles and tunes
    /// kernels (absent in timings from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_step_ms: Option<f64>,
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
    /// Micro-batches a step ran as (gradient accumulation), when more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_batches: Option<usize>,
    /// The same training step split between several devices (`--devices`), where asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi_device: Option<MultiDeviceTiming>,
    /// Median milliseconds of an evaluation pass (forward only, no autodiff) over one batch (one
    /// micro-batch when accumulating).
    pub eval_median_ms: f64,
    /// Images per second evaluated, at `eval_median_ms`.
    pub eval_images_per_second: f64,
    /// For FMP nets: median milliseconds of the pooling layers alone, forward and backward, at
    /// the shapes of a training step (of one micro-batch when accumulating).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling_median_ms: Option<f64>,
    /// The pooling layers' share of the median step (all its micro-batches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling_share: Option<f64>,
}

/// Training steps split between several devices with Burn's multi-device step, each device
/// taking an equal share of every batch and the first stepping the optimiser.
#[derive(Debug, Serialize, Deserialize)]
pub struct MultiDeviceTiming {
    /// Every device, one entry per model replica.
    pub devices: Vec<String>,
    /// Milliseconds of each timed step.
    pub step_ms: Vec<f64>,
    /// Median of `step_ms`.
    pub median_ms: f64,
    /// Training images per second at the median.
    pub images_per_second: f64,
    /// `images_per_second` over the devices' count times one device's: 1 is perfect scaling.
    pub scaling_efficiency: f64,
}

impl BackendTiming {
    /// The name of the timing in tables and charts: the config (if recorded) and the backend.
    pub fn label(&self) -> String {
        match &self.config {
            Some(config) => format!("{config} {}", self.backend),
            None => self.backend.clone(),
        }
    }

    /// One line per figure, as the bench table shows it.
    pub fn print(&self) {
        say!(
            "{:>8}: median {:8.1} ms  min {:8.1} ms  {:8.1} img/s  {:7.1} GFLOP/s  ~{:7.1} s/epoch  ({})",
            self.label(),
            self.median_ms,
            self.min_ms,
            self.images_per_second,
            self.gflop_per_second,
            self.epoch_seconds,
            self.device
        );
        if let Some(first) = self.first_step_ms {
            let why = match self.backend.starts_with("wgpu") {
                true => " (mostly compiling and tuning kernels)",
                false => "",
            };
            say!("{:>8}  first step: {:.1} s{why}", "", first / 1e3);
        }
        say!(
            "{:>8}  evaluation (forward only): {:.1} ms per batch, {:.1} img/s",
            "",
            self.eval_median_ms,
            self.eval_images_per_second
        );
        if let (Some(peak), Some(share)) = (self.matmul_gflop_per_second, self.matmul_share) {
            say!(
                "{:>8}  {:.1}% of the {peak:.1} GFLOP/s a 2048^3 matrix product reaches here",
                "",
                share * 100.0
            );
        }
        if let Some(n) = self.micro_batches {
            say!("{:>8}  each step ran as {n} micro-batches (accumulate)", "");
        }
        if let Some(multi) = &self.multi_device {
            say!(
                "{:>8}  on {} devices: median {:.1} ms, {:.1} img/s, scaling efficiency {:.0}% \
                 ({})",
                "",
                multi.devices.len(),
                multi.median_ms,
                multi.images_per_second,
                multi.scaling_efficiency * 100.0,
                multi.devices.join("; ")
            );
        }
        if let Some(mib) = self.device_memory_mib {
            say!("{:>8}  device memory held after a step: {mib:.0} MiB", "");
        }
        if let (Some(ms), Some(share)) = (self.pooling_median_ms, self.pooling_share) {
            say!(
                "{:>8}  FMP layers alone (forward + backward): {ms:.1} ms, {:.1}% of a step",
                "",
                share * 100.0
            );
        }
    }

    /// Timings written earlier as JSON by `train bench --json` or `scripts/torch_reference.py`.
    pub fn read_all(path: &Path) -> Result<Vec<Self>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let timings: Vec<Self> = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: not a list of timings as `train bench --json` writes them",
                path.display()
            )
        })?;
        for timing in &timings {
            let multi = timing.multi_device.as_ref();
            let values = [
                timing.median_ms,
                timing.min_ms,
                timing.images_per_second,
                timing.eval_median_ms,
                timing.eval_images_per_second,
            ]
            .into_iter()
            .chain(timing.step_ms.iter().copied())
            .chain(multi.map(|m| m.images_per_second));
            // serde_json reads no NaN; a value too large to scale a chart is as unusable.
            if let Some(value) = values
                .into_iter()
                .find(|v| !(0.0..=chart::LARGEST).contains(v))
            {
                bail!(
                    "{}: {}: {value} is not a time or rate a chart can show; the file is \
                     damaged or was not written by `train bench --json`",
                    path.display(),
                    timing.label()
                );
            }
        }
        Ok(timings)
    }
}

/// Every timing in one table, a row each: config, backend, ms per step, images/s, TFLOP/s and
/// the share of the backend's matrix-product ceiling, the first step, the device.
fn table(timings: &[BackendTiming]) -> String {
    let mut rows = vec![
        [
            "config", "backend", "ms/step", "img/s", "TFLOP/s", "ceiling", "1st step", "device",
        ]
        .map(String::from),
    ];
    for t in timings {
        rows.push([
            t.config.clone().unwrap_or_else(|| "-".into()),
            t.backend.clone(),
            format!("{:.1}", t.median_ms),
            format!("{:.1}", t.images_per_second),
            format!("{:.3}", t.gflop_per_second / 1e3),
            t.matmul_share
                .map_or("-".into(), |share| format!("{:.1}%", share * 100.0)),
            t.first_step_ms
                .map_or("-".into(), |ms| format!("{:.1} s", ms / 1e3)),
            t.device.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| match c {
                0 | 1 | 7 => format!("{cell:<w$}"),
                _ => format!("{cell:>w$}"),
            })
            .collect();
        text += cells.join("  ").trim_end();
        text.push('\n');
    }
    text
}

/// The config's whole training split and the batcher for its network.
fn training_set(config: &RunConfig) -> Result<(ImageDataset, ImageBatcher)> {
    let (splits, _) = config.load_splits()?;
    let train_set = ImageDataset::new(splits.train_images, splits.train_labels);
    let input_size = config.network().input_size();
    let batcher = ImageBatcher::new(config.dataset_kind(), train_set.image_shape(), input_size)?;
    Ok((train_set, batcher))
}

/// Milliseconds of the pooling layers' forward and backward passes at the network's shapes.
fn time_pooling(
    net: &FmpNet,
    batch_size: usize,
    device: &Device,
    warmup: usize,
    steps: usize,
) -> Result<Vec<f64>> {
    let inputs = |_| -> Vec<Tensor<4>> {
        net.pooling_layers()
            .map(|(_, [c, h, w])| {
                Tensor::random([batch_size, c, h, w], Distribution::Default, device).require_grad()
            })
            .collect()
    };
    time_ms(
        "FMP layers alone",
        device,
        warmup,
        steps,
        inputs,
        |inputs| {
            let loss = net
                .pooling_layers()
                .zip(inputs)
                .map(|((pool, _), x)| pool.forward(x).sum())
                .reduce(|a, b| a + b)
                .expect("an FMP net has pooling layers");
            // The gradients are computed here; they are not needed afterwards.
            let _gradients = loss.backward();
        },
    )
}

/// Side of the square matrices whose product measures a device's practical peak.
const MATMUL_SIDE: usize = 2048;

/// The most timed products for the ceiling: their median has settled well before, and on a CPU
/// each takes about as long as a whole training step of the small nets, so `--steps` in the
/// thousands spent minutes on it.
const CEILING_PRODUCTS: usize = 30;

/// GFLOP/s of `MATMUL_SIDE`^3 f32 matrix products on `device`: the median of `steps` timed
/// products after `warmup` untimed ones, at least one (the first product compiles and autotunes
/// its kernels, which is no part of a ceiling).
fn matmul_gflops(device: &Device, warmup: usize, steps: usize) -> Result<f64> {
    let shape = [MATMUL_SIDE, MATMUL_SIDE];
    let a = Tensor::<2>::random(shape, Distribution::Default, device);
    let b = Tensor::<2>::random(shape, Distribution::Default, device);
    let times = time_ms(
        "2048^3 matrix products",
        device,
        warmup.max(1),
        steps,
        |_| (),
        |()| {
            drop(a.clone().matmul(b.clone()));
        },
    )?;
    let flops = 2.0 * (MATMUL_SIDE as f64).powi(3);
    Ok(flops / (median_and_min(&times).0 / 1e3) / 1e9)
}

/// Times `steps` training steps after `warmup` untimed ones, at the config's batch size, for
/// each backend in turn, labelled with the config's `name`. An unavailable backend is reported
/// and skipped.
fn time_backends(
    config: &RunConfig,
    name: Option<String>,
    backends: &[BackendName],
    [warmup, steps]: [usize; 2],
) -> Result<Vec<BackendTiming>> {
    let (train_set, batcher) = training_set(config)?;
    if let Some(note) = crate::timing::unoptimised_build() {
        say_err!("warning: {note}");
    }
    let mut results = Vec::new();
    for &backend in backends {
        let config = &RunConfig {
            backend,
            ..config.clone()
        };
        let devices = match device::init_all(backend, &config.devices) {
            Ok(devices) => devices,
            Err(reason) => {
                say!("{backend:>8}: unavailable: {reason:#}");
                continue;
            }
        };
        // A worker that goes away ends the timing with an error or, from Burn's remote
        // backend, a panic; the worker is then named.
        let timed = panics::catch(remote::any_worker(&devices), || {
            time_backend_and_devices(config, &train_set, &batcher, &devices, [warmup, steps])
        });
        let lost = |cause: &str| {
            remote::lost(&devices, cause).map(|what| {
                anyhow!(
                    "{backend}: timing failed: {what}; once the worker runs again, run the \
                     bench again"
                )
            })
        };
        let timing = match timed {
            Ok(Ok(timing)) => timing,
            // An error is a worker's only where one stopped answering.
            Ok(Err(error)) if remote::silent(&devices).is_empty() => return Err(error),
            Ok(Err(error)) => return Err(lost(&format!("{error:#}")).unwrap_or(error)),
            Err(caught) => match lost(&caught.message()) {
                Some(error) => return Err(error),
                None => caught.resume(),
            },
        };
        let timing = BackendTiming {
            config: name.clone(),
            ..timing
        };
        timing.print();
        results.push(timing);
    }
    Ok(results)
}

/// One prepared batch, as the data-loader iterator Burn's multi-device step reads.
struct OneBatch(Option<ImageBatch>);

impl Iterator for OneBatch {
    type Item = Result<ImageBatch, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.take().map(Ok)
    }
}

impl DataLoaderIterator<ImageBatch> for OneBatch {
    fn progress(&self) -> Progress {
        Progress::new(usize::from(self.0.is_none()), 1, None)
    }
}

/// [`time_backend`] on the first of `devices`, and where there are several, the steps split
/// between them ([`time_multi_device`]).
fn time_backend_and_devices(
    config: &RunConfig,
    train_set: &ImageDataset,
    batcher: &ImageBatcher,
    devices: &[Device],
    [warmup, steps]: [usize; 2],
) -> Result<BackendTiming> {
    let backend = config.backend;
    let mut timing = time_backend(config, train_set, batcher, &devices[0], [warmup, steps])
        .with_context(|| backend.to_string())?;
    if devices.len() > 1 {
        let times = time_multi_device(config, train_set, batcher, devices, [warmup, steps])
            .with_context(|| format!("{backend} on {} devices", devices.len()))?;
        let median = median_and_min(&times).0;
        let images_per_second = train_set.len().min(config.batch_size) as f64 / (median / 1e3);
        timing.multi_device = Some(MultiDeviceTiming {
            devices: devices
                .iter()
                .map(|d| device::describe(backend, d))
                .collect(),
            step_ms: times,
            median_ms: median,
            images_per_second,
            scaling_efficiency: images_per_second
                / (devices.len() as f64 * timing.images_per_second),
        });
    }
    Ok(timing)
}

/// Milliseconds of training steps split between `devices` as `train --devices` runs them:
/// Burn's multi-device step (a model replica and an equal share of the batch on each device, in
/// micro-batches where a share does not fit), gradients summed on the first device, which steps
/// the optimiser.
fn time_multi_device(
    config: &RunConfig,
    train_set: &ImageDataset,
    batcher: &ImageBatcher,
    devices: &[Device],
    [warmup, steps]: [usize; 2],
) -> Result<Vec<f64>> {
    let network = config.network();
    let main = devices[0].clone().autodiff();
    let replicas: Vec<Device> = devices.iter().map(|d| d.clone().autodiff()).collect();
    let plan = RunPlan::new(config, devices.to_vec(), Some(train_set.len()))?;
    let (batch_size, micro_batches) = (plan.batch_size, plan.micro_batches);
    let micro_batcher = plan.train_batcher(batcher.clone());
    let size = micro_batcher.images();
    let mut model = Some(network.init(&main));
    let mut optimizer = config.optimizer();
    let step = MultiDevicesTrainStep::<Network>::new(&replicas);
    let mut failure = None;
    let times = time_ms(
        &format!(
            "{}: training steps on {} devices",
            config.backend,
            devices.len()
        ),
        &devices[0],
        warmup,
        steps,
        |step| {
            let start = (step * batch_size) % (train_set.len() - batch_size + 1);
            (0..micro_batches)
                .map(|micro| {
                    replicas
                        .iter()
                        .enumerate()
                        .map(|(d, device)| {
                            let first = start + (micro * replicas.len() + d) * size;
                            let items = train_set
                                .get_many((first..first + size).collect())
                                .expect("indices are in range");
                            micro_batcher.batch(items, device)
                        })
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        },
        |micro_batches| {
            let trained = model.take().expect("the model is put back after each step");
            let mut accumulator = GradientsAccumulator::new();
            for batches in micro_batches {
                let mut iterators: Vec<Box<dyn DataLoaderIterator<ImageBatch>>> = batches
                    .into_iter()
                    .map(|batch| Box::new(OneBatch(Some(batch))) as _)
                    .collect();
                match step.step(&mut iterators, &trained) {
                    Ok((outputs, _)) => {
                        for output in outputs {
                            let grads = output.output.grads.to_device(&main, &trained);
                            accumulator.accumulate(&trained, grads);
                        }
                    }
                    Err(e) => failure = Some(anyhow::anyhow!("{e}")),
                }
            }
            let learning_rate = config.optimizer.learning_rate().into();
            model = Some(trained.optimize(&mut optimizer, learning_rate, accumulator.grads()));
        },
    )?;
    match failure {
        Some(error) => Err(error),
        None => Ok(times),
    }
}

/// The timings of one backend: training steps, evaluation, pooling layers, matrix products.
fn time_backend(
    config: &RunConfig,
    train_set: &ImageDataset,
    batcher: &ImageBatcher,
    device: &Device,
    [warmup, steps]: [usize; 2],
) -> Result<BackendTiming> {
    let network = config.network();
    device.seed(config.seed);
    let train_device = device.clone().autodiff();
    let mut model = Some(network.init(&train_device));
    let mut optimizer = config.optimizer();
    let plan = RunPlan::new(config, vec![device.clone()], Some(train_set.len()))?;
    let (batch_size, micro_batches) = (plan.batch_size, plan.micro_batches);
    let device_name = plan.device_name().to_string();
    let micro_batcher = plan.train_batcher(batcher.clone());
    let micro_batch = micro_batcher.images();
    let batch = |start: usize, device: &Device| -> ImageBatch {
        let items = train_set
            .get_many((start..start + micro_batch).collect())
            .expect("indices are in range");
        micro_batcher.batch(items, device)
    };
    let mut reserved = None::<u64>;
    // Every step timed, the warm-up too: the first one compiles and tunes the kernels.
    let all = time_ms(
        &format!(
            "{}: training steps, {warmup} warm-up + {steps} timed",
            config.backend
        ),
        device,
        0,
        warmup + steps,
        |step| {
            let start = (step * batch_size) % (train_set.len() - batch_size + 1);
            (0..micro_batches)
                .map(|i| batch(start + i * micro_batch, &train_device))
                .collect::<Vec<_>>()
        },
        |batches| {
            let trained = model.take().expect("the model is put back after each step");
            // As Burn's learner accumulates: gradients summed over the micro-batches.
            let mut accumulator = GradientsAccumulator::new();
            for batch in batches {
                accumulator.accumulate(&trained, TrainStep::step(&trained, batch).grads);
            }
            let learning_rate = config.optimizer.learning_rate().into();
            model = Some(trained.optimize(&mut optimizer, learning_rate, accumulator.grads()));
            if let Some(usage) = device.memory_pool_usage() {
                reserved = Some(reserved.unwrap_or(0).max(usage.bytes_reserved));
            }
        },
    )?;
    let model = model.expect("the model is put back after each step");
    let first_step_ms = all.first().copied();
    let times = all[warmup..].to_vec();
    let (median, min) = median_and_min(&times);
    // Evaluation: the trained model as the test pass runs it.
    let evaluated = model.valid().to_device(device);
    let eval_times = time_ms(
        &format!("{}: evaluation", config.backend),
        device,
        warmup,
        steps,
        |_| batch(0, device),
        |batch| {
            drop(evaluated.forward(batch.images));
        },
    )?;
    let eval_median = median_and_min(&eval_times).0;
    let pooling = match &model {
        Network::FmpNet(net) => {
            let times = time_pooling(net, micro_batch, &train_device, warmup, steps)?;
            Some(median_and_min(&times).0)
        }
        _ => None,
    };
    // Last: its large buffers must not disturb the timings above.
    let peak = matmul_gflops(device, warmup, steps.min(CEILING_PRODUCTS))?;
    let gflop_per_image = 3.0 * network.forward_flops() as f64 / 1e9;
    let gflop_per_second = gflop_per_image * batch_size as f64 / (median / 1e3);
    Ok(BackendTiming {
        gflop_per_image,
        gflop_per_second,
        matmul_gflop_per_second: Some(peak),
        matmul_share: Some(gflop_per_second / peak),
        backend: config.backend.to_string(),
        config: None,
        device: device_name,
        micro_batches: (micro_batches > 1).then_some(micro_batches),
        multi_device: None,
        median_ms: median,
        min_ms: min,
        first_step_ms,
        pooling_median_ms: pooling,
        device_memory_mib: reserved.map(|bytes| bytes as f64 / (1024.0 * 1024.0)),
        eval_median_ms: eval_median,
        eval_images_per_second: micro_batch as f64 / (eval_median / 1e3),
        pooling_share: pooling.map(|p| p * micro_batches as f64 / median),
        images_per_second: batch_size as f64 / (median / 1e3),
        epoch_seconds: train_set.len().div_ceil(batch_size) as f64 * median / 1e3,
        step_ms: times,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn timing(backend: &str, images_per_second: f64) -> BackendTiming {
        BackendTiming {
            backend: backend.into(),
            config: None,
            device: "test".into(),
            step_ms: vec![1.0],
            median_ms: 1.0,
            min_ms: 1.0,
            first_step_ms: Some(1.0),
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
            micro_batches: None,
            multi_device: None,
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
        let table = table(&read);
        assert!(table.starts_with("config  backend"), "{table}");
        assert!(
            table.contains("torch-cpu") && table.contains("2390.0"),
            "{table}"
        );
        std::fs::write(&path, "[{\"backend\": 1}]").unwrap();
        let err = format!("{:#}", BackendTiming::read_all(&path).unwrap_err());
        assert!(err.contains("torch.json"), "{err}");
        // A rate no chart can scale, or a negative time: named with the file.
        for (key, value) in [("images_per_second", 1.7e308), ("median_ms", -1.0)] {
            let mut json = serde_json::to_value([timing("torch-cpu", 2390.0)]).unwrap();
            json[0][key] = serde_json::json!(value);
            std::fs::write(&path, json.to_string()).unwrap();
            let err = format!("{:#}", BackendTiming::read_all(&path).unwrap_err());
            assert!(
                err.contains("torch.json") && err.contains("torch-cpu"),
                "{err}"
            );
        }
    }
}
