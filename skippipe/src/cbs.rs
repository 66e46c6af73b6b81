//! The high level of the path search: conflict-based search (CBS, Sharon et al. 2015) over the
//! per-micro-batch A* of [`crate::astar`], as SkipPipe's `schedulers/CBS.py` does it.
//!
//! A search node holds one plan per micro-batch and the constraints they were planned under. Its first
//! conflict, checked in the paper's order, splits it into children that each forbid one micro-batch
//! something and re-plan it alone:
//! - **C2, stage load**: more micro-batches pass an intermediate stage than its share allows → forbid
//!   the stage to enough of them (the slowest first; each child picks a different group); fewer than its
//!   minimum → require it of enough others (the fastest first);
//! - **C1, node memory**: more micro-batches pass a node than it can hold → forbid the node to one of
//!   them (only if its stage has another node);
//! - **C3, collision**: two forward passes overlap on a node → the one that started later may not be
//!   busy there during the other's interval (it waits, or goes elsewhere); one child, as in the paper.
//!
//! Nodes are expanded greedily — fewest conflicts first, then the shortest makespan (greedy CBS) — and
//! the search keeps going until it has found `solutions` conflict-free schedules or spent its budget; it
//! returns the one the simulator ([`crate::simulate`]) finds fastest. [`Search`] is a sans-IO state
//! machine: [`Search::step`] expands one node, so a caller can interleave, observe or stop it.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::astar::{AgentConstraints, Plan, plan};
use crate::error::{Error, Result};
use crate::instance::Instance;
use crate::simulate::simulate;

/// How much search to spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// High-level search nodes to expand at most.
    pub nodes: usize,
    /// A* state expansions per low-level call.
    pub astar: usize,
    /// Conflict-free schedules to collect before choosing the fastest.
    pub solutions: usize,
    /// Children per stage-load or memory conflict (each moves a different group of micro-batches,
    /// the slowest first).
    pub branching: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Self { nodes: 50_000, astar: 200_000, solutions: 4, branching: 2 }
    }
}

/// The first conflict of a set of plans.
#[derive(Debug, Clone, PartialEq)]
pub enum Conflict {
    /// C2: only micro-batches `agents` pass intermediate stage `stage`, fewer than its minimum load;
    /// `others` (the fastest first) could be sent through it.
    StageUnder {
        /// The stage.
        stage: usize,
        /// How many more it needs.
        deficit: usize,
        /// Micro-batches that do not pass it.
        others: Vec<usize>,
    },
    /// C2: micro-batches `agents` all pass intermediate stage `stage`, more than its load limit.
    StageLoad {
        /// The stage.
        stage: usize,
        /// The micro-batches passing it.
        agents: Vec<usize>,
    },
    /// C1: micro-batches `agents` all pass `node`, more than its memory.
    Memory {
        /// The node.
        node: usize,
        /// The micro-batches passing it.
        agents: Vec<usize>,
    },
    /// C3: the forward passes of `a` (during `a_busy`) and `b` (during `b_busy`) overlap on `node`.
    Collision {
        /// The node.
        node: usize,
        /// One micro-batch and its busy interval.
        a: (usize, (f64, f64)),
        /// The other.
        b: (usize, (f64, f64)),
    },
}

/// Counts the conflicts of `plans` and returns the first (C2, then C1, then the earliest C3).
pub fn conflicts(inst: &Instance, plans: &[Arc<Plan>]) -> (usize, Option<Conflict>) {
    let s = inst.stages;
    let (mut count, mut first) = (0, None);
    let mut by_stage = vec![Vec::new(); s];
    let mut by_node = vec![Vec::new(); inst.nodes.len()];
    for (a, p) in plans.iter().enumerate() {
        for (i, &n) in p.nodes.iter().enumerate() {
            by_stage[inst.nodes[n].stage].push(a);
            by_node[n].push((a, p.busy(inst, i)));
        }
    }
    // Slowest first: those are the ones worth moving.
    let slowest_first = |agents: &[usize]| {
        let mut v = agents.to_vec();
        v.sort_by(|&x, &y| plans[y].cost.total_cmp(&plans[x].cost).then(x.cmp(&y)));
        v
    };
    for (k, agents) in by_stage.iter().enumerate().take(s - 1).skip(inst.rules.lead) {
        if agents.len() < inst.rules.min_stage_load {
            let deficit = inst.rules.min_stage_load - agents.len();
            count += deficit;
            let mut others: Vec<usize> = (0..plans.len()).filter(|a| !agents.contains(a)).collect();
            others.sort_by(|&x, &y| plans[x].cost.total_cmp(&plans[y].cost).then(x.cmp(&y)));
            first.get_or_insert(Conflict::StageUnder { stage: k, deficit, others });
        }
        if agents.len() > inst.rules.stage_load {
            count += agents.len() - inst.rules.stage_load;
            first.get_or_insert(Conflict::StageLoad { stage: k, agents: slowest_first(agents) });
        }
    }
    for (n, visits) in by_node.iter().enumerate() {
        if visits.len() > inst.nodes[n].memory {
            count += visits.len() - inst.nodes[n].memory;
            let agents: Vec<usize> = visits.iter().map(|v| v.0).collect();
            first.get_or_insert(Conflict::Memory { node: n, agents: slowest_first(&agents) });
        }
    }
    let mut earliest: Option<Conflict> = None;
    for (n, visits) in by_node.iter_mut().enumerate() {
        visits.sort_by(|x, y| x.1.0.total_cmp(&y.1.0).then(x.0.cmp(&y.0)));
        for i in 0..visits.len() {
            for j in i + 1..visits.len() {
                let (a, b) = (visits[i], visits[j]);
                if b.1.0 >= a.1.1 - 1e-12 {
                    break;
                }
                count += 1;
                let sooner = match &earliest {
                    Some(Conflict::Collision { b: (_, (t, _)), .. }) => b.1.0 < *t,
                    _ => true,
                };
                if sooner {
                    earliest = Some(Conflict::Collision { node: n, a, b });
                }
            }
        }
    }
    (count, first.or(earliest))
}

/// The outcome of the search: a path for every micro-batch and what it cost to find.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Each micro-batch's plan (nodes and forward start times), by agent index.
    pub plans: Vec<Plan>,
    /// The schedule's iteration time as [`simulate`] computes it, in seconds.
    pub makespan: f64,
    /// High-level nodes expanded.
    pub expanded: usize,
    /// Conflict-free schedules found (the fastest was kept).
    pub solutions: usize,
}

impl Schedule {
    /// Every micro-batch's node path.
    pub fn paths(&self) -> Vec<Vec<usize>> {
        self.plans.iter().map(|p| p.nodes.clone()).collect()
    }
}

#[derive(Debug)]
struct SearchNode {
    plans: Vec<Arc<Plan>>,
    constraints: Vec<Arc<AgentConstraints>>,
    conflicts: usize,
    first: Option<Conflict>,
    makespan: f64,
    id: usize,
}

impl SearchNode {
    fn new(inst: &Instance, plans: Vec<Arc<Plan>>, constraints: Vec<Arc<AgentConstraints>>, id: usize) -> Self {
        let (conflicts, first) = conflicts(inst, &plans);
        let makespan = plans.iter().map(|p| p.cost).fold(0.0, f64::max);
        Self { plans, constraints, conflicts, first, makespan, id }
    }
}

impl PartialEq for SearchNode {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for SearchNode {}
impl PartialOrd for SearchNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SearchNode {
    fn cmp(&self, other: &Self) -> Ordering {
        // Max-heap: fewest conflicts, then the shortest makespan, then the oldest node, pop first.
        other.conflicts.cmp(&self.conflicts).then(other.makespan.total_cmp(&self.makespan)).then(self.id.cmp(&other.id))
    }
}

/// What one [`Search::step`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Expanded a node with this many conflicts; the search goes on.
    Expanded {
        /// Conflicts of the expanded node.
        conflicts: usize,
    },
    /// Found a conflict-free schedule (the `n`-th); the search goes on until it has enough.
    Solution {
        /// How many so far.
        n: usize,
    },
    /// The search is over: call [`Search::finish`].
    Done,
}

/// Conflict-based search over one instance, one node expansion per [`Search::step`].
#[derive(Debug)]
pub struct Search {
    inst: Arc<Instance>,
    budget: Budget,
    open: BinaryHeap<SearchNode>,
    found: Vec<Vec<Arc<Plan>>>,
    expanded: usize,
    next_id: usize,
    least_conflicts: usize,
}

impl Search {
    /// Checks the instance and builds the root of the search by prioritised planning: micro-batches in
    /// order of release each plan around those planned before them — staying out of stages at their load
    /// limit and nodes at their memory, and waiting out their forward passes. Those become the root's
    /// constraints; the search then resolves whatever conflicts remain. (A root of independent plans
    /// sends every micro-batch to the same fastest nodes; on 100 nodes the search never untangles it.)
    pub fn new(inst: Arc<Instance>, budget: Budget) -> Result<Self> {
        Self::with_priority(inst, budget, 0)
    }

    /// As [`Search::new`], with micro-batches released at the same time planned in an order drawn from
    /// `seed` (0: by index). Different seeds give different, equally valid schedules.
    pub fn with_priority(inst: Arc<Instance>, budget: Budget, seed: u64) -> Result<Self> {
        inst.check()?;
        let n = inst.agents.len();
        let mut rank: Vec<usize> = (0..n).collect();
        if seed != 0 {
            use rand::SeedableRng;
            use rand::seq::SliceRandom;
            rank.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| inst.agents[a].release.total_cmp(&inst.agents[b].release).then(rank[a].cmp(&rank[b])));
        let mut plans: Vec<Option<Arc<Plan>>> = vec![None; n];
        let mut constraints: Vec<Arc<AgentConstraints>> = (0..n).map(|_| Arc::default()).collect();
        let mut stage_load = vec![0usize; inst.stages];
        let mut node_load = vec![0usize; inst.nodes.len()];
        let mut busy: Vec<(usize, f64, f64)> = Vec::new();
        let middle_visits = inst.rules.skippable_visits();
        for (i, a) in order.into_iter().enumerate() {
            // Stages that the micro-batches still to plan must all visit to reach their minimum load.
            let left = n - i;
            let mut deficits: Vec<(usize, usize)> = inst
                .rules
                .skippable(inst.stages)
                .map(|k| (inst.rules.min_stage_load.saturating_sub(stage_load[k]), k))
                .filter(|d| d.0 > 0)
                .collect();
            deficits.sort_by(|x, y| y.cmp(x));
            let tight = deficits.iter().map(|d| d.0).sum::<usize>() >= left * middle_visits;
            let require: Vec<usize> =
                deficits.iter().filter(|d| tight || d.0 >= left).take(middle_visits).map(|d| d.1).collect();
            let full = AgentConstraints {
                require,
                stages: inst.rules.skippable(inst.stages).filter(|&k| stage_load[k] >= inst.rules.stage_load).collect(),
                nodes: (0..inst.nodes.len()).filter(|&m| node_load[m] >= inst.nodes[m].memory).collect(),
                windows: busy.clone(),
            };
            let waits = AgentConstraints { windows: busy.clone(), ..AgentConstraints::default() };
            let (p, c) = [full, waits, AgentConstraints::default()]
                .into_iter()
                .find_map(|c| plan(&inst, a, &c, budget.astar).map(|p| (p, c)))
                .ok_or_else(|| {
                    Error::infeasible("path_rules", format!("micro-batch {a} has no path obeying the rules"))
                })?;
            for (i, &m) in p.nodes.iter().enumerate() {
                stage_load[inst.nodes[m].stage] += 1;
                node_load[m] += 1;
                let (from, to) = p.busy(&inst, i);
                busy.push((m, from, to));
            }
            plans[a] = Some(Arc::new(p));
            constraints[a] = Arc::new(c);
        }
        let plans: Vec<Arc<Plan>> = plans.into_iter().flatten().collect();
        let root = SearchNode::new(&inst, plans, constraints, 0);
        let least_conflicts = root.conflicts;
        let mut open = BinaryHeap::new();
        open.push(root);
        Ok(Self { inst, budget, open, found: Vec::new(), expanded: 0, next_id: 1, least_conflicts })
    }

    /// Expands the most promising node.
    pub fn step(&mut self) -> Step {
        if self.found.len() >= self.budget.solutions || self.expanded >= self.budget.nodes {
            return Step::Done;
        }
        let Some(node) = self.open.pop() else { return Step::Done };
        self.expanded += 1;
        self.least_conflicts = self.least_conflicts.min(node.conflicts);
        let Some(conflict) = node.first.clone() else {
            self.found.push(node.plans);
            return Step::Solution { n: self.found.len() };
        };
        // Each child re-plans some micro-batches under one more constraint each.
        let mut children: Vec<Vec<(usize, AgentConstraints)>> = Vec::new();
        let with = |a: usize, f: &dyn Fn(&mut AgentConstraints)| {
            let mut c = (*node.constraints[a]).clone();
            f(&mut c);
            (a, c)
        };
        match &conflict {
            // Over a limit by `excess`: child i moves the i-th group of `excess` micro-batches, slowest
            // first, that can still be planned without this stage (or node).
            Conflict::StageUnder { stage, deficit, others } => {
                let moves: Vec<_> = others
                    .iter()
                    .map(|&a| {
                        with(a, &|c| {
                            c.require.push(*stage);
                            c.stages.retain(|k| k != stage);
                        })
                    })
                    .collect();
                children = self.groups(moves, *deficit);
            }
            Conflict::StageLoad { stage, agents } => {
                let excess = agents.len() - self.inst.rules.stage_load;
                let moves: Vec<_> = agents.iter().map(|&a| with(a, &|c| c.stages.push(*stage))).collect();
                children = self.groups(moves, excess);
            }
            Conflict::Memory { node: n, agents } => {
                let excess = agents.len() - self.inst.nodes[*n].memory;
                let moves: Vec<_> = agents.iter().map(|&a| with(a, &|c| c.nodes.push(*n))).collect();
                children = self.groups(moves, excess);
            }
            // The later of the two waits for the earlier one (or goes elsewhere), as in the paper: one
            // child, so collisions are resolved without growing the tree.
            //
            // A second child repairs the later one around everybody else at once — it waits out every
            // other forward pass and stays out of full nodes and stages — which stops a crowded swarm
            // from trading one collision for the next.
            Conflict::Collision { node: n, a, b } => {
                children.push(vec![with(b.0, &|c| c.windows.push((*n, a.1.0, a.1.1)))]);
                let around = self.around(&node.plans, b.0);
                children.push(vec![with(b.0, &|c| {
                    c.windows.extend(&around.windows);
                    c.nodes.extend(&around.nodes);
                    c.stages.extend(around.stages.iter().filter(|k| !c.require.contains(k)));
                })]);
            }
        }
        for moves in children {
            let mut plans = node.plans.clone();
            let mut constraints = node.constraints.clone();
            let mut complete = true;
            for (a, c) in moves {
                match plan(&self.inst, a, &c, self.budget.astar) {
                    Some(p) => {
                        plans[a] = Arc::new(p);
                        constraints[a] = Arc::new(c);
                    }
                    None => complete = false,
                }
            }
            if complete {
                self.open.push(SearchNode::new(&self.inst, plans, constraints, self.next_id));
                self.next_id += 1;
            }
        }
        Step::Expanded { conflicts: node.conflicts }
    }

    /// What agent `me` must avoid to fit around every other plan: their forward passes, the nodes at
    /// their memory and the stages at their load limit.
    fn around(&self, plans: &[Arc<Plan>], me: usize) -> AgentConstraints {
        let inst = &self.inst;
        let mut stage_load = vec![0usize; inst.stages];
        let mut node_load = vec![0usize; inst.nodes.len()];
        let mut windows = Vec::new();
        for (_, p) in plans.iter().enumerate().filter(|(a, _)| *a != me) {
            for (i, &m) in p.nodes.iter().enumerate() {
                stage_load[inst.nodes[m].stage] += 1;
                node_load[m] += 1;
                let (from, to) = p.busy(inst, i);
                windows.push((m, from, to));
            }
        }
        AgentConstraints {
            stages: inst.rules.skippable(inst.stages).filter(|&k| stage_load[k] >= inst.rules.stage_load).collect(),
            require: Vec::new(),
            nodes: (0..inst.nodes.len()).filter(|&m| node_load[m] >= inst.nodes[m].memory).collect(),
            windows,
        }
    }

    /// Up to `branching` disjoint groups of `size` moves, in order, keeping only moves after which the
    /// micro-batch still has a path.
    fn groups(&self, moves: Vec<(usize, AgentConstraints)>, size: usize) -> Vec<Vec<(usize, AgentConstraints)>> {
        let mut groups = Vec::new();
        let mut current = Vec::new();
        for (a, c) in moves {
            if groups.len() == self.budget.branching {
                break;
            }
            if plan(&self.inst, a, &c, self.budget.astar).is_some() {
                current.push((a, c));
                if current.len() == size {
                    groups.push(std::mem::take(&mut current));
                }
            }
        }
        groups
    }

    /// Runs [`Search::step`] to the end.
    pub fn run(mut self) -> Result<Schedule> {
        while self.step() != Step::Done {}
        self.finish()
    }

    /// The fastest schedule found, by simulated makespan, or why there is none.
    pub fn finish(self) -> Result<Schedule> {
        let mut best: Option<Schedule> = None;
        let solutions = self.found.len();
        for plans in self.found {
            let plans: Vec<Plan> = plans.iter().map(|p| (**p).clone()).collect();
            let paths: Vec<Vec<usize>> = plans.iter().map(|p| p.nodes.clone()).collect();
            let makespan = simulate(&self.inst, &paths, None)?.makespan;
            if best.as_ref().is_none_or(|b| makespan < b.makespan) {
                best = Some(Schedule { plans, makespan, expanded: self.expanded, solutions });
            }
        }
        best.ok_or(Error::GaveUp {
            expanded: self.expanded,
            budget: self.budget.nodes,
            conflicts: self.least_conflicts,
        })
    }
}

/// Schedules `inst` with conflict-based search within `budget`.
pub fn schedule(inst: Arc<Instance>, budget: Budget) -> Result<Schedule> {
    Search::new(inst, budget)?.run()
}

/// `count` schedules of `inst`, each planning the micro-batches in a different priority order (the
/// first in index order), for a router that rotates through them step by step: every one obeys every
/// rule, and together they pair each stage with more different predecessors than one schedule does.
pub fn schedules(inst: Arc<Instance>, budget: Budget, count: usize) -> Result<Vec<Schedule>> {
    (0..count.max(1) as u64).map(|seed| Search::with_priority(inst.clone(), budget, seed)?.run()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::{Agent, Node, PathRules};

    /// Two data nodes, two nodes in each of two middle stages, one last node; every transfer 0.1 s.
    fn inst(memory: usize, stage_load: usize, min_stage_load: usize) -> Instance {
        let stage_of = [0, 0, 1, 1, 2, 2, 3];
        let nodes = stage_of.iter().map(|&stage| Node { stage, forward: 1.0, memory }).collect();
        Instance {
            stages: 4,
            nodes,
            transfer: vec![vec![0.1; 7]; 7],
            agents: vec![Agent { origin: 0, release: 0.0 }, Agent { origin: 1, release: 0.0 }],
            rules: PathRules { visit: 3, lead: 1, max_jump: 4, swap: true, stage_load, min_stage_load },
            backward_factor: 2.0,
        }
    }

    fn plan_of(nodes: &[usize], starts: &[f64]) -> Arc<Plan> {
        Arc::new(Plan { nodes: nodes.to_vec(), starts: starts.to_vec(), cost: 10.0 })
    }

    #[test]
    fn conflicts_are_found_in_the_papers_order() {
        // Both through node 2 at the same time, stage 2 unvisited.
        let plans = [plan_of(&[0, 2, 6], &[0.0, 1.1, 2.2]), plan_of(&[1, 2, 6], &[0.0, 1.1, 5.3])];
        let (_, first) = conflicts(&inst(2, 2, 1), &plans);
        assert!(matches!(first, Some(Conflict::StageUnder { stage: 2, deficit: 1, .. })), "{first:?}");
        let (_, first) = conflicts(&inst(2, 1, 0), &plans);
        assert!(matches!(first, Some(Conflict::StageLoad { stage: 1, .. })), "{first:?}");
        let (_, first) = conflicts(&inst(1, 2, 0), &plans);
        assert!(matches!(first, Some(Conflict::Memory { node: 2, .. })), "{first:?}");
        let (count, first) = conflicts(&inst(2, 2, 0), &plans);
        assert!(matches!(first, Some(Conflict::Collision { node: 2, .. })), "{first:?}");
        assert_eq!(count, 1);
        // Apart in time and space: none.
        let apart = [plan_of(&[0, 2, 6], &[0.0, 1.1, 2.2]), plan_of(&[1, 4, 6], &[0.0, 1.1, 5.3])];
        assert_eq!(conflicts(&inst(2, 2, 1), &apart), (0, None));
    }

    #[test]
    fn a_tight_instance_is_solved_without_conflicts() -> Result<()> {
        // Every node holds one micro-batch and every intermediate stage serves exactly one: the two
        // micro-batches must take different stages.
        let mut i = inst(1, 1, 1);
        i.nodes[6].memory = 2;
        let found = schedule(Arc::new(i.clone()), Budget::default())?;
        let paths = found.paths();
        assert_ne!(i.nodes[paths[0][1]].stage, i.nodes[paths[1][1]].stage, "{paths:?}");
        let plans: Vec<Arc<Plan>> = found.plans.iter().cloned().map(Arc::new).collect();
        assert_eq!(conflicts(&i, &plans).0, 0);
        Ok(())
    }
}
