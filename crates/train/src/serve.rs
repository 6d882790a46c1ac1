//! `train serve`: a local page to draw a digit on, answered by a trained network after one pass
//! and after several (the FMP net's ensemble), with a link to the `show` report of the drawing.

use std::io::Read;

use anyhow::{Result, anyhow};
use burn::prelude::*;
use data::ImageItem;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::{
    Overrides,
    evaluate::{host_values, pass_probabilities},
    show,
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
    let server = Server::http((args.host.as_str(), args.port))
        .map_err(|e| anyhow!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let address = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| anyhow!("not listening on an IP address"))?;
    println!(
        "serving {} on http://{address}/ (Ctrl-C stops)",
        trained.network.name()
    );
    let mut report: Option<String> = None;
    for mut request in server.incoming_requests() {
        let result = read_body(&mut request).and_then(|body| {
            let (method, url) = (request.method().clone(), request.url().to_string());
            handle(&trained, passes, &mut report, &method, &url, &body)
        });
        let (status, kind, text) = match result {
            Ok((kind, text)) => (200, kind, text),
            Err((status, message)) => (status, JSON, json!({ "error": message }).to_string()),
        };
        let header = Header::from_bytes("Content-Type", kind).expect("a valid header");
        let response = Response::from_string(text)
            .with_status_code(status)
            .with_header(header);
        // A client that went away is no reason to stop serving.
        let _ = request.respond(response);
    }
    Ok(())
}

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";

/// What goes wrong with a request: the status and a message for the client.
type Refusal = (u16, String);

/// The request's body, at most [`MAX_BODY`] bytes.
fn read_body(request: &mut Request) -> Result<Vec<u8>, Refusal> {
    let too_large = || (413, format!("the body is over {MAX_BODY} bytes"));
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| (400, format!("cannot read the body: {e}")))?;
    if body.len() > MAX_BODY {
        return Err(too_large());
    }
    Ok(body)
}

/// The response to one request: its content type and body.
fn handle(
    trained: &Trained,
    passes: usize,
    report: &mut Option<String>,
    method: &Method,
    url: &str,
    body: &[u8],
) -> Result<(&'static str, String), Refusal> {
    let path = url.split('?').next().unwrap_or("");
    match (method, path) {
        (Method::Get, "/") => Ok((HTML, include_str!("serve.html").to_string())),
        (Method::Get, "/report") => report
            .clone()
            .map(|page| (HTML, page))
            .ok_or((404, "no report yet: draw, then follow the link".into())),
        (Method::Post, "/predict") => {
            let images = drawing(trained, body)?;
            let answer = classify(trained, images, passes).map_err(internal)?;
            Ok((JSON, serde_json::to_string(&answer).map_err(internal)?))
        }
        (Method::Post, "/show") => {
            let images = drawing(trained, body)?;
            let shown = show::report(trained, images, passes).map_err(internal)?;
            *report = Some(show::html("your drawing", &shown).map_err(internal)?);
            Ok((JSON, json!({ "report": "/report" }).to_string()))
        }
        (_, "/" | "/report" | "/predict" | "/show") => Err((405, "method not allowed".into())),
        _ => Err((404, format!("no page {path}"))),
    }
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    (500, e.to_string())
}

/// The network's input for the drawing in `body`: `{"pixels": [...]}`, one grey byte per
/// pixel of the dataset's image size.
fn drawing(trained: &Trained, body: &[u8]) -> Result<Tensor<4>, Refusal> {
    let drawing: Drawing = serde_json::from_slice(body)
        .map_err(|e| (400, format!("expected {{\"pixels\": [bytes]}}: {e}")))?;
    let side = trained.dataset().image_side();
    if drawing.pixels.len() != side * side {
        return Err((
            400,
            format!("{} pixels, expected {side} x {side}", drawing.pixels.len()),
        ));
    }
    let item = ImageItem {
        pixels: drawing.pixels,
        label: 0,
    };
    let batcher = trained.batcher().map_err(internal)?;
    Ok(batcher.tensors(vec![item], &trained.device).0)
}

/// The three most probable classes after one pass and averaged over `passes`.
fn classify(trained: &Trained, images: Tensor<4>, passes: usize) -> Result<Answer> {
    let names = trained.dataset().class_names();
    let [first, averaged] = pass_probabilities(&trained.network, images, passes);
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
