//! The swarm SkipPipe schedules: nodes in regions with their devices, which node serves which stage
//! (the assignment), and the [`Instance`] that follows from a model's costs.
//!
//! The paper assigns nodes to stages with a genetic algorithm (GCMA, from DT-FM) over the latency and
//! bandwidth matrix. Here two simpler methods, compared in the reproduction's report: a seeded random
//! assignment, and a local search that swaps nodes between stages while that lowers
//! [`assignment_cost`] (the slowest node of every stage plus, for every node, its fastest link to the
//! next stage).

use genrl::DeviceProfile;
use pipeline::Placement;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use transport::sim::{LinkSpec, RegionTable};

use crate::error::{Error, Result};
use crate::instance::{Agent, Instance, Node, PathRules};

/// One node of the swarm.
#[derive(Debug, Clone, PartialEq)]
pub struct SwarmNode {
    /// Its region (a name in the topology's table).
    pub region: String,
    /// Its hardware.
    pub device: DeviceProfile,
}

/// Where the nodes are and how they are linked.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// The regions and the links between them.
    pub regions: RegionTable,
    /// The nodes.
    pub nodes: Vec<SwarmNode>,
}

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
    pub topology: Topology,
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
    let topology = Topology::geo_distributed(nodes, seed);
    let micro_batches = nodes.div_ceil(partition[0]);
    let agents = partition[0] * micro_batches;
    let workload = Workload {
        stage_flops: vec![BILLION_STAGE_FLOPS; stages],
        activation_bytes: BILLION_STAGE_ACTIVATION_BYTES,
        micro_batches,
        memory: agents.div_ceil(per.max(1)) + 2,
    };
    let assignment = assign_local_search(&topology, &partition, &workload, seed, 2)?;
    let rules = PathRules::new(stages, agents, skip_ratio, 1.25)?;
    let instance = topology.instance(&assignment, &workload, rules)?;
    Ok(GeoSwarm { topology, assignment, instance })
}

impl Topology {
    /// `n` nodes spread over the twelve regions of [`RegionTable::geo_distributed`] (seeded), with
    /// heterogeneous devices: a third H100-class, a third A10-class, a third A10-class at half speed.
    pub fn geo_distributed(n: usize, seed: u64) -> Self {
        let regions = RegionTable::geo_distributed();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut names: Vec<String> = regions.names().to_vec();
        names.shuffle(&mut rng);
        let devices = [DeviceProfile::h100(), DeviceProfile::a10(), slow_a10()];
        let nodes = (0..n)
            .map(|i| SwarmNode { region: names[i % names.len()].clone(), device: devices[(i / 2) % 3].clone() })
            .collect();
        Self { regions, nodes }
    }

    /// The link from node `i` to node `j`.
    pub fn link(&self, i: usize, j: usize) -> Result<LinkSpec> {
        let region = |n: usize| self.regions.index(&self.nodes[n].region).map_err(pipeline::Error::from);
        let (a, b) = (region(i)?, region(j)?);
        self.regions.link(a, b).ok_or_else(|| {
            Error::Pipeline(pipeline::Error::config(
                "skippipe.regions",
                format!("no link between {} and {}", self.nodes[i].region, self.nodes[j].region),
            ))
        })
    }

    /// Seconds to send `bytes` from node `i` to node `j`: latency plus bytes over bandwidth.
    pub fn transfer_time(&self, i: usize, j: usize, bytes: usize) -> Result<f64> {
        if i == j {
            return Ok(0.0);
        }
        let link = self.link(i, j)?;
        Ok(link.latency.as_secs_f64() + link.transfer_time(bytes).as_secs_f64())
    }

    fn transfer_matrix(&self, bytes: usize) -> Result<Vec<Vec<f64>>> {
        let n = self.nodes.len();
        (0..n).map(|i| (0..n).map(|j| self.transfer_time(i, j, bytes)).collect()).collect()
    }

    /// The scheduling instance of `assignment` for `workload` under `rules`. The micro-batches are
    /// listed data node by data node (in slot order), `workload.micro_batches` each, and released one
    /// forward pass apart at their data node.
    pub fn instance(&self, assignment: &Assignment, workload: &Workload, rules: PathRules) -> Result<Instance> {
        let stages = assignment.stages();
        if assignment.stage_of.len() != self.nodes.len() {
            return Err(Error::Pipeline(pipeline::Error::config(
                "skippipe.assignment",
                format!("{} stages given for {} nodes", assignment.stage_of.len(), self.nodes.len()),
            )));
        }
        if workload.stage_flops.len() != stages {
            return Err(Error::Pipeline(pipeline::Error::config(
                "skippipe.workload",
                format!("{} stage costs for {stages} stages", workload.stage_flops.len()),
            )));
        }
        let nodes: Vec<Node> = (0..self.nodes.len())
            .map(|n| {
                let stage = assignment.stage_of[n];
                let forward = workload.stage_flops[stage] / self.nodes[n].device.flops;
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
            transfer: self.transfer_matrix(workload.activation_bytes)?,
            agents,
            rules,
            backward_factor: 2.0,
        })
    }
}

fn slow_a10() -> DeviceProfile {
    let mut d = DeviceProfile::a10();
    d.name = "a10/2".into();
    d.flops /= 2.0;
    d
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

    /// The pipeline runtime's placement of a uniform grid (`stages × replicas`, every stage `replicas`
    /// nodes): worker `stage × replicas + slot` runs on the node in that slot.
    pub fn placement(&self, topology: &Topology, replicas: usize) -> Result<Placement> {
        let stages = self.stages();
        self.check(&vec![replicas; stages])?;
        let mut devices = Vec::with_capacity(stages * replicas);
        let mut region_of = Vec::with_capacity(stages * replicas);
        for k in 0..stages {
            for n in self.slots(k) {
                devices.push(topology.nodes[n].device.clone());
                region_of.push(topology.nodes[n].region.clone());
            }
        }
        Ok(Placement { devices, regions: topology.regions.clone(), region_of })
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

fn check_partition(topology: &Topology, partition: &[usize]) -> Result<()> {
    if partition.len() < 2 || partition.contains(&0) || partition.iter().sum::<usize>() != topology.nodes.len() {
        return Err(Error::Pipeline(pipeline::Error::config(
            "skippipe.partition",
            format!(
                "{partition:?}: need at least 2 stages of at least one node each, {} nodes in all",
                topology.nodes.len()
            ),
        )));
    }
    Ok(())
}

/// A seeded random assignment: nodes shuffled, then dealt out stage by stage.
pub fn assign_random(topology: &Topology, partition: &[usize], seed: u64) -> Result<Assignment> {
    check_partition(topology, partition)?;
    let mut order: Vec<usize> = (0..topology.nodes.len()).collect();
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
pub fn assignment_cost(topology: &Topology, assignment: &Assignment, workload: &Workload) -> Result<f64> {
    let transfer = topology.transfer_matrix(workload.activation_bytes)?;
    Ok(cost_of(topology, assignment, workload, &transfer))
}

fn cost_of(topology: &Topology, assignment: &Assignment, workload: &Workload, transfer: &[Vec<f64>]) -> f64 {
    let stages = assignment.stages();
    let slots: Vec<Vec<usize>> = (0..stages).map(|k| assignment.slots(k)).collect();
    let mut cost = 0.0;
    for k in 0..stages {
        let flops = workload.stage_flops.get(k).copied().unwrap_or(0.0);
        cost += slots[k].iter().map(|&n| flops / topology.nodes[n].device.flops).fold(0.0, f64::max);
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
    topology: &Topology,
    partition: &[usize],
    workload: &Workload,
    seed: u64,
    restarts: usize,
) -> Result<Assignment> {
    let transfer = topology.transfer_matrix(workload.activation_bytes)?;
    let mut best: Option<(f64, Assignment)> = None;
    for r in 0..restarts.max(1) as u64 {
        let mut current = assign_random(topology, partition, seed.wrapping_add(r))?;
        let mut cost = cost_of(topology, &current, workload, &transfer);
        let n = current.stage_of.len();
        loop {
            let mut improved = false;
            for i in 0..n {
                for j in i + 1..n {
                    if current.stage_of[i] == current.stage_of[j] {
                        continue;
                    }
                    current.stage_of.swap(i, j);
                    let c = cost_of(topology, &current, workload, &transfer);
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
