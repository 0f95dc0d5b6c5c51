//! ResetWorkflowExecution through the official Rust SDK's client: a running workflow reset to
//! its first workflow task gets a new run that replays from there, with the signals it had
//! received re-applied (or not, per the reapply type); the old run is terminated; the same
//! request id answers the same run; bad reset points are refused.
use std::time::Duration;

use kairos_testing::TestServer;
use temporalio_client::{
    Client, WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowSignalOptions,
    WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::common::v1::WorkflowExecution;
use temporalio_common::protos::temporal::api::enums::v1::{
    EventType, ResetReapplyExcludeType, WorkflowTaskFailedCause,
};
use temporalio_common::protos::temporal::api::history::v1::{HistoryEvent, history_event};
use temporalio_common::protos::temporal::api::workflowservice::v1::ResetWorkflowExecutionRequest;
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{SyncWorkflowContext, Worker, WorkflowContext, WorkflowResult};

use crate::support::{connect, run_with_worker, runtime, unique, within};
use crate::worker_options;

#[workflow]
#[derive(Default)]
struct Basket {
    items: Vec<String>,
}

#[workflow_methods]
impl Basket {
    /// Returns the items once two arrived.
    #[run(name = "basket")]
    async fn run(ctx: &mut WorkflowContext<Self>) -> WorkflowResult<Vec<String>> {
        ctx.wait_condition(|s| s.items.len() >= 2).await?;
        Ok(ctx.state(|s| s.items.clone()))
    }

    #[signal(name = "item")]
    fn item(&mut self, _ctx: &mut SyncWorkflowContext<Self>, item: String) {
        self.items.push(item);
    }
}

async fn history(client: &Client, id: &str, run_id: &str) -> anyhow::Result<Vec<HistoryEvent>> {
    let handle = temporalio_client::WorkflowHandle::<Client, Basket>::new(
        client.clone(),
        temporalio_client::WorkflowExecutionInfo::builder()
            .namespace("default")
            .workflow_id(id)
            .run_id(run_id)
            .build(),
    );
    Ok(handle
        .fetch_history(WorkflowFetchHistoryOptions::builder().build())
        .into_events()
        .await?)
}

fn reset_request(
    id: &str,
    run_id: &str,
    finish: i64,
    request_id: &str,
) -> ResetWorkflowExecutionRequest {
    ResetWorkflowExecutionRequest {
        namespace: "default".into(),
        workflow_execution: Some(WorkflowExecution {
            workflow_id: id.into(),
            run_id: run_id.into(),
        }),
        reason: "bug fixed".into(),
        workflow_task_finish_event_id: finish,
        request_id: request_id.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_replays_from_the_point_with_its_signals_and_ends_the_old_run() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq).register_workflow::<Basket>()?.build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let id = unique("basket");
        let opts = WorkflowStartOptions::new(&tq, &id)
            .execution_timeout(Duration::from_secs(120))
            .build();
        let handle = client.start_workflow(Basket::run, (), opts).await?;
        let first_run = handle.info().run_id.clone().unwrap_or_default();
        // The first task completes before the signal is sent (1-4), so it lands at 5.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while history(&client, &id, &first_run).await?.len() < 4 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "first task not completed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        handle
            .signal(
                Basket::item,
                "pizza".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await?;
        // Wait until the task that delivered the signal completed: 1-4 start, 5 signal, 6-8.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while history(&client, &id, &first_run).await?.len() < 8 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "signal not processed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut svc = client.connection().workflow_service();
        // A reset point that is not a workflow task's end (or start) is refused.
        let bad = svc
            .reset_workflow_execution(tonic::Request::new(reset_request(&id, &first_run, 5, "r0")))
            .await
            .expect_err("event 5 is a WorkflowExecutionSignaled");
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
        let new_run = svc
            .reset_workflow_execution(tonic::Request::new(reset_request(&id, &first_run, 4, "r1")))
            .await?
            .into_inner()
            .run_id;
        assert_ne!(new_run, first_run);
        // The same request again answers the same run.
        let again = svc
            .reset_workflow_execution(tonic::Request::new(reset_request(&id, &first_run, 4, "r1")))
            .await?
            .into_inner()
            .run_id;
        assert_eq!(again, new_run);
        // The old run was terminated with the reset's reason.
        let old = history(&client, &id, &first_run).await?;
        match old.last().and_then(|e| e.attributes.clone()) {
            Some(history_event::Attributes::WorkflowExecutionTerminatedEventAttributes(a)) => {
                assert_eq!(a.reason, "bug fixed")
            }
            other => panic!("old run not terminated: {other:?}"),
        }
        // The new run: the old events up to the task, the task failed for the reset, the
        // signal re-applied.
        let new = history(&client, &id, &new_run).await?;
        assert_eq!(&new[..3], &old[..3]);
        match &new[3].attributes {
            Some(history_event::Attributes::WorkflowTaskFailedEventAttributes(a)) => {
                assert_eq!(a.cause(), WorkflowTaskFailedCause::ResetWorkflow);
                assert_eq!(a.base_run_id, first_run);
                assert_eq!(a.new_run_id, new_run);
            }
            other => panic!("not the reset's failed task: {other:?}"),
        }
        assert_eq!(new[4].event_type(), EventType::WorkflowExecutionSignaled);
        // The current run is the new one: a signal to the id reaches it, and it completes.
        client
            .get_workflow_handle::<Basket>(&id)
            .signal(
                Basket::item,
                "tiramisu".to_string(),
                WorkflowSignalOptions::default(),
            )
            .await?;
        let out = within(
            30,
            client
                .get_workflow_handle::<Basket>(&id)
                .get_result(WorkflowGetResultOptions::default()),
        )
        .await??;
        assert_eq!(out, vec!["pizza".to_string(), "tiramisu".to_string()]);
        // Reset again, from the completed run, with signals excluded from re-applying.
        let mut req = reset_request(&id, &new_run, 4, "r2");
        req.reset_reapply_exclude_types = vec![ResetReapplyExcludeType::Signal as i32];
        let third = svc
            .reset_workflow_execution(tonic::Request::new(req))
            .await?
            .into_inner()
            .run_id;
        let events = history(&client, &id, &third).await?;
        assert!(
            events
                .iter()
                .all(|e| e.event_type() != EventType::WorkflowExecutionSignaled),
            "no signal re-applied"
        );
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}

#[workflow]
#[derive(Default)]
struct Household;

#[workflow_methods]
impl Household {
    /// Starts a basket as its child and returns what the child returns.
    #[run(name = "household")]
    async fn run(ctx: &mut WorkflowContext<Self>, child_id: String) -> WorkflowResult<Vec<String>> {
        let opts = temporalio_sdk::ChildWorkflowOptions::builder()
            .workflow_id(child_id)
            .build();
        let child = ctx
            .start_child_workflow(Basket::run, (), opts)
            .await
            .map_err(|e| temporalio_sdk::ApplicationFailure::new(format!("start: {e}")))?;
        Ok(child
            .result()
            .await
            .map_err(|e| temporalio_sdk::ApplicationFailure::new(format!("{e}")))?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_parent_keeps_its_started_child_and_gets_its_result() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let options = worker_options!(&tq)
        .register_workflow::<Basket>()?
        .register_workflow::<Household>()?
        .build();
    let mut w = Worker::new(&rt, client.clone(), options)?;
    let result = run_with_worker(&mut w, async {
        let id = unique("household");
        let child_id = format!("{id}-basket");
        let opts = WorkflowStartOptions::new(&tq, &id)
            .execution_timeout(Duration::from_secs(120))
            .build();
        let handle = client
            .start_workflow(Household::run, child_id.clone(), opts)
            .await?;
        let first_run = handle.info().run_id.clone().unwrap_or_default();
        // 5 Initiated, 6 ChildStarted, 7-9 the task that saw it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let events = loop {
            let events = history(&client, &id, &first_run).await?;
            if events.len() >= 9 {
                break events;
            }
            assert!(tokio::time::Instant::now() < deadline, "child not started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            events[5].event_type(),
            EventType::ChildWorkflowExecutionStarted
        );
        assert_eq!(events[8].event_type(), EventType::WorkflowTaskCompleted);
        let mut svc = client.connection().workflow_service();
        let new_run = svc
            .reset_workflow_execution(tonic::Request::new(reset_request(&id, &first_run, 9, "r1")))
            .await?
            .into_inner()
            .run_id;
        // The child was left running (the reset's terminate applies no close policy) and now
        // reports to the new run.
        let basket = client.get_workflow_handle::<Basket>(&child_id);
        for item in ["bread", "milk"] {
            basket
                .signal(
                    Basket::item,
                    item.to_string(),
                    WorkflowSignalOptions::default(),
                )
                .await?;
        }
        let current = client.get_workflow_handle::<Household>(&id);
        let out = within(30, current.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(out, vec!["bread".to_string(), "milk".to_string()]);
        let events = history(&client, &id, &new_run).await?;
        assert!(
            events
                .iter()
                .any(|e| e.event_type() == EventType::ChildWorkflowExecutionCompleted),
            "the new run got the child's result"
        );
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}
