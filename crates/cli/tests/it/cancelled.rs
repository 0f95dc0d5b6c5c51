//! A call whose caller goes away while its commit is in flight (a client cancelling, a node
//! that forwarded it giving up) still gets what follows the commit: here a signal whose client
//! went away while its commit was held just after committing (the test hook
//! `KAIROS_TEST_HOLD_EFFECTS`) still schedules the workflow task it made, which a worker's poll
//! then receives. Before the follow-up ran in a task of its own, the dropped call took the task
//! with it and the run waited forever.
use std::time::{Duration, Instant};

use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    RespondWorkflowTaskCompletedRequest, SignalWorkflowExecutionRequest,
};

use crate::support::{Kairos, connect, free_port};
use crate::task_starts::{poll_workflow, start_workflow};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_whose_caller_left_mid_commit_still_schedules_its_task() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let gates = tempfile::tempdir()?;
    let server = Kairos::start_sqlite_env(
        &dir.path().join("k.db"),
        free_port(),
        &[(
            "KAIROS_TEST_HOLD_EFFECTS",
            gates.path().to_str().expect("utf-8"),
        )],
    );
    let client = connect(&server.url()).await?;
    let (id, tq) = ("cancelled-signal", "cancelled");
    start_workflow(&client, id, tq).await?;
    // The first workflow task completes with nothing to do: the run waits, no task pending.
    let first = poll_workflow(&client, tq).await?;
    client
        .connection()
        .workflow_service()
        .respond_workflow_task_completed(tonic::Request::new(RespondWorkflowTaskCompletedRequest {
            namespace: "default".into(),
            task_token: first.task_token,
            identity: "cancelled-test".into(),
            ..Default::default()
        }))
        .await?;

    // The signal commits, is held before its follow-up, and its caller gives up meanwhile.
    let gate = gates.path().join(id);
    std::fs::write(&gate, b"")?;
    let signal = tonic::Request::new(SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: id.into(),
            run_id: String::new(),
        }),
        signal_name: "go".into(),
        identity: "cancelled-test".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    });
    let mut service = client.connection().workflow_service();
    let call = tokio::spawn(async move { service.signal_workflow_execution(signal).await });
    let began = Instant::now();
    while !server.log_contains("commit held at the test gate") {
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "the gate was never reached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The caller goes away (its stream is reset), the commit already made. The pause lets
    // the reset reach the server before the gate opens, so that a server that drops the
    // follow-up with the call fails below; a correct one passes however long it is.
    call.abort();
    assert!(call.await.is_err_and(|e| e.is_cancelled()));
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_file(&gate)?;

    // The task the signal scheduled reaches a poll, carrying the signal.
    let task = tokio::time::timeout(Duration::from_secs(30), poll_workflow(&client, tq))
        .await
        .map_err(|_| anyhow::anyhow!("the signal's workflow task never came"))??;
    let signalled = task
        .history
        .map(|h| h.events)
        .unwrap_or_default()
        .iter()
        .any(|e| e.event_type == EventType::WorkflowExecutionSignaled as i32);
    assert!(signalled, "the task carries the signal");
    Ok(())
}
