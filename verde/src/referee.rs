//! The referee's side of the step-level dispute (Verde §4.3, phase 1) with deadlines, and a simulated
//! stake ledger.
//!
//! [`StepDispute`] is a sans-IO state machine: it is told what each party sent and what time it is, and
//! says what to ask next or how the dispute ended. Each party opens the public initial state (position
//! 0) and its final state first; a party whose opening does not check against its own commitment, whose
//! initial state is not the public one, who answers another question than the one asked, or who does not
//! answer before the deadline loses. Final states that agree end the dispute with nothing to settle.

use std::time::Duration;

use crate::bisection::{Bisection, Commitment, Opening, Party, Progress};
use crate::error::Error;
use crate::merkle::{Hash, verify};

/// Why a party lost without the dispute reaching a verdict on the computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// It did not answer before the deadline.
    Timeout,
    /// Its answer did not check (bad proof, wrong position).
    BadAnswer(Error),
    /// Its initial state is not the public one.
    WrongStart,
}

/// How a step dispute ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The final states agree: nothing to dispute.
    Agreed,
    /// The parties agree on the state after `step − 1` steps and disagree after `step`: phase 2 settles
    /// that one step.
    StepFound {
        /// The disputed step (1-based).
        step: u64,
        /// Bisection rounds played.
        rounds: u32,
    },
    /// A party lost by breaking the protocol.
    Forfeit {
        /// Who.
        party: Party,
        /// How.
        fault: Fault,
    },
}

/// The referee's state in one step dispute.
#[derive(Debug, Clone)]
pub struct StepDispute {
    game: Option<Bisection>,
    deadline: Duration,
    asked_at: Duration,
    answers: [Option<Opening>; 2],
    outcome: Option<Outcome>,
}

fn slot(party: Party) -> usize {
    match party {
        Party::Trainer => 0,
        Party::Challenger => 1,
    }
}

impl StepDispute {
    /// Opens a dispute between two commitments over `steps` steps (`steps + 1` states), given each
    /// party's openings of position 0 and of its final state, the public initial state hash, the time
    /// now and how long a party may take to answer.
    pub fn new(
        trainer: (Commitment, &Opening, &Opening),
        challenger: (Commitment, &Opening, &Opening),
        initial: &Hash,
        now: Duration,
        deadline: Duration,
    ) -> Self {
        let mut dispute = Self { game: None, deadline, asked_at: now, answers: [None, None], outcome: None };
        let mut finals = [Hash::default(); 2];
        for (party, (c, start, end)) in [(Party::Trainer, trainer), (Party::Challenger, challenger)] {
            let last = c.len.saturating_sub(1);
            for (opening, index) in [(start, 0), (end, last)] {
                let checked = if opening.index == index {
                    verify(&c.root, c.len, index, &opening.hash, &opening.proof)
                } else {
                    Err(Error::OutOfRange { index: opening.index, len: c.len })
                };
                if let Err(e) = checked {
                    dispute.outcome = Some(Outcome::Forfeit { party, fault: Fault::BadAnswer(e) });
                    return dispute;
                }
            }
            if start.hash != *initial {
                dispute.outcome = Some(Outcome::Forfeit { party, fault: Fault::WrongStart });
                return dispute;
            }
            finals[slot(party)] = end.hash;
        }
        if trainer.0.len != challenger.0.len {
            // The program fixes the number of steps: a commitment of another length does not follow it.
            let party = if trainer.0.len < challenger.0.len { Party::Trainer } else { Party::Challenger };
            let e = Error::OutOfRange {
                index: trainer.0.len.max(challenger.0.len) - 1,
                len: trainer.0.len.min(challenger.0.len),
            };
            dispute.outcome = Some(Outcome::Forfeit { party, fault: Fault::BadAnswer(e) });
            return dispute;
        }
        if finals[0] == finals[1] {
            dispute.outcome = Some(Outcome::Agreed);
            return dispute;
        }
        match Bisection::new(trainer.0, challenger.0, 0, trainer.0.len - 1) {
            Ok(game) => {
                dispute.game = Some(game);
                dispute.settle_if_found();
            }
            Err(e) => dispute.outcome = Some(Outcome::Forfeit { party: Party::Trainer, fault: Fault::BadAnswer(e) }),
        }
        dispute
    }

    fn settle_if_found(&mut self) {
        if let Some(game) = &self.game
            && let Progress::Found { agreed } = game.progress()
        {
            self.outcome = Some(Outcome::StepFound { step: agreed + 1, rounds: game.rounds() });
        }
    }

    /// The position both parties must open next, if the dispute goes on.
    pub fn question(&self) -> Option<u64> {
        match (&self.outcome, &self.game) {
            (None, Some(game)) => match game.progress() {
                Progress::Query(mid) => Some(mid),
                _ => None,
            },
            _ => None,
        }
    }

    /// How the dispute ended, if it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Takes `party`'s answer at time `now`.
    pub fn answer(&mut self, party: Party, opening: Opening, now: Duration) {
        if self.outcome.is_some() {
            return;
        }
        if now > self.asked_at + self.deadline {
            self.poll(now);
            return;
        }
        self.answers[slot(party)] = Some(opening);
        let (Some(t), Some(c), Some(game)) = (&self.answers[0], &self.answers[1], &mut self.game) else { return };
        match game.answer(t, c) {
            Progress::Forfeit { party, reason } => {
                self.outcome = Some(Outcome::Forfeit { party, fault: Fault::BadAnswer(reason) });
            }
            Progress::Found { .. } => self.settle_if_found(),
            Progress::Query(_) => {
                self.answers = [None, None];
                self.asked_at = now;
            }
        }
    }

    /// Checks the deadline at time `now`: a party that has not answered the open question loses (both
    /// silent: the trainer, whose result is in question, loses).
    pub fn poll(&mut self, now: Duration) -> Option<&Outcome> {
        if self.outcome.is_none() && self.question().is_some() && now > self.asked_at + self.deadline {
            let party = if self.answers[0].is_none() { Party::Trainer } else { Party::Challenger };
            self.outcome = Some(Outcome::Forfeit { party, fault: Fault::Timeout });
        }
        self.outcome.as_ref()
    }
}

/// Simulated stakes: every party deposits before taking part; the loser of a dispute is slashed by the
/// stake and the winner paid from it. (A stand-in for an on-chain contract, documented as such.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    balances: std::collections::BTreeMap<String, u64>,
}

impl Ledger {
    /// Adds `amount` to `who`'s balance.
    pub fn deposit(&mut self, who: &str, amount: u64) {
        *self.balances.entry(who.to_owned()).or_default() += amount;
    }

    /// `who`'s balance.
    pub fn balance(&self, who: &str) -> u64 {
        self.balances.get(who).copied().unwrap_or(0)
    }

    /// Moves up to `stake` from the loser to the winner; returns what moved.
    pub fn settle(&mut self, winner: &str, loser: &str, stake: u64) -> u64 {
        let taken = self.balance(loser).min(stake);
        if let Some(b) = self.balances.get_mut(loser) {
            *b -= taken;
        }
        self.deposit(winner, taken);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::{Behaviour, Execution, Program, execute};

    const DEADLINE: Duration = Duration::from_secs(10);

    fn open(e: &Execution, i: u64) -> Opening {
        e.open(i).expect("open")
    }

    fn start(t: &Execution, c: &Execution, now: Duration) -> StepDispute {
        let last = t.hashes.len() as u64 - 1;
        let initial = t.hashes[0];
        StepDispute::new(
            (t.commitment(), &open(t, 0), &open(t, last)),
            (c.commitment(), &open(c, 0), &open(c, c.hashes.len() as u64 - 1)),
            &initial,
            now,
            DEADLINE,
        )
    }

    /// Plays the dispute with both answering at once, `answer` deciding what the challenger sends.
    fn play(t: &Execution, c: &Execution, answer: impl Fn(u64) -> Opening) -> Outcome {
        let mut d = start(t, c, Duration::ZERO);
        let mut now = Duration::ZERO;
        while let Some(q) = d.question() {
            now += Duration::from_secs(1);
            d.answer(Party::Trainer, open(t, q), now);
            d.answer(Party::Challenger, answer(q), now);
        }
        d.outcome().cloned().expect("ended")
    }

    #[test]
    fn cheaters_lose_honest_parties_agree() -> crate::Result<()> {
        let program = Program::tiny(12);
        let honest = execute(&program, Behaviour::Honest)?;
        let twin = execute(&program, Behaviour::Honest)?;
        assert_eq!(play(&honest, &twin, |q| open(&twin, q)), Outcome::Agreed);
        let cheat = execute(&program, Behaviour::PerturbWeight { step: 9, delta: 1e-4 })?;
        let outcome = play(&honest, &cheat, |q| open(&cheat, q));
        assert!(matches!(outcome, Outcome::StepFound { step: 9, rounds } if rounds <= 4), "{outcome:?}");
        // Inconsistent: answers the honest hash (to drag the bisection elsewhere) with its own proof.
        let outcome = play(&honest, &cheat, |q| Opening { hash: honest.hashes[q as usize], ..open(&cheat, q) });
        assert!(
            matches!(outcome, Outcome::Forfeit { party: Party::Challenger, fault: Fault::BadAnswer(_) }),
            "{outcome:?}"
        );
        // A different starting point than the public one.
        let mut hashes = cheat.hashes.clone();
        hashes[0] = [0; 32];
        let forged = Execution::from_hashes(hashes)?;
        let d = start(&honest, &forged, Duration::ZERO);
        assert_eq!(d.outcome(), Some(&Outcome::Forfeit { party: Party::Challenger, fault: Fault::WrongStart }));
        // A commitment to fewer steps than the program has.
        let short = Execution::from_hashes(cheat.hashes[..8].to_vec())?;
        let d = start(&honest, &short, Duration::ZERO);
        assert!(matches!(d.outcome(), Some(Outcome::Forfeit { party: Party::Challenger, .. })), "{:?}", d.outcome());
        Ok(())
    }

    #[test]
    fn a_silent_party_loses_at_the_deadline() -> crate::Result<()> {
        let program = Program::tiny(6);
        let honest = execute(&program, Behaviour::Honest)?;
        let lazy = execute(&program, Behaviour::Lazy { from: 2 })?;
        let mut d = start(&lazy, &honest, Duration::ZERO);
        let q = d.question().expect("a question");
        d.answer(Party::Challenger, open(&honest, q), Duration::from_secs(1));
        assert_eq!(d.poll(Duration::from_secs(5)), None, "still within the deadline");
        let outcome = d.poll(Duration::from_secs(11)).cloned();
        assert_eq!(outcome, Some(Outcome::Forfeit { party: Party::Trainer, fault: Fault::Timeout }));
        // A late answer changes nothing.
        d.answer(Party::Trainer, open(&lazy, q), Duration::from_secs(12));
        assert_eq!(d.outcome().cloned(), outcome);
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]

        /// Whatever step a trainer starts cheating at, and however, the dispute lands on that step, in at
        /// most ceil(log2 steps) rounds.
        #[test]
        fn the_cheat_is_located_at_its_step(k in 1u64..=10, how in 0usize..3) {
            let program = Program::tiny(10);
            let honest = execute(&program, Behaviour::Honest).expect("run");
            let (behaviour, expected) = match how {
                0 => (Behaviour::PerturbWeight { step: k, delta: 1e-3 }, k),
                1 => (Behaviour::Lazy { from: k }, k),
                _ => (Behaviour::LieInCommitment { step: 10 }, 10),
            };
            let cheat = execute(&program, behaviour).expect("run");
            let outcome = play(&cheat, &honest, |q| open(&honest, q));
            let found = matches!(outcome, Outcome::StepFound { step, rounds } if step == expected && rounds <= 4);
            proptest::prop_assert!(found, "{:?} -> {:?}", behaviour, outcome);
        }
    }

    #[test]
    fn the_ledger_slashes_the_loser_and_pays_the_winner() {
        let mut ledger = Ledger::default();
        ledger.deposit("honest", 100);
        ledger.deposit("cheat", 30);
        assert_eq!(ledger.settle("honest", "cheat", 50), 30, "never more than the loser has");
        assert_eq!((ledger.balance("honest"), ledger.balance("cheat")), (130, 0));
    }
}
