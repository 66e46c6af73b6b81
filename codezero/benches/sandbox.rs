//! The sandbox's cost beside a solver's: judging programs on a problem's four tests (a typical solver
//! program, a recursive one, a hostile one that runs into the step limit) and, as the baseline measured
//! in the same run, the default solver policy writing one problem's four programs. Prints executions per
//! second and the ratio of one judging to one generation.

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::Device;
use codezero::CodeZeroConfig;
use criterion::{Criterion, Throughput};
use genrl::env::code::{CodeProblem, Limits};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sapo::{Policy, Sampling};

fn mean_time(mut f: impl FnMut(), n: u32) -> Duration {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed() / n
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let cfg = CodeZeroConfig::default();
    let problem = CodeProblem::from_reference("x 3 * 2 +", vec![1, 4, 7, 9], 3, 40, &limits).expect("problem");
    let recursive =
        CodeProblem::from_reference("x 2 < [1] [x 1 - @ x *] i", vec![3, 5, 6, 8], 3, 40, &limits).expect("problem");
    let programs = [
        ("typical", &problem, "x 3 * 2 +\n"),
        ("recursive", &recursive, "x 2 < [1] [x 1 - @ x *] i\n"),
        ("hostile (step limit)", &problem, "9223372036854775807 [1 p] r\n"),
    ];
    let policy = Policy::new(&cfg.policy, &Device::Cpu).expect("policy");
    let prompt = problem.prompt();
    let mut rng = ChaCha8Rng::seed_from_u64(0);

    let mut g = c.benchmark_group("sandbox");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(problem.inputs.len() as u64));
    for (name, p, program) in programs {
        g.bench_function(format!("judge {name} on 4 tests"), |b| {
            b.iter(|| black_box(p.judge_completion(program, &limits)))
        });
    }
    g.throughput(Throughput::Elements(cfg.completions as u64));
    g.bench_function("baseline: generate 4 programs", |b| {
        b.iter(|| black_box(policy.sample(&[prompt.as_str()], cfg.completions, Sampling::default(), &mut rng)))
    });
    g.finish();

    // The ratio, both measured here, one after the other.
    let generate =
        mean_time(|| drop(policy.sample(&[prompt.as_str()], cfg.completions, Sampling::default(), &mut rng)), 20);
    println!("\nsandbox vs generation (same run; a problem's 4 programs, each on 4 tests):");
    for (name, p, program) in programs {
        let judge = mean_time(|| drop(black_box(p.judge_completion(program, &limits))), 2000);
        let steps = p.judge_completion(program, &limits).steps;
        println!(
            "  {name:<22} {:>8.2} µs per program ({steps} steps over its 4 tests), {:>9.0} runs/s; judging 4 programs = {:.1e}× generating them",
            judge.as_secs_f64() * 1e6,
            p.inputs.len() as f64 / judge.as_secs_f64(),
            4.0 * judge.as_secs_f64() / generate.as_secs_f64()
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
