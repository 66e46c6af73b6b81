//! One outer step on a 10M-parameter stage shard: NoLoCo (building the contribution `[φ, θ − φ]`, the
//! mean of a group of two, the modified Nesterov step), the same arithmetic alone on existing buffers,
//! and DiLoCo (pseudo-gradient, Nesterov step), each against a memcpy of two shards (80 MB). Prints
//! `RATIO` lines: time / memcpy time, measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use noloco::diloco::DiLoCoState;
use noloco::gossip::NoLoCoState;
use noloco::{DiLoCo, NoLoCo};
use pipeline::OuterState;
use pipeline::collective::mean_in_order;

const PARAMS: usize = 10_000_000;

fn vectors() -> (Vec<f32>, Vec<f32>) {
    let phi: Vec<f32> = (0..PARAMS).map(|i| (i % 997) as f32 * 1e-3).collect();
    let theta: Vec<f32> = phi.iter().enumerate().map(|(i, p)| p + (i % 13) as f32 * 1e-5).collect();
    (phi, theta)
}

fn noloco_step(state: &mut NoLoCoState, peer: &[f32], theta: &mut [f32]) {
    let own = state.contribution(theta);
    let mean = mean_in_order(own, &[peer]);
    state.finish(theta, &mean);
}

fn diloco_step(state: &mut DiLoCoState, theta: &mut [f32]) {
    let own = state.contribution(theta);
    state.finish(theta, &own);
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
    let peer: Vec<f32> = phi.iter().chain(theta.iter()).copied().collect();
    let mut group = c.benchmark_group("outer_step_10M");
    group.sample_size(10);
    let mut noloco = NoLoCoState::new(NoLoCo::default(), &phi);
    let mut diloco = DiLoCoState::new(DiLoCo::default(), &phi);
    let mut th = theta.clone();
    group.bench_function("noloco", |b| b.iter(|| noloco_step(&mut noloco, black_box(&peer), &mut th)));
    group.bench_function("diloco", |b| b.iter(|| diloco_step(&mut diloco, &mut th)));
    // The arithmetic alone, on buffers that already exist: the group mean and the update.
    let mut buf = peer.clone();
    group.bench_function("noloco_math_only", |b| {
        b.iter(|| {
            for (s, x) in buf.iter_mut().zip(black_box(&peer)) {
                *s = (*s + x) / 2.0;
            }
            noloco.finish(&mut th, &buf);
        })
    });
    let mut dst = vec![0f32; 2 * PARAMS];
    group.bench_function("memcpy_2_shards", |b| b.iter(|| dst.copy_from_slice(black_box(&peer))));
    group.finish();

    // The same, timed back to back for the ratio lines.
    let memcpy = time(10, || dst.copy_from_slice(black_box(&peer)));
    let no = time(5, || noloco_step(&mut noloco, black_box(&peer), &mut th));
    let di = time(5, || diloco_step(&mut diloco, &mut th));
    let math = time(5, || {
        for (s, x) in buf.iter_mut().zip(black_box(&peer)) {
            *s = (*s + x) / 2.0;
        }
        noloco.finish(&mut th, &buf);
    });
    println!("RATIO noloco_math_only / memcpy(2 shards) = {:.2}", math.as_secs_f64() / memcpy.as_secs_f64());
    println!("RATIO noloco_outer_step / memcpy(2 shards) = {:.2}", no.as_secs_f64() / memcpy.as_secs_f64());
    println!("RATIO diloco_outer_step / memcpy(2 shards) = {:.2}", di.as_secs_f64() / memcpy.as_secs_f64());
    println!("(memcpy of 2 x 10M f32 = {:.1} ms)", memcpy.as_secs_f64() * 1e3);
}

criterion_group!(benches, bench);
criterion_main!(benches);
