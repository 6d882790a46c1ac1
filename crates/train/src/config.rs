//! The run configuration: a TOML file, checked strictly, with command-line overrides on top.

use std::path::{Path, PathBuf};

use burn::{
    lr_scheduler::{
        constant::ConstantLr, cosine::CosineAnnealingLrSchedulerConfig,
        exponential::ExponentialLrSchedulerConfig, module_lr_scheduler::ModuleLrScheduler,
        step::StepLrSchedulerConfig,
    },
    optim::{AdamConfig, ModuleOptimizer, decay::WeightDecayConfig},
};
use data::{Augmentation, DataError, DatasetKind, Splits};
use models::{FmpNetConfig, LeNet5ClassicConfig, LeNet5ModernConfig, NetworkConfig};
use serde::{Deserialize, Serialize};

use crate::{
    accumulate::Accumulate,
    device::{BackendName, DeviceList},
};

/// Everything a training run needs. Unknown keys are errors, so a typo never goes unnoticed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `mnist`, `mnist_sample` (the bundled 2,000/500 sample), `fashion_mnist` or `cifar10`.
    pub dataset: String,
    /// Folder holding `<dataset>/` sub-folders; falls back to `$CNN_DATA_DIR`, then `./data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// `flex` (default CPU backend), `ndarray` (CPU) or `wgpu` (GPU through Vulkan).
    #[serde(default)]
    pub backend: BackendName,
    /// Number of training epochs.
    pub epochs: usize,
    /// Images per training step (one optimiser step).
    pub batch_size: usize,
    /// Micro-batches each batch runs as, their gradients summed before the optimiser step (a
    /// divisor of `batch_size`), or `"auto"`: the fewest that fit the device. 1 when absent.
    #[serde(default, skip_serializing_if = "is_one")]
    pub accumulate: Accumulate,
    /// The devices to train on, each taking an equal share of every batch: indices as `train
    /// devices` lists them (`"0,1"`), workers' (`"0,ws://gpu-box:4000"`), or `"all"`. The
    /// backend's default device when absent.
    #[serde(default, skip_serializing_if = "is_default")]
    pub devices: DeviceList,
    /// Seed of weight initialisation, shuffling and dropout.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Data-loader worker threads. With one, a seed reproduces a run exactly; with more, batches
    /// arrive in the order the threads finish them, so the order (and the result) varies.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// Share of the training set held out for validation (the last images).
    #[serde(default = "default_validation")]
    pub validation_fraction: f64,
    /// Run directory: checkpoints, metrics, summary.
    pub output: PathBuf,
    /// The network.
    pub model: ModelSpec,
    /// The optimiser.
    pub optimizer: OptimizerSpec,
    /// The learning-rate schedule; constant when absent.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Training-time distortions; all off when absent.
    #[serde(default)]
    pub augment: Augmentation,
    /// Forward passes averaged (softmax probabilities) per test image: an FMP net draws new
    /// pooling regions on each. Default 12 for FMP nets, 1 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_passes: Option<usize>,
}

fn is_one(accumulate: &Accumulate) -> bool {
    *accumulate == Accumulate::Fixed(1)
}

fn is_default(devices: &DeviceList) -> bool {
    *devices == DeviceList::Default
}

fn default_seed() -> u64 {
    42
}
fn default_workers() -> usize {
    1
}
fn default_validation() -> f64 {
    1.0 / 12.0
}

/// The images of a `batch_size` batch each of `devices` devices takes, when that share splits
/// into `micro_batches` equal micro-batches; or what to change.
pub fn split_batch(
    batch_size: usize,
    devices: usize,
    micro_batches: usize,
) -> Result<usize, String> {
    if batch_size < devices {
        return Err(format!(
            "devices: batch_size {batch_size} is smaller than the {devices} devices; each \
             device needs at least one image of every batch"
        ));
    }
    if !batch_size.is_multiple_of(devices) {
        return Err(format!(
            "devices: batch_size {batch_size} does not split evenly between {devices} devices; \
             pick a multiple of {devices}"
        ));
    }
    let per_device = batch_size / devices;
    if !per_device.is_multiple_of(micro_batches) {
        return Err(match devices {
            1 => format!(
                "accumulate: batch_size {batch_size} does not split into {micro_batches} equal \
                 micro-batches; pick a divisor of it, or \"auto\""
            ),
            n => format!(
                "accumulate: the {per_device} images each of {n} devices takes from a batch do \
                 not split into {micro_batches} micro-batches; pick a batch_size that does"
            ),
        });
    }
    Ok(per_device)
}

/// The `[model]` table: `kind`, and for the FMP net its hyper-parameters, each with the default
/// that [`FmpNetConfig`] gives it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// Rosebrock's LeNet (28x28 input).
    Lenet5Modern,
    /// LeCun's 1998 LeNet-5 (32x32 input).
    Lenet5Classic,
    /// Graham's fractional max-pooling network; input size computed from the layers.
    Fmp(FmpNetConfig),
}

/// The `[optimizer]` table.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// Stochastic gradient descent, optionally with (Nesterov) momentum.
    Sgd {
        /// Initial learning rate.
        learning_rate: f64,
        /// Momentum factor; 0 disables momentum.
        #[serde(default)]
        momentum: f64,
        /// Nesterov's variant of momentum.
        #[serde(default)]
        nesterov: bool,
        /// L2 penalty.
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam.
    Adam {
        /// Initial learning rate.
        learning_rate: f64,
        /// First-moment decay.
        #[serde(default = "beta_1")]
        beta_1: f32,
        /// Second-moment decay.
        #[serde(default = "beta_2")]
        beta_2: f32,
        /// Added to the second moment's root before dividing by it.
        #[serde(default = "epsilon")]
        epsilon: f32,
        /// L2 penalty.
        #[serde(default)]
        weight_decay: f64,
    },
}

impl OptimizerSpec {
    /// The initial learning rate.
    pub fn learning_rate(&self) -> f64 {
        match *self {
            Self::Sgd { learning_rate, .. } | Self::Adam { learning_rate, .. } => learning_rate,
        }
    }

    /// Checks every hyper-parameter's range (those PyTorch's optimisers refuse are refused
    /// here too), naming the key.
    fn check(&self) -> Result<(), String> {
        let lr = self.learning_rate();
        if !(lr > 0.0 && lr <= 1.0) {
            return Err(format!("optimizer.learning_rate: {lr} is outside (0, 1]"));
        }
        let (decays, weight_decay) = match *self {
            Self::Sgd {
                momentum,
                weight_decay,
                ..
            } => (vec![("momentum", momentum)], weight_decay),
            Self::Adam {
                beta_1,
                beta_2,
                epsilon,
                weight_decay,
                ..
            } => {
                if !(epsilon > 0.0 && epsilon.is_finite()) {
                    return Err(format!(
                        "optimizer.epsilon: {epsilon} is not a small positive number"
                    ));
                }
                let betas = [("beta_1", beta_1), ("beta_2", beta_2)];
                (betas.map(|(k, v)| (k, v as f64)).to_vec(), weight_decay)
            }
        };
        for (key, value) in decays {
            if !(0.0..1.0).contains(&value) {
                return Err(format!("optimizer.{key}: {value} is outside [0, 1)"));
            }
        }
        if !(0.0..=1.0).contains(&weight_decay) {
            return Err(format!(
                "optimizer.weight_decay: {weight_decay} is outside [0, 1]"
            ));
        }
        Ok(())
    }
}

fn beta_1() -> f32 {
    0.9
}
fn beta_2() -> f32 {
    0.999
}
/// Burn's default (PyTorch's is 1e-8).
fn epsilon() -> f32 {
    1e-5
}

/// The `[schedule]` table: how the learning rate moves over epochs.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ScheduleSpec {
    /// The optimiser's learning rate throughout.
    #[default]
    Constant,
    /// lr * exp(-decay_per_epoch * epoch), applied smoothly step by step (Graham used 0.01).
    Exponential {
        /// Decay rate per epoch.
        decay_per_epoch: f64,
    },
    /// lr * gamma every `every_epochs` epochs.
    Step {
        /// Epochs between drops.
        every_epochs: usize,
        /// Factor at each drop.
        gamma: f64,
    },
    /// Cosine annealing from lr to `min_lr` over the whole run.
    Cosine {
        /// Final learning rate.
        #[serde(default)]
        min_lr: f64,
    },
}

/// A configuration problem, naming the file and the offending key or value.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// Command-line values that replace the file's: the flags of every command that reads a run
/// config, listed once here.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// Backend to run on, replacing the config's `backend`.
    #[arg(long, value_enum)]
    pub backend: Option<BackendName>,
    /// Number of epochs, replacing `epochs`.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per step, replacing `batch_size`.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per step (a divisor of the batch size) or `auto`, replacing `accumulate`.
    #[arg(long)]
    pub accumulate: Option<Accumulate>,
    /// Devices to train on, e.g. 0,1 (indices from `train devices`) or all, replacing `devices`.
    #[arg(long)]
    pub devices: Option<DeviceList>,
    /// Folder holding the datasets, replacing `data_dir`.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run directory for checkpoints and the summary, replacing `output`.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Random seed, replacing `seed`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Forward passes averaged per test image, replacing `test_passes`.
    #[arg(long)]
    pub test_passes: Option<usize>,
}

impl ScheduleSpec {
    /// Checks the schedule's values against the optimiser's `learning_rate`, naming the key.
    fn check(&self, learning_rate: f64) -> Result<(), String> {
        match *self {
            Self::Constant => Ok(()),
            Self::Exponential { decay_per_epoch }
                if !(decay_per_epoch >= 0.0 && decay_per_epoch.is_finite()) =>
            {
                Err(format!(
                    "schedule.decay_per_epoch: {decay_per_epoch} is not a finite rate >= 0"
                ))
            }
            Self::Exponential { .. } => Ok(()),
            Self::Step {
                every_epochs: 0, ..
            } => Err("schedule.every_epochs: expected at least 1".into()),
            Self::Step { gamma, .. } if !(gamma > 0.0 && gamma.is_finite()) => {
                Err(format!("schedule.gamma: {gamma} is not a factor > 0"))
            }
            Self::Step { .. } => Ok(()),
            Self::Cosine { min_lr } if !(0.0..=learning_rate).contains(&min_lr) => Err(format!(
                "schedule.min_lr: {min_lr} is outside [0, learning_rate = {learning_rate}]"
            )),
            Self::Cosine { .. } => Ok(()),
        }
    }
}

/// The most forward passes per test image (`test_passes`, and `--passes` where a command takes
/// it).
pub const MAX_PASSES: usize = 10_000;

/// Upper bounds of the integer values: far beyond any use, low enough that no count derived
/// from them overflows and that each fits in a TOML integer when the run's config is written.
const LIMITS: [(&str, u64); 5] = [
    ("epochs", 1_000_000),
    ("batch_size", 1 << 20),
    ("workers", 1024),
    ("test_passes", MAX_PASSES as u64),
    ("seed", i64::MAX as u64),
];

impl RunConfig {
    /// Reads and validates `path`, then applies `overrides`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError {
            path: path.to_path_buf(),
            message,
        };
        if path.is_dir() {
            let own = path.join("config.toml");
            return Err(error(match own.is_file() {
                true => format!("is a run's folder; its config is {}", own.display()),
                false => "is a folder; give a config file, e.g. configs/quickstart.toml".into(),
            }));
        }
        let with_extension = path.with_extension("toml");
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => error(
                "is not a TOML config (not text); give one, e.g. configs/quickstart.toml".into(),
            ),
            std::io::ErrorKind::NotFound
                if path.extension().is_none() && with_extension.is_file() =>
            {
                error(format!(
                    "no such file; did you mean {}?",
                    with_extension.display()
                ))
            }
            _ => error(format!("cannot read: {e}")),
        })?;
        Self::parse(&text, path, overrides)
    }

    /// Parses and validates `text` (TOML) read from `origin`, then applies `overrides`.
    pub fn parse(text: &str, origin: &Path, overrides: &Overrides) -> Result<Self, ConfigError> {
        let error = |message: String| ConfigError {
            path: origin.to_path_buf(),
            message,
        };
        let mut config: Self =
            toml::from_str(text).map_err(|e| error(e.to_string().trim_end().to_string()))?;
        let o = overrides.clone();
        config.backend = o.backend.unwrap_or(config.backend);
        config.epochs = o.epochs.unwrap_or(config.epochs);
        config.batch_size = o.batch_size.unwrap_or(config.batch_size);
        config.accumulate = o.accumulate.unwrap_or(config.accumulate);
        config.devices = o.devices.clone().unwrap_or(config.devices);
        config.data_dir = o.data_dir.or(config.data_dir);
        config.output = o.output.unwrap_or(config.output);
        config.seed = o.seed.unwrap_or(config.seed);
        config.test_passes = o.test_passes.or(config.test_passes);
        config.validate().map_err(|message| {
            // A value a flag replaced is the flag's, not the file's.
            let flags = [
                ("epochs", "--epochs", o.epochs.is_some()),
                ("batch_size", "--batch-size", o.batch_size.is_some()),
                ("accumulate", "--accumulate", o.accumulate.is_some()),
                ("devices", "--devices", o.devices.is_some()),
                ("seed", "--seed", o.seed.is_some()),
                ("test_passes", "--test-passes", o.test_passes.is_some()),
            ];
            let given = flags
                .iter()
                .find(|(key, _, given)| *given && message.starts_with(&format!("{key}:")));
            match given {
                Some((_, flag, _)) => error(format!("{message} (given by {flag})")),
                None => error(message),
            }
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        DatasetKind::from_name(&self.dataset).map_err(|e| format!("dataset: {e}"))?;
        if self.epochs == 0 {
            return Err("epochs: expected at least 1".into());
        }
        if self.batch_size == 0 {
            return Err("batch_size: expected at least 1".into());
        }
        let values = [
            self.epochs as u64,
            self.batch_size as u64,
            self.workers as u64,
            self.test_passes.unwrap_or(1) as u64,
            self.seed,
        ];
        for ((key, limit), value) in LIMITS.into_iter().zip(values) {
            if value > limit {
                return Err(format!("{key}: {value} is more than the {limit} allowed"));
            }
        }
        // `all` and the default device are counted when the backend opens them (`RunPlan`).
        let devices = match &self.devices {
            DeviceList::Entries(entries) if entries.is_empty() => {
                return Err(
                    "devices: the list is empty; give indices from `train devices` \
                            (e.g. \"0,1\") or \"all\""
                        .into(),
                );
            }
            // A worker counts as one device here and as those it serves once opened.
            DeviceList::Entries(entries) => entries.len(),
            DeviceList::Default | DeviceList::All => 1,
        };
        let micro_batches = match self.accumulate {
            Accumulate::Fixed(n) => n,
            Accumulate::Auto => 1,
        };
        split_batch(self.batch_size, devices, micro_batches)?;
        if !(0.0..1.0).contains(&self.validation_fraction) {
            return Err(format!(
                "validation_fraction: {} is outside [0, 1)",
                self.validation_fraction
            ));
        }
        self.optimizer.check()?;
        self.schedule.check(self.optimizer.learning_rate())?;
        if self.test_passes == Some(0) {
            return Err("test_passes: expected at least 1".into());
        }
        let network = self.network();
        if let NetworkConfig::FmpNet(fmp) = &network {
            fmp.check().map_err(|e| format!("model.{e}"))?;
        }
        self.augment
            .check(network.input_size())
            .map_err(|e| format!("augment.{e}"))?;
        Ok(())
    }

    /// How the network of `self` (called `ours`) differs from that of `other` (`theirs`): each
    /// key of `dataset` and the `[model]` table with another value, both values named.
    pub fn network_differences(&self, other: &RunConfig, names: [&str; 2]) -> String {
        let differences = self.differences(other, |key| key == "dataset" || key == "model", names);
        match differences.is_empty() {
            true => "the same dataset and [model]".into(),
            false => differences.join(", "),
        }
    }

    /// The settings of a run that a resumed process must keep: everything but those a run may
    /// change between processes (its length, where it runs and reads, its test passes). How
    /// `other` differs from this config in them, as in [`Self::network_differences`].
    pub fn training_differences(&self, other: &RunConfig, names: [&str; 2]) -> Vec<String> {
        self.differences(
            other,
            |key| !Self::MAY_CHANGE_ON_RESUME.contains(&key),
            names,
        )
    }

    /// The keys a resumed run may change (each also a flag, `_` written `-`).
    pub const MAY_CHANGE_ON_RESUME: [&str; 8] = [
        "epochs",
        "backend",
        "devices",
        "accumulate",
        "workers",
        "output",
        "data_dir",
        "test_passes",
    ];

    /// The keys under the top-level keys `compared` picks where `other` differs from this
    /// config, tables flattened to `table.key`: "key is A in ours and B in theirs". A table
    /// whose `kind` differs is named by its kind alone: tables of two kinds differ in every key.
    fn differences(
        &self,
        other: &RunConfig,
        compared: impl Fn(&str) -> bool,
        [ours, theirs]: [&str; 2],
    ) -> Vec<String> {
        let flattened = |config: &RunConfig| -> Vec<(String, String)> {
            let Ok(toml::Value::Table(table)) = toml::Value::try_from(config) else {
                return Vec::new();
            };
            let mut keys = Vec::new();
            for (key, value) in table.into_iter().filter(|(key, _)| compared(key)) {
                match value {
                    toml::Value::Table(inner) => keys.extend(
                        inner
                            .into_iter()
                            .map(|(k, v)| (format!("{key}.{k}"), v.to_string())),
                    ),
                    value => keys.push((key, value.to_string())),
                }
            }
            keys
        };
        let (mine, others) = (flattened(self), flattened(other));
        let value = |keys: &[(String, String)], key: &str| {
            let found = keys.iter().find(|(k, _)| k == key);
            found.map(|(_, v)| v.clone())
        };
        let kind_differs = |table: &str| {
            let key = format!("{table}.kind");
            value(&mine, &key) != value(&others, &key)
        };
        let mut keys: Vec<&str> = mine
            .iter()
            .chain(&others)
            .map(|(k, _)| k.as_str())
            .collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|key| match key.split_once('.') {
                Some((table, inner)) => inner == "kind" || !kind_differs(table),
                None => true,
            })
            .filter_map(|key| {
                let (a, b) = (value(&mine, key), value(&others, key));
                let absent = || "absent".to_string();
                (a != b).then(|| {
                    format!(
                        "{key} is {} in {ours} and {} in {theirs}",
                        a.unwrap_or_else(absent),
                        b.unwrap_or_else(absent)
                    )
                })
            })
            .collect()
    }

    /// The dataset (validated at load time).
    pub fn dataset_kind(&self) -> DatasetKind {
        DatasetKind::from_name(&self.dataset).expect("validated in RunConfig::load")
    }

    /// Forward passes per test image: `test_passes`, else 12 for FMP nets and 1 for the others.
    pub fn test_passes(&self) -> usize {
        let default = match self.model {
            ModelSpec::Fmp(_) => 12,
            _ => 1,
        };
        self.test_passes.unwrap_or(default)
    }

    /// The network's config, sized for the dataset.
    pub fn network(&self) -> NetworkConfig {
        let kind = self.dataset_kind();
        let classes = kind.classes();
        match self.model {
            ModelSpec::Lenet5Modern => {
                NetworkConfig::LeNet5Modern(LeNet5ModernConfig::new().with_num_classes(classes))
            }
            ModelSpec::Lenet5Classic => {
                NetworkConfig::LeNet5Classic(LeNet5ClassicConfig::new().with_num_classes(classes))
            }
            ModelSpec::Fmp(ref fmp) => NetworkConfig::FmpNet(FmpNetConfig {
                channels: kind.channels(),
                num_classes: classes,
                seed: self.seed,
                ..fmp.clone()
            }),
        }
    }

    /// The optimiser, built from `[optimizer]`.
    pub fn optimizer(&self) -> ModuleOptimizer {
        let decay = |w: f64| (w > 0.0).then(|| WeightDecayConfig::new(w as f32));
        match self.optimizer {
            OptimizerSpec::Sgd {
                momentum,
                nesterov,
                weight_decay,
                ..
            } => ModuleOptimizer::from(ops::Sgd::new(momentum, nesterov, weight_decay)),
            OptimizerSpec::Adam {
                beta_1,
                beta_2,
                epsilon,
                weight_decay,
                ..
            } => AdamConfig::new()
                .with_beta_1(beta_1)
                .with_beta_2(beta_2)
                .with_epsilon(epsilon)
                .with_weight_decay(decay(weight_decay))
                .init(),
        }
    }

    /// The learning-rate scheduler, stepped once per training step.
    pub fn scheduler(&self, steps_per_epoch: usize) -> anyhow::Result<ModuleLrScheduler> {
        let lr = self.optimizer.learning_rate();
        let steps = steps_per_epoch.max(1);
        match self.schedule {
            ScheduleSpec::Constant => Ok(ModuleLrScheduler::new(ConstantLr::new(lr))),
            ScheduleSpec::Exponential { decay_per_epoch } => {
                ExponentialLrSchedulerConfig::new(lr, (-decay_per_epoch / steps as f64).exp())
                    .init()
            }
            ScheduleSpec::Step {
                every_epochs,
                gamma,
                // Beyond any run's length it never drops, as intended; the product must not wrap.
            } => StepLrSchedulerConfig::new(lr, every_epochs.saturating_mul(steps))
                .with_gamma(gamma)
                .init(),
            ScheduleSpec::Cosine { min_lr } => {
                CosineAnnealingLrSchedulerConfig::new(lr, self.epochs * steps)
                    .with_min_lr(min_lr)
                    .init()
            }
        }
        .map_err(|e| anyhow::anyhow!("schedule: {e}"))
    }

    /// The config's dataset, found (and downloaded, with a progress bar on a terminal, if
    /// absent) and read: its splits and the folder they came from.
    pub fn load_splits(&self) -> Result<(Splits, PathBuf), DataError> {
        let kind = self.dataset_kind();
        let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let folder = data::locate(kind, self.data_dir.as_deref(), progress)?;
        Ok((kind.load(&folder)?, folder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
dataset = "mnist"
epochs = 2
batch_size = 64
output = "runs/x"
[model]
kind = "lenet5_modern"
[optimizer]
kind = "sgd"
learning_rate = 0.01
momentum = 0.9
nesterov = true
"#;

    fn load(text: &str, overrides: &Overrides) -> Result<RunConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, text).unwrap();
        RunConfig::load(&path, overrides)
    }

    #[test]
    fn reads_a_valid_config_and_applies_overrides() {
        let overrides = Overrides {
            epochs: Some(5),
            backend: Some(BackendName::Ndarray),
            ..Default::default()
        };
        let config = load(VALID, &overrides).unwrap();
        assert_eq!(config.epochs, 5);
        assert_eq!(config.backend, BackendName::Ndarray);
        assert_eq!(config.batch_size, 64);
    }

    #[test]
    fn unknown_key_names_the_key_and_the_file() {
        let err = load(
            &VALID.replace("epochs = 2", "epochs = 2\nepoch = 3"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("run.toml") && err.contains("unknown field `epoch`"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_in_a_table_is_rejected() {
        let err = load(
            &VALID.replace("nesterov = true", "nestorov = true"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nestorov"), "{err}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let err = load(
            &VALID.replace("batch_size = 64", "batch_size = \"64\""),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("batch_size") && err.contains("run.toml"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        let err = load(
            &VALID.replace("\"mnist\"", "\"cifar\""),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown dataset \"cifar\""), "{err}");
        let err = load(
            &VALID.replace("lenet5_modern", "alexnet"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("alexnet"), "{err}");
        let err = load(
            &VALID.replace("\"sgd\"", "\"sgd\"\nlearning_rat = 1"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("learning_rat"), "{err}");
        let err = load(
            &VALID.replace("batch_size = 64", "batch_size = 64\naccumulate = 3"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("accumulate: batch_size 64 does not split into 3"),
            "{err}"
        );
        let err = load(
            &VALID.replace("batch_size = 64", "batch_size = 64\ndevices = []"),
            &Overrides::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("devices: the list is empty"), "{err}");
        let overrides = Overrides {
            devices: Some("0,1,2".parse().unwrap()),
            ..Overrides::default()
        };
        let err = load(VALID, &overrides).unwrap_err().to_string();
        assert!(
            err.contains("devices: batch_size 64 does not split evenly between 3 devices")
                && err.ends_with("(given by --devices)"),
            "{err}"
        );
        let overrides = Overrides {
            epochs: Some(0),
            ..Overrides::default()
        };
        let err = load(VALID, &overrides).unwrap_err().to_string();
        assert!(
            err.ends_with("epochs: expected at least 1 (given by --epochs)"),
            "{err}"
        );
        let overrides = Overrides {
            accumulate: Some(Accumulate::Fixed(4)),
            ..Overrides::default()
        };
        assert_eq!(
            load(VALID, &overrides).unwrap().accumulate,
            Accumulate::Fixed(4)
        );
    }
}
