//! One `WriteBatch` applied inside the writer's transaction: the lease check (fencing), the
//! current-run pointer, executions (conditioned on their version), history, timers, transfer
//! tasks and visibility records.
use super::*;

pub(crate) fn apply_batch(conn: &Connection, batch: &WriteBatch) -> Result<()> {
    let range: Option<i64> = query_one(
        conn,
        "SELECT range_id FROM shards WHERE shard_id = ?1",
        [batch.shard_id],
        |r| r.get(0),
    )
    .optional()
    .map_err(sql_err("failed to read the shard lease"))?;
    if range != Some(batch.range_id) {
        return Err(Error::ShardOwnershipLost {
            shard_id: batch.shard_id,
        });
    }
    let ns = &batch.namespace_id;
    let wf = &batch.workflow_id;
    if let Some(current) = &batch.current {
        let existing: Option<String> = query_one(
            conn,
            "SELECT run_id FROM current_executions WHERE namespace_id = ?1 AND workflow_id = ?2",
            params![ns, wf],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql_err("failed to read the current run"))?;
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
                exec(
                    conn,
                    "INSERT INTO current_executions (namespace_id, workflow_id, shard_id, run_id, data)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (namespace_id, workflow_id) DO UPDATE SET run_id = ?4, data = ?5",
                    params![ns, wf, batch.shard_id, run_id, data],
                )
                .map_err(sql_err("failed to write the current run"))?;
            }
            CurrentWrite::DeleteIf { run_id } => {
                if existing.as_deref() == Some(run_id.as_str()) {
                    exec(
                    conn,
                        "DELETE FROM current_executions WHERE namespace_id = ?1 AND workflow_id = ?2",
                        params![ns, wf],
                    )
                    .map_err(sql_err("failed to delete the current run"))?;
                }
            }
        }
    }
    let events_of =
        |run_id: &str| -> Vec<&Event> { batch.events.iter().filter(|e| e.0 == run_id).collect() };
    for (run_id, write) in &batch.executions {
        match write {
            ExecutionWrite::Insert { state } => {
                // A new run's first events go in first, so the row is written once, with its
                // history tail.
                let (tail, next) = append_rows(conn, run_id, &events_of(run_id), None, 1)?;
                let inserted = exec(
                    conn,
                    "INSERT OR IGNORE INTO executions (namespace_id, workflow_id, run_id, shard_id,
                         db_version, state, history_tail, history_next)
                         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7)",
                    params![ns, wf, run_id, batch.shard_id, state, tail, next],
                )
                .map_err(sql_err("failed to insert an execution"))?;
                if inserted == 0 {
                    return Err(Error::AlreadyExists(format!("run {run_id}")));
                }
            }
            ExecutionWrite::Update {
                state,
                expected_version,
            } => {
                let events = events_of(run_id);
                let updated = if events.is_empty() {
                    exec(
                        conn,
                        "UPDATE executions SET state = ?1, db_version = db_version + 1
                         WHERE namespace_id = ?2 AND workflow_id = ?3 AND run_id = ?4
                           AND db_version = ?5",
                        params![state, ns, wf, run_id, expected_version],
                    )
                    .map_err(sql_err("failed to update an execution"))?
                } else {
                    // The state and the history tail change together: one read of the row, its
                    // events appended, one write of the row.
                    match read_tail(conn, ns, wf, run_id)? {
                        Some(row) if row.version == *expected_version => {
                            let (tail, next) =
                                append_rows(conn, run_id, &events, row.tail, row.next)?;
                            exec(
                                conn,
                                "UPDATE executions SET state = ?1, db_version = db_version + 1,
                                     history_tail = ?2, history_next = ?3 WHERE rowid = ?4",
                                params![state, tail, next, row.rowid],
                            )
                            .map_err(sql_err("failed to update an execution"))?
                        }
                        _ => 0,
                    }
                };
                if updated == 0 {
                    return Err(Error::ConditionFailed(format!(
                        "run {run_id} is not at version {expected_version}"
                    )));
                }
            }
            ExecutionWrite::Delete => {
                let tail: Option<i64> = query_one(
                    conn,
                    "DELETE FROM executions WHERE namespace_id = ?1 AND workflow_id = ?2 AND run_id = ?3
                     RETURNING history_tail",
                    params![ns, wf, run_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql_err("failed to delete an execution"))?
                .flatten();
                // The run's rows, last to first.
                let mut next = tail;
                while let Some(seq) = next {
                    next = query_one(
                        conn,
                        "DELETE FROM history WHERE seq = ?1 RETURNING prev",
                        [seq],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql_err("failed to delete history"))?
                    .flatten();
                }
            }
        }
    }
    // Events of runs whose state this batch does not write (the state is written with them).
    let mut appended: Vec<&str> = Vec::new();
    for (run_id, _, _) in &batch.events {
        let written = batch.executions.iter().any(|(r, w)| {
            r == run_id
                && matches!(
                    w,
                    ExecutionWrite::Insert { .. } | ExecutionWrite::Update { .. }
                )
        });
        if !written && !appended.contains(&run_id.as_str()) {
            appended.push(run_id);
            append_history(conn, ns, wf, run_id, &events_of(run_id))?;
        }
    }
    if !batch.timers_add.is_empty() {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO timers (shard_id, task_id, fire_at_ms, namespace_id, workflow_id, run_id, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .map_err(sql_err("failed to prepare a timer insert"))?;
        for t in &batch.timers_add {
            stmt.execute(params![
                t.shard_id,
                t.task_id,
                t.fire_at_ms,
                t.namespace_id,
                t.workflow_id,
                t.run_id,
                t.data
            ])
            .map_err(sql_err("failed to insert a timer"))?;
        }
    }
    for timer in &batch.timers_delete {
        conn.prepare_cached(
            "DELETE FROM timers WHERE shard_id = ?1 AND fire_at_ms = ?2 AND task_id = ?3",
        )
        .and_then(|mut s| s.execute(params![batch.shard_id, timer.fire_at_ms, timer.task_id]))
        .map_err(sql_err("failed to delete a timer"))?;
    }
    if !batch.transfers_add.is_empty() {
        let mut stmt = conn
            .prepare_cached(
                "INSERT INTO transfers (shard_id, task_id, namespace_id, workflow_id, run_id, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(sql_err("failed to prepare a transfer insert"))?;
        for t in &batch.transfers_add {
            stmt.execute(params![
                t.shard_id,
                t.task_id,
                t.namespace_id,
                t.workflow_id,
                t.run_id,
                t.data
            ])
            .map_err(sql_err("failed to insert a transfer task"))?;
        }
    }
    for id in &batch.transfers_delete {
        conn.prepare_cached("DELETE FROM transfers WHERE shard_id = ?1 AND task_id = ?2")
            .and_then(|mut s| s.execute(params![batch.shard_id, id]))
            .map_err(sql_err("failed to delete a transfer task"))?;
    }
    for write in &batch.visibility {
        apply_visibility(conn, ns, write)?;
    }
    Ok(())
}
