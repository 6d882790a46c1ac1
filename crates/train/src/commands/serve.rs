//! `train serve`: a local page to draw a digit on, answered by a trained network after one pass
//! and after several (the FMP net's ensemble), with a link to the `show` report of the drawing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use axum::{
    Router,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    routing::{get, post},
};
use burn::prelude::*;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use image::GrayImage;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::{
    Overrides,
    images::{Invert, Preparation, prepare_grey},
    inference::{host_values, pass_probabilities},
    layer_report,
    panics::lock,
    trained::{ModelArgs, Trained},
};

/// Serve a page to draw digits on and see the network's answer, on 127.0.0.1 by default.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Port to listen on (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on; another than 127.0.0.1 exposes the page to the network.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Forward passes averaged per drawing; default: the config's test_passes.
    #[arg(long)]
    passes: Option<usize>,
    /// Classify drawings as they are drawn: by default a digit is laid out as MNIST's were
    /// (scaled into a 20x20 box, centred by its mass in the 28x28 field).
    #[arg(long)]
    raw: bool,
}

/// The largest request body accepted: a drawing is a few kilobytes of JSON.
const MAX_BODY: usize = 64 * 1024;

/// A drawing as the dataset stores its images: grey bytes, light strokes on black.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Drawing {
    pixels: Vec<u8>,
}

/// A class and its probability.
#[derive(Serialize)]
struct Ranked {
    class: &'static str,
    probability: f32,
}

/// The answer to a drawing: the top classes after one pass and averaged over `passes`.
#[derive(Serialize)]
struct Answer {
    one_pass: Vec<Ranked>,
    averaged: Vec<Ranked>,
    passes: usize,
}

/// The request head's limit (request line and headers): a browser's are a few hundred bytes.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send a request's head, and then its body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted. Each holds at most [`MAX_HEAD`] plus
/// [`MAX_BODY`] bytes for at most twice [`READ_TIMEOUT`] before its request is answered.
const MAX_CONNECTIONS: usize = 64;

/// The trained network and its passes per drawing: it answers one request at a time, on a thread
/// of its own, while the server's threads go on accepting and reading other requests.
struct Classifier {
    trained: Trained,
    passes: usize,
    /// Whether a drawing is laid out as MNIST's digits (see [`prepare_grey`]).
    layout: bool,
}

/// What the handlers share: the network, and the newest drawing's report (a lock of its own, so
/// that reading it never waits for the network).
#[derive(Clone)]
struct Shared {
    classifier: Arc<Mutex<Classifier>>,
    report: Arc<Mutex<Option<String>>>,
}

/// Runs `train serve` until the process is stopped.
pub fn run(args: ServeArgs) -> Result<()> {
    let trained = args.model.load(Overrides::default())?;
    let passes = trained.passes(args.passes)?;
    let kind = trained.dataset();
    if kind.channels() != 1 {
        return Err(anyhow!(
            "{} has colour images; drawing serves the grey digit datasets (mnist, fashion_mnist)",
            kind.name()
        ));
    }
    let listener = std::net::TcpListener::bind((args.host.as_str(), args.port))
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    say!(
        "serving {} on http://{address}/ (Ctrl-C stops)",
        trained.network.name()
    );
    let served = Shared {
        classifier: Arc::new(Mutex::new(Classifier {
            trained,
            passes,
            layout: !args.raw,
        })),
        report: Arc::default(),
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/report", get(report))
        .route("/predict", post(predict))
        .route("/show", post(show_drawing))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(served);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the server's threads")?
        .block_on(async { accept(tokio::net::TcpListener::from_std(listener)?, app).await })
}

/// Serves each connection on a task of its own, at most [`MAX_CONNECTIONS`] at once, with
/// hyper's limit on the request head and its timeout for reading it.
async fn accept(listener: tokio::net::TcpListener, app: Router) -> Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_HEAD.max(8192));
    loop {
        let slot = slots.clone().acquire_owned().await?;
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, or a connection reset before it was accepted: the
                // server goes on once it passes.
                say_err!("warning: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        tokio::spawn(async move {
            // A client that goes away or breaks the protocol ends only its own connection.
            let _ = connection.await;
            drop(slot);
        });
    }
}

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// A response: status, content type and body.
type Reply = (StatusCode, [(header::HeaderName, &'static str); 1], String);

fn reply(status: StatusCode, kind: &'static str, text: String) -> Reply {
    (status, [(header::CONTENT_TYPE, kind)], text)
}

/// A refusal, as JSON `{"error": message}`.
fn refuse(status: StatusCode, message: impl std::fmt::Display) -> Reply {
    let text = json!({ "error": message.to_string() }).to_string();
    reply(status, JSON, text)
}

async fn page() -> Reply {
    reply(StatusCode::OK, HTML, include_str!("serve.html").to_string())
}

async fn report(State(served): State<Shared>) -> Reply {
    match lock(&served.report).clone() {
        Some(page) => reply(StatusCode::OK, HTML, page),
        None => refuse(
            StatusCode::NOT_FOUND,
            "no report yet: draw, then follow the link",
        ),
    }
}

async fn predict(State(served): State<Shared>, headers: HeaderMap, body: Body) -> Reply {
    answer(served.classifier, &headers, body, |classifier, images| {
        let answer = classify(&classifier.trained, images, classifier.passes)?;
        Ok(serde_json::to_string(&answer)?)
    })
    .await
}

async fn show_drawing(State(served): State<Shared>, headers: HeaderMap, body: Body) -> Reply {
    answer(
        served.classifier,
        &headers,
        body,
        move |classifier, images| {
            let shown = layer_report::report(
                &classifier.trained,
                images,
                classifier.passes,
                classifier.trained.config.seed,
            )?;
            *lock(&served.report) = Some(layer_report::html("your drawing", &shown)?);
            Ok(json!({ "report": "/report" }).to_string())
        },
    )
    .await
}

async fn not_found(uri: Uri) -> Reply {
    refuse(StatusCode::NOT_FOUND, format!("no page {}", uri.path()))
}

async fn method_not_allowed() -> Reply {
    refuse(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// Reads the drawing in `body` and answers it with `work`, run off the server's threads (the
/// network computes for a while; the other connections go on meanwhile).
async fn answer(
    classifier: Arc<Mutex<Classifier>>,
    headers: &HeaderMap,
    body: Body,
    work: impl FnOnce(&Classifier, Tensor<4>) -> Result<String> + Send + 'static,
) -> Reply {
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {MAX_BODY} bytes"),
        )
    };
    // A declared length over the limit is refused before any of the body is read.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return too_large();
    }
    let body = match tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Err(_) => return refuse(StatusCode::REQUEST_TIMEOUT, "the body took too long"),
        Ok(Err(_)) => return too_large(),
        Ok(Ok(body)) => body,
    };
    let computed = tokio::task::spawn_blocking(move || {
        let classifier = lock(&classifier);
        let images = drawing(&classifier.trained, &body, classifier.layout)?;
        work(&classifier, images).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await;
    match computed {
        Ok(Ok(text)) => reply(StatusCode::OK, JSON, text),
        Ok(Err((status, message))) => refuse(status, message),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// What goes wrong with a request: the status and a message for the client.
type Refusal = (StatusCode, String);

fn bad_request(message: String) -> Refusal {
    (StatusCode::BAD_REQUEST, message)
}

/// The network's input for the drawing in `body`: `{"pixels": [...]}`, one grey byte per
/// pixel of the dataset's image size, light strokes on black; laid out as MNIST's digits if
/// `layout` (see [`prepare_grey`]).
fn drawing(trained: &Trained, body: &[u8], layout: bool) -> Result<Tensor<4>, Refusal> {
    let drawing: Drawing = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("expected {{\"pixels\": [bytes]}}: {e}")))?;
    let side = trained.dataset().image_side();
    if drawing.pixels.len() != side * side {
        return Err(bad_request(format!(
            "{} pixels, expected {side} x {side}",
            drawing.pixels.len()
        )));
    }
    let grey = GrayImage::from_raw(side as u32, side as u32, drawing.pixels)
        .ok_or_else(|| bad_request(format!("expected {side} x {side} pixels")))?;
    let preparation = Preparation {
        invert: Invert::Never,
        layout,
    };
    let item = prepare_grey(grey, trained.dataset(), preparation).item;
    let batcher = trained
        .batcher()
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(batcher.tensors(vec![item], &trained.device).0)
}

/// The three most probable classes after one pass and averaged over `passes`.
fn classify(trained: &Trained, images: Tensor<4>, passes: usize) -> Result<Answer> {
    let names = trained.dataset().class_names();
    let seed = trained.config.seed;
    let [first, averaged] = pass_probabilities(&trained.network, images, passes, seed);
    let top = |p: Tensor<2>| -> Result<Vec<Ranked>> {
        let values = host_values(p)?;
        let mut ranked: Vec<usize> = (0..values.len()).collect();
        ranked.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        Ok(ranked
            .into_iter()
            .take(3)
            .map(|c| Ranked {
                class: names[c],
                probability: values[c],
            })
            .collect())
    };
    Ok(Answer {
        one_pass: top(first)?,
        averaged: top(averaged)?,
        passes,
    })
}
