//! The trained weights committed in weights/: they work right after the build (the committed
//! digit is classified), and reach the test error the README states for them on the real MNIST
//! test set.

mod common;

use std::path::PathBuf;

use common::{not_run, read_json, repo, text, train};

/// Each shipped weights file and its stated test error after one pass, percent (README,
/// "Trained weights"; weights/README.md). An FMP net's regions are drawn from the run's seed,
/// so an evaluation repeats; another CPU's rounding may move an image or two, and the test
/// allows five.
const SHIPPED: [(&str, f64); 2] = [
    ("weights/fmp_mnist.safetensors", STATED_FMP),
    ("weights/lenet_mnist.safetensors", STATED_LENET),
];
const STATED_FMP: f64 = 0.40;
const STATED_LENET: f64 = 0.78;
const ALLOWED_IMAGES: f64 = 5.0;

#[test]
fn the_shipped_weights_classify_the_committed_digit() {
    for (weights, _) in SHIPPED {
        let output = train(&["predict", weights, "samples/digit-7.png", "--top", "1"]);
        assert!(output.status.success(), "{weights}: {}", text(&output));
        assert!(
            text(&output).contains("digit-7.png: 7 "),
            "{weights}: {}",
            text(&output)
        );
    }
}

#[test]
fn the_shipped_weights_reach_their_stated_test_error() {
    let data = std::env::var_os("CNN_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data"));
    if !data.join("mnist").is_dir() {
        let reason = format!("no full MNIST in {}; set CNN_DATA_DIR", data.display());
        return not_run("mnist", "the shipped weights' test error", &reason);
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    for (weights, stated) in SHIPPED {
        let args = [
            "eval",
            weights,
            "--passes",
            "1",
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ];
        let output = train(&args);
        assert!(output.status.success(), "{weights}: {}", text(&output));
        let result: serde_json::Value = read_json(&json);
        let images = result["images"].as_f64().unwrap();
        assert_eq!(images, 10_000.0, "{weights}");
        let error = 100.0 - result["accuracy_one_pass"].as_f64().unwrap();
        let allowed = stated + 100.0 * ALLOWED_IMAGES / images;
        assert!(
            error <= allowed,
            "{weights}: {error:.2}% test error after one pass, stated {stated:.2}%"
        );
    }
}
