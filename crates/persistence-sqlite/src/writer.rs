//! The writer thread: group commit of every batch waiting in its queue in one transaction
//! (replayed with a savepoint per batch when one fails), unsynced start-up commits, shard leases.
use super::*;

pub(crate) type Job = Box<dyn FnOnce(&mut Connection) + Send>;

pub(crate) enum WriteRequest {
    Batch(Box<WriteBatch>, oneshot::Sender<Result<()>>),
    Job(Job),
}

/// The one writer connection. Until the writer thread starts, writes run on the caller's thread:
/// the start-up writes and reads (migrations, shard leases, namespaces, timers, transfer tasks)
/// are a handful of jobs in a row, and handing each to another thread and back cost two
/// wake-ups apiece, which after the machine has idled are each a wait for a sleeping CPU. The
/// thread starts at [`SqliteStore::start_writer`] or at the first commit, whichever is first;
/// from then on every write goes through it.
pub(crate) struct Writer {
    /// The connection while no thread holds it.
    pub(crate) inline: Mutex<Option<Connection>>,
    pub(crate) thread: std::sync::OnceLock<mpsc::Sender<WriteRequest>>,
    /// A file this open created, until its bytes are synced (see [`Unsynced`]).
    pub(crate) creation: Creation,
    /// The log the writer thread syncs after its commits (`None` for a private database,
    /// written without syncs).
    pub(crate) log: Option<Arc<LogSync>>,
    pub(crate) counters: Arc<Counters>,
}

impl Writer {
    /// Whether the writer thread has started (the server serves, or a commit came first).
    pub(crate) fn started(&self) -> bool {
        self.thread.get().is_some()
    }

    /// The writer thread's queue, starting the thread if it has not started.
    pub(crate) fn queue(&self) -> Result<&mpsc::Sender<WriteRequest>> {
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
        let log = self.log.clone();
        let counters = self.counters.clone();
        std::thread::Builder::new()
            .name("kairos-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, creation, log, counters))
            .map_err(|e| Error::unavailable("failed to start the sqlite writer", e))?;
        Ok(self.thread.get_or_init(|| tx))
    }

    /// Runs `f` on the connection here if no thread holds it yet, else returns `f` back.
    pub(crate) fn try_inline<F, T>(&self, f: F) -> std::result::Result<T, F>
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

/// Takes every request waiting in the queue and commits all batches among them in one
/// transaction: one fsync for many transitions. With `log` (a database file), the group is
/// committed unsynced and the log synced after it ([`Syncer`]), so the next group is built and
/// committed while the last one syncs, and batches that need only be committed are answered
/// without waiting for a sync; jobs run with `synchronous=FULL`, as before the thread started.
pub(crate) fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<WriteRequest>,
    creation: Creation,
    log: Option<Arc<LogSync>>,
    counters: Arc<Counters>,
) {
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
    let mut syncer = log.map(Syncer::new);
    let set_synchronous = |conn: &Connection, value: &str| {
        if let Err(error) = conn.execute_batch(&format!("PRAGMA synchronous={value}")) {
            tracing::error!(%error, value, "failed to set synchronous");
        }
    };
    if syncer.is_some() {
        set_synchronous(&conn, "NORMAL");
    }
    let mut carried: Option<WriteRequest> = None;
    loop {
        let Some(first) = carried.take().or_else(&next) else {
            break;
        };
        let mut batches = Vec::new();
        let mut pending = Some(first);
        loop {
            match pending.take() {
                Some(WriteRequest::Job(job)) => {
                    if !batches.is_empty() {
                        let done = commit_group(
                            &mut conn,
                            std::mem::take(&mut batches),
                            &syncer,
                            &counters,
                        );
                        answer(done, &mut syncer, true);
                    }
                    if let Some(syncer) = &syncer {
                        // A job may read what unsynced groups wrote (this connection sees every
                        // commit): they are synced first, as for any read. If that fails the job
                        // is dropped unrun, and its caller is told the store is unavailable.
                        let log = syncer.log();
                        if log.sync(log.committing()).is_err() {
                            drop(job);
                        } else {
                            set_synchronous(&conn, "FULL");
                            job(&mut conn);
                            set_synchronous(&conn, "NORMAL");
                        }
                    } else {
                        job(&mut conn);
                    }
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
            let done = commit_group(&mut conn, batches, &syncer, &counters);
            // Whether another request already waits: then the sync goes to the syncer thread
            // and this thread commits the next group meanwhile.
            carried = rx.try_recv().ok();
            answer(done, &mut syncer, carried.is_some());
        }
    }
}

/// Answers the batches of a committed group: at once those that failed or need only be
/// committed, the others once the log is synced.
fn answer(done: Vec<Committed>, syncer: &mut Option<Syncer>, busy: bool) {
    let mut after_sync = Vec::new();
    for (durability, reply, result) in done {
        match (syncer.as_ref(), durability, &result) {
            (Some(_), Durability::Synced, Ok(())) => after_sync.push(reply),
            _ => {
                let _ = reply.send(result);
            }
        }
    }
    if let Some(syncer) = syncer {
        syncer.after_group(after_sync, busy);
    }
}

/// A batch of a group once the group's transaction ended: how it must be answered, where, and
/// its result.
pub(crate) type Committed = (Durability, oneshot::Sender<Result<()>>, Result<()>);

pub(crate) fn commit_group(
    conn: &mut Connection,
    batches: Vec<(WriteBatch, oneshot::Sender<Result<()>>)>,
    syncer: &Option<Syncer>,
    counters: &Counters,
) -> Vec<Committed> {
    if let Some(syncer) = syncer
        && syncer.log().failed()
    {
        return batches
            .into_iter()
            .map(|(batch, reply)| (batch.durability, reply, Err(sync_failed())))
            .collect();
    }
    // Batches rarely fail (a lost race on a version or a current run), so the group is first
    // applied as one plain transaction. Only if a batch fails is it rolled back and applied again
    // with a savepoint around each batch, so the failure stays with its own batch. Savepoints on
    // every batch cost a copy of each page they touch into the statement journal.
    let log = syncer.as_ref().map(Syncer::log);
    let outcome = match apply_group(conn, &batches, false, log) {
        Ok(results) if results.iter().all(Result::is_ok) => Ok(results),
        Ok(_) => {
            let _ = conn.execute_batch("ROLLBACK");
            apply_group(conn, &batches, true, log)
        }
        Err(error) => Err(error),
    };
    match outcome {
        Ok(results) => {
            counters.commits.fetch_add(1, Ordering::Relaxed);
            batches
                .into_iter()
                .zip(results)
                .map(|((batch, reply), result)| (batch.durability, reply, result))
                .collect()
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
            batches
                .into_iter()
                .map(|(batch, reply)| {
                    let failed = Err(Error::Unavailable {
                        message: message.clone(),
                        source: None,
                    });
                    (batch.durability, reply, failed)
                })
                .collect()
        }
    }
}

/// Applies every batch in one transaction. Without `isolate`, the first failing batch stops the
/// group and the transaction is left open for the caller to roll back (its result is the only
/// error in the answer). With `isolate`, each batch runs in a savepoint and a failing one is
/// undone alone; the transaction is committed (numbered first in `log`, whose readers then
/// wait for its sync).
pub(crate) fn apply_group(
    conn: &mut Connection,
    batches: &[(WriteBatch, oneshot::Sender<Result<()>>)],
    isolate: bool,
    log: Option<&LogSync>,
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
    if let Some(log) = log {
        log.begin_commit();
    }
    run(conn, "COMMIT", "failed to commit")?;
    Ok(results)
}

/// After a failed batch: when SQLite rolled the whole transaction back itself (a full disk, an
/// I/O error), the batch's error is the group's, since nothing of the group was kept;
/// otherwise only the batch failed and the results go back to the caller.
pub(crate) fn group_error_if_rolled_back(
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
pub(crate) fn exec(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Reads one row with a cached statement.
pub(crate) fn query_one<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

/// Runs `f` (one autocommit statement or transaction) with `synchronous=OFF`: its commit is
/// written to the log but not synced. Only for commits that answer no client: a later synced
/// commit syncs the log up to and including it.
pub(crate) fn unsynced<T>(
    conn: &mut Connection,
    f: impl FnOnce(&mut Connection) -> Result<T>,
) -> Result<T> {
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

/// Bumps the leases of `shard_ids` in one transaction and reads each shard's highest stored
/// task id.
pub(crate) fn take_leases(conn: &mut Connection, shard_ids: &[i32]) -> Result<Vec<ShardLease>> {
    let tx = conn.transaction().map_err(sql_err("failed to begin"))?;
    let mut leases = Vec::with_capacity(shard_ids.len());
    for &shard_id in shard_ids {
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
