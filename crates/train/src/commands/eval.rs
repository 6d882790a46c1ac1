//! `train eval`: a trained network's evaluation on its dataset's test set: accuracy after one
//! pass and averaged over several, the confusion matrix and per-class accuracy, and optionally
//! a page with the worst mistakes.

use std::path::PathBuf;

use anyhow::Result;
use data::ImageDataset;
use serde::Serialize;

use crate::{
    Overrides,
    evaluation::{Evaluated, evaluate},
    files::{write_atomic, write_json},
    inference::{averaged_note, percent_and_error},
    trained::ModelArgs,
};

/// Evaluate a trained network on its dataset's test set.
#[derive(clap::Args)]
pub struct EvalArgs {
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
    /// Also write a page with the confusion matrices and the worst mistakes to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Seed of an FMP net's pooling regions; default: the run's seed, which the test pass at the
    /// end of training used, so that an evaluation repeats that one exactly.
    #[arg(long)]
    seed: Option<u64>,
}

/// A trained network's evaluation on its dataset's test set.
#[derive(Debug, Serialize)]
pub struct Evaluation {
    /// The weights evaluated.
    pub weights: PathBuf,
    /// The dataset's name.
    pub dataset: String,
    /// The seed of the pooling regions (FMP nets).
    pub seed: u64,
    /// What was measured: accuracy, per pass, confusion matrices, the worst mistakes.
    #[serde(flatten)]
    pub evaluated: Evaluated,
}

/// Runs `train eval`: loads the network, evaluates it on the test set, prints and writes the
/// result.
pub fn run(args: EvalArgs) -> Result<()> {
    crate::files::check_output_file("--json", args.json.as_deref())?;
    crate::files::check_output_file("--html", args.html.as_deref())?;
    let overrides = Overrides {
        data_dir: args.data_dir,
        batch_size: args.batch_size,
        ..Overrides::default()
    };
    let trained = args.model.load(overrides)?;
    let mut passes = trained.passes(args.passes)?;
    if passes > 1 && !trained.network.draws_pooling_regions() {
        say_err!(
            "note: {passes} passes asked for, one run: {} draws no pooling regions, so every \
             pass over the test set would give the same",
            trained.network.name()
        );
        passes = 1;
    }
    let (splits, _) = trained.config.load_splits()?;
    let test_set = ImageDataset::new(splits.test_images, splits.test_labels);
    let seed = args.seed.unwrap_or(trained.config.seed);
    let kind = trained.dataset();
    let evaluated = evaluate(
        &trained.network,
        &test_set,
        kind,
        &trained.batcher()?,
        trained.config.batch_size,
        &trained.device,
        passes,
        seed,
    )?;
    say!(
        "{}: test accuracy {}{} on {} {} images",
        trained.weights.display(),
        percent_and_error(evaluated.accuracy_one_pass),
        averaged_note(passes, evaluated.accuracy),
        evaluated.images,
        kind.name()
    );
    say!("{}", evaluated.table().trim_end());
    if let Some(note) = evaluated.spread_note() {
        say!("{note}");
    }
    if let Some(html) = &args.html {
        let title = format!("{} on {}", trained.network.name(), kind.name());
        write_atomic(html, evaluated.html(&title, &test_set, kind)?.as_bytes())?;
        say!(
            "confusion matrices and the worst mistakes: {}",
            html.display()
        );
    }
    let evaluation = Evaluation {
        weights: trained.weights.clone(),
        dataset: kind.name().to_string(),
        seed,
        evaluated,
    };
    write_json(args.json.as_deref(), &evaluation)
}
