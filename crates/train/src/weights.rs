//! Model weights in and out of the project, in two formats:
//!
//! - Burn's record (burnpack, `.bpk`): what the trainer checkpoints, with Burn's names;
//! - safetensors with PyTorch's names and layouts (`.safetensors`): convolution weights
//!   `[out, in, kh, kw]`, linear weights `[out, in]` (Burn stores them transposed), batch norm as
//!   `weight`, `bias`, `running_mean`, `running_var`, `num_batches_tracked`, so that the
//!   definitions in `scripts/cnn_models.py` load an export with `load_state_dict(strict=True)`,
//!   and weights trained there can be evaluated here.
//!
//! Loading checks the file against the network first and lists every name that is missing,
//! unexpected or of another shape: a checkpoint of another model never half-loads.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use burn::{
    module::Module,
    store::{BurnToPyTorchAdapter, ModuleAdapter, ModuleSnapshot, PyTorchToBurnAdapter, burn_pack},
    tensor::{Bytes, DType},
};
use models::Network;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::files::write_atomic;

/// Safetensors metadata key holding the run configuration (TOML) of an export, so that the
/// file alone says which network it belongs to.
pub const CONFIG_KEY: &str = "cnn_course.config";

/// PyTorch's batch-norm step counter. Burn keeps none: it is exported as 0 (PyTorch reads it
/// only when a batch norm's momentum is None) and ignored on import.
const BATCHES_TRACKED: &str = "num_batches_tracked";

/// A weights file format, known from the file's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsFormat {
    /// Burn's record (burnpack), `.bpk`.
    Burnpack,
    /// Safetensors with PyTorch's names and layouts, `.safetensors`.
    PyTorch,
}

impl WeightsFormat {
    /// The format of `path`, from its extension.
    pub fn of(path: &Path) -> Result<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("bpk") => Ok(Self::Burnpack),
            Some("safetensors") => Ok(Self::PyTorch),
            Some("toml") => Err(anyhow!(
                "{0}: a config, not trained weights; `train {0}` trains it, and this command \
                 then takes the folder the run writes (its `output`) or its weights",
                path.display()
            )),
            _ => Err(anyhow!(
                "{}: unknown weights format; expected a .bpk (Burn record) or .safetensors \
                 (PyTorch names) file",
                path.display()
            )),
        }
    }

    fn adapter(self, outwards: bool) -> Option<Box<dyn ModuleAdapter>> {
        match (self, outwards) {
            (Self::Burnpack, _) => None,
            (Self::PyTorch, true) => Some(Box::new(BurnToPyTorchAdapter)),
            (Self::PyTorch, false) => Some(Box::new(PyTorchToBurnAdapter)),
        }
    }

    /// PyTorch's state dicts know no enum variants: `conv1.weight`, not
    /// `LeNet5Modern.conv1.weight`.
    fn skip_enum_variants(self) -> bool {
        self == Self::PyTorch
    }
}

/// The tensors `network` holds in `format`: name to shape, sorted by name.
pub fn layout(network: &Network, format: WeightsFormat) -> BTreeMap<String, Vec<usize>> {
    let tensors = network.collect(None, format.adapter(true), format.skip_enum_variants());
    let mut layout: BTreeMap<String, Vec<usize>> = tensors
        .into_iter()
        .map(|t| (t.name, t.shape.to_vec()))
        .collect();
    if format == WeightsFormat::PyTorch {
        for norm in batch_norms(layout.keys()) {
            layout.insert(format!("{norm}.{BATCHES_TRACKED}"), Vec::new());
        }
    }
    layout
}

/// Paths of the batch norms among tensor names (those with a running mean).
fn batch_norms<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    names
        .filter_map(|name| name.strip_suffix(".running_mean"))
        .map(str::to_string)
        .collect()
}

/// Writes `network` to `path` in `format`, atomically. A safetensors file carries `config`
/// (the run's TOML) in its metadata.
pub fn save(network: &Network, format: WeightsFormat, path: &Path, config: &str) -> Result<()> {
    let bytes = match format {
        WeightsFormat::Burnpack => network
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| anyhow!("cannot encode the Burn record: {e}"))?
            .to_vec(),
        WeightsFormat::PyTorch => pytorch_safetensors(network, config)?,
    };
    write_atomic(path, &bytes)
}

fn pytorch_safetensors(network: &Network, config: &str) -> Result<Vec<u8>> {
    let format = WeightsFormat::PyTorch;
    let mut tensors = Vec::new();
    for tensor in network.collect(None, format.adapter(true), true) {
        let (name, dtype, shape, _, bytes) = tensor
            .into_parts()
            .map_err(|e| anyhow!("cannot read a tensor back from the device: {e}"))?;
        let dtype = match dtype {
            DType::F32 => Dtype::F32,
            DType::F64 => Dtype::F64,
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
            DType::I64 => Dtype::I64,
            DType::I32 => Dtype::I32,
            other => bail!("{name}: cannot export tensors of type {other:?}"),
        };
        tensors.push((name, dtype, shape.to_vec(), bytes.to_vec()));
    }
    let names: Vec<String> = tensors.iter().map(|t| t.0.clone()).collect();
    for norm in batch_norms(names.iter()) {
        let zero = 0i64.to_le_bytes().to_vec();
        tensors.push((
            format!("{norm}.{BATCHES_TRACKED}"),
            Dtype::I64,
            Vec::new(),
            zero,
        ));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .context("cannot lay out the safetensors file")?;
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (CONFIG_KEY.to_string(), config.to_string()),
    ]);
    safetensors::serialize(views, Some(metadata)).context("cannot encode the safetensors file")
}

/// The run configuration embedded in a safetensors export, if `path` is one and has it.
pub fn embedded_config(path: &Path) -> Result<Option<String>> {
    if WeightsFormat::of(path)? != WeightsFormat::PyTorch {
        return Ok(None);
    }
    let bytes = read(path)?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| invalid(path, e))?;
    Ok(metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CONFIG_KEY).cloned()))
}

/// Weights that decode but belong to another network than the one they were loaded into:
/// the file is sound, the config chosen for it is not (see [`load`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Mismatch {
    message: String,
}

/// Loads the weights at `path` into `network`, which must be built from the same
/// configuration: the file has to hold exactly the network's tensors, with the same shapes.
/// A file that decodes but holds other tensors is a [`Mismatch`]; one that does not decode is
/// any other error.
pub fn load(mut network: Network, path: &Path) -> Result<Network> {
    let format = WeightsFormat::of(path)?;
    let bytes = read(path)?;
    let tensors = match format {
        WeightsFormat::Burnpack => burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(bytes))
            .and_then(|reader| reader.into_tensors())
            .map_err(|e| anyhow!("{}: not a readable Burn record: {e}", path.display()))?,
        WeightsFormat::PyTorch => read_safetensors(&bytes, path)?,
    };
    let found = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    compare(&layout(&network, format), &found).map_err(|differences| Mismatch {
        message: format!(
            "{} does not hold the weights of this {} network ({} format): {differences}",
            path.display(),
            network.name(),
            match format {
                WeightsFormat::Burnpack => "Burn",
                WeightsFormat::PyTorch => "PyTorch",
            }
        ),
    })?;
    let tensors = tensors
        .into_iter()
        .filter(|t| !t.name.ends_with(BATCHES_TRACKED))
        .collect();
    let result = network.apply(
        tensors,
        None,
        format.adapter(false),
        format.skip_enum_variants(),
    );
    if !result.errors.is_empty() || !result.missing.is_empty() {
        bail!("{}: {result}", path.display());
    }
    Ok(network)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn invalid(path: &Path, error: safetensors::SafeTensorError) -> anyhow::Error {
    anyhow!(
        "{}: not a valid safetensors file (truncated or corrupt?): {error}",
        path.display()
    )
}

/// The tensors of a safetensors file, as burn-store's tensors. The network's parameters are f32:
/// tensors stored as f64, f16 or bf16 (PyTorch often saves those) are converted, with a note
/// saying how many; integer and other types are refused by name (an integer weight is not a
/// weight), except PyTorch's integer batch-norm step counters, which are not loaded.
fn read_safetensors(bytes: &[u8], path: &Path) -> Result<Vec<burn_pack::Tensor>> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| invalid(path, e))?;
    let mut converted = BTreeMap::<&str, usize>::new();
    let mut tensors = Vec::new();
    // In name order, so that the first tensor named in an error is the same every time.
    let mut entries = file.tensors();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, view) in entries {
        let data = view.data();
        let widened: Option<(&str, Vec<f32>)> = match view.dtype() {
            Dtype::F32 => None,
            Dtype::F64 => Some(("f64", floats(data, |b| f64::from_le_bytes(b) as f32))),
            Dtype::F16 => Some((
                "f16",
                floats(data, |b| half::f16::from_le_bytes(b).to_f32()),
            )),
            Dtype::BF16 => Some((
                "bf16",
                floats(data, |b| half::bf16::from_le_bytes(b).to_f32()),
            )),
            Dtype::I64 | Dtype::I32 if name.ends_with(BATCHES_TRACKED) => None,
            other => bail!(
                "{}: tensor {name} is stored as {other:?}; the network's weights are floating \
                 point (f32, or f64/f16/bf16, which are converted)",
                path.display()
            ),
        };
        let (dtype, bytes) = match widened {
            Some((from, values)) => {
                *converted.entry(from).or_default() += 1;
                (
                    DType::F32,
                    values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            }
            None => (safetensors_dtype(view.dtype()), data.to_vec()),
        };
        let bytes = Bytes::from_bytes_vec(bytes);
        tensors.push(burn_pack::Tensor::new(
            name,
            dtype,
            view.shape().to_vec(),
            None,
            bytes,
        ));
    }
    for (from, count) in converted {
        say_err!(
            "note: {}: {count} tensors stored as {from}, converted to the network's f32",
            path.display()
        );
    }
    Ok(tensors)
}

/// The values of little-endian `bytes`, `N` bytes each, as f32.
fn floats<const N: usize>(bytes: &[u8], read: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    bytes
        .chunks_exact(N)
        .map(|b| read(b.try_into().expect("chunks of N bytes")))
        .collect()
}

/// Burn's name for the types [`read_safetensors`] passes on unconverted.
fn safetensors_dtype(dtype: Dtype) -> DType {
    match dtype {
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        _ => DType::F32,
    }
}

/// Every difference between the tensors a network expects and those a file holds, worded for
/// the user; `Ok` when there is none.
fn compare(
    expected: &BTreeMap<String, Vec<usize>>,
    found: &BTreeMap<String, Vec<usize>>,
) -> Result<(), String> {
    const SHOWN: usize = 12;
    let list = |items: Vec<String>| {
        let more = items.len().saturating_sub(SHOWN);
        let mut text = items.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    let missing: Vec<String> = expected
        .iter()
        .filter(|(name, _)| !found.contains_key(*name))
        .map(|(name, shape)| format!("{name} {shape:?}"))
        .collect();
    let unexpected: Vec<String> = found
        .iter()
        .filter(|(name, _)| !expected.contains_key(*name))
        .map(|(name, shape)| format!("{name} {shape:?}"))
        .collect();
    let reshaped: Vec<String> = expected
        .iter()
        .filter_map(|(name, shape)| {
            let other = found.get(name)?;
            (other != shape).then(|| format!("{name}: file {other:?}, network {shape:?}"))
        })
        .collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing {}: {}", missing.len(), list(missing)));
    }
    if !unexpected.is_empty() {
        parts.push(format!(
            "unexpected {}: {}",
            unexpected.len(),
            list(unexpected)
        ));
    }
    if !reshaped.is_empty() {
        parts.push(format!(
            "other shape {}: {}",
            reshaped.len(),
            list(reshaped)
        ));
    }
    if parts.is_empty() {
        Ok(())
    } else {
        Err(parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use burn::prelude::{Device, Tensor};
    use models::{FmpNetConfig, LeNet5ClassicConfig, LeNet5ModernConfig, NetworkConfig};

    use super::*;

    fn pytorch(config: NetworkConfig) -> Vec<(String, Vec<usize>)> {
        layout(&config.init(&Device::flex()), WeightsFormat::PyTorch)
            .into_iter()
            .collect()
    }

    fn expected(entries: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
        let mut entries: Vec<_> = entries
            .iter()
            .map(|(name, shape)| (name.to_string(), shape.to_vec()))
            .collect();
        entries.sort();
        entries
    }

    // The state dicts of scripts/cnn_models.py's modules, written out by hand.
    #[test]
    fn lenet_names_and_shapes_are_pytorchs() {
        let modern = NetworkConfig::LeNet5Modern(LeNet5ModernConfig::new());
        assert_eq!(
            pytorch(modern),
            expected(&[
                ("conv1.weight", &[20, 1, 5, 5]),
                ("conv1.bias", &[20]),
                ("conv2.weight", &[50, 20, 5, 5]),
                ("conv2.bias", &[50]),
                ("fc1.weight", &[500, 2450]),
                ("fc1.bias", &[500]),
                ("fc2.weight", &[10, 500]),
                ("fc2.bias", &[10]),
            ])
        );
        let classic = NetworkConfig::LeNet5Classic(LeNet5ClassicConfig::new());
        assert_eq!(
            pytorch(classic),
            expected(&[
                ("c1.weight", &[6, 1, 5, 5]),
                ("c1.bias", &[6]),
                ("s2.coefficient", &[6]),
                ("s2.bias", &[6]),
                ("c3.kernels", &[60, 25]),
                ("c3.bias", &[16]),
                ("s4.coefficient", &[16]),
                ("s4.bias", &[16]),
                ("c5.weight", &[120, 16, 5, 5]),
                ("c5.bias", &[120]),
                ("f6.weight", &[84, 120]),
                ("f6.bias", &[84]),
                ("output.weight", &[10, 84]),
                ("output.bias", &[10]),
            ])
        );
    }

    #[test]
    fn fmp_names_and_shapes_are_pytorchs() {
        let mut entries: Vec<(String, Vec<usize>)> = Vec::new();
        let mut norm = |prefix: &str, n: usize| {
            for field in ["weight", "bias", "running_mean", "running_var"] {
                entries.push((format!("{prefix}.{field}"), vec![n]));
            }
            entries.push((format!("{prefix}.num_batches_tracked"), vec![]));
        };
        for i in 0..6 {
            norm(&format!("blocks.{i}.norm"), 32 * (i + 1));
        }
        norm("head_norm", 224);
        for i in 0..6 {
            let inputs = if i == 0 { 1 } else { 32 * i };
            let out = 32 * (i + 1);
            entries.push((format!("blocks.{i}.conv.weight"), vec![out, inputs, 2, 2]));
            entries.push((format!("blocks.{i}.conv.bias"), vec![out]));
        }
        entries.push(("head.weight".into(), vec![224, 192, 2, 2]));
        entries.push(("head.bias".into(), vec![224]));
        entries.push(("classifier.weight".into(), vec![10, 224, 1, 1]));
        entries.push(("classifier.bias".into(), vec![10]));
        entries.sort();
        assert_eq!(
            pytorch(NetworkConfig::FmpNet(FmpNetConfig::default())),
            entries
        );
        // Without batch norm there is nothing of it.
        let plain = pytorch(NetworkConfig::FmpNet(FmpNetConfig {
            batch_norm: false,
            ..FmpNetConfig::default()
        }));
        assert_eq!(plain.len(), 2 * 8);
        assert!(plain.iter().all(|(name, _)| !name.contains("norm")));
    }

    #[test]
    fn both_formats_round_trip_and_the_safetensors_file_says_what_it_holds() {
        let device = Device::flex();
        let small = FmpNetConfig {
            filters: 4,
            ..FmpNetConfig::default()
        };
        let config = NetworkConfig::FmpNet(small.clone());
        let network = config.init(&device);
        let x = Tensor::<4>::ones([1, 1, 36, 36], &device);
        network.reseed(1);
        let before = network.forward(x.clone());
        let dir = tempfile::tempdir().unwrap();
        for (name, format) in [
            ("w.safetensors", WeightsFormat::PyTorch),
            ("w.bpk", WeightsFormat::Burnpack),
        ] {
            let path = dir.path().join(name);
            save(&network, format, &path, "dataset = \"mnist\"").unwrap();
            // A fresh network has other weights until it loads the file.
            let fresh = NetworkConfig::FmpNet(FmpNetConfig {
                seed: 9,
                ..small.clone()
            })
            .init(&device);
            let loaded = load(fresh, &path).unwrap();
            loaded.reseed(1);
            let after = loaded.forward(x.clone());
            let difference: f32 = (after - before.clone()).abs().max().into_scalar();
            assert_eq!(difference, 0.0, "{name}");
        }
        let bytes = std::fs::read(dir.path().join("w.safetensors")).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let tracked = file.tensor("blocks.0.norm.num_batches_tracked").unwrap();
        assert_eq!((tracked.dtype(), tracked.shape()), (Dtype::I64, &[][..]));
        let weight = file.tensor("blocks.1.conv.weight").unwrap();
        assert_eq!(
            (weight.dtype(), weight.shape()),
            (Dtype::F32, &[8, 4, 2, 2][..])
        );
        assert_eq!(
            embedded_config(&dir.path().join("w.safetensors")).unwrap(),
            Some("dataset = \"mnist\"".to_string())
        );
    }

    /// How a test writes an f32 value in another type.
    type Encode = fn(f32) -> Vec<u8>;

    /// `source` (a safetensors file of f32 weights) written again with every float tensor in
    /// `dtype`, each value encoded by `encode`.
    fn rewrite(source: &Path, dest: &Path, dtype: Dtype, encode: Encode) {
        let bytes = std::fs::read(source).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        let tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = file
            .tensors()
            .into_iter()
            .map(|(name, view)| match view.dtype() {
                Dtype::F32 => {
                    let data = view
                        .data()
                        .chunks_exact(4)
                        .flat_map(|b| encode(f32::from_le_bytes(b.try_into().unwrap())))
                        .collect();
                    (name, dtype, view.shape().to_vec(), data)
                }
                other => (name, other, view.shape().to_vec(), view.data().to_vec()),
            })
            .collect();
        let views = tensors.iter().map(|(name, dtype, shape, data)| {
            (
                name.as_str(),
                TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        });
        std::fs::write(dest, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    #[test]
    fn weights_in_f64_f16_and_bf16_load_converted_and_integers_are_named() {
        let device = Device::flex();
        let config = NetworkConfig::FmpNet(FmpNetConfig {
            filters: 4,
            ..FmpNetConfig::default()
        });
        let network = config.init(&device);
        let x = Tensor::<4>::ones([1, 1, 36, 36], &device);
        network.reseed(1);
        let before = network.forward(x.clone());
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("f32.safetensors");
        save(&network, WeightsFormat::PyTorch, &source, "").unwrap();
        let cases: [(&str, Dtype, Encode, f32); 3] = [
            (
                "f64",
                Dtype::F64,
                |v| (v as f64).to_le_bytes().to_vec(),
                0.0,
            ),
            (
                "f16",
                Dtype::F16,
                |v| half::f16::from_f32(v).to_le_bytes().to_vec(),
                0.05,
            ),
            (
                "bf16",
                Dtype::BF16,
                |v| half::bf16::from_f32(v).to_le_bytes().to_vec(),
                0.2,
            ),
        ];
        for (name, dtype, encode, tolerance) in cases {
            let path = dir.path().join(format!("{name}.safetensors"));
            rewrite(&source, &path, dtype, encode);
            let loaded = load(config.init(&device), &path).unwrap();
            loaded.reseed(1);
            let after = loaded.forward(x.clone());
            let difference: f32 = (after - before.clone()).abs().max().into_scalar();
            assert!(
                difference <= tolerance,
                "{name}: logits differ by {difference}"
            );
        }
        // Integer weights are not weights: refused with the tensor's name, never a panic.
        let path = dir.path().join("i32.safetensors");
        rewrite(&source, &path, Dtype::I32, |v| {
            (v as i32).to_le_bytes().to_vec()
        });
        let err = format!("{:#}", load(config.init(&device), &path).unwrap_err());
        assert!(
            err.contains("i32.safetensors")
                && err.contains("I32")
                && err.contains("tensor blocks.0.conv.bias"),
            "{err}"
        );
    }

    #[test]
    fn differences_are_listed_by_kind() {
        let map = |entries: &[(&str, &[usize])]| {
            entries
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_vec()))
                .collect::<BTreeMap<_, _>>()
        };
        let network = map(&[("a", &[2]), ("b", &[3, 4]), ("c", &[1])]);
        let file = map(&[("a", &[2]), ("b", &[4, 3]), ("d", &[5])]);
        assert_eq!(
            compare(&network, &file).unwrap_err(),
            "missing 1: c [1]; unexpected 1: d [5]; other shape 1: b: file [4, 3], network [3, 4]"
        );
        assert!(compare(&network, &network).is_ok());
        let many: BTreeMap<_, _> = (0..20).map(|i| (format!("t{i:02}"), vec![1])).collect();
        let message = compare(&many, &BTreeMap::new()).unwrap_err();
        assert!(message.starts_with("missing 20: t00 [1]"), "{message}");
        assert!(message.ends_with("t11 [1] and 8 more"), "{message}");
    }

    #[test]
    fn unknown_extensions_are_named() {
        let err = WeightsFormat::of(Path::new("weights.pt"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("weights.pt") && err.contains(".safetensors"),
            "{err}"
        );
    }
}
