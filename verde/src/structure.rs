//! The step's operator graph, as far as the referee needs it (Verde §4.2: the program, and so its graph,
//! is public). Every step of a program runs the same operators in the same order — the models have no
//! data-dependent control flow, and gradient clipping is off — so the graph is derived once, from a dry
//! run of the program's first two steps, and holds for every step: which operator sits at each tape
//! position with which attributes, where each of its inputs comes from ([`Origin`]: an earlier
//! operator, the agreed state, a constant, the data batch, or candle's layout operations and gradient
//! sums over those), and which operator produced each tensor of the state after the step.
//!
//! The referee uses it to reject a record of the wrong kind, arity or attributes (a forged learning rate),
//! and to work out what a disputed input must be: a forged batch, constant or layout loses like a forged
//! operator.

use std::collections::HashMap;

use models::OptimConfig;
use repops::op::{HostData, HostTensor, OpKind};
use repops::simd::SimdLevel;
use repops::tape::{Keep, RecordOptions, Tape, TapeEntry, hash_view};

use crate::error::{Error, Result};
use crate::merkle::Hash;
use crate::origin::{self, BatchPart, Glue, Origin, Source, Term, swap_middle};
use crate::program::{Program, StateManifest, Trainer};
use crate::trace::op_string;

/// One operator of the step: its kind and attributes, and where each of its inputs comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct OpShape {
    /// The operator with the attributes of the dry run; those that change from step to step (the
    /// optimizer's learning rate and step) are re-derived for each step ([`attributes_at`]).
    pub op: OpKind,
    /// Per input: where it comes from.
    pub inputs: Vec<Origin>,
    /// Per input: its shape (the program fixes every shape).
    pub shapes: Vec<Vec<usize>>,
}

impl OpShape {
    /// The shape of the tape's operator `entry`, whose inputs come from `inputs`.
    fn of(entry: &TapeEntry, inputs: Vec<Origin>) -> Self {
        Self { op: entry.op, inputs, shapes: entry.inputs.iter().map(|t| t.shape.clone()).collect() }
    }

    /// The operator's kind (`repops::OpKind::name`).
    pub fn kind(&self) -> &'static str {
        self.op.name()
    }

    /// The producing operator of input `i`, if an operator of the step produced it as it is.
    pub fn source_op(&self, i: usize) -> Option<u32> {
        match self.inputs.get(i) {
            Some(Origin::Is(Source::Op(p))) => Some(*p),
            _ => None,
        }
    }
}

/// The operator `op` of a dry run with the attributes the program gives it in step `step` (1-based):
/// AdamW's hyper-parameters follow the optimizer's schedule ([`OptimConfig::hyper_at`]); every other
/// operator's attributes are the same in every step.
pub fn attributes_at(op: &OpKind, optim: &OptimConfig, step: u64) -> OpKind {
    match op {
        OpKind::AdamParam { .. } => OpKind::AdamParam { h: optim.hyper_at(step.saturating_sub(1), 1.0), t: step },
        other => *other,
    }
}

/// The graph of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepShape {
    /// The operators, in tape order.
    pub ops: Vec<OpShape>,
    /// Per tensor of the state after the step, in state order: its key and the producing operator.
    pub state: Vec<(String, u32)>,
}

impl StepShape {
    /// The graph of a recorded step whose state afterwards is `after`, knowing only which inputs are
    /// earlier operators' outputs (every other input's origin is [`Origin::Unknown`]).
    pub fn from_tape(tape: &Tape, after: &StateManifest) -> Result<Self> {
        let mut produced = HashMap::new();
        let mut ops = Vec::with_capacity(tape.len());
        for (i, entry) in tape.entries().iter().enumerate() {
            let inputs = entry
                .inputs
                .iter()
                .map(|input| produced.get(&input.hash).map_or(Origin::Unknown, |&p| Origin::Is(Source::Op(p))))
                .collect();
            ops.push(OpShape::of(entry, inputs));
            produced.insert(entry.output.hash, i as u32);
        }
        Ok(Self { ops, state: state_producers(&produced, after)? })
    }

    /// Positions in a step's trace: the start, one after each operator, one after the state record.
    pub fn positions(&self) -> u64 {
        self.ops.len() as u64 + 2
    }

    /// The state record's index among the step's records (after every operator).
    pub fn state_index(&self) -> u64 {
        self.ops.len() as u64
    }

    /// The inputs no rule accounts for, as `(operator, input)`.
    pub fn unknown_inputs(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (i, op) in self.ops.iter().enumerate() {
            out.extend(op.inputs.iter().enumerate().filter(|(_, o)| **o == Origin::Unknown).map(|(k, _)| (i, k)));
        }
        out
    }
}

/// Per state tensor after the step: its key and the operator that produced it.
fn state_producers(produced: &HashMap<Hash, u32>, after: &StateManifest) -> Result<Vec<(String, u32)>> {
    after
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
        .collect()
}

/// What the dry run of one step saw.
struct DryStep<'a> {
    /// The step, recorded keeping every input.
    tape: &'a Tape,
    /// The same step of the program on other data (to tell constants from data).
    other: &'a Tape,
    /// The state it started from.
    before: &'a StateManifest,
    /// The state it ended in.
    after: &'a StateManifest,
    /// Its batch: ids and targets.
    batch: &'a [HostTensor; 2],
}

/// A tensor the search may build an input from.
struct Candidate {
    source: Source,
    tensor: HostTensor,
    /// Its elements' hash, whatever its shape.
    content: Hash,
    /// A gradient contribution: an operator's output or a sum, which candle may add into another.
    summable: bool,
    /// Already read (as it is, or as a term): a gradient is summed once.
    used: bool,
}

impl Candidate {
    fn new(source: Source, tensor: HostTensor, summable: bool) -> Self {
        Self { content: origin::content(&tensor), source, tensor, summable, used: false }
    }
}

/// Sampled positions per search: enough that a false match is checked in full only by chance.
const SAMPLES: usize = 8;

/// The most terms of a gradient sum the search tries.
const MAX_TERMS: usize = 3;

impl DryStep<'_> {
    /// The graph, with every input's origin found (or [`Origin::Unknown`]).
    fn shape(&self, level: SimdLevel) -> Result<StepShape> {
        let state: HashMap<Hash, &str> = self.before.entries.iter().map(|(k, h)| (*h, k.as_str())).collect();
        let batch_hash = self.batch.each_ref().map(|t| hash_view(&t.view()));
        let mut produced: HashMap<Hash, u32> = HashMap::new();
        let mut candidates: Vec<Candidate> = BatchPart::ALL
            .into_iter()
            .map(|part| Candidate::new(Source::Batch(part), self.batch[part.index()].clone(), false))
            .collect();
        let mut ops = Vec::with_capacity(self.tape.len());
        for (i, entry) in self.tape.entries().iter().enumerate() {
            let mut inputs = Vec::with_capacity(entry.inputs.len());
            for (k, input) in entry.inputs.iter().enumerate() {
                let data = input.data.as_ref().ok_or_else(|| Error::Program("the dry run keeps every input".into()))?;
                let same_elsewhere = self.other.entries().get(i).and_then(|e| e.inputs.get(k)).map(|r| r.hash);
                let origin = if let Some(&p) = produced.get(&input.hash) {
                    Origin::Is(Source::Op(p))
                } else if let Some(key) = state.get(&input.hash) {
                    Origin::Is(Source::State((*key).to_owned()))
                } else if let Some(part) = BatchPart::ALL.into_iter().find(|p| batch_hash[p.index()] == input.hash) {
                    Origin::Is(Source::Batch(part))
                } else if same_elsewhere == Some(input.hash) {
                    Origin::Is(Source::Constant(input.hash))
                } else {
                    search(data, &mut candidates)
                };
                if let Origin::Is(Source::Op(p)) = origin
                    && let Some(c) = candidates.iter_mut().find(|c| c.source == Source::Op(p))
                {
                    c.used = true;
                }
                if !matches!(origin, Origin::Is(Source::Op(_) | Source::Batch(_))) {
                    let source = Source::Input { op: i as u32, input: k as u32 };
                    let summable = matches!(origin, Origin::Glue(_));
                    candidates.push(Candidate::new(source, data.clone(), summable));
                }
                inputs.push(origin);
            }
            let output = entry.replay(level).map_err(|e| Error::Program(format!("operator {i}: {e}")))?;
            produced.insert(entry.output.hash, i as u32);
            candidates.push(Candidate::new(Source::Op(i as u32), output, true));
            ops.push(OpShape::of(entry, inputs));
        }
        Ok(StepShape { ops, state: state_producers(&produced, self.after)? })
    }
}

/// Up to [`SAMPLES`] positions spread over `t`, each moved on to the next non-zero element where there
/// is one (gradients are often zero in whole blocks, and zeros tell candidates apart poorly).
fn sample_positions(t: &HostTensor) -> Vec<usize> {
    let numel: usize = t.shape.iter().product();
    let nonzero = |p: usize| match &t.data {
        HostData::F32(v) => v[p] != 0.0,
        HostData::U32(v) => v[p] != 0,
    };
    let mut out: Vec<usize> = Vec::with_capacity(SAMPLES);
    for k in 0..SAMPLES.min(numel) {
        let from = k * numel / SAMPLES.min(numel);
        let p = (from..numel).find(|&p| nonzero(p) && !out.contains(&p)).unwrap_or(from);
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// A way to read a candidate in the target's shape: as it is, or with the middle of a 4-dim view swapped.
fn views(target: &[usize], candidate: &[usize]) -> Vec<Option<[usize; 4]>> {
    let mut out = vec![None];
    if let [a, b, c, d] = *target {
        out.push(Some([a, c, b, d]));
    }
    if let [a, b, c, d] = *candidate
        && !out.contains(&Some([a, b, c, d]))
    {
        out.push(Some([a, b, c, d]));
    }
    out
}

/// Finds how `target` is made from the candidates: one of them re-laid, or a gradient sum of up to
/// [`MAX_TERMS`] of them. Every match is checked in full, bit for bit.
fn search(target: &HostTensor, candidates: &mut [Candidate]) -> Origin {
    let numel: usize = target.shape.iter().product();
    let same_kind = |c: &Candidate| {
        c.tensor.shape.iter().product::<usize>() == numel
            && matches!(
                (&c.tensor.data, &target.data),
                (HostData::F32(_), HostData::F32(_)) | (HostData::U32(_), HostData::U32(_))
            )
    };
    let want = origin::content(target);
    let glue = |terms: Vec<Term>, accumulate: bool| Glue { terms, accumulate };
    let positions = sample_positions(target);
    let bits = |t: &HostTensor, at: &dyn Fn(usize) -> usize| -> Vec<u32> {
        match &t.data {
            HostData::F32(v) => positions.iter().map(|&p| v[at(p)].to_bits()).collect(),
            HostData::U32(v) => positions.iter().map(|&p| v[at(p)]).collect(),
        }
    };
    let goal_bits = bits(target, &|p| p);
    // 1. One candidate, re-laid: the same elements in another shape, or the middle of a 4-dim view
    //    swapped (compared at a few positions first, then in full).
    for idx in (0..candidates.len()).rev() {
        let c = &candidates[idx];
        if !same_kind(c) {
            continue;
        }
        for swap in views(&target.shape, &c.tensor.shape) {
            let matches = match swap {
                None => c.content == want,
                Some(view) => {
                    view.iter().product::<usize>() == numel
                        && bits(&c.tensor, &|p| origin::swapped_index(view, p)) == goal_bits
                        && swap_middle(view, &c.tensor).is_some_and(|t| origin::content(&t) == want)
                }
            };
            if matches {
                let term = Term { source: c.source.clone(), swap };
                candidates[idx].used = true;
                return Origin::Glue(glue(vec![term], false));
            }
        }
    }
    // 2. A gradient sum from zero: compare at a few positions first, then in full.
    let Some(goal) = origin::sample(target, &positions) else { return Origin::Unknown };
    let mut terms: Vec<SumTerm> = Vec::new();
    for (idx, c) in candidates.iter().enumerate() {
        if !c.summable || c.used || !same_kind(c) {
            continue;
        }
        let Some(v) = c.tensor.as_f32() else { continue };
        for swap in views(&target.shape, &c.tensor.shape) {
            let at = |p: usize| swap.map_or(p, |view| origin::swapped_index(view, p));
            if swap.is_some_and(|[a, b, c, d]| a * b * c * d != numel) {
                continue;
            }
            terms.push((idx, swap, positions.iter().map(|&p| v[at(p)]).collect()));
        }
    }
    let mut order: Vec<usize> = Vec::with_capacity(MAX_TERMS);
    let found = sum_search(&terms, &goal, &mut order, &mut |order: &[usize]| {
        let g = glue(
            order.iter().map(|&t| Term { source: candidates[terms[t].0].source.clone(), swap: terms[t].1 }).collect(),
            true,
        );
        let tensors: Vec<&HostTensor> = order.iter().map(|&t| &candidates[terms[t].0].tensor).collect();
        g.apply(&target.shape, &tensors).is_ok_and(|t| origin::content(&t) == want).then_some(g)
    });
    match found {
        Some(g) => {
            for term in &g.terms {
                if let Some(c) = candidates.iter_mut().find(|c| c.source == term.source) {
                    c.used = true;
                }
            }
            Origin::Glue(g)
        }
        None => Origin::Unknown,
    }
}

/// A candidate term of a gradient sum: the candidate's index, how it is read, its sampled values.
type SumTerm = (usize, Option<[usize; 4]>, Vec<f32>);

/// Depth-first over ordered choices of distinct candidates (at most [`MAX_TERMS`]), whose running sum
/// from zero matches `goal` at the sampled positions; `check` confirms a match in full.
fn sum_search(
    terms: &[SumTerm],
    goal: &[f32],
    order: &mut Vec<usize>,
    check: &mut dyn FnMut(&[usize]) -> Option<Glue>,
) -> Option<Glue> {
    let sum = |order: &[usize]| -> Vec<f32> {
        let mut s = vec![0f32; goal.len()];
        for &t in order {
            s.iter_mut().zip(&terms[t].2).for_each(|(a, x)| *a += x);
        }
        s
    };
    for t in 0..terms.len() {
        if order.iter().any(|&o| terms[o].0 == terms[t].0) {
            continue;
        }
        order.push(t);
        let s = sum(order);
        if s.iter().zip(goal).all(|(a, b)| a.to_bits() == b.to_bits())
            && let Some(g) = check(order)
        {
            return Some(g);
        }
        if order.len() < MAX_TERMS
            && let Some(g) = sum_search(terms, goal, order, check)
        {
            return Some(g);
        }
        order.pop();
    }
    None
}

/// Where the step's data comes from: the program's corpus, batch shape and seed.
#[derive(Debug, Clone, PartialEq)]
struct Batches {
    tokens: std::sync::Arc<Vec<u32>>,
    batch: usize,
    seq: usize,
    seed: u64,
}

/// The program's step graphs — the first step's (no optimizer moments yet) and every later step's —
/// with what the referee needs to re-derive each step's attributes and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Structure {
    first: StepShape,
    later: StepShape,
    optim: OptimConfig,
    batches: Batches,
}

impl Structure {
    /// Derives the graphs by a dry run of the program's first two steps, beside a run of the same
    /// program on other data (what is the same in both, and is no operator's output, state or batch,
    /// is a constant of the program).
    pub fn of(program: &Program) -> Result<Self> {
        let level = repops::simd::current();
        let other_program = Program { data_seed: program.data_seed ^ 0x5eed_0fda_7a00, ..program.clone() };
        let mut trainer = Trainer::new(program)?;
        let mut other = Trainer::new(&other_program)?;
        let all = RecordOptions { keep: Keep::All, fault: None };
        let mut shape = |step| -> Result<StepShape> {
            let before = trainer.manifest(step - 1)?;
            let batch = trainer.batch_host(step)?;
            let tape = trainer.step_recorded(step, all)?;
            let other_tape = other.step_recorded(step, all)?;
            let after = trainer.manifest(step)?;
            let dry = DryStep { tape: &tape, other: &other_tape, before: &before, after: &after, batch: &batch };
            let shape = dry.shape(level)?;
            for (i, (op, entry)) in shape.ops.iter().zip(tape.entries()).enumerate() {
                if attributes_at(&op.op, &program.optim, step) != entry.op {
                    return Err(Error::Program(format!(
                        "operator {i} ({}) has attributes the program does not fix for step {step}",
                        op.kind()
                    )));
                }
            }
            Ok(shape)
        };
        let first = shape(1)?;
        let later = shape(2)?;
        let batches = Batches {
            tokens: std::sync::Arc::new(trainer.tokens().to_vec()),
            batch: program.batch,
            seq: program.seq,
            seed: program.data_seed,
        };
        Ok(Self { first, later, optim: program.optim.clone(), batches })
    }

    /// The graph of step `step` (1-based).
    pub fn step(&self, step: u64) -> &StepShape {
        if step <= 1 { &self.first } else { &self.later }
    }

    /// The canonical record string ([`op_string`]) of operator `index` in step `step`, with the
    /// attributes the program gives it there.
    pub fn op_at(&self, step: u64, index: usize) -> Option<String> {
        self.step(step).ops.get(index).map(|o| op_string(&attributes_at(&o.op, &self.optim, step)))
    }

    /// The step's data batch (ids, targets), as the program draws it from its seed and the step.
    pub fn batch(&self, step: u64) -> Result<[HostTensor; 2]> {
        let b = &self.batches;
        crate::program::batch_host(&b.tokens, b.batch, b.seq, b.seed, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The graph derived from steps 1 and 2 is the graph of every later step: every input of every
    /// operator is what its origin says — checked by working each one out from the step's tape, the
    /// state before it and the batch, as a referee would — and every attribute is what the program
    /// gives the step.
    #[test]
    fn the_structure_holds_for_later_steps() -> Result<()> {
        let program = Program::tiny(6);
        let structure = Structure::of(&program)?;
        let level = repops::simd::current();
        let mut trainer = Trainer::new(&program)?;
        for step in 1..=5 {
            let before = trainer.manifest(step - 1)?;
            let batch = structure.batch(step)?;
            assert_eq!(batch, trainer.batch_host(step)?, "the referee draws the trainer's batch");
            let tape = trainer.step_recorded(step, RecordOptions { keep: Keep::All, fault: None })?;
            let shape = structure.step(step);
            assert_eq!(shape.ops.len(), tape.len(), "step {step}");
            assert!(shape.unknown_inputs().is_empty(), "inputs of no known origin: {:?}", shape.unknown_inputs());
            for (i, (op, entry)) in shape.ops.iter().zip(tape.entries()).enumerate() {
                assert_eq!(structure.op_at(step, i), Some(op_string(&entry.op)), "step {step}, operator {i}");
                for (k, (origin, input)) in op.inputs.iter().zip(&entry.inputs).enumerate() {
                    let hash_of = |s: &Source| -> std::result::Result<Hash, String> {
                        Ok(match s {
                            Source::Op(p) => tape.entries()[*p as usize].output.hash,
                            Source::Input { op, input } => tape.entries()[*op as usize].inputs[*input as usize].hash,
                            Source::State(key) => before.entries.iter().find(|e| &e.0 == key).ok_or("no such key")?.1,
                            Source::Constant(h) => *h,
                            Source::Batch(part) => hash_view(&batch[part.index()].view()),
                        })
                    };
                    let tensor_of = |s: &Source| -> HostTensor {
                        match s {
                            Source::Op(p) => tape.entries()[*p as usize].replay(level).expect("replay"),
                            Source::Input { op, input } => {
                                tape.entries()[*op as usize].inputs[*input as usize].data.clone().expect("kept")
                            }
                            Source::Batch(part) => batch[part.index()].clone(),
                            other => panic!("a glue term from {other}"),
                        }
                    };
                    let expected = match origin {
                        Origin::Is(source) => hash_of(source),
                        Origin::Glue(g) => {
                            let tensors: Vec<HostTensor> = g.terms.iter().map(|t| tensor_of(&t.source)).collect();
                            origin::glue_hash(g, &op.shapes[k], &tensors, &hash_of)
                        }
                        Origin::Unknown => Err("unknown".into()),
                    };
                    assert_eq!(
                        expected,
                        Ok(input.hash),
                        "step {step}, operator {i} ({}), input {k}: {origin:?}",
                        op.kind()
                    );
                }
            }
            let after = trainer.manifest(step)?;
            assert_eq!(StepShape::from_tape(&tape, &after)?.state, shape.state, "step {step}");
        }
        let later = structure.step(3);
        assert!(later.ops.len() > 100, "{} ops", later.ops.len());
        assert!(later.state.iter().any(|(k, _)| k.starts_with("m:")), "moments after step 2");
        assert!(structure.step(1).state.len() == later.state.len(), "weights and moments after every step");
        let count = |f: &dyn Fn(&Origin) -> bool| later.ops.iter().flat_map(|o| &o.inputs).filter(|o| f(o)).count();
        assert!(count(&|o| matches!(o, Origin::Is(Source::Op(_)))) > 100);
        assert!(count(&|o| matches!(o, Origin::Is(Source::State(_)))) > 20, "weights and moments");
        assert!(count(&|o| matches!(o, Origin::Is(Source::Constant(_)))) > 0, "mask, RoPE tables");
        assert!(count(&|o| matches!(o, Origin::Is(Source::Batch(_)))) > 0, "ids");
        assert!(count(&|o| matches!(o, Origin::Glue(g) if g.accumulate && g.terms.len() > 1)) > 0, "gradient sums");
        assert!(count(&|o| matches!(o, Origin::Glue(g) if g.terms.iter().any(|t| t.swap.is_some()))) > 0, "heads");
        Ok(())
    }
}
