//! Workflows and activities through the official Rust SDK: sequences, parallelism, timers,
//! retries, timeouts, heartbeats, cancellation, termination and large histories.
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kairos_testing::TestServer;
use temporalio_client::errors::{WorkflowGetResultError, WorkflowStartError};
use temporalio_client::{
    UntypedWorkflow, WorkflowCancelOptions, WorkflowFetchHistoryOptions, WorkflowGetResultOptions,
    WorkflowStartOptions, WorkflowTerminateOptions,
};
use temporalio_common::RetryPolicy;
use temporalio_common::data_converters::{PayloadConverter, RawValue};
use temporalio_common::error::IncomingError;
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::history::v1::HistoryEvent;
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCancellationType, ActivityExecutionError, ActivityOptions, ApplicationFailure,
    CancellableFuture, TimerResult, Worker, WorkflowContext, WorkflowResult, WorkflowTermination,
};

use crate::support::{connect, run_with_worker, runtime, unique, within};
use crate::worker_options;

// ---------------------------------------------------------------- activities

#[derive(Default)]
struct Counters {
    flaky_calls: AtomicU32,
    slow_calls: AtomicU32,
    resumed_from: AtomicU32,
}

#[derive(Default, Clone)]
struct Acts {
    c: Arc<Counters>,
}

#[activities]
impl Acts {
    #[activity(name = "hello")]
    async fn hello(_ctx: ActivityContext, name: String) -> Result<String, ActivityError> {
        Ok(format!("hello {name}"))
    }

    /// Fails on the first two attempts, succeeds on the third.
    #[activity(name = "flaky")]
    async fn flaky(self: Arc<Self>, ctx: ActivityContext) -> Result<u32, ActivityError> {
        self.c.flaky_calls.fetch_add(1, Ordering::SeqCst);
        let attempt = ctx.info().attempt;
        if attempt < 3 {
            return Err(ActivityError::application(
                ApplicationFailure::builder("transient")
                    .type_name("Transient".to_owned())
                    .build(),
            ));
        }
        Ok(attempt)
    }

    #[activity(name = "reject")]
    async fn reject(_ctx: ActivityContext) -> Result<(), ActivityError> {
        Err(ActivityError::application(
            ApplicationFailure::builder("card declined")
                .type_name("Declined".to_owned())
                .non_retryable(true)
                .build(),
        ))
    }

    /// Heartbeats progress; the first attempt fails after step 3, the next resumes from the
    /// heartbeat details it is handed.
    #[activity(name = "resumable")]
    async fn resumable(self: Arc<Self>, ctx: ActivityContext) -> Result<u32, ActivityError> {
        let start: u32 = ctx.heartbeat_details().deserialize::<u32>()?.unwrap_or(0);
        if ctx.info().attempt > 1 {
            self.c.resumed_from.store(start, Ordering::SeqCst);
        }
        for step in start..6 {
            ctx.record_heartbeat(step + 1).await?;
            if ctx.info().attempt == 1 && step == 3 {
                return Err(ActivityError::application(ApplicationFailure::new(
                    "crashed mid-way",
                )));
            }
        }
        Ok(ctx.info().attempt)
    }

    /// Hangs past its start-to-close timeout on the first attempt.
    #[activity(name = "slow_first")]
    async fn slow_first(self: Arc<Self>, ctx: ActivityContext) -> Result<u32, ActivityError> {
        self.c.slow_calls.fetch_add(1, Ordering::SeqCst);
        if ctx.info().attempt == 1 {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = ctx.cancelled() => {}
            }
        }
        Ok(ctx.info().attempt)
    }

    /// Never finishes on its own: waits until the server cancels it (its timeout) or 30 s pass.
    #[activity(name = "hang")]
    async fn hang(ctx: ActivityContext) -> Result<(), ActivityError> {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = ctx.cancelled() => {}
        }
        Err(ActivityError::cancelled())
    }

    /// The first attempt heartbeats once (with 7) and then goes silent; later attempts return
    /// the heartbeat details they were handed.
    #[activity(name = "goes_silent")]
    async fn goes_silent(ctx: ActivityContext) -> Result<u32, ActivityError> {
        if ctx.info().attempt == 1 {
            ctx.record_heartbeat(7u32).await?;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = ctx.cancelled() => {}
            }
            return Err(ActivityError::cancelled());
        }
        Ok(ctx.heartbeat_details().deserialize::<u32>()?.unwrap_or(0))
    }

    /// Heartbeats until cancelled.
    #[activity(name = "wait_cancel")]
    async fn wait_cancel(ctx: ActivityContext) -> Result<(), ActivityError> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = ctx.cancelled() => return Err(ActivityError::cancelled()),
                _ = tick.tick() => ctx.record_heartbeat(()).await?,
            }
        }
    }
}

fn quick_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_millis(100))
        .backoff_coefficient(2.0)
        .maximum_attempts(max_attempts)
        .build()
}

// ---------------------------------------------------------------- workflows

#[workflow]
#[derive(Default)]
struct Greet;

#[workflow_methods]
impl Greet {
    #[run(name = "greet")]
    async fn run(ctx: &mut WorkflowContext<Self>, name: String) -> WorkflowResult<String> {
        let greeting = ctx
            .execute_activity(
                Acts::hello,
                name,
                ActivityOptions::start_to_close_timeout(Duration::from_secs(10)),
            )
            .await?;
        ctx.timer(Duration::from_millis(300)).await;
        let again = ctx
            .execute_activity(
                Acts::hello,
                greeting,
                ActivityOptions::start_to_close_timeout(Duration::from_secs(10)),
            )
            .await?;
        Ok(again)
    }
}

#[workflow]
#[derive(Default)]
struct Parallel;

#[workflow_methods]
impl Parallel {
    #[run(name = "parallel")]
    async fn run(ctx: &mut WorkflowContext<Self>, count: u32) -> WorkflowResult<Vec<String>> {
        let futures: Vec<_> = (0..count)
            .map(|i| {
                ctx.execute_activity(
                    Acts::hello,
                    format!("n{i}"),
                    ActivityOptions::start_to_close_timeout(Duration::from_secs(30)),
                )
            })
            .collect();
        let mut out = Vec::new();
        for r in temporalio_sdk::workflows::join_all(futures).await {
            out.push(r?);
        }
        Ok(out)
    }
}

#[workflow]
#[derive(Default)]
struct Retries;

#[workflow_methods]
impl Retries {
    /// Runs the named activity with quick retries and returns its attempt number.
    #[run(name = "retries")]
    async fn run(ctx: &mut WorkflowContext<Self>, which: String) -> WorkflowResult<u32> {
        let opts = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(1))
            .retry_policy(quick_retry(5))
            .heartbeat_timeout(Duration::from_secs(5))
            .build();
        let attempt = match which.as_str() {
            "flaky" => ctx.execute_activity(Acts::flaky, (), opts).await?,
            "resumable" => ctx.execute_activity(Acts::resumable, (), opts).await?,
            "slow_first" => ctx.execute_activity(Acts::slow_first, (), opts).await?,
            "reject" => {
                ctx.execute_activity(Acts::reject, (), opts).await?;
                0
            }
            other => {
                return Err(ApplicationFailure::new(format!("unknown activity {other}")).into());
            }
        };
        Ok(attempt)
    }
}

#[workflow]
#[derive(Default)]
struct Timeouts;

#[workflow_methods]
impl Timeouts {
    /// Lets the named activity time out and reports how: the timeout type the workflow saw,
    /// or for "heartbeat_retry" the heartbeat details the retried attempt was handed.
    #[run(name = "timeouts")]
    async fn run(ctx: &mut WorkflowContext<Self>, which: String) -> WorkflowResult<String> {
        let no_retry = RetryPolicy::builder().maximum_attempts(1).build();
        let outcome = match which.as_str() {
            // Nobody polls that queue: the task is never picked up.
            "schedule_to_start" => ctx
                .execute_activity(
                    Acts::hello,
                    "nobody".to_owned(),
                    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
                        .task_queue(format!("unpolled-{}", ctx.task_queue()))
                        .schedule_to_start_timeout(Duration::from_secs(1))
                        .build(),
                )
                .await
                .map(|_| ()),
            // Retries are allowed, but the overall deadline ends them.
            "schedule_to_close" => {
                ctx.execute_activity(
                    Acts::hang,
                    (),
                    ActivityOptions::with_schedule_to_close_timeout(Duration::from_secs(1))
                        .retry_policy(quick_retry(0))
                        .build(),
                )
                .await
            }
            "heartbeat" => ctx
                .execute_activity(
                    Acts::goes_silent,
                    (),
                    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
                        .heartbeat_timeout(Duration::from_secs(1))
                        .retry_policy(no_retry)
                        .build(),
                )
                .await
                .map(|_| ()),
            "heartbeat_retry" => {
                let details = ctx
                    .execute_activity(
                        Acts::goes_silent,
                        (),
                        ActivityOptions::with_start_to_close_timeout(Duration::from_secs(30))
                            .heartbeat_timeout(Duration::from_secs(1))
                            .retry_policy(quick_retry(3))
                            .build(),
                    )
                    .await?;
                return Ok(format!("resumed with {details}"));
            }
            other => {
                return Err(ApplicationFailure::new(format!("unknown case {other}")).into());
            }
        };
        match outcome {
            Ok(()) => Ok("no timeout".into()),
            Err(e) => match e.as_timeout() {
                Some(t) => {
                    let details = t
                        .raw_last_heartbeat_details()
                        .map(|p| p.len())
                        .unwrap_or_default();
                    Ok(format!("{:?} details={details}", t.timeout_type()))
                }
                None => Ok(format!("not a timeout: {e}")),
            },
        }
    }
}

#[workflow]
#[derive(Default)]
struct CancelActivity;

#[workflow_methods]
impl CancelActivity {
    #[run(name = "cancel_activity")]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<String> {
        let act = ctx.execute_activity(
            Acts::wait_cancel,
            (),
            ActivityOptions::with_start_to_close_timeout(Duration::from_secs(60))
                .heartbeat_timeout(Duration::from_secs(1))
                .cancellation_type(ActivityCancellationType::WaitCancellationCompleted)
                .build(),
        );
        ctx.timer(Duration::from_millis(500)).await;
        act.cancel();
        match act.await {
            Err(ActivityExecutionError::Cancelled(_)) => Ok("activity cancelled".into()),
            other => Err(ApplicationFailure::new(format!(
                "unexpected activity outcome: {:?}",
                other.is_ok()
            ))
            .into()),
        }
    }
}

#[workflow]
#[derive(Default)]
struct Saga;

#[workflow_methods]
impl Saga {
    /// Charges, then waits for delivery; cancelled meanwhile, it refunds and ends cancelled.
    #[run(name = "saga")]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<String> {
        let opts = || ActivityOptions::start_to_close_timeout(Duration::from_secs(10));
        ctx.execute_activity(Acts::hello, "charge".to_string(), opts())
            .await?;
        match ctx.timer(Duration::from_secs(3600)).await {
            TimerResult::Fired => Ok("delivered".into()),
            TimerResult::Cancelled => {
                // Compensation must outlive the workflow's cancellation: a detached token.
                let refund = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
                    .cancellation_token(temporalio_sdk::WorkflowCancellationToken::new())
                    .build();
                ctx.execute_activity(Acts::hello, "refund".to_string(), refund)
                    .await?;
                Err(WorkflowTermination::cancelled())
            }
        }
    }
}

#[workflow]
#[derive(Default)]
struct Sleeper;

#[workflow_methods]
impl Sleeper {
    #[run(name = "sleeper")]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<String> {
        match ctx.timer(Duration::from_secs(3600)).await {
            TimerResult::Fired => Ok("fired".into()),
            TimerResult::Cancelled => Err(WorkflowTermination::cancelled()),
        }
    }
}

static PANICS_LEFT: AtomicU32 = AtomicU32::new(1);

#[workflow]
#[derive(Default)]
struct FailsOnce;

#[workflow_methods]
impl FailsOnce {
    /// The first workflow task panics (a worker bug); the retried task succeeds.
    #[run(name = "fails_once")]
    async fn run(_ctx: &mut WorkflowContext<Self>) -> WorkflowResult<String> {
        if PANICS_LEFT
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("deliberate workflow task failure");
        }
        Ok("recovered".into())
    }
}

// ---------------------------------------------------------------- harness

fn pc() -> PayloadConverter {
    PayloadConverter::default()
}

async fn start(
    client: &temporalio_client::Client,
    workflow: &str,
    input: RawValue,
    tq: &str,
) -> anyhow::Result<temporalio_client::WorkflowHandle<temporalio_client::Client, UntypedWorkflow>> {
    Ok(client
        .start_workflow(
            UntypedWorkflow::new(workflow),
            input,
            WorkflowStartOptions::new(tq, unique(workflow))
                .execution_timeout(Duration::from_secs(120))
                .build(),
        )
        .await?)
}

fn types(events: &[HistoryEvent]) -> Vec<EventType> {
    events.iter().map(|e| e.event_type()).collect()
}

fn worker(
    server_client: &temporalio_client::Client,
    rt: &temporalio_sdk::Runtime,
    tq: &str,
    acts: Acts,
) -> anyhow::Result<Worker> {
    let options = worker_options!(tq)
        .register_activities(acts)
        .register_workflow::<Greet>()?
        .register_workflow::<Parallel>()?
        .register_workflow::<Retries>()?
        .register_workflow::<CancelActivity>()?
        .register_workflow::<Timeouts>()?
        .register_workflow::<Sleeper>()?
        .register_workflow::<Saga>()?
        .register_workflow::<FailsOnce>()?
        .build();
    Ok(Worker::new(rt, server_client.clone(), options)?)
}

/// Starts a server, a client and a worker on a fresh task queue, and runs `body` with them.
macro_rules! scenario {
    (|$client:ident, $tq:ident, $acts:ident, $server:ident| $body:block) => {{ scenario!(TestServer::start(), |$client, $tq, $acts, $server| $body) }};
    ($server_start:expr, |$client:ident, $tq:ident, $acts:ident, $server:ident| $body:block) => {{
        let $server = $server_start.await?;
        let $client = connect(&$server).await?;
        let rt = runtime()?;
        let $tq = unique("tq");
        let $acts = Acts::default();
        let mut w = worker(&$client, &rt, &$tq, $acts.clone())?;
        let result = run_with_worker(&mut w, async { $body }).await;
        $server.shutdown().await?;
        result
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activities_in_sequence_with_a_timer() -> anyhow::Result<()> {
    scenario!(|client, tq, _acts, _server| {
        let h = start(
            &client,
            "greet",
            RawValue::from_value(&"world".to_string(), &pc()),
            &tq,
        )
        .await?;
        let out: String = within(30, h.get_result(WorkflowGetResultOptions::default()))
            .await??
            .to_value(&pc());
        assert_eq!(out, "hello hello world");
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let t = types(&events);
        assert_eq!(t.first(), Some(&EventType::WorkflowExecutionStarted));
        assert_eq!(t.last(), Some(&EventType::WorkflowExecutionCompleted));
        assert_eq!(
            t.iter()
                .filter(|e| **e == EventType::ActivityTaskCompleted)
                .count(),
            2
        );
        assert!(t.contains(&EventType::TimerFired), "{t:?}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.event_id, i as i64 + 1, "contiguous event ids");
        }
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_activities_run_inline_and_write_the_same_history() -> anyhow::Result<()> {
    let options = kairos_core::config::ServerOptions {
        eager_activities: true,
        ..Default::default()
    };
    scenario!(
        TestServer::builder().options(options).start(),
        |client, tq, _acts, _server| {
            let h = start(
                &client,
                "greet",
                RawValue::from_value(&"world".to_string(), &pc()),
                &tq,
            )
            .await?;
            let out: String = within(30, h.get_result(WorkflowGetResultOptions::default()))
                .await??
                .to_value(&pc());
            assert_eq!(out, "hello hello world");
            let events = h
                .fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?;
            let started: Vec<_> = events
                .iter()
                .filter_map(|e| match &e.attributes {
                    Some(temporalio_common::protos::temporal::api::history::v1::history_event::Attributes::ActivityTaskStartedEventAttributes(a)) => {
                        Some(a.request_id.clone())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(started.len(), 2);
            assert!(
                started.iter().all(|r| r.starts_with("eager-")),
                "the SDK asks for eager execution and both activities were started inline: {started:?}"
            );
            let t = types(&events);
            let expected_tail = [
                EventType::ActivityTaskScheduled,
                EventType::ActivityTaskStarted,
                EventType::ActivityTaskCompleted,
                EventType::WorkflowTaskScheduled,
            ];
            assert_eq!(&t[4..8], &expected_tail, "{t:?}");
            anyhow::Ok(())
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_activities_and_a_history_over_several_pages() -> anyhow::Result<()> {
    scenario!(|client, tq, _acts, _server| {
        let h = start(
            &client,
            "parallel",
            RawValue::from_value(&100u32, &pc()),
            &tq,
        )
        .await?;
        let out: Vec<String> = within(60, h.get_result(WorkflowGetResultOptions::default()))
            .await??
            .to_value(&pc());
        assert_eq!(out.len(), 100);
        assert_eq!(out[42], "hello n42");
        // 100 activities write 300 events: more than one 256-event page.
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert!(events.len() > 300, "{} events", events.len());
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.event_id,
                i as i64 + 1,
                "contiguous event ids across pages"
            );
        }
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_cache_of_one_run_loses_nothing() -> anyhow::Result<()> {
    // Every other transition finds its run evicted and reads it back from the store.
    let options = kairos_core::config::ServerOptions {
        cache_size: 1,
        ..Default::default()
    };
    scenario!(
        TestServer::builder().options(options).start(),
        |client, tq, _acts, _server| {
            let mut handles = Vec::new();
            for i in 0..4 {
                handles.push(
                    start(
                        &client,
                        "parallel",
                        RawValue::from_value(&(3 + i as u32), &pc()),
                        &tq,
                    )
                    .await?,
                );
            }
            for (i, h) in handles.iter().enumerate() {
                let out: Vec<String> =
                    within(60, h.get_result(WorkflowGetResultOptions::default()))
                        .await??
                        .to_value(&pc());
                assert_eq!(out.len(), 3 + i, "{out:?}");
            }
            anyhow::Ok(())
        }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_activity_is_retried_by_the_server_with_backoff() -> anyhow::Result<()> {
    scenario!(|client, tq, acts, _server| {
        let h = start(
            &client,
            "retries",
            RawValue::from_value(&"flaky".to_string(), &pc()),
            &tq,
        )
        .await?;
        let attempt: u32 = within(30, h.get_result(WorkflowGetResultOptions::default()))
            .await??
            .to_value(&pc());
        assert_eq!(attempt, 3);
        assert_eq!(acts.c.flaky_calls.load(Ordering::SeqCst), 3);
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let t = types(&events);
        // Retries write no events: one Scheduled, one Started (the last attempt), one Completed.
        assert_eq!(
            t.iter()
                .filter(|e| **e == EventType::ActivityTaskStarted)
                .count(),
            1,
            "{t:?}"
        );
        let started = events
            .iter()
            .find(|e| e.event_type() == EventType::ActivityTaskStarted)
            .expect("started");
        match &started.attributes {
            Some(temporalio_common::protos::temporal::api::history::v1::history_event::Attributes::ActivityTaskStartedEventAttributes(a)) => {
                assert_eq!(a.attempt, 3);
                assert_eq!(a.last_failure.as_ref().map(|f| f.message.as_str()), Some("transient"));
            }
            other => panic!("unexpected attributes {other:?}"),
        }
        // Backoff 100 ms then 200 ms: the close comes at least 300 ms after the schedule.
        let scheduled = events
            .iter()
            .find(|e| e.event_type() == EventType::ActivityTaskScheduled)
            .expect("scheduled");
        let completed = events
            .iter()
            .find(|e| e.event_type() == EventType::ActivityTaskCompleted)
            .expect("completed");
        let gap = kairos_core::time::from_timestamp(completed.event_time.as_ref().expect("time"))
            .duration_since(kairos_core::time::from_timestamp(
            scheduled.event_time.as_ref().expect("time"),
        ))?;
        assert!(
            gap >= Duration::from_millis(300),
            "retries happened after {gap:?}"
        );
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_failure_fails_the_workflow() -> anyhow::Result<()> {
    scenario!(|client, tq, _acts, _server| {
        let h = start(
            &client,
            "retries",
            RawValue::from_value(&"reject".to_string(), &pc()),
            &tq,
        )
        .await?;
        match within(30, h.get_result(WorkflowGetResultOptions::default())).await? {
            Err(WorkflowGetResultError::Failed(e)) => match &*e {
                IncomingError::Activity(act) => match act.cause() {
                    Some(IncomingError::Application(app)) => {
                        assert_eq!(app.type_name(), Some("Declined"));
                        assert_eq!(app.to_string(), "card declined");
                    }
                    other => panic!("unexpected cause {other:?}"),
                },
                other => panic!("unexpected failure {other}"),
            },
            other => panic!("expected a failed workflow, got {:?}", other.map(|_| ())),
        }
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_details_reach_the_next_attempt() -> anyhow::Result<()> {
    scenario!(|client, tq, acts, _server| {
        let h = start(
            &client,
            "retries",
            RawValue::from_value(&"resumable".to_string(), &pc()),
            &tq,
        )
        .await?;
        let attempt: u32 = within(30, h.get_result(WorkflowGetResultOptions::default()))
            .await??
            .to_value(&pc());
        assert_eq!(attempt, 2);
        assert_eq!(
            acts.c.resumed_from.load(Ordering::SeqCst),
            4,
            "attempt 2 resumed from the last heartbeat"
        );
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_to_close_timeout_retries_the_activity() -> anyhow::Result<()> {
    scenario!(|client, tq, acts, _server| {
        let h = start(
            &client,
            "retries",
            RawValue::from_value(&"slow_first".to_string(), &pc()),
            &tq,
        )
        .await?;
        let attempt: u32 = within(30, h.get_result(WorkflowGetResultOptions::default()))
            .await??
            .to_value(&pc());
        assert_eq!(attempt, 2);
        assert!(acts.c.slow_calls.load(Ordering::SeqCst) >= 2);
        anyhow::Ok(())
    })
}

async fn timeout_outcome(which: &str) -> anyhow::Result<String> {
    scenario!(|client, tq, _acts, _server| {
        let h = start(
            &client,
            "timeouts",
            RawValue::from_value(&which.to_string(), &pc()),
            &tq,
        )
        .await?;
        let out: String = within(30, h.get_result(WorkflowGetResultOptions::default()))
            .await??
            .to_value(&pc());
        anyhow::Ok(out)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_to_start_timeout() -> anyhow::Result<()> {
    assert_eq!(
        timeout_outcome("schedule_to_start").await?,
        "ScheduleToStart details=0"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_to_close_timeout_ends_retries() -> anyhow::Result<()> {
    assert_eq!(
        timeout_outcome("schedule_to_close").await?,
        "ScheduleToClose details=0"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_timeout_carries_the_last_details() -> anyhow::Result<()> {
    assert_eq!(timeout_outcome("heartbeat").await?, "Heartbeat details=1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_timeout_is_retried_with_the_details() -> anyhow::Result<()> {
    assert_eq!(timeout_outcome("heartbeat_retry").await?, "resumed with 7");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_cancels_its_activity() -> anyhow::Result<()> {
    scenario!(|client, tq, _acts, _server| {
        let h = start(&client, "cancel_activity", RawValue::new(vec![]), &tq).await?;
        let out: String = within(30, h.get_result(WorkflowGetResultOptions::default()))
            .await??
            .to_value(&pc());
        assert_eq!(out, "activity cancelled");
        let t = types(
            &h.fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?,
        );
        assert!(t.contains(&EventType::ActivityTaskCancelRequested), "{t:?}");
        assert!(t.contains(&EventType::ActivityTaskCanceled), "{t:?}");
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_order_is_compensated_before_it_ends_cancelled() -> anyhow::Result<()> {
    scenario!(|client, tq, _acts, _server| {
        let h = start(&client, "saga", RawValue::new(vec![]), &tq).await?;
        wait_for_event(&h, EventType::TimerStarted).await?;
        h.cancel(WorkflowCancelOptions::builder().reason("customer").build())
            .await?;
        assert!(matches!(
            within(30, h.get_result(WorkflowGetResultOptions::default())).await?,
            Err(WorkflowGetResultError::Cancelled { .. })
        ));
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let t = types(&events);
        let requested = t
            .iter()
            .position(|e| *e == EventType::WorkflowExecutionCancelRequested)
            .expect("cancel requested");
        let refunded = t
            .iter()
            .rposition(|e| *e == EventType::ActivityTaskCompleted)
            .expect("refund completed");
        assert!(
            refunded > requested,
            "the refund ran after the request: {t:?}"
        );
        assert_eq!(t.last(), Some(&EventType::WorkflowExecutionCanceled));
        assert!(t.contains(&EventType::TimerCanceled), "{t:?}");
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cancel_and_terminate() -> anyhow::Result<()> {
    scenario!(|client, tq, _acts, _server| {
        let h = start(&client, "sleeper", RawValue::new(vec![]), &tq).await?;
        wait_for_event(&h, EventType::TimerStarted).await?;
        h.cancel(
            WorkflowCancelOptions::builder()
                .reason("customer changed their mind")
                .build(),
        )
        .await?;
        assert!(matches!(
            within(30, h.get_result(WorkflowGetResultOptions::default())).await?,
            Err(WorkflowGetResultError::Cancelled { .. })
        ));

        let h = start(&client, "sleeper", RawValue::new(vec![]), &tq).await?;
        wait_for_event(&h, EventType::TimerStarted).await?;
        h.terminate(WorkflowTerminateOptions::builder().reason("ops").build())
            .await?;
        assert!(matches!(
            within(30, h.get_result(WorkflowGetResultOptions::default())).await?,
            Err(WorkflowGetResultError::Terminated { .. })
        ));
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_run_timeout() -> anyhow::Result<()> {
    scenario!(|client, tq, _acts, _server| {
        let h = client
            .start_workflow(
                UntypedWorkflow::new("sleeper"),
                RawValue::new(vec![]),
                WorkflowStartOptions::new(tq.as_str(), unique("timeout"))
                    .run_timeout(Duration::from_secs(1))
                    .build(),
            )
            .await?;
        assert!(matches!(
            within(30, h.get_result(WorkflowGetResultOptions::default())).await?,
            Err(WorkflowGetResultError::TimedOut)
        ));
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_workflow_task_is_retried() -> anyhow::Result<()> {
    scenario!(|client, tq, _acts, _server| {
        let h = start(&client, "fails_once", RawValue::new(vec![]), &tq).await?;
        let out: String = within(60, h.get_result(WorkflowGetResultOptions::default()))
            .await??
            .to_value(&pc());
        assert_eq!(out, "recovered");
        let t = types(
            &h.fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?,
        );
        assert!(t.contains(&EventType::WorkflowTaskFailed), "{t:?}");
        anyhow::Ok(())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_workflow_id_is_already_started() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let id = unique("dup");
    let opts = || WorkflowStartOptions::new("nobody-polls", id.clone()).build();
    let first = client
        .start_workflow(
            UntypedWorkflow::new("sleeper"),
            RawValue::new(vec![]),
            opts(),
        )
        .await?;
    match client
        .start_workflow(
            UntypedWorkflow::new("sleeper"),
            RawValue::new(vec![]),
            opts(),
        )
        .await
    {
        Err(WorkflowStartError::AlreadyStarted { run_id, .. }) => {
            assert_eq!(run_id.as_deref(), first.run_id())
        }
        other => panic!("expected AlreadyStarted, got {:?}", other.map(|_| ())),
    }
    server.shutdown().await
}

async fn wait_for_event(
    h: &temporalio_client::WorkflowHandle<temporalio_client::Client, UntypedWorkflow>,
    wanted: EventType,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        if types(&events).contains(&wanted) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no {wanted:?} event within 30s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
