//! Executing a schedule in the pipeline runtime: the [`Router`] that hands every micro-batch its
//! scheduled path. Skipped stages act as the identity (the activations go straight to the next hop), the
//! gradient comes back along the reversed path, and each stage averages only the gradients of the
//! micro-batches that visited it (the runtime's normalisation).

use pipeline::{Hop, Router};

use crate::cbs::Schedule;
use crate::error::{Error, Result};
use crate::topology::Assignment;

/// Routes micro-batch `micro` of data replica `origin` along the scheduled path of agent
/// `origin × micro_batches + micro`, every step (the schedule is computed once, as in the paper).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledRouter {
    /// Paths as `(stage, replica)` hops, by agent.
    paths: Vec<Vec<Hop>>,
    micro_batches: usize,
}

impl ScheduledRouter {
    /// The router for `schedule` of a grid laid out by `assignment`, with `micro_batches` per replica.
    pub fn new(schedule: &Schedule, assignment: &Assignment, micro_batches: usize) -> Result<Self> {
        Self::from_paths(&schedule.paths(), assignment, micro_batches)
    }

    /// The router for node paths (one per agent, data node by data node in slot order).
    pub fn from_paths(paths: &[Vec<usize>], assignment: &Assignment, micro_batches: usize) -> Result<Self> {
        let origins = assignment.slots(0).len();
        if micro_batches == 0 || paths.len() != origins * micro_batches {
            return Err(Error::Pipeline(pipeline::Error::config(
                "skippipe.schedule",
                format!("{} paths for {origins} data nodes x {micro_batches} micro-batches", paths.len()),
            )));
        }
        let paths = paths.iter().map(|p| p.iter().map(|&n| assignment.hop(n)).collect()).collect();
        Ok(Self { paths, micro_batches })
    }

    /// The scheduled hops of every agent.
    pub fn paths(&self) -> &[Vec<Hop>] {
        &self.paths
    }
}

impl Router for ScheduledRouter {
    /// The scheduled path; an empty one (which the runtime rejects with an error naming the router) for
    /// a micro-batch the schedule does not know.
    fn path(&self, _step: u64, micro: u32, origin: usize, _stages: usize, _replicas: usize) -> Vec<Hop> {
        let micro = micro as usize;
        if micro >= self.micro_batches {
            return Vec::new();
        }
        self.paths.get(origin * self.micro_batches + micro).cloned().unwrap_or_default()
    }
}
