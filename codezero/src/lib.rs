//! # swarmlab codezero
//!
//! A CodeZero-style swarm (Gensyn's rl-swarm, `code_gen_exp`): a game of roles on programming
//! problems whose rewards are checked by execution. Proposers write problems, solvers write programs
//! (trained with GRPO, sharing their rollouts as in SAPO), evaluators run them in a sandbox and share
//! verdicts, and a proposer is rewarded for problems that some but not all solutions pass. The programs
//! are in the stack language of [`genrl::env::code`], run by its bounded interpreter.
//!
//! | module | what |
//! |---|---|
//! | [`roles`] | [`Proposer`], [`Solver`], [`Evaluator`] as [`genrl::roles::Role`]s; the receivers' checks |
//! | [`swarm`] | [`CodeZeroConfig`], the [`warm_start`] of both policies, [`run`] on the simulated network |
//!
//! ```no_run
//! let cfg = codezero::CodeZeroConfig { rounds: 20, ..codezero::CodeZeroConfig::default() };
//! let warm = codezero::warm_start(&cfg)?;
//! let run = codezero::run(&cfg, &warm, |_round| {})?;
//! println!("held-out pass rate {:.2} → {:.2}", run.warm_held_out, run.held_out());
//! # Ok::<(), codezero::Error>(())
//! ```

pub mod error;
pub mod roles;
pub mod swarm;

pub use error::{Error, Result};
pub use roles::{Dropped, Evaluator, Proposer, Solver};
pub use sapo::WarmStartConfig;
pub use swarm::{AgentRun, CodeZeroConfig, CodeZeroRun, RoundRecord, WarmStart, run, warm_start};
