//! Reads a server's Prometheus `/metrics` page (Kairos with `--metrics-port`): the store's
//! commits and syncs, so the report can give them per workflow. A server without those counters
//! (the reference) reports none.
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The store counters a metrics page holds: (commits, syncs).
pub async fn store_counters(address: &str) -> Option<(f64, f64)> {
    let page = get(address).await.ok()?;
    let value = |name: &str| {
        page.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    Some((
        value("kairos_store_commits_total")?,
        value("kairos_store_syncs_total")?,
    ))
}

async fn get(address: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}
