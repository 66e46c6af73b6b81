//! Schedules one geo-distributed instance and prints the search statistics and makespans.
//!
//! `cargo run --release -p skippipe --example schedule_once -- [nodes] [skip ratio]`

use std::sync::Arc;
use std::time::Instant;

use skippipe::{Budget, geo_swarm, schedule, simulate};

fn main() -> Result<(), skippipe::Error> {
    let args: Vec<String> = std::env::args().collect();
    let nodes: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(42);
    let skip: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0.25);
    let swarm = geo_swarm(nodes, skip, 7)?;
    let (assignment, rules) = (&swarm.assignment, swarm.instance.rules);
    let agents = swarm.instance.agents.len();
    let inst = Arc::new(swarm.instance);
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
