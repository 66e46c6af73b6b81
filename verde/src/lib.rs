//! # swarmlab verde
//!
//! Verde (Arun et al., arXiv 2502.19405): refereed delegation for training. Trainers commit to Merkle roots
//! of their checkpoint hashes and of each step's operator tape; when two disagree, a bisection over steps
//! finds the first step they disagree on, a second over that step's operators the first operator whose
//! inputs agree but whose output does not, and a referee re-executes that one operator with repops.
//!
//! | module | what |
//! |---|---|
//! | [`merkle`] | Merkle trees over blake3 hashes, inclusion proofs and their checks |
//! | [`eval`] | verifiable evaluation: a model's score on a committed held-out set, disputed like training |
//! | [`audit`] | probabilistic checkpoint audits: segments, the draw after the commitment, re-execution, the closed form |
//! | [`bisection`] | the bisection game of both dispute phases, as a sans-IO state machine |
//! | [`program`] | the training program (repops), trainers honest and dishonest, state manifests and commitments |
//! | [`structure`] | the program's step graph: operators and attributes, where inputs and state tensors come from |
//! | [`origin`] | where an input comes from (an operator, the agreed state, a constant, the batch) and the layout and gradient-sum glue outside the tape, re-done bit for bit |
//! | [`trace`] | a step's records as a chain of running hashes; evidence, provenance and the referee's judgement |
//! | [`referee`] | the whole dispute with deadlines (sans-IO) |
//! | [`ledger`] | stakes: balances in memory, and a file of signed entries that survives restarts and refuses forgeries |
//! | [`defender`] | a party's side: answering the referee from its run (sans-IO), honestly or not |
//! | [`net`] | the dispute over a [`transport::Transport`]: referee and parties as agents exchanging messages |

pub mod audit;
pub mod bisection;
pub mod defender;
pub mod error;
pub mod eval;
pub mod ledger;
pub mod merkle;
pub mod net;
pub mod origin;
pub mod program;
pub mod referee;
pub mod structure;
pub mod trace;

pub use bisection::{Bisection, Commitment, Opening, Party, Progress};
pub use defender::{Conduct, Defender};
pub use error::{Error, Result};
pub use eval::Score;
pub use ledger::{Entry, Ledger, LedgerFile, Movement};
pub use merkle::{Hash, MerkleTree, Proof, leaf_hash, verify};
pub use net::{Settlement, settle};
pub use audit::{AuditOutcome, Segment};
pub use origin::{BatchPart, Glue, Origin, Source};
pub use program::{
    Behaviour, Checkpoint, Checkpoints, Execution, Program, StateManifest, Task, TracedStep, Trainer, Weights, execute,
    execute_with,
};
pub use referee::{Answer, Ask, Dispute, Fault, Outcome, Rules, Summary};
pub use structure::{OpShape, StepShape, Structure};
pub use trace::{Evidence, Judgement, OpRecord, Provenance, StepContext, StepTrace, Verdict, judge, link};
