//! Damaged checkpoints and signals: resume and the inference commands pass over a damaged
//! newest checkpoint by name, say what to do when none is usable, and Ctrl-C (SIGINT) or
//! SIGTERM ends a run cleanly with its last epoch's checkpoint kept. A refused command changes
//! nothing in a run folder, a mismatch is named as one, and a loader thread's panic fails the
//! run.

mod common;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{repo, summary, text, train, train_sample, wait_for_checkpoint};

/// Cuts `path` to half its length, as a full disk or a broken copy leaves a file; a small file
/// (the constant schedule's record is a header padded to 256 bytes, and half of it still holds
/// the whole empty record) to its first 16 bytes.
fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap();
    let keep = if bytes.len() > 1024 {
        bytes.len() / 2
    } else {
        16
    };
    std::fs::write(path, &bytes[..keep]).unwrap();
}

/// The names of the files in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn checkpoint(run: &Path, part: &str, epoch: usize) -> std::path::PathBuf {
    run.join("checkpoint").join(format!("{part}-{epoch}.bpk"))
}

#[test]
fn a_damaged_newest_checkpoint_is_named_and_passed_over() {
    for part in ["model", "optim", "scheduler"] {
        let (run, _) = train_sample(2);
        let damaged = checkpoint(run.path(), part, 2);
        truncate(&damaged);
        let out = run.path().to_str().unwrap();

        // eval, predict and export read the model only: a damaged optimiser record is no
        // reason to pass over a checkpoint there.
        let eval = train(&["eval", out, "--passes", "1"]);
        let message = text(&eval);
        assert!(eval.status.success(), "{part}: {message}");
        let used = if part == "model" { 1 } else { 2 };
        assert!(
            message.contains(&format!("model-{used}.bpk")),
            "{part}: {message}"
        );
        if part == "model" {
            assert!(
                message.contains("model-2.bpk") && message.contains("damaged"),
                "{message}"
            );
        }

        let args = [
            "configs/quickstart.toml",
            "--epochs",
            "3",
            "--output",
            out,
            "--resume",
        ];
        let resumed = train(&args);
        let message = text(&resumed);
        assert!(resumed.status.success(), "{part}: {message}");
        assert!(!message.contains("panicked"), "{message}");
        assert!(
            message.contains(&format!("{part}-2.bpk")) && message.contains("damaged"),
            "{part}: {message}"
        );
        assert_eq!(summary(run.path())["resumed_from"], 1, "{part}");
        assert!(checkpoint(run.path(), "model", 3).is_file());
    }
}

#[test]
fn no_usable_checkpoint_is_a_clear_error() {
    let (run, _) = train_sample(2);
    for epoch in [1, 2] {
        truncate(&checkpoint(run.path(), "model", epoch));
    }
    let out = run.path().to_str().unwrap();
    for args in [
        &["configs/quickstart.toml", "--output", out, "--resume"][..],
        &["eval", out][..],
        &["export", out, "--output", &format!("{out}/export")][..],
    ] {
        let output = train(args);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{message}");
        for expected in [
            "no usable checkpoint",
            "model-1.bpk",
            "model-2.bpk",
            "--output",
        ] {
            assert!(
                message.contains(expected),
                "{args:?}: {expected:?} not in {message}"
            );
        }
    }
}

/// Starts a quick-start run of `epochs` into `run` and returns once its first epoch's
/// checkpoint is complete.
fn start_until_a_checkpoint(run: &Path, epochs: &str) -> std::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(["configs/quickstart.toml", "--epochs", epochs, "--output"])
        .arg(run)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(run);
    child
}

#[test]
fn a_signal_stops_the_run_cleanly_and_it_resumes() {
    for signal in ["-INT", "-TERM"] {
        let run = tempfile::tempdir().unwrap();
        let child = start_until_a_checkpoint(run.path(), "8");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let output = child.wait_with_output().unwrap();
        let message = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{signal}: {message}");
        assert!(
            message.contains("interrupted by a signal") && message.contains("--resume"),
            "{signal}: {message}"
        );
        assert!(!message.contains("panicked"), "{message}");
        let kept = train::last_complete(run.path()).unwrap();
        assert!(kept < 8, "{signal}: the run finished before the signal");
        let leftovers: Vec<_> = names_in(&run.path().join("checkpoint"))
            .into_iter()
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let out = run.path().to_str().unwrap();
        let args = [
            "configs/quickstart.toml",
            "--epochs",
            "8",
            "--output",
            out,
            "--resume",
        ];
        let resumed = train(&args);
        assert!(resumed.status.success(), "{}", text(&resumed));
        let epochs: Vec<u64> = summary(run.path())["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["epoch"].as_u64().unwrap())
            .collect();
        assert_eq!(epochs, (1..=8).collect::<Vec<u64>>(), "{signal}");
    }
}

#[test]
fn a_full_disk_stops_the_run_by_name_and_keeps_the_last_checkpoint() {
    let run = tempfile::tempdir().unwrap();
    let folder = run.path().join("checkpoint");
    std::fs::create_dir_all(&folder).unwrap();
    // Epoch 2's optimiser record goes to a file on which every write fails with ENOSPC.
    let full = folder.join("optim-2.bpk.tmp");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let out = run.path().to_str().unwrap();
    let args = ["configs/quickstart.toml", "--epochs", "3", "--output", out];
    let output = train(&args);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for expected in [
        "optim-2.bpk",
        "No space left on device",
        "epoch 1 is kept",
        "--resume",
    ] {
        assert!(message.contains(expected), "{expected:?} not in {message}");
    }
    // Nothing of epoch 2 is left: no temporary file, no model record without its optimiser.
    assert_eq!(
        names_in(&folder),
        ["model-1.bpk", "optim-1.bpk", "scheduler-1.bpk"]
    );
    let resumed = train(&[&args[..], &["--resume"]].concat());
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert_eq!(summary(run.path())["resumed_from"], 1);
}

#[test]
fn an_output_path_that_is_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, b"not a folder").unwrap();
    let path = file.to_str().unwrap();
    let (run, _) = train_sample(1);
    let run = run.path().to_str().unwrap();
    let digit = "samples/digit-7.png";
    for args in [
        &["configs/quickstart.toml", "--epochs", "1", "--output", path][..],
        &["export", run, "--output", path][..],
        &["show", run, digit, "--output", path][..],
    ] {
        let output = train(args);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(
            message.contains("taken: is a file, not a folder"),
            "{message}"
        );
        assert!(!message.contains("panicked"), "{message}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a folder");
}

#[test]
fn damaged_config_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.toml");
    let good = std::fs::read_to_string(repo().join("configs/fmp_mnist.toml")).unwrap();
    let cases: [Vec<u8>; 4] = [
        vec![0xff, 0xfe, 0x00, 0x81],
        good.as_bytes()[..good.len() / 3].to_vec(),
        Vec::new(),
        good.replace("kind = \"fmp\"", "kind = \"fmp\"\nlayres = 5")
            .into_bytes(),
    ];
    for (i, bytes) in cases.into_iter().enumerate() {
        std::fs::write(&path, &bytes).unwrap();
        let output = train(&[path.to_str().unwrap()]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains("run.toml"), "{message}");
        // Bytes that are not text are not taken for a damaged config.
        assert_eq!(
            i == 0,
            message.contains("is not a TOML config"),
            "{message}"
        );
        assert!(!message.contains("panicked"), "{message}");
    }
    let output = train(&[dir.path().join("none.toml").to_str().unwrap()]);
    assert!(text(&output).contains("none.toml") && text(&output).contains("cannot read"));
}

#[test]
fn a_run_whose_loss_turns_nan_stops_at_once_and_keeps_the_last_good_checkpoint() {
    // The quick start, with a learning rate multiplied by 1e30 after its first epoch: the
    // weights blow up in the second epoch's first steps.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let quickstart = std::fs::read_to_string(repo().join("configs/quickstart.toml")).unwrap();
    assert!(
        !quickstart.contains("[schedule]"),
        "the quick start's rate is constant"
    );
    let config = dir.path().join("diverges.toml");
    let schedule = "[schedule]\nkind = \"step\"\nevery_epochs = 1\ngamma = 1e30\n";
    std::fs::write(&config, format!("{quickstart}\n{schedule}")).unwrap();
    let data = repo().join("samples");
    let output = train(&[
        config.to_str().unwrap(),
        "--epochs",
        "4",
        "--data-dir",
        data.to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
    ]);
    let message = text(&output);
    assert!(!output.status.success(), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for part in [
        "epoch 2, step",
        "NaN or infinite",
        "learning_rate",
        "epoch 1 is kept",
    ] {
        assert!(message.contains(part), "no {part:?} in: {message}");
    }
    // One line for the good epoch, none for an epoch of NaN.
    assert!(message.contains("epoch 1/4"), "{message}");
    assert!(!message.contains("epoch 2/4"), "{message}");
    assert_eq!(train::last_complete(&run), Some(1));
    assert!(!run.join("summary.json").exists());
}

/// Every file under `dir`, with a hash of its bytes: what a refused command must leave as it
/// was.
fn snapshot(dir: &Path) -> BTreeMap<String, u64> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(snapshot(&path));
        } else {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(&path).unwrap().hash(&mut hasher);
            files.insert(path.display().to_string(), hasher.finish());
        }
    }
    files
}

#[test]
fn a_config_of_another_network_changes_nothing_and_is_named_as_a_mismatch() {
    let (run, _) = train_sample(1);
    let out = run.path().to_str().unwrap();
    let before = snapshot(run.path());
    let scratch = tempfile::tempdir().unwrap();
    let export = scratch.path().join("export");
    let fmp = "configs/fmp_quickstart.toml";
    for args in [
        &[fmp, "--output", out, "--resume"][..],
        &[fmp, "--output", out][..],
        &["eval", out, "--config", fmp][..],
        &["predict", out, "--config", fmp, "samples/digit-7.png"][..],
        &[
            "export",
            out,
            "--config",
            fmp,
            "--output",
            export.to_str().unwrap(),
        ][..],
    ] {
        let output = train(args);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {message}");
        assert!(
            !message.contains("damaged") && !message.contains("Delete"),
            "{args:?}: {message}"
        );
        assert!(!message.contains("panicked"), "{message}");
        assert_eq!(snapshot(run.path()), before, "{args:?} changed the run");
    }
    assert!(!export.exists());
    // Both networks named, and the way to go on.
    let message = text(&train(&[fmp, "--output", out, "--resume"]));
    for part in [
        "another network",
        "model.kind",
        "config.toml --resume",
        "--output",
    ] {
        assert!(message.contains(part), "no {part:?} in: {message}");
    }
    let message = text(&train(&["eval", out, "--config", fmp]));
    for part in ["model.kind", "leave --config out"] {
        assert!(message.contains(part), "no {part:?} in: {message}");
    }
    // The run is as good as before: it resumes with its own config.
    let own = run.path().join("config.toml");
    let output = train(&[own.to_str().unwrap(), "--resume", "--epochs", "2"]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(summary(run.path())["resumed_from"], 1);
    // Fewer epochs than it has trained: said, and nothing changes.
    let before = snapshot(run.path());
    let output = train(&[own.to_str().unwrap(), "--resume", "--epochs", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("has trained 2 epochs"),
        "{}",
        text(&output)
    );
    assert_eq!(snapshot(run.path()), before);
}

#[test]
fn a_new_run_never_replaces_files_it_did_not_write() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let out = run.to_str().unwrap();
    let args = ["configs/quickstart.toml", "--epochs", "1", "--output", out];
    // The user's own config.toml, then a file no run writes.
    for (name, mentioned) in [("config.toml", "config.toml"), ("notes.txt", "notes.txt")] {
        let _ = std::fs::remove_file(run.join("config.toml"));
        std::fs::write(run.join(name), b"mine\n").unwrap();
        let before = snapshot(&run);
        let output = train(&args);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(
            message.contains(mentioned) && message.contains("--reuse-output"),
            "{message}"
        );
        assert_eq!(snapshot(&run), before);
    }
    // Said otherwise: the run's files go beside the user's, which stay as they were.
    let output = train(&[&args[..], &["--reuse-output"]].concat());
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(std::fs::read(run.join("notes.txt")).unwrap(), b"mine\n");
    // A command refused before training (no data there) creates no folder.
    let never = dir.path().join("never");
    let nodata = dir.path().join("nodata");
    let output = train(&[
        "configs/quickstart.toml",
        "--data-dir",
        nodata.to_str().unwrap(),
        "--output",
        never.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(!never.exists());
}

/// The quick start for 2 epochs into `run`, a loader thread panicking at its `at`th batch.
fn train_panicking_at(run: &Path, at: usize) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(["configs/quickstart.toml", "--epochs", "2", "--output"])
        .arg(run)
        .env("TRAIN_FAULT_LOADER_PANIC_AT", at.to_string())
        .output()
        .unwrap()
}

#[test]
fn a_loader_threads_panic_fails_the_run_and_writes_no_summary() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // The quick start's epoch is 57 training and 7 validation batches: batch 5 is in the first
    // epoch, batch 70 in the second.
    let output = train_panicking_at(&run, 5);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("data-loader thread panicked")
            && message.contains("TRAIN_FAULT_LOADER_PANIC_AT at batch 5")
            && message.contains("no epoch had finished"),
        "{message}"
    );
    assert_eq!(train::last_complete(&run), None);
    assert!(!run.join("summary.json").exists());
    // The same command again: the folder holds only what this run's first attempt wrote.
    let output = train_panicking_at(&run, 70);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(message.contains("epoch 1 is kept"), "{message}");
    assert_eq!(train::last_complete(&run), Some(1));
    assert!(!run.join("summary.json").exists());
    let output = train(&[
        "configs/quickstart.toml",
        "--epochs",
        "2",
        "--output",
        run.to_str().unwrap(),
        "--resume",
    ]);
    assert!(output.status.success(), "{}", text(&output));
    assert_eq!(summary(&run)["resumed_from"], 1);
}

#[test]
fn a_finished_run_is_not_resumed_and_a_resumed_run_keeps_its_settings() {
    let (run, _) = train_sample(1);
    let out = run.path().to_str().unwrap();
    let own = run.path().join("config.toml");
    let own = own.to_str().unwrap();
    let before = snapshot(run.path());
    // Started again without --resume: finished, and how to train it further.
    let output = train(&[own]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    for part in ["holds a finished run", "--resume --epochs 2"] {
        assert!(message.contains(part), "no {part:?} in: {message}");
    }
    // Finished: nothing to resume; the ways on are named.
    let output = train(&[own, "--resume"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    for part in ["is finished", "--epochs above 1", "train eval"] {
        assert!(message.contains(part), "no {part:?} in: {message}");
    }
    // Another seed or learning rate is another run, even with more epochs.
    for (flags, named) in [
        (
            &["--seed", "7"][..],
            "seed is 42 in the run's config and 7 in",
        ),
        (&["--epochs", "2", "--seed", "7"][..], "seed is 42"),
    ] {
        let output = train(&[&[own, "--resume"][..], flags].concat());
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        for part in [named, "trained with other settings", "--output"] {
            assert!(message.contains(part), "no {part:?} in: {message}");
        }
    }
    let lr = tempfile::NamedTempFile::new().unwrap();
    let text_of_own = std::fs::read_to_string(own).unwrap();
    std::fs::write(
        lr.path(),
        text_of_own.replace("learning_rate = 0.001", "learning_rate = 0.003"),
    )
    .unwrap();
    assert_ne!(std::fs::read_to_string(lr.path()).unwrap(), text_of_own);
    let output = train(&[lr.path().to_str().unwrap(), "--resume", "--epochs", "2"]);
    assert!(
        text(&output).contains("optimizer.learning_rate is 0.001"),
        "{}",
        text(&output)
    );
    assert_eq!(snapshot(run.path()), before);
    // A run's folder where a config is asked for: its config.toml is named.
    let output = train(&["summary", out]);
    assert!(
        text(&output).contains(&format!("its config is {own}")),
        "{}",
        text(&output)
    );
    // The sample, looked for where it is not: no download is spoken of, the way is.
    let output = train(&["eval", out, "--data-dir", "/nonexistent"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        !message.contains("download failed") && message.contains("ships with the project"),
        "{message}"
    );
}
