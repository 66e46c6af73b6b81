//! The crate's error types, one per concern.

use std::path::PathBuf;

use crate::identity::PeerId;

/// Why a key file or a peer id could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The key file exists and was not overwritten.
    #[error("key file {path} already exists; refusing to overwrite an identity")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A key file's contents are wrong; `source` says how.
    #[error("key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<Self>,
    },
    /// The file is far larger than any key file.
    #[error("{bytes} bytes is too large for a key file")]
    TooLarge {
        /// Its size.
        bytes: u64,
    },
    /// The text is not a PEM block.
    #[error("not a PEM key file ({reason})")]
    NotPem {
        /// The parser's words.
        reason: String,
    },
    /// The PEM block holds something other than a private key.
    #[error("PEM block is labelled {found:?}, expected \"PRIVATE KEY\"")]
    WrongPemLabel {
        /// The label found.
        found: String,
    },
    /// The private key is not a valid ed25519 PKCS#8 key.
    #[error("not an ed25519 PKCS#8 private key ({reason})")]
    NotEd25519 {
        /// The parser's words.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("the system random source failed")]
    Random,
    /// Text that should be a peer id is not 64 hex digits.
    #[error("{text:?} is not a peer id (64 hex digits)")]
    BadPeerId {
        /// The offending text (cut to 80 characters).
        text: String,
    },
}

/// Why bytes could not be framed, encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A frame header claims more bytes than the configured limit.
    #[error("frame of {claimed} bytes exceeds the {limit}-byte frame limit")]
    FrameTooLarge {
        /// Bytes the header claims (or the message needs).
        claimed: u64,
        /// The limit.
        limit: usize,
    },
    /// The bytes end before the frame does.
    #[error("truncated frame: expected {expected} bytes, got {got}")]
    Truncated {
        /// Bytes the frame needs.
        expected: u64,
        /// Bytes that arrived.
        got: u64,
    },
    /// The payload is not a valid encoding of the expected message type.
    #[error("malformed message: {reason}")]
    Malformed {
        /// The decoder's words.
        reason: String,
    },
    /// The payload decoded but left bytes over: it was not the expected message type.
    #[error("{extra} trailing bytes after the message")]
    TrailingBytes {
        /// Bytes left over.
        extra: usize,
    },
    /// The message could not be encoded.
    #[error("cannot encode message: {reason}")]
    Encode {
        /// The encoder's words.
        reason: String,
    },
    /// A configured frame limit is out of range.
    #[error("frame limit {limit} is outside 64..={max}")]
    BadLimit {
        /// The requested limit.
        limit: usize,
        /// The largest allowed.
        max: usize,
    },
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The destination is not known to this transport.
    #[error("unknown peer {0}")]
    UnknownPeer(PeerId),
    /// This endpoint's peer has crashed (simulation) or been shut down.
    #[error("peer {0} is down")]
    PeerDown(PeerId),
    /// The endpoint is closed.
    #[error("transport closed")]
    Closed,
    /// Framing or encoding failed on this side.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A message from `from` could not be decoded as the expected type; the next message is unaffected.
    #[error("bad message from {from}: {source}")]
    Decode {
        /// The sender.
        from: PeerId,
        /// What was wrong.
        source: CodecError,
    },
    /// A connection to `peer` could not be made or broke.
    #[error("connection to {peer}: {reason}")]
    Connection {
        /// The remote peer.
        peer: PeerId,
        /// What happened.
        reason: String,
    },
    /// Setting up the endpoint failed (TLS, socket, runtime).
    #[error("endpoint setup: {0}")]
    Setup(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A configuration value is invalid; the message names it.
    #[error("invalid {field}: {reason}")]
    Config {
        /// The field, e.g. `links.latency`.
        field: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
}

impl TransportError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config { field: field.into(), reason: reason.into() }
    }
}
