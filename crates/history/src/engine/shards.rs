//! Shards as objects: a shard this server holds owns its lease (`range_id`, every write is
//! fenced by it) and its task id allocator; its timers sit in the timer queue and its runs in
//! the run cache under its id. Shards are acquired one set at a time (the store bumps their
//! leases, then their timers and transfer tasks are read), renewed now and then (the store
//! confirms each lease still stands, so an idle holder learns it lost one), and released,
//! dropping everything held for them here. A node can hold any subset.
use super::*;

/// A shard this server holds (see the module).
pub(super) struct Shard {
    pub(super) id: i32,
    pub(super) range_id: i64,
    pub(super) ids: Mutex<CounterIds>,
    /// Set once the shard is released or its lease is found taken: then it commits nothing
    /// more, even for a request that looked it up before.
    stopped: std::sync::atomic::AtomicBool,
}

impl Shard {
    fn new(lease: &ShardLease) -> Self {
        // Task ids grow monotonically per shard: past anything stored and unique per lease.
        let base = lease.max_task_id.max(lease.range_id << 40);
        Shard {
            id: lease.shard_id,
            range_id: lease.range_id,
            ids: Mutex::new(CounterIds(base)),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn stop(&self) -> bool {
        !self
            .stopped
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    fn lease(&self) -> ShardLease {
        ShardLease {
            shard_id: self.id,
            range_id: self.range_id,
            max_task_id: 0,
        }
    }
}

/// The shards a server holds, by id.
pub(super) type Shards = parking_lot::RwLock<HashMap<i32, Arc<Shard>>>;

impl Engine {
    /// The held shard `shard_id`; `ShardOwnershipLost` when this server does not hold it.
    pub(super) fn shard(&self, shard_id: i32) -> Result<Arc<Shard>> {
        match self.inner.shards.read().get(&shard_id) {
            Some(shard) if !shard.is_stopped() => Ok(shard.clone()),
            _ => Err(Error::ShardOwnershipLost { shard_id }),
        }
    }

    /// Whether this server holds the shard `shard_id` now (its lease installed, not lost).
    pub fn holds_shard(&self, shard_id: i32) -> bool {
        self.shard(shard_id).is_ok()
    }

    /// The ids of the shards this server holds, in order.
    pub fn held_shards(&self) -> Vec<i32> {
        let mut ids: Vec<i32> = self.inner.shards.read().keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Takes the shards `shard_ids` (bumping their leases, so their previous holder commits
    /// nothing more), queues their timers and hands their pending transfer tasks to matching.
    /// Shards already held are left as they are.
    pub async fn acquire_shards(&self, shard_ids: &[i32]) -> Result<()> {
        let wanted: Vec<i32> = {
            let held = self.inner.shards.read();
            shard_ids
                .iter()
                .copied()
                .filter(|id| !held.contains_key(id))
                .collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        // Timers go into the queue row by row
        // (one per open workflow, so they are most of the memory a restart needs); a timer
        // that fires before the leases are installed is refused and retried.
        self.inner.acquiring.lock().extend(wanted.iter().copied());
        let acquired = self.acquire_wanted(&wanted).await;
        let mut acquiring = self.inner.acquiring.lock();
        for shard in &wanted {
            acquiring.remove(shard);
        }
        acquired
    }

    /// Whether `shard_id` is being acquired right now.
    pub(super) fn is_acquiring(&self, shard_id: i32) -> bool {
        self.inner.acquiring.lock().contains(&shard_id)
    }

    async fn acquire_wanted(&self, wanted: &[i32]) -> Result<()> {
        let store = &self.inner.store;
        let queued = self.inner.timers.clone();
        // The lease first, then the scans: once the lease is bumped the previous holder
        // commits nothing more, so the scans see every timer and task it ever wrote. (Read
        // beside the lease write, a timer the previous holder committed just after the scan
        // was lost: its holder dropped it as the shard's, and the new owner never saw it.)
        let leases = store.acquire_shards(wanted).await?;
        let (transfers, ()) = tokio::try_join!(
            store.load_transfers(wanted),
            store.scan_timers(
                wanted,
                Box::new(move |timer| queued.push(timers::Queued::of(&timer)))
            )
        )?;
        {
            let mut held = self.inner.shards.write();
            for lease in &leases {
                held.insert(lease.shard_id, Arc::new(Shard::new(lease)));
            }
        }
        // Nothing cached from an earlier hold of these shards is trusted: another node may
        // have changed those runs since (a run loaded just as the shard was released can
        // linger in the cache).
        let count = self.inner.options.shard_count;
        self.inner
            .runs
            .lock()
            .retain(|key| !wanted.contains(&shard_for(&key.namespace_id, &key.workflow_id, count)));
        for task in &transfers {
            self.dispatch_row(task);
        }
        Ok(())
    }

    /// Hands every pending transfer task of the held shards to matching again: after a node
    /// of a cluster died, the tasks its task queues held in memory exist only as these rows.
    /// A task queued twice is harmless: the second start finds it moot.
    pub async fn redispatch_transfers(&self) -> Result<()> {
        let held = self.held_shards();
        if held.is_empty() {
            return Ok(());
        }
        for task in self.inner.store.load_transfers(&held).await? {
            if self.shard(task.shard_id).is_ok() {
                self.dispatch_row_if(&task, |kind| !super::handled_by_history(kind));
            }
        }
        Ok(())
    }

    /// Gives up the shard `shard_id`: it commits nothing more from here, its timers leave the
    /// queue and its runs the cache. Nothing is written: whoever acquires it next fences this
    /// server off by bumping the lease.
    pub fn release_shard(&self, shard_id: i32) {
        let Some(shard) = self.inner.shards.write().remove(&shard_id) else {
            return;
        };
        shard.stop();
        self.inner.timers.forget_shard(shard_id);
        let count = self.inner.options.shard_count;
        self.inner
            .runs
            .lock()
            .retain(|key| shard_for(&key.namespace_id, &key.workflow_id, count) != shard_id);
        tracing::info!(shard_id, range_id = shard.range_id, "shard released");
    }

    /// Records that another server took `shard` (a commit or a renewal was refused for its
    /// lease), says so in the log once, and releases it.
    pub(super) fn shard_lost(&self, shard: &Shard) {
        if shard.stop() {
            tracing::warn!(
                shard_id = shard.id,
                range_id = shard.range_id,
                "shard ownership lost: another server took this shard's lease; this server \
                 stops serving it"
            );
        }
        let still_this = self
            .inner
            .shards
            .read()
            .get(&shard.id)
            .is_some_and(|held| std::ptr::eq(held.as_ref(), shard));
        if still_this {
            self.release_shard(shard.id);
        }
    }

    /// Confirms every held shard's lease with the store; a shard whose lease another server
    /// took is lost (see `shard_lost`). Errors reaching the store are logged and tried again
    /// at the next renewal.
    pub async fn renew_shards(&self) {
        let held: Vec<Arc<Shard>> = self.inner.shards.read().values().cloned().collect();
        for shard in held {
            match self.inner.store.renew_shard(shard.lease()).await {
                Ok(()) => {}
                Err(kairos_persistence::Error::ShardOwnershipLost { .. }) => {
                    self.shard_lost(&shard)
                }
                Err(e) => {
                    tracing::warn!(shard_id = shard.id, error = %e, "failed to renew a shard lease")
                }
            }
        }
    }
}

/// Renews the held shards' leases every `every` until the process ends.
pub(super) async fn renew(engine: Engine, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        engine.renew_shards().await;
    }
}
