//! Opaque task tokens: what a worker hands back to name the task it answers.
use prost::Message;

use crate::error::{Error, Result};
use crate::state::TaskTokenData;

/// Token kind for workflow tasks.
pub const WORKFLOW_TASK: i32 = 1;
/// Token kind for activity tasks.
pub const ACTIVITY_TASK: i32 = 2;
/// Token kind for query tasks.
pub const QUERY_TASK: i32 = 3;

/// Encodes a token.
pub fn encode(data: &TaskTokenData) -> Vec<u8> {
    data.encode_to_vec()
}

/// The namespace id and workflow id a token of any kind names, if it decodes: where a cluster
/// routes the request carrying it.
pub fn run_of(bytes: &[u8]) -> Option<(String, String)> {
    let data = TaskTokenData::decode(bytes).ok()?;
    (!data.workflow_id.is_empty()).then_some((data.namespace_id, data.workflow_id))
}

/// Decodes a token of the expected kind; anything else is `INVALID_ARGUMENT`.
pub fn decode(bytes: &[u8], kind: i32) -> Result<TaskTokenData> {
    if bytes.is_empty() {
        return Err(Error::Invalid("Task token not set on request.".into()));
    }
    let data = TaskTokenData::decode(bytes)
        .map_err(|_| Error::Invalid("Error deserializing task token.".into()))?;
    if data.kind != kind || data.run_id.is_empty() || data.workflow_id.is_empty() {
        return Err(Error::Invalid("Error deserializing task token.".into()));
    }
    Ok(data)
}
