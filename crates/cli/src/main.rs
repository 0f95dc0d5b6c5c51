//! The `kairos` binary: `kairos server start-dev` runs every role in one process; the client
//! commands (`kairos workflow|activity|operator ...`) talk to a running server as the
//! official `temporal` CLI does.

mod client;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kairos_server::{Config, Database, Opening, Server};

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
enum ServerCommand {
    /// Start a development server: every role in one process, SQLite storage (or PostgreSQL
    /// with --db-url).
    StartDev(StartDev),
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

#[derive(Parser)]
struct StartDev {
    /// IP address to bind the frontend to.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Port for the frontend gRPC service.
    #[arg(short, long, default_value_t = 7233)]
    port: u16,
    /// SQLite file to keep data in (default: ~/.local/share/kairos/dev.db); `:memory:` keeps
    /// nothing.
    #[arg(short = 'f', long = "db-filename", conflicts_with = "db_url")]
    db_filename: Option<String>,
    /// PostgreSQL database to keep data in instead of a SQLite file:
    /// postgres://user:password@host:port/database[?schema=NAME&pool_size=N].
    #[arg(long = "db-url", env = "KAIROS_DB_URL", value_name = "URL")]
    db_url: Option<String>,
    /// Namespace to create at start (repeatable); `default` always exists.
    #[arg(short = 'n', long = "namespace")]
    namespaces: Vec<String>,
    /// Custom search attribute to register in every namespace at start, as NAME=TYPE
    /// (repeatable; TYPE is Text, Keyword, Int, Double, Bool, Datetime or KeywordList).
    #[arg(long = "search-attribute", value_name = "NAME=TYPE")]
    search_attributes: Vec<String>,
    /// Log level: debug, info, warn, error.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Dynamic config value, as KEY=VALUE (repeatable). The limit keys of the reference server
    /// are honoured (e.g. `limit.historyCount.error=1000`); other keys are accepted and ignored.
    #[arg(long = "dynamic-config-value", value_name = "KEY=VALUE")]
    dynamic_config: Vec<String>,
    /// Port for the `/metrics` HTTP endpoint (Prometheus text format), on the --ip address; 0
    /// picks a free port. Off unless given.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// Accepted for compatibility with `temporal server start-dev`; the web UI is not built yet.
    #[arg(long)]
    headless: bool,
    /// Accepted for compatibility with `temporal server start-dev`; the web UI is not built yet.
    #[arg(long)]
    ui_port: Option<u16>,
}

/// A dynamic-config duration: `500ms`, `1s`, `2m`, `1h`, optionally quoted (the reference
/// takes JSON strings).
fn parse_duration(value: &str) -> Option<std::time::Duration> {
    let value = value.trim_matches('"');
    let split = value.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = value.split_at(split);
    let n: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (seconds >= 0.0).then(|| std::time::Duration::from_secs_f64(seconds))
}

/// A `--db-url`: PostgreSQL only (SQLite takes `--db-filename`).
fn postgres_database(url: String) -> anyhow::Result<Database> {
    anyhow::ensure!(
        url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "--db-url takes a postgres:// URL (a SQLite file is --db-filename)"
    );
    Ok(Database::Postgres(url))
}

fn default_db_path() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/kairos/dev.db"),
        None => PathBuf::from("kairos-dev.db"),
    }
}

/// `kairos server start-dev`, checked and resolved before anything starts.
struct DevPlan {
    config: Config,
    log_level: String,
    /// Dynamic-config keys Kairos does not use (logged once logging is set up).
    ignored_keys: Vec<String>,
}

fn dev_plan(args: StartDev) -> anyhow::Result<DevPlan> {
    let log_level = match args.log_level.as_str() {
        "debug" | "info" | "warn" | "error" | "trace" => args.log_level.clone(),
        other => anyhow::bail!("invalid --log-level {other:?}: use debug, info, warn or error"),
    };
    let database = match (args.db_url, args.db_filename.as_deref()) {
        (Some(url), _) => postgres_database(url)?,
        (None, Some(":memory:")) => Database::SqliteMemory,
        (None, Some(path)) => Database::SqliteFile(PathBuf::from(path)),
        (None, None) => Database::SqliteFile(default_db_path()),
    };
    let mut namespaces = vec!["default".to_string()];
    for ns in args.namespaces {
        if !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
    }
    let mut search_attributes = Vec::new();
    for kv in &args.search_attributes {
        let (name, ty) = kv
            .split_once('=')
            .with_context(|| format!("--search-attribute {kv:?}: expected NAME=TYPE"))?;
        let ty = client::indexed_value_type(ty.trim())
            .with_context(|| format!("--search-attribute {kv:?}"))?;
        search_attributes.push((name.trim().to_string(), ty as i32));
    }
    let mut config = Config {
        listen: SocketAddr::new(args.ip, args.port),
        database,
        namespaces,
        search_attributes,
        metrics: args.metrics_port.map(|port| SocketAddr::new(args.ip, port)),
        ..Config::default()
    };
    let mut ignored_keys = Vec::new();
    for kv in &args.dynamic_config {
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("--dynamic-config-value {kv:?}: expected KEY=VALUE"))?;
        let key = key.trim();
        let value = value.trim();
        let flag = || -> anyhow::Result<bool> {
            match value {
                "true" => Ok(true),
                "false" => Ok(false),
                other => anyhow::bail!(
                    "--dynamic-config-value: {key} needs true or false, got {other:?}"
                ),
            }
        };
        let positive = || -> anyhow::Result<usize> {
            value.parse().ok().filter(|n| *n > 0).with_context(|| {
                format!("--dynamic-config-value: {key} needs a positive integer, got {value:?}")
            })
        };
        let duration = |example: &str| -> anyhow::Result<std::time::Duration> {
            parse_duration(value).with_context(|| {
                format!("--dynamic-config-value: {key} needs a duration such as \"{example}\", got {value:?}")
            })
        };
        let known = if key == "history.continueAsNewMinInterval" {
            config.options.continue_as_new_min_interval = duration("1s")?;
            true
        } else if key == "matching.workerRegistryEntryTTL" {
            let ttl = duration("5m")?;
            anyhow::ensure!(
                !ttl.is_zero(),
                "--dynamic-config-value: {key} needs a duration such as \"5m\", got {value:?}"
            );
            config.options.worker_heartbeat_ttl = ttl;
            true
        } else if key == "matching.workerRegistryMaxEntries" {
            config.options.worker_heartbeat_max_entries = positive()?;
            true
        } else if key == "system.enableEagerWorkflowStart" {
            config.options.eager_workflow_start = flag()?;
            true
        } else if key == "system.enableActivityEagerExecution" {
            config.options.eager_activities = flag()?;
            true
        } else if key == "history.cacheMaxSize" {
            config.options.cache_size = positive()?;
            true
        } else {
            config
                .options
                .limits
                .set(key, value)
                .map_err(|e| anyhow::anyhow!("--dynamic-config-value: {e}"))?
        };
        if !known {
            ignored_keys.push(key.to_string());
        }
    }
    Ok(DevPlan {
        config,
        log_level,
        ignored_keys,
    })
}

/// Sends log lines to stderr at `level` (`RUST_LOG` wins). Set up before the database opens, so
/// what the open reports (a torn file made again, say) reaches the log.
fn init_logging(level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

async fn start_dev(plan: DevPlan, began: Instant) -> anyhow::Result<()> {
    let DevPlan {
        config,
        log_level: _,
        ignored_keys,
    } = plan;
    for key in ignored_keys {
        tracing::info!(key, "dynamic config key not used by Kairos; ignored");
    }
    let storage = config.database.describe();
    let namespaces = config.namespaces.clone();
    let server = Server::start(config).await?;
    println!(
        "Kairos server listening on {} (started in {:.1} ms)",
        server.addr(),
        began.elapsed().as_secs_f64() * 1000.0
    );
    println!("Data: {storage}");
    println!("Namespaces: {}", namespaces.join(", "));
    if let Some(addr) = server.metrics_addr() {
        println!("Metrics: http://{addr}/metrics");
    }
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to listen for SIGTERM")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = sigterm.recv() => {}
    }
    eprintln!("shutting down");
    server.shutdown().await
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
        let ServerOnly::Server { command } = ServerCli::parse().command;
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
        Command::Server {
            command: ServerCommand::StartDev(args),
        } => {
            let mut plan = dev_plan(args)?;
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
