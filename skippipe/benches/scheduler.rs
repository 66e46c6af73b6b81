//! How long the path search takes on geo-distributed swarms of 10, 20, 42 and 100 nodes in 8 stages
//! (42: the paper's instance, 7 data nodes x 6 micro-batches = 42), 25% of the stages skipped: node
//! assignment excluded, the whole search (root, conflict resolution, simulating the solutions) included.
//!
//! `cargo bench -p skippipe --bench scheduler`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use skippipe::{Budget, geo_swarm, schedule};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("cbs_schedule");
    group.sample_size(10);
    for nodes in [10, 20, 42, 100] {
        let inst = Arc::new(geo_swarm(nodes, 0.25, 7).expect("instance").instance);
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &inst, |b, inst| {
            b.iter(|| black_box(schedule(inst.clone(), Budget::default()).expect("schedule")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
