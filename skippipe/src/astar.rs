//! The low level of the path search: a time-aware A* for one micro-batch (SkipPipe's
//! `a_star_modified.py`). It picks the stages to visit (skips, at most one adjacent swap) and the node of
//! each, under the constraints the high level ([`crate::cbs`]) has placed on this micro-batch: stages and
//! nodes it may not use, and time windows during which it may not run a forward pass on a node (it waits
//! outside instead).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::instance::Instance;

/// What the high level forbids one micro-batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentConstraints {
    /// Stages it may not visit (C2, too many visits).
    pub stages: Vec<usize>,
    /// Stages it must visit (C2, too few visits).
    pub require: Vec<usize>,
    /// Nodes it may not visit (C1).
    pub nodes: Vec<usize>,
    /// `(node, from, to)`: it may not be busy on `node` during `[from, to)` (C3).
    pub windows: Vec<(usize, f64, f64)>,
}

impl AgentConstraints {
    /// The earliest time `≥ t` at which a stay of `busy` seconds on `node` overlaps none of the windows.
    pub fn earliest_start(&self, node: usize, mut t: f64, busy: f64) -> f64 {
        loop {
            let clash = self.windows.iter().filter(|w| w.0 == node).find(|w| t < w.2 && w.1 < t + busy);
            match clash {
                Some(w) => t = w.2,
                None => return t,
            }
        }
    }
}

/// One micro-batch's planned path: the nodes in order, when its forward pass starts on each, and when
/// its backward pass would be back at the origin if nothing else ran (the A* cost).
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Node indices, origin first, a last-stage node last.
    pub nodes: Vec<usize>,
    /// Start of the forward pass on each node, in seconds.
    pub starts: Vec<f64>,
    /// Completion time of the whole forward-and-backward trip, in seconds.
    pub cost: f64,
}

impl Plan {
    /// The interval `[start, end)` during which the plan keeps node `nodes[i]` busy with its forward pass.
    pub fn busy(&self, inst: &Instance, i: usize) -> (f64, f64) {
        (self.starts[i], self.starts[i] + inst.busy(self.nodes[i]))
    }
}

/// A* search state: where the micro-batch is and what it may still do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    node: usize,
    /// Stages visited so far, this node's included.
    hops: usize,
    /// Whether the one adjacent swap has been used.
    swapped: bool,
    /// Whether this node is the lower stage of that swap (its stage is `frontier − 1`).
    behind: bool,
    /// Whether stage `frontier − 1` has been visited.
    below: bool,
}

#[derive(Debug)]
struct Open {
    priority: f64,
    /// Time the forward pass on this node ends.
    forward_end: f64,
    /// Backward seconds accumulated along the path (compute plus transfers back).
    backward: f64,
    key: Key,
    /// Index into the arena of visited states (for the path).
    at: usize,
}

impl PartialEq for Open {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Open {}
impl PartialOrd for Open {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Open {
    fn cmp(&self, other: &Self) -> Ordering {
        // Min-heap on priority; ties go to the longer path, then the smaller arena index (determinism).
        other.priority.total_cmp(&self.priority).then(self.key.hops.cmp(&other.key.hops)).then(other.at.cmp(&self.at))
    }
}

/// The cheapest path of `agent` under `constraints`, or `None` if there is none (within `budget` state
/// expansions).
pub fn plan(inst: &Instance, agent: usize, constraints: &AgentConstraints, budget: usize) -> Option<Plan> {
    let (s, rules) = (inst.stages, inst.rules);
    let bf = inst.backward_factor;
    let origin = inst.agents[agent].origin;
    if constraints.nodes.contains(&origin) {
        return None;
    }
    // Admissible heuristic: each remaining hop costs at least the cheapest forward + backward + transfers.
    let min_transfer = inst.transfer.iter().flatten().copied().fold(f64::INFINITY, f64::min);
    let min_forward = inst.nodes.iter().map(|n| n.forward).fold(f64::INFINITY, f64::min);
    let per_hop = min_forward * (1.0 + bf) + 2.0 * min_transfer;
    let allowed_node = |n: usize| !constraints.nodes.contains(&n);
    let allowed_stage = |k: usize| !constraints.stages.contains(&k);
    let required = |k: usize| constraints.require.contains(&k);

    // Arena of expanded states: (node, forward start, parent).
    let mut arena: Vec<(usize, f64, Option<usize>)> = Vec::new();
    let mut best: HashMap<Key, f64> = HashMap::new();
    let mut open = BinaryHeap::new();
    let start = constraints.earliest_start(origin, inst.agents[agent].release, inst.busy(origin));
    let key = Key { node: origin, hops: 1, swapped: false, behind: false, below: false };
    arena.push((origin, start, None));
    let forward_end = start + inst.busy(origin);
    let backward = bf * inst.nodes[origin].forward;
    let h = (rules.visit - 1) as f64 * per_hop;
    open.push(Open { priority: forward_end + backward + h, forward_end, backward, key, at: 0 });
    let mut expanded = 0;
    while let Some(cur) = open.pop() {
        let Key { node: u, hops, swapped, behind, below } = cur.key;
        let su = inst.nodes[u].stage;
        if su == s - 1 {
            if hops != rules.visit {
                continue;
            }
            // Walk the arena back to the origin.
            let (mut nodes, mut starts, mut at) = (Vec::new(), Vec::new(), Some(cur.at));
            while let Some(i) = at {
                nodes.push(arena[i].0);
                starts.push(arena[i].1);
                at = arena[i].2;
            }
            nodes.reverse();
            starts.reverse();
            // On the last node the backward pass already ran (it is part of its busy time).
            return Some(Plan { nodes, starts, cost: cur.forward_end + cur.backward });
        }
        expanded += 1;
        if expanded > budget {
            return None;
        }
        let frontier = su + usize::from(behind);
        let remaining = rules.visit - hops; // hops still to make after this node
        let mut next: Vec<(usize, bool, bool, bool)> = Vec::new(); // (stage, swapped, behind, below)
        // The leading stages come first, in order; then any jump of at most `max_jump`.
        let reach = if hops < rules.lead { frontier + 1 } else { frontier + rules.max_jump };
        for k in frontier + 1..=reach.min(s - 1) {
            next.push((k, swapped, false, k == frontier + 1));
        }
        // The swap goes back to `frontier − 1`, which must be a skippable stage.
        if rules.swap && !swapped && !below && frontier > rules.lead && frontier < s - 1 {
            next.push((frontier - 1, true, true, true));
        }
        for (k, now_swapped, now_behind, now_below) in next {
            if !allowed_stage(k) {
                continue;
            }
            // A required stage may not be left behind: moving forward leaves `frontier − 1` (if not
            // visited) and `frontier + 1 ..= k − 2` for good (`k − 1` can still come by the swap).
            if k > frontier
                && ((frontier >= 1 && !below && required(frontier - 1))
                    || (frontier + 1..k.saturating_sub(1)).any(required)
                    || (k - 1 > frontier && required(k - 1) && (swapped || !rules.swap || k == s - 1)))
            {
                continue;
            }
            // The last stage ends the path: only as the final hop, and the final hop must be it.
            if (k == s - 1) != (remaining == 1) {
                continue;
            }
            // Enough stages must be left above the new frontier to fill the remaining hops.
            let new_frontier = k.max(frontier);
            let above = s - 1 - new_frontier;
            let back = usize::from(rules.swap && !now_swapped && !now_below && new_frontier > rules.lead);
            if remaining > 1 && (above + back < remaining - 1 || above > (remaining - 1) * rules.max_jump) {
                continue;
            }
            for n in inst.stage_nodes(k).filter(|&n| allowed_node(n)) {
                let arrival = cur.forward_end + inst.transfer[u][n];
                let busy = inst.busy(n);
                let start = constraints.earliest_start(n, arrival, busy);
                let key = Key { node: n, hops: hops + 1, swapped: now_swapped, behind: now_behind, below: now_below };
                let forward_end = start + busy;
                let last = k == s - 1;
                let backward = cur.backward + inst.transfer[n][u] + if last { 0.0 } else { bf * inst.nodes[n].forward };
                let g = forward_end + backward;
                if best.get(&key).is_some_and(|&b| b <= g) {
                    continue;
                }
                best.insert(key, g);
                arena.push((n, start, Some(cur.at)));
                let h = (rules.visit - hops - 1) as f64 * per_hop;
                open.push(Open { priority: g + h, forward_end, backward, key, at: arena.len() - 1 });
            }
        }
    }
    None
}
