//! The commit pipeline: a transition on a run (load, decide, plan, then `apply`: commit on
//! the run's shard, cache, effects), and the polls a transition starts tasks for.
use super::*;

/// A transition decided, not yet committed.
struct Decision<T> {
    out: T,
    /// What commits it; `None` when nothing changed.
    plan: Option<Plan>,
    /// The run's locked slot, for `apply` (with a plan).
    held: Option<tokio::sync::OwnedMutexGuard<Option<Cached>>>,
}

impl Engine {
    /// Applies `f` to the run as one transition and commits it. `extra_timer_delete` removes a
    /// fired timer in the same transaction.
    pub(crate) async fn transact<T>(
        &self,
        key: &RunKey,
        extra_timer_delete: Option<TimerKey>,
        f: impl FnOnce(&mut Transition<'_>) -> std::result::Result<T, StateError>,
    ) -> Result<T> {
        self.transact_then(key, extra_timer_delete, f, None, Durability::Synced)
            .await
    }

    /// [`Engine::transact`], with `successor` (a run built elsewhere, a reset's) created and
    /// made current in the same transaction, answered with `durability`.
    pub(super) async fn transact_then<T>(
        &self,
        key: &RunKey,
        extra_timer_delete: Option<TimerKey>,
        f: impl FnOnce(&mut Transition<'_>) -> std::result::Result<T, StateError>,
        successor: Option<NextRun>,
        durability: Durability,
    ) -> Result<T> {
        let decision = self.decide(key, extra_timer_delete, f, successor).await?;
        if let Some(plan) = decision.plan {
            self.apply(plan.answered(durability), decision.held).await?;
        }
        Ok(decision.out)
    }

    /// Starts a task a poll took (`f`, a start transition on the task's run) and returns its
    /// result with what `answer(result, before, new)` builds of it (`before`: the run as cached
    /// before the start; `new`: the start's events, from their first id), without waiting for
    /// the commit. The start commits in the background, answered once committed (not synced),
    /// holding the run's lock until then, so the attempt's completion, or anything else on the
    /// run, waits for it. If the commit fails, the cached run is dropped and the task goes back
    /// to matching; the answered attempt's completion is then refused as not found. If the
    /// machine crashes before a later synced commit covers the start, the task's row (deleted
    /// only by the start) is still stored: the task is dispatched again, and the lost attempt's
    /// token no longer matches (its start time).
    pub(super) async fn start_task<T, A>(
        &self,
        task: &QueuedTask,
        f: impl FnOnce(&mut Transition<'_>) -> std::result::Result<T, StateError>,
        answer: impl FnOnce(&T, &Cached, (i64, &[Vec<u8>])) -> A,
    ) -> Result<(T, A)> {
        let key = RunKey {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
        };
        let decision = self.decide(&key, None, f, None).await?;
        let (Some(plan), Some(held)) = (decision.plan, decision.held) else {
            // A start always changes the run: nothing to commit means nothing started.
            return Err(Error::NotFound("the task was not started".into()));
        };
        let out = decision.out;
        let before = held.as_ref().expect("loaded before the transition");
        let built = answer(&out, before, plan.new_events());
        let engine = self.clone();
        let task = task.clone();
        tokio::spawn(async move {
            let plan = plan.answered(Durability::Committed);
            if engine.apply(plan, Some(held)).await.is_err() {
                // Logged by `apply`. The task's row is still stored: it waits in matching again.
                engine.inner.matching.add_task(task);
            }
        });
        Ok((out, built))
    }

    /// Loads the run and applies `f` to it as one transition, without committing: the result,
    /// the plan that writes it (none when nothing changed; a fired timer's row is then deleted
    /// here) and the run's locked slot for `apply`.
    async fn decide<T>(
        &self,
        key: &RunKey,
        extra_timer_delete: Option<TimerKey>,
        f: impl FnOnce(&mut Transition<'_>) -> std::result::Result<T, StateError>,
        successor: Option<NextRun>,
    ) -> Result<Decision<T>> {
        let slot = self.slot(key);
        let mut guard = slot.lock_owned().await;
        let shard_id = self.shard_of(&key.namespace_id, &key.workflow_id);
        let shard = self.shard(shard_id)?;
        if guard.as_ref().is_some_and(|c| c.lease != shard.range_id) {
            // Cached under an earlier hold of the shard (or by a read without one).
            *guard = None;
        }
        self.load(key, &mut guard).await?;
        let cached = guard.as_ref().expect("loaded");
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
        let successor = continued_as_new
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
        if ms == cached.ms
            && events.is_empty()
            && timers.is_empty()
            && transfers.is_empty()
            && transfers_done.is_empty()
        {
            // Nothing changed; a fired timer's row still goes.
            if let Some(timer) = extra_timer_delete {
                self.apply(self.plan_drop_timer(key, &shard, timer), None)
                    .await?;
            }
            return Ok(Decision {
                out,
                plan: None,
                held: None,
            });
        }
        ms.state_transition_count += 1;
        ms.last_update_ms = to_millis(now);
        let decided = Decided {
            events,
            timers,
            timers_obsolete,
            transfers,
            transfers_done,
            fired_timer: extra_timer_delete,
            handoffs,
        };
        let plan = self.plan_transition(
            key,
            &shard,
            (&cached.ms, cached.version),
            ms,
            decided,
            successor,
        );
        Ok(Decision {
            out,
            plan: Some(plan),
            held: Some(guard),
        })
    }

    /// Creates the run `next` in a transaction of its own (a start; a reset when the current
    /// run is closed already).
    pub(super) async fn create_run(
        &self,
        shard: &Shard,
        next: NextRun,
        expected_current: Option<String>,
        handoffs: Vec<(Reservation, Started)>,
    ) -> Result<()> {
        let plan = self.plan_new_run(shard, next, expected_current, handoffs);
        self.apply(plan, None).await
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
                    .start_wft_by(
                        data.scheduled_event_id,
                        (poller.identity(), poller.build_id()),
                        &request_id,
                    )
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
