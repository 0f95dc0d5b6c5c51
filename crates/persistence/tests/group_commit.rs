//! The SQLite writer commits concurrent batches as one group. A batch that fails its condition
//! must fail alone: the others in its group commit, and nothing the failing batch wrote before
//! its failed condition survives.

use futures::future::join_all;
use kairos_persistence::sqlite::{Location, SqliteStore};
use kairos_persistence::{CurrentWrite, Error, ExecutionWrite, Store, WriteBatch};

const NS: &str = "ns";

fn batch(range_id: i64, workflow_id: &str) -> WriteBatch {
    WriteBatch {
        shard_id: 0,
        range_id,
        namespace_id: NS.into(),
        workflow_id: workflow_id.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_failing_batch_fails_alone_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Location::File(dir.path().join("k.db"))).unwrap();
    let range_id = store.acquire_shards(1).await.unwrap()[0].range_id;

    // Runs wf-0..wf-39 and wf-bad exist at version 1.
    let mut setup = Vec::new();
    for name in (0..40).map(|i| format!("wf-{i}")).chain(["wf-bad".into()]) {
        let mut b = batch(range_id, &name);
        b.executions.push((
            format!("run-{name}"),
            ExecutionWrite::Insert {
                state: b"v1".to_vec(),
            },
        ));
        b.current = Some(CurrentWrite::Set {
            run_id: format!("run-{name}"),
            expected_run_id: None,
            data: Vec::new(),
        });
        setup.push(store.commit(b));
    }
    for result in join_all(setup).await {
        result.unwrap();
    }

    // Forty good updates and one whose version check fails after it moved the current run,
    // all submitted at once so the writer groups them.
    let mut updates = Vec::new();
    for i in 0..40 {
        let name = format!("wf-{i}");
        let run = format!("run-{name}");
        let mut b = batch(range_id, &name);
        b.executions.push((
            run.clone(),
            ExecutionWrite::Update {
                state: b"v2".to_vec(),
                expected_version: 1,
            },
        ));
        b.events.push((run, 1, b"event".to_vec()));
        updates.push(store.commit(b));
    }
    let mut bad = batch(range_id, "wf-bad");
    bad.current = Some(CurrentWrite::Set {
        run_id: "run-successor".into(),
        expected_run_id: Some("run-wf-bad".into()),
        data: Vec::new(),
    });
    bad.executions.push((
        "run-wf-bad".into(),
        ExecutionWrite::Update {
            state: b"stale".to_vec(),
            expected_version: 7,
        },
    ));
    bad.events.push(("run-wf-bad".into(), 1, b"lost".to_vec()));
    updates.insert(20, store.commit(bad));
    let results = join_all(updates).await;

    for (i, result) in results.iter().enumerate() {
        if i == 20 {
            assert!(
                matches!(result, Err(Error::ConditionFailed(_))),
                "the stale batch must fail on its version: {result:?}"
            );
        } else {
            assert!(result.is_ok(), "batch {i} failed: {result:?}");
        }
    }
    for i in 0..40 {
        let name = format!("wf-{i}");
        let run = format!("run-{name}");
        let row = store.get_execution(NS, &name, &run).await.unwrap().unwrap();
        assert_eq!((row.db_version, row.state.as_slice()), (2, &b"v2"[..]));
        assert_eq!(
            store
                .read_events(NS, &name, &run, 1, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }
    let row = store
        .get_execution(NS, "wf-bad", "run-wf-bad")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((row.db_version, row.state.as_slice()), (1, &b"v1"[..]));
    assert_eq!(
        store
            .get_current(NS, "wf-bad")
            .await
            .unwrap()
            .unwrap()
            .run_id,
        "run-wf-bad",
        "the failed batch's current-run change must be undone"
    );
    assert!(
        store
            .read_events(NS, "wf-bad", "run-wf-bad", 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
