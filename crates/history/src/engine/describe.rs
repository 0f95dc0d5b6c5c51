//! `DescribeWorkflowExecution`: a run's state as the reference describes it, with every message
//! field the reference always sets present (an SDK may read an absent one as an error).
use std::time::Duration;

use kairos_core::ids::RunKey;
use kairos_core::time::{from_millis, from_pb_duration, to_pb_duration, to_timestamp};
use temporalio_protos::temporal::api::activity::v1::ActivityOptions;
use temporalio_protos::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use temporalio_protos::temporal::api::enums::v1::{
    EventType, PendingActivityState, PendingWorkflowTaskState, TaskQueueKind,
};
use temporalio_protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_protos::temporal::api::workflow::v1::{
    PendingActivityInfo, PendingChildExecutionInfo, PendingWorkflowTaskInfo, RequestIdInfo,
    ResetPoints, WorkflowExecutionConfig, WorkflowExecutionExtendedInfo, WorkflowExecutionInfo,
};
use temporalio_protos::temporal::api::workflowservice::v1 as ws;

use super::{Engine, visibility};
use crate::error::Result;
use crate::namespace::Namespace;
use crate::state::{ActivityInfo, MutableState};

/// The timestamp the reference reports for "no such time" where it always sets one: Go's zero
/// time, 0001-01-01T00:00:00Z.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

impl Engine {
    /// `DescribeWorkflowExecution`.
    pub async fn describe(
        &self,
        ns: &Namespace,
        key: &RunKey,
    ) -> Result<ws::DescribeWorkflowExecutionResponse> {
        let ms = self.read_state(key).await?;
        let mut info = execution_info(&ms);
        info.memo = Some(ms.memo.clone().unwrap_or_default());
        info.search_attributes = Some(
            ms.search_attributes
                .as_ref()
                .map(|sa| visibility::typed(sa, &ns.custom_search_attributes))
                .unwrap_or_default(),
        );
        info.auto_reset_points = Some(ResetPoints {
            points: ms.reset_points.clone(),
        });
        let running = !crate::state::is_closed(ms.status);
        Ok(ws::DescribeWorkflowExecutionResponse {
            execution_config: Some(WorkflowExecutionConfig {
                task_queue: Some(TaskQueue {
                    name: ms.task_queue.clone(),
                    kind: TaskQueueKind::Normal as i32,
                    normal_name: String::new(),
                }),
                workflow_execution_timeout: ms.execution_timeout,
                workflow_run_timeout: ms.run_timeout,
                default_workflow_task_timeout: ms.wft_timeout,
                user_metadata: ms.user_metadata.clone(),
            }),
            workflow_execution_info: Some(info),
            pending_activities: ms.activities.iter().map(pending_activity).collect(),
            pending_children: ms
                .children
                .iter()
                .filter(|_| running)
                .map(|c| PendingChildExecutionInfo {
                    workflow_id: c.workflow_id.clone(),
                    run_id: c.run_id.clone(),
                    workflow_type_name: c.workflow_type.clone(),
                    initiated_id: c.initiated_event_id,
                    parent_close_policy: c.parent_close_policy,
                })
                .collect(),
            pending_workflow_task: ms.wft.as_ref().filter(|_| running).map(|wft| {
                PendingWorkflowTaskInfo {
                    state: if wft.started_event_id > 0 {
                        PendingWorkflowTaskState::Started as i32
                    } else {
                        PendingWorkflowTaskState::Scheduled as i32
                    },
                    scheduled_time: Some(to_timestamp(from_millis(wft.scheduled_time_ms))),
                    original_scheduled_time: Some(to_timestamp(from_millis(wft.scheduled_time_ms))),
                    started_time: (wft.started_event_id > 0)
                        .then(|| to_timestamp(from_millis(wft.started_time_ms))),
                    attempt: wft.attempt,
                }
            }),
            workflow_extended_info: Some(extended_info(&ms)),
            ..Default::default()
        })
    }
}

/// A pending activity as describe lists it.
fn pending_activity(a: &ActivityInfo) -> PendingActivityInfo {
    let schedule_to_close = from_pb_duration(a.schedule_to_close.as_ref());
    PendingActivityInfo {
        activity_id: a.activity_id.clone(),
        activity_type: a.activity_type.clone(),
        state: if a.cancel_requested {
            PendingActivityState::CancelRequested as i32
        } else if a.started {
            PendingActivityState::Started as i32
        } else {
            PendingActivityState::Scheduled as i32
        },
        heartbeat_details: a.heartbeat_details.clone(),
        last_heartbeat_time: (a.last_heartbeat_ms > 0)
            .then(|| to_timestamp(from_millis(a.last_heartbeat_ms))),
        last_started_time: (a.started_time_ms > 0)
            .then(|| to_timestamp(from_millis(a.started_time_ms))),
        attempt: a.attempt,
        maximum_attempts: a.retry_policy.as_ref().map_or(0, |p| p.maximum_attempts),
        scheduled_time: Some(to_timestamp(from_millis(
            a.current_attempt_scheduled_time_ms,
        ))),
        expiration_time: (!schedule_to_close.is_zero()).then(|| {
            to_timestamp(
                from_millis(a.scheduled_time_ms)
                    .checked_add(schedule_to_close)
                    .unwrap_or_else(|| from_millis(a.scheduled_time_ms)),
            )
        }),
        last_failure: a.last_failure.clone(),
        last_worker_identity: if a.started {
            a.started_identity.clone()
        } else {
            a.last_worker_identity.clone()
        },
        // As the reference reports them: every timeout present, zero when unset; the queue by
        // name, without a kind.
        activity_options: Some(ActivityOptions {
            task_queue: Some(TaskQueue {
                name: a.task_queue.clone(),
                kind: 0,
                normal_name: a.task_queue.clone(),
            }),
            schedule_to_close_timeout: Some(a.schedule_to_close.unwrap_or_default()),
            schedule_to_start_timeout: Some(a.schedule_to_start.unwrap_or_default()),
            start_to_close_timeout: Some(a.start_to_close.unwrap_or_default()),
            heartbeat_timeout: Some(a.heartbeat.unwrap_or_default()),
            retry_policy: a.retry_policy.clone(),
            priority: None,
            start_delay: None,
        }),
        ..Default::default()
    }
}

/// The run's extended info: expiration times, its original start and the request ids it took.
fn extended_info(ms: &MutableState) -> WorkflowExecutionExtendedInfo {
    let run_timeout = from_pb_duration(ms.run_timeout.as_ref());
    let run_expiration_time = if run_timeout.is_zero() {
        prost_wkt_types::Timestamp {
            seconds: GO_ZERO_TIME_SECONDS,
            nanos: 0,
        }
    } else {
        let started = from_millis(ms.execution_time_ms);
        to_timestamp(started.checked_add(run_timeout).unwrap_or(started))
    };
    let mut request_id_infos = std::collections::HashMap::new();
    if !ms.start_request_id.is_empty() {
        request_id_infos.insert(
            ms.start_request_id.clone(),
            RequestIdInfo {
                event_type: EventType::WorkflowExecutionStarted as i32,
                event_id: 1,
                buffered: false,
            },
        );
    }
    WorkflowExecutionExtendedInfo {
        execution_expiration_time: (ms.execution_expiration_ms > 0)
            .then(|| to_timestamp(from_millis(ms.execution_expiration_ms))),
        run_expiration_time: Some(run_expiration_time),
        cancel_requested: ms.cancel_requested,
        original_start_time: Some(to_timestamp(from_millis(ms.start_time_ms))),
        request_id_infos,
        ..Default::default()
    }
}

/// The `WorkflowExecutionInfo` of a run, as describe and list return it.
pub fn execution_info(ms: &MutableState) -> WorkflowExecutionInfo {
    WorkflowExecutionInfo {
        execution: Some(WorkflowExecution {
            workflow_id: ms.workflow_id.clone(),
            run_id: ms.run_id.clone(),
        }),
        r#type: Some(WorkflowType {
            name: ms.workflow_type.clone(),
        }),
        start_time: Some(to_timestamp(from_millis(ms.start_time_ms))),
        close_time: (ms.close_time_ms > 0).then(|| to_timestamp(from_millis(ms.close_time_ms))),
        status: ms.status,
        history_length: ms.next_event_id - 1,
        execution_time: Some(to_timestamp(from_millis(ms.execution_time_ms))),
        memo: ms.memo.clone(),
        search_attributes: ms.search_attributes.clone(),
        task_queue: ms.task_queue.clone(),
        state_transition_count: ms.state_transition_count,
        history_size_bytes: ms.history_size_bytes,
        first_run_id: ms.first_execution_run_id.clone(),
        parent_namespace_id: ms
            .parent
            .as_ref()
            .map(|p| p.namespace_id.clone())
            .unwrap_or_default(),
        parent_execution: ms.parent.as_ref().map(|p| WorkflowExecution {
            workflow_id: p.workflow_id.clone(),
            run_id: p.run_id.clone(),
        }),
        root_execution: Some(ms.root.clone().unwrap_or_else(|| WorkflowExecution {
            workflow_id: ms.workflow_id.clone(),
            run_id: ms.run_id.clone(),
        })),
        execution_duration: (ms.close_time_ms > 0)
            .then(|| {
                to_pb_duration(Duration::from_millis(
                    (ms.close_time_ms - ms.execution_time_ms).max(0) as u64,
                ))
            })
            .flatten(),
        ..Default::default()
    }
}
