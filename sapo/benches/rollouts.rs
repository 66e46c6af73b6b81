//! SAPO's two costs for the default policy (`tiny`) in one run: generating a round's rollouts (8
//! questions × 8 completions) and one GRPO step on 8 question groups, each beside its baseline measured
//! in the same run — one forward pass over the same batch for generation (with the key/value cache, and
//! without it: re-reading the growing prefix once per new token), a supervised step on the same
//! sequences for GRPO. Reports tokens/s and the ratios. Then the wall time per round of a whole swarm of 8 agents on the CPU, and with all 8 on
//! one GPU when the build has `--features cuda` and a GPU is there.

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{Criterion, Throughput};
use genrl::env::{TaskSet, TaskSetConfig};
use models::DeviceSpec;
use models::{AdamW, OptimConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sapo::policy::Example;
use sapo::{Generation, GrpoConfig, Policy, PolicyConfig, Sampling, SapoConfig, run, warm_start};

const COMPLETIONS: usize = 8;

/// The median time of each of `tasks`, timed in turn round after round (so that a change in the
/// machine's load falls on all of them alike), after one warm-up round.
fn interleaved_medians(tasks: &mut [&mut dyn FnMut()], rounds: usize) -> Vec<Duration> {
    let mut times = vec![Vec::with_capacity(rounds); tasks.len()];
    for round in 0..=rounds {
        for (task, t) in tasks.iter_mut().zip(&mut times) {
            let start = Instant::now();
            task();
            if round > 0 {
                t.push(start.elapsed());
            }
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let cfg = PolicyConfig::default();
    let mut policy = Policy::new(&cfg, &Device::Cpu).expect("policy");
    let tasks = TaskSet::new(&TaskSetConfig::default()).expect("tasks");
    let questions = tasks.round(0, 0);
    let prompts: Vec<&str> = questions.iter().map(|q| q.prompt.as_str()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let rollouts = policy.sample(&prompts, COMPLETIONS, Sampling::default(), &mut rng).expect("sample");
    let generated: usize = rollouts.iter().flatten().map(String::len).sum();
    let examples: Vec<Example<'_>> = questions
        .iter()
        .zip(&rollouts)
        .flat_map(|(q, group)| {
            group.iter().enumerate().map(move |(i, c)| Example {
                prompt: &q.prompt,
                completion: c,
                weight: if i % 2 == 0 { 1.0 } else { -1.0 },
            })
        })
        .collect();
    let trained: usize = examples.iter().map(|e| e.completion.len()).sum();
    // One forward pass over full-length sequences: the cost generation would have with a KV cache.
    let full: Vec<Example<'_>> = examples.iter().map(|e| Example { weight: 1.0, ..e.clone() }).collect();

    let mut g = c.benchmark_group("rollouts");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(generated as u64));
    let no_cache = Generation { cache: false, ..Generation::default() };
    g.bench_function("generate 8x8", |b| {
        b.iter(|| black_box(policy.sample(&prompts, COMPLETIONS, Sampling::default(), &mut rng).expect("sample")))
    });
    g.bench_function("generate 8x8 without cache", |b| {
        b.iter(|| black_box(policy.generate(&prompts, COMPLETIONS, &no_cache, &mut rng).expect("sample")))
    });
    g.bench_function("one forward (baseline)", |b| b.iter(|| black_box(policy.sequence_logps(&full).expect("logps"))));
    g.throughput(Throughput::Elements(trained as u64));
    let mut sft = AdamW::new(OptimConfig::default(), cfg.model.backend).expect("optim");
    g.bench_function("grpo step", |b| {
        b.iter(|| black_box(policy.grpo_step(&examples, &GrpoConfig::default(), None).expect("grpo")))
    });
    g.bench_function("supervised step (baseline)", |b| {
        b.iter(|| black_box(policy.supervised_step(&full, &mut sft).expect("sft")))
    });
    g.finish();

    // The ratios, from direct timings taken here in turn: medians over 15 rounds.
    let (generate, uncached, forward) = {
        let (p, mut rng2) = (&policy, rng.clone());
        let medians = interleaved_medians(
            &mut [
                &mut || drop(p.sample(&prompts, COMPLETIONS, Sampling::default(), &mut rng)),
                &mut || drop(p.generate(&prompts, COMPLETIONS, &no_cache, &mut rng2)),
                &mut || drop(p.sequence_logps(&full)),
            ],
            15,
        );
        (medians[0], medians[1], medians[2])
    };
    let mut sft_policy = Policy::new(&cfg, &Device::Cpu).expect("policy");
    let trainers = interleaved_medians(
        &mut [&mut || drop(policy.grpo_step(&examples, &GrpoConfig::default(), None)), &mut || {
            drop(sft_policy.supervised_step(&full, &mut sft))
        }],
        15,
    );
    let (grpo, supervised) = (trainers[0], trainers[1]);
    println!(
        "\npolicy {} parameters; a round: {} completions, {generated} tokens generated, {trained} trained on",
        policy.parameters(),
        examples.len()
    );
    for (name, t) in [("with the cache", generate), ("without the cache", uncached)] {
        println!(
            "generation {name}: {:.0} tokens/s ({:.1} ms per round), {:.2}x one forward pass over the same sequences",
            generated as f64 / t.as_secs_f64(),
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() / forward.as_secs_f64()
        );
    }
    println!("the cache makes generation {:.1}x faster", uncached.as_secs_f64() / generate.as_secs_f64());
    println!(
        "GRPO step: {:.0} tokens/s ({:.1} ms), {:.2}x a supervised step on the same batch",
        trained as f64 / grpo.as_secs_f64(),
        grpo.as_secs_f64() * 1e3,
        grpo.as_secs_f64() / supervised.as_secs_f64()
    );
}

/// Wall seconds per round of an 8-agent swarm (4/4) with every policy on `device`.
fn swarm_round(device: DeviceSpec) -> sapo::Result<f64> {
    let mut cfg = SapoConfig { agents: 8, rounds: 4, device, ..SapoConfig::default() };
    cfg.warm_start.steps = 10;
    let warm = warm_start(&cfg, "tiny")?;
    let t = Instant::now();
    run(&cfg, &[warm], |_| {})?;
    Ok(t.elapsed().as_secs_f64() / cfg.rounds as f64)
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
    match swarm_round(DeviceSpec::Cpu) {
        Ok(s) => println!("swarm of 8 agents, all on the CPU: {:.0} ms per round", s * 1e3),
        Err(e) => println!("swarm on the CPU failed: {e}"),
    }
    match DeviceSpec::Cuda(0).resolve() {
        Err(e) => println!("swarm on one GPU: SKIPPED (no GPU: {e})"),
        Ok(_) => match swarm_round(DeviceSpec::Cuda(0)) {
            Ok(s) => println!("swarm of 8 agents, all on cuda:0: {:.0} ms per round", s * 1e3),
            Err(e) => println!("swarm on cuda:0 failed: {e}"),
        },
    }
}
