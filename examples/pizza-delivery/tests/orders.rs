//! Every path of an order, end to end: an in-process Kairos, the simulator on a real port with
//! its SQLite ledger, and a worker of the official Rust SDK. Faults are forced per order (words
//! in its id), so each path is deterministic.
use std::time::Duration;

use kairos_testing::TestServer;
use pizza_delivery::sim::{Faults, open_ledger, router, serve};
use pizza_delivery::workflow_v1::PizzaOrderV1;
use pizza_delivery::{Order, Pizza, PizzaOrder, Status};
use serde_json::{Value, json};
use temporalio_client::errors::WorkflowUpdateError;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowCancelOptions,
    WorkflowExecuteUpdateOptions, WorkflowFetchHistoryOptions, WorkflowGetResultOptions,
    WorkflowQueryOptions, WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::protos::temporal::api::history::v1::History;
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

struct World {
    server: TestServer,
    client: Client,
    sim: String,
    _dir: tempfile::TempDir,
}

async fn world(faults: Faults) -> anyhow::Result<World> {
    let server = TestServer::start().await?;
    let options = ConnectionOptions::new(Url::parse(&server.url())?)
        .identity("pizza-test")
        .build();
    let client = Client::new(
        Connection::connect(options).await?,
        ClientOptions::new("default").build(),
    )?;
    let dir = tempfile::tempdir()?;
    let ledger = open_ledger(&dir.path().join("ledger.db"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(
        listener,
        router(ledger, faults, Some(client.clone())),
    ));
    Ok(World {
        server,
        client,
        sim,
        _dir: dir,
    })
}

impl World {
    fn order(&self, words: &str, card: &str, deadline_secs: u64) -> Order {
        Order {
            id: format!("order-{words}-{}", uuid::Uuid::new_v4()),
            customer: "ada".into(),
            amount_cents: 1850,
            card: card.into(),
            cooking_deadline_secs: deadline_secs,
            sim: self.sim.clone(),
        }
    }

    async fn start(&self, order: &Order) -> anyhow::Result<()> {
        self.client
            .start_workflow(
                PizzaOrder::run,
                order.clone(),
                WorkflowStartOptions::new("pizza", &order.id)
                    .execution_timeout(Duration::from_secs(120))
                    .build(),
            )
            .await?;
        Ok(())
    }

    async fn ledger(&self) -> anyhow::Result<Value> {
        Ok(
            pizza_delivery::http::request(&self.sim, "POST", "/ledger", &json!({}))
                .await?
                .body,
        )
    }

    async fn charges(&self, order: &Order) -> anyhow::Result<Vec<Value>> {
        let ledger = self.ledger().await?;
        Ok(ledger["charges"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["order_id"] == json!(order.id))
            .collect())
    }

    async fn status(&self, order: &Order) -> anyhow::Result<Status> {
        Ok(self
            .client
            .get_workflow_handle::<PizzaOrder>(&order.id)
            .query(PizzaOrder::status, (), WorkflowQueryOptions::default())
            .await?)
    }

    /// Polls the status query until `stage` (or the deadline).
    async fn wait_stage(&self, order: &Order, stage: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(s) = self.status(order).await
                && s.stage == stage
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "never reached {stage}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn result(&self, order: &Order) -> anyhow::Result<String> {
        let handle = self.client.get_workflow_handle::<PizzaOrder>(&order.id);
        Ok(tokio::time::timeout(
            Duration::from_secs(60),
            handle.get_result(WorkflowGetResultOptions::default()),
        )
        .await??)
    }
}

fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .heartbeat_interval(None)
            .build()
            .map_err(anyhow::Error::msg)?,
    )?)
}

/// Runs `body` while a worker (current code, or version 1) polls.
async fn with_worker<T>(
    world: &World,
    v1: bool,
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let rt = runtime()?;
    let options = WorkerOptions::new("pizza").register_activities(Pizza);
    let options = if v1 {
        options.register_workflow::<PizzaOrderV1>()?
    } else {
        options.register_workflow::<PizzaOrder>()?
    }
    .graceful_shutdown_period(Duration::from_secs(2))
    .build();
    let mut worker = Worker::new(&rt, world.client.clone(), options)?;
    let shutdown = worker.shutdown_handle();
    let run = worker.run();
    tokio::pin!(run);
    tokio::pin!(body);
    tokio::select! {
        out = &mut body => { shutdown(); run.await?; out }
        res = &mut run => { res?; anyhow::bail!("worker stopped early") }
    }
}

fn quick() -> Faults {
    Faults {
        cook_time: Duration::from_millis(100),
        drive_time: Duration::from_millis(300),
        ..Faults::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_declined_flaky_and_tipped_orders() -> anyhow::Result<()> {
    let w = world(quick()).await?;
    let result = with_worker(&w, false, async {
        // Happy path, with a tip: accepted, and an absurd one refused.
        let happy = w.order("happy", "ok", 30);
        w.start(&happy).await?;
        let handle = w.client.get_workflow_handle::<PizzaOrder>(&happy.id);
        let total = handle
            .execute_update(PizzaOrder::add_tip, 300, WorkflowExecuteUpdateOptions::default())
            .await?;
        assert_eq!(total, 300);
        match handle
            .execute_update(PizzaOrder::add_tip, 1_000_000, WorkflowExecuteUpdateOptions::default())
            .await
        {
            Err(WorkflowUpdateError::Failed(f)) => {
                assert!(format!("{f:?}").contains("a tip must be between"), "{f:?}")
            }
            other => panic!("an absurd tip must be refused: {other:?}"),
        }
        assert_eq!(w.result(&happy).await?, "delivered");
        let status = w.status(&happy).await?;
        let stages: Vec<&str> = status.stages.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(stages, ["taken", "charging", "cooking", "delivering", "delivered"]);
        assert_eq!(status.tip_cents, 300);
        assert!(status.courier.is_some());
        let charges = w.charges(&happy).await?;
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0]["refunded"], json!(0));
        let ledger = w.ledger().await?;
        assert!(
            ledger["loyalty"].as_array().unwrap().iter().any(|l| l["order_id"] == json!(happy.id)),
            "version 2 awards loyalty points"
        );

        // A declined card: nobody is charged.
        let declined = w.order("declined", "declined", 30);
        w.start(&declined).await?;
        assert_eq!(w.result(&declined).await?, "payment_declined");
        assert!(w.charges(&declined).await?.is_empty());

        // The gateway fails twice (the second time after charging): retried, charged once.
        let flaky = w.order("flaky-pay", "ok", 30);
        w.start(&flaky).await?;
        assert_eq!(w.result(&flaky).await?, "delivered");
        assert_eq!(w.charges(&flaky).await?.len(), 1);
        let events = w
            .client
            .get_workflow_handle::<PizzaOrder>(&flaky.id)
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        let started = events.iter().find_map(|e| match &e.attributes {
            Some(temporalio_common::protos::temporal::api::history::v1::history_event::Attributes::ActivityTaskStartedEventAttributes(a)) => Some(a.attempt),
            _ => None,
        });
        assert_eq!(started, Some(3), "the charge succeeded on its third attempt");
        anyhow::Ok(())
    })
    .await;
    w.server.shutdown().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cafe_that_never_cooks_and_a_lost_courier() -> anyhow::Result<()> {
    let w = world(quick()).await?;
    let result = with_worker(&w, false, async {
        // Never cooked within its deadline: cancelled at the cafe and refunded.
        let slow = w.order("slow-cafe", "ok", 1);
        w.start(&slow).await?;
        assert_eq!(w.result(&slow).await?, "refunded");
        let charges = w.charges(&slow).await?;
        assert_eq!(charges.len(), 1);
        assert_eq!(charges[0]["refunded"], json!(1));
        let ledger = w.ledger().await?;
        let cafe = ledger["cafe"].as_array().unwrap();
        assert!(cafe.iter().any(|c| c["order_id"] == json!(slow.id) && c["state"] == json!("cancelled")));

        // The first courier vanishes: its heartbeats stop, another courier delivers.
        let lost = w.order("lost-courier", "ok", 30);
        w.start(&lost).await?;
        assert_eq!(w.result(&lost).await?, "delivered");
        let status = w.status(&lost).await?;
        let events = w
            .client
            .get_workflow_handle::<PizzaOrder>(&lost.id)
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        // Only the courier is retried here: its second attempt delivered.
        let attempt = events
            .iter()
            .filter_map(|e| match &e.attributes {
                Some(temporalio_common::protos::temporal::api::history::v1::history_event::Attributes::ActivityTaskStartedEventAttributes(a)) => Some(a.attempt),
                _ => None,
            })
            .max();
        assert_eq!(attempt, Some(2), "the second courier delivered");
        assert!(status.courier.is_some());
        anyhow::Ok(())
    })
    .await;
    w.server.shutdown().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cancels_before_and_after_pickup() -> anyhow::Result<()> {
    let w = world(Faults {
        cook_time: Duration::from_millis(100),
        drive_time: Duration::from_secs(3),
        ..Faults::default()
    })
    .await?;
    let result = with_worker(&w, false, async {
        // Before pickup (the cafe is slow): cancelled at the cafe and refunded.
        let early = w.order("slow-cafe", "ok", 60);
        w.start(&early).await?;
        w.wait_stage(&early, "cooking").await?;
        w.client
            .get_workflow_handle::<PizzaOrder>(&early.id)
            .cancel(
                WorkflowCancelOptions::builder()
                    .reason("changed my mind")
                    .build(),
            )
            .await?;
        assert!(w.result(&early).await.is_err(), "ends cancelled");
        let events = w
            .client
            .get_workflow_handle::<PizzaOrder>(&early.id)
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await?;
        assert_eq!(
            events.last().map(|e| e.event_type()),
            Some(EventType::WorkflowExecutionCanceled)
        );
        let charges = w.charges(&early).await?;
        assert_eq!(charges[0]["refunded"], json!(1));

        // After pickup: delivered anyway, charged, not refunded.
        let late = w.order("late-cancel", "ok", 60);
        w.start(&late).await?;
        w.wait_stage(&late, "delivering").await?;
        w.client
            .get_workflow_handle::<PizzaOrder>(&late.id)
            .cancel(WorkflowCancelOptions::builder().reason("too late").build())
            .await?;
        assert_eq!(w.result(&late).await?, "delivered");
        let charges = w.charges(&late).await?;
        assert_eq!(charges[0]["refunded"], json!(0));
        anyhow::Ok(())
    })
    .await;
    w.server.shutdown().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_one_histories_replay_on_version_two() -> anyhow::Result<()> {
    let w = world(quick()).await?;
    // Record histories with version 1 (before loyalty points).
    let orders = vec![
        w.order("v1-happy", "ok", 30),
        w.order("v1-declined", "declined", 30),
        w.order("v1-slow-cafe", "ok", 1),
    ];
    let histories = with_worker(&w, true, async {
        let mut histories = Vec::new();
        for order in &orders {
            w.client
                .start_workflow(
                    PizzaOrderV1::run,
                    order.clone(),
                    WorkflowStartOptions::new("pizza", &order.id)
                        .execution_timeout(Duration::from_secs(120))
                        .build(),
                )
                .await?;
            w.result(order).await?;
            let events = w
                .client
                .get_workflow_handle::<PizzaOrder>(&order.id)
                .fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?;
            assert!(
                events
                    .iter()
                    .all(|e| e.event_type() != EventType::MarkerRecorded),
                "version 1 records no patch marker"
            );
            histories.push(History { events });
        }
        anyhow::Ok(histories)
    })
    .await?;
    // Version 2's code replays every one of them (the patch takes the old path).
    let replayer = WorkflowReplayer::new(
        WorkflowReplayerOptions::new()
            .register_workflow::<PizzaOrder>()?
            .build(),
    )?;
    for h in histories {
        replayer.replay_workflow(h.into()).await?;
    }
    w.server.shutdown().await?;
    Ok(())
}
