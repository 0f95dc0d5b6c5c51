//! Signals and queries through the official Rust SDK: order under a storm, request-id
//! deduplication, headers, signal-with-start, signals to closed runs, queries on running and
//! closed runs and the reject condition.
use std::time::Duration;

use kairos_testing::TestServer;
use temporalio_client::errors::WorkflowQueryError;
use temporalio_client::{
    QueryRejectCondition, WorkflowFetchHistoryOptions, WorkflowGetResultOptions,
    WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::common::v1::{Header, Payload};
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::history::v1::{HistoryEvent, history_event};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    SyncWorkflowContext, Worker, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::support::{connect, run_with_worker, runtime, unique, within};
use crate::worker_options;

#[workflow]
#[derive(Default)]
struct Collector {
    got: Vec<u32>,
}

#[workflow_methods]
impl Collector {
    /// Returns the signalled numbers once `want` of them arrived.
    #[run(name = "collector")]
    async fn run(ctx: &mut WorkflowContext<Self>, want: u32) -> WorkflowResult<Vec<u32>> {
        ctx.wait_condition(|s| s.got.len() >= want as usize).await?;
        Ok(ctx.state(|s| s.got.clone()))
    }

    #[signal(name = "item")]
    fn item(&mut self, _ctx: &mut SyncWorkflowContext<Self>, n: u32) {
        self.got.push(n);
    }

    #[query(name = "count")]
    fn count(&self, _ctx: &WorkflowContextView) -> u32 {
        self.got.len() as u32
    }
}

fn signaled(events: &[HistoryEvent]) -> Vec<&HistoryEvent> {
    events
        .iter()
        .filter(|e| e.event_type() == EventType::WorkflowExecutionSignaled)
        .collect()
}

macro_rules! with_worker {
    (|$client:ident, $tq:ident| $body:block) => {{
        let server = TestServer::start().await?;
        let $client = connect(&server).await?;
        let rt = runtime()?;
        let $tq = unique("tq");
        let options = worker_options!(&$tq)
            .register_workflow::<Collector>()?
            .build();
        let mut w = Worker::new(&rt, $client.clone(), options)?;
        let result = run_with_worker(&mut w, async { $body }).await;
        server.shutdown().await?;
        result
    }};
}

fn start_options(tq: &str, id: &str) -> WorkflowStartOptions {
    WorkflowStartOptions::new(tq, id)
        .execution_timeout(Duration::from_secs(120))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_signals_arrive_all_and_in_order() -> anyhow::Result<()> {
    with_worker!(|client, tq| {
        let h = client
            .start_workflow(Collector::run, 1000, start_options(&tq, &unique("storm")))
            .await?;
        for n in 0..1000u32 {
            h.signal(Collector::item, n, WorkflowSignalOptions::default())
                .await?;
        }
        let got = within(60, h.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(got, (0..1000).collect::<Vec<u32>>());
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert_eq!(signaled(&events).len(), 1000);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.event_id, i as i64 + 1, "contiguous event ids");
        }
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_signal_is_applied_once_and_keeps_its_header() -> anyhow::Result<()> {
    with_worker!(|client, tq| {
        let h = client
            .start_workflow(Collector::run, 2, start_options(&tq, &unique("dedup")))
            .await?;
        let header = Header {
            fields: [(
                "trace".to_string(),
                Payload {
                    data: b"abc".to_vec(),
                    ..Default::default()
                },
            )]
            .into(),
        };
        for _ in 0..2 {
            let options = WorkflowSignalOptions::builder()
                .request_id("same-request".to_string())
                .header(header.clone())
                .build();
            h.signal(Collector::item, 7, options).await?;
        }
        h.signal(Collector::item, 8, WorkflowSignalOptions::default())
            .await?;
        let got = within(30, h.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(
            got,
            vec![7, 8],
            "the retried signal was not delivered twice"
        );
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let signals = signaled(&events);
        assert_eq!(signals.len(), 2);
        match &signals[0].attributes {
            Some(history_event::Attributes::WorkflowExecutionSignaledEventAttributes(a)) => {
                assert_eq!(a.signal_name, "item");
                assert_eq!(a.identity, "kairos-e2e-client");
                let trace = a.header.as_ref().and_then(|h| h.fields.get("trace"));
                assert_eq!(trace.map(|p| p.data.as_slice()), Some(&b"abc"[..]));
            }
            other => panic!("not a signal: {other:?}"),
        }
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signal_with_start_starts_once_then_signals_the_running_workflow() -> anyhow::Result<()> {
    with_worker!(|client, tq| {
        let id = unique("sws");
        let first = client
            .signal_with_start_workflow(
                Collector::run,
                2,
                Collector::item,
                1,
                start_options(&tq, &id),
            )
            .await?;
        let second = client
            .signal_with_start_workflow(
                Collector::run,
                2,
                Collector::item,
                2,
                start_options(&tq, &id),
            )
            .await?;
        assert_eq!(
            first.info().run_id,
            second.info().run_id,
            "the second call signals the running workflow"
        );
        let got = within(30, first.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(got, vec![1, 2]);
        let events = first
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let types: Vec<_> = events.iter().map(|e| e.event_type()).collect();
        assert_eq!(
            &types[..3],
            &[
                EventType::WorkflowExecutionStarted,
                EventType::WorkflowExecutionSignaled,
                EventType::WorkflowTaskScheduled
            ],
            "the signal is in the start's transaction, before the first task"
        );
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_to_a_closed_workflow_is_not_found() -> anyhow::Result<()> {
    with_worker!(|client, tq| {
        let h = client
            .start_workflow(Collector::run, 0, start_options(&tq, &unique("closed")))
            .await?;
        let got = within(30, h.get_result(WorkflowGetResultOptions::default())).await??;
        assert!(got.is_empty());
        let err = h
            .signal(Collector::item, 1, WorkflowSignalOptions::default())
            .await
            .expect_err("the run is closed");
        let text = format!("{err:?}");
        assert!(
            text.contains("NotFound") && text.contains("workflow execution already completed"),
            "{text}"
        );
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_see_running_and_closed_workflows() -> anyhow::Result<()> {
    with_worker!(|client, tq| {
        let h = client
            .start_workflow(Collector::run, 2, start_options(&tq, &unique("query")))
            .await?;
        // Right after the start a workflow task is pending: the query waits for it.
        let n = within(
            30,
            h.query(Collector::count, (), WorkflowQueryOptions::default()),
        )
        .await??;
        assert_eq!(n, 0);
        h.signal(Collector::item, 5, WorkflowSignalOptions::default())
            .await?;
        let n = within(
            30,
            h.query(Collector::count, (), WorkflowQueryOptions::default()),
        )
        .await??;
        assert_eq!(n, 1, "the query runs after the signal's workflow task");
        h.signal(Collector::item, 6, WorkflowSignalOptions::default())
            .await?;
        let got = within(30, h.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(got, vec![5, 6]);
        let n = within(
            30,
            h.query(Collector::count, (), WorkflowQueryOptions::default()),
        )
        .await??;
        assert_eq!(n, 2, "a closed workflow is queried by replaying it");
        let rejected = h
            .query(
                Collector::count,
                (),
                WorkflowQueryOptions::builder()
                    .reject_condition(QueryRejectCondition::NotOpen)
                    .build(),
            )
            .await;
        match rejected {
            Err(WorkflowQueryError::Rejected { status }) => {
                assert_eq!(
                    status,
                    Some(temporalio_client::WorkflowExecutionStatus::Completed)
                );
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert!(
            events
                .iter()
                .all(|e| e.event_type() != EventType::WorkflowTaskFailed),
            "queries leave no trace in the history"
        );
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_to_a_run_closed_before_its_first_task_is_not_ready() -> anyhow::Result<()> {
    with_worker!(|client, _tq| {
        // No worker polls this queue: the run never completes a workflow task.
        let h = client
            .start_workflow(
                Collector::run,
                1,
                start_options(&unique("nobody-polls"), &unique("not-ready")),
            )
            .await?;
        h.terminate(temporalio_client::WorkflowTerminateOptions::builder().build())
            .await?;
        match h
            .query(Collector::count, (), WorkflowQueryOptions::default())
            .await
        {
            Err(WorkflowQueryError::Rpc(status)) => {
                assert_eq!(
                    format!("{:?}", status.code()),
                    "FailedPrecondition",
                    "{status:?}"
                );
            }
            other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
        }
        anyhow::Ok(())
    })
}

#[workflow]
#[derive(Default)]
struct Dispatcher;

#[workflow_methods]
impl Dispatcher {
    /// Signals the target, signals and cancels a workflow that does not exist, signals the
    /// target again; returns what each step gave.
    #[run(name = "dispatcher")]
    async fn run(ctx: &mut WorkflowContext<Self>, target: String) -> WorkflowResult<Vec<String>> {
        let mut seen = Vec::new();
        let to = ctx.external_workflow(target.clone(), None);
        let sent = to
            .signal(
                Collector::item,
                9,
                temporalio_sdk::SignalWorkflowOptions::default(),
            )
            .await;
        seen.push(format!("signal target: {}", sent.is_ok()));
        let missing = ctx.external_workflow(format!("{target}-missing"), None);
        let sent = missing
            .signal(
                Collector::item,
                1,
                temporalio_sdk::SignalWorkflowOptions::default(),
            )
            .await;
        seen.push(format!("signal missing: {}", sent.is_ok()));
        let cancelled = missing.cancel(None).await;
        seen.push(format!("cancel missing: {}", cancelled.is_ok()));
        let sent = to
            .signal(
                Collector::item,
                10,
                temporalio_sdk::SignalWorkflowOptions::default(),
            )
            .await;
        seen.push(format!("signal target: {}", sent.is_ok()));
        Ok(seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_signal_others_and_learn_when_the_target_does_not_exist() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq)
        .register_workflow::<Collector>()?
        .register_workflow::<Dispatcher>()?
        .build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let target = unique("collector");
        let collector = client
            .start_workflow(Collector::run, 2, start_options(&tq, &target))
            .await?;
        let id = unique("dispatcher");
        let dispatcher = client
            .start_workflow(Dispatcher::run, target.clone(), start_options(&tq, &id))
            .await?;
        let seen = within(
            30,
            dispatcher.get_result(WorkflowGetResultOptions::default()),
        )
        .await??;
        assert_eq!(
            seen,
            vec![
                "signal target: true",
                "signal missing: false",
                "cancel missing: false",
                "signal target: true"
            ]
        );
        let got = within(
            30,
            collector.get_result(WorkflowGetResultOptions::default()),
        )
        .await??;
        assert_eq!(got, vec![9, 10]);
        // The target's signals name the sender.
        let events = collector
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        for e in signaled(&events) {
            match &e.attributes {
                Some(history_event::Attributes::WorkflowExecutionSignaledEventAttributes(a)) => {
                    assert_eq!(
                        a.external_workflow_execution
                            .as_ref()
                            .map(|x| x.workflow_id.as_str()),
                        Some(id.as_str())
                    );
                }
                other => panic!("not a signal: {other:?}"),
            }
        }
        let events = dispatcher
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let types: Vec<EventType> = events.iter().map(|e| e.event_type()).collect();
        assert!(types.contains(&EventType::SignalExternalWorkflowExecutionFailed));
        assert!(types.contains(&EventType::RequestCancelExternalWorkflowExecutionFailed));
        assert_eq!(
            types
                .iter()
                .filter(|t| **t == EventType::ExternalWorkflowExecutionSignaled)
                .count(),
            2
        );
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}

/// A worker that stops (ShutdownWorker with its sticky queue) hands its cached workflows on at
/// once: the next task of a run that was sticky to it goes to the normal queue, where another
/// worker takes it, instead of waiting out the sticky schedule-to-start timeout (60 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_workers_sticky_runs_move_to_another_worker_at_once() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    // Two builds: one process may not run two workers of one build on one queue.
    let options = |build: &str| -> anyhow::Result<temporalio_sdk::WorkerOptions> {
        Ok(temporalio_sdk::WorkerOptions::new(tq.as_str())
            .deployment_options(
                temporalio_common::worker::WorkerDeploymentOptions::from_build_id(build.to_owned()),
            )
            .sticky_queue_schedule_to_start_timeout(Duration::from_secs(60))
            .graceful_shutdown_period(Duration::from_secs(2))
            .register_workflow::<Collector>()?
            .build())
    };
    let mut first = Worker::new(&rt, client.clone(), options("first")?)?;
    let h = run_with_worker(&mut first, async {
        let h = client
            .start_workflow(Collector::run, 2, start_options(&tq, &unique("moves")))
            .await?;
        h.signal(Collector::item, 1, WorkflowSignalOptions::default())
            .await?;
        // Until the first worker answered the task that took the signal: the run is cached
        // there and its next task would be sticky to it.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let events = h
                .fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?;
            let types: Vec<EventType> = events.iter().map(|e| e.event_type()).collect();
            let signal = types
                .iter()
                .position(|t| *t == EventType::WorkflowExecutionSignaled);
            if signal.is_some_and(|i| types[i..].contains(&EventType::WorkflowTaskCompleted)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the signal's task never completed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(h)
    })
    .await?;
    let mut second = Worker::new(&rt, client.clone(), options("second")?)?;
    run_with_worker(&mut second, async {
        h.signal(Collector::item, 2, WorkflowSignalOptions::default())
            .await?;
        let got = within(20, h.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(got, vec![1, 2]);
        anyhow::Ok(())
    })
    .await?;
    server.shutdown().await?;
    Ok(())
}
