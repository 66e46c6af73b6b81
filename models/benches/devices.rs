//! CPU against GPU in one run (needs `--features cuda`; without a usable GPU it says SKIPPED): training
//! tokens/s of the `tiny` and `small` models (batch 8 × 64) on native and repops kernels, and repops'
//! matmul against candle's (cuBLAS) on the GPU for square sizes 256, 1024 and 2048.
//!
//! `cargo bench -p models --features cuda --bench devices`

use std::hint::black_box;
use std::time::Instant;

use candle_core::{Device, Tensor};
use models::data::{SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, Llama, ModelConfig, OptimConfig};

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
    let lang =
        SyntheticLanguage::new(&SyntheticConfig { train_tokens: 1 << 14, val_tokens: 1024, ..Default::default() })
            .expect("language");
    let (ids, targets) = sample_batch(&lang.corpus().train, BATCH, SEQ, 0, 0, 0, device).expect("batch");
    let model = Llama::new(&cfg, 1, device).expect("model");
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
