//! Where history's tasks go: to this node's matching, or, in a cluster, to the node owning the
//! task's queue (`NodeService.AddTask`). A task that cannot reach its queue's owner is tried
//! again, against whoever owns the queue then; if that never works it is not lost: its
//! transfer row stays until the task starts, and is handed out again when membership changes
//! (`Engine::redispatch_transfers`).
use std::sync::Arc;
use std::time::Duration;

use kairos_core::api::{QueuedTask, Reservation, TaskKind, TaskSink};

use crate::cluster::{Cluster, Owner};

/// History's `TaskSink` (see the module).
pub struct TaskRouter {
    matching: kairos_matching::Handle,
    cluster: Option<Arc<Cluster>>,
}

impl TaskRouter {
    /// Tasks to `matching`, or across `cluster` when there is one.
    pub fn new(matching: kairos_matching::Handle, cluster: Option<Arc<Cluster>>) -> Self {
        Self { matching, cluster }
    }

    fn owner(&self, namespace_id: &str, task_queue: &str) -> Owner {
        match &self.cluster {
            Some(cluster) => cluster.queue_owner(namespace_id, task_queue),
            None => Owner::Here,
        }
    }
}

/// How long a task keeps trying to reach its queue's owner.
const SEND_FOR: Duration = Duration::from_secs(30);
/// How long one attempt waits for the owner's answer (a paused node never gives one).
const SEND_ONCE: Duration = Duration::from_secs(2);

impl TaskSink for TaskRouter {
    fn add_task(&self, task: QueuedTask) {
        let Owner::There(_) = self.owner(&task.namespace_id, &task.task_queue) else {
            self.matching.add_task(task);
            return;
        };
        let cluster = self
            .cluster
            .clone()
            .expect("a remote owner needs a cluster");
        let matching = self.matching.clone();
        tokio::spawn(async move {
            let give_up = tokio::time::Instant::now() + SEND_FOR;
            let mut pause = Duration::from_millis(50);
            loop {
                let node = match cluster.queue_owner(&task.namespace_id, &task.task_queue) {
                    Owner::Here => return matching.add_task(task),
                    Owner::There(node) => node,
                };
                let request = kairos_proto::node::AddTaskRequest {
                    task: Some(crate::node::task_to_wire(&task)),
                };
                let sent = match cluster.peer(&node) {
                    Ok(mut peer) => {
                        match tokio::time::timeout(SEND_ONCE, peer.add_task(request)).await {
                            Ok(sent) => sent.map(|_| ()),
                            Err(_) => Err(tonic::Status::unavailable("no answer")),
                        }
                    }
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(()) => return,
                    Err(e) if tokio::time::Instant::now() + pause < give_up => {
                        tracing::debug!(node = %node.name, error = %e.message(),
                            "failed to hand a task to its queue's node; trying again");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                    Err(e) => {
                        tracing::warn!(node = %node.name, task_queue = %task.task_queue,
                            error = %e.message(),
                            "failed to hand a task to its queue's node; it is handed out again \
                             when membership changes");
                        return;
                    }
                }
            }
        });
    }

    fn has_recent_poller(&self, namespace_id: &str, task_queue: &str, kind: TaskKind) -> bool {
        match self.owner(namespace_id, task_queue) {
            Owner::Here => self
                .matching
                .has_recent_poller(namespace_id, task_queue, kind),
            // Assumed: a sticky task for a worker gone falls back to the normal queue when
            // its schedule-to-start timeout fires, as on the reference.
            Owner::There(_) => true,
        }
    }

    fn reserve(&self, namespace_id: &str, task_queue: &str, kind: TaskKind) -> Option<Reservation> {
        match self.owner(namespace_id, task_queue) {
            Owner::Here => self.matching.reserve(namespace_id, task_queue, kind),
            Owner::There(_) => None,
        }
    }
}
