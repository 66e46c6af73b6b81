//! A party's side of a dispute, as a sans-IO responder: given the referee's [`Ask`], the [`Answer`] its
//! run supports — or, for a dishonest [`Conduct`], a bad one or none at all. The trainer re-runs the
//! disputed step from its last checkpoint before it ([`Execution::trace_step`]; from the start if it
//! keeps none), so it keeps no more than its state hashes and checkpoints between disputes.

use std::sync::Arc;

use repops::tape::Keep;

use crate::bisection::Opening;
use crate::error::{Error, Result};
use crate::program::Execution;
use crate::referee::{Answer, Ask};
use crate::structure::Structure;
use crate::trace::{StepContext, StepTrace};

/// How a party behaves in the dispute itself (how it trained is its [`crate::Behaviour`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduct {
    /// Answers every question from its run.
    Faithful,
    /// From its `from`-th opening on (1-based), opens a hash its commitment does not hold.
    Inconsistent {
        /// The first bad opening.
        from: u32,
    },
    /// From its `from`-th question on (1-based), stops answering.
    Silent {
        /// The first unanswered question.
        from: u32,
    },
}

/// One party answering the referee.
#[derive(Debug)]
pub struct Defender {
    execution: Arc<Execution>,
    structure: Arc<Structure>,
    conduct: Conduct,
    asked: u32,
    opened: u32,
    /// The disputed step and its trace, once asked for.
    trace: Option<(u64, StepTrace)>,
}

impl Defender {
    /// A party answering from `execution` of the program whose graph is `structure`.
    pub fn new(execution: Arc<Execution>, structure: Arc<Structure>, conduct: Conduct) -> Self {
        Self { execution, structure, conduct, asked: 0, opened: 0, trace: None }
    }

    /// The answer to `ask`, or `None` when the party stays silent.
    pub fn respond(&mut self, ask: &Ask) -> Result<Option<Answer>> {
        self.asked += 1;
        if matches!(self.conduct, Conduct::Silent { from } if self.asked >= from) {
            return Ok(None);
        }
        let e = &self.execution;
        let answer = match *ask {
            Ask::Claim => {
                let last = e.hashes.len() as u64 - 1;
                Answer::Claim { commitment: e.commitment(), start: e.open(0)?, end: e.open(last)? }
            }
            Ask::Open { index } => {
                self.opened += 1;
                let mut opening = match &self.trace {
                    Some((_, trace)) => trace.open(index)?,
                    None => e.open(index)?,
                };
                if matches!(self.conduct, Conduct::Inconsistent { from } if self.opened >= from) {
                    opening = Opening { hash: *blake3::hash(&opening.hash).as_bytes(), ..opening };
                }
                Answer::Open(opening)
            }
            Ask::Trace { step } => {
                let trace = e.trace_step(step, Keep::Nothing)?.trace;
                let len = trace.commitment().len;
                let state = trace.record(len as usize - 2).cloned().ok_or(Error::Empty)?;
                let answer = Answer::Trace {
                    commitment: trace.commitment(),
                    start: trace.open(0)?,
                    before_end: trace.open(len - 2)?,
                    end: trace.open(len - 1)?,
                    state,
                };
                self.trace = Some((step, trace));
                answer
            }
            Ask::Evidence { index } => {
                let Some((step, trace)) = &self.trace else {
                    return Err(Error::Program("evidence asked before the disputed step's trace".into()));
                };
                let shape = self.structure.step(*step);
                // Re-run the step, keeping every input: the operator's own, and those its inputs'
                // glue is made from.
                let run = e.trace_step(*step, Keep::All)?;
                let batch = self.structure.batch(*step)?;
                let at = StepContext {
                    shape,
                    tape: &run.tape,
                    before: &run.before,
                    batch: Some(&batch),
                    level: repops::simd::current(),
                };
                Answer::Evidence(trace.evidence(index, &at)?)
            }
        };
        Ok(Some(answer))
    }
}
