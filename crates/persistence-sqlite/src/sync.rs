//! Syncing the write-ahead log apart from the commits: while serving, the writer commits each
//! group with `synchronous=NORMAL` (written to the log, not synced) and answers the batches that
//! only need to be committed at once; the batches that need stable storage are answered after
//! an `fdatasync` of the log, done on the writer thread when nothing else waits for it, or else on
//! the syncer thread while the writer builds and commits the next group. The log is synced in
//! order, so one sync covers every commit written before it began; a checkpoint (which copies
//! the log into the main file) syncs the log first and the main file after, so a commit already
//! moved out of the log is durable too.
use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64};

/// A batch's answer, sent once the log is synced.
pub(crate) type SyncedReply = oneshot::Sender<Result<()>>;

/// Counts of the writer's work since the store opened.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) syncs: AtomicU64,
}

/// The log of a database file and what is known of its syncing.
pub(crate) struct LogSync {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
    /// Set when a sync failed: what the log holds on disk is then unknown (a failed fsync may
    /// drop the pages it could not write), so no later write is answered as durable.
    failed: AtomicBool,
    counters: Arc<Counters>,
}

impl LogSync {
    /// The log beside the database file `db`.
    pub(crate) fn new(db: &Path, counters: Arc<Counters>) -> Self {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        Self {
            path: PathBuf::from(name),
            file: Mutex::new(None),
            failed: AtomicBool::new(false),
            counters,
        }
    }

    /// Whether a sync has failed (every write is refused from then on).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Syncs the log: every commit written before the call is on stable storage after it.
    pub(crate) fn sync(&self) -> Result<()> {
        if self.failed() {
            return Err(sync_failed());
        }
        let mut file = self.file.lock();
        if file.is_none() {
            // The writer connection keeps the log (PERSIST_WAL, and the connection lives as
            // long as the store), so the file opened once stays the log.
            let opened = std::fs::File::open(&self.path).map_err(|e| {
                Error::unavailable(format!("failed to open {}", self.path.display()), e)
            })?;
            *file = Some(opened);
        }
        let synced = file.as_ref().expect("opened above").sync_data();
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        synced.map_err(|e| {
            self.failed.store(true, Ordering::Release);
            tracing::error!(path = %self.path.display(), error = %e, "failed to sync the write-ahead log; no later write is answered");
            Error::unavailable(format!("failed to sync {}", self.path.display()), e)
        })
    }
}

pub(crate) fn sync_failed() -> Error {
    Error::Unavailable {
        message: "an earlier sync of the write-ahead log failed; restart the server".into(),
        source: None,
    }
}

/// Answers `replies` once the log is synced: here, or on the syncer thread (started the first
/// time it is needed) when `busy` says the writer has more to do.
pub(crate) struct Syncer {
    log: Arc<LogSync>,
    thread: Option<mpsc::Sender<Vec<SyncedReply>>>,
}

impl Syncer {
    pub(crate) fn new(log: Arc<LogSync>) -> Self {
        Self { log, thread: None }
    }

    pub(crate) fn log(&self) -> &LogSync {
        &self.log
    }

    pub(crate) fn answer_when_synced(&mut self, replies: Vec<SyncedReply>, busy: bool) {
        if replies.is_empty() {
            return;
        }
        if !busy {
            answer(&self.log, replies);
            return;
        }
        if self.thread.is_none() {
            let (tx, rx) = mpsc::channel::<Vec<SyncedReply>>();
            let log = self.log.clone();
            let spawned = std::thread::Builder::new()
                .name("kairos-sqlite-sync".into())
                .spawn(move || {
                    while let Ok(first) = rx.recv() {
                        let mut replies = first;
                        while let Ok(more) = rx.try_recv() {
                            replies.extend(more);
                        }
                        answer(&log, replies);
                    }
                });
            if spawned.is_ok() {
                self.thread = Some(tx);
            }
        }
        let replies = match &self.thread {
            Some(tx) => match tx.send(replies) {
                Ok(()) => return,
                Err(mpsc::SendError(replies)) => replies,
            },
            None => replies,
        };
        answer(&self.log, replies);
    }
}

fn answer(log: &LogSync, replies: Vec<SyncedReply>) {
    let synced = log.sync();
    for reply in replies {
        let _ = reply.send(match &synced {
            Ok(()) => Ok(()),
            Err(_) => Err(sync_failed()),
        });
    }
}
