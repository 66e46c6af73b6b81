//! The crate's error type.

/// Why a schedule could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The instance's constraints cannot all hold; `constraint` names the one that fails.
    #[error("unsatisfiable constraint {constraint}: {reason}")]
    Infeasible {
        /// The constraint: `skip_ratio`, `max_jump`, `memory`, `stage_load`, ...
        constraint: &'static str,
        /// Why, with the numbers.
        reason: String,
    },
    /// The search spent its budget without finding a conflict-free schedule.
    #[error(
        "the path search gave up after expanding {expanded} search nodes (budget {budget}); the best candidate still had {conflicts} conflicts"
    )]
    GaveUp {
        /// Search nodes expanded.
        expanded: usize,
        /// The budget.
        budget: usize,
        /// Conflicts left in the best candidate found.
        conflicts: usize,
    },
    /// A configuration value is invalid.
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
}

impl Error {
    pub(crate) fn infeasible(constraint: &'static str, reason: impl Into<String>) -> Self {
        Self::Infeasible { constraint, reason: reason.into() }
    }
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
