//! Helpers for tests that run the real `kairos` binary: start it on a free port, connect.
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};

pub(crate) struct Kairos {
    child: Child,
    port: u16,
}

impl Kairos {
    /// Starts the binary and waits for its "listening" line.
    pub(crate) fn start(db: &Path, port: u16) -> Kairos {
        Self::start_with(db, port, &[])
    }

    /// Starts the binary with extra flags and waits for its "listening" line.
    pub(crate) fn start_with(db: &Path, port: u16, extra: &[&str]) -> Kairos {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args([
                "server",
                "start-dev",
                "--port",
                &port.to_string(),
                "--db-filename",
            ])
            .arg(db)
            .args(["--log-level", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kairos binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("a line").expect("readable");
        assert!(
            first.contains("listening on"),
            "unexpected first line: {first}"
        );
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Kairos { child, port }
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
}

impl Drop for Kairos {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
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
