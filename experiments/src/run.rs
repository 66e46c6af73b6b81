//! `swarmlab run`: trains a configuration's arms one after the other on the same data, lets every study
//! measure what it owns (after each arm and after all of them), and writes the run's files after each
//! part, so an interrupted run keeps what it finished.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use models::data::{Corpus, SyntheticLanguage, load_text};

use crate::config::{Builtin, RunConfig};
use crate::files::fresh_out_dir;
use crate::report::{ArmResult, Claim, write_run};
use crate::studies::{FINDINGS, Parts, RunView, TrainedArm};

/// The corpus a configuration trains on: its text file or folder, else a built-in one (the synthetic
/// language or the shipped prose).
pub(crate) fn corpus(cfg: &RunConfig) -> Result<Corpus> {
    Ok(match (&cfg.corpus.path, cfg.corpus.builtin) {
        (Some(path), _) => load_text(path, cfg.corpus.val_fraction())?,
        (None, Builtin::Prose) => models::data::prose(cfg.corpus.val_fraction())?,
        (None, Builtin::Synthetic) => SyntheticLanguage::new(&cfg.corpus.synthetic)?.corpus(),
    })
}

/// Ctrl-C: the first asks to finish the current arm and write everything so far; a second stops at once
/// (every file already written stays complete: they are replaced atomically). Returns the flag, one for
/// the whole process: the handler is installed by the first run (a study over seeds runs several).
fn stop_on_ctrl_c() -> Arc<AtomicBool> {
    static STOP: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    STOP.get_or_init(|| {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                eprintln!("\ninterrupted again: stopping now; the files written so far are complete");
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: finishing the current arm, then writing the results (Ctrl-C again to stop now)");
        });
        stop
    })
    .clone()
}

/// A progress bar for arm `i` of `n`, fed from the workers' step counter until `done`.
fn progress_bar(
    i: usize,
    n: usize,
    label: &str,
    steps: u64,
    progress: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let bar = indicatif::ProgressBar::new(steps).with_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps, {elapsed} elapsed, ~{eta} left",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(format!("[{}/{n}] {label:<20}", i + 1));
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            bar.set_position(progress.load(Ordering::Relaxed));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        bar.finish_and_clear();
    })
}

/// Where a run goes and whether it may replace one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Output {
    /// The folder (`runs/<name>-<time>` if not given).
    pub(crate) out: Option<PathBuf>,
    /// Replace a run already in `out`.
    pub(crate) force: bool,
    /// Run even past this machine's memory or a week of compute (as estimated).
    pub(crate) allow_large: bool,
}

/// Runs `cfg` (shortened by [`RunConfig::quick`] if `quick`) into its output folder, prints where its
/// report is and returns the claims it speaks to. An interrupted run writes what it finished, says in
/// report.md and summary.json which arms did not, and returns an error.
pub(crate) fn run(mut cfg: RunConfig, output: Output, quick: bool) -> Result<Vec<Claim>> {
    if quick {
        cfg = cfg.quick();
        cfg.validate()?;
    }
    let needs = crate::needs::Needs::of(&cfg)?;
    // The cores this run's operations use.
    let cores = crate::threads::per_operation().min(crate::threads::cores());
    needs.check(crate::needs::machine_memory(), cores, output.allow_large)?;
    let device = cfg.device.resolve()?;
    if cfg.network.transport == genrl::TransportKind::Quic {
        let out = fresh_out_dir(output.out, &cfg.name, output.force)?;
        return crate::launch::run_over_quic(&cfg, &out).map(|()| Vec::new());
    }
    // Everything that can be refused is checked before the output folder is made.
    let corpus = Arc::new(corpus(&cfg)?);
    corpus.check_fits(cfg.seq)?;
    let out = fresh_out_dir(output.out, &cfg.name, output.force)?;
    // Ctrl-C is handled from before the start line, so an interruption seen after it finds the handler.
    let stop = stop_on_ctrl_c();
    let floor = corpus.entropy_floor.map_or(String::new(), |h| format!(", loss floor {h:.3} nats/token"));
    eprintln!(
        "swarmlab run {:?}: {} arms, {} steps each, corpus {}{floor}, on {}; needs about {} of memory and {} of compute (estimated)",
        cfg.name,
        cfg.arms.len(),
        cfg.steps,
        corpus.name,
        models::device::name(&device),
        crate::needs::gib(needs.bytes),
        crate::needs::duration(needs.seconds(cores))
    );
    let started = Instant::now();
    let mut results = Vec::new();
    let mut parts = Parts::default();
    let save = |results: &[ArmResult], parts: &Parts| {
        let view = RunView { cfg: &cfg, corpus: &corpus, results, parts };
        write_run(&out, &view, started.elapsed())
    };
    for (i, arm) in cfg.arms.iter().enumerate() {
        if stop.load(Ordering::SeqCst) {
            eprintln!("skipping the remaining {} arms", cfg.arms.len() - i);
            break;
        }
        let mut spec = cfg.spec(i)?;
        let progress = Arc::new(AtomicU64::new(0));
        spec.progress = Some(progress.clone());
        let t = Instant::now();
        let done = Arc::new(AtomicBool::new(false));
        let ticker = progress_bar(i, cfg.arms.len(), &arm.label, spec.steps, progress, done.clone());
        // With more than one thread per operation, the pool's other threads wait for the simulation's
        // parallel loops awake (with one, as by default, this changes nothing).
        let outcome = repops::threads::with_helpers_spinning(|| {
            genrl::run_simulation(pipeline::run_simulated(&spec, corpus.clone()))
        });
        done.store(true, Ordering::Relaxed);
        let _ = ticker.join();
        let report = outcome?.with_context(|| format!("arm {:?}", arm.label))?;
        let result = ArmResult::new(arm.clone(), (spec.sync.name(), spec.recovery.name()), &report, t.elapsed());
        eprint!("[{}/{}] {:<24} {} workers: ", i + 1, cfg.arms.len(), arm.label, spec.stages * spec.replicas);
        eprintln!(
            "{} after {} steps, {:.3} s virtual, {:.1} s wall",
            result.final_val_loss.map_or("not evaluated".into(), |v| format!("val loss {v:.3}")),
            cfg.steps,
            result.virtual_time_s,
            result.wall_s
        );
        results.push(result);
        let trained = TrainedArm { label: &arm.label, spec: &spec, report: &report, corpus: &corpus };
        for f in &FINDINGS {
            f.after_arm(&cfg, &trained, &mut parts)?;
        }
        // Written after every arm, so an interrupted study keeps what it finished.
        save(&results, &parts)?;
    }
    let stopped = || stop.load(Ordering::SeqCst);
    for f in &FINDINGS {
        f.after_arms(&cfg, &mut parts, &stopped, &mut |p: &Parts| save(&results, p))?;
    }
    if results.is_empty() {
        // Interrupted before an arm finished, nothing was written yet: the report still says which arms
        // did not run. (Each finished arm wrote the files already.)
        save(&results, &parts)?;
    }
    let unfinished = cfg.arms.len() - results.len();
    println!("report: {}", out.join("report.md").display());
    if unfinished > 0 {
        anyhow::bail!("interrupted: {unfinished} of {} arms did not run (report.md lists them)", cfg.arms.len());
    }
    Ok(crate::studies::claims(&RunView { cfg: &cfg, corpus: &corpus, results: &results, parts: &parts }))
}
