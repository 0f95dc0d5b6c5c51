//! Worker heartbeats in a cluster: one node keeps a namespace's heartbeats (placed like a task
//! queue), so a worker heartbeating through one node is listed, counted and described through
//! every other. Skipped, saying so, without `KAIROS_TEST_POSTGRES_URL`.
use temporalio_common::protos::temporal::api::enums::v1::WorkerStatus;
use temporalio_common::protos::temporal::api::worker::v1::WorkerHeartbeat;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CountWorkersRequest, DescribeWorkerRequest, ListWorkersRequest, RecordWorkerHeartbeatRequest,
};

use crate::nodes::{Node, cluster_url};
use crate::support::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_heartbeating_through_one_node_is_listed_through_all() -> anyhow::Result<()> {
    let Some(url) = cluster_url("beats") else {
        return Ok(());
    };
    let nodes = [
        Node::start(&url, "a"),
        Node::start(&url, "b"),
        Node::start(&url, "c"),
    ];
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(connect(&node.process.url()).await?);
    }
    // The members settle first, so that every node routes to the same keeper.
    tokio::task::block_in_place(|| {
        crate::nodes::wait_for_balance(
            &nodes.iter().collect::<Vec<_>>(),
            3,
            std::time::Duration::from_secs(20),
        )
    });
    let key = format!("beats-{}", uuid::Uuid::new_v4());
    clients[0]
        .connection()
        .workflow_service()
        .record_worker_heartbeat(tonic::Request::new(RecordWorkerHeartbeatRequest {
            namespace: "default".into(),
            worker_heartbeat: vec![WorkerHeartbeat {
                worker_instance_key: key.clone(),
                task_queue: "beats".into(),
                status: WorkerStatus::Running as i32,
                ..Default::default()
            }],
            ..Default::default()
        }))
        .await?;
    let query = format!("WorkerInstanceKey = '{key}'");
    for (i, client) in clients.iter().enumerate() {
        let mut service = client.connection().workflow_service();
        let listed = service
            .list_workers(tonic::Request::new(ListWorkersRequest {
                namespace: "default".into(),
                query: query.clone(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        #[allow(deprecated)]
        let keys: Vec<String> = listed
            .workers_info
            .iter()
            .filter_map(|w| w.worker_heartbeat.as_ref())
            .map(|h| h.worker_instance_key.clone())
            .collect();
        assert_eq!(keys, std::slice::from_ref(&key), "listed through node {i}");
        let counted = service
            .count_workers(tonic::Request::new(CountWorkersRequest {
                namespace: "default".into(),
                query: query.clone(),
                ..Default::default()
            }))
            .await?
            .into_inner();
        assert_eq!(counted.count, 1, "counted through node {i}");
        let described = service
            .describe_worker(tonic::Request::new(DescribeWorkerRequest {
                namespace: "default".into(),
                worker_instance_key: key.clone(),
            }))
            .await;
        assert!(
            described.is_ok(),
            "described through node {i}: {described:?}"
        );
    }
    Ok(())
}
