//! Workers: `train worker` processes serving their devices on loopback, and trainers naming them
//! in `--devices`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{repo, summary, text, train, wait_for_checkpoint};

/// What Burn's server logs when a session ends: a trainer went away.
const SESSION_ENDED: &str = "WebSocket remote session";

/// A `train worker` process on loopback, killed when dropped.
struct Worker {
    child: Child,
    /// `ws://127.0.0.1:PORT`, as the worker printed it.
    address: String,
    /// The lines it prints after the address, read as they come so that its pipe never fills.
    logged: Arc<Mutex<Vec<String>>>,
}

impl Worker {
    /// Starts a worker serving flex on `port` (0: any free one), with `token` required if
    /// given, and waits until it listens.
    fn start(port: u16, token: Option<&str>) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_train"));
        command
            .current_dir(repo())
            .args(["worker", "--port", &port.to_string()])
            .env_remove("CNN_WORKER_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(token) = token {
            command.env("CNN_WORKER_TOKEN", token);
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        while let Some(line) = stdout.next() {
            let line = line.unwrap();
            if let Some(start) = line.find("ws://") {
                let address = line[start..]
                    .split(':')
                    .take(3)
                    .collect::<Vec<_>>()
                    .join(":");
                let address = address.trim_end_matches(|c: char| !c.is_ascii_digit());
                let logged = Arc::new(Mutex::new(Vec::new()));
                let sink = logged.clone();
                std::thread::spawn(move || {
                    for line in stdout.map_while(Result::ok) {
                        sink.lock().unwrap().push(line);
                    }
                });
                return Self {
                    child,
                    address: address.to_string(),
                    logged,
                };
            }
            printed.push(line);
        }
        let _ = child.kill();
        let status = child.wait();
        panic!("the worker printed no address ({status:?}): {printed:?}");
    }

    /// The first line it printed after the address that contains `text`, waiting up to a
    /// minute for it.
    fn logged_line(&self, text: &str) -> String {
        let started = std::time::Instant::now();
        while started.elapsed().as_secs() < 60 {
            let logged = self.logged.lock().unwrap();
            if let Some(line) = logged.iter().find(|l| l.contains(text)) {
                return line.clone();
            }
            drop(logged);
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!(
            "the worker logged no {text:?}: {:?}",
            self.logged.lock().unwrap()
        );
    }

    /// How many lines it printed after the address that contain `text`.
    fn logged_count(&self, text: &str) -> usize {
        let logged = self.logged.lock().unwrap();
        logged.iter().filter(|l| l.contains(text)).count()
    }

    /// Waits, up to a minute, until more than `count` lines after the address contain `text`
    /// and no more come for half a second.
    fn wait_for_more(&self, text: &str, count: usize) {
        let started = std::time::Instant::now();
        let mut seen = count;
        let mut quiet_since = std::time::Instant::now();
        while started.elapsed().as_secs() < 60 {
            let now = self.logged_count(text);
            if now != seen {
                (seen, quiet_since) = (now, std::time::Instant::now());
            } else if seen > count && quiet_since.elapsed().as_millis() >= 500 {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("the worker logged no more {text:?} than {count} times");
    }

    fn port(&self) -> u16 {
        self.address.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// The worker's resident memory, in KiB.
    fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the worker is running");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A trainer's run of the quick start with `flags` into `run`.
fn quickstart(run: &Path, flags: &[&str]) -> std::process::Output {
    let out = run.to_str().unwrap();
    let args = [&["configs/quickstart.toml", "--output", out][..], flags].concat();
    let mut command = Command::new(env!("CARGO_BIN_EXE_train"));
    command
        .current_dir(repo())
        .args(&args)
        .env_remove("CNN_WORKER_TOKEN");
    command.output().unwrap()
}

fn test_accuracy(run: &Path) -> f64 {
    summary(run)["test_accuracy"].as_f64().unwrap()
}

#[test]
fn two_workers_train_the_sample_as_well_as_one_device_and_stay_for_the_next_trainer() {
    let workers = [Worker::start(0, None), Worker::start(0, None)];
    let devices = format!("0,{},{}", workers[0].address, workers[1].address);
    let spread = tempfile::tempdir().unwrap();
    // The same seed and total batch as the one-device run.
    let flags = ["--batch-size", "30", "--epochs", "3"];
    let output = quickstart(
        spread.path(),
        &[&flags[..], &["--devices", &devices]].concat(),
    );
    assert!(output.status.success(), "{}", text(&output));
    let names: Vec<String> = summary(spread.path())["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for (name, worker) in names[1..].iter().zip(&workers) {
        assert_eq!(*name, format!("worker {}/0", worker.address));
    }

    let alone = tempfile::tempdir().unwrap();
    let output = quickstart(alone.path(), &flags);
    assert!(output.status.success(), "{}", text(&output));
    let (spread, alone) = (test_accuracy(spread.path()), test_accuracy(alone.path()));
    println!("test accuracy: {spread:.2}% on three devices, {alone:.2}% on one");
    assert!(alone > 80.0, "one device trained to {alone}%");
    assert!(
        (spread - alone).abs() <= 3.0,
        "{spread}% on three devices, {alone}% on one"
    );

    // A worker whose trainer has gone serves the next one, and its memory does not grow
    // with every trainer it has served. The first two of these trainers set the worker's peak
    // for this share of the batch (the run above gave it a smaller share, and the allocator's
    // heap still grows in steps of up to 10 MiB over the first trainers); the next three must
    // not add a tenth to it.
    // The worker ends a session when it sees the trainer's connection go, after the trainer has
    // exited (Burn logs it as a warning): its memory is read once it has.
    let mut resident = Vec::new();
    for round in 0..5 {
        let ended = workers[0].logged_count(SESSION_ENDED);
        let run = tempfile::tempdir().unwrap();
        let devices = format!("0,{}", workers[0].address);
        let flags = ["--batch-size", "30", "--epochs", "1", "--devices", &devices];
        let output = quickstart(run.path(), &flags);
        assert!(output.status.success(), "round {round}: {}", text(&output));
        workers[0].wait_for_more(SESSION_ENDED, ended);
        resident.push(workers[0].resident_kib());
    }
    println!("worker memory after each of five trainers: {resident:?} KiB");
    let (settled, last) = (resident[1], resident[4]);
    assert!(
        last < settled + settled / 10,
        "{settled} KiB after the second of five alike trainers, {last} KiB after the fifth"
    );
}

/// A free loopback port: bound, then released.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn an_absent_worker_or_a_refused_token_is_named_and_nothing_is_written() {
    let absent = format!("ws://127.0.0.1:{}", free_port());
    let guarded = Worker::start(0, Some("right-token"));
    for (devices, token, expected) in [
        (absent.clone(), None, "no worker answered"),
        (
            guarded.address.clone(),
            Some("wrong-token"),
            "refused the token",
        ),
        (
            guarded.address.clone(),
            None,
            "requires a token and none is set",
        ),
        (
            format!("{}/3", guarded.address),
            Some("right-token"),
            "serves 1 device(s)",
        ),
    ] {
        let parent = tempfile::tempdir().unwrap();
        let run = parent.path().join("run");
        let mut command = Command::new(env!("CARGO_BIN_EXE_train"));
        command.current_dir(repo()).args([
            "configs/quickstart.toml",
            "--output",
            run.to_str().unwrap(),
            "--devices",
            &format!("0,{devices}"),
        ]);
        command.env_remove("CNN_WORKER_TOKEN");
        if let Some(token) = token {
            command.env("CNN_WORKER_TOKEN", token);
        }
        let output = command.output().unwrap();
        let said = text(&output);
        assert!(!output.status.success(), "{devices}: {said}");
        let worker = devices.split('/').take(3).collect::<Vec<_>>().join("/");
        assert!(
            said.contains(&format!("worker {worker}")) && said.contains(expected),
            "{devices}: {said}"
        );
        assert!(
            !run.exists(),
            "{devices}: a refused run wrote {}",
            run.display()
        );
    }
    let listed = train(&["devices", "--remote", &absent]);
    assert!(!listed.status.success());
    assert!(
        text(&listed).contains("no worker answered"),
        "{}",
        text(&listed)
    );
}

#[test]
fn a_worker_beyond_loopback_needs_a_token_and_serves_its_own_devices_only() {
    let refused = train(&["worker", "--host", "0.0.0.0", "--port", "0"]);
    assert!(!refused.status.success());
    let said = text(&refused);
    assert!(
        said.contains("--host 0.0.0.0")
            && said.contains("CNN_WORKER_TOKEN")
            && said.contains("SSH"),
        "{said}"
    );
    let relayed = train(&["worker", "--port", "0", "--devices", "ws://127.0.0.1:4000"]);
    assert!(!relayed.status.success());
    assert!(
        text(&relayed).contains("this machine's devices only"),
        "{}",
        text(&relayed)
    );
    let worker = Worker::start(0, None);
    let listed = train(&["devices", "--remote", &worker.address]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        text(&listed).contains(&format!("{}/0", worker.address)),
        "{}",
        text(&listed)
    );
    // A worker as the first device trains, with a warning that says what to list first.
    let run = tempfile::tempdir().unwrap();
    let first = quickstart(run.path(), &["--epochs", "1", "--devices", &worker.address]);
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        text(&first).contains(&format!(
            "List a device of this machine first (e.g. --devices 0,{}/0)",
            worker.address
        )),
        "{}",
        text(&first)
    );
}

#[test]
fn a_worker_that_disappears_ends_the_run_by_name_and_the_run_resumes_when_it_is_back() {
    let worker = Worker::start(0, None);
    let (address, port) = (worker.address.clone(), worker.port());
    let run = tempfile::tempdir().unwrap();
    let devices = format!("0,{address}");
    let out = run.path().to_str().unwrap();
    let args = [
        "configs/quickstart.toml",
        "--output",
        out,
        "--epochs",
        "4",
        "--batch-size",
        "30",
        "--devices",
        &devices,
    ];
    let trainer = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_checkpoint(run.path());
    drop(worker); // SIGKILL: the worker's machine is gone
    let output = trainer.wait_with_output().unwrap();
    let said = text(&output);
    assert!(
        !output.status.success(),
        "the run went on without its worker: {said}"
    );
    assert!(said.contains(&format!("worker {address}")), "{said}");
    assert!(said.contains("--resume"), "{said}");
    // The run's own error, without Burn's panic notice or Rust's panic report before it.
    assert!(
        !said.contains("PANIC") && !said.contains("panicked"),
        "{said}"
    );
    let log = std::fs::read_to_string(run.path().join("experiment.log")).unwrap();
    assert!(
        log.contains("PANIC =>"),
        "the panic is in the run's log: {log}"
    );
    let kept = train::last_complete(run.path()).expect("the last complete checkpoint is kept");
    assert!(kept < 4, "the run finished before the worker went");
    assert!(!run.path().join("summary.json").exists());

    let _back = Worker::start(port, None);
    let resumed = train(&[&args[..], &["--resume"]].concat());
    assert!(resumed.status.success(), "{}", text(&resumed));
    let summary = summary(run.path());
    assert!(summary["resumed_from"].as_u64().unwrap() >= kept as u64);
    assert_eq!(summary["epochs"].as_array().unwrap().len(), 4);
}

#[test]
fn a_worker_that_disappears_ends_the_bench_by_name_and_its_log_is_plain_text() {
    let worker = Worker::start(0, None);
    let address = worker.address.clone();
    // Burn's server logs its start after the address; in a pipe, without colour codes.
    let logged = worker.logged_line("Server started");
    assert!(!logged.contains('\x1b'), "{logged:?}");
    // The worker's device first, so that it is timed from the start.
    let devices = format!("{address}/0,0");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args(["bench", "configs/quickstart.toml", "--backends", "flex"])
        .args(["--devices", &devices, "--steps", "100000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(bench.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in stderr.by_ref() {
        let line = line.unwrap();
        let timing = line.contains("training steps, 2 warm-up");
        said.push(line);
        if timing {
            break;
        }
    }
    drop(worker); // SIGKILL mid-timing
    said.extend(stderr.map(Result::unwrap));
    let status = bench.wait().unwrap();
    let said = said.join("\n");
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "error: flex: timing failed: worker {address}/0 stopped"
        )),
        "{said}"
    );
    assert!(
        said.contains("stopped after"),
        "the timing says it stopped: {said}"
    );
    assert!(!said.contains("panicked"), "{said}");
}
