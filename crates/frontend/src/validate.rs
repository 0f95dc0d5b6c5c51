//! Request validation: ids, sizes and timeouts are checked before anything is stored.
use kairos_core::Limits;
use prost::Message;
use temporalio_protos::temporal::api::common::v1::{Memo, Payloads};
use tonic::Status;

use crate::error::invalid;

/// Checks a required id or name against the length limit.
pub fn required_id(limits: &Limits, what: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(format!("{what} is not set on request.")));
    }
    optional_id(limits, what, value)
}

/// Checks an optional id against the length limit. A NUL character is refused too: no SQL
/// store keeps one in a text column (PostgreSQL refuses it), so a run named with one could be
/// started on one store and not on another.
pub fn optional_id(limits: &Limits, what: &str, value: &str) -> Result<(), Status> {
    if value.contains('\0') {
        return Err(invalid(format!("{what} contains a NUL character.")));
    }
    if value.len() > limits.max_id_length {
        return Err(invalid(format!(
            "{what} exceeds length limit. Length={} Limit={}",
            value.len(),
            limits.max_id_length
        )));
    }
    Ok(())
}

/// Checks a payload blob against the size limit.
pub fn payloads(limits: &Limits, what: &str, value: Option<&Payloads>) -> Result<(), Status> {
    let size = value.map_or(0, |p| p.encoded_len());
    if size > limits.blob_size {
        return Err(invalid(format!(
            "{what} size exceeds limit. Size={size} Limit={}",
            limits.blob_size
        )));
    }
    Ok(())
}

/// Checks a memo against the size limit.
pub fn memo(limits: &Limits, value: Option<&Memo>) -> Result<(), Status> {
    let size = value.map_or(0, |m| m.encoded_len());
    if size > limits.memo_size {
        return Err(invalid(format!(
            "Memo size exceeds limit. Size={size} Limit={}",
            limits.memo_size
        )));
    }
    Ok(())
}

/// Rejects negative durations (longer ones than protobuf allows are accepted, and saturate:
/// `kairos_core::time::from_pb_duration`).
pub fn timeout(what: &str, value: Option<&prost_wkt_types::Duration>) -> Result<(), Status> {
    if kairos_core::time::is_negative(value) {
        return Err(invalid(format!(
            "An invalid {what}Seconds is set on request. cause: negative duration"
        )));
    }
    Ok(())
}

/// Checks a retry policy a client sent (with the reference's rules and messages).
pub fn retry_policy(
    value: Option<&temporalio_protos::temporal::api::common::v1::RetryPolicy>,
) -> Result<(), Status> {
    match value {
        Some(policy) => kairos_history::state::validate_retry_policy(policy).map_err(invalid),
        None => Ok(()),
    }
}
