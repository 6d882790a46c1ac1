//! The `train` command: trains, evaluates, times, explains and exports the course's networks.
//!
//! [`commands`] holds one module per command, each with its flags (`clap::Args`) and a `run`
//! function, named as the command: `train` (the default command, `train <config.toml>`), `eval`,
//! `predict`, `export`, `bench` (with its chart and `loader-bench`), `summary`, `show`, `serve`,
//! `tiny_cnn`, `devices` and `worker`. No command imports another; what they share sits beside them:
//! `config` (the TOML run config and the flags that override it), `plan` (a config's batch on
//! its devices), [`device`] (backend name and `--devices` to Burn devices), `inference` (forward
//! passes, tensors read back), `evaluation` (accuracy, confusion matrices, the worst mistakes),
//! `images` (image files and drawings as the network's input), `layer_report` (what every layer
//! does to one image), `trained` (a trained network found from a run directory, export folder or
//! weights file), `weights` (its file formats), `accumulate` (micro-batches), `checkpoint`,
//! `curves` and `progress` (what a run writes and shows), `remote` (devices other machines serve), `panics` (a loader thread's panic fails
//! the run), `output` (printing a closed pipe cannot crash), `timing` and `files` (atomic
//! writes).
//!
//! Public API: [`Cli`] and [`run`] (all the binary calls); [`RunConfig`] and [`Overrides`];
//! [`device`]; [`last_complete`] and [`read_curves`], [`CURVES_CSV`] (reading a run
//! directory).

#[macro_use]
mod output;

mod accumulate;
mod checkpoint;
mod commands;
mod config;
mod curves;
pub mod device;
mod evaluation;
mod files;
mod images;
mod inference;
mod layer_report;
mod panics;
mod plan;
mod progress;
mod remote;
mod timing;
mod trained;
mod weights;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use commands::{
    bench, devices, eval, export, predict, serve, show, summary, tiny_cnn, train, worker,
};

pub use checkpoint::last_complete;
pub use config::{ConfigError, Overrides, RunConfig};
pub use curves::{CSV as CURVES_CSV, EpochRecord, read_curves};
pub use device::BackendName;

/// The version, and the language this build compiles wgpu's kernels to: the `spirv` feature's
/// build and the default one are otherwise the same program.
const VERSION: &str = match cfg!(feature = "spirv") {
    true => concat!(env!("CARGO_PKG_VERSION"), " (wgpu kernels: SPIR-V)"),
    false => concat!(env!("CARGO_PKG_VERSION"), " (wgpu kernels: WGSL)"),
};

/// Train LeNet-5 and friends with Burn on CPU (flex, ndarray) or GPU (wgpu).
///
/// Data is looked up in the config's data_dir, then $CNN_DATA_DIR, then ./data; full MNIST is
/// downloaded there when absent.
#[derive(Parser)]
#[command(name = "train", version = VERSION, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: train::RunArgs,
}

#[derive(Subcommand)]
enum Command {
    Bench(bench::BenchArgs),
    LoaderBench(bench::LoaderBenchArgs),
    TinyCnn(tiny_cnn::TinyCnnArgs),
    Summary(summary::SummaryArgs),
    Show(show::ShowArgs),
    Serve(serve::ServeArgs),
    Export(export::ExportArgs),
    Predict(predict::PredictArgs),
    Eval(eval::EvalArgs),
    Devices(devices::DevicesArgs),
    Worker(worker::WorkerArgs),
}

/// The message for a first command-line word that names neither a command nor a file (no dot,
/// no slash, nothing there): clap alone takes such a word for the config, then refuses whatever
/// follows it as "cannot be used with [CONFIG]". It names the config the word is the name of,
/// or else a command within two edits of it.
pub fn misspelt_command(args: &[std::ffi::OsString]) -> Option<String> {
    let word = args.get(1)?.to_str()?;
    if word.starts_with('-') || word.contains(['.', '/']) || std::path::Path::new(word).exists() {
        return None;
    }
    if command_names().contains(&word.to_string()) {
        return None;
    }
    let config = std::path::Path::new("configs").join(format!("{word}.toml"));
    let hint = match nearest_command(word) {
        _ if config.is_file() => format!("to train with {}, give its path", config.display()),
        Some(name) => format!("did you mean `{name}`?"),
        None => "to train, give a config file such as configs/quickstart.toml".into(),
    };
    Some(format!(
        "there is no command `{word}`; {hint} (`--help` lists the commands)"
    ))
}

/// The command line `args`, or clap's error. A word after the config that is no option's value
/// is named as such: clap takes it for a command and refuses it as "the subcommand cannot be
/// used with [CONFIG]", whether or not a command has that name.
pub fn parse(args: &[std::ffi::OsString]) -> Result<Cli, clap::Error> {
    use clap::error::{ContextKind, ErrorKind};
    Cli::try_parse_from(args).map_err(|error| {
        let stray = match (error.kind(), error.get(ContextKind::InvalidSubcommand)) {
            (ErrorKind::ArgumentConflict, Some(word)) => word.to_string(),
            _ => return error,
        };
        let hint = match nearest_command(&stray) {
            Some(name) if name == stray => format!("a command comes first: `train {name} ...`"),
            Some(name) => format!("did you mean the command `{name}`? It comes first"),
            None => "commands come before it (`--help` lists them and the options)".into(),
        };
        Cli::command().error(
            ErrorKind::UnknownArgument,
            format!(
                "unexpected `{stray}` after the config: training takes one config file and \
                 options; {hint}"
            ),
        )
    })
}

/// The commands' names, `help` among them.
fn command_names() -> Vec<String> {
    let cli = Cli::command();
    let names = cli.get_subcommands().map(|c| c.get_name().to_string());
    names.chain(["help".to_string()]).collect()
}

/// The command whose name is within two edits of `word`, the nearest where several are.
fn nearest_command(word: &str) -> Option<String> {
    command_names()
        .into_iter()
        .map(|name| (strsim::levenshtein(word, &name), name))
        .min()
        .filter(|(edits, _)| *edits <= 2)
        .map(|(_, name)| name)
}

/// Runs the command `cli` names; without one, trains the config it gives. Output that could not
/// be written (other than to a closed pipe) fails it once it has run.
pub fn run(cli: Cli) -> Result<()> {
    run_command(cli)?;
    match output::failure() {
        Some(e) => anyhow::bail!("cannot write the output: {e}"),
        None => Ok(()),
    }
}

/// Makes the main thread one of rayon's threads, so that it works on the operations it starts
/// instead of waking a worker for each and sleeping until they are done: on the small nets the
/// waking was a large share of a step (docs/performance.md). Only with two threads or more: the
/// main thread does not take work that other threads (a data loader's) hand to the pool except
/// while it runs an operation of its own, so alone in the pool it could leave theirs waiting.
fn work_on_the_main_thread() {
    // rayon reads the variable too, and takes 0 or anything but a number for its default.
    let asked = std::env::var("RAYON_NUM_THREADS").ok();
    let parsed = asked.as_deref().map(str::parse::<usize>);
    if let (Some(value), Some(Err(_))) = (&asked, &parsed) {
        say_err!(
            "warning: RAYON_NUM_THREADS={value:?} is not a number of threads: one per CPU is used"
        );
    }
    let threads = parsed
        .and_then(Result::ok)
        .filter(|&n| n > 0)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1);
    if threads >= 2 {
        // Fails only if the pool already exists, which it does not before the first operation.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .build_global();
    }
}

fn run_command(cli: Cli) -> Result<()> {
    // The servers wait for connections on the main thread and compute on their own threads,
    // as the loader bench's loaders do: there the main thread would take none of the work.
    let computes_on_the_main_thread = !matches!(
        cli.command,
        Some(Command::Serve(_) | Command::Worker(_) | Command::LoaderBench(_))
    );
    if computes_on_the_main_thread {
        work_on_the_main_thread();
    }
    match cli.command {
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::LoaderBench(args)) => bench::run_loader(args),
        Some(Command::TinyCnn(args)) => tiny_cnn::run(args),
        Some(Command::Summary(args)) => summary::run(args),
        Some(Command::Show(args)) => show::run(args),
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Export(args)) => export::run(args),
        Some(Command::Predict(args)) => predict::run(args),
        Some(Command::Eval(args)) => eval::run(args),
        Some(Command::Devices(args)) => devices::run(args),
        Some(Command::Worker(args)) => worker::run(args),
        None => train::run(cli.run),
    }
}
