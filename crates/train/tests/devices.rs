//! Training on several devices (Burn's multi-device strategy), tested on the CPU: flex has one
//! device, and `--devices 0,0` puts two model replicas on it, as Burn's own tests do with two
//! flex devices. Each replica takes half of every batch.

mod common;

use common::{kill_and_resume, read_json, summary, text, train, train_without_gpu};

/// Trains the quick start (4 epochs) with `extra` flags; returns its output and summary.
fn quickstart(extra: &[&str]) -> (String, serde_json::Value) {
    let run = tempfile::tempdir().unwrap();
    let out = run.path().to_str().unwrap();
    let output = train(&[&["configs/quickstart.toml", "--output", out], extra].concat());
    assert!(output.status.success(), "{}", text(&output));
    (text(&output), summary(run.path()))
}

#[test]
fn two_devices_train_the_sample_as_well_as_one() {
    let (_, one) = quickstart(&[]);
    let (message, two) = quickstart(&["--devices", "0,0"]);
    assert!(
        message.contains("batch 32 split between 2 devices"),
        "{message}"
    );
    assert_eq!(two["devices"].as_array().unwrap().len(), 2, "{two}");
    assert_eq!(one["devices"].as_array().unwrap().len(), 1, "{one}");
    // Same seed, same total batch: the same accuracy band (measured: 96.2% and 96.0%).
    let [one, two] = [&one, &two].map(|s| s["test_accuracy"].as_f64().unwrap());
    assert!(one >= 90.0 && two >= 90.0, "one device {one}%, two {two}%");
    assert!((one - two).abs() <= 3.0, "one device {one}%, two {two}%");
}

#[test]
fn a_killed_two_device_run_resumes() {
    let summary = kill_and_resume(&["--devices", "0,0"]);
    assert_eq!(summary["devices"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_device_lists_are_named_errors() {
    let run = tempfile::tempdir().unwrap();
    let out = run.path().to_str().unwrap();
    let fails = |args: &[&str], expected: &[&str]| {
        let output = train(&[&["configs/quickstart.toml", "--output", out], args].concat());
        let message = text(&output);
        // 1: the command's own error; 2: clap's, for a value it cannot parse.
        assert!(matches!(output.status.code(), Some(1 | 2)), "{message}");
        assert!(!message.contains("panicked"), "{message}");
        for part in expected {
            assert!(message.contains(part), "{part:?} not in: {message}");
        }
    };
    fails(
        &["--devices", "3"],
        &["flex has no device 3", "it has 1", "train devices"],
    );
    fails(
        &["--devices", "0,0,0", "--batch-size", "2"],
        &[
            "quickstart.toml",
            "batch_size 2 is smaller than the 3 devices",
        ],
    );
    fails(
        &["--devices", "0,0,0"],
        &["batch_size 32 does not split evenly between 3 devices"],
    );
    fails(&["--devices", "first"], &["--devices", "got \"first\""]);
    fails(
        &["--devices", "0,0", "--batch-size", "6", "--accumulate", "2"],
        &[
            "accumulate: the 3 images each of 2 devices",
            "2 micro-batches",
        ],
    );
    fails(&["--devices", ""], &["--devices"]);

    // A wgpu device that cannot start: no Vulkan driver at all.
    let output = train_without_gpu(&[
        "configs/quickstart.toml",
        "--backend",
        "wgpu",
        "--devices",
        "0,1",
        "--output",
        out,
    ]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("no usable GPU adapter") && message.contains("--backend flex"),
        "{message}"
    );
}

#[test]
fn the_devices_command_lists_what_devices_takes() {
    let output = train(&["devices"]);
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(message.contains("flex:\n  0  "), "{message}");
    assert!(message.contains("ndarray:\n  0  "), "{message}");
    // With a Vulkan driver (lavapipe at least) wgpu lists an adapter and its compiler;
    // without one it says what to install.
    assert!(
        message.contains("wgpu<") || message.contains("no usable GPU adapter"),
        "{message}"
    );
    assert!(message.contains("--devices 0,1"), "{message}");
}

#[test]
fn bench_times_one_and_two_devices() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let args = ["bench", "configs/quickstart.toml", "--backends", "flex"];
    let output = train(
        &[
            &args[..],
            &["--devices", "0,0", "--steps", "2", "--warmup", "1"],
            &["--json", json.to_str().unwrap()],
        ]
        .concat(),
    );
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(message.contains("on 2 devices"), "{message}");
    let timings: serde_json::Value = read_json(&json);
    let multi = &timings[0]["multi_device"];
    assert_eq!(multi["devices"].as_array().unwrap().len(), 2, "{multi}");
    assert_eq!(multi["step_ms"].as_array().unwrap().len(), 2, "{multi}");
    let efficiency = multi["scaling_efficiency"].as_f64().unwrap();
    assert!(efficiency > 0.0 && efficiency.is_finite(), "{multi}");
}
