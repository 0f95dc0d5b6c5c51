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

    /// Starts the server.
    pub async fn start(self) -> anyhow::Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let clock = self.manual_clock.then(ManualClock::new);
        let clock_dyn: Arc<dyn Clock> = match &clock {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(SystemClock),
        };
        let mut namespaces = vec!["default".to_string()];
        namespaces.extend(self.namespaces);
        let server = Server::start(Config {
            listen: "127.0.0.1:0".parse().expect("valid address"),
            database: Database::SqliteFile(dir.path().join("kairos.db")),
            namespaces,
            options: self.options,
            clock: clock_dyn,
            opening: None,
            listener: None,
        })
        .await?;
        Ok(TestServer {
            server: Some(server),
            clock,
            _dir: dir,
        })
    }
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
