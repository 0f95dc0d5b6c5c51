//! Shared helpers: connect a client, run a worker while a test body runs.
use std::future::Future;
use std::time::Duration;

use kairos_testing::TestServer;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker};

pub async fn connect(server: &TestServer) -> anyhow::Result<Client> {
    let options = ConnectionOptions::new(Url::parse(&server.url())?)
        .identity("kairos-e2e-client")
        .connect_timeout(Duration::from_secs(5))
        .build();
    let connection = Connection::connect(options).await?;
    Ok(Client::new(
        connection,
        ClientOptions::new("default").build(),
    )?)
}

pub fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .heartbeat_interval(None)
            .build()
            .map_err(anyhow::Error::msg)?,
    )?)
}

/// Worker options every test shares, as a starting builder.
#[macro_export]
macro_rules! worker_options {
    ($tq:expr) => {
        temporalio_sdk::WorkerOptions::new($tq)
            .deployment_options(
                temporalio_common::worker::WorkerDeploymentOptions::from_build_id(
                    "kairos-e2e".to_owned(),
                ),
            )
            .client_identity_override("kairos-e2e-worker")
            .graceful_shutdown_period(std::time::Duration::from_secs(2))
    };
}

/// Runs `body` while `worker` polls, then shuts the worker down.
pub async fn run_with_worker<T>(
    worker: &mut Worker,
    body: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let shutdown = worker.shutdown_handle();
    let run = worker.run();
    tokio::pin!(run);
    tokio::pin!(body);
    tokio::select! {
        res = &mut body => {
            shutdown();
            run.await?;
            res
        }
        res = &mut run => {
            res?;
            anyhow::bail!("worker exited before the test body finished")
        }
    }
}

/// A unique name for ids and queues.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Awaits a future with a deadline, so a broken server fails the test instead of hanging it.
pub async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {secs}s"))
}
