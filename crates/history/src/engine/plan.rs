//! Plans: what one decision on a run writes (one batch, committed whole on the run's shard)
//! and what follows its commit (the cache, timers, tasks, watchers, polls). Every write the
//! engine makes is a plan built here and carried out by [`Engine::apply`]; nothing else
//! builds a write batch.
use super::*;
use kairos_persistence::{CurrentWrite, ExecutionWrite, VisibilityWrite, WriteBatch};

/// One decision's writes and the steps that follow their commit.
pub(super) struct Plan {
    batch: WriteBatch,
    /// The run the plan is about.
    key: RunKey,
    /// What the run's cached copy becomes once committed.
    cache: CacheStep,
    /// A second run the plan creates (the next run of a continue-as-new, retry or cron; a
    /// reset's run), cached once committed.
    successor: Option<(RunKey, MutableState, Vec<Vec<u8>>)>,
    /// What the run's watchers (long polls) learn.
    progress: Option<RunProgress>,
    /// Timers the plan deletes that may still be queued.
    timers_dropped: Vec<TimerKey>,
    /// Tasks the decision started for waiting pollers, answered once committed.
    handoffs: Vec<(Reservation, Started)>,
}

enum CacheStep {
    /// Nothing cached changes (a task or timer row left by a run).
    Keep,
    /// The held copy takes the new state, a version up, with the transition's events.
    Advance {
        ms: Box<MutableState>,
        first_event_id: i64,
        encoded: Vec<Vec<u8>>,
        /// The transition closed the run: its copy is freed once the lock is let go.
        closes: bool,
    },
    /// A new run, cached unless a request loaded it from the store meanwhile.
    Create {
        ms: Box<MutableState>,
        encoded: Vec<Vec<u8>>,
    },
    /// The run is deleted: its copy goes and its watchers learn it is gone.
    Forget,
}

impl Plan {
    /// The events a transition's plan appends, from their first id (none for other plans).
    pub(super) fn new_events(&self) -> (i64, &[Vec<u8>]) {
        match &self.cache {
            CacheStep::Advance {
                first_event_id,
                encoded,
                ..
            } => (*first_event_id, encoded),
            _ => (0, &[]),
        }
    }

    /// When the plan's commit may be answered (synced by default).
    pub(super) fn answered(mut self, durability: kairos_persistence::Durability) -> Self {
        self.batch.durability = durability;
        self
    }
}

impl Engine {
    fn empty_plan(&self, key: &RunKey, shard: &Shard, cache: CacheStep) -> Plan {
        Plan {
            batch: WriteBatch {
                shard_id: shard.id,
                range_id: shard.range_id,
                namespace_id: key.namespace_id.clone(),
                workflow_id: key.workflow_id.clone(),
                ..Default::default()
            },
            key: key.clone(),
            cache,
            successor: None,
            progress: None,
            timers_dropped: Vec::new(),
            handoffs: Vec::new(),
        }
    }

    /// The plan of a transition on a loaded run: `before` is the cached state it started
    /// from (at `version`), `ms` the state it reached.
    pub(super) fn plan_transition(
        &self,
        key: &RunKey,
        shard: &Shard,
        (before, version): (&MutableState, i64),
        ms: MutableState,
        decided: Decided,
        successor: Option<NextRun>,
    ) -> Plan {
        let Decided {
            events,
            timers,
            timers_obsolete,
            transfers,
            transfers_done,
            fired_timer,
            handoffs,
        } = decided;
        let status_changed = ms.status != before.status;
        let closes = status_changed && crate::state::is_closed(ms.status);
        let retagged = ms.search_attributes != before.search_attributes || ms.memo != before.memo;
        let mut plan = self.empty_plan(key, shard, CacheStep::Keep);
        let batch = &mut plan.batch;
        batch.executions.push((
            key.run_id.clone(),
            ExecutionWrite::Update {
                state: ms.encode_to_vec(),
                expected_version: version,
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
        fill_batch(batch, key, &events, &timers, &transfers, &transfers_done);
        // The events as just encoded for the store, for the run's cache: a copy costs less than
        // encoding them a second time.
        let encoded: Vec<Vec<u8>> = batch.events.iter().map(|(_, _, e)| e.clone()).collect();
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
        batch.timers_delete.extend(fired_timer);
        let obsolete = timers_obsolete.iter().map(|t| TimerKey {
            fire_at_ms: t.fire_at_ms,
            task_id: t.task_id,
        });
        batch.timers_delete.extend(obsolete.clone());
        plan.timers_dropped.extend(obsolete);
        if let Some(next) = successor {
            // The next run is created in this same transaction and becomes the current one.
            let from = plan.batch.events.len();
            self.add_new_run(&mut plan.batch, &next, Some(key.run_id.clone()));
            let encoded = plan.batch.events[from..]
                .iter()
                .map(|(_, _, e)| e.clone())
                .collect();
            plan.successor = Some((next.key, next.ms, encoded));
        }
        plan.progress = Some(RunProgress::of(&ms, &events));
        plan.handoffs = handoffs;
        plan.cache = CacheStep::Advance {
            ms: Box::new(ms),
            first_event_id: events.first().map_or(0, |e| e.event_id),
            encoded,
            closes,
        };
        plan
    }

    /// The plan creating the run `next` alone (a start; a reset when the current run is
    /// closed already), moving the current-run pointer from `expected_current` (`None` when
    /// the workflow id has no run yet). `handoffs` are the tasks its first transition started
    /// for waiting pollers.
    pub(super) fn plan_new_run(
        &self,
        shard: &Shard,
        next: NextRun,
        expected_current: Option<String>,
        handoffs: Vec<(Reservation, Started)>,
    ) -> Plan {
        let mut plan = self.empty_plan(&next.key, shard, CacheStep::Keep);
        self.add_new_run(&mut plan.batch, &next, expected_current);
        let encoded = plan
            .batch
            .events
            .iter()
            .map(|(_, _, e)| e.clone())
            .collect();
        plan.progress = Some(RunProgress::of(&next.ms, &next.events));
        plan.handoffs = handoffs;
        plan.cache = CacheStep::Create {
            ms: Box::new(next.ms),
            encoded,
        };
        plan
    }

    /// The plan deleting a run: its row, its current-run pointer if it is current, its
    /// visibility record, and the timer that asked for it (if one did).
    pub(super) fn plan_delete(&self, key: &RunKey, shard: &Shard, timer: Option<TimerKey>) -> Plan {
        let mut plan = self.empty_plan(key, shard, CacheStep::Forget);
        let batch = &mut plan.batch;
        batch
            .executions
            .push((key.run_id.clone(), ExecutionWrite::Delete));
        batch.current = Some(CurrentWrite::DeleteIf {
            run_id: key.run_id.clone(),
        });
        batch.timers_delete.extend(timer);
        batch.visibility.push(VisibilityWrite::Delete {
            run_id: key.run_id.clone(),
        });
        plan
    }

    /// The plan deleting a transfer task row that has nothing left to do.
    pub(super) fn plan_drop_transfer(&self, key: &RunKey, shard: &Shard, task_id: i64) -> Plan {
        let mut plan = self.empty_plan(key, shard, CacheStep::Keep);
        plan.batch.transfers_delete.push(task_id);
        plan
    }

    /// The plan deleting a fired timer's row that changed nothing.
    pub(super) fn plan_drop_timer(&self, key: &RunKey, shard: &Shard, timer: TimerKey) -> Plan {
        let mut plan = self.empty_plan(key, shard, CacheStep::Keep);
        plan.batch.timers_delete.push(timer);
        plan
    }

    /// Carries out a plan: commits its batch on its shard, then, only if that committed,
    /// updates the cache (`held` is the run's locked slot for a transition or a delete; it is
    /// let go before the polls are answered), queues its timers, hands its tasks to matching,
    /// wakes the run's watchers and answers the polls it started tasks for. A failed commit
    /// empties `held`: the stored copy is read again next time.
    ///
    /// Runs to its end even if its caller is dropped (a client cancelled its call, a node that
    /// forwarded it gave up): once a batch may have committed, what follows it (the cache
    /// advanced, its timers queued, its tasks handed out) must happen, or the committed run
    /// would wait for a timer or task that exists only as a row.
    pub(super) async fn apply(
        &self,
        plan: Plan,
        held: Option<tokio::sync::OwnedMutexGuard<Option<Cached>>>,
    ) -> Result<()> {
        let engine = self.clone();
        tokio::spawn(async move { engine.apply_to_end(plan, held).await })
            .await
            .unwrap_or_else(|e| Err(Error::Unavailable(format!("a commit failed: {e}"))))
    }

    async fn apply_to_end(
        &self,
        plan: Plan,
        held: Option<tokio::sync::OwnedMutexGuard<Option<Cached>>>,
    ) -> Result<()> {
        let Plan {
            batch,
            key,
            cache,
            successor,
            progress,
            timers_dropped,
            handoffs,
        } = plan;
        let shard_id = batch.shard_id;
        let timer_rows: Vec<timers::Queued> =
            batch.timers_add.iter().map(timers::Queued::of).collect();
        let transfer_rows = batch.transfers_add.clone();
        let lease = batch.range_id;
        test_gate(Gate::Commit, &key.workflow_id).await;
        if let Err(e) = self.commit_batch(batch).await {
            if let Some(mut held) = held {
                *held = None;
            }
            tracing::warn!(run = %key, error = %e, "failed to commit a transition");
            return Err(e);
        }
        test_gate(Gate::Effects, &key.workflow_id).await;
        let answers = match cache {
            CacheStep::Keep => Vec::new(),
            CacheStep::Advance {
                ms,
                first_event_id,
                encoded,
                closes,
            } => {
                let mut held = held.expect("a transition holds its run's slot");
                let cached = held.as_mut().expect("loaded before the transition");
                cached.ms = *ms;
                cached.version += 1;
                cached.append(first_event_id, encoded);
                let answers = self.answers(&key, cached, handoffs);
                drop(held);
                if closes {
                    // A closed run is rarely touched again (its close event is read from the
                    // store): free its memory now rather than when it ages out. A request
                    // still holding the old slot commits against the stored version, so it
                    // cannot overwrite anything.
                    self.inner.runs.lock().remove(&key);
                }
                answers
            }
            CacheStep::Create { ms, encoded } => {
                let slot = self.slot(&key);
                let mut held = slot.lock().await;
                if held.is_none() {
                    let mut cached = Cached::new(*ms, 1, encoded);
                    cached.lease = lease;
                    *held = Some(cached);
                }
                let cached = held.as_ref().expect("cached above");
                self.answers(&key, cached, handoffs)
            }
            CacheStep::Forget => {
                if let Some(mut held) = held {
                    *held = None;
                }
                self.inner.runs.lock().remove(&key);
                if let Some(tx) = self.inner.watchers.lock().remove(&key) {
                    tx.send_replace(RunProgress {
                        gone: true,
                        ..RunProgress::default()
                    });
                }
                Vec::new()
            }
        };
        for t in &timers_dropped {
            self.inner.timers.remove(t.fire_at_ms, shard_id, t.task_id);
        }
        if let Some((next_key, ms, encoded)) = successor {
            // Only if nobody loaded (and maybe already advanced) it from the store since the
            // commit: the stored copy is never older than this one.
            let slot = self.slot(&next_key);
            let mut held = slot.lock().await;
            if held.is_none() {
                let mut cached = Cached::new(ms, 1, encoded);
                cached.lease = lease;
                *held = Some(cached);
            }
        }
        for task in &transfer_rows {
            self.dispatch_row(task);
        }
        for timer in timer_rows {
            self.inner.timers.push(timer);
        }
        if let Some(progress) = progress
            && let Some(tx) = self.inner.watchers.lock().get(&key)
        {
            // Every commit wakes the waiters; the value only moves forward (two commits of one
            // run can report out of order once their locks are released).
            tx.send_modify(|current| {
                if progress.next_event_id >= current.next_event_id {
                    *current = progress;
                }
            });
        }
        for (poller, answer) in answers {
            self.hand_over(&key, poller, answer).await;
        }
        Ok(())
    }

    /// Commits a batch on its shard: at once refused when the shard's lease is known lost, and
    /// the shard marked lost when the store refuses the batch for its lease.
    async fn commit_batch(&self, batch: WriteBatch) -> Result<()> {
        let shard = self.shard(batch.shard_id)?;
        if shard.range_id != batch.range_id {
            // Made under a lease this server has since given up and taken again.
            return Err(Error::ShardOwnershipLost { shard_id: shard.id });
        }
        match self.inner.store.commit(batch).await {
            Err(kairos_persistence::Error::ShardOwnershipLost { shard_id }) => {
                self.shard_lost(&shard);
                Err(Error::ShardOwnershipLost { shard_id })
            }
            other => other.map_err(Error::from),
        }
    }

    /// Adds to `batch` everything creating the run `next` writes: its execution row, the
    /// current-run pointer moved to it (from `expected_current`, `None` when the workflow id
    /// has no run yet), its first events, timers and tasks, and its visibility record. Every
    /// new run (a start, a reset, the next run of a continue-as-new, retry or cron) is written
    /// by this one function.
    fn add_new_run(
        &self,
        batch: &mut WriteBatch,
        next: &NextRun,
        expected_current: Option<String>,
    ) {
        let custom = self.custom_attributes(&next.key.namespace_id);
        batch
            .visibility
            .push(VisibilityWrite::Insert(Box::new(visibility::row(
                &next.ms, &custom,
            ))));
        batch.executions.push((
            next.key.run_id.clone(),
            ExecutionWrite::Insert {
                state: next.ms.encode_to_vec(),
            },
        ));
        batch.current = Some(CurrentWrite::Set {
            run_id: next.key.run_id.clone(),
            expected_run_id: expected_current,
            data: CurrentData {
                status: next.ms.status,
                start_request_id: next.ms.start_request_id.clone(),
            }
            .encode_to_vec(),
        });
        fill_batch(
            batch,
            &next.key,
            &next.events,
            &next.timers,
            &next.transfers,
            &[],
        );
    }
}

/// What a transition decided, besides the state it reached.
pub(super) struct Decided {
    pub(super) events: Vec<HistoryEvent>,
    /// Timers to write.
    pub(super) timers: Vec<(i64, crate::state::NewTimer)>,
    /// Timers no longer wanted.
    pub(super) timers_obsolete: Vec<crate::state::TimerRef>,
    pub(super) transfers: Vec<(i64, TransferData)>,
    pub(super) transfers_done: Vec<i64>,
    /// The fired timer the transition handled, deleted with it.
    pub(super) fired_timer: Option<TimerKey>,
    pub(super) handoffs: Vec<(Reservation, Started)>,
}

fn fill_batch(
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

/// Where a test can hold a commit (see `test_gate`).
#[derive(Clone, Copy)]
enum Gate {
    /// Right before the batch is sent (`KAIROS_TEST_HOLD_COMMITS`).
    Commit,
    /// Right after it committed, before what follows it (`KAIROS_TEST_HOLD_EFFECTS`).
    Effects,
}

/// A test hook: with `KAIROS_TEST_HOLD_COMMITS=DIR` (or `KAIROS_TEST_HOLD_EFFECTS=DIR`) in the
/// environment, a commit for workflow `W` waits right before it is sent (or right after it
/// committed) while the file `DIR/W` exists, so that a test can hold a node between deciding a
/// transition and committing it (the cluster's fencing test), or between a commit and its
/// effects (the cancelled-call test). Without the variables it costs one load of a set-once
/// value.
async fn test_gate(gate: Gate, workflow_id: &str) {
    static DIRS: std::sync::OnceLock<[Option<std::path::PathBuf>; 2]> = std::sync::OnceLock::new();
    let dirs = DIRS.get_or_init(|| {
        ["KAIROS_TEST_HOLD_COMMITS", "KAIROS_TEST_HOLD_EFFECTS"]
            .map(|var| std::env::var_os(var).map(std::path::PathBuf::from))
    });
    let Some(dir) = &dirs[gate as usize] else {
        return;
    };
    let file = dir.join(workflow_id);
    if !file.exists() {
        return;
    }
    tracing::warn!(workflow_id, "commit held at the test gate");
    while file.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
