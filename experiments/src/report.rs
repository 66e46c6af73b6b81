//! What a run leaves behind: config.toml, metrics.csv, summary.json, run.h5 and report.md, each written
//! atomically (a temporary file, then a rename).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use models::data::Corpus;
use pipeline::RunReport;
use serde::Serialize;

use noloco::scale::ScalePoint;

use crate::config::{ArmConfig, Routing, RunConfig};

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    transport::fsutil::write_atomic(path, bytes, false).with_context(|| format!("cannot write {}", path.display()))
}

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
        let val_time = m.series("val_loss").iter().map(|s| (s.time.as_secs_f64(), s.value)).collect();
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

/// The first virtual time (s) at which the validation loss is at or below `target`.
fn time_to(r: &ArmResult, target: f64) -> Option<f64> {
    r.val_time.iter().find(|v| v.1 <= target).map(|v| v.0)
}

/// SkipPipe's claims: iteration time, convergence per step and per time, and inference with half the
/// stages dropped.
fn skip_claims(cfg: &RunConfig, results: &[ArmResult], skip: &crate::skip::SkipResults) -> Vec<Claim> {
    let mut out = Vec::new();
    let standard_row =
        skip.iteration.iter().find(|r| r.assignment == "local_search" && r.method.starts_with("standard"));
    let best_row = skip
        .iteration
        .iter()
        .filter(|r| r.assignment == "local_search" && r.method == "SkipPipe")
        .min_by(|a, b| a.iteration_s.total_cmp(&b.iteration_s));
    let scheduled_full =
        skip.iteration.iter().find(|r| r.assignment == "local_search" && r.method == "SkipPipe" && r.skip_ratio == 0.0);
    if let (Some(base), Some(best)) = (standard_row, best_row) {
        let cut = (1.0 - best.iteration_s / base.iteration_s) * 100.0;
        // How much of it is skipping, rather than choosing nodes: against the scheduled full pipeline.
        let by_skipping = scheduled_full.map_or(String::new(), |f| {
            format!("; {:.0}% against the scheduled full pipeline", (1.0 - best.iteration_s / f.iteration_s) * 100.0)
        });
        out.push(Claim {
            claim: "SkipPipe cuts the iteration time by up to 55% against the standard pipeline (arXiv v1; 50% later)"
                .into(),
            ours: format!(
                "{cut:.0}% lower at {:.0}% skipped ({:.2} s vs {:.2} s, {} nodes){by_skipping}",
                best.skip_ratio * 100.0,
                best.iteration_s,
                base.iteration_s,
                cfg.skippipe.as_ref().map_or(0, |s| s.partition.iter().sum::<usize>())
            ),
            reproduced: if cut >= 45.0 {
                Verdict::Yes
            } else if cut > 10.0 {
                Verdict::Partly
            } else {
                Verdict::No
            },
        });
    }
    let standard = result_where(cfg, results, |a| a.routing == Routing::Fixed && a.skip_ratio == 0.0);
    let skipping = result_where(cfg, results, |a| a.routing == Routing::Skippipe && a.skip_ratio >= 0.2);
    if let (Some(st), Some(sk)) = (standard, skipping)
        && let (Some(a), Some(b)) = (st.final_val_loss, sk.final_val_loss)
    {
        let gap = (b / a - 1.0) * 100.0;
        out.push(Claim {
            claim: "training with ~25% of the stages skipped converges about like the full pipeline, step for step"
                .into(),
            ours: format!("val loss {b:.3} ({}) vs {a:.3} (standard), {gap:+.1}%", sk.label),
            reproduced: if gap <= 3.0 {
                Verdict::Yes
            } else if gap <= 10.0 {
                Verdict::Partly
            } else {
                Verdict::No
            },
        });
        let target = a.max(b);
        if let (Some(ta), Some(tb)) = (time_to(st, target), time_to(sk, target)) {
            out.push(Claim {
                claim: "…and reaches a given loss sooner in wall-clock time".into(),
                ours: format!("val loss {target:.3} after {tb:.1} s ({}) vs {ta:.1} s (standard)", sk.label),
                reproduced: Verdict::from(tb < ta),
            });
        }
    }
    let half = |label: &str| skip.dropped.iter().find(|d| d.arm == label && (d.keep - 0.5).abs() < 1e-9);
    if let (Some(st), Some(sk)) = (standard, skipping)
        && let (Some(a), Some(b)) = (half(&st.label), half(&sk.label))
    {
        let rise = |d: &crate::skip::DroppedRow| ((d.val_loss - d.full_val_loss).exp() - 1.0) * 100.0;
        let (ra, rb) = (rise(a), rise(b));
        out.push(Claim {
            claim: "a SkipPipe-trained model loses only ~7% perplexity run with half its stages, far less than a \
                    normally trained one"
                .into(),
            ours: format!(
                "{rb:+.1}% ({}) vs {ra:+.1}% (standard), {} of {} stages",
                sk.label, b.stages_kept, sk.stages
            ),
            reproduced: if rb <= 10.0 && rb < ra {
                Verdict::Yes
            } else if rb < ra {
                Verdict::Partly
            } else {
                Verdict::No
            },
        });
    }
    out
}

/// How far a paper's claim held in our run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    /// It held.
    Yes,
    /// The effect is there but smaller than claimed.
    Partly,
    /// It did not hold.
    No,
}

impl Verdict {
    fn from(held: bool) -> Self {
        if held { Self::Yes } else { Self::No }
    }
}

#[derive(Serialize)]
struct Claim {
    claim: String,
    ours: String,
    reproduced: Verdict,
}

#[derive(Serialize)]
struct Summary<'a> {
    name: &'a str,
    corpus: &'a str,
    entropy_floor: Option<f64>,
    steps: u64,
    wall_s: f64,
    arms: &'a [ArmResult],
    scale: &'a [ScalePoint],
    claims: Vec<Claim>,
}

/// The papers' claims this run can speak to, each beside what we measured. Which ones apply follows
/// from the arms and parts the config has.
/// The result of the first arm whose config `pred` accepts, if it ran.
fn result_where<'a>(
    cfg: &RunConfig,
    results: &'a [ArmResult],
    pred: impl Fn(&ArmConfig) -> bool,
) -> Option<&'a ArmResult> {
    let arm = cfg.arms.iter().find(|a| pred(a))?;
    results.iter().find(|r| r.label == arm.label)
}

fn claims(cfg: &RunConfig, results: &[ArmResult], scale: &[ScalePoint]) -> Vec<Claim> {
    let find = |pred: &dyn Fn(&ArmConfig) -> bool| result_where(cfg, results, pred);
    let mut out = Vec::new();
    let plain = |a: &ArmConfig, s: usize, r: usize| a.stages == s && a.replicas == r && a.sync == "all_reduce";
    if let (Some(one), Some(four)) = (find(&|a| plain(a, 1, 1)), find(&|a| plain(a, 1, 4)))
        && let (Some(a), Some(b)) = (one.final_val_loss, four.final_val_loss)
    {
        out.push(Claim {
            claim: "data parallelism over 4 replicas beats 1 replica at equal steps (4x the data per step)".into(),
            ours: format!("val loss {b:.3} (R=4) vs {a:.3} (R=1)"),
            reproduced: Verdict::from(b < a),
        });
    }
    let noloco_main = find(&|a| a.sync == "noloco" && a.routing == Routing::Random && a.noloco.is_none_or(|n| n.pull));
    let diloco = find(&|a| a.sync == "diloco");
    if let (Some(n), Some(d)) = (noloco_main, diloco)
        && let (Some(ln), Some(ld)) = (n.final_val_loss, d.final_val_loss)
    {
        let (pn, pd) = (ln.exp(), ld.exp());
        let better = (pd - pn) / pd * 100.0;
        out.push(Claim {
            claim: "NoLoCo converges up to 4% faster than DiLoCo (lower validation perplexity at equal steps)".into(),
            ours: format!("final val perplexity {pn:.3} (NoLoCo) vs {pd:.3} (DiLoCo): {better:+.2}%"),
            reproduced: Verdict::from(pn <= pd),
        });
        if let (Some(sn), Some(sd)) = (n.sync_latency_s, d.sync_latency_s) {
            out.push(Claim {
                claim:
                    "NoLoCo's outer step needs no global blocking collective (shorter sync than DiLoCo's all-reduce)"
                        .into(),
                ours: format!("mean sync latency per round {sn:.3} s (NoLoCo) vs {sd:.3} s (DiLoCo), training grid"),
                reproduced: Verdict::from(sn < sd),
            });
        }
    }
    let variance = |r: Option<&ArmResult>| r.and_then(|r| r.mean_weight_variance);
    if let (Some(with), Some(without)) =
        (variance(noloco_main), variance(find(&|a| a.sync == "noloco" && a.noloco.is_some_and(|n| !n.pull))))
    {
        out.push(Claim {
            claim: "without the pull-to-mean term, NoLoCo replicas drift further apart".into(),
            ours: format!("mean weight variance {without:.3e} without vs {with:.3e} with the pull term"),
            reproduced: Verdict::from(without > with),
        });
    }
    if let (Some(random), Some(fixed)) =
        (variance(noloco_main), variance(find(&|a| a.sync == "noloco" && a.routing == Routing::Fixed)))
    {
        out.push(Claim {
            claim: "random pipeline routing reduces the weight variance across replicas".into(),
            ours: format!("mean weight variance {random:.3e} with vs {fixed:.3e} without random routing"),
            reproduced: Verdict::from(random < fixed),
        });
    }
    out.extend(failure_claims(cfg, results));
    out.extend(composition_claims(cfg, results));
    if let Some(&r) = scale.iter().map(|p| p.replicas).filter(|&r| r >= 128).collect::<Vec<_>>().iter().max() {
        let at = |m: &str| scale.iter().find(|p| p.replicas == r && p.method.starts_with(m)).map(|p| p.mean_latency_s);
        if let (Some(ring), Some(tree), Some(gossip)) = (at("ring"), at("tree"), at("NoLoCo")) {
            let best = ring.min(tree);
            out.push(Claim {
                claim: "NoLoCo synchronises about 10x faster than all-reduce with a few hundred replicas over the internet"
                    .into(),
                ours: format!(
                    "R={r}: {:.1}x faster than the faster all-reduce ({gossip:.1} s vs ring {ring:.1} s, tree {tree:.1} s)",
                    best / gossip
                ),
                reproduced: match best / gossip {
                    x if x >= 8.0 => Verdict::Yes,
                    x if x >= 2.0 => Verdict::Partly,
                    _ => Verdict::No,
                },
            });
        }
    }
    out
}

/// The loss every arm of a failure study is timed to: the failure-free arm's validation loss at 75% of
/// its steps.
fn failure_target(cfg: &RunConfig, results: &[ArmResult]) -> Option<f64> {
    if !cfg.arms.iter().any(|a| a.failure_rate > 0.0) {
        return None;
    }
    let clean = result_where(cfg, results, |a| a.failure_rate == 0.0)?;
    let at = cfg.steps * 3 / 4;
    clean.val.iter().min_by_key(|v| v.0.abs_diff(at)).map(|v| v.1)
}

/// The arms of each failure rate, each group with the failure-free arms, named like `16%/h`.
fn failure_groups<'a>(cfg: &RunConfig, results: &'a [ArmResult]) -> Vec<(String, Vec<&'a ArmResult>)> {
    let mut rates: Vec<f64> = cfg.arms.iter().map(|a| a.failure_rate).filter(|&p| p > 0.0).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let name = |p: f64| {
        checkfree::FailureRate::PAPER
            .iter()
            .find(|r| r.per_iteration == p)
            .map_or_else(|| format!("p={p}"), checkfree::FailureRate::label)
    };
    rates
        .into_iter()
        .map(|p| {
            let arms = cfg
                .arms
                .iter()
                .zip(results)
                .filter(|(a, _)| a.failure_rate == 0.0 || a.failure_rate == p)
                .map(|(_, r)| r)
                .collect();
            (name(p), arms)
        })
        .collect()
}

/// The composition study's finding: time to the loss every arm reaches (the worst final validation loss
/// among them) of all three protocols together against each alone and the baseline, on the same swarm
/// and failures. No paper makes this claim; the row says
/// where the combination wins and where it does not.
fn composition_claims(cfg: &RunConfig, results: &[ArmResult]) -> Vec<Claim> {
    // The loss every arm reaches: the worst final validation loss among them, so each has a time to it.
    let Some(target) = results.iter().filter_map(|r| r.final_val_loss).max_by(f64::total_cmp) else {
        return Vec::new();
    };
    let failing = |a: &ArmConfig| a.failure_rate > 0.0;
    let time = |pred: &dyn Fn(&ArmConfig) -> bool| {
        result_where(cfg, results, |a| failing(a) && pred(a)).map(|r| (r.label.clone(), time_to(r, target)))
    };
    let noloco = |a: &ArmConfig| a.sync == "noloco";
    let skip = |a: &ArmConfig| a.routing == Routing::Skippipe;
    let checkfree = |a: &ArmConfig| a.recovery == "checkfree";
    let Some((all_label, all)) = time(&|a| noloco(a) && skip(a) && checkfree(a)) else { return Vec::new() };
    let alone: Vec<(String, Option<f64>)> = [
        time(&|a| noloco(a) && !skip(a) && a.recovery == "checkpoint"),
        time(&|a| skip(a) && !noloco(a) && a.recovery == "checkpoint"),
        time(&|a| checkfree(a) && !noloco(a) && !skip(a)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if alone.is_empty() {
        return Vec::new();
    }
    let show = |t: Option<f64>| t.map_or("never".to_owned(), |t| format!("{t:.1} s"));
    let mut ours = format!("{all_label}: {}", show(all));
    for (label, t) in &alone {
        ours += &format!("; {label}: {}", show(*t));
    }
    if let Some((label, t)) =
        time(&|a| a.sync == "all_reduce" && a.routing == Routing::Fixed && a.recovery == "checkpoint")
    {
        ours += &format!("; {label}: {}", show(t));
    }
    let beats = |other: Option<f64>| match (all, other) {
        (Some(a), Some(o)) => a < o,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let won = alone.iter().filter(|(_, t)| beats(*t)).count();
    vec![Claim {
        claim: format!(
            "(composition, no published claim) NoLoCo + SkipPipe + CheckFree together reach val loss {target:.3} sooner than each protocol alone"
        ),
        ours,
        reproduced: match won {
            n if n == alone.len() => Verdict::Yes,
            0 => Verdict::No,
            _ => Verdict::Partly,
        },
    }]
}

/// A gain in % and the two times (s) it compares: ours, the baseline's.
type Gain = (f64, f64, f64);

fn failure_claims(cfg: &RunConfig, results: &[ArmResult]) -> Vec<Claim> {
    let Some(target) = failure_target(cfg, results) else { return Vec::new() };
    let arm = |kind: &str, rate: f64| result_where(cfg, results, |a| a.recovery == kind && a.failure_rate == rate);
    let time = |kind: &str, rate: f64| arm(kind, rate).and_then(|r| time_to(r, target));
    let best = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    // Gain of the better CheckFree variant over the better baseline, in % of the baseline's time.
    let gain = |rate: f64| -> Option<Gain> {
        let ours = best(time("checkfree", rate), time("checkfree_plus", rate))?;
        let base = best(time("checkpoint", rate), time("redundant", rate))?;
        Some(((base - ours) / base * 100.0, ours, base))
    };
    let mut out = Vec::new();
    let rates = checkfree::FailureRate::PAPER;
    let low: Vec<(String, Option<Gain>)> = rates[..2].iter().map(|r| (r.label(), gain(r.per_iteration))).collect();
    if low.iter().any(|(_, g)| g.is_some()) {
        let ours = low
            .iter()
            .map(|(l, g)| match g {
                Some((pct, a, b)) => format!("{l}: {pct:+.1}% ({a:.1} s vs {b:.1} s)"),
                None => format!("{l}: not reached"),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let gains: Vec<f64> = low.iter().map(|(_, g)| g.map_or(f64::NEG_INFINITY, |g| g.0)).collect();
        out.push(Claim {
            claim: format!(
                "at 5-10% failures per hour, CheckFree / CheckFree+ converge over 12% faster than checkpointing and redundant computation (time to val loss {target:.3})"
            ),
            ours,
            reproduced: if gains.iter().all(|&g| g >= 12.0) {
                Verdict::Yes
            } else if gains.iter().all(|&g| g > 0.0) {
                Verdict::Partly
            } else {
                Verdict::No
            },
        });
        let high_rate = rates[3].per_iteration;
        if cfg.arms.iter().any(|a| a.failure_rate == high_rate) {
            let low_min = gains.iter().copied().fold(f64::INFINITY, f64::min);
            let (ours, smaller) = match gain(high_rate) {
                Some((high, _, _)) => {
                    (format!("{high:+.1}% at 33%/h vs at least {low_min:+.1}% at 5-10%/h"), high < low_min)
                }
                None => ("at 33%/h the CheckFree variants or the baselines never reach the target".into(), true),
            };
            out.push(Claim {
                claim: "the gain is smaller at 33% failures per hour".into(),
                ours,
                reproduced: Verdict::from(smaller),
            });
        }
    }
    // The ablations run at one rate: compare the spikes of the arms at that rate.
    let ablation_rate = cfg.arms.iter().find(|a| a.recovery == "naive_copy").map(|a| a.failure_rate);
    let spike = |kind: &str| ablation_rate.and_then(|rate| arm(kind, rate)).and_then(|r| r.spike);
    if let (Some(avg), Some(naive), Some(random)) = (spike("checkfree"), spike("naive_copy"), spike("random_reinit")) {
        out.push(Claim {
            claim: "loss spike after a recovery: gradient-norm-weighted average < naive copy < random re-init".into(),
            ours: format!(
                "mean spike {avg:.3} (weighted average), {naive:.3} (naive copy), {random:.3} (random re-init) nats, same failures"
            ),
            reproduced: Verdict::from(avg < naive && naive < random),
        });
    }
    out
}

/// Writes every output file of a run into `out`.
pub(crate) fn write_run(
    out: &Path,
    cfg: &RunConfig,
    corpus: &Corpus,
    results: &[ArmResult],
    scale: &[ScalePoint],
    skip: &crate::skip::SkipResults,
    wall: Duration,
) -> Result<()> {
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
    if !scale.is_empty() {
        let mut csv = String::from("replicas,method,mean_latency_s,p90_latency_s,max_latency_s,bytes_per_worker\n");
        for p in scale {
            let _ = writeln!(
                csv,
                "{},{},{:.6},{:.6},{:.6},{:.0}",
                p.replicas, p.method, p.mean_latency_s, p.p90_latency_s, p.max_latency_s, p.bytes_per_worker
            );
        }
        write_atomic(&out.join("scale.csv"), csv.as_bytes())?;
    }
    let summary = Summary {
        name: &cfg.name,
        corpus: &corpus.name,
        entropy_floor: corpus.entropy_floor,
        steps: cfg.steps,
        wall_s: wall.as_secs_f64(),
        arms: results,
        scale,
        claims: claims(cfg, results, scale).into_iter().chain(skip_claims(cfg, results, skip)).collect(),
    };
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    write_hdf5(out, cfg, corpus, results, scale)?;
    crate::plots::write_plots(out, results, scale, corpus.entropy_floor)?;
    crate::plots::write_group_plots(out, &failure_groups(cfg, results), corpus.entropy_floor)?;
    if *skip != crate::skip::SkipResults::default() {
        write_atomic(&out.join("skippipe.json"), serde_json::to_string_pretty(skip)?.as_bytes())?;
    }
    let mut md = markdown(cfg, corpus, results, scale, &summary.claims, wall);
    md.push_str(&crate::skip::markdown(skip));
    write_atomic(&out.join("report.md"), md.as_bytes())
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "–".into(), f)
}

fn markdown(
    cfg: &RunConfig,
    corpus: &Corpus,
    results: &[ArmResult],
    scale: &[ScalePoint],
    claims: &[Claim],
    wall: Duration,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# swarmlab run `{}`\n", cfg.name);
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
        "Model: `{}` ({} parameters), {} steps of {} micro-batches x {} sequences x {} tokens per replica, {swarm}.\n",
        cfg.model_preset,
        cfg.model().map(|m| m.param_count()).unwrap_or(0),
        cfg.steps,
        cfg.micro_batches,
        cfg.micro_batch,
        cfg.seq,
    );
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
            "| {} | {} x {} | {:.3} → {:.3} | {} | {gap} | {:.3} s | {:.1} MiB | {:.1} s |",
            r.label,
            r.stages,
            r.replicas,
            r.first_val_loss.unwrap_or(f64::NAN),
            r.final_val_loss.unwrap_or(f64::NAN),
            opt(r.final_val_loss, |v| format!("{:.3}", v.exp())),
            r.virtual_time_s,
            r.bytes_sent as f64 / (1 << 20) as f64,
            r.wall_s
        );
    }
    if !claims.is_empty() {
        let _ = writeln!(md, "\n## Claims\n\n| claim | ours | reproduced |\n|---|---|---|");
        for c in claims {
            let verdict = match c.reproduced {
                Verdict::Yes => "yes",
                Verdict::Partly => "partly (smaller effect)",
                Verdict::No => "no",
            };
            let _ = writeln!(md, "| {} | {} | {verdict} |", c.claim, c.ours);
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
    if cfg.arms.iter().any(|a| a.failure_rate > 0.0) {
        let target = failure_target(cfg, results);
        let _ = writeln!(md, "\n## Failures and recovery\n");
        let _ = writeln!(
            md,
            "Every stage fails in an iteration with the arm's probability (all its replicas at once; stages {:?} never fail), from the run's seed, so arms with one rate see the same failures. Time to target: virtual time until the validation loss first reaches {} (the failure-free arm's at 75% of its steps). Spike: rise of the 5-step mean training loss above its level before the failure, within 20 steps; decay: steps until it is back within 0.05 nats.\n",
            cfg.recovery.protect,
            target.map_or("–".into(), |t| format!("{t:.3}"))
        );
        for (name, _) in failure_groups(cfg, results) {
            let _ = write!(md, "![validation loss by virtual time, {name}]({}) ", crate::plots::group_plot_file(&name));
        }
        let _ = writeln!(md, "\n");
        let _ = writeln!(
            md,
            "| arm | recovery | p(stage fails) / iteration | failure steps | final val loss | virtual time | time to target | spike | decay |\n|---|---|---|---|---|---|---|---|---|"
        );
        for (a, r) in cfg.arms.iter().zip(results) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.1} s | {} | {} | {} |",
                r.label,
                r.recovery,
                a.failure_rate,
                r.failure_steps,
                opt(r.final_val_loss, |v| format!("{v:.3}")),
                r.virtual_time_s,
                opt(target.and_then(|t| time_to(r, t)), |v| format!("{v:.1} s")),
                opt(r.spike, |v| format!("{v:.3}")),
                opt(r.spike_decay_steps, |v| format!("{v:.0} steps")),
            );
        }
    }
    if !scale.is_empty() {
        let _ = writeln!(md, "\n## Synchronisation vs swarm size\n");
        if let Some(sc) = &cfg.scale {
            let _ = writeln!(
                md,
                "One outer round of a {:.0}M-parameter stage shard among R replicas; pair latency {}–{} ms, access bandwidth {}–{} Mbit/s (log-uniform), arrivals spread over {} s. All-reduce: DiLoCo's pseudo-gradient (one shard); gossip: NoLoCo's `[φ, θ−φ]` (two shards) within groups of {}. Simulated with {} floats per shard and bandwidths scaled to match.\n",
                sc.shard_params as f64 / 1e6,
                sc.latency_ms.0,
                sc.latency_ms.1,
                sc.mbit_per_s.0,
                sc.mbit_per_s.1,
                sc.arrival_spread_s,
                sc.group_size,
                sc.simulated_values
            );
        }
        let _ = writeln!(md, "![sync latency vs swarm size](sync_scale.svg)\n");
        let _ = writeln!(md, "| R | method | mean latency | p90 | max | sent / worker |\n|---|---|---|---|---|---|");
        for p in scale {
            let _ = writeln!(
                md,
                "| {} | {} | {:.2} s | {:.2} s | {:.2} s | {:.0} MB |",
                p.replicas,
                p.method,
                p.mean_latency_s,
                p.p90_latency_s,
                p.max_latency_s,
                p.bytes_per_worker / 1e6
            );
        }
    }
    let _ = writeln!(
        md,
        "\nRaw data: `run.h5` (config, every series, events, scaling points), `metrics.csv` (per step), `summary.json` (headline figures and claims){}. Plots: the `.svg` files. Total wall time {:.1} s.",
        if scale.is_empty() { "" } else { ", `scale.csv`" },
        wall.as_secs_f64()
    );
    md
}

pub(crate) fn h5_text(s: &str) -> Result<hdf5::types::VarLenUnicode> {
    s.parse().map_err(|e| anyhow::anyhow!("not storable as HDF5 text: {e:?}"))
}

/// A text attribute of an HDF5 file or group.
pub(crate) fn h5_attr_text(loc: &hdf5::Location, name: &str) -> Result<String> {
    let v: hdf5::types::VarLenUnicode =
        loc.attr(name).and_then(|a| a.read_scalar()).with_context(|| format!("no attribute {name:?}"))?;
    Ok(v.as_str().to_owned())
}

/// An event as one line of an HDF5 `events` dataset: `time_s<TAB>kind<TAB>detail`.
pub(crate) fn event_line(time_s: f64, kind: &str, detail: &str) -> Result<hdf5::types::VarLenUnicode> {
    h5_text(&format!("{time_s:.6}\t{kind}\t{detail}"))
}

/// The parts of an [`event_line`], if it is one.
pub(crate) fn parse_event_line(line: &str) -> Option<(f64, &str, &str)> {
    let mut parts = line.splitn(3, '\t');
    Some((parts.next()?.parse().ok()?, parts.next()?, parts.next()?))
}

/// Writes `run.h5`: the config and corpus as attributes; per arm its label, protocol, grid, every series
/// (`<name>_step`, `<name>_value`; the validation loss also by `val_time_s`) and its events; the scaling
/// points. Written to a temporary file and renamed, so an interrupted run never leaves a half-written log.
pub(crate) fn write_hdf5(
    out: &Path,
    cfg: &RunConfig,
    corpus: &Corpus,
    results: &[ArmResult],
    scale: &[ScalePoint],
) -> Result<()> {
    let path = out.join("run.h5");
    transport::fsutil::replace_with(&path, |tmp| -> Result<()> {
        let file = hdf5::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let text_attr = |loc: &hdf5::Location, name: &str, value: &str| -> Result<()> {
            loc.new_attr::<hdf5::types::VarLenUnicode>().create(name)?.write_scalar(&h5_text(value)?)?;
            Ok(())
        };
        text_attr(&file, "name", &cfg.name)?;
        text_attr(&file, "corpus", &corpus.name)?;
        text_attr(&file, "config_toml", &toml::to_string(cfg).context("cannot serialise the config")?)?;
        file.new_attr::<f64>().create("entropy_floor")?.write_scalar(&corpus.entropy_floor.unwrap_or(f64::NAN))?;
        let arms = file.create_group("arms")?;
        for (i, r) in results.iter().enumerate() {
            let g = arms.create_group(&i.to_string())?;
            text_attr(&g, "label", &r.label)?;
            text_attr(&g, "sync", &r.sync)?;
            text_attr(&g, "recovery", &r.recovery)?;
            g.new_attr::<u64>().create("stages")?.write_scalar(&(r.stages as u64))?;
            g.new_attr::<u64>().create("replicas")?.write_scalar(&(r.replicas as u64))?;
            g.new_attr::<f64>().create("virtual_time_s")?.write_scalar(&r.virtual_time_s)?;
            g.new_attr::<f64>().create("wall_s")?.write_scalar(&r.wall_s)?;
            g.new_attr::<u64>().create("bytes_sent")?.write_scalar(&r.bytes_sent)?;
            if !r.events.is_empty() {
                let lines: Vec<hdf5::types::VarLenUnicode> =
                    r.events.iter().map(|(t, kind, detail)| event_line(*t, kind, detail)).collect::<Result<_>>()?;
                g.new_dataset::<hdf5::types::VarLenUnicode>().shape(lines.len()).create("events")?.write_raw(&lines)?;
            }
            for (name, series) in r.step_series() {
                if series.is_empty() {
                    continue;
                }
                let steps: Vec<u64> = series.iter().map(|v| v.0).collect();
                let values: Vec<f64> = series.iter().map(|v| v.1).collect();
                g.new_dataset::<u64>().shape(steps.len()).create(format!("{name}_step").as_str())?.write_raw(&steps)?;
                g.new_dataset::<f64>()
                    .shape(values.len())
                    .create(format!("{name}_value").as_str())?
                    .write_raw(&values)?;
            }
            if !r.val_time.is_empty() {
                let times: Vec<f64> = r.val_time.iter().map(|v| v.0).collect();
                g.new_dataset::<f64>().shape(times.len()).create("val_time_s")?.write_raw(&times)?;
            }
        }
        if !scale.is_empty() {
            let g = file.create_group("scale")?;
            let column = |name: &str, values: Vec<f64>| -> Result<()> {
                g.new_dataset::<f64>().shape(values.len()).create(name)?.write_raw(&values)?;
                Ok(())
            };
            column("replicas", scale.iter().map(|p| p.replicas as f64).collect())?;
            column("mean_latency_s", scale.iter().map(|p| p.mean_latency_s).collect())?;
            column("p90_latency_s", scale.iter().map(|p| p.p90_latency_s).collect())?;
            column("max_latency_s", scale.iter().map(|p| p.max_latency_s).collect())?;
            column("bytes_per_worker", scale.iter().map(|p| p.bytes_per_worker).collect())?;
            column("events", scale.iter().map(|p| p.events as f64).collect())?;
            let methods: Vec<hdf5::types::VarLenUnicode> =
                scale.iter().map(|p| h5_text(&p.method)).collect::<Result<_>>()?;
            g.new_dataset::<hdf5::types::VarLenUnicode>().shape(methods.len()).create("method")?.write_raw(&methods)?;
        }
        file.flush()?;
        Ok(())
    })
    .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a run back from its `run.h5`.
fn read_hdf5(path: &Path) -> Result<(RunConfig, Corpus, Vec<ArmResult>, Vec<ScalePoint>)> {
    let file = hdf5::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let text = |loc: &hdf5::Location, name: &str| h5_attr_text(loc, name).with_context(|| path.display().to_string());
    let cfg = RunConfig::from_toml(&text(&file, "config_toml")?)
        .with_context(|| format!("{}: config_toml", path.display()))?;
    let floor: f64 = file.attr("entropy_floor")?.read_scalar()?;
    let corpus = Corpus {
        name: text(&file, "corpus")?,
        train: vec![],
        val: vec![],
        entropy_floor: floor.is_finite().then_some(floor),
    };
    let arms = file.group("arms").with_context(|| format!("{}: no arms", path.display()))?;
    let mut results = Vec::new();
    for i in 0.. {
        let Ok(g) = arms.group(&i.to_string()) else { break };
        let series = |name: &str| -> Result<Vec<(u64, f64)>> {
            let (Ok(steps), Ok(values)) = (g.dataset(&format!("{name}_step")), g.dataset(&format!("{name}_value")))
            else {
                return Ok(vec![]);
            };
            let (steps, values): (Vec<u64>, Vec<f64>) = (steps.read_raw()?, values.read_raw()?);
            Ok(steps.into_iter().zip(values).collect())
        };
        let val = series("val")?;
        let val_time = match g.dataset("val_time_s") {
            Ok(d) => d.read_raw::<f64>()?.into_iter().zip(val.iter().map(|v| v.1)).collect(),
            Err(_) => vec![],
        };
        let events = match g.dataset("events") {
            Ok(d) => d
                .read_raw::<hdf5::types::VarLenUnicode>()?
                .iter()
                .filter_map(|line| {
                    parse_event_line(line.as_str()).map(|(t, kind, detail)| (t, kind.to_owned(), detail.to_owned()))
                })
                .collect(),
            Err(_) => vec![],
        };
        let label = text(&g, "label")?;
        let arm = cfg
            .arms
            .iter()
            .find(|a| a.label == label)
            .cloned()
            .with_context(|| format!("{}: arm {label:?} is not in the config", path.display()))?;
        let s = Series {
            train: series("train")?,
            val,
            val_time,
            bytes: series("bytes")?,
            weight_variance: series("weight_variance")?,
            sync_time: series("sync_time")?,
            sync_bytes: series("sync_bytes")?,
            idle: series("idle")?,
            recoveries: series("recovery")?,
        };
        let totals = (
            g.attr("virtual_time_s")?.read_scalar()?,
            g.attr("wall_s")?.read_scalar()?,
            g.attr("bytes_sent")?.read_scalar()?,
        );
        let names = (text(&g, "sync")?, text(&g, "recovery").unwrap_or_default());
        results.push(ArmResult::from_series(arm, names, s, totals, events));
    }
    let mut scale = Vec::new();
    if let Ok(g) = file.group("scale") {
        let column = |name: &str| -> Result<Vec<f64>> { Ok(g.dataset(name)?.read_raw::<f64>()?) };
        let methods: Vec<hdf5::types::VarLenUnicode> = g.dataset("method")?.read_raw()?;
        let (replicas, mean, p90, max, bytes, events) = (
            column("replicas")?,
            column("mean_latency_s")?,
            column("p90_latency_s")?,
            column("max_latency_s")?,
            column("bytes_per_worker")?,
            column("events")?,
        );
        for (i, method) in methods.iter().enumerate() {
            let at = |c: &[f64]| c.get(i).copied().unwrap_or(f64::NAN);
            scale.push(ScalePoint {
                replicas: at(&replicas) as usize,
                method: method.as_str().to_owned(),
                mean_latency_s: at(&mean),
                p90_latency_s: at(&p90),
                max_latency_s: at(&max),
                bytes_per_worker: at(&bytes),
                events: at(&events) as usize,
            });
        }
    }
    Ok((cfg, corpus, results, scale))
}

/// Rewrites `report.md`, `summary.json`, `scale.csv` and the plots of a run folder from its `run.h5`.
pub(crate) fn rewrite(run_dir: &Path) -> Result<()> {
    let (cfg, corpus, results, scale) = read_hdf5(&run_dir.join("run.h5"))?;
    let wall = results.iter().map(|r| r.wall_s).filter(|w| w.is_finite()).sum::<f64>();
    // The SkipPipe tables live beside run.h5 (absent for other studies).
    let skip_file = run_dir.join("skippipe.json");
    let skip = if skip_file.exists() {
        let text =
            std::fs::read_to_string(&skip_file).with_context(|| format!("cannot read {}", skip_file.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a SkipPipe results file", skip_file.display()))?
    } else {
        crate::skip::SkipResults::default()
    };
    write_run(run_dir, &cfg, &corpus, &results, &scale, &skip, Duration::from_secs_f64(wall))
}

/// The content hash of `weights`, in hex: Verde's state hash of these weights alone (no optimizer
/// moments, step 0) — each tensor hashed by repops with its shape, under its name ("" if a tensor cannot
/// be read).
pub(crate) fn weights_hash(weights: &BTreeMap<String, candle_core::Tensor>) -> String {
    verde::StateManifest::of(weights, &BTreeMap::new(), 0).map(|m| crate::verify::hex(&m.hash())).unwrap_or_default()
}
