//! The commit pipeline: a transition on a run (load, decide, one batch, commit, cache, then
//! the effects: tasks to matching, timers, polls reserved in the transition answered).
use super::*;

impl Engine {
    /// Commits a batch on its shard: at once refused when the shard's lease is known lost, and
    /// the shard marked lost when the store refuses the batch for its lease.
    pub(super) async fn commit_batch(&self, batch: WriteBatch) -> Result<()> {
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
    pub(super) async fn transact_then<T>(
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
        let shard = self.shard(shard_id)?;
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
        let mut batch = self.batch_for(key, &shard);
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
            // The next run is created in this same transaction and becomes the current one.
            self.add_new_run(&mut batch, next, Some(key.run_id.clone()));
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
        match self.commit_batch(batch).await {
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
                Err(e)
            }
        }
    }

    /// Adds to `batch` everything creating the run `next` writes: its execution row, the
    /// current-run pointer moved to it (from `expected_current`, `None` when the workflow id
    /// has no run yet), its first events, timers and tasks, and its visibility record. Every
    /// new run (a start, a reset, the next run of a continue-as-new, retry or cron) is written
    /// by this one function.
    pub(super) fn add_new_run(
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
        self.fill_batch(
            batch,
            &next.key,
            &next.events,
            &next.timers,
            &next.transfers,
            &[],
        );
    }

    /// Creates the run `next` in a transaction of its own (a start; a reset when the current
    /// run is closed already): commits its writes (`add_new_run`) on `shard`, caches it (unless
    /// a request loaded it from the store meanwhile: the stored copy is never older), then
    /// queues its timers and tasks and answers the polls its first transition reserved.
    pub(super) async fn create_run(
        &self,
        shard: &Shard,
        next: NextRun,
        expected_current: Option<String>,
        handoffs: Vec<(Reservation, Started)>,
    ) -> Result<()> {
        let mut batch = self.batch_for(&next.key, shard);
        self.add_new_run(&mut batch, &next, expected_current);
        let encoded: Vec<Vec<u8>> = batch.events.iter().map(|(_, _, e)| e.clone()).collect();
        let timer_rows: Vec<timers::Queued> =
            batch.timers_add.iter().map(timers::Queued::of).collect();
        let transfer_rows = batch.transfers_add.clone();
        self.commit_batch(batch).await?;
        let NextRun {
            key, ms, events, ..
        } = next;
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
        Ok(())
    }

    /// Starts the workflow and activity tasks this transition created for pollers waiting on
    /// their queues right now, in this same transition: one commit instead of a second one
    /// when the poller takes the task (what the poller's `RecordTaskStarted` would have
    /// written, with its identity). Tasks without a waiting poller are queued as before.
    pub(super) fn start_for_waiting_pollers(
        &self,
        t: &mut Transition<'_>,
    ) -> Vec<(Reservation, Started)> {
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
    pub(super) fn answers(
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
    pub(super) async fn hand_over(&self, key: &RunKey, poller: Reservation, answer: Answer) {
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
    pub(super) fn next_run(
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

    /// Deletes a transfer row whose run is gone.
    pub(super) async fn drop_transfer(&self, key: &RunKey, shard_id: i32, task_id: i64) {
        let Ok(shard) = self.shard(shard_id) else {
            return; // The shard's holder deletes it.
        };
        let mut batch = self.batch_for(key, &shard);
        batch.transfers_delete.push(task_id);
        if let Err(e) = self.commit_batch(batch).await {
            tracing::warn!(error = %e, "failed to delete the transfer task of a deleted run");
        }
    }

    pub(super) async fn commit_timer_delete(
        &self,
        key: &RunKey,
        shard_id: i32,
        timer_id: TimerKey,
    ) -> Result<()> {
        let mut batch = self.batch_for(key, &*self.shard(shard_id)?);
        batch.timers_delete.push(timer_id);
        self.commit_batch(batch).await?;
        Ok(())
    }

    pub(super) fn batch_for(&self, key: &RunKey, shard: &Shard) -> WriteBatch {
        WriteBatch {
            shard_id: shard.id,
            range_id: shard.range_id,
            namespace_id: key.namespace_id.clone(),
            workflow_id: key.workflow_id.clone(),
            ..Default::default()
        }
    }

    pub(super) fn fill_batch(
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

    pub(super) fn after_commit(
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
}

/// A task created and taken in the same transition (an eagerly started activity, a task
/// started for a waiting poll) is neither written nor dispatched: drops it from both lists.
pub(super) fn drop_taken_transfers(
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

/// A task a transition started for a waiting poller. Short-lived (built in the transition,
/// turned into its answer right after the commit), so its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Started {
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
pub(super) enum Answer {
    Ready(Handoff),
    /// A workflow task whose events are no longer all cached.
    ReadHistory {
        run: StartedRun,
        wft: crate::state::WorkflowTaskInfo,
        messages: Vec<temporalio_protos::temporal::api::protocol::v1::Message>,
        first: i64,
    },
}
