//! Datasets for the course's networks: reading, integrity checks, download and batching.
//!
//! The flow is: [`locate`] finds (or downloads) a dataset's files, [`DatasetKind::load`] reads
//! and verifies them into [`Splits`] of [`Images`], and [`ImageBatcher`] turns the items of an
//! [`ImageDataset`] into tensors on any device, zero-padded to the input size the model reports,
//! normalised with the dataset's mean and std, and optionally distorted ([`Augmentation`]).
//! CIFAR-10 is read from its official binary format ([`CIFAR10_FOLDER`] or the tarball); every
//! failure is a [`DataError`] that names the file.
//!
//! Modules, each importing only those before it: `error`, `images`, `integrity` (digests,
//! gzip), `idx` and `cifar` (the two file formats), `dataset` (what each dataset is and where
//! its files come from), `fetch` (finding and downloading them), `augment`, `batch`.

mod augment;
mod batch;
mod cifar;
mod dataset;
mod error;
mod fetch;
mod idx;
mod images;
mod integrity;
#[cfg(test)]
mod testing;

pub use augment::Augmentation;
pub use batch::{ImageBatcher, ImageDataset, ImageItem};
pub use cifar::CIFAR10_FOLDER;
pub use dataset::DatasetKind;
pub use error::DataError;
pub use fetch::{DATA_DIR_ENV, OFFLINE_ENV, locate};
pub use images::{Images, Splits};
