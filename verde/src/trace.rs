//! A training step's operators as the op-level bisection sees them (Verde §4.2–4.3), built from a repops
//! [`Tape`]: each operator becomes an [`OpRecord`] (what it is, the hashes of its inputs, the hash of its
//! output), and a last record — the state record — lists the tensors of the state after the step and
//! claims the state hash they make. The step is a chain of running hashes: position 0 is the agreed state
//! the step starts from, position `i + 1` the hash after record `i`, all committed to by one Merkle root.
//! Agreement at a position means agreement on everything before it, which is what the bisection needs.
//!
//! When the bisection has found the record both sides disagree on, [`judge`] settles it from each side's
//! [`Evidence`]. A record that does not link the agreed hash to the side's own next hash, or does not fit
//! the program's [`StepShape`], loses. Where the two records read different inputs, each side proves its
//! input is the output of the operator the structure says produced it ([`Provenance`], against its own
//! commitment); where they read the same inputs, the referee re-executes the one operator with repops from
//! the input tensors (checked against their hashes), and the side whose output hash differs loses.

use std::time::Instant;

use repops::simd::SimdLevel;
use repops::tape::{Tape, TapeEntry, TensorRecord, hash_view};
use repops::{HostTensor, OpKind};
use serde::{Deserialize, Serialize};

use crate::bisection::{Commitment, Opening, Party};
use crate::error::{Error, Result};
use crate::merkle::{Hash, MerkleTree};
use crate::origin::{Origin, Source, glue_hash};
use crate::program::StateManifest;
use crate::structure::StepShape;

/// The `op` of the state record.
pub const STATE_OP: &str = "state";

/// One record of a step: what it computes and the hashes it read and wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRecord {
    /// The operator's kind, a space, and its attributes (or [`STATE_OP`]).
    pub op: String,
    /// Its inputs' hashes, in order.
    pub inputs: Vec<Hash>,
    /// Its output's hash.
    pub output: Hash,
}

/// The canonical `op` string of an operator.
pub fn op_string(op: &OpKind) -> String {
    format!("{} {op:?}", op.name())
}

impl OpRecord {
    /// The record of a tape entry.
    pub fn from_entry(entry: &TapeEntry) -> Self {
        Self {
            op: op_string(&entry.op),
            inputs: entry.inputs.iter().map(|i| i.hash).collect(),
            output: entry.output.hash,
        }
    }

    /// The state record: the tensors of `manifest`, claiming the state hash `claimed` (an honest
    /// trainer claims `manifest.hash()`).
    pub fn state(manifest: &StateManifest, claimed: Hash) -> Self {
        Self { op: STATE_OP.to_owned(), inputs: manifest.entries.iter().map(|e| e.1).collect(), output: claimed }
    }

    /// The operator's kind: the `op` string up to its first space.
    pub fn kind(&self) -> &str {
        self.op.split(' ').next().unwrap_or_default()
    }

    /// The record's digest (length-prefixed fields under a domain tag).
    pub fn digest(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"swarmlab.verde.op");
        h.update(&(self.op.len() as u64).to_le_bytes());
        h.update(self.op.as_bytes());
        h.update(&(self.inputs.len() as u64).to_le_bytes());
        for i in &self.inputs {
            h.update(i);
        }
        h.update(&self.output);
        *h.finalize().as_bytes()
    }
}

/// The running hash after `record`, from the running hash `prev` before it.
pub fn link(prev: &Hash, record: &OpRecord) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(b"swarmlab.verde.chain");
    h.update(prev);
    h.update(&record.digest());
    *h.finalize().as_bytes()
}

/// One party's trace of a step: its records, running hashes and their Merkle tree.
#[derive(Debug, Clone)]
pub struct StepTrace {
    records: Vec<OpRecord>,
    chain: Vec<Hash>,
    tree: MerkleTree,
}

impl StepTrace {
    /// The trace of `records` for a step starting from the state hashed `start`.
    pub fn new(start: Hash, records: Vec<OpRecord>) -> Result<Self> {
        let mut chain = Vec::with_capacity(records.len() + 1);
        chain.push(start);
        let mut prev = start;
        for r in &records {
            prev = link(&prev, r);
            chain.push(prev);
        }
        let tree = MerkleTree::new(&chain)?;
        Ok(Self { records, chain, tree })
    }

    /// The trace of a recorded tape (its operators only, no state record).
    pub fn from_tape(start: Hash, tape: &Tape) -> Result<Self> {
        Self::new(start, tape.entries().iter().map(OpRecord::from_entry).collect())
    }

    /// The commitment: the root over the `records + 1` running hashes.
    pub fn commitment(&self) -> Commitment {
        Commitment { root: self.tree.root(), len: self.chain.len() as u64 }
    }

    /// Records in the step.
    pub fn ops(&self) -> usize {
        self.records.len()
    }

    /// The answer to a bisection query for position `index`.
    pub fn open(&self, index: u64) -> Result<Opening> {
        Opening::of(&self.chain, &self.tree, index)
    }

    /// Record `i`.
    pub fn record(&self, i: usize) -> Option<&OpRecord> {
        self.records.get(i)
    }

    /// The records, consuming the trace (to build a variant of it with [`StepTrace::new`]).
    pub fn into_records(self) -> Vec<OpRecord> {
        self.records
    }

    /// The proof that record `i` sits at its position: the openings around it and the record.
    pub fn provenance(&self, i: u64) -> Result<Provenance> {
        let record = self.record(i as usize).cloned().ok_or(Error::OutOfRange { index: i, len: self.ops() as u64 })?;
        Ok(Provenance { before: self.open(i)?, after: self.open(i + 1)?, record })
    }

    /// What a party sends the referee about its record `i` of step `at.step`: the record, the inputs of
    /// the operator from `at.tape` (which must have kept every input), the provenance of every record
    /// the inputs' origins name, the terms of inputs made outside the tape, and the state the step
    /// started from.
    pub fn evidence(&self, i: u64, at: &StepContext<'_>) -> Result<Evidence> {
        let (shape, tape) = (at.shape, at.tape);
        let record = self.record(i as usize).cloned().ok_or(Error::OutOfRange { index: i, len: self.ops() as u64 })?;
        let kept = |op: u32, input: u32| -> Result<HostTensor> {
            tape.entries()
                .get(op as usize)
                .and_then(|e| e.inputs.get(input as usize))
                .and_then(|t| t.data.clone())
                .ok_or_else(|| Error::Program(format!("input {input} of operator {op} was not kept")))
        };
        let (op, inputs, origins): (Option<OpKind>, Vec<HostTensor>, Vec<Origin>) = if i == shape.state_index() {
            (None, Vec::new(), shape.state.iter().map(|s| Origin::Is(Source::Op(s.1))).collect())
        } else {
            let entry = tape.entries().get(i as usize).ok_or(Error::OutOfRange { index: i, len: tape.len() as u64 })?;
            let inputs = (0..entry.inputs.len() as u32).map(|k| kept(i as u32, k)).collect::<Result<_>>()?;
            let origins = shape.ops.get(i as usize).map(|o| o.inputs.clone()).unwrap_or_default();
            (Some(entry.op), inputs, origins)
        };
        let mut proven: Vec<u32> = Vec::new();
        let mut glue = Vec::new();
        for (k, origin) in origins.iter().enumerate() {
            match origin {
                Origin::Is(source) => proven.extend(source.record()),
                Origin::Glue(g) => {
                    let mut tensors = Vec::with_capacity(g.terms.len());
                    for term in &g.terms {
                        proven.extend(term.source.record());
                        tensors.push(match &term.source {
                            Source::Op(p) => tape
                                .entries()
                                .get(*p as usize)
                                .ok_or(Error::OutOfRange { index: u64::from(*p), len: tape.len() as u64 })?
                                .replay(at.level)
                                .map_err(|e| Error::Program(format!("operator {p}: {e}")))?,
                            Source::Input { op, input } => kept(*op, *input)?,
                            Source::Batch(part) => at
                                .batch
                                .map(|b| b[part.index()].clone())
                                .ok_or_else(|| Error::Program("the step's batch is needed".into()))?,
                            other => return Err(Error::Program(format!("a glue term from {other}"))),
                        });
                    }
                    glue.push((k as u32, tensors));
                }
                Origin::Unknown => {}
            }
        }
        proven.sort_unstable();
        proven.dedup();
        let provenance = proven.into_iter().map(|p| Ok((p, self.provenance(u64::from(p))?))).collect::<Result<_>>()?;
        Ok(Evidence { record, op, inputs, provenance, glue, before: at.before.clone() })
    }
}

/// What a party builds its evidence from: the disputed step's graph and re-run.
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    /// The step's graph.
    pub shape: &'a StepShape,
    /// The step's tape, keeping every input.
    pub tape: &'a Tape,
    /// The state the step started from.
    pub before: &'a StateManifest,
    /// The step's batch (ids, targets), if any input is made from it.
    pub batch: Option<&'a [HostTensor; 2]>,
    /// The SIMD level to re-run operators at (for glue terms that are operators' outputs).
    pub level: SimdLevel,
}

/// A record proven to sit at its position in a party's trace: `link(before.hash, record) == after.hash`,
/// both openings checked against the party's commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    /// The opening of the position before the record.
    pub before: Opening,
    /// The opening of the position after it.
    pub after: Opening,
    /// The record.
    pub record: OpRecord,
}

impl Provenance {
    /// The output hash of record `position` of the trace committed to by `commitment`, if this proves it.
    pub fn proven_output(&self, commitment: &Commitment, position: u64) -> Result<Hash> {
        self.before.check(commitment, position)?;
        self.after.check(commitment, position + 1)?;
        if link(&self.before.hash, &self.record) != self.after.hash {
            return Err(Error::BadProof { index: position + 1, len: commitment.len });
        }
        Ok(self.record.output)
    }
}

/// What a party sends about the disputed record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// Its record.
    pub record: OpRecord,
    /// The operator to re-execute (none for the state record).
    pub op: Option<OpKind>,
    /// The operator's input tensors.
    pub inputs: Vec<HostTensor>,
    /// Every record the origins of the inputs name: `(its position, the record proven)`.
    pub provenance: Vec<(u32, Provenance)>,
    /// For inputs made outside the tape: `(input index, the tensors of its glue's terms, in order)`.
    pub glue: Vec<(u32, Vec<HostTensor>)>,
    /// The state the step started from (the referee checks it against the agreed state hash).
    pub before: StateManifest,
}

/// How one disputed record was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This party's claim holds up and the other's does not.
    Wins(Party),
    /// Neither claim holds up, or the referee cannot tell (named).
    BothLose(String),
}

/// The referee's judgement and the work it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// The verdict.
    pub verdict: Verdict,
    /// Why each side's claim failed, if it did (trainer, challenger).
    pub failures: [Option<String>; 2],
    /// The operator re-executed, if one was.
    pub replayed: Option<String>,
    /// Elements the referee read and wrote re-executing it.
    pub replay_elements: u64,
    /// Seconds the re-execution took.
    pub replay_seconds: f64,
}

/// What the referee knows when it judges record `index` of step `step`: the step's graph, what the
/// public program says of the step (the disputed operator's attributes, the batch, the agreed state it
/// starts from), the running hash both sides agree on before the record, each side's (trainer,
/// challenger) hash after it, and each side's commitment.
#[derive(Debug, Clone, Copy)]
pub struct Disputed<'a> {
    /// The step's graph.
    pub shape: &'a StepShape,
    /// The step (1-based).
    pub step: u64,
    /// The disputed operator's record string with the attributes the program gives it in this step
    /// (`None`: the state record, or a graph with no program behind it).
    pub expected_op: Option<&'a str>,
    /// The hashes of the step's batch (ids, targets), if the referee knows the program's data.
    pub batch: Option<&'a [Hash; 2]>,
    /// The hash of the agreed state the step starts from.
    pub start: &'a Hash,
    /// The disputed record.
    pub index: u64,
    /// The agreed running hash before it.
    pub agreed: &'a Hash,
    /// Each side's running hash after it.
    pub claimed: [&'a Hash; 2],
    /// Each side's commitment to the step.
    pub commitments: [&'a Commitment; 2],
}

/// Whether a record fits the program at its position: the right kind and number of inputs, and for the
/// state record a state hash that is what its tensors make.
fn conforms(d: &Disputed<'_>, record: &OpRecord) -> std::result::Result<(), String> {
    if d.index == d.shape.state_index() {
        if record.op != STATE_OP || record.inputs.len() != d.shape.state.len() {
            return Err(format!("record {} is not the state record the program ends its step with", d.index));
        }
        let entries = d.shape.state.iter().map(|s| s.0.clone()).zip(record.inputs.iter().copied()).collect();
        if (StateManifest { step: d.step, entries }).hash() != record.output {
            return Err("its state hash is not the hash of the tensors it lists".into());
        }
        return Ok(());
    }
    let Some(shape) = d.shape.ops.get(d.index as usize) else {
        return Err(format!("the program's step has no operator {}", d.index));
    };
    if record.kind() != shape.kind() || record.inputs.len() != shape.inputs.len() {
        return Err(format!(
            "operator {} is a {} of {} inputs in the program",
            d.index,
            shape.kind(),
            shape.inputs.len()
        ));
    }
    if let Some(op) = d.expected_op
        && record.op != op
    {
        return Err(format!(
            "operator {} ran with attributes the program does not give it in step {}: `{}`, where the program says `{op}`",
            d.index, d.step, record.op
        ));
    }
    Ok(())
}

/// Settles the disputed record from each side's evidence (trainer, challenger), re-executing at most one
/// operator at SIMD level `level`.
pub fn judge(d: &Disputed<'_>, evidence: [&Evidence; 2], level: SimdLevel) -> Judgement {
    let mut j = Judgement {
        verdict: Verdict::BothLose(String::new()),
        failures: [None, None],
        replayed: None,
        replay_elements: 0,
        replay_seconds: 0.0,
    };
    // 1. Each record must link the agreed hash to the side's own next hash and fit the program.
    for (k, ev) in evidence.iter().enumerate() {
        if link(d.agreed, &ev.record) != *d.claimed[k] {
            j.failures[k] = Some("its record does not link the agreed hash to the hash it committed next".into());
        } else if let Err(why) = conforms(d, &ev.record) {
            j.failures[k] = Some(why);
        }
    }
    let undecided =
        if j.failures.iter().all(Option::is_none) { settle_records(d, evidence, level, &mut j) } else { None };
    j.verdict = match (&j.failures[0], &j.failures[1]) {
        (None, Some(_)) => Verdict::Wins(Party::Trainer),
        (Some(_), None) => Verdict::Wins(Party::Challenger),
        (Some(_), Some(_)) => Verdict::BothLose("both claims fail".into()),
        (None, None) => Verdict::BothLose(undecided.unwrap_or_else(|| "neither claim fails".into())),
    };
    j
}

/// Both records are well formed: decides on what they say, noting each side whose claim fails. Returns
/// why the referee cannot tell, if it cannot.
fn settle_records(d: &Disputed<'_>, evidence: [&Evidence; 2], level: SimdLevel, j: &mut Judgement) -> Option<String> {
    let (t, c) = (&evidence[0].record, &evidence[1].record);
    // An input by name: a state tensor's key, or an operator input's index.
    let name = |i: usize| match d.shape.state.get(i) {
        Some((key, _)) if d.index == d.shape.state_index() => format!("state tensor {key}"),
        _ => format!("input {i}"),
    };
    let differing: Vec<usize> = (0..t.inputs.len()).filter(|&i| t.inputs.get(i) != c.inputs.get(i)).collect();
    if !differing.is_empty() {
        for &i in &differing {
            let origin = if d.index == d.shape.state_index() {
                d.shape.state.get(i).map(|s| Origin::Is(Source::Op(s.1)))
            } else {
                d.shape.ops.get(d.index as usize).and_then(|o| o.inputs.get(i).cloned())
            };
            let Some(origin) = origin else {
                return Some(format!("the program's record {} has no {}", d.index, name(i)));
            };
            let expected = expected_input(d, evidence, i, &origin);
            let expected = match expected {
                Ok(hash) => hash,
                Err(why) => return Some(format!("{} of record {}: {why}", name(i), d.index)),
            };
            for (k, ev) in evidence.iter().enumerate() {
                if ev.record.inputs.get(i) != Some(&expected) && j.failures[k].is_none() {
                    j.failures[k] = Some(format!("{} is not the tensor the program makes there ({origin})", name(i)));
                }
            }
        }
        return j.failures.iter().all(Option::is_none).then(|| "both sides prove different inputs".into());
    }
    if d.index == d.shape.state_index() {
        return Some("the state records list the same tensors".into());
    }
    if t.op != c.op {
        return Some(format!("the two sides ran operator {} with different attributes: {} vs {}", d.index, t.op, c.op));
    }
    // The same operator on the same inputs: re-execute it once, from either side's input tensors.
    let began = Instant::now();
    let Some((out, elements)) = evidence.iter().find_map(|ev| replay(d.index, t, ev, level)) else {
        return Some("neither side sent input tensors that hash to the records' inputs".into());
    };
    j.replay_seconds = began.elapsed().as_secs_f64();
    j.replay_elements = elements;
    j.replayed = Some(t.op.clone());
    for (k, ev) in evidence.iter().enumerate() {
        if ev.record.output != out {
            j.failures[k] = Some(format!("re-executing operator {} ({}) gives another output", d.index, t.kind()));
        }
    }
    None
}

/// The hash input `i` of the disputed record must have, as its `origin` and the program fix it: worked
/// out from what either side proves (records of the agreed prefix, the agreed start state, glue terms
/// checked against their sources), or why it cannot be.
fn expected_input(
    d: &Disputed<'_>,
    evidence: [&Evidence; 2],
    i: usize,
    origin: &Origin,
) -> std::result::Result<Hash, String> {
    let record = |p: u32| -> std::result::Result<OpRecord, String> {
        if u64::from(p) >= d.index {
            return Err(format!("record {p} is not before the disputed one"));
        }
        evidence
            .iter()
            .enumerate()
            .find_map(|(k, ev)| {
                let (_, prov) = ev.provenance.iter().find(|(q, _)| *q == p)?;
                prov.proven_output(d.commitments[k], u64::from(p)).ok().map(|_| prov.record.clone())
            })
            .ok_or_else(|| format!("neither side proves record {p}"))
    };
    let hash_of = |source: &Source| -> std::result::Result<Hash, String> {
        match source {
            Source::Op(p) => record(*p).map(|r| r.output),
            Source::Input { op, input } => record(*op)?
                .inputs
                .get(*input as usize)
                .copied()
                .ok_or_else(|| format!("record {op} has no input {input}")),
            Source::State(key) => evidence
                .iter()
                .map(|ev| &ev.before)
                .find(|m| m.step + 1 == d.step && m.hash() == *d.start)
                .ok_or_else(|| "neither side sent the agreed state the step starts from".to_owned())?
                .entries
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, h)| *h)
                .ok_or_else(|| format!("the agreed state has no {key}")),
            Source::Constant(h) => Ok(*h),
            Source::Batch(part) => d
                .batch
                .map(|b| b[part.index()])
                .ok_or_else(|| "the referee does not know the program's data".to_owned()),
        }
    };
    match origin {
        Origin::Is(source) => hash_of(source),
        Origin::Glue(glue) => {
            let shape = d
                .shape
                .ops
                .get(d.index as usize)
                .and_then(|o| o.shapes.get(i))
                .ok_or_else(|| "the program gives it no shape".to_owned())?;
            let mut why = String::from("neither side sent the tensors it is made from");
            for ev in evidence {
                let Some((_, tensors)) = ev.glue.iter().find(|(k, _)| *k as usize == i) else { continue };
                match glue_hash(glue, shape, tensors, &hash_of) {
                    Ok(hash) => return Ok(hash),
                    Err(e) => why = e,
                }
            }
            Err(why)
        }
        Origin::Unknown => Err("no rule of the program says where it comes from".into()),
    }
}

/// Re-executes `record`'s operator from the input tensors of `ev`, if they are that operator's and hash
/// to the record's inputs: the output's hash and the elements read and written.
fn replay(index: u64, record: &OpRecord, ev: &Evidence, level: SimdLevel) -> Option<(Hash, u64)> {
    let op = ev.op?;
    if op_string(&op) != record.op || ev.inputs.len() != record.inputs.len() {
        return None;
    }
    let inputs = ev
        .inputs
        .iter()
        .zip(&record.inputs)
        .map(|(t, &hash)| TensorRecord { shape: t.shape.clone(), hash, data: Some(t.clone()) })
        .collect();
    let output = TensorRecord { shape: Vec::new(), hash: record.output, data: None };
    let entry = TapeEntry { index: index as usize, op, inputs, output };
    let out = entry.replay(level).ok()?;
    let elements =
        ev.inputs.iter().chain(std::iter::once(&out)).map(|t| t.shape.iter().product::<usize>() as u64).sum();
    Some((hash_view(&out.view()), elements))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisection::{Bisection, Progress};
    use candle_core::{Device, Tensor};
    use repops::tape::{Keep, RecordOptions};

    /// A small step on repops: two matmuls, a SiLU and a softmax, recorded with its inputs.
    fn step() -> Tape {
        let dev = Device::Cpu;
        let x = Tensor::from_vec((0..32).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), (4, 8), &dev);
        let w = Tensor::from_vec((0..64).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<_>>(), (8, 8), &dev);
        let (out, tape) =
            repops::tape::record_with(RecordOptions { keep: Keep::All, fault: None }, || -> repops::Result<Tensor> {
                let (x, w) = (x.expect("x"), w.expect("w"));
                let h = repops::tensor::silu(&repops::tensor::matmul(&x, &w)?)?;
                repops::tensor::softmax_last_dim(&repops::tensor::matmul(&h, &w)?)
            });
        out.expect("step");
        tape
    }

    /// The step's trace (ending in an empty state record) and its graph.
    fn traced(start: Hash, records: Vec<OpRecord>) -> StepTrace {
        let manifest = StateManifest { step: 1, entries: Vec::new() };
        let mut records = records;
        records.push(OpRecord::state(&manifest, manifest.hash()));
        StepTrace::new(start, records).expect("trace")
    }

    /// Plays the op-level bisection between two traces and judges with each side's evidence.
    fn dispute(honest: &StepTrace, other: &StepTrace, tape: &Tape, shape: &StepShape) -> (u64, Judgement) {
        let (ht, ot) = (honest.commitment(), other.commitment());
        let last = ht.len - 1;
        let ends = (last, [honest.open(last).expect("open").hash, other.open(last).expect("open").hash]);
        let mut game = Bisection::new(ht, ot, (0, honest.open(0).expect("open").hash), ends).expect("game");
        let mut progress = game.progress();
        while let Progress::Query(mid) = progress {
            progress = game.answer(&honest.open(mid).expect("open"), &other.open(mid).expect("open"));
        }
        let Progress::Found { agreed } = progress else { panic!("{progress:?}") };
        let (agreed_hash, claimed) = (game.agreed().1, game.disputed().1);
        let before = StateManifest { step: 0, entries: Vec::new() };
        let at = StepContext { shape, tape, before: &before, batch: None, level: repops::simd::current() };
        let he = honest.evidence(agreed, &at).expect("evidence");
        // The other side sends its own record, with the inputs the tape holds.
        let oe = Evidence { record: other.record(agreed as usize).expect("record").clone(), ..he.clone() };
        let oe = Evidence {
            provenance: oe
                .provenance
                .iter()
                .map(|(i, p)| (*i, other.provenance(p.before.index).expect("prov")))
                .collect(),
            ..oe
        };
        let start = before.hash();
        let d = Disputed {
            shape,
            step: 1,
            expected_op: None,
            batch: None,
            start: &start,
            index: agreed,
            agreed: &agreed_hash,
            claimed: [&claimed[0], &claimed[1]],
            commitments: [&ht, &ot],
        };
        (agreed, judge(&d, [&he, &oe], repops::simd::current()))
    }

    fn shape(tape: &Tape) -> StepShape {
        StepShape::from_tape(tape, &StateManifest { step: 1, entries: Vec::new() }).expect("shape")
    }

    #[test]
    fn a_corrupted_output_is_found_at_its_op_and_loses() {
        let tape = step();
        let shape = shape(&tape);
        assert!(tape.len() >= 4, "{} ops", tape.len());
        let start = [7u8; 32];
        let records: Vec<OpRecord> = tape.entries().iter().map(OpRecord::from_entry).collect();
        let honest = traced(start, records.clone());
        for corrupt in 0..tape.len() {
            // The cheater reports a different output for one op; everything after reads it.
            let mut records = records.clone();
            let old = records[corrupt].output;
            let new = *blake3::hash(&old).as_bytes();
            for r in &mut records[corrupt..] {
                for h in r.inputs.iter_mut().chain(std::iter::once(&mut r.output)) {
                    if *h == old {
                        *h = new;
                    }
                }
            }
            let (op, judgement) = dispute(&honest, &traced(start, records), &tape, &shape);
            assert_eq!(op, corrupt as u64, "found at the corrupted op");
            assert_eq!(judgement.verdict, Verdict::Wins(Party::Trainer), "{judgement:?}");
            assert!(judgement.replayed.is_some() && judgement.replay_elements > 0);
        }
    }

    #[test]
    fn an_input_that_is_not_its_producers_output_loses() {
        let tape = step();
        let shape = shape(&tape);
        let records: Vec<OpRecord> = tape.entries().iter().map(OpRecord::from_entry).collect();
        // The last op reads an earlier op's output: the cheater claims it read something else.
        let last = records.len() - 1;
        let input = (0..shape.ops[last].inputs.len())
            .find(|&i| shape.ops[last].source_op(i).is_some())
            .expect("a traced input");
        let mut forged = records.clone();
        forged[last].inputs[input] = [3; 32];
        let (op, judgement) = dispute(&traced([1; 32], records), &traced([1; 32], forged), &tape, &shape);
        assert_eq!(op, last as u64);
        assert_eq!(judgement.verdict, Verdict::Wins(Party::Trainer), "{judgement:?}");
        assert!(judgement.replayed.is_none(), "settled by provenance, without re-executing");
    }

    #[test]
    fn a_record_that_does_not_link_or_fit_loses() {
        let tape = step();
        let shape = shape(&tape);
        let honest = traced([1; 32], tape.entries().iter().map(OpRecord::from_entry).collect());
        let before = StateManifest { step: 0, entries: Vec::new() };
        let at =
            StepContext { shape: &shape, tape: &tape, before: &before, batch: None, level: repops::simd::current() };
        let ev = honest.evidence(0, &at).expect("evidence");
        let start = before.hash();
        let (agreed, good) = (honest.open(0).expect("open").hash, honest.open(1).expect("open").hash);
        let c = honest.commitment();
        let d = Disputed {
            shape: &shape,
            step: 1,
            expected_op: None,
            batch: None,
            start: &start,
            index: 0,
            agreed: &agreed,
            claimed: [&good, &[9u8; 32]],
            commitments: [&c, &c],
        };
        let j = judge(&d, [&ev, &ev], repops::simd::current());
        assert_eq!(j.verdict, Verdict::Wins(Party::Trainer));
        // A record of another kind than the program's operator at that position.
        let mut other = ev.record.clone();
        other.op = "softmax Softmax".into();
        let claimed = link(&agreed, &other);
        let d = Disputed { claimed: [&good, &claimed], ..d };
        let j = judge(&d, [&ev, &Evidence { record: other, ..ev.clone() }], repops::simd::current());
        assert_eq!(j.verdict, Verdict::Wins(Party::Trainer), "{j:?}");
    }
}
