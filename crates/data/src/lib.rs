//! Datasets for the course's networks: reading, integrity checks, download and batching.
//!
//! The flow is: [`locate`] finds (or downloads) a dataset's files, [`Splits::load`] reads and
//! verifies them, and [`ImageBatcher`] turns items into tensors on any device, zero-padded to the
//! input size the model reports and normalised with the dataset's mean and std.

mod batch;
mod dataset;
mod error;
mod fetch;
mod idx;

pub use batch::{ImageBatcher, ImageDataset, ImageItem};
pub use dataset::{DatasetKind, Images, Splits};
pub use error::DataError;
pub use fetch::{DATA_DIR_ENV, download_verified, locate, sha256_hex};
pub use idx::{parse_idx_images, parse_idx_labels};
