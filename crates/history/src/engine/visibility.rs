//! What list and count queries see of a run: its visibility row, written in the same batch as
//! the transition that starts, closes or re-tags it, with its search attributes indexed by type
//! and returned with the `type` metadata the SDKs' typed APIs read.
use std::collections::HashMap;

use kairos_core::filter::Value;
use kairos_persistence::VisibilityRow;
use kairos_visibility::AttrType;
use kairos_visibility::attrs::predefined;
use prost::Message;
use temporalio_protos::temporal::api::common::v1::{Payload, SearchAttributes};

use crate::state::MutableState;

const MS_TO_NS: i64 = 1_000_000;

/// The type of attribute `name`: registered in the namespace, predefined, or as the payload
/// says.
pub fn attribute_type(
    name: &str,
    payload: &Payload,
    custom: &HashMap<String, i32>,
) -> Option<AttrType> {
    if let Some(t) = custom.get(name) {
        return AttrType::from_indexed_value_type(*t);
    }
    if let Some(t) = predefined(name) {
        return Some(t);
    }
    payload
        .metadata
        .get("type")
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(AttrType::from_name)
}

/// The search attributes with each payload's `type` metadata set.
pub fn typed(sa: &SearchAttributes, custom: &HashMap<String, i32>) -> SearchAttributes {
    let mut out = sa.clone();
    for (name, payload) in out.indexed_fields.iter_mut() {
        if let Some(t) = attribute_type(name, payload, custom) {
            payload
                .metadata
                .insert("type".to_string(), t.name().as_bytes().to_vec());
        }
    }
    out
}

/// The index rows of one attribute (a keyword list gives one per element). A value that does
/// not decode as its type is not indexed.
fn index_values(ty: AttrType, payload: &Payload) -> Vec<Value> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&payload.data) else {
        return Vec::new();
    };
    let one = |v: &serde_json::Value| -> Option<Value> {
        match ty {
            AttrType::Keyword | AttrType::Text | AttrType::KeywordList => {
                v.as_str().map(|s| Value::Text(s.replace('\0', "")))
            }
            AttrType::Int => v.as_i64().map(Value::Int),
            AttrType::Double => v.as_f64().map(Value::Real),
            AttrType::Bool => v.as_bool().map(|b| Value::Int(b as i64)),
            AttrType::Datetime => v
                .as_str()
                .and_then(kairos_visibility::compile::parse_datetime_ns)
                .map(Value::Int),
        }
    };
    match &value {
        serde_json::Value::Array(items) => items.iter().filter_map(one).collect(),
        serde_json::Value::Null => Vec::new(),
        v => one(v).into_iter().collect(),
    }
}

/// A datetime attribute as lists give it back: the reference's visibility store writes the
/// time again (`kairos_visibility::compile::rfc3339_nano`); describe and the run keep the
/// client's text.
fn as_listed(payload: &mut Payload) {
    let rewritten = serde_json::from_slice::<String>(&payload.data)
        .ok()
        .and_then(|text| kairos_visibility::compile::rfc3339_nano(&text))
        .and_then(|text| serde_json::to_vec(&text).ok());
    if let Some(data) = rewritten {
        payload.data = data;
    }
}

/// The visibility row of a run as its state now is.
pub fn row(ms: &MutableState, custom: &HashMap<String, i32>) -> VisibilityRow {
    let closed = crate::state::is_closed(ms.status);
    let mut sa = ms
        .search_attributes
        .as_ref()
        .map(|sa| typed(sa, custom))
        .unwrap_or_default();
    for (name, payload) in sa.indexed_fields.iter_mut() {
        if attribute_type(name, payload, custom) == Some(AttrType::Datetime) {
            as_listed(payload);
        }
    }
    let mut attributes = Vec::new();
    for (name, payload) in &sa.indexed_fields {
        if let Some(t) = attribute_type(name, payload, custom) {
            for v in index_values(t, payload) {
                attributes.push((name.clone(), v));
            }
        }
    }
    VisibilityRow {
        run_id: ms.run_id.clone(),
        workflow_id: ms.workflow_id.clone(),
        workflow_type: ms.workflow_type.clone(),
        task_queue: ms.task_queue.clone(),
        status: ms.status,
        start_time_ns: ms.start_time_ms.saturating_mul(MS_TO_NS),
        execution_time_ns: ms.execution_time_ms.saturating_mul(MS_TO_NS),
        close_time_ns: closed.then_some(ms.close_time_ms.saturating_mul(MS_TO_NS)),
        execution_duration_ns: closed.then_some(
            ms.close_time_ms
                .saturating_sub(ms.execution_time_ms)
                .max(0)
                .saturating_mul(MS_TO_NS),
        ),
        history_length: ms.next_event_id - 1,
        history_size_bytes: ms.history_size_bytes,
        state_transition_count: ms.state_transition_count,
        parent_workflow_id: ms.parent.as_ref().map(|p| p.workflow_id.clone()),
        parent_run_id: ms.parent.as_ref().map(|p| p.run_id.clone()),
        root_workflow_id: Some(
            ms.root
                .as_ref()
                .map_or(ms.workflow_id.clone(), |r| r.workflow_id.clone()),
        ),
        root_run_id: Some(
            ms.root
                .as_ref()
                .map_or(ms.run_id.clone(), |r| r.run_id.clone()),
        ),
        first_run_id: ms.first_execution_run_id.clone(),
        memo: ms.memo.clone().unwrap_or_default().encode_to_vec(),
        search_attributes: sa.encode_to_vec(),
        attributes,
    }
}

/// The custom attributes of a namespace as the query compiler takes them.
pub fn custom_types(custom: &HashMap<String, i32>) -> HashMap<String, AttrType> {
    custom
        .iter()
        .filter_map(|(n, t)| AttrType::from_indexed_value_type(*t).map(|t| (n.clone(), t)))
        .collect()
}

/// Largest page a list answers (a page size of 0 or less asks for it).
pub const MAX_PAGE_SIZE: usize = 1000;

fn encode_token(c: &kairos_persistence::VisibilityCursor) -> Vec<u8> {
    format!("v1|{}|{}|{}", c.sort_close, c.start_time_ns, c.run_id).into_bytes()
}

fn decode_token(token: &[u8]) -> Option<kairos_persistence::VisibilityCursor> {
    let text = std::str::from_utf8(token).ok()?;
    let mut parts = text.splitn(4, '|');
    (parts.next()? == "v1").then_some(())?;
    Some(kairos_persistence::VisibilityCursor {
        sort_close: parts.next()?.parse().ok()?,
        start_time_ns: parts.next()?.parse().ok()?,
        run_id: parts.next()?.to_string(),
    })
}

fn ns_to_timestamp(ns: i64) -> prost_wkt_types::Timestamp {
    prost_wkt_types::Timestamp {
        seconds: ns.div_euclid(1_000_000_000),
        nanos: ns.rem_euclid(1_000_000_000) as i32,
    }
}

/// A visibility row as `WorkflowExecutionInfo`.
pub fn execution_info_of(
    r: &VisibilityRow,
    namespace_id: &str,
) -> temporalio_protos::temporal::api::workflow::v1::WorkflowExecutionInfo {
    use temporalio_protos::temporal::api::common::v1::{Memo, WorkflowExecution, WorkflowType};
    let exec = |w: &Option<String>, r: &Option<String>| {
        w.as_ref().map(|w| WorkflowExecution {
            workflow_id: w.clone(),
            run_id: r.clone().unwrap_or_default(),
        })
    };
    temporalio_protos::temporal::api::workflow::v1::WorkflowExecutionInfo {
        execution: Some(WorkflowExecution {
            workflow_id: r.workflow_id.clone(),
            run_id: r.run_id.clone(),
        }),
        r#type: Some(WorkflowType {
            name: r.workflow_type.clone(),
        }),
        start_time: Some(ns_to_timestamp(r.start_time_ns)),
        close_time: r.close_time_ns.map(ns_to_timestamp),
        status: r.status,
        history_length: r.history_length,
        parent_namespace_id: if r.parent_workflow_id.is_some() {
            namespace_id.to_string()
        } else {
            String::new()
        },
        parent_execution: exec(&r.parent_workflow_id, &r.parent_run_id),
        execution_time: Some(ns_to_timestamp(r.execution_time_ns)),
        memo: Some(Memo::decode(r.memo.as_slice()).unwrap_or_default()),
        search_attributes: Some(
            SearchAttributes::decode(r.search_attributes.as_slice()).unwrap_or_default(),
        ),
        task_queue: r.task_queue.clone(),
        state_transition_count: r.state_transition_count,
        history_size_bytes: r.history_size_bytes,
        execution_duration: r.execution_duration_ns.map(|ns| prost_wkt_types::Duration {
            seconds: ns / 1_000_000_000,
            nanos: (ns % 1_000_000_000) as i32,
        }),
        root_execution: exec(&r.root_workflow_id, &r.root_run_id),
        first_run_id: r.first_run_id.clone(),
        ..Default::default()
    }
}

impl super::Engine {
    /// `ListWorkflowExecutions`: one page of the runs `query` selects, and the token of the
    /// next page (empty on the last).
    pub async fn list_workflows(
        &self,
        ns: &crate::namespace::Namespace,
        query: &str,
        page_size: i32,
        token: &[u8],
    ) -> crate::Result<(
        Vec<temporalio_protos::temporal::api::workflow::v1::WorkflowExecutionInfo>,
        Vec<u8>,
    )> {
        let compiled =
            kairos_visibility::compile_text(query, &custom_types(&ns.custom_search_attributes))
                .map_err(crate::Error::Invalid)?;
        if compiled.group_by_status {
            return Err(crate::Error::Invalid(
                "invalid query: 'GROUP BY' clause is only supported in CountWorkflowExecutions"
                    .to_string(),
            ));
        }
        let after = if token.is_empty() {
            None
        } else {
            Some(
                decode_token(token)
                    .ok_or_else(|| crate::Error::Invalid("invalid next page token".to_string()))?,
            )
        };
        let limit = if page_size <= 0 {
            MAX_PAGE_SIZE
        } else {
            (page_size as usize).min(MAX_PAGE_SIZE)
        };
        let rows = self
            .inner
            .store
            .list_visibility(&ns.id, &compiled.filter, after, limit)
            .await?;
        let next = if rows.len() == limit {
            rows.last()
                .map(|r| encode_token(&r.cursor()))
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let infos = rows.iter().map(|r| execution_info_of(r, &ns.id)).collect();
        Ok((infos, next))
    }

    /// `CountWorkflowExecutions`: the total, and per status with `GROUP BY ExecutionStatus`.
    pub async fn count_workflows(
        &self,
        ns: &crate::namespace::Namespace,
        query: &str,
    ) -> crate::Result<(i64, Option<Vec<(i32, i64)>>)> {
        let compiled =
            kairos_visibility::compile_text(query, &custom_types(&ns.custom_search_attributes))
                .map_err(crate::Error::Invalid)?;
        let by_status = compiled.group_by_status;
        let rows = self
            .inner
            .store
            .count_visibility(&ns.id, &compiled.filter, by_status)
            .await?;
        let total = rows.iter().map(|(_, n)| n).sum();
        let groups = by_status.then(|| {
            rows.into_iter()
                .map(|(s, n)| (s.unwrap_or_default(), n))
                .collect()
        });
        Ok((total, groups))
    }
}
