//! The one error type of the data crate.

use std::path::PathBuf;

/// Everything that can go wrong while finding, fetching or reading a dataset. Each variant names
/// the file involved and what was expected, so the message alone tells the user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file starts like gzip but does not decompress.
    #[error("{path}: corrupt gzip stream: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decompression error.
        source: std::io::Error,
    },
    /// The file is not in the expected format.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was found and what was expected.
        message: String,
    },
    /// The file's digest matches none of the known ones.
    #[error(
        "{path}: digest mismatch (SHA-256 of the content {actual}; expected one of {expected}, \
         MD5 or SHA-256 of the file or its content); delete it to download it again"
    )]
    Digest {
        /// The file.
        path: PathBuf,
        /// The digest found.
        actual: String,
        /// The accepted digests, comma-separated.
        expected: String,
    },
    /// The files are absent and could not be downloaded, or were not: why, and what to do.
    #[error("{name} not found in {searched}: {reason}")]
    Missing {
        /// The dataset file.
        name: String,
        /// The folders that were searched.
        searched: String,
        /// Why it could not be obtained.
        reason: String,
    },
    /// The images do not fit the network: larger than its input, or another channel count.
    #[error(
        "the model's input is {input_size}x{input_size} but {dataset} images are \
         {}x{} with {} channels; expected an input at least as large as the images and \
         {channels} channels", images[1], images[2], images[0]
    )]
    Shape {
        /// The dataset's name.
        dataset: &'static str,
        /// The images' `[channels, rows, cols]`.
        images: [usize; 3],
        /// The channels the dataset's statistics cover.
        channels: usize,
        /// The side of the network's square input.
        input_size: usize,
    },
    /// The download itself failed.
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The address.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

impl DataError {
    pub(crate) fn format(path: &std::path::Path, message: impl Into<String>) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
