//! Many simulated workers on one device: a world of stages × replicas (ring all-reduce of the gradients
//! every step) trained through the pipeline runtime on the simulated network, its wall time per step
//! against the sum of its workers' own compute — `replicas` plain training steps of the whole model on
//! one replica's batch, on the same device, measured in the same run. Activations and gradients stay on
//! the device between workers (resident tensors); the network still counts their bytes.
//!
//! ```text
//! cargo bench -p pipeline --bench swarm_step                                     # CPU: tiny, 2 x 4 workers
//! cargo bench -p pipeline --features cuda --bench swarm_step -- cuda paper       # GPU: NoLoCo's smallest
//! cargo bench -p pipeline --features cuda --bench swarm_step -- cuda paper bf16  #   model, 2 x 8 workers
//! ```
//!
//! `paper` is NoLoCo's smallest configuration (width 768, 12 blocks of 12 heads, feed-forward 3,072,
//! sequences of 1,024 tokens, micro-batches of 2, 2 stages × 8 replicas: ~113M parameters with our byte
//! vocabulary); `bf16` trains in bf16 mixed precision. Peak GPU memory is for `nvidia-smi` to sample.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use genrl::run_simulation;
use models::data::{Corpus, SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, Llama, ModelConfig, Precision};
use pipeline::{PipelineSpec, run_simulated};
use transport::sim::LinkSpec;

/// What to run, from the bench's arguments.
struct Setup {
    device: Device,
    spec: PipelineSpec,
    /// Steps timed (after the first, which builds the swarm and warms up).
    steps: u64,
}

fn setup() -> Setup {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let has = |word: &str| args.iter().any(|a| a == word);
    let device = if has("cuda") {
        Device::new_cuda(0).unwrap_or_else(|e| {
            println!("SKIPPED (no GPU): {}", e.to_string().lines().next().unwrap_or_default());
            std::process::exit(0)
        })
    } else {
        Device::Cpu
    };
    let precision = if has("bf16") { Precision::Bf16 } else { Precision::F32 };
    let tiny = ModelConfig::preset("tiny").expect("preset");
    let (model, stages, replicas, micro_batch, seq, steps) = if has("paper") {
        let model = ModelConfig { d_model: 768, n_layers: 12, n_heads: 12, d_ff: 3072, max_seq: 1024, ..tiny };
        (model, 2, 8, 2, 1024, 3)
    } else {
        (tiny, 2, 4, 4, 64, 30)
    };
    let model = ModelConfig { backend: Backend::Native, precision, ..model };
    let spec = PipelineSpec {
        micro_batches: 1,
        micro_batch,
        seq,
        seed: 1,
        device: device.clone(),
        world: genrl::World::uniform(stages * replicas, genrl::DeviceProfile::a10(), LinkSpec::default()),
        eval_batches: 0,
        peer_timeout: Duration::from_secs(600),
        late_join: false,
        ..PipelineSpec::new(stages, replicas, 1, model)
    };
    Setup { device, spec, steps }
}

/// Wall seconds of a whole simulated run of `steps` steps.
fn swarm_run(spec: &PipelineSpec, steps: u64, corpus: &Arc<Corpus>) -> f64 {
    let spec = PipelineSpec { steps, ..spec.clone() };
    let start = Instant::now();
    let report = run_simulation(run_simulated(&spec, corpus.clone())).expect("runtime").expect("run");
    spec.device.synchronize().expect("synchronize");
    black_box(report.bytes_sent);
    start.elapsed().as_secs_f64()
}

/// Median wall seconds of one plain training step of the whole model on one replica's batch.
fn plain_step(spec: &PipelineSpec, steps: u64, corpus: &Corpus) -> f64 {
    let dev = &spec.device;
    let model = Llama::new(&spec.model, 1, dev).expect("model");
    let params = model.params();
    let mut opt = AdamW::new(spec.optim.clone(), spec.model.backend).expect("optim");
    let batch = spec.micro_batches * spec.micro_batch;
    let mut times: Vec<f64> = (0..=steps)
        .map(|step| {
            let (ids, t) = sample_batch(&corpus.train, batch, spec.seq, spec.seed, step, 0, dev).expect("batch");
            let start = Instant::now();
            let loss = model.loss(&ids, &t).expect("loss");
            opt.step(&params, &params.grads(&loss.backward().expect("backward"))).expect("step");
            dev.synchronize().expect("synchronize");
            start.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    // As `swarmlab` runs: this thread runs the ops' parallel loops itself.
    repops::threads::work_on_this_thread(0);
    let Setup { device, spec, steps } = setup();
    let lang = SyntheticLanguage::new(&SyntheticConfig {
        train_tokens: (spec.seq + 1) * 4096,
        val_tokens: 1024,
        ..Default::default()
    })
    .expect("language");
    let corpus = Arc::new(lang.corpus());
    let workers = spec.stages * spec.replicas;
    println!(
        "swarm_step: {} stages x {} replicas ({workers} workers) of a {:.1}M-parameter model, {} x {} tokens per replica, {:?}, on {}",
        spec.stages,
        spec.replicas,
        spec.model.param_count() as f64 / 1e6,
        spec.micro_batch,
        spec.seq,
        spec.model.precision,
        models::device::name(&device),
    );
    // The first step builds the swarm and warms up: time runs of 1 and 1 + `steps` steps, take the
    // difference.
    let one = swarm_run(&spec, 1, &corpus);
    let more = swarm_run(&spec, 1 + steps, &corpus);
    let per_step = (more - one) / steps as f64;
    let compute = plain_step(&spec, steps, &corpus) * spec.replicas as f64;
    println!("  pipeline runtime: {:.1} ms per step (wall)", per_step * 1e3);
    println!(
        "  the workers' own compute: {} replicas x a plain step = {:.1} ms per step",
        spec.replicas,
        compute * 1e3
    );
    println!("RATIO swarm step wall / workers' compute: {:.2}x (target <= 1.2x)", per_step / compute);
    if device.is_cpu() {
        println!("  peak memory (RSS): {:.2} GiB", models::memory::peak_resident_gib().unwrap_or(f64::NAN));
    }
}
