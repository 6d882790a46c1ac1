//! `train predict`: classifies image files (PNG, JPEG) with a trained network.

use std::path::PathBuf;

use anyhow::{Result, bail};
use data::ImageItem;
use serde::Serialize;

use crate::{
    Overrides,
    files::write_json,
    images::{ImageArgs, read_image},
    inference::{argmax, host_values, pass_probabilities},
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
    #[command(flatten)]
    reading: ImageArgs,
    /// Classes listed per image, most probable first.
    #[arg(long, default_value_t = 3)]
    top: usize,
    /// Also write the predictions as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seed of an FMP net's pooling regions, drawn anew for each image; default: the run's
    /// seed, so that an image gets the same answer however it is given.
    #[arg(long)]
    seed: Option<u64>,
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

/// Runs `train predict`: one line per image with its most probable classes by name. An image
/// that cannot be read is named and the others still classified; the command then fails.
pub fn run(args: PredictArgs) -> Result<()> {
    crate::files::check_output_file("--json", args.json.as_deref())?;
    if args.top == 0 {
        bail!("--top 0: give how many classes to list per image, 1 or more");
    }
    let trained = args.model.load(Overrides::default())?;
    let passes = trained.passes(args.passes)?;
    let preparation = args.reading.preparation();
    let mut read = Vec::new();
    for file in &args.images {
        match read_image(file, trained.dataset(), preparation) {
            Ok(prepared) => {
                prepared.say_notes(file);
                read.push((file.clone(), prepared.item));
            }
            Err(error) => say_err!("{error:#}"),
        }
    }
    let seed = args.seed.unwrap_or(trained.config.seed);
    let predictions = predict(&trained, read, passes, seed)?;
    let names = trained.dataset().class_names();
    for prediction in &predictions {
        let mut ranked: Vec<usize> = (0..prediction.probabilities.len()).collect();
        ranked
            .sort_by(|&a, &b| prediction.probabilities[b].total_cmp(&prediction.probabilities[a]));
        let listed: Vec<String> = ranked
            .iter()
            .take(args.top)
            .map(|&c| format!("{} {:.1}%", names[c], 100.0 * prediction.probabilities[c]))
            .collect();
        say!("{}: {}", prediction.file.display(), listed.join(", "));
    }
    write_json(args.json.as_deref(), &predictions)?;
    let unread = args.images.len() - predictions.len();
    match unread {
        0 => Ok(()),
        n if n == args.images.len() => bail!("no image could be read (named above)"),
        n => bail!(
            "{n} of {} images could not be read (named above); the others were classified",
            args.images.len()
        ),
    }
}

/// Classifies images read from files (see [`read_image`]), padded and normalised as in
/// training. The probabilities are averaged over `passes` forward passes (an FMP net pools over
/// new regions on each, drawn from `seed`). Each image is a batch of its own: an FMP net's
/// regions are drawn per batch, and an image's answer must not depend on the others given.
fn predict(
    trained: &Trained,
    images: Vec<(PathBuf, ImageItem)>,
    passes: usize,
    seed: u64,
) -> Result<Vec<Prediction>> {
    let batcher = trained.batcher()?;
    let names = trained.dataset().class_names();
    images
        .into_iter()
        .map(|(file, item)| {
            let (image, _) = batcher.tensors(vec![item], &trained.device);
            let [_, averaged] = pass_probabilities(&trained.network, image, passes, seed);
            let probabilities = host_values(averaged)?;
            Ok(Prediction {
                file,
                class: names[argmax(&probabilities)].to_string(),
                probabilities,
            })
        })
        .collect()
}
