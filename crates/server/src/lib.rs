//! Kairos composition root: opens the store, starts matching and the history engine, creates
//! the configured namespaces and serves the gRPC services until shutdown.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kairos_core::{Clock, ServerOptions, SystemClock};
use kairos_history::{Engine, EngineOptions, Namespaces};
use kairos_persistence::Store;
use kairos_persistence_sqlite::{Location, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

mod cluster;
mod metrics;

pub use cluster::ClusterConfig;
pub use kairos_frontend::cluster::Roles;

/// Where the server keeps its data.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file (created if missing).
    SqliteFile(PathBuf),
    /// A SQLite database in memory, gone at exit.
    SqliteMemory,
    /// A PostgreSQL database: `postgres://user:password@host:port/database`, optionally with
    /// `?schema=NAME` (default `kairos`) and `pool_size=N` (default 16). Its schema is created
    /// or migrated at start.
    Postgres(String),
}

impl Database {
    /// Where the data lives, for the start-up banner (never a password).
    pub fn describe(&self) -> String {
        match self {
            Database::SqliteFile(path) => format!("SQLite file {}", path.display()),
            Database::SqliteMemory => "in memory (nothing is kept)".to_string(),
            Database::Postgres(url) => match kairos_persistence_postgres::Options::parse(url) {
                Ok(options) => format!("PostgreSQL {}", options.describe()),
                Err(_) => "PostgreSQL".to_string(),
            },
        }
    }
}

/// Everything needed to start a server.
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The database.
    pub database: Database,
    /// Namespaces to create at start if missing.
    pub namespaces: Vec<String>,
    /// Custom search attributes (name, `IndexedValueType`) registered on every namespace of
    /// `namespaces` at start.
    pub search_attributes: Vec<(String, i32)>,
    /// Timing knobs and limits.
    pub options: ServerOptions,
    /// The clock (a manual one in tests).
    pub clock: Arc<dyn Clock>,
    /// `database`, already being opened (see [`Opening`]); `None` opens it in [`Server::start`].
    pub opening: Option<Opening>,
    /// A socket already bound to `listen` (by `kairos server start-dev`, first thing, so that
    /// clients connecting during start-up wait in its backlog instead of being refused); `None`
    /// binds in [`Server::start`].
    pub listener: Option<std::net::TcpListener>,
    /// Where to serve `/metrics` (port 0 picks a free port); `None` serves none.
    pub metrics: Option<SocketAddr>,
    /// Run as one node of a cluster on a PostgreSQL database (`kairos server start`); `None`
    /// holds every shard alone.
    pub cluster: Option<ClusterConfig>,
}

/// A database being opened while the caller starts its async runtime. `kairos server
/// start-dev` begins the open before it builds the runtime, so the two overlap: on two cores
/// SQLite's open (about 1 ms, more for a new file) and the runtime's start (0.3-0.7 ms) took
/// turns before, each a tenth of the time to a first answer. A PostgreSQL database opens in
/// [`Server::start`], on the runtime its connections live on.
pub struct Opening(Option<std::thread::JoinHandle<anyhow::Result<Arc<dyn Store>>>>);

impl Opening {
    /// Starts opening `database`, creating it if missing. Fails only if no thread can start.
    pub fn begin(database: &Database) -> anyhow::Result<Opening> {
        if matches!(database, Database::Postgres(_)) {
            return Ok(Opening(None));
        }
        let database = database.clone();
        std::thread::Builder::new()
            .name("kairos-open".into())
            .spawn(move || open_sqlite(&database))
            .map(|thread| Opening(Some(thread)))
            .context("failed to start a thread to open the database")
    }

    /// Waits for the open to finish (`None`: it has yet to begin).
    fn finish(self) -> anyhow::Result<Option<Arc<dyn Store>>> {
        match self.0 {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("the thread opening the database panicked"))?
                .map(Some),
            None => Ok(None),
        }
    }
}

fn open_sqlite(database: &Database) -> anyhow::Result<Arc<dyn Store>> {
    let location = match database {
        Database::SqliteFile(path) => Location::File(path.clone()),
        Database::SqliteMemory => Location::Memory,
        Database::Postgres(_) => unreachable!("PostgreSQL opens on the runtime"),
    };
    let store = SqliteStore::open(&location).context("failed to open the database")?;
    Ok(Arc::new(store))
}

async fn open_database(database: &Database) -> anyhow::Result<Arc<dyn Store>> {
    match database {
        Database::Postgres(url) => {
            let store = kairos_persistence_postgres::PostgresStore::open(url)
                .await
                .context("failed to open the database")?;
            Ok(Arc::new(store))
        }
        _ => open_sqlite(database),
    }
}

/// The schema version of PostgreSQL databases this build writes.
pub const POSTGRES_SCHEMA_VERSION: usize = kairos_persistence_postgres::MIGRATIONS.len();

/// Creates or upgrades the schema of the PostgreSQL database at `url`; returns where it is
/// (`host:port/database (schema NAME)`).
pub async fn migrate_postgres(url: &str) -> anyhow::Result<String> {
    let store = kairos_persistence_postgres::PostgresStore::open(url)
        .await
        .context("failed to migrate the database")?;
    Ok(store.describe())
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7233)),
            database: Database::SqliteMemory,
            namespaces: vec!["default".to_string()],
            search_attributes: Vec::new(),
            metrics: None,
            options: ServerOptions::default(),
            clock: Arc::new(SystemClock),
            opening: None,
            listener: None,
            cluster: None,
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    serving: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    store: Arc<dyn Store>,
    matching: kairos_matching::Handle,
    panics: kairos_frontend::CatchPanicLayer,
    engine: Engine,
    /// `/metrics`: where it is served and the task serving it.
    metrics: Option<(SocketAddr, tokio::task::JoinHandle<()>)>,
    /// This server as a node of a cluster.
    node: Option<NodeRole>,
}

/// How long a leaving node lets requests in flight finish.
const LEAVE_GRACE: Duration = Duration::from_secs(5);

/// What a node of a cluster runs beside the frontend.
struct NodeRole {
    me: kairos_persistence::MemberRow,
    view: Arc<kairos_frontend::cluster::Cluster>,
    tasks: Arc<dyn kairos_core::api::TaskSink>,
    internal_addr: SocketAddr,
    leave: Option<oneshot::Sender<()>>,
    serving_internal: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    beating: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the store, starts every role and begins serving. Returns once the port accepts
    /// connections.
    pub async fn start(mut config: Config) -> anyhow::Result<Server> {
        // Bound first: a taken port fails before the store is used (an `Opening` may already
        // have created its file), and clients that connect while the store opens wait in the
        // accept backlog (a few ms) instead of being refused and backing off.
        // A node of a cluster without the frontend role serves no public port.
        let serves_clients = config.cluster.as_ref().is_none_or(|c| c.roles.frontend);
        let bound = match config.listener.take() {
            _ if !serves_clients => None,
            Some(listener) => Some(
                listener
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(listener)),
            ),
            None => Some(TcpListener::bind(config.listen).await),
        };
        let listener = match bound.transpose() {
            Ok(listener) => listener,
            Err(e) => {
                // The open runs to its end first, so that the process exiting on this error
                // leaves either the whole new file or none, not its scratch copy.
                if let Some(opening) = config.opening.take() {
                    let _ = opening.finish();
                }
                return Err(e).with_context(|| format!("failed to listen on {}", config.listen));
            }
        };
        let public_addr = listener.as_ref().map(|l| l.local_addr()).transpose()?;
        // Without an `Opening`, opened on this thread, blocking it for the 1-3 ms the open
        // takes, before anything is served: handing the open to the blocking pool cost a thread
        // start and a wake-up, 0.3 ms of every start.
        let opened = match config.opening.take() {
            Some(opening) => opening.finish()?,
            None => None,
        };
        let store: Arc<dyn Store> = match opened {
            Some(store) => store,
            None => open_database(&config.database).await?,
        };
        let serving_store = store.clone();
        if matches!(config.database, Database::Postgres(_)) || config.cluster.is_some() {
            cluster::check_shard_count(store.as_ref(), config.options.shard_count).await?;
        }
        // A node of a cluster: its NodeService port, bound before it joins (its address goes
        // into its member row), and its view of the members.
        let joined = match &config.cluster {
            Some(cluster_config) => {
                anyhow::ensure!(
                    matches!(config.database, Database::Postgres(_)),
                    "a cluster node keeps its data in PostgreSQL: give it --db-url postgres://..."
                );
                let internal = TcpListener::bind(cluster_config.internal_listen)
                    .await
                    .with_context(|| {
                        format!(
                            "failed to listen on {} for the other nodes",
                            cluster_config.internal_listen
                        )
                    })?;
                let me = cluster::member_row(cluster_config, public_addr, internal.local_addr()?);
                let view = kairos_frontend::cluster::Cluster::new(
                    cluster::node(&me),
                    config.options.shard_count,
                );
                cluster::join(store.as_ref(), &me, cluster_config, &view).await?;
                Some((internal, me, view))
            }
            None => None,
        };
        let view = joined.as_ref().map(|(_, _, view)| view.clone());
        let namespaces = Namespaces::load(store.clone()).await?;
        let matching = kairos_matching::Handle::new(kairos_matching::Options {
            long_poll_timeout: config.options.long_poll_timeout,
            poller_idle: config.options.sticky_poller_idle,
        });
        let tasks: Arc<dyn kairos_core::api::TaskSink> = Arc::new(
            kairos_frontend::TaskRouter::new(matching.clone(), view.clone()),
        );
        // The configured namespaces are created while the engine loads its tasks (neither
        // needs the other; their writes take turns on the one connection).
        let created = async {
            for name in &config.namespaces {
                namespaces
                    .create_at_start(name, config.options.default_retention)
                    .await
                    .with_context(|| format!("failed to create namespace {name}"))?;
                if !config.search_attributes.is_empty() {
                    namespaces
                        .register_at_start(name, &config.search_attributes)
                        .await
                        .with_context(|| {
                            format!("failed to register search attributes in namespace {name}")
                        })?;
                }
            }
            anyhow::Ok(())
        };
        let engine = Engine::start(
            store,
            config.clock.clone(),
            EngineOptions {
                shard_count: config.options.shard_count,
                limits: config.options.limits.clone(),
                history_long_poll_timeout: config.options.history_long_poll_timeout,
                cache_size: config.options.cache_size,
                eager_activities: config.options.eager_activities,
                eager_workflow_start: config.options.eager_workflow_start,
                continue_as_new_min_interval: config.options.continue_as_new_min_interval,
                shard_renew_interval: config.options.shard_renew_interval,
                hold_every_shard: view.is_none(),
            },
            namespaces.clone(),
            tasks.clone(),
        );
        let (engine, created) = tokio::join!(engine, created);
        created?;
        let engine = engine?;
        if let Some(view) = &view {
            engine.set_remote(view.clone());
        }
        let membership = match (&joined, &config.cluster) {
            (Some((_, me, view)), Some(cluster_config)) => {
                let membership = cluster::Membership {
                    store: serving_store.clone(),
                    me: me.clone(),
                    config: cluster_config.clone(),
                    view: view.clone(),
                    engine: engine.clone(),
                    matching: matching.clone(),
                    tasks: tasks.clone(),
                };
                membership.balance_shards().await;
                Some(membership)
            }
            _ => None,
        };
        // The start-up reads and writes ran on this thread; from here on the writer thread
        // takes them.
        serving_store
            .start_serving()
            .context("failed to start the database writer")?;
        let inflate = kairos_frontend::InflateLayer {
            max_request: config.options.limits.request_size,
        };
        let panics = kairos_frontend::CatchPanicLayer::default();
        let metrics = match config.metrics {
            Some(at) => {
                let listener = TcpListener::bind(at)
                    .await
                    .with_context(|| format!("failed to listen on {at} for /metrics"))?;
                let sources = metrics::Sources {
                    store: serving_store.clone(),
                    panics: panics.clone(),
                    engine: engine.clone(),
                    cluster: view.clone(),
                };
                Some((
                    listener.local_addr()?,
                    tokio::spawn(metrics::serve(listener, sources)),
                ))
            }
            None => None,
        };
        let services = kairos_frontend::services(
            engine.clone(),
            matching.clone(),
            view.clone(),
            config.options.clone(),
        );
        let mut node = None;
        if let (Some((internal, me, _)), Some(service), Some(membership)) =
            (joined, services.node, membership)
        {
            let internal_addr = internal.local_addr()?;
            let incoming =
                tonic::transport::server::TcpIncoming::from(internal).with_nodelay(Some(true));
            let (leave_tx, leave_rx) = oneshot::channel::<()>();
            let serving_internal = tokio::spawn(
                tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(10)))
                    .layer(panics.clone())
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = leave_rx.await;
                    }),
            );
            let beating = tokio::spawn(membership.run());
            tracing::info!(node = %me.name, internal = %internal_addr, "joined the cluster");
            node = Some(NodeRole {
                me,
                view: view.clone().expect("a node has a view"),
                tasks: tasks.clone(),
                internal_addr,
                leave: Some(leave_tx),
                serving_internal,
                beating,
            });
        }
        let (tx, rx) = oneshot::channel::<()>();
        let serving = match listener {
            Some(listener) => {
                // No Nagle: replies are small and latency-bound; delayed ACKs would add ~40 ms
                // per call.
                let incoming =
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .http2_keepalive_interval(Some(Duration::from_secs(30)))
                        .layer(panics.clone())
                        .layer(kairos_frontend::DeadlineLayer)
                        .layer(inflate)
                        .add_service(services.workflow)
                        .add_service(services.operator)
                        .add_service(services.health)
                        .add_service(services.cluster)
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = rx.await;
                        }),
                )
            }
            None => tokio::spawn(async {
                let _ = rx.await;
                Ok(())
            }),
        };
        // A node without a frontend is known by its internal address.
        let addr = public_addr
            .or(node.as_ref().map(|n| n.internal_addr))
            .context("a server serves a port")?;
        Ok(Server {
            addr,
            shutdown: Some(tx),
            serving,
            store: serving_store,
            matching,
            panics,
            engine,
            metrics,
            node,
        })
    }

    /// Where this node's `NodeService` listens, if it is a node of a cluster.
    pub fn internal_addr(&self) -> Option<SocketAddr> {
        self.node.as_ref().map(|node| node.internal_addr)
    }

    /// Where `/metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(addr, _)| *addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests panicked in their handler (answered INTERNAL); tests assert zero.
    pub fn handler_panics(&self) -> u64 {
        self.panics.count()
    }

    /// The history shards this server holds now.
    pub fn held_shards(&self) -> Vec<i32> {
        self.engine.held_shards()
    }

    /// How many polls wait on a task queue of that name right now (in any namespace), for
    /// tests that need a poll to be waiting before they act.
    pub fn waiting_polls(&self, task_queue: &str, kind: kairos_core::api::TaskKind) -> usize {
        self.matching.waiting_polls(task_queue, kind)
    }

    /// How many tasks are queued, no poll waiting for them, on a task queue of that name (in
    /// any namespace), for tests.
    pub fn queued_tasks(&self, task_queue: &str, kind: kairos_core::api::TaskKind) -> usize {
        self.matching.queued_tasks(task_queue, kind)
    }

    /// Stops accepting requests and waits for in-flight ones to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        // A node of a cluster leaves first: it stops routing to itself, removes its member
        // row (the others take its shards at their next heartbeat, not after the timeout),
        // hands its queued tasks to their new owners and gives up its shards. Requests still
        // arriving are forwarded to the new owners (retried there until they have taken over).
        if let Some(node) = &mut self.node {
            node.beating.abort();
            node.view.leave();
            if let Err(e) = self
                .store
                .remove_member(&node.me.name, node.me.session)
                .await
            {
                tracing::warn!(error = %e, "failed to leave the cluster's members; the others \
                    notice after the membership timeout");
            }
            for task in self.matching.drain_queues(|_, _| false) {
                node.tasks.add_task(task);
            }
            for shard in self.engine.held_shards() {
                self.engine.release_shard(shard);
            }
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(mut node) = self.node.take() {
            // Long polls forwarded through this node would hold the stop for up to a minute;
            // their workers poll again through another address once the port closes.
            if tokio::time::timeout(LEAVE_GRACE, &mut self.serving)
                .await
                .is_err()
            {
                self.serving.abort();
            }
            if let Some(tx) = node.leave.take() {
                let _ = tx.send(());
            }
            if tokio::time::timeout(LEAVE_GRACE, &mut node.serving_internal)
                .await
                .is_err()
            {
                node.serving_internal.abort();
            }
        } else {
            (&mut self.serving).await.context("server task failed")??;
        }
        // A clean stop leaves nothing for the next start to recover.
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %e, "failed to close the store cleanly; the next start recovers");
        }
        Ok(())
    }

    /// Waits until the server stops by itself (it only does on error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.serving).await.context("server task failed")??;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(node) = &mut self.node {
            node.beating.abort();
            if let Some(tx) = node.leave.take() {
                let _ = tx.send(());
            }
        }
        if let Some((_, task)) = &self.metrics {
            task.abort();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_db(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kairos-server-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("kairos.db")
    }

    /// Starts a server on `listen` whose database is opened by an `Opening` begun first.
    async fn start_opened(listen: SocketAddr, database: Database) -> anyhow::Result<Server> {
        let opening = Opening::begin(&database).expect("thread starts");
        Server::start(Config {
            listen,
            database,
            opening: Some(opening),
            ..Config::default()
        })
        .await
    }

    fn any_port() -> SocketAddr {
        "127.0.0.1:0".parse().expect("valid address")
    }

    #[tokio::test]
    async fn a_server_starts_on_a_database_opened_beforehand() {
        let path = scratch_db("opening");
        let server = start_opened(any_port(), Database::SqliteFile(path.clone()))
            .await
            .expect("server starts");
        assert!(path.exists(), "the opening created the file");
        assert_ne!(server.addr().port(), 0);
        server.shutdown().await.expect("clean stop");
        let _ = std::fs::remove_dir_all(path.parent().expect("has a parent"));
    }

    /// A socket bound before the start is the one served on, and a client that connected
    /// while the server was starting is answered.
    #[tokio::test]
    async fn a_server_serves_on_a_socket_bound_beforehand() {
        let listener = std::net::TcpListener::bind(any_port()).expect("bind");
        let addr = listener.local_addr().expect("address");
        let early = std::net::TcpStream::connect(addr).expect("queued in the backlog");
        let path = scratch_db("bound");
        let server = Server::start(Config {
            listen: addr,
            database: Database::SqliteFile(path.clone()),
            listener: Some(listener),
            ..Config::default()
        })
        .await
        .expect("server starts");
        assert_eq!(server.addr(), addr);
        // The early connection gets the server's HTTP/2 preface (a SETTINGS frame).
        let mut early = tokio::net::TcpStream::from_std({
            early.set_nonblocking(true).expect("nonblocking");
            early
        })
        .expect("tokio stream");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        early
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .expect("preface sent");
        let mut header = [0u8; 9];
        tokio::time::timeout(Duration::from_secs(10), early.read_exact(&mut header))
            .await
            .expect("answered in time")
            .expect("frame header");
        assert_eq!(header[3], 4, "a SETTINGS frame first: {header:?}");
        // Closed first: a graceful stop waits for open connections.
        drop(early);
        server.shutdown().await.expect("clean stop");
        let _ = std::fs::remove_dir_all(path.parent().expect("has a parent"));
    }

    #[tokio::test]
    async fn a_failed_open_on_its_thread_is_the_start_error() {
        // A path below a regular file cannot be created.
        let file = scratch_db("not-a-dir");
        std::fs::create_dir_all(file.parent().expect("has a parent")).expect("scratch dir");
        std::fs::write(&file, b"not a directory").expect("scratch file");
        let started = start_opened(any_port(), Database::SqliteFile(file.join("kairos.db"))).await;
        let error = format!("{:#}", started.err().expect("the start fails"));
        assert!(
            error.contains("failed to open the database"),
            "unexpected error: {error}"
        );
        let _ = std::fs::remove_dir_all(file.parent().expect("has a parent"));
    }

    #[tokio::test]
    async fn a_taken_port_leaves_the_new_file_whole_and_no_scratch_copy() {
        let taken = std::net::TcpListener::bind(any_port()).expect("bind a port");
        let path = scratch_db("taken-port");
        let started = start_opened(
            taken.local_addr().expect("address"),
            Database::SqliteFile(path.clone()),
        )
        .await;
        let error = format!("{:#}", started.err().expect("the start fails"));
        assert!(
            error.contains("failed to listen"),
            "unexpected error: {error}"
        );
        let dir = path.parent().expect("has a parent");
        let names: Vec<String> = std::fs::read_dir(dir)
            .expect("the opening made the directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.contains(".creating-")),
            "scratch copy left behind: {names:?}"
        );
        // The file the opening finished is a database that opens again.
        drop(SqliteStore::open(&Location::File(path.clone())).expect("the new file opens"));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Reads `path` from `addr` with one HTTP/1.1 request: (status line, body).
    async fn http(addr: SocketAddr, request: &str) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        stream.write_all(request.as_bytes()).await.expect("sent");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .expect("read to the close");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.lines().next().unwrap_or_default().to_string();
        (status, body.to_string())
    }

    #[tokio::test]
    async fn metrics_are_served_when_asked_for() {
        let path = scratch_db("metrics");
        let server = Server::start(Config {
            listen: any_port(),
            database: Database::SqliteFile(path.clone()),
            metrics: Some(any_port()),
            ..Config::default()
        })
        .await
        .expect("server starts");
        let at = server.metrics_addr().expect("metrics served");
        assert_ne!(at.port(), 0);
        let (status, body) = http(at, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        for name in [
            "kairos_store_commits_total",
            "kairos_store_syncs_total",
            "kairos_handler_panics_total",
        ] {
            let value = body
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing from {body}"));
            assert!(value.parse::<u64>().is_ok(), "{name} {value}");
            assert!(body.contains(&format!("# TYPE {name} counter")), "{body}");
        }
        let (status, _) = http(at, "GET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _) = http(at, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        server.shutdown().await.expect("clean stop");
        let _ = std::fs::remove_dir_all(path.parent().expect("has a parent"));
    }
}
