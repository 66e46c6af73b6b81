//! repops matmul against candle's native CPU matmul (the `gemm` crate) on the same inputs in the same
//! run, for square sizes 256, 1024 and 2048. Prints GFLOP/s and the ratio.

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput};

fn inputs(n: usize) -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let a: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let b: Vec<f32> = (0..n * n).map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5).collect();
    (Tensor::from_vec(a, (n, n), &dev).expect("a"), Tensor::from_vec(b, (n, n), &dev).expect("b"))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10).measurement_time(Duration::from_secs(4));
    for n in [256usize, 1024, 2048] {
        let (a, b) = inputs(n);
        group.throughput(Throughput::Elements((2 * n * n * n) as u64));
        group.bench_with_input(BenchmarkId::new("candle_native", n), &n, |bench, _| {
            bench.iter(|| black_box(a.matmul(&b).expect("native")))
        });
        group.bench_with_input(BenchmarkId::new("repops", n), &n, |bench, _| {
            bench.iter(|| black_box(repops::tensor::matmul(&a, &b).expect("repops")))
        });
    }
    group.finish();
}

/// Median seconds of `reps` runs of `f`.
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    println!("simd level: {:?}, rayon threads: {}", repops::simd::current(), rayon::current_num_threads());
    for n in [256usize, 1024, 2048] {
        let (a, b) = inputs(n);
        let reps = if n >= 2048 { 5 } else { 15 };
        let flops = 2.0 * (n * n * n) as f64;
        let native = median(reps, || drop(black_box(a.matmul(&b).expect("native"))));
        let rep = median(reps, || drop(black_box(repops::tensor::matmul(&a, &b).expect("repops"))));
        println!(
            "RATIO matmul {n}: repops {:.1} GFLOP/s, candle native {:.1} GFLOP/s, repops/native = {:.2} (target >= 0.5)",
            flops / rep / 1e9,
            flops / native / 1e9,
            native / rep
        );
    }
}
