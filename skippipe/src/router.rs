//! Executing a schedule in the pipeline runtime: the [`Router`] that hands every micro-batch its
//! scheduled path. Skipped stages act as the identity (the activations go straight to the next hop) and
//! the gradient comes back along the reversed path; how a stage that some paths skip scales its gradient
//! is the runtime's [`pipeline::GradientScaling`] (as one model, the released trainer's rule, or averaged
//! over the stage's visits). [`SkipCount`] says which stages the skip ratio counts.

use std::sync::Arc;

use genrl::World;
use pipeline::{Hop, PipelineSpec, Router};
use serde::{Deserialize, Serialize};

use crate::cbs::{Budget, Schedule, schedules};
use crate::error::{Error, Result};
use crate::instance::{PathRules, SkipBase};
use crate::topology::{Assignment, Workload, instance};

/// SkipPipe's settings as a routing plug: how much each micro-batch skips and the scheduler's
/// constraints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scheduling {
    /// Fraction of the stages each micro-batch skips, in `[0, 1)`.
    pub skip_ratio: f64,
    /// Micro-batches a node can hold at once (the memory constraint).
    pub memory: usize,
    /// Each intermediate stage serves between 1/slack and slack times its fair share of micro-batches.
    pub load_slack: f64,
    /// Schedules taken in turn, one per step (1: the same paths every step, as in the paper).
    pub schedules: usize,
    /// Whether paths may swap one adjacent pair of stages (when they skip some).
    pub swap: bool,
    /// Which stages the skip ratio counts and which always run.
    pub count: SkipCount,
}

impl Default for Scheduling {
    fn default() -> Self {
        Self { skip_ratio: 0.0, memory: 8, load_slack: 1.5, schedules: 1, swap: true, count: SkipCount::default() }
    }
}

/// Which stages a skip ratio is a fraction of, in a pipeline trained by the runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipCount {
    /// The released trainer's rule: the ratio counts the transformer stages (all but the embedding and
    /// head stages, when the pipeline has them) and the first transformer stage always runs; so 33% of
    /// 6 transformer stages visits 4 of them. Without separate embedding and head stages the first stage
    /// holds the embedding and the first blocks and the ratio counts every stage.
    #[default]
    TransformerStages,
    /// The ratio counts every stage, the embedding and head stages included, and any stage between the
    /// first and the last may be skipped (this project's first rule; kept as an ablation).
    AllStages,
}

impl SkipCount {
    /// The base of the ratio for a pipeline of `stages` stages, with or without separate embedding and
    /// head stages.
    pub fn base(self, stages: usize, edge_stages: bool) -> SkipBase {
        match self {
            Self::TransformerStages if edge_stages => SkipBase::transformer(stages),
            _ => SkipBase::all(stages),
        }
    }
}

/// Routes micro-batch `micro` of data replica `origin` along the path of agent
/// `origin × micro_batches + micro` in the schedule for this step: with several schedules, step `t` uses
/// schedule `t mod count` (one schedule: the same paths every step, as in the paper).
#[derive(Debug, Clone)]
pub struct ScheduledRouter {
    /// Paths as `(stage, replica)` hops, by schedule, then agent.
    paths: Vec<Vec<Vec<Hop>>>,
    micro_batches: usize,
    /// The data replica (stage-0 replica) of each run of `micro_batches` agents, in agent order.
    origins: Vec<usize>,
    /// What the paths were scheduled from, to schedule them again for the workers still in the run
    /// (`None`: paths given as they are).
    plan: Option<Arc<Replan>>,
}

impl PartialEq for ScheduledRouter {
    /// The same paths for the same micro-batches.
    fn eq(&self, other: &Self) -> bool {
        (&self.paths, self.micro_batches, &self.origins) == (&other.paths, other.micro_batches, &other.origins)
    }
}

/// Everything [`ScheduledRouter::for_pipeline`] schedules from, kept so that every worker can schedule
/// the paths again, by itself and to the same result, when workers leave the run for good or come back
/// ([`Router::without`]): the search is deterministic (its budget counts search nodes, not time), so
/// the same membership gives every worker the same paths.
#[derive(Debug)]
struct Replan {
    /// The grid's world (worker `stage × replicas + replica` is agent of that index).
    world: World,
    /// Grid workers in the numbering of the swarm they were placed from (the search's tie-break).
    order: Vec<usize>,
    stages: usize,
    replicas: usize,
    micro_batches: usize,
    workload: Workload,
    settings: Scheduling,
    base: SkipBase,
}

impl Replan {
    /// The router for the workers of the grid not in `departed` (grid indices, sorted).
    fn route(self: &Arc<Self>, departed: &[usize]) -> Result<ScheduledRouter> {
        let live: Vec<usize> = self.order.iter().copied().filter(|w| departed.binary_search(w).is_err()).collect();
        pipeline::check_membership(departed, self.stages, self.replicas)?;
        let assignment = Assignment { stage_of: live.iter().map(|&w| w / self.replicas).collect() };
        let world = self.world.permuted(&live).map_err(pipeline::Error::from)?;
        let origins: Vec<usize> = assignment.slots(0).iter().map(|&n| live[n] % self.replicas).collect();
        let agents = origins.len() * self.micro_batches;
        let s = &self.settings;
        let mut rules = PathRules::over(self.stages, self.base, agents, s.skip_ratio, s.load_slack)?;
        rules.swap &= s.swap;
        let inst = instance(&world, &assignment, &self.workload, rules)?;
        let found = schedules(Arc::new(inst), Budget::default(), s.schedules)?;
        // Node `n` of this search is grid worker `live[n]`.
        let hop = |n: usize| (live[n] / self.replicas, live[n] % self.replicas);
        let paths = found
            .iter()
            .map(|schedule| schedule.paths().iter().map(|p| p.iter().map(|&n| hop(n)).collect()).collect())
            .collect();
        Ok(ScheduledRouter { paths, micro_batches: self.micro_batches, origins, plan: Some(self.clone()) })
    }
}

impl ScheduledRouter {
    /// Schedules the paths of `spec`'s grid on its world (worker `stage × replicas + replica` on agent of
    /// that index), with the costs of its model: the router SkipPipe arms train with.
    pub fn for_pipeline(spec: &PipelineSpec, settings: &Scheduling) -> Result<Self> {
        let bad = |field: &str, why: String| Err(Error::Pipeline(pipeline::Error::config(field, why)));
        if !(0.0..1.0).contains(&settings.skip_ratio) {
            return bad("skippipe.skip_ratio", format!("{} is not in [0, 1)", settings.skip_ratio));
        }
        if !(1..=1_000_000).contains(&settings.memory) {
            return bad("skippipe.memory", format!("{} micro-batches is outside [1, 1000000]", settings.memory));
        }
        if !(1..=64).contains(&settings.schedules) {
            return bad("skippipe.schedules", format!("{} is outside [1, 64]", settings.schedules));
        }
        if !(settings.load_slack >= 1.0 && settings.load_slack <= 1e6) {
            return bad("skippipe.load_slack", format!("{} is outside [1, 1000000]", settings.load_slack));
        }
        let workload = Workload {
            stage_flops: spec.stage_forward_flops()?,
            activation_bytes: spec.micro_batch * spec.seq * spec.model.d_model * 4,
            micro_batches: spec.micro_batches,
            memory: settings.memory,
        };
        // The search breaks ties by node number: schedule the nodes in the numbering of the swarm they
        // were placed from (worker w is node order[w]'s slot), so placing them does not change the paths.
        let mut order: Vec<usize> = (0..spec.world.len()).collect();
        order.sort_by_key(|&w| spec.world.node(w));
        let plan = Replan {
            world: spec.world.clone(),
            order,
            stages: spec.stages,
            replicas: spec.replicas.max(1),
            micro_batches: spec.micro_batches,
            workload,
            settings: *settings,
            base: settings.count.base(spec.stages, spec.edge_stages),
        };
        Arc::new(plan).route(&[])
    }

    /// The router for `schedule` of a grid laid out by `assignment`, with `micro_batches` per replica.
    pub fn new(schedule: &Schedule, assignment: &Assignment, micro_batches: usize) -> Result<Self> {
        Self::rotating(std::slice::from_ref(schedule), assignment, micro_batches)
    }

    /// The router that takes the `schedules` in turn, one per step.
    pub fn rotating(schedules: &[Schedule], assignment: &Assignment, micro_batches: usize) -> Result<Self> {
        let all: Vec<Vec<Vec<usize>>> = schedules.iter().map(Schedule::paths).collect();
        Self::from_paths(&all, assignment, micro_batches)
    }

    /// The router for node paths (per schedule, one per agent, data node by data node in slot order).
    pub fn from_paths(schedules: &[Vec<Vec<usize>>], assignment: &Assignment, micro_batches: usize) -> Result<Self> {
        let origins = assignment.slots(0).len();
        let bad = |why: String| Err(Error::Pipeline(pipeline::Error::config("skippipe.schedule", why)));
        if schedules.is_empty() {
            return bad("no schedule".into());
        }
        for paths in schedules {
            if micro_batches == 0 || paths.len() != origins * micro_batches {
                return bad(format!("{} paths for {origins} data nodes x {micro_batches} micro-batches", paths.len()));
            }
        }
        let paths = schedules
            .iter()
            .map(|paths| paths.iter().map(|p| p.iter().map(|&n| assignment.hop(n)).collect()).collect())
            .collect();
        Ok(Self { paths, micro_batches, origins: (0..origins).collect(), plan: None })
    }

    /// The scheduled hops of every agent, by schedule.
    pub fn paths(&self) -> &[Vec<Vec<Hop>>] {
        &self.paths
    }
}

impl Router for ScheduledRouter {
    /// The scheduled path; an empty one (which the runtime rejects with an error naming the router) for
    /// a micro-batch the schedule does not know.
    fn path(&self, step: u64, micro: u32, origin: usize, _stages: usize, _replicas: usize) -> Vec<Hop> {
        let micro = micro as usize;
        if micro >= self.micro_batches {
            return Vec::new();
        }
        let Some(rank) = self.origins.iter().position(|&o| o == origin) else { return Vec::new() };
        let schedule = &self.paths[(step % self.paths.len() as u64) as usize];
        schedule.get(rank * self.micro_batches + micro).cloned().unwrap_or_default()
    }

    /// SkipPipe's paths scheduled again, by every worker alike, for the workers still in the run: the
    /// same search on the grid without the departed workers (a stage keeps at least one; a departed
    /// data replica's micro-batches are no longer drawn).
    fn without(&self, departed: &[usize], _stages: usize, _replicas: usize) -> pipeline::Result<Arc<dyn Router>> {
        let Some(plan) = &self.plan else {
            return Err(pipeline::Error::config("router", "paths given as they are cannot be scheduled again"));
        };
        let departed = pipeline::departed_set(departed);
        match plan.route(&departed) {
            Ok(router) => Ok(Arc::new(router)),
            Err(Error::Pipeline(e)) => Err(e),
            Err(e) => {
                Err(pipeline::Error::config("skippipe", format!("no schedule without workers {departed:?}: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_take_turns_and_unknown_micro_batches_get_no_path() -> Result<()> {
        // Two data nodes (0, 1), two nodes in stage 1 (2, 3), one last node (4).
        let assignment = Assignment { stage_of: vec![0, 0, 1, 1, 2] };
        let a = vec![vec![0, 2, 4], vec![1, 3, 4]];
        let b = vec![vec![0, 3, 4], vec![1, 2, 4]];
        let router = ScheduledRouter::from_paths(&[a, b], &assignment, 1)?;
        assert_eq!(router.path(0, 0, 1, 3, 2), vec![(0, 1), (1, 1), (2, 0)]);
        assert_eq!(router.path(1, 0, 1, 3, 2), vec![(0, 1), (1, 0), (2, 0)]);
        assert_eq!(router.path(2, 0, 1, 3, 2), router.path(0, 0, 1, 3, 2));
        assert!(router.path(0, 1, 0, 3, 2).is_empty(), "only one micro-batch per replica was scheduled");
        assert!(ScheduledRouter::from_paths(&[vec![vec![0, 2, 4]]], &assignment, 1).is_err(), "one path for two");
        Ok(())
    }
}
