//! Helpers for tests that run the real `kairos` binary: start it on a free port, connect.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};

pub(crate) struct Kairos {
    child: Child,
    port: u16,
    /// Every line it wrote to stderr so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Kairos {
    /// Starts the binary and waits for its "listening" line. Its data is the SQLite file `db`,
    /// or, when `KAIROS_TEST_DB_URL` names a PostgreSQL database, a schema there named after
    /// `db` (so a restart on the same `db` finds the same data).
    pub(crate) fn start(db: &Path, port: u16) -> Kairos {
        Self::start_with(db, port, &[])
    }

    /// [`Kairos::start`] with extra flags.
    pub(crate) fn start_with(db: &Path, port: u16, extra: &[&str]) -> Kairos {
        let store = match std::env::var("KAIROS_TEST_DB_URL") {
            Ok(url) if !url.is_empty() => vec!["--db-url".to_string(), schema_url(&url, db)],
            _ => vec!["--db-filename".to_string(), db.display().to_string()],
        };
        Self::start_on(&store, port, extra)
    }

    /// Starts the binary on a SQLite file, whatever `KAIROS_TEST_DB_URL` says: for tests of the
    /// file itself.
    pub(crate) fn start_sqlite(db: &Path, port: u16) -> Kairos {
        Self::start_sqlite_with(db, port, &[])
    }

    /// [`Kairos::start_sqlite`] with extra environment variables.
    pub(crate) fn start_sqlite_env(db: &Path, port: u16, env: &[(&str, &str)]) -> Kairos {
        let store = ["--db-filename".to_string(), db.display().to_string()];
        Self::spawn("start-dev", port, &store, &[], env)
    }

    /// [`Kairos::start_sqlite`] with extra flags.
    pub(crate) fn start_sqlite_with(db: &Path, port: u16, extra: &[&str]) -> Kairos {
        let store = ["--db-filename".to_string(), db.display().to_string()];
        Self::start_on(&store, port, extra)
    }

    /// Starts one node of a cluster (`kairos server start`) with `args` after its port.
    pub(crate) fn start_node(port: u16, args: &[String]) -> Kairos {
        Self::spawn("start", port, args, &[], &[])
    }

    /// [`Kairos::start_node`] with extra environment variables.
    pub(crate) fn start_node_env(port: u16, args: &[String], env: &[(&str, &str)]) -> Kairos {
        Self::spawn("start", port, args, &[], env)
    }

    fn start_on(store: &[String], port: u16, extra: &[&str]) -> Kairos {
        Self::spawn("start-dev", port, store, extra, &[])
    }

    fn spawn(
        command: &str,
        port: u16,
        store: &[String],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Kairos {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["server", command, "--port", &port.to_string()])
            .args(["--log-level", "warn"])
            .args(store)
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kairos binary starts");
        // Its log, each line marked with the node's name (or port), so that the logs of the
        // processes of one test can be told apart.
        let tag = store
            .iter()
            .position(|a| a == "--node-name")
            .and_then(|i| store.get(i + 1))
            .cloned()
            .unwrap_or_else(|| port.to_string());
        let stderr = child.stderr.take().expect("piped stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                kept.lock().expect("log lock").push(line);
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("readable");
        assert!(
            first.contains("listening on"),
            "unexpected first line: {first}"
        );
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Kairos { child, port, log }
    }

    /// Whether a line of its log so far contains `text`.
    pub(crate) fn log_contains(&self, text: &str) -> bool {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .any(|line| line.contains(text))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn kill9(mut self) {
        self.child.kill().expect("SIGKILL delivered");
        self.child.wait().expect("reaped");
    }

    /// Stops the process with SIGTERM (a graceful stop) and waits for it to exit; panics if it
    /// is still running after `within`.
    pub(crate) fn terminate(mut self, within: Duration) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIGTERM delivered");
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.child.try_wait().expect("waitable") {
                assert!(exit.success(), "a graceful stop exits cleanly: {exit}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "still running {within:?} after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Kairos {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `url` with a schema of its own for the data `db` names: the test process and a hash of the
/// path, so a restart on the same `db` finds it and other tests never do.
fn schema_url(url: &str, db: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    db.hash(&mut hasher);
    let schema = format!("kairos_cli_{}_{:x}", std::process::id(), hasher.finish());
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}schema={schema}")
}

/// A port free now and never handed out before in this process: a node restarted on its port
/// (the rolling restart) must not find it taken by another test of the same run, which the
/// operating system would otherwise give the port to while the node is down.
pub(crate) fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let mut given = GIVEN.lock().expect("ports lock");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub(crate) async fn connect(url: &str) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let options = ConnectionOptions::new(Url::parse(url)?)
            .identity("crash-test")
            .build();
        match Connection::connect(options).await {
            Ok(connection) => {
                return Ok(Client::new(
                    connection,
                    ClientOptions::new("default").build(),
                )?);
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
