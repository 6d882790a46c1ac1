//! Reading real MNIST files: the committed sample always, the full set when it is present.

use std::path::{Path, PathBuf};

use data::{DATA_DIR_ENV, DatasetKind, Splits};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_bundled_sample_is_verified_and_class_balanced() {
    let splits = Splits::load(
        DatasetKind::MnistSample,
        &repo().join("samples/mnist_sample"),
    )
    .unwrap();
    assert_eq!(
        (splits.train_images.count, splits.test_images.count),
        (2000, 500)
    );
    assert_eq!(
        (splits.train_images.rows, splits.train_images.cols),
        (28, 28)
    );
    for (labels, per_class) in [(&splits.train_labels, 200), (&splits.test_labels, 50)] {
        for digit in 0..10u8 {
            assert_eq!(labels.iter().filter(|&&l| l == digit).count(), per_class);
        }
    }
}

#[test]
fn sample_files_fail_the_full_mnist_digests() {
    let err = Splits::load(DatasetKind::Mnist, &repo().join("samples/mnist_sample")).unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
}

/// The full set, from $CNN_DATA_DIR or ../shared/data (CI sets the former).
#[test]
fn full_mnist_when_present() {
    let dir = std::env::var_os(DATA_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"))
        .join("mnist");
    if !dir.is_dir() {
        eprintln!("skipped: no full MNIST in {}", dir.display());
        return;
    }
    let splits = Splits::load(DatasetKind::Mnist, &dir).unwrap();
    assert_eq!(
        (splits.train_images.count, splits.test_images.count),
        (60_000, 10_000)
    );
    assert_eq!(splits.train_labels[..5], [5, 0, 4, 1, 9]);
}
