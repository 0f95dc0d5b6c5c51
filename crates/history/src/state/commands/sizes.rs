//! Payload sizes of a completion's commands and update messages, against the namespace's blob
//! and memo limits (`limit.blobSize.*`, `limit.memoSize.*`): past a warn limit a log line, past
//! an error limit the run is terminated (`complete_wft`), with the cause and wording the
//! reference uses for each command. Sizes are protobuf-encoded sizes, as the reference measures
//! them, except where a command's entries are summed (marker details, search attributes, memo
//! upserts).
use super::*;
use prost::Message as _;
use temporalio_protos::temporal::api::common::v1::Memo;
use temporalio_protos::temporal::api::protocol::v1::Message as ProtocolMessage;

impl Transition<'_> {
    /// The first payload of `cmd` past its error limit: the cause and message the run is
    /// terminated with.
    pub(super) fn oversize(&self, cmd: &Command) -> Option<Refusal> {
        let attrs = cmd.attributes.as_ref()?;
        let blob = |size: usize, cause: C, message: &str| {
            self.blob_over(size, message)
                .then(|| (cause, message.to_string()))
        };
        let memo = |m: Option<&Memo>, cause: C, message: &str| {
            let size = m.map_or(0, |m| m.encoded_len());
            self.memo_over(size, message)
                .then(|| (cause, message.to_string()))
        };
        let payloads = |p: Option<&Payloads>| p.map_or(0, |p| p.encoded_len());
        match attrs {
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(a) => blob(
                payloads(a.result.as_ref()),
                // The reference's cause for this one, odd as it is.
                C::BadScheduleActivityAttributes,
                "CompleteWorkflowExecutionCommandAttributes.Result exceeds size limit.",
            ),
            command::Attributes::FailWorkflowExecutionCommandAttributes(a) => blob(
                a.failure.as_ref().map_or(0, |f| f.encoded_len()),
                C::BadFailWorkflowExecutionAttributes,
                "FailWorkflowExecutionCommandAttributes.Failure exceeds size limit.",
            ),
            command::Attributes::ScheduleActivityTaskCommandAttributes(a) => blob(
                payloads(a.input.as_ref()),
                C::BadScheduleActivityAttributes,
                "ScheduleActivityTaskCommandAttributes.Input exceeds size limit.",
            ),
            command::Attributes::StartChildWorkflowExecutionCommandAttributes(a) => blob(
                payloads(a.input.as_ref()),
                C::BadStartChildExecutionAttributes,
                "StartChildWorkflowExecutionCommandAttributes. Input exceeds size limit.",
            )
            .or_else(|| {
                memo(
                    a.memo.as_ref(),
                    C::BadStartChildExecutionAttributes,
                    "StartChildWorkflowExecutionCommandAttributes.Memo exceeds size limit.",
                )
            }),
            command::Attributes::SignalExternalWorkflowExecutionCommandAttributes(a) => blob(
                payloads(a.input.as_ref()),
                C::BadSignalWorkflowExecutionAttributes,
                "SignalExternalWorkflowExecutionCommandAttributes.Input exceeds size limit.",
            ),
            command::Attributes::RecordMarkerCommandAttributes(a) => blob(
                a.details
                    .iter()
                    .map(|(k, v)| k.len() + v.encoded_len())
                    .sum(),
                C::BadRecordMarkerAttributes,
                "RecordMarkerCommandAttributes.Details exceeds size limit.",
            ),
            command::Attributes::UpsertWorkflowSearchAttributesCommandAttributes(a) => blob(
                a.search_attributes.as_ref().map_or(0, |s| {
                    s.indexed_fields
                        .iter()
                        .map(|(k, v)| k.len() + v.data.len())
                        .sum()
                }),
                C::BadSearchAttributes,
                "UpsertWorkflowSearchAttributesCommandAttributes exceeds size limit.",
            ),
            command::Attributes::ModifyWorkflowPropertiesCommandAttributes(a) => {
                let upserted = a.upserted_memo.as_ref();
                blob(
                    upserted.map_or(0, |m| {
                        m.fields.iter().map(|(k, v)| k.len() + v.data.len()).sum()
                    }),
                    C::BadModifyWorkflowPropertiesAttributes,
                    "ModifyWorkflowPropertiesCommandAttributes exceeds size limit.",
                )
                .or_else(|| {
                    // The memo the run would have: its own with the upserted keys over it.
                    let mut merged = self.ms.memo.clone().unwrap_or_default();
                    for (k, v) in upserted.map(|m| &m.fields).into_iter().flatten() {
                        merged.fields.insert(k.clone(), v.clone());
                    }
                    memo(
                        Some(&merged),
                        C::BadModifyWorkflowPropertiesAttributes,
                        "ModifyWorkflowPropertiesCommandAttributes. Memo exceeds size limit.",
                    )
                })
            }
            command::Attributes::ContinueAsNewWorkflowExecutionCommandAttributes(a) => blob(
                payloads(a.input.as_ref()),
                C::BadContinueAsNewAttributes,
                "ContinueAsNewWorkflowExecutionCommandAttributes. Input exceeds size limit.",
            )
            .or_else(|| {
                memo(
                    a.memo.as_ref(),
                    C::BadContinueAsNewAttributes,
                    "ContinueAsNewWorkflowExecutionCommandAttributes. Memo exceeds size limit.",
                )
            }),
            _ => None,
        }
    }

    /// The first update message (acceptance, rejection, response) past the blob limit.
    pub(super) fn oversize_message(&self, messages: &[ProtocolMessage]) -> Option<Refusal> {
        messages.iter().find_map(|m| {
            let body = m.body.as_ref()?;
            let name = body.type_url.rsplit('/').next().unwrap_or_default();
            let message = format!("Message type {name} exceeds size limit.");
            self.blob_over(body.encoded_len(), &message)
                .then_some((C::BadUpdateWorkflowExecutionMessage, message))
        })
    }

    /// Past the blob error limit; past the warn limit it is logged.
    fn blob_over(&self, size: usize, what: &str) -> bool {
        if over(size, self.env.blob_size_warn) {
            tracing::warn!(
                workflow_id = %self.ms.workflow_id,
                size,
                warn_limit = self.env.blob_size_warn,
                "Blob data size exceeds the warning limit: {what}"
            );
        }
        over(size, self.env.blob_size_error)
    }

    /// Past the memo error limit; past the warn limit (2 KiB by default, often passed) a debug
    /// line.
    fn memo_over(&self, size: usize, what: &str) -> bool {
        if over(size, self.env.memo_size_warn) {
            tracing::debug!(
                workflow_id = %self.ms.workflow_id,
                size,
                warn_limit = self.env.memo_size_warn,
                "Memo size exceeds the warning limit: {what}"
            );
        }
        over(size, self.env.memo_size_error)
    }
}

/// A workflow task failed cause as the reference spells it in messages: the enum value's name
/// in CamelCase (`BadScheduleActivityAttributes`).
pub(crate) fn cause_name(cause: WorkflowTaskFailedCause) -> String {
    kairos_core::names::pascal_case(cause.as_str_name(), "WORKFLOW_TASK_FAILED_CAUSE_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_named_as_the_reference_names_them() {
        assert_eq!(
            cause_name(C::BadScheduleActivityAttributes),
            "BadScheduleActivityAttributes"
        );
        assert_eq!(
            cause_name(C::BadUpdateWorkflowExecutionMessage),
            "BadUpdateWorkflowExecutionMessage"
        );
        assert_eq!(cause_name(C::UnhandledCommand), "UnhandledCommand");
    }
}
