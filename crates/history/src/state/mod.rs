//! The pure workflow state machine: given a run's mutable state, an input (a command batch, an
//! activity result, a fired timer...) and `now`, it appends history events and asks for timers
//! and transfer tasks. It does no IO, reads no clock and knows nothing of storage or gRPC.
#![allow(missing_docs)]

mod children;
mod commands;
mod external;
pub mod model;
mod reset;
mod reset_points;
mod retry;
mod timers;
pub(crate) mod updates;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use kairos_core::time::{
    from_millis, from_pb_duration, is_negative, to_millis, to_pb_duration, to_timestamp,
};
use temporalio_protos::temporal::api::command::v1::{Command, command};
use temporalio_protos::temporal::api::common::v1::{
    Memo, Payloads, SearchAttributes, WorkflowType,
};
use temporalio_protos::temporal::api::enums::v1::{
    CommandType, ContinueAsNewInitiator, EventType, RetryState, SuggestContinueAsNewReason,
    TaskQueueKind, TimeoutType, WorkflowExecutionStatus, WorkflowTaskFailedCause,
};
use temporalio_protos::temporal::api::failure::v1::{Failure, TimeoutFailureInfo, failure};
use temporalio_protos::temporal::api::history::v1::{self as hist, HistoryEvent, history_event};
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflowservice::v1::RespondWorkflowTaskCompletedRequest;

pub use children::ChildStart;
pub use model::*;
pub use reset::{Reapply, reapply_after, rebuild};
pub use retry::{RetryDecision, normalize_retry_policy, validate as validate_retry_policy};
pub use timers::{TimerChanges, forget_timer, settle_timers};

/// Placeholder for the started event id of a close event whose started event is still buffered.
const BUFFERED_EVENT_ID: i64 = -123;

/// Why an input was refused. Nothing was changed when this is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StateError {
    /// The task, activity or run the input names is not (or no longer) there.
    #[error("{0}")]
    NotFound(String),
    /// The input is malformed.
    #[error("{0}")]
    Invalid(String),
}

/// The workflow task attempt from which retries wait for a backoff, its first delay and cap.
const WFT_BACKOFF_FROM_ATTEMPT: i32 = 3;
const WFT_BACKOFF_INITIAL: Duration = Duration::from_secs(5);
const WFT_BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Signal request ids a run remembers for deduplication; the oldest are forgotten past it.
const MAX_REMEMBERED_REQUEST_IDS: usize = 10_000;

/// A signal as a client or another workflow sends it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signal {
    pub name: String,
    pub input: Option<Payloads>,
    pub identity: String,
    pub header: Option<temporalio_protos::temporal::api::common::v1::Header>,
    pub request_id: String,
    /// The sending workflow, for a signal from another workflow.
    pub external: Option<temporalio_protos::temporal::api::common::v1::WorkflowExecution>,
}

impl Signal {
    fn into_event(self) -> HistoryEvent {
        event(
            EventType::WorkflowExecutionSignaled,
            hist::WorkflowExecutionSignaledEventAttributes {
                signal_name: self.name,
                input: self.input,
                identity: self.identity,
                header: self.header,
                external_workflow_execution: self.external,
                ..Default::default()
            },
        )
    }
}

/// A timer the transition asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTimer {
    pub fire_at: SystemTime,
    pub data: TimerData,
}

/// How a workflow task completion ended.
#[derive(Debug, Clone, PartialEq)]
pub enum CompletionOutcome {
    /// The commands were applied.
    Applied,
    /// The commands were refused and the task failed with this cause; answer the worker with
    /// `INVALID_ARGUMENT` and this message.
    Failed {
        cause: WorkflowTaskFailedCause,
        message: String,
    },
}

/// Allocates task ids for the transfer tasks and timers a transition creates.
pub trait TaskIds {
    fn next_task_id(&mut self) -> i64;
    /// A fresh run id (continue-as-new). The default derives a UUID-shaped id from the task
    /// counter, which keeps tests deterministic; the engine uses random UUIDs.
    fn new_run_id(&mut self) -> String {
        format!("00000000-0000-4000-8000-{:012x}", self.next_task_id())
    }
}

/// A run continued as new by its workflow: the next run to create in the same transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuedAsNew {
    pub new_run_id: String,
    /// The next run's attempt: 1 after a continue-as-new, one more after a retry.
    pub attempt: i32,
    /// The command, with what it left unset filled from the closing run.
    pub attributes: temporalio_protos::temporal::api::command::v1::ContinueAsNewWorkflowExecutionCommandAttributes,
}

/// A simple counter, for tests and single-owner shards.
#[derive(Debug, Clone, Default)]
pub struct CounterIds(pub i64);

impl TaskIds for CounterIds {
    fn next_task_id(&mut self) -> i64 {
        self.0 += 1;
        self.0
    }
}

/// Facts from outside the run that a transition may need.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Whether the run's sticky queue has a live poller (else tasks go to the normal queue).
    pub sticky_alive: bool,
    /// Retention of the run's namespace, for the deletion timer.
    pub retention: Duration,
    /// Pending activities a run may have.
    pub max_pending_activities: usize,
    /// Pending children, outgoing signals and outgoing cancel requests a run may have, and
    /// signals it may receive; 0 means no limit.
    pub max_pending_children: usize,
    pub max_pending_signals: usize,
    pub max_pending_cancels: usize,
    pub max_signals: usize,
    /// The namespace's registered custom search attributes (with its name, for messages);
    /// `None` skips the check.
    pub search_attributes: Option<(String, std::sync::Arc<HashMap<String, i32>>)>,
    /// History count and size limits (terminate, suggest continue-as-new).
    pub history: HistoryLimits,
    /// Payload and memo size limits of commands (`limit.blobSize.*`, `limit.memoSize.*`): past
    /// an error limit the run is terminated, past a warn limit it is logged; 0 means no limit.
    pub blob_size_error: usize,
    pub blob_size_warn: usize,
    pub memo_size_error: usize,
    pub memo_size_warn: usize,
}

/// When a history is too long: past `*_error` the run is terminated at its next workflow task
/// completion; past `*_suggest` workflow tasks carry `suggest_continue_as_new`.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub count_error: i64,
    pub size_error: i64,
    pub count_suggest: i64,
    pub size_suggest: i64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self::from_limits(&kairos_core::config::Limits::default())
    }
}

impl HistoryLimits {
    pub fn from_limits(l: &kairos_core::config::Limits) -> Self {
        Self {
            count_error: l.history_count,
            size_error: l.history_size,
            count_suggest: l.history_count_suggest_continue_as_new,
            size_suggest: l.history_size_suggest_continue_as_new,
        }
    }
}

/// Termination reasons when a history outgrows its limits (the reference's wording).
pub const HISTORY_COUNT_EXCEEDED: &str = "Workflow history count exceeds limit.";
pub const HISTORY_SIZE_EXCEEDED: &str = "Workflow history size exceeds limit.";

/// One state transition in progress: the state being changed and everything it produced.
pub struct Transition<'a> {
    pub ms: &'a mut MutableState,
    pub now: SystemTime,
    pub env: Env,
    /// New events, with ids, in order.
    pub events: Vec<HistoryEvent>,
    pub timers: Vec<(i64, NewTimer)>,
    pub transfers: Vec<(i64, TransferData)>,
    /// Transfer tasks that are done with (their work started or became moot).
    pub transfers_done: Vec<i64>,
    /// Set when the run continued as new: the next run goes into the same transaction.
    pub continued_as_new: Option<ContinuedAsNew>,
    /// For a cancel request sent by another workflow: that workflow and its initiated event.
    pub cancel_source: Option<(
        temporalio_protos::temporal::api::common::v1::WorkflowExecution,
        i64,
    )>,
    ids: &'a mut (dyn TaskIds + Send),
}

fn dur(d: Option<&prost_wkt_types::Duration>) -> Duration {
    from_pb_duration(d)
}

fn closed(status: i32) -> bool {
    status != WorkflowExecutionStatus::Running as i32
}

/// Whether a run with this status has closed.
pub fn is_closed(status: i32) -> bool {
    closed(status)
}

fn is_close_event(event_type: i32) -> bool {
    matches!(
        EventType::try_from(event_type),
        Ok(EventType::ActivityTaskCompleted
            | EventType::ActivityTaskFailed
            | EventType::ActivityTaskTimedOut
            | EventType::ActivityTaskCanceled
            | EventType::ChildWorkflowExecutionCompleted
            | EventType::ChildWorkflowExecutionFailed
            | EventType::ChildWorkflowExecutionCanceled
            | EventType::ChildWorkflowExecutionTimedOut
            | EventType::ChildWorkflowExecutionTerminated)
    )
}

/// Builds an event without id or time (both are set when it is appended).
pub fn event(
    event_type: EventType,
    attributes: impl Into<history_event::Attributes>,
) -> HistoryEvent {
    HistoryEvent {
        event_type: event_type as i32,
        attributes: Some(attributes.into()),
        ..Default::default()
    }
}

/// A timeout failure as the Go server writes it.
/// The message of a timeout that leaves no time for another attempt (the reference's wording,
/// which users match on).
pub const NO_TIME_TO_RETRY: &str = "Not enough time to schedule next retry before activity ScheduleToClose timeout, giving up retrying";

pub fn timeout_failure(
    timeout_type: TimeoutType,
    details: Option<Payloads>,
    cause: Option<Failure>,
) -> Failure {
    let what = match timeout_type {
        TimeoutType::StartToClose => "activity StartToClose timeout",
        TimeoutType::ScheduleToStart => "activity ScheduleToStart timeout",
        TimeoutType::ScheduleToClose => "activity ScheduleToClose timeout",
        TimeoutType::Heartbeat => "activity Heartbeat timeout",
        TimeoutType::Unspecified => "activity timeout",
    };
    Failure {
        message: what.to_string(),
        source: "Server".to_string(),
        cause: cause.map(Box::new),
        failure_info: Some(failure::FailureInfo::TimeoutFailureInfo(
            TimeoutFailureInfo {
                timeout_type: timeout_type as i32,
                last_heartbeat_details: details,
            },
        )),
        ..Default::default()
    }
}

impl<'a> Transition<'a> {
    pub fn new(
        ms: &'a mut MutableState,
        now: SystemTime,
        env: Env,
        ids: &'a mut (dyn TaskIds + Send),
    ) -> Self {
        Self {
            ms,
            now,
            env,
            events: Vec::new(),
            timers: Vec::new(),
            transfers: Vec::new(),
            transfers_done: Vec::new(),
            continued_as_new: None,
            cancel_source: None,
            ids,
        }
    }

    fn now_ms(&self) -> i64 {
        to_millis(self.now)
    }

    fn timer(&mut self, fire_at: SystemTime, data: TimerData) {
        let id = self.ids.next_task_id();
        self.timers.push((id, NewTimer { fire_at, data }));
    }

    fn transfer(&mut self, data: TransferData) -> i64 {
        let id = self.ids.next_task_id();
        self.transfers.push((id, data));
        id
    }

    /// Appends an event with the next id; returns the id.
    pub fn append(&mut self, mut ev: HistoryEvent) -> i64 {
        ev.event_id = self.ms.next_event_id;
        ev.event_time = Some(to_timestamp(self.now));
        self.ms.next_event_id += 1;
        self.ms.history_size_bytes += prost::Message::encoded_len(&ev) as i64;
        let id = ev.event_id;
        self.events.push(ev);
        id
    }

    fn wft_started(&self) -> bool {
        self.ms.wft.as_ref().is_some_and(|w| w.started_event_id > 0)
    }

    /// Adds an event that did not come from a command: buffered while a workflow task is
    /// started, otherwise appended with a workflow task scheduled to deliver it.
    /// Returns the event id, or `None` when buffered.
    pub fn add_external(&mut self, ev: HistoryEvent) -> Option<i64> {
        let id = self.add_external_quiet(ev);
        if id.is_some() {
            self.schedule_wft();
        }
        id
    }

    /// Like [`Transition::add_external`] but schedules no workflow task: for an event that is
    /// always followed by another one that will (an activity's started event).
    fn add_external_quiet(&mut self, mut ev: HistoryEvent) -> Option<i64> {
        if self.wft_started() {
            ev.event_time = Some(to_timestamp(self.now));
            self.ms.buffered.push(ev);
            None
        } else {
            Some(self.append(ev))
        }
    }

    /// Writes the buffered events: everything else first, then the close events, giving close
    /// events the ids their buffered started events just received.
    pub fn flush_buffer(&mut self) {
        if self.ms.buffered.is_empty() {
            return;
        }
        let buffered = std::mem::take(&mut self.ms.buffered);
        let (close, other): (Vec<_>, Vec<_>) = buffered
            .into_iter()
            .partition(|e| is_close_event(e.event_type));
        let mut started_ids: HashMap<i64, i64> = HashMap::new();
        for ev in other {
            let scheduled = match &ev.attributes {
                Some(history_event::Attributes::ActivityTaskStartedEventAttributes(a)) => {
                    Some(a.scheduled_event_id)
                }
                Some(history_event::Attributes::ChildWorkflowExecutionStartedEventAttributes(
                    a,
                )) => Some(a.initiated_event_id),
                _ => None,
            };
            let id = self.append(ev);
            if let Some(scheduled) = scheduled {
                started_ids.insert(scheduled, id);
                if let Some(child) = self
                    .ms
                    .children
                    .iter_mut()
                    .find(|c| c.initiated_event_id == scheduled)
                {
                    child.started_event_id = id;
                }
            }
        }
        for mut ev in close {
            let patch = |scheduled: i64, started: &mut i64| {
                if *started == BUFFERED_EVENT_ID {
                    *started = started_ids.get(&scheduled).copied().unwrap_or(0);
                }
            };
            match &mut ev.attributes {
                Some(history_event::Attributes::ActivityTaskCompletedEventAttributes(a)) => {
                    patch(a.scheduled_event_id, &mut a.started_event_id)
                }
                Some(history_event::Attributes::ActivityTaskFailedEventAttributes(a)) => {
                    patch(a.scheduled_event_id, &mut a.started_event_id)
                }
                Some(history_event::Attributes::ActivityTaskTimedOutEventAttributes(a)) => {
                    patch(a.scheduled_event_id, &mut a.started_event_id)
                }
                Some(history_event::Attributes::ActivityTaskCanceledEventAttributes(a)) => {
                    patch(a.scheduled_event_id, &mut a.started_event_id)
                }
                Some(
                    history_event::Attributes::ChildWorkflowExecutionCompletedEventAttributes(a),
                ) => patch(a.initiated_event_id, &mut a.started_event_id),
                Some(history_event::Attributes::ChildWorkflowExecutionFailedEventAttributes(a)) => {
                    patch(a.initiated_event_id, &mut a.started_event_id)
                }
                Some(history_event::Attributes::ChildWorkflowExecutionCanceledEventAttributes(
                    a,
                )) => patch(a.initiated_event_id, &mut a.started_event_id),
                Some(history_event::Attributes::ChildWorkflowExecutionTimedOutEventAttributes(
                    a,
                )) => patch(a.initiated_event_id, &mut a.started_event_id),
                Some(
                    history_event::Attributes::ChildWorkflowExecutionTerminatedEventAttributes(a),
                ) => patch(a.initiated_event_id, &mut a.started_event_id),
                _ => {}
            }
            self.append(ev);
        }
    }

    // ----- workflow start -----

    /// Creates the first events of a new run. `ms` must be freshly filled by the caller with
    /// ids, type, queue, timeouts and `next_event_id = 1`.
    pub fn start_workflow(&mut self, started: hist::WorkflowExecutionStartedEventAttributes) {
        self.start_workflow_with_signal(started, None);
    }

    /// Like [`Transition::start_workflow`], with a signal written right after the started event
    /// (`SignalWithStartWorkflowExecution`: Started, Signaled, WorkflowTaskScheduled).
    pub fn start_workflow_with_signal(
        &mut self,
        mut started: hist::WorkflowExecutionStartedEventAttributes,
        signal: Option<Signal>,
    ) {
        let start_delay = dur(started.first_workflow_task_backoff.as_ref());
        self.ms.status = WorkflowExecutionStatus::Running as i32;
        self.ms.start_time_ms = self.now_ms();
        self.ms.execution_time_ms = to_millis(self.now + start_delay);
        self.ms.wft_attempt = 1;
        started.original_execution_run_id = self.ms.run_id.clone();
        let mut started = event(EventType::WorkflowExecutionStarted, started);
        started.user_metadata = self.ms.user_metadata.clone();
        self.append(started);
        if let Some(mut signal) = signal {
            self.ms.signal_count += 1;
            if !signal.request_id.is_empty() {
                self.ms
                    .applied_request_ids
                    .push(std::mem::take(&mut signal.request_id));
            }
            self.append(signal.into_event());
        }
        let run_timeout = dur(self.ms.run_timeout.as_ref());
        if !run_timeout.is_zero() {
            self.timer(
                self.now + start_delay + run_timeout,
                TimerData {
                    kind: TimerKind::WorkflowRunTimeout as i32,
                    ..Default::default()
                },
            );
        }
        if start_delay.is_zero() {
            self.schedule_wft();
        } else {
            self.timer(
                self.now + start_delay,
                TimerData {
                    kind: TimerKind::WorkflowStartBackoff as i32,
                    ..Default::default()
                },
            );
        }
    }

    /// The start backoff (start delay) passed: deliver the first workflow task.
    pub fn start_backoff_fired(&mut self) {
        if !closed(self.ms.status)
            && self.ms.wft.is_none()
            && self.ms.last_completed_wft_started_id == 0
        {
            self.schedule_wft();
        }
    }

    /// A failing workflow task's backoff passed: its next attempt is scheduled.
    pub fn wft_retry_fired(&mut self) {
        if self.ms.wft_backing_off {
            self.ms.wft_backing_off = false;
            self.schedule_wft_after_backoff(false);
        }
    }

    // ----- workflow tasks -----

    /// Schedules a workflow task unless one is already scheduled or started. From the third
    /// attempt of a failing task on, the attempt waits for a backoff first (5 s doubling up to
    /// 10 min): every attempt is written to the history here (no transient tasks), so a worker
    /// bug must not spin the history into its size limit.
    pub fn schedule_wft(&mut self) {
        self.schedule_wft_after_backoff(true);
    }

    fn schedule_wft_after_backoff(&mut self, backoff: bool) {
        if self.ms.wft.is_some() || closed(self.ms.status) || self.ms.wft_backing_off {
            return;
        }
        if backoff
            && self.ms.last_completed_wft_started_id == 0
            && self.now_ms() < self.ms.execution_time_ms
        {
            // The run's start backoff (a start delay, a retry, a continue-as-new interval)
            // has not passed: its timer schedules the first task, events wait for it.
            return;
        }
        let attempt = self.ms.wft_attempt.max(1);
        if backoff && attempt >= WFT_BACKOFF_FROM_ATTEMPT {
            let exponent = (attempt - WFT_BACKOFF_FROM_ATTEMPT).min(16) as u32;
            let delay = (WFT_BACKOFF_INITIAL * 2u32.pow(exponent)).min(WFT_BACKOFF_MAX);
            self.ms.wft_backing_off = true;
            self.timer(
                self.now + delay,
                TimerData {
                    kind: TimerKind::WorkflowTaskRetry as i32,
                    attempt,
                    ..Default::default()
                },
            );
            return;
        }
        let attempt = self.ms.wft_attempt.max(1);
        // The event names the sticky queue whenever the run has one, as the reference writes
        // it; the task goes there only while a worker polls it, else (the worker is gone) to
        // the normal queue with the full history, and the run stops being sticky.
        let sticky_set = !self.ms.sticky_task_queue.is_empty();
        let sticky = sticky_set && self.env.sticky_alive;
        let (queue, kind, normal_name) = if sticky_set {
            (
                self.ms.sticky_task_queue.clone(),
                TaskQueueKind::Sticky,
                self.ms.task_queue.clone(),
            )
        } else {
            (
                self.ms.task_queue.clone(),
                TaskQueueKind::Normal,
                String::new(),
            )
        };
        let id = self.append(event(
            EventType::WorkflowTaskScheduled,
            hist::WorkflowTaskScheduledEventAttributes {
                task_queue: Some(TaskQueue {
                    name: queue.clone(),
                    kind: kind as i32,
                    normal_name,
                }),
                start_to_close_timeout: self.ms.wft_timeout,
                attempt,
            },
        ));
        let queue = if sticky_set && !sticky {
            self.ms.sticky_task_queue.clear();
            self.ms.task_queue.clone()
        } else {
            queue
        };
        let transfer_task_id = self.transfer(TransferData {
            kind: TransferKind::WorkflowTask as i32,
            task_queue: queue.clone(),
            scheduled_event_id: id,
            attempt,
            sticky,
        });
        self.ms.wft = Some(WorkflowTaskInfo {
            scheduled_event_id: id,
            attempt,
            task_queue: queue,
            sticky,
            scheduled_time_ms: self.now_ms(),
            transfer_task_id,
            ..Default::default()
        });
        if sticky {
            let s2s = dur(self.ms.sticky_schedule_to_start.as_ref());
            if !s2s.is_zero() {
                self.timer(
                    self.now + s2s,
                    TimerData {
                        kind: TimerKind::WorkflowTaskTimeout as i32,
                        event_id: id,
                        attempt,
                        timeout_type: TimeoutType::ScheduleToStart as i32,
                        ..Default::default()
                    },
                );
            }
        }
    }

    /// The sticky worker went away: clear stickiness and, if the scheduled task still waits on
    /// the sticky queue, move it to the normal queue (it will carry the full history).
    pub fn sticky_worker_gone(&mut self, scheduled_event_id: i64) {
        self.ms.sticky_task_queue.clear();
        let Some(mut wft) = self.ms.wft.clone() else {
            return;
        };
        if wft.scheduled_event_id != scheduled_event_id || wft.started_event_id > 0 || !wft.sticky {
            return;
        }
        self.transfers_done.push(wft.transfer_task_id);
        wft.sticky = false;
        wft.task_queue = self.ms.task_queue.clone();
        wft.transfer_task_id = self.transfer(TransferData {
            kind: TransferKind::WorkflowTask as i32,
            task_queue: wft.task_queue.clone(),
            scheduled_event_id,
            attempt: wft.attempt,
            sticky: false,
        });
        self.ms.wft = Some(wft);
    }

    /// A poller took the workflow task scheduled at `scheduled_event_id`.
    pub fn start_wft(
        &mut self,
        scheduled_event_id: i64,
        identity: &str,
        request_id: &str,
    ) -> Result<WorkflowTaskInfo, StateError> {
        self.start_wft_by(scheduled_event_id, (identity, ""), request_id)
    }

    /// [`Transition::start_wft`] by a poller that gave its build id (recorded on the started
    /// event as its `worker_version`, as the reference does).
    pub fn start_wft_by(
        &mut self,
        scheduled_event_id: i64,
        (identity, build_id): (&str, &str),
        request_id: &str,
    ) -> Result<WorkflowTaskInfo, StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        let wft = self
            .ms
            .wft
            .clone()
            .filter(|w| w.scheduled_event_id == scheduled_event_id);
        let Some(mut wft) = wft else {
            return Err(StateError::NotFound("workflow task not found".into()));
        };
        if wft.started_event_id > 0 {
            if wft.request_id == request_id && !request_id.is_empty() {
                return Ok(wft);
            }
            return Err(StateError::NotFound("workflow task already started".into()));
        }
        let mut reasons = Vec::new();
        if self.ms.history_size_bytes > self.env.history.size_suggest {
            reasons.push(SuggestContinueAsNewReason::HistorySizeTooLarge as i32);
        }
        if self.ms.next_event_id > self.env.history.count_suggest {
            reasons.push(SuggestContinueAsNewReason::TooManyHistoryEvents as i32);
        }
        let started = self.append(event(
            EventType::WorkflowTaskStarted,
            hist::WorkflowTaskStartedEventAttributes {
                scheduled_event_id,
                identity: identity.to_string(),
                request_id: request_id.to_string(),
                history_size_bytes: self.ms.history_size_bytes,
                suggest_continue_as_new: !reasons.is_empty(),
                suggest_continue_as_new_reasons: reasons,
                worker_version: (!build_id.is_empty()).then(|| {
                    temporalio_protos::temporal::api::common::v1::WorkerVersionStamp {
                        build_id: build_id.to_string(),
                        use_versioning: false,
                    }
                }),
                ..Default::default()
            },
        ));
        wft.started_event_id = started;
        wft.started_time_ms = self.now_ms();
        wft.identity = identity.to_string();
        wft.request_id = request_id.to_string();
        self.transfers_done.push(wft.transfer_task_id);
        let timeout = dur(self.ms.wft_timeout.as_ref()).max(Duration::from_secs(1));
        self.timer(
            self.now + timeout,
            TimerData {
                kind: TimerKind::WorkflowTaskTimeout as i32,
                event_id: scheduled_event_id,
                attempt: wft.attempt,
                timeout_type: TimeoutType::StartToClose as i32,
                ..Default::default()
            },
        );
        self.ms.wft = Some(wft.clone());
        Ok(wft)
    }

    fn current_started_wft(
        &self,
        scheduled_event_id: i64,
        attempt: i32,
    ) -> Result<WorkflowTaskInfo, StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        match &self.ms.wft {
            Some(w)
                if w.scheduled_event_id == scheduled_event_id
                    && w.started_event_id > 0
                    && w.attempt == attempt =>
            {
                Ok(w.clone())
            }
            _ => Err(StateError::NotFound("workflow task not found".into())),
        }
    }

    /// Refuses a worker's token for a start the run does not hold: `started_time_ms` (0 in
    /// tokens that do not carry it) must be the current started task's. A start answered before
    /// it was synced and lost with a crash is dispatched again as the same attempt; only its
    /// start time tells the two tokens apart.
    pub fn check_wft_start(&self, started_time_ms: i64) -> Result<(), StateError> {
        match &self.ms.wft {
            Some(w) if started_time_ms != 0 && w.started_time_ms != started_time_ms => {
                Err(StateError::NotFound("workflow task not found".into()))
            }
            _ => Ok(()),
        }
    }

    /// [`Transition::check_wft_start`] for an activity's started attempt.
    pub fn check_activity_start(
        &self,
        scheduled_event_id: i64,
        started_time_ms: i64,
    ) -> Result<(), StateError> {
        let held = self
            .ms
            .activities
            .iter()
            .find(|a| a.scheduled_event_id == scheduled_event_id);
        match held {
            Some(a)
                if started_time_ms != 0 && a.started && a.started_time_ms != started_time_ms =>
            {
                Err(StateError::NotFound("activity task not found".into()))
            }
            _ => Ok(()),
        }
    }

    /// Ends the started workflow task as failed (by the worker, a timeout, or a refused
    /// completion): records why, flushes the buffer and schedules the next attempt on the normal
    /// queue.
    /// The WorkflowTaskFailed event of a started task.
    fn append_wft_failed(
        &mut self,
        wft: &WorkflowTaskInfo,
        cause: WorkflowTaskFailedCause,
        failure: Option<Failure>,
        (identity, binary_checksum): (&str, &str),
    ) {
        self.append(event(
            EventType::WorkflowTaskFailed,
            hist::WorkflowTaskFailedEventAttributes {
                scheduled_event_id: wft.scheduled_event_id,
                started_event_id: wft.started_event_id,
                cause: cause as i32,
                failure,
                identity: identity.to_string(),
                binary_checksum: binary_checksum.to_string(),
                ..Default::default()
            },
        ));
    }

    fn fail_started_wft(
        &mut self,
        wft: &WorkflowTaskInfo,
        cause: WorkflowTaskFailedCause,
        failure: Option<Failure>,
        identity: &str,
    ) {
        self.append_wft_failed(wft, cause, failure, (identity, ""));
        self.ms.wft = None;
        self.ms.sticky_task_queue.clear();
        // Core waits for the server to retry; an unhandled-command failure is not the worker's
        // fault, so it does not count as a failed attempt.
        if cause != WorkflowTaskFailedCause::UnhandledCommand {
            self.ms.wft_attempt = wft.attempt + 1;
        }
        self.flush_buffer();
        self.schedule_wft();
    }

    /// `RespondWorkflowTaskFailed`.
    pub fn fail_wft(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        cause: WorkflowTaskFailedCause,
        failure: Option<Failure>,
        identity: &str,
    ) -> Result<(), StateError> {
        let wft = self.current_started_wft(scheduled_event_id, attempt)?;
        self.fail_started_wft(&wft, cause, failure, identity);
        Ok(())
    }

    /// A workflow task timer fired.
    pub fn wft_timeout(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        timeout_type: TimeoutType,
    ) {
        if closed(self.ms.status) {
            return;
        }
        let Some(wft) = self.ms.wft.clone() else {
            return;
        };
        if wft.scheduled_event_id != scheduled_event_id || wft.attempt != attempt {
            return;
        }
        match timeout_type {
            TimeoutType::ScheduleToStart if wft.started_event_id == 0 && wft.sticky => {
                self.append(event(
                    EventType::WorkflowTaskTimedOut,
                    hist::WorkflowTaskTimedOutEventAttributes {
                        scheduled_event_id,
                        started_event_id: 0,
                        timeout_type: TimeoutType::ScheduleToStart as i32,
                    },
                ));
                self.transfers_done.push(wft.transfer_task_id);
                self.ms.wft = None;
                self.ms.sticky_task_queue.clear();
                self.schedule_wft();
            }
            TimeoutType::StartToClose if wft.started_event_id > 0 => {
                self.append(event(
                    EventType::WorkflowTaskTimedOut,
                    hist::WorkflowTaskTimedOutEventAttributes {
                        scheduled_event_id,
                        started_event_id: wft.started_event_id,
                        timeout_type: TimeoutType::StartToClose as i32,
                    },
                ));
                self.ms.wft = None;
                self.ms.sticky_task_queue.clear();
                self.ms.wft_attempt = wft.attempt + 1;
                self.flush_buffer();
                self.schedule_wft();
            }
            _ => {}
        }
    }

    /// `RespondWorkflowTaskCompleted`: applies the commands (B.1), or fails the task when they
    /// cannot be applied.
    pub fn complete_wft(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        req: &RespondWorkflowTaskCompletedRequest,
    ) -> Result<CompletionOutcome, StateError> {
        let wft = self.current_started_wft(scheduled_event_id, attempt)?;
        let terminal = req.commands.iter().any(|c| {
            matches!(
                CommandType::try_from(c.command_type),
                Ok(CommandType::CompleteWorkflowExecution
                    | CommandType::FailWorkflowExecution
                    | CommandType::CancelWorkflowExecution
                    | CommandType::ContinueAsNewWorkflowExecution)
            )
        });
        if terminal && !self.ms.buffered.is_empty() {
            self.fail_started_wft(
                &wft,
                WorkflowTaskFailedCause::UnhandledCommand,
                None,
                &req.identity,
            );
            return Ok(CompletionOutcome::Failed {
                cause: WorkflowTaskFailedCause::UnhandledCommand,
                message: "UnhandledCommand".into(),
            });
        }
        match self.validate_completion(&req.commands, &req.messages) {
            Ok(()) => {}
            Err(commands::Rejection::FailTask((cause, message))) => {
                let failure = Failure {
                    message: message.clone(),
                    ..Default::default()
                };
                self.fail_started_wft(&wft, cause, Some(failure), &req.identity);
                return Ok(CompletionOutcome::Failed { cause, message });
            }
            Err(commands::Rejection::Terminate((cause, message))) => {
                let text = format!("{}: {message}", commands::cause_name(cause));
                if wft.attempt > 1 {
                    // As the reference: a retried task writes nothing; it times out and is
                    // retried (so a run is terminated only by a first attempt).
                    return Err(StateError::Invalid(text));
                }
                let failure = Failure {
                    message: text.clone(),
                    failure_info: Some(failure::FailureInfo::ServerFailureInfo(
                        temporalio_protos::temporal::api::failure::v1::ServerFailureInfo {
                            non_retryable: false,
                        },
                    )),
                    ..Default::default()
                };
                self.append_wft_failed(
                    &wft,
                    cause,
                    Some(failure),
                    (&req.identity, &req.binary_checksum),
                );
                self.ms.wft = None;
                self.flush_buffer();
                self.terminate(&text, None, "history-service")?;
                return Ok(CompletionOutcome::Failed {
                    cause,
                    message: text,
                });
            }
        }
        let completed = hist::WorkflowTaskCompletedEventAttributes {
            scheduled_event_id,
            started_event_id: wft.started_event_id,
            identity: req.identity.clone(),
            binary_checksum: req.binary_checksum.clone(),
            worker_version: req.worker_version_stamp.clone(),
            sdk_metadata: req.sdk_metadata.clone(),
            metering_metadata: req.metering_metadata,
            ..Default::default()
        };
        let at_ms = self.now_ms();
        let completed_id = self.append(event(EventType::WorkflowTaskCompleted, completed.clone()));
        reset_points::record(self.ms, completed_id, &completed, at_ms);
        self.ms.wft = None;
        self.ms.wft_attempt = 1;
        self.ms.last_completed_wft_started_id = wft.started_event_id;
        match &req.sticky_attributes {
            Some(sticky) => {
                self.ms.sticky_task_queue = sticky
                    .worker_task_queue
                    .as_ref()
                    .map(|q| q.name.clone())
                    .unwrap_or_default();
                self.ms.sticky_schedule_to_start = sticky.schedule_to_start_timeout;
            }
            None => self.ms.sticky_task_queue.clear(),
        }
        let mut need_wft = req.force_create_new_workflow_task;
        let mut positioned = Vec::new();
        for cmd in &req.commands {
            if closed(self.ms.status) {
                break; // a second terminal command, or anything after one, is ignored
            }
            if let Some(command::Attributes::ProtocolMessageCommandAttributes(p)) = &cmd.attributes
            {
                // Writes the referenced message's event here, in command order.
                if let Some(msg) = req.messages.iter().find(|m| m.id == p.message_id) {
                    self.apply_update_message(msg);
                    positioned.push(p.message_id.as_str());
                }
                continue;
            }
            need_wft |= self.apply_command(cmd, completed_id, &req.identity);
        }
        if !closed(self.ms.status) {
            for msg in &req.messages {
                if !positioned.contains(&msg.id.as_str()) {
                    self.apply_update_message(msg);
                }
            }
            need_wft |= self.settle_updates(scheduled_event_id);
        }
        if !closed(self.ms.status) {
            if !self.ms.buffered.is_empty() {
                need_wft = true;
                self.flush_buffer();
            }
            if need_wft {
                self.schedule_wft();
            }
        }
        if !closed(self.ms.status) {
            let limits = self.env.history;
            let too_long = if self.ms.next_event_id - 1 > limits.count_error {
                Some(HISTORY_COUNT_EXCEEDED)
            } else if self.ms.history_size_bytes > limits.size_error {
                Some(HISTORY_SIZE_EXCEEDED)
            } else {
                None
            };
            if let Some(reason) = too_long {
                self.terminate(reason, None, "history-service")?;
            }
        }
        Ok(CompletionOutcome::Applied)
    }

    // ----- activities -----

    /// Hands the current attempt to matching, guarded by its schedule-to-start timeout.
    fn dispatch_activity_attempt(&mut self, info: &mut ActivityInfo) {
        info.backing_off = false;
        info.current_attempt_scheduled_time_ms = self.now_ms();
        info.transfer_task_id = self.transfer(TransferData {
            kind: TransferKind::ActivityTask as i32,
            task_queue: info.task_queue.clone(),
            scheduled_event_id: info.scheduled_event_id,
            attempt: info.attempt,
            sticky: false,
        });
        let s2s = dur(info.schedule_to_start.as_ref());
        if !s2s.is_zero() {
            self.timer(
                self.now + s2s,
                TimerData {
                    kind: TimerKind::ActivityTimeout as i32,
                    event_id: info.scheduled_event_id,
                    attempt: info.attempt,
                    timeout_type: TimeoutType::ScheduleToStart as i32,
                    ..Default::default()
                },
            );
        }
    }

    fn activity_index(&self, scheduled_event_id: i64) -> Option<usize> {
        self.ms
            .activities
            .iter()
            .position(|a| a.scheduled_event_id == scheduled_event_id)
    }

    /// Finds the started attempt a worker's token names.
    pub fn started_activity(
        &self,
        scheduled_event_id: i64,
        attempt: i32,
    ) -> Result<&ActivityInfo, StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        self.ms
            .activities
            .iter()
            .find(|a| {
                a.scheduled_event_id == scheduled_event_id
                    && a.started
                    && (attempt == 0 || a.attempt == attempt)
            })
            .ok_or_else(|| StateError::NotFound("activity task not found".into()))
    }

    /// A poller took an activity attempt.
    pub fn start_activity(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        identity: &str,
        request_id: &str,
    ) -> Result<ActivityInfo, StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        let idx = self
            .activity_index(scheduled_event_id)
            .filter(|&i| {
                self.ms.activities[i].attempt == attempt && !self.ms.activities[i].backing_off
            })
            .ok_or_else(|| StateError::NotFound("activity task not found".into()))?;
        if self.ms.activities[idx].started {
            let act = &self.ms.activities[idx];
            if act.request_id == request_id && !request_id.is_empty() {
                return Ok(act.clone());
            }
            return Err(StateError::NotFound("activity task already started".into()));
        }
        let now_ms = self.now_ms();
        let act = &mut self.ms.activities[idx];
        act.started = true;
        act.started_time_ms = now_ms;
        act.last_heartbeat_ms = 0;
        act.started_identity = identity.to_string();
        act.request_id = request_id.to_string();
        let act = act.clone();
        self.transfers_done.push(act.transfer_task_id);
        let stc = dur(act.start_to_close.as_ref());
        if !stc.is_zero() {
            self.timer(
                self.now + stc,
                TimerData {
                    kind: TimerKind::ActivityTimeout as i32,
                    event_id: scheduled_event_id,
                    attempt,
                    timeout_type: TimeoutType::StartToClose as i32,
                    ..Default::default()
                },
            );
        }
        let hb = dur(act.heartbeat.as_ref());
        if !hb.is_zero() {
            self.timer(
                self.now + hb,
                TimerData {
                    kind: TimerKind::ActivityTimeout as i32,
                    event_id: scheduled_event_id,
                    attempt,
                    timeout_type: TimeoutType::Heartbeat as i32,
                    ..Default::default()
                },
            );
        }
        Ok(act)
    }

    /// Starts, for the worker completing a workflow task, the activities its commands asked to
    /// run eagerly: scheduled on the run's own task queue, first attempt. Returns them started.
    pub fn start_eager_activities(
        &mut self,
        req: &RespondWorkflowTaskCompletedRequest,
    ) -> Vec<ActivityInfo> {
        let mut started = Vec::new();
        for cmd in &req.commands {
            let Some(command::Attributes::ScheduleActivityTaskCommandAttributes(a)) =
                &cmd.attributes
            else {
                continue;
            };
            let same_queue = a
                .task_queue
                .as_ref()
                .is_some_and(|q| q.name == self.ms.task_queue);
            if !a.request_eager_execution || !same_queue {
                continue;
            }
            let Some(scheduled_event_id) = self
                .ms
                .activities
                .iter()
                .find(|act| act.activity_id == a.activity_id && !act.started)
                .map(|act| act.scheduled_event_id)
            else {
                continue;
            };
            let request_id = format!("eager-{}-{scheduled_event_id}", self.ms.run_id);
            if let Ok(act) = self.start_activity(scheduled_event_id, 1, &req.identity, &request_id)
            {
                started.push(act);
            }
        }
        started
    }

    /// Records a heartbeat; returns whether cancellation was requested.
    pub fn heartbeat_activity(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        details: Option<Payloads>,
    ) -> Result<bool, StateError> {
        self.started_activity(scheduled_event_id, attempt)?;
        let now_ms = self.now_ms();
        let idx = self
            .activity_index(scheduled_event_id)
            .expect("checked above");
        let act = &mut self.ms.activities[idx];
        if details.is_some() {
            act.heartbeat_details = details;
        }
        act.last_heartbeat_ms = now_ms;
        Ok(act.cancel_requested)
    }

    /// Writes the lazily recorded started event of a closing attempt and returns its id
    /// (or the buffered placeholder).
    fn write_activity_started(&mut self, act: &ActivityInfo) -> i64 {
        let ev = event(
            EventType::ActivityTaskStarted,
            hist::ActivityTaskStartedEventAttributes {
                scheduled_event_id: act.scheduled_event_id,
                identity: act.started_identity.clone(),
                request_id: act.request_id.clone(),
                attempt: act.attempt,
                last_failure: act.last_failure.clone(),
                ..Default::default()
            },
        );
        self.add_external_quiet(ev).unwrap_or(BUFFERED_EVENT_ID)
    }

    fn remove_activity(&mut self, scheduled_event_id: i64) -> Option<ActivityInfo> {
        let idx = self.activity_index(scheduled_event_id)?;
        Some(self.ms.activities.remove(idx))
    }

    /// `RespondActivityTaskCompleted`.
    pub fn complete_activity(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        result: Option<Payloads>,
        identity: &str,
    ) -> Result<(), StateError> {
        self.started_activity(scheduled_event_id, attempt)?;
        let act = self
            .remove_activity(scheduled_event_id)
            .expect("checked above");
        let started = self.write_activity_started(&act);
        self.add_external(event(
            EventType::ActivityTaskCompleted,
            hist::ActivityTaskCompletedEventAttributes {
                result,
                scheduled_event_id,
                started_event_id: started,
                identity: identity.to_string(),
                ..Default::default()
            },
        ));
        Ok(())
    }

    /// `RespondActivityTaskCanceled`; legal only after a cancel request.
    pub fn cancel_activity(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        details: Option<Payloads>,
        identity: &str,
    ) -> Result<(), StateError> {
        let act = self.started_activity(scheduled_event_id, attempt)?;
        if !act.cancel_requested {
            return Err(StateError::Invalid(
                "activity cancellation was not requested; it cannot be reported as canceled".into(),
            ));
        }
        let act = self
            .remove_activity(scheduled_event_id)
            .expect("checked above");
        let started = self.write_activity_started(&act);
        self.add_external(event(
            EventType::ActivityTaskCanceled,
            hist::ActivityTaskCanceledEventAttributes {
                details,
                latest_cancel_requested_event_id: act.cancel_requested_event_id,
                scheduled_event_id,
                started_event_id: started,
                identity: identity.to_string(),
                ..Default::default()
            },
        ));
        Ok(())
    }

    /// `RespondActivityTaskFailed`: retries per the policy, or records the failure.
    pub fn fail_activity(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        failure: Failure,
        last_heartbeat_details: Option<Payloads>,
        identity: &str,
    ) -> Result<(), StateError> {
        self.started_activity(scheduled_event_id, attempt)?;
        let idx = self
            .activity_index(scheduled_event_id)
            .expect("checked above");
        if last_heartbeat_details.is_some() {
            self.ms.activities[idx].heartbeat_details = last_heartbeat_details;
        }
        let decision = retry::decide(&self.ms.activities[idx], &failure, None, self.now);
        match decision {
            RetryDecision::Retry(delay) => {
                self.retry_activity(idx, failure, delay);
            }
            RetryDecision::Stop(retry_state) => {
                let mut act = self
                    .remove_activity(scheduled_event_id)
                    .expect("checked above");
                act.started_identity = identity.to_string();
                let started = self.write_activity_started(&act);
                self.add_external(event(
                    EventType::ActivityTaskFailed,
                    hist::ActivityTaskFailedEventAttributes {
                        failure: Some(failure),
                        scheduled_event_id,
                        started_event_id: started,
                        identity: identity.to_string(),
                        retry_state: retry_state as i32,
                        ..Default::default()
                    },
                ));
            }
        }
        Ok(())
    }

    fn retry_activity(&mut self, idx: usize, failure: Failure, delay: Duration) {
        let now = self.now;
        let act = &mut self.ms.activities[idx];
        act.attempt += 1;
        // The finished attempt's timers are obsolete; schedule-to-close (attempt 0) stays.
        act.timer_tasks.retain(|t| t.attempt == 0);
        act.started = false;
        act.started_time_ms = 0;
        act.last_failure = Some(failure);
        act.request_id.clear();
        act.last_worker_identity = std::mem::take(&mut act.started_identity);
        if delay.is_zero() {
            let mut act = act.clone();
            self.dispatch_activity_attempt(&mut act);
            self.ms.activities[idx] = act;
        } else {
            act.backing_off = true;
            act.current_attempt_scheduled_time_ms = to_millis(now + delay);
            let data = TimerData {
                kind: TimerKind::ActivityRetry as i32,
                event_id: act.scheduled_event_id,
                attempt: act.attempt,
                ..Default::default()
            };
            self.timer(now + delay, data);
        }
    }

    /// The retry backoff of an activity passed.
    pub fn activity_retry_fired(&mut self, scheduled_event_id: i64, attempt: i32) {
        if closed(self.ms.status) {
            return;
        }
        let Some(idx) = self.activity_index(scheduled_event_id) else {
            return;
        };
        let act = &self.ms.activities[idx];
        if act.attempt != attempt || !act.backing_off {
            return;
        }
        let mut act = act.clone();
        self.dispatch_activity_attempt(&mut act);
        self.ms.activities[idx] = act;
    }

    /// An activity timeout timer fired. Returns true when it re-armed itself (heartbeat seen).
    pub fn activity_timeout(
        &mut self,
        scheduled_event_id: i64,
        attempt: i32,
        timeout_type: TimeoutType,
    ) {
        if closed(self.ms.status) {
            return;
        }
        let Some(idx) = self.activity_index(scheduled_event_id) else {
            return;
        };
        let act = self.ms.activities[idx].clone();
        let applies = match timeout_type {
            TimeoutType::ScheduleToClose => true,
            TimeoutType::ScheduleToStart => {
                act.attempt == attempt && !act.started && !act.backing_off
            }
            TimeoutType::StartToClose | TimeoutType::Heartbeat => {
                act.attempt == attempt && act.started
            }
            TimeoutType::Unspecified => false,
        };
        if !applies {
            return;
        }
        if timeout_type == TimeoutType::Heartbeat {
            let hb = dur(act.heartbeat.as_ref());
            let last = if act.last_heartbeat_ms > 0 {
                act.last_heartbeat_ms
            } else {
                act.started_time_ms
            };
            let deadline = from_millis(last) + hb;
            if deadline > self.now {
                self.timer(
                    deadline,
                    TimerData {
                        kind: TimerKind::ActivityTimeout as i32,
                        event_id: scheduled_event_id,
                        attempt,
                        timeout_type: TimeoutType::Heartbeat as i32,
                        ..Default::default()
                    },
                );
                return;
            }
        }
        let failure = timeout_failure(timeout_type, act.heartbeat_details.clone(), None);
        if matches!(
            timeout_type,
            TimeoutType::StartToClose | TimeoutType::Heartbeat
        ) && let RetryDecision::Retry(delay) =
            retry::decide(&act, &failure, Some(timeout_type), self.now)
        {
            self.retry_activity(idx, failure, delay);
            return;
        }
        let retry_state = match timeout_type {
            TimeoutType::StartToClose | TimeoutType::Heartbeat => {
                match retry::decide(&act, &failure, Some(timeout_type), self.now) {
                    RetryDecision::Stop(state) => state,
                    RetryDecision::Retry(_) => RetryState::Timeout,
                }
            }
            _ => RetryState::Timeout,
        };
        let act = self
            .remove_activity(scheduled_event_id)
            .expect("found above");
        self.transfers_done.push(act.transfer_task_id);
        // Out of time for another attempt (the schedule-to-close deadline fired, or a retry
        // would land past it): reported as a schedule-to-close timeout, whichever timer fired,
        // with the last attempt's failure as its cause.
        let failure =
            if retry_state == RetryState::Timeout && timeout_type != TimeoutType::ScheduleToStart {
                let mut f = timeout_failure(
                    TimeoutType::ScheduleToClose,
                    act.heartbeat_details.clone(),
                    act.last_failure.clone(),
                );
                f.message = NO_TIME_TO_RETRY.to_string();
                f
            } else {
                failure
            };
        let started = if act.started {
            self.write_activity_started(&act)
        } else {
            0
        };
        self.add_external(event(
            EventType::ActivityTaskTimedOut,
            hist::ActivityTaskTimedOutEventAttributes {
                failure: Some(failure),
                scheduled_event_id,
                started_event_id: started,
                retry_state: retry_state as i32,
            },
        ));
    }

    // ----- timers -----

    /// A user timer fired.
    /// A user timer's time came: it fires, and with it every other timer of the run due by
    /// then, in the order of their fire times (then of their started events), before one
    /// workflow task, as the reference fires a run's due timers in one batch.
    pub fn user_timer_fired(&mut self, started_event_id: i64) {
        if closed(self.ms.status) {
            return;
        }
        let Some(this) = self
            .ms
            .timers
            .iter()
            .find(|t| t.started_event_id == started_event_id)
        else {
            return;
        };
        let due_by = this.fire_time_ms.max(self.now_ms());
        let mut due: Vec<TimerInfo> = Vec::new();
        self.ms.timers.retain(|t| {
            let fires = t.fire_time_ms <= due_by;
            if fires {
                due.push(t.clone());
            }
            !fires
        });
        due.sort_by_key(|t| (t.fire_time_ms, t.started_event_id));
        for timer in due {
            self.add_external_quiet(event(
                EventType::TimerFired,
                hist::TimerFiredEventAttributes {
                    timer_id: timer.timer_id,
                    started_event_id: timer.started_event_id,
                },
            ));
        }
        self.schedule_wft();
    }

    // ----- whole-run operations -----

    /// Asks the workflow to cancel itself (idempotent).
    /// Delivers a signal: `WorkflowExecutionSignaled`, buffered while a workflow task is in
    /// flight, otherwise written with a workflow task to deliver it. A repeated `request_id` is
    /// a no-op (the client retried).
    pub fn signal(&mut self, signal: Signal) -> Result<(), StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        if !signal.request_id.is_empty() && self.ms.applied_request_ids.contains(&signal.request_id)
        {
            return Ok(());
        }
        if self.env.max_signals > 0 && self.ms.signal_count >= self.env.max_signals as i64 {
            // The reference's answer, word for word (clients match on it).
            return Err(StateError::Invalid(
                "exceeded workflow execution limit for signal events".into(),
            ));
        }
        self.ms.signal_count += 1;
        if !signal.request_id.is_empty() {
            if self.ms.applied_request_ids.len() >= MAX_REMEMBERED_REQUEST_IDS {
                self.ms.applied_request_ids.remove(0);
            }
            self.ms.applied_request_ids.push(signal.request_id.clone());
        }
        self.add_external(signal.into_event());
        Ok(())
    }

    pub fn request_cancel(
        &mut self,
        reason: &str,
        identity: &str,
        request_id: &str,
    ) -> Result<(), StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        if self.ms.cancel_requested {
            return Ok(());
        }
        self.ms.cancel_requested = true;
        self.ms.cancel_request_id = request_id.to_string();
        let source = self.cancel_source.take();
        self.add_external(event(
            EventType::WorkflowExecutionCancelRequested,
            hist::WorkflowExecutionCancelRequestedEventAttributes {
                cause: reason.to_string(),
                identity: identity.to_string(),
                external_initiated_event_id: source.as_ref().map_or(0, |s| s.1),
                external_workflow_execution: source.map(|s| s.0),
            },
        ));
        Ok(())
    }

    /// Ends an in-flight workflow task because the run is being closed from outside.
    fn force_close_wft(&mut self) {
        if let Some(wft) = self.ms.wft.clone()
            && wft.started_event_id > 0
        {
            self.append(event(
                EventType::WorkflowTaskFailed,
                hist::WorkflowTaskFailedEventAttributes {
                    scheduled_event_id: wft.scheduled_event_id,
                    started_event_id: wft.started_event_id,
                    cause: WorkflowTaskFailedCause::ForceCloseCommand as i32,
                    identity: "history-service".to_string(),
                    ..Default::default()
                },
            ));
            self.ms.wft = None;
        }
        self.flush_buffer();
    }

    /// Terminates the run.
    pub fn terminate(
        &mut self,
        reason: &str,
        details: Option<Payloads>,
        identity: &str,
    ) -> Result<(), StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        self.force_close_wft();
        let id = self.append(event(
            EventType::WorkflowExecutionTerminated,
            hist::WorkflowExecutionTerminatedEventAttributes {
                reason: reason.to_string(),
                details,
                identity: identity.to_string(),
            },
        ));
        self.close(WorkflowExecutionStatus::Terminated, id);
        Ok(())
    }

    /// The run (or execution) timeout passed.
    pub fn run_timeout_fired(&mut self) {
        if closed(self.ms.status) {
            return;
        }
        self.force_close_wft();
        let (retry_state, new_run_id) = self.retry_run(None);
        let id = self.append(event(
            EventType::WorkflowExecutionTimedOut,
            hist::WorkflowExecutionTimedOutEventAttributes {
                retry_state: retry_state as i32,
                new_execution_run_id: new_run_id,
            },
        ));
        self.close(WorkflowExecutionStatus::TimedOut, id);
    }

    /// Applies the workflow retry policy to a run that failed (`failure`) or timed out: when
    /// it retries, the next run (attempt + 1, the same input, the backoff as its start delay)
    /// is set up to be created in this transaction. Returns the retry state for the close event
    /// and the next run's id (empty when none).
    fn retry_run(&mut self, failure: Option<&Failure>) -> (RetryState, String) {
        match retry::decide_workflow(self.ms, failure, self.now) {
            RetryDecision::Stop(state) => {
                let last = self.ms.last_completion_result.clone();
                (state, self.cron_run(last, failure))
            }
            RetryDecision::Retry(delay) => {
                let new_run_id = self.ids.new_run_id();
                let attributes = temporalio_protos::temporal::api::command::v1::ContinueAsNewWorkflowExecutionCommandAttributes {
                    workflow_type: Some(WorkflowType {
                        name: self.ms.workflow_type.clone(),
                    }),
                    task_queue: Some(TaskQueue {
                        name: self.ms.task_queue.clone(),
                        kind: TaskQueueKind::Normal as i32,
                        normal_name: String::new(),
                    }),
                    input: self.ms.input.clone(),
                    workflow_run_timeout: self.ms.run_timeout,
                    workflow_task_timeout: self.ms.wft_timeout,
                    backoff_start_interval: to_pb_duration(delay),
                    retry_policy: self.ms.retry_policy.clone(),
                    initiator: ContinueAsNewInitiator::Retry as i32,
                    failure: failure.cloned(),
                    memo: self.ms.memo.clone(),
                    search_attributes: self.ms.search_attributes.clone(),
                    cron_schedule: self.ms.cron_schedule.clone(),
                    last_completion_result: self.ms.last_completion_result.clone(),
                    ..Default::default()
                };
                self.continued_as_new = Some(ContinuedAsNew {
                    new_run_id: new_run_id.clone(),
                    attempt: self.ms.attempt.max(1) + 1,
                    attributes,
                });
                (RetryState::InProgress, new_run_id)
            }
        }
    }

    /// A cron workflow's next run after this one closes (completed, or failed / timed out with
    /// no retry left): it waits for the next scheduled time and carries the last successful
    /// result. Returns the next run's id, empty when the run has no cron schedule.
    fn cron_run(&mut self, result: Option<Payloads>, failure: Option<&Failure>) -> String {
        if self.ms.cron_schedule.is_empty() {
            return String::new();
        }
        let Ok(schedule) = crate::cron::CronSchedule::parse(&self.ms.cron_schedule) else {
            return String::new();
        };
        // From when this run was due (its execution time), so `@every` keeps its rhythm.
        let Some(backoff) = schedule.backoff(from_millis(self.ms.execution_time_ms), self.now)
        else {
            return String::new();
        };
        if self.ms.execution_expiration_ms > 0
            && self.now + backoff >= from_millis(self.ms.execution_expiration_ms)
        {
            return String::new();
        }
        let new_run_id = self.ids.new_run_id();
        let attributes = temporalio_protos::temporal::api::command::v1::ContinueAsNewWorkflowExecutionCommandAttributes {
            workflow_type: Some(WorkflowType {
                name: self.ms.workflow_type.clone(),
            }),
            task_queue: Some(TaskQueue {
                name: self.ms.task_queue.clone(),
                kind: TaskQueueKind::Normal as i32,
                normal_name: String::new(),
            }),
            input: self.ms.input.clone(),
            workflow_run_timeout: self.ms.run_timeout,
            workflow_task_timeout: self.ms.wft_timeout,
            backoff_start_interval: to_pb_duration(backoff),
            retry_policy: self.ms.retry_policy.clone(),
            initiator: ContinueAsNewInitiator::CronSchedule as i32,
            failure: failure.cloned(),
            last_completion_result: result,
            memo: self.ms.memo.clone(),
            search_attributes: self.ms.search_attributes.clone(),
            cron_schedule: self.ms.cron_schedule.clone(),
            ..Default::default()
        };
        self.continued_as_new = Some(ContinuedAsNew {
            new_run_id: new_run_id.clone(),
            attempt: 1,
            attributes,
        });
        new_run_id
    }

    /// Marks the run closed: nothing pending remains, and a deletion timer is armed for when
    /// the namespace retention has passed.
    fn close(&mut self, status: WorkflowExecutionStatus, close_event_id: i64) {
        self.ms.status = status as i32;
        self.ms.close_time_ms = self.now_ms();
        self.ms.close_event_id = close_event_id;
        if let Some(wft) = self.ms.wft.take()
            && wft.started_event_id == 0
        {
            self.transfers_done.push(wft.transfer_task_id);
        }
        for act in std::mem::take(&mut self.ms.activities) {
            if !act.started && !act.backing_off {
                self.transfers_done.push(act.transfer_task_id);
            }
        }
        self.ms.timers.clear();
        self.ms.buffered.clear();
        self.close_children();
        self.ms.retention = to_pb_duration(self.env.retention);
        if !self.env.retention.is_zero() {
            self.timer(
                self.now + self.env.retention,
                TimerData {
                    kind: TimerKind::DeleteExecution as i32,
                    ..Default::default()
                },
            );
        }
    }
}

#[cfg(test)]
mod tests;
