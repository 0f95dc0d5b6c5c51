//! Fencing, deterministically: a node is held right before it commits a signal to a run of a
//! shard it owns (a test hook: `KAIROS_TEST_HOLD_COMMITS`), paused until the other node has
//! taken the shard, then let go: its commit is refused for the lease, it says so, and the run's
//! history holds nothing of it. Skipped, saying so, without `KAIROS_TEST_POSTGRES_URL`.
use std::time::{Duration, Instant};

use temporalio_client::{UntypedWorkflow, WorkflowFetchHistoryOptions, WorkflowStartOptions};
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::history::v1::history_event;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    DescribeNamespaceRequest, SignalWorkflowExecutionRequest,
};

use crate::nodes::{Delivery, Node, SHARDS, cluster_url, signal};
use crate::support::connect;

/// Polls `check` every 20 ms until it holds; panics naming `what` after `within`.
fn wait_until(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let began = Instant::now();
    while !check() {
        assert!(
            began.elapsed() < within,
            "{what} did not happen in {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_past_a_takeover_is_refused() -> anyhow::Result<()> {
    let Some(url) = cluster_url("fence") else {
        return Ok(());
    };
    let gates = tempfile::tempdir()?;
    let gate_dir = gates.path().to_str().expect("utf-8").to_string();
    let held = Node::start_env(
        &url,
        "held",
        &[],
        &[("KAIROS_TEST_HOLD_COMMITS", &gate_dir)],
    );
    let other = Node::start(&url, "other");
    tokio::task::block_in_place(|| {
        wait_until("both nodes holding shards", Duration::from_secs(20), || {
            let shards = [
                held.gauge("kairos_shards_held"),
                other.gauge("kairos_shards_held"),
            ];
            shards.iter().all(|s| s.unwrap_or(0) > 0)
                && shards.iter().map(|s| s.unwrap_or(0)).sum::<usize>() == SHARDS
                && held.gauge("kairos_cluster_members") == Some(2)
        })
    });
    let on_held = connect(&held.process.url()).await?;
    let on_other = connect(&other.process.url()).await?;
    let namespace_id = on_held
        .connection()
        .workflow_service()
        .describe_namespace(tonic::Request::new(DescribeNamespaceRequest {
            namespace: "default".into(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .namespace_info
        .map(|i| i.id)
        .unwrap_or_default();

    // A run on a shard the held node owns (no worker: it just waits for signals).
    let owned: Vec<i32> = crate::roles::shards_of(&held.address(), "held");
    let id = (0..)
        .map(|i| format!("fence-{i}-{}", uuid::Uuid::new_v4()))
        .find(|id| {
            owned.contains(&kairos_core::ids::shard_for(
                &namespace_id,
                id,
                SHARDS as i32,
            ))
        })
        .expect("some id lands on the held node");
    let tq = format!("fence-{}", uuid::Uuid::new_v4());
    on_held
        .start_workflow(
            Delivery::run,
            id.clone(),
            WorkflowStartOptions::new(&tq, id.as_str()).build(),
        )
        .await?;

    // The held node's next commit for the run waits at the gate; the signal that makes it is
    // sent in the background (its caller sees whatever the refused commit gives it).
    let gate = gates.path().join(&id);
    std::fs::write(&gate, b"")?;
    let mut service = on_held.connection().workflow_service();
    let request = SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: id.clone(),
            run_id: String::new(),
        }),
        signal_name: "never-committed".into(),
        identity: "fence-test".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let signalled = tokio::spawn(async move {
        let mut request = tonic::Request::new(request);
        request.set_timeout(Duration::from_secs(30));
        service.signal_workflow_execution(request).await
    });
    tokio::task::block_in_place(|| {
        wait_until(
            "the held commit reaching the gate",
            Duration::from_secs(10),
            || held.process.log_contains("held at the test gate"),
        )
    });

    // Paused past its membership timeout: the other node takes every shard (bumping leases).
    signal(held.process.pid(), "-STOP");
    tokio::task::block_in_place(|| {
        wait_until("the takeover", Duration::from_secs(20), || {
            other.gauge("kairos_shards_held") == Some(SHARDS)
        })
    });
    // Resumed and let go: its commit meets the new lease.
    signal(held.process.pid(), "-CONT");
    std::fs::remove_file(&gate)?;
    tokio::task::block_in_place(|| {
        wait_until("the refusal", Duration::from_secs(10), || {
            held.process.log_contains("is owned by another server")
        })
    });
    let answer = signalled.await?;
    let events = on_other
        .get_workflow_handle::<UntypedWorkflow>(id.as_str())
        .fetch_history(WorkflowFetchHistoryOptions::builder().build())
        .into_events()
        .await?;
    let signals = events
        .iter()
        .filter(|e| {
            matches!(
                e.attributes,
                Some(history_event::Attributes::WorkflowExecutionSignaledEventAttributes(_))
            )
        })
        .count();
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.event_id, i as i64 + 1, "history has a gap");
    }
    // The held commit never landed; a signal stands in the history only if the call went on
    // (forwarded or retried) to the new owner, and then once.
    assert!(signals <= 1, "signalled {signals} times");
    assert_eq!(
        signals == 1,
        answer.is_ok(),
        "a signal answered OK is in the history, a refused one is not: {answer:?}"
    );
    Ok(())
}
