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
//! | [`bisection`] | the bisection game of both dispute phases, as a sans-IO state machine |
//! | [`program`] | the training program (repops), trainers honest and dishonest, state hashes and their commitment |
//! | [`referee`] | the step dispute with deadlines (sans-IO) and the simulated stake ledger |
//! | [`trace`] | a step's operators from a repops tape as a chain of running hashes; the referee's verdict on one operator |
//!
//! Work in progress: linking phase 1 to phase 2 (a trainer re-running the disputed step with its tape,
//! justifying the disputed operator's inputs), the remaining adversaries (a perturbed operator,
//! the message drivers over genrl and the transport, and the CLI.

pub mod bisection;
pub mod error;
pub mod merkle;
pub mod program;
pub mod referee;
pub mod trace;

pub use bisection::{Bisection, Commitment, Opening, Party, Progress};
pub use error::{Error, Result};
pub use merkle::{Hash, MerkleTree, Proof, leaf_hash, verify};
pub use program::{Behaviour, Execution, Program, Trainer, execute, state_hash};
pub use referee::{Fault, Ledger, Outcome, StepDispute};
pub use trace::{OpRecord, StepTrace, Verdict, adjudicate, link};
