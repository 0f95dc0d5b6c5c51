//! Updates through the official Rust SDK: accepted and completed, rejected by a validator (no
//! event), deduplicated by update id, and refused on a closed run.
use std::time::Duration;

use kairos_testing::TestServer;
use temporalio_client::errors::WorkflowUpdateError;
use temporalio_client::{
    WorkflowExecuteUpdateOptions, WorkflowFetchHistoryOptions, WorkflowGetResultOptions,
    WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    SyncWorkflowContext, Worker, WorkflowContext, WorkflowContextView, WorkflowResult,
};

use crate::support::{connect, run_with_worker, runtime, unique, within};
use crate::worker_options;

#[workflow]
#[derive(Default)]
struct Tipper {
    tips: u32,
    done: bool,
}

#[workflow_methods]
impl Tipper {
    /// Returns the tips once told to finish.
    #[run(name = "tipper")]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<u32> {
        ctx.wait_condition(|s| s.done).await?;
        Ok(ctx.state(|s| s.tips))
    }

    #[update(name = "add_tip")]
    fn add_tip(&mut self, _ctx: &mut SyncWorkflowContext<Self>, amount: u32) -> u32 {
        self.tips += amount;
        self.tips
    }

    #[update_validator(add_tip)]
    fn validate_tip(
        &self,
        _ctx: &WorkflowContextView,
        amount: &u32,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if *amount > 100 {
            return Err("absurd tip".into());
        }
        Ok(())
    }

    #[signal(name = "finish")]
    fn finish(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.done = true;
    }

    /// A tip that comes by signal (no answer).
    #[signal(name = "cash_tip")]
    fn cash_tip(&mut self, _ctx: &mut SyncWorkflowContext<Self>, amount: u32) {
        self.tips += amount;
    }
}

fn count(
    events: &[temporalio_common::protos::temporal::api::history::v1::HistoryEvent],
    t: EventType,
) -> usize {
    events.iter().filter(|e| e.event_type() == t).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_are_accepted_rejected_deduplicated_and_refused_once_closed() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq).register_workflow::<Tipper>()?.build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let h = client
            .start_workflow(
                Tipper::run,
                (),
                WorkflowStartOptions::new(&tq, unique("tipper"))
                    .execution_timeout(Duration::from_secs(120))
                    .build(),
            )
            .await?;
        let once = WorkflowExecuteUpdateOptions::builder()
            .update_id("tip-1".to_string())
            .build();
        let total = within(30, h.execute_update(Tipper::add_tip, 5, once.clone())).await??;
        assert_eq!(total, 5);
        let again = within(30, h.execute_update(Tipper::add_tip, 5, once)).await??;
        assert_eq!(
            again, 5,
            "the same update id returns the stored outcome, not a second tip"
        );
        let total = within(
            30,
            h.execute_update(Tipper::add_tip, 7, WorkflowExecuteUpdateOptions::default()),
        )
        .await??;
        assert_eq!(total, 12);
        match within(
            30,
            h.execute_update(
                Tipper::add_tip,
                500,
                WorkflowExecuteUpdateOptions::default(),
            ),
        )
        .await?
        {
            Err(WorkflowUpdateError::Failed(failure)) => {
                assert!(format!("{failure:?}").contains("absurd tip"), "{failure:?}")
            }
            other => panic!("expected the validator's rejection, got {other:?}"),
        }
        h.signal(Tipper::finish, (), WorkflowSignalOptions::default())
            .await?;
        let tips = within(30, h.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(tips, 12);
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert_eq!(
            count(&events, EventType::WorkflowExecutionUpdateAccepted),
            2
        );
        assert_eq!(
            count(&events, EventType::WorkflowExecutionUpdateCompleted),
            2
        );
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.event_id, i as i64 + 1, "contiguous event ids");
        }
        match h
            .execute_update(Tipper::add_tip, 1, WorkflowExecuteUpdateOptions::default())
            .await
        {
            Err(WorkflowUpdateError::NotFound(status)) => {
                assert!(status.message().contains("already completed"), "{status:?}")
            }
            other => panic!("expected NOT_FOUND on a closed run, got {other:?}"),
        }
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_start_starts_or_reuses_and_reports_a_taken_id() -> anyhow::Result<()> {
    use temporalio_client::errors::{WorkflowStartError, WorkflowUpdateWithStartError};
    use temporalio_client::{WorkflowIdConflictPolicy, WorkflowUpdateWithStartOptions};
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq).register_workflow::<Tipper>()?.build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let id = unique("tipper-uws");
        let opts = |policy| {
            WorkflowUpdateWithStartOptions::new(tq.clone(), id.clone(), policy)
                .execution_timeout(Duration::from_secs(120))
                .build()
        };
        // Starts the workflow; its first task carries the update.
        let first = within(
            30,
            client.execute_update_with_start_workflow(
                Tipper::run,
                (),
                Tipper::add_tip,
                5,
                opts(WorkflowIdConflictPolicy::UseExisting),
            ),
        )
        .await??;
        assert_eq!(first, 5);
        // The running workflow gets the second.
        let second = within(
            30,
            client.execute_update_with_start_workflow(
                Tipper::run,
                (),
                Tipper::add_tip,
                2,
                opts(WorkflowIdConflictPolicy::UseExisting),
            ),
        )
        .await??;
        assert_eq!(second, 7);
        // With FAIL, the taken id is the start operation's error.
        match client
            .execute_update_with_start_workflow(
                Tipper::run,
                (),
                Tipper::add_tip,
                1,
                opts(WorkflowIdConflictPolicy::Fail),
            )
            .await
        {
            Err(WorkflowUpdateWithStartError::Start(WorkflowStartError::AlreadyStarted {
                ..
            })) => {}
            other => panic!("expected the start's AlreadyStarted, got {other:?}"),
        }
        let h = client.get_workflow_handle::<Tipper>(&id);
        h.signal(Tipper::finish, (), WorkflowSignalOptions::default())
            .await?;
        let tips = within(30, h.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(tips, 7);
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert_eq!(count(&events, EventType::WorkflowExecutionStarted), 1);
        assert_eq!(
            count(&events, EventType::WorkflowExecutionUpdateAccepted),
            2
        );
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_racing_signals_lose_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq).register_workflow::<Tipper>()?.build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let h = client
            .start_workflow(
                Tipper::run,
                (),
                WorkflowStartOptions::new(&tq, unique("tipper-race"))
                    .execution_timeout(Duration::from_secs(120))
                    .build(),
            )
            .await?;
        let updates = (0..20)
            .map(|_| h.execute_update(Tipper::add_tip, 1, WorkflowExecuteUpdateOptions::default()));
        let signals =
            (0..20).map(|_| h.signal(Tipper::cash_tip, 1, WorkflowSignalOptions::default()));
        let (answers, sent) = within(
            60,
            futures::future::join(
                futures::future::join_all(updates),
                futures::future::join_all(signals),
            ),
        )
        .await?;
        let mut totals = Vec::new();
        for a in answers {
            totals.push(a?);
        }
        for s in sent {
            s?;
        }
        // Each update saw its own running total: all different, none above 40.
        totals.sort();
        totals.dedup();
        assert_eq!(totals.len(), 20, "{totals:?}");
        assert!(totals.iter().all(|t| *t >= 1 && *t <= 40), "{totals:?}");
        h.signal(Tipper::finish, (), WorkflowSignalOptions::default())
            .await?;
        let tips = within(30, h.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(tips, 40, "every update and every signal counted once");
        let events = h
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert_eq!(
            count(&events, EventType::WorkflowExecutionUpdateCompleted),
            20
        );
        assert_eq!(count(&events, EventType::WorkflowExecutionSignaled), 21);
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}
