//! Export, import, prediction and evaluation through the `train` command, on runs trained on the
//! bundled MNIST sample.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{not_run, read_json, repo, text, train};

/// The three architectures, as `[model]` tables; the FMP net narrow (8n) and per channel, so
/// that the PyTorch check covers regions drawn per image and channel.
const MODELS: [(&str, &str); 3] = [
    ("lenet5_modern", "kind = \"lenet5_modern\""),
    ("lenet5_classic", "kind = \"lenet5_classic\""),
    (
        "fmp",
        "kind = \"fmp\"\nfilters = 8\nmax_dropout = 0.1\nper_channel = true",
    ),
];

/// Trains `model` for one epoch on the sample; returns the temp folder, the config file and the
/// run directory.
fn trained(model: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "dataset = \"mnist_sample\"\ndata_dir = \"samples\"\nepochs = 1\nbatch_size = 32\n\
             test_passes = 2\noutput = \"{}\"\n[model]\n{model}\n[optimizer]\nkind = \"adam\"\n\
             learning_rate = 0.002\n",
            run.display()
        ),
    )
    .unwrap();
    let output = train(&[config.to_str().unwrap()]);
    assert!(output.status.success(), "{}", text(&output));
    (dir, config, run)
}

fn run_ok(args: &[&str]) -> String {
    let output = train(args);
    assert!(
        output.status.success(),
        "train {}: {}",
        args.join(" "),
        text(&output)
    );
    text(&output)
}

fn run_err(args: &[&str]) -> String {
    let output = train(args);
    assert!(
        !output.status.success(),
        "train {} succeeded",
        args.join(" ")
    );
    let message = text(&output);
    assert!(!message.contains("panicked"), "{message}");
    message
}

fn reference_logits(export: &Path) -> Vec<f64> {
    let json: serde_json::Value = read_json(&export.join("reference.json"));
    json["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A Python with torch: `$CNN_TORCH_PYTHON`, else `python3` if it can import torch.
fn torch_python() -> Result<String, String> {
    let python = std::env::var("CNN_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(&python).args(["-c", "import torch"]).output() {
        Ok(output) if output.status.success() => Ok(python),
        Ok(_) => Err(format!(
            "{python} cannot import torch (set CNN_TORCH_PYTHON to a Python that can)"
        )),
        Err(e) => Err(format!("{python} does not run: {e}")),
    }
}

#[test]
fn export_reloads_to_the_same_logits_on_every_backend_and_in_pytorch() {
    let torch = torch_python();
    if let Err(reason) = &torch {
        not_run("torch", "the PyTorch side of the export check", reason);
    }
    for (name, model) in MODELS {
        let (dir, config, run) = trained(model);
        // Every backend loads the checkpoint, exports it, and reloads both exported files to
        // the same logits (the command checks that); the backends agree with one another.
        let backends = ["flex", "ndarray", "wgpu"];
        let mut logits = Vec::new();
        for backend in backends {
            let export = dir.path().join(format!("export-{backend}"));
            let out = run_ok(&[
                "export",
                path(&run),
                "--backend",
                backend,
                "--output",
                path(&export),
            ]);
            assert!(out.contains("reproduce the network's logits"), "{out}");
            for file in [
                "model.safetensors",
                "model.bpk",
                "config.toml",
                "reference.json",
            ] {
                assert!(export.join(file).is_file(), "{name} {backend}: {file}");
            }
            logits.push((backend, reference_logits(&export)));
        }
        let (first, base) = &logits[0];
        for (backend, other) in &logits[1..] {
            let worst = base
                .iter()
                .zip(other)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-3, "{name}: {first} vs {backend}: {worst}");
        }

        // Evaluating the run, the Burn export and the PyTorch export gives one answer: the
        // weights are the same and the FMP regions start from the config's seed each time.
        let export = dir.path().join("export-flex");
        let eval = |source: &Path| {
            let json = dir.path().join("eval.json");
            run_ok(&["eval", path(source), "--passes", "2", "--json", path(&json)]);
            let value: serde_json::Value = read_json(&json);
            [&value["accuracy_one_pass"], &value["accuracy"]].map(|v| v.as_f64().unwrap())
        };
        let from_run = eval(&run);
        assert!(from_run[0] > 50.0, "{name}: {from_run:?}");
        assert_eq!(eval(&export.join("model.bpk")), from_run, "{name}");
        assert_eq!(eval(&export.join("model.safetensors")), from_run, "{name}");

        if let Ok(python) = &torch {
            for args in [
                vec![path(&export).to_string()],
                vec![
                    "--from-torch".into(),
                    path(&config).to_string(),
                    "--train".into(),
                    env!("CARGO_BIN_EXE_train").to_string(),
                ],
            ] {
                let output = Command::new(python)
                    .current_dir(repo())
                    .arg("scripts/check_export.py")
                    .args(&args)
                    .output()
                    .unwrap();
                let message = text(&output);
                eprintln!("{message}");
                assert!(output.status.success(), "{name}: {message}");
            }
        }
    }
}

/// `eval` and the end of a run give the confusion matrices (one pass and averaged), per-class
/// accuracy, the accuracy of each pass and the worst mistakes, as a table, JSON and a page; the
/// FMP net's regions come from the run's seed unless `--seed` gives another, so an evaluation
/// repeats exactly.
#[test]
fn eval_gives_confusion_matrices_per_pass_accuracy_and_the_worst_mistakes() {
    let (dir, _, run) = trained(MODELS[2].1);
    let summary: serde_json::Value = read_json(&run.join("summary.json"));
    assert_eq!(summary["test"]["accuracy"], summary["test_accuracy"]);
    let page = std::fs::read_to_string(run.join("evaluation.html")).unwrap();
    assert!(page.contains("Confusion matrix") && page.contains("data:image/png;base64,"));

    let json = dir.path().join("eval.json");
    let html = dir.path().join("eval.html");
    let eval = |seed: Option<&str>| {
        let mut args = vec!["eval", path(&run), "--passes", "3", "--json", path(&json)];
        args.extend(["--html", path(&html)]);
        if let Some(seed) = seed {
            args.extend(["--seed", seed]);
        }
        let out = run_ok(&args);
        let value: serde_json::Value = read_json(&json);
        (out, value)
    };
    let (out, value) = eval(None);
    assert!(
        out.contains("true\\pred") && out.contains("accuracy"),
        "{out}"
    );
    assert!(
        out.contains("one-pass accuracy was") && out.contains("--seed"),
        "{out}"
    );
    let images = value["images"].as_u64().unwrap() as usize;
    for (matrix, accuracy) in [
        ("confusion", "accuracy"),
        ("confusion_one_pass", "accuracy_one_pass"),
    ] {
        let rows: Vec<Vec<usize>> = serde_json::from_value(value[matrix].clone()).unwrap();
        assert_eq!(rows.len(), 10);
        assert_eq!(rows.iter().flatten().sum::<usize>(), images, "{matrix}");
        let right: usize = (0..10).map(|c| rows[c][c]).sum();
        let percent = 100.0 * right as f64 / images as f64;
        assert!(
            (percent - value[accuracy].as_f64().unwrap()).abs() < 1e-9,
            "{matrix}"
        );
    }
    let per_pass = value["accuracy_per_pass"].as_array().unwrap();
    assert_eq!(per_pass.len(), 3);
    assert_eq!(per_pass[0], value["accuracy_one_pass"]);
    // The run's seed draws the regions of the test pass at the end of training: its two passes
    // come out again, whatever the number of passes asked for.
    let at_the_end = summary["test"]["accuracy_per_pass"].as_array().unwrap();
    assert_eq!(at_the_end.len(), 2);
    assert_eq!(
        &per_pass[..2],
        &at_the_end[..],
        "eval against the end of training"
    );
    let worst = value["worst"].as_array().unwrap();
    assert!(!worst.is_empty());
    for pair in worst.windows(2) {
        assert!(pair[0]["probability"].as_f64() >= pair[1]["probability"].as_f64());
    }
    assert!(worst.iter().all(|m| m["label"] != m["predicted"]));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("most confident mistakes") && page.contains("after one pass"));
    // Repeatable by default and with --seed; another seed draws other regions.
    assert_eq!(
        eval(None).1["accuracy_per_pass"],
        value["accuracy_per_pass"]
    );
    let seeded = eval(Some("7")).1;
    assert_eq!(seeded["seed"], 7);
    assert_eq!(
        eval(Some("7")).1["accuracy_per_pass"],
        seeded["accuracy_per_pass"]
    );
    assert_ne!(seeded["accuracy_per_pass"], value["accuracy_per_pass"]);
}

/// The first `count` test digits of the sample with their labels.
fn sample_digits(count: usize) -> Vec<(Vec<u8>, u8)> {
    let folder = repo().join("samples/mnist_sample");
    let splits = data::DatasetKind::MnistSample.load(&folder).unwrap();
    let images = &splits.test_images;
    let size = images.rows * images.cols;
    (0..count)
        .map(|i| {
            (
                images.pixels[i * size..(i + 1) * size].to_vec(),
                splits.test_labels[i],
            )
        })
        .collect()
}

/// Small digits in a corner, and large dark digits on a white page, as a user's images come:
/// read as they are (`--raw`), most are misread; laid out as MNIST's were (the default: the ink
/// scaled into 20x20, centred by its mass in 28x28; inverted when the ground is light), about
/// as many are read right as of MNIST's own digits.
#[test]
fn predict_lays_digits_out_as_mnist_did() {
    use image::{GrayImage, imageops};
    let (dir, _, run) = trained(MODELS[0].1);
    let digits = sample_digits(100);
    type Form = fn(&GrayImage) -> GrayImage;
    let forms: [(&str, Form); 3] = [
        ("as_stored", |digit| digit.clone()),
        ("half_size_in_a_corner", |digit| {
            let small = imageops::resize(digit, 14, 14, imageops::FilterType::Triangle);
            let mut field = GrayImage::new(28, 28);
            imageops::overlay(&mut field, &small, 0, 0);
            field
        }),
        ("four_times_larger_dark_on_white", |digit| {
            let mut large = imageops::resize(digit, 112, 112, imageops::FilterType::Triangle);
            imageops::invert(&mut large);
            large
        }),
    ];
    let mut correct = Vec::new();
    for (form, make) in forms {
        let folder = dir.path().join(form);
        std::fs::create_dir(&folder).unwrap();
        let files: Vec<PathBuf> = digits
            .iter()
            .enumerate()
            .map(|(i, (pixels, _))| {
                let digit = GrayImage::from_raw(28, 28, pixels.clone()).unwrap();
                let file = folder.join(format!("{i}.png"));
                make(&digit).save(&file).unwrap();
                file
            })
            .collect();
        for laid_out in [false, true] {
            let json = folder.join("predictions.json");
            let mut args = vec!["predict", path(&run), "--json", path(&json)];
            if !laid_out {
                args.push("--raw");
            }
            args.extend(files.iter().map(|f| path(f)));
            run_ok(&args);
            let predicted: serde_json::Value = read_json(&json);
            let right = predicted
                .as_array()
                .unwrap()
                .iter()
                .zip(&digits)
                .filter(|(p, (_, label))| p["class"] == label.to_string().as_str())
                .count();
            correct.push((form, laid_out, right));
        }
    }
    // Printed for the record (`cargo test -- --nocapture`).
    eprintln!("correct of 100 (form, laid out, correct): {correct:?}");
    let of = |form: &str, laid_out: bool| {
        let found = correct.iter().find(|c| c.0 == form && c.1 == laid_out);
        found.unwrap().2
    };
    let stored = of("as_stored", false);
    assert!(stored >= 80, "{correct:?}");
    for form in ["half_size_in_a_corner", "four_times_larger_dark_on_white"] {
        assert!(of(form, true) + 10 >= stored, "{form}: {correct:?}");
        assert!(
            of(form, false) + 25 <= of(form, true),
            "{form}: {correct:?}"
        );
    }
}

#[test]
fn predict_reads_png_and_jpeg_and_bad_inputs_are_named() {
    let (dir, config, run) = trained(MODELS[0].1);
    let digits = sample_digits(20);
    let mut files = Vec::new();
    for (i, (pixels, label)) in digits.iter().enumerate() {
        // PNG as stored; JPEG dark on light, as on paper.
        let image = image::GrayImage::from_raw(28, 28, pixels.clone()).unwrap();
        let png = dir.path().join(format!("{i}-{label}.png"));
        image.save(&png).unwrap();
        let inverted =
            image::GrayImage::from_fn(28, 28, |x, y| image::Luma([255 - image.get_pixel(x, y)[0]]));
        let jpeg = dir.path().join(format!("{i}-{label}.jpg"));
        inverted.save(&jpeg).unwrap();
        files.push((png, jpeg, *label));
    }
    let json = dir.path().join("predictions.json");
    let predicted = |flags: &[&str], pick: fn(&(PathBuf, PathBuf, u8)) -> &PathBuf| {
        let mut args = vec!["predict", path(&run), "--top", "2", "--json", path(&json)];
        args.extend(flags);
        args.extend(files.iter().map(|f| path(pick(f))));
        let out = run_ok(&args);
        assert!(
            out.contains(&format!("{}: ", path(pick(&files[0])))),
            "{out}"
        );
        // Dark on light is inverted unless asked for or --raw, and said to be.
        let noted = out.contains("inverted: its ground is light");
        let dark_on_light = path(pick(&files[0])).ends_with(".jpg");
        assert_eq!(noted, dark_on_light && flags.is_empty(), "{out}");
        let value: serde_json::Value = read_json(&json);
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let sum: f64 = p["probabilities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .sum();
                assert!((sum - 1.0).abs() < 1e-4, "{sum}");
                p["class"].as_str().unwrap().to_string()
            })
            .collect::<Vec<_>>()
    };
    let from_png = predicted(&[], |f| &f.0);
    let correct = from_png
        .iter()
        .zip(&files)
        .filter(|(class, f)| **class == f.2.to_string())
        .count();
    // One epoch of LeNet on the sample classifies about 90% of test digits.
    assert!(correct >= 15, "{correct} of 20 correct: {from_png:?}");
    let agreeing =
        |classes: &[String]| from_png.iter().zip(classes).filter(|(a, b)| a == b).count();
    for flags in [&["--invert"][..], &[]] {
        let agree = agreeing(&predicted(flags, |f| &f.1));
        assert!(
            agree >= 18,
            "PNG and JPEG ({flags:?}) agree on {agree} of 20"
        );
    }
    // As the images are (MNIST's own digits are laid out already): about the same answers.
    let agree = agreeing(&predicted(&["--raw"], |f| &f.0));
    assert!(
        agree >= 17,
        "with and without the MNIST layout: {agree} of 20 agree"
    );

    // An image that cannot be decoded.
    let broken = dir.path().join("broken.png");
    std::fs::write(&broken, b"not an image at all").unwrap();
    let err = run_err(&["predict", path(&run), path(&broken)]);
    assert!(
        err.contains("broken.png") && err.contains("cannot decode"),
        "{err}"
    );
    // The decoder's cause is said once.
    let line = err.lines().find(|l| l.contains("cannot decode")).unwrap();
    let parts: Vec<&str> = line.split(": ").map(|p| p.trim_end_matches('.')).collect();
    for (i, part) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(part),
            "{part:?} repeated in {line}"
        );
    }
    // A file that is no image, named as none: its content says so, not its name.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"a shopping list").unwrap();
    let err = run_err(&["predict", path(&run), path(&notes)]);
    assert!(err.contains("notes.txt: not an image"), "{err}");
    // Among others: named, and the others still classified and written.
    let (first, last) = (path(&files[0].0), path(&files[1].0));
    let args = [
        "predict",
        path(&run),
        first,
        path(&broken),
        last,
        "--json",
        path(&json),
    ];
    let err = run_err(&args);
    assert!(
        err.contains("broken.png: cannot decode")
            && err.contains(&format!("{first}: "))
            && err.contains(&format!("{last}: "))
            && err.contains("1 of 3 images could not be read"),
        "{err}"
    );
    let written: serde_json::Value = read_json(&json);
    assert_eq!(written.as_array().unwrap().len(), 2);
    // A blank image is classified but said to be blank; --top 0 is refused.
    let blank = dir.path().join("blank.png");
    image::GrayImage::new(28, 28).save(&blank).unwrap();
    let out = run_ok(&["predict", path(&run), path(&blank)]);
    assert!(out.contains("blank.png: the image is blank"), "{out}");
    let err = run_err(&["predict", path(&run), first, "--top", "0"]);
    assert!(err.contains("--top 0"), "{err}");

    // A truncated safetensors file.
    let export = dir.path().join("export");
    run_ok(&["export", path(&run), "--output", path(&export)]);
    let full = std::fs::read(export.join("model.safetensors")).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let err = run_err(&["eval", path(&truncated), "--config", path(&config)]);
    assert!(
        err.contains("truncated.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );
    // And a truncated Burn record.
    let full = std::fs::read(export.join("model.bpk")).unwrap();
    let truncated = dir.path().join("truncated.bpk");
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let err = run_err(&["eval", path(&truncated), "--config", path(&config)]);
    assert!(err.contains("truncated.bpk"), "{err}");

    // A checkpoint of another model: every difference is listed, in both formats.
    for (file, first_missing) in [
        ("model.safetensors", "blocks.0.conv.weight [32, 1, 2, 2]"),
        ("model.bpk", "blocks.0.conv.weight [32, 1, 2, 2]"),
    ] {
        let err = run_err(&[
            "predict",
            path(&export.join(file)),
            "--config",
            "configs/fmp_mnist.toml",
            path(&files[0].0),
        ]);
        assert!(
            err.contains("does not hold the weights of this fmp network")
                && err.contains("missing")
                && err.contains(first_missing)
                && err.contains("unexpected")
                && err.contains("conv1.weight"),
            "{err}"
        );
    }
    // Same architecture, other size: LeNet-5 classic weights have other shapes only where the
    // layers differ, and those are named.
    let err = run_err(&[
        "eval",
        path(&export.join("model.safetensors")),
        "--config",
        "configs/lenet_classic_mnist.toml",
    ]);
    assert!(
        err.contains("unexpected") && err.contains("fc1.weight"),
        "{err}"
    );

    // Neither a run nor an export; no config to be found.
    let err = run_err(&["eval", path(dir.path())]);
    assert!(err.contains("neither a run directory"), "{err}");
    let lone = dir.path().join("lone.bpk");
    std::fs::copy(export.join("model.bpk"), &lone).unwrap();
    std::fs::remove_file(dir.path().join("config.toml")).unwrap();
    let err = run_err(&["eval", path(&lone)]);
    assert!(err.contains("pass --config"), "{err}");
}

#[test]
fn an_fmp_nets_answer_for_an_image_depends_on_the_image_and_the_seed_alone() {
    let (dir, _, run) = trained(MODELS[2].1);
    let digits = sample_digits(3);
    let files: Vec<PathBuf> = digits
        .iter()
        .enumerate()
        .map(|(i, (pixels, _))| {
            let file = dir.path().join(format!("{i}.png"));
            let image = image::GrayImage::from_raw(28, 28, pixels.clone()).unwrap();
            image.save(&file).unwrap();
            file
        })
        .collect();
    let json = dir.path().join("predictions.json");
    // The first file's probabilities, given among `images`.
    let probabilities = |images: &[&PathBuf], seed: Option<&str>| {
        let mut args = vec!["predict", path(&run), "--json", path(&json)];
        args.extend(images.iter().map(|f| path(f)));
        if let Some(seed) = seed {
            args.extend(["--seed", seed]);
        }
        run_ok(&args);
        let value: serde_json::Value = read_json(&json);
        value
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["file"] == path(&files[0]))
            .unwrap()["probabilities"]
            .clone()
    };
    let alone = probabilities(&[&files[0]], None);
    assert_eq!(
        probabilities(&[&files[0], &files[1], &files[2]], None),
        alone
    );
    assert_eq!(probabilities(&[&files[0], &files[2]], None), alone);
    // Another seed draws other regions: other probabilities, the same again when repeated.
    let seeded = probabilities(&[&files[0]], Some("8"));
    assert_ne!(seeded, alone);
    assert_eq!(probabilities(&[&files[1], &files[0]], Some("8")), seeded);
    // `show` gives the image the answer `predict` gives.
    let out = run_ok(&["predict", path(&run), path(&files[0]), "--top", "1"]);
    let top = out.lines().last().unwrap().split(": ").nth(1).unwrap();
    let (class, percent) = top.split_once(' ').unwrap();
    let report = dir.path().join("report");
    let shown = run_ok(&[
        "show",
        path(&run),
        path(&files[0]),
        "--output",
        path(&report),
    ]);
    let expected = format!("{class} ({}", percent.trim_end_matches('%'));
    assert!(shown.contains(&expected), "{expected:?} not in {shown}");
}

#[test]
fn summary_parameter_counts_equal_pytorchs_modules() {
    let python = match torch_python() {
        Ok(python) => python,
        Err(reason) => {
            return not_run("torch", "summary counts against PyTorch", &reason);
        }
    };
    // The trainable parameters of each named module of scripts/cnn_models.py's network.
    let script = r#"
import json, sys, tomllib
sys.path.insert(0, "scripts")
import cnn_models
model = cnn_models.build(tomllib.load(open(sys.argv[1], "rb")))
print(json.dumps({name: sum(p.numel() for p in module.parameters())
                  for name, module in model.named_modules() if name}))
"#;
    for config in [
        "lenet_mnist.toml",
        "lenet_classic_mnist.toml",
        "fmp_mnist.toml",
        "fmp_cifar_k64.toml",
    ] {
        let path = repo().join("configs").join(config);
        let output = Command::new(&python)
            .current_dir(repo())
            .args(["-c", script, path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let torch: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let run = train::RunConfig::load(&path, &train::Overrides::default()).unwrap();
        for layer in run.network().layers().iter().filter(|l| l.params > 0) {
            assert_eq!(
                torch[&layer.name].as_u64(),
                Some(layer.params as u64),
                "{config} {}",
                layer.name
            );
        }
    }
}
