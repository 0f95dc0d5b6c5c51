//! The history engine: runs the state machine against the store. Each input locks its run,
//! applies one [`Transition`] to a copy of the cached mutable state, commits everything the
//! transition produced in one fenced, version-conditioned transaction, and only then updates
//! the cache, hands transfer tasks to matching, arms timers and answers the caller.

mod answers;
mod cache;
mod children;
mod commit;
mod describe;
mod external;
mod operations;
mod plan;
mod reads;
mod remote;
mod reset;
mod runs;
mod shards;
mod start;
mod tasks;
mod timers;
mod updates;
pub mod visibility;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use kairos_core::api::{Handoff, QueuedTask, Reservation, TaskKind, TaskSink};
use kairos_core::ids::{RunKey, shard_for};
use kairos_core::time::{from_millis, from_pb_duration, to_millis, to_pb_duration, to_timestamp};
use kairos_core::wire::PollWorkflowTaskAnswer;
use kairos_core::{Clock, Limits};
use kairos_persistence::{Durability, ShardLease, Store, TimerKey, TimerTask, TransferTask};
use parking_lot::Mutex;
use prost::Message;
use temporalio_protos::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use temporalio_protos::temporal::api::enums::v1::{
    ContinueAsNewInitiator, EventType, TaskQueueKind, WorkflowExecutionStatus,
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
};
use temporalio_protos::temporal::api::history::v1::{
    HistoryEvent, WorkflowExecutionStartedEventAttributes,
};
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::namespace::{Namespace, Namespaces};
use crate::state::{
    CounterIds, CurrentData, Env, MutableState, Signal, StateError, TaskIds, TaskTokenData,
    TimerChanges, TransferData, TransferKind, Transition, settle_timers,
};
use crate::token;

use answers::*;
use cache::*;
use commit::*;
use external::*;
use plan::*;
use runs::*;
use shards::*;

pub use reads::{HistoryPage, RunProgress};
pub use remote::{RemoteRuns, RunOp, RunOpOutcome};
pub use tasks::ActivityTarget;

/// Options of the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Number of history shards.
    pub shard_count: i32,
    /// Request limits.
    pub limits: Limits,
    /// How long history long polls wait.
    pub history_long_poll_timeout: Duration,
    /// Runs whose mutable state is kept in memory; the oldest unused ones are dropped past it
    /// (and read back from the store when needed again).
    pub cache_size: usize,
    /// Start eagerly requested activities inside the workflow task completion.
    pub eager_activities: bool,
    /// Start a workflow's first task inside its start when the client asks.
    pub eager_workflow_start: bool,
    /// Minimum time between the starts of a run and the run continuing it.
    pub continue_as_new_min_interval: Duration,
    /// How often the held shards' leases are confirmed with the store.
    pub shard_renew_interval: Duration,
    /// Take every shard at start (one node). A node of a cluster starts with none and takes
    /// the ones its membership gives it (`acquire_shards`).
    pub hold_every_shard: bool,
}

type WorkflowLock = Arc<tokio::sync::Mutex<()>>;

/// The history engine (cheap clone).
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    options: EngineOptions,
    namespaces: Namespaces,
    matching: Arc<dyn TaskSink>,
    shards: Shards,
    /// Shards being acquired: their timers are queued before their leases are installed, and
    /// one that comes due in between is retried rather than dropped as another node's.
    acquiring: Mutex<HashSet<i32>>,
    /// The way to runs other nodes hold (a node of a cluster).
    remote: std::sync::OnceLock<Arc<dyn remote::RemoteRuns>>,
    runs: Mutex<RunCache>,
    workflow_locks: Mutex<HashMap<(String, String), WorkflowLock>>,
    watchers: Mutex<HashMap<RunKey, watch::Sender<RunProgress>>>,
    timers: Arc<timers::Queue>,
    /// This cluster's id, made once and kept in the store's metadata.
    cluster_id: tokio::sync::OnceCell<String>,
}

/// What a start request did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StartOutcome {
    /// The run that holds the workflow id now.
    pub run_id: String,
    /// False when an existing run was returned (dedup or USE_EXISTING).
    pub started: bool,
    /// The first workflow task, started for the caller's own worker (eager start).
    pub eager_task: Option<Box<ws::PollWorkflowTaskQueueResponse>>,
}

struct TaskIdsRef<'a>(&'a Mutex<CounterIds>);

impl TaskIds for TaskIdsRef<'_> {
    fn next_task_id(&mut self) -> i64 {
        self.0.lock().next_task_id()
    }

    fn new_run_id(&mut self) -> String {
        // The run continuing another (continue-as-new, a retry, cron): random (version 4), as
        // the reference makes it; a started run's id is time-ordered (`start.rs`).
        uuid::Uuid::new_v4().to_string()
    }
}

fn status_closed(status: i32) -> bool {
    status != WorkflowExecutionStatus::Running as i32
}

/// Transfer tasks history carries out itself (the rest go to matching).
fn handled_by_history(kind: i32) -> bool {
    [
        TransferKind::External as i32,
        TransferKind::StartChild as i32,
        TransferKind::CloseExecution as i32,
    ]
    .contains(&kind)
}

fn decode_state(bytes: &[u8]) -> Result<MutableState> {
    MutableState::decode(bytes)
        .map_err(|e| Error::Unavailable(format!("failed to decode mutable state: {e}")))
}

impl Engine {
    /// Takes every shard (see `acquire_shards`) and starts the timer loop and the lease
    /// renewals.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        options: EngineOptions,
        namespaces: Namespaces,
        matching: Arc<dyn TaskSink>,
    ) -> Result<Self> {
        let engine = Engine {
            inner: Arc::new(Inner {
                store: store.clone(),
                clock,
                options,
                namespaces,
                matching,
                shards: Shards::default(),
                acquiring: Mutex::new(HashSet::new()),
                remote: std::sync::OnceLock::new(),
                runs: Mutex::new(RunCache::default()),
                workflow_locks: Mutex::new(HashMap::new()),
                watchers: Mutex::new(HashMap::new()),
                timers: Arc::new(timers::Queue::default()),
                cluster_id: tokio::sync::OnceCell::new(),
            }),
        };
        if engine.inner.options.hold_every_shard {
            let every_shard: Vec<i32> = (0..engine.inner.options.shard_count).collect();
            engine.acquire_shards(&every_shard).await?;
        }
        tokio::spawn(timers::run(engine.clone()));
        tokio::spawn(shards::renew(
            engine.clone(),
            engine.inner.options.shard_renew_interval,
        ));
        Ok(engine)
    }

    /// The namespace registry.
    pub fn namespaces(&self) -> &Namespaces {
        &self.inner.namespaces
    }

    /// The clock the engine runs on.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    fn shard_of(&self, namespace_id: &str, workflow_id: &str) -> i32 {
        shard_for(namespace_id, workflow_id, self.inner.options.shard_count)
    }

    fn dispatch_row(&self, task: &TransferTask) {
        self.dispatch_row_if(task, |_| true)
    }

    /// `dispatch_row` for rows whose kind passes `wanted`.
    fn dispatch_row_if(&self, task: &TransferTask, wanted: impl Fn(i32) -> bool) {
        let Ok(data) = TransferData::decode(task.data.as_slice()) else {
            tracing::error!(
                task_id = task.task_id,
                "failed to decode a transfer task; skipped"
            );
            return;
        };
        if !wanted(data.kind) {
            return;
        }
        if handled_by_history(data.kind) {
            let engine = self.clone();
            let source = RunKey {
                namespace_id: task.namespace_id.clone(),
                workflow_id: task.workflow_id.clone(),
                run_id: task.run_id.clone(),
            };
            let event_id = data.scheduled_event_id;
            let (shard_id, task_id, kind) = (task.shard_id, task.task_id, data.kind);
            tokio::spawn(async move {
                // Transient failures (a busy store, a conflicting write) are retried.
                let mut delay = Duration::from_millis(200);
                loop {
                    let outcome = if kind == TransferKind::External as i32 {
                        engine.deliver_external(&source, event_id).await
                    } else if kind == TransferKind::StartChild as i32 {
                        engine.start_child(&source, event_id).await
                    } else {
                        engine.close_execution(&source).await
                    };
                    match outcome {
                        Delivery::Done => return,
                        Delivery::DropTask => {
                            engine.drop_transfer(&source, shard_id, task_id).await;
                            return;
                        }
                        Delivery::Retry => {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            });
            return;
        }
        let kind = if data.kind == TransferKind::ActivityTask as i32 {
            TaskKind::Activity
        } else {
            TaskKind::Workflow
        };
        self.inner.matching.add_task(QueuedTask {
            namespace_id: task.namespace_id.clone(),
            task_queue: data.task_queue,
            kind,
            task_id: task.task_id,
            shard_id: task.shard_id,
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
            scheduled_event_id: data.scheduled_event_id,
            attempt: data.attempt,
            query_id: String::new(),
        });
    }

    fn slot(&self, key: &RunKey) -> RunSlot {
        self.inner
            .runs
            .lock()
            .slot(key, self.inner.options.cache_size)
    }

    /// Number of runs whose state is cached (for tests and metrics).
    pub fn cached_runs(&self) -> usize {
        self.inner.runs.lock().len()
    }

    fn workflow_lock(&self, namespace_id: &str, workflow_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.workflow_locks.lock();
        // Drop the locks nobody holds once there are many: they only guard starts.
        if locks.len() > self.inner.options.cache_size {
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        locks
            .entry((namespace_id.to_string(), workflow_id.to_string()))
            .or_default()
            .clone()
    }

    async fn load(&self, key: &RunKey, slot: &mut Option<Cached>) -> Result<()> {
        if slot.is_none() {
            // The lease held before the read: a copy read under it is current under it.
            let lease = self
                .shard(self.shard_of(&key.namespace_id, &key.workflow_id))
                .map_or(0, |shard| shard.range_id);
            let row = self
                .inner
                .store
                .get_execution(&key.namespace_id, &key.workflow_id, &key.run_id)
                .await?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "workflow execution not found for run {}",
                        key.run_id
                    ))
                })?;
            let mut cached = Cached::new(decode_state(&row.state)?, row.db_version, Vec::new());
            cached.lease = lease;
            *slot = Some(cached);
        }
        Ok(())
    }

    /// Reads a run's mutable state (from cache when possible).
    pub async fn read_state(&self, key: &RunKey) -> Result<MutableState> {
        // A run that is not cached is read without caching it: reads of closed runs (result
        // long polls, describe) must not refill the cache that closing just emptied.
        let existing = self.inner.runs.lock().get(key);
        let Some(slot) = existing else {
            let mut fresh = None;
            self.load(key, &mut fresh).await?;
            return Ok(fresh.expect("loaded").ms);
        };
        let mut guard = slot.lock().await;
        self.load(key, &mut guard).await?;
        Ok(guard.as_ref().expect("loaded").ms.clone())
    }

    /// Resolves an empty run id to the current run of the workflow id.
    pub async fn resolve_run(
        &self,
        ns: &Namespace,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<RunKey> {
        if !run_id.is_empty() {
            return Ok(RunKey {
                namespace_id: ns.id.clone(),
                workflow_id: workflow_id.to_string(),
                run_id: run_id.to_string(),
            });
        }
        let current = self
            .inner
            .store
            .get_current(&ns.id, workflow_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("workflow not found for ID: {workflow_id}")))?;
        Ok(RunKey {
            namespace_id: ns.id.clone(),
            workflow_id: workflow_id.to_string(),
            run_id: current.run_id,
        })
    }

    /// The registered custom search attributes of a namespace (by id).
    fn custom_attributes(&self, namespace_id: &str) -> Arc<HashMap<String, i32>> {
        self.inner
            .namespaces
            .get_by_id(namespace_id)
            .map(|n| n.custom_search_attributes.clone())
            .unwrap_or_default()
    }

    fn env_for(&self, ms: &MutableState) -> Env {
        let sticky_alive = !ms.sticky_task_queue.is_empty()
            && self.inner.matching.has_recent_poller(
                &ms.namespace_id,
                &ms.sticky_task_queue,
                TaskKind::Workflow,
            );
        let retention = self
            .inner
            .namespaces
            .get_by_id(&ms.namespace_id)
            .map(|n| n.retention())
            .unwrap_or(Duration::from_secs(30 * 86400));
        Env {
            sticky_alive,
            retention,
            max_pending_activities: self.inner.options.limits.pending_activities,
            max_pending_children: self.inner.options.limits.pending_children,
            max_pending_signals: self.inner.options.limits.pending_signals,
            max_pending_cancels: self.inner.options.limits.pending_cancel_requests,
            max_signals: self.inner.options.limits.signals_per_execution,
            search_attributes: self
                .inner
                .namespaces
                .get_by_id(&ms.namespace_id)
                .map(|n| (n.name.clone(), n.custom_search_attributes.clone())),
            history: crate::state::HistoryLimits::from_limits(&self.inner.options.limits),
            blob_size_error: self.inner.options.limits.blob_size,
            blob_size_warn: self.inner.options.limits.blob_size_warn,
            memo_size_error: self.inner.options.limits.memo_size,
            memo_size_warn: self.inner.options.limits.memo_size_warn,
        }
    }
}
