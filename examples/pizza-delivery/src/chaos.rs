//! `pizza chaos`: starts Kairos, the simulator and two workers as real processes, places
//! orders, SIGKILLs a worker and the server (and restarts them on the same database) while the
//! orders run, then audits every order against the ledger: each reached a final state; each
//! delivered order was charged exactly once and not refunded; each other order was refunded or
//! never charged. Prints a table and fails on any violation.
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowFetchHistoryOptions,
    WorkflowStartOptions,
};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes as A;

use crate::{Order, PizzaOrder, TASK_QUEUE};

/// What to run.
pub struct ChaosOptions {
    pub orders: u32,
    pub kairos_bin: PathBuf,
    pub workdir: PathBuf,
    pub kairos_port: u16,
    pub sim_port: u16,
    /// How long to wait for every order to finish.
    pub deadline: Duration,
}

/// A child process that is killed when dropped (the demo never leaves processes behind).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &Path, args: &[&str], log: &Path) -> anyhow::Result<Proc> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    Ok(Proc(child))
}

/// Waits until `port` accepts connections, failing as soon as `child` (the process that should
/// open it) has exited: a port some other process holds must not pass for it.
fn wait_port(child: &mut Proc, port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!("{what} exited ({status}) before opening port {port}; see chaos.log");
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not open port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL (std's `kill` on Unix), and reap.
fn sigkill(p: &mut Proc) {
    let _ = p.0.kill();
    let _ = p.0.wait();
}

async fn connect(port: u16) -> anyhow::Result<Client> {
    let options = ConnectionOptions::new(Url::parse(&format!("http://127.0.0.1:{port}"))?)
        .identity("pizza-chaos")
        .build();
    Ok(Client::new(
        Connection::connect(options).await?,
        ClientOptions::new("default").build(),
    )?)
}

/// Runs the demo; `Ok(false)` when the audit found a violation.
pub async fn run(opts: ChaosOptions) -> anyhow::Result<bool> {
    let began = Instant::now();
    std::fs::create_dir_all(&opts.workdir)?;
    let me = std::env::current_exe()?;
    let db = opts.workdir.join("kairos.db");
    let ledger = opts.workdir.join("ledger.db");
    let log = opts.workdir.join("chaos.log");
    let kport = opts.kairos_port.to_string();
    let db_arg = db.display().to_string();
    let server_args = [
        "server",
        "start-dev",
        "--port",
        kport.as_str(),
        "--db-filename",
        db_arg.as_str(),
        "--log-level",
        "warn",
    ];
    let mut server = spawn(&opts.kairos_bin, &server_args, &log)?;
    wait_port(&mut server, opts.kairos_port, "kairos")?;
    let address = format!("127.0.0.1:{}", opts.kairos_port);
    let sim_address = format!("127.0.0.1:{}", opts.sim_port);
    let ledger_arg = ledger.display().to_string();
    let mut sim = spawn(
        &me,
        &[
            "--address",
            &address,
            "--sim",
            &sim_address,
            "sim",
            "--ledger",
            &ledger_arg,
            "--payment-failure-rate",
            "0.2",
            "--slow-cafe-rate",
            "0.05",
            "--vanishing-courier-rate",
            "0.1",
            "--cook-ms",
            "200",
            "--drive-ms",
            "500",
        ],
        &log,
    )?;
    wait_port(&mut sim, opts.sim_port, "the simulator")?;
    let worker_args = ["--address", address.as_str(), "worker"];
    let mut worker_a = spawn(&me, &worker_args, &log)?;
    let _worker_b = spawn(&me, &worker_args, &log)?;
    let client = connect(opts.kairos_port).await?;

    let mut ids = Vec::new();
    let mut cards = BTreeMap::new();
    let mut cancelled = std::collections::BTreeSet::new();
    let mut crashes = Vec::new();
    for i in 0..opts.orders {
        let id = format!("chaos-{i}-{}", uuid::Uuid::new_v4());
        let order = Order {
            id: id.clone(),
            customer: format!("customer-{}", i % 7),
            amount_cents: 1200 + 50 * (i as u64 % 10),
            card: if i % 10 == 9 { "declined" } else { "ok" }.into(),
            cooking_deadline_secs: 5,
            sim: format!("http://{sim_address}"),
        };
        // Retried: the server may be down for a moment right now.
        let mut tries = 0;
        loop {
            let started = client
                .start_workflow(
                    PizzaOrder::run,
                    order.clone(),
                    WorkflowStartOptions::new(TASK_QUEUE, &id)
                        .execution_timeout(Duration::from_secs(600))
                        .build(),
                )
                .await;
            match started {
                Ok(_) => break,
                Err(e) if tries < 100 => {
                    tries += 1;
                    tracing::info!(error = %e, "start failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        cards.insert(id.clone(), order.card.clone());
        // Some customers change their mind at once: cancelled before pickup (or delivered, if
        // the pizza already left).
        if i % 15 == 7 {
            let options = temporalio_client::WorkflowCancelOptions::builder()
                .reason("changed my mind")
                .build();
            let cancel = client
                .get_workflow_handle::<PizzaOrder>(&id)
                .cancel(options)
                .await;
            if cancel.is_ok() {
                cancelled.insert(id.clone());
            }
        }
        ids.push(id);
        if i == opts.orders / 3 {
            sigkill(&mut worker_a);
            crashes.push("worker SIGKILL");
            worker_a = spawn(&me, &worker_args, &log)?;
        }
        if i == 2 * opts.orders / 3 {
            sigkill(&mut server);
            crashes.push("server SIGKILL");
            server = spawn(&opts.kairos_bin, &server_args, &log)?;
            wait_port(&mut server, opts.kairos_port, "kairos after its restart")?;
        }
    }
    // Until every order is closed (or the deadline).
    let deadline = Instant::now() + opts.deadline;
    let outcomes = loop {
        let mut outcomes = BTreeMap::new();
        let mut open = 0;
        for id in &ids {
            match outcome(&client, id).await {
                Ok(Some(o)) => {
                    outcomes.insert(id.clone(), o);
                }
                _ => open += 1,
            }
        }
        if open == 0 || Instant::now() > deadline {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let answer = crate::http::request(
        &format!("http://{sim_address}"),
        "POST",
        "/ledger",
        &json!({}),
    )
    .await?;
    if answer.status != 200 {
        bail!("the simulator's ledger answered HTTP {}", answer.status);
    }
    let ledger = answer.body;
    let cafe: BTreeMap<String, String> = ledger["cafe"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["order_id"].as_str().unwrap_or_default().to_string(),
                c["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let charges: BTreeMap<String, (i64, i64)> = ledger["charges"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["order_id"].as_str().unwrap_or_default().to_string(),
                (1, c["refunded"].as_i64().unwrap_or(0)),
            )
        })
        .collect();
    let mut violations = Vec::new();
    let mut by_state: BTreeMap<String, u32> = BTreeMap::new();
    let mut retries = 0;
    for id in &ids {
        let Some(o) = outcomes.get(id) else {
            violations.push(format!("{id}: stuck (still running at the deadline)"));
            *by_state.entry("stuck".into()).or_default() += 1;
            continue;
        };
        retries += o.retries;
        *by_state.entry(o.state.clone()).or_default() += 1;
        let charge = charges.get(id);
        if !crate::model::FINAL_STAGES.contains(&o.state.as_str()) {
            violations.push(format!(
                "{id}: ended as {:?}, not an order's final state",
                o.state
            ));
        }
        let declined_card = cards.get(id).map(String::as_str) == Some("declined");
        if declined_card != (o.state == "payment_declined") {
            violations.push(format!(
                "{id}: card {:?} but ended {}",
                cards.get(id),
                o.state
            ));
        }
        if o.state == "cancelled" && !cancelled.contains(id) {
            violations.push(format!("{id}: cancelled, but nobody cancelled it"));
        }
        if matches!(o.state.as_str(), "refunded" | "cancelled")
            && cafe.get(id).is_some_and(|s| s != "cancelled")
        {
            violations.push(format!(
                "{id}: {} but the cafe has it {:?}",
                o.state,
                cafe.get(id)
            ));
        }
        match o.state.as_str() {
            "delivered" => {
                if charge != Some(&(1, 0)) {
                    violations.push(format!("{id}: delivered but charge is {charge:?}"));
                }
            }
            _ => {
                if let Some((_, 0)) = charge {
                    violations.push(format!("{id}: {} but charged and not refunded", o.state));
                }
            }
        }
    }
    drop(worker_a);
    drop(server);
    println!();
    println!("  {:<20} {:>6}", "final state", "orders");
    for (state, n) in &by_state {
        println!("  {state:<20} {n:>6}");
    }
    println!();
    println!("  {:<20} {:>6}", "orders", ids.len());
    println!("  {:<20} {:>6}", "activity retries", retries);
    println!("  {:<20} {:>6}", "crashes injected", crashes.len());
    for c in &crashes {
        println!("    {c}");
    }
    println!(
        "  {:<20} {:>5.1}s",
        "time taken",
        began.elapsed().as_secs_f64()
    );
    if violations.is_empty() {
        println!(
            "\nAudit: every order reached a final state; every delivered order was charged exactly once; no other order kept a charge."
        );
        Ok(true)
    } else {
        println!("\nAudit FAILED:");
        for v in &violations {
            println!("  {v}");
        }
        Ok(false)
    }
}

/// How an order ended.
struct Outcome {
    state: String,
    /// Activity attempts after the first.
    retries: u32,
}

/// The order's outcome once its run closed; `None` while it runs.
async fn outcome(client: &Client, id: &str) -> anyhow::Result<Option<Outcome>> {
    let events = client
        .get_workflow_handle::<PizzaOrder>(id)
        .fetch_history(WorkflowFetchHistoryOptions::builder().build())
        .into_events()
        .await?;
    let retries = events
        .iter()
        .filter_map(|e| match &e.attributes {
            Some(A::ActivityTaskStartedEventAttributes(a)) if a.attempt > 1 => {
                Some((a.attempt - 1) as u32)
            }
            _ => None,
        })
        .sum();
    let state = match events.last().and_then(|e| e.attributes.as_ref()) {
        Some(A::WorkflowExecutionCompletedEventAttributes(a)) => a
            .result
            .as_ref()
            .and_then(|p| p.payloads.first())
            .and_then(|p| serde_json::from_slice::<Value>(&p.data).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "completed".into()),
        Some(A::WorkflowExecutionCanceledEventAttributes(_)) => "cancelled".into(),
        Some(A::WorkflowExecutionFailedEventAttributes(_)) => "failed".into(),
        Some(A::WorkflowExecutionTimedOutEventAttributes(_)) => "timed out".into(),
        Some(A::WorkflowExecutionTerminatedEventAttributes(_)) => "terminated".into(),
        _ => return Ok(None),
    };
    Ok(Some(Outcome { state, retries }))
}
