//! Starting runs: start, signal-with-start, update-with-start, under the workflow id's lock,
//! with the reuse and conflict policies.
use super::*;

impl Engine {
    /// Whether the run `run_id` of the workflow answers the update `update` names by itself:
    /// a running one has it (not rejected), a closed one completed it or outlived its
    /// acceptance.
    async fn knows_update(
        &self,
        namespace_id: &str,
        req: &ws::StartWorkflowExecutionRequest,
        run_id: &str,
        update: &temporalio_protos::temporal::api::update::v1::Request,
    ) -> Result<bool> {
        let Some(update_id) = update.meta.as_ref().map(|m| m.update_id.as_str()) else {
            return Ok(false);
        };
        if update_id.is_empty() {
            return Ok(false);
        }
        let key = RunKey {
            namespace_id: namespace_id.to_string(),
            workflow_id: req.workflow_id.clone(),
            run_id: run_id.to_string(),
        };
        let ms = self.read_state(&key).await?;
        let Some(known) = ms.updates.iter().find(|u| u.update_id == update_id) else {
            return Ok(false);
        };
        Ok(if status_closed(ms.status) {
            crate::state::updates::as_closed(known).is_some()
        } else {
            !known.rejected
        })
    }

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

    pub(super) async fn start_workflow_with(
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
                // A retried eager start gets its task again while that task is still the
                // first one, started for this start (the reference's rule).
                let eager_task = if req.request_eager_execution
                    && self.inner.options.eager_workflow_start
                    && signal.is_none()
                    && update.is_none()
                {
                    let key = RunKey {
                        namespace_id: ns.id.clone(),
                        workflow_id: req.workflow_id.clone(),
                        run_id: current.run_id.clone(),
                    };
                    self.eager_again(&key, &req.request_id).await
                } else {
                    None
                };
                // A retried start is answered as the start it repeats (the reference says
                // started); what a retried signal- or update-with-start says is not checked.
                return Ok(StartOutcome {
                    run_id: current.run_id.clone(),
                    started: signal.is_none() && update.is_none(),
                    eager_task,
                });
            }
            if let Some(update) = &update
                && self
                    .knows_update(&ns.id, req, &current.run_id, update)
                    .await?
            {
                // Update-with-start naming an update the workflow has: the caller gets that
                // update, whatever the policies say (the reference's rule).
                return Ok(StartOutcome {
                    run_id: current.run_id.clone(),
                    started: false,
                    ..Default::default()
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
                        ..Default::default()
                    });
                }
                match conflict {
                    WorkflowIdConflictPolicy::UseExisting => {
                        return Ok(StartOutcome {
                            run_id: current.run_id.clone(),
                            started: false,
                            ..Default::default()
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
        let run_id = uuid::Uuid::now_v7().to_string();
        let key = RunKey {
            namespace_id: ns.id.clone(),
            workflow_id: req.workflow_id.clone(),
            run_id: run_id.clone(),
        };
        let now = self.inner.clock.now();
        let (mut ms, mut started) = new_run(&ns.id, &ns.name, req, &run_id, now);
        // Eager start, as the reference grants it: a plain start asking for it, with no start
        // backoff (a delay, a cron schedule); anything else starts as usual, silently.
        let eager = req.request_eager_execution
            && self.inner.options.eager_workflow_start
            && signal.is_none()
            && update.is_none()
            && parent.is_none()
            && ms.execution_time_ms <= to_millis(now);
        started.eager_execution_accepted = eager;
        if let Some((parent, root)) = parent {
            set_parent(&mut ms, &mut started, parent, root);
        }
        let shard_id = self.shard_of(&ns.id, &req.workflow_id);
        let shard = self.shard(shard_id)?;
        let mut ids = TaskIdsRef(&shard.ids);
        let env = self.env_for(&ms);
        let mut t = Transition::new(&mut ms, now, env, &mut ids);
        t.start_workflow_with_signal(started, signal);
        if let Some(update) = update {
            t.admit_update(update)
                .map_err(|e| Error::Invalid(format!("{e:?}")))?;
        }
        // The eager task is started for the caller (its identity, its request id) before any
        // waiting poller could take it.
        let eager_wft = if eager {
            let scheduled = t.ms.wft.as_ref().map(|w| w.scheduled_event_id);
            scheduled.and_then(|s| t.start_wft(s, &req.identity, &req.request_id).ok())
        } else {
            None
        };
        let handoffs = self.start_for_waiting_pollers(&mut t);
        let eager_run = eager_wft.as_ref().map(|_| StartedRun::of(t.ms));
        let Transition {
            events,
            timers,
            transfers,
            transfers_done,
            ..
        } = t;
        // A new run has no earlier tasks: what is done was created and taken right here.
        let (transfers, _) = drop_taken_transfers(transfers, transfers_done);
        let timers = settle_timers(&MutableState::default(), &mut ms, timers).write;
        ms.state_transition_count = 1;
        let eager_task = match (eager_wft, eager_run) {
            (Some(wft), Some(run)) => eager_task(&run, &wft, &events),
            _ => None,
        };
        let next = NextRun {
            key,
            ms,
            events,
            timers,
            transfers,
        };
        self.create_run(&shard, next, expected_run_id, handoffs)
            .await?;
        Ok(StartOutcome {
            run_id,
            started: true,
            eager_task,
        })
    }

    pub(super) async fn terminate_locked(
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
}

impl Engine {
    /// The eager task of a start retried with its request id, if the run's task is still the
    /// first one, started for that start.
    async fn eager_again(
        &self,
        key: &RunKey,
        request_id: &str,
    ) -> Option<Box<ws::PollWorkflowTaskQueueResponse>> {
        let ms = self.read_state(key).await.ok()?;
        let wft = ms
            .wft
            .clone()
            .filter(|w| w.started_event_id == 3 && w.attempt == 1 && w.request_id == request_id)?;
        let events = self.read_events(key, 1, wft.started_event_id).await.ok()?;
        eager_task(&StartedRun::of(&ms), &wft, &events)
    }
}

/// A started first task as `StartWorkflowExecutionResponse.eager_workflow_task`: our own
/// encoding read back as the API's type (it cannot fail; if it did, the started task would time
/// out and be retried like a lost one).
fn eager_task(
    run: &StartedRun,
    wft: &crate::state::WorkflowTaskInfo,
    events: &[HistoryEvent],
) -> Option<Box<ws::PollWorkflowTaskQueueResponse>> {
    let answer = workflow_task(run, wft, Vec::new(), encode_all(events));
    ws::PollWorkflowTaskQueueResponse::decode(answer.encode_to_vec().as_slice())
        .inspect_err(|e| tracing::warn!(error = %e, "failed to build an eager workflow task"))
        .ok()
        .map(Box::new)
}
