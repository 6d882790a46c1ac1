//! Helpers shared by the end-to-end tests of the `train` command.
// Each test file uses a different subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
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

/// `train` with `args` where no GPU adapter can be found: the Vulkan loader pointed at no driver
/// at all.
pub fn train_without_gpu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(args)
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
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

/// The JSON file at `path`.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn summary(run: &Path) -> serde_json::Value {
    read_json(&run.join("summary.json"))
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

/// Waits until `run` holds a complete checkpoint, failing after 300 s.
pub fn wait_for_checkpoint(run: &Path) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while train::last_complete(run).is_none() {
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails when `CNN_TEST_REQUIRE` lists `what`; otherwise writes past the test harness's capture
/// that `check` did not run, and why.
pub fn not_run(what: &str, check: &str, reason: &str) {
    let required = std::env::var("CNN_TEST_REQUIRE").unwrap_or_default();
    assert!(!required.split(',').any(|r| r.trim() == what), "{reason}");
    let note = format!("NOT RUN ({what}): {check}: {reason}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
}

/// Trains the quick start for 6 epochs with `extra` flags, kills it (SIGKILL) once an epoch's
/// checkpoint is complete, and checks that `--resume` finishes the run with every epoch in its
/// summary and curves. Returns the summary.
pub fn kill_and_resume(extra: &[&str]) -> serde_json::Value {
    let run = tempfile::tempdir().unwrap();
    let out = run.path().to_str().unwrap();
    let args = [
        &["configs/quickstart.toml", "--epochs", "6", "--output", out],
        extra,
    ]
    .concat();
    let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(&args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while train::last_complete(run.path()).is_none() {
        assert!(Instant::now() < deadline, "no checkpoint after 300 s");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let done = train::last_complete(run.path()).unwrap();
    assert!(done < 6, "the run finished before the kill");
    assert!(!run.path().join("summary.json").exists());

    // Without --resume the run directory is protected.
    let refused = train(&args);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("--resume"), "{}", text(&refused));

    let resumed = train(&[&args[..], &["--resume"]].concat());
    assert!(resumed.status.success(), "{}", text(&resumed));
    let summary = summary(run.path());
    let resumed_from = summary["resumed_from"].as_u64().unwrap() as usize;
    assert!(resumed_from >= done);
    let epochs: Vec<u64> = summary["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["epoch"].as_u64().unwrap())
        .collect();
    // The summary and the curves keep the epochs of the killed process too.
    assert_eq!(epochs, (1..=6).collect::<Vec<u64>>());
    let rows = train::read_curves(&run.path().join(train::CURVES_CSV)).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.epoch).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    // The newest two epochs are kept, whatever the killed process left.
    let mut kept: Vec<String> = std::fs::read_dir(run.path().join("checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        [
            "model-5.bpk",
            "model-6.bpk",
            "optim-5.bpk",
            "optim-6.bpk",
            "scheduler-5.bpk",
            "scheduler-6.bpk"
        ]
    );
    summary
}
