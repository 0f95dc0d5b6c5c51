//! New runs: the first state and events of a started, continued, retried or cron run.
use super::*;

/// A run created by a continue-as-new, committed with the run it continues.
pub(super) struct NextRun {
    pub(super) key: RunKey,
    pub(super) ms: MutableState,
    pub(super) events: Vec<HistoryEvent>,
    pub(super) timers: Vec<(i64, crate::state::NewTimer)>,
    pub(super) transfers: Vec<(i64, TransferData)>,
}

/// The mutable state and started-event attributes of a new run (a start, or the next run of a
/// continue-as-new), before its first transition.
pub(super) fn new_run(
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
        user_metadata: req.user_metadata.clone(),
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
pub(super) fn set_parent(
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
pub(super) fn normalize_workflow_timeouts(
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

impl Engine {
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
}
