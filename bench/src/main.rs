//! `kairos-bench`: runs the same workload against any Temporal-compatible endpoint (Kairos or the
//! reference server) with an in-process worker built on the official Rust SDK, and reports
//! throughput, start-to-result latency and, given the server's PID, its CPU time and memory.
mod metrics;
mod procstat;
mod workload;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, GrpcCompression, Url,
    WorkflowFetchHistoryOptions, WorkflowGetResultOptions, WorkflowSignalOptions,
    WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::enums::v1::EventType;
use temporalio_common::worker::WorkerDeploymentOptions;
use temporalio_sdk::runtime::{PollerBehavior, RuntimeOptions};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};
use tokio::sync::Mutex;

use crate::workload::{BenchActivities, BenchInput, BenchWorkflow, transitions_per_workflow};

/// The load generator shares the machine with the server it measures: every CPU cycle it
/// spends is one the server cannot use. glibc malloc was a fifth of its profile (the SDK
/// allocates per activation); mimalloc, as in the server, costs less. Same for either server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs N workflows, C at a time, each doing K activities (and T timers, S signals), and
/// reports what the server sustained.
#[derive(Parser, Debug, Clone)]
#[command(name = "kairos-bench", version)]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7233")]
    address: String,
    /// Namespace to run in (must exist).
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Workflows to run in all (with --duration: at most this many).
    #[arg(long, default_value_t = 1000)]
    workflows: u64,
    /// Workflows in flight at once (each waits for its result before the next starts).
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Activities each workflow runs, one after the other.
    #[arg(long, default_value_t = 3)]
    activities: u32,
    /// Bytes of payload sent to and returned by every activity.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Signals sent to each workflow; it completes once it has them all.
    #[arg(long, default_value_t = 0)]
    signals: u32,
    /// 10 ms timers each workflow sleeps on, one after the other.
    #[arg(long, default_value_t = 0)]
    timers: u32,
    /// Each workflow ends by sleeping this many seconds on a durable timer.
    #[arg(long, default_value_t = 0)]
    sleep_secs: u64,
    /// Do not wait for results: a workflow counts as done once it is sleeping on its
    /// --sleep-secs timer (to fill a server with open workflows). Needs --sleep-secs.
    #[arg(long)]
    start_only: bool,
    /// Stop starting workflows after this many seconds (those in flight finish).
    #[arg(long)]
    duration: Option<u64>,
    /// PID of the server process, to report its CPU time and resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// HOST:PORT of the server's Prometheus `/metrics` (Kairos: `--metrics-port`), to report
    /// the store's commits and syncs per workflow.
    #[arg(long)]
    metrics: Option<String>,
    /// Print the report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// A name for this run, copied into the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Tuned mode: N concurrent polls of each kind (workflow and activity tasks) and a sticky
    /// cache of 2 x concurrency (at least 1,000). Without it the worker runs with the SDK's
    /// default settings (5 polls of each kind), what users run.
    #[arg(long)]
    pollers: Option<usize>,
    /// No progress line on stderr.
    #[arg(long)]
    quiet: bool,
    /// Request compression: `gzip` (the SDK's default, what real workers send) or `none`.
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "none"])]
    grpc_compression: String,
}

#[derive(Serialize, Debug)]
struct Report {
    label: String,
    address: String,
    /// The run's task queue; workflow ids are `bench-<run>-<n>` with `<run>` its suffix.
    task_queue: String,
    workflows: u64,
    concurrency: usize,
    /// Polls of each kind in tuned mode (`--pollers`); `None`: the SDK's defaults.
    pollers: Option<usize>,
    activities: u32,
    timers: u32,
    signals: u32,
    payload_bytes: usize,
    completed: u64,
    errors: u64,
    first_errors: Vec<String>,
    elapsed_s: f64,
    workflows_per_s: f64,
    activities_per_s: f64,
    transitions_per_s: f64,
    latency_ms: Latency,
    server: Option<ServerUsage>,
    /// The store's work per workflow, from the server's `/metrics` (with --metrics).
    store: Option<StoreUsage>,
    load_generator: LoadGeneratorUsage,
}

/// CPU used by kairos-bench itself during the run.
#[derive(Serialize, Debug)]
struct LoadGeneratorUsage {
    cpu_s: f64,
    cpu_ms_per_workflow: f64,
}

#[derive(Serialize, Debug, Default)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
}

#[derive(Serialize, Debug)]
struct StoreUsage {
    commits_per_workflow: f64,
    syncs_per_workflow: f64,
}

#[derive(Serialize, Debug)]
struct ServerUsage {
    pid: u32,
    cpu_s: f64,
    cpu_ms_per_workflow: f64,
    rss_before_mib: f64,
    rss_peak_mib: f64,
}

/// What the client tasks share.
struct Shared {
    next: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
    latencies: Mutex<Vec<Duration>>,
    stop_starting: AtomicBool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    anyhow::ensure!(
        !args.start_only || args.sleep_secs > 0,
        "--start-only needs --sleep-secs (workflows that stay open)"
    );
    anyhow::ensure!(
        args.pollers.is_none_or(|n| n >= 2),
        "--pollers must be at least 2"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(args.clone()))?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    if report.completed == 0 {
        anyhow::bail!("no workflow completed");
    }
    Ok(())
}

async fn connect(args: &Args) -> anyhow::Result<Client> {
    let url = Url::parse(&format!("http://{}", args.address))
        .with_context(|| format!("bad --address {:?}", args.address))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let options = ConnectionOptions::new(url.clone())
            .identity("kairos-bench")
            .connect_timeout(Duration::from_secs(5))
            .grpc_compression(if args.grpc_compression == "none" {
                GrpcCompression::None
            } else {
                GrpcCompression::Gzip
            })
            .build();
        match Connection::connect(options).await {
            Ok(connection) => {
                return Ok(Client::new(
                    connection,
                    ClientOptions::new(args.namespace.clone()).build(),
                )?);
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context(format!("failed to connect to {}", args.address)),
        }
    }
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let client = connect(&args).await?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let task_queue = format!("kairos-bench-{run_id}");
    let sdk_runtime = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .heartbeat_interval(None)
            .build()
            .map_err(anyhow::Error::msg)?,
    )?;
    let mut options = WorkerOptions::new(task_queue.as_str())
        .deployment_options(WorkerDeploymentOptions::from_build_id(
            "kairos-bench".to_owned(),
        ))
        .graceful_shutdown_period(Duration::from_secs(5))
        .register_activities(BenchActivities)
        .register_workflow::<BenchWorkflow>()?
        .build();
    if let Some(pollers) = args.pollers {
        options.max_cached_workflows = (2 * args.concurrency).max(1000);
        options.workflow_task_poller_behavior = Some(PollerBehavior::SimpleMaximum(pollers));
        options.activity_task_poller_behavior = Some(PollerBehavior::SimpleMaximum(pollers));
    }
    let mut worker = Worker::new(&sdk_runtime, client.clone(), options)?;
    let shutdown = worker.shutdown_handle();

    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_errors: Mutex::new(Vec::new()),
        latencies: Mutex::new(Vec::new()),
        stop_starting: AtomicBool::new(false),
    });
    let store_before = match &args.metrics {
        Some(at) => metrics::store_counters(at).await,
        None => None,
    };
    let cpu_before = args.server_pid.and_then(procstat::cpu_time);
    let own_cpu_before = procstat::cpu_time(std::process::id());
    let rss_before = args.server_pid.and_then(procstat::rss_bytes);
    let peak_rss = Arc::new(AtomicU64::new(rss_before.unwrap_or(0)));
    let finished = Arc::new(AtomicBool::new(false));

    let sampler = args.server_pid.map(|pid| {
        let peak = peak_rss.clone();
        let finished = finished.clone();
        tokio::spawn(async move {
            while !finished.load(Ordering::Relaxed) {
                if let Some(rss) = procstat::rss_bytes(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    });
    let progress = (!args.quiet).then(|| {
        let shared = shared.clone();
        let finished = finished.clone();
        let total = args.workflows;
        tokio::spawn(progress_loop(shared, finished, total))
    });

    let report_task_queue = task_queue.clone();
    let began = Instant::now();
    let load = {
        let args = args.clone();
        let shared = shared.clone();
        let client = client.clone();
        async move {
            if let Some(secs) = args.duration {
                let shared = shared.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    shared.stop_starting.store(true, Ordering::Relaxed);
                });
            }
            let mut tasks = Vec::new();
            for _ in 0..args.concurrency {
                tasks.push(tokio::spawn(client_loop(
                    client.clone(),
                    args.clone(),
                    task_queue.clone(),
                    run_id.clone(),
                    shared.clone(),
                )));
            }
            for t in tasks {
                t.await.context("a client task panicked")?;
            }
            anyhow::Ok(began.elapsed())
        }
    };

    let worker_run = worker.run();
    tokio::pin!(worker_run);
    tokio::pin!(load);
    let elapsed = tokio::select! {
        res = &mut load => {
            let elapsed = res?;
            shutdown();
            worker_run.await?;
            elapsed
        }
        res = &mut worker_run => {
            res?;
            anyhow::bail!("the worker stopped before the load finished");
        }
    };
    finished.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        let _ = p.await;
    }
    if let Some(s) = sampler {
        let _ = s.await;
    }

    let completed = shared.done.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let mut latencies = std::mem::take(&mut *shared.latencies.lock().await);
    latencies.sort();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let server = args.server_pid.map(|pid| {
        let cpu = match (cpu_before, procstat::cpu_time(pid)) {
            (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
            _ => f64::NAN,
        };
        ServerUsage {
            pid,
            cpu_s: cpu,
            cpu_ms_per_workflow: cpu * 1000.0 / completed.max(1) as f64,
            rss_before_mib: mib(rss_before.unwrap_or(0)),
            rss_peak_mib: mib(peak_rss.load(Ordering::Relaxed)),
        }
    });
    let store_after = match &args.metrics {
        Some(at) => metrics::store_counters(at).await,
        None => None,
    };
    let store = match (store_before, store_after) {
        (Some((c0, s0)), Some((c1, s1))) => Some(StoreUsage {
            commits_per_workflow: (c1 - c0) / completed.max(1) as f64,
            syncs_per_workflow: (s1 - s0) / completed.max(1) as f64,
        }),
        _ => None,
    };
    // This process's own CPU (the SDK worker and the clients): on a machine it shares with the
    // server, it bounds the throughput any server can reach.
    let own_cpu = match (own_cpu_before, procstat::cpu_time(std::process::id())) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64(),
        _ => f64::NAN,
    };
    Ok(Report {
        label: args.label.clone(),
        address: args.address.clone(),
        task_queue: report_task_queue,
        workflows: args.workflows,
        concurrency: args.concurrency,
        pollers: args.pollers,
        activities: args.activities,
        timers: args.timers,
        signals: args.signals,
        payload_bytes: args.payload_bytes,
        completed,
        errors,
        first_errors: shared.first_errors.lock().await.clone(),
        elapsed_s: secs,
        workflows_per_s: completed as f64 / secs,
        activities_per_s: (completed * args.activities as u64) as f64 / secs,
        transitions_per_s: (completed
            * transitions_per_workflow(args.activities, args.timers, args.signals))
            as f64
            / secs,
        latency_ms: Latency {
            p50: percentile(&latencies, 0.50),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().map(ms).unwrap_or(0.0),
        },
        server,
        store,
        load_generator: LoadGeneratorUsage {
            cpu_s: own_cpu,
            cpu_ms_per_workflow: own_cpu * 1000.0 / completed.max(1) as f64,
        },
    })
}

/// Starts workflows one after the other until the run's budget is spent.
async fn client_loop(
    client: Client,
    args: Args,
    task_queue: String,
    run_id: String,
    shared: Arc<Shared>,
) {
    let payload = "x".repeat(args.payload_bytes);
    loop {
        if shared.stop_starting.load(Ordering::Relaxed) {
            return;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= args.workflows {
            return;
        }
        let input = BenchInput {
            activities: args.activities,
            timers: args.timers,
            signals: args.signals,
            payload: payload.clone(),
            sleep_secs: args.sleep_secs,
        };
        let began = Instant::now();
        let id = format!("bench-{run_id}-{i}");
        let outcome = if args.start_only {
            start_until_sleeping(&client, &task_queue, id, input).await
        } else {
            one_workflow(&client, &task_queue, id, input).await
        };
        match outcome {
            Ok(()) => {
                shared.latencies.lock().await.push(began.elapsed());
                shared.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                let mut first = shared.first_errors.lock().await;
                if first.len() < 5 {
                    first.push(format!("{e:#}"));
                }
            }
        }
    }
}

async fn one_workflow(
    client: &Client,
    task_queue: &str,
    workflow_id: String,
    input: BenchInput,
) -> anyhow::Result<()> {
    let signals = input.signals;
    let activities = input.activities;
    let handle = client
        .start_workflow(
            BenchWorkflow::run,
            input,
            WorkflowStartOptions::new(task_queue, workflow_id).build(),
        )
        .await
        .context("failed to start a workflow")?;
    for _ in 0..signals {
        handle
            .signal(BenchWorkflow::signal, 1, WorkflowSignalOptions::default())
            .await
            .context("failed to signal a workflow")?;
    }
    let out: u32 = handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .context("workflow did not complete")?;
    anyhow::ensure!(out == activities, "unexpected result {out}");
    Ok(())
}

/// Starts a workflow and returns once its history shows the final sleep's timer started.
async fn start_until_sleeping(
    client: &Client,
    task_queue: &str,
    workflow_id: String,
    input: BenchInput,
) -> anyhow::Result<()> {
    let handle = client
        .start_workflow(
            BenchWorkflow::run,
            input,
            WorkflowStartOptions::new(task_queue, workflow_id).build(),
        )
        .await
        .context("failed to start a workflow")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let events = handle
            .fetch_history(WorkflowFetchHistoryOptions::builder().build())
            .into_events()
            .await
            .context("failed to read a history")?;
        if events
            .iter()
            .any(|e| e.event_type() == EventType::TimerStarted)
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "workflow never went to sleep");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn progress_loop(shared: Arc<Shared>, finished: Arc<AtomicBool>, total: u64) {
    let tty = std::io::stderr().is_terminal();
    let began = Instant::now();
    let mut last_line = Instant::now();
    loop {
        let done_now = finished.load(Ordering::Relaxed);
        let done = shared.done.load(Ordering::Relaxed);
        let errors = shared.errors.load(Ordering::Relaxed);
        let rate = done as f64 / began.elapsed().as_secs_f64().max(1e-9);
        let width = 30usize;
        let filled = ((done + errors) as f64 / total.max(1) as f64 * width as f64) as usize;
        let bar = format!(
            "[{}{}] {}/{} workflows  {:.1}/s  errors {}",
            "=".repeat(filled.min(width)),
            " ".repeat(width - filled.min(width)),
            done,
            total,
            rate,
            errors
        );
        if tty {
            eprint!("\r{bar}");
        } else if done_now || last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!("{bar}");
            last_line = Instant::now();
        }
        if done_now {
            if tty {
                eprintln!();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    ms(&sorted[idx])
}

fn ms(d: &Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn print_report(r: &Report) {
    println!(
        "workload     {} workflows x {} activities, {} timers, {} signals, {} B payload, concurrency {}",
        r.workflows, r.activities, r.timers, r.signals, r.payload_bytes, r.concurrency
    );
    println!(
        "completed    {} in {:.2} s ({} errors)",
        r.completed, r.elapsed_s, r.errors
    );
    for e in &r.first_errors {
        println!("  error: {e}");
    }
    println!("workflows/s  {:.1}", r.workflows_per_s);
    println!("activities/s {:.1}", r.activities_per_s);
    println!("transitions/s {:.1}", r.transitions_per_s);
    println!(
        "latency ms   p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}",
        r.latency_ms.p50, r.latency_ms.p95, r.latency_ms.p99, r.latency_ms.max
    );
    if let Some(s) = &r.server {
        println!(
            "server       pid {}  cpu {:.2} s ({:.2} ms/workflow)  rss before {:.1} MiB  peak {:.1} MiB",
            s.pid, s.cpu_s, s.cpu_ms_per_workflow, s.rss_before_mib, s.rss_peak_mib
        );
    }
    if let Some(s) = &r.store {
        println!(
            "store        {:.2} commits/workflow  {:.2} syncs/workflow",
            s.commits_per_workflow, s.syncs_per_workflow
        );
    }
    println!(
        "load gen     cpu {:.2} s ({:.2} ms/workflow)",
        r.load_generator.cpu_s, r.load_generator.cpu_ms_per_workflow
    );
}
