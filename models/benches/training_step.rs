//! One full training step (forward, backward, AdamW) on candle's native kernels, on repops, and on
//! repops while recording the op tape — all in the same run — for the `small` (~0.9M parameters) and
//! `medium` (~10M) models, batch 8 × 64 tokens. Prints the repops slowdown and the tape's overhead.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::BatchSize::PerIteration;
use criterion::Criterion;
use models::data::{SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, Llama, ModelConfig, OptimConfig};

struct Setup {
    model: Llama,
    opt: AdamW,
    ids: Tensor,
    targets: Tensor,
}

fn setup(preset: &str, backend: Backend) -> Setup {
    let dev = Device::Cpu;
    let cfg = ModelConfig { backend, ..ModelConfig::preset(preset).expect("preset") };
    let lang =
        SyntheticLanguage::new(&SyntheticConfig { train_tokens: 1 << 14, val_tokens: 1024, ..Default::default() })
            .expect("language");
    let (ids, targets) = sample_batch(&lang.corpus().train, 8, 64, 0, 0, 0, &dev).expect("batch");
    Setup {
        model: Llama::new(&cfg, 1, &dev).expect("model"),
        opt: AdamW::new(OptimConfig::default(), backend).expect("optim"),
        ids,
        targets,
    }
}

fn step(s: &mut Setup) {
    let params = s.model.params();
    let loss = s.model.loss(&s.ids, &s.targets).expect("loss");
    let grads = params.grads(&loss.backward().expect("backward"));
    black_box(s.opt.step(&params, &grads).expect("step"));
}

const PRESETS: [&str; 2] = ["small", "medium"];

fn bench(c: &mut Criterion, preset: &str) {
    let mut group = c.benchmark_group(format!("training_step_{preset}"));
    group.sample_size(10).measurement_time(Duration::from_secs(if preset == "small" { 6 } else { 20 }));
    // Every measured step starts from the same freshly initialised model: repeating steps on one batch
    // drives gradients and Adam moments toward subnormal numbers, which slows the later steps down
    // (2x after a few dozen), and would skew whichever variant ran more of them.
    let fresh = |backend| move || setup(preset, backend);
    group.bench_function("native", |b| b.iter_batched(fresh(Backend::Native), |mut s| step(&mut s), PerIteration));
    group.bench_function("repops", |b| b.iter_batched(fresh(Backend::RepOps), |mut s| step(&mut s), PerIteration));
    group.bench_function("repops_with_tape", |b| {
        b.iter_batched(
            fresh(Backend::RepOps),
            |mut s| {
                let ((), tape) = repops::tape::record(false, || step(&mut s));
                black_box(tape.len())
            },
            PerIteration,
        )
    });
    group.finish();
}

fn mean_ns(group: &str, bench: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let text =
        std::fs::read_to_string(dir.join("criterion").join(group).join(bench).join("new/estimates.json")).ok()?;
    let at = text.find("\"mean\"")?;
    let rest = &text[at..];
    let p = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    rest[p..].split([',', '}']).next()?.trim().parse().ok()
}

fn main() {
    // The allocator settings `swarmlab` runs with (`SWARMLAB_RETURN_FREED_MEMORY=1` measures without).
    models::memory::keep_freed_memory_unless_disabled();
    let mut c = Criterion::default().configure_from_args();
    for preset in PRESETS {
        bench(&mut c, preset);
    }
    c.final_summary();
    for preset in PRESETS {
        let g = format!("training_step_{preset}");
        if let (Some(n), Some(r), Some(t)) =
            (mean_ns(&g, "native"), mean_ns(&g, "repops"), mean_ns(&g, "repops_with_tape"))
        {
            println!(
                "RATIO {preset} training step: repops takes {:.2}x the time of native ({:.1} ms vs {:.1} ms)",
                r / n,
                r / 1e6,
                n / 1e6
            );
            println!(
                "RATIO {preset} tape recording: +{:.1}% of the repops step time (target < 10%)",
                (t / r - 1.0) * 100.0
            );
        }
    }
}
