//! The plug points protocols fill: which replica of the next stage a micro-batch visits ([`Router`]),
//! and how the replicas of a stage agree ([`OuterSync`]). The defaults are the baselines every protocol
//! is measured against: a fixed path, and data-parallel gradient averaging every step.

/// Chooses the replica of the next stage for each micro-batch.
pub trait Router: Send + Sync {
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

/// How the replicas of a stage synchronise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OuterSync {
    /// Data parallelism: every step, the replicas of a stage average their gradients with a ring
    /// all-reduce (2·(R−1) messages of 1/R of the gradients per replica), then all take the same step.
    #[default]
    AllReduce,
    /// Data parallelism with a binary-tree all-reduce: full gradients are summed up the tree to
    /// replica 0 (⌈log2 R⌉ levels) and the sum is sent back down. Fewer rounds than the ring, but each
    /// message carries the whole gradient and the root's links carry the most.
    TreeAllReduce,
    /// No synchronisation: replicas train independently (the lower bound for communication).
    None,
}
