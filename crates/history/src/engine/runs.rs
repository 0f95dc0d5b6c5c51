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
