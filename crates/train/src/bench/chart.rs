//! `train bench --chart`: images per second by backend as an SVG bar chart.

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use super::BackendTiming;

/// A plotters error as an error that can cross threads.
fn plotting(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw the chart: {e}")
}

/// Training images per second by backend, as an SVG bar chart with the values written on the
/// bars.
pub fn chart(title: &str, timings: &[BackendTiming]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (720, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(plotting)?;
        let top = timings
            .iter()
            .map(|t| t.images_per_second)
            .fold(1.0, f64::max)
            * 1.15;
        let names: Vec<String> = timings.iter().map(|t| t.backend.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(-0.5..names.len() as f64 - 0.5, 0.0..top)
            .map_err(plotting)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("images / s")
            .x_labels(names.len() + 1)
            .x_label_formatter(&|x| {
                // Only the bar centres (whole numbers) carry a backend's name.
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
            .draw_series(timings.iter().enumerate().map(|(i, t)| {
                let x = i as f64;
                Rectangle::new(
                    [(x - 0.35, 0.0), (x + 0.35, t.images_per_second)],
                    BLUE.mix(0.6).filled(),
                )
            }))
            .map_err(plotting)?;
        chart
            .draw_series(timings.iter().enumerate().map(|(i, t)| {
                Text::new(
                    format!("{:.1}", t.images_per_second),
                    (i as f64 - 0.1, t.images_per_second + top * 0.06),
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
    }
}
