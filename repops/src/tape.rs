//! The op tape: an optional record of every repops op a thread runs — op, attributes, shapes, and a
//! blake3 hash of every input and output — and, if asked, the inputs themselves, so that any single op
//! can be re-executed later and checked against its recorded output. Verde's referee builds on it.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::op::{HostData, HostSlice, HostTensor, HostView, OpKind, execute};
use crate::simd::SimdLevel;

/// A blake3 digest.
pub type Hash = [u8; 32];

/// An op whose inputs take this many bytes or more runs and hashes on the thread pool when recorded.
pub(crate) const POOL_BYTES: usize = 64 << 10;

/// Tensors from this size on are hashed by the whole thread pool.
const PARALLEL_HASH_BYTES: usize = 128 << 10;

/// The hash of a tensor: blake3 over a dtype tag, the shape (u64 little-endian per dimension) and the
/// [`content_hash`] of its elements. Hashing the elements apart from the shape lets a reshaped view of a
/// tensor reuse its elements' hash.
pub fn hash_view(view: &HostView<'_>) -> Hash {
    with_shape(view, &content_hash(view.data))
}

/// blake3 over a tensor's elements as little-endian bytes.
pub fn content_hash(data: HostSlice<'_>) -> Hash {
    let mut h = blake3::Hasher::new();
    if cfg!(target_endian = "little") {
        let bytes: &[u8] = match data {
            HostSlice::F32(v) => bytemuck::cast_slice(v),
            HostSlice::U32(v) => bytemuck::cast_slice(v),
        };
        if bytes.len() >= PARALLEL_HASH_BYTES {
            // Large tensors are hashed by all threads (blake3's digest does not depend on how).
            h.update_rayon(bytes);
        } else {
            h.update(bytes);
        }
    } else {
        match data {
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

/// [`hash_view`] from the elements' [`content_hash`].
fn with_shape(view: &HostView<'_>, content: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(match view.data {
        HostSlice::F32(_) => b"f32",
        HostSlice::U32(_) => b"u32",
    });
    h.update(&(view.shape.len() as u64).to_le_bytes());
    for &d in view.shape {
        h.update(&(d as u64).to_le_bytes());
    }
    h.update(content);
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

/// A deliberate fault, to test verifiers: it simulates a faulty or dishonest machine; honest runs never
/// set one. (On CUDA only an output fault is injected, and only into the record, not the device's
/// buffer.)
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The op at tape position `op` has `delta` added to the first element of its (f32) output, which
    /// later ops then read.
    Output {
        /// The tape position of the faulty op.
        op: usize,
        /// What is added to the first element of its output.
        delta: f32,
    },
    /// The op at tape position `op` reads its input `input` with the first two elements swapped: the
    /// same values, laid out wrongly by the work done before the op (a reshape, a transpose, a copy).
    MislaidInput {
        /// The tape position of the op that reads it.
        op: usize,
        /// Which of its inputs.
        input: usize,
    },
}

impl Fault {
    /// The tape position of the op it changes.
    pub fn op(&self) -> usize {
        match *self {
            Self::Output { op, .. } | Self::MislaidInput { op, .. } => op,
        }
    }
}

/// How to record: what to keep, and an optional injected fault.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RecordOptions {
    /// Which inputs to keep.
    pub keep: Keep,
    /// A fault to inject.
    pub fault: Option<Fault>,
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

/// Where a tensor's elements live: its storage (by address), the offset into it and the element count.
/// Two contiguous tensors with the same key hold the same elements — a reshaped view or a detached copy
/// of an op's output (candle detaches every gradient it hands to a backward op) has its output's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StorageKey {
    storage: usize,
    offset: usize,
    len: usize,
}

impl StorageKey {
    /// The key of a contiguous tensor (`None` for any other: its elements are not one run).
    fn of(t: &candle_core::Tensor) -> Option<Self> {
        let (storage, layout) = t.storage_and_layout();
        layout.is_contiguous().then(|| Self {
            storage: std::ptr::from_ref::<candle_core::Storage>(&storage).addr(),
            offset: layout.start_offset(),
            len: layout.shape().elem_count(),
        })
    }
}

/// The known [`content_hash`] of an op output's elements, with the output. Holding the tensor keeps its storage alive, so no
/// other tensor can get the same storage address while the hash is on record.
struct Known {
    hash: Hash,
    _alive: candle_core::Tensor,
}

/// Per-thread recording state: the tape, and the hashes of the tensors recorded ops produced or read, so
/// that a tensor is hashed once however many ops read it, through whatever views: an op's output, and
/// an input no recorded op produced (candle's own gradient sums, which the backward pass hands to two
/// ops for each product) once its first reader hashed it. Neither is written again (repops writes no
/// tensor in place; `slice_set` into one during a recording would defeat this), so the hash stays valid.
/// Variables, which `Var::set` changes in place, are hashed afresh on every use. A recording keeps the
/// tensors it knows alive until it ends.
struct Recording {
    tape: Tape,
    known: HashMap<StorageKey, Known>,
    /// Keys this recording looked up or learned: only these are carried to the next one.
    touched: HashSet<StorageKey>,
    /// The content hashes known for the running op's inputs.
    pending: Vec<Option<Hash>>,
    /// The running op's inputs to learn the hashes of: those neither known nor variables.
    unknown: Vec<Option<(StorageKey, candle_core::Tensor)>>,
    /// The content hash of the output of the op just run.
    last_output: Option<Hash>,
}

thread_local! {
    static CURRENT: RefCell<Option<Recording>> = const { RefCell::new(None) };
    /// The hashes known at the end of the last recording on this thread, handed to the next one, so
    /// that state carried from one training step to the next (optimizer moments) is not hashed again.
    /// Only what the last recording used is kept.
    static CARRY: RefCell<HashMap<StorageKey, Known>> = RefCell::new(HashMap::new());
}

fn recording(tape: Tape) -> Recording {
    let known = CARRY.with(|c| std::mem::take(&mut *c.borrow_mut()));
    Recording { tape, known, touched: HashSet::new(), pending: Vec::new(), unknown: Vec::new(), last_output: None }
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
            r.known.retain(|key, _| r.touched.contains(key));
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

/// Before an op runs on candle tensors: the hashes already known for its inputs.
pub(crate) fn before_op(inputs: &[&candle_core::Tensor]) {
    CURRENT.with(|c| {
        if let Some(r) = c.borrow_mut().as_mut() {
            r.last_output = None;
            r.unknown.clear();
            r.pending = inputs
                .iter()
                .map(|t| {
                    let key = if t.is_variable() { None } else { StorageKey::of(t) };
                    let known = key.as_ref().and_then(|k| r.known.get(k)).map(|k| k.hash);
                    match (key, known) {
                        (Some(key), Some(_)) => {
                            r.touched.insert(key);
                            r.unknown.push(None);
                        }
                        (Some(key), None) => r.unknown.push(Some((key, (*t).clone()))),
                        (None, _) => r.unknown.push(None),
                    }
                    known
                })
                .collect();
        }
    });
}

/// After an op ran on candle tensors: remember its output's hash, under its storage.
pub(crate) fn after_op(output: &candle_core::Tensor) {
    CURRENT.with(|c| {
        if let Some(r) = c.borrow_mut().as_mut() {
            r.pending.clear();
            r.unknown.clear();
            if let (Some(hash), Some(key)) = (r.last_output.take(), StorageKey::of(output)) {
                r.known.insert(key, Known { hash, _alive: output.clone() });
                r.touched.insert(key);
            }
        }
    });
}

/// What the recording needs to know about the op about to run: its place on the tape, what to do
/// with it, and the hashes it already knows for the op's inputs. Taken on the recording thread by
/// [`next_op`]; the hashing it asks for may then run on any thread.
pub(crate) struct NextOp {
    index: usize,
    fault: Option<Fault>,
    keep: bool,
    known: Vec<Option<Hash>>,
}

/// The next op's [`NextOp`], if this thread is recording.
pub(crate) fn next_op() -> Option<NextOp> {
    CURRENT.with(|c| {
        let current = c.borrow();
        let r = current.as_ref()?;
        let index = r.tape.entries.len();
        let fault = r.tape.options.fault.filter(|f| f.op() == index);
        Some(NextOp { index, fault, keep: r.tape.options.keep.keeps(index), known: r.pending.clone() })
    })
}

impl NextOp {
    /// The input this op reads mislaid, if the recording's fault says so: its index and the mislaid
    /// copy (the first two elements swapped).
    pub(crate) fn mislaid(&self, inputs: &[HostView<'_>]) -> Option<(usize, HostTensor)> {
        let Some(Fault::MislaidInput { input, .. }) = self.fault else { return None };
        let v = inputs.get(input)?;
        let mut data = match v.data {
            HostSlice::F32(x) => HostData::F32(x.to_vec()),
            HostSlice::U32(x) => HostData::U32(x.to_vec()),
        };
        match &mut data {
            HostData::F32(x) if x.len() >= 2 => x.swap(0, 1),
            HostData::U32(x) if x.len() >= 2 => x.swap(0, 1),
            _ => return None,
        }
        Some((input, HostTensor { shape: v.shape.to_vec(), data }))
    }

    /// Injects the recording's output fault into the op's output, if this is the faulty op.
    pub(crate) fn inject(&self, output: &mut HostTensor) {
        if let Some(Fault::Output { delta, .. }) = self.fault
            && let HostData::F32(v) = &mut output.data
            && let Some(first) = v.first_mut()
        {
            *first += delta;
        }
    }

    /// The content hashes of the op's inputs (those already known are reused) and of its output, in
    /// that order. Big tensors are hashed by the whole thread pool, so call this on a pool thread (see
    /// [`on_pool`]) to pay for one hand-over instead of one per tensor.
    pub(crate) fn hashes(&self, inputs: &[HostView<'_>], output: &HostView<'_>) -> Vec<Hash> {
        use rayon::prelude::*;
        let mislaid = match self.fault {
            Some(Fault::MislaidInput { input, .. }) => Some(input),
            _ => None,
        };
        let known = |i: usize| self.known.get(i).copied().flatten().filter(|_| mislaid != Some(i));
        let todo: Vec<(Option<Hash>, &HostView<'_>)> =
            inputs.iter().enumerate().map(|(i, v)| (known(i), v)).chain([(None, output)]).collect();
        todo.par_iter().map(|(known, v)| known.unwrap_or_else(|| content_hash(v.data))).collect()
    }
}

/// Runs `f` on a thread of the current rayon pool and waits for it. An op recorded on the tape runs
/// its kernel and hashes its tensors inside one such call: the parallel loops within then split work
/// among threads that are already awake, instead of handing each loop to the pool from outside.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        // From outside the pool, `join` runs both closures on pool threads and blocks until they end.
        rayon::join(f, || ()).0
    }
}

/// Appends the op to this thread's tape with the content hashes [`NextOp::hashes`] computed.
pub(crate) fn commit(next: NextOp, op: &OpKind, inputs: &[HostView<'_>], output: &HostView<'_>, contents: Vec<Hash>) {
    CURRENT.with(|c| {
        let mut current = c.borrow_mut();
        let Some(r) = current.as_mut() else { return };
        let output = TensorRecord {
            shape: output.shape.to_vec(),
            hash: with_shape(output, &contents[inputs.len()]),
            data: None,
        };
        let inputs = inputs
            .iter()
            .zip(&contents)
            .map(|(v, content)| TensorRecord {
                shape: v.shape.to_vec(),
                hash: with_shape(v, content),
                data: next.keep.then(|| HostTensor {
                    shape: v.shape.to_vec(),
                    data: match v.data {
                        HostSlice::F32(x) => HostData::F32(x.to_vec()),
                        HostSlice::U32(x) => HostData::U32(x.to_vec()),
                    },
                }),
            })
            .collect();
        r.last_output = contents.last().copied();
        // The inputs hashed for the first time are known from now on (not a mislaid copy's hash).
        let mislaid = match next.fault {
            Some(Fault::MislaidInput { input, .. }) => Some(input),
            _ => None,
        };
        let learned = std::mem::take(&mut r.unknown);
        for (i, (unknown, content)) in learned.into_iter().zip(&contents).enumerate() {
            if let Some((key, tensor)) = unknown.filter(|_| mislaid != Some(i)) {
                r.known.insert(key, Known { hash: *content, _alive: tensor });
                r.touched.insert(key);
            }
        }
        r.tape.entries.push(TapeEntry { index: next.index, op: *op, inputs, output });
    });
}

/// Appends an op that already ran to this thread's tape, if one is recording (injecting the
/// recording's fault into `output` first if this is the faulty op).
#[cfg(feature = "cuda")]
pub(crate) fn note(op: &OpKind, inputs: &[HostView<'_>], output: &mut HostTensor) {
    if let Some(next) = next_op() {
        next.inject(output);
        let view = output.view();
        let contents = on_pool(|| next.hashes(inputs, &view));
        commit(next, op, inputs, &view, contents);
    }
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

    /// A tensor no recorded op produced (here candle's own sum) is hashed by its first reader and then
    /// known: a later reader records the same hash, the true one, even when the first read was mislaid.
    #[test]
    fn an_input_from_outside_the_tape_is_learned_once_and_truly() {
        let dev = Device::Cpu;
        let a = Tensor::from_vec((0..12).map(|i| i as f32).collect::<Vec<_>>(), (3, 4), &dev).expect("a");
        let run = |fault| {
            // A fresh sum each time: no earlier recording knows it.
            let outside = (&a + &a).expect("candle's add");
            let (out, tape) = record_with(RecordOptions { keep: Keep::All, fault }, || -> crate::Result<()> {
                crate::tensor::scale(&outside, 2.0)?;
                crate::tensor::scale(&outside.reshape(12)?, 3.0)?;
                Ok(())
            });
            out.expect("ops");
            tape
        };
        let clean = run(None);
        let e = clean.entries();
        for entry in e {
            entry.verify(crate::simd::current()).expect("recorded hashes are those of the inputs");
        }
        assert_eq!(
            content_of(&e[0].inputs[0]),
            content_of(&e[1].inputs[0]),
            "the same elements, read through another view"
        );
        let mislaid = run(Some(Fault::MislaidInput { op: 0, input: 0 }));
        let m = mislaid.entries();
        assert_ne!(m[0].inputs[0].hash, e[0].inputs[0].hash, "the first read was mislaid");
        assert_eq!(m[1].inputs[0].hash, e[1].inputs[0].hash, "the second reader records the true elements");
    }

    fn content_of(record: &TensorRecord) -> Hash {
        content_hash(record.data.as_ref().expect("kept").view().data)
    }

    /// A hash the tape reuses is the hash of what the op really read: through a reshaped view or a
    /// detached copy of an earlier output (same elements, reused), and of a variable after `Var::set`
    /// (changed in place, hashed afresh).
    #[test]
    fn reused_hashes_match_what_each_op_read() {
        let dev = Device::Cpu;
        let w =
            candle_core::Var::from_tensor(&Tensor::from_vec(vec![0.5f32; 12], (3, 4), &dev).expect("w")).expect("var");
        let (out, tape) = record(true, || -> crate::Result<Tensor> {
            let y = crate::tensor::scale(w.as_tensor(), 2.0)?;
            let z = crate::tensor::scale(&y.reshape((4, 3))?, 3.0)?;
            crate::tensor::add(&z.detach(), &z)?;
            w.set(&Tensor::from_vec(vec![1.5f32; 12], (3, 4), &dev)?)?;
            crate::tensor::add(&crate::tensor::scale(w.as_tensor(), 1.0)?, &y)
        });
        out.expect("ops");
        assert_eq!(tape.len(), 5);
        for entry in tape.entries() {
            // Replaying checks every kept input against its recorded hash first.
            entry.verify(crate::simd::current()).expect("recorded hashes are those of the inputs");
        }
        let e = tape.entries();
        assert_ne!(e[0].inputs[0].hash, e[3].inputs[0].hash, "the variable changed between its reads");
        assert_eq!(e[1].inputs[0].hash, hash_view(&e[1].inputs[0].data.as_ref().expect("kept").view()));
        assert_ne!(e[1].inputs[0].hash, e[0].output.hash, "a reshaped view hashes with its own shape");
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
        let fault = Fault::Output { op: 0, delta: 1.0 };
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

    /// A mislaid input: the op reads the same values in another order, so its input is no longer the
    /// output that produced it, and the op's own output changes; the tape records what the op read.
    #[test]
    fn a_mislaid_input_is_read_with_two_elements_swapped() {
        let x = Tensor::from_vec((0..16).map(|i| i as f32).collect::<Vec<_>>(), (4, 4), &Device::Cpu).expect("x");
        let run = |options| {
            let (y, tape) = record_with(options, || {
                crate::tensor::scale(&x, 0.5).and_then(|y| crate::tensor::softmax_last_dim(&y))
            });
            (y.expect("ops").flatten_all().and_then(|t| t.to_vec1::<f32>()).expect("vec"), tape)
        };
        let (clean, tape) = run(RecordOptions::default());
        let fault = Fault::MislaidInput { op: 1, input: 0 };
        let (faulty, faulty_tape) = run(RecordOptions { keep: Keep::Op(1), fault: Some(fault) });
        let (t, f) = (tape.entries(), faulty_tape.entries());
        assert_eq!(t[0].output.hash, f[0].output.hash, "the producing op is untouched");
        assert_eq!(t[1].inputs[0].hash, t[0].output.hash);
        assert_ne!(f[1].inputs[0].hash, f[0].output.hash, "the op read something else");
        let read = f[1].inputs[0].data.as_ref().and_then(HostTensor::as_f32).expect("kept");
        assert_eq!(&read[..3], &[0.5, 0.0, 1.0]);
        assert_eq!((faulty[0], faulty[1]), (clean[1], clean[0]), "the first row's softmax, swapped");
        f[1].verify(crate::simd::current()).expect("the record is what the op computed from what it read");
    }
}
