//! Unit tests of the SQLite backend's internals: the file's life, the writer, the schema.
use super::{Location, READERS, SqliteStore, frame_event, query_one, unframe_events};
use crate::Store;
use crate::{Error, NamespaceRow, PutNamespace};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The shard-lease commit and the namespaces created at start run unsynced; every commit
/// after them must be synced again.
#[tokio::test]
async fn commits_after_the_unsynced_start_up_commits_are_synced() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Location::File(dir.path().join("k.db"))).unwrap();
    let synchronous = || {
        store.write_job(|conn| {
            Ok(query_one(conn, "PRAGMA synchronous", [], |r| r.get::<_, i64>(0)).unwrap())
        })
    };
    store.acquire_shards(&[0, 1, 2, 3]).await.unwrap();
    assert_eq!(synchronous().await.unwrap(), 2, "FULL after the leases");
    let row = NamespaceRow {
        id: "id-1".into(),
        name: "default".into(),
        data: vec![1],
    };
    let how = PutNamespace::Create;
    store.put_namespace(row.clone(), how).await.unwrap();
    assert_eq!(synchronous().await.unwrap(), 2, "FULL after the namespace");
    assert_eq!(store.list_namespaces().await.unwrap(), vec![row.clone()]);
    let again = store.put_namespace(row, how).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))), "{again:?}");
    assert_eq!(
        synchronous().await.unwrap(),
        2,
        "FULL after a refused namespace"
    );
}

/// Start-up writes run on the caller's thread; after `start_writer` (or a first commit),
/// every write runs on the writer thread, and a commit is readable right after it returns.
#[tokio::test]
async fn writes_run_here_until_the_writer_thread_starts() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Location::File(dir.path().join("k.db"))).unwrap();
    let where_run = || store.write_job(|_| Ok(std::thread::current().name().map(str::to_owned)));
    let here = std::thread::current().name().map(str::to_owned);
    assert_eq!(where_run().await.unwrap(), here);
    store.acquire_shards(&[0]).await.unwrap();
    store.put_metadata("k", vec![1]).await.unwrap();
    assert_eq!(where_run().await.unwrap(), here);
    store.start_writer().unwrap();
    store.start_writer().unwrap();
    let writer = Some("kairos-sqlite-writer".to_string());
    assert_eq!(where_run().await.unwrap(), writer);
    store.put_metadata("k", vec![2]).await.unwrap();
    assert_eq!(store.get_metadata("k").await.unwrap(), Some(vec![2]));

    // Without `start_writer`, the first commit starts the thread.
    let other = SqliteStore::open(&Location::File(dir.path().join("k2.db"))).unwrap();
    let lease = other.acquire_shards(&[0]).await.unwrap().remove(0);
    let batch = crate::WriteBatch {
        shard_id: lease.shard_id,
        range_id: lease.range_id,
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        ..Default::default()
    };
    other.commit(batch).await.unwrap();
    let on = other.write_job(|_| Ok(std::thread::current().name().map(str::to_owned)));
    assert_eq!(on.await.unwrap(), writer);
}

/// While serving, a group is committed without a sync and the log synced after it: a synced
/// batch is answered after its group's sync, and each is readable once answered (reads wait for
/// the sync of what they could see); writes from jobs are synced by their own commit (`FULL`).
#[tokio::test]
async fn committed_batches_are_answered_without_a_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Location::File(dir.path().join("k.db"))).unwrap();
    let lease = store.acquire_shards(&[0]).await.unwrap().remove(0);
    store.start_writer().unwrap();
    let batch = |n: i64, durability| crate::WriteBatch {
        shard_id: lease.shard_id,
        range_id: lease.range_id,
        namespace_id: "ns".into(),
        workflow_id: format!("wf-{n}"),
        transfers_add: vec![crate::TransferTask {
            task_id: (lease.range_id << 40) + n,
            shard_id: lease.shard_id,
            namespace_id: "ns".into(),
            workflow_id: format!("wf-{n}"),
            run_id: "r".into(),
            data: vec![1],
        }],
        durability,
        ..Default::default()
    };
    let stored = || async { store.load_transfers(&[0]).await.unwrap().len() };
    assert_eq!(
        store.counters(),
        kairos_persistence::StoreCounters::default()
    );
    store
        .commit(batch(1, crate::Durability::Synced))
        .await
        .unwrap();
    assert_eq!(stored().await, 1);
    let after_synced = store.counters();
    assert_eq!((after_synced.commits, after_synced.syncs), (1, 1));
    store
        .commit(batch(2, crate::Durability::Committed))
        .await
        .unwrap();
    assert_eq!(stored().await, 2, "readable once answered");
    // Its group is synced after it, and the read above was answered only after that.
    let after_committed = store.counters();
    assert_eq!((after_committed.commits, after_committed.syncs), (2, 2));
    let synchronous = store.write_job(|conn| {
        Ok(query_one(conn, "PRAGMA synchronous", [], |r| r.get::<_, i64>(0)).unwrap())
    });
    assert_eq!(synchronous.await.unwrap(), 2, "jobs run with FULL");
    // Many at once: every synced one is answered, with fewer syncs than batches.
    let many = (10..74).map(|n| store.commit(batch(n, crate::Durability::Synced)));
    for result in futures::future::join_all(many).await {
        result.unwrap();
    }
    assert_eq!(stored().await, 66);
    let after_many = store.counters();
    assert!(
        after_many.syncs > 2 && after_many.syncs <= 2 + 64,
        "{after_many:?}"
    );
}

/// A database reached through a symbolic link: the log synced is the one SQLite writes, beside
/// the link's target.
#[tokio::test]
async fn the_log_synced_is_the_one_sqlite_writes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    let link = dir.path().join("k.db");
    let target = dir.path().join("real/k.db");
    std::fs::File::create(&target).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let store = SqliteStore::open(&Location::File(link)).unwrap();
    let lease = store.acquire_shards(&[0]).await.unwrap().remove(0);
    store.start_writer().unwrap();
    let batch = crate::WriteBatch {
        shard_id: lease.shard_id,
        range_id: lease.range_id,
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        ..Default::default()
    };
    store
        .commit(batch)
        .await
        .expect("synced through the real log");
    assert_eq!(store.counters().syncs, 1);
    assert!(dir.path().join("real/k.db-wal").exists());
}

/// No reader thread runs before the first read; concurrent reads start more, never more
/// than `READERS`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_threads_start_as_reads_need_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Location::File(dir.path().join("k.db"))).unwrap();
    let started = || store.reader_pool.started.load(Ordering::Acquire);
    assert_eq!(started(), 0);
    assert_eq!(store.get_metadata("missing").await.unwrap(), None);
    assert_eq!(started(), 1);
    // Reads that hold their reader until all of them run: each needs its own thread.
    let barrier = Arc::new(std::sync::Barrier::new(READERS));
    let reads = (0..READERS).map(|_| {
        let barrier = barrier.clone();
        store.read(move |_| {
            barrier.wait();
            Ok(())
        })
    });
    futures::future::join_all(reads).await;
    assert_eq!(started(), READERS);
    let more = (0..4 * READERS).map(|_| store.get_metadata("missing"));
    for read in futures::future::join_all(more).await {
        assert_eq!(read.unwrap(), None);
    }
    assert_eq!(started(), READERS, "never more than READERS");
}

/// Every table and index with its columns (name, type, not null, default, key position),
/// uniqueness and condition, and whether a table has rowids: what a schema means, whatever
/// the text that made it.
fn describe_schema(conn: &rusqlite::Connection) -> Vec<String> {
    let mut out = Vec::new();
    let objects: Vec<(String, String, String, Option<String>)> = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (kind, name, table, sql) in objects {
        let pragma = if kind == "table" {
            "table_xinfo"
        } else {
            "index_xinfo"
        };
        let columns: Vec<String> = conn
            .prepare(&format!("PRAGMA {pragma}(\"{name}\")"))
            .unwrap()
            .query_map([], |r| {
                let mut cells = Vec::new();
                for i in 0..r.as_ref().column_count() {
                    cells.push(format!("{:?}", r.get::<_, rusqlite::types::Value>(i)?));
                }
                Ok(cells.join(","))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // Rowid-ness and strictness of a table; uniqueness and partialness of an index; the
        // condition of a partial index (whitespace aside).
        let flags = if kind == "table" {
            conn.query_row(
                "SELECT wr, strict FROM pragma_table_list WHERE name = ?1",
                [&name],
                |r| {
                    Ok(format!(
                        "wr={} strict={}",
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?
                    ))
                },
            )
            .unwrap()
        } else {
            let (unique, partial): (i64, i64) = conn
                .query_row(
                    "SELECT \"unique\", partial FROM pragma_index_list(?1) WHERE name = ?2",
                    [&table, &name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            let condition = sql
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase()
                .split_once(" WHERE ")
                .map(|(_, w)| w.to_string());
            format!("unique={unique} partial={partial} where={condition:?}")
        };
        out.push(format!(
            "{kind} {name} on {table} {flags} [{}]",
            columns.join(" | ")
        ));
    }
    out
}

/// A new database gets its schema in one step; it must be the schema the migrations lead
/// to, table by table and index by index.
#[test]
fn a_new_database_has_the_migrated_schema() {
    let direct = rusqlite::Connection::open_in_memory().unwrap();
    let mut direct = direct;
    super::migrate(&mut direct).unwrap();
    let mut replayed = rusqlite::Connection::open_in_memory().unwrap();
    let tx = replayed.transaction().unwrap();
    super::apply_migrations(&tx, 0).unwrap();
    tx.commit().unwrap();
    let (direct, replayed) = (describe_schema(&direct), describe_schema(&replayed));
    assert!(direct.len() > 10, "{direct:#?}");
    assert_eq!(direct, replayed);
}

/// An empty database built by SQLite from `SCHEMA`, as the template must be.
fn build_template() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let mut conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL;").unwrap();
    super::migrate(&mut conn).unwrap();
    conn.execute_batch("VACUUM;").unwrap();
    drop(conn); // the last connection checkpoints the WAL into the file
    std::fs::read(&path).unwrap()
}

/// The template a new file is created from is an empty WAL database of the current schema at
/// the last migration's version.
#[test]
fn the_template_is_the_current_schema_empty() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/src/empty.db");
    if std::env::var_os("KAIROS_WRITE_TEMPLATE").is_some() {
        std::fs::write(file, build_template()).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    std::fs::write(&path, super::TEMPLATE).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let mut fresh = rusqlite::Connection::open_in_memory().unwrap();
    super::migrate(&mut fresh).unwrap();
    let regenerate = "regenerate src/empty.db: \
        KAIROS_WRITE_TEMPLATE=1 cargo test -p kairos-persistence --lib template, twice";
    assert_eq!(
        describe_schema(&conn),
        describe_schema(&fresh),
        "{regenerate}"
    );
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version as usize, super::MIGRATIONS.len(), "{regenerate}");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for table in tables {
        let rows: i64 = conn
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(rows, 0, "{table} is not empty");
    }
}

/// A new file is created whole from the template, with no scratch file left behind, and if
/// the file appears meanwhile (another process), the one already there is kept.
#[test]
fn a_new_file_is_created_from_the_template_and_an_existing_one_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    assert!(super::create_database(&path).unwrap().is_some());
    assert_eq!(std::fs::read(&path).unwrap(), super::TEMPLATE);
    let theirs = dir.path().join("theirs.db");
    std::fs::write(&theirs, b"not ours").unwrap();
    assert!(super::create_database(&theirs).unwrap().is_none());
    assert_eq!(std::fs::read(&theirs).unwrap(), b"not ours");
    let scratch: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("creating"))
        .collect();
    assert_eq!(scratch, Vec::<String>::new());
}

/// A new file's bytes are synced before the first synced commit, not at creation: the
/// unsynced start-up commits go first, a synced commit is refused while the sync fails, and
/// the writer thread syncs it on its own once no commit has come for `CREATION_SYNC_DELAY`. A
/// reopened file has nothing pending.
#[tokio::test]
async fn a_new_file_is_synced_before_the_first_synced_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = SqliteStore::open(&Location::File(path.clone())).unwrap();
    let pending = || store.writer.creation.lock().is_some();
    assert!(pending(), "created, not yet synced");
    store.acquire_shards(&[0, 1]).await.unwrap();
    let row = NamespaceRow {
        id: "id-1".into(),
        name: "default".into(),
        data: vec![1],
    };
    store
        .put_namespace(row, PutNamespace::Create)
        .await
        .unwrap();
    assert!(pending(), "the unsynced start-up commits do not sync it");
    // A sync that fails refuses the commit and stays pending.
    let real_dir = {
        let mut creation = store.writer.creation.lock();
        let unsynced = creation.as_mut().unwrap();
        std::mem::replace(&mut unsynced.dir, dir.path().join("missing"))
    };
    assert!(store.put_metadata("k", vec![1]).await.is_err());
    assert!(pending());
    assert_eq!(store.get_metadata("k").await.unwrap(), None);
    store.writer.creation.lock().as_mut().unwrap().dir = real_dir;
    store.put_metadata("k", vec![2]).await.unwrap();
    assert!(!pending(), "synced by the first synced commit");
    assert_eq!(store.get_metadata("k").await.unwrap(), Some(vec![2]));
    drop(store);

    let reopened = SqliteStore::open(&Location::File(path)).unwrap();
    assert!(reopened.writer.creation.lock().is_none());
    assert_eq!(reopened.get_metadata("k").await.unwrap(), Some(vec![2]));

    let other = SqliteStore::open(&Location::File(dir.path().join("k2.db"))).unwrap();
    assert!(other.writer.creation.lock().is_some());
    other.start_writer().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while other.writer.creation.lock().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never synced"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// What a crash can leave of a file created and not yet synced (sectors of zeros, a short
/// prefix) is created again, its stale log removed; any other file is kept as it is.
#[tokio::test]
async fn a_full_disk_is_reported_with_sqlites_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&Location::File(dir.path().join("k.db"))).unwrap();
    let range_id = store.acquire_shards(&[0]).await.unwrap()[0].range_id;
    store.start_writer().unwrap();
    // SQLite's page limit makes the file "full" at its current size.
    store
        .write_job(|conn| {
            conn.execute_batch("PRAGMA max_page_count = 1")
                .map_err(super::sql_err("failed to limit the file"))
        })
        .await
        .unwrap();
    let batch = crate::WriteBatch {
        shard_id: 0,
        range_id,
        namespace_id: "ns".into(),
        workflow_id: "wf".into(),
        executions: vec![(
            "run".into(),
            crate::ExecutionWrite::Insert {
                state: vec![7; 64 * 1024],
            },
        )],
        ..Default::default()
    };
    let error = store.commit(batch).await.expect_err("the disk is full");
    let text = error.with_causes();
    assert!(text.contains("database or disk is full"), "{text}");
    assert!(text.contains("SQLite result code 13"), "{text}");
    assert_eq!(text.matches("store unavailable").count(), 1, "{text}");
}

#[tokio::test]
async fn a_torn_file_whose_log_holds_commits_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.db");
    let store = SqliteStore::open(&Location::File(live.clone())).unwrap();
    store.put_metadata("order", vec![42]).await.unwrap();
    // What a crash leaves: the log with the commit, the main file (never checkpointed: the
    // template's bytes) cut short.
    let path = dir.path().join("k.db");
    let wal = dir.path().join("k.db-wal");
    std::fs::copy(dir.path().join("live.db-wal"), &wal).unwrap();
    std::fs::write(&path, &super::TEMPLATE[..4096]).unwrap();
    drop(store);
    assert!(
        super::torn_creation(&path).unwrap(),
        "shaped like a torn creation"
    );
    assert!(crate::wal::committed(&wal).unwrap().transactions > 0);
    let (main_before, wal_before) = (std::fs::read(&path).unwrap(), std::fs::read(&wal).unwrap());
    let error = SqliteStore::open(&Location::File(path.clone()))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("refusing to open it"), "{error}");
    assert!(error.contains("k.db-wal"), "{error}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        main_before,
        "main file untouched"
    );
    assert_eq!(std::fs::read(&wal).unwrap(), wal_before, "log untouched");
}

#[tokio::test]
async fn a_second_store_on_the_same_file_is_refused_while_the_first_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let first = SqliteStore::open(&Location::File(path.clone())).unwrap();
    let error = SqliteStore::open(&Location::File(path.clone()))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        error.contains(&format!("in use by process {}", std::process::id())),
        "{error}"
    );
    first.put_metadata("k", vec![1]).await.unwrap();
    drop(first);
    let second = SqliteStore::open(&Location::File(path)).unwrap();
    assert_eq!(second.get_metadata("k").await.unwrap(), Some(vec![1]));
}

#[tokio::test]
async fn a_torn_new_file_is_created_again_and_other_files_kept() {
    let dir = tempfile::tempdir().unwrap();
    let template = super::TEMPLATE;
    let mut zeroed = template.to_vec();
    zeroed[4096..12288].fill(0);
    let mut scribbled = template.to_vec();
    scribbled[template.len() - 700..template.len() - 600].fill(7);
    let cases: [(&str, Vec<u8>, bool); 6] = [
        ("zeroed sectors", zeroed, true),
        ("a prefix", template[..10_000].to_vec(), true),
        ("all zeros", vec![0; 8192], true),
        ("the whole template", template.to_vec(), false),
        ("other bytes", scribbled, false),
        ("not a database", b"hello".to_vec(), false),
    ];
    for (name, bytes, torn) in &cases {
        let path = dir.path().join("t.db");
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(super::torn_creation(&path).unwrap(), *torn, "{name}");
    }
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert!(
        !super::torn_creation(&empty).unwrap(),
        "an empty file is SQLite's"
    );

    // Through `open`: the torn file and its log are replaced by a working database.
    let path = dir.path().join("k.db");
    std::fs::write(&path, &cases[0].1).unwrap();
    let wal = dir.path().join("k.db-wal");
    std::fs::write(&wal, vec![9; 5000]).unwrap();
    let store = SqliteStore::open(&Location::File(path.clone())).unwrap();
    assert_ne!(
        std::fs::read(&wal).unwrap_or_default(),
        vec![9; 5000],
        "the stale log is removed"
    );
    assert!(
        store.writer.creation.lock().is_some(),
        "made again, unsynced"
    );
    assert_eq!(store.list_namespaces().await.unwrap(), vec![]);
    store.put_metadata("k", vec![1]).await.unwrap();
    assert_eq!(store.get_metadata("k").await.unwrap(), Some(vec![1]));
    drop(store);
    // A file that is not a torn creation is never replaced, even when it cannot be opened.
    let kept = dir.path().join("kept.db");
    std::fs::write(&kept, b"hello").unwrap();
    assert!(SqliteStore::open(&Location::File(kept.clone())).is_err());
    assert_eq!(std::fs::read(&kept).unwrap(), b"hello");
    // An empty file gets the schema from SQLite, as before.
    let store = SqliteStore::open(&Location::File(empty)).unwrap();
    assert!(store.writer.creation.lock().is_none());
    assert_eq!(store.list_namespaces().await.unwrap(), vec![]);
}

#[test]
fn history_rows_split_back_into_their_events() {
    let events: Vec<Vec<u8>> = [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000]
        .iter()
        .map(|&len| (0..len).map(|i| (i % 251) as u8).collect())
        .collect();
    let mut row = Vec::new();
    for event in &events {
        frame_event(&mut row, event);
    }
    let back: Vec<Vec<u8>> = unframe_events(&row)
        .unwrap()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(back, events);
}

#[test]
fn a_damaged_history_row_is_an_error_not_a_panic() {
    let mut row = Vec::new();
    frame_event(&mut row, &[7; 200]);
    for cut in 0..row.len() {
        let _ = unframe_events(&row[..cut]);
    }
    assert!(unframe_events(&row[..row.len() - 1]).is_err());
    assert!(unframe_events(&[0x12, 0]).is_err());
    assert!(
        unframe_events(&[
            0x0A, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01
        ])
        .is_err()
    );
}
