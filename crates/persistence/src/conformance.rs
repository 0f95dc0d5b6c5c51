//! The definition of a store: what every backend must do, as test cases any backend runs
//! against itself (the way TiKV's `engine_traits_tests` or Restate's loglet tests do). A
//! backend's tests instantiate the whole suite with [`conformance_suite!`](crate::conformance_suite),
//! giving it a function that makes a fresh, empty store (or `None`, with the reason printed,
//! when the backend cannot run here, e.g. no PostgreSQL URL).
//!
//! Every case starts from an empty store and uses namespace ids of its own.
use std::collections::HashMap;
use std::sync::Arc;

use kairos_core::filter::Value;
use kairos_visibility::AttrType;

use crate::{
    CurrentWrite, Durability, Error, ExecutionWrite, NamespaceRow, PutNamespace, ShardLease, Store,
    TimerKey, TimerTask, TransferTask, VisibilityRow, VisibilityWrite, WriteBatch,
};

/// Runs every case of the suite as its own `#[tokio::test]`, each on a store from `$fresh`
/// (an `async fn() -> Option<Arc<dyn Store>>`; `None` skips the case).
#[macro_export]
macro_rules! conformance_suite {
    ($fresh:path) => {
        $crate::conformance_suite!(@cases $fresh;
            leases_fence_every_write,
            shards_are_taken_and_renewed_one_by_one,
            updates_are_conditioned_on_the_version,
            runs_and_current_pointers_keep_their_conditions,
            history_reads_back_from_any_event,
            history_appends_must_continue_the_run,
            a_failing_batch_fails_alone_and_leaves_nothing_behind,
            timers_and_transfer_tasks_are_kept_per_shard,
            deleting_a_run_removes_its_rows,
            namespaces_and_metadata_are_kept,
            visibility_queries_select_the_right_runs,
            whatever_compiles_runs_on_the_store,
            committed_batches_are_kept_and_fenced_like_synced_ones,
        );
    };
    (@cases $fresh:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                match $fresh().await {
                    Some(store) => $crate::conformance::$case(store).await,
                    None => {}
                }
            }
        )*
    };
}

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

fn insert(run: &str) -> (String, ExecutionWrite) {
    (
        run.to_string(),
        ExecutionWrite::Insert {
            state: b"v1".to_vec(),
        },
    )
}

fn set_current(run: &str, expected: Option<&str>) -> Option<CurrentWrite> {
    Some(CurrentWrite::Set {
        run_id: run.to_string(),
        expected_run_id: expected.map(str::to_string),
        data: format!("data of {run}").into_bytes(),
    })
}

fn event(run: &str, id: i64) -> Vec<u8> {
    format!("{run}/{id}").into_bytes()
}

fn events(run: &str, ids: std::ops::RangeInclusive<i64>) -> Vec<(String, i64, Vec<u8>)> {
    ids.map(|id| (run.to_string(), id, event(run, id)))
        .collect()
}

async fn lease(store: &Arc<dyn Store>) -> i64 {
    store.acquire_shards(&[0]).await.expect("lease")[0].range_id
}

/// A shard's writes are fenced by its lease: once the lease is taken again, a batch made
/// under the old `range_id` fails with `ShardOwnershipLost` and writes nothing.
pub async fn leases_fence_every_write(store: Arc<dyn Store>) {
    let old = lease(&store).await;
    let mut first = batch(old, "wf");
    first.executions = vec![insert("run")];
    first.current = set_current("run", None);
    store.commit(first).await.expect("the owner commits");
    let leases = store.acquire_shards(&[0, 1]).await.expect("taken again");
    assert_eq!(leases.len(), 2);
    let new = leases[0].range_id;
    assert!(
        new > old,
        "a new lease is a higher range id ({old} -> {new})"
    );
    let mut stale = batch(old, "wf");
    stale.executions = vec![(
        "run".into(),
        ExecutionWrite::Update {
            state: b"stale".to_vec(),
            expected_version: 1,
        },
    )];
    stale.timers_add = vec![timer(0, 1, 10)];
    let result = store.commit(stale).await;
    assert!(
        matches!(result, Err(Error::ShardOwnershipLost { shard_id: 0 })),
        "{result:?}"
    );
    let row = store.get_execution(NS, "wf", "run").await.unwrap().unwrap();
    assert_eq!(row.state, b"v1", "the fenced batch wrote nothing");
    assert!(store.load_timers(&[0, 1]).await.unwrap().is_empty());
    let mut fresh = batch(new, "wf");
    fresh.executions = vec![(
        "run".into(),
        ExecutionWrite::Update {
            state: b"v2".to_vec(),
            expected_version: 1,
        },
    )];
    store.commit(fresh).await.expect("the new owner commits");
    // A shard never leased is not owned by anyone.
    let mut unowned = batch(1, "wf-other");
    unowned.shard_id = 7;
    assert!(matches!(
        store.commit(unowned).await,
        Err(Error::ShardOwnershipLost { shard_id: 7 })
    ));
}

/// An update names the version it read; a stale one fails and changes nothing.
pub async fn updates_are_conditioned_on_the_version(store: Arc<dyn Store>) {
    let range_id = lease(&store).await;
    let mut b = batch(range_id, "wf");
    b.executions = vec![insert("run")];
    store.commit(b).await.unwrap();
    let row = store.get_execution(NS, "wf", "run").await.unwrap().unwrap();
    assert_eq!((row.db_version, row.shard_id), (1, 0));
    let update = |state: &[u8], expected_version| {
        let mut b = batch(range_id, "wf");
        b.executions = vec![(
            "run".into(),
            ExecutionWrite::Update {
                state: state.to_vec(),
                expected_version,
            },
        )];
        b
    };
    store
        .commit(update(b"v2", 1))
        .await
        .expect("current version");
    let stale = store.commit(update(b"v2-again", 1)).await;
    assert!(matches!(stale, Err(Error::ConditionFailed(_))), "{stale:?}");
    let row = store.get_execution(NS, "wf", "run").await.unwrap().unwrap();
    assert_eq!((row.db_version, row.state.as_slice()), (2, &b"v2"[..]));
    let missing = store
        .commit({
            let mut b = update(b"x", 1);
            b.executions[0].0 = "run-none".into();
            b
        })
        .await;
    assert!(
        matches!(missing, Err(Error::ConditionFailed(_))),
        "{missing:?}"
    );
    assert!(
        store
            .get_execution(NS, "wf", "run-none")
            .await
            .unwrap()
            .is_none()
    );
}

/// A run is inserted once; the current-run pointer moves only from what the writer expects.
pub async fn runs_and_current_pointers_keep_their_conditions(store: Arc<dyn Store>) {
    let range_id = lease(&store).await;
    let mut b = batch(range_id, "wf");
    b.executions = vec![insert("run-1")];
    b.current = set_current("run-1", None);
    store.commit(b).await.unwrap();
    let again = {
        let mut b = batch(range_id, "wf");
        b.executions = vec![insert("run-1")];
        store.commit(b).await
    };
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    // A second "new workflow" start loses: the pointer exists.
    let mut racing = batch(range_id, "wf");
    racing.executions = vec![insert("run-2")];
    racing.current = set_current("run-2", None);
    let result = store.commit(racing).await;
    assert!(
        matches!(result, Err(Error::ConditionFailed(_))),
        "{result:?}"
    );
    assert!(
        store
            .get_execution(NS, "wf", "run-2")
            .await
            .unwrap()
            .is_none(),
        "the losing batch inserted nothing"
    );
    // Moving from the right run succeeds.
    let mut next = batch(range_id, "wf");
    next.executions = vec![insert("run-2")];
    next.current = set_current("run-2", Some("run-1"));
    store.commit(next).await.unwrap();
    let current = store.get_current(NS, "wf").await.unwrap().unwrap();
    assert_eq!(current.run_id, "run-2");
    assert_eq!(current.data, b"data of run-2");
    // Removing it names the run it must still point at.
    let mut wrong = batch(range_id, "wf");
    wrong.current = Some(CurrentWrite::DeleteIf {
        run_id: "run-1".into(),
    });
    store.commit(wrong).await.unwrap();
    assert!(
        store.get_current(NS, "wf").await.unwrap().is_some(),
        "not the current run"
    );
    let mut right = batch(range_id, "wf");
    right.current = Some(CurrentWrite::DeleteIf {
        run_id: "run-2".into(),
    });
    store.commit(right).await.unwrap();
    assert!(store.get_current(NS, "wf").await.unwrap().is_none());
    assert!(store.get_current(NS, "wf-none").await.unwrap().is_none());
}

/// Events are read back in order from any event id, whatever the transitions that wrote them.
pub async fn history_reads_back_from_any_event(store: Arc<dyn Store>) {
    let range_id = lease(&store).await;
    let read = |run: &'static str, first: i64, limit: usize| {
        let store = store.clone();
        async move {
            store
                .read_events(NS, "wf", run, first, limit)
                .await
                .unwrap()
        }
    };
    // run-a: one transition of 200 events (a reset copies a long prefix like this), then
    // transitions of 1 to 7 events up to event 700, interleaved with rows of run-b and with a
    // continue-as-new style batch that ends run-b and starts run-c.
    let mut first = batch(range_id, "wf");
    first.executions = vec![insert("run-a"), insert("run-b")];
    first.events = events("run-a", 1..=200);
    first.events.extend(events("run-b", 1..=2));
    store.commit(first).await.unwrap();
    let mut next = 201;
    let mut size = 1;
    while next <= 700 {
        let last = (next + size - 1).min(700);
        let mut b = batch(range_id, "wf");
        b.events = events("run-a", next..=last);
        store.commit(b).await.unwrap();
        next = last + 1;
        size = size % 7 + 1;
    }
    let mut can = batch(range_id, "wf");
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
}

/// An append must start at the run's next event id: a repeat, a gap or a rewrite fails its
/// batch and stores nothing; so does an append to a run that is not stored.
pub async fn history_appends_must_continue_the_run(store: Arc<dyn Store>) {
    let range_id = lease(&store).await;
    let mut b = batch(range_id, "wf");
    b.executions = vec![insert("run-a")];
    b.events = events("run-a", 1..=3);
    store.commit(b).await.unwrap();
    for (ids, what) in [
        (3..=4, "a repeated event"),
        (5..=5, "a gap"),
        (1..=1, "a rewrite"),
    ] {
        let mut b = batch(range_id, "wf");
        b.events = events("run-a", ids);
        let result = store.commit(b).await;
        assert!(
            matches!(result, Err(Error::ConditionFailed(_))),
            "{what}: {result:?}"
        );
    }
    // With the state written in the same batch, the same rule holds.
    let mut b = batch(range_id, "wf");
    b.executions = vec![(
        "run-a".into(),
        ExecutionWrite::Update {
            state: b"v2".to_vec(),
            expected_version: 1,
        },
    )];
    b.events = events("run-a", 5..=6);
    assert!(matches!(
        store.commit(b).await,
        Err(Error::ConditionFailed(_))
    ));
    // A new run's events start at 1.
    let mut b = batch(range_id, "wf");
    b.executions = vec![insert("run-b")];
    b.events = events("run-b", 2..=3);
    assert!(matches!(
        store.commit(b).await,
        Err(Error::ConditionFailed(_))
    ));
    assert!(
        store
            .get_execution(NS, "wf", "run-b")
            .await
            .unwrap()
            .is_none()
    );
    let mut orphan = batch(range_id, "wf");
    orphan.events = events("run-none", 1..=1);
    assert!(matches!(
        store.commit(orphan).await,
        Err(Error::ConditionFailed(_))
    ));
    assert_eq!(
        store.read_events(NS, "wf", "run-a", 1, 10).await.unwrap(),
        (1..=3)
            .map(|id| (id, event("run-a", id)))
            .collect::<Vec<_>>()
    );
    let row = store
        .get_execution(NS, "wf", "run-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.db_version, 1, "the failed batches changed nothing");
    let mut b = batch(range_id, "wf");
    b.executions = vec![(
        "run-a".into(),
        ExecutionWrite::Update {
            state: b"v2".to_vec(),
            expected_version: 1,
        },
    )];
    b.events = events("run-a", 4..=4);
    store.commit(b).await.unwrap();
    assert_eq!(
        store
            .read_events(NS, "wf", "run-a", 1, 10)
            .await
            .unwrap()
            .len(),
        4
    );
}

/// Concurrent batches (which a backend may group into one transaction) succeed or fail on their
/// own: one failing condition fails its batch alone and leaves none of its writes behind.
pub async fn a_failing_batch_fails_alone_and_leaves_nothing_behind(store: Arc<dyn Store>) {
    let range_id = lease(&store).await;
    let mut setup = Vec::new();
    for name in (0..40).map(|i| format!("wf-{i}")).chain(["wf-bad".into()]) {
        let mut b = batch(range_id, &name);
        b.executions.push((
            format!("run-{name}"),
            ExecutionWrite::Insert {
                state: b"v1".to_vec(),
            },
        ));
        b.current = set_current(&format!("run-{name}"), None);
        setup.push(store.commit(b));
    }
    for result in futures::future::join_all(setup).await {
        result.unwrap();
    }
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
        b.timers_add.push(timer(0, 1000 + i, i));
        updates.push(store.commit(b));
    }
    // It moves the current run first, then fails on its version.
    let mut bad = batch(range_id, "wf-bad");
    bad.current = set_current("run-successor", Some("run-wf-bad"));
    bad.executions.push((
        "run-wf-bad".into(),
        ExecutionWrite::Update {
            state: b"stale".to_vec(),
            expected_version: 7,
        },
    ));
    bad.events.push(("run-wf-bad".into(), 1, b"lost".to_vec()));
    bad.timers_add.push(timer(0, 999, 5));
    updates.insert(20, store.commit(bad));
    let results = futures::future::join_all(updates).await;
    for (i, result) in results.iter().enumerate() {
        if i == 20 {
            assert!(
                matches!(result, Err(Error::ConditionFailed(_))),
                "{result:?}"
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
        "the failed batch's current-run change is undone"
    );
    assert!(
        store
            .read_events(NS, "wf-bad", "run-wf-bad", 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let timers = store.load_timers(&[0, 1]).await.unwrap();
    assert_eq!(timers.len(), 40);
    assert!(
        timers.iter().all(|t| t.task_id != 999),
        "the failed batch's timer is undone"
    );
}

fn timer(shard_id: i32, task_id: i64, fire_at_ms: i64) -> TimerTask {
    TimerTask {
        task_id,
        shard_id,
        fire_at_ms,
        namespace_id: NS.into(),
        workflow_id: "wf".into(),
        run_id: "run".into(),
        data: format!("timer {task_id}").into_bytes(),
    }
}

fn transfer(shard_id: i32, task_id: i64) -> TransferTask {
    TransferTask {
        task_id,
        shard_id,
        namespace_id: NS.into(),
        workflow_id: "wf".into(),
        run_id: "run".into(),
        data: format!("transfer {task_id}").into_bytes(),
    }
}

/// Timers come back in fire order and transfer tasks in (shard, id) order, each shard's kept
/// apart; deleting names a timer by its key; a new lease reports the highest task id a shard
/// has stored.
pub async fn timers_and_transfer_tasks_are_kept_per_shard(store: Arc<dyn Store>) {
    let leases = store.acquire_shards(&[0, 1]).await.unwrap();
    assert_eq!(
        leases
            .iter()
            .map(|l| (l.shard_id, l.max_task_id))
            .collect::<Vec<_>>(),
        vec![(0, 0), (1, 0)]
    );
    let mut b0 = batch(leases[0].range_id, "wf");
    b0.timers_add = vec![timer(0, 11, 300), timer(0, 12, 100), timer(0, 13, 200)];
    b0.transfers_add = vec![transfer(0, 21), transfer(0, 20)];
    store.commit(b0).await.unwrap();
    let mut b1 = batch(leases[1].range_id, "wf");
    b1.shard_id = 1;
    // The same task ids on another shard are other tasks.
    b1.timers_add = vec![timer(1, 11, 150), timer(1, 40, 100)];
    b1.transfers_add = vec![transfer(1, 20), transfer(1, 5)];
    store.commit(b1).await.unwrap();
    let order: Vec<(i64, i32, i64)> = store
        .load_timers(&[0, 1])
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.fire_at_ms, t.shard_id, t.task_id))
        .collect();
    assert_eq!(
        order,
        vec![
            (100, 0, 12),
            (100, 1, 40),
            (150, 1, 11),
            (200, 0, 13),
            (300, 0, 11)
        ]
    );
    let first = store.load_timers(&[0, 1]).await.unwrap().remove(0);
    assert_eq!(
        first,
        timer(0, 12, 100),
        "a timer comes back as it was stored"
    );
    let transfers: Vec<(i32, i64)> = store
        .load_transfers(&[0, 1])
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.shard_id, t.task_id))
        .collect();
    assert_eq!(transfers, vec![(0, 20), (0, 21), (1, 5), (1, 20)]);
    // Deletes are by shard and key: shard 0's timer 11 goes, shard 1's stays.
    let mut d = batch(leases[0].range_id, "wf");
    d.timers_delete = vec![TimerKey {
        fire_at_ms: 300,
        task_id: 11,
    }];
    d.transfers_delete = vec![20];
    store.commit(d).await.unwrap();
    let left: Vec<(i32, i64)> = store
        .load_timers(&[0, 1])
        .await
        .unwrap()
        .iter()
        .map(|t| (t.shard_id, t.task_id))
        .collect();
    assert_eq!(left, vec![(0, 12), (1, 40), (1, 11), (0, 13)]);
    let transfers: Vec<(i32, i64)> = store
        .load_transfers(&[0, 1])
        .await
        .unwrap()
        .iter()
        .map(|t| (t.shard_id, t.task_id))
        .collect();
    assert_eq!(transfers, vec![(0, 21), (1, 5), (1, 20)]);
    // A wrong fire time deletes nothing.
    let mut d = batch(leases[0].range_id, "wf");
    d.timers_delete = vec![TimerKey {
        fire_at_ms: 999,
        task_id: 12,
    }];
    store.commit(d).await.unwrap();
    assert_eq!(store.load_timers(&[0, 1]).await.unwrap().len(), 4);
    let again = store.acquire_shards(&[0, 1]).await.unwrap();
    assert_eq!(
        again
            .iter()
            .map(|l| (l.shard_id, l.max_task_id))
            .collect::<Vec<_>>(),
        vec![(0, 21), (1, 40)]
    );
}

/// A holder takes any subset of the shards: acquiring some bumps only their leases, renewing
/// tells a holder whether its lease still stands, and the timer and transfer scans read only
/// the shards asked for.
pub async fn shards_are_taken_and_renewed_one_by_one(store: Arc<dyn Store>) {
    let first = store.acquire_shards(&[2, 0]).await.unwrap();
    assert_eq!(
        first.iter().map(|l| l.shard_id).collect::<Vec<_>>(),
        vec![2, 0],
        "leases come back in the order asked"
    );
    for lease in &first {
        store.renew_shard(*lease).await.expect("still held");
    }
    let moved = store.acquire_shards(&[2]).await.unwrap()[0];
    assert!(moved.range_id > first[0].range_id);
    let lost = store.renew_shard(first[0]).await;
    assert!(
        matches!(lost, Err(Error::ShardOwnershipLost { shard_id: 2 })),
        "{lost:?}"
    );
    store
        .renew_shard(first[1])
        .await
        .expect("shard 0 was not taken again");
    store
        .renew_shard(moved)
        .await
        .expect("the new holder's lease");
    let never = ShardLease {
        shard_id: 5,
        range_id: 1,
        max_task_id: 0,
    };
    assert!(matches!(
        store.renew_shard(never).await,
        Err(Error::ShardOwnershipLost { shard_id: 5 })
    ));
    // Shard 0's lease was not touched: its holder still commits. Shard 2's old holder cannot.
    let mut on_0 = batch(first[1].range_id, "wf");
    on_0.timers_add = vec![timer(0, 1, 10)];
    store.commit(on_0).await.expect("shard 0 still held");
    let mut stale = batch(first[0].range_id, "wf-2");
    stale.shard_id = 2;
    stale.timers_add = vec![timer(2, 1, 10)];
    assert!(matches!(
        store.commit(stale).await,
        Err(Error::ShardOwnershipLost { shard_id: 2 })
    ));
    let mut on_2 = batch(moved.range_id, "wf-2");
    on_2.shard_id = 2;
    on_2.timers_add = vec![timer(2, 2, 5)];
    on_2.transfers_add = vec![transfer(2, 3)];
    store.commit(on_2).await.expect("the new holder commits");
    let timers = |shards: &'static [i32]| {
        let store = store.clone();
        async move {
            store
                .load_timers(shards)
                .await
                .unwrap()
                .iter()
                .map(|t| (t.shard_id, t.task_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(timers(&[0]).await, vec![(0, 1)]);
    assert_eq!(timers(&[2]).await, vec![(2, 2)]);
    assert_eq!(timers(&[0, 2]).await, vec![(2, 2), (0, 1)], "in fire order");
    assert!(timers(&[1]).await.is_empty());
    assert!(timers(&[]).await.is_empty());
    let transfers = |shards: &'static [i32]| {
        let store = store.clone();
        async move {
            store
                .load_transfers(shards)
                .await
                .unwrap()
                .iter()
                .map(|t| (t.shard_id, t.task_id))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(transfers(&[2]).await, vec![(2, 3)]);
    assert!(transfers(&[0, 1]).await.is_empty());
}

/// Deleting a run (retention) removes its state and history and only its own; its visibility
/// record goes with a visibility delete in the same batch.
pub async fn deleting_a_run_removes_its_rows(store: Arc<dyn Store>) {
    let range_id = lease(&store).await;
    let mut b = batch(range_id, "wf");
    b.executions = vec![insert("run-a"), insert("run-b")];
    b.events = events("run-a", 1..=150);
    b.events.extend(events("run-b", 1..=3));
    b.current = set_current("run-b", None);
    b.visibility = vec![
        VisibilityWrite::Insert(Box::new(record(
            "run-a",
            "wf",
            2,
            vec![("CustomerId", Value::Text("c".into()))],
        ))),
        VisibilityWrite::Insert(Box::new(record("run-b", "wf", 1, Vec::new()))),
    ];
    store.commit(b).await.unwrap();
    let mut delete = batch(range_id, "wf");
    delete.executions = vec![("run-a".into(), ExecutionWrite::Delete)];
    delete.visibility = vec![VisibilityWrite::Delete {
        run_id: "run-a".into(),
    }];
    store.commit(delete).await.unwrap();
    assert!(
        store
            .get_execution(NS, "wf", "run-a")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .read_events(NS, "wf", "run-a", 1, 1000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .read_events(NS, "wf", "run-b", 1, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    let listed = list(&store, NS, "").await;
    assert_eq!(listed, vec!["wf"], "only run-b is listed");
    assert!(
        list(&store, NS, "CustomerId = 'c'").await.is_empty(),
        "its attributes went too"
    );
    // Deleting a run that is not there changes nothing.
    let mut again = batch(range_id, "wf");
    again.executions = vec![("run-a".into(), ExecutionWrite::Delete)];
    store.commit(again).await.unwrap();
    assert!(store.get_current(NS, "wf").await.unwrap().is_some());
}

/// Namespaces are created once per name, replaced by id and listed by name; metadata values
/// are kept and overwritten.
pub async fn namespaces_and_metadata_are_kept(store: Arc<dyn Store>) {
    let row = |id: &str, name: &str, data: &str| NamespaceRow {
        id: id.into(),
        name: name.into(),
        data: data.as_bytes().to_vec(),
    };
    store
        .put_namespace(row("id-b", "shop", "v1"), PutNamespace::Create)
        .await
        .unwrap();
    store
        .put_namespace(row("id-a", "default", "v1"), PutNamespace::Create)
        .await
        .unwrap();
    let taken = store
        .put_namespace(row("id-c", "shop", "v1"), PutNamespace::Create)
        .await;
    assert!(matches!(taken, Err(Error::AlreadyExists(_))), "{taken:?}");
    store
        .put_namespace(row("id-b", "shop", "v2"), PutNamespace::Replace)
        .await
        .unwrap();
    assert_eq!(
        store.list_namespaces().await.unwrap(),
        vec![row("id-a", "default", "v1"), row("id-b", "shop", "v2")]
    );
    assert_eq!(store.get_metadata("k").await.unwrap(), None);
    store.put_metadata("k", vec![1]).await.unwrap();
    store.put_metadata("k", vec![2, 3]).await.unwrap();
    assert_eq!(store.get_metadata("k").await.unwrap(), Some(vec![2, 3]));
}

const MINUTE_NS: i64 = 60_000_000_000;
const T0: i64 = 1_790_000_000_000_000_000;

fn record(
    run: &str,
    workflow_id: &str,
    status: i32,
    attributes: Vec<(&str, Value)>,
) -> VisibilityRow {
    VisibilityRow {
        run_id: run.into(),
        workflow_id: workflow_id.into(),
        workflow_type: "order".into(),
        task_queue: "pizzas".into(),
        status,
        start_time_ns: T0,
        execution_time_ns: T0,
        first_run_id: run.into(),
        memo: b"memo".to_vec(),
        search_attributes: b"attributes".to_vec(),
        attributes: attributes
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        ..Default::default()
    }
}

fn custom() -> HashMap<String, AttrType> {
    [
        ("CustomerId", AttrType::Keyword),
        ("Amount", AttrType::Int),
        ("Price", AttrType::Double),
        ("Express", AttrType::Bool),
        ("DeliverBy", AttrType::Datetime),
        ("Notes", AttrType::Text),
        ("Tags", AttrType::KeywordList),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

/// One workflow per status, with search attributes of every type.
fn rows() -> Vec<VisibilityRow> {
    let statuses = [
        ("run-1", 1, "order"),
        ("run-2", 2, "order"),
        ("run-3", 3, "refund"),
        ("run-4", 4, "order"),
        ("run-5", 5, "refund"),
        ("run-6", 6, "order"),
        ("run-7", 7, "order"),
    ];
    statuses
        .into_iter()
        .enumerate()
        .map(|(i, (run, status, ty))| {
            let i = i as i64;
            let closed = status != 1;
            let mut attributes = vec![
                (
                    "CustomerId".to_string(),
                    Value::Text(format!("cust-{}", i % 3)),
                ),
                ("Amount".to_string(), Value::Int(i * 10)),
                ("Price".to_string(), Value::Real(i as f64 * 1.5)),
                ("Express".to_string(), Value::Int(i % 2)),
                ("DeliverBy".to_string(), Value::Int(T0 + i * MINUTE_NS)),
                (
                    "Notes".to_string(),
                    Value::Text(format!("Extra Cheese number {i}")),
                ),
                ("Tags".to_string(), Value::Text("pizza".into())),
            ];
            if i % 2 == 0 {
                attributes.push(("Tags".to_string(), Value::Text("vip".into())));
            }
            if i == 6 {
                attributes.retain(|(n, _)| n != "CustomerId");
            }
            VisibilityRow {
                run_id: run.to_string(),
                workflow_id: format!("wf-{}", i + 1),
                workflow_type: ty.to_string(),
                task_queue: "pizzas".into(),
                status,
                start_time_ns: T0 + i * MINUTE_NS,
                execution_time_ns: T0 + i * MINUTE_NS,
                close_time_ns: closed.then_some(T0 + (i + 10) * MINUTE_NS),
                execution_duration_ns: closed.then_some(10 * MINUTE_NS),
                history_length: 5 + i,
                history_size_bytes: 1000 + i,
                state_transition_count: 3,
                parent_workflow_id: (i == 3).then(|| "wf-1".to_string()),
                first_run_id: run.to_string(),
                memo: format!("memo {i}").into_bytes(),
                search_attributes: format!("attributes {i}").into_bytes(),
                attributes,
                ..Default::default()
            }
        })
        .collect()
}

async fn store_rows(store: &Arc<dyn Store>) {
    let range_id = lease(store).await;
    for row in rows() {
        let mut b = batch(range_id, &row.workflow_id.clone());
        b.namespace_id = "vis".into();
        b.visibility = vec![VisibilityWrite::Upsert(Box::new(row))];
        store.commit(b).await.expect("commits");
    }
    // Another namespace's workflow never shows.
    let mut other = batch(range_id, "wf-x");
    other.namespace_id = "other".into();
    other.visibility = vec![VisibilityWrite::Upsert(Box::new(record(
        "run-x",
        "wf-x",
        1,
        Vec::new(),
    )))];
    store.commit(other).await.expect("commits");
}

async fn list(store: &Arc<dyn Store>, ns: &str, query: &str) -> Vec<String> {
    let compiled = kairos_visibility::compile_text(query, &custom())
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    store
        .list_visibility(ns, &compiled.filter, None, 100)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .into_iter()
        .map(|r| r.workflow_id)
        .collect()
}

/// The query language over records of every status and attribute type: each query selects
/// exactly its runs, newest first (running first, then by close time); counts and counts by
/// status; pages follow one another; updates and upserts replace what they should.
pub async fn visibility_queries_select_the_right_runs(store: Arc<dyn Store>) {
    store_rows(&store).await;
    let ids = |q: &'static str| list(&store, "vis", q);
    assert_eq!(
        ids("").await,
        ["wf-1", "wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"]
    );
    let table: &[(&str, &[&str])] = &[
        ("ExecutionStatus = 'Running'", &["wf-1"]),
        ("ExecutionStatus = 'completed'", &["wf-2"]),
        ("ExecutionStatus = 3", &["wf-3"]),
        (
            "ExecutionStatus IN ('Canceled', 'Terminated')",
            &["wf-5", "wf-4"],
        ),
        (
            "ExecutionStatus != 'Running' AND WorkflowType = 'refund'",
            &["wf-5", "wf-3"],
        ),
        (
            "WorkflowType = 'refund' OR ExecutionStatus = 'TimedOut'",
            &["wf-7", "wf-5", "wf-3"],
        ),
        ("NOT WorkflowType = 'order'", &["wf-5", "wf-3"]),
        (
            "WorkflowId STARTS_WITH 'wf-'",
            &["wf-1", "wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"],
        ),
        ("WorkflowId STARTS_WITH 'wf-7'", &["wf-7"]),
        ("WorkflowId NOT STARTS_WITH 'wf-'", &[]),
        ("CloseTime IS NULL", &["wf-1"]),
        ("ParentWorkflowId = 'wf-1'", &["wf-4"]),
        ("ParentWorkflowId IS NOT NULL", &["wf-4"]),
        ("HistoryLength > 9", &["wf-7", "wf-6"]),
        ("HistoryLength BETWEEN 6 AND 7", &["wf-3", "wf-2"]),
        ("HistoryLength NOT BETWEEN 6 AND 10", &["wf-1", "wf-7"]),
        (
            "ExecutionDuration >= '10m'",
            &["wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"],
        ),
        ("ExecutionDuration < '00:05:00'", &[]),
        (
            "StartTime >= '2026-09-21T13:59:20Z'",
            &["wf-1", "wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"],
        ),
        (
            "StartTime > 1790000120000000000",
            &["wf-7", "wf-6", "wf-5", "wf-4"],
        ),
        ("CustomerId = 'cust-1'", &["wf-5", "wf-2"]),
        ("CustomerId IS NULL", &["wf-7"]),
        (
            "CustomerId IN ('cust-0', 'cust-2')",
            &["wf-1", "wf-6", "wf-4", "wf-3"],
        ),
        ("CustomerId NOT IN ('cust-0', 'cust-2')", &["wf-5", "wf-2"]),
        ("CustomerId STARTS_WITH 'cust-1'", &["wf-5", "wf-2"]),
        ("Amount >= 40", &["wf-7", "wf-6", "wf-5"]),
        ("Amount BETWEEN 10 AND 20", &["wf-3", "wf-2"]),
        ("Price > 7", &["wf-7", "wf-6"]),
        ("Price <= 1.5", &["wf-1", "wf-2"]),
        ("Express = true", &["wf-6", "wf-4", "wf-2"]),
        ("DeliverBy < '2026-09-21T14:00:00Z'", &[]),
        (
            "DeliverBy >= 1790000240000000000",
            &["wf-7", "wf-6", "wf-5"],
        ),
        ("Notes = 'cheese number 3'", &["wf-4"]),
        ("Notes != 'CHEESE'", &[]),
        ("Tags = 'vip'", &["wf-1", "wf-7", "wf-5", "wf-3"]),
        ("Tags != 'vip'", &["wf-6", "wf-4", "wf-2"]),
        (
            "Tags IN ('vip', 'nobody')",
            &["wf-1", "wf-7", "wf-5", "wf-3"],
        ),
        ("Tags NOT IN ('vip')", &["wf-6", "wf-4", "wf-2"]),
        (
            "TemporalChangeVersion IS NULL",
            &["wf-1", "wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"],
        ),
        (
            "`Amount` = 0 AND (Tags = 'vip' OR Express = true)",
            &["wf-1"],
        ),
        (
            "NOT (CustomerId = 'cust-1')",
            &["wf-1", "wf-6", "wf-4", "wf-3"],
        ),
    ];
    for (query, expected) in table {
        assert_eq!(list(&store, "vis", query).await, *expected, "{query}");
    }
    // What a list returns of a record.
    let compiled = kairos_visibility::compile_text("WorkflowId = 'wf-4'", &custom()).unwrap();
    let got = store
        .list_visibility("vis", &compiled.filter, None, 10)
        .await
        .unwrap();
    let mut want = rows().remove(3);
    want.attributes.clear();
    assert_eq!(got, vec![want]);
    // Counts, grouped by status.
    let c = kairos_visibility::compile_text(
        "WorkflowType = 'order' GROUP BY ExecutionStatus",
        &custom(),
    )
    .unwrap();
    assert!(c.group_by_status);
    assert_eq!(
        store
            .count_visibility("vis", &c.filter, true)
            .await
            .unwrap(),
        vec![
            (Some(1), 1),
            (Some(2), 1),
            (Some(4), 1),
            (Some(6), 1),
            (Some(7), 1)
        ]
    );
    let c = kairos_visibility::compile_text("", &custom()).unwrap();
    assert_eq!(
        store
            .count_visibility("vis", &c.filter, false)
            .await
            .unwrap(),
        vec![(None, 7)]
    );
    // Paging: pages of three follow one another in the order of one list.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .list_visibility("vis", &c.filter, after, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().map(|r| r.cursor());
        all.extend(page.into_iter().map(|r| r.workflow_id));
    }
    assert_eq!(all, ids("").await);
    // The longest chains the language accepts run.
    let chain = vec!["WorkflowId = 'wf-1'"; 256].join(" OR ");
    assert_eq!(list(&store, "vis", &chain).await, ["wf-1"]);
    let chain = vec!["CustomerId != 'x'"; 256].join(" AND ");
    assert_eq!(list(&store, "vis", &chain).await.len(), 6);
    // An update changes the record but keeps its attributes; an upsert replaces both; an
    // insert of a record that exists fails its batch.
    let range_id = lease(&store).await;
    let mut closed = rows().remove(0);
    closed.status = 2;
    closed.close_time_ns = Some(T0 + 100 * MINUTE_NS);
    closed.attributes.clear();
    let mut b = batch(range_id, "wf-1");
    b.namespace_id = "vis".into();
    b.visibility = vec![VisibilityWrite::Update(Box::new(closed.clone()))];
    store.commit(b).await.unwrap();
    assert_eq!(
        ids("ExecutionStatus = 'Running'").await,
        Vec::<String>::new()
    );
    assert_eq!(
        ids("Amount = 0").await,
        ["wf-1"],
        "an update keeps the attribute rows"
    );
    assert_eq!(
        ids("").await[0],
        "wf-1",
        "closed last, so listed first among closed"
    );
    closed.attributes = vec![("Amount".into(), Value::Int(5))];
    let mut b = batch(range_id, "wf-1");
    b.namespace_id = "vis".into();
    b.visibility = vec![VisibilityWrite::Upsert(Box::new(closed))];
    store.commit(b).await.unwrap();
    assert_eq!(
        ids("Amount = 0").await,
        Vec::<String>::new(),
        "an upsert replaces them"
    );
    assert_eq!(ids("Amount = 5").await, ["wf-1"]);
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Every query the language compiles runs on the store: generated queries of every operator
/// and type, often damaged, and arbitrary text; nothing the compiler accepts is refused by the
/// backend's SQL.
pub async fn whatever_compiles_runs_on_the_store(store: Arc<dyn Store>) {
    store_rows(&store).await;
    let pieces = [
        "WorkflowId",
        "ExecutionStatus",
        "StartTime",
        "Amount",
        "Price",
        "Express",
        "Notes",
        "Tags",
        "CustomerId",
        "HistoryLength",
        "ExecutionDuration",
        "Nope",
        "=",
        "!=",
        "<",
        ">=",
        "<>",
        "IN",
        "NOT",
        "AND",
        "OR",
        "BETWEEN",
        "STARTS_WITH",
        "IS",
        "NULL",
        "(",
        ")",
        ",",
        "'x'",
        "'Running'",
        "'2026-01-01T00:00:00Z'",
        "'10m'",
        "1",
        "-2.5",
        "true",
        "\"q\"",
        "`Amount`",
        "GROUP BY",
        "ORDER BY",
        "LIMIT",
        "'",
        "`",
        "\\",
        ";",
        "*",
        "é",
        "'it''s'",
        "1e309",
        "99999999999999999999",
        "--",
        "/*",
    ];
    let attrs = [
        "WorkflowId",
        "ExecutionStatus",
        "StartTime",
        "Amount",
        "Price",
        "Express",
        "Notes",
        "Tags",
        "CustomerId",
        "HistoryLength",
        "ExecutionDuration",
        "`Amount`",
        "CloseTime",
        "DeliverBy",
        "ParentWorkflowId",
    ];
    let ops = ["=", "!=", "<", ">=", "<>", ">"];
    let values = [
        "'x'",
        "'Running'",
        "'2026-01-01T00:00:00Z'",
        "'10m'",
        "1",
        "-2.5",
        "true",
        "\"q\"",
        "'it''s'",
        "3",
        "'%'",
        "'_'",
        "'\\'",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compiled_ok = 0;
    for _ in 0..3000 {
        let mut parts: Vec<String> = Vec::new();
        let terms = 1 + rng.next() % 3;
        for t in 0..terms {
            if t > 0 {
                parts.push(rng.pick(&["AND", "OR", "AND NOT"]).to_string());
            }
            let attr = rng.pick(&attrs);
            let term = match rng.next() % 5 {
                0 => format!("{attr} IN ({}, {})", rng.pick(&values), rng.pick(&values)),
                1 => format!(
                    "{attr} BETWEEN {} AND {}",
                    rng.pick(&values),
                    rng.pick(&values)
                ),
                2 => format!("{attr} STARTS_WITH {}", rng.pick(&values)),
                3 => format!("{attr} IS {}NULL", rng.pick(&["", "NOT "])),
                _ => format!("{attr} {} {}", rng.pick(&ops), rng.pick(&values)),
            };
            parts.push(if rng.next().is_multiple_of(3) {
                format!("({term})")
            } else {
                term
            });
        }
        if rng.next().is_multiple_of(2) {
            let at = (rng.next() % (parts.len() as u64 + 1)) as usize;
            parts.insert(at, rng.pick(&pieces).to_string());
        }
        let text = parts.join(" ");
        if let Ok(c) = kairos_visibility::compile_text(&text, &custom()) {
            compiled_ok += 1;
            store
                .list_visibility("vis", &c.filter, None, 5)
                .await
                .unwrap_or_else(|e| panic!("{text:?} compiled to a filter the store refused: {e}"));
            store
                .count_visibility("vis", &c.filter, c.group_by_status)
                .await
                .unwrap_or_else(|e| panic!("{text:?}: the store refused its count: {e}"));
        }
    }
    assert!(
        compiled_ok > 50,
        "the generator must reach valid queries too ({compiled_ok})"
    );
}

/// A batch answered once committed (not yet synced) is as readable and as fenced as any, is
/// counted as a commit and never waits for a sync.
pub async fn committed_batches_are_kept_and_fenced_like_synced_ones(store: Arc<dyn Store>) {
    let old = lease(&store).await;
    let before = store.counters();
    let mut first = batch(old, "wf");
    first.executions = vec![insert("run")];
    first.current = set_current("run", None);
    first.durability = Durability::Committed;
    store.commit(first).await.expect("the owner commits");
    let row = store.get_execution(NS, "wf", "run").await.unwrap();
    assert!(row.is_some(), "readable once answered");
    let after = store.counters();
    assert!(after.commits > before.commits, "{before:?} -> {after:?}");
    assert_eq!(after.syncs, before.syncs, "no sync waited for");
    let mut conflicting = batch(old, "wf");
    conflicting.executions = vec![(
        "run".into(),
        ExecutionWrite::Update {
            state: b"v2".to_vec(),
            expected_version: 7,
        },
    )];
    conflicting.durability = Durability::Committed;
    let result = store.commit(conflicting).await;
    assert!(
        matches!(result, Err(Error::ConditionFailed(_))),
        "{result:?}"
    );
    let new = store.acquire_shards(&[0]).await.unwrap()[0].range_id;
    assert!(new > old);
    let mut stale = batch(old, "wf");
    stale.timers_add = vec![timer(0, 1, 10)];
    stale.durability = Durability::Committed;
    let result = store.commit(stale).await;
    assert!(
        matches!(result, Err(Error::ShardOwnershipLost { shard_id: 0 })),
        "{result:?}"
    );
    assert!(store.load_timers(&[0]).await.unwrap().is_empty());
}
