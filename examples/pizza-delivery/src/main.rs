//! `pizza`: the example's command line. `sim` runs the simulator, `worker` a worker, `order`
//! places orders, `status` asks an order for its status.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use pizza_delivery::sim::{Faults, open_ledger, router, serve};
use pizza_delivery::{Order, Pizza, PizzaOrder, TASK_QUEUE};
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowQueryOptions,
    WorkflowStartOptions,
};
use temporalio_sdk::runtime::RuntimeOptions;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

#[derive(Parser)]
#[command(name = "pizza", about = "The pizza-delivery example on Kairos")]
struct Cli {
    /// Temporal (Kairos) address.
    #[arg(long, global = true, default_value = "127.0.0.1:7233")]
    address: String,
    /// Simulator address.
    #[arg(long, global = true, default_value = "127.0.0.1:7780")]
    sim: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the payment gateway, cafe and couriers.
    Sim {
        /// The ledger's SQLite file.
        #[arg(long, default_value = "pizza-ledger.db")]
        ledger: PathBuf,
        #[arg(long, default_value_t = 0.2)]
        payment_failure_rate: f64,
        #[arg(long, default_value_t = 0.05)]
        slow_cafe_rate: f64,
        #[arg(long, default_value_t = 0.1)]
        vanishing_courier_rate: f64,
        /// How long the cafe takes to cook (ms).
        #[arg(long, default_value_t = 8000)]
        cook_ms: u64,
        /// How long a courier takes to deliver (ms).
        #[arg(long, default_value_t = 8000)]
        drive_ms: u64,
    },
    /// Run a worker.
    Worker,
    /// Place orders.
    Order {
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Card of every order: ok or declined.
        #[arg(long, default_value = "ok")]
        card: String,
        #[arg(long, default_value_t = 30)]
        cooking_deadline_secs: u64,
    },
    /// Print an order's status.
    Status { order: String },
    /// Kairos, the simulator and two workers as processes; orders placed while a worker and
    /// the server are SIGKILLed and restarted; then an audit. Exits 1 on any violation.
    Chaos {
        #[arg(long, default_value_t = 200)]
        orders: u32,
        /// The kairos binary (default: the one beside this binary, else `kairos` on PATH).
        #[arg(long)]
        kairos_bin: Option<PathBuf>,
        /// Where the databases and the log go (default: a new temporary directory).
        #[arg(long)]
        workdir: Option<PathBuf>,
        #[arg(long, default_value_t = 17233)]
        kairos_port: u16,
        #[arg(long, default_value_t = 17780)]
        sim_port: u16,
        /// How long to wait for every order to finish.
        #[arg(long, default_value_t = 300)]
        deadline_secs: u64,
    },
}

async fn client(address: &str) -> anyhow::Result<Client> {
    let options = ConnectionOptions::new(Url::parse(&format!("http://{address}"))?)
        .identity(format!("pizza-{}", std::process::id()))
        .build();
    let connection = Connection::connect(options)
        .await
        .with_context(|| format!("cannot reach {address}"))?;
    Ok(Client::new(
        connection,
        ClientOptions::new("default").build(),
    )?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Sim {
            ledger,
            payment_failure_rate,
            slow_cafe_rate,
            vanishing_courier_rate,
            cook_ms,
            drive_ms,
        } => {
            let faults = Faults {
                payment_failure_rate,
                slow_cafe_rate,
                vanishing_courier_rate,
                cook_time: Duration::from_millis(cook_ms),
                drive_time: Duration::from_millis(drive_ms),
            };
            let temporal = client(&cli.address).await?;
            let listener = tokio::net::TcpListener::bind(&cli.sim).await?;
            println!("pizza sim listening on {}", listener.local_addr()?);
            serve(
                listener,
                router(open_ledger(&ledger)?, faults, Some(temporal)),
            )
            .await
        }
        Command::Worker => {
            let client = client(&cli.address).await?;
            let runtime = Runtime::from_current_tokio(
                RuntimeOptions::builder()
                    .heartbeat_interval(None)
                    .build()
                    .map_err(anyhow::Error::msg)?,
            )?;
            let options = WorkerOptions::new(TASK_QUEUE)
                .register_workflow::<PizzaOrder>()?
                .register_activities(Pizza)
                .build();
            let mut worker = Worker::new(&runtime, client, options)?;
            println!("pizza worker polling {TASK_QUEUE}");
            worker.run().await?;
            Ok(())
        }
        Command::Order {
            count,
            card,
            cooking_deadline_secs,
        } => {
            let client = client(&cli.address).await?;
            for _ in 0..count {
                let id = format!("order-{}", uuid::Uuid::new_v4());
                let order = Order {
                    id: id.clone(),
                    customer: "ada".into(),
                    amount_cents: 1850,
                    card: card.clone(),
                    cooking_deadline_secs,
                    sim: format!("http://{}", cli.sim),
                };
                client
                    .start_workflow(
                        PizzaOrder::run,
                        order,
                        WorkflowStartOptions::new(TASK_QUEUE, &id)
                            .execution_timeout(Duration::from_secs(3600))
                            .build(),
                    )
                    .await?;
                println!("{id}");
            }
            Ok(())
        }
        Command::Chaos {
            orders,
            kairos_bin,
            workdir,
            kairos_port,
            sim_port,
            deadline_secs,
        } => {
            let kairos_bin = kairos_bin.unwrap_or_else(|| {
                let beside = std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("kairos")))
                    .filter(|p| p.is_file());
                beside.unwrap_or_else(|| PathBuf::from("kairos"))
            });
            let workdir = workdir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("pizza-chaos-{}", uuid::Uuid::new_v4()))
            });
            println!(
                "pizza chaos: {orders} orders, data in {}",
                workdir.display()
            );
            let ok = pizza_delivery::chaos::run(pizza_delivery::chaos::ChaosOptions {
                orders,
                kairos_bin,
                workdir,
                kairos_port,
                sim_port,
                deadline: Duration::from_secs(deadline_secs),
            })
            .await?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Status { order } => {
            let client = client(&cli.address).await?;
            let status = client
                .get_workflow_handle::<PizzaOrder>(&order)
                .query(PizzaOrder::status, (), WorkflowQueryOptions::default())
                .await?;
            println!("{}", serde_json::to_string_pretty(&status)?);
            Ok(())
        }
    }
}
