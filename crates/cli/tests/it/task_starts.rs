//! A poll that takes a queued task is answered before the task's start is committed; the start
//! then commits without waiting for a sync (docs/ARCHITECTURE.md, "Durability"). Two crashes
//! around that answer, on a real server process killed with SIGKILL, driven raw through the
//! official SDK's gRPC client:
//! - the process dies after the start committed (a describe, which waits for the run's commits,
//!   shows it started): the operating system holds the commit, so after the restart the worker's
//!   completion of that attempt is taken and nothing runs twice;
//! - the start is lost (the process died before it committed, or the machine before it was
//!   synced): made certain by putting back the database files as they were before the poll. After the restart the task is dispatched again, the lost attempt's completion is
//!   refused with NOT_FOUND, the new attempt's is taken, and the history is contiguous.
//!
//! SQLite only: the second case needs the files.
use std::path::Path;
use std::time::Duration;

use crate::support::{Kairos, connect, free_port};
use temporalio_client::Client;
use temporalio_common::protos::temporal::api::command::v1::{
    Command, CompleteWorkflowExecutionCommandAttributes, ScheduleActivityTaskCommandAttributes,
    command,
};
use temporalio_common::protos::temporal::api::common::v1::{
    ActivityType, WorkflowExecution, WorkflowType,
};
use temporalio_common::protos::temporal::api::enums::v1::{
    CommandType, EventType, PendingWorkflowTaskState,
};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    DescribeWorkflowExecutionRequest, GetWorkflowExecutionHistoryRequest,
    PollActivityTaskQueueRequest, PollActivityTaskQueueResponse, PollWorkflowTaskQueueRequest,
    PollWorkflowTaskQueueResponse, RecordActivityTaskHeartbeatRequest,
    RespondActivityTaskCompletedRequest, RespondWorkflowTaskCompletedRequest,
    StartWorkflowExecutionRequest,
};

pub(crate) fn queue(name: &str) -> Option<TaskQueue> {
    Some(TaskQueue {
        name: name.into(),
        ..Default::default()
    })
}

pub(crate) async fn start_workflow(client: &Client, id: &str, tq: &str) -> anyhow::Result<()> {
    client
        .connection()
        .workflow_service()
        .start_workflow_execution(tonic::Request::new(StartWorkflowExecutionRequest {
            namespace: "default".into(),
            workflow_id: id.into(),
            workflow_type: Some(WorkflowType {
                name: "starts".into(),
            }),
            task_queue: queue(tq),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        }))
        .await?;
    Ok(())
}

/// Polls until a task comes (a restarted server may need a moment to queue it): `poll` sends
/// one poll and returns its answer and whether it holds a task.
async fn poll_until<T, F, Fut>(what: &str, mut poll: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(T, bool)>>,
{
    for _ in 0..5 {
        let (answer, has_task) = poll().await?;
        if has_task {
            return Ok(answer);
        }
    }
    anyhow::bail!("no {what} task came")
}

pub(crate) async fn poll_workflow(
    client: &Client,
    tq: &str,
) -> anyhow::Result<PollWorkflowTaskQueueResponse> {
    poll_until("workflow", || async {
        let task = client
            .connection()
            .workflow_service()
            .poll_workflow_task_queue(tonic::Request::new(PollWorkflowTaskQueueRequest {
                namespace: "default".into(),
                task_queue: queue(tq),
                identity: "starts-test".into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        let has_task = !task.task_token.is_empty();
        Ok((task, has_task))
    })
    .await
}

async fn poll_activity(client: &Client, tq: &str) -> anyhow::Result<PollActivityTaskQueueResponse> {
    poll_until("activity", || async {
        let task = client
            .connection()
            .workflow_service()
            .poll_activity_task_queue(tonic::Request::new(PollActivityTaskQueueRequest {
                namespace: "default".into(),
                task_queue: queue(tq),
                identity: "starts-test".into(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        let has_task = !task.task_token.is_empty();
        Ok((task, has_task))
    })
    .await
}

async fn complete_workflow_task(
    client: &Client,
    token: &[u8],
    command: Command,
) -> Result<(), tonic::Status> {
    client
        .connection()
        .workflow_service()
        .respond_workflow_task_completed(tonic::Request::new(RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: token.to_vec(),
            commands: vec![command],
            identity: "starts-test".into(),
            ..Default::default()
        }))
        .await
        .map(|_| ())
}

async fn complete_activity(client: &Client, token: &[u8]) -> Result<(), tonic::Status> {
    client
        .connection()
        .workflow_service()
        .respond_activity_task_completed(tonic::Request::new(RespondActivityTaskCompletedRequest {
            namespace: "default".into(),
            task_token: token.to_vec(),
            identity: "starts-test".into(),
            ..Default::default()
        }))
        .await
        .map(|_| ())
}

async fn heartbeat(client: &Client, token: &[u8]) -> Result<(), tonic::Status> {
    client
        .connection()
        .workflow_service()
        .record_activity_task_heartbeat(tonic::Request::new(RecordActivityTaskHeartbeatRequest {
            namespace: "default".into(),
            task_token: token.to_vec(),
            identity: "starts-test".into(),
            ..Default::default()
        }))
        .await
        .map(|_| ())
}

fn schedule(activity_id: &str, tq: &str) -> Command {
    Command {
        command_type: CommandType::ScheduleActivityTask as i32,
        attributes: Some(command::Attributes::ScheduleActivityTaskCommandAttributes(
            ScheduleActivityTaskCommandAttributes {
                activity_id: activity_id.into(),
                activity_type: Some(ActivityType {
                    name: "step".into(),
                }),
                task_queue: queue(tq),
                start_to_close_timeout: Some(prost_wkt_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    }
}

fn finish() -> Command {
    Command {
        command_type: CommandType::CompleteWorkflowExecution as i32,
        attributes: Some(
            command::Attributes::CompleteWorkflowExecutionCommandAttributes(
                CompleteWorkflowExecutionCommandAttributes::default(),
            ),
        ),
        ..Default::default()
    }
}

/// Waits for the run's commits (a describe takes the run's lock) and returns whether its
/// workflow task is started.
async fn workflow_task_started(client: &Client, id: &str) -> anyhow::Result<bool> {
    let described = client
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
        .into_inner();
    Ok(described
        .pending_workflow_task
        .is_some_and(|t| t.state() == PendingWorkflowTaskState::Started))
}

async fn history(client: &Client, id: &str) -> anyhow::Result<Vec<EventType>> {
    let events = client
        .connection()
        .workflow_service()
        .get_workflow_execution_history(tonic::Request::new(GetWorkflowExecutionHistoryRequest {
            namespace: "default".into(),
            execution: Some(WorkflowExecution {
                workflow_id: id.into(),
                run_id: String::new(),
            }),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .history
        .map(|h| h.events)
        .unwrap_or_default();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.event_id, i as i64 + 1, "{id}: event ids contiguous");
    }
    Ok(events.iter().map(|e| e.event_type()).collect())
}

/// The database files as stable storage holds them now (the server is stopped).
fn snapshot(db: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for suffix in ["", "-wal"] {
        let from = format!("{}{suffix}", db.display());
        if Path::new(&from).exists() {
            std::fs::copy(&from, to.join(format!("kairos.db{suffix}")))?;
        }
    }
    Ok(())
}

/// Puts the files of `snapshot` back: what a machine crash leaves of commits never synced.
fn restore(db: &Path, from: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal"] {
        std::fs::copy(
            from.join(format!("kairos.db{suffix}")),
            format!("{}{suffix}", db.display()),
        )?;
    }
    // The log's shared-memory index is rebuilt from the log by the next open.
    let _ = std::fs::remove_file(format!("{}-shm", db.display()));
    Ok(())
}

fn not_found(result: Result<(), tonic::Status>, what: &str) {
    match result {
        Err(status) => assert_eq!(status.code(), tonic::Code::NotFound, "{what}: {status:?}"),
        Ok(()) => panic!("{what}: the lost attempt's completion was taken"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_starts_survive_a_process_crash_and_lost_ones_run_again() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("kairos.db");
    let before_start = dir.path().join("before-start");
    let port = free_port();
    let tq = format!("starts-{}", uuid::Uuid::new_v4());
    let id = format!("starts-{}", uuid::Uuid::new_v4());

    // The process dies between a workflow task's answer and its completion, after the start
    // committed: the completion is taken after the restart.
    let server = Kairos::start_sqlite(&db, port);
    let client = connect(&server.url()).await?;
    start_workflow(&client, &id, &tq).await?;
    let task = poll_workflow(&client, &tq).await?;
    assert!(workflow_task_started(&client, &id).await?);
    server.kill9();
    let server = Kairos::start_sqlite(&db, port);
    let client = connect(&server.url()).await?;
    complete_workflow_task(&client, &task.task_token, schedule("first", &tq))
        .await
        .map_err(|s| anyhow::anyhow!("the committed start's completion was refused: {s:?}"))?;

    // The same for a heartbeating activity: its heartbeat and completion are taken after the
    // restart.
    let activity = poll_activity(&client, &tq).await?;
    heartbeat(&client, &activity.task_token).await?;
    server.kill9();
    let server = Kairos::start_sqlite(&db, port);
    let client = connect(&server.url()).await?;
    heartbeat(&client, &activity.task_token).await?;
    complete_activity(&client, &activity.task_token).await?;

    // A workflow task's start is lost.
    server.kill9();
    snapshot(&db, &before_start)?;
    let server = Kairos::start_sqlite(&db, port);
    let client = connect(&server.url()).await?;
    let lost = poll_workflow(&client, &tq).await?;
    server.kill9();
    restore(&db, &before_start)?;
    let server = Kairos::start_sqlite(&db, port);
    let client = connect(&server.url()).await?;
    let again = poll_workflow(&client, &tq).await?;
    assert_eq!(
        (again.started_event_id, again.attempt),
        (lost.started_event_id, lost.attempt),
        "the same attempt is dispatched again"
    );
    not_found(
        complete_workflow_task(&client, &lost.task_token, schedule("second", &tq)).await,
        "workflow task",
    );
    complete_workflow_task(&client, &again.task_token, schedule("second", &tq))
        .await
        .map_err(|s| anyhow::anyhow!("the new attempt's completion was refused: {s:?}"))?;

    // The same for an activity that never heartbeated.
    server.kill9();
    snapshot(&db, &before_start)?;
    let server = Kairos::start_sqlite(&db, port);
    let client = connect(&server.url()).await?;
    let lost = poll_activity(&client, &tq).await?;
    server.kill9();
    restore(&db, &before_start)?;
    let server = Kairos::start_sqlite(&db, port);
    let client = connect(&server.url()).await?;
    let again = poll_activity(&client, &tq).await?;
    assert_eq!(again.activity_id, lost.activity_id);
    assert_eq!(again.attempt, lost.attempt, "the same attempt runs again");
    not_found(
        complete_activity(&client, &lost.task_token).await,
        "activity",
    );
    complete_activity(&client, &again.task_token).await?;

    // The workflow finishes; each activity was scheduled, started and completed once.
    let task = poll_workflow(&client, &tq).await?;
    complete_workflow_task(&client, &task.task_token, finish()).await?;
    let events = tokio::time::timeout(Duration::from_secs(10), history(&client, &id)).await??;
    let count = |kind: EventType| events.iter().filter(|e| **e == kind).count();
    assert_eq!(count(EventType::ActivityTaskScheduled), 2, "{events:?}");
    assert_eq!(count(EventType::ActivityTaskStarted), 2, "{events:?}");
    assert_eq!(count(EventType::ActivityTaskCompleted), 2, "{events:?}");
    assert_eq!(
        events.last(),
        Some(&EventType::WorkflowExecutionCompleted),
        "{events:?}"
    );
    drop(server);
    Ok(())
}
