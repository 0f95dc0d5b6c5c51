//! A cluster of real `kairos server start` processes on the machine's PostgreSQL: any node
//! serves any request (workers on two nodes, starts, signals and reads through three, children
//! on whichever node their id lands), a node killed with SIGKILL has its shards taken over within seconds and every
//! workflow completes, and a node paused with SIGSTOP past its membership timeout rejoins
//! without duplicating or losing anything. Skipped, saying so, without
//! `KAIROS_TEST_POSTGRES_URL`.
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use temporalio_client::{
    Client, UntypedWorkflow, WorkflowFetchHistoryOptions, WorkflowGetResultOptions,
    WorkflowSignalOptions, WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::history::v1::{HistoryEvent, history_event};
use temporalio_sdk::activities::{ActivityContext, ActivityError, activities};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::workflows::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityOptions, ApplicationFailure, ChildWorkflowOptions, Runtime, SyncWorkflowContext,
    Worker, WorkerOptions, WorkflowContext, WorkflowResult,
};

use crate::support::{Kairos, connect, free_port};

/// Shards of the test cluster. Owners follow from the node names alone (rendezvous hashing):
/// with these names and 16 shards, a, b, c and d hold 2, 4, 6 and 4; without c, a, b and d
/// hold 6, 4 and 6; without c and d, a and b hold 9 and 7. Every node holds some in each
/// phase, which `wait_for_balance` checks.
pub(crate) const SHARDS: usize = 16;

/// Workflows per batch of the cluster test (three batches: 501 workflows).
const PER_BATCH: usize = 167;

#[derive(Clone, Default)]
pub(crate) struct Legs {
    pub(crate) runs: Arc<AtomicU32>,
}

#[activities]
impl Legs {
    #[activity(name = "leg")]
    async fn leg(self: Arc<Self>, _ctx: ActivityContext, n: u32) -> Result<u32, ActivityError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Ok(n + 1)
    }
}

#[workflow]
#[derive(Default)]
pub(crate) struct Delivery {
    tips: u32,
}

#[workflow_methods]
impl Delivery {
    /// Three legs, each an activity followed by a durable timer; then a receipt as a child
    /// workflow (placed by its own id, so often on another node); then a tip, by signal.
    #[run(name = "delivery")]
    pub(crate) async fn run(ctx: &mut WorkflowContext<Self>, id: String) -> WorkflowResult<u32> {
        let mut at = 0;
        for _ in 0..3 {
            at = ctx
                .execute_activity(
                    Legs::leg,
                    at,
                    ActivityOptions::start_to_close_timeout(Duration::from_secs(5)),
                )
                .await?;
            ctx.timer(Duration::from_millis(300)).await;
        }
        let receipt = ChildWorkflowOptions::builder()
            .workflow_id(format!("{id}-receipt"))
            .build();
        let receipt = ctx
            .start_child_workflow(Receipt::run, at, receipt)
            .await
            .map_err(|e| ApplicationFailure::new(format!("receipt: {e}")))?
            .result()
            .await
            .map_err(|e| ApplicationFailure::new(format!("receipt: {e}")))?;
        ctx.wait_condition(|s| s.tips > 0).await?;
        Ok(receipt + ctx.state(|s| s.tips))
    }

    #[signal(name = "tip")]
    fn tip(&mut self, _ctx: &mut SyncWorkflowContext<Self>, n: u32) {
        self.tips += n;
    }
}

#[workflow]
#[derive(Default)]
struct Receipt;

#[workflow_methods]
impl Receipt {
    /// One more leg.
    #[run(name = "receipt")]
    async fn run(ctx: &mut WorkflowContext<Self>, at: u32) -> WorkflowResult<u32> {
        Ok(ctx
            .execute_activity(
                Legs::leg,
                at,
                ActivityOptions::start_to_close_timeout(Duration::from_secs(5)),
            )
            .await?)
    }
}

/// One node: its process and the ports it serves (kept across restarts).
pub(crate) struct Node {
    pub(crate) process: Kairos,
    port: u16,
    args: Vec<String>,
    metrics: u16,
}

impl Node {
    pub(crate) fn start(url: &str, name: &str) -> Node {
        Self::start_with(url, name, &[])
    }

    /// [`Node::start`] with extra flags.
    pub(crate) fn start_with(url: &str, name: &str, extra: &[&str]) -> Node {
        Self::start_env(url, name, extra, &[])
    }

    /// [`Node::start_with`] with extra environment variables.
    pub(crate) fn start_env(url: &str, name: &str, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let (port, metrics) = (free_port(), free_port());
        let args: Vec<String> = [
            "--db-url",
            url,
            "--internal-port",
            &free_port().to_string(),
            "--node-name",
            name,
            "--num-history-shards",
            &SHARDS.to_string(),
            "--membership-timeout",
            "2s",
            "--metrics-port",
            &metrics.to_string(),
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
        Node {
            process: Kairos::start_node_env(port, &args, env),
            port,
            args,
            metrics,
        }
    }

    /// Where clients reach it (`host:port`).
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the node gracefully (SIGTERM) and starts it again on the same ports and name.
    pub(crate) fn restart(self) -> Node {
        let Node {
            process,
            port,
            args,
            metrics,
        } = self;
        process.terminate(Duration::from_secs(10));
        Node {
            process: Kairos::start_node(port, &args),
            port,
            args,
            metrics,
        }
    }

    /// A gauge from the node's /metrics (`None` while it does not answer).
    pub(crate) fn gauge(&self, name: &str) -> Option<usize> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut page = String::new();
        stream.read_to_string(&mut page).ok()?;
        page.lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Waits until the nodes see `members` members each and hold every shard between them, each
/// at least one; returns how long that took.
pub(crate) fn wait_for_balance(nodes: &[&Node], members: usize, within: Duration) -> Duration {
    let began = Instant::now();
    loop {
        let seen: Vec<(Option<usize>, Option<usize>)> = nodes
            .iter()
            .map(|n| {
                (
                    n.gauge("kairos_cluster_members"),
                    n.gauge("kairos_shards_held"),
                )
            })
            .collect();
        let balanced = seen
            .iter()
            .all(|(m, held)| *m == Some(members) && held.unwrap_or(0) > 0)
            && seen
                .iter()
                .map(|(_, held)| held.unwrap_or(0))
                .sum::<usize>()
                == SHARDS;
        if balanced {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < within,
            "the cluster did not settle on {members} members holding {SHARDS} shards: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn worker(
    rt: &Runtime,
    client: &Client,
    tq: &str,
    legs: Legs,
) -> anyhow::Result<Worker> {
    let options = WorkerOptions::new(tq)
        .deployment_options(
            temporalio_common::worker::WorkerDeploymentOptions::from_build_id("nodes".to_owned()),
        )
        .graceful_shutdown_period(Duration::from_secs(1))
        .register_activities(legs)
        .register_workflow::<Delivery>()?
        .register_workflow::<Receipt>()?
        .build();
    Ok(Worker::new(rt, client.clone(), options)?)
}

/// Starts `ids` and tips each, through the clients in turn.
pub(crate) async fn start_all(clients: &[&Client], tq: &str, ids: &[String]) -> anyhow::Result<()> {
    for (i, id) in ids.iter().enumerate() {
        let client = clients[i % clients.len()];
        let handle = client
            .start_workflow(
                Delivery::run,
                id.clone(),
                WorkflowStartOptions::new(tq, id.as_str()).build(),
            )
            .await?;
        let tipper = clients[(i + 1) % clients.len()];
        tipper
            .get_workflow_handle::<Delivery>(handle.info().workflow_id.as_str())
            .signal(Delivery::tip, 1, WorkflowSignalOptions::default())
            .await?;
    }
    Ok(())
}

/// Every workflow returns 5 (three legs, the receipt's leg, one tip), and its history and its
/// receipt's are numbered 1..n with no gap, with no activity completed twice for one scheduled
/// event, every timer fired once, and the tip delivered once.
pub(crate) async fn check_all(client: &Client, ids: &[String]) -> anyhow::Result<()> {
    for id in ids {
        let handle = client.get_workflow_handle::<Delivery>(id.as_str());
        let result = tokio::time::timeout(
            Duration::from_secs(60),
            handle.get_result(WorkflowGetResultOptions::default()),
        )
        .await
        .map_err(|_| anyhow::anyhow!("workflow {id} did not finish in 60 s"))??;
        assert_eq!(result, 5, "workflow {id}: three legs, a receipt and a tip");
        for run in [id.clone(), format!("{id}-receipt")] {
            let events = client
                .get_workflow_handle::<UntypedWorkflow>(run.as_str())
                .fetch_history(WorkflowFetchHistoryOptions::builder().build())
                .into_events()
                .await?;
            audit(&run, &events);
        }
    }
    Ok(())
}

fn audit(run: &str, events: &[HistoryEvent]) {
    use history_event::Attributes as A;
    let mut completed = std::collections::HashSet::new();
    let (mut timers_started, mut timers_fired, mut tips) = (0, 0, 0);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.event_id, i as i64 + 1, "{run}: history has a gap");
        match &event.attributes {
            Some(A::ActivityTaskCompletedEventAttributes(a)) => assert!(
                completed.insert(a.scheduled_event_id),
                "{run}: activity {} completed twice",
                a.scheduled_event_id
            ),
            Some(A::TimerStartedEventAttributes(_)) => timers_started += 1,
            Some(A::TimerFiredEventAttributes(_)) => timers_fired += 1,
            Some(A::WorkflowExecutionSignaledEventAttributes(_)) => tips += 1,
            _ => {}
        }
    }
    assert_eq!(
        timers_fired, timers_started,
        "{run}: every timer fired once"
    );
    if !run.ends_with("-receipt") {
        assert_eq!(
            (timers_started, tips),
            (3, 1),
            "{run}: three timers, one tip"
        );
    }
}

/// The test PostgreSQL's URL with a schema of this test's own (`kairos_PREFIX_PID_RANDOM`), or
/// `None`, saying so, when `KAIROS_TEST_POSTGRES_URL` is not set.
pub(crate) fn cluster_url(prefix: &str) -> Option<String> {
    let Ok(base) = std::env::var("KAIROS_TEST_POSTGRES_URL") else {
        eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set (the cluster runs on PostgreSQL)");
        return None;
    };
    let schema = format!(
        "kairos_{prefix}_{}_{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let separator = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{separator}schema={schema}"))
}

pub(crate) fn signal(pid: u32, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {which} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_from_any_node_and_survives_losing_one() -> anyhow::Result<()> {
    let Some(url) = cluster_url("nodes") else {
        return Ok(());
    };

    let a = Node::start(&url, "a");
    let b = Node::start(&url, "b");
    let c = Node::start(&url, "c");
    let d = Node::start(&url, "d");
    wait_for_balance(&[&a, &b, &c, &d], 4, Duration::from_secs(20));

    // Workers on a and b; clients on a, b and d take turns starting and signalling.
    let rt = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .heartbeat_interval(None)
            .build()
            .map_err(anyhow::Error::msg)?,
    )?;
    let on_a = connect(&a.process.url()).await?;
    let on_b = connect(&b.process.url()).await?;
    let on_d = connect(&d.process.url()).await?;
    let tq = format!("nodes-{}", uuid::Uuid::new_v4());
    let legs = Legs::default();
    let mut w1 = worker(&rt, &on_a, &tq, legs.clone())?;
    let mut w2 = worker(&rt, &on_b, &tq, legs.clone())?;
    let (stop1, stop2) = (w1.shutdown_handle(), w2.shutdown_handle());
    let batch = |name: &str| -> Vec<String> {
        (0..PER_BATCH)
            .map(|i| format!("{name}-{i}-{}", uuid::Uuid::new_v4()))
            .collect()
    };
    let (first, second, third) = (batch("first"), batch("second"), batch("third"));
    let mut c = Some(c);
    let steps = async {
        start_all(&[&on_a, &on_b, &on_d], &tq, &first).await?;
        // Mid-flight, c dies: its shards and task queues move to a, b and d.
        let deadline = Instant::now() + Duration::from_secs(30);
        while legs.runs.load(Ordering::SeqCst) < 10 {
            anyhow::ensure!(Instant::now() < deadline, "no progress before the kill");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.take().expect("running").process.kill9();
        let took = tokio::task::block_in_place(|| {
            wait_for_balance(&[&a, &b, &d], 3, Duration::from_secs(20))
        });
        eprintln!("c's shards were taken over {took:?} after the kill was seen");
        start_all(&[&on_b, &on_d, &on_a], &tq, &second).await?;
        check_all(&on_d, &first).await?;
        check_all(&on_a, &second).await?;

        // d pauses past its membership timeout while work goes on, then resumes: its writes
        // are refused (another node took its shards), it rejoins, and nothing it held is lost
        // or written twice.
        signal(d.process.pid(), "-STOP");
        start_all(&[&on_a, &on_b], &tq, &third).await?;
        tokio::task::block_in_place(|| wait_for_balance(&[&a, &b], 2, Duration::from_secs(20)));
        signal(d.process.pid(), "-CONT");
        tokio::task::block_in_place(|| wait_for_balance(&[&a, &b, &d], 3, Duration::from_secs(20)));
        check_all(&on_d, &third).await?;
        check_all(&on_b, &first).await?;
        anyhow::Ok(())
    };
    let scenario = async {
        let checked = steps.await;
        // The workers stop whatever happened, so that a failure is reported, not a timeout.
        stop1();
        stop2();
        checked
    };
    let all = async { tokio::join!(w1.run(), w2.run(), scenario) };
    let (run1, run2, outcome) = tokio::time::timeout(Duration::from_secs(240), all)
        .await
        .map_err(|_| anyhow::anyhow!("the cluster scenario did not finish in 4 minutes"))?;
    outcome?;
    run1?;
    run2?;
    // Every leg ran at least once; a leg whose completion died with c ran again.
    assert!(legs.runs.load(Ordering::SeqCst) as usize >= 4 * 3 * PER_BATCH);
    Ok(())
}

/// Runs `kairos server start ARGS` expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kairos"))
        .args(["server", "start", "--port", &free_port().to_string()])
        .args(["--internal-port", &free_port().to_string()])
        .args(args)
        .output()
        .expect("kairos runs");
    assert!(!out.status.success(), "started with {args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[test]
fn a_node_refuses_a_config_file_it_does_not_understand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "db-url = \"postgres://x@127.0.0.1:1/x\"\nshards = 3\n",
    )
    .expect("write");
    let err = refused(&["--config", file.to_str().expect("utf-8")]);
    assert!(err.contains("unknown setting \"shards\""), "{err}");
    std::fs::write(&file, "port = [").expect("write");
    let err = refused(&["--config", file.to_str().expect("utf-8")]);
    assert!(err.contains("is not valid TOML"), "{err}");
    let err = refused(&[
        "--services",
        "frontend,queues",
        "--db-url",
        "postgres://x@127.0.0.1:1/x",
    ]);
    assert!(err.contains("unknown --services value \"queues\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_takes_settings_from_its_file_and_refuses_conflicts() -> anyhow::Result<()> {
    let Some(url) = cluster_url("conf") else {
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        format!(
            "db_url = \"{url}\"\nnode-name = \"from-file\"\nnum-history-shards = 5\n\
             namespace = [\"orders\"]\nport = 1\n"
        ),
    )?;
    // The command line's --port wins over the file's.
    let port = free_port();
    let args: Vec<String> = ["--config", file.to_str().expect("utf-8")]
        .iter()
        .map(|s| s.to_string())
        .chain(["--internal-port".to_string(), free_port().to_string()])
        .collect();
    let node = Kairos::start_node(port, &args);
    let client = connect(&node.url()).await?;
    let info = client
        .connection()
        .workflow_service()
        .get_cluster_info(tonic::Request::new(
            temporalio_common::protos::temporal::api::workflowservice::v1::GetClusterInfoRequest {},
        ))
        .await?
        .into_inner();
    assert_eq!(info.history_shard_count, 5, "from the file");
    let namespaces = client
        .connection()
        .workflow_service()
        .describe_namespace(tonic::Request::new(
            temporalio_common::protos::temporal::api::workflowservice::v1::DescribeNamespaceRequest {
                namespace: "orders".into(),
                ..Default::default()
            },
        ))
        .await;
    assert!(
        namespaces.is_ok(),
        "the file's namespace exists: {namespaces:?}"
    );

    let err = refused(&["--db-url", &url, "--num-history-shards", "7"]);
    assert!(err.contains("created with 5 history shards"), "{err}");
    let err = refused(&[
        "--db-url",
        &url,
        "--node-name",
        "from-file",
        "--num-history-shards",
        "5",
    ]);
    assert!(
        err.contains("node name \"from-file\" is in use by a live node"),
        "{err}"
    );
    Ok(())
}
