//! Crash tests: the server is SIGKILLed mid-workflow and restarted on the same SQLite file. Every
//! workflow still finishes, and no history event is lost or duplicated. (A worker process killed
//! mid-activity is tested from Python: tests/python/test_worker_crash.py.)
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Kairos, connect, free_port};
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowFetchHistoryOptions, WorkflowGetResultOptions,
    WorkflowStartOptions,
};
use temporalio_common::data_converters::{PayloadConverter, RawValue};
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, Runtime, Worker, WorkerOptions, WorkflowContext, WorkflowResult,
};

#[derive(Clone, Default)]
struct Steps {
    calls: Arc<AtomicU32>,
}

#[activities]
impl Steps {
    #[activity(name = "step")]
    async fn step(self: Arc<Self>, _ctx: ActivityContext, n: u32) -> Result<u32, ActivityError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(n * 10)
    }
}

#[workflow]
#[derive(Default)]
struct Order;

#[workflow_methods]
impl Order {
    /// Five steps, each an activity followed by a short durable timer.
    #[run(name = "order")]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        let mut total = 0;
        for n in 1..=5u32 {
            total += ctx
                .execute_activity(
                    Steps::step,
                    n,
                    ActivityOptions::start_to_close_timeout(Duration::from_secs(10)),
                )
                .await?;
            ctx.timer(Duration::from_millis(200)).await;
        }
        Ok(total)
    }
}

fn worker(rt: &Runtime, client: &Client, tq: &str, steps: Steps) -> anyhow::Result<Worker> {
    let options = WorkerOptions::new(tq)
        .deployment_options(
            temporalio_common::worker::WorkerDeploymentOptions::from_build_id("crash".to_owned()),
        )
        .graceful_shutdown_period(Duration::from_secs(1))
        .register_activities(steps)
        .register_workflow::<Order>()?
        .build();
    Ok(Worker::new(rt, client.clone(), options)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sigkill_mid_workflow_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("kairos.db");
    let port = free_port();
    let server = Kairos::start(&db, port);
    let client = connect(&server.url()).await?;
    let tq = format!("crash-{}", uuid::Uuid::new_v4());
    let ids: Vec<String> = (0..5)
        .map(|i| format!("order-{i}-{}", uuid::Uuid::new_v4()))
        .collect();
    for id in &ids {
        client
            .start_workflow(
                UntypedWorkflow::new("order"),
                RawValue::new(vec![]),
                WorkflowStartOptions::new(tq.as_str(), id.as_str()).build(),
            )
            .await?;
    }
    let rt = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .heartbeat_interval(None)
            .build()
            .map_err(anyhow::Error::msg)?,
    )?;
    let steps = Steps::default();

    // First worker runs until some activities have run, then the server dies under it.
    let mut w = worker(&rt, &client, &tq, steps.clone())?;
    let shutdown = w.shutdown_handle();
    let calls = steps.calls.clone();
    let mut server = Some(server);
    let killer = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while calls.load(Ordering::SeqCst) < 6 {
            anyhow::ensure!(Instant::now() < deadline, "workflows made no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.take().expect("running").kill9();
        shutdown();
        anyhow::Ok(())
    };
    let (run, killed) = tokio::join!(w.run(), killer);
    killed?;
    let _ = run; // the worker may report the lost connection; that is the point
    drop(w);

    // Restart on the same file; a fresh worker and client finish every workflow.
    let server = Kairos::start(&db, port);
    let client = connect(&server.url()).await?;
    let mut w = worker(&rt, &client, &tq, steps.clone())?;
    let shutdown = w.shutdown_handle();
    let checks = async {
        let pc = PayloadConverter::default();
        for id in &ids {
            let handle = client.get_workflow_handle::<UntypedWorkflow>(id.as_str());
            let result = tokio::time::timeout(
                Duration::from_secs(60),
                handle.get_result(WorkflowGetResultOptions::default()),
            )
            .await??;
            let total: u32 = result.to_value(&pc);
            assert_eq!(total, 150, "workflow {id} computed every step once");
            let events = handle
                .fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?;
            for (i, e) in events.iter().enumerate() {
                assert_eq!(
                    e.event_id,
                    i as i64 + 1,
                    "{id}: event ids contiguous, none lost or repeated"
                );
            }
            let scheduled = events
                .iter()
                .filter(|e| e.event_type() == EventType::ActivityTaskScheduled)
                .count();
            let completed = events
                .iter()
                .filter(|e| e.event_type() == EventType::ActivityTaskCompleted)
                .count();
            assert_eq!(
                (scheduled, completed),
                (5, 5),
                "{id}: each step scheduled and completed exactly once"
            );
            assert_eq!(
                events.last().map(|e| e.event_type()),
                Some(EventType::WorkflowExecutionCompleted)
            );
        }
        anyhow::Ok(())
    };
    // The worker stops whether the checks passed or not: a failed check fails the test
    // instead of leaving it waiting on a worker that never ends.
    let check = async {
        let checked = checks.await;
        shutdown();
        checked
    };
    let (run, checked) = tokio::join!(w.run(), check);
    checked?;
    run?;
    drop(server);
    Ok(())
}
