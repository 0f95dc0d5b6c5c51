//! Reset: a new run whose history is a prefix of another run's, cut right after a workflow
//! task started. Its mutable state is rebuilt from those events ([`rebuild`]); the reset
//! itself then fails that workflow task with cause RESET_WORKFLOW, re-arms what was pending at
//! that point (activities, timers, children not yet started, signals and cancels not yet
//! delivered), re-applies the signals and updates the old run received after the point, and schedules a
//! workflow task ([`Transition::finish_reset`]).
use kairos_core::time::{from_pb_duration, from_timestamp, to_millis, to_pb_duration};
use temporalio_protos::temporal::api::common::v1::{Memo, SearchAttributes};
use temporalio_protos::temporal::api::enums::v1::{
    EventType, TimeoutType, UpdateAdmittedEventOrigin, UpdateWorkflowExecutionLifecycleStage,
    WorkflowExecutionStatus, WorkflowTaskFailedCause,
};
use temporalio_protos::temporal::api::failure::v1::Failure;
use temporalio_protos::temporal::api::history::v1::{self as hist, HistoryEvent, history_event};

use super::{
    ActivityInfo, ChildInfo, ExternalRequest, MutableState, ParentInfo, Signal, TimerData,
    TimerInfo, TimerKind, TransferData, TransferKind, Transition, UpdateInfo, WorkflowTaskInfo,
    event, normalize_retry_policy,
};

fn event_ms(ev: &HistoryEvent) -> i64 {
    ev.event_time
        .as_ref()
        .map(|t| to_millis(from_timestamp(t)))
        .unwrap_or_default()
}

/// Rebuilds the state of run `run_id` whose history is `events` (a prefix of another run of
/// the same workflow, ending with a WorkflowTaskStarted event).
pub fn rebuild(
    namespace_id: &str,
    namespace: &str,
    workflow_id: &str,
    run_id: &str,
    events: &[HistoryEvent],
) -> Result<MutableState, String> {
    use history_event::Attributes as A;
    let mut ms = MutableState {
        namespace_id: namespace_id.to_string(),
        namespace: namespace.to_string(),
        workflow_id: workflow_id.to_string(),
        run_id: run_id.to_string(),
        status: WorkflowExecutionStatus::Running as i32,
        wft_attempt: 1,
        ..Default::default()
    };
    for ev in events {
        ms.history_size_bytes += prost::Message::encoded_len(ev) as i64;
        ms.next_event_id = ev.event_id + 1;
        let at = event_ms(ev);
        match &ev.attributes {
            Some(A::WorkflowExecutionStartedEventAttributes(a)) => {
                ms.first_execution_run_id = a.first_execution_run_id.clone();
                ms.user_metadata = ev.user_metadata.clone();
                ms.workflow_type = a
                    .workflow_type
                    .as_ref()
                    .map(|t| t.name.clone())
                    .unwrap_or_default();
                ms.task_queue = a
                    .task_queue
                    .as_ref()
                    .map(|q| q.name.clone())
                    .unwrap_or_default();
                ms.start_time_ms = at;
                ms.execution_time_ms = at
                    + from_pb_duration(a.first_workflow_task_backoff.as_ref()).as_millis() as i64;
                ms.run_timeout = a
                    .workflow_run_timeout
                    .filter(|d| d.seconds != 0 || d.nanos != 0);
                ms.execution_timeout = a.workflow_execution_timeout;
                ms.wft_timeout = a.workflow_task_timeout;
                ms.attempt = a.attempt.max(1);
                ms.retry_policy = a.retry_policy.clone();
                ms.memo = a.memo.clone();
                ms.search_attributes = a.search_attributes.clone();
                ms.cron_schedule = a.cron_schedule.clone();
                if ms.retry_policy.is_some() || !ms.cron_schedule.is_empty() {
                    ms.input = a.input.clone();
                }
                ms.last_completion_result = a.last_completion_result.clone();
                ms.execution_expiration_ms = a
                    .workflow_execution_expiration_time
                    .as_ref()
                    .map(|t| to_millis(from_timestamp(t)))
                    .unwrap_or_default();
                if let Some(p) = &a.parent_workflow_execution {
                    ms.parent = Some(ParentInfo {
                        namespace_id: a.parent_workflow_namespace_id.clone(),
                        namespace: a.parent_workflow_namespace.clone(),
                        workflow_id: p.workflow_id.clone(),
                        run_id: p.run_id.clone(),
                        initiated_event_id: a.parent_initiated_event_id,
                    });
                    ms.root = a.root_workflow_execution.clone();
                }
            }
            Some(A::WorkflowTaskScheduledEventAttributes(a)) => {
                ms.wft = Some(WorkflowTaskInfo {
                    scheduled_event_id: ev.event_id,
                    attempt: a.attempt,
                    task_queue: a
                        .task_queue
                        .as_ref()
                        .map(|q| q.name.clone())
                        .unwrap_or_default(),
                    scheduled_time_ms: at,
                    ..Default::default()
                });
            }
            Some(A::WorkflowTaskStartedEventAttributes(a)) => {
                if let Some(wft) = ms.wft.as_mut() {
                    wft.started_event_id = ev.event_id;
                    wft.started_time_ms = at;
                    wft.request_id = a.request_id.clone();
                    wft.identity = a.identity.clone();
                }
            }
            Some(A::WorkflowTaskCompletedEventAttributes(a)) => {
                super::reset_points::record(&mut ms, ev.event_id, a, at);
                ms.wft = None;
                ms.last_completed_wft_started_id = a.started_event_id;
                ms.wft_attempt = 1;
            }
            Some(A::WorkflowTaskFailedEventAttributes(_))
            | Some(A::WorkflowTaskTimedOutEventAttributes(_)) => {
                ms.wft = None;
            }
            Some(A::ActivityTaskScheduledEventAttributes(a)) => {
                ms.activities.push(ActivityInfo {
                    scheduled_event_id: ev.event_id,
                    activity_id: a.activity_id.clone(),
                    activity_type: a.activity_type.clone(),
                    task_queue: a
                        .task_queue
                        .as_ref()
                        .map(|q| q.name.clone())
                        .unwrap_or_default(),
                    header: a.header.clone(),
                    input: a.input.clone(),
                    schedule_to_close: to_pb_duration(from_pb_duration(
                        a.schedule_to_close_timeout.as_ref(),
                    )),
                    schedule_to_start: to_pb_duration(from_pb_duration(
                        a.schedule_to_start_timeout.as_ref(),
                    )),
                    start_to_close: to_pb_duration(from_pb_duration(
                        a.start_to_close_timeout.as_ref(),
                    )),
                    heartbeat: to_pb_duration(from_pb_duration(a.heartbeat_timeout.as_ref())),
                    retry_policy: Some(normalize_retry_policy(a.retry_policy.clone())),
                    scheduled_time_ms: at,
                    attempt: 1,
                    current_attempt_scheduled_time_ms: at,
                    priority: a.priority.clone(),
                    ..Default::default()
                });
            }
            Some(A::ActivityTaskCancelRequestedEventAttributes(a)) => {
                if let Some(act) = ms
                    .activities
                    .iter_mut()
                    .find(|x| x.scheduled_event_id == a.scheduled_event_id)
                {
                    act.cancel_requested = true;
                    act.cancel_requested_event_id = ev.event_id;
                }
            }
            Some(A::ActivityTaskCompletedEventAttributes(a)) => ms
                .activities
                .retain(|x| x.scheduled_event_id != a.scheduled_event_id),
            Some(A::ActivityTaskFailedEventAttributes(a)) => ms
                .activities
                .retain(|x| x.scheduled_event_id != a.scheduled_event_id),
            Some(A::ActivityTaskTimedOutEventAttributes(a)) => ms
                .activities
                .retain(|x| x.scheduled_event_id != a.scheduled_event_id),
            Some(A::ActivityTaskCanceledEventAttributes(a)) => ms
                .activities
                .retain(|x| x.scheduled_event_id != a.scheduled_event_id),
            Some(A::TimerStartedEventAttributes(a)) => ms.timers.push(TimerInfo {
                timer_id: a.timer_id.clone(),
                started_event_id: ev.event_id,
                fire_time_ms: at
                    + from_pb_duration(a.start_to_fire_timeout.as_ref()).as_millis() as i64,
                timer_tasks: Vec::new(),
            }),
            Some(A::TimerFiredEventAttributes(a)) => ms
                .timers
                .retain(|t| t.started_event_id != a.started_event_id),
            Some(A::TimerCanceledEventAttributes(a)) => ms
                .timers
                .retain(|t| t.started_event_id != a.started_event_id),
            Some(A::StartChildWorkflowExecutionInitiatedEventAttributes(a)) => {
                let command =
                    temporalio_protos::temporal::api::command::v1::StartChildWorkflowExecutionCommandAttributes {
                        namespace: a.namespace.clone(),
                        workflow_id: a.workflow_id.clone(),
                        workflow_type: a.workflow_type.clone(),
                        task_queue: a.task_queue.clone(),
                        input: a.input.clone(),
                        workflow_execution_timeout: a.workflow_execution_timeout,
                        workflow_run_timeout: a.workflow_run_timeout,
                        workflow_task_timeout: a.workflow_task_timeout,
                        parent_close_policy: a.parent_close_policy,
                        control: a.control.clone(),
                        workflow_id_reuse_policy: a.workflow_id_reuse_policy,
                        retry_policy: a.retry_policy.clone(),
                        cron_schedule: a.cron_schedule.clone(),
                        header: a.header.clone(),
                        memo: a.memo.clone(),
                        search_attributes: a.search_attributes.clone(),
                        priority: a.priority.clone(),
                        ..Default::default()
                    };
                ms.children.push(ChildInfo {
                    initiated_event_id: ev.event_id,
                    namespace: a.namespace.clone(),
                    workflow_id: a.workflow_id.clone(),
                    workflow_type: a
                        .workflow_type
                        .as_ref()
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    parent_close_policy: a.parent_close_policy,
                    command: Some(command),
                    user_metadata: ev.user_metadata.clone(),
                    ..Default::default()
                });
            }
            Some(A::ChildWorkflowExecutionStartedEventAttributes(a)) => {
                if let Some(c) = ms
                    .children
                    .iter_mut()
                    .find(|c| c.initiated_event_id == a.initiated_event_id)
                {
                    c.started = true;
                    c.started_event_id = ev.event_id;
                    c.run_id = a
                        .workflow_execution
                        .as_ref()
                        .map(|e| e.run_id.clone())
                        .unwrap_or_default();
                    c.command = None;
                }
            }
            Some(A::StartChildWorkflowExecutionFailedEventAttributes(a)) => ms
                .children
                .retain(|c| c.initiated_event_id != a.initiated_event_id),
            Some(A::ChildWorkflowExecutionCompletedEventAttributes(a)) => ms
                .children
                .retain(|c| c.initiated_event_id != a.initiated_event_id),
            Some(A::ChildWorkflowExecutionFailedEventAttributes(a)) => ms
                .children
                .retain(|c| c.initiated_event_id != a.initiated_event_id),
            Some(A::ChildWorkflowExecutionCanceledEventAttributes(a)) => ms
                .children
                .retain(|c| c.initiated_event_id != a.initiated_event_id),
            Some(A::ChildWorkflowExecutionTimedOutEventAttributes(a)) => ms
                .children
                .retain(|c| c.initiated_event_id != a.initiated_event_id),
            Some(A::ChildWorkflowExecutionTerminatedEventAttributes(a)) => ms
                .children
                .retain(|c| c.initiated_event_id != a.initiated_event_id),
            Some(A::SignalExternalWorkflowExecutionInitiatedEventAttributes(a)) => {
                let target = a.workflow_execution.clone().unwrap_or_default();
                ms.external_requests.push(ExternalRequest {
                    initiated_event_id: ev.event_id,
                    cancel: false,
                    namespace: a.namespace.clone(),
                    workflow_id: target.workflow_id,
                    run_id: target.run_id,
                    signal_name: a.signal_name.clone(),
                    input: a.input.clone(),
                    header: a.header.clone(),
                    control: a.control.clone(),
                    ..Default::default()
                });
            }
            Some(A::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes(a)) => {
                let target = a.workflow_execution.clone().unwrap_or_default();
                ms.external_requests.push(ExternalRequest {
                    initiated_event_id: ev.event_id,
                    cancel: true,
                    namespace: a.namespace.clone(),
                    workflow_id: target.workflow_id,
                    run_id: target.run_id,
                    control: a.control.clone(),
                    reason: a.reason.clone(),
                    ..Default::default()
                });
            }
            Some(A::ExternalWorkflowExecutionSignaledEventAttributes(a)) => ms
                .external_requests
                .retain(|r| r.initiated_event_id != a.initiated_event_id),
            Some(A::SignalExternalWorkflowExecutionFailedEventAttributes(a)) => ms
                .external_requests
                .retain(|r| r.initiated_event_id != a.initiated_event_id),
            Some(A::ExternalWorkflowExecutionCancelRequestedEventAttributes(a)) => ms
                .external_requests
                .retain(|r| r.initiated_event_id != a.initiated_event_id),
            Some(A::RequestCancelExternalWorkflowExecutionFailedEventAttributes(a)) => ms
                .external_requests
                .retain(|r| r.initiated_event_id != a.initiated_event_id),
            Some(A::WorkflowExecutionSignaledEventAttributes(_)) => ms.signal_count += 1,
            Some(A::WorkflowExecutionCancelRequestedEventAttributes(_)) => {
                ms.cancel_requested = true;
            }
            Some(A::UpsertWorkflowSearchAttributesEventAttributes(a)) => {
                let merged = ms
                    .search_attributes
                    .get_or_insert_with(SearchAttributes::default);
                for (k, v) in a
                    .search_attributes
                    .clone()
                    .unwrap_or_default()
                    .indexed_fields
                {
                    merged.indexed_fields.insert(k, v);
                }
            }
            Some(A::WorkflowPropertiesModifiedEventAttributes(a)) => {
                let merged = ms.memo.get_or_insert_with(Memo::default);
                for (k, v) in a.upserted_memo.clone().unwrap_or_default().fields {
                    merged.fields.insert(k, v);
                }
            }
            Some(A::WorkflowExecutionCompletedEventAttributes(_))
            | Some(A::WorkflowExecutionFailedEventAttributes(_))
            | Some(A::WorkflowExecutionTimedOutEventAttributes(_))
            | Some(A::WorkflowExecutionCanceledEventAttributes(_))
            | Some(A::WorkflowExecutionTerminatedEventAttributes(_))
            | Some(A::WorkflowExecutionContinuedAsNewEventAttributes(_)) => {
                return Err("the reset point lies after the run closed".into());
            }
            Some(A::WorkflowExecutionUpdateAdmittedEventAttributes(a)) => {
                let update_id = a
                    .request
                    .as_ref()
                    .and_then(|r| r.meta.as_ref())
                    .map(|m| m.update_id.clone())
                    .unwrap_or_default();
                ms.updates.push(UpdateInfo {
                    update_id,
                    request: a.request.clone(),
                    stage: UpdateWorkflowExecutionLifecycleStage::Admitted as i32,
                    admitted_event_id: ev.event_id,
                    ..Default::default()
                });
            }
            Some(A::WorkflowExecutionUpdateAcceptedEventAttributes(a)) => {
                let update_id = a
                    .accepted_request
                    .as_ref()
                    .and_then(|r| r.meta.as_ref())
                    .map(|m| m.update_id.clone())
                    .unwrap_or_else(|| a.protocol_instance_id.clone());
                if let Some(u) = ms.updates.iter_mut().find(|u| u.update_id == update_id) {
                    // Admitted by an event earlier in the prefix.
                    u.stage = UpdateWorkflowExecutionLifecycleStage::Accepted as i32;
                    u.accepted_event_id = ev.event_id;
                    u.delivered_in_wft = 1;
                    continue;
                }
                ms.updates.push(UpdateInfo {
                    update_id,
                    request: a.accepted_request.clone(),
                    stage: UpdateWorkflowExecutionLifecycleStage::Accepted as i32,
                    accepted_event_id: ev.event_id,
                    delivered_in_wft: 1,
                    ..Default::default()
                });
            }
            Some(A::WorkflowExecutionUpdateCompletedEventAttributes(a)) => {
                let update_id = a.meta.as_ref().map(|m| m.update_id.as_str()).unwrap_or("");
                if let Some(u) = ms.updates.iter_mut().find(|u| u.update_id == update_id) {
                    u.stage = UpdateWorkflowExecutionLifecycleStage::Completed as i32;
                    u.outcome = a.outcome.clone();
                }
            }
            // Signals and markers leave nothing pending that a reset re-arms.
            _ => {}
        }
    }
    if ms.start_time_ms == 0 {
        return Err("the history does not start with WorkflowExecutionStarted".into());
    }
    if ms.wft.as_ref().is_none_or(|w| w.started_event_id == 0) {
        return Err("the reset point is not right after a started workflow task".into());
    }
    Ok(ms)
}

impl Transition<'_> {
    /// Completes a reset run built by [`rebuild`]: fails the started workflow task with cause
    /// RESET_WORKFLOW, re-arms what was pending, re-applies `reapply` and schedules a workflow
    /// task.
    pub fn finish_reset(&mut self, base_run_id: &str, reason: &str, reapply: Vec<Reapply>) {
        let wft = self.ms.wft.take().unwrap_or_default();
        self.append(event(
            EventType::WorkflowTaskFailed,
            hist::WorkflowTaskFailedEventAttributes {
                scheduled_event_id: wft.scheduled_event_id,
                started_event_id: wft.started_event_id,
                cause: WorkflowTaskFailedCause::ResetWorkflow as i32,
                failure: Some(Failure {
                    message: reason.to_string(),
                    ..Default::default()
                }),
                // As the reference writes it, whoever asked for the reset.
                identity: "history-service".to_string(),
                base_run_id: base_run_id.to_string(),
                new_run_id: self.ms.run_id.clone(),
                ..Default::default()
            },
        ));
        self.ms.start_time_ms = self.now_ms();
        let run_timeout = from_pb_duration(self.ms.run_timeout.as_ref());
        if !run_timeout.is_zero() {
            self.timer(
                self.now + run_timeout,
                TimerData {
                    kind: TimerKind::WorkflowRunTimeout as i32,
                    ..Default::default()
                },
            );
        }
        if self.ms.execution_expiration_ms > 0 {
            self.timer(
                kairos_core::time::from_millis(self.ms.execution_expiration_ms),
                TimerData {
                    kind: TimerKind::WorkflowExecutionTimeout as i32,
                    ..Default::default()
                },
            );
        }
        // Pending activities start over from a fresh first attempt.
        let mut activities = std::mem::take(&mut self.ms.activities);
        for act in &mut activities {
            act.scheduled_time_ms = self.now_ms();
            let s2c = from_pb_duration(act.schedule_to_close.as_ref());
            if !s2c.is_zero() {
                self.timer(
                    self.now + s2c,
                    TimerData {
                        kind: TimerKind::ActivityTimeout as i32,
                        event_id: act.scheduled_event_id,
                        attempt: 0,
                        timeout_type: TimeoutType::ScheduleToClose as i32,
                        ..Default::default()
                    },
                );
            }
            self.dispatch_activity_attempt(act);
        }
        self.ms.activities = activities;
        // User timers keep their fire times (a passed one fires at once).
        let timers: Vec<(i64, i64, String)> = self
            .ms
            .timers
            .iter()
            .map(|t| (t.fire_time_ms, t.started_event_id, t.timer_id.clone()))
            .collect();
        for (fire_ms, started, timer_id) in timers {
            self.timer(
                kairos_core::time::from_millis(fire_ms).max(self.now),
                TimerData {
                    kind: TimerKind::UserTimer as i32,
                    event_id: started,
                    timer_id,
                    ..Default::default()
                },
            );
        }
        // Children the old run had started are this run's now (their close is reported here:
        // the old run names this one as its successor); those not yet started are started by
        // this run.
        let unstarted: Vec<(usize, i64)> = self
            .ms
            .children
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.started)
            .map(|(i, c)| (i, c.initiated_event_id))
            .collect();
        for (i, initiated) in unstarted {
            self.ms.children[i].transfer_task_id = self.transfer(TransferData {
                kind: TransferKind::StartChild as i32,
                scheduled_event_id: initiated,
                ..Default::default()
            });
        }
        let pending: Vec<i64> = self
            .ms
            .external_requests
            .iter()
            .map(|r| r.initiated_event_id)
            .collect();
        for (i, initiated) in pending.into_iter().enumerate() {
            self.ms.external_requests[i].transfer_task_id = self.transfer(TransferData {
                kind: TransferKind::External as i32,
                scheduled_event_id: initiated,
                ..Default::default()
            });
        }
        for input in reapply {
            match input {
                Reapply::Signal(signal) => {
                    self.ms.signal_count += 1;
                    self.append(signal.into_event());
                }
                Reapply::Update(request, origin) => self.reapply_update(*request, origin),
            }
        }
        self.schedule_wft();
    }
}

/// What a reset re-applies from the old run's events after the reset point, in their order.
#[derive(Debug)]
pub enum Reapply {
    Signal(Signal),
    /// An update request and the origin its Admitted event states.
    Update(
        Box<temporalio_protos::temporal::api::update::v1::Request>,
        UpdateAdmittedEventOrigin,
    ),
}

/// The inputs a reset re-applies: the signals (unless `signals` is false) and the updates
/// (unless `updates` is false) that `events` (the old run's, after the reset point) received.
/// An update admitted by an event is taken from that event (origin unspecified, as it was); an
/// accepted one from its acceptance (origin REAPPLY), unless an Admitted event carried it.
pub fn reapply_after(events: &[HistoryEvent], signals: bool, updates: bool) -> Vec<Reapply> {
    use history_event::Attributes as A;
    events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::WorkflowExecutionSignaledEventAttributes(a)) if signals => {
                Some(Reapply::Signal(Signal {
                    name: a.signal_name.clone(),
                    input: a.input.clone(),
                    identity: a.identity.clone(),
                    header: a.header.clone(),
                    request_id: String::new(),
                    external: a.external_workflow_execution.clone(),
                }))
            }
            Some(A::WorkflowExecutionUpdateAdmittedEventAttributes(a)) if updates => a
                .request
                .clone()
                .map(|r| Reapply::Update(Box::new(r), UpdateAdmittedEventOrigin::Unspecified)),
            Some(A::WorkflowExecutionUpdateAcceptedEventAttributes(a)) if updates => a
                .accepted_request
                .clone()
                .map(|r| Reapply::Update(Box::new(r), UpdateAdmittedEventOrigin::Reapply)),
            _ => None,
        })
        .collect()
}
