//! Continue-as-new through the official Rust SDK: a chain of 100 runs, each created in the
//! transaction that closes the one before, followed by the client to the last run's result.
use std::time::Duration;

use kairos_testing::TestServer;
use temporalio_client::{
    WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::history::v1::history_event;
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{ContinueAsNewOptions, Worker, WorkflowContext, WorkflowResult};

use crate::support::{connect, run_with_worker, runtime, unique, within};
use crate::worker_options;

#[workflow]
#[derive(Default)]
struct Chain;

#[workflow_methods]
impl Chain {
    /// Continues as new with `n + 1` until `n` reaches 100.
    #[run(name = "chain")]
    async fn run(ctx: &mut WorkflowContext<Self>, n: u32) -> WorkflowResult<u32> {
        if n < 100 {
            ctx.continue_as_new(n + 1, ContinueAsNewOptions::default())?;
        }
        Ok(n)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_a_hundred_runs_ends_with_the_last_result() -> anyhow::Result<()> {
    // Without the 1 s minimum between runs (kept by default, as the reference does).
    let options = kairos_core::config::ServerOptions {
        continue_as_new_min_interval: Duration::ZERO,
        ..Default::default()
    };
    let server = TestServer::builder().options(options).start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq).register_workflow::<Chain>()?.build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let id = unique("chain");
        let first = client
            .start_workflow(
                Chain::run,
                1,
                WorkflowStartOptions::new(&tq, &id)
                    .execution_timeout(Duration::from_secs(300))
                    .build(),
            )
            .await?;
        // The handle follows the chain of runs to the last one's result.
        let last = within(120, first.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(last, 100);
        let events = first
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let closing = events.last().expect("events");
        assert_eq!(
            closing.event_type(),
            EventType::WorkflowExecutionContinuedAsNew
        );
        assert!(matches!(
            &closing.attributes,
            Some(history_event::Attributes::WorkflowExecutionContinuedAsNewEventAttributes(a))
                if !a.new_execution_run_id.is_empty()
        ));
        // The id's current run is the last of the chain and remembers the first.
        let first_run = first.info().run_id.clone().unwrap_or_default();
        let current = client.get_workflow_handle::<Chain>(&id);
        let events = current
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert_eq!(
            events.last().map(|e| e.event_type()),
            Some(EventType::WorkflowExecutionCompleted)
        );
        match &events[0].attributes {
            Some(history_event::Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
                assert_eq!(a.first_execution_run_id, first_run);
                assert!(!a.continued_execution_run_id.is_empty());
                assert_ne!(a.continued_execution_run_id, first_run, "99 hops later");
                assert!(a.input.is_some());
            }
            other => panic!("not a start: {other:?}"),
        }
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}

#[workflow]
#[derive(Default)]
struct Napper;

#[workflow_methods]
impl Napper {
    /// Naps 20 minutes, then continues as new, forever.
    #[run(name = "napper")]
    async fn run(ctx: &mut WorkflowContext<Self>, n: u32) -> WorkflowResult<u32> {
        ctx.timer(Duration::from_secs(1200)).await;
        ctx.continue_as_new(n + 1, ContinueAsNewOptions::default())?;
        Ok(n)
    }
}

/// The current run of `id` once it is a run other than `previous` and waits on its timer.
async fn next_napping_run(
    client: &temporalio_client::Client,
    id: &str,
    previous: &str,
) -> anyhow::Result<(
    String,
    Vec<temporalio_common::protos::temporal::api::history::v1::HistoryEvent>,
)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let handle = client.get_workflow_handle::<Napper>(id);
        let desc = handle
            .describe(temporalio_client::WorkflowDescribeOptions::default())
            .await?;
        let run_id = desc
            .raw_description
            .workflow_execution_info
            .and_then(|i| i.execution)
            .map(|e| e.run_id)
            .unwrap_or_default();
        if run_id != previous {
            let events = handle
                .fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?;
            if events
                .iter()
                .any(|e| e.event_type() == EventType::TimerStarted)
            {
                return Ok((run_id, events));
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no new napping run after {previous}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_execution_timeout_spans_the_whole_chain_of_runs() -> anyhow::Result<()> {
    let server = TestServer::builder().manual_clock().start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq).register_workflow::<Napper>()?.build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let id = unique("napper");
        client
            .start_workflow(
                Napper::run,
                1,
                WorkflowStartOptions::new(&tq, &id)
                    .execution_timeout(Duration::from_secs(3000))
                    .build(),
            )
            .await?;
        let expiration =
            |events: &[temporalio_common::protos::temporal::api::history::v1::HistoryEvent]| {
                match &events[0].attributes {
                    Some(history_event::Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
                        a.workflow_execution_expiration_time
                    }
                    _ => None,
                }
            };
        let (mut run, events) = next_napping_run(&client, &id, "").await?;
        let first_expiration = expiration(&events);
        assert!(first_expiration.is_some());
        // Two naps end in continue-as-new: 40 minutes in, the third run starts with what is
        // left of the 50 minutes, not 50 new ones.
        for _ in 0..2 {
            server.advance(Duration::from_secs(1200));
            let (next, events) = next_napping_run(&client, &id, &run).await?;
            assert_eq!(expiration(&events), first_expiration);
            run = next;
        }
        server.advance(Duration::from_secs(1200));
        let last = client.get_workflow_handle::<Napper>(&id);
        let outcome = within(30, last.get_result(WorkflowGetResultOptions::default())).await?;
        assert!(outcome.is_err(), "the chain timed out: {outcome:?}");
        let events = last
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert_eq!(
            events.last().map(|e| e.event_type()),
            Some(EventType::WorkflowExecutionTimedOut)
        );
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}
