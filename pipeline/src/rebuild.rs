//! Rebuilding a lost stage from other stages' weights, without checkpoints: the plug point of CheckFree
//! and its variants. Sans-IO like [`crate::sync`]: the protocol names the donors and combines their
//! weights; the runtime sends them (their bytes and time count) and installs the result.
//!
//! Weights travel under stage-local names ([`models::StageSpec::local_name`]): `blocks.<k>.<w>` for the
//! `k`-th transformer block of a stage, so neighbouring stages can be matched block by block; `embed`,
//! `final_norm` and `head` for the edge stages.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::error::Result;

/// Where one input of a rebuild comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Donor {
    /// The current weights of this stage (same replica row as the failed worker).
    Stage(usize),
    /// The copy of the failed stage's weights that this stage keeps (see
    /// [`StageRebuild::edge_copies_every`]).
    CopyHeldBy(usize),
}

impl Donor {
    /// The stage that sends.
    pub fn stage(self) -> usize {
        match self {
            Self::Stage(s) | Self::CopyHeldBy(s) => s,
        }
    }
}

/// One donor's contribution, as received.
#[derive(Debug, Clone)]
pub struct DonorWeights {
    /// Which donor.
    pub donor: Donor,
    /// The donor stage's gradient norm after clipping, at its last step.
    pub grad_norm: f32,
    /// Its weights, by stage-local name.
    pub weights: BTreeMap<String, Tensor>,
}

/// How a stage whose every replica failed is rebuilt from other stages.
pub trait StageRebuild: Send + Sync + std::fmt::Debug {
    /// A short name for logs and reports.
    fn name(&self) -> String;

    /// Checks the protocol against the grid: `stages` stages, of which the first and last hold only
    /// the embedding and the head when `edge_stages`; `blocks` transformer blocks per middle stage if
    /// they all hold the same number (`None` if they differ).
    fn validate(&self, stages: usize, edge_stages: bool, blocks: Option<usize>) -> Result<()>;

    /// The donors the replacement of stage `failed` needs, in the order [`rebuild`](Self::rebuild)
    /// receives them; `None` if this protocol cannot rebuild that stage.
    fn donors(&self, failed: usize, stages: usize) -> Option<Vec<Donor>>;

    /// The rebuilt weights of stage `failed` (by stage-local name, the same names and shapes as
    /// `fresh`, which are freshly initialised weights for that stage).
    fn rebuild(
        &self,
        failed: usize,
        donors: &[DonorWeights],
        fresh: &BTreeMap<String, Tensor>,
    ) -> Result<BTreeMap<String, Tensor>>;

    /// Factor on the rebuilt stage's learning rate from then on.
    fn lr_scale(&self) -> f32 {
        1.0
    }

    /// If the edge stages (embedding, head) keep a copy of their weights at their neighbour, refreshed
    /// every this many steps.
    fn edge_copies_every(&self) -> Option<u64> {
        None
    }
}
