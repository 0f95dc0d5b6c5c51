//! One `WriteBatch` in one transaction: the shard's lease read `FOR SHARE` and compared first
//! (a lease bump waits for the transaction and every later one sees it: fencing), then the
//! current-run pointer, executions conditioned on their version and on where their history
//! ends, history rows, timers, transfer tasks and visibility records. Any failed condition
//! rolls the whole batch back.
use kairos_persistence::{CurrentWrite, Error, ExecutionWrite, Result, WriteBatch};

use crate::error::pg_err;
use crate::history::{MAX_EVENTS_PER_ROW, frame};

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
    let lease = tx
        .prepare_cached("SELECT range_id FROM shards WHERE shard_id = $1 FOR SHARE")
        .await
        .map_err(pg_err("failed to prepare the lease check"))?;
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
        let existing: Option<String> = tx
            .query_opt(
                "SELECT run_id FROM current_executions WHERE namespace_id = $1 AND workflow_id = $2
                 FOR UPDATE",
                &[ns, wf],
            )
            .await
            .map_err(pg_err("failed to read the current run"))?
            .map(|r| r.get(0));
        match current {
            CurrentWrite::Set {
                run_id,
                expected_run_id,
                data,
            } => {
                if existing != *expected_run_id {
                    return Err(Error::ConditionFailed(format!(
                        "current run of {wf} is {existing:?}, expected {expected_run_id:?}"
                    )));
                }
                // A concurrent first start inserts too: the loser's insert does nothing.
                let written = tx
                    .execute(
                        "INSERT INTO current_executions (namespace_id, workflow_id, shard_id, run_id, data)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (namespace_id, workflow_id) DO UPDATE
                           SET run_id = EXCLUDED.run_id, data = EXCLUDED.data
                           WHERE current_executions.run_id = $6",
                        &[ns, wf, &batch.shard_id, run_id, data, &expected_run_id.clone().unwrap_or_default()],
                    )
                    .await
                    .map_err(pg_err("failed to write the current run"))?;
                if written == 0 {
                    return Err(Error::ConditionFailed(format!(
                        "current run of {wf} moved while this batch wrote it"
                    )));
                }
            }
            CurrentWrite::DeleteIf { run_id } => {
                tx.execute(
                    "DELETE FROM current_executions
                      WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $3",
                    &[ns, wf, run_id],
                )
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
                let inserted = tx
                    .execute(
                        "INSERT INTO executions (namespace_id, workflow_id, run_id, shard_id,
                             db_version, state, history_next)
                         VALUES ($1, $2, $3, $4, 1, $5, $6) ON CONFLICT DO NOTHING",
                        &[ns, wf, run_id, &batch.shard_id, state, &next],
                    )
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
                let updated = match span {
                    None => tx
                        .execute(
                            "UPDATE executions SET state = $1, db_version = db_version + 1
                              WHERE namespace_id = $2 AND workflow_id = $3 AND run_id = $4
                                AND db_version = $5",
                            &[state, ns, wf, run_id, expected_version],
                        )
                        .await
                        .map_err(pg_err("failed to update an execution"))?,
                    Some((first, next)) => tx
                        .execute(
                            "UPDATE executions SET state = $1, db_version = db_version + 1,
                                    history_next = $6
                              WHERE namespace_id = $2 AND workflow_id = $3 AND run_id = $4
                                AND db_version = $5 AND history_next = $7",
                            &[state, ns, wf, run_id, expected_version, &next, &first],
                        )
                        .await
                        .map_err(pg_err("failed to update an execution"))?,
                };
                if updated == 0 {
                    return Err(Error::ConditionFailed(format!(
                        "run {run_id} is not at version {expected_version}, or its history does \
                         not continue at the batch's first event"
                    )));
                }
            }
            ExecutionWrite::Delete => {
                let deleted = tx
                    .execute(
                        "DELETE FROM executions
                          WHERE namespace_id = $1 AND workflow_id = $2 AND run_id = $3",
                        &[ns, wf, run_id],
                    )
                    .await
                    .map_err(pg_err("failed to delete an execution"))?;
                if deleted > 0 {
                    tx.execute(
                        "DELETE FROM history WHERE namespace_id = $1 AND run_id = $2",
                        &[ns, run_id],
                    )
                    .await
                    .map_err(pg_err("failed to delete history"))?;
                }
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
        let moved = tx
            .execute(
                "UPDATE executions SET history_next = $1
                  WHERE namespace_id = $2 AND workflow_id = $3 AND run_id = $4 AND history_next = $5",
                &[&next, ns, wf, &run_id, &first],
            )
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
    if history_rows.iter().any(|(_, e)| !e.is_empty()) {
        let insert = tx
            .prepare_cached(
                "INSERT INTO history (namespace_id, run_id, first_event_id, data) VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(pg_err("failed to prepare a history insert"))?;
        let mut data = Vec::new();
        for (run_id, events) in history_rows {
            for row in events.chunks(MAX_EVENTS_PER_ROW) {
                data.clear();
                for e in row {
                    frame(&mut data, &e.2);
                }
                tx.execute(&insert, &[ns, &run_id, &row[0].1, &data])
                    .await
                    .map_err(pg_err("failed to append history events"))?;
            }
        }
    }
    if !batch.timers_add.is_empty() {
        let insert = tx
            .prepare_cached(
                "INSERT INTO timers (shard_id, task_id, fire_at_ms, namespace_id, workflow_id, run_id, data)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await
            .map_err(pg_err("failed to prepare a timer insert"))?;
        for t in &batch.timers_add {
            tx.execute(
                &insert,
                &[
                    &t.shard_id,
                    &t.task_id,
                    &t.fire_at_ms,
                    &t.namespace_id,
                    &t.workflow_id,
                    &t.run_id,
                    &t.data,
                ],
            )
            .await
            .map_err(pg_err("failed to insert a timer"))?;
        }
    }
    if !batch.timers_delete.is_empty() {
        let delete = tx
            .prepare_cached(
                "DELETE FROM timers WHERE shard_id = $1 AND fire_at_ms = $2 AND task_id = $3",
            )
            .await
            .map_err(pg_err("failed to prepare a timer delete"))?;
        for t in &batch.timers_delete {
            tx.execute(&delete, &[&batch.shard_id, &t.fire_at_ms, &t.task_id])
                .await
                .map_err(pg_err("failed to delete a timer"))?;
        }
    }
    if !batch.transfers_add.is_empty() {
        let insert = tx
            .prepare_cached(
                "INSERT INTO transfers (shard_id, task_id, namespace_id, workflow_id, run_id, data)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await
            .map_err(pg_err("failed to prepare a transfer insert"))?;
        for t in &batch.transfers_add {
            tx.execute(
                &insert,
                &[
                    &t.shard_id,
                    &t.task_id,
                    &t.namespace_id,
                    &t.workflow_id,
                    &t.run_id,
                    &t.data,
                ],
            )
            .await
            .map_err(pg_err("failed to insert a transfer task"))?;
        }
    }
    if !batch.transfers_delete.is_empty() {
        let delete = tx
            .prepare_cached("DELETE FROM transfers WHERE shard_id = $1 AND task_id = $2")
            .await
            .map_err(pg_err("failed to prepare a transfer delete"))?;
        for id in &batch.transfers_delete {
            tx.execute(&delete, &[&batch.shard_id, id])
                .await
                .map_err(pg_err("failed to delete a transfer task"))?;
        }
    }
    for write in &batch.visibility {
        crate::visibility::write(tx, ns, write).await?;
    }
    Ok(())
}
