//! `train eval`: a trained network's accuracy on its dataset's test set, and the multi-pass
//! evaluation that training's test pass and `predict` share.

use std::path::PathBuf;

use anyhow::Result;
use burn::data::dataset::Dataset;
use data::ImageDataset;
use serde::Serialize;

use crate::{
    Overrides,
    files::write_json,
    inference::{accuracy, averaged_note, percent_and_error},
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
}

/// Accuracy of a trained network on its dataset's test set.
#[derive(Debug, Serialize)]
pub struct Evaluation {
    /// The weights evaluated.
    pub weights: PathBuf,
    /// The dataset's name.
    pub dataset: String,
    /// Test images.
    pub images: usize,
    /// Forward passes averaged per image.
    pub passes: usize,
    /// Percent correct after one pass.
    pub accuracy_one_pass: f64,
    /// Percent correct from the probabilities averaged over `passes`.
    pub accuracy: f64,
}

/// Runs `train eval`: loads the network, evaluates it on the test set, prints and writes the
/// result.
pub fn run(args: EvalArgs) -> Result<()> {
    crate::files::check_output_file("--json", args.json.as_deref())?;
    let overrides = Overrides {
        data_dir: args.data_dir,
        batch_size: args.batch_size,
        ..Overrides::default()
    };
    let trained = args.model.load(overrides)?;
    let passes = trained.passes(args.passes)?;
    let (splits, _) = trained.config.load_splits()?;
    let test_set = ImageDataset::new(splits.test_images, splits.test_labels);
    let [accuracy_one_pass, accuracy] = accuracy(
        &trained.network,
        &test_set,
        &trained.batcher()?,
        trained.config.batch_size,
        &trained.device,
        passes,
    );
    let evaluation = Evaluation {
        weights: trained.weights.clone(),
        dataset: trained.dataset().name().to_string(),
        images: test_set.len(),
        passes,
        accuracy_one_pass,
        accuracy,
    };
    say!(
        "{}: test accuracy {}{} on {} {} images",
        evaluation.weights.display(),
        percent_and_error(accuracy_one_pass),
        averaged_note(passes, accuracy),
        evaluation.images,
        evaluation.dataset
    );
    write_json(args.json.as_deref(), &evaluation)
}
