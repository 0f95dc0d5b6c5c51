//! The small interface through which history hands tasks to matching, so the two services
//! never depend on each other's crates and can later run in different processes.
use temporalio_protos::temporal::api::workflowservice::v1::PollActivityTaskQueueResponse;

use crate::wire::PollWorkflowTaskAnswer;

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

/// What a poller receives.
#[derive(Debug)]
pub enum Handoff {
    /// A task to start (history records it started when the poller asks).
    Task(QueuedTask),
    /// A workflow task history already started for this poller, in the transition that
    /// scheduled it: the answer to send as it is.
    Workflow(Box<PollWorkflowTaskAnswer>),
    /// An activity task history already started for this poller.
    Activity(Box<PollActivityTaskQueueResponse>),
    /// The transition that reserved this poller failed: the poller waits on.
    Released,
}

/// A waiting poller taken off its queue by history, which records the task it creates as
/// started by this poller in the same transition (one commit instead of two), then hands it
/// the started task. Dropped without [`Reservation::deliver`] (the transition failed), the
/// poller goes back to waiting.
#[derive(Debug)]
pub struct Reservation {
    identity: String,
    build_id: String,
    poller: Option<tokio::sync::oneshot::Sender<Handoff>>,
}

impl Reservation {
    /// A reservation of the poller (its identity and build id) that receives on the other end
    /// of `poller`.
    pub fn new(
        identity: String,
        build_id: String,
        poller: tokio::sync::oneshot::Sender<Handoff>,
    ) -> Self {
        Self {
            identity,
            build_id,
            poller: Some(poller),
        }
    }

    /// The identity the poller gave.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The build id the poller gave (empty if none).
    pub fn build_id(&self) -> &str {
        &self.build_id
    }

    /// Hands the poller its started task. False if the poller is gone (its client hung up);
    /// the task then times out and is retried like any started task whose worker vanished.
    pub fn deliver(mut self, handoff: Handoff) -> bool {
        self.poller
            .take()
            .is_some_and(|poller| poller.send(handoff).is_ok())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(poller) = self.poller.take() {
            let _ = poller.send(Handoff::Released);
        }
    }
}

/// What history needs from matching.
pub trait TaskSink: Send + Sync + 'static {
    /// Queues a task (or hands it straight to a waiting poller).
    fn add_task(&self, task: QueuedTask);
    /// True when a poller polled this queue recently or waits on it now; sticky tasks for a
    /// queue without one go to the normal queue instead.
    fn has_recent_poller(&self, namespace_id: &str, task_queue: &str, kind: TaskKind) -> bool;
    /// Takes a poller waiting on the queue now, if there is one.
    fn reserve(&self, namespace_id: &str, task_queue: &str, kind: TaskKind) -> Option<Reservation>;
}
