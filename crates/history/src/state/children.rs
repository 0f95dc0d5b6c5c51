//! Child workflows, seen from the parent. The command writes the Initiated event and a
//! transfer task; history starts the child (a transaction of the child's own) and records
//! Started or StartFailed here. When the child's chain ends, its close transfer task reports
//! the close here as a ChildWorkflowExecution{Completed,Failed,Canceled,TimedOut,Terminated}
//! event. When this run closes, its own close task applies each pending child's parent close
//! policy.
use super::commands::{Budget, C, Refusal, cmd, over};
use super::retry;
use kairos_core::time::is_negative;
use std::time::Duration;

use cmd::StartChildWorkflowExecutionCommandAttributes;
use kairos_core::time::{from_pb_duration, to_pb_duration_explicit};
use temporalio_protos::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use temporalio_protos::temporal::api::enums::v1::{
    EventType, ParentClosePolicy, StartChildWorkflowExecutionFailedCause,
};
use temporalio_protos::temporal::api::history::v1::{self as hist, HistoryEvent, history_event};
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;

use super::{
    BUFFERED_EVENT_ID, ChildInfo, StateError, TransferData, TransferKind, Transition, closed, event,
};

/// How a child's start attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ChildStart {
    /// Started (or found already started by this same request): the child's first run id.
    Started { run_id: String },
    /// Not started, for this reason.
    Failed(StartChildWorkflowExecutionFailedCause),
}

impl Transition<'_> {
    pub(super) fn start_child(
        &mut self,
        a: &StartChildWorkflowExecutionCommandAttributes,
        completed_id: i64,
    ) {
        let mut a = a.clone();
        if a.namespace.is_empty() {
            a.namespace = self.ms.namespace.clone();
        }
        if a.task_queue.as_ref().is_none_or(|q| q.name.is_empty()) {
            a.task_queue = Some(TaskQueue {
                name: self.ms.task_queue.clone(),
                ..Default::default()
            });
        }
        // Recorded as the reference records them: the run timeout stated (zero included), the
        // task timeout defaulted and capped.
        let run = from_pb_duration(a.workflow_run_timeout.as_ref());
        let execution = from_pb_duration(a.workflow_execution_timeout.as_ref());
        let run = if run.is_zero() || (!execution.is_zero() && run > execution) {
            execution
        } else {
            run
        };
        let mut task = from_pb_duration(a.workflow_task_timeout.as_ref());
        if task.is_zero() {
            task = Duration::from_secs(10);
        }
        task = task.min(Duration::from_secs(120));
        if !run.is_zero() {
            task = task.min(run);
        }
        a.workflow_run_timeout = Some(to_pb_duration_explicit(run));
        a.workflow_task_timeout = Some(to_pb_duration_explicit(task));
        if a.parent_close_policy == ParentClosePolicy::Unspecified as i32 {
            a.parent_close_policy = ParentClosePolicy::Terminate as i32;
        }
        let id = self.append(event(
            EventType::StartChildWorkflowExecutionInitiated,
            hist::StartChildWorkflowExecutionInitiatedEventAttributes {
                namespace: a.namespace.clone(),
                namespace_id: if a.namespace == self.ms.namespace {
                    self.ms.namespace_id.clone()
                } else {
                    String::new()
                },
                workflow_id: a.workflow_id.clone(),
                workflow_type: a.workflow_type.clone(),
                task_queue: a.task_queue.clone(),
                input: a.input.clone(),
                workflow_execution_timeout: a.workflow_execution_timeout,
                workflow_run_timeout: a.workflow_run_timeout,
                workflow_task_timeout: a.workflow_task_timeout,
                parent_close_policy: a.parent_close_policy,
                control: a.control.clone(),
                workflow_task_completed_event_id: completed_id,
                workflow_id_reuse_policy: a.workflow_id_reuse_policy,
                retry_policy: a.retry_policy.clone(),
                cron_schedule: a.cron_schedule.clone(),
                header: a.header.clone(),
                memo: a.memo.clone(),
                search_attributes: a.search_attributes.clone(),
                priority: a.priority.clone(),
                ..Default::default()
            },
        ));
        let transfer_task_id = self.transfer(TransferData {
            kind: TransferKind::StartChild as i32,
            scheduled_event_id: id,
            ..Default::default()
        });
        self.ms.children.push(ChildInfo {
            initiated_event_id: id,
            namespace: a.namespace.clone(),
            workflow_id: a.workflow_id.clone(),
            workflow_type: a
                .workflow_type
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            parent_close_policy: a.parent_close_policy,
            transfer_task_id,
            command: Some(a),
            ..Default::default()
        });
    }

    /// Records how starting the child of `initiated_event_id` ended. Unknown ids (already
    /// recorded) and closed parents are NotFound: nothing to record.
    pub fn child_start_done(
        &mut self,
        initiated_event_id: i64,
        outcome: ChildStart,
    ) -> Result<(), StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        let pos = self
            .ms
            .children
            .iter()
            .position(|c| c.initiated_event_id == initiated_event_id && !c.started)
            .ok_or_else(|| StateError::NotFound("child workflow not found".into()))?;
        let transfer = self.ms.children[pos].transfer_task_id;
        self.transfers_done.push(transfer);
        match outcome {
            ChildStart::Started { run_id } => {
                let child = &mut self.ms.children[pos];
                child.started = true;
                child.run_id = run_id.clone();
                child.transfer_task_id = 0;
                let command = child.command.take().unwrap_or_default();
                child.user_metadata = None;
                let namespace = child.namespace.clone();
                let ev = event(
                    EventType::ChildWorkflowExecutionStarted,
                    hist::ChildWorkflowExecutionStartedEventAttributes {
                        namespace_id: self.namespace_id_of(&namespace),
                        namespace,
                        initiated_event_id,
                        workflow_execution: Some(WorkflowExecution {
                            workflow_id: command.workflow_id.clone(),
                            run_id,
                        }),
                        workflow_type: command.workflow_type.clone(),
                        header: command.header.clone(),
                    },
                );
                let id = self.add_external(ev).unwrap_or(BUFFERED_EVENT_ID);
                self.ms.children[pos].started_event_id = id;
            }
            ChildStart::Failed(cause) => {
                let child = self.ms.children.remove(pos);
                let command = child.command.unwrap_or_default();
                let namespace = child.namespace;
                let ev = event(
                    EventType::StartChildWorkflowExecutionFailed,
                    hist::StartChildWorkflowExecutionFailedEventAttributes {
                        namespace_id: self.namespace_id_of(&namespace),
                        namespace,
                        workflow_id: command.workflow_id.clone(),
                        workflow_type: command.workflow_type.clone(),
                        cause: cause as i32,
                        control: command.control.clone(),
                        initiated_event_id,
                        // The reference leaves the initiating task's event id out here.
                        workflow_task_completed_event_id: 0,
                    },
                );
                self.add_external(ev);
            }
        }
        Ok(())
    }

    /// Records that the child of `initiated_event_id` closed with `close` (the child's close
    /// event). Returns false when the child's start is not recorded yet (try again later);
    /// NotFound when the parent closed or no longer waits for that child.
    pub fn child_closed(
        &mut self,
        initiated_event_id: i64,
        child_run: WorkflowExecution,
        close: &HistoryEvent,
    ) -> Result<bool, StateError> {
        if closed(self.ms.status) {
            return Err(StateError::NotFound(
                "workflow execution already completed".into(),
            ));
        }
        let pos = self
            .ms
            .children
            .iter()
            .position(|c| c.initiated_event_id == initiated_event_id)
            .ok_or_else(|| StateError::NotFound("child workflow not found".into()))?;
        if !self.ms.children[pos].started {
            return Ok(false);
        }
        let child = self.ms.children.remove(pos);
        let namespace_id = self.namespace_id_of(&child.namespace);
        let namespace = child.namespace;
        let workflow_type = Some(WorkflowType {
            name: child.workflow_type,
        });
        let started_event_id = child.started_event_id;
        let execution = Some(child_run);
        use history_event::Attributes as A;
        let ev = match &close.attributes {
            Some(A::WorkflowExecutionCompletedEventAttributes(a)) => event(
                EventType::ChildWorkflowExecutionCompleted,
                hist::ChildWorkflowExecutionCompletedEventAttributes {
                    result: a.result.clone(),
                    namespace,
                    namespace_id,
                    workflow_execution: execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            ),
            Some(A::WorkflowExecutionFailedEventAttributes(a)) => event(
                EventType::ChildWorkflowExecutionFailed,
                hist::ChildWorkflowExecutionFailedEventAttributes {
                    failure: a.failure.clone(),
                    namespace,
                    namespace_id,
                    workflow_execution: execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                    retry_state: a.retry_state,
                },
            ),
            Some(A::WorkflowExecutionCanceledEventAttributes(a)) => event(
                EventType::ChildWorkflowExecutionCanceled,
                hist::ChildWorkflowExecutionCanceledEventAttributes {
                    details: a.details.clone(),
                    namespace,
                    namespace_id,
                    workflow_execution: execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            ),
            Some(A::WorkflowExecutionTimedOutEventAttributes(a)) => event(
                EventType::ChildWorkflowExecutionTimedOut,
                hist::ChildWorkflowExecutionTimedOutEventAttributes {
                    namespace,
                    namespace_id,
                    workflow_execution: execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                    retry_state: a.retry_state,
                },
            ),
            _ => event(
                EventType::ChildWorkflowExecutionTerminated,
                hist::ChildWorkflowExecutionTerminatedEventAttributes {
                    namespace,
                    namespace_id,
                    workflow_execution: execution,
                    workflow_type,
                    initiated_event_id,
                    started_event_id,
                },
            ),
        };
        self.add_external(ev);
        Ok(true)
    }

    fn namespace_id_of(&self, namespace: &str) -> String {
        if namespace == self.ms.namespace {
            self.ms.namespace_id.clone()
        } else {
            String::new()
        }
    }

    /// Called when the run closes: children not started yet never will be, and a close task
    /// is written when a parent waits for this run or a child's close policy must be applied.
    pub(super) fn close_children(&mut self) {
        let unstarted: Vec<i64> = self
            .ms
            .children
            .iter()
            .filter(|c| !c.started)
            .map(|c| c.transfer_task_id)
            .collect();
        self.transfers_done.extend(unstarted);
        self.ms.children.retain(|c| c.started);
        let policy_applies = self
            .ms
            .children
            .iter()
            .any(|c| c.parent_close_policy != ParentClosePolicy::Abandon as i32);
        if self.ms.parent.is_some() || policy_applies {
            self.transfer(TransferData {
                kind: TransferKind::CloseExecution as i32,
                ..Default::default()
            });
        }
    }
}

// The command's checks, beside its application above.
impl Transition<'_> {
    /// Checks a start child workflow execution command.
    pub(in crate::state) fn check_start_child_workflow_execution(
        &self,
        a: &cmd::StartChildWorkflowExecutionCommandAttributes,
        budget: &mut Budget,
    ) -> Result<(), Refusal> {
        budget.children += 1;
        if over(budget.children, self.env.max_pending_children) {
            return Err((
                C::PendingChildWorkflowsLimitExceeded,
                "the number of pending child workflows exceeds the limit".into(),
            ));
        }
        let bad = |m: &str| Err((C::BadStartChildExecutionAttributes, m.to_string()));
        if a.workflow_id.is_empty() {
            return bad("Required field WorkflowId is not set on command.");
        }
        if a.workflow_type.as_ref().is_none_or(|t| t.name.is_empty()) {
            return bad("Required field WorkflowType is not set on command.");
        }
        // As the frontend refuses them in a start: no store keeps a NUL in an id.
        let queue = a.task_queue.as_ref().map_or("", |q| q.name.as_str());
        let type_name = a.workflow_type.as_ref().map_or("", |t| t.name.as_str());
        if [
            a.workflow_id.as_str(),
            type_name,
            queue,
            a.namespace.as_str(),
        ]
        .iter()
        .any(|s| s.contains('\0'))
        {
            return bad("An id or name of the child contains a NUL character.");
        }
        if is_negative(a.workflow_execution_timeout.as_ref())
            || is_negative(a.workflow_run_timeout.as_ref())
            || is_negative(a.workflow_task_timeout.as_ref())
        {
            return bad("A valid timeout may not be negative.");
        }
        if let Some(policy) = &a.retry_policy
            && let Err(m) = retry::validate(policy)
        {
            return bad(&m);
        }
        if !a.cron_schedule.is_empty()
            && let Err(m) = crate::cron::CronSchedule::parse(&a.cron_schedule)
        {
            return bad(&format!("Invalid CronSchedule: {m}"));
        }
        Ok(())
    }

    /// Applies a start child workflow execution command; true when it needs a new workflow task.
    pub(in crate::state) fn start_child_workflow_execution(
        &mut self,
        a: &cmd::StartChildWorkflowExecutionCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        self.start_child(a, completed_id);
        false
    }
}
