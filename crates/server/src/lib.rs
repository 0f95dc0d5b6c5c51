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
use kairos_persistence::sqlite::{Location, SqliteStore};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Where the server keeps its data.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file (created if missing).
    SqliteFile(PathBuf),
    /// A SQLite database in memory, gone at exit.
    SqliteMemory,
}

/// Everything needed to start a server.
pub struct Config {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The database.
    pub database: Database,
    /// Namespaces to create at start if missing.
    pub namespaces: Vec<String>,
    /// Timing knobs and limits.
    pub options: ServerOptions,
    /// The clock (a manual one in tests).
    pub clock: Arc<dyn Clock>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7233)),
            database: Database::SqliteMemory,
            namespaces: vec!["default".to_string()],
            options: ServerOptions::default(),
            clock: Arc::new(SystemClock),
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
}

impl Server {
    /// Opens the store, starts every role and begins serving. Returns once the port accepts
    /// connections.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        // Bound first: a taken port fails before anything else, and clients that connect while
        // the store opens wait in the accept backlog (a few ms) instead of being refused and
        // backing off.
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("failed to listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let location = match &config.database {
            Database::SqliteFile(path) => Location::File(path.clone()),
            Database::SqliteMemory => Location::Memory,
        };
        // Opened on this thread, blocking it for the 1-3 ms the open takes, before anything is
        // served: handing the open to the blocking pool cost a thread start and a wake-up,
        // 0.3 ms of every start.
        let sqlite = Arc::new(SqliteStore::open(&location).context("failed to open the database")?);
        let store: Arc<dyn Store> = sqlite.clone();
        let checkpoint_store = store.clone();
        let namespaces = Namespaces::load(store.clone()).await?;
        let matching = kairos_matching::Handle::new(kairos_matching::Options {
            long_poll_timeout: config.options.long_poll_timeout,
            poller_idle: config.options.sticky_poller_idle,
        });
        // The configured namespaces are created while the engine loads its tasks (neither
        // needs the other; their writes take turns on the one connection).
        let created = async {
            for name in &config.namespaces {
                namespaces
                    .create_at_start(name, config.options.default_retention)
                    .await
                    .with_context(|| format!("failed to create namespace {name}"))?;
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
                continue_as_new_min_interval: config.options.continue_as_new_min_interval,
            },
            namespaces.clone(),
            Arc::new(matching.clone()),
        );
        let (engine, created) = tokio::join!(engine, created);
        created?;
        let engine = engine?;
        // The start-up reads and writes ran on this thread; from here on the writer thread
        // takes them.
        sqlite
            .start_writer()
            .context("failed to start the database writer")?;
        let services = kairos_frontend::services(engine, matching.clone(), config.options.clone());
        let (tx, rx) = oneshot::channel::<()>();
        // No Nagle: replies are small and latency-bound; delayed ACKs would add ~40 ms per call.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let serving = tokio::spawn(
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .layer(kairos_frontend::InflateLayer)
                .add_service(services.workflow)
                .add_service(services.operator)
                .add_service(services.health)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                }),
        );
        Ok(Server {
            addr,
            shutdown: Some(tx),
            serving,
            store: checkpoint_store,
            matching,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.serving).await.context("server task failed")??;
        // A clean stop leaves nothing for the next start to recover.
        if let Err(e) = self.store.checkpoint().await {
            tracing::warn!(error = %e, "checkpoint at shutdown failed; the next start recovers the log");
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
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
