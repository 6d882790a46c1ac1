//! `train export`: a trained network as safetensors with PyTorch's names and as a Burn record,
//! with its config and reference logits, each file checked by loading it back.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use burn::prelude::*;
use models::Network;
use ops::{PoolRegions, Span};
use serde::Serialize;

use crate::{
    Overrides,
    files::{check_output_folder, write_atomic},
    inference::host_values,
    trained::{EXPORT_BURN, EXPORT_CONFIG, EXPORT_PYTORCH, EXPORT_REFERENCE, ModelArgs, Trained},
    weights::{self, WeightsFormat},
};

/// Write a trained network as safetensors with PyTorch's names (for scripts/cnn_models.py) and
/// as a Burn record, with its config and reference logits; checks both by reloading.
#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Folder to write model.safetensors, model.bpk, config.toml and reference.json to.
    #[arg(long)]
    output: PathBuf,
}

/// The seed that fixes an FMP net's pooling regions for reference logits.
const REFERENCE_SEED: u64 = 7;

/// Runs `train export` and says what it wrote.
pub fn run(args: ExportArgs) -> Result<()> {
    check_output_folder("--output", &args.output, "the exported files")?;
    let trained = args.model.load(Overrides::default())?;
    let export = export(&trained, &args.output)?;
    say!(
        "exported {} ({}) from {}:",
        trained.network.name(),
        trained.config.dataset,
        trained.weights.display()
    );
    for file in &export.files {
        say!("  {}", file.display());
    }
    say!(
        "both weights files load back and reproduce the network's logits (largest \
         difference {:.1e}); check the PyTorch side with: python3 scripts/check_export.py {}",
        export.reload_difference,
        args.output.display()
    );
    Ok(())
}

/// Logits of a fixed input with fixed pooling regions, written beside an export so that another
/// implementation can check that it computes the same function (`scripts/check_export.py`).
#[derive(Debug, Serialize)]
pub struct Reference {
    /// Architecture name.
    pub model: String,
    /// Input shape `[batch, channels, side, side]` (normalised values, as the network sees
    /// them).
    pub input_shape: [usize; 4],
    /// The input, row-major.
    pub input: Vec<f32>,
    /// Logits `[batch][classes]`.
    pub logits: Vec<Vec<f32>>,
    /// The pooling regions of each FMP layer, in order (empty for the LeNets).
    pub regions: Vec<RegionsJson>,
}

/// One FMP layer's regions: for each image and group (channel, or one group per image),
/// `[start, length]` of every output row and column.
#[derive(Debug, Serialize)]
pub struct RegionsJson {
    /// Groups per image: 1 when the channels share regions.
    pub groups: usize,
    /// `[batch * groups][out_h]` row intervals.
    pub rows: Vec<Vec<[u32; 2]>>,
    /// `[batch * groups][out_w]` column intervals.
    pub cols: Vec<Vec<[u32; 2]>>,
}

impl From<&PoolRegions> for RegionsJson {
    fn from(r: &PoolRegions) -> Self {
        let split = |spans: &[Span], n: usize| {
            spans
                .chunks(n)
                .map(|c| c.iter().map(|s| [s.start, s.len]).collect())
                .collect()
        };
        Self {
            groups: r.groups,
            rows: split(&r.rows, r.out[0]),
            cols: split(&r.cols, r.out[1]),
        }
    }
}

/// The reference input: two images of smooth, deterministic values, the same on every backend.
fn reference_input(network: &Network, channels: usize, device: &Device) -> Tensor<4> {
    let side = network.input_size();
    let shape = [2, channels, side, side];
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|i| (1.5 * (i as f64 * 0.37).sin() + 0.5 * (i as f64 * 0.011).cos()) as f32)
        .collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Logits of the reference input with regions fixed by [`REFERENCE_SEED`].
fn reference_logits(network: &Network, input: Tensor<4>) -> Tensor<2> {
    network.reseed(REFERENCE_SEED);
    network.forward(input)
}

/// What `export` wrote and how well the reloaded files reproduce the network.
#[derive(Debug, Serialize)]
pub struct Export {
    /// The files written.
    pub files: Vec<PathBuf>,
    /// Largest absolute difference between the network's reference logits and those of each
    /// written weights file loaded back.
    pub reload_difference: f32,
}

/// Writes `trained` to `folder`: safetensors with PyTorch names, Burn's record, the run
/// configuration and reference logits; then loads both weights files back into fresh networks
/// and checks that they give the same logits.
pub fn export(trained: &Trained, folder: &Path) -> Result<Export> {
    let config = toml::to_string(&trained.config)?;
    let network = &trained.network;
    let input = reference_input(network, trained.dataset().channels(), &trained.device);
    network.reseed(REFERENCE_SEED);
    let regions = network.next_regions(2);
    let logits = reference_logits(network, input.clone());
    let [batch, classes] = logits.dims();
    let logit_values = host_values(logits.clone())?;
    if logit_values.iter().any(|v| !v.is_finite()) {
        bail!(
            "{}: the network's outputs are NaN or infinite (the weights of a run that \
             diverged?); nothing was exported",
            trained.weights.display()
        );
    }
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;

    let mut files = Vec::new();
    let mut reload_difference = 0f32;
    for (name, format) in [
        (EXPORT_PYTORCH, WeightsFormat::PyTorch),
        (EXPORT_BURN, WeightsFormat::Burnpack),
    ] {
        let path = folder.join(name);
        weights::save(network, format, &path, &config)?;
        let fresh = trained.config.network().init(&trained.device);
        let reloaded = weights::load(fresh, &path)?;
        let difference = (reference_logits(&reloaded, input.clone()) - logits.clone())
            .abs()
            .max()
            .into_scalar::<f32>();
        // NaN, which `f32::max` would pass over, makes the check below fail.
        if difference.is_nan() || difference > reload_difference {
            reload_difference = difference;
        }
        files.push(path);
    }
    ensure!(
        reload_difference <= 1e-5,
        "the exported weights do not reproduce the network: logits differ by \
         {reload_difference} after loading them back"
    );

    let input_shape = input.dims();
    let logits = logit_values;
    let reference = Reference {
        model: network.name().to_string(),
        input_shape,
        input: host_values(input)?,
        logits: (0..batch)
            .map(|i| logits[i * classes..(i + 1) * classes].to_vec())
            .collect(),
        regions: regions.iter().map(RegionsJson::from).collect(),
    };
    let json = serde_json::to_string(&reference)?;
    for (name, bytes) in [
        (EXPORT_CONFIG, config.as_bytes()),
        (EXPORT_REFERENCE, json.as_bytes()),
    ] {
        let path = folder.join(name);
        write_atomic(&path, bytes)?;
        files.push(path);
    }
    Ok(Export {
        files,
        reload_difference,
    })
}
