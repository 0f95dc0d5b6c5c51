//! `kairos-testing`: an in-process Kairos server for tests, yours and ours. It listens on a free
//! port of 127.0.0.1 with its own temporary SQLite file, starts in milliseconds, needs no
//! download, and can run on a manual clock so tests can skip time.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let server = kairos_testing::TestServer::start().await?;
//! // Point an SDK client at `server.url()` ("http://127.0.0.1:PORT"), namespace "default".
//! # Ok(()) }
//! ```
use std::sync::Arc;
use std::time::Duration;

#[doc(hidden)]
pub mod decoders;

use kairos_core::{Clock, ManualClock, ServerOptions, SystemClock};
use kairos_server::{Config, Database, Server};

/// A running test server. Dropping it stops the server and removes its database. A request
/// handler that panicked (answered INTERNAL) fails the test: `shutdown` returns an error and
/// dropping the server panics, unless the test is already failing.
pub struct TestServer {
    server: Option<Server>,
    clock: Option<ManualClock>,
    _dir: tempfile::TempDir,
}

/// Options for a [`TestServer`].
#[derive(Default)]
pub struct Builder {
    manual_clock: bool,
    options: ServerOptions,
    namespaces: Vec<String>,
    postgres: Option<String>,
}

impl Builder {
    /// Runs the server on a [`ManualClock`], advanced with [`TestServer::advance`].
    pub fn manual_clock(mut self) -> Self {
        self.manual_clock = true;
        self
    }

    /// Shortens task-queue long polls (default 60 s).
    pub fn long_poll_timeout(mut self, timeout: Duration) -> Self {
        self.options.long_poll_timeout = timeout;
        self
    }

    /// Creates another namespace at start (`default` always exists).
    pub fn namespace(mut self, name: &str) -> Self {
        self.namespaces.push(name.to_string());
        self
    }

    /// Replaces the server options.
    pub fn options(mut self, options: ServerOptions) -> Self {
        self.options = options;
        self
    }

    /// Keeps the data in the PostgreSQL database at `url` (with its `schema` parameter, if
    /// any), whatever `KAIROS_TEST_DB_URL` says: for tests of PostgreSQL itself, or of several
    /// servers on one database.
    pub fn postgres(mut self, url: &str) -> Self {
        self.postgres = Some(url.to_string());
        self
    }

    /// Starts the server: on a SQLite file of its own, or, when `KAIROS_TEST_DB_URL` names a
    /// PostgreSQL database, in a schema of its own there (schemas of finished test processes
    /// are dropped as the first server of a process starts).
    pub async fn start(self) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let database = match (self.postgres, std::env::var("KAIROS_TEST_DB_URL")) {
            (Some(url), _) => Database::Postgres(url),
            (None, Ok(url)) if !url.is_empty() => Database::Postgres(test_schema_url(&url).await?),
            _ => Database::SqliteFile(dir.path().join("kairos.db")),
        };
        let clock = self.manual_clock.then(ManualClock::new);
        let clock_dyn: Arc<dyn Clock> = match &clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let mut namespaces = vec!["default".to_string()];
        namespaces.extend(self.namespaces);
        let server = Server::start(Config {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            database,
            namespaces,
            options: self.options,
            clock: clock_dyn,
            ..Config::default()
        })
        .await?;
        Ok(TestServer {
            server: Some(server),
            clock,
            _dir: dir,
        })
    }
}

/// Prefixes of the schemas test runs make (`PREFIX{pid}_...`): the store conformance suite's,
/// `TestServer`'s, the CLI tests' and the Python tests'.
const TEST_SCHEMA_PREFIXES: [&str; 4] =
    ["kairos_test_", "kairos_e2e_", "kairos_cli_", "kairos_py_"];

/// `url` with a schema for one more server of this process; the first call drops the schemas
/// test processes that have ended left behind.
pub async fn test_schema_url(url: &str) -> anyhow::Result<String> {
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let schema = format!("kairos_e2e_{}_{n}", std::process::id());
    let separator = if url.contains('?') { '&' } else { '?' };
    let with_schema = format!("{url}{separator}schema={schema}");
    CLEANED
        .get_or_try_init(|| async { drop_finished_test_schemas(&with_schema).await })
        .await?;
    Ok(with_schema)
}

/// Drops the schemas of test processes that have ended, in the database at `url`.
pub async fn drop_finished_test_schemas(url: &str) -> anyhow::Result<()> {
    let options = kairos_persistence_postgres::Options::parse(url)?;
    let store = kairos_persistence_postgres::PostgresStore::connect(options)?;
    for prefix in TEST_SCHEMA_PREFIXES {
        store.drop_schemas_of_finished_tests(prefix).await?;
    }
    Ok(())
}

impl TestServer {
    /// Starts a server with default options on the real clock.
    pub async fn start() -> anyhow::Result<TestServer> {
        Builder::default().start().await
    }

    /// Options for a server.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// `host:port` of the frontend.
    pub fn target(&self) -> String {
        self.server.as_ref().expect("running").addr().to_string()
    }

    /// `http://host:port`, as SDK connection options want it.
    pub fn url(&self) -> String {
        format!("http://{}", self.target())
    }

    /// The history shards the server holds now.
    pub fn held_shards(&self) -> Vec<i32> {
        self.server.as_ref().expect("running").held_shards()
    }

    /// How many polls wait on the task queue right now.
    pub fn waiting_polls(&self, task_queue: &str, kind: kairos_core::api::TaskKind) -> usize {
        self.server
            .as_ref()
            .expect("running")
            .waiting_polls(task_queue, kind)
    }

    /// How many tasks are queued on the task queue with no poll waiting for them.
    pub fn queued_tasks(&self, task_queue: &str, kind: kairos_core::api::TaskKind) -> usize {
        self.server
            .as_ref()
            .expect("running")
            .queued_tasks(task_queue, kind)
    }

    /// Moves the manual clock forward (panics if the server runs on the real clock).
    pub fn advance(&self, by: Duration) {
        self.clock
            .as_ref()
            .expect("started with manual_clock()")
            .advance(by);
    }

    /// How many requests panicked in their handler so far.
    pub fn handler_panics(&self) -> u64 {
        self.server.as_ref().map_or(0, Server::handler_panics)
    }

    /// Stops the server gracefully.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let panics = self.handler_panics();
        let stopped = match self.server.take() {
            Some(server) => server.shutdown().await,
            None => Ok(()),
        };
        anyhow::ensure!(
            panics == 0,
            "{panics} request(s) panicked in the server (see the log above)"
        );
        stopped
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let panics = self.handler_panics();
        if panics > 0 && !std::thread::panicking() {
            panic!("{panics} request(s) panicked in the server (see the log above)");
        }
    }
}
