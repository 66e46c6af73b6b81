//! The training program under verification (Verde §4.2): a `models` language model trained on the repops
//! backend, so that honest trainers compute the same bits. A trainer runs it step by step, hashes its
//! state after every step (weights and optimizer moments, by name: a [`StateManifest`]) and commits to
//! the Merkle root of those hashes; position 0 is the public initial state. It keeps its whole state
//! every K steps ([`Checkpoints`]); in a dispute it re-runs the disputed step with the op tape on from
//! the last checkpoint before it ([`Execution::trace_step`]), so answering costs at most K steps.
//!
//! [`Behaviour`] makes a trainer dishonest in one of the ways the dispute must catch.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use models::data::{Corpus, SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, Llama, ModelConfig, OptimConfig};
use repops::HostTensor;
use repops::tape::{Fault, Keep, RecordOptions, Tape, hash_view};

use crate::bisection::{Commitment, Opening};
use crate::error::{Error, Result};
use crate::merkle::{Hash, MerkleTree};
use crate::trace::{OpRecord, StepTrace};

/// What is trained, on what, for how long. Every trainer runs the same program.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// The model. Its backend should be repops: on the native backend honest trainers need not agree,
    /// and no step leaves an op tape to verify (the negative case).
    pub model: ModelConfig,
    /// The optimizer. Gradient clipping is forced off: whether it applies depends on the data, and the
    /// step's operator graph must not ([`crate::Structure`]).
    pub optim: OptimConfig,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Training steps.
    pub steps: u64,
    /// Seed of the data order.
    pub data_seed: u64,
    /// The data.
    pub corpus: SyntheticConfig,
    /// Training, or evaluating a given model ([`Task::Evaluate`]).
    pub task: Task,
}

/// What a program does with its steps.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Task {
    /// Each step trains on a batch of the training tokens (forward, backward, AdamW).
    #[default]
    Train,
    /// Verifiable evaluation: each step — one item — takes the mean loss of the given model on a batch
    /// drawn from the held-out tokens (by the program's seed and the item's number) and adds it to a
    /// running sum, the only state; the score is the final sum over the items ([`crate::eval`]). The
    /// model's weights are a constant of the program, so a dispute over a claimed score runs as over a
    /// training run: bisection over items, then over one item's operators.
    Evaluate(Weights),
}

/// A model's weights, by name, in host memory: the model an evaluation program scores.
#[derive(Clone, PartialEq)]
pub struct Weights(pub std::sync::Arc<BTreeMap<String, HostTensor>>);

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut h = blake3::Hasher::new();
        for (name, t) in self.0.iter() {
            h.update(blake3::hash(name.as_bytes()).as_bytes());
            h.update(&hash_view(&t.view()));
        }
        write!(f, "Weights({} tensors, {})", self.0.len(), &h.finalize().to_hex()[..16])
    }
}

impl Weights {
    /// The weights `program` ends its training with (run honestly; on repops every run gives the same).
    pub fn trained_by(program: &Program) -> Result<Self> {
        let mut trainer = Trainer::new(program)?;
        for step in 1..=program.steps {
            trainer.step(step)?;
        }
        let weights = trainer
            .model
            .params()
            .snapshot()
            .into_iter()
            .map(|(name, t)| Ok((name, repops::tensor::to_host(&t).map_err(program_error)?)))
            .collect::<Result<_>>()?;
        Ok(Self(std::sync::Arc::new(weights)))
    }
}

impl Program {
    /// The evaluation of `weights` (a model of this program's configuration) on `items` batches of the
    /// held-out tokens.
    pub fn evaluation(&self, weights: Weights, items: u64) -> Self {
        Self { steps: items, task: Task::Evaluate(weights), ..self.clone() }
    }

    /// A tiny program: a 2-layer model of width 32 on the synthetic language, batches of 4 × 16 tokens.
    pub fn tiny(steps: u64) -> Self {
        Self {
            model: ModelConfig { backend: Backend::RepOps, ..ModelConfig::miniature(2) },
            optim: OptimConfig { lr: 1e-2, warmup_steps: 2, total_steps: steps, ..OptimConfig::default() },
            batch: 4,
            seq: 16,
            steps,
            data_seed: 3,
            corpus: SyntheticConfig { train_tokens: 1 << 14, val_tokens: 1024, ..SyntheticConfig::default() },
            task: Task::Train,
        }
    }
}

/// How a trainer deviates from the program.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Runs the program.
    Honest,
    /// After step `step` (1-based), adds `delta` to the first element of the first weight.
    PerturbWeight {
        /// The step after which the state is changed.
        step: u64,
        /// The change.
        delta: f32,
    },
    /// In step `step`, adds `delta` to the first element of operator `op`'s output (0-based position on
    /// the step's op tape), which the rest of the step then reads.
    PerturbOp {
        /// The step.
        step: u64,
        /// The operator.
        op: usize,
        /// The change.
        delta: f32,
    },
    /// From step `from` on, skips the work: the state stays as it was, the steps are claimed done.
    Lazy {
        /// The first skipped step.
        from: u64,
    },
    /// Trains honestly but commits a made-up hash for the state after step `step`.
    LieInCommitment {
        /// The step whose hash is false.
        step: u64,
    },
    /// Runs step `step` with its learning rate `factor` times the program's (a forged attribute).
    ForgeLr {
        /// The step.
        step: u64,
        /// The factor on the learning rate.
        factor: f32,
    },
    /// Trains step `step` on the batch the program draws for step `data_step` instead (forged data).
    ForgeBatch {
        /// The step.
        step: u64,
        /// Whose batch it trains on.
        data_step: u64,
    },
    /// In step `step`, operator `op` (tape position) reads its input `input` with two elements swapped:
    /// the work before it laid the tensor out wrongly (a forged layout).
    MislaidInput {
        /// The step.
        step: u64,
        /// The operator.
        op: usize,
        /// Which of its inputs.
        input: usize,
    },
    /// Skips a share of the steps, drawn by `seed`: each step is skipped with probability
    /// `per_mille / 1000` (the state stays as it was; the step is claimed done). A trainer that saves
    /// part of the work and hopes no one looks.
    Skipping {
        /// Steps skipped per thousand, on average.
        per_mille: u16,
        /// The draw.
        seed: u64,
    },
}

/// The most steps [`Behaviour::first_bad_step`] looks through for a [`Behaviour::Skipping`] trainer's
/// first skip.
const SKIP_SEARCH: u64 = 1 << 20;

impl Behaviour {
    /// The step this behaviour first departs from the program at (`None`: honest).
    pub fn first_bad_step(&self) -> Option<u64> {
        match *self {
            Self::Honest => None,
            Self::PerturbWeight { step, .. }
            | Self::PerturbOp { step, .. }
            | Self::LieInCommitment { step }
            | Self::ForgeLr { step, .. }
            | Self::ForgeBatch { step, .. }
            | Self::MislaidInput { step, .. } => Some(step),
            Self::Lazy { from } => Some(from),
            Self::Skipping { .. } => (1..=SKIP_SEARCH).find(|&s| self.skips(s)),
        }
    }

    /// Whether this trainer skips the work of step `step`.
    pub fn skips(&self, step: u64) -> bool {
        match *self {
            Self::Lazy { from } => step >= from,
            Self::Skipping { per_mille, seed } => {
                let mut h = blake3::Hasher::new();
                h.update(b"swarmlab verde skipping");
                h.update(&seed.to_le_bytes());
                h.update(&step.to_le_bytes());
                let draw = u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or_default());
                draw % 1000 < u64::from(per_mille)
            }
            _ => false,
        }
    }
}

/// The tensors of a training state after `step` steps, each by key (`w:<weight>` or `m:<moment>`) and
/// repops tensor hash — the hash the op tape gives the same tensor, so that a state can be matched
/// against the outputs of the operators that produced it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateManifest {
    /// Steps taken.
    pub step: u64,
    /// `(key, tensor hash)`, in key order.
    pub entries: Vec<(String, Hash)>,
}

impl StateManifest {
    /// The manifest of `weights` and optimizer `moments` after `step` steps.
    pub fn of(weights: &BTreeMap<String, Tensor>, moments: &BTreeMap<String, Tensor>, step: u64) -> Result<Self> {
        let mut entries = Vec::with_capacity(weights.len() + moments.len());
        for (kind, tensors) in [("w", weights), ("m", moments)] {
            for (name, t) in tensors {
                let host = repops::tensor::to_host(t).map_err(program_error)?;
                entries.push((format!("{kind}:{name}"), hash_view(&host.view())));
            }
        }
        Ok(Self { step, entries })
    }

    /// The state hash: blake3 over the step and every key with its tensor hash, under a domain tag.
    pub fn hash(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"swarmlab.verde.state");
        h.update(&self.step.to_le_bytes());
        for (key, hash) in &self.entries {
            h.update(&(key.len() as u64).to_le_bytes());
            h.update(key.as_bytes());
            h.update(hash);
        }
        *h.finalize().as_bytes()
    }
}

fn program_error(e: impl std::fmt::Display) -> Error {
    Error::Program(e.to_string())
}

/// The batch of `batch` windows of `seq` tokens the program draws from `tokens` for step `step` with
/// seed `seed` (ids, targets): the one rule trainers and referee share.
fn batch(tokens: &[u32], batch: usize, seq: usize, seed: u64, step: u64) -> Result<(Tensor, Tensor)> {
    sample_batch(tokens, batch, seq, seed, step, 0, &Device::Cpu).map_err(program_error)
}

/// [`batch`] in host memory, as the op tape sees it.
pub(crate) fn batch_host(tokens: &[u32], size: usize, seq: usize, seed: u64, step: u64) -> Result<[HostTensor; 2]> {
    let (ids, targets) = batch(tokens, size, seq, seed, step)?;
    Ok([
        repops::tensor::to_host(&ids).map_err(program_error)?,
        repops::tensor::to_host(&targets).map_err(program_error)?,
    ])
}

/// A training run in progress: the program's model, optimizer and data, one step at a time.
#[derive(Debug)]
pub struct Trainer {
    program: Program,
    corpus: Corpus,
    model: Llama,
    optim: AdamW,
    /// In an evaluation: the running sum of the items' losses (a scalar), its whole state.
    sum: Option<Tensor>,
}

/// The key of an evaluation's running sum in its state manifest.
pub const SUM_KEY: &str = "e:sum";

impl Trainer {
    /// The program's initial state (without gradient clipping, whatever the optimizer config says).
    pub fn new(program: &Program) -> Result<Self> {
        let corpus = SyntheticLanguage::new(&program.corpus).map_err(program_error)?.corpus();
        let model = Llama::new(&program.model, 1, &Device::Cpu).map_err(program_error)?;
        let optim_cfg = OptimConfig { grad_clip: 0.0, ..program.optim.clone() };
        let optim = AdamW::new(optim_cfg, program.model.backend).map_err(program_error)?;
        let sum = match &program.task {
            Task::Train => None,
            Task::Evaluate(weights) => {
                let params = model.params();
                for (name, value) in weights.0.iter() {
                    let t = repops::tensor::from_host(value, &Device::Cpu).map_err(program_error)?;
                    params.set(name, &t).map_err(|e| program_error(format!("the evaluated weight {name}: {e}")))?;
                }
                Some(Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).map_err(program_error)?)
            }
        };
        Ok(Self { program: program.clone(), corpus, model, optim, sum })
    }

    /// Trains step `step` (1-based): the program's batch for that step, forward, backward, AdamW.
    pub fn step(&mut self, step: u64) -> Result<()> {
        self.train_on(step)
    }

    /// Trains the next step on the batch the program draws for step `data_step` (another step's batch
    /// than the one being trained is a cheat).
    fn train_on(&mut self, data_step: u64) -> Result<()> {
        let p = &self.program;
        let (ids, targets) = batch(self.tokens(), p.batch, p.seq, p.data_seed, data_step)?;
        let loss = self.model.loss(&ids, &targets).map_err(program_error)?;
        if let Some(sum) = &self.sum {
            // An evaluation item: no gradient, no update; the loss joins the running sum.
            let sum = repops::tensor::add(sum, &loss.detach()).map_err(program_error)?;
            self.sum = Some(sum);
            return Ok(());
        }
        let params = self.model.params();
        let grads = params.grads(&loss.backward().map_err(program_error)?);
        self.optim.step(&params, &grads).map_err(program_error)?;
        Ok(())
    }

    /// [`Trainer::step`] with the op tape on: what it keeps, and an injected fault if any.
    pub fn step_recorded(&mut self, step: u64, options: RecordOptions) -> Result<Tape> {
        let (done, tape) = repops::tape::record_with(options, || self.step(step));
        done?;
        Ok(tape)
    }

    /// The program's batch for step `step` (ids, targets) in host memory.
    pub fn batch_host(&self, step: u64) -> Result<[HostTensor; 2]> {
        let p = &self.program;
        batch_host(self.tokens(), p.batch, p.seq, p.data_seed, step)
    }

    /// The tokens the program draws its batches from: the training tokens, or the held-out ones in an
    /// evaluation.
    pub fn tokens(&self) -> &[u32] {
        match self.program.task {
            Task::Train => &self.corpus.train,
            Task::Evaluate(_) => &self.corpus.val,
        }
    }

    /// The manifest of the current state, claimed as the state after `step` steps: the weights and
    /// moments, or an evaluation's running sum alone.
    pub fn manifest(&self, step: u64) -> Result<StateManifest> {
        match &self.sum {
            Some(sum) => {
                let host = repops::tensor::to_host(sum).map_err(program_error)?;
                Ok(StateManifest { step, entries: vec![(SUM_KEY.to_owned(), hash_view(&host.view()))] })
            }
            None => StateManifest::of(&self.model.params().snapshot(), &self.optim.state().1, step),
        }
    }

    /// An evaluation's running sum (`None` when training).
    pub fn sum(&self) -> Result<Option<f32>> {
        self.sum.as_ref().map(|s| s.to_scalar::<f32>().map_err(program_error)).transpose()
    }

    /// The hash of the current state, claimed as the state after `step` steps ([`StateManifest::hash`]).
    pub fn state_hash(&self, step: u64) -> Result<Hash> {
        Ok(self.manifest(step)?.hash())
    }

    /// The whole state after `step` steps, to re-run from.
    fn checkpoint(&self, step: u64) -> Checkpoint {
        let (optim_step, moments) = self.optim.state();
        Checkpoint { step, weights: self.model.params().snapshot(), optim_step, moments, sum: self.sum.clone() }
    }

    /// The program's trainer in the state `checkpoint` kept.
    pub(crate) fn resume(program: &Program, checkpoint: &Checkpoint) -> Result<Self> {
        let mut trainer = Self::new(program)?;
        let params = trainer.model.params();
        for (name, value) in &checkpoint.weights {
            params.set(name, value).map_err(program_error)?;
        }
        trainer.optim.restore(checkpoint.optim_step, &checkpoint.moments).map_err(program_error)?;
        trainer.sum = checkpoint.sum.clone();
        Ok(trainer)
    }

    /// Adds `delta` to the first element of the first weight — or, in an evaluation, to the running sum
    /// (a forged score) — as a cheat.
    fn perturb(&mut self, delta: f32) -> Result<()> {
        if let Some(sum) = &self.sum {
            self.sum = Some((sum + f64::from(delta)).map_err(program_error)?);
            return Ok(());
        }
        let params = self.model.params();
        let (name, t) = params.snapshot().into_iter().next().ok_or_else(|| program_error("no weights"))?;
        let mut v = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(program_error)?;
        let first = v.first_mut().ok_or_else(|| program_error(format!("{name} is empty")))?;
        *first += delta;
        let changed = Tensor::from_vec(v, t.dims(), &Device::Cpu).map_err(program_error)?;
        params.set(&name, &changed).map_err(program_error)
    }

    /// Does step `step` as `behaviour` says; returns the step's tape when `record` asks for one.
    pub(crate) fn advance(&mut self, step: u64, behaviour: Behaviour, record: Option<Keep>) -> Result<Option<Tape>> {
        if behaviour.skips(step) && record.is_none() {
            return Ok(None);
        }
        let fault = match behaviour {
            Behaviour::PerturbOp { step: at, op, delta } if at == step => Some(Fault::Output { op, delta }),
            Behaviour::MislaidInput { step: at, op, input } if at == step => Some(Fault::MislaidInput { op, input }),
            _ => None,
        };
        let data_step = match behaviour {
            Behaviour::ForgeBatch { step: at, data_step } if at == step => data_step,
            _ => step,
        };
        let lr_factor = match behaviour {
            Behaviour::ForgeLr { step: at, factor } if at == step => factor,
            _ => 1.0,
        };
        self.optim.set_lr_factor(lr_factor);
        let options = RecordOptions { keep: record.unwrap_or_default(), fault };
        let (done, tape) = match (record, fault) {
            (None, None) => (self.train_on(data_step), None),
            _ => {
                let (done, tape) = repops::tape::record_with(options, || self.train_on(data_step));
                (done, Some(tape))
            }
        };
        self.optim.set_lr_factor(1.0);
        done?;
        if let Behaviour::PerturbWeight { step: at, delta } = behaviour
            && at == step
        {
            self.perturb(delta)?;
        }
        Ok(tape)
    }
}

/// Which states a trainer keeps while it trains, to answer for a step without re-running the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpoints {
    /// None: answering for step k re-runs steps 1 to k.
    #[default]
    None,
    /// The state after every K-th step (K ≥ 1; the initial state is public): answering for step k
    /// re-runs at most K steps, from the last kept state before it. Memory: weights and both Adam
    /// moments, `steps / K` times.
    Every(u64),
}

impl Checkpoints {
    /// Whether the state after `step` is kept.
    fn keeps(self, step: u64) -> bool {
        matches!(self, Self::Every(k) if k > 0 && step.is_multiple_of(k))
    }
}

/// A trainer's whole state after a step: weights, Adam's moments and its step counter. What it hands a
/// verifier that audits the segment starting there ([`crate::audit`]).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    step: u64,
    weights: BTreeMap<String, Tensor>,
    optim_step: u64,
    moments: BTreeMap<String, Tensor>,
    /// An evaluation's running sum.
    sum: Option<Tensor>,
}

impl Checkpoint {
    /// The step it was kept after.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Bytes of tensor data it holds.
    fn bytes(&self) -> usize {
        self.weights.values().chain(self.moments.values()).map(|t| t.elem_count() * t.dtype().size_in_bytes()).sum()
    }
}

/// A trainer's run: the program, how the trainer ran it, its state hash after every step and their
/// commitment, and the states it kept — what it needs to answer a dispute.
#[derive(Debug)]
pub struct Execution {
    program: Program,
    behaviour: Behaviour,
    /// `hashes[i]`: the state after `i` steps, as committed (index 0: the initial state).
    pub hashes: Vec<Hash>,
    tree: MerkleTree,
    /// The kept states, by step.
    checkpoints: Vec<Checkpoint>,
    /// Wall time the run took.
    pub seconds: f64,
    /// An evaluation's final running sum, as this run ended it (`None` for training).
    pub sum: Option<f32>,
}

impl Execution {
    /// An execution of `program` that commits to `hashes` (to build adversaries that claim what they
    /// like); re-running a step follows the program honestly.
    pub fn from_hashes(program: &Program, hashes: Vec<Hash>) -> Result<Self> {
        let tree = MerkleTree::new(&hashes)?;
        Ok(Self {
            program: program.clone(),
            behaviour: Behaviour::Honest,
            hashes,
            tree,
            checkpoints: vec![],
            seconds: 0.0,
            sum: None,
        })
    }

    /// The program run.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// How it was run.
    pub fn behaviour(&self) -> Behaviour {
        self.behaviour
    }

    /// The commitment to all state hashes.
    pub fn commitment(&self) -> Commitment {
        Commitment { root: self.tree.root(), len: self.hashes.len() as u64 }
    }

    /// The answer to a bisection query.
    pub fn open(&self, index: u64) -> Result<Opening> {
        Opening::of(&self.hashes, &self.tree, index)
    }

    /// The steps kept as checkpoints, in order.
    pub fn checkpointed_steps(&self) -> Vec<u64> {
        self.checkpoints.iter().map(|c| c.step).collect()
    }

    /// Bytes of tensor data its checkpoints hold.
    pub fn checkpoint_bytes(&self) -> usize {
        self.checkpoints.iter().map(Checkpoint::bytes).sum()
    }

    /// The steps [`Execution::trace_step`] re-runs to answer for `step`: from the last kept state
    /// before it (or the initial state) through `step` itself.
    pub fn replayed_steps(&self, step: u64) -> u64 {
        step - self.resume_point(step).map_or(0, |c| c.step)
    }

    /// The state it kept after step `step`, if it kept one there.
    pub fn checkpoint_at(&self, step: u64) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.step == step)
    }

    fn resume_point(&self, step: u64) -> Option<&Checkpoint> {
        self.checkpoints.iter().rev().find(|c| c.step < step)
    }

    /// Re-runs the run from the last state it kept before step `step` (or the initial state) up to
    /// that step and returns its trace — its operators, then the state record that claims the committed
    /// state after it — and its tape, which keeps the inputs `keep` asks for. A dishonest trainer
    /// re-runs the way it ran; its checkpoints are of the state it really had.
    pub fn trace_step(&self, step: u64, keep: Keep) -> Result<TracedStep> {
        let len = self.hashes.len() as u64;
        let (Some(&start), Some(&claimed)) =
            (self.hashes.get(step.wrapping_sub(1) as usize), self.hashes.get(step as usize))
        else {
            return Err(Error::OutOfRange { index: step, len });
        };
        let (mut trainer, from) = match self.resume_point(step) {
            Some(c) => (Trainer::resume(&self.program, c)?, c.step + 1),
            None => (Trainer::new(&self.program)?, 1),
        };
        for s in from..step {
            trainer.advance(s, self.behaviour, None)?;
        }
        let before = trainer.manifest(step - 1)?;
        // A lazy trainer shows the operators it should have run, but its state did not move.
        let lazy = self.behaviour.skips(step);
        let unmoved = if lazy { Some(trainer.manifest(step)?) } else { None };
        let tape = trainer.advance(step, self.behaviour, Some(keep))?.unwrap_or_default();
        let manifest = match unmoved {
            Some(m) => m,
            None => trainer.manifest(step)?,
        };
        let mut records: Vec<OpRecord> = tape.entries().iter().map(OpRecord::from_entry).collect();
        records.push(OpRecord::state(&manifest, claimed));
        Ok(TracedStep { trace: StepTrace::new(start, records)?, tape, before })
    }
}

/// A step re-run to answer for it ([`Execution::trace_step`]).
#[derive(Debug)]
pub struct TracedStep {
    /// Its trace.
    pub trace: StepTrace,
    /// Its tape, with the inputs asked for.
    pub tape: Tape,
    /// The state it started from.
    pub before: StateManifest,
}

/// Runs `program` as `behaviour` says and commits to the state hashes, keeping no checkpoints.
pub fn execute(program: &Program, behaviour: Behaviour) -> Result<Execution> {
    execute_with(program, behaviour, Checkpoints::None)
}

/// [`execute`], keeping the states `checkpoints` asks for.
pub fn execute_with(program: &Program, behaviour: Behaviour, checkpoints: Checkpoints) -> Result<Execution> {
    let began = Instant::now();
    let mut trainer = Trainer::new(program)?;
    let mut hashes = vec![trainer.state_hash(0)?];
    let mut kept = Vec::new();
    for step in 1..=program.steps {
        trainer.advance(step, behaviour, None)?;
        if checkpoints.keeps(step) && step < program.steps {
            kept.push(trainer.checkpoint(step));
        }
        // A lazy trainer's claimed step counter still advances: only the work is skipped.
        let mut h = trainer.state_hash(step)?;
        if matches!(behaviour, Behaviour::LieInCommitment { step: at } if at == step) {
            h = *blake3::hash(&h).as_bytes();
        }
        hashes.push(h);
    }
    let tree = MerkleTree::new(&hashes)?;
    Ok(Execution {
        program: program.clone(),
        behaviour,
        hashes,
        tree,
        checkpoints: kept,
        seconds: began.elapsed().as_secs_f64(),
        sum: trainer.sum()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first step whose state hash differs between two runs.
    fn first_difference(a: &Execution, b: &Execution) -> Option<u64> {
        a.hashes.iter().zip(&b.hashes).position(|(x, y)| x != y).map(|i| i as u64)
    }

    #[test]
    fn answering_from_a_checkpoint_gives_the_trace_of_a_run_from_the_start() -> Result<()> {
        let program = Program::tiny(7);
        for behaviour in [
            Behaviour::Honest,
            Behaviour::PerturbWeight { step: 3, delta: 1e-3 },
            Behaviour::PerturbOp { step: 5, op: 5, delta: 0.5 },
            Behaviour::Lazy { from: 4 },
            Behaviour::LieInCommitment { step: 3 },
        ] {
            let plain = execute(&program, behaviour)?;
            let kept = execute_with(&program, behaviour, Checkpoints::Every(3))?;
            assert_eq!(kept.hashes, plain.hashes, "{behaviour:?}: keeping states changes nothing");
            assert_eq!(kept.checkpointed_steps(), vec![3, 6], "every third step but the last");
            assert!(kept.checkpoint_bytes() > 0);
            for step in 1..=program.steps {
                let (a, b) = (plain.trace_step(step, Keep::Op(2))?, kept.trace_step(step, Keep::Op(2))?);
                assert_eq!(a.trace.commitment(), b.trace.commitment(), "{behaviour:?}, step {step}");
                assert_eq!(a.tape.entries().len(), b.tape.entries().len(), "{behaviour:?}, step {step}");
                assert_eq!(a.before, b.before, "{behaviour:?}, step {step}");
                assert_eq!(plain.replayed_steps(step), step);
                assert!(kept.replayed_steps(step) <= 3, "step {step}: {}", kept.replayed_steps(step));
            }
        }
        Ok(())
    }

    #[test]
    fn honest_runs_agree_bit_for_bit_and_cheats_show_at_their_step() -> Result<()> {
        let program = Program::tiny(8);
        let honest = execute(&program, Behaviour::Honest)?;
        let again = execute(&program, Behaviour::Honest)?;
        assert_eq!(honest.hashes, again.hashes, "repops: the same bits every time");
        for behaviour in [
            Behaviour::PerturbWeight { step: 3, delta: 1e-3 },
            Behaviour::PerturbOp { step: 3, op: 5, delta: 0.5 },
            Behaviour::Lazy { from: 3 },
            Behaviour::LieInCommitment { step: 3 },
            Behaviour::ForgeLr { step: 3, factor: 2.0 },
            Behaviour::ForgeBatch { step: 3, data_step: 4 },
            Behaviour::MislaidInput { step: 3, op: 5, input: 0 },
        ] {
            let cheat = execute(&program, behaviour)?;
            assert_eq!(first_difference(&honest, &cheat), Some(3), "{behaviour:?}");
        }
        // Re-running a step reproduces the committed state, and the trace ends in the state record.
        let TracedStep { trace, tape, before } = honest.trace_step(5, Keep::Nothing)?;
        assert_eq!(before.hash(), honest.hashes[4], "the state the step starts from");
        assert_eq!(trace.ops(), tape.len() + 1);
        let state = trace.record(tape.len()).expect("state record");
        assert_eq!(state.output, honest.hashes[5]);
        assert_eq!(trace.open(0)?.hash, honest.hashes[4]);
        assert!(honest.trace_step(0, Keep::Nothing).is_err() && honest.trace_step(9, Keep::Nothing).is_err());
        Ok(())
    }
}
