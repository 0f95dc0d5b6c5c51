//! The binary against what breaks servers: a second server on a database in use, a file a
//! crash left torn, start-up errors, and a compressed request that inflates to a gigabyte.
use std::io::Write;
use std::process::Command;
use std::time::Duration;

use crate::support::{Kairos, free_port};

fn start_dev(db: &std::path::Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kairos"));
    command
        .args([
            "server",
            "start-dev",
            "--port",
            &port.to_string(),
            "--db-filename",
        ])
        .arg(db)
        // A panic or an error must not print more than its one line even so.
        .env("RUST_BACKTRACE", "1");
    command
}

/// The lines of a failed start's stderr, which must be exactly one `Error: ...` line.
fn one_error_line(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "the start must fail");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected: {stderr}");
    assert!(lines[0].starts_with("Error: "), "{stderr}");
    lines[0].to_string()
}

#[test]
fn a_second_server_on_a_database_in_use_exits_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("shop.db");
    let first = Kairos::start_sqlite(&db, free_port());
    let started = std::time::Instant::now();
    let output = start_dev(&db, free_port()).output().expect("runs");
    let line = one_error_line(&output);
    assert!(line.contains(&db.display().to_string()), "{line}");
    assert!(
        line.contains(&format!("in use by process {}", first.pid())),
        "{line}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once"
    );
    // Once the first stops, the file is free again.
    drop(first);
    let second = Kairos::start_sqlite(&db, free_port());
    drop(second);
}

#[test]
fn start_up_errors_are_one_line_with_their_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A database under a regular file cannot be created.
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").expect("file");
    let line = one_error_line(
        &start_dev(&file.join("k.db"), free_port())
            .output()
            .expect("runs"),
    );
    assert!(line.contains("failed to open the database"), "{line}");
    assert!(
        line.contains("File exists") || line.contains("Not a directory"),
        "{line}"
    );
    // A taken port.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let line = one_error_line(
        &start_dev(&dir.path().join("k.db"), port)
            .output()
            .expect("runs"),
    );
    assert!(
        line.contains(&format!("failed to listen on 127.0.0.1:{port}")),
        "{line}"
    );
    assert!(
        line.contains("in use"),
        "the OS's cause is folded in: {line}"
    );
}

#[test]
fn the_warning_about_a_torn_file_reaches_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("torn.db");
    // A new file whose bytes never reached the disk: all zeros.
    std::fs::write(&db, vec![0u8; 8192]).expect("file");
    let mut child = start_dev(&db, free_port())
        .args(["--log-level", "warn"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("a line");
    assert!(first.contains("listening on"), "{first}");
    child.kill().expect("killed");
    let output = child.wait_with_output().expect("reaped");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("creating it again"),
        "the open's warning is logged: {stderr}"
    );
}

/// Peak resident memory of a process, from /proc.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// gzip of `len` zero bytes, made without holding them.
fn gzip_zeros(len: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..len / chunk.len() {
        encoder.write_all(&chunk).expect("in memory");
    }
    encoder.finish().expect("in memory")
}

#[tokio::test]
async fn a_compressed_request_inflating_to_a_gigabyte_is_refused_with_memory_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Kairos::start_sqlite(&dir.path().join("k.db"), free_port());
    let before = peak_rss_kib(server.pid());
    // Eight messages in one call, each 128 MiB of zeros gzipped to about 130 KiB: a gigabyte
    // once inflated.
    let member = gzip_zeros(128 << 20);
    let mut body = Vec::new();
    for _ in 0..8 {
        body.push(1u8);
        body.extend_from_slice(&(member.len() as u32).to_be_bytes());
        body.extend_from_slice(&member);
    }
    let sent = body.len();
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connects");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!(
            "{}/temporal.api.workflowservice.v1.WorkflowService/StartWorkflowExecution",
            server.url()
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
        .expect("request");
    let mut channel = channel;
    futures::future::poll_fn(|cx| tower_service::Service::poll_ready(&mut channel, cx))
        .await
        .expect("ready");
    let response = tower_service::Service::call(&mut channel, request)
        .await
        .expect("answered");
    // A refusal before any message is handled comes as headers only (gRPC's trailers-only).
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().expect("ascii").to_string());
    let message = response
        .headers()
        .get("grpc-message")
        .map(|v| v.to_str().expect("ascii").to_string())
        .unwrap_or_default();
    assert_eq!(
        status.as_deref(),
        Some("8"),
        "RESOURCE_EXHAUSTED expected ({message})"
    );
    let after = peak_rss_kib(server.pid());
    assert!(
        after < before + 64 * 1024,
        "{sent} bytes sent made the server's peak memory grow from {before} to {after} KiB"
    );
}
