//! Kairos matching: in-memory task queues. A task is handed straight to a waiting long-poller
//! when there is one (sync match) and queued otherwise. Durability lives in history's transfer
//! tasks: every queued task is also a row there, reloaded into matching at startup.
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kairos_core::api::{QueuedTask, TaskKind, TaskSink};
use parking_lot::Mutex;
use tokio::sync::oneshot;

type QueueKey = (String, String, TaskKind);

#[derive(Default)]
struct Queue {
    backlog: VecDeque<QueuedTask>,
    waiters: VecDeque<oneshot::Sender<QueuedTask>>,
    last_poll: Option<Instant>,
    /// Set by ShutdownWorker for sticky queues: the worker is gone.
    closed: bool,
}

/// Options of the matching service.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a poll waits before answering empty, unless the caller says otherwise.
    pub long_poll_timeout: Duration,
    /// A queue polled within this window counts as having a poller.
    pub poller_idle: Duration,
}

/// Handle to the task queues (cheap clone).
#[derive(Clone)]
pub struct Handle {
    queues: Arc<Mutex<HashMap<QueueKey, Queue>>>,
    options: Options,
}

impl Handle {
    /// Empty task queues.
    pub fn new(options: Options) -> Self {
        Self {
            queues: Arc::new(Mutex::new(HashMap::new())),
            options,
        }
    }

    /// Waits up to the long-poll timeout for a task. `None` means nothing came. Dropping the
    /// future (client gone) withdraws the poller: a task offered to it goes to the next one.
    pub async fn poll(
        &self,
        namespace_id: &str,
        task_queue: &str,
        kind: TaskKind,
        timeout: Duration,
    ) -> Option<QueuedTask> {
        let key = (namespace_id.to_string(), task_queue.to_string(), kind);
        let rx = {
            let mut queues = self.queues.lock();
            let queue = queues.entry(key).or_default();
            queue.last_poll = Some(Instant::now());
            queue.closed = false;
            if let Some(task) = queue.backlog.pop_front() {
                return Some(task);
            }
            let (tx, rx) = oneshot::channel();
            queue.waiters.push_back(tx);
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(task)) => Some(task),
            _ => None,
        }
    }

    /// Marks a (sticky) queue's worker as gone and moves its backlog out, returning the tasks so
    /// the caller can reroute them.
    pub fn close_queue(
        &self,
        namespace_id: &str,
        task_queue: &str,
        kind: TaskKind,
    ) -> Vec<QueuedTask> {
        let key = (namespace_id.to_string(), task_queue.to_string(), kind);
        let mut queues = self.queues.lock();
        match queues.get_mut(&key) {
            Some(queue) => {
                queue.closed = true;
                queue.last_poll = None;
                queue.waiters.clear();
                queue.backlog.drain(..).collect()
            }
            None => Vec::new(),
        }
    }

    /// Number of tasks waiting without a poller, per queue (for describe and tests).
    pub fn backlog_len(&self, namespace_id: &str, task_queue: &str, kind: TaskKind) -> usize {
        let key = (namespace_id.to_string(), task_queue.to_string(), kind);
        self.queues.lock().get(&key).map_or(0, |q| q.backlog.len())
    }
}

impl TaskSink for Handle {
    fn add_task(&self, task: QueuedTask) {
        let key = (
            task.namespace_id.clone(),
            task.task_queue.clone(),
            task.kind,
        );
        let mut queues = self.queues.lock();
        let queue = queues.entry(key).or_default();
        let mut task = task;
        while let Some(waiter) = queue.waiters.pop_front() {
            match waiter.send(task) {
                Ok(()) => return,
                Err(returned) => task = returned,
            }
        }
        queue.backlog.push_back(task);
    }

    fn has_recent_poller(&self, namespace_id: &str, task_queue: &str, kind: TaskKind) -> bool {
        let key = (namespace_id.to_string(), task_queue.to_string(), kind);
        let queues = self.queues.lock();
        let Some(queue) = queues.get(&key) else {
            return false;
        };
        if queue.closed {
            return false;
        }
        queue.waiters.iter().any(|w| !w.is_closed())
            || queue
                .last_poll
                .is_some_and(|t| t.elapsed() < self.options.poller_idle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: i64) -> QueuedTask {
        QueuedTask {
            namespace_id: "ns".into(),
            task_queue: "tq".into(),
            kind: TaskKind::Workflow,
            task_id: id,
            shard_id: 0,
            workflow_id: "wf".into(),
            run_id: "run".into(),
            scheduled_event_id: 2,
            attempt: 1,
            query_id: String::new(),
        }
    }

    fn m_timeout() -> Duration {
        Duration::from_secs(5)
    }

    fn handle(timeout_ms: u64) -> Handle {
        Handle::new(Options {
            long_poll_timeout: Duration::from_millis(timeout_ms),
            poller_idle: Duration::from_secs(10),
        })
    }

    #[tokio::test]
    async fn backlog_then_poll_and_sync_match() {
        let matching = handle(5_000);
        matching.add_task(task(1));
        assert_eq!(
            matching
                .poll("ns", "tq", TaskKind::Workflow, m_timeout())
                .await
                .map(|t| t.task_id),
            Some(1)
        );
        let waiter = {
            let m = matching.clone();
            tokio::spawn(async move { m.poll("ns", "tq", TaskKind::Workflow, m_timeout()).await })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matching.has_recent_poller("ns", "tq", TaskKind::Workflow)
            || matching
                .queues
                .lock()
                .values()
                .all(|q| q.waiters.is_empty())
        {
            assert!(Instant::now() < deadline, "poller never registered");
            tokio::task::yield_now().await;
        }
        matching.add_task(task(2));
        assert_eq!(waiter.await.expect("join").map(|t| t.task_id), Some(2));
        assert_eq!(matching.backlog_len("ns", "tq", TaskKind::Workflow), 0);
    }

    #[tokio::test]
    async fn empty_poll_times_out_and_dropped_poller_does_not_eat_tasks() {
        let matching = handle(20);
        assert!(
            matching
                .poll("ns", "tq", TaskKind::Activity, Duration::from_millis(20))
                .await
                .is_none()
        );
        matching.add_task(QueuedTask {
            kind: TaskKind::Activity,
            ..task(3)
        });
        assert_eq!(matching.backlog_len("ns", "tq", TaskKind::Activity), 1);
    }
}
