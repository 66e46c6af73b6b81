//! Run configurations: TOML, every field defaulted, validated on load with errors that name the field.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use genrl::DeviceProfile;
use models::data::SyntheticConfig;
use models::{Backend, DeviceSpec, ModelConfig, OptimConfig};
use noloco::scale::{ScaleSpec, SyncMethod};
use noloco::{DiLoCo, NoLoCo, RandomRouter};
use pipeline::{DataParallel, Fallback, FixedRouter, Independent, PipelineSpec, Recovery};
use serde::{Deserialize, Serialize};
use transport::sim::LinkSpec;

/// Where the training text comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CorpusConfig {
    /// A UTF-8 text file or directory; empty for the built-in synthetic language.
    pub(crate) path: Option<PathBuf>,
    /// Share of a text corpus held out for validation.
    pub(crate) val_fraction: f64,
    /// The synthetic language (used when `path` is not set).
    pub(crate) synthetic: SyntheticConfig,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self { path: None, val_fraction: 0.1, synthetic: SyntheticConfig::default() }
    }
}

/// The ways an arm's replicas can synchronise.
pub(crate) const SYNC_KINDS: [&str; 5] = ["all_reduce", "tree_all_reduce", "none", "diloco", "noloco"];

/// Which path a micro-batch takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Routing {
    /// Always its own replica's row.
    #[default]
    Fixed,
    /// A random replica, re-drawn per micro-batch and stage (NoLoCo).
    Random,
    /// Its own row, with the first two and last two transformer stages swapped on odd micro-batches
    /// (CheckFree+).
    OutOfOrder,
    /// Paths scheduled by SkipPipe at the arm's `skip_ratio` (needs `[geo]`).
    Skippipe,
}

/// The ways a failed worker can be brought back.
pub(crate) const RECOVERY_KINDS: [&str; 6] =
    ["checkpoint", "checkfree", "checkfree_plus", "redundant", "naive_copy", "random_reinit"];

/// Shared recovery settings: the checkpoint schedule (for `recovery = "checkpoint"` and the
/// `checkpoint` fallback) and what rebuild protocols fall back to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RecoveryConfig {
    /// Steps between checkpoints.
    pub(crate) checkpoint_every: u64,
    /// Storage bandwidth for checkpoints, MB/s.
    pub(crate) storage_mb_per_s: f64,
    /// `reinit` or `checkpoint`: what a rebuild protocol does with a stage it cannot rebuild.
    pub(crate) fallback: String,
    /// Stages that never fail (the paper's simulation never fails the embedding/head stage).
    pub(crate) protect: Vec<usize>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self { checkpoint_every: 50, storage_mb_per_s: 500.0, fallback: "reinit".into(), protect: Vec::new() }
    }
}

/// One arm of a study: a grid and how it synchronises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArmConfig {
    /// Name in the report.
    pub(crate) label: String,
    /// Pipeline stages.
    pub(crate) stages: usize,
    /// Data-parallel replicas.
    pub(crate) replicas: usize,
    /// `all_reduce` (DDP, ring), `tree_all_reduce` (DDP, binary tree), `none`, `diloco` or `noloco`.
    #[serde(default = "default_sync")]
    pub(crate) sync: String,
    /// `fixed` or `random` (NoLoCo's random pipeline routing).
    #[serde(default, skip_serializing_if = "is_default")]
    pub(crate) routing: Routing,
    /// DiLoCo's settings (for `sync = "diloco"`; defaults if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) diloco: Option<DiLoCo>,
    /// NoLoCo's settings (for `sync = "noloco"`; defaults if absent). Its seed is combined with the run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) noloco: Option<NoLoCo>,
    /// How failed workers come back: one of [`RECOVERY_KINDS`] (default `checkpoint`).
    #[serde(default = "default_recovery", skip_serializing_if = "is_default_recovery")]
    pub(crate) recovery: String,
    /// Probability that a stage (all its replicas) fails in an iteration; 0 = no failures. The
    /// failures are drawn from the run's seed, so arms with the same rate see the same failures.
    #[serde(default, skip_serializing_if = "is_default")]
    pub(crate) failure_rate: f64,
    /// For `routing = "skippipe"`: the fraction of the stages each micro-batch skips.
    #[serde(default, skip_serializing_if = "is_default")]
    pub(crate) skip_ratio: f64,
}

fn default_recovery() -> String {
    "checkpoint".into()
}

fn is_default_recovery(r: &String) -> bool {
    r == "checkpoint"
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl ArmConfig {
    /// An arm with the baseline synchronisation (DDP, ring all-reduce) on a fixed path.
    pub(crate) fn new(label: &str, stages: usize, replicas: usize) -> Self {
        Self {
            label: label.into(),
            stages,
            replicas,
            sync: default_sync(),
            routing: Routing::Fixed,
            diloco: None,
            noloco: None,
            recovery: default_recovery(),
            failure_rate: 0.0,
            skip_ratio: 0.0,
        }
    }
}

fn default_sync() -> String {
    "all_reduce".into()
}

/// The synchronisation-scaling part of a study: one outer round of a stage shard among R replicas on
/// internet-like links, for each swarm size and method (see `noloco::scale`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ScaleConfig {
    /// Swarm sizes.
    pub(crate) replicas: Vec<usize>,
    /// Parameters of one stage shard of the modelled model.
    pub(crate) shard_params: usize,
    /// Floats actually simulated per shard (bandwidths are scaled to match).
    pub(crate) simulated_values: usize,
    /// Pair latency range, ms.
    pub(crate) latency_ms: (f64, f64),
    /// Access bandwidth range, Mbit/s.
    pub(crate) mbit_per_s: (f64, f64),
    /// Replicas reach the round within this many seconds of each other.
    pub(crate) arrival_spread_s: f64,
    /// NoLoCo group size.
    pub(crate) group_size: usize,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        let links = noloco::scale::InternetLinks::default();
        Self {
            replicas: vec![8, 32, 128, 512, 1024],
            shard_params: 25_000_000,
            simulated_values: 1 << 18,
            latency_ms: links.latency_ms,
            mbit_per_s: links.mbit_per_s,
            arrival_spread_s: 2.0,
            group_size: 2,
        }
    }
}

impl ScaleConfig {
    /// The measurement of `replicas` replicas with `method`.
    pub(crate) fn spec(&self, replicas: usize, method: SyncMethod, seed: u64) -> ScaleSpec {
        ScaleSpec {
            shard_params: self.shard_params,
            simulated_values: self.simulated_values,
            links: noloco::scale::InternetLinks { latency_ms: self.latency_ms, mbit_per_s: self.mbit_per_s },
            arrival_spread_s: self.arrival_spread_s,
            seed,
            ..ScaleSpec::new(replicas, method)
        }
    }

    /// The methods compared.
    pub(crate) fn methods(&self) -> [SyncMethod; 3] {
        [SyncMethod::RingAllReduce, SyncMethod::TreeAllReduce, SyncMethod::Gossip { group_size: self.group_size }]
    }
}

/// The network every worker sits on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NetworkConfig {
    /// One-way latency in milliseconds.
    pub(crate) latency_ms: f64,
    /// Bandwidth in megabits per second.
    pub(crate) mbit_per_s: f64,
    /// What carries the messages.
    pub(crate) transport: genrl::TransportKind,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self { latency_ms: 10.0, mbit_per_s: 1000.0, transport: genrl::TransportKind::Sim }
    }
}

/// A whole run: shared settings and the arms to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RunConfig {
    /// Name of the run (the default output folder is `runs/<name>-<time>`).
    pub(crate) name: String,
    /// Seed of data order and network randomness.
    pub(crate) seed: u64,
    /// Training steps per arm.
    pub(crate) steps: u64,
    /// Micro-batches per step per replica.
    pub(crate) micro_batches: usize,
    /// Sequences per micro-batch.
    pub(crate) micro_batch: usize,
    /// Tokens per sequence.
    pub(crate) seq: usize,
    /// Evaluate every this many steps.
    pub(crate) eval_every: u64,
    /// Validation batches per evaluation.
    pub(crate) eval_batches: usize,
    /// Simulated device of every worker (its compute speed in virtual time): `h100`, `a10`, `cpu32` or
    /// `laptop`.
    pub(crate) profile: String,
    /// Where the tensors live and the operators run: `cpu`, `cuda`, `cuda:N` or `auto`.
    pub(crate) device: DeviceSpec,
    /// Model size preset: `tiny`, `small`, `medium` or `large`.
    pub(crate) model_preset: String,
    /// If set, every worker's sustained compute speed in TFLOP/s instead of the profile's (to put a
    /// small model in the compute-bound regime of a large one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) profile_tflops: Option<f64>,
    /// If set, the number of transformer blocks instead of the preset's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) layers: Option<usize>,
    /// Embedding and head in stages of their own (needed by CheckFree).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) edge_stages: bool,
    /// `native` or `repops` kernels.
    pub(crate) backend: Backend,
    /// The optimizer.
    pub(crate) optim: OptimConfig,
    /// The data.
    pub(crate) corpus: CorpusConfig,
    /// The links.
    pub(crate) network: NetworkConfig,
    /// The arms, run one after the other on the same data.
    pub(crate) arms: Vec<ArmConfig>,
    /// If set, also measure how synchronisation scales with the swarm size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) scale: Option<ScaleConfig>,
    /// Checkpoints and fallbacks.
    #[serde(skip_serializing_if = "is_default")]
    pub(crate) recovery: RecoveryConfig,
    /// If set, every arm runs on a geo-distributed, heterogeneous swarm (needed by SkipPipe arms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) geo: Option<crate::skip::GeoConfig>,
    /// If set, the SkipPipe study: the scheduler's iteration times and inference with stages dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) skippipe: Option<crate::skip::SkipPipeStudy>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "baseline".into(),
            seed: 1,
            steps: 300,
            micro_batches: 2,
            micro_batch: 4,
            seq: 64,
            eval_every: 50,
            eval_batches: 8,
            profile: "a10".into(),
            device: DeviceSpec::Cpu,
            model_preset: "tiny".into(),
            profile_tflops: None,
            layers: None,
            edge_stages: false,
            backend: Backend::Native,
            optim: OptimConfig { lr: 3e-3, min_lr: 3e-4, warmup_steps: 20, total_steps: 300, ..OptimConfig::default() },
            corpus: CorpusConfig::default(),
            network: NetworkConfig::default(),
            arms: vec![
                ArmConfig::new("R=1", 1, 1),
                ArmConfig::new("DDP R=4", 1, 4),
                ArmConfig::new("pipeline S=2 x R=2", 2, 2),
            ],
            scale: None,
            recovery: RecoveryConfig::default(),
            geo: None,
            skippipe: None,
        }
    }
}

impl RunConfig {
    /// Parses and validates a TOML config.
    pub(crate) fn from_toml(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads and validates a config file.
    pub(crate) fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("config {}", path.display()))
    }

    /// A shorter version of the same study (for smoke checks): at most 40 steps (120 when arms have
    /// outer rounds, whose interval `H` shrinks in proportion so the number of rounds stays; 100 when
    /// arms fail), a smaller corpus, and swarm sizes up to 64 in the scaling part.
    pub(crate) fn quick(mut self) -> Self {
        let outer = self.arms.iter().any(|a| matches!(a.sync.as_str(), "diloco" | "noloco"));
        let failing = self.arms.iter().any(|a| a.failure_rate > 0.0);
        let old = self.steps;
        self.steps = self.steps.min(if outer {
            120
        } else if failing {
            100
        } else {
            40
        });
        let shrink = |every: u64| (every * self.steps / old.max(1)).max(1);
        for arm in &mut self.arms {
            if let Some(d) = &mut arm.diloco {
                d.every = shrink(d.every);
            }
            if let Some(n) = &mut arm.noloco {
                n.every = shrink(n.every);
            }
        }
        self.optim.total_steps = self.steps;
        self.optim.warmup_steps = self.optim.warmup_steps.min(5);
        self.eval_every = (self.steps / 4).max(1);
        self.corpus.synthetic.train_tokens = self.corpus.synthetic.train_tokens.min(1 << 16);
        self.skippipe = self.skippipe.take().map(crate::skip::SkipPipeStudy::quick);
        if let Some(scale) = &mut self.scale {
            scale.replicas.retain(|&r| r <= 64);
            if scale.replicas.is_empty() {
                scale.replicas.push(8);
            }
            scale.simulated_values = scale.simulated_values.min(1 << 16);
        }
        self
    }

    /// Checks the fields that the libraries do not.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.steps == 0 {
            bail!("invalid steps: must be at least 1");
        }
        if self.arms.is_empty() {
            bail!("invalid arms: list at least one arm");
        }
        for (i, arm) in self.arms.iter().enumerate() {
            if !SYNC_KINDS.contains(&arm.sync.as_str()) {
                bail!("invalid arms[{i}].sync: {:?} is not one of {}", arm.sync, SYNC_KINDS.join(", "));
            }
            if arm.diloco.is_some() && arm.sync != "diloco" {
                bail!("invalid arms[{i}].diloco: settings given but sync is {:?}", arm.sync);
            }
            if arm.noloco.is_some() && arm.sync != "noloco" {
                bail!("invalid arms[{i}].noloco: settings given but sync is {:?}", arm.sync);
            }
            if !RECOVERY_KINDS.contains(&arm.recovery.as_str()) {
                bail!("invalid arms[{i}].recovery: {:?} is not one of {}", arm.recovery, RECOVERY_KINDS.join(", "));
            }
            if !(arm.failure_rate.is_finite() && (0.0..1.0).contains(&arm.failure_rate)) {
                bail!("invalid arms[{i}].failure_rate: {} must be in [0, 1)", arm.failure_rate);
            }
        }
        if !matches!(self.recovery.fallback.as_str(), "reinit" | "checkpoint") {
            bail!("invalid recovery.fallback: {:?} is not one of reinit, checkpoint", self.recovery.fallback);
        }
        if let Some(study) = &self.skippipe {
            study.validate()?;
        }
        if let Some(arm) = self.arms.iter().find(|a| a.routing == Routing::Skippipe && self.geo.is_none()) {
            bail!("invalid arms {:?}: routing = \"skippipe\" needs a [geo] swarm to schedule on", arm.label);
        }
        if let Some(arm) = self.arms.iter().find(|a| !(0.0..1.0).contains(&a.skip_ratio)) {
            bail!("invalid arms {:?}: skip_ratio {} is not in [0, 1)", arm.label, arm.skip_ratio);
        }
        if let Some(scale) = &self.scale {
            if scale.replicas.is_empty() {
                bail!("invalid scale.replicas: list at least one swarm size");
            }
            if let Some(&r) = scale.replicas.iter().find(|&&r| r < 2 || !r.is_multiple_of(scale.group_size.max(1))) {
                bail!(
                    "invalid scale.replicas: {r} must be at least 2 and a multiple of group_size {}",
                    scale.group_size
                );
            }
            for &r in &scale.replicas {
                for method in scale.methods() {
                    scale.spec(r, method, self.seed).check().context("invalid scale")?;
                }
            }
        }
        DeviceProfile::preset(&self.profile)?;
        ModelConfig::preset(&self.model_preset)?;
        for i in 0..self.arms.len() {
            self.spec(i)?.validate().with_context(|| format!("arms[{i}] ({})", self.arms[i].label))?;
        }
        Ok(())
    }

    /// The model every arm trains.
    pub(crate) fn model(&self) -> Result<ModelConfig> {
        let preset = ModelConfig::preset(&self.model_preset)?;
        Ok(ModelConfig {
            backend: self.backend,
            max_seq: self.seq.max(1),
            n_layers: self.layers.unwrap_or(preset.n_layers),
            ..preset
        })
    }

    /// The pipeline spec of arm `i`.
    pub(crate) fn spec(&self, i: usize) -> Result<PipelineSpec> {
        let arm = &self.arms[i];
        let model = self.model()?;
        let rc = &self.recovery;
        let checkpoint = (rc.checkpoint_every, rc.storage_mb_per_s * 1e6);
        let fallback = match rc.fallback.as_str() {
            "checkpoint" => Fallback::Checkpoint { every: checkpoint.0, bytes_per_s: checkpoint.1 },
            _ => Fallback::ReInit,
        };
        let rebuild = |protocol: Arc<dyn pipeline::StageRebuild>| Recovery::Rebuild { protocol, fallback };
        // Each rate draws its own failures (from the run's seed and the rate), shared by its arms.
        let failures = if arm.failure_rate > 0.0 {
            let seed = self.seed ^ arm.failure_rate.to_bits();
            checkfree::stage_failures(arm.failure_rate, arm.stages, arm.replicas, self.steps, &rc.protect, seed)
        } else {
            Vec::new()
        };
        let mut device = DeviceProfile::preset(&self.profile)?;
        if let Some(tflops) = self.profile_tflops {
            device.flops = tflops * 1e12;
        }
        let mut spec = PipelineSpec {
            stages: arm.stages,
            replicas: arm.replicas,
            micro_batches: self.micro_batches,
            micro_batch: self.micro_batch,
            seq: self.seq,
            steps: self.steps,
            model,
            optim: self.optim.clone(),
            sync: match arm.sync.as_str() {
                "none" => Arc::new(Independent),
                "tree_all_reduce" => Arc::new(DataParallel::TREE),
                "diloco" => Arc::new(arm.diloco.unwrap_or_default()),
                "noloco" => {
                    let n = arm.noloco.unwrap_or_default();
                    Arc::new(NoLoCo { seed: n.seed ^ self.seed, ..n })
                }
                _ => Arc::new(DataParallel::RING),
            },
            router: match arm.routing {
                Routing::Fixed => Arc::new(FixedRouter),
                Routing::Random => Arc::new(RandomRouter { seed: self.seed }),
                Routing::OutOfOrder => Arc::new(checkfree::OutOfOrderRouter),
                // Scheduled below, once the swarm is placed.
                Routing::Skippipe => Arc::new(FixedRouter),
            },
            seed: self.seed,
            device,
            compute: self.device.resolve()?,
            link: LinkSpec::mbit(self.network.latency_ms, self.network.mbit_per_s),
            recovery: match arm.recovery.as_str() {
                "checkfree" => rebuild(Arc::new(checkfree::CheckFree::default())),
                "checkfree_plus" => rebuild(Arc::new(checkfree::CheckFreePlus::default())),
                "naive_copy" => rebuild(Arc::new(checkfree::NaiveCopy::default())),
                "random_reinit" => rebuild(Arc::new(checkfree::RandomReinit::default())),
                "redundant" => Recovery::Redundant,
                _ => Recovery::CheckpointRestart { every: checkpoint.0, bytes_per_s: checkpoint.1 },
            },
            failures: pipeline::FailurePlan { failures },
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            progress: None,
            peer_timeout: Duration::from_secs(600),
            late_join: false,
            edge_stages: self.edge_stages,
            placement: None,
        };
        if let Some(geo) = &self.geo {
            let skip = (arm.routing == Routing::Skippipe).then_some(arm.skip_ratio);
            crate::skip::place(&mut spec, geo, self.profile_tflops, skip)
                .with_context(|| format!("arm {:?} on the [geo] swarm", arm.label))?;
        }
        Ok(spec)
    }
}

/// The commented example written by `swarmlab init`.
pub(crate) const EXAMPLE: &str = r#"# swarmlab run configuration. Every field is optional; these are the defaults.
name = "baseline"
seed = 1
steps = 300            # training steps per arm
micro_batches = 2      # per step and replica
micro_batch = 4        # sequences per micro-batch
seq = 64               # tokens per sequence
eval_every = 50        # validation loss every N steps (and at the end)
eval_batches = 8
profile = "a10"        # h100 | a10 | cpu32 | laptop: sets compute time in the simulation
# profile_tflops = 0.5 # instead of the preset's sustained speed
device = "cpu"         # cpu | cuda | cuda:N | auto: where the tensors live (cuda needs --features cuda)
model_preset = "tiny"  # tiny (~0.1M) | small (~1M) | medium (~10M) | large (~50M parameters)
backend = "native"     # native | repops (bitwise reproducible)
# layers = 4           # transformer blocks, instead of the preset's
# edge_stages = false  # embedding and head in stages of their own (CheckFree's layout)

[optim]
lr = 0.003
min_lr = 0.0003
warmup_steps = 20
total_steps = 300
weight_decay = 0.01
grad_clip = 1.0

[corpus]
# path = "my_text_dir"  # a UTF-8 file or directory; without it, the synthetic language below
val_fraction = 0.1

[corpus.synthetic]     # a language whose entropy rate (the loss floor) is known exactly
alphabet = 16
order = 2
mixture = 3
noise = 0.02
seed = 1

[network]
latency_ms = 10.0
mbit_per_s = 1000.0
# transport = "sim"    # sim (virtual time) | quic (a node process per worker, real time, links emulated)

[[arms]]
label = "R=1"
stages = 1
replicas = 1
# sync = "all_reduce"  # all_reduce | tree_all_reduce | none | diloco | noloco
# routing = "fixed"    # fixed | random (NoLoCo's random pipeline routing) | out_of_order (CheckFree+)
#                      # | skippipe (scheduled paths, needs [geo])
# skip_ratio = 0.25    # with routing = "skippipe": fraction of the stages each micro-batch skips
# recovery = "checkpoint"  # checkpoint | checkfree | checkfree_plus | redundant | naive_copy | random_reinit
# failure_rate = 0.0   # probability that a stage fails in an iteration (seeded)
# [arms.noloco]        # with sync = "noloco" (defaults shown)
# every = 50           # H: inner steps between outer steps
# group_size = 2       # n: replicas per gossip group; must divide replicas
# outer_lr = 0.7
# momentum = 0.5
# pull = true          # the pull-to-group-mean term
# timeout_s = 60.0     # a group's root waits this long for its members
# [arms.diloco]        # with sync = "diloco" (defaults shown)
# every = 100
# outer_lr = 0.7
# momentum = 0.9
# nesterov = true      # false: heavy-ball momentum
# collective = "ring"  # ring | tree

[[arms]]
label = "DDP R=4"
stages = 1
replicas = 4

[[arms]]
label = "pipeline S=2 x R=2"
stages = 2
replicas = 2

# [recovery]           # checkpoints, and what rebuild protocols fall back to
# checkpoint_every = 50
# storage_mb_per_s = 500.0
# fallback = "reinit"  # reinit | checkpoint
# protect = []         # stages that never fail

# [geo]                # run every arm on a geo-distributed, heterogeneous swarm (12 regions)
# seed = 1
# assignment = "local_search"  # local_search | random: which node serves which stage
# memory = 8           # micro-batches a node can hold (SkipPipe's memory constraint)
# load_slack = 1.5     # each stage serves between 1/slack and slack times its fair share

# [skippipe]           # SkipPipe's scheduler study and inference with stages dropped
# partition = [7, 5, 5, 5, 5, 5, 5, 5]  # nodes per stage (stage 0: data nodes)
# micro_batches = 6    # per data node
# memory = 10
# skip_ratios = [0.0, 0.25, 0.33]
# keep = [0.5, 0.75]   # fractions of the stages kept when evaluating each trained arm
# subsets = 6          # random choices of the kept stages per fraction

# [scale]              # also measure one outer round's sync latency vs swarm size
# replicas = [8, 32, 128, 512, 1024]
# shard_params = 25000000
# latency_ms = [20.0, 200.0]
# mbit_per_s = [100.0, 1000.0]
# arrival_spread_s = 2.0
# group_size = 2
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_the_default() -> Result<()> {
        let parsed = RunConfig::from_toml(EXAMPLE)?;
        assert_eq!(parsed, RunConfig::default());
        Ok(())
    }

    #[test]
    fn bad_configs_name_the_field() {
        let err = |text: &str| format!("{:#}", RunConfig::from_toml(text).expect_err("accepted a bad config"));
        assert!(err("stepz = 3").contains("stepz"));
        assert!(err("steps = 0").contains("steps"));
        assert!(err("profile = \"tpu\"").contains("device"));
        assert!(err("device = \"a10\"").contains("`profile`"), "a profile where the device goes says where it belongs");
        #[cfg(not(feature = "cuda"))]
        assert!(err("device = \"cuda\"").contains("--features cuda"));
        assert!(err("model_preset = \"huge\"").contains("model.preset"));
        assert!(err("[[arms]]\nlabel = \"x\"\nstages = 5\nreplicas = 1").contains("pipeline.stages"));
        assert!(err("[[arms]]\nlabel = \"x\"\nstages = 1\nreplicas = 1\nsync = \"gossip\"").contains("arms[0].sync"));
        assert!(err("[optim]\nbeta1 = 2.0").contains("optim.beta1"));
        assert!(err("backend = \"fast\"").contains("backend"));
        let arm = "[[arms]]\nlabel = \"x\"\nstages = 1\nreplicas = 3\n";
        assert!(err(&format!("{arm}sync = \"noloco\"")).contains("noloco.group_size"));
        assert!(
            err(&format!("{arm}sync = \"noloco\"\n[arms.noloco]\ngroup_size = 3\nevery = 0")).contains("noloco.every")
        );
        assert!(err(&format!("{arm}sync = \"diloco\"\n[arms.diloco]\nouter_lr = -1.0")).contains("diloco.outer_lr"));
        assert!(err(&format!("{arm}[arms.noloco]\ngroup_size = 3")).contains("arms[0].noloco"));
        assert!(err(&format!("{arm}routing = \"sideways\"")).contains("routing"));
        assert!(err("[scale]\nreplicas = [7]").contains("scale.replicas"));
        assert!(err(&format!("{arm}recovery = \"prayer\"")).contains("arms[0].recovery"));
        assert!(err(&format!("{arm}failure_rate = 1.5")).contains("arms[0].failure_rate"));
        assert!(err("[recovery]\nfallback = \"hope\"").contains("recovery.fallback"));
        assert!(err("profile_tflops = -1.0").contains("flops"));
        let cf = "layers = 6\n[[arms]]\nlabel = \"x\"\nstages = 6\nreplicas = 1\nrecovery = \"checkfree\"\n";
        assert!(err(cf).contains("edge_stages"), "CheckFree needs the edge-stage layout");
        let sp = "layers = 4\nedge_stages = true\n[[arms]]\nlabel = \"x\"\nstages = 6\nreplicas = 2\nrouting = \"skippipe\"\n";
        assert!(err(sp).contains("needs a [geo] swarm"));
        assert!(err(&format!("{sp}skip_ratio = 1.5\n[geo]")).contains("skip_ratio"));
        assert!(err(&format!("{sp}skip_ratio = 0.67\n[geo]")).contains("skip_ratio"), "no intermediate stage left");
        assert!(err(&format!("{sp}[geo]\nassignment = \"magic\"")).contains("geo.assignment"));
        assert!(err(&format!("{sp}[geo]\nmemory = 1")).contains("memory"), "2 micro-batches per data node");
        assert!(err("[skippipe]\nskip_ratios = [1.0]").contains("skippipe.skip_ratios"));
    }
}
