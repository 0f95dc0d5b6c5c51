//! Worker tasks: workflow tasks and activity tasks started, completed, failed; sticky queues.
use super::*;

impl Engine {
    /// Records that a poller took a workflow task and builds the poll response (answered before
    /// the start commits: [`Engine::start_task`]). `Ok(None)` means the task was stale and the
    /// poller should keep waiting.
    pub async fn record_workflow_task_started(
        &self,
        task: &QueuedTask,
        (identity, build_id): (&str, &str),
        request_id: &str,
    ) -> Result<Option<PollWorkflowTaskAnswer>> {
        let started = self
            .start_task(
                task,
                |t| {
                    let wft =
                        t.start_wft_by(task.scheduled_event_id, (identity, build_id), request_id)?;
                    let messages = t.update_messages(wft.scheduled_event_id, wft.started_event_id);
                    // What the answer needs of the run, not a copy of all of it.
                    Ok((wft, StartedRun::of(t.ms), messages))
                },
                |(wft, ms, _), before, new| {
                    let first = workflow_task_first_event(ms, wft);
                    before.events_with(first, wft.started_event_id, new)
                },
            )
            .await;
        let ((wft, ms, messages), held) = match started {
            Ok(v) => v,
            Err(Error::NotFound(_)) => {
                self.drop_stale_transfer(task).await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let events = match held {
            Some(events) => events,
            None => {
                let key = RunKey {
                    namespace_id: task.namespace_id.clone(),
                    workflow_id: task.workflow_id.clone(),
                    run_id: task.run_id.clone(),
                };
                let first = workflow_task_first_event(&ms, &wft);
                // Read once the start has committed (its commit holds the run's lock).
                drop(self.slot(&key).lock().await);
                let read = self.read_events(&key, first, wft.started_event_id).await?;
                if read.last().map(|e| e.event_id) != Some(wft.started_event_id) {
                    // The start did not commit: its task is back in matching.
                    return Ok(None);
                }
                encode_all(&read)
            }
        };
        Ok(Some(workflow_task(&ms, &wft, messages, events)))
    }

    pub(super) async fn drop_stale_transfer(&self, task: &QueuedTask) {
        let key = RunKey {
            namespace_id: task.namespace_id.clone(),
            workflow_id: task.workflow_id.clone(),
            run_id: task.run_id.clone(),
        };
        self.drop_transfer(&key, task.shard_id, task.task_id).await;
    }

    /// Deletes a transfer task row with nothing left to do (its run is gone).
    pub(super) async fn drop_transfer(&self, key: &RunKey, shard_id: i32, task_id: i64) {
        let Ok(shard) = self.shard(shard_id) else {
            return; // The shard's holder deletes it.
        };
        let plan = self.plan_drop_transfer(key, &shard, task_id);
        if let Err(e) = self.apply(plan, None).await {
            tracing::warn!(error = %e, "failed to delete a transfer task");
        }
    }

    pub(super) fn token_key(data: &TaskTokenData) -> RunKey {
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
                t.check_wft_start(data.started_time_ms)?;
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
            t.check_wft_start(data.started_time_ms)?;
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

    /// Records that a poller took an activity attempt and builds the poll response (answered
    /// before the start commits: [`Engine::start_task`]); `Ok(None)` when the task was stale.
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
            .start_task(
                task,
                |t| {
                    let act = t.start_activity(
                        task.scheduled_event_id,
                        task.attempt,
                        identity,
                        request_id,
                    )?;
                    Ok((act, t.ms.workflow_type.clone(), t.ms.namespace.clone()))
                },
                |_, _, _| (),
            )
            .await;
        let ((act, workflow_type, namespace), ()) = match started {
            Ok(v) => v,
            Err(Error::NotFound(_)) => {
                self.drop_stale_transfer(task).await;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        Ok(Some(activity_task(&key, &act, &workflow_type, &namespace)))
    }

    /// Finds the started activity attempt a by-id request names.
    pub async fn activity_by_id(
        &self,
        ns: &Namespace,
        workflow_id: &str,
        run_id: &str,
        activity_id: &str,
    ) -> Result<ActivityTarget> {
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
        Ok(ActivityTarget {
            scheduled_event_id: act.scheduled_event_id,
            attempt: act.attempt,
            started_time_ms: 0,
            key,
        })
    }

    /// Resolves an activity task token to the attempt it names.
    pub fn activity_token(&self, ns: &Namespace, token_bytes: &[u8]) -> Result<ActivityTarget> {
        let data = token::decode(token_bytes, token::ACTIVITY_TASK)?;
        if data.namespace_id != ns.id {
            return Err(Error::Invalid(
                "task token does not belong to this namespace".into(),
            ));
        }
        Ok(ActivityTarget {
            key: Self::token_key(&data),
            scheduled_event_id: data.scheduled_event_id,
            attempt: data.attempt,
            started_time_ms: data.started_time_ms,
        })
    }

    /// Runs an activity input against the run of `target`, refused as not found when a token
    /// names a start the run does not hold.
    pub async fn update_activity<T>(
        &self,
        target: &ActivityTarget,
        f: impl FnOnce(&mut Transition<'_>) -> std::result::Result<T, StateError>,
    ) -> Result<T> {
        self.transact(&target.key, None, |t| {
            t.check_activity_start(target.scheduled_event_id, target.started_time_ms)?;
            f(t)
        })
        .await
    }
}

/// The started activity attempt a worker's request names, by task token or by id.
#[derive(Debug, Clone)]
pub struct ActivityTarget {
    pub key: RunKey,
    pub scheduled_event_id: i64,
    pub attempt: i32,
    /// From a task token: the start it was issued for (0 by id: the current one).
    started_time_ms: i64,
}
