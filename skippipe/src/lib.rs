//! # swarmlab skippipe
//!
//! SkipPipe (Blagoev, Chen, Ersoy, arXiv 2502.19913): pipeline training in which every micro-batch
//! visits only some of the stages — the first and the last always, at most one adjacent pair in swapped
//! order — and the node of each stage it visits is chosen so that the iteration ends sooner on a
//! heterogeneous, geo-distributed swarm.
//!
//! | module | what |
//! |---|---|
//! | [`topology`] | node-to-stage [`Assignment`] on a [`genrl::World`] (random, local search); the [`Instance`] it gives |
//! | [`instance`] | what the scheduler sees: nodes' costs, transfers, micro-batches, [`PathRules`]; feasibility |
//! | [`astar`] | the low level: time-aware A* for one micro-batch under constraints |
//! | [`cbs`] | the high level: conflict-based search (stage load, memory, collisions) as a state machine |
//! | [`simulate`] | one iteration's timeline and makespan for a set of paths, with an optional failure |
//! | [`router`] | [`ScheduledRouter`]: the schedule as the pipeline runtime's router; [`Scheduling`], its settings |
//!
//! ```
//! use std::sync::Arc;
//! use genrl::World;
//! use skippipe::{Budget, PathRules, Workload, assign_random, instance, schedule};
//!
//! let world = World::geo_distributed(12, 1);
//! let assignment = assign_random(&world, &[3, 3, 3, 3], 1)?;
//! let workload = Workload { stage_flops: vec![1e12; 4], activation_bytes: 1 << 20, micro_batches: 2, memory: 4 };
//! let rules = PathRules::new(4, 6, 0.25, 1.5)?;
//! let instance = Arc::new(instance(&world, &assignment, &workload, rules)?);
//! let found = schedule(instance, Budget::default())?;
//! assert_eq!(found.plans.len(), 6);
//! # Ok::<(), skippipe::Error>(())
//! ```

pub mod astar;
pub mod cbs;
pub mod error;
pub mod instance;
pub mod router;
pub mod simulate;
pub mod topology;

pub use astar::{AgentConstraints, Plan};
pub use cbs::{Budget, Conflict, Schedule, Search, Step, schedule, schedules};
pub use error::{Error, Result};
pub use instance::{Agent, Instance, Node, PathRules, SkipBase, check_path};
pub use router::{ScheduledRouter, Scheduling, SkipCount};
pub use simulate::{Timeline, Work, simulate};
pub use topology::{
    Assignment, BILLION_STAGE_ACTIVATION_BYTES, BILLION_STAGE_FLOPS, GeoSwarm, Workload, assign_local_search,
    assign_random, assignment_cost, geo_swarm, instance,
};
