//! The SQLite backend: WAL, `synchronous=FULL`, one writer thread that group-commits every batch
//! waiting in its queue into a single transaction (replayed with a savepoint around each batch if
//! one fails, so one failed condition does not undo the others), and a small pool of reader
//! connections.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::{
    CurrentRow, CurrentWrite, Error, ExecutionRow, ExecutionWrite, NamespaceRow, PutNamespace,
    Result, ShardLease, Store, TimerTask, TransferTask, VisibilityCursor, VisibilityRow,
    VisibilityWrite, WriteBatch,
};
use kairos_core::filter::{SqlFilter, SqlValue};

/// Schema migrations, applied in order at open; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
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
const SCHEMA: &str = r#"
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

/// Events per history mark: a row holding an event id `MARK_EVERY * k + 1` (k >= 1) is indexed.
const MARK_EVERY: i64 = 256;

/// Whether a history row holding events `first..=last` is indexed (see migration 4).
fn marked(first: i64, last: i64) -> bool {
    let k = (last - 1) / MARK_EVERY;
    k >= 1 && MARK_EVERY * k + 1 >= first
}

/// Work a migration needs beyond SQL, by the migration's number (1-based), run after its SQL in
/// the same transaction.
fn migration_code(number: usize, tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    match number {
        3 => copy_history_v3(tx),
        4 => chain_history_v4(tx),
        _ => Ok(()),
    }
}

/// Migration 4: copies every history row in (run, event) order, linking each to the run's
/// previous row, then records each run's last row and next event id on its execution. Rows of
/// runs without an execution (none are written so) are dropped.
fn chain_history_v4(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
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
fn copy_history_v3(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
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

/// At most this many events share a history row, so a read of a page of a long copied history
/// (a reset writes the kept prefix in one transition) decodes a bounded row, not all of it.
const MAX_EVENTS_PER_ROW: usize = 64;

/// Appends one event to a history row: field 1 of a `History` message (tag, length, bytes), so a
/// row is itself a valid encoded `History`.
fn frame_event(out: &mut Vec<u8>, event: &[u8]) {
    out.push(0x0A);
    let mut len = event.len() as u64;
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(event);
}

/// Splits a stored history row into its events' bytes and counts them: the row decoder, for
/// the fuzz target (`fuzz/`) and its smoke test.
#[doc(hidden)]
pub fn split_history_row(data: &[u8]) -> std::result::Result<usize, String> {
    unframe_events(data).map(|events| events.len())
}

/// Splits a history row back into its events' bytes.
fn unframe_events(mut data: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut events = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        if tag != 0x0A {
            return Err(format!("unexpected tag {tag:#x} in a history row"));
        }
        let mut len: u64 = 0;
        let mut shift = 0;
        let mut rest = rest;
        loop {
            let Some((&b, tail)) = rest.split_first() else {
                return Err("a history row ends inside a length".into());
            };
            rest = tail;
            if shift > 63 {
                return Err("a history row has an overlong length".into());
            }
            len |= u64::from(b & 0x7F) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let len = usize::try_from(len).map_err(|_| "a history event is too long".to_string())?;
        if len > rest.len() {
            return Err("a history row ends inside an event".into());
        }
        events.push(&rest[..len]);
        data = &rest[len..];
    }
    Ok(events)
}

/// Where the database lives.
#[derive(Debug, Clone)]
pub enum Location {
    /// A file, created if missing.
    File(PathBuf),
    /// A private database that lives as long as the store: a file in a fresh temporary
    /// directory, removed when the store is dropped, written without fsync (nothing is kept,
    /// so there is nothing to make durable). A file rather than SQLite's shared-cache memory
    /// mode, whose table locks fail concurrent readers with SQLITE_LOCKED instead of waiting.
    Memory,
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;
/// A read run by a reader thread: on its connection, or on the error that kept the thread from
/// opening one.
type ReadJob = Box<dyn FnOnce(std::result::Result<&Connection, &str>) + Send>;

/// At most this many reader threads, each with its own connection, taking jobs from one queue.
/// A bounded pool rather than tokio's blocking pool: under load that grew to hundreds of threads
/// waiting on a few connections, each with its own stack and allocator heap.
const READERS: usize = 4;

/// The reader threads, started as reads need them: none until the first read, another only when
/// a read is queued while every started one is busy. Opening a connection costs about 0.3 ms of
/// CPU (most of it parsing the schema); opening all four at once added 1.4 ms to a 7 ms start on
/// two cores.
struct Readers {
    queue: Mutex<mpsc::Receiver<ReadJob>>,
    /// Reads queued and not yet taken by a reader.
    pending: AtomicUsize,
    /// Started readers waiting for a job (or for their turn to wait).
    idle: AtomicUsize,
    started: AtomicUsize,
    uri: String,
    flags: rusqlite::OpenFlags,
}

impl Readers {
    /// Queues a read, first starting a reader if more reads wait than readers are idle and
    /// fewer than `READERS` run.
    fn submit(self: &Arc<Self>, jobs: &mpsc::Sender<ReadJob>, job: ReadJob) -> Result<()> {
        let waiting = self.pending.fetch_add(1, Ordering::SeqCst) + 1;
        if waiting > self.idle.load(Ordering::SeqCst) {
            self.start_one()?;
        }
        jobs.send(job).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            closed()
        })
    }

    /// Fails only if a thread could not be started and none runs, so that a queued read would
    /// never be taken.
    fn start_one(self: &Arc<Self>) -> Result<()> {
        let Ok(n) = self
            .started
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < READERS).then_some(n + 1)
            })
        else {
            return Ok(());
        };
        let readers = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("kairos-sqlite-r{n}"))
            .spawn(move || readers.run());
        match spawned {
            Ok(_) => Ok(()),
            Err(e) if self.started.fetch_sub(1, Ordering::SeqCst) == 1 => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(Error::unavailable("failed to start a sqlite reader", e))
            }
            Err(e) => {
                tracing::warn!(error = %e, "failed to start another sqlite reader");
                Ok(())
            }
        }
    }

    /// A reader thread: opens its connection, then runs jobs until the store is gone. A reader
    /// that cannot open answers its jobs with the error.
    fn run(&self) {
        let conn = open_connection(&self.uri, self.flags).map_err(|e| e.to_string());
        loop {
            self.idle.fetch_add(1, Ordering::SeqCst);
            // The lock is held only to take the next job, not while running it.
            let job = self.queue.lock().recv();
            self.idle.fetch_sub(1, Ordering::SeqCst);
            match job {
                Ok(job) => {
                    self.pending.fetch_sub(1, Ordering::SeqCst);
                    job(conn.as_ref().map_err(|e| e.as_str()))
                }
                Err(_) => return, // the store is gone
            }
        }
    }
}

/// A SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Writer>,
    /// Kept here, not in `Readers`: the reader threads hold `Readers`, and they stop when the
    /// last store drops this sender.
    readers: mpsc::Sender<ReadJob>,
    reader_pool: Arc<Readers>,
    /// For [`Location::Memory`]: the directory holding the file, deleted with the last clone.
    _scratch: Option<Arc<tempfile::TempDir>>,
    /// For [`Location::File`]: the exclusive lock on the database, released with the last clone
    /// (or when the process ends, however it ends).
    _lock: Option<Arc<std::fs::File>>,
}

enum WriteRequest {
    Batch(Box<WriteBatch>, oneshot::Sender<Result<()>>),
    Job(Job),
}

/// The one writer connection. Until the writer thread starts, writes run on the caller's thread:
/// the start-up writes and reads (migrations, shard leases, namespaces, timers, transfer tasks)
/// are a handful of jobs in a row, and handing each to another thread and back cost two
/// wake-ups apiece, which after the machine has idled are each a wait for a sleeping CPU. The
/// thread starts at [`SqliteStore::start_writer`] or at the first commit, whichever is first;
/// from then on every write goes through it.
struct Writer {
    /// The connection while no thread holds it.
    inline: Mutex<Option<Connection>>,
    thread: std::sync::OnceLock<mpsc::Sender<WriteRequest>>,
    /// A file this open created, until its bytes are synced (see [`Unsynced`]).
    creation: Creation,
}

impl Writer {
    /// The writer thread's queue, starting the thread if it has not started.
    fn queue(&self) -> Result<&mpsc::Sender<WriteRequest>> {
        if let Some(tx) = self.thread.get() {
            return Ok(tx);
        }
        let mut inline = self.inline.lock();
        if let Some(tx) = self.thread.get() {
            return Ok(tx);
        }
        // A thread that cannot start takes the connection with it: every later write fails
        // as if the writer had stopped (and the server does not start).
        let conn = inline.take().ok_or_else(closed)?;
        let (tx, rx) = mpsc::channel::<WriteRequest>();
        let creation = self.creation.clone();
        std::thread::Builder::new()
            .name("kairos-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, creation))
            .map_err(|e| Error::unavailable("failed to start the sqlite writer", e))?;
        Ok(self.thread.get_or_init(|| tx))
    }

    /// Runs `f` on the connection here if no thread holds it yet, else returns `f` back.
    fn try_inline<F, T>(&self, f: F) -> std::result::Result<T, F>
    where
        F: FnOnce(&mut Connection) -> T,
    {
        if self.thread.get().is_some() {
            return Err(f);
        }
        match self.inline.lock().as_mut() {
            Some(conn) => Ok(f(conn)),
            None => Err(f),
        }
    }
}

fn sql_err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::unavailable(what.to_string(), SqliteCause::of(e))
}

/// SQLite's own message with its result code, as the cause of a store error: "database or
/// disk is full (SQLITE_FULL, code 13)" says what to do where rusqlite's text alone may not.
#[derive(Debug)]
struct SqliteCause(String);

impl SqliteCause {
    fn of(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(failure, message) => {
                let text = message.clone().unwrap_or_else(|| failure.to_string());
                SqliteCause(format!(
                    "{text} (SQLite result code {})",
                    failure.extended_code
                ))
            }
            _ => SqliteCause(e.to_string()),
        }
    }
}

impl std::fmt::Display for SqliteCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqliteCause {}

fn open_connection(uri: &str, flags: rusqlite::OpenFlags) -> Result<Connection> {
    let conn = Connection::open_with_flags(uri, flags).map_err(sql_err("failed to open sqlite"))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(sql_err("failed to set busy timeout"))?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database.
    pub fn open(location: &Location) -> Result<Self> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_URI
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let (uri, scratch, lock, synchronous, created) = match location {
            Location::File(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        Error::unavailable(format!("failed to create {}", parent.display()), e)
                    })?;
                }
                let lock = lock_database(path)?;
                let created = if !path.exists() {
                    create_database(path)?
                } else if torn_creation(path).map_err(|e| {
                    Error::unavailable(format!("failed to read {}", path.display()), e)
                })? {
                    refuse_if_logged(path)?;
                    tracing::warn!(
                        path = %path.display(),
                        "the database file is what a crash leaves of a file being created \
                         (it never held a commit): creating it again"
                    );
                    remove_torn(path)?;
                    create_database(path)?
                } else {
                    None
                };
                (path_uri(path), None, Some(Arc::new(lock)), "FULL", created)
            }
            Location::Memory => {
                let dir = tempfile::Builder::new()
                    .prefix("kairos-scratch-")
                    .tempdir()
                    .map_err(|e| Error::unavailable("failed to create a scratch directory", e))?;
                let uri = path_uri(&dir.path().join("kairos.db"));
                (uri, Some(Arc::new(dir)), None, "OFF", None)
            }
        };
        let mut writer = open_connection(&uri, flags)?;
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA foreign_keys=OFF;
                 PRAGMA journal_size_limit=67108864;"
            ))
            .map_err(sql_err("failed to configure sqlite"))?;
        persist_wal(&writer);
        let creation: Creation = Arc::new(Mutex::new(created));
        if creation.lock().is_some() {
            let pending = creation.clone();
            // Returning true turns the commit into a rollback: nothing is committed (synced) on
            // top of bytes that may not be on disk.
            writer.commit_hook(Some(move || {
                !UNSYNCED_COMMIT.get() && sync_creation(&pending).is_err()
            }));
        }
        migrate(&mut writer)?;
        let (read_tx, read_rx) = mpsc::channel::<ReadJob>();
        let reader_pool = Arc::new(Readers {
            queue: Mutex::new(read_rx),
            pending: AtomicUsize::new(0),
            idle: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            uri,
            flags,
        });
        Ok(Self {
            writer: Arc::new(Writer {
                inline: Mutex::new(Some(writer)),
                thread: std::sync::OnceLock::new(),
                creation,
            }),
            readers: read_tx,
            reader_pool,
            _scratch: scratch,
            _lock: lock,
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: ReadJob = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(Error::Unavailable {
                    message: format!("a sqlite reader could not open the database: {e}"),
                    source: None,
                }),
            };
            let _ = tx.send(result);
        });
        self.reader_pool.submit(&self.readers, job)?;
        rx.await.map_err(|_| closed())?
    }

    async fn write_job<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let f = match self.writer.try_inline(f) {
            Ok(result) => return result,
            Err(f) => f,
        };
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = tx.send(f(conn));
        });
        self.writer
            .queue()?
            .send(WriteRequest::Job(job))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Starts the writer thread, if the first commit has not already: from here on, writes run
    /// there, not on the caller's thread. The server calls it once its start-up reads and
    /// writes are done, before it serves.
    pub fn start_writer(&self) -> Result<()> {
        self.writer.queue().map(|_| ())
    }
}

/// A database file [`create_database`] wrote and has not synced yet. Its fsync (about 1.5 ms on
/// a new inode, and a core's worth of write-back meanwhile) is kept off start-up: it runs just
/// before the first synced commit (the connection's commit hook), so no commit a client is
/// answered on ever lies on bytes that are not on disk, or once the writer thread has had no
/// commit for `CREATION_SYNC_DELAY`. The unsynced start-up commits
/// (`unsynced`) may precede it: they answer no one. A crash before the sync may leave the file
/// torn, which the next open recognises (`torn_creation`) and creates again.
struct Unsynced {
    file: std::fs::File,
    /// The directory holding the file's name.
    dir: PathBuf,
}

/// Shared by the writer connection's commit hook and the writer thread.
type Creation = Arc<Mutex<Option<Unsynced>>>;

/// How long the writer thread leaves a new file unsynced when no commit comes first.
const CREATION_SYNC_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// Set while `unsynced` runs a commit on this thread: such a commit does not need the new
    /// file synced first.
    static UNSYNCED_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Syncs a new file's bytes and its directory entry, once; after a failure it is tried again at
/// the next synced commit, and that commit is refused meanwhile.
fn sync_creation(creation: &Mutex<Option<Unsynced>>) -> std::io::Result<()> {
    let mut pending = creation.lock();
    if let Some(unsynced) = pending.as_ref() {
        unsynced.file.sync_all()?;
        std::fs::File::open(&unsynced.dir)?.sync_all()?;
        *pending = None;
    }
    Ok(())
}

/// An empty database of the current schema: `SCHEMA` in WAL mode, `user_version` at the last
/// migration. Regenerate it after changing `SCHEMA` with `KAIROS_WRITE_TEMPLATE=1 cargo test -p
/// kairos-persistence --lib template`, run twice (the first run writes the file, the second
/// compiles it in); `sqlite::tests::the_template_is_the_current_schema_empty` fails until then.
const TEMPLATE: &[u8] = include_bytes!("empty.db");

/// Creates a new database file from `TEMPLATE`. Letting SQLite create it cost about 3 ms of the
/// first start (the switch to WAL through a rollback journal, then the schema, each statement
/// re-reading it). The bytes are written under a scratch name beside `path` and linked into
/// place, so another process never sees a partial file; the scratch name is removed at once. The
/// bytes are synced later ([`Unsynced`], returned here); `None` when `path` appeared meanwhile
/// (another process), whose file is kept.
fn create_database(path: &Path) -> Result<Option<Unsynced>> {
    use std::io::Write as _;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let scratch = path.with_file_name(format!(".{name}.creating-{}", std::process::id()));
    let fail = |what: &str, e: std::io::Error| {
        Error::unavailable(format!("failed to {what} {}", scratch.display()), e)
    };
    let written = std::fs::File::create(&scratch)
        .and_then(|mut file| file.write_all(TEMPLATE).map(|()| file))
        .map_err(|e| fail("write", e))
        .and_then(|file| match std::fs::hard_link(&scratch, path) {
            Ok(()) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            // A file system without hard links: moved instead, if still absent.
            Err(_) if !path.exists() => std::fs::rename(&scratch, path)
                .map(|()| Some(file))
                .map_err(|e| fail("move", e)),
            Err(e) => Err(fail("link", e)),
        });
    let _ = std::fs::remove_file(&scratch);
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(written?.map(|file| Unsynced { file, dir }))
}

/// True when `path` holds what a crash can leave of a file [`create_database`] made before its
/// bytes were synced: no longer than `TEMPLATE`, every 512-byte sector either the template's or
/// zeros, and something missing. No commit was ever synced on such a file (the sync comes
/// first), so nothing is lost by creating it again; a file SQLite or a person wrote has other
/// bytes and is kept. The caller still checks the write-ahead log (`refuse_if_logged`): a log
/// holding commits is never deleted, whatever the main file looks like. An empty file is left to SQLite, which makes the schema in it (and may
/// keep a database it made that way in the write-ahead log alone).
fn torn_creation(path: &Path) -> std::io::Result<bool> {
    let len = std::fs::metadata(path)?.len();
    if len == 0 || len > TEMPLATE.len() as u64 {
        return Ok(false);
    }
    let bytes = std::fs::read(path)?;
    let mut missing = bytes.len() < TEMPLATE.len();
    for (have, want) in bytes.chunks(512).zip(TEMPLATE.chunks(512)) {
        if have == &want[..have.len()] {
            continue;
        }
        if !have.iter().all(|b| *b == 0) {
            return Ok(false);
        }
        missing = true;
    }
    Ok(missing)
}

/// Takes the exclusive lock on the database at `path`: its lock file `PATH.lock`, locked for as
/// long as the store is open and holding the owner's process id. A second server on the same
/// file would fence the first out of its shards and serve from a stale cache; it is refused
/// here instead, naming the process that holds the file.
fn lock_database(path: &Path) -> Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let fail = |what: &str, e: std::io::Error| {
        Error::unavailable(format!("failed to {what} {}", lock_path.display()), e)
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| fail("open", e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => "another process".to_string(),
                pid => format!("process {pid}"),
            };
            return Err(Error::Unavailable {
                message: format!(
                    "the database {} is in use by {holder} (its lock file is {}); stop that \
                     server first or choose another --db-filename",
                    path.display(),
                    lock_path.display()
                ),
                source: None,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(fail("lock", e)),
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()))
        .map_err(|e| fail("write", e))?;
    Ok(file)
}

/// Refuses to treat a short main file as a torn creation while its write-ahead log holds
/// committed transactions: they may be data the main file lost, and deleting the log would lose
/// them for good. Nothing is changed; the message says what the files hold.
fn refuse_if_logged(path: &Path) -> Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    let wal_path = PathBuf::from(name);
    let committed = crate::wal::committed(&wal_path)
        .map_err(|e| Error::unavailable(format!("failed to read {}", wal_path.display()), e))?;
    if committed.transactions == 0 {
        return Ok(());
    }
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Err(Error::Unavailable {
        message: format!(
            "the database {} is incomplete ({len} bytes, partly zeros or cut short) but its \
             write-ahead log {} holds {} committed transaction(s); refusing to open it, and \
             nothing was changed. If this database was only just created and never served, \
             remove both files; otherwise restore them from a backup",
            path.display(),
            wal_path.display(),
            committed.transactions
        ),
        source: None,
    })
}

/// Removes a torn new file with its write-ahead log and shared memory (whose frames, if any,
/// were never synced): the log first, so that a crash here leaves the torn file to be found
/// again, never a log beside a fresh file.
fn remove_torn(path: &Path) -> Result<()> {
    let name = path.as_os_str();
    for suffix in ["-wal", "-shm", ""] {
        let mut file = name.to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                let what = format!("failed to remove {}", Path::new(&file).display());
                return Err(Error::unavailable(what, e));
            }
        }
    }
    Ok(())
}

fn closed() -> Error {
    Error::Unavailable {
        message: "the sqlite writer has stopped".into(),
        source: None,
    }
}

fn path_uri(path: &Path) -> String {
    let text = path.to_string_lossy();
    let escaped = text
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    format!("file:{escaped}")
}

/// Keeps the WAL file when the last connection closes (SQLite deletes it by default), so a
/// restart does not create it again and fsync the directory: about a millisecond of start-up.
fn persist_wal(conn: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is valid while `conn` lives; PERSIST_WAL reads and writes one int.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::ffi::c_int).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        tracing::debug!(
            rc,
            "sqlite did not accept PERSIST_WAL; the WAL file is recreated at start"
        );
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
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
fn apply_migrations(tx: &rusqlite::Transaction<'_>, done: usize) -> rusqlite::Result<()> {
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(done) {
        tx.execute_batch(migration)?;
        migration_code(index + 1, tx)?;
    }
    Ok(())
}

/// Takes every request waiting in the queue and commits all batches among them in one
/// transaction: one fsync for many transitions.
fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<WriteRequest>, creation: Creation) {
    const MAX_GROUP: usize = 256;
    // A file this open created is synced by the first synced commit (the commit hook), or
    // after a quiet `CREATION_SYNC_DELAY` if none comes first: not at once, where its
    // write-back would take a core from the server's first answers.
    let next = || {
        if creation.lock().is_none() {
            return rx.recv().ok();
        }
        match rx.recv_timeout(CREATION_SYNC_DELAY) {
            Ok(request) => Some(request),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(error) = sync_creation(&creation) {
                    tracing::error!(
                        %error,
                        "failed to sync the new database file; every commit tries again first"
                    );
                }
                rx.recv().ok()
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => None,
        }
    };
    while let Some(first) = next() {
        let mut batches = Vec::new();
        let mut pending = Some(first);
        loop {
            match pending.take() {
                Some(WriteRequest::Job(job)) => {
                    if !batches.is_empty() {
                        commit_group(&mut conn, std::mem::take(&mut batches));
                    }
                    job(&mut conn);
                }
                Some(WriteRequest::Batch(batch, reply)) => batches.push((*batch, reply)),
                None => break,
            }
            if batches.len() >= MAX_GROUP {
                break;
            }
            pending = rx.try_recv().ok();
        }
        if !batches.is_empty() {
            commit_group(&mut conn, batches);
        }
    }
}

fn commit_group(conn: &mut Connection, batches: Vec<(WriteBatch, oneshot::Sender<Result<()>>)>) {
    // Batches rarely fail (a lost race on a version or a current run), so the group is first
    // applied as one plain transaction. Only if a batch fails is it rolled back and applied again
    // with a savepoint around each batch, so the failure stays with its own batch. Savepoints on
    // every batch cost a copy of each page they touch into the statement journal.
    let outcome = match apply_group(conn, &batches, false) {
        Ok(results) if results.iter().all(Result::is_ok) => Ok(results),
        Ok(_) => {
            let _ = conn.execute_batch("ROLLBACK");
            apply_group(conn, &batches, true)
        }
        Err(error) => Err(error),
    };
    match outcome {
        Ok(results) => {
            for ((_, reply), result) in batches.into_iter().zip(results) {
                let _ = reply.send(result);
            }
        }
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            let message = match &error {
                Error::Unavailable { message, source } => match source {
                    Some(cause) => format!("{message}: {cause}"),
                    None => message.clone(),
                },
                other => other.to_string(),
            };
            tracing::error!(error = %message, batches = batches.len(), "failed to commit a group of transitions");
            for (_, reply) in batches {
                let _ = reply.send(Err(Error::Unavailable {
                    message: message.clone(),
                    source: None,
                }));
            }
        }
    }
}

/// Applies every batch in one transaction. Without `isolate`, the first failing batch stops the
/// group and the transaction is left open for the caller to roll back (its result is the only
/// error in the answer). With `isolate`, each batch runs in a savepoint and a failing one is
/// undone alone; the transaction is committed.
fn apply_group(
    conn: &mut Connection,
    batches: &[(WriteBatch, oneshot::Sender<Result<()>>)],
    isolate: bool,
) -> Result<Vec<Result<()>>> {
    // Cached statements: these run several times per group, parsing them each time showed in
    // profiles.
    let run = |conn: &Connection, sql: &str, what: &str| -> Result<()> {
        conn.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([]))
            .map(|_| ())
            .map_err(sql_err(what))
    };
    let mut results: Vec<Result<()>> = Vec::with_capacity(batches.len());
    run(conn, "BEGIN IMMEDIATE", "failed to begin")?;
    for (batch, _) in batches {
        if !isolate {
            let applied = apply_batch(conn, batch);
            let failed = applied.is_err();
            results.push(applied);
            if failed {
                return group_error_if_rolled_back(conn, results);
            }
            continue;
        }
        run(conn, "SAVEPOINT b", "failed to set a savepoint")?;
        let applied = apply_batch(conn, batch);
        if applied.is_err() {
            if conn.is_autocommit() {
                results.push(applied);
                return group_error_if_rolled_back(conn, results);
            }
            run(conn, "ROLLBACK TO b", "failed to roll back")?;
        }
        run(conn, "RELEASE b", "failed to release")?;
        results.push(applied);
    }
    run(conn, "COMMIT", "failed to commit")?;
    Ok(results)
}

/// After a failed batch: when SQLite rolled the whole transaction back itself (a full disk, an
/// I/O error), the batch's error is the group's, since nothing of the group was kept;
/// otherwise only the batch failed and the results go back to the caller.
fn group_error_if_rolled_back(
    conn: &Connection,
    mut results: Vec<Result<()>>,
) -> Result<Vec<Result<()>>> {
    if conn.is_autocommit()
        && matches!(results.last(), Some(Err(_)))
        && let Some(Err(error)) = results.pop()
    {
        return Err(error);
    }
    Ok(results)
}

/// Runs a statement from the connection's statement cache (parsing SQL per call showed in
/// profiles of the writer thread).
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Reads one row with a cached statement.
fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn apply_batch(conn: &Connection, batch: &WriteBatch) -> Result<()> {
    let range: Option<i64> = query_one(
        conn,
        "SELECT range_id FROM shards WHERE shard_id = ?1",
        [batch.shard_id],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql_err("failed to read the shard lease"))?;
    if range != Some(batch.range_id) {
        return Err(Error::ShardOwnershipLost {
            shard_id: batch.shard_id,
        });
    }
    let ns = &batch.namespace_id;
    let wf = &batch.workflow_id;
    if let Some(current) = &batch.current {
        let existing: Option<String> = query_one(
            conn,
            "SELECT run_id FROM current_executions WHERE namespace_id = ?1 AND workflow_id = ?2",
            params![ns, wf],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err("failed to read the current run"))?;
        match current {
            CurrentWrite::Set {
                run_id,
                expected_run_id,
                data,
            } => {
                if existing != *expected_run_id {
                    return Err(Error::ConditionFailed(format!(
                        "current run of {wf} is {existing:?}, expected {expected_run_id:?}"
                    )));
                }
                exec(
                    conn,
                    "INSERT INTO current_executions (namespace_id, workflow_id, shard_id, run_id, data)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (namespace_id, workflow_id) DO UPDATE SET run_id = ?4, data = ?5",
                    params![ns, wf, batch.shard_id, run_id, data],
                )
                .map_err(sql_err("failed to write the current run"))?;
            }
            CurrentWrite::DeleteIf { run_id } => {
                if existing.as_deref() == Some(run_id.as_str()) {
                    exec(
                    conn,
                        "DELETE FROM current_executions WHERE namespace_id = ?1 AND workflow_id = ?2",
                        params![ns, wf],
                    )
                    .map_err(sql_err("failed to delete the current run"))?;
                }
            }
        }
    }
    let events_of =
        |run_id: &str| -> Vec<&Event> { batch.events.iter().filter(|e| e.0 == run_id).collect() };
    for (run_id, write) in &batch.executions {
        match write {
            ExecutionWrite::Insert { state } => {
                // A new run's first events go in first, so the row is written once, with its
                // history tail.
                let (tail, next) = append_rows(conn, run_id, &events_of(run_id), None, 1)?;
                let inserted = exec(
                    conn,
                    "INSERT OR IGNORE INTO executions (namespace_id, workflow_id, run_id, shard_id,
                         db_version, state, history_tail, history_next)
                         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)",
                    params![ns, wf, run_id, batch.shard_id, state, tail, next],
                )
                .map_err(sql_err("failed to insert an execution"))?;
                if inserted == 0 {
                    return Err(Error::AlreadyExists(format!("run {run_id}")));
                }
            }
            ExecutionWrite::Update {
                state,
                expected_version,
            } => {
                let events = events_of(run_id);
                let updated = if events.is_empty() {
                    exec(
                        conn,
                        "UPDATE executions SET state = ?1, db_version = db_version + 1
                         WHERE namespace_id = ?2 AND workflow_id = ?3 AND run_id = ?4
                           AND db_version = ?5",
                        params![state, ns, wf, run_id, expected_version],
                    )
                    .map_err(sql_err("failed to update an execution"))?
                } else {
                    // The state and the history tail change together: one read of the row, its
                    // events appended, one write of the row.
                    match read_tail(conn, ns, wf, run_id)? {
                        Some(row) if row.version == *expected_version => {
                            let (tail, next) =
                                append_rows(conn, run_id, &events, row.tail, row.next)?;
                            exec(
                                conn,
                                "UPDATE executions SET state = ?1, db_version = db_version + 1,
                                     history_tail = ?2, history_next = ?3 WHERE rowid = ?4",
                                params![state, tail, next, row.rowid],
                            )
                            .map_err(sql_err("failed to update an execution"))?
                        }
                        _ => 0,
                    }
                };
                if updated == 0 {
                    return Err(Error::ConditionFailed(format!(
                        "run {run_id} is not at version {expected_version}"
                    )));
                }
            }
            ExecutionWrite::Delete => {
                let tail: Option<i64> = query_one(
                    conn,
                    "DELETE FROM executions WHERE namespace_id = ?1 AND workflow_id = ?2 AND run_id = ?3
                     RETURNING history_tail",
                    params![ns, wf, run_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err("failed to delete an execution"))?
                .flatten();
                // The run's rows, last to first.
                let mut next = tail;
                while let Some(seq) = next {
                    next = query_one(
                        conn,
                        "DELETE FROM history WHERE seq = ?1 RETURNING prev",
                        [seq],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql_err("failed to delete history"))?
                    .flatten();
                }
            }
        }
    }
    // Events of runs whose state this batch does not write (the state is written with them).
    let mut appended: Vec<&str> = Vec::new();
    for (run_id, _, _) in &batch.events {
        let written = batch.executions.iter().any(|(r, w)| {
            r == run_id
                && matches!(
                    w,
                    ExecutionWrite::Insert { .. } | ExecutionWrite::Update { .. }
                )
        });
        if !written && !appended.contains(&run_id.as_str()) {
            appended.push(run_id);
            append_history(conn, ns, wf, run_id, &events_of(run_id))?;
        }
    }
    if !batch.timers_add.is_empty() {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO timers (shard_id, task_id, fire_at_ms, namespace_id, workflow_id, run_id, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(sql_err("failed to prepare a timer insert"))?;
        for t in &batch.timers_add {
            stmt.execute(params![
                t.shard_id,
                t.task_id,
                t.fire_at_ms,
                t.namespace_id,
                t.workflow_id,
                t.run_id,
                t.data
            ])
            .map_err(sql_err("failed to insert a timer"))?;
        }
    }
    for timer in &batch.timers_delete {
        conn.prepare_cached(
            "DELETE FROM timers WHERE shard_id = ?1 AND fire_at_ms = ?2 AND task_id = ?3",
        )
        .and_then(|mut s| s.execute(params![batch.shard_id, timer.fire_at_ms, timer.task_id]))
        .map_err(sql_err("failed to delete a timer"))?;
    }
    if !batch.transfers_add.is_empty() {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO transfers (shard_id, task_id, namespace_id, workflow_id, run_id, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql_err("failed to prepare a transfer insert"))?;
        for t in &batch.transfers_add {
            stmt.execute(params![
                t.shard_id,
                t.task_id,
                t.namespace_id,
                t.workflow_id,
                t.run_id,
                t.data
            ])
            .map_err(sql_err("failed to insert a transfer task"))?;
        }
    }
    for id in &batch.transfers_delete {
        conn.prepare_cached("DELETE FROM transfers WHERE shard_id = ?1 AND task_id = ?2")
            .and_then(|mut s| s.execute(params![batch.shard_id, id]))
            .map_err(sql_err("failed to delete a transfer task"))?;
    }
    for write in &batch.visibility {
        apply_visibility(conn, ns, write)?;
    }
    Ok(())
}

/// A history event in a batch: (run id, event id, encoded event).
type Event = (String, i64, Vec<u8>);

/// Where a run's history ends, read from its execution row.
struct Tail {
    rowid: i64,
    version: i64,
    /// The run's last history row.
    tail: Option<i64>,
    /// The id its next event must have.
    next: i64,
}

fn read_tail(conn: &Connection, ns: &str, wf: &str, run_id: &str) -> Result<Option<Tail>> {
    query_one(
        conn,
        "SELECT rowid, db_version, history_tail, history_next FROM executions
          WHERE namespace_id = ?1 AND workflow_id = ?2 AND run_id = ?3",
        params![ns, wf, run_id],
        |r| {
            Ok(Tail {
                rowid: r.get(0)?,
                version: r.get(1)?,
                tail: r.get(2)?,
                next: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(sql_err("failed to read a run's history tail"))
}

/// Appends events of a run whose execution row the batch does not otherwise write, and moves the
/// row's history tail.
fn append_history(
    conn: &Connection,
    ns: &str,
    wf: &str,
    run_id: &str,
    events: &[&Event],
) -> Result<()> {
    let row = read_tail(conn, ns, wf, run_id)?.ok_or_else(|| {
        Error::ConditionFailed(format!("history for run {run_id}, which is not stored"))
    })?;
    let (tail, next) = append_rows(conn, run_id, events, row.tail, row.next)?;
    conn.prepare_cached(
        "UPDATE executions SET history_tail = ?1, history_next = ?2 WHERE rowid = ?3",
    )
    .and_then(|mut s| s.execute(params![tail, next, row.rowid]))
    .map_err(sql_err("failed to move a run's history tail"))?;
    Ok(())
}

/// Writes a run's events after its last row `tail`, at most `MAX_EVENTS_PER_ROW` per row, each
/// row pointing to the one before. The first event must be `next`, the id the run expects: a
/// duplicate or a gap fails the batch. Returns the new last row and next id.
fn append_rows(
    conn: &Connection,
    run_id: &str,
    events: &[&Event],
    mut tail: Option<i64>,
    mut next: i64,
) -> Result<(Option<i64>, i64)> {
    if events.is_empty() {
        return Ok((tail, next));
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO history (run_id, first_event_id, prev, marked, data)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql_err("failed to prepare a history insert"))?;
    let mut data = Vec::new();
    for row in events.chunks(MAX_EVENTS_PER_ROW) {
        data.clear();
        for (n, (_, id, event)) in row.iter().map(|e| (&e.0, e.1, &e.2)).enumerate() {
            let want = next + n as i64;
            if id != want {
                return Err(Error::ConditionFailed(format!(
                    "event {id} of run {run_id} is out of order: the next one stored must be {want}"
                )));
            }
            frame_event(&mut data, event);
        }
        let last = next + row.len() as i64 - 1;
        insert
            .execute(params![run_id, next, tail, marked(next, last), data])
            .map_err(sql_err("failed to append history events"))?;
        tail = Some(conn.last_insert_rowid());
        next = last + 1;
    }
    Ok((tail, next))
}

/// Events `first..` of a run, at most `limit`: from the first marked row after `first` (or the
/// run's last row) back along `prev` to the row holding `first`, then forward over those rows;
/// again from the next mark while more are wanted.
fn read_history(
    conn: &Connection,
    ns: &str,
    wf: &str,
    run_id: &str,
    first: i64,
    limit: usize,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut events = Vec::new();
    if limit == 0 {
        return Ok(events);
    }
    // One snapshot for the whole walk: a run deleted meanwhile (its row ids can then be reused)
    // is either read whole or not found.
    let snapshot = conn
        .unchecked_transaction()
        .map_err(sql_err("failed to begin a history read"))?;
    let conn: &Connection = &snapshot;
    let Some(tail) = read_tail(conn, ns, wf, run_id)?.and_then(|row| row.tail) else {
        return Ok(events);
    };
    let mut from = first.max(1);
    let mut header = conn
        .prepare_cached("SELECT prev, first_event_id, run_id FROM history WHERE seq = ?1")
        .map_err(sql_err("failed to prepare a history read"))?;
    let mut body = conn
        .prepare_cached("SELECT data FROM history WHERE seq = ?1")
        .map_err(sql_err("failed to prepare a history read"))?;
    let mut mark = conn
        .prepare_cached(
            "SELECT seq FROM history WHERE run_id = ?1 AND first_event_id > ?2 AND marked
              ORDER BY first_event_id LIMIT 1",
        )
        .map_err(sql_err("failed to prepare a history read"))?;
    loop {
        let anchor: i64 = mark
            .query_row(params![run_id, from], |r| r.get(0))
            .optional()
            .map_err(sql_err("failed to read a history mark"))?
            .unwrap_or(tail);
        // Rows from the anchor back to the one holding `from` (or the run's first row).
        let mut rows = Vec::new();
        let mut next = Some(anchor);
        while let Some(seq) = next {
            let (prev, row_first, owner): (Option<i64>, i64, String) = header
                .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(|e| corrupt(run_id, format!("row {seq} of its chain: {e}")))?;
            if owner != run_id {
                return Err(corrupt(
                    run_id,
                    format!("row {seq} of its chain is {owner}'s"),
                ));
            }
            rows.push((seq, row_first));
            next = if row_first <= from { None } else { prev };
        }
        let mut after = from;
        for (seq, row_first) in rows.into_iter().rev() {
            let data: Vec<u8> = body
                .query_row([seq], |r| r.get(0))
                .map_err(sql_err("failed to read history"))?;
            let framed = unframe_events(&data).map_err(|e| corrupt(run_id, e))?;
            for (n, event) in framed.iter().enumerate() {
                let event_id = row_first + n as i64;
                if event_id >= from && events.len() < limit {
                    events.push((event_id, event.to_vec()));
                }
            }
            after = row_first + framed.len() as i64;
            if events.len() >= limit {
                return Ok(events);
            }
        }
        if anchor == tail || after <= from {
            return Ok(events);
        }
        from = after;
    }
}

/// Runs `f` (one autocommit statement or transaction) with `synchronous=OFF`: its commit is
/// written to the log but not synced. Only for commits that answer no client: a later synced
/// commit syncs the log up to and including it.
fn unsynced<T>(conn: &mut Connection, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
    let synchronous: i64 = query_one(conn, "PRAGMA synchronous", [], |r| r.get(0))
        .map_err(sql_err("failed to read synchronous"))?;
    conn.execute_batch("PRAGMA synchronous=OFF")
        .map_err(sql_err("failed to set synchronous"))?;
    let outcome = {
        struct Marked;
        impl Drop for Marked {
            fn drop(&mut self) {
                UNSYNCED_COMMIT.set(false);
            }
        }
        UNSYNCED_COMMIT.set(true);
        let _marked = Marked;
        f(conn)
    };
    conn.execute_batch(&format!("PRAGMA synchronous={synchronous}"))
        .map_err(sql_err("failed to set synchronous"))?;
    outcome
}

/// Bumps every shard's lease in one transaction and reads each shard's highest stored task id.
fn take_leases(conn: &mut Connection, count: i32) -> Result<Vec<ShardLease>> {
    let tx = conn.transaction().map_err(sql_err("failed to begin"))?;
    let mut leases = Vec::with_capacity(count.max(0) as usize);
    for shard_id in 0..count {
        let range_id: i64 = tx
            .query_row(
                "INSERT INTO shards (shard_id, range_id) VALUES (?1, 1)
                 ON CONFLICT (shard_id) DO UPDATE SET range_id = range_id + 1
                 RETURNING range_id",
                [shard_id],
                |r| r.get(0),
            )
            .map_err(sql_err("failed to take the shard lease"))?;
        let max_task_id = tx
            .query_row(
                "SELECT MAX(m) FROM (
                   SELECT MAX(task_id) AS m FROM timers WHERE shard_id = ?1
                   UNION ALL SELECT MAX(task_id) FROM transfers WHERE shard_id = ?1)",
                [shard_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(sql_err("failed to read task ids"))?
            .unwrap_or(0);
        leases.push(ShardLease {
            shard_id,
            range_id,
            max_task_id,
        });
    }
    tx.commit()
        .map_err(sql_err("failed to commit the shard leases"))?;
    Ok(leases)
}

fn corrupt(run_id: &str, detail: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        message: format!("history of run {run_id} is corrupt: {detail}"),
        source: None,
    }
}

fn apply_visibility(conn: &Connection, ns: &str, write: &VisibilityWrite) -> Result<()> {
    let (row, verb, clear) = match write {
        VisibilityWrite::Delete { run_id } => {
            conn.prepare_cached(
                "DELETE FROM visibility_attributes WHERE namespace_id = ?1 AND run_id = ?2",
            )
            .and_then(|mut s| s.execute(params![ns, run_id]))
            .map_err(sql_err("failed to clear search attributes"))?;
            conn.prepare_cached("DELETE FROM visibility WHERE namespace_id = ?1 AND run_id = ?2")
                .and_then(|mut s| s.execute(params![ns, run_id]))
                .map_err(sql_err("failed to delete a visibility record"))?;
            return Ok(());
        }
        VisibilityWrite::Insert(row) => (row, "INSERT", false),
        VisibilityWrite::Upsert(row) => (row, "INSERT OR REPLACE", true),
        VisibilityWrite::Update(row) => {
            conn.prepare_cached(
                "UPDATE visibility SET status = ?3, close_time = ?4, sort_close = ?5,
                     execution_duration = ?6, history_length = ?7, history_size_bytes = ?8,
                     state_transition_count = ?9, execution_time = ?10
                 WHERE namespace_id = ?1 AND run_id = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    ns,
                    row.run_id,
                    row.status,
                    row.close_time_ns,
                    row.close_time_ns.unwrap_or(i64::MAX),
                    row.execution_duration_ns,
                    row.history_length,
                    row.history_size_bytes,
                    row.state_transition_count,
                    row.execution_time_ns,
                ])
            })
            .map_err(sql_err("failed to update a visibility record"))?;
            return Ok(());
        }
    };
    if clear {
        conn.prepare_cached(
            "DELETE FROM visibility_attributes WHERE namespace_id = ?1 AND run_id = ?2",
        )
        .and_then(|mut s| s.execute(params![ns, row.run_id]))
        .map_err(sql_err("failed to clear search attributes"))?;
    }
    conn.prepare_cached(&format!(
        "{verb} INTO visibility (namespace_id, run_id, workflow_id, workflow_type,
             task_queue, status, start_time, execution_time, close_time, sort_close,
             execution_duration, history_length, history_size_bytes, state_transition_count,
             parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, first_run_id,
             memo, search_attributes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19, ?20, ?21)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            ns,
            row.run_id,
            row.workflow_id,
            row.workflow_type,
            row.task_queue,
            row.status,
            row.start_time_ns,
            row.execution_time_ns,
            row.close_time_ns,
            row.close_time_ns.unwrap_or(i64::MAX),
            row.execution_duration_ns,
            row.history_length,
            row.history_size_bytes,
            row.state_transition_count,
            row.parent_workflow_id,
            row.parent_run_id,
            row.root_workflow_id,
            row.root_run_id,
            row.first_run_id,
            row.memo,
            row.search_attributes,
        ])
    })
    .map_err(sql_err("failed to write a visibility record"))?;
    for (name, value) in &row.attributes {
        let (int, real, text) = match value {
            SqlValue::Int(i) => (Some(*i), None, None),
            SqlValue::Real(x) => (None, Some(*x), None),
            SqlValue::Text(t) => (None, None, Some(t.as_str())),
        };
        conn.prepare_cached(
            "INSERT INTO visibility_attributes (namespace_id, run_id, name, int_value, real_value,
                 text_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| s.execute(params![ns, row.run_id, name, int, real, text]))
        .map_err(sql_err("failed to write a search attribute"))?;
    }
    Ok(())
}

fn bind(values: &[SqlValue]) -> Vec<rusqlite::types::Value> {
    values
        .iter()
        .map(|v| match v {
            SqlValue::Int(i) => rusqlite::types::Value::Integer(*i),
            SqlValue::Real(x) => rusqlite::types::Value::Real(*x),
            SqlValue::Text(t) => rusqlite::types::Value::Text(t.clone()),
        })
        .collect()
}

const VISIBILITY_COLUMNS: &str = "v.run_id, v.workflow_id, v.workflow_type, v.task_queue,
    v.status, v.start_time, v.execution_time, v.close_time, v.execution_duration,
    v.history_length, v.history_size_bytes, v.state_transition_count, v.parent_workflow_id,
    v.parent_run_id, v.root_workflow_id, v.root_run_id, v.first_run_id, v.memo,
    v.search_attributes";

fn visibility_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VisibilityRow> {
    Ok(VisibilityRow {
        run_id: r.get(0)?,
        workflow_id: r.get(1)?,
        workflow_type: r.get(2)?,
        task_queue: r.get(3)?,
        status: r.get(4)?,
        start_time_ns: r.get(5)?,
        execution_time_ns: r.get(6)?,
        close_time_ns: r.get(7)?,
        execution_duration_ns: r.get(8)?,
        history_length: r.get(9)?,
        history_size_bytes: r.get(10)?,
        state_transition_count: r.get(11)?,
        parent_workflow_id: r.get(12)?,
        parent_run_id: r.get(13)?,
        root_workflow_id: r.get(14)?,
        root_run_id: r.get(15)?,
        first_run_id: r.get(16)?,
        memo: r.get(17)?,
        search_attributes: r.get(18)?,
        attributes: Vec::new(),
    })
}

/// The SQL of a list or count: the namespace, the compiled filter and (for a list) the cursor.
fn visibility_where(
    namespace_id: &str,
    filter: &SqlFilter,
    after: Option<&VisibilityCursor>,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = String::from("v.namespace_id = ?");
    let mut values = vec![rusqlite::types::Value::Text(namespace_id.to_string())];
    if !filter.where_sql.is_empty() {
        sql.push_str(" AND (");
        sql.push_str(&filter.where_sql);
        sql.push(')');
        values.extend(bind(&filter.params));
    }
    if let Some(c) = after {
        sql.push_str(" AND (v.sort_close, v.start_time, v.run_id) < (?, ?, ?)");
        values.push(rusqlite::types::Value::Integer(c.sort_close));
        values.push(rusqlite::types::Value::Integer(c.start_time_ns));
        values.push(rusqlite::types::Value::Text(c.run_id.clone()));
    }
    (sql, values)
}

#[async_trait]
impl Store for SqliteStore {
    async fn commit(&self, batch: WriteBatch) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .queue()?
            .send(WriteRequest::Batch(Box::new(batch), tx))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    async fn acquire_shards(&self, count: i32) -> Result<Vec<ShardLease>> {
        // The lease commit is not synced on its own (0.6 ms of a 3 ms start): it answers no
        // client, and the write-ahead log is synced in order, so the first durable commit made
        // under these leases makes them durable too. A crash before that loses only the bump,
        // and nothing stored was numbered from it; the next start bumps again.
        self.write_job(move |conn| unsynced(conn, |conn| take_leases(conn, count)))
            .await
    }

    async fn get_execution(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<Option<ExecutionRow>> {
        let key = (
            namespace_id.to_string(),
            workflow_id.to_string(),
            run_id.to_string(),
        );
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT shard_id, db_version, state FROM executions
                 WHERE namespace_id = ?1 AND workflow_id = ?2 AND run_id = ?3",
            )
            .and_then(|mut s| {
                s.query_row(params![key.0, key.1, key.2], |r| {
                    Ok(ExecutionRow {
                        shard_id: r.get(0)?,
                        db_version: r.get(1)?,
                        state: r.get(2)?,
                    })
                })
                .optional()
            })
            .map_err(sql_err("failed to read an execution"))
        })
        .await
    }

    async fn get_current(
        &self,
        namespace_id: &str,
        workflow_id: &str,
    ) -> Result<Option<CurrentRow>> {
        let key = (namespace_id.to_string(), workflow_id.to_string());
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT run_id, data FROM current_executions WHERE namespace_id = ?1 AND workflow_id = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![key.0, key.1], |r| {
                    Ok(CurrentRow { run_id: r.get(0)?, data: r.get(1)? })
                })
                .optional()
            })
            .map_err(sql_err("failed to read the current run"))
        })
        .await
    }

    async fn read_events(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        first: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let key = (
            namespace_id.to_string(),
            workflow_id.to_string(),
            run_id.to_string(),
        );
        self.read(move |conn| read_history(conn, &key.0, &key.1, &key.2, first, limit))
            .await
    }

    async fn list_visibility(
        &self,
        namespace_id: &str,
        filter: SqlFilter,
        after: Option<VisibilityCursor>,
        limit: usize,
    ) -> Result<Vec<VisibilityRow>> {
        let namespace_id = namespace_id.to_string();
        self.read(move |conn| {
            let (cond, mut values) = visibility_where(&namespace_id, &filter, after.as_ref());
            values.push(rusqlite::types::Value::Integer(limit as i64));
            let sql = format!(
                "SELECT {VISIBILITY_COLUMNS} FROM visibility v WHERE {cond}
                 ORDER BY v.sort_close DESC, v.start_time DESC, v.run_id DESC LIMIT ?"
            );
            let mut stmt = conn
                .prepare(&sql)
                .map_err(sql_err("failed to prepare a visibility list"))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), visibility_row)
                .map_err(sql_err("failed to list workflows"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("failed to list workflows"))
        })
        .await
    }

    async fn count_visibility(
        &self,
        namespace_id: &str,
        filter: SqlFilter,
        by_status: bool,
    ) -> Result<Vec<(Option<i32>, i64)>> {
        let namespace_id = namespace_id.to_string();
        self.read(move |conn| {
            let (cond, values) = visibility_where(&namespace_id, &filter, None);
            let sql = if by_status {
                format!(
                    "SELECT v.status, COUNT(*) FROM visibility v WHERE {cond}
                     GROUP BY v.status ORDER BY v.status"
                )
            } else {
                format!("SELECT NULL, COUNT(*) FROM visibility v WHERE {cond}")
            };
            let mut stmt = conn
                .prepare(&sql)
                .map_err(sql_err("failed to prepare a visibility count"))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), |r| {
                    Ok((r.get::<_, Option<i32>>(0)?, r.get::<_, i64>(1)?))
                })
                .map_err(sql_err("failed to count workflows"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("failed to count workflows"))
        })
        .await
    }

    async fn checkpoint(&self) -> Result<()> {
        self.write_job(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(sql_err("failed to checkpoint the write-ahead log"))
        })
        .await
    }

    async fn scan_timers(&self, mut each: Box<dyn FnMut(TimerTask) + Send>) -> Result<()> {
        // On the writer connection: a start-up read (see the trait), so no reader has to open.
        self.write_job(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT task_id, shard_id, fire_at_ms, namespace_id, workflow_id, run_id, data
                     FROM timers ORDER BY fire_at_ms, shard_id, task_id",
                )
                .map_err(sql_err("failed to prepare a timer scan"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TimerTask {
                        task_id: r.get(0)?,
                        shard_id: r.get(1)?,
                        fire_at_ms: r.get(2)?,
                        namespace_id: r.get(3)?,
                        workflow_id: r.get(4)?,
                        run_id: r.get(5)?,
                        data: r.get(6)?,
                    })
                })
                .map_err(sql_err("failed to scan timers"))?;
            for row in rows {
                each(row.map_err(sql_err("failed to scan timers"))?);
            }
            Ok(())
        })
        .await
    }

    async fn load_transfers(&self) -> Result<Vec<TransferTask>> {
        // On the writer connection: a start-up read (see the trait), so no reader has to open.
        self.write_job(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT task_id, shard_id, namespace_id, workflow_id, run_id, data
                     FROM transfers ORDER BY shard_id, task_id",
                )
                .map_err(sql_err("failed to prepare a transfer scan"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TransferTask {
                        task_id: r.get(0)?,
                        shard_id: r.get(1)?,
                        namespace_id: r.get(2)?,
                        workflow_id: r.get(3)?,
                        run_id: r.get(4)?,
                        data: r.get(5)?,
                    })
                })
                .map_err(sql_err("failed to scan transfer tasks"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("failed to scan transfer tasks"))
        })
        .await
    }

    async fn put_namespace(&self, row: NamespaceRow, how: PutNamespace) -> Result<()> {
        self.write_job(move |conn| {
            let put = |conn: &mut Connection| {
                let sql = if how == PutNamespace::Replace {
                    "INSERT INTO namespaces (id, name, data) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO UPDATE SET data = ?3"
                } else {
                    "INSERT OR IGNORE INTO namespaces (id, name, data) VALUES (?1, ?2, ?3)"
                };
                let changed = exec(conn, sql, params![row.id, row.name, row.data])
                    .map_err(sql_err("failed to write a namespace"))?;
                if changed == 0 {
                    return Err(Error::AlreadyExists(format!("namespace {}", row.name)));
                }
                Ok(())
            };
            if how == PutNamespace::CreateAtStart {
                unsynced(conn, put)
            } else {
                put(conn)
            }
        })
        .await
    }

    async fn list_namespaces(&self) -> Result<Vec<NamespaceRow>> {
        // On the writer connection: a start-up read (see the trait), so no reader has to open.
        self.write_job(|conn| {
            let mut stmt = conn
                .prepare("SELECT id, name, data FROM namespaces ORDER BY name")
                .map_err(sql_err("failed to prepare a namespace scan"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(NamespaceRow {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        data: r.get(2)?,
                    })
                })
                .map_err(sql_err("failed to list namespaces"))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(sql_err("failed to list namespaces"))
        })
        .await
    }

    async fn get_metadata(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_string();
        self.read(move |conn| {
            query_one(
                conn,
                "SELECT value FROM cluster_metadata WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql_err("failed to read cluster metadata"))
        })
        .await
    }

    async fn put_metadata(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let key = key.to_string();
        self.write_job(move |conn| {
            exec(
                conn,
                "INSERT INTO cluster_metadata (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = ?2",
                params![key, value],
            )
            .map(|_| ())
            .map_err(sql_err("failed to write cluster metadata"))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
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
        store.acquire_shards(4).await.unwrap();
        assert_eq!(synchronous().await.unwrap(), 2, "FULL after the leases");
        let row = NamespaceRow {
            id: "id-1".into(),
            name: "default".into(),
            data: vec![1],
        };
        let how = PutNamespace::CreateAtStart;
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
        let where_run =
            || store.write_job(|_| Ok(std::thread::current().name().map(str::to_owned)));
        let here = std::thread::current().name().map(str::to_owned);
        assert_eq!(where_run().await.unwrap(), here);
        store.acquire_shards(1).await.unwrap();
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
        let lease = other.acquire_shards(1).await.unwrap().remove(0);
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
        store.acquire_shards(2).await.unwrap();
        let row = NamespaceRow {
            id: "id-1".into(),
            name: "default".into(),
            data: vec![1],
        };
        store
            .put_namespace(row, PutNamespace::CreateAtStart)
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
        let range_id = store.acquire_shards(1).await.unwrap()[0].range_id;
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
        let (main_before, wal_before) =
            (std::fs::read(&path).unwrap(), std::fs::read(&wal).unwrap());
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
}
