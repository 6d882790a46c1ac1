//! Integrity of dataset files: digests, decompression, and which form of a file is present.

use std::io::Read;
use std::path::{Path, PathBuf};

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::DataError;

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex MD5 of `bytes` (the digest published for CIFAR-10 and Fashion-MNIST).
pub fn md5_hex(bytes: &[u8]) -> String {
    hex(&Md5::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `bytes` have one of `digests`: 32 hex digits are an MD5, 64 a SHA-256.
fn has_digest(bytes: &[u8], digests: &[&str]) -> bool {
    let md5 = digests
        .iter()
        .any(|d| d.len() == 32)
        .then(|| md5_hex(bytes));
    let sha = sha256_hex(bytes);
    digests
        .iter()
        .any(|d| *d == sha || Some(*d) == md5.as_deref())
}

/// Reads `path`, accepts it if the digest of the file or of its decompressed content is one of
/// `digests`, and returns the decompressed content.
pub(crate) fn read_verified(path: &Path, digests: &[&str]) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file_matches = has_digest(&raw, digests);
    let content = maybe_gunzip(raw, path)?;
    if file_matches || has_digest(&content, digests) {
        return Ok(content);
    }
    Err(DataError::Digest {
        path: path.to_path_buf(),
        actual: sha256_hex(&content),
        expected: digests.join(", "),
    })
}

/// `folder/name.gz` if present, else `folder/name`.
pub(crate) fn existing_file(folder: &Path, name: &str) -> Option<PathBuf> {
    [format!("{name}.gz"), name.to_string()]
        .into_iter()
        .map(|file| folder.join(file))
        .find(|path| path.is_file())
}

/// The most bytes a gzip file is decompressed to: well above the largest dataset file (MNIST's
/// training images, 47 MB), so that a file that inflates without end fails instead of filling
/// memory.
const MAX_GUNZIPPED: u64 = 256 << 20;

/// Decompresses `bytes` if they are gzip (magic 1f 8b), else returns them as they are.
pub(crate) fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let gzip_error = |source| DataError::Gzip {
            path: path.to_path_buf(),
            source,
        };
        flate2::read::GzDecoder::new(&bytes[..])
            .take(MAX_GUNZIPPED + 1)
            .read_to_end(&mut out)
            .map_err(gzip_error)?;
        if out.len() as u64 > MAX_GUNZIPPED {
            return Err(gzip_error(std::io::Error::other(format!(
                "it decompresses to more than {} MiB, more than any dataset file",
                MAX_GUNZIPPED >> 20
            ))));
        }
        Ok(out)
    } else {
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::gzip;

    #[test]
    fn digest_mismatch_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t10k-labels-idx1-ubyte");
        std::fs::write(&path, b"not mnist").unwrap();
        let err = read_verified(&path, &["00"]).unwrap_err().to_string();
        assert!(
            err.contains("t10k-labels-idx1-ubyte") && err.contains("SHA-256"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_gzip_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        let mut bytes = gzip(&[5u8; 1000]);
        let mid = bytes.len() / 2;
        bytes.truncate(mid);
        std::fs::write(&path, bytes).unwrap();
        let err = read_verified(&path, &["00"]).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    }

    #[test]
    fn a_gzip_that_inflates_beyond_any_dataset_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.gz");
        std::fs::write(&path, gzip(&vec![0u8; (MAX_GUNZIPPED + 1) as usize])).unwrap();
        let err = read_verified(&path, &["00"]).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
        assert!(err.to_string().contains("bomb.gz"), "{err}");
    }
}
