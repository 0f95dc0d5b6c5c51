//! The small interface through which history hands tasks to matching, so the two services
//! never depend on each other's crates and can later run in different processes.

/// Which kind of worker poll a task is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// A workflow task (PollWorkflowTaskQueue).
    Workflow,
    /// An activity task (PollActivityTaskQueue).
    Activity,
}

/// A task waiting in a task queue. It only points at the run: history decides, when a poller
/// takes it, whether it is still valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    /// Namespace id.
    pub namespace_id: String,
    /// Task queue name.
    pub task_queue: String,
    /// Workflow or activity.
    pub kind: TaskKind,
    /// The durable transfer task behind it.
    pub task_id: i64,
    /// Shard of the run.
    pub shard_id: i32,
    /// The workflow.
    pub workflow_id: String,
    /// The run.
    pub run_id: String,
    /// Scheduled event id of the workflow task or activity.
    pub scheduled_event_id: i64,
    /// Attempt it was dispatched for.
    pub attempt: i32,
    /// Set for a query task: the id of the query it carries (never stored; no transfer row).
    pub query_id: String,
}

/// What history needs from matching.
pub trait TaskSink: Send + Sync + 'static {
    /// Queues a task (or hands it straight to a waiting poller).
    fn add_task(&self, task: QueuedTask);
    /// True when a poller polled this queue recently or waits on it now; sticky tasks for a
    /// queue without one go to the normal queue instead.
    fn has_recent_poller(&self, namespace_id: &str, task_queue: &str, kind: TaskKind) -> bool;
}
