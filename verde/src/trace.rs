//! A training step's operators as the op-level bisection sees them (Verde §4.2–4.3), built from a repops
//! [`Tape`]: each operator becomes an [`OpRecord`] (what it is, the hashes of its inputs, the hash of its
//! output), and the step a chain of running hashes — position 0 the agreed state the step starts from,
//! position `i + 1` the hash after operator `i` — committed to by one Merkle root. Agreement at a
//! position means agreement on everything before it, which is what the bisection needs.
//!
//! When the bisection has found the operator both sides disagree on, [`adjudicate`] settles it: if both
//! describe the same operator on the same inputs, the referee re-executes it once with repops from the
//! input tensors (checked against their hashes) and the side whose output hash differs loses.

use repops::simd::SimdLevel;
use repops::tape::{Tape, TapeEntry, hash_view};

use crate::bisection::{Commitment, Opening, Party};
use crate::error::{Error, Result};
use crate::merkle::{Hash, MerkleTree};

/// One operator of a step: what it computes and the hashes it read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRecord {
    /// The operator and its attributes, canonically encoded.
    pub op: String,
    /// Its inputs' hashes, in order.
    pub inputs: Vec<Hash>,
    /// Its output's hash.
    pub output: Hash,
}

impl OpRecord {
    /// The record of a tape entry.
    pub fn from_entry(entry: &TapeEntry) -> Self {
        Self {
            op: format!("{:?}", entry.op),
            inputs: entry.inputs.iter().map(|i| i.hash).collect(),
            output: entry.output.hash,
        }
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
        for r in &records {
            let next = link(chain.last().unwrap_or(&start), r);
            chain.push(next);
        }
        let tree = MerkleTree::new(&chain)?;
        Ok(Self { records, chain, tree })
    }

    /// The trace of a recorded tape.
    pub fn from_tape(start: Hash, tape: &Tape) -> Result<Self> {
        Self::new(start, tape.entries().iter().map(OpRecord::from_entry).collect())
    }

    /// The commitment: the root over the `ops + 1` running hashes.
    pub fn commitment(&self) -> Commitment {
        Commitment { root: self.tree.root(), len: self.chain.len() as u64 }
    }

    /// Operators in the step.
    pub fn ops(&self) -> usize {
        self.records.len()
    }

    /// The answer to a bisection query for position `index`.
    pub fn open(&self, index: u64) -> Result<Opening> {
        let hash = *self.chain.get(index as usize).ok_or(Error::OutOfRange { index, len: self.chain.len() as u64 })?;
        Ok(Opening { index, hash, proof: self.tree.proof(index)? })
    }

    /// Operator `i`'s record.
    pub fn record(&self, i: usize) -> Option<&OpRecord> {
        self.records.get(i)
    }

    /// The records, consuming the trace (to build a variant of it with [`StepTrace::new`]).
    pub fn into_records(self) -> Vec<OpRecord> {
        self.records
    }
}

/// How one disputed operator was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// This party's claim matches the referee's re-execution (or the other side broke the rules).
    Wins(Party),
    /// Neither claim holds up.
    BothLose,
}

/// Settles the dispute over operator `agreed` (the bisection's result): `agreed_hash` is the running hash
/// both opened at that position, `disputed` the hash each opened at the next one, `records` each side's
/// record of the operator, and `entry` the operator with its input tensors (sent by either side). A side
/// whose record does not link the agreed hash to its own opened hash loses; with the same operator on the
/// same inputs, the referee replays it once and the side whose output differs loses.
pub fn adjudicate(
    agreed_hash: &Hash,
    disputed: (&Hash, &Hash),
    records: (&OpRecord, &OpRecord),
    entry: &TapeEntry,
    level: SimdLevel,
) -> Verdict {
    let trainer_ok = link(agreed_hash, records.0) == *disputed.0;
    let challenger_ok = link(agreed_hash, records.1) == *disputed.1;
    match (trainer_ok, challenger_ok) {
        (false, false) => return Verdict::BothLose,
        (false, true) => return Verdict::Wins(Party::Challenger),
        (true, false) => return Verdict::Wins(Party::Trainer),
        (true, true) => {}
    }
    let (t, c) = records;
    // The referee's own output for the operator, from inputs that hash to what the records claim.
    let replayed = |record: &OpRecord| -> Option<Hash> {
        let claimed = OpRecord::from_entry(entry);
        if claimed.op != record.op || claimed.inputs != record.inputs {
            return None;
        }
        entry.replay(level).ok().map(|out| hash_view(&out.view()))
    };
    if t.op == c.op && t.inputs == c.inputs {
        return match replayed(t) {
            Some(out) if out == t.output && out != c.output => Verdict::Wins(Party::Trainer),
            Some(out) if out == c.output && out != t.output => Verdict::Wins(Party::Challenger),
            _ => Verdict::BothLose,
        };
    }
    // Different operators or inputs after an agreed history: only the side whose record the referee can
    // replay to its claimed output stands.
    match (replayed(t).is_some_and(|o| o == t.output), replayed(c).is_some_and(|o| o == c.output)) {
        (true, false) => Verdict::Wins(Party::Trainer),
        (false, true) => Verdict::Wins(Party::Challenger),
        _ => Verdict::BothLose,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bisection::{Bisection, Progress};
    use candle_core::{Device, Tensor};

    /// A small step on repops: two matmuls, a SiLU and a softmax, recorded with its inputs.
    fn step() -> Tape {
        let dev = Device::Cpu;
        let x = Tensor::from_vec((0..32).map(|i| (i as f32 * 0.37).sin()).collect::<Vec<_>>(), (4, 8), &dev);
        let w = Tensor::from_vec((0..64).map(|i| (i as f32 * 0.11).cos()).collect::<Vec<_>>(), (8, 8), &dev);
        let (out, tape) = repops::tape::record(true, || -> repops::Result<Tensor> {
            let (x, w) = (x.expect("x"), w.expect("w"));
            let h = repops::tensor::silu(&repops::tensor::matmul(&x, &w)?)?;
            repops::tensor::softmax_last_dim(&repops::tensor::matmul(&h, &w)?)
        });
        out.expect("step");
        tape
    }

    /// Plays the op-level bisection between two traces and adjudicates with the honest tape's entry.
    fn dispute(honest: &StepTrace, other: &StepTrace, tape: &Tape) -> (usize, Verdict) {
        let mut game = Bisection::new(honest.commitment(), other.commitment(), 0, honest.ops() as u64).expect("game");
        let mut progress = game.progress();
        while let Progress::Query(mid) = progress {
            progress = game.answer(&honest.open(mid).expect("open"), &other.open(mid).expect("open"));
        }
        let Progress::Found { agreed } = progress else { panic!("{progress:?}") };
        let op = agreed as usize;
        let agreed_hash = honest.open(agreed).expect("open").hash;
        let (a, b) = (honest.open(agreed + 1).expect("open").hash, other.open(agreed + 1).expect("open").hash);
        let records = (honest.record(op).expect("record"), other.record(op).expect("record"));
        let verdict = adjudicate(&agreed_hash, (&a, &b), records, &tape.entries()[op], repops::simd::current());
        (op, verdict)
    }

    #[test]
    fn a_corrupted_output_is_found_at_its_op_and_loses() {
        let tape = step();
        assert!(tape.len() >= 4, "{} ops", tape.len());
        let start = [7u8; 32];
        let honest = StepTrace::from_tape(start, &tape).expect("trace");
        for corrupt in 0..tape.len() {
            // The cheater reports a different output for one op; everything after reads it.
            let mut records = honest.clone().into_records();
            let old = records[corrupt].output;
            let new = *blake3::hash(&old).as_bytes();
            for r in &mut records[corrupt..] {
                for h in r.inputs.iter_mut().chain(std::iter::once(&mut r.output)) {
                    if *h == old {
                        *h = new;
                    }
                }
            }
            let cheat = StepTrace::new(start, records).expect("trace");
            let (op, verdict) = dispute(&honest, &cheat, &tape);
            assert_eq!(op, corrupt, "found at the corrupted op");
            assert_eq!(verdict, Verdict::Wins(Party::Trainer));
        }
    }

    #[test]
    fn a_record_that_does_not_link_loses() {
        let tape = step();
        let honest = StepTrace::from_tape([1; 32], &tape).expect("trace");
        let r = honest.record(0).expect("record");
        let agreed = honest.open(0).expect("open").hash;
        let good = honest.open(1).expect("open").hash;
        let forged = [9u8; 32];
        let verdict = adjudicate(&agreed, (&good, &forged), (r, r), &tape.entries()[0], repops::simd::current());
        assert_eq!(verdict, Verdict::Wins(Party::Trainer));
    }
}
