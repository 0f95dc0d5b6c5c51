//! GetClusterInfo on the real binary: the cluster id is made once and kept in the database, so
//! a restart reports the same one; the rest says what the reference says of a one-node cluster.
use temporalio_common::protos::temporal::api::workflowservice::v1::GetClusterInfoRequest;

use crate::support::{Kairos, connect, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_id_is_kept_across_restarts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("kairos.db");
    let port = free_port();
    let ask = |url: String| async move {
        let client = connect(&url).await?;
        let info = client
            .connection()
            .workflow_service()
            .get_cluster_info(tonic::Request::new(GetClusterInfoRequest {}))
            .await?
            .into_inner();
        anyhow::Ok(info)
    };
    let server = Kairos::start(&db, port);
    let first = ask(server.url()).await?;
    assert_eq!(ask(server.url()).await?.cluster_id, first.cluster_id);
    server.kill9();
    let server = Kairos::start(&db, port);
    let again = ask(server.url()).await?;
    assert_eq!(again.cluster_id, first.cluster_id, "kept in the database");
    assert!(
        uuid::Uuid::parse_str(&first.cluster_id).is_ok(),
        "{first:?}"
    );
    assert_eq!(first.cluster_name, "active");
    assert_eq!(first.history_shard_count, 4);
    assert!(
        ["sqlite", "postgres12"].contains(&first.persistence_store.as_str()),
        "{first:?}"
    );
    assert_eq!(
        first
            .supported_clients
            .get("temporal-cli")
            .map(String::as_str),
        Some("<2.0.0")
    );
    drop(server);
    Ok(())
}
