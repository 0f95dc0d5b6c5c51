//! The reader pool: connections on threads of their own, started as reads need them.
use super::*;

/// A read run by a reader thread: on its connection, or on the error that kept the thread from
/// opening one.
pub(crate) type ReadJob = Box<dyn FnOnce(std::result::Result<&Connection, &str>) + Send>;

/// At most this many reader threads, each with its own connection, taking jobs from one queue.
/// A bounded pool rather than tokio's blocking pool: under load that grew to hundreds of threads
/// waiting on a few connections, each with its own stack and allocator heap.
pub(crate) const READERS: usize = 4;

/// The reader threads, started as reads need them: none until the first read, another only when
/// a read is queued while every started one is busy. Opening a connection costs about 0.3 ms of
/// CPU (most of it parsing the schema); opening all four at once added 1.4 ms to a 7 ms start on
/// two cores.
pub(crate) struct Readers {
    pub(crate) queue: Mutex<mpsc::Receiver<ReadJob>>,
    /// Reads queued and not yet taken by a reader.
    pub(crate) pending: AtomicUsize,
    /// Started readers waiting for a job (or for their turn to wait).
    pub(crate) idle: AtomicUsize,
    pub(crate) started: AtomicUsize,
    pub(crate) uri: String,
    pub(crate) flags: rusqlite::OpenFlags,
}

impl Readers {
    /// Queues a read, first starting a reader if more reads wait than readers are idle and
    /// fewer than `READERS` run.
    pub(crate) fn submit(
        self: &Arc<Self>,
        jobs: &mpsc::Sender<ReadJob>,
        job: ReadJob,
    ) -> Result<()> {
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
    pub(crate) fn start_one(self: &Arc<Self>) -> Result<()> {
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
    pub(crate) fn run(&self) {
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
