//! History long polls (`GetWorkflowExecutionHistory` with `wait_new_event`), raw through the
//! official SDK's gRPC client, with no worker: a close-event poll answers with the close event
//! when the run is terminated, a poll for new events answers with the events a signal added, and
//! a poll on a run deleted while it waits does not hang (deleting a running run terminates it
//! first, so the poll gets that close or, if it looks after the deletion, NOT_FOUND).
use temporalio_common::protos::temporal::api::common::v1::{WorkflowExecution, WorkflowType};
use temporalio_common::protos::temporal::api::enums::v1::{EventType, HistoryEventFilterType};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    DeleteWorkflowExecutionRequest, GetWorkflowExecutionHistoryRequest,
    SignalWorkflowExecutionRequest, StartWorkflowExecutionRequest,
    TerminateWorkflowExecutionRequest,
};

use kairos_testing::TestServer;

use crate::support::{connect, unique, within};

fn start_request(id: &str) -> StartWorkflowExecutionRequest {
    StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: id.into(),
        workflow_type: Some(WorkflowType {
            name: "nobody-runs-this".into(),
        }),
        task_queue: Some(TaskQueue {
            name: unique("long-poll-tq"),
            ..Default::default()
        }),
        request_id: unique("req"),
        ..Default::default()
    }
}

fn execution(workflow_id: &str, run_id: &str) -> Option<WorkflowExecution> {
    Some(WorkflowExecution {
        workflow_id: workflow_id.into(),
        run_id: run_id.into(),
    })
}

fn poll(
    id: &str,
    run_id: &str,
    close_only: bool,
    token: Vec<u8>,
) -> GetWorkflowExecutionHistoryRequest {
    GetWorkflowExecutionHistoryRequest {
        namespace: "default".into(),
        execution: execution(id, run_id),
        wait_new_event: true,
        next_page_token: token,
        history_event_filter_type: if close_only {
            HistoryEventFilterType::CloseEvent as i32
        } else {
            HistoryEventFilterType::AllEvent as i32
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn long_polls_answer_closes_new_events_and_deletions() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let mut svc = client.connection().workflow_service();

    // A close-event poll waits for the termination and gets its event.
    let id = unique("closing");
    let run_id = svc
        .start_workflow_execution(tonic::Request::new(start_request(&id)))
        .await?
        .into_inner()
        .run_id;
    let mut waiter = client.connection().workflow_service();
    let close_poll = tokio::spawn({
        let (id, run_id) = (id.clone(), run_id.clone());
        async move {
            waiter
                .get_workflow_execution_history(tonic::Request::new(poll(
                    &id,
                    &run_id,
                    true,
                    vec![],
                )))
                .await
        }
    });
    // Whether the poll is already waiting or not, it must see the close.
    svc.terminate_workflow_execution(tonic::Request::new(TerminateWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&id, &run_id),
        reason: "enough".into(),
        ..Default::default()
    }))
    .await?;
    let closed = within(10, close_poll).await???.into_inner();
    let events = closed.history.unwrap_or_default().events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].event_type,
        EventType::WorkflowExecutionTerminated as i32
    );

    // A poll for new events past the current ones gets what a signal adds.
    let id = unique("signalled");
    let run_id = svc
        .start_workflow_execution(tonic::Request::new(start_request(&id)))
        .await?
        .into_inner()
        .run_id;
    let first = svc
        .get_workflow_execution_history(tonic::Request::new(poll(&id, &run_id, false, vec![])))
        .await?
        .into_inner();
    let seen = first.history.unwrap_or_default().events.len();
    assert_eq!(seen, 2, "started and workflow task scheduled");
    let mut waiter = client.connection().workflow_service();
    let next_poll = tokio::spawn({
        let (id, run_id, token) = (id.clone(), run_id.clone(), first.next_page_token.clone());
        async move {
            waiter
                .get_workflow_execution_history(tonic::Request::new(poll(
                    &id, &run_id, false, token,
                )))
                .await
        }
    });
    svc.signal_workflow_execution(tonic::Request::new(SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&id, &run_id),
        signal_name: "ping".into(),
        request_id: unique("sig"),
        ..Default::default()
    }))
    .await?;
    let next = within(10, next_poll).await???.into_inner();
    let events = next.history.unwrap_or_default().events;
    assert_eq!(
        events.first().map(|e| (e.event_id, e.event_type)),
        Some((3, EventType::WorkflowExecutionSignaled as i32)),
        "{events:?}"
    );

    // A run deleted while a poll waits on it: NOT_FOUND.
    let mut waiter = client.connection().workflow_service();
    let doomed_poll = tokio::spawn({
        let (id, run_id) = (id.clone(), run_id.clone());
        async move {
            waiter
                .get_workflow_execution_history(tonic::Request::new(poll(
                    &id,
                    &run_id,
                    true,
                    vec![],
                )))
                .await
        }
    });
    svc.delete_workflow_execution(tonic::Request::new(DeleteWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: execution(&id, &run_id),
    }))
    .await?;
    match within(10, doomed_poll).await?? {
        Ok(answer) => {
            let events = answer.into_inner().history.unwrap_or_default().events;
            assert_eq!(
                events.iter().map(|e| e.event_type).collect::<Vec<_>>(),
                vec![EventType::WorkflowExecutionTerminated as i32],
                "{events:?}"
            );
        }
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}"),
    }
    Ok(())
}
