//! What the user sees while training: a progress bar on a terminal, one line per epoch
//! elsewhere (CI logs), and the per-epoch figures kept for the run summary; and the same for a
//! long phase outside an epoch ([`Phase`]: a test pass, an evaluation, timed steps).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::curves::{CurveWriter, EpochRecord};
use burn::train::{
    Interrupter,
    logger::{EvaluationProgressLogger, TrainingProgressLogger},
    metric::{MetricDefinition, MetricId, NumericEntry},
    renderer::{
        EvaluationName, MetricState, MetricsRenderer, MetricsRendererEvaluation,
        MetricsRendererTraining,
    },
};

/// A long phase outside an epoch (a test pass, an evaluation, a benchmark's steps, whose first
/// one on a GPU compiles and tunes kernels for minutes): a bar on a terminal, else a line when it
/// starts and one when it ends (logs), saying whether it was done or stopped short (an error,
/// a lost worker). Ends when dropped.
pub struct Phase {
    bar: Option<indicatif::ProgressBar>,
    name: String,
    started: Instant,
    done: std::cell::Cell<usize>,
    total: usize,
}

impl Phase {
    /// Starts `name`, `total` `unit` long.
    pub fn start(name: impl Into<String>, total: usize, unit: &str) -> Self {
        let name = name.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let template =
                format!("{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{elapsed_precise}}");
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_message(name.clone());
            // The clock moves while one step compiles kernels for minutes.
            bar.enable_steady_tick(Duration::from_millis(500));
            bar
        });
        if bar.is_none() {
            say_err!("{name}: {total} {unit}");
        }
        Self {
            bar,
            name,
            started: Instant::now(),
            done: 0.into(),
            total,
        }
    }

    /// `done` more units are done.
    pub fn advance(&self, done: usize) {
        self.done.set(self.done.get() + done);
        if let Some(bar) = &self.bar {
            bar.inc(done as u64);
        }
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        let (name, done, total) = (&self.name, self.done.get(), self.total);
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None if done >= total => say_err!("{name}: done in {seconds:.1} s"),
            None => say_err!("{name}: stopped after {seconds:.1} s, {done} of {total} done"),
        }
    }
}

#[derive(Default)]
struct Mean {
    sum: f64,
    count: f64,
    last: f64,
}

impl Mean {
    fn add(&mut self, entry: &NumericEntry) {
        let (value, count) = match *entry {
            NumericEntry::Value(v) => (v, 1.0),
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => (aggregated_value, count as f64),
            // The epoch's own aggregate, when the metric reports one, supersedes ours.
            // (`last` stays the last step's value: for the learning rate that is what matters.)
            NumericEntry::Final(v) => {
                self.sum = v;
                self.count = 1.0;
                return;
            }
        };
        self.sum += value * count;
        self.count += count;
        self.last = value;
    }

    fn mean(&self) -> f64 {
        if self.count > 0.0 {
            self.sum / self.count
        } else {
            f64::NAN
        }
    }
}

/// The training step at which the loss (which also turns NaN when a gradient is not finite: see
/// the networks' `TrainStep`) first was NaN or infinite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NonFinite {
    /// The epoch, from 1.
    pub epoch: usize,
    /// The optimiser step within the epoch, from 1.
    pub step: usize,
    /// The learning rate of the step (NaN where the run does not report it).
    pub learning_rate: f64,
}

/// Stops a run at the first non-finite training loss: the learner finishes the step it is in
/// and returns without checkpointing the epoch.
struct Guard {
    interrupter: Interrupter,
    /// Training items (micro-batches, one per device) per optimiser step.
    items_per_step: usize,
    /// Training items seen this epoch.
    items: usize,
    found: Arc<Mutex<Option<NonFinite>>>,
}

/// Burn renderer that records epochs into a shared list and shows progress.
pub struct EpochRenderer {
    names: HashMap<MetricId, String>,
    train: HashMap<String, Mean>,
    valid: HashMap<String, Mean>,
    epochs: Arc<Mutex<Vec<EpochRecord>>>,
    total_epochs: usize,
    epoch: usize,
    split: String,
    split_start: Instant,
    train_items: usize,
    train_seconds: f64,
    bar: Option<indicatif::ProgressBar>,
    interactive: bool,
    curves: CurveWriter,
    guard: Option<Guard>,
}

impl EpochRenderer {
    /// A renderer appending finished epochs to `epochs` and rewriting the run's curves.
    pub fn new(epochs: Arc<Mutex<Vec<EpochRecord>>>, curves: CurveWriter) -> Self {
        Self {
            names: HashMap::new(),
            train: HashMap::new(),
            valid: HashMap::new(),
            epochs,
            total_epochs: 0,
            epoch: 1,
            split: String::new(),
            split_start: Instant::now(),
            train_items: 0,
            train_seconds: 0.0,
            bar: None,
            interactive: std::io::stdout().is_terminal(),
            curves,
            guard: None,
        }
    }

    /// Stops the run through `interrupter` at the first training loss that is NaN or infinite,
    /// and puts where in `found`. A step is `items_per_step` training items (micro-batches on
    /// each device).
    pub fn stop_on_non_finite(
        mut self,
        interrupter: Interrupter,
        items_per_step: usize,
        found: Arc<Mutex<Option<NonFinite>>>,
    ) -> Self {
        self.guard = Some(Guard {
            interrupter,
            items_per_step: items_per_step.max(1),
            items: 0,
            found,
        });
        self
    }

    /// Counts a training item's loss and stops the run at the first non-finite one.
    fn check_loss(&mut self, state: &MetricState) {
        let (Some(guard), MetricState::Numeric(entry, Some(value))) = (&mut self.guard, state)
        else {
            return;
        };
        let loss = match *value {
            NumericEntry::Value(v) => v,
            NumericEntry::Aggregated {
                aggregated_value, ..
            } => aggregated_value,
            NumericEntry::Final(_) => return,
        };
        if self.names.get(&entry.metric_id).map(String::as_str) != Some("Loss") {
            return;
        }
        guard.items += 1;
        let mut found = crate::panics::lock(&guard.found);
        if !loss.is_finite() && found.is_none() {
            *found = Some(NonFinite {
                epoch: self.epoch,
                step: guard.items.div_ceil(guard.items_per_step),
                learning_rate: self.train.get("Learning Rate").map_or(f64::NAN, |m| m.last),
            });
            guard
                .interrupter
                .stop(Some("the training loss or a gradient is not finite"));
        }
    }

    fn record(
        map: &mut HashMap<String, Mean>,
        names: &HashMap<MetricId, String>,
        state: MetricState,
    ) {
        if let MetricState::Numeric(entry, Some(value)) = state {
            let name = names
                .get(&entry.metric_id)
                .cloned()
                .unwrap_or_else(|| format!("{:?}", entry.metric_id));
            map.entry(name).or_default().add(&value);
        }
    }

    fn finish_epoch(&mut self) {
        let mean =
            |map: &HashMap<String, Mean>, name: &str| map.get(name).map_or(f64::NAN, Mean::mean);
        let record = EpochRecord {
            epoch: self.epoch,
            train_loss: mean(&self.train, "Loss"),
            train_accuracy: mean(&self.train, "Accuracy"),
            valid_loss: mean(&self.valid, "Loss"),
            valid_accuracy: mean(&self.valid, "Accuracy"),
            learning_rate: self.train.get("Learning Rate").map_or(f64::NAN, |m| m.last),
            train_seconds: self.train_seconds,
            images_per_second: self.train_items as f64 / self.train_seconds.max(1e-9),
        };
        let line = format!(
            "epoch {}/{}  train loss {:.4} acc {:.2}%  valid loss {:.4} acc {:.2}%  lr {:.2e}  {:.1} s ({:.0} img/s)",
            record.epoch,
            self.total_epochs,
            record.train_loss,
            record.train_accuracy,
            record.valid_loss,
            record.valid_accuracy,
            record.learning_rate,
            record.train_seconds,
            record.images_per_second
        );
        match &self.bar {
            Some(bar) => bar.println(line),
            None => say!("{line}"),
        }
        let mut epochs = crate::panics::lock(&self.epochs);
        epochs.push(record);
        if let Err(e) = self.curves.write(&epochs) {
            say_err!("warning: training curves not written: {e:#}");
        }
        drop(epochs);
        self.train.clear();
        self.valid.clear();
        if let Some(guard) = &mut self.guard {
            guard.items = 0;
        }
    }
}

impl MetricsRendererTraining for EpochRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.check_loss(&state);
        Self::record(&mut self.train, &self.names, state);
    }

    fn update_valid(&mut self, state: MetricState) {
        Self::record(&mut self.valid, &self.names, state);
    }

    fn on_train_end(
        &mut self,
        _summary: Option<burn::train::LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl TrainingProgressLogger for EpochRenderer {
    fn start(
        &mut self,
        total_epochs: usize,
        starting_epoch: usize,
        _items: Option<usize>,
        _label: Option<&str>,
    ) {
        self.total_epochs = total_epochs;
        self.epoch = starting_epoch.max(1);
        if starting_epoch > 1 {
            say!("resuming at epoch {starting_epoch} of {total_epochs}");
        }
    }

    fn update_epoch(&mut self, epoch: usize) {
        crate::panics::epoch_ended(epoch);
        self.finish_epoch();
        self.epoch = epoch + 1;
    }

    fn start_split(&mut self, split: &str, total_items: usize) {
        self.split = split.to_string();
        self.split_start = Instant::now();
        if self.interactive {
            let bar = indicatif::ProgressBar::new(total_items as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>16} [{bar:30}] {pos}/{len} images {elapsed_precise} eta {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_message(format!(
                "epoch {}/{} {split}",
                self.epoch, self.total_epochs
            ));
            self.bar = Some(bar);
        }
    }

    fn update_split(&mut self, items_processed: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(items_processed as u64);
        }
        if self.split.eq_ignore_ascii_case("train") {
            self.train_items = items_processed;
        }
    }

    fn end_split(&mut self) {
        if self.split.eq_ignore_ascii_case("train") {
            self.train_seconds = self.split_start.elapsed().as_secs_f64();
        }
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn end(&mut self) {}

    fn log_event_training(&mut self, _event: String) {}
}

impl EvaluationProgressLogger for EpochRenderer {
    fn start_global_progress(&mut self, _total_tests: usize) {}
    fn start_test(&mut self, _name: &str, _total_items: usize) {}
    fn update_test_progress(&mut self, _items_processed: usize) {}
    fn end_test(&mut self) {}
    fn end_global_progress(&mut self) {}
    fn log_event_evaluation(&mut self, _event: String) {}
}

impl MetricsRendererEvaluation for EpochRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}
}

impl MetricsRenderer for EpochRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id, definition.name.to_string());
    }
}
