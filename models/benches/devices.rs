//! CPU against GPU in one run (needs `--features cuda`; without a usable GPU it says SKIPPED): training
//! tokens/s of the `tiny` and `small` models (batch 8 × 64) on native and repops kernels; NoLoCo's
//! smallest model (width 768, 12 blocks, ~113M parameters with the byte vocabulary; batch 2 × 1,024) on
//! the GPU in fp32, bf16 mixed precision and repops, beside PyTorch eager fp32 and bf16 autocast when
//! `SWARMLAB_TORCH_PYTHON` names a Python with PyTorch; and repops' matmul against candle's (cuBLAS) on
//! the GPU for square sizes 256, 1024 and 2048.
//!
//! `cargo bench -p models --features cuda --bench devices` (`SWARMLAB_TORCH_SCRIPT` points at
//! `torch_training_step.py` when the bench binary runs away from this source tree)

use std::hint::black_box;
use std::time::Instant;

use candle_core::{Device, Tensor};
use models::data::{SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, Llama, ModelConfig, OptimConfig, Precision};

const BATCH: usize = 8;
const SEQ: usize = 64;

/// Median seconds of `reps` runs of `f` (after one warm-up run); `f` must finish its device work.
fn median(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
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

/// Seconds per training step (forward, backward, AdamW) of `preset` on `device`.
fn step_time(preset: &str, backend: Backend, device: &Device) -> f64 {
    let cfg = ModelConfig { backend, ..ModelConfig::preset(preset).expect("preset") };
    model_step_time(&cfg, BATCH, SEQ, device)
}

/// Seconds per training step of the model `cfg` on `batch` sequences of `seq` tokens on `device`.
fn model_step_time(cfg: &ModelConfig, batch: usize, seq: usize, device: &Device) -> f64 {
    let backend = cfg.backend;
    let lang = SyntheticLanguage::new(&SyntheticConfig {
        train_tokens: (1 << 14).max(4 * batch * (seq + 1)),
        val_tokens: 1024,
        ..Default::default()
    })
    .expect("language");
    let (ids, targets) = sample_batch(&lang.corpus().train, batch, seq, 0, 0, 0, device).expect("batch");
    let model = Llama::new(cfg, 1, device).expect("model");
    let mut opt = AdamW::new(OptimConfig::default(), backend).expect("optim");
    let params = model.params();
    median(5, || {
        let loss = model.loss(&ids, &targets).expect("loss");
        let grads = params.grads(&loss.backward().expect("backward"));
        black_box(opt.step(&params, &grads).expect("step"));
        device.synchronize().expect("synchronize");
    })
}

fn main() {
    let gpu = match Device::new_cuda(0) {
        Ok(d) => d,
        Err(e) => {
            println!("SKIPPED (no GPU): {}", e.to_string().lines().next().unwrap_or_default());
            return;
        }
    };
    let tokens = (BATCH * SEQ) as f64;
    println!("training step, batch {BATCH} x {SEQ} tokens:");
    println!("{:<8} {:<8} {:>14} {:>14} {:>8}", "model", "kernels", "CPU tokens/s", "GPU tokens/s", "GPU/CPU");
    for preset in ["tiny", "small"] {
        for backend in [Backend::Native, Backend::RepOps] {
            let cpu = step_time(preset, backend, &Device::Cpu);
            let gpu_t = step_time(preset, backend, &gpu);
            println!(
                "{preset:<8} {:<8} {:>14.0} {:>14.0} {:>7.1}x",
                format!("{backend:?}").to_lowercase(),
                tokens / cpu,
                tokens / gpu_t,
                cpu / gpu_t
            );
        }
    }
    paper_shaped(&gpu);
    println!("\nmatmul on the GPU:");
    println!("{:>6} {:>16} {:>16} {:>14}", "n", "cuBLAS GFLOP/s", "repops GFLOP/s", "repops/cuBLAS");
    for n in [256usize, 1024, 2048] {
        let a: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b: Vec<f32> = (0..n * n).map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5).collect();
        let a = Tensor::from_vec(a, (n, n), &gpu).expect("a");
        let b = Tensor::from_vec(b, (n, n), &gpu).expect("b");
        let flops = 2.0 * (n * n * n) as f64;
        let cublas = median(7, || {
            black_box(a.matmul(&b).expect("matmul"));
            gpu.synchronize().expect("synchronize");
        });
        let rep = median(7, || {
            black_box(repops::tensor::matmul(&a, &b).expect("repops"));
            gpu.synchronize().expect("synchronize");
        });
        println!("{n:>6} {:>16.1} {:>16.1} {:>13.2}x", flops / cublas / 1e9, flops / rep / 1e9, rep / cublas);
    }
}

/// NoLoCo's smallest model on the GPU, ours and (with `SWARMLAB_TORCH_PYTHON`) PyTorch's.
fn paper_shaped(gpu: &Device) {
    const BATCH: usize = 2;
    const SEQ: usize = 1024;
    let tiny = ModelConfig::preset("tiny").expect("preset");
    let shape = ModelConfig { d_model: 768, n_layers: 12, n_heads: 12, d_ff: 3072, max_seq: SEQ, ..tiny };
    println!(
        "\nNoLoCo's smallest model ({:.0}M parameters), batch {BATCH} x {SEQ} tokens, on the GPU:",
        shape.param_count() as f64 / 1e6
    );
    let tokens = (BATCH * SEQ) as f64;
    let arms = [
        ("native fp32", Backend::Native, Precision::F32, false),
        ("native bf16", Backend::Native, Precision::Bf16, true),
        ("repops fp32", Backend::RepOps, Precision::F32, false),
    ];
    for (label, backend, precision, bf16) in arms {
        let secs = model_step_time(&ModelConfig { backend, precision, ..shape.clone() }, BATCH, SEQ, gpu);
        let torch = if backend == Backend::Native { torch_step(BATCH, SEQ, bf16) } else { None };
        let beside = torch.map_or(String::new(), |t| {
            format!(
                "; PyTorch eager {}: {:.1} ms, swarmlab/PyTorch tokens/s {:.2}x",
                if bf16 { "bf16 autocast" } else { "fp32" },
                t * 1e3,
                t / secs
            )
        });
        println!("  {label}: {:.1} ms per step, {:.0} tokens/s{beside}", secs * 1e3, tokens / secs);
    }
}

/// PyTorch eager's median step time on the GPU for the same model and batch, if `SWARMLAB_TORCH_PYTHON`
/// names a Python with PyTorch (the reference script beside this bench).
fn torch_step(batch: usize, seq: usize, bf16: bool) -> Option<f64> {
    let python = std::env::var("SWARMLAB_TORCH_PYTHON").ok()?;
    let script = std::env::var("SWARMLAB_TORCH_SCRIPT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference/torch_training_step.py").into());
    let mut cmd = std::process::Command::new(python);
    cmd.args([&script, "--device", "cuda", "--presets", "paper", "--steps", "10", "--warmup", "3"]);
    cmd.args(["--batch", &batch.to_string(), "--seq", &seq.to_string()]);
    if bf16 {
        cmd.arg("--bf16");
    }
    let out = cmd.output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("PYTORCH"))?;
    // "... : 123.45 ms per step, ..."
    let ms = line.split(": ").nth(1)?.split(" ms").next()?.trim().parse::<f64>().ok()?;
    Some(ms / 1e3)
}
