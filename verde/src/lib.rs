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
//! | [`trace`] | a step's operators from a repops tape as a chain of running hashes; the referee's verdict on one operator |
//!
//! Work in progress: the phase-1 trainers over real repops training runs, the adversaries, message
//! drivers with timeouts, the stake ledger and the CLI build on these.

pub mod bisection;
pub mod error;
pub mod merkle;
pub mod trace;

pub use bisection::{Bisection, Commitment, Opening, Party, Progress};
pub use error::{Error, Result};
pub use merkle::{Hash, MerkleTree, Proof, leaf_hash, verify};
pub use trace::{OpRecord, StepTrace, Verdict, adjudicate, link};
