//! The workflow task's commands, one module per command group, each with its checks beside its
//! application: `activity`, `timer`, `marker`, `properties` (search attributes, memo), `close`
//! (complete, fail, cancel, continue as new); the commands to other workflows and to children
//! are checked and applied in `state::external` and `state::children`, with the rest of those
//! protocols. This module dispatches: all commands of a completion are checked before any is
//! applied, so a bad command fails the task without a partial write.
use super::*;

mod activity;
mod close;
mod marker;
mod properties;
mod sizes;
mod timer;

pub(crate) use sizes::cause_name;

pub(super) use temporalio_protos::temporal::api::command::v1 as cmd;
pub(super) use temporalio_protos::temporal::api::enums::v1::WorkflowTaskFailedCause as C;

/// Why a command fails its workflow task: the cause and the message the worker is told.
pub(super) type Refusal = (WorkflowTaskFailedCause, String);

/// What refusing a completion's commands does to the run.
pub(crate) enum Rejection {
    /// The workflow task fails and is retried.
    FailTask(Refusal),
    /// A payload is past its size limit: the run is terminated.
    Terminate(Refusal),
}

/// What the commands of one completion add up to, as they are checked in order: ids taken by
/// earlier commands of the same task, and the pending counts the limits apply to.
pub(super) struct Budget {
    pub(super) new_activity_ids: Vec<String>,
    pub(super) new_timer_ids: Vec<String>,
    pub(super) pending_activities: usize,
    pub(super) children: usize,
    pub(super) signals: usize,
    pub(super) cancels: usize,
}

/// Past a limit (0: no limit).
pub(super) fn over(n: usize, max: usize) -> bool {
    max > 0 && n > max
}

impl Transition<'_> {
    /// Checks every command of a completion, in order, against the run and each other, then
    /// the sizes of its update messages. A bad command fails the task; a payload past its size
    /// limit terminates the run.
    pub(super) fn validate_completion(
        &self,
        commands: &[Command],
        messages: &[temporalio_protos::temporal::api::protocol::v1::Message],
    ) -> Result<(), Rejection> {
        let signals = self
            .ms
            .external_requests
            .iter()
            .filter(|r| !r.cancel)
            .count();
        let mut budget = Budget {
            new_activity_ids: Vec::new(),
            new_timer_ids: Vec::new(),
            pending_activities: self.ms.activities.len(),
            children: self.ms.children.len(),
            signals,
            cancels: self.ms.external_requests.len() - signals,
        };
        for cmd in commands {
            self.check_command(cmd, &mut budget)
                .map_err(Rejection::FailTask)?;
            if let Some(refusal) = self.oversize(cmd) {
                return Err(Rejection::Terminate(refusal));
            }
        }
        match self.oversize_message(messages) {
            Some(refusal) => Err(Rejection::Terminate(refusal)),
            None => Ok(()),
        }
    }

    /// Checks one command against the run and the commands before it (`budget`).
    fn check_command(&self, cmd: &Command, budget: &mut Budget) -> Result<(), Refusal> {
        let Some(attrs) = &cmd.attributes else {
            return Err((C::BadBinary, "command has no attributes".into()));
        };
        match attrs {
            command::Attributes::ScheduleActivityTaskCommandAttributes(a) => {
                self.check_schedule_activity_task(a, budget)?
            }
            command::Attributes::RequestCancelActivityTaskCommandAttributes(a) => {
                self.check_request_cancel_activity_task(a, budget)?
            }
            command::Attributes::StartTimerCommandAttributes(a) => {
                self.check_start_timer(a, budget)?
            }
            command::Attributes::CancelTimerCommandAttributes(a) => {
                self.check_cancel_timer(a, budget)?
            }
            command::Attributes::RecordMarkerCommandAttributes(a) => {
                self.check_record_marker(a, budget)?
            }
            command::Attributes::UpsertWorkflowSearchAttributesCommandAttributes(a) => {
                self.check_upsert_workflow_search_attributes(a, budget)?
            }
            command::Attributes::ModifyWorkflowPropertiesCommandAttributes(a) => {
                self.check_modify_workflow_properties(a, budget)?
            }
            command::Attributes::SignalExternalWorkflowExecutionCommandAttributes(a) => {
                self.check_signal_external_workflow_execution(a, budget)?
            }
            command::Attributes::RequestCancelExternalWorkflowExecutionCommandAttributes(a) => {
                self.check_request_cancel_external_workflow_execution(a, budget)?
            }
            command::Attributes::StartChildWorkflowExecutionCommandAttributes(a) => {
                self.check_start_child_workflow_execution(a, budget)?
            }
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(_)
            | command::Attributes::FailWorkflowExecutionCommandAttributes(_)
            | command::Attributes::CancelWorkflowExecutionCommandAttributes(_)
            | command::Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(_)
            | command::Attributes::ProtocolMessageCommandAttributes(_) => {}
            _ => {
                return Err((
                    C::BadBinary,
                    format!(
                        "command {:?} is not supported by this server yet",
                        cmd.command_type()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Applies one checked command; true when it needs a new workflow task.
    pub(super) fn apply_command(
        &mut self,
        cmd: &Command,
        completed_id: i64,
        identity: &str,
    ) -> bool {
        let first = self.events.len();
        let needs_task = self.apply_command_attributes(cmd, completed_id, identity);
        // The event the command made carries its summary and details, as in the reference.
        if let (Some(metadata), Some(made)) = (&cmd.user_metadata, self.events.get_mut(first)) {
            made.user_metadata = Some(metadata.clone());
            // A child starts with them too.
            let initiated = made.event_id;
            if let Some(child) = self
                .ms
                .children
                .iter_mut()
                .find(|c| c.initiated_event_id == initiated)
            {
                child.user_metadata = Some(metadata.clone());
            }
        }
        needs_task
    }

    fn apply_command_attributes(
        &mut self,
        cmd: &Command,
        completed_id: i64,
        identity: &str,
    ) -> bool {
        let Some(attrs) = &cmd.attributes else {
            return false;
        };
        match attrs {
            command::Attributes::ScheduleActivityTaskCommandAttributes(a) => {
                self.schedule_activity_task(a, completed_id)
            }
            command::Attributes::RequestCancelActivityTaskCommandAttributes(a) => {
                self.request_cancel_activity_task(a, completed_id, identity)
            }
            command::Attributes::StartTimerCommandAttributes(a) => {
                self.start_timer(a, completed_id, identity)
            }
            command::Attributes::CancelTimerCommandAttributes(a) => {
                self.cancel_timer(a, completed_id, identity)
            }
            command::Attributes::RecordMarkerCommandAttributes(a) => {
                self.record_marker(a, completed_id, identity)
            }
            command::Attributes::UpsertWorkflowSearchAttributesCommandAttributes(a) => {
                self.upsert_workflow_search_attributes(a, completed_id, identity)
            }
            command::Attributes::ModifyWorkflowPropertiesCommandAttributes(a) => {
                self.modify_workflow_properties(a, completed_id, identity)
            }
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(a) => {
                self.complete_workflow_execution(a, completed_id, identity)
            }
            command::Attributes::FailWorkflowExecutionCommandAttributes(a) => {
                self.fail_workflow_execution(a, completed_id, identity)
            }
            command::Attributes::CancelWorkflowExecutionCommandAttributes(a) => {
                self.cancel_workflow_execution(a, completed_id, identity)
            }
            command::Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(a) => {
                self.continue_as_new_workflow_execution(a, completed_id, identity)
            }
            command::Attributes::SignalExternalWorkflowExecutionCommandAttributes(a) => {
                self.signal_external_workflow_execution(a, completed_id, identity)
            }
            command::Attributes::RequestCancelExternalWorkflowExecutionCommandAttributes(a) => {
                self.request_cancel_external_workflow_execution(a, completed_id, identity)
            }
            command::Attributes::StartChildWorkflowExecutionCommandAttributes(a) => {
                self.start_child_workflow_execution(a, completed_id, identity)
            }
            // ProtocolMessage commands position update messages (applied where they stand).
            _ => false,
        }
    }
}
