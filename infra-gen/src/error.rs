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
    /// A cluster call failed.
    #[error(transparent)]
    Cluster(crate::cluster::ClusterError),
    /// A deploy step failed (the message says what runs now and what to do). Boxed: it
    /// carries the pods' diagnoses and would make every `Result` of the crate large.
    #[error(transparent)]
    Rollout(Box<crate::rollout::RolloutError>),
    /// An AWS call failed.
    #[error(transparent)]
    Eks(#[from] crate::eks::EksError),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl From<crate::rollout::RolloutError> for Error {
    fn from(error: crate::rollout::RolloutError) -> Self {
        Error::Rollout(Box::new(error))
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
