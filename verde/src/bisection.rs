//! The bisection game both phases of a Verde dispute play (§4.3), as a sans-IO state machine.
//!
//! Two parties have committed to Merkle roots over `len` hashes each — checkpoint hashes after every
//! training step (phase 1), or the running hash of a step's op tape after every operator (phase 2). A
//! running hash makes agreement at position `i` mean agreement on everything before it. Both agree on
//! position `lo` (the public initial state, or the agreed start of the step) and disagree on `hi`. Each
//! round the referee asks both to open the middle position with an inclusion proof; a party whose proof
//! does not check against its own root loses at once; otherwise the agreed bound moves. After
//! `ceil(log2(hi − lo))` rounds the dispute is about the single transition `lo → lo + 1`.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::merkle::{Hash, MerkleTree, Proof, verify};

/// Who is who in a dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    /// The party whose result was challenged.
    Trainer,
    /// The party that challenged it.
    Challenger,
}

/// One party's commitment: the root over its `len` hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commitment {
    /// Merkle root.
    pub root: Hash,
    /// Leaves under it.
    pub len: u64,
}

/// A party's answer to a query: the hash at the asked position and its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Opening {
    /// The position.
    pub index: u64,
    /// The hash committed there.
    pub hash: Hash,
    /// Its inclusion proof.
    pub proof: Proof,
}

impl Opening {
    /// The opening of position `index` of `contents`, the leaves `tree` was built over.
    pub fn of(contents: &[Hash], tree: &MerkleTree, index: u64) -> Result<Self, Error> {
        let len = contents.len() as u64;
        let hash = *contents.get(index as usize).ok_or(Error::OutOfRange { index, len })?;
        Ok(Self { index, hash, proof: tree.proof(index)? })
    }

    /// Checks that this opens position `index` of `commitment`: the right position, and a proof that
    /// leads to the committed root.
    pub fn check(&self, commitment: &Commitment, index: u64) -> Result<(), Error> {
        if self.index != index {
            return Err(Error::OutOfRange { index: self.index, len: commitment.len });
        }
        verify(&commitment.root, commitment.len, index, &self.hash, &self.proof)
    }
}

/// Where the game stands after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Ask both parties to open this position next.
    Query(u64),
    /// Found: both agree on `agreed` and disagree on `agreed + 1` — the disputed transition.
    Found {
        /// The last agreed position.
        agreed: u64,
    },
    /// A party broke the protocol (a bad proof, an answer to another question): it loses.
    Forfeit {
        /// Who.
        party: Party,
        /// Why.
        reason: Error,
    },
}

/// The referee's side of one bisection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bisection {
    trainer: Commitment,
    challenger: Commitment,
    lo: u64,
    hi: u64,
    /// The hash both opened at `lo`.
    lo_hash: Hash,
    /// What each opened at `hi` (trainer, challenger).
    hi_hashes: [Hash; 2],
    rounds: u32,
}

impl Bisection {
    /// A game over positions `lo < hi` of the two commitments: both opened `lo_hash` at `lo`, and
    /// `hi_hashes` (trainer's, challenger's) at `hi`.
    pub fn new(
        trainer: Commitment,
        challenger: Commitment,
        (lo, lo_hash): (u64, Hash),
        (hi, hi_hashes): (u64, [Hash; 2]),
    ) -> Result<Self, Error> {
        for c in [trainer, challenger] {
            if hi >= c.len {
                return Err(Error::OutOfRange { index: hi, len: c.len });
            }
        }
        if lo >= hi {
            return Err(Error::OutOfRange { index: lo, len: hi });
        }
        Ok(Self { trainer, challenger, lo, hi, lo_hash, hi_hashes, rounds: 0 })
    }

    /// The last agreed position and the hash both opened there.
    pub fn agreed(&self) -> (u64, Hash) {
        (self.lo, self.lo_hash)
    }

    /// The first disputed position and what each side (trainer, challenger) opened there.
    pub fn disputed(&self) -> (u64, [Hash; 2]) {
        (self.hi, self.hi_hashes)
    }

    /// What the referee does next.
    pub fn progress(&self) -> Progress {
        if self.hi - self.lo == 1 {
            Progress::Found { agreed: self.lo }
        } else {
            Progress::Query(self.lo + (self.hi - self.lo) / 2)
        }
    }

    /// Rounds played so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Takes both parties' openings of the queried position.
    pub fn answer(&mut self, trainer: &Opening, challenger: &Opening) -> Progress {
        let Progress::Query(mid) = self.progress() else { return self.progress() };
        for (party, opening, commitment) in
            [(Party::Trainer, trainer, self.trainer), (Party::Challenger, challenger, self.challenger)]
        {
            if let Err(reason) = opening.check(&commitment, mid) {
                return Progress::Forfeit { party, reason };
            }
        }
        self.rounds += 1;
        if trainer.hash == challenger.hash {
            self.lo = mid;
            self.lo_hash = trainer.hash;
        } else {
            self.hi = mid;
            self.hi_hashes = [trainer.hash, challenger.hash];
        }
        self.progress()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MerkleTree;
    use proptest::prelude::*;

    /// A run of `n` states as running hashes, diverging from position `from` on if given.
    fn run(n: u64, from: Option<u64>) -> Vec<Hash> {
        let mut h = [0u8; 32];
        (0..n)
            .map(|i| {
                let bump: u8 = if from.is_some_and(|f| i >= f) { 1 } else { 0 };
                h = *blake3::hash(&[h.as_slice(), &i.to_le_bytes(), &[bump]].concat()).as_bytes();
                h
            })
            .collect()
    }

    fn open(tree: &MerkleTree, states: &[Hash], i: u64) -> Opening {
        Opening { index: i, hash: states[i as usize], proof: tree.proof(i).expect("proof") }
    }

    proptest! {
        #[test]
        fn the_first_divergence_is_found_in_log_rounds(n in 2u64..500, cut in 1u64..500) {
            let cut = 1 + cut % (n - 1);
            let (honest, cheat) = (run(n, None), run(n, Some(cut)));
            let (th, tc) = (MerkleTree::new(&honest).expect("tree"), MerkleTree::new(&cheat).expect("tree"));
            let commit = |t: &MerkleTree| Commitment { root: t.root(), len: n };
            let ends = (n - 1, [honest[n as usize - 1], cheat[n as usize - 1]]);
            let mut game = Bisection::new(commit(&th), commit(&tc), (0, honest[0]), ends).expect("game");
            let mut progress = game.progress();
            while let Progress::Query(mid) = progress {
                progress = game.answer(&open(&th, &honest, mid), &open(&tc, &cheat, mid));
            }
            prop_assert_eq!(progress, Progress::Found { agreed: cut - 1 });
            prop_assert_eq!(game.agreed(), (cut - 1, honest[cut as usize - 1]));
            prop_assert_eq!(game.disputed(), (cut, [honest[cut as usize], cheat[cut as usize]]));
            prop_assert!(game.rounds() <= 64 - (n - 1).leading_zeros());
        }
    }

    #[test]
    fn a_bad_or_off_question_answer_forfeits() {
        let (honest, cheat) = (run(16, None), run(16, Some(5)));
        let (th, tc) = (MerkleTree::new(&honest).expect("tree"), MerkleTree::new(&cheat).expect("tree"));
        let commit = |t: &MerkleTree| Commitment { root: t.root(), len: 16 };
        let ends = (15, [honest[15], cheat[15]]);
        let mut game = Bisection::new(commit(&th), commit(&tc), (0, honest[0]), ends).expect("game");
        let Progress::Query(mid) = game.progress() else { panic!("a query first") };
        // The challenger claims the honest hash at mid without a valid proof for it.
        let lie = Opening { hash: honest[mid as usize], ..open(&tc, &cheat, mid) };
        let got = game.answer(&open(&th, &honest, mid), &lie);
        assert!(matches!(got, Progress::Forfeit { party: Party::Challenger, .. }), "{got:?}");
        let off = open(&th, &honest, mid + 1);
        let got = game.answer(&off, &open(&tc, &cheat, mid));
        assert!(matches!(got, Progress::Forfeit { party: Party::Trainer, .. }), "{got:?}");
        assert!(Bisection::new(commit(&th), commit(&tc), (3, honest[3]), (3, ends.1)).is_err());
        assert!(Bisection::new(commit(&th), commit(&tc), (0, honest[0]), (16, ends.1)).is_err());
    }
}
