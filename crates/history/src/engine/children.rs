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
                match self
                    .start_workflow_with(&ns, &req, None, None, Some((info, root)))
                    .await
                {
                    Ok(out) => ChildStart::Started { run_id: out.run_id },
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
        match self
            .transact(parent, None, |t| t.child_start_done(initiated, outcome))
            .await
        {
            Ok(()) | Err(Error::NotFound(_)) => Delivery::Done,
            Err(e) => {
                tracing::warn!(run = %parent, error = %e, "failed to record a child start; retrying");
                Delivery::Retry
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
        if let Some(parent) = &ms.parent {
            let close = match self
                .read_events(&run.run_id, ms.close_event_id, ms.close_event_id)
                .await
            {
                Ok(mut events) if !events.is_empty() => events.remove(0),
                Ok(_) => return Delivery::DropTask,
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "failed to read a close event; retrying");
                    return Delivery::Retry;
                }
            };
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
            if !continues {
                let parent_key = RunKey {
                    namespace_id: parent.namespace_id.clone(),
                    workflow_id: parent.workflow_id.clone(),
                    run_id: parent.run_id.clone(),
                };
                let child_run = WorkflowExecution {
                    workflow_id: run.workflow_id.clone(),
                    run_id: run.run_id.clone(),
                };
                let initiated = parent.initiated_event_id;
                match self
                    .transact(&parent_key, None, |t| {
                        t.child_closed(initiated, child_run, &close)
                    })
                    .await
                {
                    Ok(true) | Err(Error::NotFound(_)) => {}
                    // The parent has not recorded the child's start yet.
                    Ok(false) => return Delivery::Retry,
                    Err(e) => {
                        tracing::warn!(run = %run, error = %e, "failed to report a child's close to its parent; retrying");
                        return Delivery::Retry;
                    }
                }
            }
        }
        for child in &ms.children {
            let policy = ParentClosePolicy::try_from(child.parent_close_policy)
                .unwrap_or(ParentClosePolicy::Terminate);
            if policy == ParentClosePolicy::Abandon {
                continue;
            }
            let Ok(ns) = self.inner.namespaces.get(&child.namespace) else {
                continue;
            };
            let key = match self.resolve_run(&ns, &child.workflow_id, "").await {
                Ok(key) => key,
                Err(Error::NotFound(_)) => continue,
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "failed to find a child for its parent close policy; retrying");
                    return Delivery::Retry;
                }
            };
            match self.read_state(&key).await {
                Ok(c)
                    if c.first_execution_run_id == child.run_id
                        && c.status == WorkflowExecutionStatus::Running as i32 => {}
                Ok(_) | Err(Error::NotFound(_)) => continue,
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "failed to read a child for its parent close policy; retrying");
                    return Delivery::Retry;
                }
            }
            let request_id = format!("{}:close:{}", run.run_id, child.initiated_event_id);
            let result = if policy == ParentClosePolicy::RequestCancel {
                // As the reference writes it: no cause, the parent as the requester.
                let parent = WorkflowExecution {
                    workflow_id: run.workflow_id.clone(),
                    run_id: run.run_id.clone(),
                };
                self.transact(&key, None, |t| {
                    t.cancel_source = Some((parent, 0));
                    t.request_cancel("", HISTORY_IDENTITY, &request_id)
                })
                .await
            } else {
                self.transact(&key, None, |t| {
                    t.terminate(CLOSE_POLICY_REASON, None, HISTORY_IDENTITY)
                })
                .await
            };
            match result {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "failed to apply a parent close policy; retrying");
                    return Delivery::Retry;
                }
            }
        }
        Delivery::DropTask
    }
}
