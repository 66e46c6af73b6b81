//! The crate's error type.

/// Why a SAPO operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; the message names the field and what is allowed.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field, e.g. `sapo.mix`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Text the policy cannot read (not ASCII, or longer than its window).
    #[error("the policy cannot read {0}")]
    Unreadable(String),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] models::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// The swarm failed.
    #[error(transparent)]
    Swarm(#[from] genrl::Error),
    /// A pretrained checkpoint could not be read, used or written.
    #[error(transparent)]
    Pretrained(#[from] pretrained::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Config`] naming `field` and what is wrong with it.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }
}
