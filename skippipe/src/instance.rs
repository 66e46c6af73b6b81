//! A scheduling instance: nodes assigned to stages, what they cost, the micro-batches to route, and the
//! rules every path obeys (SkipPipe §3, the constraints of `schedulers/CBS.py`).

use crate::error::{Error, Result};

/// One node of the swarm as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The stage it serves.
    pub stage: usize,
    /// Seconds for one micro-batch's forward pass of its stage.
    pub forward: f64,
    /// Micro-batches whose activations it can hold at once (C1).
    pub memory: usize,
}

/// One micro-batch (an agent of the path search): the data node it starts at, and when.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Agent {
    /// Its data node (a node of stage 0).
    pub origin: usize,
    /// Earliest start of its forward pass at the origin, in seconds (the `dt_k` offset of the paper).
    pub release: f64,
}

/// The path rules of SkipPipe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathRules {
    /// Stages every path visits, first and last included (`S` minus the skipped ones).
    pub visit: usize,
    /// Stages `0 .. lead` that every path visits first, in order, none skipped or swapped: 1 (only the
    /// data node's stage) in the paper's swarm; 2 when the first transformer stage after an embedding
    /// stage always runs, as in the released trainer (its stage 0's layers run for every micro-batch).
    pub lead: usize,
    /// Largest forward jump: the next stage is at most this far above the highest visited so far.
    pub max_jump: usize,
    /// Whether a path may visit one adjacent pair of stages in swapped order (`k + 1` then `k`).
    pub swap: bool,
    /// Most micro-batches one skippable stage may serve per iteration (C2, load balance).
    pub stage_load: usize,
    /// Fewest micro-batches every skippable stage must serve per iteration (C2: no stage is left
    /// untrained).
    pub min_stage_load: usize,
}

/// Which stages a skip ratio counts, and which every path keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkipBase {
    /// Stages the ratio is a fraction of: `round(ratio × counted)` stages are skipped.
    pub counted: usize,
    /// Leading stages every path visits in order ([`PathRules::lead`]).
    pub lead: usize,
}

impl SkipBase {
    /// The ratio over all `stages`, only the first (the data node's) and the last always visited: the
    /// paper's swarm, where stage 0 holds the embedding and the head.
    pub fn all(stages: usize) -> Self {
        Self { counted: stages, lead: 1 }
    }

    /// The ratio over the transformer stages of a pipeline whose first stage is the embedding alone and
    /// whose last is the head alone, with the first transformer stage always run (the released
    /// trainer's rule: 4 of 6 transformer stages visited at 33%).
    pub fn transformer(stages: usize) -> Self {
        Self { counted: stages.saturating_sub(2), lead: 2.min(stages.saturating_sub(1)).max(1) }
    }
}

impl PathRules {
    /// Stages a path visits for a skip ratio over all `stages`: `S − round(ratio · S)`, first and last
    /// always kept.
    pub fn visit_for(stages: usize, skip_ratio: f64) -> Result<usize> {
        Self::visit_over(stages, SkipBase::all(stages), skip_ratio)
    }

    /// Stages a path visits for a skip ratio over `base.counted` stages: `S − round(ratio · counted)`,
    /// the `base.lead` leading stages and the last always kept.
    pub fn visit_over(stages: usize, base: SkipBase, skip_ratio: f64) -> Result<usize> {
        if !(0.0..1.0).contains(&skip_ratio) {
            return Err(Error::infeasible("skip_ratio", format!("{skip_ratio} is not in [0, 1)")));
        }
        let skipped = (skip_ratio * base.counted as f64).round() as usize;
        let skippable = stages.saturating_sub(base.lead + 1);
        if skipped > 0 && skipped >= skippable {
            return Err(Error::infeasible(
                "skip_ratio",
                format!(
                    "skipping {skipped} of {stages} stages ({} always run) leaves paths no skippable stage to visit",
                    base.lead + 1
                ),
            ));
        }
        Ok(stages - skipped)
    }

    /// The rules for `stages` stages and `agents` micro-batches at `skip_ratio` of all stages (the
    /// paper's swarm: [`SkipBase::all`]); see [`PathRules::over`].
    pub fn new(stages: usize, agents: usize, skip_ratio: f64, load_slack: f64) -> Result<Self> {
        Self::over(stages, SkipBase::all(stages), agents, skip_ratio, load_slack)
    }

    /// The rules for `stages` stages and `agents` micro-batches at `skip_ratio` of `base.counted` stages:
    /// jumps of at most 4 stages (the released code's bound), one adjacent swap when stages are skipped
    /// (at ratio 0 every path keeps the standard order; only the node of each stage is chosen), and each
    /// skippable stage (`lead .. S − 1`) serving at most `load_slack` times its fair share of the visits
    /// (rounded up) and at least its fair share divided by `load_slack` (rounded down, at least one).
    pub fn over(stages: usize, base: SkipBase, agents: usize, skip_ratio: f64, load_slack: f64) -> Result<Self> {
        let visit = Self::visit_over(stages, base, skip_ratio)?;
        if !(load_slack.is_finite() && load_slack >= 1.0) {
            return Err(Error::infeasible("stage_load", format!("slack {load_slack} must be at least 1")));
        }
        let lead = base.lead.max(1);
        let skippable = stages.saturating_sub(lead + 1).max(1);
        let fair = (agents * visit.saturating_sub(lead + 1)) as f64 / skippable as f64;
        Ok(Self {
            visit,
            lead,
            max_jump: 4,
            swap: visit < stages,
            stage_load: (fair * load_slack).ceil().max(1.0) as usize,
            min_stage_load: (fair / load_slack).floor().max(1.0) as usize,
        })
    }

    /// The stages a path may skip (and whose load C2 balances): `lead .. stages − 1`.
    pub fn skippable(&self, stages: usize) -> std::ops::Range<usize> {
        self.lead.max(1).min(stages.saturating_sub(1))..stages.saturating_sub(1)
    }

    /// Visits each path makes to skippable stages.
    pub fn skippable_visits(&self) -> usize {
        self.visit.saturating_sub(self.lead.max(1) + 1)
    }
}

/// Everything the path search needs, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// Pipeline stages.
    pub stages: usize,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// `transfer[i][j]`: seconds to send one micro-batch's activations (or their gradient) from node `i`
    /// to node `j`.
    pub transfer: Vec<Vec<f64>>,
    /// The micro-batches.
    pub agents: Vec<Agent>,
    /// The path rules.
    pub rules: PathRules,
    /// A backward pass costs this many forward passes (2: two matrix products per forward one).
    pub backward_factor: f64,
}

impl Instance {
    /// The nodes of stage `k`.
    pub fn stage_nodes(&self, k: usize) -> impl Iterator<Item = usize> + '_ {
        self.nodes.iter().enumerate().filter(move |(_, n)| n.stage == k).map(|(i, _)| i)
    }

    /// How long node `n` is busy with one micro-batch's forward pass; on the last stage that includes
    /// the loss and the backward pass, which start at once.
    pub fn busy(&self, n: usize) -> f64 {
        let node = &self.nodes[n];
        if node.stage + 1 == self.stages { node.forward * (1.0 + self.backward_factor) } else { node.forward }
    }

    /// Checks that the instance is well formed — at least 2 stages, a square transfer matrix of finite
    /// non-negative times, nodes in range with finite costs and some memory — so that it can be simulated.
    pub fn check_shape(&self) -> Result<()> {
        let s = self.stages;
        let field = |f: &str, why: String| Error::Pipeline(pipeline::Error::config(f, why));
        if s < 2 {
            return Err(field("skippipe.stages", format!("{s}: a pipeline needs at least 2 stages")));
        }
        if self.transfer.len() != self.nodes.len() || self.transfer.iter().any(|row| row.len() != self.nodes.len()) {
            return Err(field("skippipe.transfer", format!("must be {0} x {0}", self.nodes.len())));
        }
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        if !self.transfer.iter().flatten().all(|&t| finite(t)) {
            return Err(field("skippipe.transfer", "every transfer time must be finite and non-negative".into()));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.stage >= s || !finite(n.forward) || n.memory == 0 {
                return Err(field(
                    &format!("skippipe.nodes[{i}]"),
                    format!("stage {} of {s}, forward {} s, memory {}", n.stage, n.forward, n.memory),
                ));
            }
        }
        if !(self.backward_factor.is_finite() && self.backward_factor >= 0.0) {
            return Err(field("skippipe.backward_factor", format!("{}", self.backward_factor)));
        }
        Ok(())
    }

    /// Checks the instance and that its constraints can hold together; the error names the first that
    /// cannot (so an impossible request fails at once instead of exhausting the search).
    pub fn check(&self) -> Result<()> {
        self.check_shape()?;
        let (s, rules) = (self.stages, self.rules);
        let finite = |x: f64| x.is_finite() && x >= 0.0;
        let field = |f: &str, why: String| Error::Pipeline(pipeline::Error::config(f, why));
        let count = |k: usize| self.stage_nodes(k).count();
        if let Some(k) = (0..s).find(|&k| count(k) == 0) {
            return Err(Error::infeasible("stages", format!("stage {k} has no node")));
        }
        if rules.visit < 2 || rules.visit > s || rules.lead == 0 || (rules.lead >= s && s > 1) || rules.visit < rules.lead + 1 {
            return Err(Error::infeasible(
                "skip_ratio",
                format!("paths of {} stages, the first {} always, in a {s}-stage pipeline", rules.visit, rules.lead),
            ));
        }
        if rules.max_jump == 0 || (rules.visit - 1) * rules.max_jump < s - 1 {
            return Err(Error::infeasible(
                "max_jump",
                format!("{} hops of at most {} stages cannot reach stage {}", rules.visit - 1, rules.max_jump, s - 1),
            ));
        }
        let a = self.agents.len();
        if a == 0 {
            return Err(field("skippipe.agents", "no micro-batches to schedule".into()));
        }
        for (k, agent) in self.agents.iter().enumerate() {
            if self.nodes.get(agent.origin).is_none_or(|n| n.stage != 0) || !finite(agent.release) {
                return Err(field(
                    &format!("skippipe.agents[{k}]"),
                    format!("origin {} must be a stage-0 node, release {} s", agent.origin, agent.release),
                ));
            }
        }
        // C1 at the ends: every micro-batch is held by its origin and by one last-stage node.
        for n in self.stage_nodes(0) {
            let held = self.agents.iter().filter(|ag| ag.origin == n).count();
            if held > self.nodes[n].memory {
                return Err(Error::infeasible(
                    "memory",
                    format!("data node {n} starts {held} micro-batches but holds {}", self.nodes[n].memory),
                ));
            }
        }
        let capacity = |k: usize| self.stage_nodes(k).map(|n| self.nodes[n].memory).sum::<usize>();
        if capacity(s - 1) < a {
            return Err(Error::infeasible(
                "memory",
                format!("{a} micro-batches but the last stage's nodes hold {} in all", capacity(s - 1)),
            ));
        }
        // C1 at the leading stages: every micro-batch visits each of them.
        if let Some(k) = (1..rules.lead.min(s - 1)).find(|&k| capacity(k) < a) {
            return Err(Error::infeasible(
                "memory",
                format!("{a} micro-batches all visit stage {k}, but its nodes hold {} in all", capacity(k)),
            ));
        }
        // C1 + C2 in the middle: the visits the paths must make have to fit.
        let skippable = rules.skippable(s);
        if !skippable.is_empty() {
            let needed = a * rules.skippable_visits();
            let room: usize = skippable.clone().map(|k| capacity(k).min(rules.stage_load)).sum();
            if room < needed {
                return Err(Error::infeasible(
                    "memory",
                    format!(
                        "{a} paths through {} skippable stages make {needed} visits, but memory and the stage load \
                         limit ({}) leave room for {room}",
                        rules.skippable_visits(),
                        rules.stage_load
                    ),
                ));
            }
            if needed < skippable.len() * rules.min_stage_load || rules.min_stage_load > rules.stage_load {
                return Err(Error::infeasible(
                    "skip_ratio",
                    format!(
                        "{needed} visits cannot give all {} skippable stages at least {} each (at most {})",
                        skippable.len(),
                        rules.min_stage_load,
                        rules.stage_load
                    ),
                ));
            }
        } else if rules.visit != s {
            return Err(Error::infeasible("skip_ratio", format!("a {s}-stage pipeline with {} leading stages has no stage to skip", rules.lead)));
        }
        Ok(())
    }
}

/// Checks one path (node indices) against the rules; `Err` says which rule it breaks.
pub fn check_path(inst: &Instance, agent: usize, path: &[usize]) -> std::result::Result<(), String> {
    let s = inst.stages;
    if agent >= inst.agents.len() || path.iter().any(|&n| n >= inst.nodes.len()) {
        return Err(format!("agent {agent} or a node of {path:?} does not exist"));
    }
    let stages: Vec<usize> = path.iter().map(|&n| inst.nodes[n].stage).collect();
    if path.first() != Some(&inst.agents[agent].origin) {
        return Err(format!("path {path:?} does not start at its origin {}", inst.agents[agent].origin));
    }
    if stages.last() != Some(&(s - 1)) {
        return Err(format!("stages {stages:?} do not end at the last stage"));
    }
    if stages.len() != inst.rules.visit {
        return Err(format!("stages {stages:?}: {} stages, the rules say {}", stages.len(), inst.rules.visit));
    }
    if stages.len() < inst.rules.lead || stages.iter().take(inst.rules.lead).enumerate().any(|(i, &k)| i != k) {
        return Err(format!("stages {stages:?} do not start with the {} leading stages in order", inst.rules.lead));
    }
    let mut seen = vec![false; s];
    let (mut frontier, mut swaps) = (0usize, 0usize);
    for (i, &k) in stages.iter().enumerate() {
        if std::mem::replace(&mut seen[k], true) {
            return Err(format!("stages {stages:?} visit {k} twice"));
        }
        if i == 0 {
            continue;
        }
        if k > frontier {
            if k - frontier > inst.rules.max_jump {
                return Err(format!("stages {stages:?} jump from {frontier} to {k}"));
            }
            frontier = k;
        } else {
            swaps += 1;
            if !inst.rules.swap || swaps > 1 || k + 1 != frontier || stages[i - 1] != frontier || k < inst.rules.lead {
                return Err(format!("stages {stages:?}: {k} after {frontier} is not the one adjacent swap allowed"));
            }
        }
    }
    Ok(())
}
