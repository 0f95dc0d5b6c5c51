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

/// `--search-attribute NAME=TYPE` registers custom search attributes in every namespace the
/// server starts with (as `temporal server start-dev` does); a second start with the same flag
/// keeps them, and a conflicting type, a reserved name or an unknown type stops the start with
/// one line.
#[test]
fn search_attributes_given_at_start_are_registered_in_every_namespace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("k.db");
    let flags = [
        "--search-attribute",
        "CustomerId=Keyword",
        "--search-attribute",
        "Amount=int",
        "--namespace",
        "other",
    ];
    let list = |server: &Kairos, namespace: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["operator", "search-attribute", "list", "--address"])
            .arg(server.url().trim_start_matches("http://"))
            .args(["--namespace", namespace])
            .output()
            .expect("runs");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for round in 0..2 {
        // On the file the refusals below start on too, whatever KAIROS_TEST_DB_URL says.
        let server = Kairos::start_sqlite_with(&db, free_port(), &flags);
        for namespace in ["default", "other"] {
            let listed = list(&server, namespace);
            for (name, ty) in [("CustomerId", "Keyword"), ("Amount", "Int")] {
                assert!(
                    listed
                        .lines()
                        .any(|l| l.split_whitespace().collect::<Vec<_>>() == [name, ty]),
                    "round {round}, {namespace}: {name} {ty} missing from\n{listed}"
                );
            }
        }
    }
    for (flag, expected) in [
        (
            "CustomerId=Int",
            "search attribute CustomerId already exists with type Keyword, not Int",
        ),
        (
            "WorkflowId=Keyword",
            "search attribute WorkflowId is reserved by system",
        ),
        ("Foo=Money", "unknown search attribute type"),
        ("Foo", "expected NAME=TYPE"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
            .args(["server", "start-dev", "--port", &free_port().to_string()])
            .arg("--db-filename")
            .arg(&db)
            .args(["--search-attribute", flag])
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{flag} must stop the start");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{flag}: {stderr}");
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "{flag}: one line: {stderr}"
        );
    }
}
