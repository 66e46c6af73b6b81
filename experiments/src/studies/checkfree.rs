//! The CheckFree study (`swarmlab reproduce checkfree`): CheckFree and CheckFree+ against checkpointing
//! and redundant computation at the paper's failure rates, and the rebuild ablations. Its findings apply
//! to any run with failing arms: the failure table, time to a target loss, spikes after recoveries.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use checkfree::FailureRate;
use models::OptimConfig;

use crate::config::{ArmConfig, NetworkConfig, RecoveryConfig, RunConfig};
use crate::plugs::Plug;
use crate::claims::{Claim, Measure, Verdict};
use crate::report::{ArmResult, opt};
use crate::studies::{Findings, RunView, Setup, SetupRow, TrainingStudy, ModelShape, model_words, optimizer_words, schedule_words, time_to};

/// The CheckFree study.
pub(crate) struct CheckFreeStudy;

/// CheckFree's smallest configuration (`simulate_training/124M_config.json`): 4 transformer stages of 3
/// blocks.
pub(crate) const SMALLEST: ModelShape = ModelShape { width: 512, heads: 8, ffn: 4 * 512, blocks: 12, seq: 512 };

impl TrainingStudy for CheckFreeStudy {
    fn name(&self) -> &'static str {
        "checkfree"
    }

    /// CheckFree's smallest configuration (`124M_config.json`): width 512, 8 heads, 4 transformer
    /// stages of 3 blocks (plus the embedding and head stages), sequences of 512, 4 micro-batches of 16.
    fn paper(&self, cfg: RunConfig) -> RunConfig {
        let stages = 6;
        let arms = cfg.arms.iter().map(|a| ArmConfig { stages, ..a.clone() }).collect();
        let recovery = crate::config::RecoveryConfig { protect: vec![0, stages - 1], ..cfg.recovery.clone() };
        RunConfig { micro_batches: 4, micro_batch: 16, arms, recovery, ..SMALLEST.apply(cfg) }
    }

    /// CheckFree and CheckFree+ against checkpointing and redundant computation at the paper's four
    /// failure rates, on an 8-stage pipeline (embedding, six one-block transformer stages, head) whose
    /// embedding and head stages never fail (as in the paper's simulation), plus a failure-free run and the
    /// ablations of the rebuild (naive copy, random re-init) at the 16% rate. Every arm at one rate sees the
    /// same failures. Workers compute at 1 GFLOP/s, so that compute, not the links, sets the pace. The
    /// rules and optimizer follow the released code (the report's setup table lists each setting): Adam
    /// without weight decay, β = (0.9, 0.999), a constant learning rate, a rebuilt stage at 1.1 × that
    /// rate with a fresh optimizer (the 124M configuration's factor).
    fn preset(&self) -> RunConfig {
        let steps = 500;
        let stages = 8;
        let lr_scale = 1.1;
        let rebuilt = |kind: &str| -> Plug {
            let mut plug = Plug::named(kind);
            if kind != "checkpoint" && kind != "redundant" {
                plug.settings.insert("lr_scale".into(), toml::Value::Float(lr_scale));
            }
            plug
        };
        let arm = |label: String, recovery: &str, rate: f64| ArmConfig {
            recovery: rebuilt(recovery),
            failure_rate: rate,
            routing: Plug::named(if recovery == "checkfree_plus" { "out_of_order" } else { "fixed" }),
            ..ArmConfig::new(&label, stages, 1)
        };
        // The second arm shows what CheckFree+'s out-of-order execution costs by itself.
        let mut arms = vec![
            arm("no failures".into(), "checkpoint", 0.0),
            arm("CheckFree+ order, no failures".into(), "checkfree_plus", 0.0),
        ];
        for rate in FailureRate::PAPER {
            let l = rate.label();
            arms.push(arm(format!("CheckFree {l}"), "checkfree", rate.per_iteration));
            arms.push(arm(format!("CheckFree+ {l}"), "checkfree_plus", rate.per_iteration));
            arms.push(arm(format!("checkpointing {l}"), "checkpoint", rate.per_iteration));
            arms.push(arm(format!("redundant {l}"), "redundant", rate.per_iteration));
        }
        let ablation = FailureRate::PAPER[2];
        arms.push(arm(format!("naive copy {}", ablation.label()), "naive_copy", ablation.per_iteration));
        arms.push(arm(format!("random re-init {}", ablation.label()), "random_reinit", ablation.per_iteration));
        RunConfig {
            name: "checkfree".into(),
            steps,
            // Slow workers put the small model where a large one is, compute-bound: then redundant
            // computation costs time, as it does in the paper.
            profile_tflops: Some(0.001),
            layers: Some(6),
            edge_stages: true,
            eval_every: 20,
            eval_batches: 4,
            optim: OptimConfig {
                lr: 3e-3,
                min_lr: 3e-3,
                warmup_steps: 0,
                total_steps: steps,
                beta2: 0.999,
                weight_decay: 0.0,
                ..OptimConfig::default()
            },
            network: NetworkConfig { latency_ms: 10.0, mbit_per_s: 800.0, ..NetworkConfig::default() },
            // The embedding and head stages never fail (the released simulation's stage 0 holds both and
            // never fails); every transformer stage can be rebuilt, so the rebuild protocols keep no
            // checkpoints (their fallback, re-init, is never used).
            recovery: RecoveryConfig { protect: vec![0, stages - 1], fallback: "reinit".into(), ..RecoveryConfig::default() },
            arms,
            ..RunConfig::default()
        }
    }
}

/// The loss every arm of a failure study is timed to: the failure-free arm's validation loss at 75% of
/// its steps.
pub(crate) fn failure_target(run: &RunView<'_>) -> Option<f64> {
    if !run.cfg.arms.iter().any(|a| a.failure_rate > 0.0) {
        return None;
    }
    let clean = run.result_where(|a| a.failure_rate == 0.0)?;
    let at = run.cfg.steps * 3 / 4;
    clean.val.iter().min_by_key(|v| v.0.abs_diff(at)).map(|v| v.1)
}

/// The arms of each failure rate, each group with the failure-free arms, named like `16%/h`.
fn failure_groups<'a>(run: &RunView<'a>) -> Vec<(String, Vec<&'a ArmResult>)> {
    let mut rates: Vec<f64> = run.cfg.arms.iter().map(|a| a.failure_rate).filter(|&p| p > 0.0).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    let name =
        |p: f64| FailureRate::PAPER.iter().find(|r| r.per_iteration == p).map_or_else(|| format!("p={p}"), FailureRate::label);
    rates
        .into_iter()
        .map(|p| {
            let arms = run
                .cfg
                .arms
                .iter()
                .zip(run.results)
                .filter(|(a, _)| a.failure_rate == 0.0 || a.failure_rate == p)
                .map(|(_, r)| r)
                .collect();
            (name(p), arms)
        })
        .collect()
}

/// The SVG file of failure group `name`'s plot.
fn group_plot_file(name: &str) -> String {
    let stem: String = name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("val_loss_by_time_{stem}.svg")
}

/// A gain in % and the two times (s) it compares: ours, the baseline's.
type Gain = (f64, f64, f64);

impl Findings for CheckFreeStudy {
    /// The released simulation (github.com/gensyn-ai/CheckFree, `simulate_training/`) beside ours.
    fn setup(&self, cfg: &RunConfig) -> Option<Setup> {
        if !cfg.arms.iter().any(|a| a.failure_rate > 0.0) {
            return None;
        }
        const SIM: &str = "simulate_training/convergence_training.py";
        const SMALL: &str = "simulate_training/124M_config.json";
        let stages = cfg.arms.iter().map(|a| a.stages).max().unwrap_or(0);
        // The protocols' own settings (their defaults where the arm gives none), as the arms run them.
        let arm = |kind: &str| cfg.arms.iter().find(|a| a.recovery.kind == kind);
        let plain = arm("checkfree").and_then(|a| a.recovery.settings::<checkfree::CheckFree>().ok());
        let plus = arm("checkfree_plus").and_then(|a| a.recovery.settings::<checkfree::CheckFreePlus>().ok());
        let lr_scale = plain.map(|c| c.lr_scale).or(plus.map(|c| c.lr_scale)).map_or("–".to_owned(), |f| format!("{f:.2}"));
        // A rule as a configuration spells it (`copy`, `fallback`, `average`).
        let spelled = |rule: serde_json::Value| rule.as_str().unwrap_or_default().to_owned();
        let ablation = |old_rule: bool| if old_rule { "changed in this configuration (ablation)" } else { "" };
        let ends = plain.map_or(checkfree::EndStages::Copy, |c| c.ends);
        let swapped = plus.map_or(checkfree::SwappedStages::Copy, |c| c.swapped);
        let rates: Vec<String> = FailureRate::PAPER.iter().map(|r| format!("{} → {}", r.label(), r.per_iteration)).collect();
        let rows = vec![
            SetupRow::new(
                "model",
                "Llama, width 512, 8 heads, 4 stages x 3 layers + an embedding/head stage, sequences of 512 (the smallest configuration)",
                SMALL,
                format!("{}; {stages} stages (embedding, {} transformer stages, head)", model_words(cfg), stages.saturating_sub(2)),
                SMALLEST.reason(cfg, "CPU scale: every arm of the study must fit a 2-core machine"),
            ),
            SetupRow::new("data", "TinyStories", SMALL, cfg.corpus.describe(), "the embedded default needs no download and has a known loss floor"),
            SetupRow::new(
                "optimizer",
                "Adam (no weight decay), β = (0.9, 0.999), constant learning rate 6e-4 (the Llama schedule is flat)",
                SIM,
                format!("{}, {}", optimizer_words(cfg), schedule_words(cfg)),
                super::sweep::rate_reason(cfg),
            ),
            SetupRow::new("gradients", "loss / micro-batches, mean over replicas, each stage clipped to norm 1", SIM, format!("the same; clip {}", cfg.optim.grad_clip), ""),
            SetupRow::new(
                "failures",
                "each transformer stage fails in an iteration with probability p (at its first micro-batch), any iteration; the embedding/head stage never fails",
                SIM,
                format!("each stage but {:?} fails with p per step, any step, all its replicas at once", cfg.recovery.protect),
                "",
            ),
            SetupRow::new(
                "p per iteration",
                "5%/h → 0.0009, 10%/h → 0.002, 16%/h → 0.004, 33%/h → 0.01 (500M; 0.0006 and 0.001 for 10% and 16% at 124M)",
                "simulate_training/500M_config.json",
                rates.join(", "),
                "the 500M table covers all four rates; the 124M one only two",
            ),
            SetupRow::new(
                "CheckFree rebuild",
                "interior stages: the neighbours' average weighted by their gradient norms; first and last transformer stage: a copy of their neighbour",
                SIM,
                format!("ends = \"{}\"", spelled(serde_json::json!(ends))),
                ablation(ends != checkfree::EndStages::Copy),
            ),
            SetupRow::new(
                "CheckFree+ rebuild",
                "stages swapped on odd micro-batches (1 ↔ 2, last two) copy their partner; embedding/head from a neighbour's copy",
                SIM,
                format!("swapped = \"{}\"", spelled(serde_json::json!(swapped))),
                ablation(swapped != checkfree::SwappedStages::Copy),
            ),
            SetupRow::new("rebuilt stage's optimizer", "a fresh Adam at lr_scale x the base rate: 1.1 (124M), 1.2 (500M)", SMALL, format!("fresh moments at lr_scale x the base rate, lr_scale {lr_scale}"), ""),
            SetupRow::new(
                "checkpointing baseline",
                "the whole model restored from its last checkpoint (the paper rolls the failure-free curve back every 100 / 50 / 10 iterations)",
                SIM,
                format!("every stage rolls back to its checkpoint, written every {} steps at {} MB/s", cfg.recovery.checkpoint_every, cfg.recovery.storage_mb_per_s),
                "the rollback and its storage time are simulated instead of shifting a curve",
            ),
            SetupRow::new(
                "metric",
                "validation loss against wall-clock time; 50 validation batches every 500 iterations",
                SIM,
                format!("validation loss against virtual time, {} batches every {} steps; time to the failure-free arm's loss at 75% of its steps", cfg.eval_batches, cfg.eval_every),
                "a target loss turns the curves into one figure per arm",
            ),
        ];
        Some(Setup { repository: "github.com/gensyn-ai/CheckFree (`simulate_training/`)", rows })
    }

    fn claims(&self, run: &RunView<'_>) -> Vec<Claim> {
        let Some(target) = failure_target(run) else { return Vec::new() };
        let arm = |kind: &str, rate: f64| run.result_where(|a| a.recovery.kind == kind && a.failure_rate == rate);
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
        let rates = FailureRate::PAPER;
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
            let ours = format!("{ours} (target val loss {target:.3})");
            let claim = "at 5-10% failures per hour, CheckFree / CheckFree+ converge over 12% faster than checkpointing and redundant computation (time to the failure-free arm's val loss at 75% of its steps)";
            // A rate whose target is not reached counts as no gain at all.
            let smallest = low.iter().map(|(_, g)| g.map_or(f64::NEG_INFINITY, |g| g.0)).fold(f64::INFINITY, f64::min);
            out.push(if smallest.is_finite() {
                let what = "% less time to the target (the smaller of 5%/h and 10%/h)";
                Claim::measured("checkfree.gain", claim, ours, Measure { value: smallest, holds_above: 0.0, paper: Some(12.0), what })
            } else {
                Claim::judged("checkfree.gain", claim, ours, Verdict::No)
            });
            let high_rate = rates[3].per_iteration;
            if run.cfg.arms.iter().any(|a| a.failure_rate == high_rate) {
                let claim = "the gain is smaller at 33% failures per hour";
                out.push(match gain(high_rate) {
                    Some((high, _, _)) if smallest.is_finite() => Claim::measured(
                        "checkfree.high_rate",
                        claim,
                        format!("{high:+.1}% at 33%/h vs at least {smallest:+.1}% at 5-10%/h"),
                        Measure { value: smallest - high, holds_above: 0.0, paper: None, what: "points less gain at 33%/h" },
                    ),
                    Some(_) => Claim::judged("checkfree.high_rate", claim, "the target is not reached at 5-10%/h".into(), Verdict::Inconclusive),
                    None => Claim::judged(
                        "checkfree.high_rate",
                        claim,
                        "at 33%/h the CheckFree variants or the baselines never reach the target".into(),
                        Verdict::Yes,
                    ),
                });
            }
        }
        // The ablations run at one rate, with the same failures: the paper compares their validation loss
        // curves (the released code logs no spike), so the final validation losses are compared here.
        let ablation_rate = run.cfg.arms.iter().find(|a| a.recovery.kind == "naive_copy").map(|a| a.failure_rate);
        let loss = |kind: &str| ablation_rate.and_then(|rate| arm(kind, rate)).and_then(|r| r.final_val_loss);
        if let (Some(avg), Some(naive), Some(random)) = (loss("checkfree"), loss("naive_copy"), loss("random_reinit")) {
            out.push(Claim::measured(
                "checkfree.ablation",
                "rebuilding by the gradient-norm-weighted average trains better than a naive copy, which trains better than a random re-init",
                format!(
                    "final val loss {avg:.3} (weighted average), {naive:.3} (naive copy), {random:.3} (random re-init), same failures"
                ),
                Measure {
                    value: (naive - avg).min(random - naive),
                    holds_above: 0.0,
                    paper: None,
                    what: "nats, the smaller of the two steps of the ordering",
                },
            ));
        }
        out
    }

    fn section(&self, run: &RunView<'_>) -> String {
        let mut md = String::new();
        let cfg = run.cfg;
        if !cfg.arms.iter().any(|a| a.failure_rate > 0.0) {
            return md;
        }
        let target = failure_target(run);
        let _ = writeln!(md, "\n## Failures and recovery\n");
        let _ = writeln!(
            md,
            "Every stage fails in an iteration with the arm's probability (all its replicas at once; stages {:?} never fail), from the run's seed, so arms with one rate see the same failures. Time to target: virtual time until the validation loss first reaches {} (the failure-free arm's at 75% of its steps). Spike: rise of the 5-step mean training loss above its level before the failure, within 20 steps; decay: steps until it is back within 0.05 nats.\n",
            cfg.recovery.protect,
            target.map_or("–".into(), |t| format!("{t:.3}"))
        );
        for (name, _) in failure_groups(run) {
            let _ = write!(md, "![validation loss by virtual time, {name}]({}) ", group_plot_file(&name));
        }
        let _ = writeln!(md, "\n");
        let _ = writeln!(
            md,
            "| arm | recovery | p(stage fails) / iteration | failure steps | final val loss | virtual time | time to target | spike | decay |\n|---|---|---|---|---|---|---|---|---|"
        );
        for (a, r) in cfg.arms.iter().zip(run.results) {
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
        md
    }

    /// `val_loss_by_time_<rate>`: each failure rate's arms with the failure-free ones.
    fn write_files(&self, out: &Path, run: &RunView<'_>) -> Result<()> {
        for (name, arms) in failure_groups(run) {
            let series: Vec<(&str, Vec<(f64, f64)>)> = arms.iter().map(|r| (r.label.as_str(), r.val_time.clone())).collect();
            crate::plots::loss_plot(
                &out.join(group_plot_file(&name)),
                &format!("Validation loss by virtual time, {name}"),
                "virtual time (s)",
                &series,
                run.corpus.entropy_floor,
            )?;
        }
        Ok(())
    }
}
