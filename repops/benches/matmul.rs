//! repops matmul against candle's native CPU matmul (the `gemm` crate) on the same inputs in the same
//! run, for square sizes 256, 1024 and 2048, and for the products of a `medium` training step (8 × 64
//! tokens: the linear layers forward and backward, and attention's batches of small products). Prints
//! GFLOP/s and the ratios.

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

/// Seconds `f` takes.
fn seconds(f: impl FnOnce()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64()
}

/// Median seconds of `reps` runs of `f`.
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps).map(|_| seconds(&mut f)).collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

/// A product of a training step: a name, how often a step runs it, then batch, m, k, n, and whether `A`
/// and `B` are read transposed. A batch of 1 has one right-hand side (the layers fold the batch into m).
type StepProduct = (&'static str, usize, usize, usize, usize, usize, bool, bool);

/// The products of a `medium` training step (width 384, 6 blocks, feed-forward 1,024, a 256-byte head,
/// 6 heads of 64, 8 × 64 tokens).
const MEDIUM_STEP: [StepProduct; 15] = [
    ("x·wᵀ 384→384", 24, 1, 512, 384, 384, false, true),
    ("dy·w 384→384", 24, 1, 512, 384, 384, false, false),
    ("xᵀ·dy 384→384", 24, 1, 384, 512, 384, true, false),
    ("x·wᵀ 384→1024", 12, 1, 512, 384, 1024, false, true),
    ("dy·w 384→1024", 12, 1, 512, 1024, 384, false, false),
    ("xᵀ·dy 384→1024", 12, 1, 1024, 512, 384, true, false),
    ("x·wᵀ 1024→384", 6, 1, 512, 1024, 384, false, true),
    ("dy·w 1024→384", 6, 1, 512, 384, 1024, false, false),
    ("xᵀ·dy 1024→384", 6, 1, 384, 512, 1024, true, false),
    ("x·wᵀ head", 1, 1, 512, 384, 256, false, true),
    ("dy·w head", 1, 1, 512, 256, 384, false, false),
    ("xᵀ·dy head", 1, 1, 256, 512, 384, true, false),
    ("48 heads, a·bᵀ", 12, 48, 64, 64, 64, false, true),
    ("48 heads, a·b", 12, 48, 64, 64, 64, false, false),
    ("48 heads, aᵀ·b", 12, 48, 64, 64, 64, true, false),
];

/// Times every product of [`MEDIUM_STEP`] on both backends, turn about, and prints each and their sum
/// weighted by how often a step runs them.
fn step_products() {
    let dev = Device::Cpu;
    let filled = |shape: &[usize], seed: usize| {
        let len: usize = shape.iter().product();
        let v: Vec<f32> = (0..len).map(|i| ((i * 7919 + seed) % 1000) as f32 / 1000.0 - 0.5).collect();
        Tensor::from_vec(v, shape, &dev).expect("operand")
    };
    let (mut native_total, mut repops_total) = (0.0, 0.0);
    for &(name, per_step, batch, m, k, n, transpose_a, transpose_b) in &MEDIUM_STEP {
        // Stored as the product reads them: `A` as [batch, k, m] when transposed; `B` 2-D when shared.
        let a = filled(&if transpose_a { [batch, k, m] } else { [batch, m, k] }, 1);
        let b_shape: Vec<usize> = match (batch, transpose_b) {
            (1, true) => vec![n, k],
            (1, false) => vec![k, n],
            (_, true) => vec![batch, n, k],
            (_, false) => vec![batch, k, n],
        };
        let b = filled(&b_shape, 2);
        // candle reads a transposed view in place where its strides allow, as repops does.
        let view = |t: &Tensor, turned: bool| if turned { t.t().expect("view") } else { t.clone() };
        let (a_view, b_view) = (view(&a, transpose_a), view(&b, transpose_b));
        let flops = 2.0 * (batch * m * k * n) as f64;
        let (mut native, mut rep) = (f64::INFINITY, f64::INFINITY);
        // The fastest of 15 turns each: on a shared machine the least disturbed.
        for _ in 0..15 {
            native = native.min(seconds(|| drop(black_box(a_view.broadcast_matmul(&b_view).expect("native")))));
            rep = rep.min(seconds(|| {
                drop(black_box(repops::tensor::matmul_t(&a, &b, transpose_a, transpose_b).expect("repops")))
            }));
        }
        println!(
            "  {:<16} x{:>2} per step: repops {:6.1} GFLOP/s, candle native {:6.1} GFLOP/s, repops/native = {:.2}",
            name,
            per_step,
            flops / rep / 1e9,
            flops / native / 1e9,
            native / rep
        );
        native_total += per_step as f64 * native;
        repops_total += per_step as f64 * rep;
    }
    println!(
        "RATIO matmul medium step's products: repops {:.1} ms, candle native {:.1} ms per step, repops/native = {:.2}",
        repops_total * 1e3,
        native_total * 1e3,
        native_total / repops_total
    );
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
    step_products();
}
