//! Run configurations: TOML, every field defaulted, validated on load with errors that name the field.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use genrl::DeviceProfile;
use models::data::SyntheticConfig;
use models::{Backend, ModelConfig, OptimConfig};
use pipeline::{DataParallel, FixedRouter, Independent, PipelineSpec};
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
    /// `all_reduce` (DDP, ring), `tree_all_reduce` (DDP, binary tree) or `none`.
    #[serde(default = "default_sync")]
    pub(crate) sync: String,
}

fn default_sync() -> String {
    "all_reduce".into()
}

/// The network every worker sits on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NetworkConfig {
    /// One-way latency in milliseconds.
    pub(crate) latency_ms: f64,
    /// Bandwidth in megabits per second.
    pub(crate) mbit_per_s: f64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self { latency_ms: 10.0, mbit_per_s: 1000.0 }
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
    /// Device preset of every worker: `h100`, `a10` or `cpu32`.
    pub(crate) device: String,
    /// Model size preset: `tiny`, `small`, `medium` or `large`.
    pub(crate) model_preset: String,
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
            device: "a10".into(),
            model_preset: "tiny".into(),
            backend: Backend::Native,
            optim: OptimConfig { lr: 3e-3, min_lr: 3e-4, warmup_steps: 20, total_steps: 300, ..OptimConfig::default() },
            corpus: CorpusConfig::default(),
            network: NetworkConfig::default(),
            arms: vec![
                ArmConfig { label: "R=1".into(), stages: 1, replicas: 1, sync: default_sync() },
                ArmConfig { label: "DDP R=4".into(), stages: 1, replicas: 4, sync: default_sync() },
                ArmConfig { label: "pipeline S=2 x R=2".into(), stages: 2, replicas: 2, sync: default_sync() },
            ],
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

    /// A shorter version of the same study (for smoke checks).
    pub(crate) fn quick(mut self) -> Self {
        self.steps = self.steps.min(40);
        self.optim.total_steps = self.steps;
        self.optim.warmup_steps = self.optim.warmup_steps.min(5);
        self.eval_every = (self.steps / 4).max(1);
        self.corpus.synthetic.train_tokens = self.corpus.synthetic.train_tokens.min(1 << 16);
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
            if !matches!(arm.sync.as_str(), "all_reduce" | "tree_all_reduce" | "none") {
                bail!("invalid arms[{i}].sync: {:?} is not one of all_reduce, tree_all_reduce, none", arm.sync);
            }
        }
        DeviceProfile::preset(&self.device)?;
        ModelConfig::preset(&self.model_preset)?;
        for i in 0..self.arms.len() {
            self.spec(i)?.validate().with_context(|| format!("arms[{i}] ({})", self.arms[i].label))?;
        }
        Ok(())
    }

    /// The pipeline spec of arm `i`.
    pub(crate) fn spec(&self, i: usize) -> Result<PipelineSpec> {
        let arm = &self.arms[i];
        let model =
            ModelConfig { backend: self.backend, max_seq: self.seq.max(1), ..ModelConfig::preset(&self.model_preset)? };
        Ok(PipelineSpec {
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
                _ => Arc::new(DataParallel::RING),
            },
            router: Arc::new(FixedRouter),
            seed: self.seed,
            device: DeviceProfile::preset(&self.device)?,
            link: LinkSpec::mbit(self.network.latency_ms, self.network.mbit_per_s),
            recovery: pipeline::Recovery::default(),
            failures: pipeline::FailurePlan::default(),
            eval_every: self.eval_every,
            eval_batches: self.eval_batches,
            progress: None,
            peer_timeout: Duration::from_secs(600),
        })
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
device = "a10"         # h100 | a10 | cpu32: sets compute time in the simulation
model_preset = "tiny"  # tiny (~0.1M) | small (~1M) | medium (~10M) | large (~50M parameters)
backend = "native"     # native | repops (bitwise reproducible)

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

[[arms]]
label = "R=1"
stages = 1
replicas = 1

[[arms]]
label = "DDP R=4"
stages = 1
replicas = 4

[[arms]]
label = "pipeline S=2 x R=2"
stages = 2
replicas = 2
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
        assert!(err("device = \"tpu\"").contains("device"));
        assert!(err("model_preset = \"huge\"").contains("model.preset"));
        assert!(err("[[arms]]\nlabel = \"x\"\nstages = 5\nreplicas = 1").contains("pipeline.stages"));
        assert!(err("[[arms]]\nlabel = \"x\"\nstages = 1\nreplicas = 1\nsync = \"gossip\"").contains("arms[0].sync"));
        assert!(err("[optim]\nbeta1 = 2.0").contains("optim.beta1"));
        assert!(err("backend = \"fast\"").contains("backend"));
    }
}
