//! Forwarding in a cluster: a request that names a run is served by the node owning the run's
//! history shard, a poll by the node owning its task queue. The node a client called hands the
//! request, encoded, to the owner's `NodeService.Forward` (`node.rs`), which serves it as its
//! own client's and never forwards it again. A forward that meets a node gone or a shard on the
//! move is tried again, against the owner the membership names then, until the caller's
//! deadline; past it the client gets UNAVAILABLE, which every SDK retries.
use std::time::Duration;

use prost::Message;
use tonic::{Request, Response, Status};

use crate::cluster::{Node, Owner};
use crate::workflow::Frontend;

/// Metadata key marking a call another node forwarded here.
pub(crate) const FORWARDED: &str = "kairos-forwarded";

/// How long a forward keeps trying when the caller set no deadline: a dead node's shards are
/// taken over within its membership timeout (10 s by default) and a moment.
const RETRY_WITHOUT_DEADLINE: Duration = Duration::from_secs(20);

/// What the routing of one call needs from its request's metadata.
pub(crate) struct Hop {
    forwarded: bool,
    timeout: Option<Duration>,
}

impl Hop {
    pub(crate) fn of<T>(request: &Request<T>) -> Self {
        Self {
            forwarded: request.metadata().contains_key(FORWARDED),
            timeout: crate::workflow::grpc_timeout(request),
        }
    }
}

/// The pseudo task queue whose owner keeps a namespace's worker heartbeats (a NUL, which no
/// task queue name may hold).
const WORKERS_KEY: &str = "\0workers";

/// What a call names, for routing.
pub(crate) enum Route<'a> {
    /// A run: the owner of its history shard serves it.
    Run {
        namespace_id: &'a str,
        workflow_id: &'a str,
    },
    /// A task token: the owner of the run it names serves it.
    Token(&'a [u8]),
    /// A task queue: its owner serves its polls.
    Queue {
        namespace_id: &'a str,
        task_queue: &'a str,
    },
    /// A namespace's worker heartbeats: one node keeps them all (placed like a task queue
    /// whose name no real queue can have).
    Workers { namespace_id: &'a str },
}

impl<'a> Route<'a> {
    pub(crate) fn run(namespace_id: &'a str, workflow_id: &'a str) -> Self {
        Route::Run {
            namespace_id,
            workflow_id,
        }
    }

    pub(crate) fn queue(namespace_id: &'a str, task_queue: &'a str) -> Self {
        Route::Queue {
            namespace_id,
            task_queue,
        }
    }
}

/// The workflow id of an optional execution ("" when absent: served here, which refuses it).
pub(crate) fn workflow_id_of(
    execution: Option<&temporalio_protos::temporal::api::common::v1::WorkflowExecution>,
) -> &str {
    execution.map_or("", |e| e.workflow_id.as_str())
}

/// How long a forwarded call waits for its shard to be held here before it is served anyway
/// (and refused, if the shard is not).
const FORWARDED_SHARD_WAIT: Duration = Duration::from_secs(2);

/// How waiting for a run's shard ended.
enum ShardWait {
    /// This node holds it (or the call names no shard).
    Held,
    /// The view moved the run to another node.
    Moved(Node),
    /// Neither before the deadline: the shard's id.
    TimedOut(i32),
}

impl Frontend {
    /// The history shard a route names, if it names a run.
    fn shard_of(&self, route: &Route<'_>) -> Option<i32> {
        let cluster = self.cluster.as_ref()?;
        let (namespace_id, workflow_id) = match route {
            Route::Run {
                namespace_id,
                workflow_id,
            } if !workflow_id.is_empty() => (namespace_id.to_string(), workflow_id.to_string()),
            Route::Token(bytes) => kairos_history::token::run_of(bytes)?,
            _ => return None,
        };
        Some(kairos_core::ids::shard_for(
            &namespace_id,
            &workflow_id,
            cluster.shard_count(),
        ))
    }

    /// Waits until this node holds the shard `route` names, the view moves the run elsewhere
    /// (only if `follow` says so), or `deadline`.
    async fn until_shard_held(
        &self,
        route: &Route<'_>,
        deadline: tokio::time::Instant,
        follow: impl Fn() -> bool,
    ) -> ShardWait {
        let Some(shard) = self.shard_of(route) else {
            return ShardWait::Held;
        };
        loop {
            if self.engine.holds_shard(shard) {
                return ShardWait::Held;
            }
            if follow()
                && let Owner::There(node) = self.owner(route)
            {
                return ShardWait::Moved(node);
            }
            if tokio::time::Instant::now() >= deadline {
                return ShardWait::TimedOut(shard);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn owner(&self, route: &Route<'_>) -> Owner {
        let Some(cluster) = self.cluster.as_ref() else {
            return Owner::Here;
        };
        match route {
            Route::Run {
                namespace_id,
                workflow_id,
            } if !workflow_id.is_empty() => cluster.run_owner(namespace_id, workflow_id),
            Route::Token(bytes) => match kairos_history::token::run_of(bytes) {
                Some((namespace_id, workflow_id)) => cluster.run_owner(&namespace_id, &workflow_id),
                None => Owner::Here,
            },
            Route::Queue {
                namespace_id,
                task_queue,
            } if !task_queue.is_empty() => cluster.queue_owner(namespace_id, task_queue),
            Route::Workers { namespace_id } => cluster.queue_owner(namespace_id, WORKERS_KEY),
            _ => Owner::Here,
        }
    }

    /// Serves the call on the node owning `route` when that is another node; `None` when this
    /// node serves it.
    pub(crate) async fn elsewhere<Req, Resp>(
        &self,
        hop: &Hop,
        message: &Req,
        route: Route<'_>,
        method: &'static str,
    ) -> Option<Result<Response<Resp>, Status>>
    where
        Req: Message,
        Resp: Message + Default,
    {
        // A leaving node answers polls empty at once, its own and forwarded ones alike: the
        // queues it owned are drained and their new owners serve the next poll.
        let is_poll = matches!(route, Route::Queue { .. });
        if is_poll && self.cluster.as_ref().is_some_and(|c| c.is_leaving()) {
            return Some(Ok(Response::new(Resp::default())));
        }
        let started = tokio::time::Instant::now();
        let give_up = started + hop.timeout.unwrap_or(RETRY_WITHOUT_DEADLINE);
        if hop.forwarded {
            // The sender counts this node the owner: served here, once the shard is (it may
            // be taking it over right now).
            let soon = give_up.min(started + FORWARDED_SHARD_WAIT);
            let _ = self.until_shard_held(&route, soon, || false).await;
            return None;
        }
        let mut node = match self.owner(&route) {
            Owner::There(node) => node,
            Owner::Here => {
                // Owned here by the view; served once the shard is held (a shard moving here
                // is being acquired, one moving away is about to leave the view).
                match self.until_shard_held(&route, give_up, || true).await {
                    ShardWait::Held => return None,
                    ShardWait::Moved(node) => node,
                    ShardWait::TimedOut(shard) => {
                        return Some(Err(Status::unavailable(format!(
                            "shard {shard} is moving between nodes; try again"
                        ))));
                    }
                }
            }
        };
        let body = message.encode_to_vec();
        let mut pause = Duration::from_millis(50);
        loop {
            let cluster = self
                .cluster
                .as_ref()
                .expect("a remote owner needs a cluster");
            let outcome = tokio::select! {
                outcome = self.forward_once(&node, method, &body, hop, started) => outcome,
                () = cluster.until_moved(|| self.owner(&route) == Owner::There(node.clone())) => {
                    Err(Status::unavailable(format!("node {} left the cluster", node.name)))
                }
                // A poll this node forwards ends empty as this node leaves, like the polls
                // waiting on its own queues: the worker polls again (and reaches this node's
                // successor) instead of holding the node's stop for a whole long poll.
                () = cluster.until_moved(|| !cluster.is_leaving()), if is_poll => {
                    return Some(Ok(Response::new(Resp::default())));
                }
            };
            match outcome {
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && tokio::time::Instant::now() + pause < give_up =>
                {
                    tracing::debug!(node = %node.name, method, error = %status.message(),
                        "forward failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    match self.owner(&route) {
                        Owner::There(next) => node = next,
                        Owner::Here => return None,
                    }
                }
                other => return Some(other),
            }
        }
    }

    async fn forward_once<Resp: Message + Default>(
        &self,
        node: &Node,
        method: &'static str,
        body: &[u8],
        hop: &Hop,
        started: tokio::time::Instant,
    ) -> Result<Response<Resp>, Status> {
        let cluster = self.cluster.as_ref().expect("forwarding needs a cluster");
        let mut request = Request::new(kairos_proto::node::ForwardRequest {
            method: method.to_string(),
            request: body.to_vec(),
        });
        if let Some(timeout) = hop.timeout {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(Status::deadline_exceeded("the call's deadline passed"));
            }
            request.set_timeout(left);
        }
        let answer = cluster.peer(node)?.forward(request).await?.into_inner();
        let response = Resp::decode(answer.response.as_slice()).map_err(|e| {
            Status::internal(format!(
                "node {} sent an undecodable answer: {e}",
                node.name
            ))
        })?;
        Ok(Response::new(response))
    }
}
