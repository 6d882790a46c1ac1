//! `train`: trains, resumes and benchmarks the course's CNNs from a TOML config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use train::{
    BackendName, Overrides, RunConfig, bench, fit,
    inference::{self, Trained},
    tiny::TinyCnn,
};

// Training allocates and frees activation-sized buffers at every step. glibc's malloc hands the
// large ones back to the kernel and faults them in again (zeroed pages, TLB shootdowns): 45,000
// page faults per FMP-MNIST step on flex. mimalloc keeps them for reuse once told never to purge
// freed memory (see `keep_freed_memory`): under 100 per step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_e` enum of the mimalloc 3 header that
/// libmimalloc-sys 0.1.49 builds (its Rust bindings do not name it; the version is pinned).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never returns freed memory to the system: a run's working set is allocated again at every
/// step, and purging it after mimalloc's default delay made each step fault it back in.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option; mimalloc allows this at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Train LeNet-5 and friends with Burn on CPU (flex, ndarray) or GPU (wgpu).
///
/// Data is looked up in the config's data_dir, then $CNN_DATA_DIR, then ./data; full MNIST is
/// downloaded there when absent.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Time training steps of the config's model on each backend (median/min ms per step).
    Bench(BenchArgs),
    /// Time the training data loader (augmentation, padding, batching) in images per second.
    LoaderBench(LoaderBenchArgs),
    /// The course's smallest CNN, forward, backward and one SGD step, by hand and by Burn.
    TinyCnn(TinyCnnArgs),
    /// Write a trained network as safetensors with PyTorch's names (for scripts/cnn_models.py)
    /// and as a Burn record, with its config and reference logits; checks both by reloading.
    Export(ExportArgs),
    /// Classify image files (PNG, JPEG) with a trained network.
    Predict(PredictArgs),
    /// Evaluate a trained network on its dataset's test set.
    Eval(EvalArgs),
}

#[derive(Args)]
struct ModelArgs {
    /// A run directory (its newest complete checkpoint), an export folder, or a weights file
    /// (.bpk Burn record, .safetensors with PyTorch names).
    model: PathBuf,
    /// The run config the weights belong to, when no config.toml sits beside them and none is
    /// embedded in them (e.g. weights trained in PyTorch).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Backend to run on, replacing the config's `backend`.
    #[arg(long, value_enum)]
    backend: Option<BackendName>,
}

impl ModelArgs {
    fn load(&self, overrides: Overrides) -> Result<Trained, String> {
        let overrides = Overrides {
            backend: self.backend,
            ..overrides
        };
        Trained::load(&self.model, self.config.as_deref(), &overrides)
    }
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder to write model.safetensors, model.bpk, config.toml and reference.json to.
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args)]
struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Image files to classify.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Forward passes averaged per image; default: the config's test_passes (12 for FMP nets).
    #[arg(long)]
    passes: Option<usize>,
    /// Invert grey levels first (dark digits on white paper; MNIST has light on black).
    #[arg(long)]
    invert: bool,
    /// Classes listed per image, most probable first.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Also write the predictions as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Forward passes averaged per image; default: the config's test_passes (12 for FMP nets).
    #[arg(long)]
    passes: Option<usize>,
    /// Folder holding the datasets, replacing `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Images per evaluation batch, replacing `batch_size`.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct TinyCnnArgs {
    /// A TOML file with image, kernel, bias, weights, dense_bias, target, learning_rate;
    /// without it, the built-in example.
    values: Option<PathBuf>,
    /// Backends to run Burn on, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "ndarray,wgpu"
    )]
    backends: Vec<BackendName>,
    /// Largest accepted difference between Burn (f32) and the hand computation (f64),
    /// absolute plus relative.
    #[arg(long, default_value_t = 1e-5)]
    tolerance: f64,
}

#[derive(Args)]
struct LoaderBenchArgs {
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
    overrides: OverrideArgs,
}

#[derive(Args)]
struct RunArgs {
    /// The run's TOML config, e.g. configs/lenet_mnist.toml.
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: OverrideArgs,
    /// Continue the run in the output directory from its last complete checkpoint.
    #[arg(long)]
    resume: bool,
}

#[derive(Args)]
struct OverrideArgs {
    /// Backend to run on, replacing the config's `backend`.
    #[arg(long, value_enum)]
    backend: Option<BackendName>,
    /// Number of epochs, replacing `epochs`.
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step, replacing `batch_size`.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Folder holding the datasets, replacing `data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run directory for checkpoints and the summary, replacing `output`.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Random seed, replacing `seed`.
    #[arg(long)]
    seed: Option<u64>,
    /// Forward passes averaged per test image, replacing `test_passes`.
    #[arg(long)]
    test_passes: Option<usize>,
}

#[derive(Args)]
struct BenchArgs {
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
    /// Timed steps per backend.
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
    overrides: OverrideArgs,
}

impl From<OverrideArgs> for Overrides {
    fn from(a: OverrideArgs) -> Self {
        Self {
            backend: a.backend,
            epochs: a.epochs,
            batch_size: a.batch_size,
            data_dir: a.data_dir,
            output: a.output,
            seed: a.seed,
            test_passes: a.test_passes,
        }
    }
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Bench(args)) => run_bench(args),
        Some(Command::LoaderBench(args)) => run_loader_bench(args),
        Some(Command::TinyCnn(args)) => run_tiny_cnn(args),
        Some(Command::Export(args)) => run_export(args),
        Some(Command::Predict(args)) => run_predict(args),
        Some(Command::Eval(args)) => run_eval(args),
        None => match cli.run.config {
            Some(config) => RunConfig::load(&config, &cli.run.overrides.into())
                .map_err(|e| e.to_string())
                .and_then(|config| fit::train(&config, cli.run.resume).map(|_| ())),
            None => Err("no config given; try: train configs/quickstart.toml (see --help)".into()),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_bench(args: BenchArgs) -> Result<(), String> {
    let config =
        RunConfig::load(&args.config, &args.overrides.into()).map_err(|e| e.to_string())?;
    let mut timings = bench::run(&config, &args.backends, args.warmup, args.steps)?;
    for path in &args.include {
        for timing in bench::BackendTiming::read_all(path)? {
            timing.print();
            timings.push(timing);
        }
    }
    if let Some(path) = &args.chart {
        let title = format!(
            "{}: training images per second, batch {}",
            args.config.display(),
            config.batch_size
        );
        let svg = bench::chart(&title, &timings)?;
        train::checkpoint::write_atomic(path, svg.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    write_json(args.json, &timings)
}

fn run_loader_bench(args: LoaderBenchArgs) -> Result<(), String> {
    let mut config =
        RunConfig::load(&args.config, &args.overrides.into()).map_err(|e| e.to_string())?;
    config.workers = args.workers.unwrap_or(config.workers);
    let timing = bench::loader(&config, args.batches)?;
    write_json(args.json, &timing)
}

fn run_tiny_cnn(args: TinyCnnArgs) -> Result<(), String> {
    let cnn = match &args.values {
        Some(path) => TinyCnn::load(path)?,
        None => TinyCnn::default(),
    };
    let hand = cnn.by_hand();
    let mut results = Vec::new();
    for backend in args.backends {
        let device = train::device::init(backend)?;
        results.push((backend.to_string(), cnn.by_burn(&device)));
    }
    print!("{}", train::tiny::side_by_side(&cnn, &hand, &results));
    for (backend, stages) in &results {
        hand.compare(stages, args.tolerance)
            .map_err(|e| format!("{backend} differs from the hand computation: {e}"))?;
    }
    println!(
        "\nevery stage agrees within {} (absolute + relative) on {}",
        args.tolerance,
        results
            .iter()
            .map(|(b, _)| b.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn run_export(args: ExportArgs) -> Result<(), String> {
    let trained = args.model.load(Overrides::default())?;
    let export = inference::export(&trained, &args.output)?;
    println!(
        "exported {} ({}) from {}:",
        trained.network.name(),
        trained.config.dataset,
        trained.weights.display()
    );
    for file in &export.files {
        println!("  {}", file.display());
    }
    println!(
        "both weights files load back and reproduce the network's logits (largest \
         difference {:.1e}); check the PyTorch side with: python3 scripts/check_export.py {}",
        export.reload_difference,
        args.output.display()
    );
    Ok(())
}

fn run_predict(args: PredictArgs) -> Result<(), String> {
    let trained = args.model.load(Overrides::default())?;
    let passes = passes(args.passes, &trained)?;
    let predictions = inference::predict(&trained, &args.images, passes, args.invert)?;
    let names = trained.config.dataset_kind().class_names();
    for prediction in &predictions {
        let mut ranked: Vec<usize> = (0..prediction.probabilities.len()).collect();
        ranked
            .sort_by(|&a, &b| prediction.probabilities[b].total_cmp(&prediction.probabilities[a]));
        let listed: Vec<String> = ranked
            .iter()
            .take(args.top.max(1))
            .map(|&c| format!("{} {:.1}%", names[c], 100.0 * prediction.probabilities[c]))
            .collect();
        println!("{}: {}", prediction.file.display(), listed.join(", "));
    }
    write_json(args.json, &predictions)
}

fn run_eval(args: EvalArgs) -> Result<(), String> {
    let overrides = Overrides {
        data_dir: args.data_dir,
        batch_size: args.batch_size,
        ..Overrides::default()
    };
    let trained = args.model.load(overrides)?;
    let passes = passes(args.passes, &trained)?;
    let evaluation = inference::evaluate(&trained, passes)?;
    let averaged = if passes > 1 {
        format!(
            ", {passes}-pass {:.2}% (error {:.2}%)",
            evaluation.accuracy,
            100.0 - evaluation.accuracy
        )
    } else {
        String::new()
    };
    println!(
        "{}: test accuracy {:.2}% (error {:.2}%){averaged} on {} {} images",
        evaluation.weights.display(),
        evaluation.accuracy_one_pass,
        100.0 - evaluation.accuracy_one_pass,
        evaluation.images,
        evaluation.dataset
    );
    write_json(args.json, &evaluation)
}

/// `--passes`, else the config's test passes.
fn passes(given: Option<usize>, trained: &Trained) -> Result<usize, String> {
    match given {
        Some(0) => Err("--passes: expected at least 1".into()),
        Some(passes) => Ok(passes),
        None => Ok(trained.config.test_passes()),
    }
}

/// Writes `value` as JSON to `path`, atomically, when a path is given.
fn write_json(path: Option<PathBuf>, value: &impl serde::Serialize) -> Result<(), String> {
    if let Some(path) = path {
        let json = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
        train::checkpoint::write_atomic(&path, json.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
