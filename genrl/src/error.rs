//! The crate's error type.

/// Why a genrl operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; the message names the field and what is allowed.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field, e.g. `device.flops`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A role of the game (trainer, data or reward manager) failed.
    #[error("{role} failed: {source}")]
    Role {
        /// Which role.
        role: &'static str,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A transport error.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Config`] naming `field` and what is wrong with it.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }

    /// A [`Error::Role`]: `role` failed because of `source`.
    pub fn role(role: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Role { role, source: Box::new(source) }
    }
}
