//! A rolling restart of a three-node cluster under load: each node in turn stops on SIGTERM
//! (handing its shards and queued tasks over) and starts again on the same ports, while
//! clients keep starting and signalling workflows through every node and workers on two of
//! them keep running them. No workflow fails, and the clients see no error but UNAVAILABLE,
//! which they retry. Skipped, saying so, without `KAIROS_TEST_POSTGRES_URL`.
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use temporalio_client::{Client, WorkflowStartOptions, errors::WorkflowStartError};
use temporalio_common::protos::temporal::api::common::v1::{Payload, Payloads, WorkflowExecution};
use temporalio_common::protos::temporal::api::workflowservice::v1::SignalWorkflowExecutionRequest;
use temporalio_sdk::Runtime;
use temporalio_sdk::runtime::RuntimeOptions;

use crate::nodes::{Delivery, Legs, Node, check_all, cluster_url, wait_for_balance, worker};
use crate::support::connect;

/// How long one start or signal may keep meeting UNAVAILABLE before the test fails.
const RETRY_FOR: Duration = Duration::from_secs(30);

/// How long one call may go unanswered before the test fails.
const CALL_FOR: Duration = Duration::from_secs(30);

/// Starts `id` through the clients in turn from `first`, retrying on UNAVAILABLE (counted in
/// `retried`); any other error fails. A retried start that finds the workflow already started
/// had landed before its answer was lost.
async fn start(
    clients: &[&Client],
    first: usize,
    tq: &str,
    id: &str,
    retried: &AtomicU32,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + RETRY_FOR;
    for attempt in 0.. {
        let client = clients[(first + attempt) % clients.len()];
        let options = WorkflowStartOptions::new(tq, id).build();
        let call = client.start_workflow(Delivery::run, id.to_string(), options);
        let answer = tokio::time::timeout(CALL_FOR, call).await.map_err(|_| {
            anyhow::anyhow!("starting {id} through client {first}+{attempt}: no answer")
        })?;
        match answer {
            Ok(_) => return Ok(()),
            Err(WorkflowStartError::AlreadyStarted { .. }) if attempt > 0 => return Ok(()),
            Err(WorkflowStartError::Rpc(status))
                if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                retried.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => anyhow::bail!("starting {id}: {e:?}"),
        }
    }
    unreachable!()
}

/// Tips `id` once: the same request id on every attempt, so a retried signal that had landed
/// is not delivered twice.
async fn tip(
    clients: &[&Client],
    first: usize,
    id: &str,
    retried: &AtomicU32,
) -> anyhow::Result<()> {
    let request = SignalWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: id.into(),
            run_id: String::new(),
        }),
        signal_name: "tip".into(),
        input: Some(Payloads {
            payloads: vec![Payload {
                metadata: [("encoding".to_string(), b"json/plain".to_vec())].into(),
                data: b"1".to_vec(),
                ..Default::default()
            }],
        }),
        identity: "rolling-test".into(),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let deadline = Instant::now() + RETRY_FOR;
    for attempt in 0.. {
        let client = clients[(first + attempt) % clients.len()];
        let mut service = client.connection().workflow_service();
        let call = service.signal_workflow_execution(tonic::Request::new(request.clone()));
        let answer = tokio::time::timeout(CALL_FOR, call).await.map_err(|_| {
            anyhow::anyhow!("tipping {id} through client {first}+{attempt}: no answer")
        })?;
        match answer {
            Ok(_) => return Ok(()),
            Err(status)
                if status.code() == tonic::Code::Unavailable && Instant::now() < deadline =>
            {
                retried.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => anyhow::bail!("signalling {id}: {status:?}"),
        }
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_nothing() -> anyhow::Result<()> {
    let Some(url) = cluster_url("rolling") else {
        return Ok(());
    };
    let mut nodes = vec![
        Some(Node::start(&url, "a")),
        Some(Node::start(&url, "b")),
        Some(Node::start(&url, "c")),
    ];
    let settled = |nodes: &[Option<Node>], within| {
        let live: Vec<&Node> = nodes.iter().flatten().collect();
        wait_for_balance(&live, 3, within)
    };
    settled(&nodes, Duration::from_secs(20));
    let urls: Vec<String> = nodes.iter().flatten().map(|n| n.process.url()).collect();
    let on_a = connect(&urls[0]).await?;
    let on_b = connect(&urls[1]).await?;
    let on_c = connect(&urls[2]).await?;

    let rt = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .heartbeat_interval(None)
            .build()
            .map_err(anyhow::Error::msg)?,
    )?;
    let tq = format!("rolling-{}", uuid::Uuid::new_v4());
    let legs = Legs::default();
    let mut w1 = worker(&rt, &on_a, &tq, legs.clone())?;
    let mut w2 = worker(&rt, &on_b, &tq, legs.clone())?;
    let (stop1, stop2) = (w1.shutdown_handle(), w2.shutdown_handle());

    let restarted = AtomicBool::new(false);
    let started = AtomicU32::new(0);
    let retried = AtomicU32::new(0);
    let clients = [&on_a, &on_b, &on_c];
    // Three loops of clients start and tip workflows through every node until the restarts
    // are over.
    let starter = |lane: usize| {
        let (restarted, retried, clients, tq) = (&restarted, &retried, &clients, &tq);
        let started = &started;
        async move {
            let mut ids = Vec::new();
            let mut i = lane;
            while !restarted.load(Ordering::SeqCst) || ids.len() < 10 {
                let id = format!("rolling-{i}-{}", uuid::Uuid::new_v4());
                start(clients, i, tq, &id, retried).await?;
                tip(clients, i + 1, &id, retried).await?;
                ids.push(id);
                started.fetch_add(1, Ordering::SeqCst);
                i += 3;
            }
            anyhow::Ok(ids)
        }
    };
    let load = async {
        let (one, two, three) = tokio::join!(starter(0), starter(1), starter(2));
        anyhow::Ok([one?, two?, three?].concat())
    };
    // Each node in turn stops gracefully and comes back on the same ports; the next waits
    // until the cluster has settled again.
    let restarts = async {
        // The restarts begin once workflows are in flight.
        let deadline = Instant::now() + Duration::from_secs(30);
        while started.load(Ordering::SeqCst) < 6 {
            assert!(
                Instant::now() < deadline,
                "no workflow started before the restarts"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for which in 0..nodes.len() {
            let node = nodes[which].take().expect("running");
            let began = Instant::now();
            let back = tokio::task::block_in_place(|| node.restart());
            nodes[which] = Some(back);
            let took = tokio::task::block_in_place(|| settled(&nodes, Duration::from_secs(20)));
            eprintln!(
                "node {which} restarted in {:?}, cluster settled {took:?} later",
                began.elapsed()
            );
        }
        restarted.store(true, Ordering::SeqCst);
    };
    let scenario = async {
        let checked = async {
            let (ids, ()) = tokio::join!(load, restarts);
            let ids = ids?;
            check_all(&on_c, &ids).await?;
            anyhow::Ok(ids.len())
        }
        .await;
        // The workers stop whatever happened, so that a failure is reported, not a timeout.
        stop1();
        stop2();
        checked
    };
    let all = async { tokio::join!(w1.run(), w2.run(), scenario) };
    let (run1, run2, outcome) = tokio::time::timeout(Duration::from_secs(150), all)
        .await
        .map_err(|_| anyhow::anyhow!("the rolling restart did not finish in 3 minutes"))?;
    let count = outcome?;
    run1?;
    run2?;
    eprintln!(
        "{count} workflows completed; {} calls met UNAVAILABLE and were retried",
        retried.load(Ordering::SeqCst)
    );
    Ok(())
}
