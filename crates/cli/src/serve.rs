//! `kairos server start-dev` and `kairos server start`: their flags, the configuration file
//! `start` also reads, and running the server until a signal stops it.
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kairos_server::{Config, Database, Server};

use crate::client;

#[derive(Subcommand)]
pub(crate) enum ServerCommand {
    /// Start a development server: every role in one process, SQLite storage (or PostgreSQL
    /// with --db-url).
    StartDev(StartDev),
    /// Start one node of a cluster: every role, on a PostgreSQL database shared with the
    /// cluster's other nodes (a single node is a cluster of one).
    Start(Start),
}

/// The flags `start-dev` and `start` share.
#[derive(clap::Args)]
pub(crate) struct ServeFlags {
    /// IP address to bind the frontend to.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// Port for the frontend gRPC service.
    #[arg(short, long, default_value_t = 7233)]
    port: u16,
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
}

#[derive(Parser)]
pub(crate) struct StartDev {
    #[command(flatten)]
    serve: ServeFlags,
    /// SQLite file to keep data in (default: ~/.local/share/kairos/dev.db); `:memory:` keeps
    /// nothing.
    #[arg(short = 'f', long = "db-filename", conflicts_with = "db_url")]
    db_filename: Option<String>,
    /// PostgreSQL database to keep data in instead of a SQLite file:
    /// postgres://user:password@host:port/database[?schema=NAME&pool_size=N].
    #[arg(long = "db-url", env = "KAIROS_DB_URL", value_name = "URL")]
    db_url: Option<String>,
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
pub(crate) fn postgres_database(url: String) -> anyhow::Result<Database> {
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
pub(crate) struct DevPlan {
    pub(crate) config: Config,
    pub(crate) log_level: String,
    /// Dynamic-config keys Kairos does not use (logged once logging is set up).
    ignored_keys: Vec<String>,
}

pub(crate) fn dev_plan(args: StartDev) -> anyhow::Result<DevPlan> {
    let database = match (args.db_url, args.db_filename.as_deref()) {
        (Some(url), _) => postgres_database(url)?,
        (None, Some(":memory:")) => Database::SqliteMemory,
        (None, Some(path)) => Database::SqliteFile(PathBuf::from(path)),
        (None, None) => Database::SqliteFile(default_db_path()),
    };
    plan(args.serve, database)
}

/// The configuration the shared flags give, over `database`.
fn plan(args: ServeFlags, database: Database) -> anyhow::Result<DevPlan> {
    let log_level = match args.log_level.as_str() {
        "debug" | "info" | "warn" | "error" | "trace" => args.log_level.clone(),
        other => anyhow::bail!("invalid --log-level {other:?}: use debug, info, warn or error"),
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
pub(crate) fn init_logging(level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

pub(crate) async fn start_dev(plan: DevPlan, began: Instant) -> anyhow::Result<()> {
    let DevPlan {
        config,
        log_level: _,
        ignored_keys,
    } = plan;
    for key in ignored_keys {
        tracing::info!(key, "dynamic config key not used by Kairos; ignored");
    }
    let storage = config.database.describe();
    let node_name = config.cluster.as_ref().map(|c| c.node_name.clone());
    let roles = config.cluster.as_ref().map(|c| c.roles);
    let namespaces = config.namespaces.clone();
    let server = Server::start(config).await?;
    if roles.is_none_or(|r| r.frontend) {
        println!(
            "Kairos server listening on {} (started in {:.1} ms)",
            server.addr(),
            began.elapsed().as_secs_f64() * 1000.0
        );
    } else {
        println!(
            "Kairos node listening on {} for the other nodes only, no frontend (started in \
             {:.1} ms)",
            server.addr(),
            began.elapsed().as_secs_f64() * 1000.0
        );
    }
    println!("Data: {storage}");
    if let Some(addr) = server.internal_addr() {
        println!(
            "Cluster node {} (other nodes reach it at {addr}; services: {}; shards held: {})",
            node_name.unwrap_or_default(),
            roles.unwrap_or(kairos_server::Roles::ALL).names().join(","),
            server.held_shards().len()
        );
    }
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
#[derive(Parser)]
#[command(args_override_self = true)]
pub(crate) struct Start {
    #[command(flatten)]
    serve: ServeFlags,
    /// The cluster's PostgreSQL database, shared by every node:
    /// postgres://user:password@host:port/database[?schema=NAME&pool_size=N].
    #[arg(long = "db-url", env = "KAIROS_DB_URL", value_name = "URL")]
    db_url: Option<String>,
    /// Port on --ip (or --broadcast-address) where the other nodes reach this one.
    #[arg(long, default_value_t = 7235)]
    internal_port: u16,
    /// The IP address the other nodes use to reach this node (default: --ip, which must then
    /// not be 0.0.0.0).
    #[arg(long, value_name = "IP")]
    broadcast_address: Option<IpAddr>,
    /// This node's name, unique in the cluster (default: IP:INTERNAL_PORT).
    #[arg(long)]
    node_name: Option<String>,
    /// The roles this node runs (frontend, history, matching, worker; comma-separated or
    /// repeated; default all): history nodes hold shards, matching nodes own task queues,
    /// frontend nodes serve clients on --port. Any node forwards what it does not hold.
    #[arg(long, value_delimiter = ',')]
    services: Vec<String>,
    /// History shards: fixed when the database is first used; a node configured otherwise is
    /// refused.
    #[arg(long, default_value_t = 16)]
    num_history_shards: i32,
    /// A node whose last heartbeat is older than this is dead and its shards and task queues
    /// move to the others (e.g. `10s`, `500ms`).
    #[arg(long, default_value = "10s")]
    membership_timeout: String,
    /// A TOML file of the same settings, each a flag's name without its dashes
    /// (`db-url = "postgres://..."`, `namespace = ["orders"]`); flags given win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

pub(crate) fn start_plan(args: Start) -> anyhow::Result<DevPlan> {
    let url = args.db_url.context(
        "kairos server start needs the cluster's database: --db-url postgres://... (or db-url \
         in --config, or KAIROS_DB_URL)",
    )?;
    let database = postgres_database(url)?;
    let known = kairos_server::Roles::NAMES;
    for service in &args.services {
        anyhow::ensure!(
            known.contains(&service.as_str()),
            "unknown --services value {service:?}: use frontend, history, matching, worker"
        );
    }
    let roles = if args.services.is_empty() {
        kairos_server::Roles::ALL
    } else {
        kairos_server::Roles::from_names(&args.services)
    };
    anyhow::ensure!(
        (1..=16384).contains(&args.num_history_shards),
        "--num-history-shards must be between 1 and 16384"
    );
    let timeout = parse_duration(&args.membership_timeout)
        .filter(|t| *t >= std::time::Duration::from_millis(500))
        .with_context(|| {
            format!(
                "--membership-timeout needs a duration of at least 500ms such as \"10s\", got {:?}",
                args.membership_timeout
            )
        })?;
    let broadcast = args.broadcast_address.unwrap_or(args.serve.ip);
    anyhow::ensure!(
        !broadcast.is_unspecified(),
        "--ip {} is not an address other nodes can reach: give --broadcast-address",
        args.serve.ip
    );
    let internal_listen = SocketAddr::new(args.serve.ip, args.internal_port);
    let advertised = SocketAddr::new(broadcast, args.internal_port);
    let node_name = args.node_name.unwrap_or_else(|| advertised.to_string());
    let mut plan = plan(args.serve, database)?;
    plan.config.options.shard_count = args.num_history_shards;
    let mut cluster = kairos_server::ClusterConfig::new(node_name, internal_listen);
    cluster.advertise_internal = if args.internal_port == 0 {
        String::new()
    } else {
        advertised.to_string()
    };
    cluster.membership_timeout = timeout;
    cluster.roles = roles;
    cluster.heartbeat_interval = (timeout / 10).clamp(
        std::time::Duration::from_millis(50),
        std::time::Duration::from_secs(1),
    );
    plan.config.cluster = Some(cluster);
    Ok(plan)
}

/// The command line with the settings of `--config FILE` put before the flags (which win:
/// a flag given twice takes its last value). Each key of the file is a flag of `server start`
/// by its long name (dashes or underscores); a list gives a repeated flag.
pub(crate) fn with_config_file(
    args: Vec<std::ffi::OsString>,
) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let Some(at) = args
        .iter()
        .position(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
    else {
        return Ok(args);
    };
    let path = match args[at].to_string_lossy().strip_prefix("--config=") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(args.get(at + 1).context("--config needs a file")?),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("failed to read the configuration file {}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map_or(1, |span| {
            text[..span.start.min(text.len())].lines().count().max(1)
        });
        anyhow::anyhow!(
            "{} is not valid TOML: {} (line {line})",
            path.display(),
            e.message().trim()
        )
    })?;
    let known: Vec<String> = <Start as clap::CommandFactory>::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .collect();
    let mut from_file: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        anyhow::ensure!(
            known.contains(&flag) && flag != "config",
            "{}: unknown setting {key:?} (the settings are the flags of `kairos server start`)",
            path.display()
        );
        let values = match value {
            toml::Value::Array(items) => items,
            other => vec![other],
        };
        for value in values {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => anyhow::bail!(
                    "{}: setting {key:?} has an unsupported value {other}",
                    path.display()
                ),
            };
            from_file.push(format!("--{flag}={text}").into());
        }
    }
    // After `kairos server start`: the file's settings, then the command line's flags.
    let start = args
        .iter()
        .position(|a| a == "start")
        .map_or(args.len(), |i| i + 1);
    let mut merged: Vec<std::ffi::OsString> = args[..start].to_vec();
    merged.extend(from_file);
    merged.extend(args[start..].iter().cloned());
    Ok(merged)
}
