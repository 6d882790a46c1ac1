//! The IDX format of MNIST and Fashion-MNIST: a big-endian header (magic, counts, dimensions)
//! followed by unsigned bytes.

use std::path::Path;

use crate::{DataError, Images};

const LABELS_MAGIC: u32 = 0x0000_0801;
const IMAGES_MAGIC: u32 = 0x0000_0803;

fn header(bytes: &[u8], path: &Path, magic: u32, words: usize) -> Result<Vec<usize>, DataError> {
    if bytes.len() < 4 * words {
        return Err(DataError::format(
            path,
            format!(
                "file is {} bytes, shorter than its {}-byte IDX header",
                bytes.len(),
                4 * words
            ),
        ));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    if word(0) != magic {
        return Err(DataError::format(
            path,
            format!(
                "magic number {:#010x}, expected {magic:#010x} ({magic})",
                word(0)
            ),
        ));
    }
    Ok((1..words).map(|i| word(i) as usize).collect())
}

fn check_length(
    bytes: &[u8],
    path: &Path,
    header: usize,
    expected: usize,
) -> Result<(), DataError> {
    let body = bytes.len() - header;
    if body != expected {
        return Err(DataError::format(
            path,
            format!(
                "header declares {expected} data bytes but the file holds {body} ({})",
                if body < expected {
                    "truncated"
                } else {
                    "trailing bytes"
                }
            ),
        ));
    }
    Ok(())
}

/// Parses an IDX3 image file (magic 2051): `count` images of `rows` x `cols` bytes.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<Images, DataError> {
    let dims = header(bytes, path, IMAGES_MAGIC, 4)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        return Err(DataError::format(
            path,
            format!("image size {rows}x{cols}, expected non-zero"),
        ));
    }
    check_length(bytes, path, 16, count * rows * cols)?;
    Ok(Images {
        pixels: bytes[16..].to_vec(),
        count,
        channels: 1,
        rows,
        cols,
    })
}

/// Parses an IDX1 label file (magic 2049), checking every label is below `classes`.
pub fn parse_idx_labels(bytes: &[u8], path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    let dims = header(bytes, path, LABELS_MAGIC, 2)?;
    check_length(bytes, path, 8, dims[0])?;
    let labels = bytes[8..].to_vec();
    if let Some(at) = labels.iter().position(|&l| l as usize >= classes) {
        return Err(DataError::format(
            path,
            format!(
                "label {} at index {at}, expected 0..={}",
                labels[at],
                classes - 1
            ),
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(count: u32, rows: u32, cols: u32, body: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [IMAGES_MAGIC, count, rows, cols] {
            b.extend(w.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(7u8, body));
        b
    }

    #[test]
    fn reads_valid_images() {
        let parsed = parse_idx_images(&images(2, 3, 4, 24), Path::new("x")).unwrap();
        assert_eq!((parsed.count, parsed.rows, parsed.cols), (2, 3, 4));
        assert_eq!(parsed.pixels.len(), 24);
    }

    #[test]
    fn rejects_wrong_magic_naming_the_file() {
        let mut b = images(2, 3, 4, 24);
        b[3] = 0x01;
        let err = parse_idx_images(&b, Path::new("train-images"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train-images") && err.contains("magic"),
            "{err}"
        );
    }

    #[test]
    fn rejects_truncated_and_overlong_bodies() {
        let err = parse_idx_images(&images(2, 3, 4, 23), Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let err = parse_idx_images(&images(2, 3, 4, 25), Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("trailing"), "{err}");
        let err = parse_idx_images(&[0, 0, 8], Path::new("f"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("header"), "{err}");
    }

    #[test]
    fn rejects_out_of_range_labels() {
        let mut b = Vec::new();
        b.extend(LABELS_MAGIC.to_be_bytes());
        b.extend(3u32.to_be_bytes());
        b.extend([1, 9, 10]);
        let err = parse_idx_labels(&b, Path::new("labels"), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("label 10 at index 2"), "{err}");
    }
}
