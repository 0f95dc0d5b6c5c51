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
