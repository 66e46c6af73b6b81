//! Training steps as runs take them — forward, backward and AdamW, one after another on changing batches
//! of the synthetic language — on candle's native kernels, on repops, and on repops while recording the
//! op tape, for the `tiny`, `small` and `medium` presets at 8 × 64 tokens. With `SWARMLAB_TORCH_PYTHON`
//! set to a Python that has PyTorch, the same model and optimizer in PyTorch eager
//! (`reference/torch_training_step.py --serve`) take their steps in the same rounds.
//!
//! The contenders take turns: in each round every one takes a few steps, then the next. A ratio is
//! between medians over the same rounds, so a machine that slows down for a while slows every contender,
//! not only the one that happened to run then; the spread of the rounds' own ratios is printed beside it.
//!
//! The steps run on the bench's main thread, made a worker of its own thread pool as `swarmlab` makes
//! its simulation threads (`repops::threads`); `SWARMLAB_BENCH_OUTSIDE_POOL=1` leaves it outside, so that
//! every parallel loop is handed to rayon's global pool and waited for (how steps ran before). While a
//! contender takes its steps, the pool's other threads wait for work awake
//! (`repops::threads::with_helpers_spinning`), as PyTorch's OpenMP threads do between parallel regions;
//! `SWARMLAB_BENCH_SLEEPING_HELPERS=1` lets them sleep whenever they find no work, as they did before.
//!
//! ```sh
//! cargo bench -p models --bench training_step                 # all three presets
//! cargo bench -p models --bench training_step -- small        # one preset
//! SWARMLAB_TORCH_PYTHON=/path/to/venv/bin/python cargo bench -p models --bench training_step
//! ```
//!
//! `--profile PRESET native|repops|tape [STEPS]` takes one contender's steps alone (200 by default, after
//! three to warm up) and prints their median: a workload for a sampling profiler, e.g.
//!
//! ```sh
//! cargo bench -p models --bench training_step --no-run      # prints the binary's path
//! perf record -g -- target/release/deps/training_step-<hash> --profile small repops 300
//! ```

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use candle_core::Device;
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
    /// Whether every step is recorded on the op tape.
    tape: bool,
}

impl Run {
    fn new(preset: &str, backend: Backend, tape: bool) -> Self {
        let cfg = ModelConfig { backend, ..ModelConfig::preset(preset).expect("preset") };
        let lang =
            SyntheticLanguage::new(&SyntheticConfig { train_tokens: 1 << 16, val_tokens: 1024, ..Default::default() })
                .expect("language");
        Self {
            model: Llama::new(&cfg, 1, &Device::Cpu).expect("model"),
            opt: AdamW::new(OptimConfig::default(), backend).expect("optim"),
            corpus: lang.corpus().train.clone(),
            step: 0,
            tape,
        }
    }

    /// One training step on the next batch.
    fn step(&mut self) {
        let (ids, targets) = sample_batch(&self.corpus, BATCH, SEQ, 0, self.step, 0, &Device::Cpu).expect("batch");
        self.step += 1;
        let params = self.model.params();
        let loss = self.model.loss(&ids, &targets).expect("loss");
        let grads = params.grads(&loss.backward().expect("backward"));
        std::hint::black_box(self.opt.step(&params, &grads).expect("step"));
    }

    /// The wall time of each of the next `n` steps, in seconds.
    fn timed_steps(&mut self, n: usize) -> Vec<f64> {
        // The pool's other threads wait for the steps' parallel loops awake, as PyTorch's OpenMP threads
        // do between parallel regions (`SWARMLAB_BENCH_SLEEPING_HELPERS=1` lets them sleep instead).
        if std::env::var_os("SWARMLAB_BENCH_SLEEPING_HELPERS").is_some() {
            return self.steps_timed_one_by_one(n);
        }
        repops::threads::with_helpers_spinning(|| self.steps_timed_one_by_one(n))
    }

    /// [`Run::timed_steps`] as they run.
    fn steps_timed_one_by_one(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let start = Instant::now();
                if self.tape {
                    let ((), tape) = repops::tape::record(false, || self.step());
                    std::hint::black_box(tape.len());
                } else {
                    self.step();
                }
                start.elapsed().as_secs_f64()
            })
            .collect()
    }
}

/// PyTorch eager running the reference script with `--serve`: it takes a preset's steps when asked.
struct PyTorch {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl PyTorch {
    fn start(python: &str) -> Result<Self, String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference/torch_training_step.py");
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).to_string();
        let (batch, seq) = (BATCH.to_string(), SEQ.to_string());
        let args = [script, "--serve", "--threads", &threads, "--presets", &PRESETS.join(","), "--batch", &batch];
        let mut child = Command::new(python)
            .args(args)
            .args(["--seq", &seq])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("could not run {python}: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to the PyTorch reference".into());
        };
        let mut torch = Self { child, stdin, stdout: BufReader::new(stdout) };
        let ready = torch.line()?;
        if !ready.starts_with("READY") {
            return Err(format!("the PyTorch reference said {ready:?} instead of READY"));
        }
        println!("PyTorch reference: {}", ready.trim_start_matches("READY").trim());
        Ok(torch)
    }

    fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("the PyTorch reference ended".into()),
            Ok(_) => Ok(line.trim_end().to_owned()),
            Err(e) => Err(format!("reading from the PyTorch reference: {e}")),
        }
    }

    /// The wall time of each of `preset`'s next `n` steps, in seconds.
    fn timed_steps(&mut self, preset: &str, n: usize) -> Result<Vec<f64>, String> {
        writeln!(self.stdin, "STEP {preset} {n}").map_err(|e| format!("writing to the PyTorch reference: {e}"))?;
        let answer = self.line()?;
        let times = answer
            .strip_prefix("TIMES ")
            .and_then(|rest| rest.strip_prefix(preset))
            .ok_or_else(|| format!("the PyTorch reference answered {answer:?}"))?;
        let times: Vec<f64> = times.split_whitespace().filter_map(|t| t.parse().ok()).collect();
        if times.len() == n { Ok(times) } else { Err(format!("asked for {n} step times, got {answer:?}")) }
    }
}

impl Drop for PyTorch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One contender's step times, by round.
struct Timings {
    name: &'static str,
    rounds: Vec<Vec<f64>>,
}

impl Timings {
    fn all(&self) -> Vec<f64> {
        self.rounds.concat()
    }

    fn median(&self) -> f64 {
        quantile(&self.all(), 0.5)
    }
}

fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs.get(((xs.len().saturating_sub(1)) as f64 * q).round() as usize).copied().unwrap_or(f64::NAN)
}

/// `slower`'s median step time over `faster`'s, and the least and greatest of the rounds' own ratios.
fn ratio(slower: &Timings, faster: &Timings) -> (f64, f64, f64) {
    let per_round: Vec<f64> =
        slower.rounds.iter().zip(&faster.rounds).map(|(s, f)| quantile(s, 0.5) / quantile(f, 0.5)).collect();
    let (lo, hi) = per_round.iter().fold((f64::INFINITY, 0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
    (slower.median() / faster.median(), lo, hi)
}

/// Rounds, and steps per turn, so that each preset's contenders take a few seconds each.
fn schedule(preset: &str) -> (usize, usize) {
    match preset {
        "tiny" => (30, 8),
        "small" => (30, 3),
        _ => (20, 1),
    }
}

fn bench(preset: &str, torch: &mut Option<PyTorch>) {
    let (rounds, per_turn) = schedule(preset);
    let mut runs = [
        ("native", Run::new(preset, Backend::Native, false)),
        ("repops", Run::new(preset, Backend::RepOps, false)),
        ("repops + tape", Run::new(preset, Backend::RepOps, true)),
    ];
    let mut timings: Vec<Timings> = runs.iter().map(|(name, _)| Timings { name, rounds: Vec::new() }).collect();
    let mut torch_timings = Timings { name: "PyTorch eager", rounds: Vec::new() };
    // Warm-up: two turns each, not counted.
    for round in 0..rounds + 2 {
        for ((_, run), t) in runs.iter_mut().zip(&mut timings) {
            let times = run.timed_steps(per_turn);
            if round >= 2 {
                t.rounds.push(times);
            }
        }
        if let Some(py) = torch.as_mut() {
            match py.timed_steps(preset, per_turn) {
                Ok(times) if round >= 2 => torch_timings.rounds.push(times),
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{e}; going on without PyTorch");
                    *torch = None;
                    torch_timings.rounds.clear();
                }
            }
        }
    }
    println!("training_step {preset}: {BATCH} x {SEQ} tokens, {rounds} rounds of {per_turn} steps each in turn");
    let with_torch = !torch_timings.rounds.is_empty();
    for t in timings.iter().chain(with_torch.then_some(&torch_timings)) {
        let all = t.all();
        println!(
            "  {:<14} {:8.2} ms per step (quartiles {:.2}–{:.2}), {:>8.0} tokens/s",
            t.name,
            t.median() * 1e3,
            quantile(&all, 0.25) * 1e3,
            quantile(&all, 0.75) * 1e3,
            (BATCH * SEQ) as f64 / t.median()
        );
    }
    let [native, repops, taped] = &timings[..] else { unreachable!("three runs") };
    let (r, lo, hi) = ratio(repops, native);
    println!("RATIO {preset} repops: {r:.2}x native's step time (rounds {lo:.2}–{hi:.2}x)");
    let (r, lo, hi) = ratio(taped, repops);
    let pct = |x: f64| (x - 1.0) * 100.0;
    println!(
        "RATIO {preset} tape recording: {:+.1}% of the repops step time (rounds {:+.1}% to {:+.1}%; target < 10%)",
        pct(r),
        pct(lo),
        pct(hi)
    );
    if with_torch {
        for contender in [native, repops] {
            // Tokens per second over PyTorch's: its step time over ours.
            let (r, lo, hi) = ratio(&torch_timings, contender);
            println!(
                "RATIO {preset} {} vs PyTorch eager: {r:.2}x its tokens/s (rounds {lo:.2}–{hi:.2}x)",
                contender.name
            );
        }
    }
}

/// One contender's steps alone, for a profiler: `[preset, native|repops|tape, steps?]`.
fn profile(args: &[&str]) -> Result<(), String> {
    let preset = *args.first().ok_or("no preset")?;
    ModelConfig::preset(preset).map_err(|e| e.to_string())?;
    let contender = args.get(1).copied().unwrap_or_default();
    let (backend, tape) = match contender {
        "native" => (Backend::Native, false),
        "repops" => (Backend::RepOps, false),
        "tape" => (Backend::RepOps, true),
        other => return Err(format!("{other:?} is not a contender (native, repops or tape)")),
    };
    let steps = match args.get(2) {
        Some(n) => n.parse::<usize>().ok().filter(|&n| n > 0).ok_or(format!("{n:?} is not a number of steps"))?,
        None => 200,
    };
    let mut run = Run::new(preset, backend, tape);
    run.timed_steps(3);
    let times = run.timed_steps(steps);
    println!("{preset} {contender}: {steps} steps, median {:.2} ms", quantile(&times, 0.5) * 1e3);
    Ok(())
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
    // As `swarmlab` runs: this thread works for the pool that runs its ops' parallel loops.
    if std::env::var_os("SWARMLAB_BENCH_OUTSIDE_POOL").is_none() {
        repops::threads::work_on_this_thread(0);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--profile") {
        let rest: Vec<&str> = args[at + 1..].iter().map(String::as_str).filter(|a| !a.starts_with("--")).collect();
        if let Err(e) = profile(&rest) {
            eprintln!("{e}\nusage: training_step --profile PRESET native|repops|tape [STEPS]");
            std::process::exit(2);
        }
        return;
    }
    // `cargo bench` passes `--bench`; a filter argument picks presets.
    let filter: Vec<String> = args.into_iter().filter(|a| !a.starts_with("--")).collect();
    let mut torch = match std::env::var("SWARMLAB_TORCH_PYTHON") {
        Ok(python) => PyTorch::start(&python).map_err(|e| eprintln!("{e}; going on without PyTorch")).ok(),
        Err(_) => None,
    };
    for preset in PRESETS {
        if filter.is_empty() || filter.iter().any(|f| preset.contains(f.as_str())) {
            bench(preset, &mut torch);
        }
    }
}
