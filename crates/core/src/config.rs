//! Configuration types shared by the roles. Defaults follow the Go Temporal server's.
use std::time::Duration;

/// Request limits, defaulting to Temporal's dynamic-config defaults.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single payload blob accepted (`limit.blobSize.error`).
    pub blob_size: usize,
    /// Payloads past this size are logged (`limit.blobSize.warn`).
    pub blob_size_warn: usize,
    /// Largest memo (`limit.memoSize.error`).
    pub memo_size: usize,
    /// Memos past this size are logged at debug level (`limit.memoSize.warn`).
    pub memo_size_warn: usize,
    /// Longest id or name (`limit.maxIDLength`).
    pub max_id_length: usize,
    /// Events per history page unless the client asks for fewer.
    pub history_page_size: i32,
    /// Events a history may hold before the workflow is terminated (`limit.historyCount.error`).
    pub history_count: i64,
    /// Bytes a history may hold before the workflow is terminated (`limit.historySize.error`).
    pub history_size: i64,
    /// Events after which workflow tasks suggest continue-as-new
    /// (`limit.historyCount.suggestContinueAsNew`).
    pub history_count_suggest_continue_as_new: i64,
    /// Bytes after which workflow tasks suggest continue-as-new
    /// (`limit.historySize.suggestContinueAsNew`).
    pub history_size_suggest_continue_as_new: i64,
    /// Pending activities one run may have (`limit.numPendingActivities.error`).
    pub pending_activities: usize,
    /// Pending child workflows one run may have (`limit.numPendingChildExecutions.error`).
    pub pending_children: usize,
    /// Signals to other workflows one run may have in flight (`limit.numPendingSignals.error`).
    pub pending_signals: usize,
    /// Cancel requests to other workflows one run may have in flight
    /// (`limit.numPendingCancelRequests.error`).
    pub pending_cancel_requests: usize,
    /// Signals one run may receive (`history.maximumSignalsPerExecution`).
    pub signals_per_execution: usize,
    /// Largest gRPC request, all its messages together after inflating a compressed one
    /// (`limit.grpcRequestSize.error`, Kairos's own key: the reference keeps gRPC's 4 MiB
    /// default, which is this one's default too).
    pub request_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            blob_size: 2 * 1024 * 1024,
            blob_size_warn: 512 * 1024,
            memo_size: 2 * 1024 * 1024,
            memo_size_warn: 2 * 1024,
            max_id_length: 1000,
            history_page_size: 256,
            history_count: 51_200,
            history_size: 50 * 1024 * 1024,
            history_count_suggest_continue_as_new: 4 * 1024,
            history_size_suggest_continue_as_new: 4 * 1024 * 1024,
            pending_activities: 2000,
            pending_children: 2000,
            pending_signals: 2000,
            pending_cancel_requests: 2000,
            signals_per_execution: 10_000,
            request_size: 4 * 1024 * 1024,
        }
    }
}

/// The dynamic-config keys of the reference server that set a [`Limits`] field.
pub const LIMIT_KEYS: &[&str] = &[
    "limit.blobSize.error",
    "limit.blobSize.warn",
    "limit.memoSize.error",
    "limit.memoSize.warn",
    "limit.maxIDLength",
    "limit.historyCount.error",
    "limit.historySize.error",
    "limit.historyCount.suggestContinueAsNew",
    "limit.historySize.suggestContinueAsNew",
    "limit.numPendingActivities.error",
    "limit.numPendingChildExecutions.error",
    "limit.numPendingSignals.error",
    "limit.numPendingCancelRequests.error",
    "history.maximumSignalsPerExecution",
    "limit.grpcRequestSize.error",
];

impl Limits {
    /// Sets the limit the reference server calls `key` (see [`LIMIT_KEYS`]) to `value`, a
    /// positive integer. `Ok(false)` for a key that is not a limit, so callers can accept the
    /// reference's other dynamic-config keys and say they are ignored.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool, String> {
        if !LIMIT_KEYS.contains(&key) {
            return Ok(false);
        }
        let n: i64 = value
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("{key} needs a positive integer, got {value:?}"))?;
        let as_usize = n as usize;
        match key {
            "limit.blobSize.error" => self.blob_size = as_usize,
            "limit.blobSize.warn" => self.blob_size_warn = as_usize,
            "limit.memoSize.error" => self.memo_size = as_usize,
            "limit.memoSize.warn" => self.memo_size_warn = as_usize,
            "limit.maxIDLength" => self.max_id_length = as_usize,
            "limit.historyCount.error" => self.history_count = n,
            "limit.historySize.error" => self.history_size = n,
            "limit.historyCount.suggestContinueAsNew" => {
                self.history_count_suggest_continue_as_new = n
            }
            "limit.historySize.suggestContinueAsNew" => {
                self.history_size_suggest_continue_as_new = n
            }
            "limit.numPendingActivities.error" => self.pending_activities = as_usize,
            "limit.numPendingChildExecutions.error" => self.pending_children = as_usize,
            "limit.numPendingSignals.error" => self.pending_signals = as_usize,
            "limit.numPendingCancelRequests.error" => self.pending_cancel_requests = as_usize,
            "history.maximumSignalsPerExecution" => self.signals_per_execution = as_usize,
            "limit.grpcRequestSize.error" => self.request_size = as_usize,
            _ => unreachable!("every key of LIMIT_KEYS is handled"),
        }
        Ok(true)
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
    /// Runs whose mutable state history keeps in memory (`history.cacheMaxSize`).
    pub cache_size: usize,
    /// Hand activities a worker asks to run eagerly back in its workflow task completion answer
    /// (`system.enableActivityEagerExecution`; off by default, as in the reference server).
    pub eager_activities: bool,
    /// Start a workflow's first task inside its start when the client asks
    /// (`system.enableEagerWorkflowStart`, on by default as in the reference since 1.29).
    pub eager_workflow_start: bool,
    /// Runs of one workflow id started by continue-as-new or a retry are at least this far
    /// apart: a shorter-lived run's successor waits out the rest as a start backoff
    /// (`history.continueAsNewMinInterval`, 1 s as in the reference).
    pub continue_as_new_min_interval: Duration,
    /// How often a server confirms the leases of the shards it holds, so one that another
    /// server took is given up even while nothing is committed on it.
    pub shard_renew_interval: Duration,
    /// How long a worker's last heartbeat keeps it in `ListWorkers`
    /// (`matching.workerRegistryEntryTTL`, 5 min as in the reference).
    pub worker_heartbeat_ttl: Duration,
    /// Worker heartbeats kept at most, all namespaces together
    /// (`matching.workerRegistryMaxEntries`).
    pub worker_heartbeat_max_entries: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            long_poll_timeout: Duration::from_secs(60),
            history_long_poll_timeout: Duration::from_secs(20),
            sticky_poller_idle: Duration::from_secs(10),
            shard_count: 4,
            default_retention: Duration::from_secs(30 * 24 * 3600),
            cache_size: 10_000,
            eager_activities: false,
            eager_workflow_start: true,
            continue_as_new_min_interval: Duration::from_secs(1),
            shard_renew_interval: Duration::from_secs(10),
            worker_heartbeat_ttl: Duration::from_secs(300),
            worker_heartbeat_max_entries: 1_000_000,
            limits: Limits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_set_by_their_reference_names() {
        let mut l = Limits::default();
        assert_eq!(l.history_count, 51_200);
        for key in LIMIT_KEYS {
            assert_eq!(l.set(key, "77"), Ok(true), "{key}");
        }
        assert_eq!(l.history_count, 77);
        assert_eq!(l.blob_size, 77);
        assert_eq!(l.pending_activities, 77);
        assert_eq!(
            l.set("frontend.enableUpdateWorkflowExecution", "true"),
            Ok(false)
        );
        assert!(l.set("limit.historyCount.error", "lots").is_err());
        assert!(l.set("limit.historyCount.error", "0").is_err());
        assert_eq!(l.history_count, 77, "a rejected value changes nothing");
    }
}
