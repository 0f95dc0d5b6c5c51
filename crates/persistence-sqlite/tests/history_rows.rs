//! SQLite's history rows (a transition's events in one row, chained to the run's previous row):
//! deleting a run removes every row of its chain and no other. The store-level behaviour of
//! history is in the conformance suite.

use kairos_persistence::{ExecutionWrite, Store, WriteBatch};
use kairos_persistence_sqlite::{Location, SqliteStore};

fn events(run: &str, ids: std::ops::RangeInclusive<i64>) -> Vec<(String, i64, Vec<u8>)> {
    ids.map(|id| (run.to_string(), id, format!("{run}/{id}").into_bytes()))
        .collect()
}

fn batch(range_id: i64) -> WriteBatch {
    WriteBatch {
        shard_id: 0,
        range_id,
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        ..Default::default()
    }
}

fn history_rows(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn deleting_a_run_removes_every_row_of_its_chain_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open(&Location::File(path.clone())).unwrap();
    let range_id = store.acquire_shards(&[0]).await.unwrap()[0].range_id;
    let insert = |run: &str| {
        (
            run.to_string(),
            ExecutionWrite::Insert {
                state: b"state".to_vec(),
            },
        )
    };
    let mut first = batch(range_id);
    first.executions = vec![insert("run-a"), insert("run-b")];
    first.events = events("run-a", 1..=200);
    first.events.extend(events("run-b", 1..=2));
    store.commit(first).await.unwrap();
    for id in 201..=230 {
        let mut b = batch(range_id);
        b.events = events("run-a", id..=id);
        store.commit(b).await.unwrap();
    }
    let mut more = batch(range_id);
    more.events = events("run-b", 3..=3);
    store.commit(more).await.unwrap();
    // run-a: 200 events in rows of at most 64 (4 rows), then 30 rows; run-b: 2 rows.
    assert_eq!(history_rows(&path), 36);
    let mut delete = batch(range_id);
    delete.executions = vec![("run-a".into(), ExecutionWrite::Delete)];
    store.commit(delete).await.unwrap();
    assert_eq!(history_rows(&path), 2, "run-b's rows remain");
    assert_eq!(
        store
            .read_events("ns", "wf", "run-b", 1, 10)
            .await
            .unwrap()
            .len(),
        3
    );
}
