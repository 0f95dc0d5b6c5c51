//! The persistence error: the cases callers branch on, backend detail kept as a source.

/// Result of a store operation.
pub type Result<T> = std::result::Result<T, Error>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A row the operation needed does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A row the operation would create exists already.
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// A conditional write found a different version than expected.
    #[error("condition failed: {0}")]
    ConditionFailed(String),
    /// The shard lease moved to another owner; this node must stop writing the shard.
    #[error("shard {shard_id} ownership lost")]
    ShardOwnershipLost {
        /// The shard.
        shard_id: i32,
    },
    /// The backend failed (IO, corruption, closed).
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What was being done.
        message: String,
        /// The backend's error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl Error {
    /// Wraps a backend error with what was being done.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl Error {
    /// The error with every cause after it, on one line (`failed to commit: database or disk is
    /// full (sqlite: SQLITE_FULL, code 13)`): what a log line or a client needs to see why.
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }
}
