//! History rows: a transition's events are stored together (at most a bounded number per row),
//! each row chained to the run's previous one, and read back one by one from any event id.

use kairos_persistence::sqlite::{Location, SqliteStore};
use kairos_persistence::{Error, ExecutionWrite, Store, WriteBatch};

const NS: &str = "ns";
const WF: &str = "wf";

fn event(run: &str, id: i64) -> Vec<u8> {
    format!("{run}/{id}").into_bytes()
}

fn events(run: &str, ids: std::ops::RangeInclusive<i64>) -> Vec<(String, i64, Vec<u8>)> {
    ids.map(|id| (run.to_string(), id, event(run, id)))
        .collect()
}

fn batch(range_id: i64) -> WriteBatch {
    WriteBatch {
        shard_id: 0,
        range_id,
        namespace_id: NS.into(),
        workflow_id: WF.into(),
        ..Default::default()
    }
}

fn insert(run: &str) -> (String, ExecutionWrite) {
    (
        run.to_string(),
        ExecutionWrite::Insert {
            state: b"state".to_vec(),
        },
    )
}

fn history_rows(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM history", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn long_histories_read_back_from_any_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open(&Location::File(path.clone())).unwrap();
    let range_id = store.acquire_shards(1).await.unwrap()[0].range_id;
    let read = |run: &'static str, first: i64, limit: usize| {
        let store = store.clone();
        async move { store.read_events(NS, WF, run, first, limit).await.unwrap() }
    };

    // run-a: one transition of 200 events (a reset copies a long prefix like this), then
    // transitions of 1 to 7 events up to event 700, interleaved with rows of run-b and with a
    // continue-as-new style batch that ends run-b and starts run-c.
    let mut first = batch(range_id);
    first.executions = vec![insert("run-a"), insert("run-b")];
    first.events = events("run-a", 1..=200);
    first.events.extend(events("run-b", 1..=2));
    store.commit(first).await.unwrap();
    let mut next = 201;
    let mut size = 1;
    while next <= 700 {
        let last = (next + size - 1).min(700);
        let mut b = batch(range_id);
        b.events = events("run-a", next..=last);
        store.commit(b).await.unwrap();
        next = last + 1;
        size = size % 7 + 1;
    }
    let mut can = batch(range_id);
    can.executions = vec![insert("run-c")];
    can.events = events("run-b", 3..=3);
    can.events.extend(events("run-c", 1..=2));
    store.commit(can).await.unwrap();

    assert_eq!(
        read("run-a", 1, 1000).await,
        (1..=700)
            .map(|id| (id, event("run-a", id)))
            .collect::<Vec<_>>()
    );
    for first in [
        0, 1, 63, 64, 65, 128, 129, 190, 200, 201, 255, 256, 257, 258, 300, 512, 513, 514, 690, 695,
    ] {
        for limit in [1, 10, 300] {
            let from = first.max(1);
            let want: Vec<_> = (from..(from + limit as i64).min(701))
                .map(|id| (id, event("run-a", id)))
                .collect();
            assert_eq!(
                read("run-a", first, limit).await,
                want,
                "{limit} from {first}"
            );
        }
    }
    assert!(read("run-a", 701, 10).await.is_empty());
    assert!(read("run-a", 5, 0).await.is_empty());
    assert_eq!(read("run-b", 1, 10).await.len(), 3);
    assert_eq!(read("run-c", 2, 10).await, vec![(2, event("run-c", 2))]);
    assert!(read("run-unknown", 1, 10).await.is_empty());

    // Deleting a run removes every row of its chain and no other.
    let before = history_rows(&path);
    let mut delete = batch(range_id);
    delete.executions = vec![("run-a".into(), ExecutionWrite::Delete)];
    store.commit(delete).await.unwrap();
    assert!(read("run-a", 1, 1000).await.is_empty());
    assert_eq!(
        (before, history_rows(&path)),
        (before, 3),
        "run-b's 2 rows and run-c's 1 remain"
    );
    assert_eq!(read("run-b", 1, 10).await.len(), 3);
}

#[tokio::test]
async fn an_append_out_of_order_fails_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Location::File(dir.path().join("k.db"))).unwrap();
    let range_id = store.acquire_shards(1).await.unwrap()[0].range_id;
    let mut b = batch(range_id);
    b.executions = vec![insert("run-a")];
    b.events = events("run-a", 1..=3);
    store.commit(b).await.unwrap();

    for (ids, what) in [
        (3..=4, "a repeated event"),
        (5..=5, "a gap"),
        (1..=1, "a rewrite"),
    ] {
        let mut b = batch(range_id);
        b.events = events("run-a", ids);
        let result = store.commit(b).await;
        assert!(
            matches!(result, Err(Error::ConditionFailed(_))),
            "{what}: {result:?}"
        );
    }
    let mut orphan = batch(range_id);
    orphan.events = events("run-none", 1..=1);
    assert!(matches!(
        store.commit(orphan).await,
        Err(Error::ConditionFailed(_))
    ));
    assert_eq!(
        store.read_events(NS, WF, "run-a", 1, 10).await.unwrap(),
        (1..=3)
            .map(|id| (id, event("run-a", id)))
            .collect::<Vec<_>>()
    );
    let mut b = batch(range_id);
    b.events = events("run-a", 4..=4);
    store.commit(b).await.unwrap();
    assert_eq!(
        store
            .read_events(NS, WF, "run-a", 1, 10)
            .await
            .unwrap()
            .len(),
        4
    );
}
