//! The pipeline runtime's overhead: training steps of the plain model in a loop, against the same steps
//! through the pipeline runtime with one stage and one replica on the simulated network (messages,
//! virtual clock, metrics), measured in the same run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use genrl::run_simulation;
use models::data::{SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, Llama, ModelConfig};
use pipeline::{PipelineSpec, run_simulated};
use transport::sim::LinkSpec;

const STEPS: u64 = 20;

fn spec() -> PipelineSpec {
    let model = ModelConfig { backend: Backend::Native, ..ModelConfig::preset("small").expect("preset") };
    PipelineSpec {
        micro_batches: 1,
        micro_batch: 8,
        seq: 64,
        seed: 1,
        world: genrl::World::uniform(1, genrl::DeviceProfile::a10(), LinkSpec::default()),
        eval_batches: 0,
        peer_timeout: Duration::from_secs(60),
        late_join: false,
        ..PipelineSpec::new(1, 1, STEPS, model)
    }
}

fn main() {
    // As `swarmlab` runs: this thread runs the ops' parallel loops itself.
    repops::threads::work_on_this_thread(0);
    let lang =
        SyntheticLanguage::new(&SyntheticConfig { train_tokens: 1 << 16, val_tokens: 1024, ..Default::default() })
            .expect("language");
    let corpus = Arc::new(lang.corpus());
    let spec = spec();
    let plain = || {
        let dev = Device::Cpu;
        let model = Llama::new(&spec.model, 1, &dev).expect("model");
        let params = model.params();
        let mut opt = AdamW::new(spec.optim.clone(), spec.model.backend).expect("optim");
        let start = Instant::now();
        for step in 0..STEPS {
            let (ids, t) =
                sample_batch(&corpus.train, spec.micro_batch, spec.seq, spec.seed, step, 0, &dev).expect("batch");
            let loss = model.loss(&ids, &t).expect("loss");
            opt.step(&params, &params.grads(&loss.backward().expect("backward"))).expect("step");
        }
        start.elapsed()
    };
    let through_pipeline = || {
        let start = Instant::now();
        let report = run_simulation(run_simulated(&spec, corpus.clone())).expect("runtime").expect("run");
        black_box(report.metrics);
        start.elapsed()
    };
    // Interleave the two so that machine noise hits both alike; report medians.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        a.push(plain().as_secs_f64());
        b.push(through_pipeline().as_secs_f64());
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (pa, pb) = (a[a.len() / 2], b[b.len() / 2]);
    println!(
        "plain model: {:.1} ms per step; pipeline runtime (S=1, R=1, sim network): {:.1} ms per step",
        pa * 1e3 / STEPS as f64,
        pb * 1e3 / STEPS as f64
    );
    println!("RATIO pipeline runtime overhead: {:+.1}% (target < 10%)", (pb / pa - 1.0) * 100.0);

    // A wide swarm: 64 data-parallel agents of the ~0.9M-parameter model, ring all-reduce every step.
    let world = genrl::World::uniform(64, genrl::DeviceProfile::a10(), LinkSpec::default());
    let wide = PipelineSpec { replicas: 64, steps: 3, micro_batch: 2, seq: 32, world, ..spec.clone() };
    let start = Instant::now();
    let report = run_simulation(run_simulated(&wide, corpus.clone())).expect("runtime").expect("run");
    let wall = start.elapsed().as_secs_f64() / wide.steps as f64;
    println!(
        "R=64 agents x {} params: {:.2} s wall-clock per simulated step ({:.2} s virtual per step), peak memory {:.2} GiB (target: fits in 4 GiB)",
        wide.model.param_count(),
        wall,
        report.virtual_time.as_secs_f64() / wide.steps as f64,
        models::memory::peak_resident_gib().unwrap_or(f64::NAN)
    );
}
