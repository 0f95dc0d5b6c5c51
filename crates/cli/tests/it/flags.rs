//! Start-up flags of `kairos server start-dev` that change behaviour a client can see.
use temporalio_client::errors::WorkflowStartError;
use temporalio_client::{UntypedWorkflow, WorkflowStartOptions};
use temporalio_common::data_converters::RawValue;

use crate::support::{Kairos, connect, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_config_sets_limits_and_ignores_other_keys() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let server = Kairos::start_with(
        &dir.path().join("k.db"),
        free_port(),
        &[
            "--dynamic-config-value",
            "limit.maxIDLength=40",
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
        ],
    );
    let client = connect(&server.url()).await?;
    let start = |id: &str| {
        client.start_workflow(
            UntypedWorkflow::new("wf"),
            RawValue::new(vec![]),
            WorkflowStartOptions::new("tq", id).build(),
        )
    };
    start("short-id").await?;
    match start("an-id-that-is-clearly-longer-than-forty-bytes").await {
        Err(WorkflowStartError::Rpc(status)) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}")
        }
        other => panic!("expected INVALID_ARGUMENT, got {:?}", other.map(|_| ())),
    }
    Ok(())
}

#[test]
fn a_malformed_dynamic_config_value_stops_the_start_with_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (kv, expected) in [
        (
            "system.enableActivityEagerExecution=yes",
            "system.enableActivityEagerExecution needs true or false",
        ),
        (
            "history.cacheMaxSize=0",
            "history.cacheMaxSize needs a positive integer",
        ),
        (
            "history.continueAsNewMinInterval=soon",
            "history.continueAsNewMinInterval needs a duration",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["server", "start-dev", "--port", &free_port().to_string()])
            .arg("--db-filename")
            .arg(dir.path().join("k.db"))
            .args(["--dynamic-config-value", kv])
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{kv} must stop the start");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{kv}: {stderr}");
    }
}

/// A taken port stops the start with the address in the error, before the database file is
/// created.
#[test]
fn a_taken_port_stops_the_start_before_the_database_is_made() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let db = dir.path().join("k.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["server", "start-dev", "--port", &port.to_string()])
        .arg("--db-filename")
        .arg(&db)
        .output()
        .expect("runs");
    assert!(!out.status.success(), "a taken port must stop the start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("failed to listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(!db.exists(), "no database is made when the port is taken");
}
