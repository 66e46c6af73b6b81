//! What committing costs a trainer, per training step, against the step itself (repops backend,
//! `small` model, batch 8 × 64 tokens): phase 1's state hash (every weight and Adam moment), and
//! phase 2's op trace (recording the tape, chaining its records, the Merkle root) — the work a trainer
//! does for the step it must re-run in a dispute.
//!
//! `cargo bench -p verde --bench commitment`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::BatchSize::PerIteration;
use criterion::Criterion;
use models::{Backend, ModelConfig};
use verde::{Program, StepTrace, Trainer};

/// The program measured: the `small` model, batches of 8 × 64 tokens.
fn program() -> Program {
    let model = ModelConfig { backend: Backend::RepOps, ..ModelConfig::preset("small").expect("preset") };
    Program { model, batch: 8, seq: 64, ..Program::tiny(1) }
}

/// A fresh trainer: every measured step starts from the initial state (repeated steps on one model
/// drift into subnormal numbers and slow down, which would skew whichever variant ran more).
fn setup() -> Trainer {
    Trainer::new(&program()).expect("trainer")
}

fn step(t: &mut Trainer) {
    t.step(1).expect("step");
}

fn state(t: &Trainer) -> [u8; 32] {
    t.state_hash(1).expect("state hash")
}

fn traced(t: &mut Trainer) -> [u8; 32] {
    let ((), tape) = repops::tape::record(false, || step(t));
    StepTrace::from_tape([0; 32], &tape).expect("trace").commitment().root
}

/// Median wall time of `f` on a fresh setup, over `runs` runs.
fn median(runs: usize, mut f: impl FnMut(&mut Trainer)) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let mut s = setup();
            let t = Instant::now();
            f(&mut s);
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn main() {
    // As `swarmlab` runs: this thread runs the ops' parallel loops itself.
    repops::threads::work_on_this_thread(0);
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("verde_commitment_small");
    group.sample_size(10).measurement_time(Duration::from_secs(6));
    group.bench_function("step", |b| b.iter_batched(setup, |mut s| step(&mut s), PerIteration));
    group.bench_function("state_hash", |b| b.iter_batched(setup, |s| black_box(state(&s)), PerIteration));
    group.bench_function("step_with_op_trace", |b| {
        b.iter_batched(setup, |mut s| black_box(traced(&mut s)), PerIteration)
    });
    group.finish();
    c.final_summary();
    // The ratios, from interleaved runs on this machine now (shared and noisy: medians).
    let runs = 15;
    let base = median(runs, step);
    let hash = median(runs, |s| {
        black_box(state(s));
    });
    let trace = median(runs, |s| {
        black_box(traced(s));
    });
    let pct = |d: Duration| d.as_secs_f64() / base.as_secs_f64() * 100.0;
    println!(
        "RATIO state hash (phase-1 commitment, every step): {:.1}% of the step ({:?} vs {:?})",
        pct(hash),
        hash,
        base
    );
    println!(
        "RATIO op trace + Merkle root (phase-2 commitment, the disputed step): +{:.1}% over the step ({:?} vs {:?})",
        pct(trace) - 100.0,
        trace,
        base
    );
}
