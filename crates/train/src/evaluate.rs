//! `train eval`: a trained network's accuracy on its dataset's test set, and the multi-pass
//! evaluation that training's test pass and `predict` share.

use std::path::PathBuf;

use anyhow::Result;
use burn::{
    data::{dataloader::batcher::Batcher, dataset::Dataset},
    prelude::*,
    tensor::activation::softmax,
};
use data::{ImageBatcher, ImageDataset};
use models::{ImageBatch, Network};
use serde::Serialize;

use crate::{Overrides, files::write_json, trained::ModelArgs};

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

/// `99.12% (error 0.88%)`.
pub fn percent_and_error(accuracy: f64) -> String {
    format!("{accuracy:.2}% (error {:.2}%)", 100.0 - accuracy)
}

/// `, 12-pass 99.40% (error 0.60%)` after several passes, nothing after one.
pub fn averaged_note(passes: usize, accuracy: f64) -> String {
    if passes > 1 {
        format!(", {passes}-pass {}", percent_and_error(accuracy))
    } else {
        String::new()
    }
}

/// A tensor's values, read back from its device.
pub fn host_values<const D: usize>(x: Tensor<D>) -> Result<Vec<f32>> {
    x.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| anyhow::anyhow!("cannot read values back from the device: {e:?}"))
}

/// Softmax probabilities of `images` after the first forward pass and averaged over `passes`
/// passes (at least one): an FMP net pools over new regions on each, so the passes form an
/// ensemble.
pub fn pass_probabilities(model: &Network, images: Tensor<4>, passes: usize) -> [Tensor<2>; 2] {
    let first = softmax(model.forward(images.clone()), 1);
    let mut sum = first.clone();
    for _ in 1..passes.max(1) {
        sum = sum + softmax(model.forward(images.clone()), 1);
    }
    [first, sum.div_scalar(passes.max(1) as f64)]
}

/// Percentage of `dataset` that `model` classifies correctly, evaluated on `device`: after one
/// forward pass, and from the softmax probabilities averaged over `passes` passes.
pub fn accuracy(
    model: &Network,
    dataset: &ImageDataset,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
    passes: usize,
) -> [f64; 2] {
    let model = model.valid().to_device(device);
    let mut correct = [0usize; 2];
    let indices: Vec<usize> = (0..dataset.len()).collect();
    for chunk in indices.chunks(batch_size) {
        let items = dataset
            .get_many(chunk.to_vec())
            .expect("indices are in range");
        let batch: ImageBatch = batcher.batch(items, device);
        let probabilities = pass_probabilities(&model, batch.images, passes);
        for (hits, probabilities) in correct.iter_mut().zip(probabilities) {
            let predicted = probabilities.argmax(1).flatten::<1>(0, 1);
            let agree: i64 = predicted
                .equal(batch.targets.clone())
                .int()
                .sum()
                .into_scalar();
            *hits += agree as usize;
        }
    }
    correct.map(|hits| 100.0 * hits as f64 / dataset.len().max(1) as f64)
}
