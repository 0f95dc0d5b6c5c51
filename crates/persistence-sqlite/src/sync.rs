//! Syncing the write-ahead log apart from the commits: while serving, the writer commits each
//! group with `synchronous=NORMAL` (written to the log, not synced) and answers the batches that
//! only need to be committed at once; the batches that need stable storage are answered after
//! an `fdatasync` of the log, done on the writer thread when nothing else waits for it, or else on
//! the syncer thread while the writer builds and commits the next group. The log is synced in
//! order, so one sync covers every commit written before it began; a checkpoint (which copies
//! the log into the main file) syncs the log first and the main file after, so a commit already
//! moved out of the log is durable too.
//!
//! A commit written with `NORMAL` is visible to readers before it is synced (with `FULL` SQLite
//! syncs before it publishes the commit), so a read answers only once the log is synced past
//! every commit it could have seen ([`LogSync::wait_synced`]): no answer rests on data a crash
//! of the machine could still take back.
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
    /// Groups whose `COMMIT` has begun (numbered from 1).
    committing: AtomicU64,
    /// The last group known synced, and its waiters.
    synced: Mutex<u64>,
    synced_changed: parking_lot::Condvar,
    /// Set when a sync failed: what the log holds on disk is then unknown (a failed fsync may
    /// drop the pages it could not write), so no later write is answered as durable.
    failed: AtomicBool,
    counters: Arc<Counters>,
}

impl LogSync {
    /// The log of the database file `db`, as SQLite names the file.
    pub(crate) fn new(db: &Path, counters: Arc<Counters>) -> Self {
        let mut name = db.as_os_str().to_owned();
        name.push("-wal");
        Self {
            path: PathBuf::from(name),
            file: Mutex::new(None),
            committing: AtomicU64::new(0),
            synced: Mutex::new(0),
            synced_changed: parking_lot::Condvar::new(),
            failed: AtomicBool::new(false),
            counters,
        }
    }

    /// Whether a sync has failed (every write is refused from then on).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Numbers the group about to commit; called just before its `COMMIT`, so a reader that
    /// saw the commit also sees its number.
    pub(crate) fn begin_commit(&self) -> u64 {
        self.committing.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// The last group whose `COMMIT` has begun.
    pub(crate) fn committing(&self) -> u64 {
        self.committing.load(Ordering::Acquire)
    }

    /// Waits until every group up to `group` is synced; an error once a sync has failed.
    pub(crate) fn wait_synced(&self, group: u64) -> Result<()> {
        let mut synced = self.synced.lock();
        loop {
            if self.failed() {
                return Err(sync_failed());
            }
            if *synced >= group {
                return Ok(());
            }
            self.synced_changed.wait(&mut synced);
        }
    }

    /// Syncs the log for the groups up to `group` (each one's `COMMIT` has returned): every
    /// commit written before the call is on stable storage after it.
    pub(crate) fn sync(&self, group: u64) -> Result<()> {
        if *self.synced.lock() >= group {
            return Ok(());
        }
        let mut file = self.file.lock();
        // Checked under the file's lock: a sync that failed while this one waited for the lock
        // leaves pages the kernel may have dropped, which a later successful sync does not
        // bring back.
        if self.failed() {
            return Err(sync_failed());
        }
        // The writer connection keeps the log (PERSIST_WAL, and the connection lives as long as
        // the store), so the file opened once stays the log. A log that cannot be opened fails
        // like a failed sync: waiting readers are told, nothing later is answered.
        let outcome = match file.as_ref() {
            Some(opened) => opened.sync_data(),
            None => std::fs::File::open(&self.path).and_then(|opened| {
                let synced = opened.sync_data();
                *file = Some(opened);
                synced
            }),
        };
        self.counters.syncs.fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                let mut synced = self.synced.lock();
                *synced = (*synced).max(group);
                self.synced_changed.notify_all();
                Ok(())
            }
            Err(e) => {
                self.failed.store(true, Ordering::Release);
                // Readers waiting for a sync learn it failed.
                let _synced = self.synced.lock();
                self.synced_changed.notify_all();
                tracing::error!(path = %self.path.display(), error = %e, "failed to sync the write-ahead log; no later write or read is answered");
                Err(Error::unavailable(
                    format!("failed to sync {}", self.path.display()),
                    e,
                ))
            }
        }
    }
}

pub(crate) fn sync_failed() -> Error {
    Error::Unavailable {
        message: "an earlier sync of the write-ahead log failed; restart the server".into(),
        source: None,
    }
}

/// Syncs the log after each group and answers the group's `replies` once it is synced: here,
/// or on the syncer thread (started the first time it is needed) when `busy` says the writer
/// has more to do.
pub(crate) struct Syncer {
    log: Arc<LogSync>,
    thread: Option<mpsc::Sender<(u64, Vec<SyncedReply>)>>,
}

impl Syncer {
    pub(crate) fn new(log: Arc<LogSync>) -> Self {
        Self { log, thread: None }
    }

    pub(crate) fn log(&self) -> &LogSync {
        &self.log
    }

    /// After a group: syncs the log up to the last group that began committing and then answers
    /// `replies` (every group is synced, answered or not: reads wait for it).
    pub(crate) fn after_group(&mut self, replies: Vec<SyncedReply>, busy: bool) {
        let group = self.log.committing();
        if !busy {
            answer(&self.log, group, replies);
            return;
        }
        if self.thread.is_none() {
            let (tx, rx) = mpsc::channel::<(u64, Vec<SyncedReply>)>();
            let log = self.log.clone();
            let spawned = std::thread::Builder::new()
                .name("kairos-sqlite-sync".into())
                .spawn(move || {
                    while let Ok((first, replies)) = rx.recv() {
                        let (mut group, mut replies) = (first, replies);
                        while let Ok((more, also)) = rx.try_recv() {
                            group = group.max(more);
                            replies.extend(also);
                        }
                        answer(&log, group, replies);
                    }
                });
            if spawned.is_ok() {
                self.thread = Some(tx);
            }
        }
        let replies = match &self.thread {
            Some(tx) => match tx.send((group, replies)) {
                Ok(()) => return,
                Err(mpsc::SendError((_, replies))) => replies,
            },
            None => replies,
        };
        answer(&self.log, group, replies);
    }
}

fn answer(log: &LogSync, group: u64, replies: Vec<SyncedReply>) {
    let synced = log.sync(group);
    for reply in replies {
        let _ = reply.send(match &synced {
            Ok(()) => Ok(()),
            Err(_) => Err(sync_failed()),
        });
    }
}
