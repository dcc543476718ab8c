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
    /// `diff --exit-code` found objects that would change (exit 1, as `kubectl diff`).
    #[error("{0} object(s) would change")]
    Differences(usize),
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

/// Exit codes by failure class, so a CI job can tell them apart (README "Exit codes").
pub mod exit {
    /// Something else failed (a write refused by the API server, a file).
    pub const FAILED: u8 = 1;
    /// Bad input: arguments, environment files, templates, a drifted tree. Nothing written.
    pub const BAD_INPUT: u8 = 2;
    /// Another run holds the deploy lock (or took it over): it finishes the work.
    pub const LOCK_HELD: u8 = 3;
    /// Stopped before moving traffic (a version that did not get ready, a refused
    /// precondition): traffic is where it was.
    pub const ABORTED: u8 = 4;
    /// Traffic needs a look: a move back not confirmed by the load balancer, a rolling
    /// update that stopped half-way.
    pub const NEEDS_ATTENTION: u8 = 5;
    /// The cluster or AWS could not be reached or refused the credentials.
    pub const UNREACHABLE: u8 = 6;
    /// stdout was closed by its reader (as SIGPIPE).
    pub const CLOSED_PIPE: u8 = 141;
}

impl Error {
    /// The exit code of this failure's class.
    pub fn exit_code(&self) -> u8 {
        use crate::cluster::ClusterError;
        use crate::cluster::lease::LeaseError;
        use crate::rollout::RolloutError;
        let cluster = |e: &ClusterError| match e {
            ClusterError::Transport { .. } | ClusterError::Config(_) => exit::UNREACHABLE,
            ClusterError::Api { code, .. } if matches!(code, 401 | 403) || *code >= 500 => {
                exit::UNREACHABLE
            }
            ClusterError::LockLost { .. } => exit::LOCK_HELD,
            ClusterError::Identity(_) => exit::BAD_INPUT,
            ClusterError::Api { .. } | ClusterError::UnknownKind { .. } => exit::FAILED,
        };
        match self {
            Error::Environments(_)
            | Error::Render(_)
            | Error::Tree(_)
            | Error::Usage(_)
            | Error::Check(_) => exit::BAD_INPUT,
            Error::Cluster(e) => cluster(e),
            Error::Eks(_) => exit::UNREACHABLE,
            Error::Write { .. } | Error::Differences(_) => exit::FAILED,
            Error::Rollout(e) => match e.as_ref() {
                RolloutError::Input(_) => exit::BAD_INPUT,
                RolloutError::Lease(LeaseError::Held { .. }) | RolloutError::LockLost { .. } => {
                    exit::LOCK_HELD
                }
                RolloutError::Lease(LeaseError::Cluster(e)) | RolloutError::Cluster(e) => {
                    cluster(e)
                }
                RolloutError::Aborted { .. }
                | RolloutError::NotServing { .. }
                | RolloutError::RollbackNotReady { .. }
                | RolloutError::Preflight(_) => exit::ABORTED,
                RolloutError::MoveBackUnconfirmed { .. } | RolloutError::Rolling { .. } => {
                    exit::NEEDS_ATTENTION
                }
                RolloutError::Elb(_) => exit::UNREACHABLE,
            },
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
