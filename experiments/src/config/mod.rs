//! Run configurations: TOML, every field defaulted, validated on load with errors that name the field.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use genrl::DeviceProfile;
use genrl::{FailurePlan, World};
use models::data::SyntheticConfig;
use models::{Backend, DeviceSpec, ModelConfig, OptimConfig, Precision};
use pipeline::{Fallback, GradientScaling, PipelineSpec};
use serde::{Deserialize, Serialize};
use transport::sim::LinkSpec;

use crate::plugs::{Plug, PlugContext};
use crate::studies::noloco::ScaleConfig;
use crate::studies::skippipe::SkipPipeConfig;
pub(crate) use crate::world::GeoConfig;

/// Where the training text comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct CorpusConfig {
    /// A UTF-8 text file or directory; empty for a built-in corpus.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<PathBuf>,
    /// The built-in corpus when `path` is not set: the synthetic language, or the shipped prose.
    #[serde(skip_serializing_if = "is_synthetic")]
    pub(crate) builtin: Builtin,
    /// Share of a text corpus held out for validation, in (0, 1) (default 0.1); only with `path` or the
    /// prose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) val_fraction: Option<f64>,
    /// The synthetic language (used when `path` is not set and `builtin` is `synthetic`).
    pub(crate) synthetic: SyntheticConfig,
}

/// A corpus the project carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Builtin {
    /// The synthetic language, with its exact loss floor.
    #[default]
    Synthetic,
    /// The opening of *War and Peace* (public domain), byte-tokenized.
    Prose,
}

fn is_synthetic(b: &Builtin) -> bool {
    *b == Builtin::Synthetic
}

impl CorpusConfig {
    /// The validation share of a text corpus.
    pub(crate) fn val_fraction(&self) -> f64 {
        self.val_fraction.unwrap_or(0.1)
    }

    /// Whether the corpus is text (a file, a folder or the shipped prose), not the synthetic language.
    pub(crate) fn is_text(&self) -> bool {
        self.path.is_some() || self.builtin == Builtin::Prose
    }

    /// The corpus in words, for reports.
    pub(crate) fn describe(&self) -> String {
        match (&self.path, self.builtin) {
            (Some(p), _) => format!("the text at `{}`", p.display()),
            (None, Builtin::Prose) => {
                "the shipped prose (the opening of War and Peace, public domain, 400 kB, bytes as tokens)".into()
            }
            (None, Builtin::Synthetic) => {
                format!("the synthetic language (alphabet {}, order {})", self.synthetic.alphabet, self.synthetic.order)
            }
        }
    }

    /// The `--corpus` value that names this corpus.
    pub(crate) fn flag(&self) -> String {
        match (&self.path, self.builtin) {
            (Some(p), _) => p.display().to_string(),
            (None, Builtin::Prose) => "prose".into(),
            (None, Builtin::Synthetic) => "synthetic".into(),
        }
    }

    /// The corpus a `--corpus` value names: `synthetic`, `prose`, or the path of a text file or folder.
    pub(crate) fn named(name: &str) -> Self {
        match name {
            "synthetic" => Self::default(),
            "prose" => Self { builtin: Builtin::Prose, ..Self::default() },
            path => Self { path: Some(PathBuf::from(path)), ..Self::default() },
        }
    }
}

/// The ranges of a run's sizes: anything outside is refused at load, before anything is built.
mod limits {
    use std::ops::RangeInclusive;

    pub(super) const STEPS: RangeInclusive<u64> = 1..=10_000_000;
    pub(super) const MICRO_BATCHES: RangeInclusive<usize> = 1..=1024;
    pub(super) const MICRO_BATCH: RangeInclusive<usize> = 1..=65_536;
    pub(super) const SEQ: RangeInclusive<usize> = 1..=65_536;
    pub(super) const EVAL_BATCHES: RangeInclusive<usize> = 1..=100_000;
    pub(super) const LAYERS: RangeInclusive<usize> = 1..=1024;
    pub(super) const WIDTH: RangeInclusive<usize> = 2..=65_536;
    pub(super) const HEADS: RangeInclusive<usize> = 1..=1024;
    pub(super) const ARMS: RangeInclusive<usize> = 1..=256;
    pub(super) const STAGES: RangeInclusive<usize> = 1..=1024;
    pub(super) const REPLICAS: RangeInclusive<usize> = 1..=4096;
    pub(super) const WORKERS: RangeInclusive<usize> = 1..=65_536;
    pub(super) const TOKENS: RangeInclusive<usize> = 1..=(1 << 28);
    pub(super) const TFLOPS: RangeInclusive<f64> = 1e-9..=1e6;
    pub(super) const STORAGE_MB_PER_S: RangeInclusive<f64> = 1e-3..=1e7;
}

/// Checks that `value` of `field` lies in `range`; the error states the range.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<()> {
    if !range.contains(&value) {
        bail!("invalid {field}: {value} is outside [{}, {}]", range.start(), range.end());
    }
    Ok(())
}

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

/// One arm of a study: a grid, its three plugs (see [`crate::plugs`]) and its failures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ArmConfig {
    /// Name in the report.
    pub(crate) label: String,
    /// Pipeline stages.
    pub(crate) stages: usize,
    /// Data-parallel replicas.
    pub(crate) replicas: usize,
    /// How the replicas of a stage agree: `all_reduce` (DDP, ring), `tree_all_reduce`, `none`, `diloco`,
    /// `noloco`, or any registered protocol; with its settings as a table (`{ kind = "noloco", every = 20 }`).
    #[serde(default = "default_sync")]
    pub(crate) sync: Plug,
    /// Which path each micro-batch takes: `fixed`, `random` (NoLoCo), `out_of_order` (CheckFree+),
    /// `skippipe` (scheduled paths on the `[geo]` swarm, e.g. `{ kind = "skippipe", skip_ratio = 0.25 }`).
    #[serde(default = "default_routing", skip_serializing_if = "is_default_routing")]
    pub(crate) routing: Plug,
    /// How failed workers come back: `checkpoint`, `redundant`, or a rebuild protocol (`checkfree`,
    /// `checkfree_plus`, `naive_copy`, `random_reinit`) that falls back to `[recovery] fallback`.
    #[serde(default = "default_recovery", skip_serializing_if = "is_default_recovery")]
    pub(crate) recovery: Plug,
    /// Probability that a stage (all its replicas) fails in an iteration; 0 = no failures. The
    /// failures are drawn from the run's seed, so arms with the same rate see the same failures.
    #[serde(default, skip_serializing_if = "is_default")]
    pub(crate) failure_rate: f64,
    /// How each step's gradients are scaled and clipped: `per_stage` (a skipped stage averages over the
    /// micro-batches that visited it; each stage clips on its own norm) or `whole_model` (as one model:
    /// no rescale, one clip of the whole gradient's norm, as SkipPipe's released trainer).
    #[serde(default, skip_serializing_if = "is_default")]
    pub(crate) gradients: GradientScaling,
}

fn default_sync() -> Plug {
    Plug::named("all_reduce")
}

fn default_routing() -> Plug {
    Plug::named("fixed")
}

fn is_default_routing(p: &Plug) -> bool {
    *p == default_routing()
}

fn default_recovery() -> Plug {
    Plug::named("checkpoint")
}

fn is_default_recovery(p: &Plug) -> bool {
    *p == default_recovery()
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl ArmConfig {
    /// An arm with the baseline plugs: DDP (ring all-reduce) on fixed paths, checkpoint-restart.
    pub(crate) fn new(label: &str, stages: usize, replicas: usize) -> Self {
        Self {
            label: label.into(),
            stages,
            replicas,
            sync: default_sync(),
            routing: default_routing(),
            recovery: default_recovery(),
            failure_rate: 0.0,
            gradients: GradientScaling::PerStage,
        }
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
    /// Evaluate every replica and report their mean validation loss (as NoLoCo's released code does);
    /// otherwise replica 0 alone.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) eval_all_replicas: bool,
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
    /// If set, the model width (d_model) instead of the preset's; the feed-forward width keeps the
    /// preset's ratio to it unless `ffn` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) width: Option<usize>,
    /// If set, the attention heads instead of the preset's (they must divide the width into heads of an
    /// even size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) heads: Option<usize>,
    /// If set, the feed-forward width instead of the preset's (or its ratio to `width`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ffn: Option<usize>,
    /// Embedding and head in stages of their own (needed by CheckFree).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) edge_stages: bool,
    /// `native` or `repops` kernels.
    pub(crate) backend: Backend,
    /// The precision of the matrix products: `f32`, or `bf16` mixed precision (the native backend only).
    #[serde(skip_serializing_if = "is_default")]
    pub(crate) precision: Precision,
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
    pub(crate) geo: Option<GeoConfig>,
    /// If set, the SkipPipe study: the scheduler's iteration times and inference with stages dropped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) skippipe: Option<SkipPipeConfig>,
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
            eval_all_replicas: false,
            profile: "a10".into(),
            device: DeviceSpec::Cpu,
            model_preset: "tiny".into(),
            profile_tflops: None,
            layers: None,
            width: None,
            heads: None,
            ffn: None,
            edge_stages: false,
            backend: Backend::Native,
            precision: Precision::F32,
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
        let text = crate::files::read_text(path, crate::files::MAX_CONFIG_BYTES).context("cannot read the config")?;
        Self::from_toml(&text).with_context(|| format!("config {}", path.display()))
    }

    /// A shorter version of the same study (for smoke checks): at most 40 steps (120 when arms have
    /// outer rounds, whose interval `H` shrinks in proportion so the number of rounds stays; 100 when
    /// arms fail), a smaller corpus, and swarm sizes up to 64 in the scaling part.
    pub(crate) fn quick(mut self) -> Self {
        // An arm has outer rounds when its synchronisation has an interval `every` (DiLoCo, NoLoCo and
        // registered protocols that follow the convention).
        let outer = self
            .arms
            .iter()
            .any(|a| a.sync.int("every").is_some() || matches!(a.sync.kind.as_str(), "diloco" | "noloco"));
        let failing = self.arms.iter().any(|a| a.failure_rate > 0.0);
        let old = self.steps;
        self.steps = self.steps.min(if outer {
            120
        } else if failing {
            100
        } else {
            40
        });
        let shrink = |every: i64| (every.max(0) as u64 * self.steps / old.max(1)).max(1);
        for arm in &mut self.arms {
            if let Some(every) = arm.sync.int("every") {
                arm.sync.settings.insert("every".into(), toml::Value::Integer(shrink(every) as i64));
            }
        }
        self.optim.total_steps = self.steps;
        self.optim.warmup_steps = self.optim.warmup_steps.min(5);
        self.eval_every = (self.steps / 4).max(1);
        self.corpus.synthetic.train_tokens = self.corpus.synthetic.train_tokens.min(1 << 16);
        self.skippipe = self.skippipe.take().map(SkipPipeConfig::quick);
        self.scale = self.scale.take().map(ScaleConfig::quick);
        self
    }

    /// Checks the fields that the libraries do not, then builds every arm (its plugs parse their
    /// settings and check them against the grid).
    pub(crate) fn validate(&self) -> Result<()> {
        self.check_sizes()?;
        for (i, arm) in self.arms.iter().enumerate() {
            if arm.routing.kind == "skippipe" && self.geo.is_none() {
                bail!("invalid arms[{i}].routing ({:?}): \"skippipe\" needs a [geo] swarm to schedule on", arm.label);
            }
        }
        LinkSpec::try_mbit(
            self.network.latency_ms,
            self.network.mbit_per_s,
            ("network.latency_ms", "network.mbit_per_s"),
        )?;
        self.fallback()?;
        if let Some(study) = &self.skippipe {
            study.validate()?;
        }
        if let Some(geo) = &self.geo {
            geo.validate()?;
        }
        if let Some(scale) = &self.scale {
            scale.validate(self.seed)?;
        }
        DeviceProfile::preset(&self.profile)?;
        ModelConfig::preset(&self.model_preset)?;
        if self.precision == Precision::Bf16 && self.backend != Backend::Native {
            bail!(
                "invalid precision: bf16 is for backend = \"native\"; {} computes in f32 to stay bit-defined",
                self.backend
            );
        }
        for i in 0..self.arms.len() {
            self.spec(i)?.validate().with_context(|| format!("arms[{i}] ({})", self.arms[i].label))?;
        }
        Ok(())
    }

    /// Every size within its range (see [`limits`]) and every setting only where it applies, before
    /// anything is built: no value here can make a later step allocate without bound or overflow.
    fn check_sizes(&self) -> Result<()> {
        crate::files::check_run_name("name", &self.name)?;
        if self.arms.is_empty() {
            bail!("invalid arms: list at least one arm");
        }
        in_range("steps", self.steps, limits::STEPS)?;
        in_range("micro_batches", self.micro_batches, limits::MICRO_BATCHES)?;
        in_range("micro_batch", self.micro_batch, limits::MICRO_BATCH)?;
        in_range("seq", self.seq, limits::SEQ)?;
        // `eval_every = 0` runs without evaluation; the report says so.
        in_range("eval_every", self.eval_every, 0..=*limits::STEPS.end())?;
        if self.eval_every > 0 {
            in_range("eval_batches", self.eval_batches, limits::EVAL_BATCHES)?;
        }
        in_range("arms", self.arms.len(), limits::ARMS)?;
        if let Some(layers) = self.layers {
            in_range("layers", layers, limits::LAYERS)?;
        }
        for (field, value, range) in [
            ("width", self.width, limits::WIDTH),
            ("heads", self.heads, limits::HEADS),
            ("ffn", self.ffn, limits::WIDTH),
        ] {
            if let Some(v) = value {
                in_range(field, v, range)?;
            }
        }
        if let Some(t) = self.profile_tflops {
            in_range("profile_tflops", t, limits::TFLOPS)?;
        }
        let rc = &self.recovery;
        in_range("recovery.checkpoint_every", rc.checkpoint_every, limits::STEPS)?;
        in_range("recovery.storage_mb_per_s", rc.storage_mb_per_s, limits::STORAGE_MB_PER_S)?;
        let fewest_stages = self.arms.iter().map(|a| a.stages).min().unwrap_or(1);
        if let Some(&s) = rc.protect.iter().find(|&&s| s >= fewest_stages) {
            bail!(
                "invalid recovery.protect: stage {s} does not exist (an arm has {fewest_stages} stages, 0 to {})",
                fewest_stages.saturating_sub(1)
            );
        }
        for (i, arm) in self.arms.iter().enumerate() {
            in_range(&format!("arms[{i}].stages"), arm.stages, limits::STAGES)?;
            in_range(&format!("arms[{i}].replicas"), arm.replicas, limits::REPLICAS)?;
            in_range(&format!("arms[{i}] workers (stages x replicas)"), arm.stages * arm.replicas, limits::WORKERS)?;
            if !(arm.failure_rate.is_finite() && (0.0..1.0).contains(&arm.failure_rate)) {
                bail!("invalid arms[{i}].failure_rate: {} must be in [0, 1)", arm.failure_rate);
            }
            if let Some(j) = self.arms[..i].iter().position(|a| a.label == arm.label) {
                bail!("invalid arms[{i}].label: {:?} is already the label of arms[{j}]", arm.label);
            }
        }
        let corpus = &self.corpus;
        if corpus.path.is_some() && corpus.builtin != Builtin::Synthetic {
            bail!("invalid corpus.builtin: a corpus is either built in or read from corpus.path, not both");
        }
        match (corpus.is_text(), corpus.val_fraction) {
            (false, Some(_)) => {
                bail!("invalid corpus.val_fraction: it applies to a text corpus (corpus.path or the prose) only")
            }
            (true, Some(f)) if !(f > 0.0 && f < 1.0) => bail!("invalid corpus.val_fraction: {f} is outside (0, 1)"),
            _ => {}
        }
        in_range("corpus.synthetic.train_tokens", corpus.synthetic.train_tokens, limits::TOKENS)?;
        in_range("corpus.synthetic.val_tokens", corpus.synthetic.val_tokens, limits::TOKENS)?;
        if let Some(scale) = &self.scale {
            scale.check_sizes()?;
        }
        Ok(())
    }

    /// What rebuild protocols fall back to.
    fn fallback(&self) -> Result<Fallback> {
        let rc = &self.recovery;
        Ok(match rc.fallback.as_str() {
            "checkpoint" => Fallback::Checkpoint { every: rc.checkpoint_every, bytes_per_s: rc.storage_mb_per_s * 1e6 },
            "reinit" => Fallback::ReInit,
            other => bail!("invalid recovery.fallback: {other:?} is not one of reinit, checkpoint"),
        })
    }

    /// The model every arm trains.
    pub(crate) fn model(&self) -> Result<ModelConfig> {
        let preset = ModelConfig::preset(&self.model_preset)?;
        let d_model = self.width.unwrap_or(preset.d_model);
        let n_heads = self.heads.unwrap_or(preset.n_heads);
        if d_model == 0 || n_heads == 0 || !d_model.is_multiple_of(n_heads) || !(d_model / n_heads).is_multiple_of(2) {
            bail!("invalid width/heads: {n_heads} heads do not split width {d_model} into heads of an even size");
        }
        Ok(ModelConfig {
            backend: self.backend,
            precision: self.precision,
            max_seq: self.seq.max(1),
            n_layers: self.layers.unwrap_or(preset.n_layers),
            d_model,
            n_heads,
            d_ff: self.ffn.unwrap_or(preset.d_ff * d_model / preset.d_model),
            ..preset
        })
    }

    /// Every worker's simulated profile: the preset, at `profile_tflops` if set.
    fn profile(&self) -> Result<DeviceProfile> {
        let mut profile = DeviceProfile::preset(&self.profile)?;
        if let Some(tflops) = self.profile_tflops {
            profile.flops = tflops * 1e12;
        }
        Ok(profile)
    }

    /// The pipeline spec of arm `i`: the grid on its world (uniform, or placed on the `[geo]` swarm),
    /// with the failures its rate draws, then its plugs built from the registry.
    pub(crate) fn spec(&self, i: usize) -> Result<PipelineSpec> {
        let arm = &self.arms[i];
        let link = LinkSpec::mbit(self.network.latency_ms, self.network.mbit_per_s);
        let mut spec = PipelineSpec {
            micro_batches: self.micro_batches,
            micro_batch: self.micro_batch,
            seq: self.seq,
            optim: self.optim.clone(),
            seed: self.seed,
            device: self.device.resolve()?,
            world: World::uniform(arm.stages * arm.replicas, self.profile()?, link),
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            eval_all_replicas: self.eval_all_replicas,
            edge_stages: self.edge_stages,
            gradients: arm.gradients,
            ..PipelineSpec::new(arm.stages, arm.replicas, self.steps, self.model()?)
        };
        if let Some(geo) = &self.geo {
            spec.world = geo
                .place(&spec, self.profile_tflops, link)
                .with_context(|| format!("arm {:?} on the [geo] swarm", arm.label))?;
        }
        // Each rate draws its own failures (from the run's seed and the rate), shared by its arms.
        if arm.failure_rate > 0.0 {
            let seed = self.seed ^ arm.failure_rate.to_bits();
            let rc = &self.recovery;
            let failures =
                checkfree::stage_failures(arm.failure_rate, arm.stages, arm.replicas, self.steps, &rc.protect, seed);
            spec.world.failures = FailurePlan { failures };
        }
        let ctx = PlugContext {
            spec: &spec,
            fallback: self.fallback()?,
            checkpoints: (self.recovery.checkpoint_every, self.recovery.storage_mb_per_s * 1e6),
        };
        let named = |field: &str, plug: &Plug| format!("invalid arms[{i}].{field} ({:?})", plug.kind);
        let (sync, router, recovery) = crate::plugs::with(|r| -> Result<_> {
            Ok((
                r.build_sync(&arm.sync, &ctx).with_context(|| named("sync", &arm.sync))?,
                r.build_routing(&arm.routing, &ctx).with_context(|| named("routing", &arm.routing))?,
                r.build_recovery(&arm.recovery, &ctx).with_context(|| named("recovery", &arm.recovery))?,
            ))
        })?;
        Ok(PipelineSpec { sync, router, recovery, ..spec })
    }
}

/// The commented example written by `swarmlab init`.
pub(crate) const EXAMPLE: &str = include_str!("../../assets/swarmlab.toml");

#[cfg(test)]
mod tests;
