//! `train bench --chart`: images per second by backend as an SVG bar chart.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::BackendTiming;

/// The largest value a chart shows, and that a timing read back may hold.
pub const LARGEST: f64 = 1e15;

/// A plotters error as an error that can cross threads.
fn plotting(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw the chart: {e}")
}

/// Training images per second by backend (and config, for timings of several), as an SVG bar
/// chart with the values written on the bars; on a logarithmic axis when the fastest is more
/// than 100 times the slowest (a GPU and a CPU, or LeNet and the FMP net, side by side). A
/// timing split between several devices has a second bar, named with their count.
pub fn chart(title: &str, timings: &[BackendTiming]) -> Result<String> {
    let mut names = Vec::new();
    let mut values = Vec::new();
    for timing in timings {
        names.push(timing.label());
        values.push(timing.images_per_second);
        if let Some(multi) = &timing.multi_device {
            names.push(format!("{} x{}", timing.label(), multi.devices.len()));
            values.push(multi.images_per_second);
        }
    }
    // Beyond this no axis can hold a bar, and plotters would loop on the range.
    if let Some(value) = values.iter().find(|v| !(0.0..=LARGEST).contains(*v)) {
        return Err(anyhow!("cannot draw the chart: {value} images/s"));
    }
    let largest = values.iter().copied().fold(1.0, f64::max);
    let smallest = values.iter().copied().fold(largest, f64::min).max(1e-3);
    let log = largest / smallest > 100.0;
    let height = |v: f64| if log { v.max(1e-3).log10() } else { v };
    let (bottom, top) = match log {
        true => (height(smallest).floor() - 0.5, height(largest) + 0.4),
        false => (0.0, largest * 1.15),
    };
    let width = (names.len() as u32).saturating_mul(110).max(720);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(plotting)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..names.len() as f64 - 0.5, bottom..top)
            .map_err(plotting)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(if log {
                "images / s (log scale)"
            } else {
                "images / s"
            })
            .y_label_formatter(&|y| match log {
                true => format!("{}", 10f64.powf(*y).round()),
                false => format!("{y:.0}"),
            })
            .x_labels(names.len() + 1)
            .x_label_style(("sans-serif", 12))
            .x_label_formatter(&|x| {
                // Only the bar centres (whole numbers) carry a name.
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(plotting)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                let x = i as f64;
                Rectangle::new(
                    [(x - 0.35, bottom), (x + 0.35, height(v))],
                    BLUE.mix(0.6).filled(),
                )
            }))
            .map_err(plotting)?;
        chart
            .draw_series(values.iter().enumerate().map(|(i, &v)| {
                Text::new(
                    format!("{v:.1}"),
                    (i as f64 - 0.1, height(v) + (top - bottom) * 0.06),
                    ("sans-serif", 14),
                )
            }))
            .map_err(plotting)?;
        root.present().map_err(plotting)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::tests::timing;

    #[test]
    fn the_chart_names_every_backend_and_value() {
        let svg = chart("title", &[timing("flex", 125.5), timing("ndarray", 3.25)]).unwrap();
        assert!(svg.starts_with("<svg"));
        for text in ["title", "flex", "ndarray", "125.5", "3.2", "images / s"] {
            assert!(svg.contains(text), "{text} missing");
        }
        assert!(!svg.contains("log scale"));
        // A GPU next to a CPU backend, of two configs: a log axis, bars named by both.
        let mut gpu = timing("wgpu", 20000.0);
        gpu.config = Some("fmp_mnist".into());
        let svg = chart("title", &[gpu, timing("ndarray", 3.25)]).unwrap();
        for text in ["fmp_mnist wgpu", "ndarray", "20000.0", "3.2", "log scale"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // Two devices: a second bar.
        let mut split = timing("flex", 100.0);
        split.multi_device = Some(crate::bench::MultiDeviceTiming {
            devices: vec!["cpu".into(), "cpu".into()],
            step_ms: vec![1.0],
            median_ms: 1.0,
            images_per_second: 150.25,
            scaling_efficiency: 0.75,
        });
        let svg = chart("title", &[split]).unwrap();
        for text in ["flex x2", "150.2", "100.0"] {
            assert!(svg.contains(text), "{text} missing");
        }
    }

    #[test]
    fn values_no_axis_can_span_are_an_error_not_a_loop() {
        for value in [1.7e308, f64::INFINITY, f64::NAN] {
            let err = chart("title", &[timing("flex", value), timing("ndarray", 3.25)]);
            assert!(err.is_err(), "{value} was drawn");
        }
    }
}
