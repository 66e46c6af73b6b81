//! # swarmlab genrl
//!
//! The composition layer every swarmlab experiment is built from, after Gensyn's GenRL: agents on a
//! [`Transport`](transport::Transport), the clock they live on, what their hardware costs in time, what
//! they measure, and how they exchange state with the swarm.
//!
//! | module | what |
//! |---|---|
//! | [`device`] | [`DeviceProfile`] presets and the compute cost model (FLOPs → time) |
//! | [`clock`] | [`Clock`]: the simulated network's virtual clock or real time; [`clock::timeout`] |
//! | [`metrics`] | [`Metrics`]: scalar series per agent and step, and events |
//! | [`comm`] | [`CommunicationBackend`] and [`comm::BroadcastGather`] (GenRL's `all_gather` with deadlines) and [`comm::Inbox`] (never waits) |
//! | [`env`](mod@env) | verifiable task families ([`env::TaskFamily`]): seeded generators, strict verifiers |
//! | [`game`] | GenRL's game loop: [`game::Game`] of rounds and stages; `DataManager`, `Trainer`, `RewardManager` |
//! | [`roles`] | games of several [`roles::Role`]s (proposer, solver, evaluator…), a [`roles::Board`] between them, a [`roles::RoleSchedule`] |
//! | [`world`] | [`World`]: who runs where — every agent's simulated profile, region and links, and when agents fail |
//! | [`swarm`] | [`SimSwarm`]: a [`World`]'s agents with their contexts on the simulated network, run concurrently |

pub mod clock;
pub mod comm;
pub mod device;
pub mod env;
pub mod error;
pub mod game;
pub mod metrics;
pub mod roles;
pub mod swarm;
pub mod world;

pub use clock::{Clock, WallClock};
pub use comm::{CommunicationBackend, Gathered};
pub use device::{DeviceProfile, training_flops};
pub use error::{Error, Result};
pub use metrics::{Event, EventKind, Metrics, MetricsLog, Sample};
pub use swarm::{AgentCtx, SimSwarm, TransportKind, run_simulation};
pub use world::{FailurePlan, Regions, World};
