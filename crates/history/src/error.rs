//! The history error: the cases the frontend maps to gRPC statuses.

/// Result of a history operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a history operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The run, task or activity is not there (or no longer).
    #[error("{0}")]
    NotFound(String),
    /// The namespace does not exist.
    #[error("namespace {0} not found")]
    NamespaceNotFound(String),
    /// The namespace exists already.
    #[error("namespace {0} already exists")]
    NamespaceAlreadyExists(String),
    /// A workflow with this id is running (or the reuse policy refuses a new run).
    #[error("{message}")]
    AlreadyStarted {
        /// Human explanation.
        message: String,
        /// Request id of the run that holds the id.
        start_request_id: String,
        /// The run that holds the id.
        run_id: String,
    },
    /// The request is malformed or not allowed in the current state.
    #[error("{0}")]
    Invalid(String),
    /// The run is busy (it moved on to a new run while the request waited): the client should
    /// retry, and will reach the new run.
    #[error("{0}")]
    BusyWorkflow(String),
    /// The store could not be reached or failed; the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// Another server holds the shard's lease now: this one stopped serving the shard and
    /// commits nothing on it (the client may retry, reaching the owner once requests are routed).
    #[error("shard {shard_id} is owned by another server")]
    ShardOwnershipLost {
        /// The shard.
        shard_id: i32,
    },
}

impl From<kairos_persistence::Error> for Error {
    fn from(e: kairos_persistence::Error) -> Self {
        match e {
            kairos_persistence::Error::NotFound(m) => Error::NotFound(m),
            kairos_persistence::Error::ShardOwnershipLost { shard_id } => {
                Error::ShardOwnershipLost { shard_id }
            }
            other => Error::Unavailable(other.with_causes()),
        }
    }
}

impl From<crate::state::StateError> for Error {
    fn from(e: crate::state::StateError) -> Self {
        match e {
            crate::state::StateError::NotFound(m) => Error::NotFound(m),
            crate::state::StateError::Invalid(m) => Error::Invalid(m),
        }
    }
}
