//! The op tape: an optional record of every repops op a thread runs — op, attributes, shapes, and a
//! blake3 hash of every input and output — and, if asked, the inputs themselves, so that any single op
//! can be re-executed later and checked against its recorded output. Verde's referee builds on it.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::TensorId;

use crate::error::{Error, Result};
use crate::op::{HostData, HostSlice, HostTensor, HostView, OpKind, execute};
use crate::simd::SimdLevel;

/// A blake3 digest.
pub type Hash = [u8; 32];

/// The hash of a tensor: blake3 over a dtype tag, the shape (u64 little-endian per dimension) and the
/// elements' little-endian bytes.
pub fn hash_view(view: &HostView<'_>) -> Hash {
    let mut h = blake3::Hasher::new();
    let tag: &[u8] = match view.data {
        HostSlice::F32(_) => b"f32",
        HostSlice::U32(_) => b"u32",
    };
    h.update(tag);
    h.update(&(view.shape.len() as u64).to_le_bytes());
    for &d in view.shape {
        h.update(&(d as u64).to_le_bytes());
    }
    if cfg!(target_endian = "little") {
        let bytes: &[u8] = match view.data {
            HostSlice::F32(v) => bytemuck::cast_slice(v),
            HostSlice::U32(v) => bytemuck::cast_slice(v),
        };
        if bytes.len() >= 1 << 20 {
            // Large tensors are hashed by all threads (blake3's digest does not depend on how).
            h.update_rayon(bytes);
        } else {
            h.update(bytes);
        }
    } else {
        match view.data {
            HostSlice::F32(v) => v.iter().for_each(|x| {
                h.update(&x.to_le_bytes());
            }),
            HostSlice::U32(v) => v.iter().for_each(|x| {
                h.update(&x.to_le_bytes());
            }),
        }
    }
    *h.finalize().as_bytes()
}

/// What the tape keeps of one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRecord {
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its hash ([`hash_view`]).
    pub hash: Hash,
    /// Its elements, if the tape keeps inputs.
    pub data: Option<HostTensor>,
}

/// One recorded op invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct TapeEntry {
    /// Position on the tape (0-based, in execution order).
    pub index: usize,
    /// The op and its attributes.
    pub op: OpKind,
    /// Its inputs, in order.
    pub inputs: Vec<TensorRecord>,
    /// Its output.
    pub output: TensorRecord,
}

impl TapeEntry {
    /// Re-executes the op from the recorded inputs (which must have been kept, and must still match
    /// their hashes) and returns the output.
    pub fn replay(&self, level: SimdLevel) -> Result<HostTensor> {
        let mut views = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let data = input.data.as_ref().ok_or(Error::NoInputs { index: self.index })?;
            let view = data.view();
            if hash_view(&view) != input.hash {
                return Err(Error::ReplayMismatch { index: self.index, op: self.op.name() });
            }
            views.push(view);
        }
        execute(&self.op, &views, level)
    }

    /// Replays the op and checks that the output hashes to the recorded value.
    pub fn verify(&self, level: SimdLevel) -> Result<()> {
        let out = self.replay(level)?;
        if hash_view(&out.view()) == self.output.hash {
            Ok(())
        } else {
            Err(Error::ReplayMismatch { index: self.index, op: self.op.name() })
        }
    }
}

/// Which inputs a recording keeps copies of (to replay ops later).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Keep {
    /// Hashes only.
    #[default]
    Nothing,
    /// Every op's inputs.
    All,
    /// Only the inputs of the op at this tape position (what a referee needs to re-run one op).
    Op(usize),
}

impl Keep {
    fn keeps(self, index: usize) -> bool {
        match self {
            Self::Nothing => false,
            Self::All => true,
            Self::Op(i) => i == index,
        }
    }
}

/// A deliberate fault: the op at tape position `op` has `delta` added to the first element of its
/// (f32) output, which later ops then read. It simulates a faulty or dishonest machine, for testing
/// verifiers; honest runs never set one. (On CUDA only the record changes, not the device's buffer.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputFault {
    /// The tape position of the faulty op.
    pub op: usize,
    /// What is added to the first element of its output.
    pub delta: f32,
}

/// How to record: what to keep, and an optional injected fault.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecordOptions {
    /// Which inputs to keep.
    pub keep: Keep,
    /// A fault to inject.
    pub fault: Option<OutputFault>,
}

/// A recording of ops, in execution order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tape {
    entries: Vec<TapeEntry>,
    options: RecordOptions,
}

impl Tape {
    /// The recorded ops.
    pub fn entries(&self) -> &[TapeEntry] {
        &self.entries
    }

    /// Number of recorded ops.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The output hashes in order: a compact fingerprint of the whole computation.
    pub fn output_hashes(&self) -> Vec<Hash> {
        self.entries.iter().map(|e| e.output.hash).collect()
    }
}

/// Per-thread recording state: the tape, and the hashes of tensors that recorded ops produced, so that
/// a tensor is hashed once however many ops read it. candle tensors are immutable and their ids are
/// never reused, so an op output's hash stays valid; variables, which `Var::set` changes in place, are
/// never op outputs and are hashed afresh on every use. (Writing into an op's output in place with
/// `slice_set` during a recording would defeat this: repops itself never does.)
struct Recording {
    tape: Tape,
    known: HashMap<TensorId, Hash>,
    /// Ids whose hashes this recording looked up or learned: only these are carried to the next one.
    touched: std::collections::HashSet<TensorId>,
    /// The running op's inputs: id, whether it is a variable, and its hash if known.
    pending: Option<Vec<(TensorId, bool, Option<Hash>)>>,
    /// Hashes computed by the op just run: inputs, then output.
    last: Vec<Hash>,
}

thread_local! {
    static CURRENT: RefCell<Option<Recording>> = const { RefCell::new(None) };
    /// The hashes known at the end of the last recording on this thread, handed to the next one, so
    /// that state carried from one training step to the next (optimizer moments) is not hashed again.
    /// Only one recording's worth is kept.
    static CARRY: RefCell<HashMap<TensorId, Hash>> = RefCell::new(HashMap::new());
}

fn recording(tape: Tape) -> Recording {
    let known = CARRY.with(|c| std::mem::take(&mut *c.borrow_mut()));
    Recording { tape, known, touched: std::collections::HashSet::new(), pending: None, last: Vec::new() }
}

/// Runs `f`, recording every repops op this thread runs meanwhile (forward and backward alike).
/// With `keep_inputs`, each entry also keeps copies of its inputs so it can be replayed.
/// Recordings nest: an inner `record` gets its own tape and the outer one resumes afterwards.
pub fn record<R>(keep_inputs: bool, f: impl FnOnce() -> R) -> (R, Tape) {
    let keep = if keep_inputs { Keep::All } else { Keep::Nothing };
    record_with(RecordOptions { keep, fault: None }, f)
}

/// [`record`] with every option: which inputs to keep, and a fault to inject.
pub fn record_with<R>(options: RecordOptions, f: impl FnOnce() -> R) -> (R, Tape) {
    let outer = CURRENT.with(|c| c.replace(Some(recording(Tape { entries: Vec::new(), options }))));
    struct Restore(Option<Option<Recording>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                CURRENT.with(|c| *c.borrow_mut() = outer);
            }
        }
    }
    let mut restore = Restore(Some(outer));
    let out = f();
    let tape = match CURRENT.with(|c| c.borrow_mut().take()) {
        Some(mut r) => {
            // Carry what this recording used, not everything ever seen: the map stays one step's size.
            r.known.retain(|id, _| r.touched.contains(id));
            CARRY.with(|c| *c.borrow_mut() = r.known);
            r.tape
        }
        None => Tape::default(),
    };
    if let Some(outer) = restore.0.take() {
        CURRENT.with(|c| *c.borrow_mut() = outer);
    }
    (out, tape)
}

/// Whether a tape is recording on this thread.
pub fn is_recording() -> bool {
    CURRENT.with(|c| c.borrow().is_some())
}

/// Before an op runs on candle tensors: the hashes already known for its inputs (by tensor id).
pub(crate) fn before_op(inputs: &[&candle_core::Tensor]) {
    CURRENT.with(|c| {
        if let Some(r) = c.borrow_mut().as_mut() {
            r.pending = Some(
                inputs
                    .iter()
                    .map(|t| {
                        let var = t.is_variable();
                        let known = if var { None } else { r.known.get(&t.id()).copied() };
                        if known.is_some() {
                            r.touched.insert(t.id());
                        }
                        (t.id(), var, known)
                    })
                    .collect(),
            );
        }
    });
}

/// After an op ran on candle tensors: remember the hashes of its output and of its inputs that are not
/// variables, under their tensor ids.
pub(crate) fn after_op(output: &candle_core::Tensor) {
    CURRENT.with(|c| {
        if let Some(r) = c.borrow_mut().as_mut() {
            let pending = r.pending.take().unwrap_or_default();
            let last = std::mem::take(&mut r.last);
            if last.len() == pending.len() + 1 {
                for ((id, var, _), h) in pending.iter().zip(&last) {
                    if !var {
                        r.known.insert(*id, *h);
                        r.touched.insert(*id);
                    }
                }
                r.known.insert(output.id(), last[pending.len()]);
                r.touched.insert(output.id());
            }
        }
    });
}

/// Appends an op to this thread's tape, if one is recording (injecting the recording's fault into
/// `output` first if this is the faulty op).
pub(crate) fn note(op: &OpKind, inputs: &[HostView<'_>], output: &mut HostTensor) {
    CURRENT.with(|c| {
        let mut current = c.borrow_mut();
        let Some(r) = current.as_mut() else { return };
        let index = r.tape.entries.len();
        if let Some(fault) = r.tape.options.fault
            && fault.op == index
            && let HostData::F32(v) = &mut output.data
            && let Some(first) = v.first_mut()
        {
            *first += fault.delta;
        }
        let pending: Vec<Option<Hash>> =
            r.pending.as_ref().map(|p| p.iter().map(|e| e.2).collect()).unwrap_or_default();
        let keep = r.tape.options.keep.keeps(index);
        let out_view = output.view();
        let mut all: Vec<(&HostView<'_>, Option<Hash>)> =
            inputs.iter().enumerate().map(|(i, v)| (v, pending.get(i).copied().flatten())).collect();
        all.push((&out_view, None));
        let hashes: Vec<Hash> = all.iter().map(|(v, known)| known.unwrap_or_else(|| hash_view(v))).collect();
        r.last = hashes.clone();
        let tape = &mut r.tape;
        let inputs = inputs
            .iter()
            .zip(&hashes)
            .map(|(v, &hash)| TensorRecord {
                shape: v.shape.to_vec(),
                hash,
                data: keep.then(|| HostTensor {
                    shape: v.shape.to_vec(),
                    data: match v.data {
                        HostSlice::F32(x) => HostData::F32(x.to_vec()),
                        HostSlice::U32(x) => HostData::U32(x.to_vec()),
                    },
                }),
            })
            .collect();
        let output = TensorRecord { shape: output.shape.clone(), hash: hashes[hashes.len() - 1], data: None };
        tape.entries.push(TapeEntry { index, op: *op, inputs, output });
    });
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// State carried from step to step keeps its hash, but the carried map holds one step's worth of
    /// tensors, not everything every recording ever saw.
    #[test]
    fn the_carried_hashes_stay_one_recording_in_size() {
        let mut x = Tensor::from_vec(vec![1f32; 64], 64, &Device::Cpu).expect("tensor");
        let mut sizes = Vec::new();
        for _ in 0..5 {
            let (y, tape) = record(false, || crate::tensor::scale(&x, 0.5).and_then(|y| crate::tensor::scale(&y, 2.0)));
            assert_eq!(tape.len(), 2);
            x = y.expect("ops");
            sizes.push(CARRY.with(|c| c.borrow().len()));
        }
        assert!(sizes.windows(2).all(|w| w[1] <= w[0].max(3)), "carried hashes grow: {sizes:?}");
    }

    /// A fault changes the faulty op's output and everything that reads it; the tape records what ran;
    /// `Keep::Op` keeps the inputs of that one op only.
    #[test]
    fn an_injected_fault_changes_its_op_and_what_follows() {
        let x = Tensor::from_vec((0..16).map(|i| i as f32).collect::<Vec<_>>(), (4, 4), &Device::Cpu).expect("x");
        let run = |options| {
            let (y, tape) =
                record_with(options, || crate::tensor::scale(&x, 0.5).and_then(|y| crate::tensor::square(&y)));
            (y.expect("ops").flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec"), tape)
        };
        let (clean, tape) = run(RecordOptions::default());
        let fault = OutputFault { op: 0, delta: 1.0 };
        let (faulty, faulty_tape) = run(RecordOptions { keep: Keep::Op(1), fault: Some(fault) });
        assert_eq!(faulty[0], (0.5f32 * 0.0 + 1.0).powi(2));
        assert_eq!(&faulty[1..], &clean[1..]);
        assert_ne!(tape.entries()[0].output.hash, faulty_tape.entries()[0].output.hash);
        assert_ne!(tape.entries()[1].inputs[0].hash, faulty_tape.entries()[1].inputs[0].hash);
        assert!(faulty_tape.entries()[0].inputs[0].data.is_none());
        let kept = &faulty_tape.entries()[1];
        assert!(kept.inputs[0].data.is_some());
        kept.verify(crate::simd::current()).expect("the op after the fault replays to what it recorded");
    }
}
