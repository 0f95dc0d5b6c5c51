//! The history-handled transfer tasks of child workflows: starting a child for its parent, and,
//! after a run closes, reporting the close to its parent and applying its parent close policy
//! to its own children. Each step is a transaction on one run; a retried step finds its work
//! already recorded and does nothing twice.
use kairos_core::ids::RunKey;
use temporalio_protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_protos::temporal::api::enums::v1::{
    ParentClosePolicy, StartChildWorkflowExecutionFailedCause, WorkflowExecutionStatus,
};
use temporalio_protos::temporal::api::history::v1::history_event::Attributes as A;
use temporalio_protos::temporal::api::workflowservice::v1 as ws;

use super::remote::{CancelOp, ChildClosedOp, Op, RunOp, StartChildOp, TerminateOp};
use super::{Delivery, Engine};
use crate::error::Error;
use crate::state::{ChildStart, ParentInfo, is_closed};

/// Reason and identity of what a parent close policy does to a child, as the reference writes.
const CLOSE_POLICY_REASON: &str = "by parent close policy";
const HISTORY_IDENTITY: &str = "history-service";

impl Engine {
    /// Starts the child a parent's StartChildWorkflowExecutionInitiated event asked for, then
    /// records Started or StartFailed on the parent. The child's start request id names the
    /// parent's run and event, so a retry finds the child it already started.
    pub(super) async fn start_child(&self, parent: &RunKey, initiated: i64) -> Delivery {
        let ms = match self.read_state(parent).await {
            Ok(ms) => ms,
            Err(Error::NotFound(_)) => return Delivery::DropTask,
            Err(e) => {
                tracing::warn!(run = %parent, error = %e, "failed to read a run starting a child; retrying");
                return Delivery::Retry;
            }
        };
        if is_closed(ms.status) {
            return Delivery::DropTask;
        }
        let Some(child) = ms
            .children
            .iter()
            .find(|c| c.initiated_event_id == initiated && !c.started)
        else {
            return Delivery::Done;
        };
        let a = child.command.clone().unwrap_or_default();
        let user_metadata = child.user_metadata.clone();
        let policy = child.parent_close_policy;
        let namespace = child.namespace.clone();
        // Started before, by an attempt whose result was not recorded (the child may have
        // moved on to a retry or a continued run since): the same child, not a new one.
        if let Some(run_id) = self
            .started_child(parent, initiated, &namespace, &a.workflow_id)
            .await
        {
            let outcome = ChildStart::Started { run_id };
            return self
                .record_child_start(
                    parent,
                    initiated,
                    outcome,
                    policy,
                    &namespace,
                    &a.workflow_id,
                )
                .await;
        }
        let outcome = match self.inner.namespaces.get(&child.namespace) {
            Err(_) => ChildStart::Failed(StartChildWorkflowExecutionFailedCause::NamespaceNotFound),
            Ok(ns) => {
                let req = ws::StartWorkflowExecutionRequest {
                    namespace: ns.name.clone(),
                    workflow_id: a.workflow_id.clone(),
                    workflow_type: a.workflow_type.clone(),
                    task_queue: a.task_queue.clone(),
                    input: a.input.clone(),
                    workflow_execution_timeout: a.workflow_execution_timeout,
                    workflow_run_timeout: a.workflow_run_timeout,
                    workflow_task_timeout: a.workflow_task_timeout,
                    request_id: format!("{}:{}", parent.run_id, initiated),
                    workflow_id_reuse_policy: a.workflow_id_reuse_policy,
                    retry_policy: a.retry_policy.clone(),
                    cron_schedule: a.cron_schedule.clone(),
                    memo: a.memo.clone(),
                    search_attributes: a.search_attributes.clone(),
                    header: a.header.clone(),
                    priority: a.priority.clone(),
                    user_metadata,
                    ..Default::default()
                };
                let info = ParentInfo {
                    namespace_id: parent.namespace_id.clone(),
                    namespace: ms.namespace.clone(),
                    workflow_id: parent.workflow_id.clone(),
                    run_id: parent.run_id.clone(),
                    initiated_event_id: initiated,
                };
                let root = ms.root.clone().unwrap_or_else(|| WorkflowExecution {
                    workflow_id: parent.workflow_id.clone(),
                    run_id: parent.run_id.clone(),
                });
                let op = RunOp {
                    namespace_id: ns.id.clone(),
                    workflow_id: a.workflow_id.clone(),
                    run_id: String::new(),
                    op: Some(Op::StartChild(Box::new(StartChildOp {
                        request: Some(req),
                        parent: Some(info),
                        root: Some(root),
                    }))),
                };
                match self.run_op(op).await {
                    Ok((run_id, _)) => ChildStart::Started { run_id },
                    Err(Error::AlreadyStarted { .. }) => ChildStart::Failed(
                        StartChildWorkflowExecutionFailedCause::WorkflowAlreadyExists,
                    ),
                    Err(e) => {
                        tracing::warn!(run = %parent, error = %e, "failed to start a child workflow; retrying");
                        return Delivery::Retry;
                    }
                }
            }
        };
        self.record_child_start(
            parent,
            initiated,
            outcome,
            policy,
            &namespace,
            &a.workflow_id,
        )
        .await
    }

    /// The first run id of the child `parent` started for `initiated`, when the workflow id's
    /// current run belongs to it.
    async fn started_child(
        &self,
        parent: &RunKey,
        initiated: i64,
        namespace: &str,
        workflow_id: &str,
    ) -> Option<String> {
        let ns = self.inner.namespaces.get(namespace).ok()?;
        let key = self.resolve_run(&ns, workflow_id, "").await.ok()?;
        let ms = self.read_state(&key).await.ok()?;
        let p = ms.parent.as_ref()?;
        (p.run_id == parent.run_id && p.initiated_event_id == initiated)
            .then(|| ms.first_execution_run_id.clone())
    }

    /// Records a child's start on its parent. A parent that closed meanwhile (its close task
    /// found no started child to apply its policy to) applies the policy to this child now.
    async fn record_child_start(
        &self,
        parent: &RunKey,
        initiated: i64,
        outcome: ChildStart,
        policy: i32,
        namespace: &str,
        workflow_id: &str,
    ) -> Delivery {
        let started = match &outcome {
            ChildStart::Started { run_id } => Some(run_id.clone()),
            ChildStart::Failed(_) => None,
        };
        match self
            .transact(parent, None, |t| t.child_start_done(initiated, outcome))
            .await
        {
            Ok(()) => Delivery::Done,
            Err(Error::NotFound(_)) => {
                if let Some(first_run) = started {
                    let applied = self
                        .apply_close_policy(
                            parent,
                            policy,
                            namespace,
                            workflow_id,
                            &first_run,
                            initiated,
                        )
                        .await;
                    if applied.is_err() {
                        return Delivery::Retry;
                    }
                }
                Delivery::DropTask
            }
            Err(e) => {
                tracing::warn!(run = %parent, error = %e, "failed to record a child start; retrying");
                Delivery::Retry
            }
        }
    }

    /// Applies a closed parent's close policy to one of its children (whose chain started
    /// with `first_run`): terminate, or request cancellation; nothing for ABANDON or a child
    /// that is not running. `Err` for a transient failure.
    async fn apply_close_policy(
        &self,
        parent: &RunKey,
        policy: i32,
        namespace: &str,
        workflow_id: &str,
        first_run: &str,
        initiated: i64,
    ) -> Result<(), ()> {
        let policy = ParentClosePolicy::try_from(policy).unwrap_or(ParentClosePolicy::Terminate);
        if policy == ParentClosePolicy::Abandon {
            return Ok(());
        }
        let Ok(ns) = self.inner.namespaces.get(namespace) else {
            return Ok(());
        };
        let key = match self.resolve_run(&ns, workflow_id, "").await {
            Ok(key) => key,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => {
                tracing::warn!(run = %parent, error = %e, "failed to find a child for its parent close policy; retrying");
                return Err(());
            }
        };
        match self.read_state(&key).await {
            Ok(c)
                if c.first_execution_run_id == first_run
                    && c.status == WorkflowExecutionStatus::Running as i32 => {}
            Ok(_) | Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => {
                tracing::warn!(run = %parent, error = %e, "failed to read a child for its parent close policy; retrying");
                return Err(());
            }
        }
        let request_id = format!("{}:close:{}", parent.run_id, initiated);
        let result = if policy == ParentClosePolicy::RequestCancel {
            // As the reference writes it: no cause, the parent as the requester.
            let requester = WorkflowExecution {
                workflow_id: parent.workflow_id.clone(),
                run_id: parent.run_id.clone(),
            };
            let op = Op::Cancel(CancelOp {
                reason: String::new(),
                identity: HISTORY_IDENTITY.into(),
                request_id,
                sender: Some(requester),
                initiated: 0,
            });
            self.run_op(RunOp::on(&key, op)).await.map(|_| ())
        } else {
            let op = Op::Terminate(TerminateOp {
                reason: CLOSE_POLICY_REASON.into(),
                identity: HISTORY_IDENTITY.into(),
            });
            self.run_op(RunOp::on(&key, op)).await.map(|_| ())
        };
        match result {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => {
                tracing::warn!(run = %parent, error = %e, "failed to apply a parent close policy; retrying");
                Err(())
            }
        }
    }

    /// After `run` closed: reports the close to its parent (unless the chain goes on in a new
    /// run) and applies the parent close policy of each child it still waited for.
    pub(super) async fn close_execution(&self, run: &RunKey) -> Delivery {
        let ms = match self.read_state(run).await {
            Ok(ms) => ms,
            Err(Error::NotFound(_)) => return Delivery::DropTask,
            Err(e) => {
                tracing::warn!(run = %run, error = %e, "failed to read a closed run; retrying");
                return Delivery::Retry;
            }
        };
        let close = match self
            .read_events(run, ms.close_event_id, ms.close_event_id)
            .await
        {
            Ok(mut events) if !events.is_empty() => events.remove(0),
            Ok(_) => return Delivery::DropTask,
            Err(e) => {
                tracing::warn!(run = %run, error = %e, "failed to read a close event; retrying");
                return Delivery::Retry;
            }
        };
        if let Some(A::WorkflowExecutionTerminatedEventAttributes(a)) = &close.attributes
            && a.identity == super::reset::RESET_IDENTITY
        {
            // Replaced by a reset: the new run reports in its place and keeps its children.
            return Delivery::DropTask;
        }
        if let Some(parent) = &ms.parent {
            let continues = match &close.attributes {
                Some(A::WorkflowExecutionContinuedAsNewEventAttributes(_)) => true,
                Some(A::WorkflowExecutionCompletedEventAttributes(a)) => {
                    !a.new_execution_run_id.is_empty()
                }
                Some(A::WorkflowExecutionFailedEventAttributes(a)) => {
                    !a.new_execution_run_id.is_empty()
                }
                Some(A::WorkflowExecutionTimedOutEventAttributes(a)) => {
                    !a.new_execution_run_id.is_empty()
                }
                _ => false,
            };
            if !continues
                && let Delivery::Retry = self.report_to_parent(run, &ms, parent, &close).await
            {
                return Delivery::Retry;
            }
        }
        for child in &ms.children {
            let applied = self
                .apply_close_policy(
                    run,
                    child.parent_close_policy,
                    &child.namespace,
                    &child.workflow_id,
                    &child.run_id,
                    child.initiated_event_id,
                )
                .await;
            if applied.is_err() {
                return Delivery::Retry;
            }
        }
        Delivery::DropTask
    }

    /// Reports a child's close to its parent run, or, when a reset replaced that run, to the
    /// run that took its place (it kept the child).
    async fn report_to_parent(
        &self,
        run: &RunKey,
        ms: &crate::state::MutableState,
        parent: &ParentInfo,
        close: &temporalio_protos::temporal::api::history::v1::HistoryEvent,
    ) -> Delivery {
        let child_run = WorkflowExecution {
            workflow_id: run.workflow_id.clone(),
            run_id: run.run_id.clone(),
        };
        let initiated = parent.initiated_event_id;
        let mut parent_key = RunKey {
            namespace_id: parent.namespace_id.clone(),
            workflow_id: parent.workflow_id.clone(),
            run_id: parent.run_id.clone(),
        };
        // The parent, then at most a few reset successors of it.
        for _ in 0..4 {
            let op = Op::ChildClosed(Box::new(ChildClosedOp {
                initiated,
                child: Some(child_run.clone()),
                close: Some(close.clone()),
            }));
            match self.run_op(RunOp::on(&parent_key, op)).await {
                Ok((_, true)) => return Delivery::Done,
                // The parent has not recorded the child's start yet.
                Ok((_, false)) => return Delivery::Retry,
                Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "failed to report a child's close to its parent; retrying");
                    return Delivery::Retry;
                }
            }
            let Some(next) = self.parent_successor(&parent_key, ms, initiated).await else {
                return Delivery::DropTask;
            };
            parent_key = next;
        }
        Delivery::DropTask
    }

    /// The parent's current run when it is a reset of `parent_key` that still waits for the
    /// child whose chain `ms` belongs to (under the same initiated event: the reset copied it).
    async fn parent_successor(
        &self,
        parent_key: &RunKey,
        ms: &crate::state::MutableState,
        initiated: i64,
    ) -> Option<RunKey> {
        let namespace = self.inner.namespaces.get_by_id(&parent_key.namespace_id)?;
        let old = self.read_state(parent_key).await.ok()?;
        let key = self
            .resolve_run(&namespace, &parent_key.workflow_id, "")
            .await
            .ok()?;
        if key.run_id == parent_key.run_id {
            return None;
        }
        let current = self.read_state(&key).await.ok()?;
        let waits = current.first_execution_run_id == old.first_execution_run_id
            && current.children.iter().any(|c| {
                c.initiated_event_id == initiated
                    && c.started
                    && c.workflow_id == ms.workflow_id
                    && c.run_id == ms.first_execution_run_id
            });
        waits.then_some(key)
    }
}
