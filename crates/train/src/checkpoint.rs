//! Checkpoints that survive a kill: each file is written to a temporary name, synced, then
//! renamed, and a run resumes from the newest epoch whose three files all exist.

use std::path::{Path, PathBuf};

use burn::{
    tensor::Bytes,
    train::checkpoint::{Checkpoint, Checkpointer, CheckpointerError},
};

use crate::files::replace;

/// The parts of a checkpoint, as Burn's Learner saves them.
const PARTS: [&str; 3] = ["model", "optim", "scheduler"];

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
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        std::fs::create_dir_all(&self.directory).map_err(CheckpointerError::IOError)?;
        replace(&self.path(epoch), &bytes).map_err(CheckpointerError::IOError)
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

/// The newest epoch of `run` with a complete checkpoint (model, optimiser and scheduler).
pub fn last_complete(run: &Path) -> Option<usize> {
    let dir = run.join("checkpoint");
    let entries = std::fs::read_dir(&dir).ok()?;
    entries
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
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_complete_ignores_partial_checkpoints() {
        let run = tempfile::tempdir().unwrap();
        let dir = run.path().join("checkpoint");
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(last_complete(run.path()), None);
        for part in PARTS {
            std::fs::write(dir.join(format!("{part}-1.bpk")), b"x").unwrap();
        }
        std::fs::write(dir.join("model-2.bpk"), b"x").unwrap();
        std::fs::write(dir.join("optim-2.bpk.tmp"), b"x").unwrap();
        assert_eq!(last_complete(run.path()), Some(1));
    }
}
