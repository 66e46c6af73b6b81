//! The crate's error type.

use std::path::PathBuf;

/// Why a model, corpus or optimizer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; the message names the field and what is allowed.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field, e.g. `model.n_heads`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A corpus path is missing, unreadable, empty or not text.
    #[error("corpus {path}: {reason}")]
    Corpus {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint file is missing, malformed or does not match the model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An input does not fit the model (wrong stage input, sequence too long...).
    #[error("model input: {0}")]
    Input(String),
    /// A reproducible-kernel error.
    #[error(transparent)]
    RepOps(#[from] repops::Error),
    /// A candle error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }
}
