//! Upserting search attributes (checked against the namespace's registered ones) and
//! modifying the memo.
use super::*;

impl Transition<'_> {
    /// Checks a upsert workflow search attributes command.
    pub(super) fn check_upsert_workflow_search_attributes(
        &self,
        a: &cmd::UpsertWorkflowSearchAttributesCommandAttributes,
        _budget: &mut Budget,
    ) -> Result<(), Refusal> {
        if let Some((namespace, known)) = &self.env.search_attributes {
            let names = a
                .search_attributes
                .iter()
                .flat_map(|sa| sa.indexed_fields.keys());
            for name in names {
                if !known.contains_key(name) && kairos_visibility::attrs::predefined(name).is_none()
                {
                    return Err((
                        C::BadSearchAttributes,
                        format!(
                            "Namespace {namespace} has no mapping defined for search attribute {name}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Applies a upsert workflow search attributes command; true when it needs a new workflow task.
    pub(super) fn upsert_workflow_search_attributes(
        &mut self,
        a: &cmd::UpsertWorkflowSearchAttributesCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        let upsert = a.search_attributes.clone().unwrap_or_default();
        let merged = self
            .ms
            .search_attributes
            .get_or_insert_with(SearchAttributes::default);
        for (k, v) in &upsert.indexed_fields {
            merged.indexed_fields.insert(k.clone(), v.clone());
        }
        self.append(event(
            EventType::UpsertWorkflowSearchAttributes,
            hist::UpsertWorkflowSearchAttributesEventAttributes {
                workflow_task_completed_event_id: completed_id,
                search_attributes: Some(upsert),
            },
        ));
        false
    }

    /// Checks a modify workflow properties command.
    pub(super) fn check_modify_workflow_properties(
        &self,
        _: &cmd::ModifyWorkflowPropertiesCommandAttributes,
        _budget: &mut Budget,
    ) -> Result<(), Refusal> {
        Ok(())
    }

    /// Applies a modify workflow properties command; true when it needs a new workflow task.
    pub(super) fn modify_workflow_properties(
        &mut self,
        a: &cmd::ModifyWorkflowPropertiesCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        let upsert = a.upserted_memo.clone().unwrap_or_default();
        let merged = self.ms.memo.get_or_insert_with(Memo::default);
        // As the reference merges: a value that stands for nothing (no data, `null`, or an
        // empty list) removes its key.
        for (k, v) in &upsert.fields {
            if removes_key(v) {
                merged.fields.remove(k);
            } else {
                merged.fields.insert(k.clone(), v.clone());
            }
        }
        self.append(event(
            EventType::WorkflowPropertiesModified,
            hist::WorkflowPropertiesModifiedEventAttributes {
                workflow_task_completed_event_id: completed_id,
                upserted_memo: Some(upsert),
            },
        ));
        false
    }
}

/// True for an upserted memo value that removes its key: one whose data is empty, JSON `null`
/// or an empty JSON list, whatever its encoding (an SDK's `None`, `nil` or `[]`).
fn removes_key(value: &temporalio_protos::temporal::api::common::v1::Payload) -> bool {
    matches!(value.data.as_slice(), b"" | b"null" | b"[]")
}

#[cfg(test)]
mod tests {
    use super::removes_key;
    use temporalio_protos::temporal::api::common::v1::Payload;

    #[test]
    fn only_values_that_stand_for_nothing_remove_a_memo_key() {
        let payload = |data: &[u8]| Payload {
            data: data.to_vec(),
            ..Default::default()
        };
        for gone in [&b""[..], b"null", b"[]"] {
            assert!(removes_key(&payload(gone)), "{gone:?}");
        }
        for kept in [&b"0"[..], b"\"\"", b"{}", b"[ ]", b"false"] {
            assert!(!removes_key(&payload(kept)), "{kept:?}");
        }
    }
}
