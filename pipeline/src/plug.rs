//! The plug points protocols fill: the path each micro-batch takes through the grid ([`Router`]) and
//! what happens when a worker fails ([`Recovery`]); how replicas agree is in [`crate::sync`], how a lost
//! stage is rebuilt from others in [`crate::rebuild`]. The defaults are the baselines every protocol is
//! measured against: a fixed path through one row, and restarting from checkpoints.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::rebuild::StageRebuild;

/// One hop of a micro-batch's path: `(stage, replica)`.
pub type Hop = (usize, usize);

/// Chooses the path of every micro-batch through the grid.
pub trait Router: Send + Sync + std::fmt::Debug {
    /// The hops of micro-batch `micro` of `step` whose data replica `origin` of stage 0 holds. A path
    /// starts at `(0, origin)`, ends at the last stage (which computes the loss), and visits no stage
    /// twice; in between, stages may come in any order or be skipped. Its gradient flows back along the
    /// same hops. Every worker asks for every path, so the answer must depend only on the arguments.
    fn path(&self, step: u64, micro: u32, origin: usize, stages: usize, replicas: usize) -> Vec<Hop>;
}

/// The baseline router: a micro-batch stays on its replica's row, stage after stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedRouter;

impl Router for FixedRouter {
    fn path(&self, _step: u64, _micro: u32, origin: usize, stages: usize, _replicas: usize) -> Vec<Hop> {
        (0..stages).map(|s| (s, origin)).collect()
    }
}

/// Checks that `path` obeys the rules of [`Router::path`].
pub fn check_path(path: &[Hop], origin: usize, stages: usize, replicas: usize) -> Result<()> {
    let bad = |why: String| Err(Error::config("router", format!("path {path:?}: {why}")));
    if path.first().is_some_and(|h| h.1 != origin) {
        return bad(format!("must start at stage 0 of replica {origin}"));
    }
    if let Some(&(s, r)) = path.iter().find(|h| h.1 >= replicas) {
        return bad(format!("({s}, {r}) is outside the {stages} x {replicas} grid"));
    }
    match stage_order_problem(path.iter().map(|h| h.0), stages) {
        Some(why) => bad(why),
        None => Ok(()),
    }
}

/// What is wrong, if anything, with visiting `order` of `stages` stages: it must start at stage 0 (the
/// embedding), end at the last (the head), stay in range and visit no stage twice. Paths through the grid
/// and dropped-stage inference both follow this rule.
pub(crate) fn stage_order_problem(order: impl IntoIterator<Item = usize>, stages: usize) -> Option<String> {
    let order: Vec<usize> = order.into_iter().collect();
    if stages == 0 {
        return Some("there are no stages".into());
    }
    if order.first() != Some(&0) {
        return Some("must start at stage 0".into());
    }
    if order.last() != Some(&(stages - 1)) {
        return Some(format!("must end at the last stage ({})", stages - 1));
    }
    let mut seen = vec![false; stages];
    for &s in &order {
        if s >= stages {
            return Some(format!("stage {s} is outside the {stages} stages"));
        }
        if std::mem::replace(&mut seen[s], true) {
            return Some(format!("visits stage {s} twice"));
        }
    }
    None
}

/// What a stage whose every replica failed falls back to when the recovery protocol cannot rebuild it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fallback {
    /// The replacement starts from freshly initialised weights; the rest of the swarm carries on.
    ReInit,
    /// Every worker restores its last checkpoint (written every `every` steps at `bytes_per_s`).
    Checkpoint {
        /// Steps between checkpoints.
        every: u64,
        /// Storage bandwidth in bytes per second (write and read).
        bytes_per_s: f64,
    },
}

/// What the swarm does when a worker fails. A failed worker really loses its weights and optimizer
/// state; whatever brings them back travels as messages (or storage reads) whose bytes and time count.
#[derive(Debug, Clone)]
pub enum Recovery {
    /// The baseline: every `every` steps each worker writes a checkpoint of its stage (weights, optimizer
    /// and outer state) to storage at `bytes_per_s`; when any worker fails, every worker restores its last
    /// checkpoint (reading it back at the same speed) and the steps since are trained again.
    CheckpointRestart {
        /// Steps between checkpoints.
        every: u64,
        /// Storage bandwidth in bytes per second (write and read).
        bytes_per_s: f64,
    },
    /// No rollback: a failed worker is rebuilt from a surviving replica of its stage if there is one,
    /// else by `protocol` from other stages' weights (CheckFree and its variants), else by `fallback`.
    Rebuild {
        /// How a stage is rebuilt from other stages.
        protocol: Arc<dyn StageRebuild>,
        /// What to do when it cannot be.
        fallback: Fallback,
    },
    /// Redundant computation (Bamboo-style): every worker also runs its successor stage's forward pass
    /// (that compute is charged) and keeps a replica of the successor's weights and optimizer moments,
    /// refreshed by a message after every step. A failed worker gets its exact state back from its
    /// predecessor's replica; if the predecessor failed too, it falls back to fresh weights.
    Redundant,
}

impl Default for Recovery {
    fn default() -> Self {
        Self::CheckpointRestart { every: 50, bytes_per_s: 500e6 }
    }
}

impl Recovery {
    /// The checkpoint schedule this recovery keeps, if any: `(every, bytes_per_s)`.
    pub fn checkpoints(&self) -> Option<(u64, f64)> {
        match self {
            Self::CheckpointRestart { every, bytes_per_s }
            | Self::Rebuild { fallback: Fallback::Checkpoint { every, bytes_per_s }, .. } => {
                Some((*every, *bytes_per_s))
            }
            _ => None,
        }
    }

    /// A short name for logs and reports.
    pub fn name(&self) -> String {
        match self {
            Self::CheckpointRestart { every, .. } => format!("checkpoint every {every} steps"),
            Self::Rebuild { protocol, fallback } => match fallback {
                Fallback::ReInit => format!("{} (else re-init)", protocol.name()),
                Fallback::Checkpoint { every, .. } => format!("{} (else checkpoint every {every})", protocol.name()),
            },
            Self::Redundant => "redundant computation".into(),
        }
    }
}

/// When workers fail: `(step, worker index)` pairs. Each failure happens once, at the start of its step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailurePlan {
    /// The failures, in any order.
    pub failures: Vec<(u64, usize)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked() {
        assert!(check_path(&FixedRouter.path(0, 0, 1, 3, 2), 1, 3, 2).is_ok());
        assert!(check_path(&[(0, 0), (2, 1), (1, 0), (3, 0)], 0, 4, 2).is_ok(), "reordered, other replicas");
        assert!(check_path(&[(0, 0), (3, 0)], 0, 4, 1).is_ok(), "skipping is allowed");
        assert!(check_path(&[(1, 0), (3, 0)], 0, 4, 1).is_err());
        assert!(check_path(&[(0, 0), (1, 0)], 0, 4, 1).is_err());
        assert!(check_path(&[(0, 0), (1, 0), (1, 0), (3, 0)], 0, 4, 1).is_err());
        assert!(check_path(&[(0, 0), (1, 5), (3, 0)], 0, 4, 2).is_err());
    }
}
