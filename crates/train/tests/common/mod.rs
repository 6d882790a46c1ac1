//! Helpers shared by the end-to-end tests of the `train` command.
// Each test file uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn train(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("the train binary runs")
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub fn summary(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

/// Trains the quick start for `epochs` into a fresh run directory; returns it and its summary.
pub fn train_sample(epochs: usize) -> (tempfile::TempDir, serde_json::Value) {
    let run = tempfile::tempdir().unwrap();
    let epochs = epochs.to_string();
    let args = ["configs/quickstart.toml", "--epochs", &epochs, "--output"];
    let output = train(&[&args[..], &[run.path().to_str().unwrap()]].concat());
    assert!(output.status.success(), "{}", text(&output));
    let summary = summary(run.path());
    (run, summary)
}

/// Fails when `CNN_TEST_REQUIRE` lists `what`; otherwise writes past the test harness's capture
/// that `check` did not run, and why.
pub fn not_run(what: &str, check: &str, reason: &str) {
    let required = std::env::var("CNN_TEST_REQUIRE").unwrap_or_default();
    assert!(!required.split(',').any(|r| r.trim() == what), "{reason}");
    let note = format!("NOT RUN ({what}): {check}: {reason}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
}
