//! End-to-end tests of the `train` command on the bundled MNIST sample.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{kill_and_resume, repo, summary, text, train, train_sample, train_without_gpu};

#[test]
fn short_training_on_the_sample_learns() {
    let (run, summary) = train_sample(3);
    let epochs = summary["epochs"].as_array().unwrap();
    assert_eq!(epochs.len(), 3);
    let first = epochs[0]["train_loss"].as_f64().unwrap();
    let last = epochs[2]["train_loss"].as_f64().unwrap();
    assert!(last < 0.6 * first, "loss went from {first} to {last}");
    // 1,800 training digits are enough for LeNet to pass 90% on the 500 test digits.
    let accuracy = summary["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 90.0, "test accuracy {accuracy}%");
    assert_eq!(summary["test_images"], 500);
    assert!(run.path().join("config.toml").is_file());
    assert!(run.path().join("checkpoint/model-3.bpk").is_file());
    // Training curves: CSV and plot, named by the summary.
    assert_eq!(summary["curves_csv"], "curves.csv");
    assert_eq!(summary["curves_plot"], "curves.svg");
    let csv = std::fs::read_to_string(run.path().join("curves.csv")).unwrap();
    assert!(
        csv.starts_with("epoch,train_loss,train_accuracy,valid_loss"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 4);
    let svg = std::fs::read_to_string(run.path().join("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("accuracy"));
    // The quick start's `data_dir = "samples"` is saved absolute: the run is evaluated from
    // any folder.
    let elsewhere = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(elsewhere.path())
        .args(["eval", run.path().to_str().unwrap(), "--passes", "12"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output));
    // The LeNet draws no pooling regions: twelve passes would repeat one, so one is run.
    let said = text(&output);
    assert!(
        said.contains("note: 12 passes asked for, one run: lenet5_modern draws no pooling"),
        "{said}"
    );
    assert!(said.contains("1 pass(es) each"), "{said}");
}

#[test]
fn a_killed_run_resumes_from_its_last_checkpoint() {
    kill_and_resume(&[]);
}

#[test]
fn eval_of_a_config_or_of_nothing_says_what_it_takes() {
    for (source, expected) in [
        (
            "configs/quickstart.toml",
            "configs/quickstart.toml: a config, not trained weights; `train \
             configs/quickstart.toml` trains it",
        ),
        (
            "runs/no-such-run",
            "runs/no-such-run: no such file or directory; give the folder a training run wrote",
        ),
    ] {
        let output = train(&["eval", source]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{source}: {stderr}");
        assert!(stderr.contains(expected), "{source}: {stderr}");
    }
}

#[test]
fn a_word_after_the_config_is_named_with_where_commands_go() {
    for (word, hint) in [
        ("evl", "did you mean the command `eval`? It comes first"),
        ("eval", "a command comes first: `train eval ...`"),
        ("extra", "commands come before it (`--help` lists them"),
    ] {
        let output = train(&["configs/quickstart.toml", "--epochs", "1", word]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{word}: {stderr}");
        let expected = format!("unexpected `{word}` after the config: training takes one");
        assert!(stderr.contains(&expected), "{word}: {stderr}");
        assert!(stderr.contains(hint), "{word}: {stderr}");
    }
}

#[test]
fn a_misspelt_command_is_named_with_the_nearest_one() {
    for (args, hint) in [
        (
            &["bnech", "configs/quickstart.toml"][..],
            "did you mean `bench`?",
        ),
        (&["evl", "runs/quickstart"][..], "did you mean `eval`?"),
        (&["devcies"][..], "did you mean `devices`?"),
        // Nothing near: no command is guessed.
        (
            &["trian", "configs/quickstart.toml"][..],
            "to train, give a config file such as configs/quickstart.toml",
        ),
        // A config's name without its folder and extension.
        (
            &["quickstart"][..],
            "to train with configs/quickstart.toml, give its path",
        ),
    ] {
        let output = train(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("there is no command `{}`; {hint}", args[0])),
            "{args:?}: {stderr}"
        );
    }
    // A config and a command are left to the parser as before.
    let output = train(&["nosuchconfig.toml"]);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("no command"));
    // A config's path without its extension is pointed at the file.
    let output = train(&["configs/quickstart"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("configs/quickstart: no such file; did you mean configs/quickstart.toml?"),
        "{stderr}"
    );
    assert!(train(&["help"]).status.success());
}

#[test]
fn config_errors_name_the_file_and_key_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    let text_in = std::fs::read_to_string(repo().join("configs/quickstart.toml")).unwrap();
    std::fs::write(
        &path,
        text_in.replace("epochs = 4", "epochs = 4\nlearning_rate = 0.1"),
    )
    .unwrap();
    let output = train(&[path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains("typo.toml") && message.contains("learning_rate"),
        "{message}"
    );

    let output = train(&["configs/quickstart.toml", "--backend", "cuda"]);
    assert!(!output.status.success());
    assert!(text(&output).contains("flex"), "{}", text(&output));
}

#[test]
fn every_out_of_range_value_is_named_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let sgd = std::fs::read_to_string(repo().join("configs/fmp_quickstart.toml")).unwrap();
    let adam = std::fs::read_to_string(repo().join("configs/quickstart.toml")).unwrap();
    let swap = |text: &str, from: &str, to: &str| {
        assert!(text.contains(from), "{from:?}");
        text.replacen(from, to, 1)
    };
    let cases = [
        (
            swap(&sgd, "momentum = 0.9", "momentum = 1.0"),
            "optimizer.momentum",
        ),
        (
            swap(&sgd, "momentum = 0.9", "momentum = nan"),
            "optimizer.momentum",
        ),
        (
            swap(&sgd, "nesterov = true", "weight_decay = -0.1"),
            "optimizer.weight_decay",
        ),
        (
            swap(
                &adam,
                "learning_rate = 0.001",
                "learning_rate = 0.001\nbeta_1 = 1.0",
            ),
            "optimizer.beta_1",
        ),
        (
            swap(
                &adam,
                "learning_rate = 0.001",
                "learning_rate = 0.001\nbeta_2 = nan",
            ),
            "optimizer.beta_2",
        ),
        (
            swap(
                &adam,
                "learning_rate = 0.001",
                "learning_rate = 0.001\nepsilon = 0.0",
            ),
            "optimizer.epsilon",
        ),
        (
            swap(&sgd, "min_lr = 0.001", "min_lr = nan"),
            "schedule.min_lr",
        ),
        (
            format!("{adam}\n[schedule]\nkind = \"exponential\"\ndecay_per_epoch = nan\n"),
            "schedule.decay_per_epoch",
        ),
        (
            format!("{adam}\n[schedule]\nkind = \"step\"\nevery_epochs = 1\ngamma = nan\n"),
            "schedule.gamma",
        ),
        (
            format!("{adam}\n[augment]\ntranslate = 3000000000\n"),
            "augment.translate",
        ),
        (
            format!("{adam}\n[augment]\ndistortion = nan\n"),
            "augment.distortion",
        ),
        (
            swap(
                &sgd,
                "max_dropout = 0.0",
                "max_dropout = 0.0\nlayers = 68\nalpha = 2.0",
            ),
            "model.layers",
        ),
        (
            swap(
                &sgd,
                "max_dropout = 0.0",
                "max_dropout = 0.0\nfilters = 4611686018427387904",
            ),
            "model.filters",
        ),
        (
            swap(
                &sgd,
                "max_dropout = 0.0",
                "max_dropout = 0.0\nleaky_slope = nan",
            ),
            "model.leaky_slope",
        ),
        (swap(&adam, "workers = 1", "workers = 100000"), "workers"),
        (swap(&adam, "epochs = 4", "epochs = 100000000000"), "epochs"),
    ];
    for (config, key) in cases {
        std::fs::write(&path, &config).unwrap();
        // `summary` reads the config as training does, and builds nothing.
        for args in [
            &["summary", path.to_str().unwrap()][..],
            &[path.to_str().unwrap()],
        ] {
            let output = train(args);
            let message = text(&output);
            assert_eq!(output.status.code(), Some(1), "{key}: {message}");
            assert!(
                message.contains("bad.toml") && message.contains(key),
                "{key}: {message}"
            );
            assert!(!message.contains("panicked"), "{message}");
        }
    }
    // Flags: a seed that no config file could hold, a tolerance that NaN would pass.
    for (args, named) in [
        (
            &["configs/quickstart.toml", "--seed", "9223372036854775808"][..],
            "seed",
        ),
        (&["tiny-cnn", "--tolerance", "nan"][..], "--tolerance"),
    ] {
        let output = train(args);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(1), "{message}");
        assert!(message.contains(named), "{message}");
    }
}

#[test]
fn a_closed_standard_output_ends_printing_not_the_command() {
    let run = tempfile::tempdir().unwrap();
    for args in [
        &[
            "configs/quickstart.toml",
            "--epochs",
            "1",
            "--output",
            run.path().to_str().unwrap(),
        ][..],
        &["summary", "configs/fmp_cifar.toml"],
        &["devices"],
    ] {
        // As `train ... | head -0` leaves it: the reading end closed before anything is read.
        let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
            .current_dir(repo())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let message = text(&output);
        assert!(output.status.success(), "{args:?}: {message}");
        assert!(!message.contains("panicked"), "{args:?}: {message}");
    }
    assert!(run.path().join("summary.json").is_file());
}

#[test]
fn a_corrupt_data_file_is_named() {
    let data = tempfile::tempdir().unwrap();
    let folder = data.path().join("mnist_sample");
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(repo().join("samples/mnist_sample")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
    }
    let victim = folder.join("t10k-labels-idx1-ubyte.gz");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes.truncate(bytes.len() - 8);
    std::fs::write(&victim, bytes).unwrap();
    let run = tempfile::tempdir().unwrap();
    let output = train(&[
        "configs/quickstart.toml",
        "--data-dir",
        data.path().to_str().unwrap(),
        "--output",
        run.path().to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("t10k-labels-idx1-ubyte.gz"),
        "{}",
        text(&output)
    );
}

#[test]
fn wgpu_without_an_adapter_is_a_clear_error() {
    let run = tempfile::tempdir().unwrap();
    let out = run.path().to_str().unwrap();
    let args = [
        "configs/quickstart.toml",
        "--backend",
        "wgpu",
        "--output",
        out,
    ];
    let output = train_without_gpu(&args);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let message = text(&output);
    assert!(
        message.contains("no usable GPU adapter") && message.contains("--backend flex"),
        "{message}"
    );
}

#[test]
fn a_bench_with_nothing_to_time_fails_with_the_reason() {
    let output = train(&["bench", "configs/quickstart.toml", "--steps", "0"]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains("nothing to time"),
        "{}",
        text(&output)
    );
    // Every backend asked for is unavailable: no adapter for wgpu.
    let output = train_without_gpu(&["bench", "configs/quickstart.toml", "--backends", "wgpu"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains("unavailable") && message.contains("nothing was timed"),
        "{message}"
    );
}

#[test]
fn a_wgpu_bench_accumulates_names_its_compiler_and_prints_no_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(["bench", "configs/quickstart.toml", "--backends", "wgpu"])
        .args(["--steps", "1", "--warmup", "0", "--accumulate", "2"])
        // As on a headless machine: Mesa looks for a display server and, without this variable,
        // printed an error-looking line four times.
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(
        message.contains("wgpu<") && message.contains("2 micro-batches"),
        "{message}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(!stderr.contains("error"), "{stderr}");
}

#[test]
fn a_run_with_accumulation_trains_and_says_so() {
    let run = tempfile::tempdir().unwrap();
    let args = [
        "configs/quickstart.toml",
        "--epochs",
        "1",
        "--accumulate",
        "2",
    ];
    let output = train(&[&args[..], &["--output", run.path().to_str().unwrap()]].concat());
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(
        message.contains("batch 32 as 2 micro-batches of 16"),
        "{message}"
    );
    let summary = summary(run.path());
    assert_eq!(summary["micro_batches"], 2);
    // One epoch of LeNet on the sample, accumulated, learns (chance is 10%).
    assert!(
        summary["test_accuracy"].as_f64().unwrap() > 50.0,
        "{summary}"
    );
}

#[test]
fn the_same_seed_reproduces_a_run() {
    let losses: Vec<serde_json::Value> = (0..2)
        .map(|_| {
            let (_run, summary) = train_sample(1);
            serde_json::json!([summary["epochs"][0]["train_loss"], summary["test_accuracy"]])
        })
        .collect();
    assert_eq!(losses[0], losses[1]);
}

#[test]
fn every_fmp_region_kind_trains_on_the_sample() {
    // A narrow FMP net (16n filters), 3 epochs on the 1,833 training digits. Measured: 1-pass
    // test accuracy 93.0 / 88.4 / 92.0 / 81.2% for the kinds below in this order; 4-pass higher
    // for each. Chance is 10%.
    for (overlapping, pseudorandom) in [(true, true), (true, false), (false, true), (false, false)]
    {
        let run = tempfile::tempdir().unwrap();
        let config = run.path().join("fmp.toml");
        std::fs::write(
            &config,
            format!(
                r#"
dataset = "mnist_sample"
data_dir = "samples"
epochs = 3
batch_size = 32
output = "{}"
test_passes = 4
[model]
kind = "fmp"
filters = 16
max_dropout = 0.0
overlapping = {overlapping}
pseudorandom = {pseudorandom}
[optimizer]
kind = "sgd"
learning_rate = 0.05
momentum = 0.9
nesterov = true
[schedule]
kind = "cosine"
min_lr = 0.0005
"#,
                run.path().join("run").display()
            ),
        )
        .unwrap();
        let output = train(&[config.to_str().unwrap()]);
        assert!(output.status.success(), "{}", text(&output));
        let summary = summary(&run.path().join("run"));
        let label = format!("overlapping={overlapping} pseudorandom={pseudorandom}");
        assert_eq!(summary["test_passes"], 4, "{label}");
        let one_pass = 100.0 - summary["test_error"]["one_pass"].as_f64().unwrap();
        let averaged = 100.0 - summary["test_error"]["averaged"].as_f64().unwrap();
        assert!(
            one_pass >= 75.0,
            "{label}: 1-pass test accuracy {one_pass}%"
        );
        assert!(
            averaged >= 75.0,
            "{label}: 4-pass test accuracy {averaged}%"
        );
        assert_eq!(summary["test_accuracy"].as_f64().unwrap(), averaged);
    }
}

#[test]
fn every_shipped_config_loads() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("configs")).unwrap() {
        let path = entry.unwrap().path();
        let config = train::RunConfig::load(&path, &train::Overrides::default())
            .unwrap_or_else(|e| panic!("{e}"));
        config.network();
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    assert!(names.len() >= 6, "{names:?}");
}

/// Writes CIFAR-10 binary batches of `per_batch` random records into
/// `<data_dir>/cifar10/cifar-10-batches-bin/`, as the official archive unpacks.
fn generate_cifar(data_dir: &Path, per_batch: usize) {
    let folder = data_dir.join("cifar10").join(data::CIFAR10_FOLDER);
    std::fs::create_dir_all(&folder).unwrap();
    let mut state = 1u32;
    let names = [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
    ];
    for name in names.iter().chain(&["test_batch"]) {
        let mut bytes = Vec::with_capacity(per_batch * 3073);
        for i in 0..per_batch {
            bytes.push((i % 10) as u8);
            bytes.extend((0..3072).map(|_| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                (state >> 24) as u8
            }));
        }
        std::fs::write(folder.join(format!("{name}.bin")), bytes).unwrap();
    }
}

/// Starts the headline config on wgpu with `accumulate` and returns what it printed before its
/// first training step (up to the start-up line), then stops it: a full-size step takes an hour
/// on lavapipe. `None` without a Vulkan adapter.
fn full_size_cifar_start(accumulate: &str) -> Option<String> {
    let root = tempfile::tempdir().unwrap();
    generate_cifar(root.path(), 20);
    let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(["configs/fmp_cifar.toml", "--accumulate", accumulate])
        .args(["--data-dir", root.path().to_str().unwrap()])
        .args(["--output", root.path().join("run").to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let read = |stream: Box<dyn std::io::Read + Send>, lines: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stream)) {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        })
    };
    let readers = [
        read(Box::new(stdout), lines.clone()),
        read(Box::new(stderr), lines),
    ];
    let mut printed = String::new();
    // The start-up line names the run's folder; an error ends the process.
    while let Ok(line) = received.recv_timeout(std::time::Duration::from_secs(300)) {
        printed += &line;
        printed.push('\n');
        if line.contains("parameters, batch") || line.starts_with("error") {
            break;
        }
    }
    let _ = child.kill();
    child.wait().unwrap();
    // What the other stream printed before the start-up line may still be on its way: the two
    // streams are read by two threads.
    for reader in readers {
        reader.join().unwrap();
    }
    for line in received.try_iter() {
        printed += &line;
        printed.push('\n');
    }
    if printed.contains("no usable GPU adapter") {
        common::not_run("wgpu", "full-size CIFAR-10 net on wgpu", &printed);
        return None;
    }
    Some(printed)
}

#[test]
fn the_full_size_cifar_net_on_wgpu_is_sized_to_the_device() {
    // `auto` picks micro-batches that fit the adapter (lavapipe: 128 MiB buffers, 5 x 10).
    let Some(printed) = full_size_cifar_start("auto") else {
        return;
    };
    assert!(
        printed.contains("74613610 parameters") && printed.contains("wgpu<"),
        "{printed}"
    );
    assert!(!printed.contains("warning"), "{printed}");
    if printed.contains("llvmpipe") {
        assert!(
            printed.contains("batch 50 as 5 micro-batches of 10"),
            "{printed}"
        );
        // The whole batch does not fit: said before any kernel runs, with what would.
        let printed = full_size_cifar_start("1").unwrap();
        assert!(
            printed.contains("warning: 50 images at a time likely exceed llvmpipe")
                && printed.contains("largest buffer 128 MiB")
                && printed.contains("--accumulate 5 (or auto) would fit"),
            "{printed}"
        );
    }
}

#[test]
fn the_cifar_config_trains_an_epoch_on_generated_data() {
    let root = tempfile::tempdir().unwrap();
    generate_cifar(root.path(), 10);
    let run = root.path().join("run");
    let output = train(&[
        "configs/fmp_cifar_k64.toml",
        "--backend",
        "flex",
        "--epochs",
        "1",
        "--batch-size",
        "5",
        "--test-passes",
        "2",
        "--data-dir",
        root.path().to_str().unwrap(),
        "--output",
        run.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let summary = summary(&run);
    assert_eq!(summary["epochs"].as_array().unwrap().len(), 1);
    assert_eq!(summary["test_images"], 10);
    assert_eq!(summary["test_passes"], 2);
    assert_eq!(summary["config"]["augment"]["translate"], 16);
    assert!(
        text(&output).contains("46 train / 4 valid / 10 test"),
        "{}",
        text(&output)
    );
}

#[test]
fn the_cifar_config_without_data_says_where_and_how() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .env(data::OFFLINE_ENV, "1")
        .args([
            "configs/fmp_cifar.toml",
            "--data-dir",
            empty.path().to_str().unwrap(),
            "--output",
            empty.path().join("run").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(!message.contains("panicked"), "{message}");
    for expected in [
        "cifar-10-binary.tar.gz not found in",
        &empty.path().join("cifar10").display().to_string(),
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "Put cifar-10-binary.tar.gz or its extracted cifar-10-batches-bin/ in one of those",
    ] {
        assert!(message.contains(expected), "{expected:?} not in: {message}");
    }
}

#[test]
fn show_writes_a_report_of_one_digit_and_names_a_bad_image() {
    let (run, _) = train_sample(1);
    let dir = tempfile::tempdir().unwrap();
    let digit = dir.path().join("digit.png");
    let pixels: Vec<u8> = (0..28 * 28)
        .map(|i| if (i % 28) / 4 == 3 { 255 } else { 0 })
        .collect();
    image::GrayImage::from_raw(28, 28, pixels)
        .unwrap()
        .save(&digit)
        .unwrap();
    let report = dir.path().join("report");
    let out = [run.path(), &digit, &report].map(|p| p.to_str().unwrap().to_string());
    let output = train(&[
        "show", &out[0], &out[1], "--passes", "2", "--output", &out[2],
    ]);
    assert!(output.status.success(), "{}", text(&output));
    let page = std::fs::read_to_string(report.join("report.html")).unwrap();
    for expected in [
        "id=\"conv1\"",
        "id=\"fc2\"",
        "class probabilities",
        "average",
    ] {
        assert!(page.contains(expected), "{expected}");
    }
    let output = train(&["show", &out[0], "missing.png", "--output", &out[2]]);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).contains("missing.png"), "{}", text(&output));
}

#[test]
fn the_fmp_quick_start_reports_both_accuracies_and_how_to_look_inside() {
    let run = tempfile::tempdir().unwrap();
    let out = run.path().to_str().unwrap();
    let args = [
        "configs/fmp_quickstart.toml",
        "--epochs",
        "1",
        "--test-passes",
        "2",
    ];
    let output = train(&[&args[..], &["--output", out]].concat());
    let message = text(&output);
    assert!(output.status.success(), "{message}");
    assert!(message.contains("2-pass"), "{message}");
    let hint = format!("show {out} samples/digit-7.png");
    assert!(message.contains(&hint), "{hint:?} not in {message}");
}

/// The main thread is one of rayon's threads where there are two or more: a run with one, two
/// and three threads (the data loader's thread feeding tensors to the pool meanwhile) finishes
/// within minutes instead of waiting forever, and learns; a thread count that is not a number
/// is named and the run goes on.
#[test]
fn a_run_finishes_on_one_two_and_three_rayon_threads_and_names_a_bad_count() {
    for threads in ["1", "2", "3", "many"] {
        let run = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
            .current_dir(repo())
            .args(["configs/quickstart.toml", "--epochs", "1", "--output"])
            .arg(run.path())
            .env("RAYON_NUM_THREADS", threads)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read as it comes, so that a full pipe cannot stop the run.
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut errors = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut errors).unwrap();
            errors
        });
        let start = std::time::Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > std::time::Duration::from_secs(300) {
                child.kill().unwrap();
                panic!("{threads} rayon thread(s): no end after 300 s (deadlocked?)");
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let errors = reader.join().unwrap();
        assert!(
            status.success(),
            "{threads} rayon thread(s): {status}\n{errors}"
        );
        // A value that is not a number is named, and the run goes on with one thread per CPU.
        let warned = errors.contains("RAYON_NUM_THREADS=\"many\" is not a number of threads");
        assert_eq!(warned, threads == "many", "{threads}: {errors}");
        let accuracy = summary(run.path())["test_accuracy"].as_f64().unwrap();
        assert!(accuracy >= 80.0, "{threads} rayon thread(s): {accuracy}%");
    }
}
