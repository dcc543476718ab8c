//! The crate's error type: one variant per failing part, each carrying its own typed error.

use crate::env::diagnostic::Diagnostics;
use crate::render::RenderError;
use crate::tree::TreeError;

/// Everything a command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The environment files have errors (all of them are listed).
    #[error("{0}")]
    Environments(#[from] Diagnostics),
    /// A template failed or rendered an invalid object.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The manifests tree could not be written or read.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// The arguments do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// `render --check` found differences.
    #[error("{0}")]
    Check(String),
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
