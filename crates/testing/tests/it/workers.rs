//! Worker heartbeats end to end: official SDK workers heartbeat (the namespace says the server
//! takes them), `ListWorkers`, `CountWorkers` and `DescribeWorker` show them with their slots,
//! once they stop they say so, and a worker nothing heartbeats for leaves the list.
use std::time::{Duration, Instant};

use kairos_core::ServerOptions;
use kairos_testing::TestServer;
use temporalio_common::protos::temporal::api::enums::v1::WorkerStatus;
use temporalio_common::protos::temporal::api::worker::v1::WorkerHeartbeat;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CountWorkersRequest, DescribeNamespaceRequest, DescribeWorkerRequest, ListWorkersRequest,
    RecordWorkerHeartbeatRequest,
};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker};

use crate::support::{connect, unique};

struct Noop;

/// Registered so the workers poll for activities; never run.
#[activities]
impl Noop {
    #[activity(name = "noop")]
    async fn noop(_ctx: ActivityContext) -> Result<(), ActivityError> {
        Ok(())
    }
}

async fn listed(
    client: &temporalio_client::Client,
    query: &str,
) -> anyhow::Result<Vec<WorkerHeartbeat>> {
    let answer = client
        .connection()
        .workflow_service()
        .list_workers(tonic::Request::new(ListWorkersRequest {
            namespace: "default".into(),
            query: query.into(),
            ..Default::default()
        }))
        .await?
        .into_inner();
    #[allow(deprecated)]
    let workers = answer.workers_info;
    Ok(workers
        .into_iter()
        .filter_map(|w| w.worker_heartbeat)
        .collect())
}

#[tokio::test]
async fn heartbeating_workers_are_listed_then_expire() -> anyhow::Result<()> {
    let server = TestServer::builder()
        .options(ServerOptions {
            worker_heartbeat_ttl: Duration::from_secs(3),
            ..ServerOptions::default()
        })
        .start()
        .await?;
    let client = connect(&server).await?;
    let capabilities = client
        .connection()
        .workflow_service()
        .describe_namespace(tonic::Request::new(DescribeNamespaceRequest {
            namespace: "default".into(),
            ..Default::default()
        }))
        .await?
        .into_inner()
        .namespace_info
        .and_then(|i| i.capabilities)
        .unwrap_or_default();
    assert!(capabilities.worker_heartbeats);
    let runtime = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .heartbeat_interval(Some(Duration::from_secs(1)))
            .build()
            .map_err(anyhow::Error::msg)?,
    )?;
    let tq = unique("heartbeats");
    // One process may not run two workers of one build on one queue: two builds.
    let _never_run = Noop::noop;
    let worker = |build: &str| -> anyhow::Result<Worker> {
        let options = temporalio_sdk::WorkerOptions::new(tq.as_str())
            .deployment_options(
                temporalio_common::worker::WorkerDeploymentOptions::from_build_id(build.to_owned()),
            )
            .graceful_shutdown_period(Duration::from_secs(2))
            .register_activities(Noop)
            .build();
        Ok(Worker::new(&runtime, client.clone(), options)?)
    };
    let (mut first, mut second) = (worker("one")?, worker("two")?);
    let stop = [first.shutdown_handle(), second.shutdown_handle()];
    let query = format!("TaskQueue = '{tq}'");
    let checks = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let two = loop {
            let now = listed(&client, &query).await?;
            if now.len() == 2 {
                break now;
            }
            assert!(
                Instant::now() < deadline,
                "two workers never listed: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_ne!(two[0].worker_instance_key, two[1].worker_instance_key);
        for w in &two {
            assert_eq!(w.task_queue, tq);
            assert_eq!(w.status, WorkerStatus::Running as i32);
            assert!(
                w.activity_task_slots_info.is_some(),
                "slots reported: {w:?}"
            );
        }
        let count = client
            .connection()
            .workflow_service()
            .count_workers(tonic::Request::new(CountWorkersRequest {
                namespace: "default".into(),
                query: query.clone(),
                ..Default::default()
            }))
            .await?
            .into_inner()
            .count;
        assert_eq!(count, 2);
        let described = client
            .connection()
            .workflow_service()
            .describe_worker(tonic::Request::new(DescribeWorkerRequest {
                namespace: "default".into(),
                worker_instance_key: two[0].worker_instance_key.clone(),
            }))
            .await?
            .into_inner()
            .worker_info
            .and_then(|i| i.worker_heartbeat)
            .expect("a heartbeat");
        assert_eq!(described.worker_instance_key, two[0].worker_instance_key);
        let unknown = client
            .connection()
            .workflow_service()
            .describe_worker(tonic::Request::new(DescribeWorkerRequest {
                namespace: "default".into(),
                worker_instance_key: "nobody".into(),
            }))
            .await
            .expect_err("unknown worker");
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        for shutdown in &stop {
            shutdown();
        }
        anyhow::Ok(())
    };
    let (runs, checked) = tokio::join!(
        async {
            let (a, b) = tokio::join!(first.run(), second.run());
            a?;
            b?;
            anyhow::Ok(())
        },
        checks
    );
    checked?;
    runs?;
    // A stopped worker reports itself shutting down...
    for w in listed(&client, &query).await? {
        assert_ne!(w.status, WorkerStatus::Running as i32, "{w:?}");
    }
    // A worker nothing heartbeats for any more (its process gone) leaves the list once its
    // last heartbeat is older than the ttl. (The SDK keeps heartbeating stopped workers while
    // its process lives, so this one heartbeats raw, once.)
    let gone_queue = unique("gone");
    client
        .connection()
        .workflow_service()
        .record_worker_heartbeat(tonic::Request::new(RecordWorkerHeartbeatRequest {
            namespace: "default".into(),
            worker_heartbeat: vec![WorkerHeartbeat {
                worker_instance_key: unique("gone-worker"),
                task_queue: gone_queue.clone(),
                status: WorkerStatus::Running as i32,
                ..Default::default()
            }],
            ..Default::default()
        }))
        .await?;
    let gone_query = format!("TaskQueue = '{gone_queue}'");
    assert_eq!(listed(&client, &gone_query).await?.len(), 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = listed(&client, &gone_query).await?;
        if now.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an expired worker still listed: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
