//! RecordMarker: markers the SDKs write (local activities, patches, side effects).
use super::*;

impl Transition<'_> {
    /// Checks a record marker command.
    pub(super) fn check_record_marker(
        &self,
        a: &cmd::RecordMarkerCommandAttributes,
        _budget: &mut Budget,
    ) -> Result<(), Refusal> {
        if a.marker_name.is_empty() {
            return Err((
                C::BadRecordMarkerAttributes,
                "MarkerName is not set on command.".into(),
            ));
        }
        Ok(())
    }

    /// Applies a record marker command; true when it needs a new workflow task.
    pub(super) fn record_marker(
        &mut self,
        a: &cmd::RecordMarkerCommandAttributes,
        completed_id: i64,
        _identity: &str,
    ) -> bool {
        self.append(event(
            EventType::MarkerRecorded,
            hist::MarkerRecordedEventAttributes {
                marker_name: a.marker_name.clone(),
                details: a.details.clone(),
                workflow_task_completed_event_id: completed_id,
                header: a.header.clone(),
                failure: a.failure.clone(),
            },
        ));
        false
    }
}
