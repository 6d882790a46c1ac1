//! The `train` command: trains, evaluates, times, explains and exports the course's networks.
//!
//! One module per command, each with its flags (`clap::Args`) and a `run` function:
//! [`fit`] (`train <config.toml>`), `evaluate` (`eval`), `predict`, `export`, `bench` (with
//! its chart and `loader-bench`), `summary`, `show`, `serve`, `tiny_cnn` and `list_devices` (`devices`). What they share: `config` (the TOML
//! run config and the flags that override it), [`device`] (backend name and `--devices` to Burn devices),
//! `trained` (a trained network found from a run directory, export folder or weights file),
//! `weights` (its file formats), `checkpoint`, `curves` and `progress` (what a run writes and
//! shows), `panics` (a loader thread's panic fails the run), `output` (printing a closed pipe
//! cannot crash), `timing` and `files` (atomic writes).
//!
//! Public API: [`Cli`] and [`run`] (all the binary calls); [`RunConfig`] and [`Overrides`];
//! [`device`]; [`last_complete`] and [`read_curves`], [`CURVES_CSV`] (reading a run
//! directory).

#[macro_use]
mod output;

mod accumulate;
mod bench;
mod checkpoint;
mod config;
mod curves;
pub mod device;
mod evaluate;
mod export;
mod files;
mod fit;
mod list_devices;
mod panics;
mod predict;
mod progress;
mod serve;
mod show;
mod summary;
mod timing;
mod tiny_cnn;
mod trained;
mod weights;

use anyhow::Result;
use clap::{Parser, Subcommand};

pub use checkpoint::last_complete;
pub use config::{ConfigError, Overrides, RunConfig};
pub use curves::{CSV as CURVES_CSV, EpochRecord, read_curves};
pub use device::BackendName;

/// Train LeNet-5 and friends with Burn on CPU (flex, ndarray) or GPU (wgpu).
///
/// Data is looked up in the config's data_dir, then $CNN_DATA_DIR, then ./data; full MNIST is
/// downloaded there when absent.
#[derive(Parser)]
#[command(name = "train", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: fit::RunArgs,
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
    Eval(evaluate::EvalArgs),
    Devices(list_devices::DevicesArgs),
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

fn run_command(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Bench(args)) => bench::run(args),
        Some(Command::LoaderBench(args)) => bench::run_loader(args),
        Some(Command::TinyCnn(args)) => tiny_cnn::run(args),
        Some(Command::Summary(args)) => summary::run(args),
        Some(Command::Show(args)) => show::run(args),
        Some(Command::Serve(args)) => serve::run(args),
        Some(Command::Export(args)) => export::run(args),
        Some(Command::Predict(args)) => predict::run(args),
        Some(Command::Eval(args)) => evaluate::run(args),
        Some(Command::Devices(args)) => list_devices::run(args),
        None => fit::run(cli.run),
    }
}
