//! The datasets the project knows: their files, digests, statistics and download mirrors.

use std::path::{Path, PathBuf};

use crate::{
    DataError, Images, Splits,
    cifar::{CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_TARBALL, CifarBinary},
    idx::{parse_idx_images, parse_idx_labels},
    integrity::{existing_file, read_verified},
};

/// A dataset the trainer can use. Each lives in its own folder, `<data_dir>/<folder>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    /// The full MNIST: 60,000 training and 10,000 test digits.
    Mnist,
    /// The class-balanced sample of MNIST committed with the project (2,000 train, 500 test),
    /// so that the quick start trains offline. Cut by `scripts/cut_mnist_sample.py`.
    MnistSample,
    /// Zalando's Fashion-MNIST: MNIST's format and sizes, ten kinds of clothing.
    FashionMnist,
    /// CIFAR-10, binary version: 50,000 training and 10,000 test 32x32 colour images.
    Cifar10,
}

/// One IDX file of a dataset and the digests it may have: the MD5 (32 hex digits) or SHA-256
/// (64) of the gzip file, or the SHA-256 of its decompressed content (so the official gzip, a
/// re-compressed copy such as Debian's and the plain file all pass).
struct FileSpec {
    name: &'static str,
    digests: &'static [&'static str],
}

/// How a dataset is stored on disk.
enum Storage {
    /// Four IDX files: train images, train labels, test images, test labels.
    Idx(&'static [FileSpec; 4]),
    /// The CIFAR-10 binary tarball or its extracted folder.
    CifarBinary,
}

const MNIST_FILES: [FileSpec; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        digests: &[
            "0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971",
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ],
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        digests: &[
            "1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ],
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        digests: &[
            "1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ],
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        digests: &[
            "b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ],
    },
];

// Digests of the decompressed sample files, as printed by scripts/cut_mnist_sample.py.
const MNIST_SAMPLE_FILES: [FileSpec; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        digests: &["5742f398058fe36aaf1b8edb1051aa6ed96831e24fd15bf6ac80362ceb9942bc"],
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        digests: &["5845824a1405e379f337fe3db6e4fa8614766ce3767bbb4825466b35c5ac044b"],
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        digests: &["97ec3e530cd55441a2c634c869ee2db6ac4224e52db5b7b8f60743ac7c976ec7"],
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        digests: &["ff9110acc0bd87bce7a4ef183f1e00fcd66145d7f0db2ed8cd3aee4b1f6d5b03"],
    },
];

// MD5 of Zalando's official gzip files, and SHA-256 of the decompressed content (taken from
// Debian's dataset-fashion-mnist, whose gzip files are re-compressed).
const FASHION_MNIST_FILES: [FileSpec; 4] = [
    FileSpec {
        name: "train-images-idx3-ubyte",
        digests: &[
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ],
    },
    FileSpec {
        name: "train-labels-idx1-ubyte",
        digests: &[
            "25c81989df183df01b3e8a0aad5dffbe",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ],
    },
    FileSpec {
        name: "t10k-images-idx3-ubyte",
        digests: &[
            "bef4ecab320f06d8554ea6380940ec79",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ],
    },
    FileSpec {
        name: "t10k-labels-idx1-ubyte",
        digests: &[
            "bb300cfdad3c16e7a12a480ee83cd310",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ],
    },
];

const ALL: [DatasetKind; 4] = [
    DatasetKind::Mnist,
    DatasetKind::MnistSample,
    DatasetKind::FashionMnist,
    DatasetKind::Cifar10,
];

impl DatasetKind {
    /// The name used in configs (`dataset = "mnist"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::MnistSample => "mnist_sample",
            Self::FashionMnist => "fashion_mnist",
            Self::Cifar10 => "cifar10",
        }
    }

    /// Parses a config name; the error lists the accepted names.
    pub fn from_name(name: &str) -> Result<Self, String> {
        ALL.into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                let names: Vec<String> = ALL.iter().map(|k| format!("{:?}", k.name())).collect();
                format!(
                    "unknown dataset {name:?}, expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// The folder under the data directory that holds this dataset's files.
    pub fn folder(self) -> &'static str {
        self.name()
    }

    fn storage(self) -> Storage {
        match self {
            Self::Mnist => Storage::Idx(&MNIST_FILES),
            Self::MnistSample => Storage::Idx(&MNIST_SAMPLE_FILES),
            Self::FashionMnist => Storage::Idx(&FASHION_MNIST_FILES),
            Self::Cifar10 => Storage::CifarBinary,
        }
    }

    /// Base addresses to download the files from, tried in order; empty when the dataset
    /// ships with the project.
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            Self::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ],
            Self::MnistSample => &[],
            Self::FashionMnist => &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
            Self::Cifar10 => &["https://www.cs.toronto.edu/~kriz/"],
        }
    }

    /// Folders where a system package installs the files, searched after the data folders
    /// (Debian's `dataset-fashion-mnist`).
    pub fn system_folders(self) -> &'static [&'static str] {
        match self {
            Self::FashionMnist => &["/usr/share/datasets/fashion-mnist"],
            _ => &[],
        }
    }

    /// Number of classes.
    pub fn classes(self) -> usize {
        10
    }

    /// The classes' names, in label order.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            Self::Mnist | Self::MnistSample => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            Self::FashionMnist => [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ],
            Self::Cifar10 => CIFAR10_CLASSES,
        }
    }

    /// Colour channels per image.
    pub fn channels(self) -> usize {
        match self {
            Self::Cifar10 => 3,
            _ => 1,
        }
    }

    /// Side of the dataset's square images, in pixels.
    pub fn image_side(self) -> usize {
        match self {
            Self::Cifar10 => 32,
            _ => 28,
        }
    }

    /// Per-channel mean and standard deviation of the training pixels on the [0, 1] scale,
    /// over all pixels of the training set (for CIFAR-10 not the often quoted mean of per-image
    /// stds, 0.2023/0.1994/0.2010).
    pub fn mean_std(self) -> (&'static [f32], &'static [f32]) {
        match self {
            Self::Mnist | Self::MnistSample => (&[0.1307], &[0.3081]),
            Self::FashionMnist => (&[0.2860], &[0.3530]),
            Self::Cifar10 => (&[0.4914, 0.4822, 0.4465], &[0.2470, 0.2435, 0.2616]),
        }
    }

    /// Whether `folder` holds everything this dataset needs.
    pub(crate) fn is_complete(self, folder: &Path) -> bool {
        match self.storage() {
            Storage::Idx(files) => files
                .iter()
                .all(|f| existing_file(folder, f.name).is_some()),
            Storage::CifarBinary => CifarBinary::present(folder),
        }
    }

    /// The files to fetch into an empty `folder`.
    pub(crate) fn downloads(self, folder: &Path) -> Vec<Download> {
        let urls = |file: &str| {
            self.mirrors()
                .iter()
                .map(|m| format!("{m}{file}"))
                .collect()
        };
        match self.storage() {
            Storage::Idx(files) => files
                .iter()
                .filter(|spec| existing_file(folder, spec.name).is_none())
                .map(|spec| {
                    let file = format!("{}.gz", spec.name);
                    Download {
                        urls: urls(&file),
                        file,
                        digests: spec.digests,
                    }
                })
                .collect(),
            Storage::CifarBinary => vec![Download {
                file: CIFAR10_TARBALL.into(),
                urls: urls(CIFAR10_TARBALL),
                digests: &[CIFAR10_MD5],
            }],
        }
    }

    /// Reads this dataset's splits from `folder` (as [`crate::locate`] returns it), checking
    /// digests, formats and that image and label counts agree.
    pub fn load(self, folder: &Path) -> Result<Splits, DataError> {
        match self.storage() {
            Storage::Idx(files) => self.load_idx(files, folder),
            Storage::CifarBinary => CifarBinary::load(folder).map(|c| c.splits),
        }
    }

    /// The four IDX files, each as `name.gz` or plain `name`.
    fn load_idx(self, files: &[FileSpec; 4], folder: &Path) -> Result<Splits, DataError> {
        let [train_x, train_y, test_x, test_y] = files;
        let read = |spec: &FileSpec| -> Result<(PathBuf, Vec<u8>), DataError> {
            let path = existing_file(folder, spec.name).ok_or_else(|| DataError::Io {
                path: folder.join(format!("{}.gz", spec.name)),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            let bytes = read_verified(&path, spec.digests)?;
            Ok((path, bytes))
        };
        let images = |spec| -> Result<Images, DataError> {
            let (path, bytes) = read(spec)?;
            parse_idx_images(&bytes, &path)
        };
        let labels = |spec| -> Result<(PathBuf, Vec<u8>), DataError> {
            let (path, bytes) = read(spec)?;
            let labels = parse_idx_labels(&bytes, &path, self.classes())?;
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
        Ok(Splits {
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }
}

/// A file to download: its name in the dataset folder, the addresses, the accepted digests.
pub(crate) struct Download {
    pub file: String,
    pub urls: Vec<String>,
    pub digests: &'static [&'static str],
}
