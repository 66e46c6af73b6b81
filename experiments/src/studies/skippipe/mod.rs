//! The SkipPipe study (`swarmlab reproduce skippipe`): on a geo-distributed, heterogeneous swarm, the
//! standard pipeline against SkipPipe's scheduled paths at several skip ratios, each trained model run
//! with some of its stages dropped, and the scheduler's iteration times on a paper-sized swarm (the
//! `[skippipe]` part of a run configuration). Its tables go to `skippipe.json` and a report section.

mod setup;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use genrl::World;
use models::OptimConfig;
use pipeline::{GradientScaling, StagedModel};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use skippipe::{
    Budget, PathRules, Workload, assign_local_search, assign_random, instance, schedule, simulate,
};

use crate::config::{ArmConfig, GeoConfig, RunConfig};
use crate::files::write_atomic;
use crate::claims::{Claim, Measure};
use crate::studies::compose::skippipe_routing;
use crate::studies::{Findings, Parts, RunView, Save, TrainedArm, TrainingStudy, time_to};

/// The SkipPipe study.
pub(crate) struct SkipPipeStudy;

/// The released trainer's model (`simulate-training/trainer.py`): 6 transformer stages of 4 blocks.
const SMALLEST: crate::studies::ModelShape =
    crate::studies::ModelShape { width: 1024, heads: 16, ffn: 4 * 1024, blocks: 24, seq: 1024 };

impl TrainingStudy for SkipPipeStudy {
    fn name(&self) -> &'static str {
        "skippipe"
    }

    /// The released trainer's model (`simulate-training/trainer.py`): width 1,024, 16 heads, 24 blocks
    /// in 6 transformer stages of 4, sequences of 1,024, 6 micro-batches per replica — of one sequence,
    /// not their 8, so that both replicas' weights, optimizer state and a step's activations (about
    /// 53 GiB by the estimate) fit one 80 GB GPU.
    fn paper(&self, cfg: RunConfig) -> RunConfig {
        RunConfig { micro_batches: 6, micro_batch: 1, ..SMALLEST.apply(cfg) }
    }

    /// SkipPipe on a geo-distributed, heterogeneous swarm: an 8-stage pipeline (embedding, six two-block
    /// transformer stages, head; the released trainer's six stages of four layers at CPU scale) x 2
    /// replicas, trained as the released trainer trains (Adam, β₂ 0.999, no weight decay, constant
    /// learning rate, the whole model's gradient clipped to 1) with the standard pipeline (fixed rows,
    /// every stage), with SkipPipe's scheduled paths through every stage (0%: the standard pipeline on its
    /// best schedule) and through 4 of the 6 transformer stages (33%, the released setting); and, as an
    /// ablation, 33% with this project's first gradient rule (a skipped stage's gradient averaged over
    /// its visits, each stage clipped alone). Each trained model then runs with half and three quarters of
    /// its transformer stages. Beside it, the scheduler's iteration times on the paper's 42-node swarm.
    /// Workers compute at 10 GFLOP/s (H100-class; the others in proportion), so that compute and the
    /// links both matter, as for a large model.
    fn preset(&self) -> RunConfig {
        let steps = 300;
        let (stages, replicas) = (8, 2);
        let arm = |label: &str, routing, gradients| ArmConfig {
            routing,
            gradients,
            ..ArmConfig::new(label, stages, replicas)
        };
        let theirs = GradientScaling::WholeModel;
        let lr = 3e-3;
        RunConfig {
            name: "skippipe".into(),
            steps,
            micro_batches: 4,
            profile_tflops: Some(0.01),
            layers: Some(12),
            edge_stages: true,
            eval_every: 20,
            eval_batches: 4,
            optim: OptimConfig {
                lr,
                min_lr: lr,
                warmup_steps: 0,
                total_steps: steps,
                beta2: 0.999,
                weight_decay: 0.0,
                grad_clip: 1.0,
                ..OptimConfig::default()
            },
            arms: vec![
                arm("standard pipeline", crate::plugs::Plug::named("fixed"), theirs),
                arm("SkipPipe 0%", skippipe_routing(0.0), theirs),
                arm("SkipPipe 33%", skippipe_routing(0.33), theirs),
                arm("SkipPipe 33%, per-stage gradients", skippipe_routing(0.33), GradientScaling::PerStage),
            ],
            geo: Some(GeoConfig::default()),
            skippipe: Some(SkipPipeConfig::default()),
            ..RunConfig::default()
        }
    }
}

/// The fraction of the stages an arm's micro-batches skip (0 unless it routes with SkipPipe).
fn skip_ratio(a: &ArmConfig) -> f64 {
    if a.routing.kind != "skippipe" {
        return 0.0;
    }
    a.routing.settings::<skippipe::Scheduling>().map_or(0.0, |s| s.skip_ratio)
}

impl Findings for SkipPipeStudy {
    fn setup(&self, cfg: &RunConfig) -> Option<crate::studies::Setup> {
        cfg.arms.iter().any(|a| a.routing.kind == "skippipe").then(|| crate::studies::Setup {
            repository: "github.com/gensyn-ai/skippipe",
            rows: setup::rows(cfg),
        })
    }

    fn after_arm(&self, cfg: &RunConfig, arm: &TrainedArm<'_>, parts: &mut Parts) -> Result<()> {
        let Some(study) = &cfg.skippipe else { return Ok(()) };
        let rows = dropped_stages(arm, skip_count(cfg), study, cfg.eval_batches)?;
        for r in &rows {
            eprintln!(
                "    {} of {} stages kept: val loss {:.3} (all stages {:.3}), perplexity {:+.1}%",
                r.stages_kept,
                arm.spec.stages,
                r.val_loss,
                r.full_val_loss,
                r.perplexity_rise()
            );
        }
        parts.skip.dropped.extend(rows);
        Ok(())
    }

    fn after_arms(
        &self,
        cfg: &RunConfig,
        parts: &mut Parts,
        stopped: &dyn Fn() -> bool,
        save: &mut Save<'_>,
    ) -> Result<()> {
        let Some(study) = &cfg.skippipe else { return Ok(()) };
        if stopped() {
            return Ok(());
        }
        parts.skip.iteration = iteration_study(study, cfg.seed)?;
        for r in &parts.skip.iteration {
            eprintln!(
                "[skippipe] {:<12} {:<31} skip {:>3.0}%: iteration {:.3} s (search {:.3} s)",
                r.assignment,
                r.method,
                r.skip_ratio * 100.0,
                r.iteration_s,
                r.search_s
            );
        }
        save(parts)
    }

    /// Iteration time, convergence per step and per time, and inference with half the stages dropped.
    fn claims(&self, run: &RunView<'_>) -> Vec<Claim> {
        let skip = &run.parts.skip;
        let mut out = Vec::new();
        let standard_row =
            skip.iteration.iter().find(|r| r.assignment == "local_search" && r.method.starts_with("standard"));
        let best_row = skip
            .iteration
            .iter()
            .filter(|r| r.assignment == "local_search" && r.method == "SkipPipe")
            .min_by(|a, b| a.iteration_s.total_cmp(&b.iteration_s));
        let scheduled_full = skip
            .iteration
            .iter()
            .find(|r| r.assignment == "local_search" && r.method == "SkipPipe" && r.skip_ratio == 0.0);
        if let (Some(base), Some(best)) = (standard_row, best_row) {
            let cut = (1.0 - best.iteration_s / base.iteration_s) * 100.0;
            // How much of it is skipping, rather than choosing nodes: against the scheduled full pipeline.
            let by_skipping = scheduled_full.map_or(String::new(), |f| {
                format!("; {:.0}% against the scheduled full pipeline", (1.0 - best.iteration_s / f.iteration_s) * 100.0)
            });
            out.push(Claim::measured(
                "skippipe.iteration_time",
                "SkipPipe cuts the iteration time by up to 55% against the standard pipeline (arXiv v1; 50% later)",
                format!(
                    "{cut:.0}% lower at {:.0}% skipped ({:.2} s vs {:.2} s, {} nodes){by_skipping}",
                    best.skip_ratio * 100.0,
                    best.iteration_s,
                    base.iteration_s,
                    run.cfg.skippipe.as_ref().map_or(0, |s| s.partition.iter().sum::<usize>())
                ),
                // "Up to 55%": 45% or more is the paper's size; more than 10% is the effect, smaller.
                Measure { value: cut, holds_above: 10.0, paper: Some(45.0), what: "% lower iteration time" },
            ));
        }
        // The standard pipeline, and the first skipping arm trained by the same gradient rule (the
        // others are ablations).
        let standard_arm = run.cfg.arms.iter().find(|a| a.routing.kind == "fixed");
        let standard = run.result_where(|a| a.routing.kind == "fixed");
        let rule = standard_arm.map(|a| a.gradients);
        let skipping = run.result_where(|a| {
            a.routing.kind == "skippipe" && skip_ratio(a) >= 0.2 && rule.is_none_or(|g| g == a.gradients)
        });
        // The standard pipeline on its best schedule: the scheduler's paths through every stage.
        let scheduled_full = run.result_where(|a| {
            a.routing.kind == "skippipe" && skip_ratio(a) == 0.0 && rule.is_none_or(|g| g == a.gradients)
        });
        if let (Some(st), Some(sk)) = (standard, skipping)
            && let (Some(a), Some(b)) = (st.final_val_loss, sk.final_val_loss)
        {
            let gap = (b / a - 1.0) * 100.0;
            out.push(Claim::measured(
                "skippipe.convergence",
                "training with a quarter to a third of the transformer stages skipped converges about like the full pipeline, step for step",
                format!("val loss {b:.3} ({}) vs {a:.3} (standard), {gap:+.1}%", sk.label),
                // "About like": within 3%; within 10% is close, but not as close.
                Measure { value: -gap, holds_above: -10.0, paper: Some(-3.0), what: "% val loss below the standard's (negative: above)" },
            ));
            // Against the faster of the standard pipeline's two schedules (fixed rows, or every stage on the
            // scheduler's paths).
            let target = scheduled_full.and_then(|f| f.final_val_loss).map_or(a, |c| c.max(a)).max(b);
            let fastest = [Some(st), scheduled_full]
                .into_iter()
                .flatten()
                .filter_map(|r| time_to(r, target).map(|t| (t, r)))
                .min_by(|x, y| x.0.total_cmp(&y.0));
            if let (Some((ta, base)), Some(tb)) = (fastest, time_to(sk, target)) {
                out.push(Claim::measured(
                    "skippipe.time_to_loss",
                    "…and reaches a given loss sooner in wall-clock time",
                    format!("val loss {target:.3} after {tb:.1} s ({}) vs {ta:.1} s ({}, the faster standard)", sk.label, base.label),
                    Measure { value: (ta - tb) / ta * 100.0, holds_above: 0.0, paper: None, what: "% less time to the loss" },
                ));
            }
        }
        let half = |label: &str| skip.dropped.iter().find(|d| d.arm == label && (d.keep - 0.5).abs() < 1e-9);
        if let (Some(st), Some(sk)) = (standard, skipping)
            && let (Some(a), Some(b)) = (half(&st.label), half(&sk.label))
        {
            let (ra, rb) = (a.perplexity_rise(), b.perplexity_rise());
            out.push(Claim::measured(
                "skippipe.half_model",
                "a SkipPipe-trained model loses only ~7% perplexity run with half its stages, far less than a normally trained one",
                format!(
                    "{rb:+.1}% ({}) vs {ra:+.1}% (standard), {} of {} transformer stages",
                    sk.label, b.counted_kept, b.counted
                ),
                // Judged on the comparison: the SkipPipe-trained model loses less than the standard one.
                Measure { value: ra - rb, holds_above: 0.0, paper: None, what: "points less perplexity lost than the standard" },
            ));
        }
        out
    }

    fn section(&self, run: &RunView<'_>) -> String {
        markdown(&run.parts.skip)
    }

    /// `skippipe.json`: the scheduler and dropped-stage tables (`swarmlab report` reads them back).
    fn write_files(&self, out: &Path, run: &RunView<'_>) -> Result<()> {
        if run.parts.skip == SkipResults::default() {
            return Ok(());
        }
        write_atomic(&out.join("skippipe.json"), serde_json::to_string_pretty(&run.parts.skip)?.as_bytes())
    }
}

/// Reads `skippipe.json` back from a run folder (empty tables if the run has none).
pub(crate) fn read_results(run_dir: &Path) -> Result<SkipResults> {
    let file = run_dir.join("skippipe.json");
    if !file.exists() {
        return Ok(SkipResults::default());
    }
    let text = crate::files::read_text(&file, crate::files::MAX_RESULTS_BYTES)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a SkipPipe results file", file.display()))
}

/// The scheduler study: iteration time of the standard pipeline and of SkipPipe at several skip
/// ratios, on a swarm of `partition.iter().sum()` geo-distributed nodes, for a model whose stages each
/// take `stage_gflop` GFLOP per micro-batch and send `activation_mb` MB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SkipPipeConfig {
    /// Nodes per stage (stage 0: the data nodes).
    pub(crate) partition: Vec<usize>,
    /// Micro-batches per data node.
    pub(crate) micro_batches: usize,
    /// Micro-batches a node can hold.
    pub(crate) memory: usize,
    /// Skip ratios to schedule.
    pub(crate) skip_ratios: Vec<f64>,
    /// Forward GFLOP of one stage for one micro-batch.
    pub(crate) stage_gflop: f64,
    /// Activation megabytes per micro-batch.
    pub(crate) activation_mb: f64,
    /// Fractions of the stages kept when evaluating each trained arm with stages dropped.
    pub(crate) keep: Vec<f64>,
    /// Random subsets of intermediate stages evaluated per fraction.
    pub(crate) subsets: usize,
}

impl Default for SkipPipeConfig {
    /// The paper's 42-node setting (7 data nodes, 7 stages of 5), 6 micro-batches per data node, and a
    /// LLaMa-1B-class stage: 3 blocks of d_model 2048 on 4 × 1024 tokens (fp16 activations).
    fn default() -> Self {
        Self {
            partition: vec![7, 5, 5, 5, 5, 5, 5, 5],
            micro_batches: 6,
            memory: 10,
            skip_ratios: vec![0.0, 0.25, 0.33],
            stage_gflop: skippipe::BILLION_STAGE_FLOPS / 1e9,
            activation_mb: skippipe::BILLION_STAGE_ACTIVATION_BYTES as f64 / 1e6,
            keep: vec![0.5, 0.75],
            subsets: 6,
        }
    }
}

impl SkipPipeConfig {
    /// A smaller swarm for `--quick`: 20 nodes.
    pub(crate) fn quick(mut self) -> Self {
        self.partition = vec![6, 2, 2, 2, 2, 2, 2, 2];
        self.micro_batches = 2;
        self.memory = 10;
        self.subsets = self.subsets.min(3);
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.partition.len() < 3 || self.partition.contains(&0) {
            bail!("invalid skippipe.partition: at least 3 stages of at least one node each");
        }
        if self.partition.len() > 64 || self.partition.iter().sum::<usize>() > 1024 {
            bail!("invalid skippipe.partition: at most 64 stages and 1024 nodes in all");
        }
        if self.micro_batches > 1024 || self.memory > 1_000_000 || self.subsets > 1000 {
            bail!("invalid skippipe: micro_batches at most 1024, memory at most 1000000, subsets at most 1000");
        }
        if self.skip_ratios.len() > 16 || self.keep.len() > 16 {
            bail!("invalid skippipe: at most 16 skip_ratios and 16 keep fractions");
        }
        if !(self.stage_gflop.is_finite() && self.stage_gflop <= 1e9 && self.activation_mb.is_finite() && self.activation_mb <= 1e6) {
            bail!("invalid skippipe: stage_gflop and activation_mb must be finite (at most 1e9 GFLOP and 1e6 MB)");
        }
        if let Some(r) = self.skip_ratios.iter().find(|r| !(0.0..1.0).contains(*r)) {
            bail!("invalid skippipe.skip_ratios: {r} is not in [0, 1)");
        }
        if let Some(k) = self.keep.iter().find(|k| !(*k > &0.0 && *k <= &1.0)) {
            bail!("invalid skippipe.keep: {k} is not in (0, 1]");
        }
        if self.micro_batches == 0 || self.memory == 0 || self.stage_gflop <= 0.0 || self.activation_mb < 0.0 {
            bail!("invalid skippipe: micro_batches, memory and stage_gflop must be positive");
        }
        Ok(())
    }
}


/// One row of the iteration-time table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct IterationRow {
    pub(crate) assignment: String,
    pub(crate) method: String,
    pub(crate) skip_ratio: f64,
    pub(crate) stages_visited: usize,
    pub(crate) iteration_s: f64,
    pub(crate) search_s: f64,
    pub(crate) expanded: usize,
}

/// One arm evaluated with some of its stages dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DroppedRow {
    pub(crate) arm: String,
    /// The fraction of the counted stages kept.
    pub(crate) keep: f64,
    /// Stages run, of all.
    pub(crate) stages_kept: usize,
    /// Counted stages run (transformer stages, by default), of `counted`.
    #[serde(default)]
    pub(crate) counted_kept: usize,
    #[serde(default)]
    pub(crate) counted: usize,
    pub(crate) full_val_loss: f64,
    pub(crate) val_loss: f64,
    /// Mean over sequences of exp(sequence loss), all stages and the kept ones (0 in older files).
    #[serde(default)]
    pub(crate) full_perplexity: f64,
    #[serde(default)]
    pub(crate) perplexity: f64,
}

impl DroppedRow {
    /// How much higher the perplexity is with the stages dropped, in percent: per sequence as the paper
    /// measures it, or from the mean losses for a file that predates it.
    pub(crate) fn perplexity_rise(&self) -> f64 {
        if self.full_perplexity > 0.0 {
            (self.perplexity / self.full_perplexity - 1.0) * 100.0
        } else {
            ((self.val_loss - self.full_val_loss).exp() - 1.0) * 100.0
        }
    }
}

/// What the SkipPipe parts of a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SkipResults {
    pub(crate) iteration: Vec<IterationRow>,
    pub(crate) dropped: Vec<DroppedRow>,
}


/// The iteration-time table: for each assignment method, the standard pipeline (fixed rows, every
/// stage) and SkipPipe at each skip ratio, timed by the simulator.
fn iteration_study(study: &SkipPipeConfig, seed: u64) -> Result<Vec<IterationRow>> {
    let nodes: usize = study.partition.iter().sum();
    let stages = study.partition.len();
    let world = World::geo_distributed(nodes, seed);
    let w = Workload {
        stage_flops: vec![study.stage_gflop * 1e9; stages],
        activation_bytes: (study.activation_mb * 1e6) as usize,
        micro_batches: study.micro_batches,
        memory: study.memory,
    };
    let agents = study.partition[0] * study.micro_batches;
    let mut rows = Vec::new();
    for how in ["random", "local_search"] {
        let assignment = match how {
            "random" => assign_random(&world, &study.partition, seed)?,
            _ => assign_local_search(&world, &study.partition, &w, seed, 4)?,
        };
        let full = PathRules::new(stages, agents, 0.0, 1.5)?;
        let inst = instance(&world, &assignment, &w, full)?;
        let fixed = simulate(&inst, &assignment.fixed_rows(&inst), None)?;
        rows.push(IterationRow {
            assignment: how.into(),
            method: "standard pipeline (fixed rows)".into(),
            skip_ratio: 0.0,
            stages_visited: stages,
            iteration_s: fixed.makespan,
            search_s: 0.0,
            expanded: 0,
        });
        for &skip in &study.skip_ratios {
            let rules = PathRules::new(stages, agents, skip, 1.5)?;
            let inst = Arc::new(instance(&world, &assignment, &w, rules)?);
            let t = Instant::now();
            let found = schedule(inst, Budget::default())
                .with_context(|| format!("scheduling {nodes} nodes at skip ratio {skip}"))?;
            rows.push(IterationRow {
                assignment: how.into(),
                method: "SkipPipe".into(),
                skip_ratio: skip,
                stages_visited: rules.visit,
                iteration_s: found.makespan,
                search_s: t.elapsed().as_secs_f64(),
                expanded: found.expanded,
            });
        }
    }
    Ok(rows)
}


/// Evaluates the arm's trained model (replica 0) with each fraction of its stages kept, counted as the
/// run's skip ratio counts them ([`skippipe::SkipCount`]): by default a fraction of the transformer
/// stages, the embedding, the first transformer stage and the head always kept (the stages every path
/// trains through), and `subsets` seeded random choices of the others (mean loss and perplexity over
/// them). A model with nothing to drop gives no rows.
fn dropped_stages(
    arm: &TrainedArm<'_>,
    count: skippipe::SkipCount,
    study: &SkipPipeConfig,
    batches: usize,
) -> Result<Vec<DroppedRow>> {
    let spec = arm.spec;
    let model = StagedModel::new(spec, &arm.report.weights)?;
    let n = model.len();
    let base = count.base(n, spec.edge_stages);
    let lead = base.lead.max(1);
    if n < lead + 2 {
        return Ok(Vec::new());
    }
    let eval = models::data::eval_batches(&arm.corpus.val, batches.max(1), spec.micro_batch, spec.seq, &Device::Cpu)?;
    let all: Vec<usize> = (0..n).collect();
    let full = model.evaluate(&all, &eval)?;
    let mut rows = Vec::new();
    for &keep in &study.keep {
        let paths = kept_stages(n, base, keep, study.subsets, spec.seed);
        let (mut loss, mut perplexity) = (0.0, 0.0);
        for path in &paths {
            let e = model.evaluate(path, &eval)?;
            loss += e.loss;
            perplexity += e.perplexity;
        }
        let subsets = paths.len().max(1) as f64;
        let kept = paths.first().map_or(n, Vec::len);
        rows.push(DroppedRow {
            arm: arm.label.into(),
            keep,
            stages_kept: kept,
            counted_kept: base.counted - (n - kept),
            counted: base.counted,
            full_val_loss: full.loss,
            val_loss: loss / subsets,
            full_perplexity: full.perplexity,
            perplexity: perplexity / subsets,
        });
    }
    Ok(rows)
}

/// The stages run when a model of `n` stages keeps `keep` of the stages `base` counts: its leading
/// stages and its last always, and `subsets` seeded random choices of the others (as many paths).
fn kept_stages(n: usize, base: skippipe::SkipBase, keep: f64, subsets: usize, seed: u64) -> Vec<Vec<usize>> {
    let lead = base.lead.max(1);
    if n < lead + 2 {
        return vec![(0..n).collect()];
    }
    // The counted stages dropped, at most every optional one.
    let dropped = base.counted.saturating_sub((keep * base.counted as f64).round() as usize).min(n - lead - 1);
    let kept = n - dropped;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ keep.to_bits());
    (0..subsets.max(1))
        .map(|_| {
            let mut optional: Vec<usize> = (lead..n - 1).collect();
            optional.shuffle(&mut rng);
            let mut chosen: Vec<usize> = optional[..kept - lead - 1].to_vec();
            chosen.sort_unstable();
            (0..lead).chain(chosen).chain(std::iter::once(n - 1)).collect()
        })
        .collect()
}

/// The stages the run's skip ratio counts: its first SkipPipe arm's rule, else the default.
fn skip_count(cfg: &RunConfig) -> skippipe::SkipCount {
    cfg.arms
        .iter()
        .filter(|a| a.routing.kind == "skippipe")
        .find_map(|a| a.routing.settings::<skippipe::Scheduling>().ok())
        .map_or_else(skippipe::SkipCount::default, |s| s.count)
}

/// The report's SkipPipe section, with the paper's numbers beside ours.
fn markdown(results: &SkipResults) -> String {
    let mut md = String::new();
    if !results.iteration.is_empty() {
        let _ = writeln!(md, "\n## SkipPipe: iteration time (scheduler + simulator)\n");
        let _ = writeln!(
            md,
            "One iteration on a geo-distributed, heterogeneous swarm, timed by the simulator (compute from the \
             device profiles, transfers from the region links). The paper: up to 55% lower than the standard \
             pipeline (arXiv v1; 50% in the later version).\n"
        );
        let _ =
            writeln!(md, "| assignment | method | skip ratio | stages visited | iteration | vs standard | search |");
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for r in &results.iteration {
            let base = results
                .iteration
                .iter()
                .find(|b| b.assignment == r.assignment && b.method.starts_with("standard"))
                .map_or(f64::NAN, |b| b.iteration_s);
            let _ = writeln!(
                md,
                "| {} | {} | {:.0}% | {} | {:.3} s | {:+.0}% | {:.3} s ({} nodes) |",
                r.assignment,
                r.method,
                r.skip_ratio * 100.0,
                r.stages_visited,
                r.iteration_s,
                (r.iteration_s / base - 1.0) * 100.0,
                r.search_s,
                r.expanded
            );
        }
    }
    if !results.dropped.is_empty() {
        let _ = writeln!(md, "\n## SkipPipe: inference with stages dropped\n");
        let _ = writeln!(
            md,
            "Validation loss and perplexity of each trained model run with only a fraction of its transformer \
             stages (the embedding, the first transformer stage and the head always kept, as every training \
             path keeps them; mean over random choices of the others). Perplexity is the paper's: the mean \
             over sequences of exp(sequence loss). The paper: about 7% higher perplexity running half of a \
             SkipPipe-trained model (2% running 75%, later version).\n"
        );
        let _ = writeln!(md, "| arm | transformer stages kept | val loss (all stages) | val loss | perplexity increase |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for r in &results.dropped {
            let share = r.keep * 100.0;
            let kept = if r.counted > 0 {
                format!("{} of {} ({} stages in all; {share:.0}%)", r.counted_kept, r.counted, r.stages_kept)
            } else {
                format!("{} stages ({share:.0}%)", r.stages_kept)
            };
            let _ = writeln!(
                md,
                "| {} | {kept} | {:.3} | {:.3} | {:+.1}% |",
                r.arm,
                r.full_val_loss,
                r.val_loss,
                r.perplexity_rise()
            );
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use skippipe::{SkipBase, SkipCount};

    #[test]
    fn half_the_model_is_half_the_transformer_stages_with_the_first_kept() {
        // Embedding, six transformer stages, head: half keeps 3 of the 6 transformer stages, the first
        // among them, as every training path does.
        let base = SkipCount::TransformerStages.base(8, true);
        let paths = kept_stages(8, base, 0.5, 6, 1);
        assert_eq!(paths.len(), 6);
        for p in &paths {
            assert_eq!(p.len(), 5, "{p:?}");
            assert_eq!((&p[..2], p.last()), (&[0, 1][..], Some(&7)), "{p:?}");
            assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
        }
        assert!(paths.iter().any(|p| p != &paths[0]), "random choices of the others: {paths:?}");
        // The first rule, as an ablation: half of all 8 stages, the first transformer stage optional.
        let all = kept_stages(8, SkipBase::all(8), 0.5, 6, 1);
        assert!(all.iter().all(|p| p.len() == 4) && all.iter().any(|p| p[1] != 1), "{all:?}");
        // Keeping everything, or a model with nothing optional, runs every stage.
        assert_eq!(kept_stages(8, base, 1.0, 2, 1), vec![(0..8).collect::<Vec<_>>(); 2]);
        assert_eq!(kept_stages(3, SkipCount::TransformerStages.base(3, true), 0.5, 2, 1), vec![vec![0, 1, 2]]);
    }
}
