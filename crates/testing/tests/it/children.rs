//! Child workflows and cron schedules through the official Rust SDK: results, failures,
//! timeouts, cancellation, ids already taken, children on another task queue, parent close
//! policies, and a cron workflow driven by a controllable clock.
use std::time::Duration;

use kairos_testing::TestServer;
use temporalio_client::{
    WorkflowDescribeOptions, WorkflowFetchHistoryOptions, WorkflowGetResultOptions,
    WorkflowStartOptions, WorkflowTerminateOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::{
    ContinueAsNewInitiator, EventType, WorkflowExecutionStatus,
};
use temporalio_common::protos::temporal::api::history::v1::{HistoryEvent, history_event};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ApplicationFailure, ChildWorkflowOptions, ParentClosePolicy, TimerResult, Worker,
    WorkflowContext, WorkflowResult, WorkflowTermination,
};

use crate::support::{connect, run_with_worker, runtime, unique, within};
use crate::worker_options;

#[workflow]
#[derive(Default)]
struct Kitchen;

#[workflow_methods]
impl Kitchen {
    /// Cooks the dish (saying on which queue), burns it (fails), or takes an hour.
    #[run(name = "kitchen")]
    async fn run(ctx: &mut WorkflowContext<Self>, dish: String) -> WorkflowResult<String> {
        match dish.as_str() {
            "burnt" => Err(ApplicationFailure::builder("burnt")
                .type_name("Burnt".to_owned())
                .non_retryable(true)
                .build()
                .into()),
            "slow" => match ctx.timer(Duration::from_secs(3600)).await {
                TimerResult::Fired => Ok("woke".into()),
                TimerResult::Cancelled => Err(WorkflowTermination::cancelled()),
            },
            other => Ok(format!("cooked {other} on {}", ctx.task_queue())),
        }
    }
}

#[workflow]
#[derive(Default)]
struct Restaurant;

fn child(id: String) -> ChildWorkflowOptions {
    ChildWorkflowOptions::builder().workflow_id(id).build()
}

#[workflow_methods]
impl Restaurant {
    /// Runs one child per case and reports what each ended as.
    #[run(name = "restaurant")]
    async fn run(
        ctx: &mut WorkflowContext<Self>,
        (prefix, other_queue): (String, String),
    ) -> WorkflowResult<Vec<String>> {
        let mut seen = Vec::new();
        // On the parent's queue, then on another one.
        for (dish, queue) in [("pizza", None), ("pasta", Some(other_queue))] {
            let opts = ChildWorkflowOptions::builder()
                .workflow_id(format!("{prefix}-{dish}"))
                .maybe_task_queue(queue)
                .build();
            let started = ctx
                .start_child_workflow(Kitchen::run, dish.to_string(), opts)
                .await
                .map_err(|e| ApplicationFailure::new(format!("start: {e}")))?;
            seen.push(
                started
                    .result()
                    .await
                    .map_err(|e| ApplicationFailure::new(format!("{e}")))?,
            );
        }
        let burnt = ctx
            .start_child_workflow(
                Kitchen::run,
                "burnt".to_string(),
                child(format!("{prefix}-burnt")),
            )
            .await
            .map_err(|e| ApplicationFailure::new(format!("start: {e}")))?;
        match burnt.result().await {
            Ok(r) => seen.push(format!("unexpected {r}")),
            Err(e) => seen.push(format!("failed: {e}")),
        }
        match ctx
            .start_child_workflow(
                Kitchen::run,
                "x".to_string(),
                child(format!("{prefix}-taken")),
            )
            .await
        {
            Ok(_) => seen.push("taken id started".into()),
            Err(e) => seen.push(format!("not started: {e}")),
        }
        let slow = ChildWorkflowOptions::builder()
            .workflow_id(format!("{prefix}-slow"))
            .run_timeout(Duration::from_secs(1))
            .build();
        let slow = ctx
            .start_child_workflow(Kitchen::run, "slow".to_string(), slow)
            .await
            .map_err(|e| ApplicationFailure::new(format!("start: {e}")))?;
        match slow.result().await {
            Ok(r) => seen.push(format!("unexpected {r}")),
            Err(e) => seen.push(format!("timed out: {e}")),
        }
        let cancelled = ctx
            .start_child_workflow(
                Kitchen::run,
                "slow".to_string(),
                child(format!("{prefix}-cancelled")),
            )
            .await
            .map_err(|e| ApplicationFailure::new(format!("start: {e}")))?;
        cancelled.cancel("order withdrawn".into());
        match cancelled.result().await {
            Ok(r) => seen.push(format!("unexpected {r}")),
            Err(e) => seen.push(format!("cancelled: {e}")),
        }
        Ok(seen)
    }
}

#[workflow]
#[derive(Default)]
struct Abandoner;

#[workflow_methods]
impl Abandoner {
    /// Starts one slow child per parent close policy, then completes.
    #[run(name = "abandoner")]
    async fn run(ctx: &mut WorkflowContext<Self>, prefix: String) -> WorkflowResult<String> {
        for (name, policy) in [
            ("terminate", ParentClosePolicy::Terminate),
            ("cancel", ParentClosePolicy::RequestCancel),
            ("abandon", ParentClosePolicy::Abandon),
        ] {
            let opts = ChildWorkflowOptions::builder()
                .workflow_id(format!("{prefix}-{name}"))
                .parent_close_policy(policy)
                .build();
            ctx.start_child_workflow(Kitchen::run, "slow".to_string(), opts)
                .await
                .map_err(|e| ApplicationFailure::new(format!("start: {e}")))?;
        }
        Ok("left".into())
    }
}

#[workflow]
#[derive(Default)]
struct Ticker;

#[workflow_methods]
impl Ticker {
    #[run(name = "ticker")]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<String> {
        Ok(format!("tick {}", ctx.info().run_id()))
    }
}

fn start_options(tq: &str, id: &str) -> WorkflowStartOptions {
    WorkflowStartOptions::new(tq, id)
        .execution_timeout(Duration::from_secs(120))
        .build()
}

fn event_types(events: &[HistoryEvent]) -> Vec<EventType> {
    events.iter().map(|e| e.event_type()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_report_results_failures_timeouts_cancels_and_taken_ids() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let (tq, other_tq) = (unique("tq"), unique("kitchen-tq"));
    let main = worker_options!(&tq)
        .register_workflow::<Restaurant>()?
        .register_workflow::<Kitchen>()?
        .register_workflow::<Ticker>()?
        .build();
    let kitchen = worker_options!(&other_tq)
        .register_workflow::<Kitchen>()?
        .build();
    let mut w1 = Worker::new(&rt, client.clone(), main)?;
    let mut w2 = Worker::new(&rt, client.clone(), kitchen)?;
    let body = async {
        let id = unique("restaurant");
        // Something already runs under the id the fourth child asks for.
        let taken = client
            .start_workflow(
                Kitchen::run,
                "slow".to_string(),
                start_options(&tq, &format!("{id}-taken")),
            )
            .await?;
        let parent = client
            .start_workflow(
                Restaurant::run,
                (id.clone(), other_tq.clone()),
                start_options(&tq, &id),
            )
            .await?;
        let seen = within(60, parent.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(seen.len(), 6, "{seen:?}");
        assert_eq!(seen[0], format!("cooked pizza on {tq}"));
        assert_eq!(seen[1], format!("cooked pasta on {other_tq}"));
        assert!(seen[2].starts_with("failed:"), "{seen:?}");
        assert!(
            seen[3].contains("not started") && seen[3].contains("AlreadyExists"),
            "{seen:?}"
        );
        assert!(seen[4].starts_with("timed out:"), "{seen:?}");
        assert!(seen[5].starts_with("cancelled:"), "{seen:?}");
        let events = parent
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let types = event_types(&events);
        for expected in [
            EventType::StartChildWorkflowExecutionInitiated,
            EventType::ChildWorkflowExecutionStarted,
            EventType::ChildWorkflowExecutionCompleted,
            EventType::ChildWorkflowExecutionFailed,
            EventType::StartChildWorkflowExecutionFailed,
            EventType::ChildWorkflowExecutionTimedOut,
            EventType::RequestCancelExternalWorkflowExecutionInitiated,
            EventType::ChildWorkflowExecutionCanceled,
        ] {
            assert!(types.contains(&expected), "{expected:?} missing: {types:?}");
        }
        // Each child's history names its parent and the event that started it.
        let pizza = client.get_workflow_handle::<Kitchen>(&format!("{id}-pizza"));
        let child_events = pizza
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        match &child_events[0].attributes {
            Some(history_event::Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
                let p = a.parent_workflow_execution.clone().unwrap_or_default();
                assert_eq!(p.workflow_id, id);
                assert_eq!(a.parent_workflow_namespace, "default");
                let initiated = events
                    .iter()
                    .find(|e| e.event_id == a.parent_initiated_event_id)
                    .map(|e| e.event_type());
                assert_eq!(
                    initiated,
                    Some(EventType::StartChildWorkflowExecutionInitiated)
                );
                assert_eq!(
                    a.root_workflow_execution
                        .as_ref()
                        .map(|r| r.workflow_id.as_str()),
                    Some(id.as_str())
                );
            }
            other => panic!("not a start: {other:?}"),
        }
        // The taken id's own workflow was left alone.
        let desc = taken.describe(WorkflowDescribeOptions::default()).await?;
        assert_eq!(
            desc.raw_description
                .workflow_execution_info
                .map(|i| i.status()),
            Some(WorkflowExecutionStatus::Running)
        );
        taken
            .terminate(
                WorkflowTerminateOptions::builder()
                    .reason("cleanup")
                    .build(),
            )
            .await?;
        anyhow::Ok(())
    };
    let result = run_with_worker(&mut w1, run_with_worker(&mut w2, body)).await;
    server.shutdown().await?;
    result
}

/// Polls a workflow's status until it is not running any more (or the deadline passes).
async fn final_status(
    client: &temporalio_client::Client,
    id: &str,
) -> anyhow::Result<WorkflowExecutionStatus> {
    let handle = client.get_workflow_handle::<Kitchen>(id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let desc = handle.describe(WorkflowDescribeOptions::default()).await?;
        let status = desc
            .raw_description
            .workflow_execution_info
            .map(|i| i.status())
            .unwrap_or_default();
        if status != WorkflowExecutionStatus::Running || tokio::time::Instant::now() > deadline {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_parent_terminates_cancels_or_abandons_its_children() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq)
        .register_workflow::<Abandoner>()?
        .register_workflow::<Kitchen>()?
        .build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let id = unique("abandoner");
        let parent = client
            .start_workflow(Abandoner::run, id.clone(), start_options(&tq, &id))
            .await?;
        let out = within(60, parent.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(out, "left");
        assert_eq!(
            final_status(&client, &format!("{id}-terminate")).await?,
            WorkflowExecutionStatus::Terminated
        );
        assert_eq!(
            final_status(&client, &format!("{id}-cancel")).await?,
            WorkflowExecutionStatus::Canceled
        );
        let abandoned = client.get_workflow_handle::<Kitchen>(&format!("{id}-abandon"));
        let desc = abandoned
            .describe(WorkflowDescribeOptions::default())
            .await?;
        let info = desc
            .raw_description
            .workflow_execution_info
            .unwrap_or_default();
        assert_eq!(info.status(), WorkflowExecutionStatus::Running);
        assert_eq!(
            info.parent_execution.map(|p| p.workflow_id),
            Some(id.clone())
        );
        // The terminated child says who did it.
        let terminated = client.get_workflow_handle::<Kitchen>(&format!("{id}-terminate"));
        let events = terminated
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        match &events.last().and_then(|e| e.attributes.clone()) {
            Some(history_event::Attributes::WorkflowExecutionTerminatedEventAttributes(a)) => {
                assert_eq!(a.reason, "by parent close policy");
            }
            other => panic!("not terminated: {other:?}"),
        }
        abandoned
            .terminate(
                WorkflowTerminateOptions::builder()
                    .reason("cleanup")
                    .build(),
            )
            .await?;
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}

fn run_handle(
    client: &temporalio_client::Client,
    id: &str,
    run_id: &str,
) -> temporalio_client::WorkflowHandle<temporalio_client::Client, Ticker> {
    temporalio_client::WorkflowHandle::new(
        client.clone(),
        temporalio_client::WorkflowExecutionInfo::builder()
            .namespace("default")
            .workflow_id(id)
            .run_id(run_id)
            .build(),
    )
}

/// Polls the history of a run until it has closed.
async fn closed_history(
    client: &temporalio_client::Client,
    id: &str,
    run_id: &str,
) -> anyhow::Result<Vec<HistoryEvent>> {
    let handle = run_handle(client, id, run_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = handle
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let closed = events
            .last()
            .is_some_and(|e| e.event_type() == EventType::WorkflowExecutionCompleted);
        if closed || tokio::time::Instant::now() > deadline {
            return Ok(events);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_workflow_runs_on_its_schedule_and_carries_its_last_result() -> anyhow::Result<()> {
    let server = TestServer::builder().manual_clock().start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq).register_workflow::<Ticker>()?.build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let id = unique("ticker");
        let opts = WorkflowStartOptions::new(&tq, &id)
            .cron_schedule("0 * * * *".to_string())
            .build();
        let handle = client.start_workflow(Ticker::run, (), opts).await?;
        let first_run = handle.info().run_id.clone().unwrap_or_default();
        let mut run_id = first_run.clone();
        let mut previous_result = None;
        for n in 0..3 {
            // Nothing runs before the scheduled hour: the first task waits for its backoff.
            let events = run_handle(&client, &id, &run_id)
                .fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?;
            assert_eq!(events.len(), 1, "run {n} waits: {:?}", event_types(&events));
            let started = match &events[0].attributes {
                Some(history_event::Attributes::WorkflowExecutionStartedEventAttributes(a)) => {
                    a.clone()
                }
                other => panic!("not a start: {other:?}"),
            };
            assert_eq!(started.cron_schedule, "0 * * * *");
            let backoff = started.first_workflow_task_backoff.unwrap_or_default();
            assert!(
                backoff.seconds > 0 && backoff.seconds <= 3600,
                "{backoff:?}"
            );
            if n > 0 {
                assert_eq!(started.initiator(), ContinueAsNewInitiator::CronSchedule);
                assert_eq!(started.last_completion_result, previous_result);
                assert_eq!(started.first_execution_run_id, first_run);
            }
            server.advance(Duration::from_secs(3600));
            let events = closed_history(&client, &id, &run_id).await?;
            let completed = match events.last().and_then(|e| e.attributes.clone()) {
                Some(history_event::Attributes::WorkflowExecutionCompletedEventAttributes(a)) => a,
                other => panic!("run {n} did not complete: {other:?}"),
            };
            assert!(!completed.new_execution_run_id.is_empty());
            previous_result = completed.result;
            run_id = completed.new_execution_run_id;
        }
        client
            .get_workflow_handle::<Ticker>(&id)
            .terminate(WorkflowTerminateOptions::builder().reason("done").build())
            .await?;
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}
