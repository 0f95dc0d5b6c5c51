//! What a worker receives: the workflow task and activity task answers built from a run's state.
use super::*;

/// The parts of a run a started workflow task's answer names.
pub(super) struct StartedRun {
    pub(super) namespace_id: String,
    pub(super) workflow_id: String,
    pub(super) run_id: String,
    pub(super) workflow_type: String,
    pub(super) task_queue: String,
    pub(super) last_completed_wft_started_id: i64,
}

impl StartedRun {
    pub(super) fn of(ms: &MutableState) -> Self {
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

/// The first event a started workflow task carries: all of the history, or for a sticky task
/// what came after the worker's last completed task.
pub(super) fn workflow_task_first_event(
    run: &StartedRun,
    wft: &crate::state::WorkflowTaskInfo,
) -> i64 {
    if wft.sticky {
        run.last_completed_wft_started_id + 1
    } else {
        1
    }
}

#[allow(dead_code)]
pub(super) fn event_type_name(t: i32) -> &'static str {
    EventType::try_from(t)
        .map(|e| e.as_str_name())
        .unwrap_or("Unknown")
}

/// The answer to a workflow task poll: the started task, its token and the events the worker
/// needs (the whole history, or for a sticky task those since its last completed task).
pub(super) fn workflow_task(
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
pub(super) fn encode_all(events: &[HistoryEvent]) -> Vec<Vec<u8>> {
    events.iter().map(Message::encode_to_vec).collect()
}

/// The task a worker receives for a started activity attempt (from a poll or eagerly).
pub(super) fn activity_task(
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
