//! What SkipPipe schedules on: a [`World`] of nodes (their profiles and regions), which node serves which
//! stage (the assignment), and the [`Instance`] that follows from a model's costs.
//!
//! The paper assigns nodes to stages with a genetic algorithm (GCMA, from DT-FM) over the latency and
//! bandwidth matrix. Here two simpler methods, compared in the reproduction's report: a seeded random
//! assignment, and a local search that swaps nodes between stages while that lowers
//! [`assignment_cost`] (the slowest node of every stage plus, for every node, its fastest link to the
//! next stage).

use genrl::World;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::instance::{Agent, Instance, Node, PathRules};

/// What one micro-batch costs: FLOPs of each stage's forward pass, bytes of the activations sent
/// between stages, micro-batches per data node and per-node memory (in micro-batches).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Forward FLOPs of one micro-batch through each stage.
    pub stage_flops: Vec<f64>,
    /// Bytes of one micro-batch's activations (and of their gradient).
    pub activation_bytes: usize,
    /// Micro-batches each data node (stage-0 node) starts per iteration.
    pub micro_batches: usize,
    /// Micro-batches a node can hold at once.
    pub memory: usize,
}

/// Forward FLOPs of one micro-batch through a LLaMa-1B-class stage: 3 blocks of width 2048 on 4 × 1024
/// tokens (`2 · 12 · d² · tokens` per block).
pub const BILLION_STAGE_FLOPS: f64 = 2.0 * 3.0 * 12.0 * 2048.0 * 2048.0 * 4096.0;

/// Bytes of that micro-batch's activations between stages: 4 × 1024 tokens × 2048 in 16-bit floats.
pub const BILLION_STAGE_ACTIVATION_BYTES: usize = 4096 * 2048 * 2;

/// A SkipPipe-sized swarm with its scheduling instance (see [`geo_swarm`]).
#[derive(Debug, Clone)]
pub struct GeoSwarm {
    /// The nodes.
    pub world: World,
    /// Which stage each serves.
    pub assignment: Assignment,
    /// What the scheduler sees.
    pub instance: Instance,
}

/// `nodes` geo-distributed nodes (seeded) in 8 stages of LLaMa-1B-class cost, the data stage taking the
/// remainder; each data node starts enough micro-batches for about one per node, every node holds two
/// more than its share, stages are assigned by local search, and `skip_ratio` of the stages are skipped.
/// With 42 nodes: the paper's 42-node, 8-stage, 42-micro-batch instance. For benchmarks and examples.
pub fn geo_swarm(nodes: usize, skip_ratio: f64, seed: u64) -> Result<GeoSwarm> {
    let stages = 8;
    let per = nodes / stages;
    let mut partition = vec![per; stages];
    partition[0] += nodes - per * stages;
    let world = World::geo_distributed(nodes, seed);
    let micro_batches = nodes.div_ceil(partition[0]);
    let agents = partition[0] * micro_batches;
    let workload = Workload {
        stage_flops: vec![BILLION_STAGE_FLOPS; stages],
        activation_bytes: BILLION_STAGE_ACTIVATION_BYTES,
        micro_batches,
        memory: agents.div_ceil(per.max(1)) + 2,
    };
    let assignment = assign_local_search(&world, &partition, &workload, seed, 2)?;
    let rules = PathRules::new(stages, agents, skip_ratio, 1.25)?;
    let instance = instance(&world, &assignment, &workload, rules)?;
    Ok(GeoSwarm { world, assignment, instance })
}

/// Seconds to send `bytes` from every node to every other ([`World::transfer_seconds`]).
fn transfer_matrix(world: &World, bytes: usize) -> Result<Vec<Vec<f64>>> {
    let n = world.len();
    let seconds = |i: usize, j: usize| Ok(world.transfer_seconds(i, j, bytes).map_err(pipeline::Error::from)?);
    (0..n).map(|i| (0..n).map(|j| seconds(i, j)).collect()).collect()
}

/// The scheduling instance of `assignment` on `world` for `workload` under `rules`. The micro-batches
/// are listed data node by data node (in slot order), `workload.micro_batches` each, and released one
/// forward pass apart at their data node.
pub fn instance(world: &World, assignment: &Assignment, workload: &Workload, rules: PathRules) -> Result<Instance> {
    let stages = assignment.stages();
    if assignment.stage_of.len() != world.len() {
        return Err(Error::Pipeline(pipeline::Error::config(
            "skippipe.assignment",
            format!("{} stages given for {} nodes", assignment.stage_of.len(), world.len()),
        )));
    }
    if workload.stage_flops.len() != stages {
        return Err(Error::Pipeline(pipeline::Error::config(
            "skippipe.workload",
            format!("{} stage costs for {stages} stages", workload.stage_flops.len()),
        )));
    }
    let nodes: Vec<Node> = (0..world.len())
        .map(|n| {
            let stage = assignment.stage_of[n];
            let forward = workload.stage_flops[stage] / world.profiles[n].flops;
            Node { stage, forward, memory: workload.memory }
        })
        .collect();
    let mut agents = Vec::new();
    for &origin in &assignment.slots(0) {
        for m in 0..workload.micro_batches {
            agents.push(Agent { origin, release: m as f64 * nodes[origin].forward });
        }
    }
    Ok(Instance {
        stages,
        nodes,
        transfer: transfer_matrix(world, workload.activation_bytes)?,
        agents,
        rules,
        backward_factor: 2.0,
    })
}

/// Which stage every node serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The stage of each node.
    pub stage_of: Vec<usize>,
}

impl Assignment {
    /// Stages.
    pub fn stages(&self) -> usize {
        self.stage_of.iter().max().map_or(0, |m| m + 1)
    }

    /// The nodes of stage `k`, in slot order (ascending index); slot `r` is replica `r` of the stage in
    /// the pipeline grid.
    pub fn slots(&self, k: usize) -> Vec<usize> {
        (0..self.stage_of.len()).filter(|&n| self.stage_of[n] == k).collect()
    }

    /// `(stage, slot)` of node `n`.
    pub fn hop(&self, n: usize) -> (usize, usize) {
        let k = self.stage_of[n];
        (k, self.stage_of[..n].iter().filter(|&&s| s == k).count())
    }

    /// Checks that every stage of `partition` got exactly its number of nodes.
    pub fn check(&self, partition: &[usize]) -> Result<()> {
        for (k, &size) in partition.iter().enumerate() {
            let got = self.slots(k).len();
            if got != size {
                return Err(Error::Pipeline(pipeline::Error::config(
                    "skippipe.assignment",
                    format!("stage {k} has {got} nodes, the partition says {size}"),
                )));
            }
        }
        Ok(())
    }

    /// The grid of a uniform pipeline (`stages × replicas`, every stage `replicas` nodes) placed on
    /// `world`: worker `stage × replicas + slot` is the node in that slot.
    pub fn place(&self, world: &World, replicas: usize) -> Result<World> {
        let stages = self.stages();
        self.check(&vec![replicas; stages])?;
        let order: Vec<usize> = (0..stages).flat_map(|k| self.slots(k)).collect();
        Ok(world.permuted(&order).map_err(pipeline::Error::from)?)
    }

    /// The standard pipeline's paths on this assignment: the micro-batches of the data node in slot
    /// `o` visit slot `o mod size` of every stage in order (one fixed row per data node).
    pub fn fixed_rows(&self, inst: &Instance) -> Vec<Vec<usize>> {
        let slots: Vec<Vec<usize>> = (0..self.stages()).map(|k| self.slots(k)).collect();
        inst.agents
            .iter()
            .map(|a| {
                let o = self.hop(a.origin).1;
                slots.iter().map(|s| s[o % s.len()]).collect()
            })
            .collect()
    }
}

fn check_partition(world: &World, partition: &[usize]) -> Result<()> {
    if partition.len() < 2 || partition.contains(&0) || partition.iter().sum::<usize>() != world.len() {
        return Err(Error::Pipeline(pipeline::Error::config(
            "skippipe.partition",
            format!(
                "{partition:?}: need at least 2 stages of at least one node each, {} nodes in all",
                world.len()
            ),
        )));
    }
    Ok(())
}

/// A seeded random assignment: nodes shuffled, then dealt out stage by stage.
pub fn assign_random(world: &World, partition: &[usize], seed: u64) -> Result<Assignment> {
    check_partition(world, partition)?;
    let mut order: Vec<usize> = (0..world.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut stage_of = vec![0; order.len()];
    let mut at = 0;
    for (k, &size) in partition.iter().enumerate() {
        for &n in &order[at..at + size] {
            stage_of[n] = k;
        }
        at += size;
    }
    Ok(Assignment { stage_of })
}

/// The cost the local search lowers: for every stage, its slowest node's forward time, plus the mean
/// over its nodes of their fastest transfer to a node of the next stage.
pub fn assignment_cost(world: &World, assignment: &Assignment, workload: &Workload) -> Result<f64> {
    let transfer = transfer_matrix(world, workload.activation_bytes)?;
    Ok(cost_of(world, assignment, workload, &transfer))
}

fn cost_of(world: &World, assignment: &Assignment, workload: &Workload, transfer: &[Vec<f64>]) -> f64 {
    let stages = assignment.stages();
    let slots: Vec<Vec<usize>> = (0..stages).map(|k| assignment.slots(k)).collect();
    let mut cost = 0.0;
    for k in 0..stages {
        let flops = workload.stage_flops.get(k).copied().unwrap_or(0.0);
        cost += slots[k].iter().map(|&n| flops / world.profiles[n].flops).fold(0.0, f64::max);
        if k + 1 < stages && !slots[k].is_empty() {
            let best = |i: usize| slots[k + 1].iter().map(|&j| transfer[i][j]).fold(f64::INFINITY, f64::min);
            cost += slots[k].iter().map(|&i| best(i)).sum::<f64>() / slots[k].len() as f64;
        }
    }
    cost
}

/// Local search from `restarts` seeded random assignments: swap the stages of two nodes whenever that
/// lowers [`assignment_cost`], until no swap does; the best result over the restarts.
pub fn assign_local_search(
    world: &World,
    partition: &[usize],
    workload: &Workload,
    seed: u64,
    restarts: usize,
) -> Result<Assignment> {
    let transfer = transfer_matrix(world, workload.activation_bytes)?;
    let mut best: Option<(f64, Assignment)> = None;
    for r in 0..restarts.max(1) as u64 {
        let mut current = assign_random(world, partition, seed.wrapping_add(r))?;
        let mut cost = cost_of(world, &current, workload, &transfer);
        let n = current.stage_of.len();
        loop {
            let mut improved = false;
            for i in 0..n {
                for j in i + 1..n {
                    if current.stage_of[i] == current.stage_of[j] {
                        continue;
                    }
                    current.stage_of.swap(i, j);
                    let c = cost_of(world, &current, workload, &transfer);
                    if c + 1e-12 < cost {
                        cost = c;
                        improved = true;
                    } else {
                        current.stage_of.swap(i, j);
                    }
                }
            }
            if !improved {
                break;
            }
        }
        if best.as_ref().is_none_or(|b| cost < b.0) {
            best = Some((cost, current));
        }
    }
    best.map(|b| b.1).ok_or_else(|| Error::Pipeline(pipeline::Error::config("skippipe.restarts", "no assignment")))
}
