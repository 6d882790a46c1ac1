//! Using a trained network: finding its weights and configuration, classifying image files,
//! evaluating on the test set, and exporting it for PyTorch and for Burn.

use std::path::{Path, PathBuf};

use burn::{data::dataset::Dataset, prelude::*};
use data::{DatasetKind, ImageBatcher, ImageDataset, ImageItem, Splits};
use models::{Network, PoolRegions};
use serde::Serialize;

use crate::{
    Overrides, RunConfig,
    checkpoint::{last_complete, model_checkpoint, write_atomic},
    device,
    weights::{self, WeightsFormat},
};

/// File names inside an export folder.
pub const EXPORT_PYTORCH: &str = "model.safetensors";
/// See [`EXPORT_PYTORCH`].
pub const EXPORT_BURN: &str = "model.bpk";
/// See [`EXPORT_PYTORCH`].
pub const EXPORT_CONFIG: &str = "config.toml";
/// See [`EXPORT_PYTORCH`].
pub const EXPORT_REFERENCE: &str = "reference.json";

/// The seed that fixes an FMP net's pooling regions for reference logits.
const REFERENCE_SEED: u64 = 7;

/// A trained network on its device, with the run configuration it was trained with.
pub struct Trained {
    /// The run configuration (dataset, model), overrides applied.
    pub config: RunConfig,
    /// The network, weights loaded, on `device` (inference: batch norm uses its running
    /// statistics, dropout is off).
    pub network: Network,
    /// Where the network runs.
    pub device: Device,
    /// The weights file it was loaded from.
    pub weights: PathBuf,
}

impl Trained {
    /// Loads the network at `source`: a run directory (its newest complete checkpoint), an
    /// export folder, or a weights file (`.bpk` or `.safetensors`). The configuration is
    /// `config` when given, else the one embedded in a safetensors export, else the
    /// `config.toml` beside the weights (in the export folder or the run directory).
    pub fn load(
        source: &Path,
        config: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Self, String> {
        let (weights, beside) = locate_weights(source)?;
        let config = match (config, weights::embedded_config(&weights)?) {
            (Some(path), _) => RunConfig::load(path, overrides),
            (None, Some(text)) => RunConfig::parse(&text, &weights, overrides),
            (None, None) => match beside {
                Some(path) => RunConfig::load(&path, overrides),
                None => {
                    return Err(format!(
                        "{}: which network are these weights for? No config.toml beside them \
                         and none embedded; pass --config",
                        weights.display()
                    ));
                }
            },
        }
        .map_err(|e| e.to_string())?;
        let device = device::init(config.backend)?;
        let network = weights::load(config.network().init(&device), &weights)?;
        Ok(Self {
            config,
            network,
            device,
            weights,
        })
    }

    fn dataset(&self) -> DatasetKind {
        self.config.dataset_kind()
    }

    fn batcher(&self) -> Result<ImageBatcher, String> {
        let kind = self.dataset();
        let side = kind.image_side();
        ImageBatcher::new(
            kind,
            (kind.channels(), side, side),
            self.network.input_size(),
        )
        .map_err(|e| e.to_string())
    }
}

/// The weights file of `source` and the config file beside it, if any.
fn locate_weights(source: &Path) -> Result<(PathBuf, Option<PathBuf>), String> {
    let existing = |path: PathBuf| path.is_file().then_some(path);
    if source.is_dir() {
        let config = existing(source.join(EXPORT_CONFIG));
        if let Some(epoch) = last_complete(source) {
            return Ok((model_checkpoint(source, epoch), config));
        }
        for name in [EXPORT_BURN, EXPORT_PYTORCH] {
            if let Some(weights) = existing(source.join(name)) {
                return Ok((weights, config));
            }
        }
        return Err(format!(
            "{}: neither a run directory with a complete checkpoint nor an export folder \
             ({EXPORT_BURN} or {EXPORT_PYTORCH})",
            source.display()
        ));
    }
    if !source.is_file() {
        return Err(format!("{}: no such file or directory", source.display()));
    }
    // A checkpoint sits in <run>/checkpoint/, an export's files in the export folder.
    let folder = source.parent().unwrap_or(Path::new("."));
    let config = [Some(folder), folder.parent()]
        .into_iter()
        .flatten()
        .find_map(|dir| existing(dir.join(EXPORT_CONFIG)));
    Ok((source.to_path_buf(), config))
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

/// Classifies image files (PNG or JPEG): each is converted to the dataset's channels (grey or
/// RGB) and image size, optionally inverted (dark strokes on white paper, where MNIST has light
/// on black), padded and normalised as in training. The probabilities are averaged over
/// `passes` forward passes (an FMP net pools over new regions on each).
pub fn predict(
    trained: &Trained,
    files: &[PathBuf],
    passes: usize,
    invert: bool,
) -> Result<Vec<Prediction>, String> {
    let kind = trained.dataset();
    let items = files
        .iter()
        .map(|file| read_image(file, kind, invert))
        .collect::<Result<Vec<_>, _>>()?;
    let batch = burn::data::dataloader::batcher::Batcher::batch(
        &trained.batcher()?,
        items,
        &trained.device,
    );
    let [_, probabilities] = crate::fit::pass_probabilities(&trained.network, batch.images, passes);
    let [count, classes] = probabilities.dims();
    let values = values(probabilities.into_data())?;
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

/// A tensor's values, read back from its device.
fn values(data: TensorData) -> Result<Vec<f32>, String> {
    data.try_to_vec::<f32>()
        .map_err(|e| format!("cannot read values back from the device: {e:?}"))
}

/// Decodes `file` into an item of `kind`'s layout: channels x side x side bytes.
fn read_image(file: &Path, kind: DatasetKind, invert: bool) -> Result<ImageItem, String> {
    use image::imageops::FilterType;
    let decoded = image::ImageReader::open(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?
        .decode()
        .map_err(|e| {
            format!(
                "{}: cannot decode the image (PNG or JPEG expected): {e}",
                file.display()
            )
        })?;
    let side = kind.image_side() as u32;
    let resized = decoded.resize_exact(side, side, FilterType::Triangle);
    // Datasets store images channel by channel (CIFAR's planes); MNIST has one.
    let mut pixels = match kind.channels() {
        1 => resized.to_luma8().into_raw(),
        _ => {
            let rgb = resized.to_rgb8();
            (0..3)
                .flat_map(|c| rgb.pixels().map(move |p| p.0[c]))
                .collect()
        }
    };
    if invert {
        pixels.iter_mut().for_each(|p| *p = 255 - *p);
    }
    Ok(ImageItem { pixels, label: 0 })
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

/// Evaluates `trained` on the test set of its dataset with `passes` passes per image.
pub fn evaluate(trained: &Trained, passes: usize) -> Result<Evaluation, String> {
    let kind = trained.dataset();
    let folder = data::locate(
        kind,
        trained.config.data_dir.as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
    .map_err(|e| e.to_string())?;
    let splits = Splits::load(kind, &folder).map_err(|e| e.to_string())?;
    let test_set = ImageDataset::new(splits.test_images, splits.test_labels);
    let [accuracy_one_pass, accuracy] = crate::fit::accuracy(
        &trained.network,
        &test_set,
        &trained.batcher()?,
        trained.config.batch_size,
        &trained.device,
        passes,
    );
    Ok(Evaluation {
        weights: trained.weights.clone(),
        dataset: kind.name().to_string(),
        images: test_set.len(),
        passes,
        accuracy_one_pass,
        accuracy,
    })
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
        let split = |spans: &[models::Span], n: usize| {
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
pub fn export(trained: &Trained, folder: &Path) -> Result<Export, String> {
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("cannot create {}: {e}", folder.display()))?;
    let config = toml::to_string(&trained.config).map_err(|e| e.to_string())?;
    let network = &trained.network;
    let input = reference_input(network, trained.dataset().channels(), &trained.device);
    network.reseed(REFERENCE_SEED);
    let regions = network.next_regions(2);
    let logits = reference_logits(network, input.clone());

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
        reload_difference = reload_difference.max(difference);
        files.push(path);
    }
    if reload_difference > 1e-5 {
        return Err(format!(
            "the exported weights do not reproduce the network: logits differ by \
             {reload_difference} after loading them back"
        ));
    }

    let [batch, classes] = logits.dims();
    let input_shape = input.dims();
    let logits = values(logits.into_data())?;
    let reference = Reference {
        model: network.name().to_string(),
        input_shape,
        input: values(input.into_data())?,
        logits: (0..batch)
            .map(|i| logits[i * classes..(i + 1) * classes].to_vec())
            .collect(),
        regions: regions.iter().map(RegionsJson::from).collect(),
    };
    let json = serde_json::to_string(&reference).map_err(|e| e.to_string())?;
    for (name, bytes) in [
        (EXPORT_CONFIG, config.as_bytes()),
        (EXPORT_REFERENCE, json.as_bytes()),
    ] {
        let path = folder.join(name);
        write_atomic(&path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        files.push(path);
    }
    Ok(Export {
        files,
        reload_difference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_become_dataset_items_channel_by_channel() {
        let dir = tempfile::tempdir().unwrap();
        // Colour, at CIFAR's size: planes of R, then G, then B.
        let rgb = dir.path().join("rgb.png");
        image::RgbImage::from_pixel(32, 32, image::Rgb([10, 20, 30]))
            .save(&rgb)
            .unwrap();
        let item = read_image(&rgb, DatasetKind::Cifar10, false).unwrap();
        assert_eq!(item.pixels.len(), 3 * 32 * 32);
        for (plane, value) in item.pixels.chunks(32 * 32).zip([10, 20, 30]) {
            assert!(plane.iter().all(|&p| p == value), "{value}");
        }
        // Grey, at MNIST's size, as stored; inverted on request; colour input made grey.
        let grey = dir.path().join("grey.png");
        let pixels: Vec<u8> = (0..28 * 28).map(|i| (i % 256) as u8).collect();
        image::GrayImage::from_raw(28, 28, pixels.clone())
            .unwrap()
            .save(&grey)
            .unwrap();
        assert_eq!(
            read_image(&grey, DatasetKind::Mnist, false).unwrap().pixels,
            pixels
        );
        let inverted = read_image(&grey, DatasetKind::Mnist, true).unwrap().pixels;
        assert!(inverted.iter().zip(&pixels).all(|(a, b)| *a == 255 - b));
        let from_colour = read_image(&rgb, DatasetKind::Mnist, false).unwrap();
        assert_eq!(from_colour.pixels.len(), 28 * 28);
        // Another size is resampled to the dataset's.
        let big = dir.path().join("big.jpg");
        image::GrayImage::from_pixel(100, 60, image::Luma([200]))
            .save(&big)
            .unwrap();
        let item = read_image(&big, DatasetKind::FashionMnist, false).unwrap();
        assert_eq!(item.pixels.len(), 28 * 28);
        assert!(item.pixels.iter().all(|&p| p.abs_diff(200) <= 2));
    }
}
