//! Kairos on PostgreSQL (the URL in `KAIROS_TEST_POSTGRES_URL`; without it each test is
//! skipped, saying so): the database drops every connection of the server mid-workload
//! (`pg_terminate_backend`, three times) and the server recovers with nothing lost; and two
//! servers on one database, where the one whose shard leases moved on cannot commit.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kairos_testing::TestServer;
use std::sync::Mutex;
use temporalio_client::{
    UntypedWorkflow, WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowSignalOptions,
    WorkflowStartOptions,
};
use temporalio_common::data_converters::{PayloadConverter, RawValue};
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, Worker, WorkflowContext, WorkflowResult};

use crate::support::{connect, run_with_worker, runtime, unique, within};
use crate::worker_options;

/// The PostgreSQL to test against, or `None` (the caller skips, having said why).
fn postgres_url() -> Option<String> {
    match std::env::var("KAIROS_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: KAIROS_TEST_POSTGRES_URL is not set (no PostgreSQL to test against)"
            );
            None
        }
    }
}

/// How many times each (workflow id, step) activity ran.
#[derive(Default, Clone)]
struct Steps {
    ran: Arc<Mutex<HashMap<(String, u32), u32>>>,
}

#[activities]
impl Steps {
    #[activity(name = "pg_step")]
    async fn step(self: Arc<Self>, ctx: ActivityContext, step: u32) -> Result<u32, ActivityError> {
        let workflow_id = ctx.info().workflow_id.clone().unwrap_or_default();
        *self
            .ran
            .lock()
            .expect("not poisoned")
            .entry((workflow_id, step))
            .or_default() += 1;
        Ok(step)
    }
}

#[workflow]
#[derive(Default)]
struct StepsWorkflow;

#[workflow_methods]
impl StepsWorkflow {
    /// Runs `count` activities one after the other, with a short timer in the middle.
    #[run(name = "pg_steps")]
    async fn run(ctx: &mut WorkflowContext<Self>, count: u32) -> WorkflowResult<u32> {
        for step in 0..count {
            let opts = ActivityOptions::start_to_close_timeout(Duration::from_secs(20));
            ctx.execute_activity(Steps::step, step, opts).await?;
            if step == count / 2 {
                ctx.timer(Duration::from_millis(100)).await;
            }
        }
        Ok(count)
    }
}

/// Ends every connection the server with `application` holds, from a connection of our own;
/// how many it ended.
async fn terminate_backends(url: &str, application: &str) -> anyhow::Result<i64> {
    let options = kairos_persistence_postgres::Options::parse(url)?;
    let store = kairos_persistence_postgres::PostgresStore::connect(options)?;
    Ok(store.terminate_connections_of(application).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_are_replaced_and_nothing_is_lost() -> anyhow::Result<()> {
    let Some(url) = postgres_url() else {
        return Ok(());
    };
    let application = format!("kairos_terminate_{}", std::process::id());
    let with_schema = kairos_testing::test_schema_url(&url).await?;
    let server = TestServer::builder()
        .postgres(&format!("{with_schema}&application_name={application}"))
        .start()
        .await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("pg-terminate");
    let steps = Steps::default();
    let options = worker_options!(&tq)
        .register_activities(steps.clone())
        .register_workflow::<StepsWorkflow>()?
        .build();
    let mut worker = Worker::new(&rt, client.clone(), options)?;
    const WORKFLOWS: usize = 20;
    const STEPS: u32 = 6;
    let pc = PayloadConverter::default();
    let outcome = run_with_worker(&mut worker, async {
        let mut handles = Vec::new();
        for _ in 0..WORKFLOWS {
            let id = unique("pg-steps");
            handles.push(
                client
                    .start_workflow(
                        UntypedWorkflow::new("pg_steps"),
                        RawValue::from_value(&STEPS, &pc),
                        WorkflowStartOptions::new(&tq, id).build(),
                    )
                    .await?,
            );
        }
        // Three times, once some work is done, the database ends every server connection.
        let mut ended = 0;
        for round in 1..=3 {
            let want = round * WORKFLOWS * STEPS as usize / 4;
            within(60, async {
                while steps.ran.lock().expect("not poisoned").len() < want {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await?;
            ended += terminate_backends(&url, &application).await?;
        }
        assert!(ended > 0, "the server held connections to end");
        for handle in &handles {
            let result: u32 = within(90, handle.get_result(WorkflowGetResultOptions::default()))
                .await??
                .to_value(&pc);
            assert_eq!(result, STEPS);
            let events = handle
                .fetch_history(WorkflowFetchHistoryOptions::default())
                .into_events()
                .await?;
            for (n, event) in events.iter().enumerate() {
                assert_eq!(event.event_id, n as i64 + 1, "event ids are contiguous");
            }
            let completed = events
                .iter()
                .filter(|e| e.event_type() == EventType::ActivityTaskCompleted)
                .count();
            assert_eq!(completed, STEPS as usize, "each activity completed once");
        }
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    outcome?;
    assert_eq!(
        steps.ran.lock().expect("not poisoned").len(),
        WORKFLOWS * STEPS as usize,
        "every step ran"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_leases_moved_on_cannot_commit() -> anyhow::Result<()> {
    let Some(url) = postgres_url() else {
        return Ok(());
    };
    let shared = kairos_testing::test_schema_url(&url).await?;
    let options = kairos_core::config::ServerOptions {
        shard_renew_interval: Duration::from_millis(100),
        ..Default::default()
    };
    let first = TestServer::builder()
        .postgres(&shared)
        .options(options.clone())
        .start()
        .await?;
    let first_client = connect(&first).await?;
    assert_eq!(first.held_shards(), [0, 1, 2, 3]);
    let id = unique("pg-fenced");
    let handle = first_client
        .start_workflow(
            UntypedWorkflow::new("nobody-runs-this"),
            RawValue::from_value(&(), &PayloadConverter::default()),
            WorkflowStartOptions::new("pg-fenced-tq", id.clone()).build(),
        )
        .await?;
    // A second server on the same database takes every shard's lease.
    let second = TestServer::builder()
        .postgres(&shared)
        .options(options)
        .start()
        .await?;
    let second_client = connect(&second).await?;
    assert_eq!(second.held_shards(), [0, 1, 2, 3]);
    // The first learns it from its lease renewals, with nothing to commit, and gives them up.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !first.held_shards().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first server still holds {:?}",
            first.held_shards()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = first_client
        .get_workflow_handle::<UntypedWorkflow>(id.clone())
        .signal(
            temporalio_client::UntypedSignal::new("from-the-old-owner"),
            RawValue::empty(),
            WorkflowSignalOptions::default(),
        )
        .await;
    assert!(
        refused.is_err(),
        "the server whose leases moved on committed a signal"
    );
    second_client
        .get_workflow_handle::<UntypedWorkflow>(id.clone())
        .signal(
            temporalio_client::UntypedSignal::new("from-the-new-owner"),
            RawValue::empty(),
            WorkflowSignalOptions::default(),
        )
        .await?;
    let events = second_client
        .get_workflow_handle::<UntypedWorkflow>(id)
        .fetch_history(WorkflowFetchHistoryOptions::default())
        .into_events()
        .await?;
    let signals: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(temporalio_common::protos::temporal::api::history::v1::history_event::Attributes::WorkflowExecutionSignaledEventAttributes(a)) => Some(a.signal_name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(signals, ["from-the-new-owner"]);
    drop(handle);
    second.shutdown().await?;
    first.shutdown().await?;
    Ok(())
}
