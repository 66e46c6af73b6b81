//! Verifiable evaluation, as Gensyn's Judge promises it: a model's score on a committed held-out set
//! that anyone can check, and that a forged score cannot survive. The evaluation is a Verde program of
//! its own ([`crate::Task::Evaluate`]): item `i` takes the model's mean loss on batch `i` of the held-out
//! tokens (drawn by the program's seed) on repops and adds it to a running sum, the evaluation's only
//! state; the evaluator commits to the running sum's hash after every item, as a trainer commits to its
//! states. A claimed [`Score`] must be the sum the last committed state holds. Two evaluators that claim
//! different scores settle it by the usual dispute — bisection over items to the first one whose sum
//! they disagree on, then over that item's operators — and the referee re-executes at most one
//! operator; the model's weights are constants of the program's structure, the batches are re-drawn
//! from the seed, so a score computed on another model, on other items, with skipped items or simply
//! made up loses.

use repops::op::{HostData, HostTensor};
use repops::tape::hash_view;

use crate::error::{Error, Result};
use crate::merkle::Hash;
use crate::program::{Execution, SUM_KEY, StateManifest};

/// A claimed evaluation result: the final running sum of the items' mean losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The sum of the items' losses, as the evaluation computed it (f32, item by item).
    pub sum: f32,
    /// Items evaluated.
    pub items: u64,
}

impl Score {
    /// The mean loss per item: the score reported.
    pub fn mean(&self) -> f32 {
        self.sum / self.items.max(1) as f32
    }

    /// The state hash an evaluation that ends in this score commits to last.
    pub fn state_hash(&self) -> Hash {
        let sum = HostTensor { shape: Vec::new(), data: HostData::F32(vec![self.sum]) };
        StateManifest { step: self.items, entries: vec![(SUM_KEY.to_owned(), hash_view(&sum.view()))] }.hash()
    }

    /// Checks this claim against the final state an evaluator committed to.
    pub fn check(&self, committed: &Hash) -> Result<()> {
        if self.state_hash() != *committed {
            return Err(Error::Program(format!(
                "the claimed sum {} over {} items is not the final state the evaluator committed to",
                self.sum, self.items
            )));
        }
        Ok(())
    }
}

impl Execution {
    /// The score an evaluation run claims (`None` for a training run): the sum its run ended with.
    pub fn score(&self) -> Option<Score> {
        self.sum.map(|sum| Score { sum, items: self.hashes.len() as u64 - 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{Behaviour, Program, Weights, execute};

    /// An honest evaluation's claim checks against its commitment; the same score with another sum or
    /// item count does not; evaluators agree bit for bit; a forged score is committed to consistently,
    /// so only a dispute can reject it.
    #[test]
    fn a_score_checks_against_the_committed_final_state() -> Result<()> {
        let trained = Program::tiny(4);
        let eval = trained.evaluation(Weights::trained_by(&trained)?, 5);
        let honest = execute(&eval, Behaviour::Honest)?;
        let again = execute(&eval, Behaviour::Honest)?;
        assert_eq!(honest.hashes, again.hashes);
        let score = honest.score().expect("an evaluation");
        let last = honest.hashes.last().copied().unwrap_or_default();
        score.check(&last)?;
        assert_eq!(score.items, 5);
        assert!(score.mean() > 0.5 && score.mean() < 10.0, "{}", score.mean());
        assert!(Score { sum: score.sum + 1e-3, ..score }.check(&last).is_err());
        assert!(Score { items: 4, ..score }.check(&last).is_err());
        let forged = execute(&eval, Behaviour::PerturbWeight { step: 3, delta: -1.0 })?;
        let claim = forged.score().expect("an evaluation");
        assert!(claim.mean() < score.mean());
        claim.check(forged.hashes.last().expect("hashes"))?;
        // The untrained model scores worse than the trained one.
        let untrained = execute(&trained.evaluation(Weights::trained_by(&Program::tiny(0))?, 5), Behaviour::Honest)?;
        assert!(untrained.score().expect("score").mean() > score.mean());
        assert!(execute(&trained, Behaviour::Honest)?.score().is_none(), "training claims no score");
        Ok(())
    }
}
