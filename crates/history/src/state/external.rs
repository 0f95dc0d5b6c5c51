//! Signals and cancel requests a workflow sends to other workflows. The command writes the
//! Initiated event and a transfer task; history delivers it to the target (a transaction of
//! the target's own) and then records the result on the sender: Signaled / CancelRequested, or
//! Failed with EXTERNAL_WORKFLOW_EXECUTION_NOT_FOUND.
use super::commands::{Budget, C, Refusal, cmd, over};
use cmd::{
    RequestCancelExternalWorkflowExecutionCommandAttributes,
    SignalExternalWorkflowExecutionCommandAttributes,
};
use temporalio_protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_protos::temporal::api::enums::v1::{
    CancelExternalWorkflowExecutionFailedCause, EventType,
    SignalExternalWorkflowExecutionFailedCause,
};
use temporalio_protos::temporal::api::history::v1 as hist;

use super::{ExternalRequest, StateError, TransferData, TransferKind, Transition, closed, event};

impl Transition<'_> {
    pub(super) fn signal_external(
        &mut self,
        a: &SignalExternalWorkflowExecutionCommandAttributes,
        completed_id: i64,
    ) {
        let target = a.execution.clone().unwrap_or_default();
        let namespace = self.target_namespace(&a.namespace);
        let id = self.append(event(
            EventType::SignalExternalWorkflowExecutionInitiated,
            hist::SignalExternalWorkflowExecutionInitiatedEventAttributes {
                workflow_task_completed_event_id: completed_id,
                namespace: namespace.clone(),
                workflow_execution: Some(target.clone()),
                signal_name: a.signal_name.clone(),
                input: a.input.clone(),
                control: a.control.clone(),
                child_workflow_only: a.child_workflow_only,
                header: a.header.clone(),
                ..Default::default()
            },
        ));
        self.external_request(ExternalRequest {
            initiated_event_id: id,
            cancel: false,
            namespace,
            workflow_id: target.workflow_id,
            run_id: target.run_id,
            signal_name: a.signal_name.clone(),
            input: a.input.clone(),
            header: a.header.clone(),
            control: a.control.clone(),
            ..Default::default()
        });
    }

    pub(super) fn cancel_external(
        &mut self,
        a: &RequestCancelExternalWorkflowExecutionCommandAttributes,
        completed_id: i64,
    ) {
        let namespace = self.target_namespace(&a.namespace);
        let id = self.append(event(
            EventType::RequestCancelExternalWorkflowExecutionInitiated,
            hist::RequestCancelExternalWorkflowExecutionInitiatedEventAttributes {
                workflow_task_completed_event_id: completed_id,
                namespace: namespace.clone(),
                workflow_execution: Some(WorkflowExecution {
                    workflow_id: a.workflow_id.clone(),
                    run_id: a.run_id.clone(),
                }),
                control: a.control.clone(),
                child_workflow_only: a.child_workflow_only,
                reason: a.reason.clone(),
                ..Default::default()
            },
        ));
        self.external_request(ExternalRequest {
            initiated_event_id: id,
            cancel: true,
            namespace,
            workflow_id: a.workflow_id.clone(),
            run_id: a.run_id.clone(),
            control: a.control.clone(),
            reason: a.reason.clone(),
            ..Default::default()
        });
    }

    fn target_namespace(&self, asked: &str) -> String {
        if asked.is_empty() {
            self.ms.namespace.clone()
        } else {
            asked.to_string()
        }
    }

    fn external_request(&mut self, mut request: ExternalRequest) {
        request.transfer_task_id = self.transfer(TransferData {
            kind: TransferKind::External as i32,
            scheduled_event_id: request.initiated_event_id,
            ..Default::default()
        });
        self.ms.external_requests.push(request);
    }

    /// Records how delivering an external request ended (`delivered` false: the target does
    /// not exist or is closed, or `limit_reached`: the target took all the signals it may).
    /// Unknown ids (already recorded) are NotFound.
    pub fn external_request_done(
        &mut self,
        initiated_event_id: i64,
        delivered: bool,
        limit_reached: bool,
    ) -> Result<(), StateError> {
        let pos = self
            .ms
            .external_requests
            .iter()
            .position(|r| r.initiated_event_id == initiated_event_id)
            .ok_or_else(|| StateError::NotFound("external request not found".into()))?;
        let r = self.ms.external_requests.remove(pos);
        self.transfers_done.push(r.transfer_task_id);
        if closed(self.ms.status) {
            return Ok(());
        }
        let execution = Some(WorkflowExecution {
            workflow_id: r.workflow_id.clone(),
            run_id: r.run_id.clone(),
        });
        let ev = match (r.cancel, delivered) {
            (false, true) => event(
                EventType::ExternalWorkflowExecutionSignaled,
                hist::ExternalWorkflowExecutionSignaledEventAttributes {
                    initiated_event_id,
                    namespace: r.namespace,
                    workflow_execution: execution,
                    control: r.control,
                    ..Default::default()
                },
            ),
            (false, false) => event(
                EventType::SignalExternalWorkflowExecutionFailed,
                hist::SignalExternalWorkflowExecutionFailedEventAttributes {
                    cause: if limit_reached {
                        SignalExternalWorkflowExecutionFailedCause::SignalCountLimitExceeded as i32
                    } else {
                        SignalExternalWorkflowExecutionFailedCause::ExternalWorkflowExecutionNotFound
                            as i32
                    },
                    initiated_event_id,
                    namespace: r.namespace,
                    workflow_execution: execution,
                    control: r.control,
                    ..Default::default()
                },
            ),
            (true, true) => event(
                EventType::ExternalWorkflowExecutionCancelRequested,
                hist::ExternalWorkflowExecutionCancelRequestedEventAttributes {
                    initiated_event_id,
                    namespace: r.namespace,
                    workflow_execution: execution,
                    ..Default::default()
                },
            ),
            (true, false) => event(
                EventType::RequestCancelExternalWorkflowExecutionFailed,
                hist::RequestCancelExternalWorkflowExecutionFailedEventAttributes {
                    cause: CancelExternalWorkflowExecutionFailedCause::ExternalWorkflowExecutionNotFound
                        as i32,
                    initiated_event_id,
                    namespace: r.namespace,
                    workflow_execution: execution,
                    control: r.control,
                    ..Default::default()
                },
            ),
        };
        self.add_external(ev);
        Ok(())
    }
}

// The command's checks, beside its application above.
impl Transition<'_> {
    /// Checks a signal external workflow execution command.
    pub(in crate::state) fn check_signal_external_workflow_execution(
        &self,
        _: &cmd::SignalExternalWorkflowExecutionCommandAttributes,
        budget: &mut Budget,
    ) -> Result<(), Refusal> {
        budget.signals += 1;
        if over(budget.signals, self.env.max_pending_signals) {
            return Err((
                C::PendingSignalsLimitExceeded,
                "the number of pending signals to external workflows exceeds the limit".into(),
            ));
        }
        Ok(())
    }

    /// Applies a signal external workflow execution command; true when it needs a new workflow task.
    pub(in crate::state) fn signal_external_workflow_execution(
        &mut self,
        a: &cmd::SignalExternalWorkflowExecutionCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        self.signal_external(a, completed_id);
        false
    }

    /// Checks a request cancel external workflow execution command.
    pub(in crate::state) fn check_request_cancel_external_workflow_execution(
        &self,
        _: &cmd::RequestCancelExternalWorkflowExecutionCommandAttributes,
        budget: &mut Budget,
    ) -> Result<(), Refusal> {
        budget.cancels += 1;
        if over(budget.cancels, self.env.max_pending_cancels) {
            return Err((
                C::PendingRequestCancelLimitExceeded,
                "the number of pending requests to cancel external workflows exceeds the limit"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Applies a request cancel external workflow execution command; true when it needs a new workflow task.
    pub(in crate::state) fn request_cancel_external_workflow_execution(
        &mut self,
        a: &cmd::RequestCancelExternalWorkflowExecutionCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        self.cancel_external(a, completed_id);
        false
    }
}
