//! The CIFAR-10 binary version: the official tarball read directly, or its extracted folder.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::{DataError, Images, Splits, integrity::read_verified};

/// The official archive's file name.
pub const CIFAR10_TARBALL: &str = "cifar-10-binary.tar.gz";
/// MD5 of the official archive, as published with it.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The folder the archive unpacks to.
pub const CIFAR10_FOLDER: &str = "cifar-10-batches-bin";
/// The classes in label order, as `batches.meta.txt` lists them.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const SIDE: usize = 32;
/// One record: a label byte, then 1,024 red, 1,024 green and 1,024 blue bytes, each row-major.
pub(crate) const RECORD: usize = 1 + 3 * SIDE * SIDE;
pub(crate) const TRAIN_BATCHES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub(crate) const TEST_BATCH: &str = "test_batch.bin";
pub(crate) const META: &str = "batches.meta.txt";

/// CIFAR-10 read from its binary batches.
#[derive(Clone, Debug)]
pub struct CifarBinary {
    /// The five training batches in order, and the test batch.
    pub splits: Splits,
}

impl CifarBinary {
    /// Whether `folder` holds the extracted batches or the tarball.
    pub fn present(folder: &Path) -> bool {
        let batches = folder.join(CIFAR10_FOLDER);
        TRAIN_BATCHES
            .iter()
            .chain([&TEST_BATCH])
            .all(|b| batches.join(b).is_file())
            || folder.join(CIFAR10_TARBALL).is_file()
    }

    /// Reads `folder/cifar-10-batches-bin/` if it exists, else `folder/cifar-10-binary.tar.gz`
    /// (checked against the official MD5).
    pub fn load(folder: &Path) -> Result<Self, DataError> {
        let extracted = folder.join(CIFAR10_FOLDER);
        if extracted.is_dir() {
            Self::from_dir(&extracted)
        } else {
            Self::from_tarball(&folder.join(CIFAR10_TARBALL), &[CIFAR10_MD5])
        }
    }

    /// Reads the extracted batches in `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, DataError> {
        let mut files = HashMap::new();
        for name in TRAIN_BATCHES.iter().chain([&TEST_BATCH, &META]) {
            let path = dir.join(name);
            match std::fs::read(&path) {
                Ok(bytes) => {
                    files.insert(name.to_string(), bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(DataError::Io { path, source }),
            }
        }
        Self::from_files(files, dir)
    }

    /// Reads the tarball at `path` without unpacking it to disk, after checking that its digest
    /// is one of `digests`.
    pub fn from_tarball(path: &Path, digests: &[&str]) -> Result<Self, DataError> {
        let tar = read_verified(path, digests)?;
        let mut files = HashMap::new();
        let io = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let name = entry.path().map_err(io)?.to_string_lossy().into_owned();
            if let Some(file) = name.strip_prefix(&format!("{CIFAR10_FOLDER}/")) {
                let mut bytes = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut bytes).map_err(io)?;
                files.insert(file.to_string(), bytes);
            }
        }
        Self::from_files(files, &path.join(CIFAR10_FOLDER))
    }

    /// Builds the splits from the batch files found, named relative to `origin` in errors.
    fn from_files(mut files: HashMap<String, Vec<u8>>, origin: &Path) -> Result<Self, DataError> {
        let mut take = |name: &str| {
            files.remove(name).ok_or_else(|| {
                DataError::format(
                    &origin.join(name),
                    "missing: CIFAR-10 needs data_batch_1.bin to data_batch_5.bin and \
                     test_batch.bin",
                )
            })
        };
        let mut train_pixels = Vec::new();
        let mut train_labels = Vec::new();
        for name in TRAIN_BATCHES {
            let (pixels, labels) = parse_cifar_batch(&take(name)?, &origin.join(name))?;
            train_pixels.extend(pixels);
            train_labels.extend(labels);
        }
        let (test_pixels, test_labels) =
            parse_cifar_batch(&take(TEST_BATCH)?, &origin.join(TEST_BATCH))?;
        // The labels mean what `CIFAR10_CLASSES` says; a meta file that lists other classes
        // belongs to another dataset in CIFAR's format, whose predictions would be misnamed.
        if let Some(bytes) = files.remove(META) {
            check_meta(&bytes, &origin.join(META))?;
        }
        let images = |pixels: Vec<u8>, count| Images {
            pixels,
            count,
            channels: 3,
            rows: SIDE,
            cols: SIDE,
        };
        Ok(Self {
            splits: Splits {
                train_images: images(train_pixels, train_labels.len()),
                train_labels,
                test_images: images(test_pixels, test_labels.len()),
                test_labels,
            },
        })
    }
}

/// Splits one binary batch into its pixels (CHW per image, as stored) and labels.
pub fn parse_cifar_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>), DataError> {
    let complete = bytes.len() / RECORD;
    let partial = bytes.len() % RECORD;
    if partial != 0 {
        return Err(DataError::format(
            path,
            format!(
                "truncated record {}: {partial} of {RECORD} bytes after {complete} complete \
                 records (each record is 1 label byte and 3,072 pixel bytes)",
                complete + 1
            ),
        ));
    }
    if complete == 0 {
        return Err(DataError::format(path, "no records: the file is empty"));
    }
    let mut pixels = Vec::with_capacity(complete * (RECORD - 1));
    let mut labels = Vec::with_capacity(complete);
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] > 9 {
            return Err(DataError::format(
                path,
                format!("record {}: label {}, expected 0 to 9", i + 1, record[0]),
            ));
        }
        labels.push(record[0]);
        pixels.extend_from_slice(&record[1..]);
    }
    Ok((pixels, labels))
}

/// Checks that the meta file lists CIFAR-10's ten class names, one per line, in label order.
fn check_meta(bytes: &[u8], path: &Path) -> Result<(), DataError> {
    let text = String::from_utf8_lossy(bytes);
    let names: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if names != CIFAR10_CLASSES {
        return Err(DataError::format(
            path,
            format!(
                "lists the classes {names:?}, expected CIFAR-10's {CIFAR10_CLASSES:?} (one per \
                 line): these files are another dataset"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{batch, tarball, write_dir};

    #[test]
    fn reads_the_extracted_folder_and_the_tarball_alike() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(CIFAR10_FOLDER);
        write_dir(&dir, 4);
        let from_dir = CifarBinary::from_dir(&dir).unwrap();
        let splits = &from_dir.splits;
        assert_eq!(splits.train_images.count, 20);
        assert_eq!(
            (splits.train_images.channels, splits.train_images.rows),
            (3, 32)
        );
        assert_eq!(splits.train_labels[..6], [0, 1, 2, 3, 1, 2]);
        assert_eq!(splits.test_labels, [7, 8, 9, 0]);
        // Record 2 of the first batch: pixel j is (1 + j) % 251, red plane first.
        assert_eq!(splits.train_images.pixels[3072..3075], [1, 2, 3]);
        assert_eq!(CIFAR10_CLASSES[9], "truck");

        let bytes = tarball(&dir);
        let path = root.path().join(CIFAR10_TARBALL);
        std::fs::write(&path, &bytes).unwrap();
        let from_tar =
            CifarBinary::from_tarball(&path, &[&crate::integrity::md5_hex(&bytes)]).unwrap();
        assert_eq!(
            from_tar.splits.train_images.pixels,
            splits.train_images.pixels
        );
        assert_eq!(from_tar.splits.test_labels, splits.test_labels);

        // Without the extracted folder, `load` reads the tarball and wants the official digest.
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(CifarBinary::present(root.path()));
        let err = CifarBinary::load(root.path()).unwrap_err().to_string();
        assert!(
            err.contains(CIFAR10_TARBALL) && err.contains(CIFAR10_MD5),
            "{err}"
        );
    }

    #[test]
    fn a_meta_file_with_other_classes_is_named() {
        let root = tempfile::tempdir().unwrap();
        write_dir(root.path(), 2);
        std::fs::write(root.path().join(META), "cat\ndog\n").unwrap();
        let err = CifarBinary::from_dir(root.path()).unwrap_err().to_string();
        assert!(
            err.contains(META) && err.contains("another dataset"),
            "{err}"
        );
    }

    #[test]
    fn truncated_record_is_named_with_file_and_record() {
        let mut bytes = batch(3, 0);
        bytes.truncate(2 * RECORD + 100);
        let err = parse_cifar_batch(&bytes, Path::new("data_batch_2.bin"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("data_batch_2.bin") && err.contains("truncated record 3"),
            "{err}"
        );
    }

    #[test]
    fn label_above_nine_is_named() {
        let mut bytes = batch(3, 0);
        bytes[RECORD] = 10;
        let err = parse_cifar_batch(&bytes, Path::new("test_batch.bin"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("test_batch.bin: record 2: label 10, expected 0 to 9"),
            "{err}"
        );
    }

    #[test]
    fn missing_batch_is_named() {
        let root = tempfile::tempdir().unwrap();
        write_dir(root.path(), 2);
        std::fs::remove_file(root.path().join("data_batch_3.bin")).unwrap();
        let err = CifarBinary::from_dir(root.path()).unwrap_err().to_string();
        assert!(
            err.contains("data_batch_3.bin") && err.contains("missing"),
            "{err}"
        );
        assert!(!CifarBinary::present(root.path()));
    }
}
