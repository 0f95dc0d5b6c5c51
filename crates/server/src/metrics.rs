//! `/metrics`: the server's counters in the Prometheus text format, on a port of their own
//! (`--metrics-port`). A few counters read when scraped, no metrics library: the store's commits
//! and syncs (what the benchmark reports per workflow) and the handler panics.
use std::sync::Arc;

use kairos_persistence::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What `/metrics` reads from.
#[derive(Clone)]
pub(crate) struct Sources {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) panics: kairos_frontend::CatchPanicLayer,
    pub(crate) engine: kairos_history::Engine,
    /// The live members this node sees, in a cluster.
    pub(crate) cluster: Option<Arc<kairos_frontend::cluster::Cluster>>,
}

/// The page `/metrics` answers.
pub(crate) fn render(sources: &Sources) -> String {
    let store = sources.store.counters();
    let mut page = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        page.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
        ));
    };
    counter(
        "kairos_store_commits_total",
        "Transactions the store committed that carried transitions.",
        store.commits,
    );
    counter(
        "kairos_store_syncs_total",
        "Waits for stable storage: syncs of the write-ahead log, or commits that waited for the database's log flush.",
        store.syncs,
    );
    counter(
        "kairos_handler_panics_total",
        "Requests whose handler panicked (answered INTERNAL).",
        sources.panics.count(),
    );
    let mut gauge = |name: &str, help: &str, value: usize| {
        page.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    };
    gauge(
        "kairos_shards_held",
        "History shards this node holds now.",
        sources.engine.held_shards().len(),
    );
    if let Some(cluster) = &sources.cluster {
        gauge(
            "kairos_cluster_members",
            "Live members of the cluster as this node last saw them (itself included).",
            cluster.members().len(),
        );
    }
    page
}

/// Serves `/metrics` on `listener` until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, sources: Sources) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors, say: try again shortly rather than spin.
                tracing::warn!(%error, "failed to accept a metrics connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let sources = sources.clone();
        tokio::spawn(async move {
            let answered =
                tokio::time::timeout(std::time::Duration::from_secs(10), answer(stream, &sources));
            match answered.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "a metrics request failed"),
                Err(_) => tracing::debug!("a metrics request took too long; closed"),
            }
        });
    }
}

/// Reads one HTTP/1.1 request head (at most 8 KiB) and answers it, closing the connection.
async fn answer(mut stream: TcpStream, sources: &Sources) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            return stream
                .write_all(response("431 Request Header Fields Too Large", "").as_bytes())
                .await;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let page = match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => response("200 OK", &render(sources)),
        (Some(b"GET"), _) => response("404 Not Found", "not found: the page is /metrics\n"),
        _ => response("405 Method Not Allowed", ""),
    };
    stream.write_all(page.as_bytes()).await?;
    stream.shutdown().await
}

fn response(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}
