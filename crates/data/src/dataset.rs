//! The datasets the project knows: their files, digests, statistics and download mirrors.

use std::io::Read;
use std::path::Path;

use crate::{
    DataError,
    fetch::read_verified,
    idx::{parse_idx_images, parse_idx_labels},
};

/// A dataset the trainer can use. Each lives in its own folder, `<data_dir>/<folder>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// The full MNIST: 60,000 training and 10,000 test digits.
    Mnist,
    /// The class-balanced sample of MNIST committed with the project (2,000 train, 500 test),
    /// so that the quick start trains offline. Cut by `scripts/cut_mnist_sample.py`.
    MnistSample,
}

/// One IDX file of a dataset and the SHA-256 digests it may have: that of the gzip file and
/// that of its decompressed content (so the official gzip, a re-compressed copy and the plain
/// file all pass).
pub(crate) struct FileSpec {
    pub name: &'static str,
    pub sha256: &'static [&'static str],
}

const MNIST_FILES: [FileSpec; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        sha256: &[
            "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ],
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        sha256: &[
            "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ],
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        sha256: &[
            "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ],
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        sha256: &[
            "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ],
    },
];

// Digests of the decompressed sample files, as printed by scripts/cut_mnist_sample.py.
const MNIST_SAMPLE_FILES: [FileSpec; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        sha256: &["5742f398058fe36aaf1b8edb1051aa6ed96831e24fd15bf6ac80362ceb9942bc"],
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        sha256: &["5845824a1405e379f337fe3db6e4fa8614766ce3767bbb4825466b35c5ac044b"],
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        sha256: &["97ec3e530cd55441a2c634c869ee2db6ac4224e52db5b7b8f60743ac7c976ec7"],
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        sha256: &["ff9110acc0bd87bce7a4ef183f1e00fcd66145d7f0db2ed8cd3aee4b1f6d5b03"],
    },
];

impl DatasetKind {
    /// The name used in configs (`dataset = "mnist"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::MnistSample => "mnist_sample",
        }
    }

    /// Parses a config name; the error lists the accepted names.
    pub fn from_name(name: &str) -> Result<Self, String> {
        [Self::Mnist, Self::MnistSample]
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                format!("unknown dataset {name:?}, expected \"mnist\" or \"mnist_sample\"")
            })
    }

    /// The folder under the data directory that holds this dataset's files.
    pub fn folder(self) -> &'static str {
        self.name()
    }

    pub(crate) fn files(self) -> &'static [FileSpec; 4] {
        match self {
            Self::Mnist => &MNIST_FILES,
            Self::MnistSample => &MNIST_SAMPLE_FILES,
        }
    }

    /// Base addresses to download the gzip files from, tried in order; empty when the dataset
    /// ships with the project.
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            Self::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ],
            Self::MnistSample => &[],
        }
    }

    /// Number of classes.
    pub fn classes(self) -> usize {
        10
    }

    /// Colour channels per image.
    pub fn channels(self) -> usize {
        1
    }

    /// Per-channel mean and standard deviation of the training pixels on the [0, 1] scale.
    pub fn mean_std(self) -> (f32, f32) {
        (0.1307, 0.3081)
    }
}

/// Images stored as bytes, `count` x `channels` x `rows` x `cols`, row-major.
#[derive(Clone, Debug)]
pub struct Images {
    /// The pixels, one byte each.
    pub pixels: Vec<u8>,
    /// Number of images.
    pub count: usize,
    /// Channels per image.
    pub channels: usize,
    /// Height.
    pub rows: usize,
    /// Width.
    pub cols: usize,
}

/// A dataset's training and test splits, read and verified.
#[derive(Clone, Debug)]
pub struct Splits {
    /// Training images.
    pub train_images: Images,
    /// Training labels.
    pub train_labels: Vec<u8>,
    /// Test images.
    pub test_images: Images,
    /// Test labels.
    pub test_labels: Vec<u8>,
}

impl Splits {
    /// Reads the four IDX files of `kind` from `folder` (each as `name.gz` or plain `name`),
    /// checking digests, formats and that image and label counts agree.
    pub fn load(kind: DatasetKind, folder: &Path) -> Result<Self, DataError> {
        let [train_x, train_y, test_x, test_y] = kind.files();
        let read = |spec: &FileSpec| -> Result<(std::path::PathBuf, Vec<u8>), DataError> {
            let path = existing_file(folder, spec.name).ok_or_else(|| DataError::Io {
                path: folder.join(format!("{}.gz", spec.name)),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            let bytes = read_verified(&path, spec.sha256)?;
            Ok((path, bytes))
        };
        let images = |spec| -> Result<Images, DataError> {
            let (path, bytes) = read(spec)?;
            parse_idx_images(&bytes, &path)
        };
        let labels = |spec| -> Result<(std::path::PathBuf, Vec<u8>), DataError> {
            let (path, bytes) = read(spec)?;
            let labels = parse_idx_labels(&bytes, &path, kind.classes())?;
            Ok((path, labels))
        };
        let train_images = images(train_x)?;
        let (train_path, train_labels) = labels(train_y)?;
        let test_images = images(test_x)?;
        let (test_path, test_labels) = labels(test_y)?;
        for (images, labels, path) in [
            (&train_images, &train_labels, &train_path),
            (&test_images, &test_labels, &test_path),
        ] {
            if images.count != labels.len() {
                return Err(DataError::format(
                    path,
                    format!(
                        "{} labels for {} images, expected equal counts",
                        labels.len(),
                        images.count
                    ),
                ));
            }
        }
        Ok(Self {
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }
}

/// `folder/name.gz` if present, else `folder/name`.
pub(crate) fn existing_file(folder: &Path, name: &str) -> Option<std::path::PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|file| folder.join(file))
        .find(|path| path.is_file())
}

/// Decompresses `bytes` if they are gzip (magic 1f 8b), else returns them as they are.
pub(crate) fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}
