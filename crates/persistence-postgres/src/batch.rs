//! One `WriteBatch` in one transaction: the shard's lease read `FOR SHARE` and compared first
//! (a lease bump waits for the transaction and every later one sees it: fencing), then the
//! current-run pointer, executions conditioned on their version and on where their history
//! ends, history rows, timers, transfer tasks and visibility records. Any failed condition
//! rolls the whole batch back.
use kairos_persistence::{CurrentWrite, Error, ExecutionWrite, Result, WriteBatch};

use crate::error::pg_err;
use crate::history::{MAX_EVENTS_PER_ROW, frame};

/// A statement prepared once per connection (parsed and planned once, then only bound).
pub(crate) async fn prepared(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
) -> Result<tokio_postgres::Statement> {
    tx.prepare_cached(sql)
        .await
        .map_err(pg_err("failed to prepare a statement"))
}

type Event = (String, i64, Vec<u8>);

/// A run's events in a batch, and the span they cover: (first id, the id after the last).
type RunEvents<'a> = (Vec<&'a Event>, Option<(i64, i64)>);

/// Commits `batch` on one pooled connection.
pub(crate) async fn commit(
    client: &mut deadpool_postgres::Object,
    batch: &WriteBatch,
) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .map_err(pg_err("failed to begin a transaction"))?;
    apply(&tx, batch).await?;
    tx.commit().await.map_err(pg_err("failed to commit"))
}

/// The events of `run_id` in the batch, checked to be consecutive: their first and the id after
/// the last, or `None` when there are none.
fn run_events<'a>(batch: &'a WriteBatch, run_id: &str) -> Result<RunEvents<'a>> {
    let events: Vec<&Event> = batch.events.iter().filter(|e| e.0 == run_id).collect();
    let Some(first) = events.first().map(|e| e.1) else {
        return Ok((events, None));
    };
    for (n, e) in events.iter().enumerate() {
        if e.1 != first + n as i64 {
            return Err(Error::ConditionFailed(format!(
                "event {} of run {run_id} is out of order in its batch",
                e.1
            )));
        }
    }
    let next = first + events.len() as i64;
    Ok((events, Some((first, next))))
}

async fn apply(tx: &deadpool_postgres::Transaction<'_>, batch: &WriteBatch) -> Result<()> {
    let lease = prepared(
        tx,
        "SELECT range_id FROM shards WHERE shard_id = $1 FOR SHARE",
    )
    .await?;
    let range: Option<i64> = tx
        .query_opt(&lease, &[&batch.shard_id])
        .await
        .map_err(pg_err("failed to read the shard lease"))?
        .map(|r| r.get(0));
    if range != Some(batch.range_id) {
        return Err(Error::ShardOwnershipLost {
            shard_id: batch.shard_id,
        });
    }
    let ns = &batch.namespace_id;
    let wf = &batch.workflow_id;
    if let Some(current) = &batch.current {
        // One conditional statement each: the row count says whether the pointer held what the
        // batch expected.
        match current {
            CurrentWrite::Set {
                run_id,
                expected_run_id: None,
                data,
            } => {
                let insert = prepared(
                    tx,
                    "INSERT INTO current_executions (namespace_id, workflow_id, shard_id, run_id, data)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .await?;
                let written = tx
                    .execute(&insert, &[ns, wf, &batch.shard_id, run_id, data])
                    .await
                    .map_err(pg_err("failed to write the current run"))?;
                if written == 0 {
                    return Err(Error::ConditionFailed(format!(
                        "workflow {wf} has a current run already"
                    )));
                }
            }
            CurrentWrite::Set {
                run_id,
                expected_run_id: Some(expected),
                data,
            } => {
                let update = prepared(
                    tx,
                    "UPDATE current_executions SET run_id = $3, data = $4
                      WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $5",
                )
                .await?;
                let written = tx
                    .execute(&update, &[ns, wf, run_id, data, expected])
                    .await
                    .map_err(pg_err("failed to write the current run"))?;
                if written == 0 {
                    return Err(Error::ConditionFailed(format!(
                        "current run of {wf} is not {expected}"
                    )));
                }
            }
            CurrentWrite::DeleteIf { run_id } => {
                let delete = prepared(
                    tx,
                    "DELETE FROM current_executions
                      WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $3",
                )
                .await?;
                tx.execute(&delete, &[ns, wf, run_id])
                    .await
                    .map_err(pg_err("failed to delete the current run"))?;
            }
        }
    }
    let mut history_rows: Vec<(&str, Vec<&Event>)> = Vec::new();
    for (run_id, write) in &batch.executions {
        let (events, span) = run_events(batch, run_id)?;
        match write {
            ExecutionWrite::Insert { state } => {
                let next = match span {
                    None => 1,
                    Some((1, next)) => next,
                    Some((first, _)) => {
                        return Err(Error::ConditionFailed(format!(
                            "event {first} of new run {run_id} is out of order: its first must be 1"
                        )));
                    }
                };
                let insert = prepared(
                    tx,
                    "INSERT INTO executions (namespace_id, workflow_id, run_id, shard_id,
                         db_version, state, history_next)
                     VALUES ($1, $2, $3, $4, 1, $5, $6) ON CONFLICT DO NOTHING",
                )
                .await?;
                let inserted = tx
                    .execute(&insert, &[ns, wf, run_id, &batch.shard_id, state, &next])
                    .await
                    .map_err(pg_err("failed to insert an execution"))?;
                if inserted == 0 {
                    return Err(Error::AlreadyExists(format!("run {run_id}")));
                }
            }
            ExecutionWrite::Update {
                state,
                expected_version,
            } => {
                // Without events, `history_next` must equal itself: one statement for both.
                let (first, next) = span.unwrap_or((-1, -1));
                let update = prepared(
                    tx,
                    "UPDATE executions SET state = $1, db_version = db_version + 1,
                            history_next = CASE WHEN $6::BIGINT < 0 THEN history_next ELSE $6::BIGINT END
                      WHERE namespace_id = $2 AND workflow_id = $3 AND run_id = $4
                        AND db_version = $5 AND ($7::BIGINT < 0 OR history_next = $7::BIGINT)",
                )
                .await?;
                let updated = tx
                    .execute(
                        &update,
                        &[state, ns, wf, run_id, expected_version, &next, &first],
                    )
                    .await
                    .map_err(pg_err("failed to update an execution"))?;
                if updated == 0 {
                    return Err(Error::ConditionFailed(format!(
                        "run {run_id} is not at version {expected_version}, or its history does \
                         not continue at the batch's first event"
                    )));
                }
            }
            ExecutionWrite::Delete => {
                let delete = prepared(
                    tx,
                    "WITH gone AS (
                         DELETE FROM executions
                          WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $3
                          RETURNING run_id)
                     DELETE FROM history WHERE namespace_id = $1 AND run_id IN (SELECT run_id FROM gone)",
                )
                .await?;
                tx.execute(&delete, &[ns, wf, run_id])
                    .await
                    .map_err(pg_err("failed to delete an execution"))?;
                continue;
            }
        }
        history_rows.push((run_id, events));
    }
    // Events of runs whose state this batch does not write.
    let mut others: Vec<&str> = Vec::new();
    for (run_id, _, _) in &batch.events {
        let written = batch.executions.iter().any(|(r, _)| r == run_id);
        if !written && !others.contains(&run_id.as_str()) {
            others.push(run_id);
        }
    }
    for run_id in others {
        let (events, span) = run_events(batch, run_id)?;
        let (first, next) = span.expect("the run has events");
        let moved = prepared(
            tx,
            "UPDATE executions SET history_next = $1
              WHERE namespace_id = $2 AND workflow_id = $3 AND run_id = $4 AND history_next = $5",
        )
        .await?;
        let moved = tx
            .execute(&moved, &[&next, ns, wf, &run_id, &first])
            .await
            .map_err(pg_err("failed to move a run's history"))?;
        if moved == 0 {
            return Err(Error::ConditionFailed(format!(
                "event {first} of run {run_id} does not continue its stored history (or the run \
                 is not stored)"
            )));
        }
        history_rows.push((run_id, events));
    }
    // Every row of a kind in one statement: history rows, timers, transfer tasks.
    let mut runs: Vec<&str> = Vec::new();
    let mut firsts: Vec<i64> = Vec::new();
    let mut datas: Vec<Vec<u8>> = Vec::new();
    for (run_id, events) in &history_rows {
        for row in events.chunks(MAX_EVENTS_PER_ROW) {
            let mut data = Vec::new();
            for e in row {
                frame(&mut data, &e.2);
            }
            runs.push(run_id);
            firsts.push(row[0].1);
            datas.push(data);
        }
    }
    if !runs.is_empty() {
        let insert = prepared(
            tx,
            "INSERT INTO history (namespace_id, run_id, first_event_id, data)
             SELECT $1, * FROM UNNEST($2::TEXT[], $3::BIGINT[], $4::BYTEA[])",
        )
        .await?;
        tx.execute(&insert, &[ns, &runs, &firsts, &datas])
            .await
            .map_err(pg_err("failed to append history events"))?;
    }
    if !batch.timers_add.is_empty() {
        let t = &batch.timers_add;
        let insert = prepared(
            tx,
            "INSERT INTO timers (shard_id, task_id, fire_at_ms, namespace_id, workflow_id, run_id, data)
             SELECT * FROM UNNEST($1::INTEGER[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::TEXT[],
                 $6::TEXT[], $7::BYTEA[])",
        )
        .await?;
        let shards: Vec<i32> = t.iter().map(|t| t.shard_id).collect();
        let ids: Vec<i64> = t.iter().map(|t| t.task_id).collect();
        let fire: Vec<i64> = t.iter().map(|t| t.fire_at_ms).collect();
        let nss: Vec<&str> = t.iter().map(|t| t.namespace_id.as_str()).collect();
        let wfs: Vec<&str> = t.iter().map(|t| t.workflow_id.as_str()).collect();
        let run_ids: Vec<&str> = t.iter().map(|t| t.run_id.as_str()).collect();
        let data: Vec<&[u8]> = t.iter().map(|t| t.data.as_slice()).collect();
        tx.execute(
            &insert,
            &[&shards, &ids, &fire, &nss, &wfs, &run_ids, &data],
        )
        .await
        .map_err(pg_err("failed to insert timers"))?;
    }
    if !batch.timers_delete.is_empty() {
        let delete = prepared(
            tx,
            "DELETE FROM timers t USING UNNEST($2::BIGINT[], $3::BIGINT[]) AS d(fire_at_ms, task_id)
              WHERE t.shard_id = $1 AND t.fire_at_ms = d.fire_at_ms AND t.task_id = d.task_id",
        )
        .await?;
        let fire: Vec<i64> = batch.timers_delete.iter().map(|t| t.fire_at_ms).collect();
        let ids: Vec<i64> = batch.timers_delete.iter().map(|t| t.task_id).collect();
        tx.execute(&delete, &[&batch.shard_id, &fire, &ids])
            .await
            .map_err(pg_err("failed to delete timers"))?;
    }
    if !batch.transfers_add.is_empty() {
        let t = &batch.transfers_add;
        let insert = prepared(
            tx,
            "INSERT INTO transfers (shard_id, task_id, namespace_id, workflow_id, run_id, data)
             SELECT * FROM UNNEST($1::INTEGER[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                 $6::BYTEA[])",
        )
        .await?;
        let shards: Vec<i32> = t.iter().map(|t| t.shard_id).collect();
        let ids: Vec<i64> = t.iter().map(|t| t.task_id).collect();
        let nss: Vec<&str> = t.iter().map(|t| t.namespace_id.as_str()).collect();
        let wfs: Vec<&str> = t.iter().map(|t| t.workflow_id.as_str()).collect();
        let run_ids: Vec<&str> = t.iter().map(|t| t.run_id.as_str()).collect();
        let data: Vec<&[u8]> = t.iter().map(|t| t.data.as_slice()).collect();
        tx.execute(&insert, &[&shards, &ids, &nss, &wfs, &run_ids, &data])
            .await
            .map_err(pg_err("failed to insert transfer tasks"))?;
    }
    if !batch.transfers_delete.is_empty() {
        let delete = prepared(
            tx,
            "DELETE FROM transfers WHERE shard_id = $1 AND task_id = ANY($2::BIGINT[])",
        )
        .await?;
        tx.execute(&delete, &[&batch.shard_id, &batch.transfers_delete])
            .await
            .map_err(pg_err("failed to delete transfer tasks"))?;
    }
    for write in &batch.visibility {
        crate::visibility::write(tx, ns, write).await?;
    }
    Ok(())
}
