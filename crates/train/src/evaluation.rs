//! A trained network's evaluation on a dataset, as a course needs it: accuracy after one
//! forward pass and from the probabilities averaged over several (an FMP net's ensemble), the
//! accuracy of each pass alone (how much the one-pass figure moves with the regions drawn), the
//! confusion matrices, per-class accuracy, and the images it gets most confidently wrong; as a
//! terminal table, JSON and a self-contained HTML page. `train eval` and the end of a training
//! run share it.

use std::fmt::Write;

use anyhow::Result;
use burn::{
    data::{dataloader::batcher::Batcher, dataset::Dataset},
    prelude::*,
    tensor::activation::softmax,
};
use data::{DatasetKind, ImageBatcher, ImageDataset, ImageItem};
use models::{ImageBatch, Network};
use serde::Serialize;

use crate::{
    images::png_data,
    inference::{argmax, host_values},
    progress::Phase,
};

/// Mistakes kept: the most confident ones.
const WORST: usize = 24;

/// What an evaluation measured.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluated {
    /// Images evaluated.
    pub images: usize,
    /// Forward passes per image.
    pub passes: usize,
    /// Percent correct after the first pass.
    pub accuracy_one_pass: f64,
    /// Percent correct from the softmax probabilities averaged over the passes.
    pub accuracy: f64,
    /// Percent correct of each pass alone, in order: each is a one-pass evaluation with its own
    /// pooling regions, so their spread is how much the one-pass figure moves between
    /// evaluations.
    pub accuracy_per_pass: Vec<f64>,
    /// The classes' names, in label order.
    pub classes: Vec<String>,
    /// `[true label][predicted label]` image counts after the first pass.
    pub confusion_one_pass: Vec<Vec<usize>>,
    /// The same from the averaged probabilities.
    pub confusion: Vec<Vec<usize>>,
    /// The misclassified images (by the averaged probabilities) whose wrong class got the most
    /// probability, most confident first.
    pub worst: Vec<Mistake>,
}

/// One misclassified image.
#[derive(Clone, Debug, Serialize)]
pub struct Mistake {
    /// Its index in the dataset's split.
    pub index: usize,
    /// Its true label.
    pub label: usize,
    /// The label predicted from the averaged probabilities.
    pub predicted: usize,
    /// The averaged probability of the predicted label.
    pub probability: f32,
}

/// Evaluates `model` on `dataset` (of `kind`) in batches of `batch_size` on `device`, `passes`
/// forward passes per image (at least one). The passes run one after another over the whole
/// set, pass `p` drawing its pooling regions from `seed + p`: a pass's figure does not depend
/// on how many passes run, and the same seed repeats an evaluation exactly (`train eval` that of
/// the end of a run).
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Network,
    dataset: &ImageDataset,
    kind: DatasetKind,
    batcher: &ImageBatcher,
    batch_size: usize,
    device: &Device,
    passes: usize,
    seed: u64,
) -> Result<Evaluated> {
    let passes = passes.max(1);
    let model = model.valid().to_device(device);
    let names = kind.class_names();
    let classes = names.len();
    let mut confusion = [
        vec![vec![0; classes]; classes],
        vec![vec![0; classes]; classes],
    ];
    let mut per_pass = vec![0usize; passes];
    let mut labels = vec![0usize; dataset.len()];
    // Each image's probabilities summed over the passes.
    let mut sums = vec![0f32; dataset.len() * classes];
    let indices: Vec<usize> = (0..dataset.len()).collect();
    let phase = Phase::start(
        format!(
            "evaluating {} images, {passes} pass(es) each",
            dataset.len()
        ),
        dataset.len() * passes,
        "image passes",
    );
    for (pass, hits) in per_pass.iter_mut().enumerate() {
        model.reseed(seed.wrapping_add(pass as u64));
        // Each pass builds its batches again rather than holding the whole set on the device
        // (CIFAR-10's test set at the FMP net's input is over a gigabyte).
        for chunk in indices.chunks(batch_size.max(1)) {
            let items = dataset
                .get_many(chunk.to_vec())
                .expect("indices are in range");
            if pass == 0 {
                for (item, &index) in items.iter().zip(chunk) {
                    labels[index] = item.label as usize;
                }
            }
            let batch: ImageBatch = batcher.batch(items, device);
            let probabilities = host_values(softmax(model.forward(batch.images), 1))?;
            for (row, &index) in probabilities.chunks(classes).zip(chunk) {
                let (label, predicted) = (labels[index], argmax(row));
                *hits += usize::from(predicted == label);
                if pass == 0 {
                    confusion[0][label][predicted] += 1;
                }
                for (sum, p) in sums[index * classes..][..classes].iter_mut().zip(row) {
                    *sum += p;
                }
            }
            phase.advance(chunk.len());
        }
    }
    let mut mistakes = Vec::new();
    for (index, (row, &label)) in sums.chunks(classes).zip(&labels).enumerate() {
        let predicted = argmax(row);
        confusion[1][label][predicted] += 1;
        if predicted != label {
            mistakes.push(Mistake {
                index,
                label,
                predicted,
                probability: row[predicted] / passes as f32,
            });
        }
    }
    mistakes.sort_by(|a, b| b.probability.total_cmp(&a.probability));
    mistakes.truncate(WORST);
    let percent = |hits: usize| 100.0 * hits as f64 / dataset.len().max(1) as f64;
    let correct = |matrix: &Vec<Vec<usize>>| (0..classes).map(|c| matrix[c][c]).sum::<usize>();
    let [confusion_one_pass, confusion] = confusion;
    Ok(Evaluated {
        images: dataset.len(),
        passes,
        accuracy_one_pass: percent(correct(&confusion_one_pass)),
        accuracy: percent(correct(&confusion)),
        accuracy_per_pass: per_pass.into_iter().map(percent).collect(),
        classes: names.iter().map(|name| name.to_string()).collect(),
        confusion_one_pass,
        confusion,
        worst: mistakes,
    })
}

impl Evaluated {
    /// Mean and standard deviation of the per-pass accuracies (percent); `None` with one pass,
    /// or where every pass gives the same (a network without random pooling).
    pub fn pass_spread(&self) -> Option<[f64; 2]> {
        let n = self.accuracy_per_pass.len();
        let first = self.accuracy_per_pass.first()?;
        if n < 2 || self.accuracy_per_pass.iter().all(|a| a == first) {
            return None;
        }
        let mean = self.accuracy_per_pass.iter().sum::<f64>() / n as f64;
        let variance = self
            .accuracy_per_pass
            .iter()
            .map(|a| (a - mean).powi(2))
            .sum::<f64>()
            / (n - 1) as f64;
        Some([mean, variance.sqrt()])
    }

    /// Per-class accuracy (percent) from `matrix`; `None` for a class without images.
    fn per_class(matrix: &[Vec<usize>]) -> Vec<Option<f64>> {
        matrix
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: usize = row.iter().sum();
                (total > 0).then(|| 100.0 * row[c] as f64 / total as f64)
            })
            .collect()
    }

    /// The confusion matrix (from the averaged probabilities) and per-class accuracy as a
    /// terminal table, rows the true class, columns the predicted one.
    pub fn table(&self) -> String {
        let short = |name: &str| name.chars().take(7).collect::<String>();
        let mut out = match self.passes {
            1 => "confusion matrix and per-class accuracy:\n".to_string(),
            n => format!(
                "confusion matrix averaged over {n} passes, per-class accuracy averaged and \
                 after 1 pass:\n"
            ),
        };
        out += &format!("{:>9}", "true\\pred");
        for name in &self.classes {
            out += &format!(" {:>7}", short(name));
        }
        out += &format!(" {:>8}", "accuracy");
        if self.passes > 1 {
            out += &format!(" {:>8}", "1 pass");
        }
        out.push('\n');
        let averaged = Self::per_class(&self.confusion);
        let one_pass = Self::per_class(&self.confusion_one_pass);
        for (c, row) in self.confusion.iter().enumerate() {
            out += &format!("{:>9}", short(&self.classes[c]));
            for count in row {
                out += &format!(" {count:>7}");
            }
            let cell = |a: Option<f64>| a.map_or("-".to_string(), |a| format!("{a:.2}%"));
            out += &format!(" {:>8}", cell(averaged[c]));
            if self.passes > 1 {
                out += &format!(" {:>8}", cell(one_pass[c]));
            }
            out.push('\n');
        }
        out
    }

    /// The line on how much the one-pass figure moves with the regions an FMP net draws, or
    /// nothing with one pass.
    pub fn spread_note(&self) -> Option<String> {
        let [mean, deviation] = self.pass_spread()?;
        Some(format!(
            "each pass pools over regions of its own: over these {} passes the one-pass accuracy \
             was {mean:.2}% +- {deviation:.2}% (standard deviation), about how much a one-pass \
             figure moves with the regions drawn. `train eval` draws them from the run's seed, \
             as the test pass at the end of training did, so that it repeats that evaluation \
             exactly; `--seed N` draws others",
            self.passes
        ))
    }

    /// A self-contained page: the confusion matrices (after one pass and averaged), per-class
    /// accuracy, and the worst mistakes with their images, true and predicted classes.
    pub fn html(&self, title: &str, dataset: &ImageDataset, kind: DatasetKind) -> Result<String> {
        let mut page = String::new();
        write!(
            page,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
             body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}\
             td,th{{border:1px solid #ccc;padding:.2em .5em;text-align:right}}\
             .grid{{display:flex;flex-wrap:wrap;gap:1em}}.grid figure{{margin:0;text-align:center}}\
             .grid img{{width:84px;image-rendering:pixelated}}</style></head><body><h1>{title}</h1>\
             <p>{} images: accuracy {}</p>",
            self.images,
            match self.passes {
                1 => format!("{:.2}%.", self.accuracy),
                n => format!(
                    "{:.2}% after one pass, {:.2}% averaged over {n} passes.",
                    self.accuracy_one_pass, self.accuracy
                ),
            }
        )?;
        if let Some(note) = self.spread_note() {
            write!(page, "<p>{note}.</p>")?;
        }
        let mut matrices = vec![(
            match self.passes {
                1 => "",
                _ => ", averaged over the passes",
            },
            &self.confusion,
        )];
        if self.passes > 1 {
            matrices.push((", after one pass", &self.confusion_one_pass));
        }
        for (what, matrix) in matrices {
            write!(
                page,
                "<h2>Confusion matrix{what}</h2>{}",
                self.matrix_html(matrix)
            )?;
        }
        write!(
            page,
            "<h2>The {} most confident mistakes</h2><div class=\"grid\">",
            self.worst.len()
        )?;
        for mistake in &self.worst {
            let item = dataset.get(mistake.index).expect("an index of the dataset");
            write!(
                page,
                "<figure><img src=\"data:image/png;base64,{}\"><figcaption>#{}<br>true {}<br>\
                 predicted {} ({:.0}%)</figcaption></figure>",
                png_data(&item_image(&item, kind))?,
                mistake.index,
                self.classes[mistake.label],
                self.classes[mistake.predicted],
                100.0 * mistake.probability
            )?;
        }
        page += "</div></body></html>\n";
        Ok(page)
    }

    /// `matrix` as an HTML table, each cell shaded by its share of its row.
    fn matrix_html(&self, matrix: &[Vec<usize>]) -> String {
        let mut table = String::from("<table><tr><th>true \\ predicted</th>");
        for name in &self.classes {
            table += &format!("<th>{name}</th>");
        }
        table += "<th>accuracy</th></tr>";
        for ((c, row), accuracy) in matrix.iter().enumerate().zip(Self::per_class(matrix)) {
            let total = row.iter().sum::<usize>().max(1) as f64;
            table += &format!("<tr><th>{}</th>", self.classes[c]);
            for (p, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let colour = match p == c {
                    true => format!("rgba(0,128,0,{share:.2})"),
                    false => format!("rgba(200,0,0,{:.2})", (4.0 * share).min(1.0)),
                };
                table += &format!("<td style=\"background:{colour}\">{count}</td>");
            }
            let accuracy = accuracy.map_or("-".to_string(), |a| format!("{a:.2}%"));
            table += &format!("<td>{accuracy}</td></tr>");
        }
        table + "</table>"
    }
}

/// A dataset item (channel planes of `kind`'s side) as an image.
fn item_image(item: &ImageItem, kind: DatasetKind) -> image::DynamicImage {
    let side = kind.image_side() as u32;
    let plane = (side * side) as usize;
    match kind.channels() {
        1 => image::GrayImage::from_fn(side, side, |x, y| {
            image::Luma([item.pixels[(y * side + x) as usize]])
        })
        .into(),
        _ => image::RgbImage::from_fn(side, side, |x, y| {
            let at = (y * side + x) as usize;
            image::Rgb([0, 1, 2].map(|c| item.pixels[c * plane + at]))
        })
        .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evaluated(confusion: Vec<Vec<usize>>, per_pass: Vec<f64>) -> Evaluated {
        Evaluated {
            images: confusion.iter().flatten().sum(),
            passes: per_pass.len(),
            accuracy_one_pass: per_pass[0],
            accuracy: 0.0,
            accuracy_per_pass: per_pass,
            classes: vec!["a".into(), "b".into()],
            confusion_one_pass: confusion.clone(),
            confusion,
            worst: Vec::new(),
        }
    }

    #[test]
    fn per_class_accuracy_and_the_spread_of_the_passes_are_worked_out_right() {
        let e = evaluated(vec![vec![3, 1], vec![0, 0]], vec![90.0, 92.0, 94.0]);
        assert_eq!(Evaluated::per_class(&e.confusion), vec![Some(75.0), None]);
        let [mean, deviation] = e.pass_spread().unwrap();
        assert!((mean - 92.0).abs() < 1e-12 && (deviation - 2.0).abs() < 1e-12);
        let table = e.table();
        assert!(table.contains("75.00%") && table.contains(" -"), "{table}");
        assert!(e.spread_note().unwrap().contains("92.00% +- 2.00%"));
        assert!(evaluated(vec![vec![1]], vec![50.0]).pass_spread().is_none());
        // A LeNet's passes are all the same: no spread to speak of.
        let same = evaluated(vec![vec![1]], vec![50.0, 50.0]);
        assert!(same.pass_spread().is_none() && same.spread_note().is_none());
    }
}
