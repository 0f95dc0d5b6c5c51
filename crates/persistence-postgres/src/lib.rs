//! The PostgreSQL backend: a pool of connections, committers that commit every batch waiting
//! when they are free in one transaction (one pipeline, one WAL flush; a group with a failing
//! batch is replayed batch by batch), prepared statements, tables
//! in a schema of their own (`?schema=NAME` in the URL), versioned migrations applied at open.
//! Durability is PostgreSQL's: a commit returns once its transaction is committed with the
//! server's `synchronous_commit`. Every write is fenced by the shard's lease row, read `FOR
//! SHARE` in the writing transaction, so a node whose lease was taken can never commit.
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures::{StreamExt, pin_mut};
use kairos_core::filter::Filter;
use kairos_persistence::{
    CurrentRow, Durability, Error, ExecutionRow, MemberRow, NamespaceRow, PutNamespace, Result,
    ShardLease, Store, StoreCounters, TimerTask, TransferTask, VisibilityCursor, VisibilityRow,
    WriteBatch,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::NoTls;

mod batch;
mod config;
mod error;
mod history;
mod members;
mod schema;
mod visibility;

pub use config::Options;
pub use schema::MIGRATIONS;

use error::{pg_err, pool_err};

/// A store on PostgreSQL. Clones share the pool and the committers.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    options: Arc<Options>,
    /// The queue of batches waiting for a committer (started with the first commit).
    commits: Arc<std::sync::OnceLock<mpsc::UnboundedSender<Pending>>>,
    counters: Arc<Counters>,
}

/// Transactions committed, and those of them that waited for the server's log flush.
#[derive(Debug, Default)]
struct Counters {
    commits: std::sync::atomic::AtomicU64,
    syncs: std::sync::atomic::AtomicU64,
}

/// A batch waiting to be committed, and where its result goes.
type Pending = (WriteBatch, oneshot::Sender<Result<()>>);

/// Batches one committer commits together at most.
const MAX_GROUP: usize = 64;

impl PostgresStore {
    /// Connects to the database at `url`, brings its schema up to date and opens the pool. An
    /// unreachable server, refused credentials or a schema newer than this binary are errors
    /// that say so.
    pub async fn open(url: &str) -> Result<PostgresStore> {
        let options = Options::parse(url)?;
        let store = Self::connect(options)?;
        store.migrate().await?;
        Ok(store)
    }

    /// Opens the pool without touching the schema (connections are made as they are needed).
    pub fn connect(options: Options) -> Result<PostgresStore> {
        let manager = Manager::from_config(
            options.pg.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .build()
            .map_err(|e| Error::unavailable("failed to build the connection pool", e))?;
        Ok(PostgresStore {
            pool,
            options: Arc::new(options),
            commits: Arc::new(std::sync::OnceLock::new()),
            counters: Arc::new(Counters::default()),
        })
    }

    /// Applies the pending migrations (see `schema`); the version the schema is at after.
    pub async fn migrate(&self) -> Result<usize> {
        let mut client = self.client().await?;
        schema::migrate(&mut client, &self.options.schema).await
    }

    /// Where this store is, for messages: `host:port/database (schema NAME)`.
    pub fn describe(&self) -> String {
        self.options.describe()
    }

    /// Drops the schema and everything in it: for tests that made a schema of their own.
    pub async fn drop_schema(&self) -> Result<()> {
        let client = self.client().await?;
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                self.options.schema
            ))
            .await
            .map_err(pg_err("failed to drop the schema"))
    }

    /// Drops the schemas named `PREFIX{pid}_...` whose process `pid` has ended: what test runs
    /// (each in schemas of its own) leave behind. Only for tests.
    #[doc(hidden)]
    pub async fn drop_schemas_of_finished_tests(&self, prefix: &str) -> Result<()> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)",
                &[&prefix],
            )
            .await
            .map_err(pg_err("failed to list schemas"))?;
        for row in rows {
            let name: String = row.get(0);
            let pid = name[prefix.len()..].split('_').next().unwrap_or_default();
            let alive = pid
                .parse::<u32>()
                .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
            let safe = name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !alive && safe {
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await
                    .map_err(pg_err("failed to drop a schema"))?;
            }
        }
        Ok(())
    }

    /// Ends every connection whose `application_name` is `application` (not this store's own
    /// connection): what a database restart or an operator does to a server. Returns how many
    /// ended. Only for tests.
    #[doc(hidden)]
    pub async fn terminate_connections_of(&self, application: &str) -> Result<i64> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&application],
            )
            .await
            .map_err(pg_err("failed to end connections"))?;
        Ok(row.get(0))
    }

    /// The committers' queue, starting them the first time: half the pool's connections (at
    /// least one) each take every batch waiting when they are free and commit them as one
    /// group, so under load one transaction (one WAL flush) carries many, and with no load a
    /// batch is committed as soon as it comes.
    fn commit_queue(&self) -> &mpsc::UnboundedSender<Pending> {
        self.commits.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel::<Pending>();
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..(self.options.pool_size / 2).max(1) {
                let rx = rx.clone();
                let pool = self.pool.clone();
                let options = self.options.clone();
                let counters = self.counters.clone();
                tokio::spawn(async move {
                    while let Some(group) = next_group(&rx).await {
                        commit_pending(&pool, &options, group, &counters).await;
                    }
                });
            }
            tx
        })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| pool_err(&self.options.describe(), e))
    }
}

fn stopped() -> Error {
    Error::Unavailable {
        message: "the PostgreSQL committers have stopped".into(),
        source: None,
    }
}

/// The batches waiting now (at least one, waiting for it), or `None` once every store handle
/// is gone.
async fn next_group(
    rx: &tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
) -> Option<Vec<Pending>> {
    let mut rx = rx.lock().await;
    let first = rx.recv().await?;
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(pending) => group.push(pending),
            Err(_) => break,
        }
    }
    Some(group)
}

/// Commits a group on one connection and answers each batch: first the batches that need only
/// be committed (their transaction does not wait for the log flush), then the others.
async fn commit_pending(pool: &Pool, options: &Options, group: Vec<Pending>, counters: &Counters) {
    use std::sync::atomic::Ordering;
    let (committed, synced): (Vec<Pending>, Vec<Pending>) = group
        .into_iter()
        .partition(|(batch, _)| batch.durability == Durability::Committed);
    let mut client = match pool.get().await {
        Ok(client) => client,
        Err(e) => {
            let message = pool_err(&options.describe(), e).with_causes();
            for (_, reply) in committed.into_iter().chain(synced) {
                let _ = reply.send(Err(Error::Unavailable {
                    message: message.clone(),
                    source: None,
                }));
            }
            return;
        }
    };
    for (part, wait_for_flush) in [(committed, false), (synced, true)] {
        if part.is_empty() {
            continue;
        }
        let (batches, replies): (Vec<WriteBatch>, Vec<oneshot::Sender<Result<()>>>) =
            part.into_iter().unzip();
        let mut commits = 0;
        let results = batch::commit_group(
            &mut client,
            &batches,
            options.lock_space(),
            wait_for_flush,
            &mut commits,
        )
        .await;
        counters.commits.fetch_add(commits, Ordering::Relaxed);
        if wait_for_flush {
            counters.syncs.fetch_add(commits, Ordering::Relaxed);
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }
}

/// True when a key holds a NUL character: PostgreSQL text cannot, so no such row exists (the
/// frontend refuses such ids before they are stored; reads by key may still meet one).
fn unstorable(keys: &[&str]) -> bool {
    keys.iter().any(|k| k.contains('\0'))
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        // The reference's name for its PostgreSQL plugin.
        "postgres12"
    }

    fn counters(&self) -> StoreCounters {
        use std::sync::atomic::Ordering;
        StoreCounters {
            commits: self.counters.commits.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
        }
    }

    async fn commit(&self, batch: WriteBatch) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.commit_queue()
            .send((batch, tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    async fn acquire_shards(&self, shard_ids: &[i32]) -> Result<Vec<ShardLease>> {
        let mut client = self.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(pg_err("failed to begin"))?;
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1, $2)")
            .await
            .map_err(pg_err("failed to prepare a lease lock"))?;
        let bump = tx
            .prepare_cached(
                "INSERT INTO shards (shard_id, range_id) VALUES ($1, 1)
                 ON CONFLICT (shard_id) DO UPDATE SET range_id = shards.range_id + 1
                 RETURNING range_id",
            )
            .await
            .map_err(pg_err("failed to prepare a lease"))?;
        let highest = tx
            .prepare_cached(
                "SELECT GREATEST(
                     (SELECT MAX(task_id) FROM timers WHERE shard_id = $1),
                     (SELECT MAX(task_id) FROM transfers WHERE shard_id = $1))",
            )
            .await
            .map_err(pg_err("failed to prepare a task id read"))?;
        let mut leases = Vec::with_capacity(shard_ids.len());
        for &shard_id in shard_ids {
            // Exclusive: waits for the commits in flight under the old lease (batch.rs).
            tx.execute(&lock, &[&self.options.lock_space(), &shard_id])
                .await
                .map_err(pg_err("failed to lock the shard"))?;
            let range_id: i64 = tx
                .query_one(&bump, &[&shard_id])
                .await
                .map_err(pg_err("failed to take the shard lease"))?
                .get(0);
            let max_task_id: Option<i64> = tx
                .query_one(&highest, &[&shard_id])
                .await
                .map_err(pg_err("failed to read task ids"))?
                .get(0);
            leases.push(ShardLease {
                shard_id,
                range_id,
                max_task_id: max_task_id.unwrap_or(0),
            });
        }
        tx.commit()
            .await
            .map_err(pg_err("failed to commit the shard leases"))?;
        Ok(leases)
    }

    async fn get_execution(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
    ) -> Result<Option<ExecutionRow>> {
        if unstorable(&[namespace_id, workflow_id, run_id]) {
            return Ok(None);
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT shard_id, db_version, state FROM executions
                 WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $3",
            )
            .await
            .map_err(pg_err("failed to prepare an execution read"))?;
        let row = client
            .query_opt(&stmt, &[&namespace_id, &workflow_id, &run_id])
            .await
            .map_err(pg_err("failed to read an execution"))?;
        Ok(row.map(|r| ExecutionRow {
            shard_id: r.get(0),
            db_version: r.get(1),
            state: r.get(2),
        }))
    }

    async fn get_current(
        &self,
        namespace_id: &str,
        workflow_id: &str,
    ) -> Result<Option<CurrentRow>> {
        if unstorable(&[namespace_id, workflow_id]) {
            return Ok(None);
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT run_id, data FROM current_executions WHERE namespace_id = $1 AND workflow_id = $2",
            )
            .await
            .map_err(pg_err("failed to prepare a current run read"))?;
        let row = client
            .query_opt(&stmt, &[&namespace_id, &workflow_id])
            .await
            .map_err(pg_err("failed to read the current run"))?;
        Ok(row.map(|r| CurrentRow {
            run_id: r.get(0),
            data: r.get(1),
        }))
    }

    async fn read_events(
        &self,
        namespace_id: &str,
        workflow_id: &str,
        run_id: &str,
        first: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        if unstorable(&[namespace_id, workflow_id, run_id]) {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        history::read(&client, namespace_id, workflow_id, run_id, first, limit).await
    }

    async fn close(&self) -> Result<()> {
        self.pool.close();
        Ok(())
    }

    async fn scan_timers(
        &self,
        shard_ids: &[i32],
        mut each: Box<dyn FnMut(TimerTask) + Send>,
    ) -> Result<()> {
        let client = self.client().await?;
        let rows = client
            .query_raw(
                "SELECT task_id, shard_id, fire_at_ms, namespace_id, workflow_id, run_id, data
                 FROM timers WHERE shard_id = ANY($1) ORDER BY fire_at_ms, shard_id, task_id",
                [&shard_ids],
            )
            .await
            .map_err(pg_err("failed to scan timers"))?;
        pin_mut!(rows);
        while let Some(row) = rows.next().await {
            let r = row.map_err(pg_err("failed to scan timers"))?;
            each(TimerTask {
                task_id: r.get(0),
                shard_id: r.get(1),
                fire_at_ms: r.get(2),
                namespace_id: r.get(3),
                workflow_id: r.get(4),
                run_id: r.get(5),
                data: r.get(6),
            });
        }
        Ok(())
    }

    async fn renew_shard(&self, lease: ShardLease) -> Result<()> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT range_id FROM shards WHERE shard_id = $1",
                &[&lease.shard_id],
            )
            .await
            .map_err(pg_err("failed to read a shard lease"))?;
        if row.map(|r| r.get::<_, i64>(0)) == Some(lease.range_id) {
            Ok(())
        } else {
            Err(Error::ShardOwnershipLost {
                shard_id: lease.shard_id,
            })
        }
    }

    async fn load_transfers(&self, shard_ids: &[i32]) -> Result<Vec<TransferTask>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT task_id, shard_id, namespace_id, workflow_id, run_id, data
                 FROM transfers WHERE shard_id = ANY($1) ORDER BY shard_id, task_id",
                &[&shard_ids],
            )
            .await
            .map_err(pg_err("failed to scan transfer tasks"))?;
        Ok(rows
            .into_iter()
            .map(|r| TransferTask {
                task_id: r.get(0),
                shard_id: r.get(1),
                namespace_id: r.get(2),
                workflow_id: r.get(3),
                run_id: r.get(4),
                data: r.get(5),
            })
            .collect())
    }

    async fn put_namespace(&self, row: NamespaceRow, how: PutNamespace) -> Result<()> {
        let client = self.client().await?;
        let sql = match how {
            PutNamespace::Replace => {
                "INSERT INTO namespaces (id, name, data) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET data = EXCLUDED.data"
            }
            PutNamespace::Create => {
                "INSERT INTO namespaces (id, name, data) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            }
        };
        let changed = client
            .execute(sql, &[&row.id, &row.name, &row.data])
            .await
            .map_err(pg_err("failed to write a namespace"))?;
        if changed == 0 {
            return Err(Error::AlreadyExists(format!("namespace {}", row.name)));
        }
        Ok(())
    }

    async fn list_namespaces(&self) -> Result<Vec<NamespaceRow>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id, name, data FROM namespaces ORDER BY name", &[])
            .await
            .map_err(pg_err("failed to list namespaces"))?;
        Ok(rows
            .into_iter()
            .map(|r| NamespaceRow {
                id: r.get(0),
                name: r.get(1),
                data: r.get(2),
            })
            .collect())
    }

    async fn get_metadata(&self, key: &str) -> Result<Option<Vec<u8>>> {
        if unstorable(&[key]) {
            return Ok(None);
        }
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT value FROM cluster_metadata WHERE key = $1", &[&key])
            .await
            .map_err(pg_err("failed to read cluster metadata"))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn put_metadata(&self, key: &str, value: Vec<u8>) -> Result<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO cluster_metadata (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .await
            .map_err(pg_err("failed to write cluster metadata"))?;
        Ok(())
    }

    async fn claim_metadata(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        let client = self.client().await?;
        members::claim_metadata(&client, key, &value).await
    }

    async fn heartbeat_member(&self, member: &MemberRow) -> Result<()> {
        let client = self.client().await?;
        members::heartbeat(&client, member).await
    }

    async fn live_members(&self, within: std::time::Duration) -> Result<Vec<MemberRow>> {
        let client = self.client().await?;
        members::live(&client, within).await
    }

    async fn remove_member(&self, name: &str, session: i64) -> Result<()> {
        let client = self.client().await?;
        members::remove(&client, name, session).await
    }

    async fn list_visibility(
        &self,
        namespace_id: &str,
        filter: &Filter,
        after: Option<VisibilityCursor>,
        limit: usize,
    ) -> Result<Vec<VisibilityRow>> {
        let client = self.client().await?;
        visibility::list(&client, namespace_id, filter, after, limit).await
    }

    async fn count_visibility(
        &self,
        namespace_id: &str,
        filter: &Filter,
        by_status: bool,
    ) -> Result<Vec<(Option<i32>, i64)>> {
        let client = self.client().await?;
        visibility::count(&client, namespace_id, filter, by_status).await
    }
}
