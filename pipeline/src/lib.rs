//! # swarmlab pipeline
//!
//! Pre-training on a grid of `stages × replicas` genrl agents. Each micro-batch's activations travel
//! forward from stage to stage and its gradients back, as real messages over the transport (so their
//! bytes and transfer times count); the replicas of each stage then synchronise. Plug points: the
//! [`Router`] (which replica of the next stage a micro-batch visits), the [`OuterSync`] (how replicas
//! agree) and the [`Recovery`] (what happens when a worker fails), each a sans-IO trait; the defaults — a
//! fixed path, a ring all-reduce of gradients every step, and restarting from periodic checkpoints — are
//! the baselines the protocol crates compare against. Who runs where (each worker's simulated profile,
//! region and failures) is a [`genrl::World`].
//!
//! | module | what |
//! |---|---|
//! | [`spec`] | [`PipelineSpec`]: grid, batches, model, optimizer, world; [`Replacement`] of killed workers |
//! | [`plug`] | [`Router`] (paths), [`FixedRouter`] |
//! | [`recovery`] | [`Recovery`] (sans-IO), [`CheckpointRestart`], [`Redundant`], [`Rebuild`] with its [`Fallback`] |
//! | [`rebuild`] | [`StageRebuild`]: rebuilding a lost stage from others (sans-IO) |
//! | [`storage`] | [`CheckpointStore`]: checkpoints in files, for a killed worker's successor |
//! | [`sync`] | [`OuterSync`] / [`OuterState`] (sans-IO), [`Collective`], [`DataParallel`], [`Independent`] |
//! | [`collective`] | the mailbox; ring and tree all-reduce, gather-average-broadcast with deadlines |
//! | [`worker`] | one worker's loop: forward, backward, gradient all-reduce, optimizer step, outer round; halting for a killed worker's successor |
//! | [`partial`] | [`StagedModel`]: inference with some stages dropped |
//! | [`probe`] | [`WeightProbe`]: across-replica weight variance during a run |
//! | [`run`] | [`run_simulated`]: a whole grid on the simulated network |
//! | [`wire`] | the messages and tensors on the wire |

pub mod collective;
pub mod error;
pub mod partial;
pub mod plug;
pub mod probe;
pub mod rebuild;
pub mod recovery;
pub mod run;
pub mod spec;
pub mod storage;
pub mod sync;
pub mod wire;
pub mod worker;

pub use error::{Error, Result};
pub use genrl::FailurePlan;
pub use partial::{Evaluation, StagedModel};
pub use plug::{FixedRouter, Hop, Router, RowsAround, check_membership, check_path, departed_set, in_run, stand_in};
pub use probe::WeightProbe;
pub use rebuild::{Donor, DonorWeights, StageRebuild};
pub use recovery::{CheckpointRestart, Fallback, KeptCopy, Layout, Rebuild, Recovery, Redundant, Source};
pub use run::{RunReport, run_simulated};
pub use spec::{GradientScaling, PipelineSpec, Replacement};
pub use storage::{CheckpointStore, StoredState};
pub use sync::{Collective, DataParallel, Independent, OuterRound, OuterState, OuterSync};
