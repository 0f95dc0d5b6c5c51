//! The schema: migrations applied in order at open (`PRAGMA user_version` counts them), the
//! final schema a new empty database gets in one step, and the empty template a new file is
//! copied from.
use super::*;

/// Schema migrations, applied in order at open; `PRAGMA user_version` records how many ran.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
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
"#,
    // 3: fewer pages written per commit (measured from the WAL: 30 pages per group commit, half
    // of them history). History is appended as one row per transition to a table in insertion
    // order, so a group's events share the last page, found by a small index instead of sitting
    // in a B-tree ordered by random run ids. Timers are one B-tree in fire order (was a table,
    // its key index and a time index); transfer tasks one B-tree (was a table and its index).
    // The rows of the old history table are copied by `copy_history_v3`.
    r#"
CREATE TABLE history (
    seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, first_event_id INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE UNIQUE INDEX history_by_run ON history (run_id, first_event_id);
CREATE TABLE timers (
    shard_id INTEGER NOT NULL, fire_at_ms INTEGER NOT NULL, task_id INTEGER NOT NULL,
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (shard_id, fire_at_ms, task_id)) WITHOUT ROWID;
INSERT INTO timers SELECT shard_id, fire_at_ms, task_id, namespace_id, workflow_id, run_id, data
    FROM timer_tasks;
DROP TABLE timer_tasks;
CREATE TABLE transfers (
    shard_id INTEGER NOT NULL, task_id INTEGER NOT NULL,
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (shard_id, task_id)) WITHOUT ROWID;
INSERT INTO transfers SELECT shard_id, task_id, namespace_id, workflow_id, run_id, data
    FROM transfer_tasks;
DROP TABLE transfer_tasks;
"#,
    // 4: no index entry per transition. The index on (run id, first event id) took one leaf page
    // in random run-id order per transition, the largest share of the pages written per commit.
    // Now each row points to the run's previous row (`prev`), the execution row to the run's
    // last one (`history_tail`, rewritten with the state it is stored beside), and only rows
    // that hold an event id 256k+1 are indexed (`marked`), so a read from any event walks back
    // over at most 256 events' rows. `history_next` is the id the next appended event must
    // have. The rows are copied (with `prev` placed before the event bytes, so a walk never
    // reads them) by `chain_history_v4`.
    r#"
ALTER TABLE executions ADD COLUMN history_tail INTEGER;
ALTER TABLE executions ADD COLUMN history_next INTEGER NOT NULL DEFAULT 1;
ALTER TABLE history RENAME TO history_v3;
CREATE INDEX executions_by_run_v4 ON executions (run_id);
CREATE TABLE history (
    seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, first_event_id INTEGER NOT NULL,
    prev INTEGER, marked INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX history_marks ON history (run_id, first_event_id) WHERE marked;
"#,
];

/// The schema every migration above leads to, created in one step on a new, empty database:
/// replaying the migrations (tables created, copied, renamed and dropped, each change making
/// SQLite re-read its schema) took about 2.5 ms of a new file's start-up. When a migration is
/// added, this must be changed to match; `sqlite::tests::a_new_database_has_the_migrated_schema`
/// compares the two.
pub(crate) const SCHEMA: &str = r#"
CREATE TABLE namespaces (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB NOT NULL);
CREATE TABLE cluster_metadata (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE shards (shard_id INTEGER PRIMARY KEY, range_id INTEGER NOT NULL);
CREATE TABLE executions (
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL,
    shard_id INTEGER NOT NULL, db_version INTEGER NOT NULL, state BLOB NOT NULL,
    history_tail INTEGER, history_next INTEGER NOT NULL DEFAULT 1,
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
CREATE TABLE timers (
    shard_id INTEGER NOT NULL, fire_at_ms INTEGER NOT NULL, task_id INTEGER NOT NULL,
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (shard_id, fire_at_ms, task_id)) WITHOUT ROWID;
CREATE TABLE transfers (
    shard_id INTEGER NOT NULL, task_id INTEGER NOT NULL,
    namespace_id TEXT NOT NULL, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (shard_id, task_id)) WITHOUT ROWID;
CREATE TABLE history (
    seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, first_event_id INTEGER NOT NULL,
    prev INTEGER, marked INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX history_marks ON history (run_id, first_event_id) WHERE marked;
"#;

/// Work a migration needs beyond SQL, by the migration's number (1-based), run after its SQL in
/// the same transaction.
pub(crate) fn migration_code(
    number: usize,
    tx: &rusqlite::Transaction<'_>,
) -> rusqlite::Result<()> {
    match number {
        3 => copy_history_v3(tx),
        4 => chain_history_v4(tx),
        _ => Ok(()),
    }
}

/// Migration 4: copies every history row in (run, event) order, linking each to the run's
/// previous row, then records each run's last row and next event id on its execution. Rows of
/// runs without an execution (none are written so) are dropped.
pub(crate) fn chain_history_v4(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    {
        let mut read = tx.prepare(
            "SELECT h.run_id, h.first_event_id, h.data FROM history_v3 h
              WHERE EXISTS (SELECT 1 FROM executions e WHERE e.run_id = h.run_id)
              ORDER BY h.run_id, h.first_event_id",
        )?;
        let mut write = tx.prepare(
            "INSERT INTO history (run_id, first_event_id, prev, marked, data)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut finish = tx.prepare(
            "UPDATE executions SET history_tail = ?2, history_next = ?3 WHERE run_id = ?1",
        )?;
        let mut rows = read.query([])?;
        // (run id, its last row, the event id after that row)
        let mut run: Option<(String, i64, i64)> = None;
        while let Some(row) = rows.next()? {
            let run_id: String = row.get(0)?;
            let first: i64 = row.get(1)?;
            let data = row.get_ref(2)?.as_blob()?;
            let count = unframe_events(data)
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        2,
                        rusqlite::types::Type::Blob,
                        format!("history of run {run_id}: {e}").into(),
                    )
                })?
                .len() as i64;
            let prev = match &run {
                Some((r, tail, _)) if *r == run_id => Some(*tail),
                Some((r, tail, next)) => {
                    finish.execute(params![r, tail, next])?;
                    None
                }
                None => None,
            };
            write.execute(params![
                run_id,
                first,
                prev,
                marked(first, first + count - 1),
                data
            ])?;
            run = Some((run_id, tx.last_insert_rowid(), first + count));
        }
        if let Some((r, tail, next)) = &run {
            finish.execute(params![r, tail, next])?;
        }
    }
    tx.execute_batch("DROP TABLE history_v3; DROP INDEX executions_by_run_v4;")
}

/// Migration 3: every stored event becomes a one-event history row.
pub(crate) fn copy_history_v3(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    {
        let mut read = tx.prepare(
            "SELECT run_id, event_id, data FROM history_events ORDER BY run_id, event_id",
        )?;
        let mut write =
            tx.prepare("INSERT INTO history (run_id, first_event_id, data) VALUES (?1, ?2, ?3)")?;
        let mut rows = read.query([])?;
        let mut framed = Vec::new();
        while let Some(row) = rows.next()? {
            let run_id: String = row.get(0)?;
            let event_id: i64 = row.get(1)?;
            let data: Vec<u8> = row.get(2)?;
            framed.clear();
            frame_event(&mut framed, &data);
            write.execute(params![run_id, event_id, framed])?;
        }
    }
    tx.execute_batch("DROP TABLE history_events")
}

/// An empty database of the current schema: `SCHEMA` in WAL mode, `user_version` at the last
/// migration. Regenerate it after changing `SCHEMA` with `KAIROS_WRITE_TEMPLATE=1 cargo test -p
/// kairos-persistence --lib template`, run twice (the first run writes the file, the second
/// compiles it in); `sqlite::tests::the_template_is_the_current_schema_empty` fails until then.
pub(crate) const TEMPLATE: &[u8] = include_bytes!("empty.db");

pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = query_one(conn, "PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err("failed to read the schema version"))?;
    if version as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    // Every pending migration in one transaction: a new database costs one commit (one fsync)
    // however many migrations there are, and a failure leaves the schema where it was. Taken for
    // writing at once, and the version read again inside: another process that opened the same
    // file meanwhile either finished first or waits (busy timeout).
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql_err("failed to begin a migration"))?;
    let version: i64 = query_one(&tx, "PRAGMA user_version", [], |r| r.get(0))
        .map_err(sql_err("failed to read the schema version"))?;
    if version as usize >= MIGRATIONS.len() {
        return Ok(());
    }
    let empty = version == 0
        && query_one(&tx, "SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(sql_err("failed to read the schema"))?
            == 0;
    if empty {
        tx.execute_batch(SCHEMA)
            .map_err(sql_err("failed to create the schema"))?;
    } else {
        apply_migrations(&tx, version as usize).map_err(sql_err("failed to apply a migration"))?;
    }
    tx.execute_batch(&format!("PRAGMA user_version = {}", MIGRATIONS.len()))
        .map_err(sql_err("failed to record the schema version"))?;
    tx.commit().map_err(sql_err("failed to commit a migration"))
}

/// Applies the migrations after the first `done`, in order.
pub(crate) fn apply_migrations(
    tx: &rusqlite::Transaction<'_>,
    done: usize,
) -> rusqlite::Result<()> {
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(migration)?;
        migration_code(index + 1, tx)?;
    }
    Ok(())
}
