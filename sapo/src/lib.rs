//! # swarmlab sapo
//!
//! SAPO — Swarm sAmpling Policy Optimization (Gensyn, arXiv 2509.08721): RL post-training where every
//! agent trains its own policy with GRPO on verifiable tasks and shares its decoded rollouts with the
//! swarm; each step learns from `I` of its own question groups and `J` of the swarm's, re-scored by its
//! own verifier. Nothing but text crosses the network: no weights, no gradients, no rewards.
//!
//! | module | what |
//! |---|---|
//! | [`policy`] | [`Policy`]: a small decoder LM over ASCII, or a pretrained checkpoint; sampling (with a key/value cache), supervised and GRPO steps |
//! | [`codec`] | [`TextCodec`]: a policy's tokens, where a completion ends, the answer a verifier judges |
//! | [`grpo`] | group-relative advantages and the clipped loss (GenRL's GRPO) |
//! | [`agent`] | one agent as a genrl game: [`TaskStream`], [`PolicyTrainer`], [`SwarmRewards`], [`Mix`] |
//! | [`adversary`] | a lying peer: forged ground truths, garbage and oversized text |
//! | [`swarm`] | [`SapoConfig`] and [`run`]: a warm start, then a swarm on the simulated network |
//!
//! ```no_run
//! let cfg = sapo::SapoConfig { rounds: 20, ..sapo::SapoConfig::default() };
//! let warm = sapo::warm_start(&cfg, "tiny")?;
//! let run = sapo::run(&cfg, &[warm], |_round| {})?;
//! println!("cumulative reward {:.1}", run.cumulative_reward());
//! # Ok::<(), sapo::Error>(())
//! ```

pub mod adversary;
pub mod agent;
pub mod codec;
pub mod error;
pub mod grpo;
pub mod policy;
pub mod swarm;

pub use agent::{Dropped, Mix, PolicyTrainer, SwarmRewards, TaskStream, TrainReport};
pub use error::{Error, Result};
pub use grpo::GrpoConfig;
pub use codec::TextCodec;
pub use policy::{Generation, Policy, PolicyConfig, Sampling};
pub use swarm::{AgentRun, PRETRAINED, SapoConfig, SapoRun, WarmStart, WarmStartConfig, run, warm_start};
