//! The database file: its exclusive lock, creation from the template (synced before the first
//! synced commit), recognising a torn creation, and never deleting a log that holds commits.
use super::*;

/// A database file [`create_database`] wrote and has not synced yet. Its fsync (about 1.5 ms on
/// a new inode, and a core's worth of write-back meanwhile) is kept off start-up: it runs just
/// before the first synced commit (the connection's commit hook), so no commit a client is
/// answered on ever lies on bytes that are not on disk, or once the writer thread has had no
/// commit for `CREATION_SYNC_DELAY`. The unsynced start-up commits
/// (`unsynced`) may precede it: they answer no one. A crash before the sync may leave the file
/// torn, which the next open recognises (`torn_creation`) and creates again.
pub(crate) struct Unsynced {
    pub(crate) file: std::fs::File,
    /// The directory holding the file's name.
    pub(crate) dir: PathBuf,
}

/// Shared by the writer connection's commit hook and the writer thread.
pub(crate) type Creation = Arc<Mutex<Option<Unsynced>>>;

/// How long the writer thread leaves a new file unsynced when no commit comes first.
pub(crate) const CREATION_SYNC_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

thread_local! {
    /// Set while `unsynced` runs a commit on this thread: such a commit does not need the new
    /// file synced first.
    pub(crate) static UNSYNCED_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Syncs a new file's bytes and its directory entry, once; after a failure it is tried again at
/// the next synced commit, and that commit is refused meanwhile.
pub(crate) fn sync_creation(creation: &Mutex<Option<Unsynced>>) -> std::io::Result<()> {
    let mut pending = creation.lock();
    if let Some(unsynced) = pending.as_ref() {
        unsynced.file.sync_all()?;
        std::fs::File::open(&unsynced.dir)?.sync_all()?;
        *pending = None;
    }
    Ok(())
}

/// Creates a new database file from `TEMPLATE`. Letting SQLite create it cost about 3 ms of the
/// first start (the switch to WAL through a rollback journal, then the schema, each statement
/// re-reading it). The bytes are written under a scratch name beside `path` and linked into
/// place, so another process never sees a partial file; the scratch name is removed at once. The
/// bytes are synced later ([`Unsynced`], returned here); `None` when `path` appeared meanwhile
/// (another process), whose file is kept.
pub(crate) fn create_database(path: &Path) -> Result<Option<Unsynced>> {
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
pub(crate) fn torn_creation(path: &Path) -> std::io::Result<bool> {
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
pub(crate) fn lock_database(path: &Path) -> Result<std::fs::File> {
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
pub(crate) fn refuse_if_logged(path: &Path) -> Result<()> {
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
pub(crate) fn remove_torn(path: &Path) -> Result<()> {
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

pub(crate) fn path_uri(path: &Path) -> String {
    let text = path.to_string_lossy();
    let escaped = text
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    format!("file:{escaped}")
}

/// Keeps the WAL file when the last connection closes (SQLite deletes it by default), so a
/// restart does not create it again and fsync the directory: about a millisecond of start-up.
pub(crate) fn persist_wal(conn: &Connection) {
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
