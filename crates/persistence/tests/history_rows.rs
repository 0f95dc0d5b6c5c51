//! History rows: a transition's events are stored together (at most a bounded number per row)
//! and read back one by one from any event id.

use kairos_persistence::sqlite::{Location, SqliteStore};
use kairos_persistence::{Store, WriteBatch};

#[tokio::test]
async fn long_transitions_read_back_from_any_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Location::File(dir.path().join("k.db"))).unwrap();
    let range_id = store.acquire_shards(1).await.unwrap()[0].range_id;
    let event = |run: &str, id: i64| format!("{run}/{id}").into_bytes();
    // One transition of 200 events for run-a (a reset copies a long prefix like this), and a
    // continue-as-new style batch holding the end of run-b and the start of run-c.
    let mut batch = WriteBatch {
        shard_id: 0,
        range_id,
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        ..Default::default()
    };
    batch.events = (1..=200)
        .map(|id| ("run-a".to_string(), id, event("run-a", id)))
        .collect();
    store.commit(batch.clone()).await.unwrap();
    batch.events = (1..=3)
        .map(|id| ("run-b".to_string(), id, event("run-b", id)))
        .chain((1..=2).map(|id| ("run-c".to_string(), id, event("run-c", id))))
        .collect();
    store.commit(batch).await.unwrap();

    let all = store.read_events("run-a", 1, 1000).await.unwrap();
    assert_eq!(
        all,
        (1..=200)
            .map(|id| (id, event("run-a", id)))
            .collect::<Vec<_>>()
    );
    for first in [1, 63, 64, 65, 128, 129, 190] {
        let page = store.read_events("run-a", first, 10).await.unwrap();
        let want: Vec<_> = (first..(first + 10).min(201))
            .map(|id| (id, event("run-a", id)))
            .collect();
        assert_eq!(page, want, "page from {first}");
    }
    assert!(
        store
            .read_events("run-a", 201, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.read_events("run-a", 5, 0).await.unwrap().is_empty());
    assert_eq!(store.read_events("run-b", 1, 10).await.unwrap().len(), 3);
    assert_eq!(
        store.read_events("run-c", 2, 10).await.unwrap(),
        vec![(2, event("run-c", 2))]
    );
}
