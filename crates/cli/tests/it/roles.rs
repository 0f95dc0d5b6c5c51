//! Roles (`--services`): a frontend-only node serves clients and workers and holds no shard;
//! a node without a frontend holds every shard and task queue and serves no public port;
//! `kairos operator cluster describe` lists both with their roles and shards. Skipped, saying
//! so, without `KAIROS_TEST_POSTGRES_URL`.
use std::time::{Duration, Instant};

use temporalio_sdk::Runtime;
use temporalio_sdk::runtime::RuntimeOptions;

use crate::nodes::{Legs, Node, SHARDS, check_all, cluster_url, start_all, worker};
use crate::support::connect;

/// `kairos operator cluster describe -o json` against `address`.
fn describe(address: &str) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args([
            "operator",
            "cluster",
            "describe",
            "--address",
            address,
            "-o",
            "json",
        ])
        .output()
        .expect("kairos runs");
    assert!(
        out.status.success(),
        "describe failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The shards the node named `name` holds, as `kairos operator cluster describe` through
/// `address` shows them.
pub(crate) fn shards_of(address: &str, name: &str) -> Vec<i32> {
    let described = describe(address);
    member(&described, name)
        .and_then(|n| n["shards"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.as_i64().map(|s| s as i32))
        .collect()
}

/// The node named `name` in a describe answer.
fn member<'a>(described: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    described["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_place_shards_on_history_nodes_and_clients_on_frontends() -> anyhow::Result<()> {
    let Some(url) = cluster_url("roles") else {
        return Ok(());
    };
    let front = Node::start_with(&url, "front", &["--services", "frontend"]);
    let back = Node::start_with(&url, "back", &["--services", "history,matching"]);

    // Until the back node's shards are all its own, described through the front.
    let began = Instant::now();
    let described = loop {
        let described = tokio::task::block_in_place(|| describe(&front.address()));
        let shards =
            |name| member(&described, name).and_then(|n| n["shards"].as_array().map(Vec::len));
        if shards("back") == Some(SHARDS) && shards("front") == Some(0) {
            break described;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "the shards did not move to the history node: {described}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(described["historyShardCount"], SHARDS);
    assert_eq!(described["persistenceStore"], "postgres12");
    let f = member(&described, "front").expect("front listed");
    let b = member(&described, "back").expect("back listed");
    assert_eq!(f["services"], serde_json::json!(["frontend"]));
    assert_eq!(f["rpcAddress"], front.address());
    assert_eq!(f["answering"], true);
    assert_eq!(b["services"], serde_json::json!(["history", "matching"]));
    assert_eq!(b["rpcAddress"], "", "no frontend, no public address");
    assert_eq!(b["reachable"], true);
    assert_eq!(front.gauge("kairos_shards_held"), Some(0));
    assert_eq!(back.gauge("kairos_shards_held"), Some(SHARDS));

    // Workflows run through the frontend alone: its clients' calls and its worker's polls
    // are served by the history and matching node.
    let client = connect(&front.process.url()).await?;
    let rt = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .heartbeat_interval(None)
            .build()
            .map_err(anyhow::Error::msg)?,
    )?;
    let tq = format!("roles-{}", uuid::Uuid::new_v4());
    let mut w = worker(&rt, &client, &tq, Legs::default())?;
    let stop = w.shutdown_handle();
    let ids: Vec<String> = (0..5)
        .map(|i| format!("roles-{i}-{}", uuid::Uuid::new_v4()))
        .collect();
    let scenario = async {
        let checked = async {
            start_all(&[&client], &tq, &ids).await?;
            check_all(&client, &ids).await
        }
        .await;
        stop();
        checked
    };
    let (run, outcome) = tokio::time::timeout(Duration::from_secs(90), async {
        tokio::join!(w.run(), scenario)
    })
    .await
    .map_err(|_| anyhow::anyhow!("the workflows did not finish in 90 s"))?;
    outcome?;
    run?;
    Ok(())
}
