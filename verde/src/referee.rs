//! The referee's side of a whole dispute (Verde §4.3), as one sans-IO state machine with deadlines, and
//! a simulated stake ledger.
//!
//! [`Dispute`] is told what each party sent and what time it is, and says what to ask both parties next
//! ([`Ask`]) or how the dispute ended ([`Outcome`]). Its stages follow the paper:
//!
//! 1. **Claims.** Each party commits to the Merkle root over its `steps + 1` state hashes and opens the
//!    public initial state and its final state. Final states that agree end the dispute.
//! 2. **Step bisection** over the state hashes, to the step `k` both agree before and disagree after.
//! 3. **Traces.** Each party re-runs step `k` with the op tape on, commits to the chain of running hashes
//!    over its records ([`crate::StepTrace`]), opens the start (which must be the agreed state), the end,
//!    and the state record that links to the end and claims the state it committed after step `k`.
//! 4. **Op bisection** over those chains, to the one record both disagree on.
//! 5. **Evidence.** Each party sends that record with the operator's inputs and the provenance the
//!    structure asks for, and the referee [`judge`]s it, re-executing at most one operator.
//!
//! A party whose answer is of the wrong kind, whose opening does not check against its own commitment,
//! whose start is not the agreed one, whose claim fails the referee's check, or who does not answer
//! before the deadline loses. Its stake moves to the other party on the [`crate::Ledger`].

use std::sync::Arc;
use std::time::Duration;

use repops::simd::SimdLevel;
use serde::{Deserialize, Serialize};

use crate::bisection::{Bisection, Commitment, Opening, Party, Progress};
use crate::error::Error;
use crate::merkle::Hash;
use crate::structure::Structure;
use crate::trace::{Disputed, Evidence, Judgement, OpRecord, Verdict, judge, link};

/// What the referee asks both parties for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ask {
    /// The commitment to the state hashes, with the openings of the initial and the final state.
    Claim,
    /// The opening of this position of the current commitment (state hashes, then the step's trace).
    Open {
        /// The position.
        index: u64,
    },
    /// The commitment to the trace of step `step` ([`Answer::Trace`]).
    Trace {
        /// The disputed step (1-based).
        step: u64,
    },
    /// The evidence for record `index` of the disputed step's trace.
    Evidence {
        /// The disputed record.
        index: u64,
    },
}

impl Ask {
    fn name(&self) -> &'static str {
        match self {
            Self::Claim => "claim",
            Self::Open { .. } => "opening",
            Self::Trace { .. } => "trace",
            Self::Evidence { .. } => "evidence",
        }
    }
}

/// A party's answer to an [`Ask`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// The commitment to the state hashes and the openings of positions 0 and `len − 1`.
    Claim {
        /// The commitment.
        commitment: Commitment,
        /// Position 0: the initial state.
        start: Opening,
        /// The final state.
        end: Opening,
    },
    /// An opening of the asked position.
    Open(Opening),
    /// The commitment to the disputed step's trace, its start, its end, the position before the end,
    /// and the state record between those two.
    Trace {
        /// The commitment.
        commitment: Commitment,
        /// Position 0.
        start: Opening,
        /// Position `len − 2`.
        before_end: Opening,
        /// Position `len − 1`.
        end: Opening,
        /// The state record.
        state: OpRecord,
    },
    /// The evidence for the disputed record.
    Evidence(Evidence),
}

impl Answer {
    fn name(&self) -> &'static str {
        match self {
            Self::Claim { .. } => "claim",
            Self::Open(_) => "opening",
            Self::Trace { .. } => "trace",
            Self::Evidence(_) => "evidence",
        }
    }
}

/// Why a party lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// It did not answer before the deadline.
    Timeout,
    /// It answered something else than what was asked.
    OutOfOrder {
        /// What was asked.
        asked: &'static str,
        /// What came.
        got: &'static str,
    },
    /// Its answer did not check (bad proof, wrong position, wrong size).
    BadAnswer(Error),
    /// It starts from another state than the agreed one.
    WrongStart,
    /// Its claim about the computation fails the referee's check (named).
    WrongClaim(String),
    /// It sent bytes that are not a message of the protocol.
    Malformed(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => write!(f, "did not answer in time"),
            Self::OutOfOrder { asked, got } => write!(f, "answered a {got} when asked for a {asked}"),
            Self::BadAnswer(e) => write!(f, "bad answer: {e}"),
            Self::WrongStart => write!(f, "does not start from the agreed state"),
            Self::WrongClaim(why) => write!(f, "wrong claim: {why}"),
            Self::Malformed(why) => write!(f, "malformed message: {why}"),
        }
    }
}

/// How a dispute ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The final states agree: nothing to dispute.
    Agreed,
    /// `winner` won: the other party lost by `fault`.
    Won {
        /// The winner.
        winner: Party,
        /// How the loser lost.
        fault: Fault,
    },
    /// Both lost (both broke the protocol, or the referee could not tell).
    BothLose(String),
}

/// What the referee is bound by: the public program's initial state, length and graph, how long a
/// party may take to answer, and the SIMD level it re-executes operators at.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The public initial state's hash.
    pub initial: Hash,
    /// The program's training steps.
    pub steps: u64,
    /// The program's step graph.
    pub structure: Arc<Structure>,
    /// How long a party may take to answer.
    pub deadline: Duration,
    /// The SIMD level of the one re-execution.
    pub level: SimdLevel,
}

#[derive(Debug, Clone)]
enum Stage {
    Claims,
    Steps(Bisection),
    Traces { step: u64, agreed: Hash, claimed: [Hash; 2] },
    Ops { step: u64, start: Hash, game: Bisection, traces: [Commitment; 2] },
    Evidence { step: u64, start: Hash, index: u64, agreed: Hash, claimed: [Hash; 2], traces: [Commitment; 2] },
    Done,
}

fn slot(party: Party) -> usize {
    match party {
        Party::Trainer => 0,
        Party::Challenger => 1,
    }
}

const PARTIES: [Party; 2] = [Party::Trainer, Party::Challenger];

/// The referee's state in one dispute.
#[derive(Debug, Clone)]
pub struct Dispute {
    rules: Rules,
    stage: Stage,
    asked_at: Duration,
    answers: [Option<Answer>; 2],
    outcome: Option<Outcome>,
    step: Option<u64>,
    record: Option<u64>,
    rounds: [u32; 2],
    judgement: Option<Judgement>,
}

/// Where a dispute got to and what it cost the referee.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// The disputed step, if the step bisection finished.
    pub step: Option<u64>,
    /// The disputed record of that step, if the op bisection finished.
    pub record: Option<u64>,
    /// Bisection rounds over steps.
    pub step_rounds: u32,
    /// Bisection rounds over the step's records.
    pub op_rounds: u32,
    /// The referee's judgement, if it came to one.
    pub judgement: Option<Judgement>,
}

impl Dispute {
    /// A dispute under `rules`, opened at time `now`: both parties are asked for their claims.
    pub fn new(rules: Rules, now: Duration) -> Self {
        Self {
            rules,
            stage: Stage::Claims,
            asked_at: now,
            answers: [None, None],
            outcome: None,
            step: None,
            record: None,
            rounds: [0, 0],
            judgement: None,
        }
    }

    /// What both parties must answer now, if the dispute goes on.
    pub fn ask(&self) -> Option<Ask> {
        match &self.stage {
            Stage::Claims => Some(Ask::Claim),
            Stage::Steps(game) | Stage::Ops { game, .. } => match game.progress() {
                Progress::Query(index) => Some(Ask::Open { index }),
                _ => None,
            },
            Stage::Traces { step, .. } => Some(Ask::Trace { step: *step }),
            Stage::Evidence { index, .. } => Some(Ask::Evidence { index: *index }),
            Stage::Done => None,
        }
    }

    /// How the dispute ended, if it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.outcome.as_ref()
    }

    /// Where the dispute got to and what the referee did.
    pub fn summary(&self) -> Summary {
        Summary {
            step: self.step,
            record: self.record,
            step_rounds: self.rounds[0],
            op_rounds: self.rounds[1],
            judgement: self.judgement.clone(),
        }
    }

    /// Takes `party`'s answer at time `now`. Late answers are ignored (the deadline has passed); so is
    /// a second answer to the same question.
    pub fn answer(&mut self, party: Party, answer: Answer, now: Duration) {
        if self.outcome.is_some() || self.poll(now).is_some() || self.answers[slot(party)].is_some() {
            return;
        }
        self.answers[slot(party)] = Some(answer);
        if self.answers.iter().all(Option::is_some) {
            let [Some(t), Some(c)] = std::mem::take(&mut self.answers) else { return };
            self.step_with([t, c]);
            self.asked_at = now;
        }
    }

    /// Takes a message from `party` that could not be read as an answer at all (`why`): it loses.
    pub fn reject(&mut self, party: Party, why: String, now: Duration) {
        if self.outcome.is_some() || self.poll(now).is_some() {
            return;
        }
        let mut faults = [None, None];
        faults[slot(party)] = Some(Fault::Malformed(why));
        self.decide(faults);
    }

    /// Checks the deadline at time `now`: a party that has not answered loses (both silent: both lose).
    pub fn poll(&mut self, now: Duration) -> Option<&Outcome> {
        if self.outcome.is_none() && now > self.asked_at + self.rules.deadline {
            let faults = self.answers.each_ref().map(|a| a.is_none().then_some(Fault::Timeout));
            self.decide(faults);
        }
        self.outcome.as_ref()
    }

    fn end(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.stage = Stage::Done;
    }

    /// Ends the dispute against the parties with a fault (if any).
    fn decide(&mut self, faults: [Option<Fault>; 2]) -> bool {
        match faults {
            [None, None] => return false,
            [Some(f), None] => self.end(Outcome::Won { winner: Party::Challenger, fault: f }),
            [None, Some(f)] => self.end(Outcome::Won { winner: Party::Trainer, fault: f }),
            [Some(t), Some(c)] => self.end(Outcome::BothLose(format!("trainer {t}; challenger {c}"))),
        }
        true
    }

    fn step_with(&mut self, answers: [Answer; 2]) {
        let Some(ask) = self.ask() else { return };
        let faults = answers.each_ref().map(|a| {
            let expected = ask.name();
            (a.name() != expected).then_some(Fault::OutOfOrder { asked: expected, got: a.name() })
        });
        if self.decide(faults) {
            return;
        }
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Claims => self.claims(answers),
            Stage::Steps(game) => self.bisect(game, answers, None),
            Stage::Traces { step, agreed, claimed } => self.traces(step, agreed, claimed, answers),
            Stage::Ops { step, start, game, traces } => self.bisect(game, answers, Some((step, start, traces))),
            Stage::Evidence { step, start, index, agreed, claimed, traces } => {
                let [Answer::Evidence(t), Answer::Evidence(c)] = &answers else { return };
                let structure = &self.rules.structure;
                let expected_op = structure.op_at(step, index as usize);
                let batch = structure.batch(step).ok().map(|b| b.map(|t| repops::tape::hash_view(&t.view())));
                let disputed = Disputed {
                    shape: structure.step(step),
                    step,
                    expected_op: expected_op.as_deref(),
                    batch: batch.as_ref(),
                    start: &start,
                    index,
                    agreed: &agreed,
                    claimed: [&claimed[0], &claimed[1]],
                    commitments: [&traces[0], &traces[1]],
                };
                let judgement = judge(&disputed, [t, c], self.rules.level);
                let outcome = match &judgement.verdict {
                    Verdict::Wins(winner) => {
                        let why = judgement.failures[1 - slot(*winner)].clone().unwrap_or_default();
                        Outcome::Won { winner: *winner, fault: Fault::WrongClaim(why) }
                    }
                    Verdict::BothLose(why) => Outcome::BothLose(why.clone()),
                };
                self.judgement = Some(judgement);
                self.end(outcome);
            }
            Stage::Done => {}
        }
    }

    fn claims(&mut self, answers: [Answer; 2]) {
        let len = self.rules.steps + 1;
        let mut finals = [Hash::default(); 2];
        let mut commitments = [Commitment { root: Hash::default(), len }; 2];
        let faults = PARTIES.map(|p| {
            let Answer::Claim { commitment, start, end } = &answers[slot(p)] else { return None };
            if commitment.len != len {
                return Some(Fault::BadAnswer(Error::Length { got: commitment.len, expected: len }));
            }
            if let Err(e) = start.check(commitment, 0).and_then(|()| end.check(commitment, len - 1)) {
                return Some(Fault::BadAnswer(e));
            }
            if start.hash != self.rules.initial {
                return Some(Fault::WrongStart);
            }
            finals[slot(p)] = end.hash;
            commitments[slot(p)] = *commitment;
            None
        });
        if self.decide(faults) {
            return;
        }
        if finals[0] == finals[1] {
            return self.end(Outcome::Agreed);
        }
        self.start_game(commitments, (0, self.rules.initial), (len - 1, finals), None);
    }

    fn traces(&mut self, step: u64, agreed: Hash, claimed: [Hash; 2], answers: [Answer; 2]) {
        let len = self.rules.structure.step(step).positions();
        let mut ends = [Hash::default(); 2];
        let mut commitments = [Commitment { root: Hash::default(), len }; 2];
        let faults = PARTIES.map(|p| {
            let k = slot(p);
            let Answer::Trace { commitment, start, before_end, end, state } = &answers[k] else { return None };
            if commitment.len != len {
                return Some(Fault::BadAnswer(Error::Length { got: commitment.len, expected: len }));
            }
            let opened = start
                .check(commitment, 0)
                .and_then(|()| before_end.check(commitment, len - 2))
                .and_then(|()| end.check(commitment, len - 1));
            if let Err(e) = opened {
                return Some(Fault::BadAnswer(e));
            }
            if start.hash != agreed {
                return Some(Fault::WrongStart);
            }
            if link(&before_end.hash, state) != end.hash {
                return Some(Fault::BadAnswer(Error::BadProof { index: len - 1, len }));
            }
            if state.output != claimed[k] {
                return Some(Fault::WrongClaim(format!(
                    "its trace of step {step} ends in another state than it committed"
                )));
            }
            ends[k] = end.hash;
            commitments[k] = *commitment;
            None
        });
        if self.decide(faults) {
            return;
        }
        self.start_game(commitments, (0, agreed), (len - 1, ends), Some(step));
    }

    /// Starts a bisection between positions `lo` (agreed) and `hi` (disputed): over steps, or over the
    /// records of step `step`.
    fn start_game(&mut self, commitments: [Commitment; 2], lo: (u64, Hash), hi: (u64, [Hash; 2]), step: Option<u64>) {
        match Bisection::new(commitments[0], commitments[1], lo, hi) {
            Ok(game) => self.bisect(game, [], step.map(|s| (s, lo.1, commitments))),
            Err(e) => self.end(Outcome::BothLose(format!("no bisection: {e}"))),
        }
    }

    /// Plays the answers (if any) into `game`, then moves on: the next question, the next phase, or the
    /// end. `ops` is `Some((step, the agreed state it starts from, trace commitments))` in the op bisection.
    fn bisect<const N: usize>(
        &mut self,
        mut game: Bisection,
        answers: [Answer; N],
        ops: Option<(u64, Hash, [Commitment; 2])>,
    ) {
        if let [Answer::Open(t), Answer::Open(c)] = &answers[..] {
            if let Progress::Forfeit { party, reason } = game.answer(t, c) {
                let mut faults = [None, None];
                faults[slot(party)] = Some(Fault::BadAnswer(reason));
                self.decide(faults);
                return;
            }
            self.rounds[usize::from(ops.is_some())] += 1;
        }
        let Progress::Found { agreed } = game.progress() else {
            self.stage = match ops {
                None => Stage::Steps(game),
                Some((step, start, traces)) => Stage::Ops { step, start, game, traces },
            };
            return;
        };
        let (agreed_hash, claimed) = (game.agreed().1, game.disputed().1);
        match ops {
            None => {
                let step = agreed + 1;
                self.step = Some(step);
                self.stage = Stage::Traces { step, agreed: agreed_hash, claimed };
            }
            Some((step, start, traces)) => {
                self.record = Some(agreed);
                self.stage = Stage::Evidence { step, start, index: agreed, agreed: agreed_hash, claimed, traces };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defender::{Conduct, Defender};
    use crate::program::{Behaviour, Execution, Program, execute};

    const DEADLINE: Duration = Duration::from_secs(10);

    struct Setup {
        program: Program,
        structure: Arc<Structure>,
        honest: Arc<Execution>,
        cheat: Arc<Execution>,
    }

    fn setup() -> Setup {
        let program = Program::tiny(4);
        let structure = Arc::new(Structure::of(&program).expect("structure"));
        let honest = Arc::new(execute(&program, Behaviour::Honest).expect("run"));
        let cheat = Arc::new(execute(&program, Behaviour::PerturbWeight { step: 2, delta: 1e-3 }).expect("run"));
        Setup { program, structure, honest, cheat }
    }

    impl Setup {
        fn dispute(&self) -> Dispute {
            let rules = Rules {
                initial: self.honest.hashes[0],
                steps: self.program.steps,
                structure: self.structure.clone(),
                deadline: DEADLINE,
                level: repops::simd::current(),
            };
            Dispute::new(rules, Duration::ZERO)
        }

        fn defender(&self, e: &Arc<Execution>) -> Defender {
            Defender::new(e.clone(), self.structure.clone(), Conduct::Faithful)
        }
    }

    /// Answers the current question from both defenders, the challenger's answer passed through `tamper`.
    fn round(d: &mut Dispute, t: &mut Defender, c: &mut Defender, tamper: impl FnOnce(Answer) -> Answer) {
        let ask = d.ask().expect("a question");
        let (a, b) = (t.respond(&ask).expect("t").expect("t"), c.respond(&ask).expect("c").expect("c"));
        d.answer(Party::Trainer, a, Duration::from_secs(1));
        d.answer(Party::Challenger, tamper(b), Duration::from_secs(1));
    }

    fn challenger_lost(d: &Dispute) -> Fault {
        match d.outcome() {
            Some(Outcome::Won { winner: Party::Trainer, fault }) => fault.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_answers_lose_and_never_panic() {
        let s = setup();
        // An answer of the wrong kind.
        let mut d = s.dispute();
        let (mut t, mut c) = (s.defender(&s.honest), s.defender(&s.cheat));
        let opening = s.cheat.open(1).expect("open");
        round(&mut d, &mut t, &mut c, |_| Answer::Open(opening.clone()));
        assert_eq!(challenger_lost(&d), Fault::OutOfOrder { asked: "claim", got: "opening" });
        // A claim over another number of steps, or from another initial state.
        for forged in [
            Execution::from_hashes(&s.program, s.cheat.hashes[..3].to_vec()).expect("short"),
            Execution::from_hashes(&s.program, [vec![[0; 32]], s.cheat.hashes[1..].to_vec()].concat()).expect("start"),
        ] {
            let forged = Arc::new(forged);
            let mut d = s.dispute();
            round(&mut d, &mut s.defender(&s.honest), &mut s.defender(&forged), |a| a);
            assert!(matches!(challenger_lost(&d), Fault::BadAnswer(_) | Fault::WrongStart), "{:?}", d.outcome());
        }
        // A proof with a sibling too many, an index out of range, a hash the proof does not lead to.
        let tampers: [fn(Answer) -> Answer; 3] = [
            |a| match a {
                Answer::Claim { commitment, start, mut end } => {
                    end.proof.siblings.push([0; 32]);
                    Answer::Claim { commitment, start, end }
                }
                a => a,
            },
            |a| match a {
                Answer::Claim { commitment, start, mut end } => {
                    end.index = 99;
                    Answer::Claim { commitment, start, end }
                }
                a => a,
            },
            |a| match a {
                Answer::Claim { commitment, start, mut end } => {
                    end.hash[0] ^= 1;
                    Answer::Claim { commitment, start, end }
                }
                a => a,
            },
        ];
        for tamper in tampers {
            let mut d = s.dispute();
            round(&mut d, &mut s.defender(&s.honest), &mut s.defender(&s.cheat), tamper);
            assert!(matches!(challenger_lost(&d), Fault::BadAnswer(_)), "{:?}", d.outcome());
        }
        // Bytes that are no message at all.
        let mut d = s.dispute();
        d.reject(Party::Challenger, "not a message".into(), Duration::from_secs(1));
        assert!(matches!(challenger_lost(&d), Fault::Malformed(_)));
    }

    #[test]
    fn a_trace_that_does_not_start_at_the_agreed_state_or_end_at_the_claim_loses() {
        let s = setup();
        let play = |tamper: fn(Answer) -> Answer| {
            let mut d = s.dispute();
            let (mut t, mut c) = (s.defender(&s.honest), s.defender(&s.cheat));
            while !matches!(d.ask(), Some(Ask::Trace { .. })) {
                round(&mut d, &mut t, &mut c, |a| a);
            }
            assert_eq!(d.summary().step, Some(2));
            round(&mut d, &mut t, &mut c, tamper);
            challenger_lost(&d)
        };
        let fault = play(|a| match a {
            Answer::Trace { commitment, mut start, before_end, end, state } => {
                start.hash[0] ^= 1;
                Answer::Trace { commitment, start, before_end, end, state }
            }
            a => a,
        });
        assert!(matches!(fault, Fault::BadAnswer(_)), "{fault}");
        let fault = play(|a| match a {
            Answer::Trace { commitment, start, before_end, end, mut state } => {
                state.output[0] ^= 1;
                Answer::Trace { commitment, start, before_end, end, state }
            }
            a => a,
        });
        assert!(matches!(fault, Fault::BadAnswer(_)), "the state record no longer links: {fault}");
    }

    #[test]
    fn a_silent_party_loses_at_the_deadline() {
        let s = setup();
        let mut d = s.dispute();
        let ask = d.ask().expect("ask");
        let answer = s.defender(&s.honest).respond(&ask).expect("answer").expect("answer");
        d.answer(Party::Trainer, answer, Duration::from_secs(1));
        assert_eq!(d.poll(Duration::from_secs(5)), None, "still within the deadline");
        let outcome = d.poll(Duration::from_secs(11)).cloned();
        assert_eq!(outcome, Some(Outcome::Won { winner: Party::Trainer, fault: Fault::Timeout }));
        // A late answer changes nothing.
        let late = s.defender(&s.cheat).respond(&ask).expect("answer").expect("answer");
        d.answer(Party::Challenger, late, Duration::from_secs(12));
        assert_eq!(d.outcome().cloned(), outcome);
        let mut both = s.dispute();
        assert!(matches!(both.poll(Duration::from_secs(11)), Some(Outcome::BothLose(_))));
    }
}
