//! `train predict`: classifies image files (PNG, JPEG) with a trained network.

use std::path::PathBuf;

use anyhow::Result;
use burn::data::dataloader::batcher::Batcher;
use models::ImageBatch;
use serde::Serialize;

use crate::{
    Overrides,
    files::write_json,
    inference::{host_values, pass_probabilities, read_image},
    trained::{ModelArgs, Trained},
};

/// Classify image files (PNG, JPEG) with a trained network.
#[derive(clap::Args)]
pub struct PredictArgs {
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

/// One image file's class probabilities.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// The image file.
    pub file: PathBuf,
    /// The most probable class's name.
    pub class: String,
    /// Probability of each class, in label order, averaged over the passes.
    pub probabilities: Vec<f32>,
}

/// Runs `train predict`: one line per image with its most probable classes by name.
pub fn run(args: PredictArgs) -> Result<()> {
    crate::files::check_output_file("--json", args.json.as_deref())?;
    let trained = args.model.load(Overrides::default())?;
    let passes = trained.passes(args.passes)?;
    let predictions = predict(&trained, &args.images, passes, args.invert)?;
    let names = trained.dataset().class_names();
    for prediction in &predictions {
        let mut ranked: Vec<usize> = (0..prediction.probabilities.len()).collect();
        ranked
            .sort_by(|&a, &b| prediction.probabilities[b].total_cmp(&prediction.probabilities[a]));
        let listed: Vec<String> = ranked
            .iter()
            .take(args.top.max(1))
            .map(|&c| format!("{} {:.1}%", names[c], 100.0 * prediction.probabilities[c]))
            .collect();
        say!("{}: {}", prediction.file.display(), listed.join(", "));
    }
    write_json(args.json.as_deref(), &predictions)
}

/// Classifies image files (PNG or JPEG): each is converted to the dataset's channels (grey or
/// RGB) and image size, optionally inverted (dark strokes on white paper, where MNIST has light
/// on black), padded and normalised as in training. The probabilities are averaged over
/// `passes` forward passes (an FMP net pools over new regions on each).
pub fn predict(
    trained: &Trained,
    files: &[PathBuf],
    passes: usize,
    invert: bool,
) -> Result<Vec<Prediction>> {
    let kind = trained.dataset();
    let items = files
        .iter()
        .map(|file| read_image(file, kind, invert))
        .collect::<Result<Vec<_>>>()?;
    let batch: ImageBatch = trained.batcher()?.batch(items, &trained.device);
    let [_, probabilities] = pass_probabilities(&trained.network, batch.images, passes);
    let [count, classes] = probabilities.dims();
    let values = host_values(probabilities)?;
    let names = kind.class_names();
    Ok((0..count)
        .map(|i| {
            let row = values[i * classes..(i + 1) * classes].to_vec();
            let best = (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0);
            Prediction {
                file: files[i].clone(),
                class: names[best].to_string(),
                probabilities: row,
            }
        })
        .collect())
}
