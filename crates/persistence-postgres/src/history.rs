//! History rows: the events of one transition stored together (at most `MAX_EVENTS_PER_ROW` per
//! row, framed as an encoded `History` message), keyed by the run and their first event id; a
//! read from any event starts at the row holding it.
use kairos_persistence::{Error, Result};

use crate::error::pg_err;

/// At most this many events share a row, so reading a page of a long copied history (a reset
/// writes its kept prefix in one transition) decodes a bounded row.
pub(crate) const MAX_EVENTS_PER_ROW: usize = 64;

/// Appends one event to a row: field 1 of a `History` message (tag, length, bytes).
pub(crate) fn frame(out: &mut Vec<u8>, event: &[u8]) {
    out.push(0x0A);
    let mut len = event.len() as u64;
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
    out.extend_from_slice(event);
}

/// Splits a row back into its events' bytes.
fn unframe(mut data: &[u8]) -> std::result::Result<Vec<&[u8]>, String> {
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

/// Events `first..` of a run, at most `limit`, in one statement (one snapshot): nothing for a
/// run that is not stored.
pub(crate) async fn read(
    client: &deadpool_postgres::Object,
    namespace_id: &str,
    workflow_id: &str,
    run_id: &str,
    first: i64,
    limit: usize,
) -> Result<Vec<(i64, Vec<u8>)>> {
    let mut events = Vec::new();
    if limit == 0 {
        return Ok(events);
    }
    let from = first.max(1);
    let stmt = client
        .prepare_cached(
            "SELECT h.first_event_id, h.data FROM history h
              WHERE h.namespace_id = $1 AND h.run_id = $2
                AND h.first_event_id >= COALESCE((
                    SELECT MAX(first_event_id) FROM history
                     WHERE namespace_id = $1 AND run_id = $2 AND first_event_id <= $4), 1)
                AND EXISTS (SELECT 1 FROM executions e
                     WHERE e.namespace_id = $1 AND e.workflow_id = $3 AND e.run_id = $2)
              ORDER BY h.first_event_id LIMIT $5",
        )
        .await
        .map_err(pg_err("failed to prepare a history read"))?;
    // Each row holds at least one event: `limit` rows are always enough.
    let rows_needed = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &stmt,
            &[&namespace_id, &run_id, &workflow_id, &from, &rows_needed],
        )
        .await
        .map_err(pg_err("failed to read history"))?;
    for row in rows {
        let row_first: i64 = row.get(0);
        let data: &[u8] = row.get(1);
        let framed = unframe(data).map_err(|e| Error::Unavailable {
            message: format!("history of run {run_id} is corrupt: {e}"),
            source: None,
        })?;
        for (n, event) in framed.iter().enumerate() {
            let event_id = row_first + n as i64;
            if event_id >= from && events.len() < limit {
                events.push((event_id, event.to_vec()));
            }
        }
        if events.len() >= limit {
            break;
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_back_into_their_events() {
        let mut row = Vec::new();
        let big = vec![7u8; 300];
        for e in [&b"a"[..], &big, b""] {
            frame(&mut row, e);
        }
        assert_eq!(unframe(&row).unwrap(), vec![&b"a"[..], &big[..], b""]);
        assert!(unframe(&row[..row.len() - 150]).is_err());
        assert!(unframe(&[0x12, 1, 1]).is_err());
    }
}
