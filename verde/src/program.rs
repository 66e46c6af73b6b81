//! The training program under verification (Verde §4.2): a `models` language model trained on the repops
//! backend, so that honest trainers compute the same bits. A trainer runs it step by step, hashes its
//! state after every step (weights and optimizer moments, by name) and commits to the Merkle root of
//! those hashes; position 0 is the public initial state.
//!
//! [`Behaviour`] makes a trainer dishonest in one of the ways the dispute must catch.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use models::data::{Corpus, SyntheticConfig, SyntheticLanguage, sample_batch};
use models::{AdamW, Backend, Llama, ModelConfig, OptimConfig};

use repops::tape::hash_view;

use crate::bisection::Commitment;
use crate::error::{Error, Result};
use crate::merkle::{Hash, MerkleTree};

/// What is trained, on what, for how long. Every trainer runs the same program.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// The model (its backend is forced to repops).
    pub model: ModelConfig,
    /// The optimizer.
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
}

impl Program {
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
}

/// A trainer's run: its state hash after every step and what it needs to answer a dispute.
#[derive(Debug)]
pub struct Execution {
    /// `hashes[i]`: the state after `i` steps, as committed (index 0: the initial state).
    pub hashes: Vec<Hash>,
    tree: MerkleTree,
}

impl Execution {
    /// An execution that commits to `hashes` (to build adversaries that claim what they like).
    pub fn from_hashes(hashes: Vec<Hash>) -> Result<Self> {
        let tree = MerkleTree::new(&hashes)?;
        Ok(Self { hashes, tree })
    }

    /// The commitment to all state hashes.
    pub fn commitment(&self) -> Commitment {
        Commitment { root: self.tree.root(), len: self.hashes.len() as u64 }
    }

    /// The answer to a bisection query.
    pub fn open(&self, index: u64) -> Result<crate::bisection::Opening> {
        let hash =
            *self.hashes.get(index as usize).ok_or(Error::OutOfRange { index, len: self.hashes.len() as u64 })?;
        Ok(crate::bisection::Opening { index, hash, proof: self.tree.proof(index)? })
    }
}

/// The hash of a training state after `step` steps: every weight and optimizer moment, by name, through
/// its repops tensor hash — the hash the op tape gives the same tensor, so that a state can be matched
/// against the outputs of the operators that produced it.
pub fn state_hash(weights: &BTreeMap<String, Tensor>, moments: &BTreeMap<String, Tensor>, step: u64) -> Result<Hash> {
    let mut h = blake3::Hasher::new();
    h.update(b"swarmlab.verde.state");
    h.update(&step.to_le_bytes());
    for (kind, tensors) in [("w", weights), ("m", moments)] {
        for (name, t) in tensors {
            h.update(kind.as_bytes());
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            let host = repops::tensor::to_host(t).map_err(program_error)?;
            h.update(&hash_view(&host.view()));
        }
    }
    Ok(*h.finalize().as_bytes())
}

fn program_error(e: impl std::fmt::Display) -> Error {
    Error::Program(e.to_string())
}

/// A training run in progress: the program's model, optimizer and data, one step at a time.
#[derive(Debug)]
pub struct Trainer {
    program: Program,
    corpus: Corpus,
    model: Llama,
    optim: AdamW,
}

impl Trainer {
    /// The program's initial state (on the repops backend, whatever its model config says).
    pub fn new(program: &Program) -> Result<Self> {
        let corpus = SyntheticLanguage::new(&program.corpus).map_err(program_error)?.corpus();
        let model_cfg = ModelConfig { backend: Backend::RepOps, ..program.model.clone() };
        let model = Llama::new(&model_cfg, 1, &Device::Cpu).map_err(program_error)?;
        let optim = AdamW::new(program.optim.clone(), Backend::RepOps).map_err(program_error)?;
        Ok(Self { program: program.clone(), corpus, model, optim })
    }

    /// Trains step `step` (1-based): the program's batch for that step, forward, backward, AdamW.
    pub fn step(&mut self, step: u64) -> Result<()> {
        let p = &self.program;
        let (ids, targets) = sample_batch(&self.corpus.train, p.batch, p.seq, p.data_seed, step, 0, &Device::Cpu)
            .map_err(program_error)?;
        let params = self.model.params();
        let loss = self.model.loss(&ids, &targets).map_err(program_error)?;
        let grads = params.grads(&loss.backward().map_err(program_error)?);
        self.optim.step(&params, &grads).map_err(program_error)?;
        Ok(())
    }

    /// The hash of the current state, claimed as the state after `step` steps ([`state_hash`]).
    pub fn state_hash(&self, step: u64) -> Result<Hash> {
        state_hash(&self.model.params().snapshot(), &self.optim.state().1, step)
    }

    /// Adds `delta` to the first element of the first weight (a cheat).
    fn perturb(&self, delta: f32) -> Result<()> {
        let params = self.model.params();
        let (name, t) = params.snapshot().into_iter().next().ok_or_else(|| program_error("no weights"))?;
        let mut v = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(program_error)?;
        let first = v.first_mut().ok_or_else(|| program_error(format!("{name} is empty")))?;
        *first += delta;
        let changed = Tensor::from_vec(v, t.dims(), &Device::Cpu).map_err(program_error)?;
        params.set(&name, &changed).map_err(program_error)
    }
}

/// Runs `program` as `behaviour` says and commits to the state hashes.
pub fn execute(program: &Program, behaviour: Behaviour) -> Result<Execution> {
    let mut trainer = Trainer::new(program)?;
    let mut hashes = vec![trainer.state_hash(0)?];
    for step in 1..=program.steps {
        if !matches!(behaviour, Behaviour::Lazy { from } if step >= from) {
            trainer.step(step)?;
        }
        if let Behaviour::PerturbWeight { step: at, delta } = behaviour
            && at == step
        {
            trainer.perturb(delta)?;
        }
        // A lazy trainer's claimed step counter still advances: only the work is skipped.
        let mut h = trainer.state_hash(step)?;
        if matches!(behaviour, Behaviour::LieInCommitment { step: at } if at == step) {
            h = *blake3::hash(&h).as_bytes();
        }
        hashes.push(h);
    }
    Execution::from_hashes(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisection::{Bisection, Progress};

    /// Phase 1 between an honest trainer and `other`: the last agreed step, or `None` if the final states
    /// agree (no dispute).
    fn first_disputed_step(honest: &Execution, other: &Execution) -> Option<u64> {
        let last = honest.hashes.len() as u64 - 1;
        if honest.hashes[last as usize] == other.hashes[last as usize] {
            return None;
        }
        let mut game = Bisection::new(honest.commitment(), other.commitment(), 0, last).expect("game");
        let mut progress = game.progress();
        while let Progress::Query(mid) = progress {
            progress = game.answer(&honest.open(mid).expect("open"), &other.open(mid).expect("open"));
        }
        match progress {
            Progress::Found { agreed } => Some(agreed + 1),
            Progress::Forfeit { party, reason } => panic!("{party:?} forfeited: {reason}"),
            Progress::Query(_) => unreachable!(),
        }
    }

    #[test]
    fn two_honest_trainers_agree_bit_for_bit_and_cheaters_are_located() -> Result<()> {
        let program = Program::tiny(12);
        let honest = execute(&program, Behaviour::Honest)?;
        let again = execute(&program, Behaviour::Honest)?;
        assert_eq!(honest.hashes, again.hashes, "repops: the same bits every time");
        for k in [1, 5, 12] {
            let cheat = execute(&program, Behaviour::PerturbWeight { step: k, delta: 1e-3 })?;
            assert_eq!(first_disputed_step(&honest, &cheat), Some(k), "perturbed after step {k}");
        }
        let lazy = execute(&program, Behaviour::Lazy { from: 7 })?;
        assert_eq!(first_disputed_step(&honest, &lazy), Some(7));
        // A lie in the middle leaves the final output right: nothing to dispute. A lie about the end is
        // located at the last step.
        let liar = execute(&program, Behaviour::LieInCommitment { step: 6 })?;
        assert_eq!(first_disputed_step(&honest, &liar), None);
        let liar = execute(&program, Behaviour::LieInCommitment { step: 12 })?;
        assert_eq!(first_disputed_step(&honest, &liar), Some(12));
        Ok(())
    }
}
