//! The crate's error type.

/// Why a repops operation could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // === Input errors ===
    /// Input shapes do not fit the op.
    #[error("{op}: shape mismatch: {detail}")]
    Shape {
        /// The op.
        op: &'static str,
        /// What does not fit.
        detail: String,
    },
    /// An input has a dtype the op does not take.
    #[error("{op}: unsupported dtype {dtype} (expected {expected})")]
    DType {
        /// The op.
        op: &'static str,
        /// The dtype found.
        dtype: String,
        /// What the op takes.
        expected: &'static str,
    },
    /// An input is not laid out contiguously (call `.contiguous()` first; the public functions do).
    #[error("{op}: input {index} is not contiguous")]
    NonContiguous {
        /// The op.
        op: &'static str,
        /// Which input.
        index: usize,
    },
    /// An index input (token id, target) is out of range.
    #[error("{op}: index {value} out of range 0..{bound}")]
    Index {
        /// The op.
        op: &'static str,
        /// The offending index.
        value: u32,
        /// The exclusive bound.
        bound: usize,
    },
    /// The wrong number of inputs was given.
    #[error("{op}: expected {expected} inputs, got {got}")]
    Arity {
        /// The op.
        op: &'static str,
        /// Inputs expected.
        expected: usize,
        /// Inputs given.
        got: usize,
    },

    // === Platform errors ===
    /// The op cannot run on this device or CPU (e.g. a CUDA tensor in a build without CUDA kernels).
    #[error("{op}: not supported: {what}")]
    Unsupported {
        /// The op.
        op: &'static str,
        /// What is missing.
        what: String,
    },

    // === Replay errors ===
    /// A tape entry's replayed output does not hash to the recorded value.
    #[error("replay of op #{index} ({op}) produced a different output")]
    ReplayMismatch {
        /// Position on the tape.
        index: usize,
        /// The op.
        op: &'static str,
    },
    /// A tape entry was recorded without its inputs, so it cannot be replayed.
    #[error("op #{index} was recorded without its inputs")]
    NoInputs {
        /// Position on the tape.
        index: usize,
    },

    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(op: &'static str, detail: impl Into<String>) -> Self {
        Self::Shape { op, detail: detail.into() }
    }
}
