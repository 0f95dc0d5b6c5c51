//! A group of `WriteBatch`es in one transaction, sent as one pipeline: `BEGIN`, then per batch
//! its shard's advisory lock taken shared, the lease read, and every write (current-run
//! pointer, executions conditioned on their version and on where their history ends, history
//! rows, timers, transfer tasks, visibility records), each statement prepared once per
//! connection. The answers are checked together, then the transaction is committed, or rolled
//! back when any check failed (and each batch committed again on its own): two round trips per
//! group, whatever its size.
//!
//! Fencing: a lease bump takes the same advisory lock exclusively, so it waits for every commit
//! in flight under the old lease, and every commit after it reads the new `range_id`. (A shared
//! row lock on the shard's row would do the same, but make every commit write that row: a
//! multixact under load.)
use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::ClientWrapper as Client;
use kairos_core::filter::Value;
use kairos_persistence::{
    CurrentWrite, Error, ExecutionWrite, Result, VisibilityWrite, WriteBatch,
};
use tokio_postgres::types::ToSql;

use crate::error::pg_err;
use crate::history::{MAX_EVENTS_PER_ROW, frame};

type Event = (String, i64, Vec<u8>);

/// A statement of the pipeline: its answer (rows affected or returned), what it was doing, and
/// what an answer of no rows means.
struct Step<'a> {
    answer:
        Pin<Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send + 'a>>,
    what: &'static str,
    /// `Some(error)`: no row affected means the batch's condition failed, with this error.
    unless_none: Option<Error>,
}

/// Commits `batches` on one pooled connection, in one transaction when they all succeed: one
/// pipeline, one WAL flush for all of them. When any fails (a condition, a lost lease, an
/// error), the transaction is rolled back and each batch is committed again on its own, so
/// one failing batch never fails another. The results are in the batches' order. With `synced`
/// false, the transactions do not wait for the server's log flush (`synchronous_commit` off for
/// them alone). `commits` counts the transactions committed.
pub(crate) async fn commit_group(
    client: &mut deadpool_postgres::Object,
    batches: &[WriteBatch],
    lock_space: i32,
    synced: bool,
    commits: &mut u64,
) -> Vec<Result<()>> {
    if batches.len() > 1
        && try_together(client, batches, lock_space, synced)
            .await
            .is_ok()
    {
        *commits += 1;
        return batches.iter().map(|_| Ok(())).collect();
    }
    let mut results = Vec::with_capacity(batches.len());
    for batch in batches {
        let result = try_together(client, std::slice::from_ref(batch), lock_space, synced).await;
        *commits += u64::from(result.is_ok());
        results.push(result);
    }
    results
}

/// Commits `batches` in one transaction, or none of them: the first failure met.
async fn try_together(
    client: &mut deadpool_postgres::Object,
    batches: &[WriteBatch],
    lock_space: i32,
    synced: bool,
) -> Result<()> {
    let client: &Client = client;
    let plans = batches.iter().map(Plan::of).collect::<Result<Vec<_>>>()?;
    let statements = futures::future::join_all(
        batches
            .iter()
            .zip(&plans)
            .map(|(batch, plan)| Statements::prepare(client, plan, batch)),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let mut steps: Vec<Step<'_>> = Vec::new();
    let begin = client.batch_execute(if synced {
        "BEGIN"
    } else {
        "BEGIN; SET LOCAL synchronous_commit TO off"
    });
    // The shard's lock and lease check once per (shard, lease) in the group, before the first
    // of its batches' writes: the lock is held to the end of the transaction.
    let mut checked: Vec<(i32, i64)> = Vec::new();
    for ((batch, plan), statements) in batches.iter().zip(&plans).zip(&statements) {
        if !checked.contains(&(batch.shard_id, batch.range_id)) {
            checked.push((batch.shard_id, batch.range_id));
            lease_steps(client, statements, batch, lock_space, &mut steps);
        }
        writes(client, statements, plan, batch, &mut steps);
    }
    let (begun, answers) = futures::future::join(
        begin,
        futures::future::join_all(
            steps
                .into_iter()
                .map(|s| async move { (s.answer.await, s.what, s.unless_none) }),
        ),
    )
    .await;
    begun.map_err(pg_err("failed to begin a transaction"))?;
    let mut failure = None;
    for (answer, what, unless_none) in answers {
        if failure.is_some() {
            break;
        }
        match answer {
            Err(e) => failure = Some(pg_err(what)(e)),
            Ok(0) => failure = unless_none,
            Ok(_) => {}
        }
    }
    match failure {
        None => client
            .batch_execute("COMMIT")
            .await
            .map_err(pg_err("failed to commit")),
        Some(error) => {
            // The connection goes back to the pool outside any transaction.
            client
                .batch_execute("ROLLBACK")
                .await
                .map_err(pg_err("failed to roll back"))?;
            Err(error)
        }
    }
}

/// The shard's advisory lock (shared) and its lease check, before a batch's writes.
fn lease_steps<'a>(
    client: &'a Client,
    statements: &'a Statements,
    batch: &'a WriteBatch,
    lock_space: i32,
    steps: &mut Vec<Step<'a>>,
) {
    steps.push(step(
        async move {
            client
                .execute(&statements.lock, &[&lock_space, &batch.shard_id])
                .await
        },
        "failed to take the shard's lock",
        None,
    ));
    let lease_ok = async move {
        let row = client
            .query_opt(&statements.lease, &[&batch.shard_id])
            .await?;
        Ok(u64::from(
            row.map(|r| r.get::<_, i64>(0)) == Some(batch.range_id),
        ))
    };
    steps.push(Step {
        answer: Box::pin(lease_ok),
        what: "failed to read the shard lease",
        unless_none: Some(Error::ShardOwnershipLost {
            shard_id: batch.shard_id,
        }),
    });
}

fn step<'a>(
    answer: impl Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send + 'a,
    what: &'static str,
    unless_none: Option<Error>,
) -> Step<'a> {
    Step {
        answer: Box::pin(answer),
        what,
        unless_none,
    }
}

/// What a batch writes, worked out before anything is sent: each run's events checked to be
/// consecutive, history rows framed, the rows of each kind gathered for one statement.
struct Plan {
    /// Per run the batch writes events for: (run id, first event id, the id after the last).
    spans: Vec<(String, i64, i64)>,
    history_runs: Vec<String>,
    history_firsts: Vec<i64>,
    history_data: Vec<Vec<u8>>,
}

impl Plan {
    fn of(batch: &WriteBatch) -> Result<Plan> {
        let mut runs: Vec<&str> = Vec::new();
        for (run_id, _, _) in &batch.events {
            if !runs.contains(&run_id.as_str()) {
                runs.push(run_id);
            }
        }
        let mut plan = Plan {
            spans: Vec::new(),
            history_runs: Vec::new(),
            history_firsts: Vec::new(),
            history_data: Vec::new(),
        };
        for run_id in runs {
            let events: Vec<&Event> = batch.events.iter().filter(|e| e.0 == run_id).collect();
            let first = events[0].1;
            for (n, e) in events.iter().enumerate() {
                if e.1 != first + n as i64 {
                    return Err(Error::ConditionFailed(format!(
                        "event {} of run {run_id} is out of order in its batch",
                        e.1
                    )));
                }
            }
            let inserted = batch
                .executions
                .iter()
                .any(|(r, w)| r == run_id && matches!(w, ExecutionWrite::Insert { .. }));
            if inserted && first != 1 {
                return Err(Error::ConditionFailed(format!(
                    "event {first} of new run {run_id} is out of order: its first must be 1"
                )));
            }
            plan.spans
                .push((run_id.to_string(), first, first + events.len() as i64));
            for row in events.chunks(MAX_EVENTS_PER_ROW) {
                let mut data = Vec::new();
                for e in row {
                    frame(&mut data, &e.2);
                }
                plan.history_runs.push(run_id.to_string());
                plan.history_firsts.push(row[0].1);
                plan.history_data.push(data);
            }
        }
        Ok(plan)
    }

    /// The span of `run_id`'s events in the batch: (first id, the id after the last).
    fn span(&self, run_id: &str) -> Option<(i64, i64)> {
        self.spans
            .iter()
            .find(|(r, _, _)| r == run_id)
            .map(|(_, first, next)| (*first, *next))
    }
}

/// The prepared statements a batch needs (prepared once per connection; later batches find
/// them in the connection's cache without a round trip).
struct Statements {
    lock: tokio_postgres::Statement,
    lease: tokio_postgres::Statement,
    by_sql: Vec<(&'static str, tokio_postgres::Statement)>,
}

const CURRENT_INSERT: &str =
    "INSERT INTO current_executions (namespace_id, workflow_id, shard_id, run_id, data)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
const CURRENT_MOVE: &str = "UPDATE current_executions SET run_id = $3, data = $4
      WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $5";
const CURRENT_DELETE: &str = "DELETE FROM current_executions
      WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $3";
const EXECUTION_INSERT: &str =
    "INSERT INTO executions (namespace_id, workflow_id, run_id, shard_id,
         db_version, state, history_next)
     VALUES ($1, $2, $3, $4, 1, $5, $6) ON CONFLICT DO NOTHING";
// Without events, `history_next` must equal itself: one statement for both cases.
const EXECUTION_UPDATE: &str = "UPDATE executions SET state = $1, db_version = db_version + 1,
        history_next = CASE WHEN $6::BIGINT < 0 THEN history_next ELSE $6::BIGINT END
      WHERE namespace_id = $2 AND workflow_id = $3 AND run_id = $4
        AND db_version = $5 AND ($7::BIGINT < 0 OR history_next = $7::BIGINT)";
const EXECUTION_DELETE: &str = "WITH gone AS (
         DELETE FROM executions
          WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $3
          RETURNING run_id)
     DELETE FROM history WHERE namespace_id = $1 AND run_id IN (SELECT run_id FROM gone)";
const HISTORY_MOVE: &str = "UPDATE executions SET history_next = $1
      WHERE namespace_id = $2 AND workflow_id = $3 AND run_id = $4 AND history_next = $5";
const HISTORY_INSERT: &str = "INSERT INTO history (namespace_id, run_id, first_event_id, data)
     SELECT $1, * FROM UNNEST($2::TEXT[], $3::BIGINT[], $4::BYTEA[])";
const TIMERS_INSERT: &str =
    "INSERT INTO timers (shard_id, task_id, fire_at_ms, namespace_id, workflow_id, run_id, data)
     SELECT * FROM UNNEST($1::INTEGER[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[],
         $6::TEXT[], $7::BYTEA[])";
const TIMERS_DELETE: &str =
    "DELETE FROM timers t USING UNNEST($2::BIGINT[], $3::BIGINT[]) AS d(fire_at_ms, task_id)
      WHERE t.shard_id = $1 AND t.fire_at_ms = d.fire_at_ms AND t.task_id = d.task_id";
const TRANSFERS_INSERT: &str = "INSERT INTO transfers (shard_id, task_id, namespace_id, workflow_id, run_id, data)
     SELECT * FROM UNNEST($1::INTEGER[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BYTEA[])";
const TRANSFERS_DELETE: &str =
    "DELETE FROM transfers WHERE shard_id = $1 AND task_id = ANY($2::BIGINT[])";
const VISIBILITY_CLEAR: &str =
    "DELETE FROM visibility_attributes WHERE namespace_id = $1 AND run_id = $2";
const VISIBILITY_DELETE: &str = "DELETE FROM visibility WHERE namespace_id = $1 AND run_id = $2";
const VISIBILITY_UPDATE: &str =
    "UPDATE visibility SET status = $3, close_time = $4, sort_close = $5,
         execution_duration = $6, history_length = $7, history_size_bytes = $8,
         state_transition_count = $9, execution_time = $10
     WHERE namespace_id = $1 AND run_id = $2";
const VISIBILITY_INSERT: &str =
    "INSERT INTO visibility (namespace_id, run_id, workflow_id, workflow_type,
         task_queue, status, start_time, execution_time, close_time, sort_close,
         execution_duration, history_length, history_size_bytes, state_transition_count,
         parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, first_run_id,
         memo, search_attributes)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
         $18, $19, $20, $21)";
const VISIBILITY_UPSERT: &str =
    "INSERT INTO visibility (namespace_id, run_id, workflow_id, workflow_type,
         task_queue, status, start_time, execution_time, close_time, sort_close,
         execution_duration, history_length, history_size_bytes, state_transition_count,
         parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, first_run_id,
         memo, search_attributes)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
         $18, $19, $20, $21)
     ON CONFLICT (namespace_id, run_id) DO UPDATE SET workflow_id = EXCLUDED.workflow_id,
         workflow_type = EXCLUDED.workflow_type, task_queue = EXCLUDED.task_queue,
         status = EXCLUDED.status, start_time = EXCLUDED.start_time,
         execution_time = EXCLUDED.execution_time, close_time = EXCLUDED.close_time,
         sort_close = EXCLUDED.sort_close, execution_duration = EXCLUDED.execution_duration,
         history_length = EXCLUDED.history_length,
         history_size_bytes = EXCLUDED.history_size_bytes,
         state_transition_count = EXCLUDED.state_transition_count,
         parent_workflow_id = EXCLUDED.parent_workflow_id,
         parent_run_id = EXCLUDED.parent_run_id, root_workflow_id = EXCLUDED.root_workflow_id,
         root_run_id = EXCLUDED.root_run_id, first_run_id = EXCLUDED.first_run_id,
         memo = EXCLUDED.memo, search_attributes = EXCLUDED.search_attributes";
const ATTRIBUTES_INSERT: &str =
    "INSERT INTO visibility_attributes (namespace_id, run_id, name, int_value, real_value,
         text_value)
     SELECT $1, $2, * FROM UNNEST($3::TEXT[], $4::BIGINT[], $5::DOUBLE PRECISION[], $6::TEXT[])";

impl Statements {
    async fn prepare(client: &Client, plan: &Plan, batch: &WriteBatch) -> Result<Statements> {
        let mut wanted: Vec<&'static str> = Vec::new();
        let mut want = |sql: &'static str| {
            if !wanted.contains(&sql) {
                wanted.push(sql);
            }
        };
        match &batch.current {
            Some(CurrentWrite::Set {
                expected_run_id: None,
                ..
            }) => want(CURRENT_INSERT),
            Some(CurrentWrite::Set { .. }) => want(CURRENT_MOVE),
            Some(CurrentWrite::DeleteIf { .. }) => want(CURRENT_DELETE),
            None => {}
        }
        for (_, write) in &batch.executions {
            want(match write {
                ExecutionWrite::Insert { .. } => EXECUTION_INSERT,
                ExecutionWrite::Update { .. } => EXECUTION_UPDATE,
                ExecutionWrite::Delete => EXECUTION_DELETE,
            });
        }
        if plan
            .spans
            .iter()
            .any(|(r, _, _)| !batch.executions.iter().any(|(e, _)| e == r))
        {
            want(HISTORY_MOVE);
        }
        if !plan.history_runs.is_empty() {
            want(HISTORY_INSERT);
        }
        if !batch.timers_add.is_empty() {
            want(TIMERS_INSERT);
        }
        if !batch.timers_delete.is_empty() {
            want(TIMERS_DELETE);
        }
        if !batch.transfers_add.is_empty() {
            want(TRANSFERS_INSERT);
        }
        if !batch.transfers_delete.is_empty() {
            want(TRANSFERS_DELETE);
        }
        for write in &batch.visibility {
            match write {
                VisibilityWrite::Delete { .. } => {
                    want(VISIBILITY_CLEAR);
                    want(VISIBILITY_DELETE);
                }
                VisibilityWrite::Update(_) => want(VISIBILITY_UPDATE),
                VisibilityWrite::Insert(row) | VisibilityWrite::Upsert(row) => {
                    if matches!(write, VisibilityWrite::Upsert(_)) {
                        want(VISIBILITY_CLEAR);
                        want(VISIBILITY_UPSERT);
                    } else {
                        want(VISIBILITY_INSERT);
                    }
                    if !row.attributes.is_empty() {
                        want(ATTRIBUTES_INSERT);
                    }
                }
            }
        }
        let prepare = |sql: &'static str| async move {
            client
                .prepare_cached(sql)
                .await
                .map(|s| (sql, s))
                .map_err(pg_err("failed to prepare a statement"))
        };
        let lock = prepare("SELECT pg_advisory_xact_lock_shared($1, $2)");
        let lease = prepare("SELECT range_id FROM shards WHERE shard_id = $1");
        let (lock, lease, rest) = futures::future::join3(
            lock,
            lease,
            futures::future::join_all(wanted.into_iter().map(prepare)),
        )
        .await;
        Ok(Statements {
            lock: lock?.1,
            lease: lease?.1,
            by_sql: rest.into_iter().collect::<Result<Vec<_>>>()?,
        })
    }

    fn get(&self, sql: &'static str) -> &tokio_postgres::Statement {
        &self
            .by_sql
            .iter()
            .find(|(s, _)| *s == sql)
            .expect("prepared for this batch")
            .1
    }
}

/// The write statements of `batch`, in order, appended to `steps`.
fn writes<'a>(
    client: &'a Client,
    st: &'a Statements,
    plan: &'a Plan,
    batch: &'a WriteBatch,
    steps: &mut Vec<Step<'a>>,
) {
    let ns = &batch.namespace_id;
    let wf = &batch.workflow_id;
    let exec = |sql: &'static str, params: Vec<&'a (dyn ToSql + Sync)>| {
        client.execute_raw(st.get(sql), params)
    };
    if let Some(current) = &batch.current {
        // One conditional statement each: the row count says whether the pointer held what
        // the batch expected.
        match current {
            CurrentWrite::Set {
                run_id,
                expected_run_id: None,
                data,
            } => steps.push(step(
                exec(CURRENT_INSERT, vec![ns, wf, &batch.shard_id, run_id, data]),
                "failed to write the current run",
                Some(Error::ConditionFailed(format!(
                    "workflow {wf} has a current run already"
                ))),
            )),
            CurrentWrite::Set {
                run_id,
                expected_run_id: Some(expected),
                data,
            } => steps.push(step(
                exec(CURRENT_MOVE, vec![ns, wf, run_id, data, expected]),
                "failed to write the current run",
                Some(Error::ConditionFailed(format!(
                    "current run of {wf} is not {expected}"
                ))),
            )),
            CurrentWrite::DeleteIf { run_id } => steps.push(step(
                exec(CURRENT_DELETE, vec![ns, wf, run_id]),
                "failed to delete the current run",
                None,
            )),
        }
    }
    for (run_id, write) in &batch.executions {
        match write {
            ExecutionWrite::Insert { state } => {
                let next = plan.span(run_id).map_or(1, |(_, next)| next);
                steps.push(step(
                    async move {
                        client
                            .execute(
                                st.get(EXECUTION_INSERT),
                                &[ns, wf, run_id, &batch.shard_id, state, &next],
                            )
                            .await
                    },
                    "failed to insert an execution",
                    Some(Error::AlreadyExists(format!("run {run_id}"))),
                ));
            }
            ExecutionWrite::Update {
                state,
                expected_version,
            } => {
                let (first, next) = plan.span(run_id).unwrap_or((-1, -1));
                steps.push(step(
                    async move {
                        client
                            .execute(
                                st.get(EXECUTION_UPDATE),
                                &[state, ns, wf, run_id, expected_version, &next, &first],
                            )
                            .await
                    },
                    "failed to update an execution",
                    Some(Error::ConditionFailed(format!(
                        "run {run_id} is not at version {expected_version}, or its history \
                         does not continue at the batch's first event"
                    ))),
                ));
            }
            ExecutionWrite::Delete => steps.push(step(
                exec(EXECUTION_DELETE, vec![ns, wf, run_id]),
                "failed to delete an execution",
                None,
            )),
        }
    }
    // Events of runs whose state this batch does not write.
    for (run_id, first, next) in &plan.spans {
        if batch.executions.iter().any(|(r, _)| r == run_id) {
            continue;
        }
        steps.push(step(
            exec(HISTORY_MOVE, vec![next, ns, wf, run_id, first]),
            "failed to move a run's history",
            Some(Error::ConditionFailed(format!(
                "event {first} of run {run_id} does not continue its stored history (or the \
                 run is not stored)"
            ))),
        ));
    }
    if !plan.history_runs.is_empty() {
        steps.push(step(
            exec(
                HISTORY_INSERT,
                vec![
                    ns,
                    &plan.history_runs,
                    &plan.history_firsts,
                    &plan.history_data,
                ],
            ),
            "failed to append history events",
            None,
        ));
    }
    if !batch.timers_add.is_empty() {
        let t = &batch.timers_add;
        let columns = (
            t.iter().map(|t| t.shard_id).collect::<Vec<i32>>(),
            t.iter().map(|t| t.task_id).collect::<Vec<i64>>(),
            t.iter().map(|t| t.fire_at_ms).collect::<Vec<i64>>(),
            t.iter()
                .map(|t| t.namespace_id.as_str())
                .collect::<Vec<&str>>(),
            t.iter()
                .map(|t| t.workflow_id.as_str())
                .collect::<Vec<&str>>(),
            t.iter().map(|t| t.run_id.as_str()).collect::<Vec<&str>>(),
            t.iter().map(|t| t.data.as_slice()).collect::<Vec<&[u8]>>(),
        );
        steps.push(step(
            async move {
                let (a, b, c, d, e, f, g) = &columns;
                client
                    .execute(st.get(TIMERS_INSERT), &[a, b, c, d, e, f, g])
                    .await
            },
            "failed to insert timers",
            None,
        ));
    }
    if !batch.timers_delete.is_empty() {
        let fire: Vec<i64> = batch.timers_delete.iter().map(|t| t.fire_at_ms).collect();
        let ids: Vec<i64> = batch.timers_delete.iter().map(|t| t.task_id).collect();
        steps.push(step(
            async move {
                client
                    .execute(st.get(TIMERS_DELETE), &[&batch.shard_id, &fire, &ids])
                    .await
            },
            "failed to delete timers",
            None,
        ));
    }
    if !batch.transfers_add.is_empty() {
        let t = &batch.transfers_add;
        let columns = (
            t.iter().map(|t| t.shard_id).collect::<Vec<i32>>(),
            t.iter().map(|t| t.task_id).collect::<Vec<i64>>(),
            t.iter()
                .map(|t| t.namespace_id.as_str())
                .collect::<Vec<&str>>(),
            t.iter()
                .map(|t| t.workflow_id.as_str())
                .collect::<Vec<&str>>(),
            t.iter().map(|t| t.run_id.as_str()).collect::<Vec<&str>>(),
            t.iter().map(|t| t.data.as_slice()).collect::<Vec<&[u8]>>(),
        );
        steps.push(step(
            async move {
                let (a, b, c, d, e, f) = &columns;
                client
                    .execute(st.get(TRANSFERS_INSERT), &[a, b, c, d, e, f])
                    .await
            },
            "failed to insert transfer tasks",
            None,
        ));
    }
    if !batch.transfers_delete.is_empty() {
        steps.push(step(
            exec(
                TRANSFERS_DELETE,
                vec![&batch.shard_id, &batch.transfers_delete],
            ),
            "failed to delete transfer tasks",
            None,
        ));
    }
    for write in &batch.visibility {
        visibility(client, st, ns, write, steps);
    }
}

/// The statements of one change to a run's visibility record.
fn visibility<'a>(
    client: &'a Client,
    st: &'a Statements,
    ns: &'a String,
    write: &'a VisibilityWrite,
    steps: &mut Vec<Step<'a>>,
) {
    let exec = |sql: &'static str, params: Vec<&'a (dyn ToSql + Sync)>| {
        client.execute_raw(st.get(sql), params)
    };
    match write {
        VisibilityWrite::Delete { run_id } => {
            steps.push(step(
                exec(VISIBILITY_CLEAR, vec![ns, run_id]),
                "failed to clear search attributes",
                None,
            ));
            steps.push(step(
                exec(VISIBILITY_DELETE, vec![ns, run_id]),
                "failed to delete a visibility record",
                None,
            ));
        }
        VisibilityWrite::Update(row) => {
            let status = i64::from(row.status);
            let sort_close = row.close_time_ns.unwrap_or(i64::MAX);
            steps.push(step(
                async move {
                    client
                        .execute(
                            st.get(VISIBILITY_UPDATE),
                            &[
                                ns,
                                &row.run_id,
                                &status,
                                &row.close_time_ns,
                                &sort_close,
                                &row.execution_duration_ns,
                                &row.history_length,
                                &row.history_size_bytes,
                                &row.state_transition_count,
                                &row.execution_time_ns,
                            ],
                        )
                        .await
                },
                "failed to update a visibility record",
                None,
            ));
        }
        VisibilityWrite::Insert(row) | VisibilityWrite::Upsert(row) => {
            let upsert = matches!(write, VisibilityWrite::Upsert(_));
            if upsert {
                steps.push(step(
                    exec(VISIBILITY_CLEAR, vec![ns, &row.run_id]),
                    "failed to clear search attributes",
                    None,
                ));
            }
            let sql = if upsert {
                VISIBILITY_UPSERT
            } else {
                VISIBILITY_INSERT
            };
            let status = i64::from(row.status);
            let sort_close = row.close_time_ns.unwrap_or(i64::MAX);
            steps.push(step(
                async move {
                    client
                        .execute(
                            st.get(sql),
                            &[
                                ns,
                                &row.run_id,
                                &row.workflow_id,
                                &row.workflow_type,
                                &row.task_queue,
                                &status,
                                &row.start_time_ns,
                                &row.execution_time_ns,
                                &row.close_time_ns,
                                &sort_close,
                                &row.execution_duration_ns,
                                &row.history_length,
                                &row.history_size_bytes,
                                &row.state_transition_count,
                                &row.parent_workflow_id,
                                &row.parent_run_id,
                                &row.root_workflow_id,
                                &row.root_run_id,
                                &row.first_run_id,
                                &row.memo,
                                &row.search_attributes,
                            ],
                        )
                        .await
                },
                "failed to write a visibility record",
                None,
            ));
            if !row.attributes.is_empty() {
                let mut names = Vec::new();
                let mut ints = Vec::new();
                let mut reals = Vec::new();
                let mut texts = Vec::new();
                for (name, value) in &row.attributes {
                    names.push(name.as_str());
                    let (int, real, text) = match value {
                        Value::Int(i) => (Some(*i), None, None),
                        Value::Real(x) => (None, Some(*x), None),
                        Value::Text(t) => (None, None, Some(t.as_str())),
                    };
                    ints.push(int);
                    reals.push(real);
                    texts.push(text);
                }
                steps.push(step(
                    async move {
                        client
                            .execute(
                                st.get(ATTRIBUTES_INSERT),
                                &[ns, &row.run_id, &names, &ints, &reals, &texts],
                            )
                            .await
                    },
                    "failed to write search attributes",
                    None,
                ));
            }
        }
    }
}
