//! `train serve` over HTTP: the page, a drawing answered, and every malformed request refused
//! with a 4xx while the server keeps serving; then the page itself in a headless browser.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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
