//! Auto-reset points: the first completed workflow task of each worker binary (build id or
//! binary checksum) in a run, which DescribeWorkflowExecution lists as the places a reset to
//! "the first task of build X" may go to.
use kairos_core::time::{from_millis, to_timestamp};
use temporalio_protos::temporal::api::history::v1::WorkflowTaskCompletedEventAttributes;
use temporalio_protos::temporal::api::workflow::v1::ResetPointInfo;

use super::MutableState;

/// How many points a run keeps (the reference's default); the oldest go first.
const MAX_POINTS: usize = 20;

/// Records `completed_event_id` as a reset point when it is the first task completed by its
/// worker binary in this run.
pub fn record(
    ms: &mut MutableState,
    completed_event_id: i64,
    completed: &WorkflowTaskCompletedEventAttributes,
    at_ms: i64,
) {
    let build_id = completed
        .worker_version
        .as_ref()
        .map(|v| v.build_id.clone())
        .unwrap_or_default();
    let checksum = &completed.binary_checksum;
    let known = ms
        .reset_points
        .iter()
        .any(|p| p.build_id == build_id && p.binary_checksum == *checksum);
    if known {
        return;
    }
    if ms.reset_points.len() >= MAX_POINTS {
        ms.reset_points.remove(0);
    }
    ms.reset_points.push(ResetPointInfo {
        build_id,
        binary_checksum: checksum.clone(),
        run_id: ms.run_id.clone(),
        first_workflow_task_completed_id: completed_event_id,
        create_time: Some(to_timestamp(from_millis(at_ms))),
        expire_time: None,
        // A reset to a point with children started would leave them orphaned.
        resettable: ms.children.is_empty(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use temporalio_protos::temporal::api::common::v1::WorkerVersionStamp;

    fn completed(build_id: &str) -> WorkflowTaskCompletedEventAttributes {
        WorkflowTaskCompletedEventAttributes {
            worker_version: Some(WorkerVersionStamp {
                build_id: build_id.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn one_point_per_binary_and_at_most_twenty() {
        let mut ms = MutableState {
            run_id: "r".into(),
            ..Default::default()
        };
        record(&mut ms, 4, &completed("a"), 1000);
        record(&mut ms, 10, &completed("a"), 2000);
        record(&mut ms, 16, &completed("b"), 3000);
        let ids: Vec<_> = ms
            .reset_points
            .iter()
            .map(|p| (p.build_id.as_str(), p.first_workflow_task_completed_id))
            .collect();
        assert_eq!(ids, [("a", 4), ("b", 16)]);
        assert!(
            ms.reset_points
                .iter()
                .all(|p| p.resettable && p.run_id == "r")
        );
        for n in 0..30 {
            record(&mut ms, 100 + n, &completed(&format!("x{n}")), 4000);
        }
        assert_eq!(ms.reset_points.len(), MAX_POINTS);
        assert_eq!(ms.reset_points[0].build_id, "x10", "the oldest went first");
    }
}
