//! Schedules one geo-distributed instance and prints the search statistics and makespans.
//!
//! `cargo run --release -p skippipe --example schedule_once -- [nodes] [skip ratio]`

use std::sync::Arc;
use std::time::Instant;

use skippipe::{Budget, PathRules, Topology, Workload, assign_local_search, schedule, simulate};

fn main() -> Result<(), skippipe::Error> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(42);
    let skip: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0.25);
    let stages = 8;
    let per = nodes / stages;
    let mut partition = vec![per; stages];
    partition[0] += nodes - per * stages;
    let topology = Topology::geo_distributed(nodes, 7);
    let flops = 2.0 * 3.0 * 12.0 * 2048.0 * 2048.0 * 4096.0;
    let micro_batches = nodes.div_ceil(partition[0]);
    let agents = partition[0] * micro_batches;
    let workload = Workload {
        stage_flops: vec![flops; stages],
        activation_bytes: 4096 * 2048 * 2,
        micro_batches,
        memory: agents.div_ceil(per) + 2,
    };
    let assignment = assign_local_search(&topology, &partition, &workload, 7, 2)?;
    let rules = PathRules::new(stages, agents, skip, 1.25)?;
    let inst = Arc::new(topology.instance(&assignment, &workload, rules)?);
    let baseline = simulate(&inst, &assignment.fixed_rows(&inst), None)?;
    let t0 = Instant::now();
    let found = schedule(inst.clone(), Budget::default())?;
    println!(
        "{nodes} nodes, {agents} micro-batches, visit {}: searched {:.3} s, {} nodes expanded, {} solutions; \
         makespan {:.3} s vs fixed rows {:.3} s",
        rules.visit,
        t0.elapsed().as_secs_f64(),
        found.expanded,
        found.solutions,
        found.makespan,
        baseline.makespan
    );
    Ok(())
}
