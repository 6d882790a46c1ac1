//! `train <config.toml>`: a training run from config to summary: data, model, Burn's Learner,
//! test accuracy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::{
    data::dataset::Dataset,
    prelude::*,
    train::{
        ExecutionStrategy, Interrupter, Learner, LearningResult, MultiDeviceOptim,
        SupervisedTraining,
        checkpoint::KeepLastNCheckpoints,
        metric::{AccuracyMetric, LearningRateMetric, LossMetric},
    },
};
use data::{ImageBatcher, ImageDataset, Splits};
use models::Network;
use serde::Serialize;

use crate::{
    Overrides, RunConfig,
    checkpoint::{
        AtomicCheckpointer, KEPT, check_resumable, last_complete, newest_valid, remove_incomplete,
        remove_stale,
    },
    curves::{self, CurveWriter, EpochRecord},
    device,
    evaluation::{Evaluated, evaluate},
    files::{check_output_folder, write_atomic},
    inference::{averaged_note, percent_and_error},
    panics,
    plan::{RunPlan, loader},
    progress::{EpochRenderer, NonFinite},
    remote,
    timing::unoptimised_build,
};

/// Train the network of a run config (the command without a subcommand).
#[derive(clap::Args)]
pub struct RunArgs {
    /// The run's TOML config, e.g. configs/lenet_mnist.toml.
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub overrides: Overrides,
    /// Continue the run in the output directory from its last complete checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Train into an output folder that holds files this run did not write, or the
    /// config.toml of another run without a checkpoint: the run's own files are replaced, the
    /// others left as they are.
    #[arg(long)]
    pub reuse_output: bool,
}

/// Runs `train <config.toml>`.
pub fn run(args: RunArgs) -> Result<()> {
    let Some(config) = args.config else {
        bail!("no config given; try: train configs/quickstart.toml (see --help)");
    };
    let origin = config;
    let config = RunConfig::load(&origin, &args.overrides)?;
    let start = Start {
        origin: &origin,
        resume: args.resume,
        reuse_output: args.reuse_output,
    };
    train(&config, start).map(|_| ())
}

/// How a run starts: from which config file, and into which state of its output folder.
#[derive(Clone, Copy)]
pub struct Start<'a> {
    /// The config file the run's config was read from.
    pub origin: &'a Path,
    /// Continue the run in the output folder (`--resume`).
    pub resume: bool,
    /// Write beside files the run did not write (`--reuse-output`).
    pub reuse_output: bool,
}

/// The machine-readable result of a run, written to `<output>/summary.json`.
#[derive(Debug, Serialize)]
pub struct RunSummary {
    /// The resolved configuration (file plus flags).
    pub config: RunConfig,
    /// Backend name.
    pub backend: String,
    /// The device the run used (the first, where it used several).
    pub device: String,
    /// Every device the run trained on, one entry per model replica.
    pub devices: Vec<String>,
    /// Micro-batches per batch (`accumulate` resolved on the device; 1: none).
    pub micro_batches: usize,
    /// Trainable parameters.
    pub parameters: usize,
    /// Per-epoch figures of every epoch, those of earlier processes of a resumed run included.
    pub epochs: Vec<EpochRecord>,
    /// Mean seconds per training epoch (over `epochs`).
    pub seconds_per_epoch: f64,
    /// Mean training images per second (over `epochs`).
    pub images_per_second: f64,
    /// Test-set accuracy, percent, from the probabilities averaged over `test_passes` passes.
    pub test_accuracy: f64,
    /// Test-set error, percent, after one pass and after `test_passes` passes.
    pub test_error: TestError,
    /// Forward passes per test image.
    pub test_passes: usize,
    /// Test-set images.
    pub test_images: usize,
    /// The per-epoch figures as CSV, in the run directory.
    pub curves_csv: String,
    /// Their plot (loss and accuracy against epoch), in the run directory.
    pub curves_plot: String,
    /// The epoch this process resumed from, if it did.
    pub resumed_from: Option<usize>,
    /// The test pass in full: accuracy per pass, confusion matrices, the worst mistakes.
    pub test: Evaluated,
}

/// Test error, percent, of one forward pass and of the averaged passes.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TestError {
    /// One pass per image.
    pub one_pass: f64,
    /// Softmax probabilities averaged over the run's `test_passes`.
    pub averaged: f64,
}

/// Trains `config`, or continues its run directory when `start` resumes, then evaluates on
/// the test set and writes the summary. Returns the summary. Nothing in the run directory
/// changes before every check has passed.
pub fn train(config: &RunConfig, start: Start) -> Result<RunSummary> {
    let run = config.output.clone();
    let config_text = toml::to_string(&saved(config))?;
    check_output(config, start, &config_text)?;

    // Data first: a missing file is reported before any device starts.
    let (splits, folder) = config.load_splits()?;
    let devices = device::init_all(config.backend, &config.devices)?;
    let plan = RunPlan::new(config, devices, None)?;
    plan.seed(config.seed);
    let resumed_from = resumed_epoch(config, start, plan.device())?;
    let model = config.network().init(&plan.device().clone().autodiff());
    // PyTorch's count, as `train summary` gives it: Burn's `num_params` also counts batch norm's
    // running statistics, which are not trained.
    let parameters: usize = config.network().layers().iter().map(|l| l.params).sum();
    let sets = Sets::split(config, splits)?;
    let input = model.input_size();
    let batcher = ImageBatcher::new(config.dataset_kind(), sets.train.image_shape(), input)?;
    for warning in plan.warnings(&config.network()) {
        say_err!("{warning}");
    }
    let unoptimised = unoptimised_build();
    if let Some(note) = &unoptimised {
        say_err!("warning: {note}");
    }
    say!(
        "{}: {} on {} ({}{}), {} parameters, {}; {} train / {} valid / {} test images from {}",
        run.display(),
        model.name(),
        config.backend,
        plan.on(),
        match unoptimised {
            Some(_) => ", UNOPTIMISED build",
            None => "",
        },
        parameters,
        plan.batching(),
        sets.train.len(),
        sets.valid.len(),
        sets.test.len(),
        folder.display()
    );

    // Every check has passed: the run directory may change now.
    std::fs::create_dir_all(&run).with_context(|| format!("cannot create {}", run.display()))?;
    write_atomic(&run.join("config.toml"), config_text.as_bytes())?;
    let training_sets = [sets.train, sets.valid];
    let (trained, epochs) = launch(config, &plan, model, training_sets, &batcher, resumed_from)?;
    let (test, seconds) = test_pass(config, &plan, &trained, &sets.test, &batcher)?;
    let title = format!("{} on {}", trained.name(), config.dataset);
    let page = test.html(&title, &sets.test, config.dataset_kind())?;
    write_atomic(&run.join(EVALUATION_HTML), page.as_bytes())?;
    let summary = RunSummary::new(config, &plan, parameters, epochs, test, resumed_from);
    let path = run.join("summary.json");
    write_atomic(&path, serde_json::to_string_pretty(&summary)?.as_bytes())?;
    let test = &summary.test;
    say!("{}", test.table().trim_end());
    if let Some(note) = test.spread_note() {
        say!("{note}");
    }
    say!(
        "test accuracy {}{} on {} images ({seconds:.1} s); summary in {}, confusion matrices \
         and the worst mistakes in {}",
        percent_and_error(test.accuracy_one_pass),
        averaged_note(test.passes, test.accuracy),
        test.images,
        path.display(),
        run.join(EVALUATION_HTML).display()
    );
    if config.dataset_kind().channels() == 1 {
        show_hint(&run);
    }
    Ok(summary)
}

/// Trains `model` on the training set, validating on the validation set, with Burn's learner
/// as `plan` and the config say; continues from `resumed_from`'s checkpoint when given. Returns
/// the trained network and every epoch's figures, those of earlier processes of the run included.
fn launch(
    config: &RunConfig,
    plan: &RunPlan,
    model: Network,
    [train_set, valid_set]: [ImageDataset; 2],
    batcher: &ImageBatcher,
    resumed_from: Option<usize>,
) -> Result<(Network, Vec<EpochRecord>)> {
    let steps_per_epoch = plan.steps_per_epoch(train_set.len());
    let device = plan.device();
    let curves = CurveWriter::new(&config.output, resumed_from);
    let epochs = Arc::new(Mutex::new(Vec::new()));
    let non_finite = Arc::new(Mutex::new(None));
    let train = loader(
        config,
        plan.train_batcher(batcher.clone()),
        train_set,
        true,
        device,
    );
    let valid = loader(
        config,
        plan.eval_batcher(batcher.clone()),
        valid_set,
        false,
        device,
    );
    let training = SupervisedTraining::new(&config.output, train, valid);
    let renderer = EpochRenderer::new(epochs.clone(), curves.clone()).stop_on_non_finite(
        training.interrupter(),
        plan.devices.len() * plan.micro_batches,
        non_finite.clone(),
    );
    let training = learner_options(training, config, plan, resumed_from, renderer);
    let scheduler = config.scheduler(steps_per_epoch)?;
    let learner = Learner::new(model, config.optimizer(), scheduler);
    // Burn's remote backend panics when a worker goes away mid-step (on this thread or a
    // device's); the worker is then named, as any failure of the run is.
    let on_workers = remote::any_worker(&plan.devices);
    let result = match panics::catch(on_workers, || training.launch(learner)) {
        Ok(result) => result,
        Err(caught) => match lost_workers(config, plan, &caught.message()) {
            Some(error) => {
                remove_incomplete(&config.output);
                return Err(error);
            }
            None => caught.resume(),
        },
    };
    let trained = outcome(result, config, plan, *panics::lock(&non_finite))?;
    remove_stale(&config.output);
    let epochs = curves.all(&panics::lock(&epochs));
    Ok((trained, epochs))
}

/// The test pass, in the evaluation batches of `plan` on its first device, over the config's
/// passes; and its seconds.
fn test_pass(
    config: &RunConfig,
    plan: &RunPlan,
    trained: &Network,
    test_set: &ImageDataset,
    batcher: &ImageBatcher,
) -> Result<(Evaluated, f64)> {
    let started = Instant::now();
    let batch_size = plan.eval_batcher(batcher.clone()).images();
    let kind = config.dataset_kind();
    let device = plan.device();
    let passes = config.test_passes();
    let seed = config.seed;
    let evaluated = evaluate(
        trained, test_set, kind, batcher, batch_size, device, passes, seed,
    )?;
    Ok((evaluated, started.elapsed().as_secs_f64()))
}

impl RunSummary {
    fn new(
        config: &RunConfig,
        plan: &RunPlan,
        parameters: usize,
        epochs: Vec<EpochRecord>,
        test: Evaluated,
        resumed_from: Option<usize>,
    ) -> Self {
        let trained = epochs.len().max(1) as f64;
        let (one_pass, averaged) = (test.accuracy_one_pass, test.accuracy);
        Self {
            config: config.clone(),
            backend: config.backend.to_string(),
            device: plan.device_name().to_string(),
            devices: plan.device_names.clone(),
            micro_batches: plan.micro_batches,
            parameters,
            seconds_per_epoch: epochs.iter().map(|e| e.train_seconds).sum::<f64>() / trained,
            images_per_second: epochs.iter().map(|e| e.images_per_second).sum::<f64>() / trained,
            epochs,
            test_accuracy: averaged,
            test_error: TestError {
                one_pass: 100.0 - one_pass,
                averaged: 100.0 - averaged,
            },
            test_passes: test.passes,
            test_images: test.images,
            test,
            curves_csv: curves::CSV.into(),
            curves_plot: curves::SVG.into(),
            resumed_from,
        }
    }
}

/// The training, validation and test sets of a run: the last `validation_fraction` of the
/// training images held out.
struct Sets {
    train: ImageDataset,
    valid: ImageDataset,
    test: ImageDataset,
}

impl Sets {
    fn split(config: &RunConfig, splits: Splits) -> Result<Self> {
        let all_train = ImageDataset::new(splits.train_images, splits.train_labels);
        let held_out = (all_train.len() as f64 * config.validation_fraction).round() as usize;
        let (train, valid) = all_train.split_tail(held_out);
        if train.is_empty() {
            bail!(
                "validation_fraction: {} holds out all {} training images; give a smaller share",
                config.validation_fraction,
                held_out
            );
        }
        Ok(Self {
            train,
            valid,
            test: ImageDataset::new(splits.test_images, splits.test_labels),
        })
    }
}

/// The epoch a resumed run continues from: its newest checkpoint that Burn can restore (its
/// learner panics on one it cannot read). `None` for a new run.
fn resumed_epoch(config: &RunConfig, start: Start, device: &Device) -> Result<Option<usize>> {
    if !start.resume {
        return Ok(None);
    }
    let run = &config.output;
    let network = config.network().init(device);
    let newest = newest_valid(run, |epoch| check_resumable(run, epoch, &network));
    let epoch = newest.map_err(|e| another_network(e, config, start))?.0;
    // Equal: the last epoch is done and only the test pass and summary are left.
    if epoch > config.epochs {
        bail!(
            "--resume: the run in {} has trained {epoch} epochs, more than the {} asked for; \
             give --epochs above {epoch} to continue it",
            run.display(),
            config.epochs
        );
    }
    Ok(Some(epoch))
}

/// Burn's training options for the run: metrics, checkpoints, the renderer, signals, the
/// epoch to resume from, gradient accumulation and the devices.
fn learner_options(
    training: SupervisedTraining<Network>,
    config: &RunConfig,
    plan: &RunPlan,
    resumed_from: Option<usize>,
    renderer: EpochRenderer,
) -> SupervisedTraining<Network> {
    let [model_ckpt, optim_ckpt, scheduler_ckpt] = AtomicCheckpointer::for_run(&config.output);
    stop_on_signal(&training.interrupter());
    panics::stop_on_loader_panic(&training.interrupter());
    let mut training = training
        .with_application_logger(Some(Box::new(panics::RunLog(
            config.output.join("experiment.log"),
        ))))
        .metrics((AccuracyMetric::new(), LossMetric::new()))
        .metric_train_numeric(LearningRateMetric::new())
        .with_custom_checkpointers(model_ckpt, optim_ckpt, scheduler_ckpt)
        // The newest epochs only: every command takes the newest complete checkpoint.
        .with_checkpointing_strategy(KeepLastNCheckpoints::new(KEPT))
        .renderer(Box::new(renderer))
        .num_epochs(config.epochs);
    if let Some(epoch) = resumed_from {
        training = training.checkpoint(epoch);
    }
    if plan.micro_batches > 1 {
        training = training.grads_accumulation(plan.micro_batches);
    }
    if plan.devices.len() > 1 {
        // Gradients go to the first device, which steps the optimiser (see docs/gpu.md).
        let strategy =
            ExecutionStrategy::multi(plan.devices.clone(), MultiDeviceOptim::OptimMainDevice);
        training = training.with_training_strategy(strategy.into());
    }
    training
}

/// The trained network, or why training stopped: a loader thread's panic, a failure (a batch
/// too big for the device named as such), a loss that turned NaN, or a signal. Each names the
/// checkpoint it kept and how to go on.
fn outcome(
    result: LearningResult<Network>,
    config: &RunConfig,
    plan: &RunPlan,
    non_finite: Option<NonFinite>,
) -> Result<Network> {
    let run = &config.output;
    if result.error.is_some() || result.interrupted.is_some() {
        remove_incomplete(run);
    }
    if let Some(panic) = panics::loader_panic() {
        bail!(
            "training failed: a data-loader thread panicked: {panic}; {}",
            kept_checkpoint(run, SAME_COMMAND)
        );
    }
    if let Some(error) = result.error {
        let error = error.to_string();
        if let Some(error) = lost_workers(config, plan, &error) {
            return Err(error);
        }
        // cubecl's wording when a buffer does not fit the device (or its largest buffer).
        if error.contains("can't allocate buffer") {
            let error = plan.does_not_fit(&config.network(), &error);
            return Err(error.context("training failed"));
        }
        bail!(
            "training failed: {error}; {}",
            kept_checkpoint(run, SAME_COMMAND)
        );
    }
    if let Some(NonFinite {
        epoch,
        step,
        learning_rate,
    }) = non_finite
    {
        bail!(
            "training stopped at epoch {epoch}, step {step}: the training loss or a gradient \
             became NaN or infinite on {} ({}), at learning rate {learning_rate:.3e}. \
             Try a lower learning_rate, batch_norm = true for an FMP net, or another --backend; \
             {}",
            config.backend,
            plan.device_name(),
            kept_checkpoint(
                run,
                "after changing the config, continue from it with --resume"
            ),
        );
    }
    if result.interrupted.is_some() {
        bail!(
            "training was interrupted by a signal after its current step; {}",
            kept_checkpoint(run, SAME_COMMAND)
        );
    }
    Ok(result.model)
}

/// The `show` command for the run's network and the digit committed with the project, said as
/// the user runs the binary: through cargo in a source tree, else as itself.
fn show_hint(run: &Path) {
    let example = Path::new("samples/digit-7.png");
    let image = match example.is_file() {
        true => example.display().to_string(),
        false => "IMAGE.png".into(),
    };
    let command = match Path::new("Cargo.toml").is_file() {
        true => "cargo run -p train --".to_string(),
        false => std::env::args().next().unwrap_or_else(|| "train".into()),
    };
    say!(
        "to see what every layer does to one image: {command} show {} {image}",
        run.display()
    );
}

/// The page of the test pass's confusion matrices and worst mistakes, in the run directory.
const EVALUATION_HTML: &str = "evaluation.html";

/// `config` as the run saves it: a relative `data_dir` made absolute, so that `eval` and the
/// other commands find the data from any folder.
fn saved(config: &RunConfig) -> RunConfig {
    let data_dir = config
        .data_dir
        .as_ref()
        .map(|dir| match std::path::absolute(dir) {
            Ok(absolute) => absolute,
            Err(_) => dir.clone(),
        });
    RunConfig {
        data_dir,
        ..config.clone()
    }
}

/// What a run writes into its directory; `check_output` lets a new run replace these (left by
/// an attempt that stopped before its first checkpoint) and nothing else.
const RUN_FILES: [&str; 9] = [
    "config.toml",
    "summary.json",
    EVALUATION_HTML,
    curves::CSV,
    curves::SVG,
    "experiment.log",
    "train",
    "valid",
    "checkpoint",
];

/// Refuses, before anything is written, an output folder the run must not write into: for a
/// new run, one that holds a checkpoint, files no run writes, or another run's config (unless
/// `start` reuses the output); for a resumed run, one without a complete checkpoint, a finished
/// run, or a run trained with other settings.
fn check_output(config: &RunConfig, start: Start, config_text: &str) -> Result<()> {
    let run = &config.output;
    check_output_folder("output", run, "the run")?;
    let complete = last_complete(run);
    match (start.resume, complete) {
        (true, None) => bail!(
            "--resume: no complete checkpoint in {}",
            run.join("checkpoint").display()
        ),
        (true, Some(epoch)) => return check_resume(config, start, epoch),
        (false, Some(epoch)) if tested_after(&run.join("summary.json"), epoch) => bail!(
            "{} already holds a finished run ({epoch} epochs, tested); give --output for a new \
             one, or train it further with its own config: train {} --resume --epochs {}",
            run.display(),
            run.join("config.toml").display(),
            epoch + 1
        ),
        (false, Some(_)) => bail!(
            "{} already holds a run; continue it with --resume (with its own config: train {} \
             --resume), or give --output for a new one",
            run.display(),
            run.join("config.toml").display()
        ),
        (false, None) if start.reuse_output => return Ok(()),
        (false, None) => {}
    }
    let Ok(entries) = std::fs::read_dir(run) else {
        return Ok(());
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    for name in names {
        let path = run.join(&name);
        let own = RUN_FILES.contains(&name.strip_suffix(".tmp").unwrap_or(&name));
        if name == "config.toml" {
            // The same command started again after a stop before the first checkpoint.
            if std::fs::read_to_string(&path).is_ok_and(|text| text == config_text) {
                continue;
            }
            bail!(
                "{} holds another config than this run's (yours, or a run's that saved no \
                 checkpoint); train into a new --output, or pass --reuse-output to replace it",
                path.display()
            );
        }
        if !own {
            bail!(
                "{} holds {}, which a run does not write; train into an empty or new \
                 --output, or pass --reuse-output to write the run's files beside it",
                run.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Refuses to resume a run that has `trained` all its epochs and been tested, or one that
/// was trained with other settings than `config` gives (a resumed run keeps its seed, batch,
/// optimiser, schedule, augmentation and network).
fn check_resume(config: &RunConfig, start: Start, trained: usize) -> Result<()> {
    let run = &config.output;
    // Where the run's config.toml is gone, its checkpoints still name a network of another
    // shape (`another_network`).
    if let Ok(own) = RunConfig::load(&run.join("config.toml"), &Overrides::default()) {
        let given = format!("{} with the flags given", start.origin.display());
        let differences = own.training_differences(config, ["the run's config", &given]);
        if !differences.is_empty() {
            bail!(resume_refused(config, start, &differences.join(", ")));
        }
    }
    let summary = run.join("summary.json");
    if trained == config.epochs && tested_after(&summary, trained) {
        bail!(
            "--resume: the run in {} is finished: it trained its {trained} epochs and was \
             tested (summary in {}). Give --epochs above {trained} to train it further, or \
             evaluate it again with: train eval {}",
            run.display(),
            summary.display(),
            run.display()
        );
    }
    Ok(())
}

/// Whether the summary at `path` is that of a run tested after `epochs` epochs.
fn tested_after(path: &Path, epochs: usize) -> bool {
    let summary = std::fs::read(path).ok();
    let summary: Option<serde_json::Value> = summary.and_then(|s| serde_json::from_slice(&s).ok());
    summary.is_some_and(|s| s["epochs"].as_array().is_some_and(|e| e.len() == epochs))
}

/// The refusal to resume `run` with `config` (from `origin`) when its checkpoints are of
/// another network: both networks named, and the way to go on.
fn another_network(error: anyhow::Error, config: &RunConfig, start: Start) -> anyhow::Error {
    if !error.is::<crate::weights::Mismatch>() {
        return error;
    }
    let own = RunConfig::load(&config.output.join("config.toml"), &Overrides::default());
    let given = start.origin.display().to_string();
    let differences = own.map(|own| own.network_differences(config, ["the run's config", &given]));
    match differences {
        Ok(differences) => error.context(resume_refused(config, start, &differences)),
        Err(_) => error.context(resume_refused(config, start, "")),
    }
}

/// Why the run in `config`'s output does not resume with `config` (from `start`), given the
/// `differences` between the run's settings and these ("" where they are unknown), and the two
/// ways on.
fn resume_refused(config: &RunConfig, start: Start, differences: &str) -> String {
    let (run, origin) = (config.output.display(), start.origin.display());
    let network = ["dataset ", "model."];
    let what = match differences.is_empty() || network.iter().any(|n| differences.contains(n)) {
        true => "of another network",
        false => "trained with other settings",
    };
    let differences = match differences.is_empty() {
        true => String::new(),
        false => format!(" ({differences})"),
    };
    let flags: Vec<String> = RunConfig::MAY_CHANGE_ON_RESUME
        .iter()
        .filter(|key| **key != "output")
        .map(|key| format!("--{}", key.replace('_', "-")))
        .collect();
    format!(
        "{run} holds a run {what} than {origin} describes{differences}. Nothing was changed; to \
         continue that run, resume it with its own config: train {} --resume ({} still apply); \
         to train {origin} instead, give a new --output",
        config.output.join("config.toml").display(),
        flags.join(", ")
    )
}

/// How to go on from a run that stopped through no fault of its config.
const SAME_COMMAND: &str = "continue with the same command and --resume";

/// The failure of a run on workers, naming those that stopped answering (or, where all still
/// answer, every worker of the run), with `cause` (Burn's message) and how to go on; `None` for
/// a run on this machine's devices only.
fn lost_workers(config: &RunConfig, plan: &RunPlan, cause: &str) -> Option<anyhow::Error> {
    let what = remote::lost(&plan.devices, cause)?;
    Some(anyhow::anyhow!(
        "training failed: {what}; {}",
        kept_checkpoint(
            &config.output,
            "once the worker runs again, continue with the same command and --resume"
        )
    ))
}

/// What a stopped run leaves and, where a checkpoint is kept, `how` to go on from it.
fn kept_checkpoint(run: &Path, how: &str) -> String {
    let folder = run.join("checkpoint");
    match last_complete(run) {
        Some(epoch) => format!(
            "the checkpoint of epoch {epoch} is kept in {}; {how}",
            folder.display()
        ),
        None => "no epoch had finished, so there is no checkpoint to resume from".into(),
    }
}

/// Stops `interrupter` at the first SIGINT (Ctrl-C) or SIGTERM: Burn's learner finishes the
/// step it is in and returns, and the run ends with the newest epoch's checkpoint on disk. A
/// second signal ends the process at once.
fn stop_on_signal(interrupter: &Interrupter) {
    static CURRENT: OnceLock<Mutex<Option<Interrupter>>> = OnceLock::new();
    static SIGNALLED: AtomicBool = AtomicBool::new(false);
    let current = CURRENT.get_or_init(|| {
        let installed = ctrlc::set_handler(|| {
            if SIGNALLED.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            say_err!("\nstopping after the current step (a second Ctrl-C or signal stops at once)");
            let current = CURRENT.get().and_then(|c| c.lock().ok()?.clone());
            if let Some(interrupter) = current {
                interrupter.stop(Some("interrupted by a signal"));
            }
        });
        if let Err(e) = installed {
            say_err!("warning: Ctrl-C will end the run without a clean stop: {e}");
        }
        Mutex::new(None)
    });
    *panics::lock(current) = Some(interrupter.clone());
}
