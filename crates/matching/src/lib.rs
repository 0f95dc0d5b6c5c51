//! Kairos matching: in-memory task queues. A task is handed straight to a waiting long-poller
//! when there is one (sync match) and queued otherwise. Durability lives in history's transfer
//! tasks: every queued task is also a row there, reloaded into matching at startup. History can
//! also reserve a waiting poller and start the task it creates for that poller in the same
//! transition ([`Reservation`]).
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kairos_core::api::{Handoff, QueuedTask, Reservation, TaskKind, TaskSink};
use parking_lot::Mutex;
use tokio::sync::oneshot;

type QueueKey = (String, String, TaskKind);

/// A long poll waiting on a queue.
struct Waiter {
    tx: oneshot::Sender<Handoff>,
    /// Set by whoever takes the waiter (a task, a reservation) or by the poll itself when it
    /// times out: exactly one of them wins, so a task is never sent to a poll that has given up.
    taken: Arc<AtomicBool>,
    identity: String,
    build_id: String,
}

impl Waiter {
    fn take(&self) -> bool {
        !self.tx.is_closed() && !self.taken.swap(true, Ordering::AcqRel)
    }
}

#[derive(Default)]
struct Queue {
    backlog: VecDeque<QueuedTask>,
    waiters: VecDeque<Waiter>,
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

    /// Waits up to `timeout` for a task. `None` means nothing came. Dropping the future (client
    /// gone) withdraws the poller: a task offered to it goes to the next one.
    pub async fn poll(
        &self,
        namespace_id: &str,
        task_queue: &str,
        kind: TaskKind,
        timeout: Duration,
        identity: &str,
        build_id: &str,
    ) -> Option<Handoff> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let taken = Arc::new(AtomicBool::new(false));
            let mut rx = {
                let key = (namespace_id.to_string(), task_queue.to_string(), kind);
                let mut queues = self.queues.lock();
                let queue = queues.entry(key).or_default();
                queue.last_poll = Some(Instant::now());
                queue.closed = false;
                if let Some(task) = queue.backlog.pop_front() {
                    return Some(Handoff::Task(task));
                }
                let (tx, rx) = oneshot::channel();
                queue.waiters.push_back(Waiter {
                    tx,
                    taken: taken.clone(),
                    identity: identity.to_string(),
                    build_id: build_id.to_string(),
                });
                rx
            };
            let handoff = match tokio::time::timeout_at(deadline, &mut rx).await {
                Ok(received) => received.ok(),
                // Timed out: withdraw, unless someone took this poll first; then its task is on
                // the way (at once for a queued task, after one commit for a reservation).
                Err(_) if taken.swap(true, Ordering::AcqRel) => rx.await.ok(),
                Err(_) => None,
            };
            match handoff {
                Some(Handoff::Released) if tokio::time::Instant::now() < deadline => continue,
                Some(Handoff::Released) => return None,
                other => return other,
            }
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

    /// Gives up every queue `keep` refuses (a node of a cluster whose queues moved to another
    /// node): their waiting polls answer empty, and their queued tasks are returned for the
    /// caller to send to the queues' new owner.
    pub fn drain_queues(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<QueuedTask> {
        let mut queues = self.queues.lock();
        let mut moved = Vec::new();
        queues.retain(|(namespace_id, task_queue, _), queue| {
            if keep(namespace_id, task_queue) {
                return true;
            }
            // Dropping a waiter's sender ends its poll empty.
            queue
                .waiters
                .retain(|waiter| waiter.taken.load(Ordering::Acquire));
            moved.extend(queue.backlog.drain(..));
            !queue.waiters.is_empty()
        });
        moved
    }

    /// Polls waiting (not yet taken, client still there) on queues of that name in any
    /// namespace (for tests).
    pub fn waiting_polls(&self, task_queue: &str, kind: TaskKind) -> usize {
        self.queues
            .lock()
            .iter()
            .filter(|((_, name, k), _)| name == task_queue && *k == kind)
            .flat_map(|(_, q)| q.waiters.iter())
            .filter(|w| !w.tx.is_closed() && !w.taken.load(Ordering::Acquire))
            .count()
    }

    /// Tasks queued without a poller on queues of that name in any namespace (for tests).
    pub fn queued_tasks(&self, task_queue: &str, kind: TaskKind) -> usize {
        self.queues
            .lock()
            .iter()
            .filter(|((_, name, k), _)| name == task_queue && *k == kind)
            .map(|(_, q)| q.backlog.len())
            .sum()
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
            if !waiter.take() {
                continue;
            }
            match waiter.tx.send(Handoff::Task(task)) {
                Ok(()) => return,
                Err(Handoff::Task(returned)) => task = returned,
                Err(_) => unreachable!("a task was sent"),
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
        queue.waiters.iter().any(|w| !w.tx.is_closed())
            || queue
                .last_poll
                .is_some_and(|t| t.elapsed() < self.options.poller_idle)
    }

    fn reserve(&self, namespace_id: &str, task_queue: &str, kind: TaskKind) -> Option<Reservation> {
        let key = (namespace_id.to_string(), task_queue.to_string(), kind);
        let mut queues = self.queues.lock();
        let queue = queues.get_mut(&key)?;
        if queue.closed {
            return None;
        }
        while let Some(waiter) = queue.waiters.pop_front() {
            if waiter.take() {
                return Some(Reservation::new(
                    waiter.identity,
                    waiter.build_id,
                    waiter.tx,
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use temporalio_protos::temporal::api::workflowservice::v1::PollActivityTaskQueueResponse;

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

    fn task_id(handoff: Option<Handoff>) -> Option<i64> {
        match handoff {
            Some(Handoff::Task(t)) => Some(t.task_id),
            Some(other) => panic!("unexpected {other:?}"),
            None => None,
        }
    }

    /// Waits (yielding, with a deadline) until a poller waits on the queue.
    async fn until_waiting(matching: &Handle, kind: TaskKind) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while matching
            .queues
            .lock()
            .values()
            .all(|q| q.waiters.iter().all(|w| w.taken.load(Ordering::Acquire)))
            || !matching.has_recent_poller("ns", "tq", kind)
        {
            assert!(Instant::now() < deadline, "poller never registered");
            tokio::task::yield_now().await;
        }
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
            task_id(
                matching
                    .poll("ns", "tq", TaskKind::Workflow, m_timeout(), "w", "")
                    .await
            ),
            Some(1)
        );
        let waiter = {
            let m = matching.clone();
            tokio::spawn(async move {
                m.poll("ns", "tq", TaskKind::Workflow, m_timeout(), "w", "")
                    .await
            })
        };
        until_waiting(&matching, TaskKind::Workflow).await;
        matching.add_task(task(2));
        assert_eq!(task_id(waiter.await.expect("join")), Some(2));
        assert_eq!(matching.backlog_len("ns", "tq", TaskKind::Workflow), 0);
    }

    #[tokio::test]
    async fn empty_poll_times_out_and_dropped_poller_does_not_eat_tasks() {
        let matching = handle(20);
        assert!(
            matching
                .poll(
                    "ns",
                    "tq",
                    TaskKind::Activity,
                    Duration::from_millis(20),
                    "w",
                    ""
                )
                .await
                .is_none()
        );
        matching.add_task(QueuedTask {
            kind: TaskKind::Activity,
            ..task(3)
        });
        assert_eq!(matching.backlog_len("ns", "tq", TaskKind::Activity), 1);
    }

    #[tokio::test]
    async fn a_released_reservation_leaves_the_poller_waiting_for_the_next_task() {
        let matching = handle(5_000);
        assert!(matching.reserve("ns", "tq", TaskKind::Workflow).is_none());
        let waiter = {
            let m = matching.clone();
            tokio::spawn(async move {
                m.poll("ns", "tq", TaskKind::Workflow, m_timeout(), "worker-1", "")
                    .await
            })
        };
        until_waiting(&matching, TaskKind::Workflow).await;
        let reservation = matching
            .reserve("ns", "tq", TaskKind::Workflow)
            .expect("a poller waits");
        assert_eq!(reservation.identity(), "worker-1");
        assert!(
            matching.reserve("ns", "tq", TaskKind::Workflow).is_none(),
            "a reserved poller is not reserved twice"
        );
        drop(reservation);
        until_waiting(&matching, TaskKind::Workflow).await;
        matching.add_task(task(7));
        assert_eq!(task_id(waiter.await.expect("join")), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reserved_poller_gets_its_task_even_after_its_timeout() {
        let matching = handle(5_000);
        let waiter = {
            let m = matching.clone();
            tokio::spawn(async move {
                m.poll(
                    "ns",
                    "tq",
                    TaskKind::Activity,
                    Duration::from_millis(1),
                    "worker-2",
                    "",
                )
                .await
            })
        };
        // The clock is paused: the poll cannot time out before it is reserved.
        let reservation = loop {
            if let Some(r) = matching.reserve("ns", "tq", TaskKind::Activity) {
                break r;
            }
            tokio::task::yield_now().await;
        };
        // Its timeout passes while reserved (a commit in progress), and it goes on waiting.
        tokio::time::advance(Duration::from_millis(5)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(
            !waiter.is_finished(),
            "a reserved poll must wait for its task"
        );
        let response = PollActivityTaskQueueResponse {
            activity_id: "a1".into(),
            ..Default::default()
        };
        assert!(reservation.deliver(Handoff::Activity(Box::new(response))));
        match waiter.await.expect("join") {
            Some(Handoff::Activity(r)) => assert_eq!(r.activity_id, "a1"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
