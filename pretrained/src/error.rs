//! The crate's error type.

use std::path::PathBuf;

/// Why a checkpoint could not be found, read, used or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is missing, unreadable or malformed as a whole.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file (or folder).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A field of a file is missing or has a value this crate cannot use.
    #[error("{}: {field}: {reason}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The field (a JSON key, or a tensor's name in a weights file).
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// No checkpoint of that model id in the Hugging Face cache.
    #[error("model {model:?} is neither a folder nor in the Hugging Face cache (looked in {})", looked.display())]
    NotCached {
        /// The model id asked for.
        model: String,
        /// The cache folder searched.
        looked: PathBuf,
    },
    /// Text the tokenizer could not encode or decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The model refused the weights or an input.
    #[error(transparent)]
    Model(#[from] models::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        Self::File { path: path.into(), reason: reason.to_string() }
    }

    pub(crate) fn field(path: impl Into<PathBuf>, field: impl Into<String>, reason: impl ToString) -> Self {
        Self::Field { path: path.into(), field: field.into(), reason: reason.to_string() }
    }
}
