//! SkipPipe in runs: arms on a geo-distributed, heterogeneous swarm (`[geo]`), the scheduled router for
//! `routing = "skippipe"` arms, the scheduler's iteration-time study on a paper-sized swarm
//! (`[skippipe]`), and inference with stages dropped from each trained arm. Its results go to
//! `skippipe.json` and a section of the report.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use models::data::Corpus;
use pipeline::{PipelineSpec, RunReport, StagedModel};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use skippipe::{
    Assignment, Budget, PathRules, ScheduledRouter, Topology, Workload, assign_local_search, assign_random, schedule,
    schedules, simulate,
};

/// The swarm every arm runs on when `[geo]` is set: nodes over twelve cloud regions, a third H100-class,
/// a third A10-class, a third half-speed A10s, assigned to stages by `assignment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GeoConfig {
    /// Seed of the regions and devices.
    pub(crate) seed: u64,
    /// `local_search` or `random`.
    pub(crate) assignment: String,
    /// Micro-batches a node can hold.
    pub(crate) memory: usize,
    /// Each intermediate stage serves between 1/slack and slack times its fair share of micro-batches.
    pub(crate) load_slack: f64,
    /// SkipPipe arms rotate through this many schedules, one per step (1: the same paths every step).
    pub(crate) schedules: usize,
    /// Whether SkipPipe paths may swap one adjacent pair of stages (when they skip some).
    pub(crate) swap: bool,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self { seed: 1, assignment: "local_search".into(), memory: 8, load_slack: 1.5, schedules: 1, swap: true }
    }
}

/// The scheduler study: iteration time of the standard pipeline and of SkipPipe at several skip
/// ratios, on a swarm of `partition.iter().sum()` geo-distributed nodes, for a model whose stages each
/// take `stage_gflop` GFLOP per micro-batch and send `activation_mb` MB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SkipPipeStudy {
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

impl Default for SkipPipeStudy {
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

impl SkipPipeStudy {
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
    pub(crate) keep: f64,
    pub(crate) stages_kept: usize,
    pub(crate) full_val_loss: f64,
    pub(crate) val_loss: f64,
}

/// What the SkipPipe parts of a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SkipResults {
    pub(crate) iteration: Vec<IterationRow>,
    pub(crate) dropped: Vec<DroppedRow>,
}

/// The scheduler's cost model of one micro-batch of `spec`'s model: forward FLOPs per stage and the
/// activation bytes between stages.
fn workload(spec: &PipelineSpec, memory: usize) -> Result<Workload> {
    let mut stage_flops = Vec::new();
    for s in spec.stage_specs()? {
        stage_flops.push(models::Stage::new(&spec.model, s, &Device::Cpu)?.forward_flops(spec.micro_batch, spec.seq));
    }
    Ok(Workload {
        stage_flops,
        activation_bytes: spec.micro_batch * spec.seq * spec.model.d_model * 4,
        micro_batches: spec.micro_batches,
        memory,
    })
}

fn assign(topology: &Topology, partition: &[usize], w: &Workload, how: &str, seed: u64) -> Result<Assignment> {
    Ok(match how {
        "random" => assign_random(topology, partition, seed)?,
        "local_search" => assign_local_search(topology, partition, w, seed, 4)?,
        other => bail!("invalid geo.assignment: {other:?} is not local_search or random"),
    })
}

/// Puts `spec` on the `[geo]` swarm (scaling the devices so the fastest computes at `tflops`, if set)
/// and, for SkipPipe arms, schedules the paths at `skip_ratio`.
pub(crate) fn place(
    spec: &mut PipelineSpec,
    geo: &GeoConfig,
    tflops: Option<f64>,
    skip_ratio: Option<f64>,
) -> Result<()> {
    let nodes = spec.stages * spec.replicas;
    let mut topology = Topology::geo_distributed(nodes, geo.seed);
    if let Some(t) = tflops {
        let scale = t * 1e12 / genrl::DeviceProfile::h100().flops;
        for n in &mut topology.nodes {
            n.device.flops *= scale;
        }
    }
    let w = workload(spec, geo.memory)?;
    let assignment = assign(&topology, &vec![spec.replicas; spec.stages], &w, &geo.assignment, geo.seed)?;
    spec.placement = Some(assignment.placement(&topology, spec.replicas)?);
    if let Some(skip) = skip_ratio {
        let mut rules = PathRules::new(spec.stages, spec.replicas * spec.micro_batches, skip, geo.load_slack)?;
        rules.swap &= geo.swap;
        let inst = topology.instance(&assignment, &w, rules)?;
        let found =
            schedules(Arc::new(inst), Budget::default(), geo.schedules).context("scheduling the SkipPipe paths")?;
        spec.router = Arc::new(ScheduledRouter::rotating(&found, &assignment, spec.micro_batches)?);
    }
    Ok(())
}

/// The iteration-time table: for each assignment method, the standard pipeline (fixed rows, every
/// stage) and SkipPipe at each skip ratio, timed by the simulator.
pub(crate) fn iteration_study(study: &SkipPipeStudy, seed: u64) -> Result<Vec<IterationRow>> {
    let nodes: usize = study.partition.iter().sum();
    let stages = study.partition.len();
    let topology = Topology::geo_distributed(nodes, seed);
    let w = Workload {
        stage_flops: vec![study.stage_gflop * 1e9; stages],
        activation_bytes: (study.activation_mb * 1e6) as usize,
        micro_batches: study.micro_batches,
        memory: study.memory,
    };
    let agents = study.partition[0] * study.micro_batches;
    let mut rows = Vec::new();
    for how in ["random", "local_search"] {
        let assignment = assign(&topology, &study.partition, &w, how, seed)?;
        let full = PathRules::new(stages, agents, 0.0, 1.5)?;
        let inst = topology.instance(&assignment, &w, full)?;
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
            let inst = Arc::new(topology.instance(&assignment, &w, rules)?);
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

/// Evaluates the arm's trained model (replica 0) with each fraction of its stages kept: the first and
/// last always, and `subsets` seeded random choices of the intermediate ones (mean loss over them).
/// A model of fewer than 3 stages has nothing to drop: no rows.
pub(crate) fn dropped_stages(
    label: &str,
    spec: &PipelineSpec,
    report: &RunReport,
    corpus: &Corpus,
    study: &SkipPipeStudy,
    batches: usize,
) -> Result<Vec<DroppedRow>> {
    let model = StagedModel::new(spec, &report.weights)?;
    let n = model.len();
    if n < 3 {
        // Only the first and last stage: nothing can be dropped.
        return Ok(Vec::new());
    }
    let eval = models::data::eval_batches(&corpus.val, batches.max(1), spec.micro_batch, spec.seq, &Device::Cpu)?;
    let all: Vec<usize> = (0..n).collect();
    let full = model.loss_with(&all, &eval)?;
    let mut rows = Vec::new();
    for &keep in &study.keep {
        let kept = ((keep * n as f64).round() as usize).clamp(2, n);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(spec.seed ^ keep.to_bits());
        let mut total = 0.0;
        for _ in 0..study.subsets.max(1) {
            let mut middle: Vec<usize> = (1..n - 1).collect();
            middle.shuffle(&mut rng);
            let mut chosen: Vec<usize> = middle[..kept - 2].to_vec();
            chosen.sort_unstable();
            let path: Vec<usize> = std::iter::once(0).chain(chosen).chain(std::iter::once(n - 1)).collect();
            total += model.loss_with(&path, &eval)?;
        }
        let val_loss = total / study.subsets.max(1) as f64;
        rows.push(DroppedRow { arm: label.into(), keep, stages_kept: kept, full_val_loss: full, val_loss });
    }
    Ok(rows)
}

/// The report's SkipPipe section, with the paper's numbers beside ours.
pub(crate) fn markdown(results: &SkipResults) -> String {
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
            "Validation loss of each trained model run with only a fraction of its stages (first and last \
             always kept; mean over random choices of the others). The paper: about 7% higher perplexity \
             running half of a SkipPipe-trained model (2% running 75%, later version).\n"
        );
        let _ = writeln!(md, "| arm | stages kept | val loss (all stages) | val loss | perplexity increase |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for r in &results.dropped {
            let _ = writeln!(
                md,
                "| {} | {} ({:.0}%) | {:.3} | {:.3} | {:+.1}% |",
                r.arm,
                r.stages_kept,
                r.keep * 100.0,
                r.full_val_loss,
                r.val_loss,
                ((r.val_loss - r.full_val_loss).exp() - 1.0) * 100.0
            );
        }
    }
    md
}
