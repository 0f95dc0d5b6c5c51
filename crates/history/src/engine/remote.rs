//! What one run does to another (a signal or cancel request it sends, a child it starts, its
//! close reported to its parent, its parent close policy applied to a child) as a message,
//! `RunOp`, carried out in the target run's own transaction by whoever holds the target's
//! shard: this engine, or, in a cluster, another node (`RemoteRuns`, which sends the message
//! there; that node calls `Engine::run_op_here`).
use std::sync::Arc;

use async_trait::async_trait;
use temporalio_protos::temporal::api::common::v1::{Header, Payloads, WorkflowExecution};
use temporalio_protos::temporal::api::history::v1::HistoryEvent;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;

use super::Engine;
use crate::error::{Error, Result};
use crate::state::{ParentInfo, Signal};

/// One operation on a run (the target), as sent between nodes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunOp {
    #[prost(string, tag = "1")]
    pub namespace_id: String,
    #[prost(string, tag = "2")]
    pub workflow_id: String,
    /// Empty for a child to start.
    #[prost(string, tag = "3")]
    pub run_id: String,
    #[prost(oneof = "Op", tags = "4, 5, 6, 7, 8")]
    pub op: Option<Op>,
}

/// The operations.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    /// A signal from another workflow.
    #[prost(message, tag = "4")]
    Signal(SignalOp),
    /// A cancel request from another workflow (or its parent's close policy).
    #[prost(message, tag = "5")]
    Cancel(CancelOp),
    /// Termination by the parent's close policy.
    #[prost(message, tag = "6")]
    Terminate(TerminateOp),
    /// A child's close, reported to its parent.
    #[prost(message, boxed, tag = "7")]
    ChildClosed(Box<ChildClosedOp>),
    /// A child to start for its parent.
    #[prost(message, boxed, tag = "8")]
    StartChild(Box<StartChildOp>),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignalOp {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub input: Option<Payloads>,
    #[prost(message, optional, tag = "3")]
    pub header: Option<Header>,
    #[prost(string, tag = "4")]
    pub identity: String,
    #[prost(string, tag = "5")]
    pub request_id: String,
    #[prost(message, optional, tag = "6")]
    pub sender: Option<WorkflowExecution>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CancelOp {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(string, tag = "2")]
    pub identity: String,
    #[prost(string, tag = "3")]
    pub request_id: String,
    /// The requesting workflow and its initiated event (0 for a close policy).
    #[prost(message, optional, tag = "4")]
    pub sender: Option<WorkflowExecution>,
    #[prost(int64, tag = "5")]
    pub initiated: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TerminateOp {
    #[prost(string, tag = "1")]
    pub reason: String,
    #[prost(string, tag = "2")]
    pub identity: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChildClosedOp {
    #[prost(int64, tag = "1")]
    pub initiated: i64,
    #[prost(message, optional, tag = "2")]
    pub child: Option<WorkflowExecution>,
    #[prost(message, optional, tag = "3")]
    pub close: Option<HistoryEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StartChildOp {
    #[prost(message, optional, tag = "1")]
    pub request: Option<ws::StartWorkflowExecutionRequest>,
    #[prost(message, optional, tag = "2")]
    pub parent: Option<ParentInfo>,
    #[prost(message, optional, tag = "3")]
    pub root: Option<WorkflowExecution>,
}

/// How a `RunOp` ended, as sent between nodes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunOpOutcome {
    /// 0 done; 1 not found; 2 already started; 3 invalid; 4 unavailable (try again).
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    /// The child's run (started, or already holding the id).
    #[prost(string, tag = "3")]
    pub run_id: String,
    /// ChildClosed: whether the parent recorded it.
    #[prost(bool, tag = "4")]
    pub recorded: bool,
}

impl RunOpOutcome {
    fn of(result: Result<(String, bool)>) -> Self {
        let (code, message, run_id, recorded) = match result {
            Ok((run_id, recorded)) => (0, String::new(), run_id, recorded),
            Err(Error::NotFound(m)) => (1, m, String::new(), false),
            Err(Error::AlreadyStarted {
                message, run_id, ..
            }) => (2, message, run_id, false),
            Err(Error::Invalid(m)) => (3, m, String::new(), false),
            Err(other) => (4, other.to_string(), String::new(), false),
        };
        Self {
            code,
            message,
            run_id,
            recorded,
        }
    }

    /// Back to what the local call would have returned: the child's run id and the
    /// recorded flag.
    pub fn into_result(self) -> Result<(String, bool)> {
        match self.code {
            0 => Ok((self.run_id, self.recorded)),
            1 => Err(Error::NotFound(self.message)),
            2 => Err(Error::AlreadyStarted {
                message: self.message,
                start_request_id: String::new(),
                run_id: self.run_id,
            }),
            3 => Err(Error::Invalid(self.message)),
            _ => Err(Error::Unavailable(self.message)),
        }
    }
}

/// The way to runs this engine does not hold (a cluster's other nodes).
#[async_trait]
pub trait RemoteRuns: Send + Sync + 'static {
    /// Whether another node serves the workflow id's runs now.
    fn elsewhere(&self, namespace_id: &str, workflow_id: &str) -> bool;
    /// Carries `op` out on the node that holds its target.
    async fn send(&self, op: &RunOp) -> Result<RunOpOutcome>;
}

impl RunOp {
    pub(super) fn on(target: &kairos_core::ids::RunKey, op: Op) -> Self {
        Self {
            namespace_id: target.namespace_id.clone(),
            workflow_id: target.workflow_id.clone(),
            run_id: target.run_id.clone(),
            op: Some(op),
        }
    }
}

impl Engine {
    /// Sets the way to runs held elsewhere (once, by a node of a cluster as it starts).
    pub fn set_remote(&self, remote: Arc<dyn RemoteRuns>) {
        let _ = self.inner.remote.set(remote);
    }

    /// Carries `op` out where its target is held: here, or on another node.
    pub(super) async fn run_op(&self, op: RunOp) -> Result<(String, bool)> {
        if let Some(remote) = self.inner.remote.get()
            && remote.elsewhere(&op.namespace_id, &op.workflow_id)
        {
            return remote.send(&op).await?.into_result();
        }
        self.run_op_here(op).await.into_result()
    }

    /// Carries `op` out on a run this engine holds (`ShardOwnershipLost`, as unavailable,
    /// when it does not).
    pub async fn run_op_here(&self, op: RunOp) -> RunOpOutcome {
        RunOpOutcome::of(self.apply_op(op).await)
    }

    async fn apply_op(&self, op: RunOp) -> Result<(String, bool)> {
        let key = kairos_core::ids::RunKey {
            namespace_id: op.namespace_id,
            workflow_id: op.workflow_id,
            run_id: op.run_id,
        };
        let none = || (String::new(), false);
        match op.op {
            None => Err(Error::Invalid("no operation".into())),
            Some(Op::Signal(s)) => {
                let signal = Signal {
                    name: s.name,
                    input: s.input,
                    identity: s.identity,
                    header: s.header,
                    request_id: s.request_id,
                    external: s.sender,
                };
                self.transact(&key, None, |t| t.signal(signal))
                    .await
                    .map(|()| none())
            }
            Some(Op::Cancel(c)) => self
                .transact(&key, None, |t| {
                    t.cancel_source = c.sender.map(|sender| (sender, c.initiated));
                    t.request_cancel(&c.reason, &c.identity, &c.request_id)
                })
                .await
                .map(|()| none()),
            Some(Op::Terminate(x)) => self
                .transact(&key, None, |t| t.terminate(&x.reason, None, &x.identity))
                .await
                .map(|()| none()),
            Some(Op::ChildClosed(c)) => {
                let c = *c;
                let close = c.close.unwrap_or_default();
                let child = c.child.unwrap_or_default();
                self.transact(&key, None, |t| t.child_closed(c.initiated, child, &close))
                    .await
                    .map(|recorded| (String::new(), recorded))
            }
            Some(Op::StartChild(s)) => {
                let s = *s;
                let ns = self
                    .inner
                    .namespaces
                    .get_by_id(&key.namespace_id)
                    .ok_or_else(|| Error::NamespaceNotFound(key.namespace_id.clone()))?;
                let request = s.request.unwrap_or_default();
                let parent = s.parent.unwrap_or_default();
                let root = s.root.unwrap_or_default();
                self.start_workflow_with(&ns, &request, None, None, Some((parent, root)))
                    .await
                    .map(|out| (out.run_id, false))
            }
        }
    }
}
