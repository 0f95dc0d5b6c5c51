//! The query language over a table of queries (accepted with their canonical AST, rejected
//! with their message), run against a real SQLite store holding workflows in every status;
//! and a property test: no input makes the parser or compiler panic, and whatever compiles
//! runs in SQLite.
use std::collections::HashMap;

use kairos_core::filter::SqlValue;
use kairos_persistence::sqlite::{Location, SqliteStore};
use kairos_persistence::{Store, VisibilityRow, VisibilityWrite, WriteBatch};

use super::*;

fn custom() -> HashMap<String, AttrType> {
    [
        ("CustomerId", AttrType::Keyword),
        ("Amount", AttrType::Int),
        ("Price", AttrType::Double),
        ("Express", AttrType::Bool),
        ("DeliverBy", AttrType::Datetime),
        ("Notes", AttrType::Text),
        ("Tags", AttrType::KeywordList),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

#[test]
fn accepted_queries_parse_to_their_tree() {
    let table = [
        ("", "<all>"),
        ("WorkflowType = 'order'", "WorkflowType = 'order'"),
        (
            "WorkflowType = \"order\" and ExecutionStatus != 'Running'",
            "(WorkflowType = 'order' AND ExecutionStatus != 'Running')",
        ),
        ("a = 1 OR b = 2 AND c = 3", "(a = 1 OR (b = 2 AND c = 3))"),
        (
            "(a = 1 OR b = 2) AND NOT c = 3",
            "((a = 1 OR b = 2) AND (NOT c = 3))",
        ),
        ("Amount >= 10", "Amount >= 10"),
        ("Amount <> 10", "Amount != 10"),
        ("Price < -1.5", "Price < -1.5"),
        ("Express = true", "Express = true"),
        ("WorkflowId IN ('a', 'b')", "WorkflowId IN ('a', 'b')"),
        ("WorkflowId NOT IN ('a')", "WorkflowId NOT IN ('a')"),
        (
            "StartTime BETWEEN '2026-01-01T00:00:00Z' AND '2026-12-31T00:00:00Z'",
            "StartTime BETWEEN '2026-01-01T00:00:00Z' AND '2026-12-31T00:00:00Z'",
        ),
        (
            "WorkflowId STARTS_WITH 'order-'",
            "WorkflowId STARTS_WITH 'order-'",
        ),
        (
            "WorkflowId NOT STARTS_WITH 'order-'",
            "WorkflowId NOT STARTS_WITH 'order-'",
        ),
        ("CloseTime IS NULL", "CloseTime IS NULL"),
        ("CloseTime is not null", "CloseTime IS NOT NULL"),
        ("`Custom Name` = 'x'", "Custom Name = 'x'"),
        ("Notes = 'it''s'", "Notes = 'it's'"),
    ];
    for (input, expected) in table {
        let q = parse(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
        let got = q.filter.map_or("<all>".to_string(), |e| e.to_string());
        assert_eq!(got, expected, "for {input:?}");
    }
    let grouped = parse("WorkflowType = 'x' GROUP BY ExecutionStatus").expect("parses");
    assert_eq!(grouped.group_by.as_deref(), Some("ExecutionStatus"));
}

#[test]
fn refused_queries_say_what_is_wrong_and_where() {
    let table = [
        (
            "WorkflowType = 'order' ORDER BY StartTime",
            "operation is not supported: 'ORDER BY' clause",
        ),
        (
            "WorkflowType = 'order' LIMIT 10",
            "operation is not supported: 'LIMIT' clause",
        ),
        (
            "WorkflowType = pizza",
            "did you forget to quote \"pizza\"?) at position 15",
        ),
        ("WorkflowType LIKE 'o%'", "operation is not supported: LIKE"),
        (
            "lower(WorkflowType) = 'x'",
            "operation is not supported: function calls",
        ),
        (
            "WorkflowType = 'unterminated",
            "unterminated string starting at position 15",
        ),
        (
            "WorkflowType = 'a' AND",
            "expected an attribute name or '(', found the end",
        ),
        ("(WorkflowType = 'a'", "expected ')'"),
        (
            "WorkflowType 'a'",
            "malformed SQL query: syntax error at position 13: expected a comparison after 'WorkflowType'",
        ),
        ("WorkflowId IN ('a' 'b')", "expected ',' or ')'"),
        ("WorkflowType = 'a' ; DROP TABLE visibility", "found ';'"),
    ];
    for (input, needle) in table {
        let err = compile_text(input, &custom()).expect_err(input);
        assert!(err.contains(needle), "{input:?}: {err}");
    }
    let semantic = [
        ("Nope = 'x'", "invalid search attribute: Nope"),
        (
            "Amount = 'ten'",
            "invalid value type for search attribute Amount of type Int: \"ten\" (type: string)",
        ),
        (
            "Express = 1",
            "invalid value type for search attribute Express of type Bool: 1 (type: int64)",
        ),
        ("StartTime > 'yesterday'", "expected an RFC 3339 time"),
        (
            "ExecutionStatus = 'Sleeping'",
            "invalid ExecutionStatus value 'Sleeping'",
        ),
        (
            "Notes > 'a'",
            "operator '>' is not supported for Text attribute 'Notes'",
        ),
        (
            "Tags < 'a'",
            "operator '<' is not supported for KeywordList attribute 'Tags'",
        ),
        (
            "Amount STARTS_WITH '1'",
            "only supported for Keyword attributes",
        ),
        (
            "Express BETWEEN true AND false",
            "'BETWEEN' is not supported for Bool",
        ),
        (
            "WorkflowType = 'x' GROUP BY WorkflowType",
            "'GROUP BY' clause is not supported for search attribute WorkflowType",
        ),
    ];
    for (input, needle) in semantic {
        let err = compile_text(input, &custom()).expect_err(input);
        assert!(err.starts_with("invalid query: "), "{err}");
        assert!(err.contains(needle), "{input:?}: {err}");
    }
    // Limits: no input can nest or chain deep enough to exhaust a stack or SQLite.
    let deep = format!("{}WorkflowId = 'x'{}", "(".repeat(65), ")".repeat(65));
    assert!(
        compile_text(&deep, &custom())
            .unwrap_err()
            .contains("deeper than 64")
    );
    let nots = format!("{}WorkflowId = 'x'", "NOT ".repeat(100_000));
    assert!(
        compile_text(&nots, &custom())
            .unwrap_err()
            .contains("longer than")
    );
    let chain = vec!["WorkflowId = 'a'"; 300].join(" OR ");
    assert!(
        compile_text(&chain, &custom())
            .unwrap_err()
            .contains("more than 256 comparisons")
    );
    let position = parse("WorkflowType = 'a' AND AND").expect_err("two ANDs");
    assert_eq!(position.position, 23);
}

#[test]
fn names_resolve_through_aliases_and_the_temporal_prefix() {
    let c = custom();
    assert_eq!(
        attrs::resolve("ScheduleId", &c).unwrap().name(),
        "WorkflowId"
    );
    assert_eq!(
        attrs::resolve("ChangeVersion", &c).unwrap().name(),
        "TemporalChangeVersion"
    );
    assert_eq!(
        attrs::resolve("CustomerId", &c).unwrap().ty(),
        AttrType::Keyword
    );
}

const MINUTE_NS: i64 = 60_000_000_000;
const T0: i64 = 1_790_000_000_000_000_000;

/// One workflow per status, each with a few search attributes.
fn rows() -> Vec<VisibilityRow> {
    let statuses = [
        ("run-1", 1, "order"),
        ("run-2", 2, "order"),
        ("run-3", 3, "refund"),
        ("run-4", 4, "order"),
        ("run-5", 5, "refund"),
        ("run-6", 6, "order"),
        ("run-7", 7, "order"),
    ];
    statuses
        .into_iter()
        .enumerate()
        .map(|(i, (run, status, ty))| {
            let i = i as i64;
            let closed = status != 1;
            let mut attributes = vec![
                (
                    "CustomerId".to_string(),
                    SqlValue::Text(format!("cust-{}", i % 3)),
                ),
                ("Amount".to_string(), SqlValue::Int(i * 10)),
                ("Price".to_string(), SqlValue::Real(i as f64 * 1.5)),
                ("Express".to_string(), SqlValue::Int(i % 2)),
                ("DeliverBy".to_string(), SqlValue::Int(T0 + i * MINUTE_NS)),
                (
                    "Notes".to_string(),
                    SqlValue::Text(format!("Extra Cheese number {i}")),
                ),
                ("Tags".to_string(), SqlValue::Text("pizza".into())),
            ];
            if i % 2 == 0 {
                attributes.push(("Tags".to_string(), SqlValue::Text("vip".into())));
            }
            if i == 6 {
                attributes.retain(|(n, _)| n != "CustomerId");
            }
            VisibilityRow {
                run_id: run.to_string(),
                workflow_id: format!("wf-{}", i + 1),
                workflow_type: ty.to_string(),
                task_queue: "pizzas".into(),
                status,
                start_time_ns: T0 + i * MINUTE_NS,
                execution_time_ns: T0 + i * MINUTE_NS,
                close_time_ns: closed.then_some(T0 + (i + 10) * MINUTE_NS),
                execution_duration_ns: closed.then_some(10 * MINUTE_NS),
                history_length: 5 + i,
                history_size_bytes: 1000 + i,
                state_transition_count: 3,
                parent_workflow_id: (i == 3).then(|| "wf-1".to_string()),
                first_run_id: run.to_string(),
                attributes,
                ..Default::default()
            }
        })
        .collect()
}

async fn store_with_rows() -> SqliteStore {
    let store = SqliteStore::open(&Location::Memory).expect("opens");
    let lease = store.acquire_shards(1).await.expect("lease")[0];
    for row in rows() {
        store
            .commit(WriteBatch {
                shard_id: 0,
                range_id: lease.range_id,
                namespace_id: "ns".into(),
                workflow_id: row.workflow_id.clone(),
                visibility: vec![VisibilityWrite::Upsert(Box::new(row))],
                ..Default::default()
            })
            .await
            .expect("commits");
    }
    // Another namespace's workflow never shows.
    store
        .commit(WriteBatch {
            shard_id: 0,
            range_id: lease.range_id,
            namespace_id: "other".into(),
            workflow_id: "wf-x".into(),
            visibility: vec![VisibilityWrite::Upsert(Box::new(VisibilityRow {
                run_id: "run-x".into(),
                workflow_id: "wf-x".into(),
                workflow_type: "order".into(),
                status: 1,
                ..Default::default()
            }))],
            ..Default::default()
        })
        .await
        .expect("commits");
    store
}

async fn ids(store: &SqliteStore, query: &str) -> Vec<String> {
    let compiled = compile_text(query, &custom()).unwrap_or_else(|e| panic!("{query}: {e}"));
    store
        .list_visibility("ns", compiled.filter, None, 100)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .into_iter()
        .map(|r| r.workflow_id)
        .collect()
}

#[tokio::test]
async fn queries_select_the_right_workflows_from_sqlite() {
    let store = store_with_rows().await;
    // Running first, then by close time, newest first.
    assert_eq!(
        ids(&store, "").await,
        ["wf-1", "wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"]
    );
    let table: &[(&str, &[&str])] = &[
        ("ExecutionStatus = 'Running'", &["wf-1"]),
        ("ExecutionStatus = 'completed'", &["wf-2"]),
        ("ExecutionStatus = 3", &["wf-3"]),
        (
            "ExecutionStatus IN ('Canceled', 'Terminated')",
            &["wf-5", "wf-4"],
        ),
        (
            "ExecutionStatus != 'Running' AND WorkflowType = 'refund'",
            &["wf-5", "wf-3"],
        ),
        (
            "WorkflowType = 'refund' OR ExecutionStatus = 'TimedOut'",
            &["wf-7", "wf-5", "wf-3"],
        ),
        ("NOT WorkflowType = 'order'", &["wf-5", "wf-3"]),
        (
            "WorkflowId STARTS_WITH 'wf-'",
            &["wf-1", "wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"],
        ),
        ("WorkflowId NOT STARTS_WITH 'wf-'", &[]),
        ("CloseTime IS NULL", &["wf-1"]),
        ("ParentWorkflowId = 'wf-1'", &["wf-4"]),
        ("ParentWorkflowId IS NOT NULL", &["wf-4"]),
        ("HistoryLength > 9", &["wf-7", "wf-6"]),
        ("HistoryLength BETWEEN 6 AND 7", &["wf-3", "wf-2"]),
        (
            "ExecutionDuration >= '10m'",
            &["wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"],
        ),
        ("ExecutionDuration < '00:05:00'", &[]),
        (
            "StartTime >= '2026-09-21T13:59:20Z'",
            &["wf-1", "wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"],
        ),
        (
            "StartTime > 1790000120000000000",
            &["wf-7", "wf-6", "wf-5", "wf-4"],
        ),
        ("CustomerId = 'cust-1'", &["wf-5", "wf-2"]),
        ("CustomerId IS NULL", &["wf-7"]),
        (
            "CustomerId IN ('cust-0', 'cust-2')",
            &["wf-1", "wf-6", "wf-4", "wf-3"],
        ),
        ("Amount >= 40", &["wf-7", "wf-6", "wf-5"]),
        ("Amount BETWEEN 10 AND 20", &["wf-3", "wf-2"]),
        ("Price > 7", &["wf-7", "wf-6"]),
        ("Express = true", &["wf-6", "wf-4", "wf-2"]),
        ("DeliverBy < '2026-09-21T14:00:00Z'", &[]),
        ("Notes = 'cheese number 3'", &["wf-4"]),
        ("Notes != 'CHEESE'", &[]),
        ("Tags = 'vip'", &["wf-1", "wf-7", "wf-5", "wf-3"]),
        ("Tags != 'vip'", &["wf-6", "wf-4", "wf-2"]),
        (
            "Tags IN ('vip', 'nobody')",
            &["wf-1", "wf-7", "wf-5", "wf-3"],
        ),
        ("Tags NOT IN ('vip')", &["wf-6", "wf-4", "wf-2"]),
        (
            "TemporalChangeVersion IS NULL",
            &["wf-1", "wf-7", "wf-6", "wf-5", "wf-4", "wf-3", "wf-2"],
        ),
        (
            "`Amount` = 0 AND (Tags = 'vip' OR Express = true)",
            &["wf-1"],
        ),
    ];
    for (query, expected) in table {
        assert_eq!(ids(&store, query).await, *expected, "{query}");
    }
    // Counts, grouped by status.
    let c = compile_text("WorkflowType = 'order' GROUP BY ExecutionStatus", &custom()).unwrap();
    assert!(c.group_by_status);
    let groups = store.count_visibility("ns", c.filter, true).await.unwrap();
    assert_eq!(
        groups,
        vec![
            (Some(1), 1),
            (Some(2), 1),
            (Some(4), 1),
            (Some(6), 1),
            (Some(7), 1)
        ]
    );
    let c = compile_text("", &custom()).unwrap();
    assert_eq!(
        store.count_visibility("ns", c.filter, false).await.unwrap(),
        vec![(None, 7)]
    );
    // Paging: three pages of three, two and two, in the same order as one list.
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let c = compile_text("", &custom()).unwrap();
        let page = store
            .list_visibility("ns", c.filter, after, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| r.cursor());
        all.extend(page.into_iter().map(|r| r.workflow_id));
    }
    assert_eq!(all, ids(&store, "").await);
    // The longest chain accepted runs in SQLite.
    let chain = vec!["WorkflowId = 'wf-1'"; 256].join(" OR ");
    assert_eq!(ids(&store, &chain).await, ["wf-1"]);
    let chain = vec!["CustomerId != 'x'"; 256].join(" AND ");
    assert_eq!(ids(&store, &chain).await.len(), 6);
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

#[tokio::test]
async fn no_input_panics_and_whatever_compiles_runs_in_sqlite() {
    let store = store_with_rows().await;
    let pieces = [
        "WorkflowId",
        "ExecutionStatus",
        "StartTime",
        "Amount",
        "Price",
        "Express",
        "Notes",
        "Tags",
        "CustomerId",
        "HistoryLength",
        "ExecutionDuration",
        "Nope",
        "=",
        "!=",
        "<",
        ">=",
        "<>",
        "IN",
        "NOT",
        "AND",
        "OR",
        "BETWEEN",
        "STARTS_WITH",
        "IS",
        "NULL",
        "(",
        ")",
        ",",
        "'x'",
        "'Running'",
        "'2026-01-01T00:00:00Z'",
        "'10m'",
        "1",
        "-2.5",
        "true",
        "\"q\"",
        "`Amount`",
        "GROUP BY",
        "ORDER BY",
        "LIMIT",
        "'",
        "`",
        "\\",
        ";",
        "*",
        "é",
        "'it''s'",
        "1e309",
        "99999999999999999999",
        "--",
        "/*",
    ];
    let attrs = [
        "WorkflowId",
        "ExecutionStatus",
        "StartTime",
        "Amount",
        "Price",
        "Express",
        "Notes",
        "Tags",
        "CustomerId",
        "HistoryLength",
        "ExecutionDuration",
        "`Amount`",
        "CloseTime",
    ];
    let ops = ["=", "!=", "<", ">=", "<>", ">"];
    let values = [
        "'x'",
        "'Running'",
        "'2026-01-01T00:00:00Z'",
        "'10m'",
        "1",
        "-2.5",
        "true",
        "\"q\"",
        "'it''s'",
        "3",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut compiled_ok = 0;
    for _ in 0..5000 {
        // A query from the grammar, then (often) damaged by a random piece spliced in.
        let mut parts: Vec<String> = Vec::new();
        let terms = 1 + rng.next() % 3;
        for t in 0..terms {
            if t > 0 {
                parts.push(rng.pick(&["AND", "OR", "AND NOT"]).to_string());
            }
            let attr = rng.pick(&attrs);
            let term = match rng.next() % 5 {
                0 => format!("{attr} IN ({}, {})", rng.pick(&values), rng.pick(&values)),
                1 => format!(
                    "{attr} BETWEEN {} AND {}",
                    rng.pick(&values),
                    rng.pick(&values)
                ),
                2 => format!("{attr} STARTS_WITH {}", rng.pick(&values)),
                3 => format!("{attr} IS {}NULL", rng.pick(&["", "NOT "])),
                _ => format!("{attr} {} {}", rng.pick(&ops), rng.pick(&values)),
            };
            parts.push(if rng.next().is_multiple_of(3) {
                format!("({term})")
            } else {
                term
            });
        }
        if rng.next().is_multiple_of(2) {
            let at = (rng.next() % (parts.len() as u64 + 1)) as usize;
            parts.insert(at, rng.pick(&pieces).to_string());
        }
        let text = parts.join(" ");
        // Neither may panic; what compiles must be valid SQL.
        if let Ok(c) = compile_text(&text, &custom()) {
            compiled_ok += 1;
            store
                .list_visibility("ns", c.filter, None, 5)
                .await
                .unwrap_or_else(|e| panic!("{text:?} compiled to SQL SQLite refused: {e}"));
        }
    }
    assert!(
        compiled_ok > 50,
        "the generator must reach valid queries too ({compiled_ok})"
    );
    // Arbitrary bytes, as text.
    for _ in 0..2000 {
        let len = (rng.next() % 40) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() % 128) as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        let _ = compile_text(&text, &custom());
    }
}
