//! Local activities and `patched()` through the official Rust SDK across a worker restart with
//! changed workflow code: the order in flight replays version 1's path (no patch marker), a new
//! order takes version 2's (the marker and the TemporalChangeVersion search attribute).
use std::time::Duration;

use kairos_testing::TestServer;
use temporalio_client::{
    WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowSignalOptions,
    WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::history::v1::{HistoryEvent, history_event};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    LocalActivityOptions, SyncWorkflowContext, Worker, WorkflowContext, WorkflowResult,
};

use crate::support::{connect, run_with_worker, runtime, unique, within};
use crate::worker_options;

struct Kitchen;

#[activities]
impl Kitchen {
    #[activity(name = "prepare")]
    async fn prepare(_ctx: ActivityContext, order: String) -> Result<String, ActivityError> {
        Ok(format!("prepared {order}"))
    }

    #[activity(name = "loyalty")]
    async fn loyalty(_ctx: ActivityContext, order: String) -> Result<u32, ActivityError> {
        Ok(order.len() as u32)
    }
}

fn local() -> LocalActivityOptions {
    LocalActivityOptions::builder()
        .start_to_close_timeout(Duration::from_secs(10))
        .build()
}

#[workflow]
#[derive(Default)]
struct OrderV1 {
    go: bool,
}

#[workflow_methods]
impl OrderV1 {
    #[run(name = "order")]
    async fn run(ctx: &mut WorkflowContext<Self>, order: String) -> WorkflowResult<String> {
        let prepared = ctx
            .execute_local_activity(Kitchen::prepare, order, local())
            .await?;
        ctx.wait_condition(|s| s.go).await?;
        Ok(format!("v1: {prepared}"))
    }

    #[signal(name = "go")]
    fn go(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.go = true;
    }
}

#[workflow]
#[derive(Default)]
struct OrderV2 {
    go: bool,
}

#[workflow_methods]
impl OrderV2 {
    /// Version 2 adds loyalty points behind a patch.
    #[run(name = "order")]
    async fn run(ctx: &mut WorkflowContext<Self>, order: String) -> WorkflowResult<String> {
        let prepared = ctx
            .execute_local_activity(Kitchen::prepare, order.clone(), local())
            .await?;
        let points = if ctx.patched("loyalty-points") {
            Some(
                ctx.execute_local_activity(Kitchen::loyalty, order, local())
                    .await?,
            )
        } else {
            None
        };
        ctx.wait_condition(|s| s.go).await?;
        Ok(match points {
            Some(p) => format!("v2: {prepared}, {p} points"),
            None => format!("v2 on the old path: {prepared}"),
        })
    }

    #[signal(name = "go")]
    fn go(&mut self, _ctx: &mut SyncWorkflowContext<Self>) {
        self.go = true;
    }
}

fn markers(events: &[HistoryEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(history_event::Attributes::MarkerRecordedEventAttributes(a)) => {
                Some(a.marker_name.clone())
            }
            _ => None,
        })
        .collect()
}

async fn wait_for_task_completions(
    client: &temporalio_client::Client,
    id: &str,
    n: usize,
) -> anyhow::Result<Vec<HistoryEvent>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = client
            .get_workflow_handle::<OrderV2>(id)
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let done = events
            .iter()
            .filter(|e| e.event_type() == EventType::WorkflowTaskCompleted)
            .count();
        if done >= n {
            return Ok(events);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{id} made no progress"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_in_flight_keeps_its_path_across_a_patched_deployment() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let client = connect(&server).await?;
    let rt = runtime()?;
    let tq = unique("tq");
    let start = |id: &str| {
        WorkflowStartOptions::new(&tq, id)
            .execution_timeout(Duration::from_secs(120))
            .build()
    };
    let old_id = unique("order-old");
    // Version 1 runs the first order up to its wait.
    let v1 = worker_options!(&tq)
        .register_workflow::<OrderV1>()?
        .register_activities(Kitchen)
        .build();
    let mut w1 = Worker::new(&rt, client.clone(), v1)?;
    run_with_worker(&mut w1, async {
        client
            .start_workflow(OrderV1::run, "margherita".to_string(), start(&old_id))
            .await?;
        wait_for_task_completions(&client, &old_id, 1).await?;
        anyhow::Ok(())
    })
    .await?;
    drop(w1);
    // Version 2 is deployed: the old order finishes on its old path, a new one takes the new.
    let v2 = worker_options!(&tq)
        .register_workflow::<OrderV2>()?
        .register_activities(Kitchen)
        .build();
    let mut w2 = Worker::new(&rt, client.clone(), v2)?;
    let result = run_with_worker(&mut w2, async {
        let old = client.get_workflow_handle::<OrderV2>(&old_id);
        old.signal(OrderV2::go, (), WorkflowSignalOptions::default())
            .await?;
        let out = within(30, old.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(out, "v2 on the old path: prepared margherita");
        let new_id = unique("order-new");
        let new = client
            .start_workflow(OrderV2::run, "diavola".to_string(), start(&new_id))
            .await?;
        wait_for_task_completions(&client, &new_id, 1).await?;
        new.signal(OrderV2::go, (), WorkflowSignalOptions::default())
            .await?;
        let out = within(30, new.get_result(WorkflowGetResultOptions::default())).await??;
        assert_eq!(out, "v2: prepared diavola, 7 points");
        let old_events = old
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let new_events = new
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        // Local activities are markers; only the new order has the patch marker and its
        // TemporalChangeVersion upsert.
        assert_eq!(markers(&old_events).len(), 1, "{:?}", markers(&old_events));
        assert_eq!(markers(&new_events).len(), 3, "{:?}", markers(&new_events));
        let upserts = |events: &[HistoryEvent]| {
            events
                .iter()
                .filter(|e| e.event_type() == EventType::UpsertWorkflowSearchAttributes)
                .count()
        };
        assert_eq!(upserts(&old_events), 0);
        assert_eq!(upserts(&new_events), 1);
        anyhow::Ok(())
    })
    .await;
    server.shutdown().await?;
    result
}
