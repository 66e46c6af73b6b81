//! What a pipeline run is: grid, batch, model, optimizer, data, network and synchronisation.

use std::time::Duration;

use std::sync::Arc;

use candle_core::Device;
use genrl::{DeviceProfile, World};
use models::{ModelConfig, OptimConfig};
use transport::sim::LinkSpec;

use crate::error::{Error, Result};
use crate::plug::{FixedRouter, Router};
use crate::recovery::{CheckpointRestart, Layout, Recovery};
use crate::sync::{DataParallel, OuterSync};

/// A pipeline-parallel, data-parallel training run: `stages × replicas` workers.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// Pipeline stages (the model's layers are split among them).
    pub stages: usize,
    /// Replicas of every stage (data parallelism).
    pub replicas: usize,
    /// Micro-batches per step per replica.
    pub micro_batches: usize,
    /// Sequences per micro-batch.
    pub micro_batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Training steps.
    pub steps: u64,
    /// The model.
    pub model: ModelConfig,
    /// The optimizer.
    pub optim: OptimConfig,
    /// How the replicas of a stage agree.
    pub sync: Arc<dyn OuterSync>,
    /// Which replica of the next stage each micro-batch visits.
    pub router: Arc<dyn Router>,
    /// Seed of the data order.
    pub seed: u64,
    /// Where the tensors live and the operators run: the CPU or a CUDA GPU, shared by every simulated
    /// worker of this process.
    pub device: Device,
    /// Who runs where: every worker's simulated profile (its compute speed in virtual time) and region,
    /// indexed `stage × replicas + replica`, the links, and which workers fail when.
    pub world: World,
    /// What happens when a worker fails.
    pub recovery: Arc<dyn Recovery>,
    /// Evaluate the validation loss every this many steps (and after the last); 0 disables it.
    pub eval_every: u64,
    /// Validation batches (of `micro_batch` sequences) per evaluation.
    pub eval_batches: usize,
    /// Evaluate every replica's row of stages, not only replica 0's: each row's last stage records its
    /// `val_loss`, so the loss by step is the mean over the replicas (as NoLoCo's released code reports
    /// validation perplexity averaged over its replicas). Costs `replicas` times the evaluation compute.
    pub eval_all_replicas: bool,
    /// If set, the most steps any worker has completed so far, for progress displays.
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Longest a worker waits for a message its protocol needs before giving up with an error.
    pub peer_timeout: Duration,
    /// The worker starts after the others (a node that joins a run under way): it asks the other
    /// replicas of its stage for their weights and joins at the step the first to answer is at.
    pub late_join: bool,
    /// Whether a killed worker's successor may take its place mid-run (real nodes).
    pub replacement: Replacement,
    /// Where the workers also store their checkpoints, if anywhere (real nodes under
    /// checkpoint-restart): a killed worker's successor reads its predecessor's there
    /// ([`storage`](crate::storage)).
    pub checkpoint_dir: Option<std::path::PathBuf>,
    /// Put the embedding alone in the first stage and the head alone in the last, the transformer blocks
    /// in the stages between (CheckFree's layout); otherwise the blocks are spread over all stages.
    pub edge_stages: bool,
    /// How a step's gradients are scaled and clipped.
    pub gradients: GradientScaling,
    /// On a network whose workers share this process (the simulated one), activations, their gradients,
    /// the chunks of the data-parallel all-reduce and the vectors of outer rounds (which are summed on
    /// their device either way; see [`Summand`](crate::collective::Summand)), and the weights, moments and
    /// outer state sent for a recovery or a join reach the other worker as the tensors themselves, on
    /// their device, not as bytes copied through host memory; the links count the bytes all the same (see
    /// [`transport::resident`]). Results are the same bits either way. Checkpoint files hold bytes.
    pub resident_tensors: bool,
}

/// How a step's gradients are scaled and clipped (they are the same when every path visits every
/// stage and no clip binds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GradientScaling {
    /// Each stage on its own: a stage that some paths skip averages its gradient over the micro-batches
    /// that visited it (rescaled by micro-batches / visits), and clips it on its own norm to `grad_clip`.
    #[default]
    PerStage,
    /// As one model is trained, the way SkipPipe's released trainer does: each micro-batch's loss divided
    /// by the micro-batches per replica, the gradients summed (a skipped stage gets less, no rescale) and
    /// averaged over the replicas, then one clip of the whole model's gradient norm to `grad_clip`; the
    /// stages of each row send each other their squared norms every step to find it.
    WholeModel,
}

impl PipelineSpec {
    /// A `stages × replicas` grid training `model` for `steps` steps with the defaults: 2 micro-batches
    /// of 2 sequences of `model.max_seq` tokens per replica and step, AdamW at its defaults (schedule
    /// over `steps`), the data-parallel baseline plugs, A10-class devices on 10 ms / 1 Gbit/s links,
    /// checkpoint-restart recovery, no failures, no evaluation, on the CPU.
    pub fn new(stages: usize, replicas: usize, steps: u64, model: ModelConfig) -> Self {
        let (sync, router) = Self::baseline_plugs();
        Self {
            stages,
            replicas,
            micro_batches: 2,
            micro_batch: 2,
            seq: model.max_seq,
            steps,
            optim: OptimConfig { total_steps: steps, ..OptimConfig::default() },
            model,
            sync,
            router,
            seed: 0,
            device: Device::Cpu,
            world: World::uniform(stages * replicas, DeviceProfile::a10(), LinkSpec::mbit(10.0, 1000.0)),
            recovery: Arc::new(CheckpointRestart::default()),
            eval_every: 0,
            eval_batches: 2,
            eval_all_replicas: false,
            progress: None,
            peer_timeout: Duration::from_secs(600),
            late_join: false,
            replacement: Replacement::Off,
            checkpoint_dir: None,
            edge_stages: false,
            gradients: GradientScaling::PerStage,
            resident_tensors: true,
        }
    }

    /// Which part of the model each stage holds.
    pub fn stage_specs(&self) -> Result<Vec<models::StageSpec>> {
        Ok(if self.edge_stages {
            models::split_layers_with_edges(self.model.n_layers, self.stages)?
        } else {
            models::split_layers(self.model.n_layers, self.stages)?
        })
    }

    /// Forward FLOPs of one micro-batch through each stage.
    pub fn stage_forward_flops(&self) -> Result<Vec<f64>> {
        self.model.validate()?;
        Ok(self.stage_specs()?.into_iter().map(|s| s.forward_flops(&self.model, self.micro_batch, self.seq)).collect())
    }

    /// The data-parallel baseline (ring all-reduce every step) on a fixed path.
    pub fn baseline_plugs() -> (Arc<dyn OuterSync>, Arc<dyn Router>) {
        (Arc::new(DataParallel::RING), Arc::new(FixedRouter))
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("pipeline.stages", self.stages),
            ("pipeline.replicas", self.replicas),
            ("pipeline.micro_batches", self.micro_batches),
            ("pipeline.micro_batch", self.micro_batch),
            ("pipeline.seq", self.seq),
        ] {
            if v == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if self.stages > self.model.n_layers + 2 * usize::from(self.edge_stages) {
            return Err(Error::config(
                "pipeline.stages",
                format!("{} stages for {} layers (need stages <= layers)", self.stages, self.model.n_layers),
            ));
        }
        if self.seq > self.model.max_seq {
            return Err(Error::config(
                "pipeline.seq",
                format!("{} exceeds model.max_seq {}", self.seq, self.model.max_seq),
            ));
        }
        let specs = self.stage_specs()?;
        let middle = if self.edge_stages { &specs[1..specs.len() - 1] } else { &specs[..] };
        let blocks = middle.first().map(|f| f.layers.len()).filter(|&b| middle.iter().all(|m| m.layers.len() == b));
        let layout = Layout { stages: self.stages, replicas: self.replicas, edge_stages: self.edge_stages, blocks };
        self.recovery.validate(&layout)?;
        let workers = self.stages * self.replicas;
        if self.world.len() != workers {
            return Err(Error::config(
                "pipeline.world",
                format!(
                    "{} agents for {} stages x {} replicas = {workers} workers",
                    self.world.len(),
                    self.stages,
                    self.replicas
                ),
            ));
        }
        self.sync.validate(self.replicas)?;
        if self.replacement != Replacement::Off && self.sync.elastic_wait().is_some() {
            return Err(Error::config(
                "pipeline.replacement",
                "an elastic group leaves a killed replica out and takes a new one as a joiner, not as a replacement",
            ));
        }
        if self.late_join && self.replacement == Replacement::Replaces {
            return Err(Error::config("pipeline.replacement", "a worker either joins late or replaces a killed one"));
        }
        if self.peer_timeout.is_zero() {
            return Err(Error::config("pipeline.peer_timeout", "must be positive"));
        }
        self.model.validate()?;
        self.optim.validate()?;
        self.world.validate()?;
        Ok(())
    }
}

/// Whether pipeline workers can be replaced mid-run: a node killed for real (not a failure the world
/// plans) is followed by a new node with its key and place, which halts the others, agrees with them on
/// the step to train again from, and gets its state by the run's [`Recovery`] strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Replacement {
    /// No (the simulated network, where failures are the world's planned ones).
    #[default]
    Off,
    /// Every worker keeps its state as of the start of its last two steps and halts when a replacement
    /// asks it to ([`Msg::Replace`](crate::wire::Msg::Replace)).
    Ready,
    /// As [`Ready`](Self::Ready), and this worker is the replacement of a killed one.
    Replaces,
}
