//! Kairos persistence: the store contract every backend implements (the [`Store`] trait, the
//! row types that cross it, the errors callers branch on) and, behind the `conformance`
//! feature, the suite that defines what a store must do. Callers hand the store one
//! [`WriteBatch`] per state transition; a backend commits it atomically (all rows or none) or
//! reports why not. Backends live in their own crates (`kairos-persistence-sqlite`,
//! `kairos-persistence-postgres`).

#[cfg(feature = "conformance")]
pub mod conformance;
mod error;

use async_trait::async_trait;

pub use error::{Error, Result};

/// How [`Store::put_namespace`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutNamespace {
    /// Creates it; `AlreadyExists` if the name or id is taken.
    Create,
    /// Overwrites the stored namespace of that id.
    Replace,
}

/// A namespace as stored: its id and name as columns, everything else in an opaque blob.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceRow {
    /// Stable id (a UUID).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Encoded namespace record, owned by the caller.
    pub data: Vec<u8>,
}

/// The mutable state of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionRow {
    /// Owning shard.
    pub shard_id: i32,
    /// Version counter every update is conditioned on.
    pub db_version: i64,
    /// Encoded mutable state, owned by the caller.
    pub state: Vec<u8>,
}

/// The pointer from a workflow id to its latest run.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentRow {
    /// The latest run.
    pub run_id: String,
    /// Encoded facts about that run the start path needs (status, start request id).
    pub data: Vec<u8>,
}

/// A durable timer: fires at `fire_at_ms`, identified by `task_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerTask {
    /// Unique id (allocated by the shard owner).
    pub task_id: i64,
    /// Owning shard.
    pub shard_id: i32,
    /// When it fires, in milliseconds since the epoch.
    pub fire_at_ms: i64,
    /// The run it belongs to.
    pub namespace_id: String,
    /// The workflow it belongs to.
    pub workflow_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Encoded timer kind, owned by the caller.
    pub data: Vec<u8>,
}

/// What identifies a stored timer of a shard: timers are kept in fire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerKey {
    /// When it fires, in milliseconds since the epoch.
    pub fire_at_ms: i64,
    /// Its id.
    pub task_id: i64,
}

impl TimerTask {
    /// The key to delete this timer by.
    pub fn key(&self) -> TimerKey {
        TimerKey {
            fire_at_ms: self.fire_at_ms,
            task_id: self.task_id,
        }
    }
}

/// A durable task waiting to be handed to a worker (the transactional outbox and the matching
/// backlog in one row).
#[derive(Debug, Clone, PartialEq)]
pub struct TransferTask {
    /// Unique id (allocated by the shard owner).
    pub task_id: i64,
    /// Owning shard.
    pub shard_id: i32,
    /// The run it belongs to.
    pub namespace_id: String,
    /// The workflow it belongs to.
    pub workflow_id: String,
    /// The run it belongs to.
    pub run_id: String,
    /// Encoded task, owned by the caller.
    pub data: Vec<u8>,
}

/// How one transaction changes a run's mutable state.
#[derive(Debug, Clone)]
pub enum ExecutionWrite {
    /// Create the run; fails with `AlreadyExists` if it exists.
    Insert {
        /// The state.
        state: Vec<u8>,
    },
    /// Replace the state if the stored version is still `expected_version`; the new version is
    /// `expected_version + 1`.
    Update {
        /// The state.
        state: Vec<u8>,
        /// The version read before the change.
        expected_version: i64,
    },
    /// Remove the run and its history.
    Delete,
}

/// How one transaction moves the current-run pointer of a workflow id.
#[derive(Debug, Clone)]
pub enum CurrentWrite {
    /// Point at `run_id`, if the pointer is still `expected_run_id` (`None`: must not exist).
    Set {
        /// The new current run.
        run_id: String,
        /// What the pointer must hold now.
        expected_run_id: Option<String>,
        /// Encoded facts of the run.
        data: Vec<u8>,
    },
    /// Remove the pointer if it still points at `run_id`.
    DeleteIf {
        /// The run that must be current.
        run_id: String,
    },
}

/// Everything one state transition writes, committed atomically and fenced by the shard lease.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// The shard all rows belong to.
    pub shard_id: i32,
    /// The lease the writer holds; the commit fails with `ShardOwnershipLost` if it moved on.
    pub range_id: i64,
    /// Namespace of the workflow.
    pub namespace_id: String,
    /// The workflow id.
    pub workflow_id: String,
    /// Mutable-state changes, by run id.
    pub executions: Vec<(String, ExecutionWrite)>,
    /// Current-run pointer change.
    pub current: Option<CurrentWrite>,
    /// New history events: (run id, event id, encoded event). Consecutive events of one run are
    /// stored together (a bounded number per row); reads return them one by one.
    pub events: Vec<(String, i64, Vec<u8>)>,
    /// Timers to add.
    pub timers_add: Vec<TimerTask>,
    /// Timers to remove.
    pub timers_delete: Vec<TimerKey>,
    /// Transfer tasks to add.
    pub transfers_add: Vec<TransferTask>,
    /// Transfer tasks to remove, by task id.
    pub transfers_delete: Vec<i64>,
    /// Visibility rows to write or remove, in the same transaction as the state change.
    pub visibility: Vec<VisibilityWrite>,
    /// When the commit may be answered.
    pub durability: Durability,
}

/// When a commit is answered: after its transaction is on stable storage, or as soon as it is
/// committed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// Answered once the transaction is on stable storage.
    #[default]
    Synced,
    /// Answered once the transaction is committed (every later read and write sees it), maybe
    /// before it is on stable storage. Every later synced commit covers it (logs are synced in
    /// order); a crash of the machine (or of the database server) before that may lose it, a
    /// crash of the Kairos process may not. Only for writes whose loss a restart repairs: a
    /// task's start, whose task row stays until the start is recorded.
    Committed,
}

/// A change to the visibility record of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum VisibilityWrite {
    /// The record of a new run (and its search-attribute index rows).
    Insert(Box<VisibilityRow>),
    /// Insert or replace the run's record (and its search-attribute index rows).
    Upsert(Box<VisibilityRow>),
    /// Change the run's record but not its search-attribute index rows (they did not change).
    Update(Box<VisibilityRow>),
    /// Remove the run's record.
    Delete { run_id: String },
}

/// What list and count queries see of a run. Times are epoch nanoseconds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VisibilityRow {
    pub run_id: String,
    pub workflow_id: String,
    pub workflow_type: String,
    pub task_queue: String,
    /// `WorkflowExecutionStatus` as an int.
    pub status: i32,
    pub start_time_ns: i64,
    pub execution_time_ns: i64,
    pub close_time_ns: Option<i64>,
    pub execution_duration_ns: Option<i64>,
    pub history_length: i64,
    pub history_size_bytes: i64,
    pub state_transition_count: i64,
    pub parent_workflow_id: Option<String>,
    pub parent_run_id: Option<String>,
    pub root_workflow_id: Option<String>,
    pub root_run_id: Option<String>,
    pub first_run_id: String,
    /// Encoded memo and search attributes, returned as they are.
    pub memo: Vec<u8>,
    pub search_attributes: Vec<u8>,
    /// Index rows of the search attributes: (name, value); a keyword list gives one row per
    /// element. Not filled on reads.
    pub attributes: Vec<(String, kairos_core::filter::Value)>,
}

/// Where a page of a list ends: the sort key of its last row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisibilityCursor {
    /// Close time, or `i64::MAX` for a running workflow (they come first).
    pub sort_close: i64,
    pub start_time_ns: i64,
    pub run_id: String,
}

impl VisibilityRow {
    /// This row's sort key.
    pub fn cursor(&self) -> VisibilityCursor {
        VisibilityCursor {
            sort_close: self.close_time_ns.unwrap_or(i64::MAX),
            start_time_ns: self.start_time_ns,
            run_id: self.run_id.clone(),
        }
    }
}

/// A shard's lease as its holder took it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLease {
    /// The shard.
    pub shard_id: i32,
    /// The lease number, bumped by every start.
    pub range_id: i64,
    /// The highest task id the shard has stored (0 if none).
    pub max_task_id: i64,
}

/// What a store has done since it opened (for metrics and the benchmark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounters {
    /// Transactions committed that carried batches.
    pub commits: u64,
    /// Waits for stable storage: log syncs, or commits waiting for the database's log flush.
    pub syncs: u64,
}

/// A node of a cluster as the membership table holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    /// The node's name, unique in the cluster.
    pub name: String,
    /// Where clients reach it (its frontend).
    pub rpc_address: String,
    /// Where other nodes reach it (`kairos.internal.v1.NodeService`).
    pub internal_address: String,
    /// Chosen at random by each process as it starts: two processes claiming one name differ
    /// here.
    pub session: i64,
    /// The roles it runs (`frontend`, `history`, `matching`, `worker`), in that order.
    pub services: Vec<String>,
}

fn no_membership() -> Error {
    Error::Unavailable {
        message: "this store keeps no cluster membership: a cluster runs on PostgreSQL".into(),
        source: None,
    }
}

/// A persistence backend. Every method is one atomic operation.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Commits one state transition.
    async fn commit(&self, batch: WriteBatch) -> Result<()>;
    /// Takes the shards `shard_ids` (any subset: a node holds the shards given to it) by
    /// bumping each one's lease, all in one transaction; returns, in the order asked, each
    /// shard's new `range_id` and the highest task id it has stored (0 if none). From then on
    /// every batch made under an older `range_id` of those shards is refused.
    async fn acquire_shards(&self, shard_ids: &[i32]) -> Result<Vec<ShardLease>>;
    /// Confirms `lease` is still the shard's: `ShardOwnershipLost` once another holder has
    /// acquired it since. A holder calls it now and then, so it learns of a lost shard while
    /// it has nothing to commit. (Releasing needs no write: the next holder's acquire fences.)
    async fn renew_shard(&self, lease: ShardLease) -> Result<()>;
    /// Reads one run's mutable state.
    async fn get_execution(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<Option<ExecutionRow>>;
    /// Reads the current-run pointer of a workflow id.
    async fn get_current(
        &self,
        namespace_id: &str,
        workflow_id: &str,
    ) -> Result<Option<CurrentRow>>;
    /// Reads events `first..` of a run in order, at most `limit` of them.
    async fn read_events(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        first: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>>;
    /// Called once the server's start-up reads and writes (leases, the namespaces it creates,
    /// the timer and task scans) are done, just before it serves. Writes before it answer
    /// nobody, so a backend may make them durable with the first write after it rather than on
    /// their own (SQLite does; a crash in between loses only what the next start writes again).
    fn start_serving(&self) -> Result<()> {
        Ok(())
    }
    /// Called once serving has stopped: leaves the store tidy for the next start (SQLite folds
    /// its write-ahead log into the file). The store stays usable.
    async fn close(&self) -> Result<()>;
    /// The store's kind as GetClusterInfo names it (`sqlite`, `postgres12`).
    fn kind(&self) -> &'static str;
    /// What the store has done since it opened.
    fn counters(&self) -> StoreCounters {
        StoreCounters::default()
    }
    /// Hands every stored timer of the shards `shard_ids` to `each`, in fire order, one row at
    /// a time: with many open workflows the rows never sit in memory all at once beside
    /// whatever `each` keeps of them. Read when shards are acquired (as is `load_transfers`;
    /// `list_namespaces` once at start): before serving, the SQLite store reads these on its
    /// writer connection, open and idle then, rather than open a reader connection.
    async fn scan_timers(
        &self,
        shard_ids: &[i32],
        each: Box<dyn FnMut(TimerTask) + Send>,
    ) -> Result<()>;
    /// Every stored timer of the shards `shard_ids`, in fire order (see `scan_timers`).
    async fn load_timers(&self, shard_ids: &[i32]) -> Result<Vec<TimerTask>> {
        let all = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = all.clone();
        self.scan_timers(shard_ids, Box::new(move |timer| sink.lock().push(timer)))
            .await?;
        let mut all = all.lock();
        Ok(std::mem::take(&mut *all))
    }
    /// Every stored transfer task of the shards `shard_ids`, in (shard, id) order.
    async fn load_transfers(&self, shard_ids: &[i32]) -> Result<Vec<TransferTask>>;
    /// Creates a namespace (`AlreadyExists` on a taken name) or overwrites it, as `how` says.
    async fn put_namespace(&self, row: NamespaceRow, how: PutNamespace) -> Result<()>;
    /// Reads every namespace. Read as the server starts.
    async fn list_namespaces(&self) -> Result<Vec<NamespaceRow>>;
    /// Reads a cluster metadata value.
    async fn get_metadata(&self, key: &str) -> Result<Option<Vec<u8>>>;
    /// Writes a cluster metadata value.
    async fn put_metadata(&self, key: &str, value: Vec<u8>) -> Result<()>;
    /// Writes `value` under `key` unless a value is there already; returns the value stored
    /// (the first writer's, when two race).
    async fn claim_metadata(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        if let Some(stored) = self.get_metadata(key).await? {
            return Ok(stored);
        }
        self.put_metadata(key, value.clone()).await?;
        Ok(value)
    }
    /// Records that `member` is alive now (by the database's clock), creating its row.
    async fn heartbeat_member(&self, member: &MemberRow) -> Result<()> {
        let _ = member;
        Err(no_membership())
    }
    /// The members whose last heartbeat is at most `within` old (by the database's clock), by
    /// name.
    async fn live_members(&self, within: std::time::Duration) -> Result<Vec<MemberRow>> {
        let _ = within;
        Err(no_membership())
    }
    /// Removes `name`'s row if it is still the one of `session` (a node leaving cleanly).
    async fn remove_member(&self, name: &str, session: i64) -> Result<()> {
        let _ = (name, session);
        Err(no_membership())
    }
    /// Lists a namespace's runs matching `filter`, newest first (running first, then by close
    /// time, start time and run id, all descending), after `after`, at most `limit`.
    async fn list_visibility(
        &self,
        namespace_id: &str,
        filter: &kairos_core::filter::Filter,
        after: Option<VisibilityCursor>,
        limit: usize,
    ) -> Result<Vec<VisibilityRow>>;
    /// Counts a namespace's runs matching `filter`; with `by_status`, one count per status.
    async fn count_visibility(
        &self,
        namespace_id: &str,
        filter: &kairos_core::filter::Filter,
        by_status: bool,
    ) -> Result<Vec<(Option<i32>, i64)>>;
}
