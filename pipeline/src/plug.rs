//! The plug points protocols fill: which replica of the next stage a micro-batch visits ([`Router`]) and
//! what happens when a worker fails ([`Recovery`]); how replicas agree is in [`crate::sync`]. The
//! defaults are the baselines every protocol is measured against: a fixed path, and restarting from
//! checkpoints.

/// Chooses the replica of the next stage for each micro-batch.
pub trait Router: Send + Sync + std::fmt::Debug {
    /// The replica of stage `stage + 1` that receives `micro` of `step` from replica `replica` of `stage`.
    fn next_replica(&self, step: u64, micro: u32, stage: usize, replica: usize, replicas: usize) -> usize;
}

/// The baseline router: a micro-batch stays on its replica's row (`r → r`).
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedRouter;

impl Router for FixedRouter {
    fn next_replica(&self, _step: u64, _micro: u32, _stage: usize, replica: usize, _replicas: usize) -> usize {
        replica
    }
}

/// What the swarm does when a worker fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Recovery {
    /// The baseline: every `every` steps each worker writes a checkpoint of its stage (weights and
    /// optimizer state) to storage at `bytes_per_s`; when any worker fails, every worker restores its
    /// last checkpoint (reading it back at the same speed) and the steps since are trained again.
    CheckpointRestart {
        /// Steps between checkpoints.
        every: u64,
        /// Storage bandwidth in bytes per second (write and read).
        bytes_per_s: f64,
    },
}

impl Default for Recovery {
    fn default() -> Self {
        Self::CheckpointRestart { every: 50, bytes_per_s: 500e6 }
    }
}

/// When workers fail: `(step, worker index)` pairs. Each failure happens once, at the start of its step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailurePlan {
    /// The failures, in any order.
    pub failures: Vec<(u64, usize)>,
}
