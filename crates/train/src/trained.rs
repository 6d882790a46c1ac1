//! A trained network for `eval`, `predict` and `export`: where its weights and configuration
//! are (a run directory, an export folder or a weights file), loaded onto a device.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::prelude::*;
use data::{DatasetKind, ImageBatcher};
use models::Network;

use crate::{
    BackendName, Overrides, RunConfig,
    checkpoint::{last_complete, model_checkpoint, newest_valid},
    config::MAX_PASSES,
    device, weights,
};

/// File names inside an export folder.
pub const EXPORT_PYTORCH: &str = "model.safetensors";
/// See [`EXPORT_PYTORCH`].
pub const EXPORT_BURN: &str = "model.bpk";
/// See [`EXPORT_PYTORCH`].
pub const EXPORT_CONFIG: &str = "config.toml";
/// See [`EXPORT_PYTORCH`].
pub const EXPORT_REFERENCE: &str = "reference.json";

/// The trained network a command works on: the flags `eval`, `predict` and `export` share.
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A run directory (its newest complete checkpoint), an export folder, or a weights file
    /// (.bpk Burn record, .safetensors with PyTorch names).
    model: PathBuf,
    /// The run config the weights belong to, when no config.toml sits beside them and none is
    /// embedded in them (e.g. weights trained in PyTorch).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Backend to run on, replacing the config's `backend`.
    #[arg(long, value_enum)]
    backend: Option<BackendName>,
}

impl ModelArgs {
    /// The network these flags name, with `overrides` (and `--backend`) applied to its config.
    pub fn load(&self, overrides: Overrides) -> Result<Trained> {
        let overrides = Overrides {
            backend: self.backend,
            ..overrides
        };
        Trained::load(&self.model, self.config.as_deref(), &overrides)
    }
}

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
    pub fn load(source: &Path, config: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let (weights, beside) = locate_weights(source)?;
        // The weights' own config: embedded in them, else beside them.
        let own = match weights::embedded_config(&weights)? {
            Some(text) => Some(OwnConfig::Embedded(text, weights.clone())),
            None => beside.map(OwnConfig::Beside),
        };
        let given = config;
        let config = match (given, &own) {
            (Some(path), _) => RunConfig::load(path, overrides)?,
            (None, Some(own)) => own.load(overrides)?,
            (None, None) => bail!(
                "{}: which network are these weights for? No config.toml beside them and none \
                 embedded; pass --config",
                weights.display()
            ),
        };
        let device = device::init(config.backend)?;
        let fresh = || config.network().init(&device);
        // In a run directory, the newest checkpoint that loads: a damaged one is reported and
        // passed over.
        let loaded = if source.is_dir() && last_complete(source).is_some() {
            newest_valid(source, |epoch| {
                weights::load(fresh(), &model_checkpoint(source, epoch))
            })
            .map(|(epoch, network)| (network, model_checkpoint(source, epoch)))
        } else {
            weights::load(fresh(), &weights).map(|network| (network, weights.clone()))
        };
        let (network, weights) = loaded.map_err(|e| match e.is::<weights::Mismatch>() {
            true => mismatch(e, &config, given, own),
            false => e,
        })?;
        Ok(Self {
            config,
            network,
            device,
            weights,
        })
    }

    /// The dataset the network was trained on.
    pub fn dataset(&self) -> DatasetKind {
        self.config.dataset_kind()
    }

    /// A batcher making the network's input from the dataset's images, as in training.
    pub fn batcher(&self) -> Result<ImageBatcher> {
        let kind = self.dataset();
        let side = kind.image_side();
        let shape = (kind.channels(), side, side);
        Ok(ImageBatcher::new(kind, shape, self.network.input_size())?)
    }

    /// Forward passes per image: `given` (`--passes`), else the config's test passes.
    pub fn passes(&self, given: Option<usize>) -> Result<usize> {
        match given {
            Some(0) => bail!("--passes: expected at least 1"),
            Some(passes) if passes > MAX_PASSES => {
                bail!("--passes: {passes} is more than the {MAX_PASSES} allowed")
            }
            Some(passes) => Ok(passes),
            None => Ok(self.config.test_passes()),
        }
    }
}

/// The config weights carry: embedded in a safetensors export (its text and the file), or the
/// `config.toml` beside them. Read only when it is used.
enum OwnConfig {
    Embedded(String, PathBuf),
    Beside(PathBuf),
}

impl OwnConfig {
    fn load(&self, overrides: &Overrides) -> Result<RunConfig> {
        Ok(match self {
            Self::Embedded(text, origin) => RunConfig::parse(text, origin, overrides)?,
            Self::Beside(path) => RunConfig::load(path, overrides)?,
        })
    }

    fn origin(&self) -> &Path {
        match self {
            Self::Embedded(_, origin) | Self::Beside(origin) => origin,
        }
    }
}

/// Why weights (sound, but of another network than `config`'s) were refused, and which
/// config to use: the one `--config` gave (`given`) against the weights' `own` (text and
/// origin), where there is one.
fn mismatch(
    error: anyhow::Error,
    config: &RunConfig,
    given: Option<&Path>,
    own: Option<OwnConfig>,
) -> anyhow::Error {
    let own = own.and_then(|own| {
        Some((
            own.load(&Overrides::default()).ok()?,
            own.origin().to_path_buf(),
        ))
    });
    match (given, own) {
        (Some(given), Some((own, origin))) => error.context(format!(
            "the weights were trained with the network of {} and --config {} describes \
             another ({}); leave --config out to use the weights' own config, or give the one \
             they were trained with",
            origin.display(),
            given.display(),
            own.network_differences(
                config,
                ["the weights' config", &given.display().to_string()]
            )
        )),
        (Some(given), None) => error.context(format!(
            "--config {} is not the config these weights were trained with; give that one",
            given.display()
        )),
        (None, _) => error.context(
            "the config beside the weights is not the one they were trained with; pass \
             --config with that one",
        ),
    }
}

/// The weights file of `source` and the config file beside it, if any.
fn locate_weights(source: &Path) -> Result<(PathBuf, Option<PathBuf>)> {
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
        bail!(
            "{}: neither a run directory with a complete checkpoint nor an export folder \
             ({EXPORT_BURN} or {EXPORT_PYTORCH})",
            source.display()
        );
    }
    if !source.is_file() {
        bail!(
            "{}: no such file or directory; give the folder a training run wrote (its \
             `output`, such as runs/quickstart), an export folder, or a .bpk or .safetensors file",
            source.display()
        );
    }
    // A checkpoint sits in <run>/checkpoint/, an export's files in the export folder.
    let folder = source.parent().unwrap_or(Path::new("."));
    let config = [Some(folder), folder.parent()]
        .into_iter()
        .flatten()
        .find_map(|dir| existing(dir.join(EXPORT_CONFIG)));
    Ok((source.to_path_buf(), config))
}
