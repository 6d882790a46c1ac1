//! Reading real files: the committed MNIST sample always; full MNIST and Debian's Fashion-MNIST
//! when present, with their statistics measured against the built-in ones. Where
//! `CNN_TEST_REQUIRE` names them (CI sets `mnist,fashion_mnist`), their absence fails the test;
//! elsewhere the test says on the terminal that it did not run.

use std::io::Write;
use std::path::{Path, PathBuf};

use data::{DATA_DIR_ENV, DatasetKind, Images};

fn repo() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../..")
}

/// Fails when `CNN_TEST_REQUIRE` lists `what`; otherwise writes past the test harness's capture
/// that the test did not run, and why.
fn absent(what: &str, reason: &str) {
    let required = std::env::var("CNN_TEST_REQUIRE").unwrap_or_default();
    assert!(!required.split(',').any(|r| r.trim() == what), "{reason}");
    let _ = writeln!(std::io::stderr(), "NOT RUN ({what}): {reason}");
}

#[test]
fn the_bundled_sample_is_verified_and_class_balanced() {
    let splits = DatasetKind::MnistSample
        .load(&repo().join("samples/mnist_sample"))
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
    let err = DatasetKind::Mnist
        .load(&repo().join("samples/mnist_sample"))
        .unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
}

/// The full set, from $CNN_DATA_DIR or ../shared/data (CI sets the former).
#[test]
fn full_mnist_when_present() {
    let dir = std::env::var_os(DATA_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"))
        .join("mnist");
    if !dir.is_dir() {
        let reason = format!("no full MNIST in {}; set {DATA_DIR_ENV}", dir.display());
        return absent("mnist", &reason);
    }
    let splits = DatasetKind::Mnist.load(&dir).unwrap();
    assert_eq!(
        (splits.train_images.count, splits.test_images.count),
        (60_000, 10_000)
    );
    assert_eq!(splits.train_labels[..5], [5, 0, 4, 1, 9]);
    assert_statistics(DatasetKind::Mnist, &splits.train_images);
}

/// The built-in mean and std agree with the training pixels to 5e-4.
fn assert_statistics(kind: DatasetKind, images: &Images) {
    let n = images.pixels.len() as f64;
    let mean = images.pixels.iter().map(|&p| p as f64 / 255.0).sum::<f64>() / n;
    let var = images
        .pixels
        .iter()
        .map(|&p| (p as f64 / 255.0 - mean).powi(2))
        .sum::<f64>()
        / n;
    let (m, s) = kind.mean_std();
    println!("{}: mean {mean:.4}, std {:.4}", kind.name(), var.sqrt());
    assert!((mean - m[0] as f64).abs() < 5e-4, "mean {mean} vs {}", m[0]);
    assert!(
        (var.sqrt() - s[0] as f64).abs() < 5e-4,
        "std {} vs {}",
        var.sqrt(),
        s[0]
    );
}

/// Debian's `dataset-fashion-mnist` (re-compressed gzip files: accepted by content digest).
#[test]
fn fashion_mnist_from_the_debian_package_when_installed() {
    let debian = DatasetKind::FashionMnist.system_folders()[0];
    if !Path::new(debian).is_dir() {
        let reason = format!("{debian} absent (apt-get install dataset-fashion-mnist)");
        return absent("fashion_mnist", &reason);
    }
    // Found there by the same search a run uses, unless a data folder holds a copy.
    let folder = data::locate(DatasetKind::FashionMnist, None, false).unwrap();
    let splits = DatasetKind::FashionMnist.load(&folder).unwrap();
    assert_eq!(
        (splits.train_images.count, splits.test_images.count),
        (60_000, 10_000)
    );
    for class in 0..10u8 {
        assert_eq!(
            splits.train_labels.iter().filter(|&&l| l == class).count(),
            6000
        );
    }
    assert_statistics(DatasetKind::FashionMnist, &splits.train_images);
}
