//! The crate's error type.

/// Why a CodeZero operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; the message names the field and what is allowed.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field, e.g. `codezero.agents`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A policy failed (sampling, a training step).
    #[error(transparent)]
    Policy(#[from] sapo::Error),
    /// The game or the swarm failed.
    #[error(transparent)]
    Game(#[from] genrl::Error),
    /// A model or device error.
    #[error(transparent)]
    Model(#[from] models::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Config`] naming `field` and what is wrong with it.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }
}
