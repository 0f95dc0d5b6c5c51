//! The history engine: runs the state machine against the store. Each input locks its run,
//! applies one [`Transition`] to a copy of the cached mutable state, commits everything the
//! transition produced in one fenced, version-conditioned transaction, and only then updates
//! the cache, hands transfer tasks to matching, arms timers and answers the caller.

mod children;
mod describe;
mod reset;
mod timers;
pub mod visibility;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kairos_core::api::{Handoff, QueuedTask, Reservation, TaskKind, TaskSink};
use kairos_core::ids::{RunKey, shard_for};
use kairos_core::time::{from_millis, from_pb_duration, to_millis, to_pb_duration, to_timestamp};
use kairos_core::wire::PollWorkflowTaskAnswer;
use kairos_core::{Clock, Limits};
use kairos_persistence::{
    CurrentWrite, ExecutionWrite, Store, TimerKey, TimerTask, TransferTask, VisibilityWrite,
    WriteBatch,
};
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
    /// Minimum time between the starts of a run and the run continuing it.
    pub continue_as_new_min_interval: Duration,
}

/// Cached runs in insertion order, bounded: past the capacity the oldest entries no request is
/// using are dropped. First-in-first-out rather than LRU: a hot run that is dropped only costs
/// one read from the store, and the bookkeeping stays O(1).
#[derive(Default)]
struct RunCache {
    slots: HashMap<RunKey, RunSlot>,
    order: std::collections::VecDeque<RunKey>,
}

impl RunCache {
    fn slot(&mut self, key: &RunKey, capacity: usize) -> RunSlot {
        if let Some(slot) = self.slots.get(key) {
            return slot.clone();
        }
        let slot = RunSlot::default();
        self.slots.insert(key.clone(), slot.clone());
        self.order.push_back(key.clone());
        self.evict(capacity);
        slot
    }

    fn evict(&mut self, capacity: usize) {
        // Each entry is looked at once per call at most, so a cache full of busy runs cannot
        // spin; it just stays over capacity until they are released.
        let mut budget = self.order.len();
        while self.slots.len() > capacity && budget > 0 {
            budget -= 1;
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            match self.slots.get(&oldest) {
                // In use by a request: keep it, look again later.
                Some(slot) if Arc::strong_count(slot) > 1 => self.order.push_back(oldest),
                Some(_) => {
                    self.slots.remove(&oldest);
                }
                None => {}
            }
        }
    }

    fn get(&self, key: &RunKey) -> Option<RunSlot> {
        self.slots.get(key).cloned()
    }

    fn remove(&mut self, key: &RunKey) {
        // The key stays in `order` until it reaches the front (`evict` skips missing keys) or
        // the next compaction, which keeps `order` from growing with removed runs.
        self.slots.remove(key);
        if self.order.len() > 2 * self.slots.len() + 1024 {
            let slots = &self.slots;
            self.order.retain(|k| slots.contains_key(k));
        }
    }

    fn len(&self) -> usize {
        self.slots.len()
    }
}

struct Shard {
    range_id: i64,
    ids: Mutex<CounterIds>,
}

struct Cached {
    ms: MutableState,
    version: i64,
    /// The run's most recent events, ids `tail_first..ms.next_event_id`, so that workflow task
    /// answers (which carry the events since the last completed task) need no store read. Kept
    /// encoded: a decoded `HistoryEvent` is kilobytes (its attribute enum is as large as the
    /// largest variant), the encoded one a hundred bytes or so.
    tail: Vec<Vec<u8>>,
    tail_first: i64,
}

/// Events kept per cached run at most (a run with no completed task for long).
const TAIL_MAX: usize = 512;

impl Cached {
    /// A run's cache entry; `encoded` are its most recent events, ending just before
    /// `ms.next_event_id`.
    fn new(ms: MutableState, version: i64, encoded: Vec<Vec<u8>>) -> Self {
        let mut cached = Cached {
            tail_first: ms.next_event_id - encoded.len() as i64,
            ms,
            version,
            tail: encoded,
        };
        cached.trim_tail();
        cached
    }

    /// Records the events of a committed transition (state already updated), encoded, the first
    /// one's id being `first_id`.
    fn append(&mut self, first_id: i64, encoded: Vec<Vec<u8>>) {
        let expected = self.tail_first + self.tail.len() as i64;
        match encoded.first() {
            Some(_) if first_id == expected => self.tail.extend(encoded),
            Some(_) => {
                // Not contiguous with what is held (should not happen): start over empty.
                self.tail.clear();
                self.tail_first = self.ms.next_event_id;
            }
            None => {}
        }
        self.trim_tail();
    }

    /// Drops events no workflow task answer needs any more, and bounds the tail.
    fn trim_tail(&mut self) {
        let keep_from = (self.ms.last_completed_wft_started_id + 1)
            .max(self.tail_first + self.tail.len() as i64 - TAIL_MAX as i64);
        if keep_from > self.tail_first {
            let drop = ((keep_from - self.tail_first) as usize).min(self.tail.len());
            self.tail.drain(..drop);
            self.tail_first += drop as i64;
        }
    }

    /// Events `first..=last` if all are held.
    fn events(&self, first: i64, last: i64) -> Option<Vec<Vec<u8>>> {
        let end = self.tail_first + self.tail.len() as i64;
        if first < self.tail_first || last >= end || first > last {
            return None;
        }
        let from = (first - self.tail_first) as usize;
        let to = (last - self.tail_first) as usize;
        // Handed out encoded, as they go on the wire (kairos_core::wire).
        Some(self.tail[from..=to].to_vec())
    }
}

type RunSlot = Arc<tokio::sync::Mutex<Option<Cached>>>;
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
    shards: Vec<Shard>,
    runs: Mutex<RunCache>,
    workflow_locks: Mutex<HashMap<(String, String), WorkflowLock>>,
    watchers: Mutex<HashMap<RunKey, watch::Sender<RunProgress>>>,
    timers: Arc<timers::Queue>,
}

/// What a start request did.
#[derive(Debug, Clone, PartialEq)]
pub struct StartOutcome {
    /// The run that holds the workflow id now.
    pub run_id: String,
    /// False when an existing run was returned (dedup or USE_EXISTING).
    pub started: bool,
}

/// A page of history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// The events.
    pub events: Vec<HistoryEvent>,
    /// Where the next page starts; empty when done.
    pub next_page_token: Vec<u8>,
}

/// Position stored in history page tokens.
#[derive(Clone, PartialEq, prost::Message)]
struct PageToken {
    #[prost(string, tag = "1")]
    run_id: String,
    #[prost(int64, tag = "2")]
    next_event_id: i64,
}

struct TaskIdsRef<'a>(&'a Mutex<CounterIds>);

impl TaskIds for TaskIdsRef<'_> {
    fn next_task_id(&mut self) -> i64 {
        self.0.lock().next_task_id()
    }

    fn new_run_id(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
}

fn status_closed(status: i32) -> bool {
    status != WorkflowExecutionStatus::Running as i32
}

fn decode_state(bytes: &[u8]) -> Result<MutableState> {
    MutableState::decode(bytes)
        .map_err(|e| Error::Unavailable(format!("failed to decode mutable state: {e}")))
}

impl Engine {
    /// Takes every shard (bumping its lease), loads pending transfer tasks into matching and
    /// timers into the timer queue, and starts the timer loop.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        options: EngineOptions,
        namespaces: Namespaces,
        matching: Arc<dyn TaskSink>,
    ) -> Result<Self> {
        // Nothing else touches the store yet: the lease write and the two scans run together.
        // Timers go into the queue row by row (one per open workflow, so they are most of the
        // memory a restart needs).
        let timers = Arc::new(timers::Queue::default());
        let queued = timers.clone();
        let (leases, transfers, ()) = tokio::try_join!(
            store.acquire_shards(options.shard_count),
            store.load_transfers(),
            store.scan_timers(Box::new(
                move |timer| queued.push(timers::Queued::of(&timer))
            ))
        )?;
        let mut shards = Vec::new();
        for lease in leases {
            // Task ids grow monotonically per shard: past anything stored and unique per lease.
            let base = lease.max_task_id.max(lease.range_id << 40);
            shards.push(Shard {
                range_id: lease.range_id,
                ids: Mutex::new(CounterIds(base)),
            });
        }
        let engine = Engine {
            inner: Arc::new(Inner {
                store: store.clone(),
                clock,
                options,
                namespaces,
                matching,
                shards,
                runs: Mutex::new(RunCache::default()),
                workflow_locks: Mutex::new(HashMap::new()),
                watchers: Mutex::new(HashMap::new()),
                timers,
            }),
        };
        for task in &transfers {
            engine.dispatch_row(task);
        }
        tokio::spawn(timers::run(engine.clone()));
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
        let Ok(data) = TransferData::decode(task.data.as_slice()) else {
            tracing::error!(
                task_id = task.task_id,
                "failed to decode a transfer task; skipped"
            );
            return;
        };
        let handled_here = [
            TransferKind::External as i32,
            TransferKind::StartChild as i32,
            TransferKind::CloseExecution as i32,
        ];
        if handled_here.contains(&data.kind) {
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
            *slot = Some(Cached::new(
                decode_state(&row.state)?,
                row.db_version,
                Vec::new(),
            ));
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
        }
    }

    /// Applies `f` to the run as one transition and commits it. `extra_timer_delete` removes a
    /// fired timer in the same transaction.
    pub(crate) async fn transact<T>(
        &self,
        key: &RunKey,
        extra_timer_delete: Option<TimerKey>,
        f: impl FnOnce(&mut Transition<'_>) -> std::result::Result<T, StateError>,
    ) -> Result<T> {
        self.transact_then(key, extra_timer_delete, f, None).await
    }

    /// [`Engine::transact`], with `successor` (a run built elsewhere, a reset's) created and
    /// made current in the same transaction.
    async fn transact_then<T>(
        &self,
        key: &RunKey,
        extra_timer_delete: Option<TimerKey>,
        f: impl FnOnce(&mut Transition<'_>) -> std::result::Result<T, StateError>,
        successor: Option<NextRun>,
    ) -> Result<T> {
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        self.load(key, &mut guard).await?;
        let cached = guard.as_mut().expect("loaded");
        let shard_id = self.shard_of(&key.namespace_id, &key.workflow_id);
        let shard = &self.inner.shards[shard_id as usize];
        let mut ms = cached.ms.clone();
        let now = self.inner.clock.now();
        let env = self.env_for(&ms);
        let mut ids = TaskIdsRef(&shard.ids);
        let mut t = Transition::new(&mut ms, now, env, &mut ids);
        let out = f(&mut t)?;
        let handoffs = self.start_for_waiting_pollers(&mut t);
        let Transition {
            events,
            timers,
            transfers,
            transfers_done,
            continued_as_new,
            ..
        } = t;
        let next_run = continued_as_new
            .map(|can| self.next_run(key, &ms, can, now, &mut ids))
            .or(successor);
        if let Some(fired) = extra_timer_delete {
            crate::state::forget_timer(&mut ms, fired.task_id);
        }
        let TimerChanges {
            write: timers,
            delete: timers_obsolete,
        } = settle_timers(&cached.ms, &mut ms, timers);
        let (transfers, transfers_done) = drop_taken_transfers(transfers, transfers_done);
        let unchanged = ms == cached.ms;
        if unchanged
            && events.is_empty()
            && timers.is_empty()
            && transfers.is_empty()
            && transfers_done.is_empty()
        {
            if let Some(timer_id) = extra_timer_delete {
                self.commit_timer_delete(key, shard_id, timer_id).await?;
            }
            return Ok(out);
        }
        ms.state_transition_count += 1;
        ms.last_update_ms = to_millis(now);
        let status_changed = ms.status != cached.ms.status;
        let mut batch = self.batch_for(key, shard_id, shard.range_id);
        batch.executions.push((
            key.run_id.clone(),
            ExecutionWrite::Update {
                state: ms.encode_to_vec(),
                expected_version: cached.version,
            },
        ));
        if status_changed {
            batch.current = Some(CurrentWrite::Set {
                run_id: key.run_id.clone(),
                expected_run_id: Some(key.run_id.clone()),
                data: CurrentData {
                    status: ms.status,
                    start_request_id: ms.start_request_id.clone(),
                }
                .encode_to_vec(),
            });
        }
        self.fill_batch(
            &mut batch,
            key,
            &events,
            &timers,
            &transfers,
            &transfers_done,
        );
        // The events as just encoded for the store, for the run's cache: a copy costs less than
        // encoding them a second time.
        let encoded: Vec<Vec<u8>> = batch.events.iter().map(|(_, _, e)| e.clone()).collect();
        let retagged =
            ms.search_attributes != cached.ms.search_attributes || ms.memo != cached.ms.memo;
        if status_changed || retagged {
            let custom = self.custom_attributes(&key.namespace_id);
            let row = Box::new(visibility::row(&ms, &custom));
            // A close leaves the search attributes as they were: only the record changes.
            batch.visibility.push(if retagged {
                VisibilityWrite::Upsert(row)
            } else {
                VisibilityWrite::Update(row)
            });
        }
        if let Some(next) = &next_run {
            let custom = self.custom_attributes(&key.namespace_id);
            batch
                .visibility
                .push(VisibilityWrite::Insert(Box::new(visibility::row(
                    &next.ms, &custom,
                ))));
            // The next run is created in this same transaction and becomes the current one.
            batch.executions.push((
                next.key.run_id.clone(),
                ExecutionWrite::Insert {
                    state: next.ms.encode_to_vec(),
                },
            ));
            batch.current = Some(CurrentWrite::Set {
                run_id: next.key.run_id.clone(),
                expected_run_id: Some(key.run_id.clone()),
                data: CurrentData {
                    status: next.ms.status,
                    start_request_id: next.ms.start_request_id.clone(),
                }
                .encode_to_vec(),
            });
            self.fill_batch(
                &mut batch,
                &next.key,
                &next.events,
                &next.timers,
                &next.transfers,
                &[],
            );
        }
        if let Some(timer_id) = extra_timer_delete {
            batch.timers_delete.push(timer_id);
        }
        batch
            .timers_delete
            .extend(timers_obsolete.iter().map(|t| TimerKey {
                fire_at_ms: t.fire_at_ms,
                task_id: t.task_id,
            }));
        let timer_rows: Vec<timers::Queued> =
            batch.timers_add.iter().map(timers::Queued::of).collect();
        let transfer_rows = batch.transfers_add.clone();
        match self.inner.store.commit(batch).await {
            Ok(()) => {
                cached.ms = ms;
                cached.version += 1;
                cached.append(events.first().map_or(0, |e| e.event_id), encoded);
                let progress = RunProgress::of(&cached.ms, &events);
                let closed_now = status_changed && crate::state::is_closed(cached.ms.status);
                let answers = self.answers(key, cached, handoffs);
                drop(guard);
                if closed_now {
                    // A closed run is rarely touched again (its close event is read from the
                    // store): free its memory now rather than when it ages out. A request still
                    // holding the old slot commits against the stored version, so it cannot
                    // overwrite anything.
                    self.inner.runs.lock().remove(key);
                }
                for t in &timers_obsolete {
                    self.inner.timers.remove(t.fire_at_ms, shard_id, t.task_id);
                }
                if let Some(next) = next_run {
                    // Only if nobody loaded (and maybe already advanced) it from the store since
                    // the commit: the stored copy is never older than this one.
                    let slot = self.slot(&next.key);
                    let mut held = slot.lock().await;
                    if held.is_none() {
                        *held = Some(Cached::new(next.ms, 1, encode_all(&next.events)));
                    }
                }
                self.after_commit(key, progress, timer_rows, transfer_rows);
                for (poller, answer) in answers {
                    self.hand_over(key, poller, answer).await;
                }
                Ok(out)
            }
            Err(e) => {
                *guard = None;
                tracing::warn!(run = %key, error = %e, "failed to commit a transition");
                Err(e.into())
            }
        }
    }

    /// Starts the workflow and activity tasks this transition created for pollers waiting on
    /// their queues right now, in this same transition: one commit instead of a second one
    /// when the poller takes the task (what the poller's `RecordTaskStarted` would have
    /// written, with its identity). Tasks without a waiting poller are queued as before.
    fn start_for_waiting_pollers(&self, t: &mut Transition<'_>) -> Vec<(Reservation, Started)> {
        let created: Vec<TransferData> = t
            .transfers
            .iter()
            .filter(|(id, data)| {
                (data.kind == TransferKind::WorkflowTask as i32
                    || data.kind == TransferKind::ActivityTask as i32)
                    && !t.transfers_done.contains(id)
            })
            .map(|(_, data)| data.clone())
            .collect();
        let mut started = Vec::new();
        for data in created {
            let kind = if data.kind == TransferKind::ActivityTask as i32 {
                TaskKind::Activity
            } else {
                TaskKind::Workflow
            };
            let Some(poller) =
                self.inner
                    .matching
                    .reserve(&t.ms.namespace_id, &data.task_queue, kind)
            else {
                continue;
            };
            let request_id = uuid::Uuid::new_v4().to_string();
            let outcome = match kind {
                TaskKind::Workflow => t
                    .start_wft(data.scheduled_event_id, poller.identity(), &request_id)
                    .map(|wft| {
                        let messages =
                            t.update_messages(wft.scheduled_event_id, wft.started_event_id);
                        Started::Workflow {
                            run: StartedRun::of(t.ms),
                            wft,
                            messages,
                        }
                    }),
                TaskKind::Activity => t
                    .start_activity(
                        data.scheduled_event_id,
                        data.attempt,
                        poller.identity(),
                        &request_id,
                    )
                    .map(|act| Started::Activity {
                        act,
                        workflow_type: t.ms.workflow_type.clone(),
                        namespace: t.ms.namespace.clone(),
                    }),
            };
            // A task that cannot start is queued; the poller (dropped) waits on.
            if let Ok(outcome) = outcome {
                started.push((poller, outcome));
            }
        }
        started
    }

    /// Answers for the pollers a committed transition started tasks for, from the events the
    /// run's cache now holds.
    fn answers(
        &self,
        key: &RunKey,
        cached: &Cached,
        handoffs: Vec<(Reservation, Started)>,
    ) -> Vec<(Reservation, Answer)> {
        handoffs
            .into_iter()
            .map(|(poller, started)| {
                let answer = match started {
                    Started::Workflow { run, wft, messages } => {
                        let first = workflow_task_first_event(&run, &wft);
                        match cached.events(first, wft.started_event_id) {
                            Some(events) => Answer::Ready(Handoff::Workflow(Box::new(
                                workflow_task(&run, &wft, messages, events),
                            ))),
                            None => Answer::ReadHistory {
                                run,
                                wft,
                                messages,
                                first,
                            },
                        }
                    }
                    Started::Activity {
                        act,
                        workflow_type,
                        namespace,
                    } => Answer::Ready(Handoff::Activity(Box::new(activity_task(
                        key,
                        &act,
                        &workflow_type,
                        &namespace,
                    )))),
                };
                (poller, answer)
            })
            .collect()
    }

    /// Gives a poller the task started for it. If the events it needs are no longer cached
    /// and cannot be read, the poller is let go: the task is started, so it times out and is
    /// retried like a task whose worker vanished.
    async fn hand_over(&self, key: &RunKey, poller: Reservation, answer: Answer) {
        let handoff = match answer {
            Answer::Ready(handoff) => handoff,
            Answer::ReadHistory {
                run,
                wft,
                messages,
                first,
            } => match self.read_events(key, first, wft.started_event_id).await {
                Ok(events) => Handoff::Workflow(Box::new(workflow_task(
                    &run,
                    &wft,
                    messages,
                    encode_all(&events),
                ))),
                Err(e) => {
                    tracing::warn!(run = %key, error = %e, "failed to read a started workflow task's history");
                    return;
                }
            },
        };
        if !poller.deliver(handoff) {
            tracing::debug!(run = %key, "a poller left before its started task reached it");
        }
    }

    /// Builds the run a continue-as-new starts: its state and first events, carrying the
    /// chain (first run id, execution deadline) and the command's inputs.
    fn next_run(
        &self,
        key: &RunKey,
        closing: &MutableState,
        can: crate::state::ContinuedAsNew,
        now: std::time::SystemTime,
        ids: &mut TaskIdsRef<'_>,
    ) -> NextRun {
        let mut a = can.attributes;
        // No tight loops: a successor starts at least the minimum interval after its
        // predecessor started (the reference's rule), the rest waited out as a backoff.
        let lifetime = now
            .duration_since(from_millis(closing.execution_time_ms))
            .unwrap_or_default();
        let asked = kairos_core::time::from_pb_duration(a.backoff_start_interval.as_ref());
        let min = self.inner.options.continue_as_new_min_interval;
        if a.cron_schedule.is_empty() {
            a.cron_schedule = closing.cron_schedule.clone();
        }
        let cron = a.initiator == ContinueAsNewInitiator::CronSchedule as i32;
        if !cron && lifetime + asked < min {
            a.backoff_start_interval = to_pb_duration(min - lifetime);
        }
        if !a.cron_schedule.is_empty() && a.backoff_start_interval.is_none() {
            // A cron workflow continued as new still waits for its next scheduled time.
            a.backoff_start_interval = crate::cron::CronSchedule::parse(&a.cron_schedule)
                .ok()
                .and_then(|c| c.backoff(now, now))
                .and_then(to_pb_duration);
        }
        let req = ws::StartWorkflowExecutionRequest {
            namespace: closing.namespace.clone(),
            workflow_id: key.workflow_id.clone(),
            workflow_type: a.workflow_type.clone(),
            task_queue: a.task_queue.clone(),
            input: a.input.clone(),
            // What is left of the chain's execution timeout (a successor never gets it anew).
            workflow_execution_timeout: if closing.execution_expiration_ms > 0 {
                let left = from_millis(closing.execution_expiration_ms)
                    .duration_since(now)
                    .unwrap_or_default()
                    .max(Duration::from_millis(1));
                to_pb_duration(left)
            } else {
                None
            },
            workflow_run_timeout: a.workflow_run_timeout,
            workflow_task_timeout: a.workflow_task_timeout,
            request_id: uuid::Uuid::new_v4().to_string(),
            retry_policy: a
                .retry_policy
                .clone()
                .or_else(|| closing.retry_policy.clone()),
            memo: a.memo.clone().or_else(|| closing.memo.clone()),
            search_attributes: a
                .search_attributes
                .clone()
                .or_else(|| closing.search_attributes.clone()),
            header: a.header.clone(),
            workflow_start_delay: a.backoff_start_interval,
            cron_schedule: a.cron_schedule.clone(),
            ..Default::default()
        };
        let (mut ms, mut started) = new_run(
            &key.namespace_id,
            &closing.namespace,
            &req,
            &can.new_run_id,
            now,
        );
        ms.first_execution_run_id = closing.first_execution_run_id.clone();
        ms.execution_expiration_ms = closing.execution_expiration_ms;
        ms.attempt = can.attempt;
        started.attempt = can.attempt;
        started.first_execution_run_id = closing.first_execution_run_id.clone();
        started.continued_execution_run_id = key.run_id.clone();
        // A successor states its backoff only when it has one.
        started.first_workflow_task_backoff = a.backoff_start_interval;
        if can.attempt == 1 && a.initiator == ContinueAsNewInitiator::Workflow as i32 {
            // As the reference writes it: a continued run states its run timeout, zero included.
            started.workflow_run_timeout = Some(started.workflow_run_timeout.unwrap_or_default());
        }
        started.initiator = a.initiator;
        started.continued_failure = a.failure.clone();
        started.last_completion_result = a.last_completion_result.clone();
        ms.last_completion_result = a.last_completion_result.clone();
        if let (Some(parent), Some(root)) = (closing.parent.clone(), closing.root.clone()) {
            // The chain stays the parent's child: its last run reports the close.
            set_parent(&mut ms, &mut started, parent, root);
        }
        started.workflow_execution_expiration_time = (closing.execution_expiration_ms > 0)
            .then(|| to_timestamp(from_millis(closing.execution_expiration_ms)));
        let env = self.env_for(&ms);
        let mut t = Transition::new(&mut ms, now, env, ids);
        t.start_workflow(started);
        let Transition {
            events,
            timers,
            transfers,
            ..
        } = t;
        let timers = settle_timers(&MutableState::default(), &mut ms, timers).write;
        ms.state_transition_count = 1;
        NextRun {
            key: RunKey {
                namespace_id: key.namespace_id.clone(),
                workflow_id: key.workflow_id.clone(),
                run_id: can.new_run_id,
            },
            ms,
            events,
            timers,
            transfers,
        }
    }

    /// Delivers a signal or cancel request one run sent to another, then records the result on
    /// the sender. The target's transaction is deduplicated by a request id naming the sender's
    /// initiated event, so a retry after a crash does not signal twice.
    async fn deliver_external(&self, source: &RunKey, initiated: i64) -> Delivery {
        let request = match self.read_state(source).await {
            Ok(ms) => ms
                .external_requests
                .iter()
                .find(|r| r.initiated_event_id == initiated)
                .cloned(),
            Err(Error::NotFound(_)) => return Delivery::DropTask,
            Err(e) => {
                tracing::warn!(run = %source, error = %e, "failed to read a run sending a signal or cancel; retrying");
                return Delivery::Retry;
            }
        };
        let Some(request) = request else {
            return Delivery::Done; // already recorded
        };
        let request_id = format!("{}:{}", source.run_id, initiated);
        let sender = WorkflowExecution {
            workflow_id: source.workflow_id.clone(),
            run_id: source.run_id.clone(),
        };
        let mut limit_reached = false;
        let delivered = match self.inner.namespaces.get(&request.namespace) {
            Err(_) => false,
            Ok(ns) => match self
                .resolve_run(&ns, &request.workflow_id, &request.run_id)
                .await
            {
                Err(Error::NotFound(_)) => false,
                Err(e) => {
                    tracing::warn!(run = %source, error = %e, "failed to find the target of a signal or cancel; retrying");
                    return Delivery::Retry;
                }
                Ok(target) => {
                    let result = if request.cancel {
                        self.transact(&target, None, |t| {
                            t.cancel_source = Some((sender.clone(), initiated));
                            t.request_cancel(&request.reason, "history-service", &request_id)
                        })
                        .await
                    } else {
                        let signal = Signal {
                            name: request.signal_name.clone(),
                            input: request.input.clone(),
                            identity: "history-service".into(),
                            header: request.header.clone(),
                            request_id: request_id.clone(),
                            external: Some(sender.clone()),
                        };
                        self.transact(&target, None, |t| t.signal(signal)).await
                    };
                    match result {
                        Ok(()) => true,
                        Err(Error::NotFound(_)) => false,
                        Err(Error::Invalid(_)) if !request.cancel => {
                            limit_reached = true;
                            false
                        }
                        Err(e) => {
                            tracing::warn!(run = %source, error = %e, "failed to deliver a signal or cancel; retrying");
                            return Delivery::Retry;
                        }
                    }
                }
            },
        };
        match self
            .transact(source, None, |t| {
                t.external_request_done(initiated, delivered, limit_reached)
            })
            .await
        {
            Ok(()) | Err(Error::NotFound(_)) => Delivery::Done,
            Err(e) => {
                tracing::warn!(run = %source, error = %e, "failed to record a delivered signal or cancel; retrying");
                Delivery::Retry
            }
        }
    }

    /// Deletes a transfer row whose run is gone.
    async fn drop_transfer(&self, key: &RunKey, shard_id: i32, task_id: i64) {
        let mut batch =
            self.batch_for(key, shard_id, self.inner.shards[shard_id as usize].range_id);
        batch.transfers_delete.push(task_id);
        if let Err(e) = self.inner.store.commit(batch).await {
            tracing::warn!(error = %e, "failed to delete the transfer task of a deleted run");
        }
    }

    async fn commit_timer_delete(
        &self,
        key: &RunKey,
        shard_id: i32,
        timer_id: TimerKey,
    ) -> Result<()> {
        let mut batch =
            self.batch_for(key, shard_id, self.inner.shards[shard_id as usize].range_id);
        batch.timers_delete.push(timer_id);
        self.inner.store.commit(batch).await?;
        Ok(())
    }

    fn batch_for(&self, key: &RunKey, shard_id: i32, range_id: i64) -> WriteBatch {
        WriteBatch {
            shard_id,
            range_id,
            namespace_id: key.namespace_id.clone(),
            workflow_id: key.workflow_id.clone(),
            ..Default::default()
        }
    }

    fn fill_batch(
        &self,
        batch: &mut WriteBatch,
        key: &RunKey,
        events: &[HistoryEvent],
        timers: &[(i64, crate::state::NewTimer)],
        transfers: &[(i64, TransferData)],
        transfers_done: &[i64],
    ) {
        for ev in events {
            batch
                .events
                .push((key.run_id.clone(), ev.event_id, ev.encode_to_vec()));
        }
        for (task_id, timer) in timers {
            batch.timers_add.push(TimerTask {
                task_id: *task_id,
                shard_id: batch.shard_id,
                fire_at_ms: to_millis(timer.fire_at),
                namespace_id: key.namespace_id.clone(),
                workflow_id: key.workflow_id.clone(),
                run_id: key.run_id.clone(),
                data: timer.data.encode_to_vec(),
            });
        }
        for (task_id, data) in transfers {
            batch.transfers_add.push(TransferTask {
                task_id: *task_id,
                shard_id: batch.shard_id,
                namespace_id: key.namespace_id.clone(),
                workflow_id: key.workflow_id.clone(),
                run_id: key.run_id.clone(),
                data: data.encode_to_vec(),
            });
        }
        batch
            .transfers_delete
            .extend(transfers_done.iter().copied().filter(|id| *id != 0));
    }

    fn after_commit(
        &self,
        key: &RunKey,
        progress: RunProgress,
        timers: Vec<timers::Queued>,
        transfers: Vec<TransferTask>,
    ) {
        for task in &transfers {
            self.dispatch_row(task);
        }
        for timer in timers {
            self.inner.timers.push(timer);
        }
        if let Some(tx) = self.inner.watchers.lock().get(key) {
            // Every commit wakes the waiters; the value only moves forward (two commits of one
            // run can report out of order once their locks are released).
            tx.send_modify(|current| {
                if progress.next_event_id >= current.next_event_id {
                    *current = progress;
                }
            });
        }
    }

    // ----- start -----

    /// `StartWorkflowExecution`, after the frontend validated the request.
    pub async fn start_workflow(
        &self,
        ns: &Namespace,
        req: &ws::StartWorkflowExecutionRequest,
    ) -> Result<StartOutcome> {
        self.start_workflow_with(ns, req, None, None, None).await
    }

    /// `SignalWithStartWorkflowExecution`: signals the running workflow of that id, or starts a
    /// run whose history opens with the signal (Started, Signaled, WorkflowTaskScheduled).
    pub async fn signal_with_start(
        &self,
        ns: &Namespace,
        req: &ws::StartWorkflowExecutionRequest,
        signal: Signal,
    ) -> Result<StartOutcome> {
        self.start_workflow_with(ns, req, Some(signal), None, None)
            .await
    }

    /// `SignalWorkflowExecution`: `run_id` empty means the current run.
    pub async fn signal(
        &self,
        ns: &Namespace,
        workflow_id: &str,
        run_id: &str,
        signal: Signal,
    ) -> Result<String> {
        let key = self.resolve_run(ns, workflow_id, run_id).await?;
        self.transact(&key, None, |t| t.signal(signal)).await?;
        Ok(key.run_id)
    }

    /// Update-with-start: a new run admits the update in its first transaction (so its first
    /// workflow task carries it); a running one (USE_EXISTING) is left to the caller to update.
    pub async fn start_with_update(
        &self,
        ns: &Namespace,
        req: &ws::StartWorkflowExecutionRequest,
        update: temporalio_protos::temporal::api::update::v1::Request,
    ) -> Result<StartOutcome> {
        self.start_workflow_with(ns, req, None, Some(update), None)
            .await
    }

    async fn start_workflow_with(
        &self,
        ns: &Namespace,
        req: &ws::StartWorkflowExecutionRequest,
        signal: Option<Signal>,
        update: Option<temporalio_protos::temporal::api::update::v1::Request>,
        parent: Option<(crate::state::ParentInfo, WorkflowExecution)>,
    ) -> Result<StartOutcome> {
        let lock = self.workflow_lock(&ns.id, &req.workflow_id);
        let _held = lock.lock().await;
        let current = self
            .inner
            .store
            .get_current(&ns.id, &req.workflow_id)
            .await?;
        let mut expected_run_id = None;
        if let Some(current) = &current {
            let data = CurrentData::decode(current.data.as_slice()).unwrap_or_default();
            expected_run_id = Some(current.run_id.clone());
            let running = !status_closed(data.status);
            if !req.request_id.is_empty() && data.start_request_id == req.request_id {
                return Ok(StartOutcome {
                    run_id: current.run_id.clone(),
                    started: false,
                });
            }
            let already = |what: &str| Error::AlreadyStarted {
                message: what.to_string(),
                start_request_id: data.start_request_id.clone(),
                run_id: current.run_id.clone(),
            };
            if running {
                let conflict = WorkflowIdConflictPolicy::try_from(req.workflow_id_conflict_policy)
                    .unwrap_or(WorkflowIdConflictPolicy::Unspecified);
                let reuse = WorkflowIdReusePolicy::try_from(req.workflow_id_reuse_policy)
                    .unwrap_or(WorkflowIdReusePolicy::Unspecified);
                let terminate = conflict == WorkflowIdConflictPolicy::TerminateExisting
                    || reuse == WorkflowIdReusePolicy::TerminateIfRunning;
                if let Some(signal) = signal.as_ref().filter(|_| !terminate) {
                    // Signal-with-start on a running workflow: just the signal.
                    let key = RunKey {
                        namespace_id: ns.id.clone(),
                        workflow_id: req.workflow_id.clone(),
                        run_id: current.run_id.clone(),
                    };
                    let signal = signal.clone();
                    self.transact(&key, None, |t| t.signal(signal)).await?;
                    return Ok(StartOutcome {
                        run_id: current.run_id.clone(),
                        started: false,
                    });
                }
                match conflict {
                    WorkflowIdConflictPolicy::UseExisting => {
                        return Ok(StartOutcome {
                            run_id: current.run_id.clone(),
                            started: false,
                        });
                    }
                    WorkflowIdConflictPolicy::TerminateExisting => {
                        self.terminate_locked(
                            ns,
                            &req.workflow_id,
                            &current.run_id,
                            "terminated by a start with TERMINATE_EXISTING",
                            &req.identity,
                        )
                        .await?;
                    }
                    _ if reuse == WorkflowIdReusePolicy::TerminateIfRunning => {
                        self.terminate_locked(
                            ns,
                            &req.workflow_id,
                            &current.run_id,
                            "terminated by a start with TERMINATE_IF_RUNNING",
                            &req.identity,
                        )
                        .await?;
                    }
                    _ => {
                        return Err(already(&format!(
                            "Workflow execution is already running. WorkflowId: {}, RunId: {}.",
                            req.workflow_id, current.run_id
                        )));
                    }
                }
            } else {
                let reuse = WorkflowIdReusePolicy::try_from(req.workflow_id_reuse_policy)
                    .unwrap_or(WorkflowIdReusePolicy::Unspecified);
                match reuse {
                    WorkflowIdReusePolicy::RejectDuplicate => {
                        return Err(already(
                            "Workflow execution already finished and WorkflowIdReusePolicy is REJECT_DUPLICATE",
                        ));
                    }
                    WorkflowIdReusePolicy::AllowDuplicateFailedOnly
                        if data.status == WorkflowExecutionStatus::Completed as i32 =>
                    {
                        return Err(already(
                            "Workflow execution already finished successfully and WorkflowIdReusePolicy is ALLOW_DUPLICATE_FAILED_ONLY",
                        ));
                    }
                    _ => {}
                }
            }
        }
        let run_id = uuid::Uuid::new_v4().to_string();
        let key = RunKey {
            namespace_id: ns.id.clone(),
            workflow_id: req.workflow_id.clone(),
            run_id: run_id.clone(),
        };
        let now = self.inner.clock.now();
        let (mut ms, mut started) = new_run(&ns.id, &ns.name, req, &run_id, now);
        if let Some((parent, root)) = parent {
            set_parent(&mut ms, &mut started, parent, root);
        }
        let shard_id = self.shard_of(&ns.id, &req.workflow_id);
        let shard = &self.inner.shards[shard_id as usize];
        let mut ids = TaskIdsRef(&shard.ids);
        let env = self.env_for(&ms);
        let mut t = Transition::new(&mut ms, now, env, &mut ids);
        t.start_workflow_with_signal(started, signal);
        if let Some(update) = update {
            t.admit_update(update)
                .map_err(|e| Error::Invalid(format!("{e:?}")))?;
        }
        let handoffs = self.start_for_waiting_pollers(&mut t);
        let Transition {
            events,
            timers,
            transfers,
            transfers_done,
            ..
        } = t;
        let (transfers, transfers_done) = drop_taken_transfers(transfers, transfers_done);
        let timers = settle_timers(&MutableState::default(), &mut ms, timers).write;
        ms.state_transition_count = 1;
        let mut batch = self.batch_for(&key, shard_id, shard.range_id);
        batch.executions.push((
            run_id.clone(),
            ExecutionWrite::Insert {
                state: ms.encode_to_vec(),
            },
        ));
        batch.current = Some(CurrentWrite::Set {
            run_id: run_id.clone(),
            expected_run_id,
            data: CurrentData {
                status: ms.status,
                start_request_id: req.request_id.clone(),
            }
            .encode_to_vec(),
        });
        self.fill_batch(
            &mut batch,
            &key,
            &events,
            &timers,
            &transfers,
            &transfers_done,
        );
        let encoded: Vec<Vec<u8>> = batch.events.iter().map(|(_, _, e)| e.clone()).collect();
        batch
            .visibility
            .push(VisibilityWrite::Insert(Box::new(visibility::row(
                &ms,
                &ns.custom_search_attributes,
            ))));
        let timer_rows: Vec<timers::Queued> =
            batch.timers_add.iter().map(timers::Queued::of).collect();
        let transfer_rows = batch.transfers_add.clone();
        self.inner.store.commit(batch).await?;
        let progress = RunProgress::of(&ms, &events);
        let answers = {
            let slot = self.slot(&key);
            let mut held = slot.lock().await;
            if held.is_none() {
                *held = Some(Cached::new(ms, 1, encoded));
            }
            let cached = held.as_ref().expect("cached above");
            self.answers(&key, cached, handoffs)
        };
        self.after_commit(&key, progress, timer_rows, transfer_rows);
        for (poller, answer) in answers {
            self.hand_over(&key, poller, answer).await;
        }
        Ok(StartOutcome {
            run_id,
            started: true,
        })
    }

    async fn terminate_locked(
        &self,
        ns: &Namespace,
        workflow_id: &str,
        run_id: &str,
        reason: &str,
        identity: &str,
    ) -> Result<()> {
        let key = RunKey {
            namespace_id: ns.id.clone(),
            workflow_id: workflow_id.to_string(),
            run_id: run_id.to_string(),
        };
        self.transact(&key, None, |t| t.terminate(reason, None, identity))
            .await
    }

    // ----- workflow tasks -----

    /// Records that a poller took a workflow task and builds the poll response. `Ok(None)`
    /// means the task was stale and the poller should keep waiting.
    pub async fn record_workflow_task_started(
        &self,
        task: &QueuedTask,
        identity: &str,
        request_id: &str,
    ) -> Result<Option<PollWorkflowTaskAnswer>> {
        let key = RunKey {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
        };
        let started = self
            .transact(&key, None, |t| {
                let wft = t.start_wft(task.scheduled_event_id, identity, request_id)?;
                let messages = t.update_messages(wft.scheduled_event_id, wft.started_event_id);
                // What the answer needs of the run, not a copy of all of it.
                Ok((wft, StartedRun::of(t.ms), messages))
            })
            .await;
        let (wft, ms, messages) = match started {
            Ok(v) => v,
            Err(Error::NotFound(_)) => {
                self.drop_stale_transfer(task).await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let first = workflow_task_first_event(&ms, &wft);
        let held = self
            .slot(&key)
            .lock()
            .await
            .as_ref()
            .and_then(|c| c.events(first, wft.started_event_id));
        let events = match held {
            Some(events) => events,
            None => encode_all(&self.read_events(&key, first, wft.started_event_id).await?),
        };
        Ok(Some(workflow_task(&ms, &wft, messages, events)))
    }

    async fn drop_stale_transfer(&self, task: &QueuedTask) {
        let key = RunKey {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
        };
        let mut batch = self.batch_for(
            &key,
            task.shard_id,
            self.inner.shards[task.shard_id as usize].range_id,
        );
        batch.transfers_delete.push(task.task_id);
        if let Err(e) = self.inner.store.commit(batch).await {
            tracing::warn!(error = %e, "failed to delete a stale transfer task");
        }
    }

    async fn read_events(&self, key: &RunKey, first: i64, last: i64) -> Result<Vec<HistoryEvent>> {
        let rows = self
            .inner
            .store
            .read_events(
                &key.namespace_id,
                &key.workflow_id,
                &key.run_id,
                first,
                (last - first + 1).max(0) as usize,
            )
            .await?;
        rows.iter()
            .map(|(_, bytes)| {
                HistoryEvent::decode(bytes.as_slice()).map_err(|e| {
                    Error::Unavailable(format!("failed to decode a history event: {e}"))
                })
            })
            .collect()
    }

    fn token_key(data: &TaskTokenData) -> RunKey {
        RunKey {
            namespace_id: data.namespace_id.clone(),
            workflow_id: data.workflow_id.clone(),
            run_id: data.run_id.clone(),
        }
    }

    /// `RespondWorkflowTaskCompleted`.
    pub async fn respond_workflow_task_completed(
        &self,
        namespace: &Namespace,
        req: &ws::RespondWorkflowTaskCompletedRequest,
    ) -> Result<ws::RespondWorkflowTaskCompletedResponse> {
        let data = token::decode(&req.task_token, token::WORKFLOW_TASK)?;
        if data.namespace_id != namespace.id {
            return Err(Error::Invalid(
                "task token does not belong to this namespace".into(),
            ));
        }
        let key = Self::token_key(&data);
        let eager = self.inner.options.eager_activities;
        let (outcome, started) = self
            .transact(&key, None, |t| {
                let outcome = t.complete_wft(data.scheduled_event_id, data.attempt, req)?;
                let started = if eager && outcome == crate::state::CompletionOutcome::Applied {
                    t.start_eager_activities(req)
                } else {
                    Vec::new()
                };
                Ok((
                    outcome,
                    (started, t.ms.workflow_type.clone(), t.ms.namespace.clone()),
                ))
            })
            .await?;
        match outcome {
            crate::state::CompletionOutcome::Applied => {
                let (acts, workflow_type, namespace) = started;
                Ok(ws::RespondWorkflowTaskCompletedResponse {
                    activity_tasks: acts
                        .iter()
                        .map(|act| activity_task(&key, act, &workflow_type, &namespace))
                        .collect(),
                    ..Default::default()
                })
            }
            crate::state::CompletionOutcome::Failed { message, .. } => Err(Error::Invalid(message)),
        }
    }

    /// `RespondWorkflowTaskFailed`.
    pub async fn respond_workflow_task_failed(
        &self,
        namespace: &Namespace,
        req: &ws::RespondWorkflowTaskFailedRequest,
    ) -> Result<()> {
        let data = token::decode(&req.task_token, token::WORKFLOW_TASK)?;
        if data.namespace_id != namespace.id {
            return Err(Error::Invalid(
                "task token does not belong to this namespace".into(),
            ));
        }
        let key = Self::token_key(&data);
        let cause = temporalio_protos::temporal::api::enums::v1::WorkflowTaskFailedCause::try_from(
            req.cause,
        )
        .unwrap_or(
            temporalio_protos::temporal::api::enums::v1::WorkflowTaskFailedCause::Unspecified,
        );
        self.transact(&key, None, |t| {
            t.fail_wft(
                data.scheduled_event_id,
                data.attempt,
                cause,
                req.failure.clone(),
                &req.identity,
            )
        })
        .await
    }

    /// `ResetStickyTaskQueue`: later tasks of the run go to its normal queue.
    pub async fn reset_sticky(&self, key: &RunKey) -> Result<()> {
        self.transact(key, None, |t| {
            t.ms.sticky_task_queue.clear();
            Ok(())
        })
        .await
    }

    /// Moves workflow tasks that waited on a vanished sticky queue to their normal queues.
    pub async fn sticky_worker_gone(&self, tasks: Vec<QueuedTask>) {
        for task in tasks {
            let key = RunKey {
                namespace_id: task.namespace_id.clone(),
                workflow_id: task.workflow_id.clone(),
                run_id: task.run_id.clone(),
            };
            if let Err(e) = self
                .transact(&key, None, |t| {
                    t.sticky_worker_gone(task.scheduled_event_id);
                    Ok(())
                })
                .await
            {
                tracing::warn!(error = %e, run = %key, "failed to move a sticky workflow task to its normal queue");
            }
        }
    }

    // ----- activities -----

    /// Records that a poller took an activity attempt and builds the poll response; `Ok(None)`
    /// when the task was stale.
    pub async fn record_activity_task_started(
        &self,
        task: &QueuedTask,
        identity: &str,
        request_id: &str,
    ) -> Result<Option<ws::PollActivityTaskQueueResponse>> {
        let key = RunKey {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
        };
        let started = self
            .transact(&key, None, |t| {
                let act =
                    t.start_activity(task.scheduled_event_id, task.attempt, identity, request_id)?;
                Ok((act, t.ms.workflow_type.clone(), t.ms.namespace.clone()))
            })
            .await;
        let (act, workflow_type, namespace) = match started {
            Ok(v) => v,
            Err(Error::NotFound(_)) => {
                self.drop_stale_transfer(task).await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(Some(activity_task(&key, &act, &workflow_type, &namespace)))
    }

    /// Finds the activity a by-id request names: (run key, scheduled event id, attempt).
    pub async fn activity_by_id(
        &self,
        ns: &Namespace,
        workflow_id: &str,
        run_id: &str,
        activity_id: &str,
    ) -> Result<(RunKey, i64, i32)> {
        let key = self.resolve_run(ns, workflow_id, run_id).await?;
        let ms = self.read_state(&key).await?;
        if status_closed(ms.status) {
            return Err(Error::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        let act = ms
            .activities
            .iter()
            .find(|a| a.activity_id == activity_id)
            .ok_or_else(|| Error::NotFound(format!("activity {activity_id} not found")))?;
        if !act.started {
            return Err(Error::NotFound(format!(
                "activity {activity_id} is not started"
            )));
        }
        Ok((key, act.scheduled_event_id, act.attempt))
    }

    /// Resolves an activity task token to (run key, scheduled event id, attempt).
    pub fn activity_token(&self, ns: &Namespace, token_bytes: &[u8]) -> Result<(RunKey, i64, i32)> {
        let data = token::decode(token_bytes, token::ACTIVITY_TASK)?;
        if data.namespace_id != ns.id {
            return Err(Error::Invalid(
                "task token does not belong to this namespace".into(),
            ));
        }
        Ok((
            Self::token_key(&data),
            data.scheduled_event_id,
            data.attempt,
        ))
    }

    /// Runs an activity input against a run.
    pub async fn update_activity<T>(
        &self,
        key: &RunKey,
        f: impl FnOnce(&mut Transition<'_>) -> std::result::Result<T, StateError>,
    ) -> Result<T> {
        self.transact(key, None, f).await
    }

    // ----- whole-run operations -----

    /// `RequestCancelWorkflowExecution`.
    pub async fn request_cancel(
        &self,
        key: &RunKey,
        reason: &str,
        identity: &str,
        request_id: &str,
    ) -> Result<()> {
        self.transact(key, None, |t| {
            t.request_cancel(reason, identity, request_id)
        })
        .await
    }

    /// `TerminateWorkflowExecution`.
    pub async fn terminate(
        &self,
        key: &RunKey,
        reason: &str,
        details: Option<temporalio_protos::temporal::api::common::v1::Payloads>,
        identity: &str,
    ) -> Result<()> {
        let lock = self.workflow_lock(&key.namespace_id, &key.workflow_id);
        let _held = lock.lock().await;
        self.transact(key, None, |t| t.terminate(reason, details, identity))
            .await
    }

    /// Deletes a run and its history (terminating it first if it runs).
    pub async fn delete(&self, key: &RunKey, timer_id: Option<TimerKey>) -> Result<()> {
        let lock = self.workflow_lock(&key.namespace_id, &key.workflow_id);
        let _held = lock.lock().await;
        let slot = self.slot(key);
        let mut guard = slot.lock().await;
        let shard_id = self.shard_of(&key.namespace_id, &key.workflow_id);
        let mut batch =
            self.batch_for(key, shard_id, self.inner.shards[shard_id as usize].range_id);
        batch
            .executions
            .push((key.run_id.clone(), ExecutionWrite::Delete));
        batch.current = Some(CurrentWrite::DeleteIf {
            run_id: key.run_id.clone(),
        });
        batch.timers_delete.extend(timer_id);
        batch.visibility.push(VisibilityWrite::Delete {
            run_id: key.run_id.clone(),
        });
        self.inner.store.commit(batch).await?;
        *guard = None;
        drop(guard);
        self.inner.runs.lock().remove(key);
        if let Some(tx) = self.inner.watchers.lock().remove(key) {
            tx.send_replace(RunProgress {
                gone: true,
                ..RunProgress::default()
            });
        }
        Ok(())
    }

    // ----- reads -----

    /// A page of a run's history. With `wait` (a long poll), waits up to that long (and never
    /// past the history long-poll timeout) for events past the token, then answers with what
    /// there is and a token to poll again; with `close_only`, returns only the close event once
    /// the run has closed.
    pub async fn history_page(
        &self,
        key: &RunKey,
        page_size: i32,
        token_bytes: &[u8],
        wait: Option<Duration>,
        close_only: bool,
    ) -> Result<HistoryPage> {
        let wait_new_event = wait.is_some();
        let mut from = 1;
        if !token_bytes.is_empty() {
            let token = PageToken::decode(token_bytes)
                .map_err(|_| Error::Invalid("invalid next page token".into()))?;
            if token.run_id != key.run_id {
                return Err(Error::Invalid(
                    "next page token belongs to another run".into(),
                ));
            }
            from = token.next_event_id;
        }
        let (mut next_event_id, status, mut close_event_id) = self.progress(key).await?;
        let mut closed = status_closed(status);
        // The close event as the closing commit reported it, so a result long poll needs no
        // read of the (by then uncached) run.
        let mut close_event: Option<Arc<HistoryEvent>> = None;
        // Something to wait for: the close (close_only) or events past the token.
        let ready = |closed: bool, next: i64| closed || (!close_only && from < next);
        if wait_new_event && !ready(closed, next_event_id) {
            let mut rx = self.watch(key);
            let deadline = kairos_core::time::deadline_after(
                wait.unwrap_or_default()
                    .min(self.inner.options.history_long_poll_timeout),
            );
            // Read again once subscribed: a commit in between is not missed.
            let (next, status, close) = self.progress(key).await?;
            (next_event_id, closed, close_event_id) = (next, status_closed(status), close);
            while !ready(closed, next_event_id) {
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {
                        let seen = rx.borrow_and_update().clone();
                        if seen.gone {
                            // Deleted: reading it again answers NOT_FOUND.
                            self.progress(key).await?;
                            continue;
                        }
                        if seen.next_event_id >= next_event_id {
                            next_event_id = seen.next_event_id;
                            closed = status_closed(seen.status);
                            close_event_id = seen.close_event.as_ref().map_or(0, |e| e.event_id);
                            close_event = seen.close_event;
                            if closed && close_event.is_none() {
                                // Closed without its event at hand: ask the run.
                                (next_event_id, _, close_event_id) = self.progress(key).await?;
                            }
                        }
                    }
                    _ => {
                        // Still waiting: no events, and a token to poll again with.
                        let token = PageToken {
                            run_id: key.run_id.clone(),
                            next_event_id: from,
                        };
                        return Ok(HistoryPage {
                            events: Vec::new(),
                            next_page_token: token.encode_to_vec(),
                        });
                    }
                }
            }
        }
        if close_only {
            if !closed {
                return Ok(HistoryPage::default());
            }
            let events = match close_event.filter(|e| e.event_id == close_event_id) {
                Some(event) => vec![(*event).clone()],
                None => {
                    let events = self
                        .read_events(key, close_event_id, close_event_id)
                        .await?;
                    if events.is_empty() {
                        // Deleted since it closed (a delete terminates, then deletes): reading
                        // the run again answers NOT_FOUND rather than an empty page.
                        self.progress(key).await?;
                    }
                    events
                }
            };
            return Ok(HistoryPage {
                events,
                next_page_token: Vec::new(),
            });
        }
        let max = self.inner.options.limits.history_page_size.max(1);
        let size = if page_size <= 0 {
            max
        } else {
            page_size.min(max * 4)
        };
        let last = (from + size as i64 - 1).min(next_event_id - 1);
        let events = if last >= from {
            self.read_events(key, from, last).await?
        } else {
            Vec::new()
        };
        let after = from + events.len() as i64;
        let next_page_token = if after < next_event_id || (wait_new_event && !closed) {
            PageToken {
                run_id: key.run_id.clone(),
                next_event_id: after,
            }
            .encode_to_vec()
        } else {
            Vec::new()
        };
        Ok(HistoryPage {
            events,
            next_page_token,
        })
    }

    /// A page of a run's history, newest first.
    pub async fn history_page_reverse(
        &self,
        key: &RunKey,
        page_size: i32,
        token_bytes: &[u8],
    ) -> Result<HistoryPage> {
        let ms = self.read_state(key).await?;
        let mut last = ms.next_event_id - 1;
        if !token_bytes.is_empty() {
            let token = PageToken::decode(token_bytes)
                .map_err(|_| Error::Invalid("invalid next page token".into()))?;
            if token.run_id != key.run_id {
                return Err(Error::Invalid(
                    "next page token belongs to another run".into(),
                ));
            }
            last = token.next_event_id;
        }
        let max = self.inner.options.limits.history_page_size.max(1);
        let size = if page_size <= 0 {
            max
        } else {
            page_size.min(max * 4)
        } as i64;
        let first = (last - size + 1).max(1);
        let mut events = if last >= first {
            self.read_events(key, first, last).await?
        } else {
            Vec::new()
        };
        events.reverse();
        let next_page_token = if first > 1 {
            PageToken {
                run_id: key.run_id.clone(),
                next_event_id: first - 1,
            }
            .encode_to_vec()
        } else {
            Vec::new()
        };
        Ok(HistoryPage {
            events,
            next_page_token,
        })
    }

    /// `UpdateWorkflowExecution`, first half: admits the update into the run (or finds the
    /// known one with that id).
    pub async fn admit_update(
        &self,
        key: &RunKey,
        request: temporalio_protos::temporal::api::update::v1::Request,
    ) -> Result<crate::state::UpdateInfo> {
        self.transact(key, None, |t| t.admit_update(request)).await
    }

    /// Waits until the update reaches `wanted` (completed includes rejected) or `deadline`
    /// passes, and returns it as it then is. NOT_FOUND for an unknown update, or when the run
    /// closes before the update got there.
    pub async fn wait_update(
        &self,
        key: &RunKey,
        update_id: &str,
        wanted: i32,
        deadline: tokio::time::Instant,
    ) -> Result<crate::state::UpdateInfo> {
        let mut rx = self.watch(key);
        loop {
            let ms = self.read_state(key).await?;
            let update = ms
                .updates
                .iter()
                .find(|u| u.update_id == update_id)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("update {update_id} not found")))?;
            if update.stage >= wanted {
                return Ok(update);
            }
            if ms.status == WorkflowExecutionStatus::ContinuedAsNew as i32 {
                // The workflow goes on in a new run: the caller retries there.
                return Err(Error::BusyWorkflow(
                    "workflow continued as new while the update was in flight".into(),
                ));
            }
            if status_closed(ms.status) {
                return Err(Error::NotFound(
                    "workflow execution already completed".into(),
                ));
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(update),
            }
        }
    }

    /// The poll answer carrying a query: a query-task token, the run's whole history and the
    /// query (legacy query task, brief B.4 path 1).
    pub async fn query_task(
        &self,
        key: &RunKey,
        query_id: &str,
        query: temporalio_protos::temporal::api::query::v1::WorkflowQuery,
    ) -> Result<PollWorkflowTaskAnswer> {
        let ms = self.read_state(key).await?;
        let events = self.read_events(key, 1, ms.next_event_id - 1).await?;
        let token = token::encode(&TaskTokenData {
            namespace_id: key.namespace_id.clone(),
            workflow_id: key.workflow_id.clone(),
            run_id: key.run_id.clone(),
            kind: token::QUERY_TASK,
            query_id: query_id.to_string(),
            attempt: 1,
            ..Default::default()
        });
        let response = ws::PollWorkflowTaskQueueResponse {
            task_token: token,
            workflow_execution: Some(WorkflowExecution {
                workflow_id: key.workflow_id.clone(),
                run_id: key.run_id.clone(),
            }),
            workflow_type: Some(WorkflowType {
                name: ms.workflow_type.clone(),
            }),
            previous_started_event_id: ms.last_completed_wft_started_id,
            started_event_id: 0,
            attempt: 1,
            history: Some(temporalio_protos::temporal::api::history::v1::History { events }),
            query: Some(query),
            workflow_execution_task_queue: Some(TaskQueue {
                name: ms.task_queue.clone(),
                kind: TaskQueueKind::Normal as i32,
                normal_name: String::new(),
            }),
            ..Default::default()
        };
        Ok(PollWorkflowTaskAnswer {
            response,
            events: Vec::new(),
        })
    }

    /// The query id a query-task token names.
    pub fn query_token(&self, ns: &Namespace, token_bytes: &[u8]) -> Result<String> {
        let data = token::decode(token_bytes, token::QUERY_TASK)?;
        if data.namespace_id != ns.id {
            return Err(Error::Invalid(
                "task token does not belong to this namespace".into(),
            ));
        }
        Ok(data.query_id)
    }

    /// A receiver that sees the run's next event id change (any committed transition).
    pub fn watch(&self, key: &RunKey) -> watch::Receiver<RunProgress> {
        let mut watchers = self.inner.watchers.lock();
        watchers.retain(|_, tx| tx.receiver_count() > 0);
        watchers
            .entry(key.clone())
            .or_insert_with(|| watch::channel(RunProgress::default()).0)
            .subscribe()
    }

    /// Where a run stands (next event id, status, close event id), without copying its state.
    async fn progress(&self, key: &RunKey) -> Result<(i64, i32, i64)> {
        let existing = self.inner.runs.lock().get(key);
        if let Some(slot) = existing {
            let mut guard = slot.lock().await;
            self.load(key, &mut guard).await?;
            let ms = &guard.as_ref().expect("loaded").ms;
            return Ok((ms.next_event_id, ms.status, ms.close_event_id));
        }
        let ms = self.read_state(key).await?;
        Ok((ms.next_event_id, ms.status, ms.close_event_id))
    }
}

/// What waiters on a run (history long polls, update and query waits) are told after each
/// commit.
#[derive(Debug, Clone, Default)]
pub struct RunProgress {
    /// The run's next event id after the commit.
    pub next_event_id: i64,
    /// Its status after the commit.
    pub status: i32,
    /// The close event, when this commit closed the run.
    pub close_event: Option<Arc<HistoryEvent>>,
    /// The run was deleted.
    pub gone: bool,
}

impl RunProgress {
    fn of(ms: &MutableState, events: &[HistoryEvent]) -> Self {
        let close_event = (status_closed(ms.status) && ms.close_event_id > 0)
            .then(|| events.iter().find(|e| e.event_id == ms.close_event_id))
            .flatten()
            .map(|e| Arc::new(e.clone()));
        Self {
            next_event_id: ms.next_event_id,
            status: ms.status,
            close_event,
            gone: false,
        }
    }
}

/// The parts of a run a started workflow task's answer names.
struct StartedRun {
    namespace_id: String,
    workflow_id: String,
    run_id: String,
    workflow_type: String,
    task_queue: String,
    last_completed_wft_started_id: i64,
}

impl StartedRun {
    fn of(ms: &MutableState) -> Self {
        Self {
            namespace_id: ms.namespace_id.clone(),
            workflow_id: ms.workflow_id.clone(),
            run_id: ms.run_id.clone(),
            workflow_type: ms.workflow_type.clone(),
            task_queue: ms.task_queue.clone(),
            last_completed_wft_started_id: ms.last_completed_wft_started_id,
        }
    }
}

/// A task created and taken in the same transition (an eagerly started activity, a task
/// started for a waiting poll) is neither written nor dispatched: drops it from both lists.
fn drop_taken_transfers(
    transfers: Vec<(i64, TransferData)>,
    transfers_done: Vec<i64>,
) -> (Vec<(i64, TransferData)>, Vec<i64>) {
    if transfers_done.is_empty() {
        return (transfers, transfers_done);
    }
    let taken: std::collections::HashSet<i64> = transfers_done.iter().copied().collect();
    let created: std::collections::HashSet<i64> = transfers.iter().map(|t| t.0).collect();
    (
        transfers
            .into_iter()
            .filter(|t| !taken.contains(&t.0))
            .collect(),
        transfers_done
            .into_iter()
            .filter(|id| !created.contains(id))
            .collect(),
    )
}

/// The first event a started workflow task carries: all of the history, or for a sticky task
/// what came after the worker's last completed task.
fn workflow_task_first_event(run: &StartedRun, wft: &crate::state::WorkflowTaskInfo) -> i64 {
    if wft.sticky {
        run.last_completed_wft_started_id + 1
    } else {
        1
    }
}

/// A task a transition started for a waiting poller. Short-lived (built in the transition,
/// turned into its answer right after the commit), so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Started {
    Workflow {
        run: StartedRun,
        wft: crate::state::WorkflowTaskInfo,
        messages: Vec<temporalio_protos::temporal::api::protocol::v1::Message>,
    },
    Activity {
        act: crate::state::ActivityInfo,
        workflow_type: String,
        namespace: String,
    },
}

/// A started task's answer, built after the commit.
enum Answer {
    Ready(Handoff),
    /// A workflow task whose events are no longer all cached.
    ReadHistory {
        run: StartedRun,
        wft: crate::state::WorkflowTaskInfo,
        messages: Vec<temporalio_protos::temporal::api::protocol::v1::Message>,
        first: i64,
    },
}

/// How one attempt to deliver a signal or cancel request to another workflow ended.
enum Delivery {
    /// Delivered (or found already recorded) and the result written on the sender, whose
    /// transaction deleted the task row.
    Done,
    /// Nothing (more) to do and no transaction of the run deletes the row: it is dropped here
    /// (the sender run is gone, or the task records nothing on it).
    DropTask,
    /// A transient failure: try again after a pause.
    Retry,
}

/// A run created by a continue-as-new, committed with the run it continues.
struct NextRun {
    key: RunKey,
    ms: MutableState,
    events: Vec<HistoryEvent>,
    timers: Vec<(i64, crate::state::NewTimer)>,
    transfers: Vec<(i64, TransferData)>,
}

/// The mutable state and started-event attributes of a new run (a start, or the next run of a
/// continue-as-new), before its first transition.
fn new_run(
    namespace_id: &str,
    namespace: &str,
    req: &ws::StartWorkflowExecutionRequest,
    run_id: &str,
    now: std::time::SystemTime,
) -> (MutableState, WorkflowExecutionStartedEventAttributes) {
    let (run_timeout, execution_timeout, wft_timeout) = normalize_workflow_timeouts(req);
    let ms = MutableState {
        namespace_id: namespace_id.to_string(),
        namespace: namespace.to_string(),
        workflow_id: req.workflow_id.clone(),
        run_id: run_id.to_string(),
        first_execution_run_id: run_id.to_string(),
        workflow_type: req
            .workflow_type
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default(),
        task_queue: req
            .task_queue
            .as_ref()
            .map(|q| q.name.clone())
            .unwrap_or_default(),
        next_event_id: 1,
        run_timeout: to_pb_duration(run_timeout),
        execution_timeout: to_pb_duration(execution_timeout),
        wft_timeout: to_pb_duration(wft_timeout),
        start_request_id: req.request_id.clone(),
        memo: req.memo.clone(),
        search_attributes: req.search_attributes.clone(),
        attempt: 1,
        retry_policy: req.retry_policy.clone(),
        // Kept only for a retry or a cron run to start the next run with the same input.
        input: if req.retry_policy.is_some() || !req.cron_schedule.is_empty() {
            req.input.clone()
        } else {
            None
        },
        cron_schedule: req.cron_schedule.clone(),
        execution_expiration_ms: if execution_timeout.is_zero() {
            0
        } else {
            to_millis(now + execution_timeout)
        },
        ..Default::default()
    };
    let started = WorkflowExecutionStartedEventAttributes {
        workflow_type: req.workflow_type.clone(),
        task_queue: Some(TaskQueue {
            name: ms.task_queue.clone(),
            kind: TaskQueueKind::Normal as i32,
            normal_name: String::new(),
        }),
        input: req.input.clone(),
        workflow_execution_timeout: ms.execution_timeout,
        workflow_run_timeout: ms.run_timeout,
        workflow_task_timeout: ms.wft_timeout,
        identity: req.identity.clone(),
        first_execution_run_id: run_id.to_string(),
        original_execution_run_id: run_id.to_string(),
        retry_policy: req.retry_policy.clone(),
        attempt: 1,
        cron_schedule: req.cron_schedule.clone(),
        initiator: if req.cron_schedule.is_empty() {
            ContinueAsNewInitiator::Unspecified as i32
        } else {
            ContinueAsNewInitiator::CronSchedule as i32
        },
        // To the millisecond, as the state keeps it: every run of the chain states the same.
        workflow_execution_expiration_time: if execution_timeout.is_zero() {
            None
        } else {
            Some(to_timestamp(from_millis(to_millis(
                now + execution_timeout,
            ))))
        },
        // The reference states a fresh run's start backoff even when it is zero. A cron run
        // without one waits for its first scheduled time.
        first_workflow_task_backoff: Some(req.workflow_start_delay.unwrap_or_else(|| {
            crate::cron::CronSchedule::parse(&req.cron_schedule)
                .ok()
                .and_then(|c| c.backoff(now, now))
                .and_then(to_pb_duration)
                .unwrap_or_default()
        })),
        memo: req.memo.clone(),
        search_attributes: req.search_attributes.clone(),
        header: req.header.clone(),
        priority: req.priority.clone(),
        ..Default::default()
    };
    (ms, started)
}

/// Makes a new run the child of `parent`: it reports its close there.
fn set_parent(
    ms: &mut MutableState,
    started: &mut WorkflowExecutionStartedEventAttributes,
    parent: crate::state::ParentInfo,
    root: WorkflowExecution,
) {
    started.parent_workflow_namespace = parent.namespace.clone();
    started.parent_workflow_namespace_id = parent.namespace_id.clone();
    started.parent_workflow_execution = Some(WorkflowExecution {
        workflow_id: parent.workflow_id.clone(),
        run_id: parent.run_id.clone(),
    });
    started.parent_initiated_event_id = parent.initiated_event_id;
    // As the reference writes a child's start: the run timeout stated, zero included.
    started.workflow_run_timeout = Some(started.workflow_run_timeout.unwrap_or_default());
    started.root_workflow_execution = Some(root.clone());
    ms.parent = Some(parent);
    ms.root = Some(root);
}

/// Applies Temporal's defaults and caps to a start request's timeouts:
/// (run, execution, workflow task).
fn normalize_workflow_timeouts(
    req: &ws::StartWorkflowExecutionRequest,
) -> (Duration, Duration, Duration) {
    let execution = from_pb_duration(req.workflow_execution_timeout.as_ref());
    let mut run = from_pb_duration(req.workflow_run_timeout.as_ref());
    if run.is_zero() || (!execution.is_zero() && run > execution) {
        run = execution;
    }
    let mut task = from_pb_duration(req.workflow_task_timeout.as_ref());
    if task.is_zero() {
        task = Duration::from_secs(10);
    }
    task = task.min(Duration::from_secs(120));
    if !run.is_zero() {
        task = task.min(run);
    }
    (run, execution, task)
}

#[allow(dead_code)]
fn event_type_name(t: i32) -> &'static str {
    EventType::try_from(t)
        .map(|e| e.as_str_name())
        .unwrap_or("Unknown")
}

/// The answer to a workflow task poll: the started task, its token and the events the worker
/// needs (the whole history, or for a sticky task those since its last completed task).
fn workflow_task(
    ms: &StartedRun,
    wft: &crate::state::WorkflowTaskInfo,
    messages: Vec<temporalio_protos::temporal::api::protocol::v1::Message>,
    events: Vec<Vec<u8>>,
) -> PollWorkflowTaskAnswer {
    let token = token::encode(&TaskTokenData {
        namespace_id: ms.namespace_id.clone(),
        workflow_id: ms.workflow_id.clone(),
        run_id: ms.run_id.clone(),
        scheduled_event_id: wft.scheduled_event_id,
        started_event_id: wft.started_event_id,
        attempt: wft.attempt,
        kind: token::WORKFLOW_TASK,
        started_time_ms: wft.started_time_ms,
        ..Default::default()
    });
    let response = ws::PollWorkflowTaskQueueResponse {
        task_token: token,
        workflow_execution: Some(WorkflowExecution {
            workflow_id: ms.workflow_id.clone(),
            run_id: ms.run_id.clone(),
        }),
        workflow_type: Some(WorkflowType {
            name: ms.workflow_type.clone(),
        }),
        previous_started_event_id: ms.last_completed_wft_started_id,
        started_event_id: wft.started_event_id,
        attempt: wft.attempt,
        backlog_count_hint: 0,
        // The events follow as they are, encoded (kairos_core::wire).
        history: None,
        next_page_token: Vec::new(),
        workflow_execution_task_queue: Some(TaskQueue {
            name: ms.task_queue.clone(),
            kind: TaskQueueKind::Normal as i32,
            normal_name: String::new(),
        }),
        scheduled_time: Some(to_timestamp(from_millis(wft.scheduled_time_ms))),
        started_time: Some(to_timestamp(from_millis(wft.started_time_ms))),
        messages,
        ..Default::default()
    };
    PollWorkflowTaskAnswer { response, events }
}

/// Events encoded one by one, as a workflow task answer carries them.
fn encode_all(events: &[HistoryEvent]) -> Vec<Vec<u8>> {
    events.iter().map(Message::encode_to_vec).collect()
}

/// The task a worker receives for a started activity attempt (from a poll or eagerly).
fn activity_task(
    key: &RunKey,
    act: &crate::state::ActivityInfo,
    workflow_type: &str,
    namespace: &str,
) -> ws::PollActivityTaskQueueResponse {
    let token = token::encode(&TaskTokenData {
        namespace_id: key.namespace_id.clone(),
        workflow_id: key.workflow_id.clone(),
        run_id: key.run_id.clone(),
        scheduled_event_id: act.scheduled_event_id,
        attempt: act.attempt,
        activity_id: act.activity_id.clone(),
        kind: token::ACTIVITY_TASK,
        started_time_ms: act.started_time_ms,
        ..Default::default()
    });
    ws::PollActivityTaskQueueResponse {
        task_token: token,
        workflow_namespace: namespace.to_string(),
        workflow_type: Some(WorkflowType {
            name: workflow_type.to_string(),
        }),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: key.workflow_id.clone(),
            run_id: key.run_id.clone(),
        }),
        activity_type: act.activity_type.clone(),
        activity_id: act.activity_id.clone(),
        header: act.header.clone(),
        input: act.input.clone(),
        heartbeat_details: act.heartbeat_details.clone(),
        scheduled_time: Some(to_timestamp(from_millis(act.scheduled_time_ms))),
        current_attempt_scheduled_time: Some(to_timestamp(from_millis(
            act.current_attempt_scheduled_time_ms,
        ))),
        started_time: Some(to_timestamp(from_millis(act.started_time_ms))),
        attempt: act.attempt,
        // Present even when zero, as the reference copies them from the scheduled event: the
        // TypeScript SDK refuses an activity task without them.
        schedule_to_close_timeout: Some(act.schedule_to_close.unwrap_or_default()),
        start_to_close_timeout: Some(act.start_to_close.unwrap_or_default()),
        heartbeat_timeout: Some(act.heartbeat.unwrap_or_default()),
        retry_policy: act.retry_policy.clone(),
        priority: act.priority.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    fn key(n: u32) -> RunKey {
        RunKey {
            namespace_id: "ns".into(),
            workflow_id: format!("wf-{n}"),
            run_id: format!("run-{n}"),
        }
    }

    #[test]
    fn oldest_unused_runs_are_dropped_past_capacity() {
        let mut cache = RunCache::default();
        let held = cache.slot(&key(1), 2);
        let _ = cache.slot(&key(2), 2);
        let _ = cache.slot(&key(3), 2);
        // Run 1 is in use, so run 2 (the oldest unused) went instead.
        assert_eq!(cache.len(), 2);
        assert!(cache.slots.contains_key(&key(1)));
        assert!(!cache.slots.contains_key(&key(2)));
        assert!(
            Arc::ptr_eq(&held, &cache.slot(&key(1), 2)),
            "same slot while cached"
        );
        drop(held);
        // Run 1 went to the back of the queue when it was skipped: run 3 goes next, then 1.
        let _ = cache.slot(&key(4), 2);
        assert_eq!(cache.len(), 2);
        assert!(!cache.slots.contains_key(&key(3)));
        let _ = cache.slot(&key(5), 2);
        assert_eq!(cache.len(), 2);
        assert!(
            !cache.slots.contains_key(&key(1)),
            "released, then dropped in its turn"
        );
    }

    fn ev(id: i64) -> HistoryEvent {
        HistoryEvent {
            event_id: id,
            ..Default::default()
        }
    }

    #[test]
    fn the_event_tail_serves_ranges_it_holds_and_forgets_completed_tasks() {
        let ms = MutableState {
            next_event_id: 4,
            ..Default::default()
        };
        let mut cached = Cached::new(ms, 1, encode_all(&[ev(1), ev(2), ev(3)]));
        assert_eq!(cached.events(1, 3).map(|v| v.len()), Some(3));
        assert!(cached.events(1, 4).is_none(), "not yet written");
        // A task completes (started id 3) and events 4..=6 are written.
        cached.ms.last_completed_wft_started_id = 3;
        cached.ms.next_event_id = 7;
        cached.append(4, encode_all(&[ev(4), ev(5), ev(6)]));
        assert!(
            cached.events(1, 6).is_none(),
            "events of completed tasks are dropped"
        );
        let got = cached.events(4, 6).expect("held");
        assert_eq!(
            got.iter()
                .map(|b| HistoryEvent::decode(b.as_slice()).unwrap().event_id)
                .collect::<Vec<_>>(),
            [4, 5, 6]
        );
        // A gap (should not happen) empties the tail rather than serving wrong events.
        cached.ms.next_event_id = 10;
        cached.append(9, encode_all(&[ev(9)]));
        assert!(cached.events(4, 6).is_none());
        assert!(cached.events(9, 9).is_none());
    }

    #[test]
    fn removed_runs_do_not_pile_up_in_the_order() {
        let mut cache = RunCache::default();
        for n in 0..5000 {
            let _ = cache.slot(&key(n), 10_000);
            cache.remove(&key(n));
        }
        assert_eq!(cache.len(), 0);
        assert!(
            cache.order.len() <= 1024 + 1,
            "order holds {}",
            cache.order.len()
        );
    }

    #[test]
    fn a_cache_of_busy_runs_grows_instead_of_spinning() {
        let mut cache = RunCache::default();
        let held: Vec<_> = (0..5).map(|n| cache.slot(&key(n), 2)).collect();
        assert_eq!(cache.len(), 5);
        drop(held);
        let _ = cache.slot(&key(9), 2);
        assert_eq!(cache.len(), 2);
    }
}
