//! The crate's error type.

/// Why pipeline training failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; the message names the field and what is allowed.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// A peer did not send what the protocol needed in time.
    #[error("worker {worker}: {what}")]
    Stalled {
        /// The waiting worker, as `s<stage>r<replica>`.
        worker: String,
        /// What it waited for.
        what: String,
    },
    /// A node replacing a killed worker asked this worker to halt (see
    /// [`Msg::Replace`](crate::wire::Msg::Replace)): whatever it was doing is abandoned.
    #[error("worker {worker}: halted for the replacement of {by}")]
    Replaced {
        /// The halted worker, as `s<stage>r<replica>`.
        worker: String,
        /// The replacement.
        by: transport::PeerId,
    },
    /// A model error.
    #[error(transparent)]
    Model(#[from] models::Error),
    /// A genrl error.
    #[error(transparent)]
    Genrl(#[from] genrl::Error),
    /// A transport error.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// A wire-format error.
    #[error(transparent)]
    Codec(#[from] transport::CodecError),
    /// A candle error.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Config`] naming `field` and what is wrong with it.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }
}
