//! What a trained network does to one image, as a self-contained HTML page: the padded input,
//! the first feature maps of every layer, the regions of one pass of each FMP layer drawn over
//! its input, and the class probabilities of each pass and of their average. `train show`
//! writes it; `train serve` shows it for a drawing.

use std::fmt::Write;

use anyhow::Result;
use burn::{prelude::*, tensor::activation::softmax};
use ops::{PoolRegions, Span};

use crate::{
    images::png_data,
    inference::{argmax, host_values},
    trained::Trained,
};

/// Feature maps drawn per layer: the first channels.
const MAPS: usize = 8;

/// One feature map, row-major.
pub struct Map {
    /// `[height, width]`.
    pub size: [usize; 2],
    /// The values.
    pub values: Vec<f32>,
}

/// One layer's part of the report.
pub struct LayerView {
    /// Its name in the layer table and the state dict.
    pub name: String,
    /// What it does.
    pub kind: String,
    /// Its output `[channels, height, width]`.
    pub shape: [usize; 3],
    /// The first [`MAPS`] maps of its output.
    pub maps: Vec<Map>,
    /// For an FMP layer: the row and column intervals of the first image's (first channel's)
    /// regions in the pass drawn.
    pub regions: Option<(Vec<Span>, Vec<Span>)>,
}

/// Everything the page shows.
pub struct Report {
    /// The network's input: the image padded and normalised, first channel.
    pub input: Map,
    /// Every layer, in order.
    pub layers: Vec<LayerView>,
    /// Class probabilities of each pass.
    pub passes: Vec<Vec<f32>>,
    /// Their average.
    pub average: Vec<f32>,
    /// The classes' names.
    pub classes: [&'static str; 10],
}

/// The first map of `x` `[1, c, h, w]`, or the first [`MAPS`] with `maps`.
fn maps(x: Tensor<4>, count: usize) -> Result<Vec<Map>> {
    let [_, c, h, w] = x.dims();
    let values = host_values(x)?;
    Ok((0..c.min(count))
        .map(|i| Map {
            size: [h, w],
            values: values[i * h * w..(i + 1) * h * w].to_vec(),
        })
        .collect())
}

/// Runs the network on `images` (one image) `passes` times, the first pass observed; an FMP
/// net draws its regions from `seed`, as [`pass_probabilities`](crate::inference::pass_probabilities) does.
pub fn report(trained: &Trained, images: Tensor<4>, passes: usize, seed: u64) -> Result<Report> {
    let network = trained.network.valid().to_device(&trained.device);
    network.reseed(seed);
    let table = trained.config.network().layers();
    let mut seen: Vec<(Tensor<4>, Option<PoolRegions>)> = Vec::new();
    let mut observe = |x: Tensor<4>, regions: Option<&PoolRegions>| {
        seen.push((x, regions.cloned()));
    };
    let first = network.forward_observed(images.clone(), Some(&mut observe));
    let mut probabilities = vec![host_values(softmax(first, 1))?];
    for _ in 1..passes.max(1) {
        probabilities.push(host_values(softmax(network.forward(images.clone()), 1))?);
    }
    let classes = probabilities[0].len();
    let average = (0..classes)
        .map(|k| probabilities.iter().map(|p| p[k]).sum::<f32>() / probabilities.len() as f32)
        .collect();
    let mut layers = Vec::new();
    // The observed pass shows the layers in the table's order.
    for ((x, regions), layer) in seen.into_iter().zip(table) {
        layers.push(LayerView {
            maps: maps(x, MAPS)?,
            regions: regions.map(|r| {
                let (rows, cols) = r.of(0, 0);
                (rows.to_vec(), cols.to_vec())
            }),
            name: layer.name,
            kind: layer.kind,
            shape: layer.output,
        });
    }
    Ok(Report {
        input: maps(images, 1)?.remove(0),
        layers,
        passes: probabilities,
        average,
        classes: trained.dataset().class_names(),
    })
}

/// `map` as a PNG, blue for negative values, white for 0, red for positive, scaled by `scale`.
fn png(map: &Map, scale: f32) -> Result<String> {
    let [h, w] = map.size;
    let mut image = image::RgbImage::new(w as u32, h as u32);
    for (pixel, &v) in image.pixels_mut().zip(&map.values) {
        let t = (v / scale.max(1e-12)).clamp(-1.0, 1.0);
        let fade = |t: f32| (255.0 * (1.0 - t.abs())) as u8;
        pixel.0 = if t >= 0.0 {
            [255, fade(t), fade(t)]
        } else {
            [fade(t), fade(t), 255]
        };
    }
    png_data(&image.into())
}

/// The largest magnitude among `maps`: one colour scale per layer.
fn scale(maps: &[Map]) -> f32 {
    maps.iter()
        .flat_map(|m| &m.values)
        .fold(0f32, |a, &v| a.max(v.abs()))
}

/// A map drawn `pixel` screen pixels per cell, with the regions (if any) outlined over it.
fn figure(
    map: &Map,
    scale: f32,
    pixel: usize,
    regions: Option<&(Vec<Span>, Vec<Span>)>,
) -> Result<String> {
    let [h, w] = map.size;
    let (width, height) = (w * pixel, h * pixel);
    let mut out = format!(
        "<div class=\"map\" style=\"width:{width}px;height:{height}px\">\
         <img src=\"data:image/png;base64,{}\" width=\"{width}\" height=\"{height}\">",
        png(map, scale)?
    );
    if let Some((rows, cols)) = regions {
        write!(
            out,
            "<svg class=\"regions\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {w} {h}\">"
        )?;
        // Neighbouring regions in alternating colours (overlapping ones share cells), and the
        // one in the middle filled, so that a reader can follow one region.
        let middle = (rows.len() / 2, cols.len() / 2);
        for (i, r) in rows.iter().enumerate() {
            for (j, c) in cols.iter().enumerate() {
                let class = match ((i, j) == middle, (i + j) % 2) {
                    (true, _) => "picked",
                    (false, 0) => "even",
                    (false, _) => "odd",
                };
                write!(
                    out,
                    "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\"/>",
                    c.start, r.start, c.len, r.len
                )?;
            }
        }
        out += "</svg>";
    }
    out += "</div>";
    Ok(out)
}

/// The report as one HTML document with everything embedded.
pub fn html(title: &str, report: &Report) -> Result<String> {
    let mut out = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:sans-serif;margin:2em}} .maps{{display:flex;flex-wrap:wrap;gap:6px}}\
         .map{{position:relative}} .map img{{image-rendering:pixelated;display:block}}\
         .regions{{position:absolute;left:0;top:0}} .regions rect{{fill:none;stroke-width:0.12}}\
         .regions .even{{stroke:rgba(0,130,0,0.8)}} .regions .odd{{stroke:rgba(230,120,0,0.8)}}\
         .regions .picked{{stroke:#000;stroke-width:0.25;fill:rgba(255,230,0,0.45)}}\
         td,th{{padding:2px 6px;text-align:right}} .bar{{background:#c33;height:10px}}\
         .legend{{display:inline-block;width:120px;height:10px;vertical-align:middle;\
         background:linear-gradient(to right,#00f,#fff,#f00)}}</style></head><body>\
         <h1>{title}</h1>"
    );
    let best = argmax(&report.average);
    write!(
        out,
        "<p class=\"prediction\">prediction: <b>{}</b>, {:.1}% averaged over {} pass(es)</p>\
         <p>Each map is drawn on its layer's own colour scale: blue for negative values, white \
         for 0, red for positive, the strongest colour at the layer's largest magnitude (given \
         beside each layer).{}</p>",
        report.classes[best],
        100.0 * report.average[best],
        report.passes.len(),
        match report.layers.iter().any(|l| l.regions.is_some()) {
            true =>
                " In an FMP layer's regions, neighbouring regions alternate green and orange, \
                     and the one in the middle is filled.",
            false => "",
        }
    )?;
    let input_scale = scale(std::slice::from_ref(&report.input));
    write!(
        out,
        "<h2>input</h2><p>{} x {} after padding and normalisation</p>{}",
        report.input.size[0],
        report.input.size[1],
        figure(&report.input, input_scale, 6, None)?
    )?;
    let mut previous: Option<&LayerView> = None;
    for layer in &report.layers {
        let [c, h, w] = layer.shape;
        write!(
            out,
            "<h2 id=\"{0}\">{0}</h2><p>{1}, output {c} x {h} x {w}; first {2} maps</p>",
            layer.name,
            layer.kind,
            layer.maps.len()
        )?;
        if let (Some(regions), Some(input)) = (&layer.regions, previous) {
            out += "<p>its regions in this pass, over its input's first map:</p>";
            let s = scale(&input.maps[..1]);
            out += &figure(
                &input.maps[0],
                s,
                (280 / input.maps[0].size[1]).max(2),
                Some(regions),
            )?;
        }
        let s = scale(&layer.maps);
        write!(
            out,
            "<p>colour scale: -{s:.3} <span class=\"legend\"></span> +{s:.3}</p>"
        )?;
        out += "<div class=\"maps\">";
        for map in &layer.maps {
            out += &figure(map, s, (112 / map.size[1].max(1)).max(2), None)?;
        }
        out += "</div>";
        previous = Some(layer);
    }
    out += "<h2>class probabilities</h2><table><tr><th>pass</th>";
    for class in report.classes {
        write!(out, "<th>{class}</th>")?;
    }
    out += "</tr>";
    let rows = report
        .passes
        .iter()
        .enumerate()
        .map(|(i, p)| ((i + 1).to_string(), p));
    for (label, p) in rows.chain([("average".to_string(), &report.average)]) {
        write!(out, "<tr class=\"pass\"><td>{label}</td>")?;
        for v in p {
            write!(
                out,
                "<td>{:.1}%<div class=\"bar\" style=\"width:{:.0}px\"></div></td>",
                100.0 * v,
                60.0 * v
            )?;
        }
        out += "</tr>";
    }
    out += "</table></body></html>\n";
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::{Overrides, RunConfig};

    fn trained(config: &str) -> Trained {
        let path = Path::new(
            &std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .join("../../configs")
        .join(config);
        let config = RunConfig::load(&path, &Overrides::default()).unwrap();
        let device = Device::flex();
        Trained {
            network: config.network().init(&device),
            config,
            device,
            weights: PathBuf::from("fresh"),
        }
    }

    #[test]
    fn the_report_shows_every_layer_the_regions_and_probabilities_of_each_pass() {
        for (config, passes) in [
            ("fmp_mnist.toml", 3),
            ("lenet_mnist.toml", 1),
            ("lenet_classic_mnist.toml", 1),
        ] {
            let trained = trained(config);
            let side = trained.network.input_size();
            let images = Tensor::<4>::ones([1, 1, side, side], &trained.device);
            let report = report(&trained, images, passes, 1).unwrap();
            let table = trained.config.network().layers();
            let names: Vec<&str> = report.layers.iter().map(|l| l.name.as_str()).collect();
            let expected: Vec<&str> = table.iter().map(|l| l.name.as_str()).collect();
            assert_eq!(names, expected, "{config}");
            assert_eq!(report.passes.len(), passes);
            for p in report.passes.iter().chain([&report.average]) {
                assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
            }
            for (layer, row) in report.layers.iter().zip(&table) {
                let [c, h, w] = row.output;
                assert_eq!(layer.maps.len(), c.min(MAPS), "{}", layer.name);
                assert_eq!(layer.maps[0].size, [h, w], "{}", layer.name);
                // An FMP layer's regions: one interval per output row and column.
                let pooled = row.kind.starts_with("fmp");
                assert_eq!(layer.regions.is_some(), pooled, "{}", layer.name);
                if let Some((rows, cols)) = &layer.regions {
                    assert_eq!((rows.len(), cols.len()), (h, w), "{}", layer.name);
                }
            }
            let page = html("t", &report).unwrap();
            assert!(page.contains("prediction: <b>"), "{config}");
            let legends = page.matches("colour scale: -").count();
            assert_eq!(legends, report.layers.len(), "{config}: a legend per layer");
            for name in expected {
                assert!(page.contains(&format!("id=\"{name}\"")), "{name}");
            }
            assert!(page.contains("data:image/png;base64,"));
            assert_eq!(page.matches("<tr class=\"pass\">").count(), passes + 1);
            if passes > 1 {
                assert_eq!(page.matches("<svg class=\"regions\"").count(), 6);
                assert_eq!(
                    page.matches("class=\"picked\"").count(),
                    6,
                    "one region each"
                );
            }
        }
    }
}
