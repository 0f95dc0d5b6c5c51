//! Databases written by earlier Kairos versions open with everything they held readable through
//! the store: version 2 (one row per event, timers and transfer tasks in rowid tables) and
//! version 3 (history rows found through an index on run id and first event id).

use kairos_persistence::{Error, Store, TimerKey, WriteBatch};
use kairos_persistence_sqlite::{Location, SqliteStore};

/// The tables both old versions have, as they created them.
const COMMON_TABLES: &str = r#"
CREATE TABLE namespaces (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB NOT NULL);
CREATE TABLE cluster_metadata (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE shards (shard_id INTEGER PRIMARY KEY, range_id INTEGER NOT NULL);
CREATE TABLE executions (
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL,
    shard_id INTEGER NOT NULL, db_version INTEGER NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (namespace_id, workflow_id, run_id));
CREATE TABLE current_executions (
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, shard_id INTEGER NOT NULL,
    run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (namespace_id, workflow_id));
CREATE TABLE visibility (
    namespace_id TEXT NOT NULL, run_id TEXT NOT NULL, workflow_id TEXT NOT NULL,
    workflow_type TEXT NOT NULL, task_queue TEXT NOT NULL, status INTEGER NOT NULL,
    start_time INTEGER NOT NULL, execution_time INTEGER NOT NULL, close_time INTEGER,
    sort_close INTEGER NOT NULL, execution_duration INTEGER, history_length INTEGER NOT NULL,
    history_size_bytes INTEGER NOT NULL, state_transition_count INTEGER NOT NULL,
    parent_workflow_id TEXT, parent_run_id TEXT, root_workflow_id TEXT, root_run_id TEXT,
    first_run_id TEXT NOT NULL, memo BLOB NOT NULL, search_attributes BLOB NOT NULL,
    PRIMARY KEY (namespace_id, run_id));
CREATE INDEX visibility_order ON visibility (namespace_id, sort_close DESC, start_time DESC, run_id DESC);
CREATE INDEX visibility_by_workflow_id ON visibility (namespace_id, workflow_id);
CREATE TABLE visibility_attributes (
    namespace_id TEXT NOT NULL, run_id TEXT NOT NULL, name TEXT NOT NULL,
    int_value INTEGER, real_value REAL, text_value TEXT);
CREATE INDEX visibility_attributes_by_run ON visibility_attributes (namespace_id, run_id, name);
"#;

/// The tables of schema version 2 that migration 3 replaces.
const V2_TABLES: &str = r#"
CREATE TABLE history_events (
    run_id TEXT NOT NULL, event_id INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (run_id, event_id)) WITHOUT ROWID;
CREATE TABLE timer_tasks (
    shard_id INTEGER NOT NULL, task_id INTEGER NOT NULL, fire_at_ms INTEGER NOT NULL,
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (shard_id, task_id));
CREATE INDEX timer_tasks_by_time ON timer_tasks (shard_id, fire_at_ms, task_id);
CREATE TABLE transfer_tasks (
    shard_id INTEGER NOT NULL, task_id INTEGER NOT NULL,
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (shard_id, task_id));
PRAGMA user_version = 2;
"#;

/// The tables of schema version 3 (its history table is the one migration 4 replaces).
const V3_TABLES: &str = r#"
CREATE TABLE history (
    seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, first_event_id INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE UNIQUE INDEX history_by_run ON history (run_id, first_event_id);
CREATE TABLE timers (
    shard_id INTEGER NOT NULL, fire_at_ms INTEGER NOT NULL, task_id INTEGER NOT NULL,
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (shard_id, fire_at_ms, task_id)) WITHOUT ROWID;
CREATE TABLE transfers (
    shard_id INTEGER NOT NULL, task_id INTEGER NOT NULL,
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (shard_id, task_id)) WITHOUT ROWID;
PRAGMA user_version = 3;
"#;

fn add_execution(conn: &rusqlite::Connection, run: &str) {
    conn.execute(
        "INSERT INTO executions VALUES ('ns', 'wf', ?1, 0, 1, x'00')",
        [run],
    )
    .unwrap();
}

#[tokio::test]
async fn a_version_2_database_keeps_its_history_timers_and_transfer_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(COMMON_TABLES).unwrap();
        conn.execute_batch(V2_TABLES).unwrap();
        for run in ["run-a", "run-b"] {
            add_execution(&conn, run);
            for event_id in 1..=5i64 {
                conn.execute(
                    "INSERT INTO history_events (run_id, event_id, data) VALUES (?1, ?2, ?3)",
                    rusqlite::params![run, event_id, format!("{run}:{event_id}").into_bytes()],
                )
                .unwrap();
            }
        }
        conn.execute(
            "INSERT INTO timer_tasks VALUES (0, 41, 5000, 'ns', 'wf', 'run-a', x'01')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO timer_tasks VALUES (0, 40, 9000, 'ns', 'wf', 'run-a', x'02')",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO transfer_tasks VALUES (0, 42, 'ns', 'wf', 'run-b', x'03')",
            [],
        )
        .unwrap();
    }

    let store = SqliteStore::open(&Location::File(path.clone())).unwrap();
    let events = store.read_events("ns", "wf", "run-a", 2, 3).await.unwrap();
    assert_eq!(
        events,
        (2..=4)
            .map(|id| (id, format!("run-a:{id}").into_bytes()))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .read_events("ns", "wf", "run-b", 1, 100)
            .await
            .unwrap()
            .len(),
        5
    );
    let timers = store.load_timers(&[0]).await.unwrap();
    assert_eq!(
        timers
            .iter()
            .map(|t| (t.task_id, t.fire_at_ms, t.data.clone()))
            .collect::<Vec<_>>(),
        vec![(41, 5000, vec![1]), (40, 9000, vec![2])],
        "timers come back in fire order"
    );
    let transfers = store.load_transfers(&[0]).await.unwrap();
    assert_eq!(transfers.len(), 1);
    assert_eq!(
        (transfers[0].task_id, transfers[0].run_id.as_str()),
        (42, "run-b")
    );
    // Task ids keep counting from what the old tables held.
    let lease = store.acquire_shards(&[0]).await.unwrap()[0];
    assert_eq!(lease.max_task_id, 42);

    // New writes land next to the migrated rows: more events, a timer deleted by its key.
    let mut batch = WriteBatch {
        shard_id: 0,
        range_id: lease.range_id,
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        ..Default::default()
    };
    batch.events = (6..=7)
        .map(|id| ("run-a".to_string(), id, format!("run-a:{id}").into_bytes()))
        .collect();
    batch.timers_delete.push(TimerKey {
        fire_at_ms: 5000,
        task_id: 41,
    });
    store.commit(batch).await.unwrap();
    let all: Vec<i64> = store
        .read_events("ns", "wf", "run-a", 1, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(all, (1..=7).collect::<Vec<_>>());
    assert_eq!(
        store.read_events("ns", "wf", "run-a", 7, 1).await.unwrap(),
        vec![(7, b"run-a:7".to_vec())],
        "a read starting inside a multi-event row"
    );
    let left: Vec<i64> = store
        .load_timers(&[0])
        .await
        .unwrap()
        .iter()
        .map(|t| t.task_id)
        .collect();
    assert_eq!(left, vec![40]);
}

/// Appends one event to a version 3 history row: field 1 of a `History` message.
fn frame(out: &mut Vec<u8>, event: &[u8]) {
    out.push(0x0A);
    out.push(event.len() as u8);
    out.extend_from_slice(event);
}

#[tokio::test]
async fn a_version_3_database_keeps_its_history_rows_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let event = |run: &str, id: i64| format!("{run}:{id}").into_bytes();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(COMMON_TABLES).unwrap();
        conn.execute_batch(V3_TABLES).unwrap();
        add_execution(&conn, "run-a");
        add_execution(&conn, "run-b");
        // run-a: 600 events in rows of 1 to 64 events, interleaved with run-b's rows and with
        // rows of a run that has no execution (never written so; the migration drops them).
        let insert = |run: &str, first: i64, last: i64| {
            let mut data = Vec::new();
            for id in first..=last {
                frame(&mut data, &event(run, id));
            }
            conn.execute(
                "INSERT INTO history (run_id, first_event_id, data) VALUES (?1, ?2, ?3)",
                rusqlite::params![run, first, data],
            )
            .unwrap();
        };
        let (mut next, mut size, mut b_next) = (1, 1, 1);
        while next <= 600 {
            let last = (next + size - 1).min(600);
            insert("run-a", next, last);
            insert("run-orphan", next, next);
            if b_next <= 4 {
                insert("run-b", b_next, b_next);
                b_next += 1;
            }
            next = last + 1;
            size = size * 3 % 64 + 1;
        }
    }

    let store = SqliteStore::open(&Location::File(path.clone())).unwrap();
    let read = |run: &'static str, first: i64, limit: usize| {
        let store = store.clone();
        async move {
            store
                .read_events("ns", "wf", run, first, limit)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        read("run-a", 1, 1000).await,
        (1..=600)
            .map(|id| (id, event("run-a", id)))
            .collect::<Vec<_>>()
    );
    for first in [2, 100, 256, 257, 258, 511, 512, 513, 599] {
        assert_eq!(
            read("run-a", first, 5).await,
            (first..(first + 5).min(601))
                .map(|id| (id, event("run-a", id)))
                .collect::<Vec<_>>(),
            "from {first}"
        );
    }
    assert_eq!(read("run-b", 1, 100).await.len(), 4);
    assert!(read("run-orphan", 1, 100).await.is_empty());
    let orphans: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM history WHERE run_id = 'run-orphan'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);

    // Appends continue where each migrated run ended, and only there.
    let range_id = store.acquire_shards(&[0]).await.unwrap()[0].range_id;
    let append = |run: &str, id: i64| WriteBatch {
        shard_id: 0,
        range_id,
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        events: vec![(run.to_string(), id, event(run, id))],
        ..Default::default()
    };
    assert!(matches!(
        store.commit(append("run-a", 600)).await,
        Err(Error::ConditionFailed(_))
    ));
    store.commit(append("run-a", 601)).await.unwrap();
    store.commit(append("run-b", 5)).await.unwrap();
    assert_eq!(
        read("run-a", 598, 10).await,
        (598..=601)
            .map(|id| (id, event("run-a", id)))
            .collect::<Vec<_>>()
    );
    assert_eq!(read("run-b", 1, 100).await.len(), 5);
}
