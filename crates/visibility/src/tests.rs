//! The query language over a table of queries: accepted with their canonical AST, rejected with
//! their message; names resolved. What the compiled filters select, on every store backend, is
//! in the store conformance suite (`kairos_persistence::conformance`).
use std::collections::HashMap;

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

#[test]
fn datetimes_are_written_back_as_the_reference_writes_them() {
    use crate::compile::rfc3339_nano;
    for (given, written) in [
        (
            "2024-01-02T03:04:05.678000+02:00",
            Some("2024-01-02T03:04:05.678+02:00"),
        ),
        ("2024-01-02T03:04:05+00:00", Some("2024-01-02T03:04:05Z")),
        (
            "2024-01-02T03:04:05.000000001Z",
            Some("2024-01-02T03:04:05.000000001Z"),
        ),
        (
            "2024-01-02T03:04:05.5-05:30",
            Some("2024-01-02T03:04:05.5-05:30"),
        ),
        ("2024-01-02 03:04:05Z", Some("2024-01-02T03:04:05Z")),
        ("yesterday", None),
    ] {
        assert_eq!(rfc3339_nano(given).as_deref(), written, "{given}");
    }
}
