//! The crate's error type.

/// Why a NoLoCo / DiLoCo setting or study failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is invalid; the message names it and what is allowed.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The setting.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A genrl error.
    #[error(transparent)]
    Genrl(#[from] genrl::Error),
    /// A pipeline error.
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
    /// A transport error.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }
}

impl From<Error> for pipeline::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Pipeline(p) => p,
            Error::Config { field, reason } => Self::Config { field, reason },
            other => Self::Config { field: "noloco".into(), reason: other.to_string() },
        }
    }
}
