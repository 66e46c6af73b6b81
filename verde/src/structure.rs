//! The step's operator graph, as far as the referee needs it (Verde §4.2: the program, and so its graph,
//! is public). Every step of a program runs the same operators in the same order — the models have no
//! data-dependent control flow, and gradient clipping is off — so the graph is derived once, from a dry
//! run of the program's first two steps, and holds for every step: which operator kind sits at each tape
//! position, which earlier operator produced each of its inputs (where one did: the data batch,
//! constants and candle's layout operations are not on the tape), and which operator produced each tensor
//! of the state after the step.
//!
//! The referee uses it to reject a record of the wrong kind or arity, and to ask for the provenance of a
//! disputed input: a tensor the structure says operator `p` produced must be the output `p`'s record
//! claims, proven against the party's own commitment.

use std::collections::HashMap;

use repops::tape::{RecordOptions, Tape};

use crate::error::{Error, Result};
use crate::program::{Program, StateManifest, Trainer};

/// One operator of the step: its kind and, per input, the tape position of the operator that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpShape {
    /// The operator's kind (`repops::OpKind::name`).
    pub kind: String,
    /// Per input: the producing operator's position, if an operator of the step produced it.
    pub sources: Vec<Option<u32>>,
}

/// The graph of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepShape {
    /// The operators, in tape order.
    pub ops: Vec<OpShape>,
    /// Per tensor of the state after the step, in state order: its key and the producing operator.
    pub state: Vec<(String, u32)>,
}

impl StepShape {
    /// The graph of a recorded step whose state afterwards is `after`.
    pub fn from_tape(tape: &Tape, after: &StateManifest) -> Result<Self> {
        let mut produced = HashMap::new();
        let mut ops = Vec::with_capacity(tape.len());
        for (i, entry) in tape.entries().iter().enumerate() {
            let sources = entry.inputs.iter().map(|input| produced.get(&input.hash).copied()).collect();
            ops.push(OpShape { kind: entry.op.name().to_owned(), sources });
            produced.insert(entry.output.hash, i as u32);
        }
        let state = after
            .entries
            .iter()
            .map(|(key, hash)| {
                let op = produced.get(hash).copied().ok_or_else(|| {
                    Error::Program(format!(
                        "state tensor {key} is not the output of any operator of the step, so a referee could not check it"
                    ))
                })?;
                Ok((key.clone(), op))
            })
            .collect::<Result<_>>()?;
        Ok(Self { ops, state })
    }

    /// Positions in a step's trace: the start, one after each operator, one after the state record.
    pub fn positions(&self) -> u64 {
        self.ops.len() as u64 + 2
    }

    /// The state record's index among the step's records (after every operator).
    pub fn state_index(&self) -> u64 {
        self.ops.len() as u64
    }
}

/// The program's step graphs: the first step's (no optimizer moments yet) and every later step's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    first: StepShape,
    later: StepShape,
}

impl Structure {
    /// Derives the graphs by a dry run of the program's first two steps.
    pub fn of(program: &Program) -> Result<Self> {
        let mut trainer = Trainer::new(program)?;
        let mut shape = |step| -> Result<StepShape> {
            let tape = trainer.step_recorded(step, RecordOptions::default())?;
            StepShape::from_tape(&tape, &trainer.manifest(step)?)
        };
        let first = shape(1)?;
        let later = shape(2)?;
        Ok(Self { first, later })
    }

    /// The graph of step `step` (1-based).
    pub fn step(&self, step: u64) -> &StepShape {
        if step <= 1 { &self.first } else { &self.later }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The graph derived from steps 1 and 2 is the graph of every later step, and every state tensor
    /// comes from an operator of its step.
    #[test]
    fn the_structure_holds_for_later_steps() -> Result<()> {
        let program = Program::tiny(6);
        let structure = Structure::of(&program)?;
        let mut trainer = Trainer::new(&program)?;
        for step in 1..=5 {
            let tape = trainer.step_recorded(step, RecordOptions::default())?;
            let shape = StepShape::from_tape(&tape, &trainer.manifest(step)?)?;
            assert_eq!(&shape, structure.step(step), "step {step}");
        }
        let later = structure.step(3);
        assert!(later.ops.len() > 100, "{} ops", later.ops.len());
        assert!(later.state.iter().any(|(k, _)| k.starts_with("m:")), "moments after step 2");
        assert!(structure.step(1).state.len() == later.state.len(), "weights and moments after every step");
        assert!(later.ops.iter().flat_map(|o| &o.sources).any(Option::is_some));
        Ok(())
    }
}
