//! The crate's error type.

/// Why a commitment, proof or protocol message was rejected. In a dispute, the party whose message is
/// rejected loses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A Merkle proof does not lead to the committed root.
    #[error("Merkle proof for leaf {index} of {len} does not match the committed root")]
    BadProof {
        /// The leaf.
        index: u64,
        /// Leaves in the tree.
        len: u64,
    },
    /// A proof has the wrong shape for its tree (too many or too few siblings).
    #[error("Merkle proof for leaf {index} of {len} has {got} siblings, expected {expected}")]
    ProofLength {
        /// The leaf.
        index: u64,
        /// Leaves in the tree.
        len: u64,
        /// Siblings in the proof.
        got: usize,
        /// Siblings the tree needs.
        expected: usize,
    },
    /// An index is outside the tree.
    #[error("leaf {index} is outside a tree of {len} leaves")]
    OutOfRange {
        /// The leaf.
        index: u64,
        /// Leaves in the tree.
        len: u64,
    },
    /// A commitment covers another number of positions than the program has.
    #[error("a commitment over {got} positions where the program has {expected}")]
    Length {
        /// Positions committed to.
        got: u64,
        /// Positions the program has.
        expected: u64,
    },
    /// A tree must have at least one leaf.
    #[error("a Merkle tree needs at least one leaf")]
    Empty,
    /// Running the training program failed.
    #[error("training program: {0}")]
    Program(String),
    /// The network or the swarm under a dispute failed.
    #[error("network: {0}")]
    Network(String),
    /// A stake ledger file or entry was refused: unreadable, forged, replayed or out of order.
    #[error("ledger {0}")]
    Ledger(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
