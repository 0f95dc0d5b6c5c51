//! The schema: versioned migrations embedded in the binary, applied in order at open (and by
//! `kairos admin migrate`), under an advisory lock so nodes starting together apply each once;
//! the version reached is recorded in `schema_version`. A database whose schema is newer than
//! this binary is refused, never touched.
use kairos_persistence::{Error, Result};

/// The migrations, in order; the schema's version is how many have run.
pub const MIGRATIONS: &[&str] = &[
    // 1: every table. Text columns sort bytewise (`COLLATE "C"`), as SQLite's do, so lists page
    // in the same order on both stores.
    r#"
CREATE TABLE namespaces (
    id TEXT COLLATE "C" PRIMARY KEY, name TEXT COLLATE "C" NOT NULL UNIQUE, data BYTEA NOT NULL);
CREATE TABLE cluster_metadata (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE shards (shard_id INTEGER PRIMARY KEY, range_id BIGINT NOT NULL);
CREATE TABLE executions (
    namespace_id TEXT COLLATE "C" NOT NULL, workflow_id TEXT COLLATE "C" NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL, shard_id INTEGER NOT NULL, db_version BIGINT NOT NULL,
    state BYTEA NOT NULL, history_next BIGINT NOT NULL,
    PRIMARY KEY (namespace_id, workflow_id, run_id));
CREATE TABLE current_executions (
    namespace_id TEXT COLLATE "C" NOT NULL, workflow_id TEXT COLLATE "C" NOT NULL,
    shard_id INTEGER NOT NULL, run_id TEXT COLLATE "C" NOT NULL, data BYTEA NOT NULL,
    PRIMARY KEY (namespace_id, workflow_id));
CREATE TABLE history (
    namespace_id TEXT COLLATE "C" NOT NULL, run_id TEXT COLLATE "C" NOT NULL,
    first_event_id BIGINT NOT NULL, data BYTEA NOT NULL,
    PRIMARY KEY (namespace_id, run_id, first_event_id));
CREATE TABLE timers (
    shard_id INTEGER NOT NULL, fire_at_ms BIGINT NOT NULL, task_id BIGINT NOT NULL,
    namespace_id TEXT COLLATE "C" NOT NULL, workflow_id TEXT COLLATE "C" NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL, data BYTEA NOT NULL,
    PRIMARY KEY (shard_id, fire_at_ms, task_id));
CREATE TABLE transfers (
    shard_id INTEGER NOT NULL, task_id BIGINT NOT NULL,
    namespace_id TEXT COLLATE "C" NOT NULL, workflow_id TEXT COLLATE "C" NOT NULL,
    run_id TEXT COLLATE "C" NOT NULL, data BYTEA NOT NULL,
    PRIMARY KEY (shard_id, task_id));
CREATE TABLE visibility (
    namespace_id TEXT COLLATE "C" NOT NULL, run_id TEXT COLLATE "C" NOT NULL,
    workflow_id TEXT COLLATE "C" NOT NULL, workflow_type TEXT COLLATE "C" NOT NULL,
    task_queue TEXT COLLATE "C" NOT NULL, status BIGINT NOT NULL,
    start_time BIGINT NOT NULL, execution_time BIGINT NOT NULL, close_time BIGINT,
    sort_close BIGINT NOT NULL, execution_duration BIGINT, history_length BIGINT NOT NULL,
    history_size_bytes BIGINT NOT NULL, state_transition_count BIGINT NOT NULL,
    parent_workflow_id TEXT COLLATE "C", parent_run_id TEXT COLLATE "C",
    root_workflow_id TEXT COLLATE "C", root_run_id TEXT COLLATE "C",
    first_run_id TEXT COLLATE "C" NOT NULL, memo BYTEA NOT NULL, search_attributes BYTEA NOT NULL,
    PRIMARY KEY (namespace_id, run_id));
CREATE INDEX visibility_order ON visibility (namespace_id, sort_close DESC, start_time DESC, run_id DESC);
CREATE INDEX visibility_by_workflow_id ON visibility (namespace_id, workflow_id);
CREATE TABLE visibility_attributes (
    namespace_id TEXT COLLATE "C" NOT NULL, run_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL, int_value BIGINT, real_value DOUBLE PRECISION,
    text_value TEXT COLLATE "C");
CREATE INDEX visibility_attributes_by_run ON visibility_attributes (namespace_id, run_id, name);
"#,
    // 2: cluster membership (`kairos server start`): one row per node, heartbeats stamped by
    // the database's clock.
    r#"
CREATE TABLE cluster_members (
    name TEXT COLLATE "C" PRIMARY KEY, rpc_address TEXT NOT NULL, internal_address TEXT NOT NULL,
    session BIGINT NOT NULL, heartbeat_at TIMESTAMPTZ NOT NULL);
"#,
    // 3: the roles each node runs (`--services`), comma-separated.
    r#"
ALTER TABLE cluster_members ADD COLUMN services TEXT NOT NULL
    DEFAULT 'frontend,history,matching,worker';
"#,
];

/// Brings the schema `schema` up to date, or refuses a newer one. Returns the version it is at.
pub async fn migrate(client: &mut tokio_postgres::Client, schema: &str) -> Result<usize> {
    let fail = |what: &'static str| move |e: tokio_postgres::Error| Error::unavailable(what, e);
    let tx = client
        .transaction()
        .await
        .map_err(fail("failed to begin a migration"))?;
    // One node migrates at a time; the others wait here, then find nothing left to do.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1))",
        &[&format!("kairos schema {schema}")],
    )
    .await
    .map_err(fail("failed to take the migration lock"))?;
    // `schema` is checked to be a plain lower-case name (`config::valid_schema_name`).
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (version INTEGER NOT NULL);"
    ))
    .await
    .map_err(fail("failed to create the schema"))?;
    let version: Option<i32> = tx
        .query_opt(&format!("SELECT version FROM {schema}.schema_version"), &[])
        .await
        .map_err(fail("failed to read the schema version"))?
        .map(|row| row.get(0));
    let version = version.unwrap_or(0) as usize;
    if version > MIGRATIONS.len() {
        return Err(Error::Unavailable {
            message: format!(
                "the database schema {schema} is at version {version}, newer than this Kairos \
                 knows ({}); run a newer Kairos",
                MIGRATIONS.len()
            ),
            source: None,
        });
    }
    if version == MIGRATIONS.len() {
        tx.commit()
            .await
            .map_err(fail("failed to commit a migration"))?;
        return Ok(version);
    }
    for migration in &MIGRATIONS[version..] {
        tx.batch_execute(migration)
            .await
            .map_err(fail("failed to apply a migration"))?;
    }
    tx.execute(&format!("DELETE FROM {schema}.schema_version"), &[])
        .await
        .map_err(fail("failed to record the schema version"))?;
    tx.execute(
        &format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)"),
        &[&(MIGRATIONS.len() as i32)],
    )
    .await
    .map_err(fail("failed to record the schema version"))?;
    tx.commit()
        .await
        .map_err(fail("failed to commit a migration"))?;
    Ok(MIGRATIONS.len())
}
