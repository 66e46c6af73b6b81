//! Training steps as runs take them — forward, backward and AdamW, one after another on changing batches
//! of the synthetic language — on candle's native kernels, on repops, and on repops while recording the
//! op tape, all in the same run, for the `tiny`, `small` and `medium` presets at 8 × 64 tokens. Prints
//! tokens per second, the repops slowdown and the tape's overhead; with `SWARMLAB_TORCH_PYTHON` set to a
//! Python that has PyTorch, also runs `reference/torch_training_step.py` (the same model and optimizer in
//! PyTorch eager) on the same machine right after, and prints each backend's ratio to it.
//!
//! ```sh
//! cargo bench -p models --bench training_step
//! SWARMLAB_TORCH_PYTHON=/path/to/venv/bin/python cargo bench -p models --bench training_step
//! ```

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use candle_core::Device;
use criterion::Criterion;
use models::data::{SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, Llama, ModelConfig, OptimConfig};

const PRESETS: [&str; 3] = ["tiny", "small", "medium"];
const BATCH: usize = 8;
const SEQ: usize = 64;

/// A model, its optimizer and the corpus its batches come from; `step` counts the steps taken.
struct Run {
    model: Llama,
    opt: AdamW,
    corpus: Vec<u32>,
    step: u64,
}

impl Run {
    fn new(preset: &str, backend: Backend) -> Self {
        let cfg = ModelConfig { backend, ..ModelConfig::preset(preset).expect("preset") };
        let lang =
            SyntheticLanguage::new(&SyntheticConfig { train_tokens: 1 << 16, val_tokens: 1024, ..Default::default() })
                .expect("language");
        Self {
            model: Llama::new(&cfg, 1, &Device::Cpu).expect("model"),
            opt: AdamW::new(OptimConfig::default(), backend).expect("optim"),
            corpus: lang.corpus().train.clone(),
            step: 0,
        }
    }

    /// One training step on the next batch.
    fn step(&mut self) {
        let (ids, targets) = sample_batch(&self.corpus, BATCH, SEQ, 0, self.step, 0, &Device::Cpu).expect("batch");
        self.step += 1;
        let params = self.model.params();
        let loss = self.model.loss(&ids, &targets).expect("loss");
        let grads = params.grads(&loss.backward().expect("backward"));
        black_box(self.opt.step(&params, &grads).expect("step"));
    }
}

fn bench(c: &mut Criterion, preset: &str) {
    let mut group = c.benchmark_group(format!("training_step_{preset}"));
    let seconds = match preset {
        "tiny" => 4,
        "small" => 8,
        _ => 25,
    };
    group.sample_size(10).measurement_time(Duration::from_secs(seconds)).warm_up_time(Duration::from_secs(2));
    for (name, backend, tape) in [
        ("native", Backend::Native, false),
        ("repops", Backend::RepOps, false),
        ("repops_with_tape", Backend::RepOps, true),
    ] {
        let mut run = Run::new(preset, backend);
        group.bench_function(name, |b| {
            b.iter(|| {
                if tape {
                    let ((), tape) = repops::tape::record(false, || run.step());
                    black_box(tape.len());
                } else {
                    run.step();
                }
            })
        });
    }
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

/// PyTorch eager's milliseconds per step by preset, from the reference script run by `python`.
fn pytorch(python: &str) -> BTreeMap<String, f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference/torch_training_step.py");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
    let out = match std::process::Command::new(python)
        .args([script, "--threads", &threads, "--presets", &PRESETS.join(","), "--batch", "8", "--seq", "64"])
        .output()
    {
        Ok(out) if out.status.success() => out,
        Ok(out) => {
            eprintln!("the PyTorch reference failed: {}", String::from_utf8_lossy(&out.stderr));
            return BTreeMap::new();
        }
        Err(e) => {
            eprintln!("could not run {python}: {e}");
            return BTreeMap::new();
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    print!("{text}");
    // "PYTORCH <preset> eager, … : <ms> ms per step, …"
    text.lines()
        .filter_map(|line| {
            let preset = line.strip_prefix("PYTORCH ")?.split_whitespace().next()?;
            let ms = line.split(": ").nth(1)?.split(" ms per step").next()?.trim().parse().ok()?;
            Some((preset.to_owned(), ms))
        })
        .collect()
}

#[allow(unsafe_code)] // sets the element-wise pool's size before any thread starts
fn main() {
    // As `swarmlab` runs: candle's element-wise ops on the calling thread (its own pool would spin beside
    // rayon's, which runs the matrix products and the fused ops), unless the user chose.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: the first statement of `main`; no other thread has started.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    // The allocator settings `swarmlab` runs with (`SWARMLAB_RETURN_FREED_MEMORY=1` measures without).
    models::memory::keep_freed_memory_unless_disabled();
    let mut c = Criterion::default().configure_from_args();
    for preset in PRESETS {
        bench(&mut c, preset);
    }
    c.final_summary();
    let torch = std::env::var("SWARMLAB_TORCH_PYTHON").map(|python| pytorch(&python)).unwrap_or_default();
    for preset in PRESETS {
        let g = format!("training_step_{preset}");
        let (Some(n), Some(r), Some(t)) =
            (mean_ns(&g, "native"), mean_ns(&g, "repops"), mean_ns(&g, "repops_with_tape"))
        else {
            continue;
        };
        let tokens = |ns: f64| (BATCH * SEQ) as f64 / (ns / 1e9);
        println!(
            "RATIO {preset} training step: native {:.1} ms ({:.0} tokens/s), repops {:.1} ms ({:.2}x native's time)",
            n / 1e6,
            tokens(n),
            r / 1e6,
            r / n
        );
        println!(
            "RATIO {preset} tape recording: +{:.1}% of the repops step time (target < 10%)",
            (t / r - 1.0) * 100.0
        );
        if let Some(ms) = torch.get(preset) {
            let ms_ns = ms * 1e6;
            println!(
                "RATIO {preset} vs PyTorch eager ({ms:.1} ms): native {:.2}x its tokens/s, repops {:.2}x",
                ms_ns / n,
                ms_ns / r
            );
        }
    }
}
