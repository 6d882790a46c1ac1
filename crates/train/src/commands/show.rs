//! `train show`: what a trained network does to one image, as a self-contained HTML page: the
//! padded input, the first feature maps of every layer, the regions of one pass of each FMP
//! layer drawn over its input, and the class probabilities of each pass and of their average.

use std::path::PathBuf;

use anyhow::{Result, anyhow};

use crate::{
    Overrides,
    files::{check_output_folder, write_atomic},
    images::{ImageArgs, read_image},
    inference::argmax,
    layer_report::{html, report},
    trained::ModelArgs,
};

/// Write an HTML report of what every layer of a trained network does to one image.
#[derive(clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The image (PNG or JPEG), converted to the dataset's channels and size.
    image: PathBuf,
    /// Forward passes whose probabilities are shown and averaged; default: the config's
    /// test_passes (12 for FMP nets).
    #[arg(long)]
    passes: Option<usize>,
    #[command(flatten)]
    reading: ImageArgs,
    /// Seed of an FMP net's pooling regions; default: the run's seed, so that `show` and
    /// `predict` give an image the same answer.
    #[arg(long)]
    seed: Option<u64>,
    /// Folder to write report.html to.
    #[arg(long, default_value = "show")]
    output: PathBuf,
}

/// Runs `train show`.
pub fn run(args: ShowArgs) -> Result<()> {
    check_output_folder("--output", &args.output, "report.html")?;
    let trained = args.model.load(Overrides::default())?;
    let passes = trained.passes(args.passes)?;
    let prepared = read_image(&args.image, trained.dataset(), args.reading.preparation())?;
    prepared.say_notes(&args.image);
    let images = trained
        .batcher()?
        .tensors(vec![prepared.item], &trained.device)
        .0;
    let seed = args.seed.unwrap_or(trained.config.seed);
    let report = report(&trained, images, passes, seed)?;
    std::fs::create_dir_all(&args.output)
        .map_err(|e| anyhow!("cannot create {}: {e}", args.output.display()))?;
    let path = args.output.join("report.html");
    let title = format!("{} on {}", trained.network.name(), args.image.display());
    write_atomic(&path, html(&title, &report)?.as_bytes())?;
    let best = argmax(&report.average);
    say!(
        "{}: {} ({:.1}% averaged over {passes} passes); report in {}",
        args.image.display(),
        report.classes[best],
        100.0 * report.average[best],
        path.display()
    );
    Ok(())
}
