//! The commands that close the run: complete (and the next cron run), fail (and the next retry),
//! cancel, continue as new.
use super::*;

impl Transition<'_> {
    /// Applies a complete workflow execution command; true when it needs a new workflow task.
    pub(super) fn complete_workflow_execution(
        &mut self,
        a: &cmd::CompleteWorkflowExecutionCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        let new_run_id = self.cron_run(a.result.clone(), None);
        let id = self.append(event(
            EventType::WorkflowExecutionCompleted,
            hist::WorkflowExecutionCompletedEventAttributes {
                result: a.result.clone(),
                workflow_task_completed_event_id: completed_id,
                new_execution_run_id: new_run_id,
            },
        ));
        self.close(WorkflowExecutionStatus::Completed, id);
        false
    }

    /// Applies a fail workflow execution command; true when it needs a new workflow task.
    pub(super) fn fail_workflow_execution(
        &mut self,
        a: &cmd::FailWorkflowExecutionCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        let (retry_state, new_run_id) = self.retry_run(a.failure.as_ref());
        let id = self.append(event(
            EventType::WorkflowExecutionFailed,
            hist::WorkflowExecutionFailedEventAttributes {
                failure: a.failure.clone(),
                retry_state: retry_state as i32,
                workflow_task_completed_event_id: completed_id,
                new_execution_run_id: new_run_id,
            },
        ));
        self.close(WorkflowExecutionStatus::Failed, id);
        false
    }

    /// Applies a cancel workflow execution command; true when it needs a new workflow task.
    pub(super) fn cancel_workflow_execution(
        &mut self,
        a: &cmd::CancelWorkflowExecutionCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        let id = self.append(event(
            EventType::WorkflowExecutionCanceled,
            hist::WorkflowExecutionCanceledEventAttributes {
                workflow_task_completed_event_id: completed_id,
                details: a.details.clone(),
            },
        ));
        self.close(WorkflowExecutionStatus::Canceled, id);
        false
    }

    /// Applies a continue as new workflow execution command; true when it needs a new workflow task.
    pub(super) fn continue_as_new_workflow_execution(
        &mut self,
        a: &cmd::ContinueAsNewWorkflowExecutionCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        let mut a = a.clone();
        if a.workflow_type.as_ref().is_none_or(|t| t.name.is_empty()) {
            a.workflow_type = Some(WorkflowType {
                name: self.ms.workflow_type.clone(),
            });
        }
        if a.task_queue.as_ref().is_none_or(|q| q.name.is_empty()) {
            a.task_queue = Some(TaskQueue {
                name: self.ms.task_queue.clone(),
                kind: TaskQueueKind::Normal as i32,
                normal_name: String::new(),
            });
        }
        if dur(a.workflow_run_timeout.as_ref()).is_zero() {
            a.workflow_run_timeout = self.ms.run_timeout;
        }
        if dur(a.workflow_task_timeout.as_ref()).is_zero() {
            a.workflow_task_timeout = self.ms.wft_timeout;
        }
        if a.initiator == ContinueAsNewInitiator::Unspecified as i32 {
            a.initiator = ContinueAsNewInitiator::Workflow as i32;
        }
        let new_run_id = self.ids.new_run_id();
        let id = self.append(event(
            EventType::WorkflowExecutionContinuedAsNew,
            hist::WorkflowExecutionContinuedAsNewEventAttributes {
                new_execution_run_id: new_run_id.clone(),
                workflow_type: a.workflow_type.clone(),
                task_queue: a.task_queue.clone(),
                input: a.input.clone(),
                workflow_run_timeout: a.workflow_run_timeout,
                workflow_task_timeout: a.workflow_task_timeout,
                workflow_task_completed_event_id: completed_id,
                backoff_start_interval: a.backoff_start_interval,
                initiator: a.initiator,
                failure: a.failure.clone(),
                last_completion_result: a.last_completion_result.clone(),
                header: a.header.clone(),
                memo: a.memo.clone(),
                search_attributes: a.search_attributes.clone(),
                ..Default::default()
            },
        ));
        self.close(WorkflowExecutionStatus::ContinuedAsNew, id);
        self.continued_as_new = Some(ContinuedAsNew {
            new_run_id,
            attempt: 1,
            attributes: a,
        });
        false
    }
}
