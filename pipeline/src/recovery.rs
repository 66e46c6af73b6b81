//! What the swarm does when workers fail: the [`Recovery`] plug point, sans-IO like
//! [`OuterSync`](crate::OuterSync). A strategy says where each failed worker's state comes back from
//! ([`Recovery::source`]), which copies of state workers keep while training ([`Recovery::copies`]),
//! whether checkpoints are written ([`Recovery::checkpoints`]), what extra compute it costs, and how a
//! stage is rebuilt from donors' weights. The worker runtime only carries it out: it moves the bytes (so
//! their size and time count), installs what arrives and records the events.
//!
//! The baselines live here — [`CheckpointRestart`] and [`Redundant`] computation — with [`Rebuild`],
//! which turns a [`StageRebuild`] protocol (CheckFree and its variants) into a strategy.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{Error, Result};
use crate::plug::Hop;
use crate::rebuild::{Donor, DonorWeights, StageRebuild};

/// Where a failed worker's state comes back from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A surviving replica of its stage (that replica's index): its weights and optimizer moments.
    Replica(usize),
    /// The rebuild protocol's donors, in its replica row; [`Recovery::rebuild`] combines them.
    Donors(Vec<Donor>),
    /// The copy of its state (weights and optimizer moments) that the worker at this hop keeps (see
    /// [`KeptCopy`]).
    CopyAt(Hop),
    /// Freshly initialised weights.
    ReInit,
    /// Every worker restores its last checkpoint and the steps since are trained again.
    Checkpoint,
}

/// A copy of one stage's state that a worker of another stage (same replica row) keeps, refreshed by a
/// message from the stage after its step `t` whenever `(t + 1)` is a multiple of `every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptCopy {
    /// The stage whose state is copied.
    pub of: usize,
    /// The stage that keeps the copy.
    pub at: usize,
    /// Steps between refreshes.
    pub every: u64,
    /// Whether the optimizer moments are copied too (else the weights only).
    pub moments: bool,
    /// Whether the keeper waits for each refresh before its next step; otherwise it picks refreshes up
    /// as they arrive, and waits only when the copy is needed.
    pub wait: bool,
}

/// The shape of the grid a strategy is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Pipeline stages.
    pub stages: usize,
    /// Replicas per stage.
    pub replicas: usize,
    /// Whether the first and last stages hold only the embedding and the head.
    pub edge_stages: bool,
    /// Transformer blocks per middle stage, if they all hold the same number.
    pub blocks: Option<usize>,
}

/// How a swarm recovers from failed workers: the plug point of checkpoint-restart, redundant
/// computation, CheckFree and its variants.
pub trait Recovery: Send + Sync + Debug {
    /// A short name for logs and reports.
    fn name(&self) -> String;

    /// Checks the strategy against the grid.
    fn validate(&self, _layout: &Layout) -> Result<()> {
        Ok(())
    }

    /// The checkpoint schedule this strategy keeps, if any: steps between checkpoints and the storage
    /// bandwidth in bytes per second (write and read).
    fn checkpoints(&self) -> Option<(u64, f64)> {
        None
    }

    /// Where the failed worker `failed` (`(stage, replica)`) gets its state, given every worker failing at
    /// the same step (`failed` among them). Every worker asks, so the answer must depend only on the
    /// arguments.
    fn source(&self, failed: Hop, all_failed: &[Hop], stages: usize, replicas: usize) -> Source;

    /// The copies of state workers keep while training.
    fn copies(&self, _stages: usize) -> Vec<KeptCopy> {
        Vec::new()
    }

    /// The stage whose forward pass a worker of `stage` also runs for every micro-batch (its compute is
    /// charged), if any.
    fn shadow_forward(&self, _stage: usize, _stages: usize) -> Option<usize> {
        None
    }

    /// The rebuilt weights of stage `failed` from [`Source::Donors`]' weights (stage-local names, the
    /// same names and shapes as `fresh`, the stage's freshly initialised weights).
    fn rebuild(
        &self,
        failed: usize,
        _donors: &[DonorWeights],
        _fresh: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>> {
        Err(Error::config("recovery", format!("{} does not rebuild stages from donors (stage {failed})", self.name())))
    }

    /// Factor on a rebuilt stage's learning rate from then on.
    fn lr_scale(&self) -> f32 {
        1.0
    }
}

/// The baseline: every `every` steps each worker writes a checkpoint of its stage (weights, optimizer and
/// outer state) to storage at `bytes_per_s`; when any worker fails, every worker restores its last
/// checkpoint (reading it back at the same speed) and the steps since are trained again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckpointRestart {
    /// Steps between checkpoints.
    pub every: u64,
    /// Storage bandwidth in bytes per second (write and read).
    pub bytes_per_s: f64,
}

impl Default for CheckpointRestart {
    fn default() -> Self {
        Self { every: 50, bytes_per_s: 500e6 }
    }
}

/// Checks a checkpoint schedule.
fn check_schedule(every: u64, bytes_per_s: f64) -> Result<()> {
    if every == 0 || !(bytes_per_s.is_finite() && bytes_per_s > 0.0) {
        return Err(Error::config(
            "pipeline.recovery",
            "checkpoint interval must be at least 1 step and storage bandwidth positive",
        ));
    }
    Ok(())
}

impl Recovery for CheckpointRestart {
    fn name(&self) -> String {
        format!("checkpoint every {} steps", self.every)
    }

    fn validate(&self, _layout: &Layout) -> Result<()> {
        check_schedule(self.every, self.bytes_per_s)
    }

    fn checkpoints(&self) -> Option<(u64, f64)> {
        Some((self.every, self.bytes_per_s))
    }

    fn source(&self, _failed: Hop, _all_failed: &[Hop], _stages: usize, _replicas: usize) -> Source {
        Source::Checkpoint
    }
}

/// Redundant computation (Bamboo-style): every worker also runs its successor stage's forward pass (that
/// compute is charged) and keeps a copy of the successor's weights and optimizer moments, refreshed by a
/// message after every step. A failed worker gets its exact state back from its predecessor's copy; if
/// the predecessor failed too, it starts from fresh weights.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Redundant;

impl Recovery for Redundant {
    fn name(&self) -> String {
        "redundant computation".into()
    }

    fn source(&self, (fs, fr): Hop, all_failed: &[Hop], stages: usize, _replicas: usize) -> Source {
        let pred = ((fs + stages - 1) % stages, fr);
        if stages > 1 && !all_failed.contains(&pred) { Source::CopyAt(pred) } else { Source::ReInit }
    }

    fn copies(&self, stages: usize) -> Vec<KeptCopy> {
        if stages < 2 {
            return Vec::new();
        }
        (0..stages)
            .map(|s| KeptCopy { of: s, at: (s + stages - 1) % stages, every: 1, moments: true, wait: false })
            .collect()
    }

    fn shadow_forward(&self, stage: usize, stages: usize) -> Option<usize> {
        (stages > 1).then_some((stage + 1) % stages)
    }
}

/// What a stage whose every replica failed falls back to when the rebuild protocol cannot rebuild it.
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

/// No rollback: a failed worker is rebuilt from a surviving replica of its stage if there is one, else by
/// `protocol` from other stages' weights (CheckFree and its variants), else by `fallback`.
#[derive(Debug, Clone)]
pub struct Rebuild {
    /// How a stage is rebuilt from other stages.
    pub protocol: Arc<dyn StageRebuild>,
    /// What to do when it cannot be.
    pub fallback: Fallback,
}

impl Recovery for Rebuild {
    fn name(&self) -> String {
        match self.fallback {
            Fallback::ReInit => format!("{} (else re-init)", self.protocol.name()),
            Fallback::Checkpoint { every, .. } => format!("{} (else checkpoint every {every})", self.protocol.name()),
        }
    }

    fn validate(&self, layout: &Layout) -> Result<()> {
        if let Fallback::Checkpoint { every, bytes_per_s } = self.fallback {
            check_schedule(every, bytes_per_s)?;
        }
        self.protocol.validate(layout.stages, layout.edge_stages, layout.blocks)
    }

    fn checkpoints(&self) -> Option<(u64, f64)> {
        match self.fallback {
            Fallback::Checkpoint { every, bytes_per_s } => Some((every, bytes_per_s)),
            Fallback::ReInit => None,
        }
    }

    fn source(&self, (fs, fr): Hop, all_failed: &[Hop], stages: usize, replicas: usize) -> Source {
        if let Some(q) = (0..replicas).find(|&q| !all_failed.contains(&(fs, q))) {
            return Source::Replica(q);
        }
        match self.protocol.donors(fs, stages) {
            Some(donors) if donors.iter().all(|d| !all_failed.contains(&(d.stage(), fr))) => Source::Donors(donors),
            _ => match self.fallback {
                Fallback::ReInit => Source::ReInit,
                Fallback::Checkpoint { .. } => Source::Checkpoint,
            },
        }
    }

    /// The embedding stage keeps its copy at stage 1, the head stage at stage S − 2 (CheckFree+).
    fn copies(&self, stages: usize) -> Vec<KeptCopy> {
        match self.protocol.edge_copies_every() {
            Some(every) if stages > 2 => [(0, 1), (stages - 1, stages - 2)]
                .into_iter()
                .map(|(of, at)| KeptCopy { of, at, every, moments: false, wait: true })
                .collect(),
            _ => Vec::new(),
        }
    }

    fn rebuild(
        &self,
        failed: usize,
        donors: &[DonorWeights],
        fresh: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>> {
        self.protocol.rebuild(failed, donors, fresh)
    }

    fn lr_scale(&self) -> f32 {
        self.protocol.lr_scale()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redundant_copies_go_to_the_predecessor_and_come_back_from_it() {
        let r = Redundant;
        assert_eq!(r.source((2, 1), &[(2, 1)], 4, 2), Source::CopyAt((1, 1)));
        assert_eq!(r.source((0, 0), &[(0, 0)], 4, 1), Source::CopyAt((3, 0)), "the ring wraps around");
        assert_eq!(r.source((2, 0), &[(2, 0), (1, 0)], 4, 1), Source::ReInit, "the keeper failed too");
        let copies = r.copies(3);
        assert_eq!(copies.len(), 3);
        assert!(copies.iter().all(|c| c.at == (c.of + 2) % 3 && c.moments && !c.wait));
        assert_eq!(r.shadow_forward(2, 3), Some(0));
        assert!(r.copies(1).is_empty() && r.shadow_forward(0, 1).is_none());
    }

    #[test]
    fn checkpoint_restart_always_rolls_back() {
        let c = CheckpointRestart::default();
        assert_eq!(c.source((1, 0), &[(1, 0)], 3, 2), Source::Checkpoint);
        assert_eq!(c.checkpoints(), Some((50, 500e6)));
        let layout = Layout { stages: 2, replicas: 1, edge_stages: false, blocks: Some(1) };
        assert!(CheckpointRestart { every: 0, ..c }.validate(&layout).is_err());
    }
}
