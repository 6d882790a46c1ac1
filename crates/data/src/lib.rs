//! Datasets for the course's networks: reading, integrity checks, download and batching.
//!
//! The flow is: [`locate`] finds (or downloads) a dataset's files, [`Splits::load`] reads and
//! verifies them, and [`ImageBatcher`] turns items into tensors on any device, zero-padded to the
//! input size the model reports and normalised with the dataset's mean and std.

mod augment;
mod batch;
mod cifar;
mod dataset;
mod error;
mod fetch;
mod idx;

pub use augment::Augmentation;
pub use batch::{ImageBatcher, ImageDataset, ImageItem};
pub use cifar::{CIFAR10_FOLDER, CIFAR10_MD5, CIFAR10_TARBALL, CifarBinary, parse_cifar_batch};
pub use dataset::{DatasetKind, Images, Splits};
pub use error::DataError;
pub use fetch::{DATA_DIR_ENV, OFFLINE_ENV, download_verified, locate, md5_hex, sha256_hex};
pub use idx::{parse_idx_images, parse_idx_labels};
