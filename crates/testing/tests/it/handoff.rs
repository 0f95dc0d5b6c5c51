//! A task created while a poll waits on its queue is started for that poll in the transition
//! that creates it: one commit instead of two, and the poll gets the started task. Driven raw
//! through the official SDK's gRPC client; each step waits (with a deadline) until the poll is
//! registered, so the order is certain. The transition count (DescribeWorkflowExecution) shows
//! the difference: a signal with a waiting poll costs one transition, without one two (the
//! signal, then the poll's start).
use std::time::{Duration, Instant};

use kairos_core::api::TaskKind;
use kairos_testing::TestServer;
use temporalio_common::protos::temporal::api::command::v1::{
    Command, ScheduleActivityTaskCommandAttributes, command,
};
use temporalio_common::protos::temporal::api::common::v1::{
    ActivityType, WorkflowExecution, WorkflowType,
};
use temporalio_common::protos::temporal::api::enums::v1::{
    CommandType, EventType, PendingActivityState,
};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    DescribeWorkflowExecutionRequest, DescribeWorkflowExecutionResponse,
    PollActivityTaskQueueRequest, PollWorkflowTaskQueueRequest, PollWorkflowTaskQueueResponse,
    RespondWorkflowTaskCompletedRequest, SignalWorkflowExecutionRequest,
    StartWorkflowExecutionRequest,
};

use crate::support::{connect, unique, within};

fn queue(name: &str) -> Option<TaskQueue> {
    Some(TaskQueue {
        name: name.into(),
        ..Default::default()
    })
}

async fn until_waiting(server: &TestServer, tq: &str, kind: TaskKind) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.waiting_polls(tq, kind) == 0 {
        assert!(Instant::now() < deadline, "the poll never waited");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

type PollAnswer =
    tokio::task::JoinHandle<Result<tonic::Response<PollWorkflowTaskQueueResponse>, tonic::Status>>;

/// A workflow task poll, spawned and returned once it waits on the queue.
async fn waiting_poll(
    server: &TestServer,
    client: &temporalio_client::Client,
    tq: &str,
    identity: &str,
) -> PollAnswer {
    let mut poller = client.connection().workflow_service();
    let request = poll_workflow(tq, identity);
    let poll = tokio::spawn(async move {
        poller
            .poll_workflow_task_queue(tonic::Request::new(request))
            .await
    });
    until_waiting(server, tq, TaskKind::Workflow).await;
    poll
}

async fn transitions(
    client: &temporalio_client::Client,
    id: &str,
) -> anyhow::Result<DescribeWorkflowExecutionResponse> {
    Ok(client
        .connection()
        .workflow_service()
        .describe_workflow_execution(tonic::Request::new(DescribeWorkflowExecutionRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id: id.into(),
                run_id: String::new(),
            }),
        }))
        .await?
        .into_inner())
}

fn count(d: &DescribeWorkflowExecutionResponse) -> i64 {
    d.workflow_execution_info
        .as_ref()
        .map_or(0, |i| i.state_transition_count)
}

fn poll_workflow(tq: &str, identity: &str) -> PollWorkflowTaskQueueRequest {
    PollWorkflowTaskQueueRequest {
        namespace: "default".into(),
        task_queue: queue(tq),
        identity: identity.into(),
        ..Default::default()
    }
}

fn complete(
    task: &PollWorkflowTaskQueueResponse,
    commands: Vec<Command>,
) -> RespondWorkflowTaskCompletedRequest {
    RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        commands,
        identity: "completer".into(),
        ..Default::default()
    }
}

fn start(id: &str, tq: &str) -> StartWorkflowExecutionRequest {
    StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: id.into(),
        workflow_type: Some(WorkflowType {
            name: "handoff".into(),
        }),
        task_queue: queue(tq),
        request_id: unique("req"),
        ..Default::default()
    }
}

fn signal(id: &str) -> SignalWorkflowExecutionRequest {
    SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: id.into(),
            run_id: String::new(),
        }),
        signal_name: "ping".into(),
        request_id: unique("sig"),
        ..Default::default()
    }
}

/// The events of a workflow task answer, as (type, identity of a started event).
fn started_by(task: &PollWorkflowTaskQueueResponse) -> Vec<(i32, String)> {
    started_by_events(
        task.history
            .as_ref()
            .map(|h| h.events.as_slice())
            .unwrap_or_default(),
    )
}

fn started_by_events(
    events: &[temporalio_common::protos::temporal::api::history::v1::HistoryEvent],
) -> Vec<(i32, String)> {
    use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
    events
        .iter()
        .map(|e| {
            let identity = match &e.attributes {
                Some(Attributes::WorkflowTaskStartedEventAttributes(a)) => a.identity.clone(),
                _ => String::new(),
            };
            (e.event_type, identity)
        })
        .collect()
}

#[tokio::test]
async fn tasks_created_while_a_poll_waits_start_in_the_same_transition() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let mut svc = client.connection().workflow_service();
    let tq = unique("handoff-tq");
    let id = unique("handoff");

    // A poll waits before the workflow starts: the start itself starts the first task.
    let first_poll = waiting_poll(&server, &client, &tq, "worker-a").await;
    svc.start_workflow_execution(tonic::Request::new(start(&id, &tq)))
        .await?;
    let task = within(10, first_poll).await???.into_inner();
    assert_eq!(
        started_by(&task),
        vec![
            (EventType::WorkflowExecutionStarted as i32, String::new()),
            (EventType::WorkflowTaskScheduled as i32, String::new()),
            (EventType::WorkflowTaskStarted as i32, "worker-a".into()),
        ]
    );
    assert_eq!(
        count(&transitions(&client, &id).await?),
        1,
        "start and task start"
    );
    assert_eq!(
        server.queued_tasks(&tq, TaskKind::Workflow),
        0,
        "a task started for a poll is not also queued"
    );
    svc.respond_workflow_task_completed(tonic::Request::new(complete(&task, vec![])))
        .await?;
    let before = count(&transitions(&client, &id).await?);

    // A signal while a poll waits: signal, task scheduled and started in one transition.
    let waiting = waiting_poll(&server, &client, &tq, "worker-b").await;
    svc.signal_workflow_execution(tonic::Request::new(signal(&id)))
        .await?;
    let task = within(10, waiting).await???.into_inner();
    assert_eq!(
        started_by(&task).last(),
        Some(&(EventType::WorkflowTaskStarted as i32, "worker-b".into()))
    );
    assert_eq!(count(&transitions(&client, &id).await?), before + 1);
    assert_eq!(server.queued_tasks(&tq, TaskKind::Workflow), 0);

    // An activity scheduled while an activity poll waits is started for it by the completion.
    let mut activity_poller = client.connection().workflow_service();
    let activity_poll = tokio::spawn({
        let request = PollActivityTaskQueueRequest {
            namespace: "default".into(),
            task_queue: queue(&tq),
            identity: "activity-worker".into(),
            ..Default::default()
        };
        async move {
            activity_poller
                .poll_activity_task_queue(tonic::Request::new(request))
                .await
        }
    });
    until_waiting(&server, &tq, TaskKind::Activity).await;
    let schedule = Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: "deliver".into(),
                activity_type: Some(ActivityType {
                    name: "deliver".into(),
                }),
                task_queue: queue(&tq),
                start_to_close_timeout: Some(prost_wkt_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let before = count(&transitions(&client, &id).await?);
    svc.respond_workflow_task_completed(tonic::Request::new(complete(&task, vec![schedule])))
        .await?;
    let activity = within(10, activity_poll).await???.into_inner();
    assert_eq!(activity.activity_id, "deliver");
    let described = transitions(&client, &id).await?;
    assert_eq!(count(&described), before + 1);
    assert_eq!(server.queued_tasks(&tq, TaskKind::Activity), 0);
    assert_eq!(
        described
            .pending_activities
            .iter()
            .map(|a| (a.state, a.last_worker_identity.clone()))
            .collect::<Vec<_>>(),
        vec![(
            PendingActivityState::Started as i32,
            "activity-worker".to_string()
        )]
    );

    // Without a waiting poll: the signal is one transition, the poll's start another.
    let before = count(&transitions(&client, &id).await?);
    svc.signal_workflow_execution(tonic::Request::new(signal(&id)))
        .await?;
    assert_eq!(count(&transitions(&client, &id).await?), before + 1);
    let task = svc
        .poll_workflow_task_queue(tonic::Request::new(poll_workflow(&tq, "worker-c")))
        .await?
        .into_inner();
    assert_eq!(
        started_by(&task).last(),
        Some(&(EventType::WorkflowTaskStarted as i32, "worker-c".into()))
    );
    assert_eq!(count(&transitions(&client, &id).await?), before + 2);
    Ok(())
}

/// A task handed to a waiting poll whose history is longer than the run cache keeps (512
/// events) is answered from the store, the whole history in order.
#[tokio::test]
async fn a_handed_off_task_carries_a_history_longer_than_the_cache() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let mut svc = client.connection().workflow_service();
    let tq = unique("handoff-long-tq");
    let id = unique("handoff-long");
    svc.start_workflow_execution(tonic::Request::new(start(&id, &tq)))
        .await?;
    let task = svc
        .poll_workflow_task_queue(tonic::Request::new(poll_workflow(&tq, "worker-a")))
        .await?
        .into_inner();
    // While that task runs, 600 signals arrive; its completion schedules the next task, which
    // goes to the waiting poll with all of the history (the poll asks for no sticky queue).
    for _ in 0..600 {
        svc.signal_workflow_execution(tonic::Request::new(signal(&id)))
            .await?;
    }
    let waiting = waiting_poll(&server, &client, &tq, "worker-b").await;
    svc.respond_workflow_task_completed(tonic::Request::new(complete(&task, vec![])))
        .await?;
    let next = within(10, waiting).await???.into_inner();
    let events = next.history.unwrap_or_default().events;
    assert!(events.len() > 600, "{} events", events.len());
    assert_eq!(
        events.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        (1..=next.started_event_id).collect::<Vec<_>>()
    );
    assert_eq!(
        started_by_events(&events).last(),
        Some(&(EventType::WorkflowTaskStarted as i32, "worker-b".into()))
    );
    Ok(())
}

/// An eager start (the caller's own worker has a free slot) gets its first workflow task in the
/// answer, started in the start's transaction with the caller's identity; a retried start with
/// the same request id gets the same task again while it is still open, and none once done.
#[tokio::test]
async fn an_eager_start_hands_its_first_task_to_the_caller_and_again_on_a_retry()
-> anyhow::Result<()> {
    use temporalio_common::protos::temporal::api::command::v1::CompleteWorkflowExecutionCommandAttributes;

    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let mut svc = client.connection().workflow_service();
    let tq = unique("eager");
    let start = StartWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_id: unique("eager"),
        workflow_type: Some(WorkflowType { name: "w".into() }),
        task_queue: queue(&tq),
        request_id: unique("request"),
        identity: "the-starter".into(),
        request_eager_execution: true,
        ..Default::default()
    };
    let first = svc
        .start_workflow_execution(tonic::Request::new(start.clone()))
        .await?
        .into_inner();
    let task = first
        .eager_workflow_task
        .expect("the first task comes with the start");
    assert_eq!(task.started_event_id, 3);
    let events = task
        .history
        .as_ref()
        .map(|h| h.events.clone())
        .unwrap_or_default();
    let types: Vec<EventType> = events.iter().map(|e| e.event_type()).collect();
    assert_eq!(
        types,
        [
            EventType::WorkflowExecutionStarted,
            EventType::WorkflowTaskScheduled,
            EventType::WorkflowTaskStarted
        ]
    );
    match &events[2].attributes {
        Some(temporalio_common::protos::temporal::api::history::v1::history_event::Attributes::WorkflowTaskStartedEventAttributes(a)) => {
            assert_eq!((a.identity.as_str(), a.request_id.as_str()), ("the-starter", start.request_id.as_str()));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        server.queued_tasks(&tq, TaskKind::Workflow),
        0,
        "nothing left for pollers"
    );
    let again = svc
        .start_workflow_execution(tonic::Request::new(start.clone()))
        .await?
        .into_inner();
    assert_eq!(again.run_id, first.run_id);
    let same = again.eager_workflow_task.expect("the open task again");
    assert_eq!(same.task_token, task.task_token);
    svc.respond_workflow_task_completed(tonic::Request::new(RespondWorkflowTaskCompletedRequest {
        namespace: "default".into(),
        task_token: task.task_token.clone(),
        commands: vec![Command {
            command_type: CommandType::CompleteWorkflowExecution as i32,
            attributes: Some(
                command::Attributes::CompleteWorkflowExecutionCommandAttributes(
                    CompleteWorkflowExecutionCommandAttributes::default(),
                ),
            ),
            ..Default::default()
        }],
        identity: "the-starter".into(),
        ..Default::default()
    }))
    .await?;
    let later = svc
        .start_workflow_execution(tonic::Request::new(start))
        .await?
        .into_inner();
    assert!(later.eager_workflow_task.is_none(), "its task is done");
    Ok(())
}
