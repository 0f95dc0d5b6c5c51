//! Configuration types shared by the roles. Defaults follow the Go Temporal server's.
use std::time::Duration;

/// Request limits, defaulting to Temporal's dynamic-config defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single payload blob accepted (`limit.blobSize.error`).
    pub blob_size: usize,
    /// Largest memo (`limit.memoSize.error`).
    pub memo_size: usize,
    /// Longest id or name (`limit.maxIDLength`).
    pub max_id_length: usize,
    /// Events per history page unless the client asks for fewer.
    pub history_page_size: i32,
    /// Events a history may hold before the workflow is terminated (`limit.historyCount.error`).
    pub history_count: i64,
    /// Pending activities one run may have (`limit.numPendingActivities.error`).
    pub pending_activities: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            blob_size: 2 * 1024 * 1024,
            memo_size: 2 * 1024 * 1024,
            max_id_length: 1000,
            history_page_size: 256,
            history_count: 51_200,
            pending_activities: 2000,
        }
    }
}

/// Timing knobs of the server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// How long a task-queue long poll waits before answering empty.
    pub long_poll_timeout: Duration,
    /// How long history long polls (`wait_new_event`) wait.
    pub history_long_poll_timeout: Duration,
    /// A sticky queue not polled for this long is treated as gone: tasks go to the normal queue.
    pub sticky_poller_idle: Duration,
    /// Number of history shards (fixed for the life of a database).
    pub shard_count: i32,
    /// Retention applied to namespaces created without one.
    pub default_retention: Duration,
    /// Request limits.
    pub limits: Limits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            long_poll_timeout: Duration::from_secs(60),
            history_long_poll_timeout: Duration::from_secs(20),
            sticky_poller_idle: Duration::from_secs(10),
            shard_count: 4,
            default_retention: Duration::from_secs(30 * 24 * 3600),
            limits: Limits::default(),
        }
    }
}
