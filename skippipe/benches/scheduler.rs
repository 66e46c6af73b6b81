//! How long the path search takes on geo-distributed swarms of 10, 20, 42 and 100 nodes in 8 stages
//! (42: the paper's instance, 7 data nodes x 6 micro-batches = 42), 25% of the stages skipped: node
//! assignment excluded, the whole search (root, conflict resolution, simulating the solutions) included.
//!
//! `cargo bench -p skippipe --bench scheduler`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use skippipe::{Budget, Instance, PathRules, Topology, Workload, assign_local_search, schedule};

/// `nodes` geo-distributed nodes in 8 stages (the data stage gets the remainder), one micro-batch per
/// node, 25% of the stages skipped.
fn instance(nodes: usize) -> Instance {
    let stages = 8;
    let per = nodes / stages;
    let mut partition = vec![per; stages];
    partition[0] += nodes - per * stages;
    let topology = Topology::geo_distributed(nodes, 7);
    // A 1B-class stage: 3 layers of d_model 2048 on 4 x 1024 tokens; activations of the same tokens.
    let flops = 2.0 * 3.0 * 12.0 * 2048.0 * 2048.0 * 4096.0;
    let micro_batches = nodes.div_ceil(partition[0]);
    let agents = partition[0] * micro_batches;
    let workload = Workload {
        stage_flops: vec![flops; stages],
        activation_bytes: 4096 * 2048 * 2,
        micro_batches,
        memory: agents.div_ceil(per) + 2,
    };
    let assignment = assign_local_search(&topology, &partition, &workload, 7, 2).expect("assignment");
    let rules = PathRules::new(stages, agents, 0.25, 1.25).expect("rules");
    topology.instance(&assignment, &workload, rules).expect("instance")
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cbs_schedule");
    group.sample_size(10);
    for nodes in [10, 20, 42, 100] {
        let inst = Arc::new(instance(nodes));
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &inst, |b, inst| {
            b.iter(|| black_box(schedule(inst.clone(), Budget::default()).expect("schedule")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
