//! Smoke test of the load generator: a few workflows against an in-process Kairos, JSON report
//! checked. Keeps the benchmark working; it measures nothing.
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_run_completes_and_reports() -> anyhow::Result<()> {
    let server = kairos_testing::TestServer::start().await?;
    let address = server.target();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kairos-bench"))
            .args([
                "--address",
                &address,
                "--workflows",
                "6",
                "--concurrency",
                "3",
                "--activities",
                "2",
                "--timers",
                "1",
                "--payload-bytes",
                "100",
                "--server-pid",
                &std::process::id().to_string(),
                "--json",
                "--quiet",
            ])
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kairos-bench failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim())?;
    assert_eq!(report["completed"], 6, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert!(
        report["latency_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    assert!(
        report["workflows_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    assert!(
        report["server"]["rss_peak_mib"].as_f64().unwrap_or(0.0) > 0.0,
        "{report}"
    );
    // Its own CPU is read from /proc too (NaN, written as null, if it could not be).
    assert!(
        report["load_generator"]["cpu_s"].as_f64().is_some(),
        "{report}"
    );
    server.shutdown().await
}
