//! One iteration's timeline for a set of paths (SkipPipe's `run_simulation`): compute from the nodes'
//! forward times, transfers from the link model, and the pipeline runtime's order of work — each node
//! runs its forward passes in the order their activations arrive, one at a time, and its backward passes
//! once its forward passes are done (GPipe); a last-stage node computes the loss and the backward pass
//! right after the forward one. A node that fails mid-iteration loses every micro-batch that needs it
//! afterwards; the others complete.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use crate::error::{Error, Result};
use crate::instance::Instance;

/// One stretch of work on a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Work {
    /// The node.
    pub node: usize,
    /// The micro-batch.
    pub agent: usize,
    /// Start, in seconds.
    pub start: f64,
    /// End, in seconds.
    pub end: f64,
    /// A backward pass (else a forward one; on a last-stage node, forward, loss and backward).
    pub backward: bool,
}

/// What happened in one iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// When the last surviving micro-batch's backward pass finished at its origin, in seconds.
    pub makespan: f64,
    /// Every stretch of work, in the order it started.
    pub work: Vec<Work>,
    /// Each micro-batch's completion time; `None` if a failure lost it.
    pub completed: Vec<Option<f64>>,
}

impl Timeline {
    /// The micro-batches a failure lost.
    pub fn lost(&self) -> Vec<usize> {
        self.completed.iter().enumerate().filter(|(_, c)| c.is_none()).map(|(a, _)| a).collect()
    }

    /// Time the nodes spent computing over time they were held for the iteration (from 0 to the
    /// makespan), averaged over nodes that did any work.
    pub fn utilisation(&self, nodes: usize) -> f64 {
        let mut busy = vec![0.0; nodes];
        for w in &self.work {
            busy[w.node] += w.end - w.start;
        }
        let used: Vec<f64> = busy.into_iter().filter(|&b| b > 0.0).collect();
        if used.is_empty() || self.makespan <= 0.0 {
            return 0.0;
        }
        used.iter().sum::<f64>() / (used.len() as f64 * self.makespan)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The node finished its running task.
    Done,
    /// Something changed that may let the node start a task.
    Wake,
    /// Activations arrive.
    Forward,
    /// A gradient arrives.
    Backward,
}

/// An event: at `time`, `kind` for `agent` at `hop` of its path (for `Done`, the node finished its task).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Event {
    time: f64,
    seq: u64,
    kind: Kind,
    agent: usize,
    hop: usize,
}

impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.time.total_cmp(&other.time).then(self.kind.cmp(&other.kind)).then(self.seq.cmp(&other.seq))
    }
}

#[derive(Debug, Default)]
struct NodeState {
    /// Ready forward and backward tasks: (arrival, agent, hop).
    forward: BTreeSet<(u64, usize, usize)>,
    backward: BTreeSet<(u64, usize, usize)>,
    /// Forward passes still to run here.
    forwards_left: usize,
    /// The task running, if any: (agent, hop, backward).
    running: Option<(usize, usize, bool)>,
}

/// Simulates one iteration of `paths` (node indices per micro-batch, as the scheduler gives them) on
/// `inst`; `failure` = `(node, time)` kills that node at that time.
pub fn simulate(inst: &Instance, paths: &[Vec<usize>], failure: Option<(usize, f64)>) -> Result<Timeline> {
    inst.check_shape()?;
    if paths.len() != inst.agents.len() {
        return Err(Error::Pipeline(pipeline::Error::config(
            "skippipe.paths",
            format!("{} paths for {} micro-batches", paths.len(), inst.agents.len()),
        )));
    }
    for (a, p) in paths.iter().enumerate() {
        if p.is_empty() || p.iter().any(|&n| n >= inst.nodes.len()) || p[0] != inst.agents[a].origin {
            return Err(Error::Pipeline(pipeline::Error::config(
                "skippipe.paths",
                format!("path {a} {p:?} must start at its origin and name existing nodes"),
            )));
        }
    }
    let bf = inst.backward_factor;
    let mut nodes: Vec<NodeState> = (0..inst.nodes.len()).map(|_| NodeState::default()).collect();
    for p in paths {
        for &n in p {
            nodes[n].forwards_left += 1;
        }
    }
    let mut events = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |events: &mut BinaryHeap<Reverse<Event>>, time: f64, kind: Kind, agent: usize, hop: usize| {
        seq += 1;
        events.push(Reverse(Event { time, seq, kind, agent, hop }));
    };
    for (a, agent) in inst.agents.iter().enumerate() {
        push(&mut events, agent.release, Kind::Forward, a, 0);
    }
    let mut completed = vec![None; paths.len()];
    let mut work = Vec::new();
    let mut arrivals = 0u64;
    while let Some(Reverse(ev)) = events.pop() {
        let now = ev.time;
        let node = paths[ev.agent][ev.hop];
        match ev.kind {
            Kind::Forward | Kind::Backward => {
                arrivals += 1;
                let task = (arrivals, ev.agent, ev.hop);
                if ev.kind == Kind::Forward {
                    nodes[node].forward.insert(task);
                } else {
                    nodes[node].backward.insert(task);
                }
            }
            Kind::Done => {
                let Some((a, hop, backward)) = nodes[node].running.take() else { continue };
                let path = &paths[a];
                if !backward && hop + 1 < path.len() {
                    let next = path[hop + 1];
                    push(&mut events, now + inst.transfer[node][next], Kind::Forward, a, hop + 1);
                } else if hop == 0 {
                    completed[a] = Some(now);
                } else {
                    let prev = path[hop - 1];
                    push(&mut events, now + inst.transfer[node][prev], Kind::Backward, a, hop - 1);
                }
            }
            Kind::Wake => {}
        }
        // Start whatever became startable on this node.
        let state = &mut nodes[node];
        if state.running.is_some() {
            continue;
        }
        let next = if let Some(&t) = state.forward.iter().next() {
            state.forward.remove(&t);
            Some((t, false))
        } else if state.forwards_left == 0 {
            state.backward.iter().next().copied().map(|t| {
                state.backward.remove(&t);
                (t, true)
            })
        } else {
            None
        };
        let Some(((_, a, hop), backward)) = next else { continue };
        let duration = if backward { bf * inst.nodes[node].forward } else { inst.busy(node) };
        if !backward {
            state.forwards_left -= 1;
        }
        let end = now + duration;
        if failure.is_some_and(|(f, at)| f == node && end > at) {
            // The node is gone before this task would finish: the micro-batch is lost. Nodes further on
            // its path will not see its forward pass (one of them may have been waiting only for it).
            if !backward {
                for (j, &later) in paths[a].iter().enumerate().skip(hop + 1) {
                    nodes[later].forwards_left -= 1;
                    push(&mut events, now, Kind::Wake, a, j);
                }
            }
            // The dead node goes on failing whatever reaches it.
            push(&mut events, now, Kind::Wake, a, hop);
            continue;
        }
        nodes[node].running = Some((a, hop, backward));
        work.push(Work { node, agent: a, start: now, end, backward });
        push(&mut events, end, Kind::Done, a, hop);
    }
    let makespan = completed.iter().flatten().copied().fold(0.0, f64::max);
    Ok(Timeline { makespan, work, completed })
}
