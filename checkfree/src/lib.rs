//! # swarmlab checkfree
//!
//! Recovering a failed pipeline stage without checkpoints, after Blagoev, Ersoy and Chen, *All is Not
//! Lost: LLM Recovery without Checkpoints* (arXiv 2506.15461).
//!
//! When every replica of an intermediate stage dies, **CheckFree** rebuilds its weights as the average
//! of its two neighbouring stages weighted by their last (clipped) gradient norms, gives it a fresh
//! optimizer state and a 1.2x learning rate, and training goes on without a rollback. **CheckFree+**
//! also runs the first two and the last two transformer stages in swapped order on odd micro-batches,
//! so each learns to stand in for the other and the end stages can be rebuilt by copying their
//! neighbour; the embedding and head keep copies at their neighbours.
//!
//! Everything here is a sans-IO [`pipeline::StageRebuild`] or [`pipeline::Router`]: the pipeline runtime
//! sends the neighbours' weights as messages, so a recovery's bytes and time count.
//!
//! | item | what |
//! |---|---|
//! | [`CheckFree`] | gradient-norm-weighted neighbour average (the paper's `ours-grad-avg`) |
//! | [`CheckFreePlus`] | plus end-stage copies and edge copies; with [`OutOfOrderRouter`] |
//! | [`NaiveCopy`], [`RandomReinit`] | the paper's ablations (without their 8 local MSE steps) |
//! | [`failures`] | seeded stage failures from the paper's hourly rates |

pub mod failures;
mod protocols;
mod router;

pub use failures::{FailureRate, stage_failures};
pub use protocols::{CheckFree, CheckFreePlus, EndStages, NaiveCopy, RandomReinit, SwappedStages, weighted_average};
pub use router::OutOfOrderRouter;
