//! History rows: a transition's events framed together (at most `MAX_EVENTS_PER_ROW` per row),
//! each row chained to the run's previous one, a few rows indexed; appends that keep a run's
//! event ids contiguous, and reads from any event id.
use super::*;

/// Events per history mark: a row holding an event id `MARK_EVERY * k + 1` (k >= 1) is indexed.
pub(crate) const MARK_EVERY: i64 = 256;

/// Whether a history row holding events `first..=last` is indexed (see migration 4).
pub(crate) fn marked(first: i64, last: i64) -> bool {
    let k = (last - 1) / MARK_EVERY;
    k >= 1 && MARK_EVERY * k + 1 >= first
}

/// At most this many events share a history row, so a read of a page of a long copied history
/// (a reset writes the kept prefix in one transition) decodes a bounded row, not all of it.
pub(crate) const MAX_EVENTS_PER_ROW: usize = 64;

/// Appends one event to a history row: field 1 of a `History` message (tag, length, bytes), so a
/// row is itself a valid encoded `History`.
pub(crate) fn frame_event(out: &mut Vec<u8>, event: &[u8]) {
    out.push(0x0A);
    let mut len = event.len() as u64;
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(event);
}

/// Splits a stored history row into its events' bytes and counts them: the row decoder, for
/// the fuzz target (`fuzz/`) and its smoke test.
#[doc(hidden)]
pub fn split_history_row(data: &[u8]) -> std::result::Result<usize, String> {
    unframe_events(data).map(|events| events.len())
}

/// Splits a history row back into its events' bytes.
pub(crate) fn unframe_events(mut data: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
    let mut events = Vec::new();
    while let Some((&tag, rest)) = data.split_first() {
        if tag != 0x0A {
            return Err(format!("unexpected tag {tag:#x} in a history row"));
        }
        let mut len: u64 = 0;
        let mut shift = 0;
        let mut rest = rest;
        loop {
            let Some((&b, tail)) = rest.split_first() else {
                return Err("a history row ends inside a length".into());
            };
            rest = tail;
            if shift > 63 {
                return Err("a history row has an overlong length".into());
            }
            len |= u64::from(b & 0x7F) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let len = usize::try_from(len).map_err(|_| "a history event is too long".to_string())?;
        if len > rest.len() {
            return Err("a history row ends inside an event".into());
        }
        events.push(&rest[..len]);
        data = &rest[len..];
    }
    Ok(events)
}

/// A history event in a batch: (run id, event id, encoded event).
pub(crate) type Event = (String, i64, Vec<u8>);

/// Where a run's history ends, read from its execution row.
pub(crate) struct Tail {
    pub(crate) rowid: i64,
    pub(crate) version: i64,
    /// The run's last history row.
    pub(crate) tail: Option<i64>,
    /// The id its next event must have.
    pub(crate) next: i64,
}

pub(crate) fn read_tail(
    conn: &Connection,
    ns: &str,
    wf: &str,
    run_id: &str,
) -> Result<Option<Tail>> {
    query_one(
        conn,
        "SELECT rowid, db_version, history_tail, history_next FROM executions
          WHERE namespace_id = ?1 AND workflow_id = ?2 AND run_id = ?3",
        params![ns, wf, run_id],
        |r| {
            Ok(Tail {
                rowid: r.get(0)?,
                version: r.get(1)?,
                tail: r.get(2)?,
                next: r.get(3)?,
            })
        },
    )
    .optional()
    .map_err(sql_err("failed to read a run's history tail"))
}

/// Appends events of a run whose execution row the batch does not otherwise write, and moves the
/// row's history tail.
pub(crate) fn append_history(
    conn: &Connection,
    ns: &str,
    wf: &str,
    run_id: &str,
    events: &[&Event],
) -> Result<()> {
    let row = read_tail(conn, ns, wf, run_id)?.ok_or_else(|| {
        Error::ConditionFailed(format!("history for run {run_id}, which is not stored"))
    })?;
    let (tail, next) = append_rows(conn, run_id, events, row.tail, row.next)?;
    conn.prepare_cached(
        "UPDATE executions SET history_tail = ?1, history_next = ?2 WHERE rowid = ?3",
    )
    .and_then(|mut s| s.execute(params![tail, next, row.rowid]))
    .map_err(sql_err("failed to move a run's history tail"))?;
    Ok(())
}

/// Writes a run's events after its last row `tail`, at most `MAX_EVENTS_PER_ROW` per row, each
/// row pointing to the one before. The first event must be `next`, the id the run expects: a
/// duplicate or a gap fails the batch. Returns the new last row and next id.
pub(crate) fn append_rows(
    conn: &Connection,
    run_id: &str,
    events: &[&Event],
    mut tail: Option<i64>,
    mut next: i64,
) -> Result<(Option<i64>, i64)> {
    if events.is_empty() {
        return Ok((tail, next));
    }
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO history (run_id, first_event_id, prev, marked, data)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .map_err(sql_err("failed to prepare a history insert"))?;
    let mut data = Vec::new();
    for row in events.chunks(MAX_EVENTS_PER_ROW) {
        data.clear();
        for (n, (_, id, event)) in row.iter().map(|e| (&e.0, e.1, &e.2)).enumerate() {
            let want = next + n as i64;
            if id != want {
                return Err(Error::ConditionFailed(format!(
                    "event {id} of run {run_id} is out of order: the next one stored must be {want}"
                )));
            }
            frame_event(&mut data, event);
        }
        let last = next + row.len() as i64 - 1;
        insert
            .execute(params![run_id, next, tail, marked(next, last), data])
            .map_err(sql_err("failed to append history events"))?;
        tail = Some(conn.last_insert_rowid());
        next = last + 1;
    }
    Ok((tail, next))
}

/// Events `first..` of a run, at most `limit`: from the first marked row after `first` (or the
/// run's last row) back along `prev` to the row holding `first`, then forward over those rows;
/// again from the next mark while more are wanted.
pub(crate) fn read_history(
    conn: &Connection,
    ns: &str,
    wf: &str,
    run_id: &str,
    first: i64,
    limit: usize,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut events = Vec::new();
    if limit == 0 {
        return Ok(events);
    }
    // One snapshot for the whole walk: a run deleted meanwhile (its row ids can then be reused)
    // is either read whole or not found.
    let snapshot = conn
        .unchecked_transaction()
        .map_err(sql_err("failed to begin a history read"))?;
    let conn: &Connection = &snapshot;
    let Some(tail) = read_tail(conn, ns, wf, run_id)?.and_then(|row| row.tail) else {
        return Ok(events);
    };
    let mut from = first.max(1);
    let mut header = conn
        .prepare_cached("SELECT prev, first_event_id, run_id FROM history WHERE seq = ?1")
        .map_err(sql_err("failed to prepare a history read"))?;
    let mut body = conn
        .prepare_cached("SELECT data FROM history WHERE seq = ?1")
        .map_err(sql_err("failed to prepare a history read"))?;
    let mut mark = conn
        .prepare_cached(
            "SELECT seq FROM history WHERE run_id = ?1 AND first_event_id > ?2 AND marked
              ORDER BY first_event_id LIMIT 1",
        )
        .map_err(sql_err("failed to prepare a history read"))?;
    loop {
        let anchor: i64 = mark
            .query_row(params![run_id, from], |r| r.get(0))
            .optional()
            .map_err(sql_err("failed to read a history mark"))?
            .unwrap_or(tail);
        // Rows from the anchor back to the one holding `from` (or the run's first row).
        let mut rows = Vec::new();
        let mut next = Some(anchor);
        while let Some(seq) = next {
            let (prev, row_first, owner): (Option<i64>, i64, String) = header
                .query_row([seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(|e| corrupt(run_id, format!("row {seq} of its chain: {e}")))?;
            if owner != run_id {
                return Err(corrupt(
                    run_id,
                    format!("row {seq} of its chain is {owner}'s"),
                ));
            }
            rows.push((seq, row_first));
            next = if row_first <= from { None } else { prev };
        }
        let mut after = from;
        for (seq, row_first) in rows.into_iter().rev() {
            let data: Vec<u8> = body
                .query_row([seq], |r| r.get(0))
                .map_err(sql_err("failed to read history"))?;
            let framed = unframe_events(&data).map_err(|e| corrupt(run_id, e))?;
            for (n, event) in framed.iter().enumerate() {
                let event_id = row_first + n as i64;
                if event_id >= from && events.len() < limit {
                    events.push((event_id, event.to_vec()));
                }
            }
            after = row_first + framed.len() as i64;
            if events.len() >= limit {
                return Ok(events);
            }
        }
        if anchor == tail || after <= from {
            return Ok(events);
        }
        from = after;
    }
}
