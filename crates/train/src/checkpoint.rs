//! Checkpoints that survive a kill and a damaged disk: each file is written to a temporary
//! name, synced, then renamed; a run resumes from the newest epoch whose three files all exist
//! and pass [`check_resumable`], falling back past damaged ones ([`newest_valid`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use burn::{
    lr_scheduler::LrSchedulerRecord,
    optim::OptimizerRecord,
    tensor::Bytes,
    train::checkpoint::{Checkpoint, Checkpointer, CheckpointerError},
};
use models::Network;

use crate::{files::replace, weights};

/// The parts of a checkpoint, as Burn's Learner saves them.
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

/// The newest epochs whose checkpoints a run keeps: the one a resumed run continues from, and
/// the one before in case that one is damaged.
pub const KEPT: usize = 2;

/// A Burn checkpointer writing `<dir>/<name>-<epoch>.bpk` atomically.
pub struct AtomicCheckpointer {
    directory: PathBuf,
    name: &'static str,
}

impl AtomicCheckpointer {
    /// The three checkpointers (model, optimiser, scheduler) for a run directory.
    pub fn for_run(run: &Path) -> [Self; 3] {
        PARTS.map(|name| Self {
            directory: run.join("checkpoint"),
            name,
        })
    }

    fn path(&self, epoch: usize) -> PathBuf {
        self.directory.join(format!("{}-{epoch}.bpk", self.name))
    }
}

impl<R: Checkpoint> Checkpointer<R> for AtomicCheckpointer {
    /// Burn stops the run when this fails; the error names the file and the system's reason
    /// (what is left of the epoch is removed by [`remove_incomplete`] once the run has stopped).
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let path = self.path(epoch);
        // An epoch cut short by a loader's panic is not a finished epoch.
        if let Some(panic) = crate::panics::loader_panic_during(epoch) {
            return Err(CheckpointerError::Unknown(format!(
                "{} not written: a data-loader thread panicked: {panic}",
                path.display()
            )));
        }
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        let written =
            std::fs::create_dir_all(&self.directory).and_then(|()| replace(&path, &bytes));
        written.map_err(|e| {
            CheckpointerError::Unknown(format!("cannot write {}: {e}", path.display()))
        })
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        let bytes = std::fs::read(self.path(epoch)).map_err(CheckpointerError::IOError)?;
        R::checkpoint_from_bytes(Bytes::from_bytes_vec(bytes)).map_err(CheckpointerError::Record)
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        match std::fs::remove_file(self.path(epoch)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(CheckpointerError::IOError(e))
            }
            _ => Ok(()),
        }
    }
}

/// The model record of `run`'s checkpoint at `epoch` (Burn's record format).
pub fn model_checkpoint(run: &Path, epoch: usize) -> PathBuf {
    run.join("checkpoint").join(format!("model-{epoch}.bpk"))
}

/// The epochs of `run` with a complete checkpoint (model, optimiser and scheduler), newest
/// first.
pub fn complete_epochs(run: &Path) -> Vec<usize> {
    let dir = run.join("checkpoint");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut epochs: Vec<usize> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|name| {
            let epoch = name.strip_prefix("model-")?.strip_suffix(".bpk")?;
            epoch.parse::<usize>().ok()
        })
        .filter(|epoch| {
            PARTS
                .iter()
                .all(|p| dir.join(format!("{p}-{epoch}.bpk")).is_file())
        })
        .collect();
    epochs.sort_unstable_by(|a, b| b.cmp(a));
    epochs
}

/// The newest epoch of `run` with a complete checkpoint (model, optimiser and scheduler).
pub fn last_complete(run: &Path) -> Option<usize> {
    complete_epochs(run).first().copied()
}

/// Removes what a stopped run left of epochs it did not finish saving: their parts without the
/// others (Burn saves the three on separate threads) and temporary files.
pub fn remove_incomplete(run: &Path) {
    let complete = complete_epochs(run);
    remove_parts(run, |epoch| !complete.contains(&epoch));
}

/// Removes every checkpoint but the [`KEPT`] newest complete ones, once a run has trained: the
/// learner deletes the epoch [`KEPT`] before each one it saves, so an epoch it had not yet
/// deleted when a process was killed would stay for good.
pub fn remove_stale(run: &Path) {
    let kept: Vec<usize> = complete_epochs(run).into_iter().take(KEPT).collect();
    remove_parts(run, |epoch| !kept.contains(&epoch));
}

/// Removes the checkpoint files of `run` whose epoch `remove` picks, and every temporary one.
fn remove_parts(run: &Path, remove: impl Fn(usize) -> bool) {
    let dir = run.join("checkpoint");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        let epoch = PARTS.iter().find_map(|part| {
            let rest = name.strip_prefix(part)?.strip_prefix('-')?;
            rest.strip_suffix(".bpk")
                .or(rest.strip_suffix(".bpk.tmp"))?
                .parse::<usize>()
                .ok()
        });
        if epoch.is_some_and(|epoch| name.ends_with(".tmp") || remove(epoch)) {
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
}

/// Checks, before Burn's learner loads it (and panics on what it cannot read), that the
/// checkpoint of `run` at `epoch` restores into `network`: the model record holds exactly the
/// network's tensors, and the optimiser and scheduler records decode.
pub fn check_resumable(run: &Path, epoch: usize, network: &Network) -> Result<()> {
    weights::load(network.clone(), &model_checkpoint(run, epoch))?;
    let part = |name: &str| run.join("checkpoint").join(format!("{name}-{epoch}.bpk"));
    let read = |path: &Path| -> Result<Bytes> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Bytes::from_bytes_vec(bytes))
    };
    let optim = part("optim");
    OptimizerRecord::from_bytes(read(&optim)?)
        .map_err(|e| anyhow!("{}: not a readable optimiser record: {e}", optim.display()))?;
    let scheduler = part("scheduler");
    LrSchedulerRecord::from_bytes(read(&scheduler)?).map_err(|e| {
        anyhow!(
            "{}: not a readable scheduler record: {e}",
            scheduler.display()
        )
    })?;
    Ok(())
}

/// The newest complete checkpoint of `run` that `check` accepts, with what `check` returned.
/// Each newer one it rejects as damaged is reported on stderr with the reason; when it rejects
/// them all, the error lists them and says what to do. A [`weights::Mismatch`] (a sound
/// checkpoint of another network) is returned as it is: no older checkpoint would fit either.
pub fn newest_valid<T>(
    run: &Path,
    mut check: impl FnMut(usize) -> Result<T>,
) -> Result<(usize, T)> {
    let dir = run.join("checkpoint");
    let mut rejected = Vec::new();
    for epoch in complete_epochs(run) {
        match check(epoch) {
            Ok(value) => {
                if !rejected.is_empty() {
                    say_err!("warning: using the checkpoint of epoch {epoch} instead");
                }
                return Ok((epoch, value));
            }
            // A sound checkpoint of another network: the older ones are of the same run.
            Err(e) if e.is::<weights::Mismatch>() => return Err(e),
            Err(e) => {
                say_err!(
                    "warning: the checkpoint of epoch {epoch} in {} is damaged: {e:#}",
                    dir.display()
                );
                rejected.push(format!("epoch {epoch}: {e:#}"));
            }
        }
    }
    if rejected.is_empty() {
        bail!("no complete checkpoint in {}", dir.display());
    }
    bail!(
        "no usable checkpoint in {}: {}. Delete the damaged files (or the folder) and train \
         again, or train into a new --output",
        dir.display(),
        rejected.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_complete_ignores_partial_checkpoints() {
        assert_eq!(last_complete(run_holding(&[]).path()), None);
        let others = ["model-2.bpk", "optim-2.bpk.tmp"].map(String::from);
        let run = run_holding(&[parts(1), others.to_vec()].concat());
        assert_eq!(last_complete(run.path()), Some(1));
    }

    /// A run folder whose checkpoint folder holds `names` (empty files).
    fn run_holding(names: &[String]) -> tempfile::TempDir {
        let run = tempfile::tempdir().unwrap();
        let dir = run.path().join("checkpoint");
        std::fs::create_dir_all(&dir).unwrap();
        for name in names {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        run
    }

    /// The names left in the checkpoint folder of `run`, sorted.
    fn left_in(run: &Path) -> Vec<String> {
        let mut left: Vec<String> = std::fs::read_dir(run.join("checkpoint"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        left
    }

    /// The three parts of `epoch`'s checkpoint.
    fn parts(epoch: usize) -> Vec<String> {
        PARTS.map(|part| format!("{part}-{epoch}.bpk")).to_vec()
    }

    #[test]
    fn a_stopped_runs_partial_epochs_and_temporaries_are_removed() {
        let others = ["model-2.bpk", "optim-2.bpk.tmp", "notes.txt"].map(String::from);
        let run = run_holding(&[parts(1), others.to_vec()].concat());
        remove_incomplete(run.path());
        assert_eq!(
            left_in(run.path()),
            ["model-1.bpk", "notes.txt", "optim-1.bpk", "scheduler-1.bpk"]
        );
    }

    #[test]
    fn a_trained_run_keeps_its_newest_epochs_only() {
        // Epoch 2 was left by a killed process; 5 is partial.
        let others = ["model-5.bpk", "optim-4.bpk.tmp", "notes.txt"].map(String::from);
        let run = run_holding(&[parts(2), parts(3), parts(4), others.to_vec()].concat());
        remove_stale(run.path());
        let mut kept = [parts(3), parts(4), vec!["notes.txt".into()]].concat();
        kept.sort();
        assert_eq!(left_in(run.path()), kept);
    }
}
