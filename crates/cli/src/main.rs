//! The `kairos` binary: `kairos server start-dev` runs every role in one process; the client
//! commands (`kairos workflow|activity|operator ...`) talk to a running server as the
//! official `temporal` CLI does.

mod client;
mod serve;

use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kairos_server::{Database, Opening};
use serve::{ServerCommand, dev_plan, init_logging, postgres_database, start_dev, start_plan};

/// mimalloc rather than glibc malloc: under load glibc returned and re-faulted memory with
/// madvise on nearly every request (about a tenth of the server's CPU in a perf profile).
/// .cargo/config.toml builds it to commit arena memory as used rather than up front, which
/// halves idle RSS and the peak under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "A durable-execution server that speaks Temporal's gRPC API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// Start, list, inspect and drive workflows.
    Workflow {
        #[command(flatten)]
        flags: client::ClientFlags,
        #[command(subcommand)]
        command: client::WorkflowCommand,
    },
    /// Complete or fail activities by id.
    Activity {
        #[command(flatten)]
        flags: client::ClientFlags,
        #[command(subcommand)]
        command: client::ActivityCommand,
    },
    /// The workers that heartbeat: list, describe, count.
    Worker {
        #[command(flatten)]
        flags: client::ClientFlags,
        #[command(subcommand)]
        command: client::WorkerCommand,
    },
    /// Database administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Namespaces, search attributes and the cluster.
    Operator {
        #[command(flatten)]
        flags: client::ClientFlags,
        #[command(subcommand)]
        command: client::OperatorCommand,
    },
}

/// The same command line when it starts with `server`: parsed without building the arguments of
/// the client commands, about a third of a millisecond of every server start. Help and errors
/// for `kairos server ...` read the same either way.
#[derive(Parser)]
#[command(
    name = "kairos",
    version,
    about = "A durable-execution server that speaks Temporal's gRPC API"
)]
struct ServerCli {
    #[command(subcommand)]
    command: ServerOnly,
}

#[derive(Subcommand)]
enum ServerOnly {
    /// Run the server.
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create or upgrade the schema of a PostgreSQL database, then exit (servers also do this
    /// as they start; this is for operators who migrate separately).
    Migrate {
        /// The database: postgres://user:password@host:port/database[?schema=NAME].
        #[arg(long = "db", env = "KAIROS_DB_URL", value_name = "URL")]
        db: String,
    },
}

fn main() {
    // Every error is one line on stderr and a non-zero exit, as the temporal CLI answers errors
    // (no `Caused by:` block, no backtrace): the causes are folded into the line.
    if let Err(e) = run() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let began = Instant::now();
    let command = if std::env::args_os().nth(1).is_some_and(|a| a == "server") {
        let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        if args.get(2).is_some_and(|a| a == "start") {
            args = serve::with_config_file(args)?;
        }
        let ServerOnly::Server { command } = ServerCli::parse_from(args).command;
        Command::Server { command }
    } else {
        Cli::parse().command
    };
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")
    };
    match command {
        Command::Server { command } => {
            let mut plan = match command {
                ServerCommand::StartDev(args) => dev_plan(args)?,
                ServerCommand::Start(args) => start_plan(args)?,
            };
            // Bound first: a taken port fails before the database is touched, and a client
            // connecting from here on waits in the backlog until the server answers.
            let listen = plan.config.listen;
            plan.config.listener = Some(
                std::net::TcpListener::bind(listen)
                    .with_context(|| format!("failed to listen on {listen}"))?,
            );
            init_logging(&plan.log_level);
            // The database opens on its own thread while the runtime starts.
            plan.config.opening = Some(Opening::begin(&plan.config.database)?);
            runtime()?.block_on(start_dev(plan, began))
        }
        Command::Admin {
            command: AdminCommand::Migrate { db },
        } => runtime()?.block_on(async {
            let Database::Postgres(url) = postgres_database(db)? else {
                unreachable!("postgres_database gives PostgreSQL")
            };
            let store = kairos_server::migrate_postgres(&url).await?;
            println!(
                "{store}: schema at version {}",
                kairos_server::POSTGRES_SCHEMA_VERSION
            );
            Ok(())
        }),
        Command::Workflow { flags, command } => runtime()?.block_on(async {
            client::Client::connect(&flags)
                .await?
                .workflow(command)
                .await
        }),
        Command::Activity { flags, command } => runtime()?.block_on(async {
            client::Client::connect(&flags)
                .await?
                .activity(command)
                .await
        }),
        Command::Worker { flags, command } => runtime()?
            .block_on(async { client::Client::connect(&flags).await?.worker(command).await }),
        Command::Operator { flags, command } => runtime()?.block_on(async {
            client::Client::connect(&flags)
                .await?
                .operator(command)
                .await
        }),
    }
}
