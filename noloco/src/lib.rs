//! # swarmlab noloco
//!
//! Outer synchronisation for pipeline × data-parallel training without a global all-reduce, after
//! Kolehmainen et al., *NoLoCo: No-all-reduce Low Communication Training Method for Large Models*
//! (arXiv 2506.10911), and its baseline DiLoCo (Douillard et al., arXiv 2311.08105).
//!
//! Both run `H` inner AdamW steps with no communication, then an outer step on the pseudo-gradient.
//! DiLoCo averages it over *all* replicas of a stage with an all-reduce and takes a Nesterov step.
//! NoLoCo averages only within a small random group (size `n`, usually 2: one random peer), chosen by a
//! permutation every replica draws from the same seed (no coordinator), and adds a term that pulls each
//! replica's outer weights toward its group's mean; its [`RandomRouter`] sends each micro-batch to a
//! random replica of the next stage, which keeps the replicas from drifting apart.
//!
//! Both are sans-IO [`pipeline::OuterSync`] implementations: the pipeline runtime moves the bytes.
//!
//! | module | what |
//! |---|---|
//! | [`diloco`] | [`DiLoCo`]: all-reduce of the pseudo-gradient, outer Nesterov momentum |
//! | [`gossip`] | [`NoLoCo`]: random groups, the modified Nesterov step with the pull term |
//! | [`groups`] | [`gossip_groups`]: the shared-seed partition of the replicas into groups |
//! | [`routing`] | [`RandomRouter`]: random pipeline routing |
//! | [`scale`] | synchronisation latency and bytes vs swarm size on internet-like links |
//! | [`update`] | the outer steps' element-wise updates: one fused pass on the CPU, tensor ops on a device |

pub mod diloco;
pub mod gossip;
pub mod groups;
pub mod routing;
pub mod scale;
pub mod update;

pub use diloco::DiLoCo;
pub use gossip::NoLoCo;
pub use groups::{gossip_groups, group_of};
pub use routing::RandomRouter;
