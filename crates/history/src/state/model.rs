//! The persisted shape of one run's mutable state, and of the tasks the state machine asks for.
//! These are protobuf messages written by hand with `prost` derives: compact, fast, and new
//! fields can be added without breaking rows already stored.
use prost_wkt_types::Duration as PbDuration;
use temporalio_protos::temporal::api::common::v1::{
    ActivityType, Header, Memo, Payloads, Priority, RetryPolicy, SearchAttributes,
};
use temporalio_protos::temporal::api::failure::v1::Failure;
use temporalio_protos::temporal::api::history::v1::HistoryEvent;

/// Everything the server must remember about a run between transitions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MutableState {
    #[prost(string, tag = "1")]
    pub namespace_id: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub workflow_id: String,
    #[prost(string, tag = "4")]
    pub run_id: String,
    #[prost(string, tag = "5")]
    pub first_execution_run_id: String,
    #[prost(string, tag = "6")]
    pub workflow_type: String,
    #[prost(string, tag = "7")]
    pub task_queue: String,
    /// `WorkflowExecutionStatus` as an int.
    #[prost(int32, tag = "8")]
    pub status: i32,
    #[prost(int64, tag = "9")]
    pub next_event_id: i64,
    /// Started event id of the last completed workflow task (the poll's
    /// `previous_started_event_id`).
    #[prost(int64, tag = "10")]
    pub last_completed_wft_started_id: i64,
    #[prost(int64, tag = "11")]
    pub start_time_ms: i64,
    #[prost(int64, tag = "12")]
    pub close_time_ms: i64,
    #[prost(int64, tag = "13")]
    pub execution_time_ms: i64,
    #[prost(message, optional, tag = "14")]
    pub run_timeout: Option<PbDuration>,
    #[prost(message, optional, tag = "15")]
    pub execution_timeout: Option<PbDuration>,
    #[prost(message, optional, tag = "16")]
    pub wft_timeout: Option<PbDuration>,
    #[prost(string, tag = "17")]
    pub start_request_id: String,
    /// The worker's sticky queue; empty when not sticky.
    #[prost(string, tag = "18")]
    pub sticky_task_queue: String,
    #[prost(message, optional, tag = "19")]
    pub sticky_schedule_to_start: Option<PbDuration>,
    /// The one scheduled or started workflow task.
    #[prost(message, optional, tag = "20")]
    pub wft: Option<WorkflowTaskInfo>,
    #[prost(message, repeated, tag = "21")]
    pub activities: Vec<ActivityInfo>,
    #[prost(message, repeated, tag = "22")]
    pub timers: Vec<TimerInfo>,
    /// Events that arrived while a workflow task was started; they get ids when flushed.
    #[prost(message, repeated, tag = "23")]
    pub buffered: Vec<HistoryEvent>,
    #[prost(bool, tag = "24")]
    pub cancel_requested: bool,
    #[prost(int64, tag = "25")]
    pub history_size_bytes: i64,
    /// Attempt number the next workflow task gets (grows with failures and timeouts).
    #[prost(int32, tag = "26")]
    pub wft_attempt: i32,
    #[prost(message, optional, tag = "27")]
    pub memo: Option<Memo>,
    #[prost(message, optional, tag = "28")]
    pub search_attributes: Option<SearchAttributes>,
    #[prost(int64, tag = "29")]
    pub state_transition_count: i64,
    /// Event id of the close event, 0 while running.
    #[prost(int64, tag = "30")]
    pub close_event_id: i64,
    #[prost(int64, tag = "31")]
    pub execution_expiration_ms: i64,
    #[prost(string, tag = "32")]
    pub cancel_request_id: String,
    #[prost(int32, tag = "33")]
    pub attempt: i32,
    #[prost(message, optional, tag = "34")]
    pub retry_policy: Option<RetryPolicy>,
    /// Retention of the namespace when the run closed, for the deletion timer.
    #[prost(message, optional, tag = "35")]
    pub retention: Option<PbDuration>,
    #[prost(int64, tag = "36")]
    pub last_update_ms: i64,
    /// Request ids of terminate/signal style requests already applied (dedup).
    #[prost(string, repeated, tag = "37")]
    pub applied_request_ids: Vec<String>,
    /// The stored run timeout, execution timeout and start backoff timers.
    #[prost(message, repeated, tag = "38")]
    pub run_timer_tasks: Vec<TimerRef>,
    /// Updates admitted to the run, and what became of them (kept for deduplication).
    #[prost(message, repeated, tag = "39")]
    pub updates: Vec<UpdateInfo>,
    /// The run's input, kept only when a retry policy may start the run again with it.
    #[prost(message, optional, tag = "40")]
    pub input: Option<Payloads>,
    /// Signals and cancel requests this run sent to other workflows, until they are delivered.
    #[prost(message, repeated, tag = "41")]
    pub external_requests: Vec<ExternalRequest>,
    /// A failing workflow task's next attempt waits for its backoff timer.
    #[prost(bool, tag = "42")]
    pub wft_backing_off: bool,
    /// The workflow that started this one as its child (empty ids when none).
    #[prost(message, optional, tag = "43")]
    pub parent: Option<ParentInfo>,
    /// Child workflows this run started or is starting; kept after the run closes until its
    /// parent close policy has been applied.
    #[prost(message, repeated, tag = "44")]
    pub children: Vec<ChildInfo>,
    /// The cron schedule the run repeats on; empty when none.
    #[prost(string, tag = "45")]
    pub cron_schedule: String,
    /// The run that started the chain of parents, for `root_execution`.
    #[prost(message, optional, tag = "46")]
    pub root: Option<temporalio_protos::temporal::api::common::v1::WorkflowExecution>,
    /// A cron run's previous successful result, carried to the next run after a failure.
    #[prost(message, optional, tag = "47")]
    pub last_completion_result: Option<Payloads>,
    /// Signals the run has received (for `history.maximumSignalsPerExecution`).
    #[prost(int64, tag = "48")]
    pub signal_count: i64,
    /// The first completed workflow task of each worker binary (`state::reset_points`).
    #[prost(message, repeated, tag = "49")]
    pub reset_points: Vec<temporalio_protos::temporal::api::workflow::v1::ResetPointInfo>,
    /// The summary and details the start gave (its started event carries them; describe shows
    /// them). Continue-as-new, retry and cron runs have none, as in the reference.
    #[prost(message, optional, tag = "50")]
    pub user_metadata: Option<temporalio_protos::temporal::api::sdk::v1::UserMetadata>,
}

/// Where a child run reports its close.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParentInfo {
    #[prost(string, tag = "1")]
    pub namespace_id: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub workflow_id: String,
    #[prost(string, tag = "4")]
    pub run_id: String,
    /// The parent's StartChildWorkflowExecutionInitiated event.
    #[prost(int64, tag = "5")]
    pub initiated_event_id: i64,
}

/// A child workflow of a run.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChildInfo {
    #[prost(int64, tag = "1")]
    pub initiated_event_id: i64,
    /// The ChildWorkflowExecutionStarted event id; 0 while not started.
    #[prost(int64, tag = "2")]
    pub started_event_id: i64,
    #[prost(bool, tag = "3")]
    pub started: bool,
    #[prost(string, tag = "4")]
    pub namespace: String,
    #[prost(string, tag = "5")]
    pub workflow_id: String,
    /// The child's first run.
    #[prost(string, tag = "6")]
    pub run_id: String,
    #[prost(string, tag = "7")]
    pub workflow_type: String,
    /// `ParentClosePolicy` as an int.
    #[prost(int32, tag = "8")]
    pub parent_close_policy: i32,
    /// The transfer task that starts the child, deleted once it is started or failed.
    #[prost(int64, tag = "9")]
    pub transfer_task_id: i64,
    /// The command, kept until the child is started.
    #[prost(message, optional, tag = "10")]
    pub command: Option<
        temporalio_protos::temporal::api::command::v1::StartChildWorkflowExecutionCommandAttributes,
    >,
    /// The command's user metadata, the child's start metadata (kept until it is started).
    #[prost(message, optional, tag = "11")]
    pub user_metadata: Option<temporalio_protos::temporal::api::sdk::v1::UserMetadata>,
}

/// A signal or cancel request for another workflow, waiting to be delivered.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExternalRequest {
    #[prost(int64, tag = "1")]
    pub initiated_event_id: i64,
    /// True for a cancel request, false for a signal.
    #[prost(bool, tag = "2")]
    pub cancel: bool,
    #[prost(string, tag = "3")]
    pub namespace: String,
    #[prost(string, tag = "4")]
    pub workflow_id: String,
    #[prost(string, tag = "5")]
    pub run_id: String,
    #[prost(string, tag = "6")]
    pub signal_name: String,
    #[prost(message, optional, tag = "7")]
    pub input: Option<Payloads>,
    #[prost(message, optional, tag = "8")]
    pub header: Option<temporalio_protos::temporal::api::common::v1::Header>,
    #[prost(string, tag = "9")]
    pub control: String,
    #[prost(string, tag = "10")]
    pub reason: String,
    #[prost(int64, tag = "11")]
    pub transfer_task_id: i64,
}

/// An update admitted to a run.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpdateInfo {
    #[prost(string, tag = "1")]
    pub update_id: String,
    /// The request as the client sent it.
    #[prost(message, optional, tag = "2")]
    pub request: Option<temporalio_protos::temporal::api::update::v1::Request>,
    /// `UpdateWorkflowExecutionLifecycleStage`: admitted, accepted or completed.
    #[prost(int32, tag = "3")]
    pub stage: i32,
    /// The workflow task that carried the request to a worker; 0 until delivered.
    #[prost(int64, tag = "4")]
    pub delivered_in_wft: i64,
    #[prost(int64, tag = "5")]
    pub accepted_event_id: i64,
    /// Set once completed, or rejected by the workflow's validator.
    #[prost(message, optional, tag = "6")]
    pub outcome: Option<temporalio_protos::temporal::api::update::v1::Outcome>,
    /// Rejected: no event was written, and the id may be used again.
    #[prost(bool, tag = "7")]
    pub rejected: bool,
    /// Its WorkflowExecutionUpdateAdmitted event (a reset re-applied it), 0 if none: the worker
    /// reads the request from history, so no protocol message carries it, and its acceptance
    /// does not repeat the request.
    #[prost(int64, tag = "8")]
    pub admitted_event_id: i64,
}

/// A stored timer task that something in the state waits for; when that something goes, the
/// timer row is deleted in the same transaction instead of firing for nothing later.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimerRef {
    #[prost(int64, tag = "1")]
    pub task_id: i64,
    #[prost(int64, tag = "2")]
    pub fire_at_ms: i64,
    /// The attempt the timer guards; 0 for one that spans every attempt.
    #[prost(int32, tag = "3")]
    pub attempt: i32,
}

/// The one scheduled or started workflow task of a run.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkflowTaskInfo {
    #[prost(int64, tag = "1")]
    pub scheduled_event_id: i64,
    /// 0 while not started.
    #[prost(int64, tag = "2")]
    pub started_event_id: i64,
    #[prost(int32, tag = "3")]
    pub attempt: i32,
    #[prost(string, tag = "4")]
    pub task_queue: String,
    #[prost(bool, tag = "5")]
    pub sticky: bool,
    #[prost(int64, tag = "6")]
    pub scheduled_time_ms: i64,
    #[prost(int64, tag = "7")]
    pub started_time_ms: i64,
    #[prost(string, tag = "8")]
    pub request_id: String,
    #[prost(string, tag = "9")]
    pub identity: String,
    /// The transfer task that dispatches it, deleted when it starts.
    #[prost(int64, tag = "10")]
    pub transfer_task_id: i64,
    /// Its schedule-to-start and start-to-close timeout timers.
    #[prost(message, repeated, tag = "11")]
    pub timer_tasks: Vec<TimerRef>,
}

/// A pending activity.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ActivityInfo {
    #[prost(int64, tag = "1")]
    pub scheduled_event_id: i64,
    #[prost(string, tag = "2")]
    pub activity_id: String,
    #[prost(message, optional, tag = "3")]
    pub activity_type: Option<ActivityType>,
    #[prost(string, tag = "4")]
    pub task_queue: String,
    #[prost(message, optional, tag = "5")]
    pub header: Option<Header>,
    #[prost(message, optional, tag = "6")]
    pub input: Option<Payloads>,
    #[prost(message, optional, tag = "7")]
    pub schedule_to_close: Option<PbDuration>,
    #[prost(message, optional, tag = "8")]
    pub schedule_to_start: Option<PbDuration>,
    #[prost(message, optional, tag = "9")]
    pub start_to_close: Option<PbDuration>,
    #[prost(message, optional, tag = "10")]
    pub heartbeat: Option<PbDuration>,
    #[prost(message, optional, tag = "11")]
    pub retry_policy: Option<RetryPolicy>,
    #[prost(int64, tag = "12")]
    pub scheduled_time_ms: i64,
    #[prost(int32, tag = "13")]
    pub attempt: i32,
    #[prost(int64, tag = "14")]
    pub current_attempt_scheduled_time_ms: i64,
    #[prost(bool, tag = "15")]
    pub started: bool,
    #[prost(int64, tag = "16")]
    pub started_time_ms: i64,
    #[prost(string, tag = "17")]
    pub started_identity: String,
    #[prost(string, tag = "18")]
    pub request_id: String,
    #[prost(message, optional, tag = "19")]
    pub last_failure: Option<Failure>,
    #[prost(message, optional, tag = "20")]
    pub heartbeat_details: Option<Payloads>,
    #[prost(int64, tag = "21")]
    pub last_heartbeat_ms: i64,
    #[prost(bool, tag = "22")]
    pub cancel_requested: bool,
    #[prost(int64, tag = "23")]
    pub cancel_requested_event_id: i64,
    #[prost(int64, tag = "24")]
    pub transfer_task_id: i64,
    #[prost(string, tag = "25")]
    pub last_worker_identity: String,
    #[prost(message, optional, tag = "26")]
    pub priority: Option<Priority>,
    /// The attempt is waiting for its retry backoff to pass.
    #[prost(bool, tag = "27")]
    pub backing_off: bool,
    /// Its timeout and retry timers.
    #[prost(message, repeated, tag = "28")]
    pub timer_tasks: Vec<TimerRef>,
}

/// A pending user timer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimerInfo {
    #[prost(string, tag = "1")]
    pub timer_id: String,
    #[prost(int64, tag = "2")]
    pub started_event_id: i64,
    #[prost(int64, tag = "3")]
    pub fire_time_ms: i64,
    /// The timer task that fires it.
    #[prost(message, repeated, tag = "4")]
    pub timer_tasks: Vec<TimerRef>,
}

/// What a durable timer does when it fires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum TimerKind {
    Unspecified = 0,
    UserTimer = 1,
    ActivityTimeout = 2,
    ActivityRetry = 3,
    WorkflowTaskTimeout = 4,
    WorkflowRunTimeout = 5,
    WorkflowStartBackoff = 6,
    DeleteExecution = 7,
    WorkflowExecutionTimeout = 8,
    /// A failing workflow task's next attempt is due.
    WorkflowTaskRetry = 9,
}

/// The payload of a durable timer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimerData {
    #[prost(enumeration = "TimerKind", tag = "1")]
    pub kind: i32,
    /// Scheduled event id (activity, workflow task) or started event id (user timer).
    #[prost(int64, tag = "2")]
    pub event_id: i64,
    #[prost(int32, tag = "3")]
    pub attempt: i32,
    /// `TimeoutType` for activity and workflow task timeouts.
    #[prost(int32, tag = "4")]
    pub timeout_type: i32,
    #[prost(string, tag = "5")]
    pub timer_id: String,
}

/// What a transfer task hands to matching.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum TransferKind {
    Unspecified = 0,
    WorkflowTask = 1,
    ActivityTask = 2,
    /// Delivers a signal or cancel request to another workflow (handled by history itself).
    External = 3,
    /// Starts a child workflow (handled by history).
    StartChild = 4,
    /// After a run closed: tells its parent, and applies its parent close policy to its
    /// children (handled by history).
    CloseExecution = 5,
}

/// The payload of a transfer task.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TransferData {
    #[prost(enumeration = "TransferKind", tag = "1")]
    pub kind: i32,
    #[prost(string, tag = "2")]
    pub task_queue: String,
    #[prost(int64, tag = "3")]
    pub scheduled_event_id: i64,
    #[prost(int32, tag = "4")]
    pub attempt: i32,
    #[prost(bool, tag = "5")]
    pub sticky: bool,
}

/// What the current-run pointer remembers about the run it points at.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CurrentData {
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(string, tag = "2")]
    pub start_request_id: String,
}

/// The content of an opaque task token.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TaskTokenData {
    #[prost(string, tag = "1")]
    pub namespace_id: String,
    #[prost(string, tag = "2")]
    pub workflow_id: String,
    #[prost(string, tag = "3")]
    pub run_id: String,
    #[prost(int64, tag = "4")]
    pub scheduled_event_id: i64,
    #[prost(int64, tag = "5")]
    pub started_event_id: i64,
    #[prost(int32, tag = "6")]
    pub attempt: i32,
    #[prost(string, tag = "7")]
    pub activity_id: String,
    /// 1 = workflow task, 2 = activity task, 3 = query task.
    #[prost(int32, tag = "8")]
    pub kind: i32,
    #[prost(int64, tag = "9")]
    pub started_time_ms: i64,
    /// For a query task (kind 3): the query it answers.
    #[prost(string, tag = "10")]
    pub query_id: String,
}

/// A namespace as stored in its row's blob.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamespaceData {
    #[prost(message, optional, tag = "1")]
    pub info: Option<temporalio_protos::temporal::api::namespace::v1::NamespaceInfo>,
    #[prost(message, optional, tag = "2")]
    pub config: Option<temporalio_protos::temporal::api::namespace::v1::NamespaceConfig>,
    /// Registered custom search attributes: name to `IndexedValueType`.
    #[prost(map = "string, int32", tag = "3")]
    pub custom_search_attributes: std::collections::HashMap<String, i32>,
}
