//! Training curves: the per-epoch figures of a run as CSV and as an SVG plot in its directory,
//! rewritten (atomically) after every epoch so that a killed run keeps them.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;

/// File name of the CSV, in the run directory.
pub const CSV: &str = "curves.csv";
/// File name of the plot, in the run directory.
pub const SVG: &str = "curves.svg";

/// Figures of one finished epoch.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss.
    pub train_loss: f64,
    /// Mean training accuracy, percent.
    pub train_accuracy: f64,
    /// Mean validation loss.
    pub valid_loss: f64,
    /// Mean validation accuracy, percent.
    pub valid_accuracy: f64,
    /// Learning rate of the epoch's last step.
    pub learning_rate: f64,
    /// Wall seconds of the training split.
    pub train_seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
}

/// The largest magnitude plotted: twice it, padded, is still a finite range.
const PLOTTABLE: f64 = 1e300;

/// Writes the curves of a run: the epochs of earlier processes (read back on `--resume`) and
/// those of this one.
#[derive(Clone, Debug)]
pub struct CurveWriter {
    run: PathBuf,
    earlier: Vec<EpochRecord>,
}

impl CurveWriter {
    /// A writer for `run`, keeping the rows of its CSV for epochs up to `resumed_from` (none
    /// for a fresh run).
    /// A damaged CSV costs the earlier rows, with a warning, not the run.
    pub fn new(run: &Path, resumed_from: Option<usize>) -> Self {
        let earlier = match resumed_from {
            Some(epoch) if run.join(CSV).is_file() => match read_curves(&run.join(CSV)) {
                Ok(rows) => rows.into_iter().filter(|r| r.epoch <= epoch).collect(),
                Err(e) => {
                    say_err!("warning: {e:#}; the curves start again from this process's epochs");
                    Vec::new()
                }
            },
            _ => Vec::new(),
        };
        Self {
            run: run.to_path_buf(),
            earlier,
        }
    }

    /// All epochs: the earlier ones, then `recent`.
    pub fn all(&self, recent: &[EpochRecord]) -> Vec<EpochRecord> {
        self.earlier.iter().chain(recent).cloned().collect()
    }

    /// Rewrites the CSV and the plot with the earlier epochs and `recent`.
    pub fn write(&self, recent: &[EpochRecord]) -> Result<()> {
        let all = self.all(recent);
        let mut writer = csv::Writer::from_writer(Vec::new());
        for record in &all {
            writer.serialize(record)?;
        }
        write_atomic(&self.run.join(CSV), &writer.into_inner()?)?;
        write_atomic(&self.run.join(SVG), plot(&all)?.as_bytes())
    }
}

/// Reads a curves CSV back.
pub fn read_curves(path: &Path) -> Result<Vec<EpochRecord>> {
    let mut reader = csv::Reader::from_path(path).with_context(|| path.display().to_string())?;
    reader
        .deserialize()
        .collect::<Result<Vec<EpochRecord>, _>>()
        .with_context(|| path.display().to_string())
}

/// A plotters error as an error that can cross threads (plotters' own holds the SVG writer's).
fn plotting(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the plot: {e}")
}

/// One figure of an epoch.
type Metric = fn(&EpochRecord) -> f64;

/// Loss and accuracy against epoch, training and validation, as an SVG document.
pub fn plot(epochs: &[EpochRecord]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(plotting)?;
        let (left, right) = root.split_horizontally(450);
        let last = epochs.iter().map(|e| e.epoch).max().unwrap_or(1).max(2) as f64;
        let panels: [(_, &str, [Metric; 2]); 2] = [
            (left, "loss", [|e| e.train_loss, |e| e.valid_loss]),
            (
                right,
                "accuracy (%)",
                [|e| e.train_accuracy, |e| e.valid_accuracy],
            ),
        ];
        for (area, name, series) in panels {
            let values: Vec<f64> = epochs
                .iter()
                .flat_map(|e| series.map(|f| f(e)))
                // Beyond this no axis can span them: plotters would loop on an infinite range.
                .filter(|v| v.abs() <= PLOTTABLE)
                .collect();
            let low = values.iter().copied().fold(f64::INFINITY, f64::min);
            let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let (low, high) = if low < high {
                let pad = (high - low) * 0.05;
                (low - pad, high + pad)
            } else if low.is_finite() {
                (low - 1.0, low + 1.0)
            } else {
                (0.0, 1.0)
            };
            let mut chart = ChartBuilder::on(&area)
                .caption(name, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(56)
                .build_cartesian_2d(1f64..last, low..high)
                .map_err(plotting)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_labels((last as usize).min(12))
                .x_label_formatter(&|x| format!("{x:.0}"))
                .draw()
                .map_err(plotting)?;
            for (label, colour, f) in [("train", BLUE, series[0]), ("valid", RED, series[1])] {
                let points: Vec<(f64, f64)> = epochs
                    .iter()
                    .map(|e| (e.epoch as f64, f(e)))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                chart
                    // Markers too: a one-epoch run has one point and no line.
                    .draw_series(LineSeries::new(points, colour.stroke_width(2)).point_size(3))
                    .map_err(plotting)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plotting)?;
        }
        root.present().map_err(plotting)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(epoch: usize, loss: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            train_loss: loss,
            train_accuracy: 90.0 + epoch as f64,
            valid_loss: loss * 1.1,
            valid_accuracy: 89.0 + epoch as f64,
            learning_rate: 0.01,
            train_seconds: 3.5,
            images_per_second: 100.0,
        }
    }

    #[test]
    fn csv_round_trips_and_a_resumed_run_keeps_earlier_epochs() {
        let run = tempfile::tempdir().unwrap();
        let first = CurveWriter::new(run.path(), None);
        first
            .write(&[record(1, 0.5), record(2, 0.4), record(3, 0.3)])
            .unwrap();
        assert_eq!(read_curves(&run.path().join(CSV)).unwrap().len(), 3);
        // Resumed from epoch 2: epoch 3 is trained again and replaces the old row.
        let resumed = CurveWriter::new(run.path(), Some(2));
        resumed.write(&[record(3, 0.25)]).unwrap();
        let rows = read_curves(&run.path().join(CSV)).unwrap();
        assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(rows[2].train_loss, 0.25);
        assert_eq!(rows[0].valid_accuracy, 90.0);
    }

    #[test]
    fn the_plot_is_an_svg_with_both_panels_and_legends() {
        let svg = plot(&[record(1, 0.5), record(2, 0.4)]).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        for text in ["loss", "accuracy (%)", "train", "valid", "epoch"] {
            assert!(svg.contains(text), "{text} missing");
        }
        // A single epoch shows as markers (a line needs two points); NaN metrics still plot.
        let one = plot(&[record(1, 0.5)]).unwrap();
        assert_eq!(
            one.matches("<circle").count(),
            4,
            "train and valid, two panels"
        );
        let mut nan = record(1, f64::NAN);
        nan.valid_accuracy = f64::NAN;
        assert!(plot(&[nan]).is_ok());
    }

    #[test]
    fn a_damaged_csv_costs_the_earlier_rows_not_the_run() {
        let run = tempfile::tempdir().unwrap();
        CurveWriter::new(run.path(), None)
            .write(&[record(1, 0.5), record(2, 0.4)])
            .unwrap();
        let csv = run.path().join(CSV);
        let text = std::fs::read_to_string(&csv).unwrap();
        std::fs::write(&csv, &text[..text.len() - 20]).unwrap();
        let err = format!("{:#}", read_curves(&csv).unwrap_err());
        assert!(err.contains("curves.csv"), "{err}");
        let resumed = CurveWriter::new(run.path(), Some(2));
        resumed.write(&[record(3, 0.3)]).unwrap();
        let rows = read_curves(&csv).unwrap();
        assert_eq!(rows.iter().map(|r| r.epoch).collect::<Vec<_>>(), [3]);
    }
}
