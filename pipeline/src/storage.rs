//! Checkpoints in storage. On the simulated network a checkpoint-restart run keeps each worker's
//! checkpoints in its memory and charges their storage time to its clock; on real nodes a worker also
//! writes them to files, so that the successor of a killed worker can read its predecessor's back
//! ([`Replacement`](crate::Replacement)). A file holds one [`StoredState`]; each worker keeps its last
//! two, written atomically (a file is complete or absent, never half written).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use transport::{Codec, TensorBytes};

use crate::error::{Error, Result};

/// A stage's state as of the start of a step, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredState {
    /// The step the state was taken before.
    pub step: u64,
    /// The state as wire tensors: weights under stage-local names, optimizer moments and outer state
    /// behind their prefixes.
    pub tensors: Vec<(String, TensorBytes)>,
}

/// One worker's checkpoint files in a folder: `worker-<index>-step-<step>.ckpt`.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    worker: usize,
}

/// How many checkpoints a worker keeps in storage: the last and the one before, in case another
/// worker has not taken the last yet.
const KEPT: usize = 2;

impl CheckpointStore {
    /// The checkpoints of worker `worker` in `dir` (created when the first is written).
    pub fn new(dir: impl Into<PathBuf>, worker: usize) -> Self {
        Self { dir: dir.into(), worker }
    }

    fn path(&self, step: u64) -> PathBuf {
        self.dir.join(format!("worker-{}-step-{step}.ckpt", self.worker))
    }

    fn codec() -> Result<Codec> {
        Ok(Codec::new(transport::codec::MAX_FRAME_CEILING)?)
    }

    fn io(path: &Path, e: std::io::Error) -> Error {
        Error::config("checkpoint", format!("{}: {e}", path.display()))
    }

    /// Writes `state` and removes this worker's checkpoints older than the last two (`KEPT`).
    pub fn write(&self, state: &StoredState) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Self::io(&self.dir, e))?;
        let path = self.path(state.step);
        let bytes = Self::codec()?.encode(state)?;
        transport::fsutil::write_atomic(&path, &bytes, false).map_err(|e| Self::io(&path, e))?;
        let steps = self.steps()?;
        for &old in steps.iter().rev().skip(KEPT) {
            let old = self.path(old);
            std::fs::remove_file(&old).map_err(|e| Self::io(&old, e))?;
        }
        Ok(())
    }

    /// The steps of this worker's checkpoints in storage, in increasing order (none if the folder does
    /// not exist).
    pub fn steps(&self) -> Result<Vec<u64>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Self::io(&self.dir, e)),
        };
        let prefix = format!("worker-{}-step-", self.worker);
        let mut steps: Vec<u64> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_prefix(&prefix)?.strip_suffix(".ckpt")?.parse().ok())
            .collect();
        steps.sort_unstable();
        Ok(steps)
    }

    /// Reads the checkpoint of `step`; a file that is not one, or one of another step, is an error that
    /// names it.
    pub fn read(&self, step: u64) -> Result<StoredState> {
        let path = self.path(step);
        let bytes = transport::fsutil::read_bounded(&path, transport::codec::MAX_FRAME_CEILING as u64)
            .map_err(|e| Self::io(&path, e))?;
        let state: StoredState = Self::codec()?
            .decode(&bytes.into())
            .map_err(|e| Error::config("checkpoint", format!("{}: not a checkpoint ({e})", path.display())))?;
        if state.step != step {
            return Err(Error::config(
                "checkpoint",
                format!("{} holds the state before step {}, not {step}", path.display(), state.step),
            ));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> Result<StoredState> {
        Ok(StoredState {
            step,
            tensors: vec![("blocks.0.w".into(), TensorBytes::from_f32(vec![2], &[1.0, step as f32])?)],
        })
    }

    #[test]
    fn the_last_two_checkpoints_are_kept_and_read_back() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::config("test", e.to_string()))?;
        let (store, other) =
            (CheckpointStore::new(dir.path().join("ckpt"), 3), CheckpointStore::new(dir.path().join("ckpt"), 4));
        assert!(store.steps()?.is_empty(), "no folder yet: no checkpoints");
        for step in [0, 5, 10] {
            store.write(&state(step)?)?;
        }
        other.write(&state(7)?)?;
        assert_eq!(store.steps()?, [5, 10]);
        assert_eq!(other.steps()?, [7]);
        assert_eq!(store.read(10)?, state(10)?);
        assert!(store.read(0).is_err(), "removed");
        // A file that is not a checkpoint, or not of its step, is named.
        let io = |e: std::io::Error| Error::config("test", e.to_string());
        let ckpt = dir.path().join("ckpt");
        std::fs::write(ckpt.join("worker-3-step-10.ckpt"), b"garbage").map_err(io)?;
        let err = store.read(10).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("worker-3-step-10.ckpt: not a checkpoint"), "{err}");
        std::fs::copy(ckpt.join("worker-3-step-5.ckpt"), ckpt.join("worker-3-step-6.ckpt")).map_err(io)?;
        let err = store.read(6).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("before step 5, not 6"), "{err}");
        Ok(())
    }
}
