//! What every run leaves behind: config.toml, metrics.csv, summary.json, run.h5 and report.md, each
//! written atomically (a temporary file, then a rename), plus the plots. The papers' claims and the
//! study-specific sections and files come from the studies ([`crate::studies::Findings`]): this module
//! receives them and writes them down.

mod h5;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use pipeline::RunReport;
use serde::Serialize;

pub(crate) use h5::{finished_run, rewrite};

pub(crate) use crate::claims::Claim;

use crate::config::ArmConfig;
use crate::files::write_atomic;
use crate::studies::{FINDINGS, RunView};

/// The headline figures of one arm.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ArmResult {
    pub(crate) label: String,
    /// The synchronisation protocol, as it names itself.
    pub(crate) sync: String,
    /// How failed workers come back, as the protocol names itself.
    pub(crate) recovery: String,
    pub(crate) stages: usize,
    pub(crate) replicas: usize,
    pub(crate) first_val_loss: Option<f64>,
    pub(crate) final_val_loss: Option<f64>,
    pub(crate) final_train_loss: Option<f64>,
    pub(crate) virtual_time_s: f64,
    pub(crate) wall_s: f64,
    pub(crate) bytes_sent: u64,
    #[serde(skip)]
    pub(crate) train: Vec<(u64, f64)>,
    #[serde(skip)]
    pub(crate) val: Vec<(u64, f64)>,
    /// Mean sync latency per round (s), sync bytes per worker per round, idle seconds per worker per
    /// step, and the across-replica weight variance at the end and averaged over the evaluations after
    /// step 0.
    pub(crate) sync_latency_s: Option<f64>,
    pub(crate) sync_bytes_per_round: Option<f64>,
    /// Steps at which failures happened (several stages failing in one step count once).
    pub(crate) failure_steps: usize,
    /// Mean height of the training-loss spike after a recovery (nats) and mean steps until it decayed.
    pub(crate) spike: Option<f64>,
    pub(crate) spike_decay_steps: Option<f64>,
    pub(crate) idle_s_per_step: Option<f64>,
    pub(crate) final_weight_variance: Option<f64>,
    pub(crate) mean_weight_variance: Option<f64>,
    /// The content hash of replica 0's final weights ([`weights_hash`]), to compare runs bit for bit;
    /// empty when read back from run.h5.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(crate) weights_blake3: String,
    /// Validation loss by virtual time (seconds) of the evaluation.
    #[serde(skip)]
    pub(crate) val_time: Vec<(f64, f64)>,
    /// Bytes sent by all workers together by the end of each step.
    #[serde(skip)]
    pub(crate) bytes: Vec<(u64, f64)>,
    /// Across-replica weight variance at each evaluation.
    #[serde(skip)]
    pub(crate) weight_variance: Vec<(u64, f64)>,
    /// Mean over workers of the sync latency at each step with a round.
    #[serde(skip)]
    pub(crate) sync_time: Vec<(u64, f64)>,
    /// Mean over workers of the bytes sent in each step's round.
    #[serde(skip)]
    pub(crate) sync_bytes: Vec<(u64, f64)>,
    /// Mean over workers of the time spent waiting for messages in each step.
    #[serde(skip)]
    pub(crate) idle: Vec<(u64, f64)>,
    /// Steps with a recovery.
    #[serde(skip)]
    pub(crate) recoveries: Vec<(u64, f64)>,
    /// Events (failures, recoveries…) as `time_s`, `kind`, `detail`.
    #[serde(skip)]
    pub(crate) events: Vec<(f64, String, String)>,
}

/// The mean of `values`, if there are any.
fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// The mean of a step series' values.
fn series_mean(series: &[(u64, f64)]) -> Option<f64> {
    mean(series.iter().map(|v| v.1))
}

impl ArmResult {
    pub(crate) fn new(arm: ArmConfig, (sync, recovery): (String, String), report: &RunReport, wall: Duration) -> Self {
        let m = &report.metrics;
        let train = m.mean_by_step("train_loss");
        let val = m.mean_by_step("val_loss");
        // Every evaluating replica's loss, averaged per evaluation, at the time the last one finished.
        let val_time = m.mean_by_occasion("val_loss").into_iter().map(|(t, _, v)| (t.as_secs_f64(), v)).collect();
        let bytes = report
            .metrics
            .mean_by_step("bytes_sent")
            .into_iter()
            .map(|(step, mean)| {
                let workers = report.metrics.series("bytes_sent").iter().filter(|s| s.step == step).count();
                (step, mean * workers as f64)
            })
            .collect();
        let events = report
            .metrics
            .events
            .iter()
            .map(|e| (e.time.as_secs_f64(), format!("{:?}", e.kind), e.detail.clone()))
            .collect();
        Self::from_series(
            arm,
            (sync, recovery),
            Series {
                train,
                val,
                val_time,
                bytes,
                weight_variance: m.mean_by_step("weight_variance"),
                sync_time: m.mean_by_step("sync_time"),
                sync_bytes: m.mean_by_step("sync_bytes"),
                idle: m.mean_by_step("idle_time"),
                recoveries: m.mean_by_step("recovery"),
            },
            (report.virtual_time.as_secs_f64(), wall.as_secs_f64(), report.bytes_sent),
            events,
        )
        .with_weights(&report.weights)
    }

    fn with_weights(mut self, weights: &BTreeMap<String, candle_core::Tensor>) -> Self {
        self.weights_blake3 = weights_hash(weights);
        self
    }

    /// Derives the headline figures from the series (also used when reading `run.h5` back).
    fn from_series(
        arm: ArmConfig,
        (sync, recovery): (String, String),
        s: Series,
        (virtual_time_s, wall_s, bytes_sent): (f64, f64, u64),
        events: Vec<(f64, String, String)>,
    ) -> Self {
        let spikes = loss_spikes(&s.train, &s.recoveries);
        Self {
            label: arm.label,
            sync,
            recovery,
            failure_steps: s.recoveries.len(),
            spike: mean(spikes.iter().map(|s| s.0)),
            spike_decay_steps: mean(spikes.iter().map(|s| s.1)),
            stages: arm.stages,
            replicas: arm.replicas,
            first_val_loss: s.val.first().map(|v| v.1),
            final_val_loss: s.val.last().map(|v| v.1),
            final_train_loss: s.train.last().map(|v| v.1),
            virtual_time_s,
            wall_s,
            bytes_sent,
            sync_latency_s: series_mean(&s.sync_time),
            sync_bytes_per_round: series_mean(&s.sync_bytes),
            idle_s_per_step: series_mean(&s.idle),
            final_weight_variance: s.weight_variance.last().map(|v| v.1),
            mean_weight_variance: mean(s.weight_variance.iter().filter(|v| v.0 > 0).map(|v| v.1)),
            weights_blake3: String::new(),
            train: s.train,
            val: s.val,
            val_time: s.val_time,
            bytes: s.bytes,
            weight_variance: s.weight_variance,
            sync_time: s.sync_time,
            sync_bytes: s.sync_bytes,
            idle: s.idle,
            recoveries: s.recoveries,
            events,
        }
    }

    /// The step series, by the names `run.h5` stores them under.
    fn step_series(&self) -> [(&'static str, &Vec<(u64, f64)>); 8] {
        [
            ("train", &self.train),
            ("val", &self.val),
            ("bytes", &self.bytes),
            ("weight_variance", &self.weight_variance),
            ("sync_time", &self.sync_time),
            ("sync_bytes", &self.sync_bytes),
            ("idle", &self.idle),
            ("recovery", &self.recoveries),
        ]
    }
}

/// Everything an arm measured over time.
struct Series {
    train: Vec<(u64, f64)>,
    val: Vec<(u64, f64)>,
    val_time: Vec<(f64, f64)>,
    bytes: Vec<(u64, f64)>,
    weight_variance: Vec<(u64, f64)>,
    sync_time: Vec<(u64, f64)>,
    sync_bytes: Vec<(u64, f64)>,
    idle: Vec<(u64, f64)>,
    recoveries: Vec<(u64, f64)>,
}

/// For each step `t` where a failed worker was rebuilt in place: how far the training loss (smoothed over 5 steps) rose above its mean
/// over the 10 steps before `t`, at most 20 steps after, and how many steps it took to come back within
/// 0.05 nats of that level (capped at 200). Recoveries within 10 steps of an earlier one are skipped:
/// their spikes overlap.
fn loss_spikes(train: &[(u64, f64)], recoveries: &[(u64, f64)]) -> Vec<(f64, f64)> {
    let at =
        |from: u64, to: u64| -> Vec<f64> { train.iter().filter(|v| v.0 >= from && v.0 < to).map(|v| v.1).collect() };
    let avg = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let smooth = |t: u64| avg(&at(t.saturating_sub(2), t + 3));
    let mut out = Vec::new();
    let mut previous: Option<u64> = None;
    for &(t, kind) in recoveries {
        // A rollback retrains the same steps: no spike to measure.
        if kind != pipeline::worker::REBUILT {
            previous = Some(t);
            continue;
        }
        if previous.is_some_and(|p| t < p + 10) || t < 10 {
            previous = Some(t);
            continue;
        }
        previous = Some(t);
        let Some(base) = avg(&at(t - 10, t)) else { continue };
        let peak = (t..t + 20).filter_map(smooth).fold(f64::NEG_INFINITY, f64::max);
        if !peak.is_finite() {
            continue;
        }
        let decay = (t..t + 200).find(|&u| smooth(u).is_some_and(|l| l <= base + 0.05)).map_or(200, |u| u - t);
        out.push(((peak - base).max(0.0), decay as f64));
    }
    out
}

#[derive(Serialize)]
struct Summary<'a> {
    name: &'a str,
    corpus: &'a str,
    entropy_floor: Option<f64>,
    steps: u64,
    wall_s: f64,
    arms: &'a [ArmResult],
    /// Arms of the configuration that did not run (an interrupted run), by label.
    unfinished_arms: Vec<&'a str>,
    scale: &'a [noloco::scale::ScalePoint],
    claims: Vec<Claim>,
}

/// The labels of the configured arms that have no result (not run yet, or never: an interrupted run).
fn unfinished<'a>(run: &RunView<'a>) -> Vec<&'a str> {
    run.cfg
        .arms
        .iter()
        .filter(|a| !run.results.iter().any(|r| r.label == a.label))
        .map(|a| a.label.as_str())
        .collect()
}

/// Writes every output file of a run into `out`: the common files, then each study's.
pub(crate) fn write_run(out: &Path, run: &RunView<'_>, wall: Duration) -> Result<()> {
    let (cfg, corpus, results) = (run.cfg, run.corpus, run.results);
    write_atomic(&out.join("config.toml"), toml::to_string(cfg).context("cannot serialise the config")?.as_bytes())?;
    let mut csv = String::from("arm,step,train_loss,val_loss\n");
    for r in results {
        let steps: std::collections::BTreeSet<u64> = r.train.iter().chain(&r.val).map(|v| v.0).collect();
        for step in steps {
            let t = r.train.iter().find(|v| v.0 == step).map_or(String::new(), |v| format!("{:.6}", v.1));
            let v = r.val.iter().find(|v| v.0 == step).map_or(String::new(), |v| format!("{:.6}", v.1));
            let _ = writeln!(csv, "{},{step},{t},{v}", r.label.replace(',', ";"));
        }
    }
    write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;
    let summary = Summary {
        name: &cfg.name,
        corpus: &corpus.name,
        entropy_floor: corpus.entropy_floor,
        steps: cfg.steps,
        wall_s: wall.as_secs_f64(),
        arms: results,
        unfinished_arms: unfinished(run),
        scale: &run.parts.scale,
        claims: crate::studies::claims(run),
    };
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    h5::write_hdf5(out, run)?;
    crate::plots::write_plots(out, results, corpus.entropy_floor)?;
    for f in &FINDINGS {
        f.write_files(out, run)?;
    }
    write_atomic(&out.join("report.md"), markdown(run, &summary).as_bytes())
}

/// `v` formatted by `f`, or a dash.
pub(crate) fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "–".into(), f)
}

fn markdown(run: &RunView<'_>, summary: &Summary<'_>) -> String {
    let (cfg, corpus, results) = (run.cfg, run.corpus, run.results);
    let mut md = String::new();
    let _ = writeln!(md, "# swarmlab run `{}`\n", cfg.name);
    let missing = &summary.unfinished_arms;
    if !missing.is_empty() {
        let _ = writeln!(
            md,
            "**Not finished:** {} of {} arms did not run ({}); the tables below hold the arms that did.\n",
            missing.len(),
            cfg.arms.len(),
            missing.join(", ")
        );
    }
    let _ = writeln!(md, "Corpus: {}  ", corpus.name);
    match corpus.entropy_floor {
        Some(h) => {
            let _ = writeln!(md, "Loss floor (the source's exact entropy rate): **{h:.3} nats/token**  ");
        }
        None => {
            let _ = writeln!(md, "Loss floor: unknown for a text corpus  ");
        }
    }
    let swarm = match &cfg.geo {
        Some(geo) => format!(
            "a geo-distributed swarm (twelve cloud regions; H100-, A10- and half-speed A10-class nodes{}; stages \
             assigned by {})",
            cfg.profile_tflops.map_or(String::new(), |t| format!(", the fastest at {t} TFLOP/s")),
            geo.assignment.replace('_', " ")
        ),
        None => {
            format!("device `{}`, links {} ms / {} Mbit/s", cfg.profile, cfg.network.latency_ms, cfg.network.mbit_per_s)
        }
    };
    let _ = writeln!(
        md,
        "Model: {}; {} steps of {} micro-batches x {} sequences x {} tokens per replica, {swarm}.\n",
        crate::studies::model_words(cfg),
        cfg.steps,
        cfg.micro_batches,
        cfg.micro_batch,
        cfg.seq,
    );
    md.push_str(&crate::studies::setup_section(cfg));
    md.push_str("\n## Arms\n\n");
    let _ = writeln!(
        md,
        "| arm | stages x replicas | val loss: first → last | val perplexity | gap to floor | virtual time | sent | wall |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for r in results {
        let gap = match (r.final_val_loss, corpus.entropy_floor) {
            (Some(v), Some(h)) => format!("{:.3}", v - h),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} x {} | {} | {} | {gap} | {:.3} s | {:.1} MiB | {:.1} s |",
            r.label,
            r.stages,
            r.replicas,
            match (r.first_val_loss, r.final_val_loss) {
                (Some(a), Some(b)) => format!("{a:.3} → {b:.3}"),
                _ => "not evaluated (eval_every = 0)".into(),
            },
            opt(r.final_val_loss, |v| format!("{:.3}", v.exp())),
            r.virtual_time_s,
            r.bytes_sent as f64 / (1 << 20) as f64,
            r.wall_s
        );
    }
    if !summary.claims.is_empty() {
        let _ = writeln!(md, "\n## Claims\n\n| claim | ours | reproduced |\n|---|---|---|");
        for c in &summary.claims {
            let _ = writeln!(md, "| {} | {} | {} |", c.claim, c.ours, c.reproduced.text());
        }
    }
    let _ = writeln!(md, "\n## Validation loss by step\n");
    let _ = writeln!(
        md,
        "![validation loss by step](val_loss_by_step.svg) ![validation loss by virtual time](val_loss_by_time.svg) ![bytes sent](bytes_sent.svg)\n"
    );
    let _ = write!(md, "| step |");
    for r in results {
        let _ = write!(md, " {} |", r.label);
    }
    let _ = write!(md, "\n|---|");
    for _ in results {
        let _ = write!(md, "---|");
    }
    let _ = writeln!(md);
    let steps: std::collections::BTreeSet<u64> = results.iter().flat_map(|r| r.val.iter().map(|v| v.0)).collect();
    for step in steps {
        let _ = write!(md, "| {step} |");
        for r in results {
            let v = r.val.iter().find(|v| v.0 == step).map_or("–".to_string(), |v| format!("{:.3}", v.1));
            let _ = write!(md, " {v} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(md, "\n## Synchronisation\n");
    let _ = writeln!(
        md,
        "Sync latency: virtual time from the start of a worker's synchronisation (gradient all-reduce or outer round) until it may continue. Idle: time a worker waited for any message, per step. Weight variance: across the replicas of a stage, per weight, averaged over the evaluations after step 0 (and at the last one).\n"
    );
    let _ = writeln!(
        md,
        "| arm | protocol | rounds | sync latency / round | sent / worker / round | idle / step | weight variance: mean (last) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in results {
        let _ = writeln!(
            md,
            "| {} | `{}` | {} | {} | {} | {} | {} |",
            r.label,
            r.sync,
            r.sync_time.len(),
            opt(r.sync_latency_s, |v| format!("{v:.3} s")),
            opt(r.sync_bytes_per_round, |v| format!("{:.2} MiB", v / (1 << 20) as f64)),
            opt(r.idle_s_per_step, |v| format!("{v:.3} s")),
            match (r.mean_weight_variance, r.final_weight_variance) {
                (Some(m), Some(f)) => format!("{m:.3e} ({f:.3e})"),
                _ => "–".into(),
            },
        );
    }
    if results.iter().any(|r| !r.weight_variance.is_empty()) {
        let _ = writeln!(md, "\n![weight variance across replicas](weight_variance.svg)");
    }
    for f in &FINDINGS {
        md.push_str(&f.section(run));
    }
    let _ = writeln!(
        md,
        "\nRaw data: `run.h5` (config, every series, events, scaling points), `metrics.csv` (per step), `summary.json` (headline figures and claims). Plots: the `.svg` files. Total wall time {:.1} s.",
        summary.wall_s
    );
    md
}

/// The content hash of `weights`, in hex: Verde's state hash of these weights alone (no optimizer
/// moments, step 0) — each tensor hashed by repops with its shape, under its name ("" if a tensor cannot
/// be read).
pub(crate) fn weights_hash(weights: &BTreeMap<String, candle_core::Tensor>) -> String {
    verde::StateManifest::of(weights, &BTreeMap::new(), 0).map(|m| crate::verify::hex(&m.hash())).unwrap_or_default()
}
