//! The SQLite backend: WAL, one writer thread that group-commits every batch waiting in its queue
//! into a single transaction (replayed with a savepoint around each batch if one fails, so one
//! failed condition does not undo the others) and syncs the log after it (`sync`), and a small
//! pool of reader connections.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use kairos_core::filter::Filter;
use kairos_persistence::{
    CurrentRow, CurrentWrite, Durability, Error, ExecutionRow, ExecutionWrite, NamespaceRow,
    PutNamespace, Result, ShardLease, Store, TimerTask, TransferTask, VisibilityCursor,
    VisibilityRow, VisibilityWrite, WriteBatch,
};

mod batch;
mod error;
mod file;
mod history;
mod readers;
mod schema;
mod store;
mod sync;
#[cfg(test)]
mod tests;
mod visibility;
mod wal;
mod writer;

use batch::*;
use error::*;
use file::*;
use history::*;
use readers::*;
use schema::*;
use sync::*;
use visibility::*;
use writer::*;

pub use history::split_history_row;

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
        let counters = Arc::new(Counters::default());
        let log = match location {
            // The file as SQLite names it (a path through a symbolic link resolved), so the log
            // synced is the one SQLite writes.
            Location::File(path) => {
                let named = writer.path().filter(|p| !p.is_empty()).map(PathBuf::from);
                let db = named.unwrap_or_else(|| path.clone());
                Some(Arc::new(LogSync::new(&db, counters.clone())))
            }
            Location::Memory => None,
        };
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
                log,
                counters,
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
        let log = self.writer.log.clone();
        let job: ReadJob = Box::new(move |conn| {
            let result = match conn {
                // Answered once every commit the read could have seen is synced.
                Ok(conn) => f(conn).and_then(|value| match &log {
                    Some(log) => log.wait_synced(log.committing()).map(|()| value),
                    None => Ok(value),
                }),
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
