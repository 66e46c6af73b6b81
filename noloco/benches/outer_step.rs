//! One outer step on a 10M-parameter stage shard: NoLoCo (building the contribution `[φ, θ − φ]`, the
//! mean of a group of two, the modified Nesterov step), the same update alone on a mean that already
//! exists, and DiLoCo (pseudo-gradient, Nesterov step), each against a memcpy of two shards (80 MB).
//! The state is flat tensors on the CPU, updated one tensor op per term, as on any device. Prints
//! `RATIO` lines: time / memcpy time, measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use noloco::diloco::DiLoCoState;
use noloco::gossip::NoLoCoState;
use noloco::{DiLoCo, NoLoCo};
use pipeline::OuterState;
use pipeline::collective::mean_in_order;

const PARAMS: usize = 10_000_000;

fn vectors() -> (Tensor, Tensor) {
    let phi: Vec<f32> = (0..PARAMS).map(|i| (i % 997) as f32 * 1e-3).collect();
    let theta: Vec<f32> = phi.iter().enumerate().map(|(i, p)| p + (i % 13) as f32 * 1e-5).collect();
    let on_cpu = |v: Vec<f32>| Tensor::from_vec(v, PARAMS, &Device::Cpu).expect("tensor");
    (on_cpu(phi), on_cpu(theta))
}

fn noloco_step(state: &mut NoLoCoState, peer: &Tensor, theta: &Tensor) -> Tensor {
    let own = state.contribution(theta).expect("contribution");
    let mean = mean_in_order(own, &[peer]).expect("mean");
    state.finish(theta, &mean).expect("finish")
}

fn diloco_step(state: &mut DiLoCoState, theta: &Tensor) -> Tensor {
    let own = state.contribution(theta).expect("contribution");
    state.finish(theta, &own).expect("finish")
}

fn time(iters: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed() / iters
}

fn bench(c: &mut Criterion) {
    let (phi, theta) = vectors();
    let peer = Tensor::cat(&[&phi, &theta], 0).expect("peer");
    let mut group = c.benchmark_group("outer_step_10M");
    group.sample_size(10);
    let mut noloco = NoLoCoState::new(NoLoCo::default(), &phi).expect("state");
    let mut diloco = DiLoCoState::new(DiLoCo::default(), &phi).expect("state");
    group.bench_function("noloco", |b| b.iter(|| noloco_step(&mut noloco, black_box(&peer), &theta)));
    group.bench_function("diloco", |b| b.iter(|| diloco_step(&mut diloco, &theta)));
    // The update alone, on a group mean that already exists.
    group.bench_function("noloco_update_only", |b| b.iter(|| noloco.finish(&theta, black_box(&peer)).expect("finish")));
    let host: Vec<f32> = peer.to_vec1().expect("values");
    let mut dst = vec![0f32; 2 * PARAMS];
    group.bench_function("memcpy_2_shards", |b| b.iter(|| dst.copy_from_slice(black_box(&host))));
    group.finish();

    // The same, timed back to back for the ratio lines.
    let memcpy = time(10, || dst.copy_from_slice(black_box(&host)));
    let no = time(5, || drop(noloco_step(&mut noloco, black_box(&peer), &theta)));
    let di = time(5, || drop(diloco_step(&mut diloco, &theta)));
    let update = time(5, || drop(noloco.finish(&theta, black_box(&peer)).expect("finish")));
    println!("RATIO noloco_update_only / memcpy(2 shards) = {:.2}", update.as_secs_f64() / memcpy.as_secs_f64());
    println!("RATIO noloco_outer_step / memcpy(2 shards) = {:.2}", no.as_secs_f64() / memcpy.as_secs_f64());
    println!("RATIO diloco_outer_step / memcpy(2 shards) = {:.2}", di.as_secs_f64() / memcpy.as_secs_f64());
    println!("(memcpy of 2 x 10M f32 = {:.1} ms)", memcpy.as_secs_f64() * 1e3);
}

criterion_group!(benches, bench);
criterion_main!(benches);
