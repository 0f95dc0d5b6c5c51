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
        for (k, v) in &upsert.fields {
            merged.fields.insert(k.clone(), v.clone());
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
