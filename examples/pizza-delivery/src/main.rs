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
        #[arg(long, default_value_t = 60)]
        cooking_deadline_secs: u64,
    },
    /// Print an order's status.
    Status { order: String },
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
        } => {
            let faults = Faults {
                payment_failure_rate,
                slow_cafe_rate,
                vanishing_courier_rate,
                ..Faults::default()
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
