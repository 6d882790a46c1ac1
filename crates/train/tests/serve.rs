//! `train serve` over HTTP: the page, a drawing answered, and every malformed request refused
//! with a 4xx while the server keeps serving; hostile clients on raw sockets that hold up
//! nobody else; then the page itself in a headless browser.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{not_run, repo, train_sample};

/// The server process, stopped when dropped.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `run` on a free port; returns the process and its address.
fn serve(run: &std::path::Path) -> (Serving, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_train"))
        .current_dir(repo())
        .args([
            "serve",
            run.to_str().unwrap(),
            "--port",
            "0",
            "--passes",
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (Serving(child), url)
}

/// Status and body of a request (`body` None: GET).
fn request(url: &str, body: Option<&[u8]>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = match body {
        Some(body) => agent.post(url).send(body),
        None => agent.get(url).call(),
    }
    .unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

/// A 28 x 28 drawing of a vertical bar, as the page sends it.
fn bar() -> Vec<u8> {
    let pixels: Vec<u8> = (0..28 * 28)
        .map(|i| if (12..16).contains(&(i % 28)) { 255 } else { 0 })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "pixels": pixels })).unwrap()
}

#[test]
fn the_server_answers_drawings_and_refuses_malformed_requests() {
    let (run, _) = train_sample(1);
    let (_server, url) = serve(run.path());
    let (status, page) = request(&format!("{url}/"), None);
    assert_eq!(status, 200);
    assert!(
        page.contains("<canvas") && page.contains("/predict"),
        "{page}"
    );

    let (status, answer) = request(&format!("{url}/predict"), Some(&bar()));
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["passes"], 3);
    for key in ["one_pass", "averaged"] {
        let ranked = answer[key].as_array().unwrap();
        assert_eq!(ranked.len(), 3);
        let p: Vec<f64> = ranked
            .iter()
            .map(|c| c["probability"].as_f64().unwrap())
            .collect();
        assert!(p[0] >= p[1] && p[1] >= p[2] && p.iter().sum::<f64>() <= 1.0 + 1e-5);
    }

    let too_large = vec![b'x'; 100_000];
    for (path, body, expected) in [
        ("/predict", Some(&b""[..]), 400),
        ("/predict", Some(&b"\x00\xff garbage"[..]), 400),
        ("/predict", Some(&br#"{"pixels": [1, 2, 3]}"#[..]), 400),
        ("/predict", Some(&br#"{"pixels": [1, 2, 300]}"#[..]), 400),
        ("/predict", Some(&too_large[..]), 413),
        ("/predict", None, 405),
        ("/../../etc/passwd", None, 404),
        ("/report", None, 404),
    ] {
        let (status, text) = request(&format!("{url}{path}"), body);
        assert_eq!(status, expected, "{path}: {text}");
    }
    // Still serving after all that; the report of a drawing is a page of its own.
    let (status, text) = request(&format!("{url}/show"), Some(&bar()));
    assert_eq!(status, 200, "{text}");
    let (status, report) = request(&format!("{url}/report"), None);
    assert_eq!(status, 200);
    assert!(report.contains("id=\"conv1\"") && report.contains("class probabilities"));
}

/// The server's resident memory, in KiB.
fn resident_kib(server: &Serving) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A raw connection to the server that has sent `head` (and no more).
fn connect(address: &str, head: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may refuse and close before it has read everything: that is an answer too.
    let _ = stream.write_all(head);
    stream
}

/// What the server answered on `stream` (empty when it closed the connection without one).
fn answer_on(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Seconds a valid drawing takes to be answered, the best of three.
fn answer_seconds(url: &str) -> f64 {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let (status, text) = request(&format!("{url}/predict"), Some(&bar()));
            assert_eq!(status, 200, "{text}");
            started.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn hostile_clients_hold_up_nobody_and_take_no_memory() {
    let (run, _) = train_sample(1);
    let (server, url) = serve(run.path());
    let address = url.trim_start_matches("http://").to_string();
    let alone = answer_seconds(&url);

    // A client that sends half a body and waits.
    let mut slow = connect(
        &address,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n{\"pixels\": [0,",
    );
    let slow_since = Instant::now();
    // One that declares an absurd body: refused at once, before any of it is read.
    let mut absurd = connect(
        &address,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000000\r\n\r\n",
    );
    let answer = answer_on(&mut absurd);
    assert!(
        answer.starts_with("HTTP/1.1 413") && answer.contains("{\"error\":"),
        "{answer:?}"
    );
    // One that sends a 16 MiB header: refused, and its bytes are not kept.
    let before = resident_kib(&server);
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
    head.resize(head.len() + (16 << 20), b'a');
    head.extend_from_slice(b"\r\n\r\n");
    let mut huge = connect(&address, &head);
    let answer = answer_on(&mut huge);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer:?}"
    );
    let grown = resident_kib(&server).saturating_sub(before);
    assert!(grown < 4 << 10, "the server grew by {grown} KiB");

    // While the slow client still holds its connection, a valid drawing is answered in the
    // same time as alone (a second of slack for a busy 2-core machine).
    let during = answer_seconds(&url);
    assert!(slow_since.elapsed() < Duration::from_secs(10));
    assert!(
        during < 2.0 * alone + 1.0,
        "{during:.3} s with a slow client connected, {alone:.3} s alone"
    );
    // The slow client is answered 408 once its body has taken too long.
    let answer = answer_on(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    let (status, _) = request(&format!("{url}/"), None);
    assert_eq!(status, 200);
}

#[test]
fn the_page_draws_and_shows_the_answer_in_a_headless_browser() {
    let chromium = std::env::var("CNN_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).is_file() {
        let reason =
            format!("no browser at {chromium} (apt-get install chromium, or CNN_CHROMIUM)");
        return not_run("browser", "the page in a headless browser", &reason);
    }
    let (run, _) = train_sample(1);
    let (_server, url) = serve(run.path());
    let profile = tempfile::tempdir().unwrap();
    // `?demo` draws a stroke by script and asks for the answer, through the page's own code:
    // canvas, downsampling, request, table.
    let output = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{url}/?demo"))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout);
    let result = dom.split("<div id=\"result\">").nth(1).unwrap_or("");
    assert!(
        result.contains("<table id=\"answer\">")
            && result.contains("3 passes")
            && result.contains('%'),
        "{dom}"
    );
}
