//! Visibility records: writes, lists and counts, and a typed filter rendered as SQLite SQL with
//! every value a bound parameter.
use kairos_core::filter::{Column, Filter, Op, Slot, Test, Value};

use super::*;

pub(crate) fn apply_visibility(conn: &Connection, ns: &str, write: &VisibilityWrite) -> Result<()> {
    let (row, verb, clear) = match write {
        VisibilityWrite::Delete { run_id } => {
            conn.prepare_cached(
                "DELETE FROM visibility_attributes WHERE namespace_id = ?1 AND run_id = ?2",
            )
            .and_then(|mut s| s.execute(params![ns, run_id]))
            .map_err(sql_err("failed to clear search attributes"))?;
            conn.prepare_cached("DELETE FROM visibility WHERE namespace_id = ?1 AND run_id = ?2")
                .and_then(|mut s| s.execute(params![ns, run_id]))
                .map_err(sql_err("failed to delete a visibility record"))?;
            return Ok(());
        }
        VisibilityWrite::Insert(row) => (row, "INSERT", false),
        VisibilityWrite::Upsert(row) => (row, "INSERT OR REPLACE", true),
        VisibilityWrite::Update(row) => {
            conn.prepare_cached(
                "UPDATE visibility SET status = ?3, close_time = ?4, sort_close = ?5,
                     execution_duration = ?6, history_length = ?7, history_size_bytes = ?8,
                     state_transition_count = ?9, execution_time = ?10
                 WHERE namespace_id = ?1 AND run_id = ?2",
            )
            .and_then(|mut s| {
                s.execute(params![
                    ns,
                    row.run_id,
                    row.status,
                    row.close_time_ns,
                    row.close_time_ns.unwrap_or(i64::MAX),
                    row.execution_duration_ns,
                    row.history_length,
                    row.history_size_bytes,
                    row.state_transition_count,
                    row.execution_time_ns,
                ])
            })
            .map_err(sql_err("failed to update a visibility record"))?;
            return Ok(());
        }
    };
    if clear {
        conn.prepare_cached(
            "DELETE FROM visibility_attributes WHERE namespace_id = ?1 AND run_id = ?2",
        )
        .and_then(|mut s| s.execute(params![ns, row.run_id]))
        .map_err(sql_err("failed to clear search attributes"))?;
    }
    conn.prepare_cached(&format!(
        "{verb} INTO visibility (namespace_id, run_id, workflow_id, workflow_type,
             task_queue, status, start_time, execution_time, close_time, sort_close,
             execution_duration, history_length, history_size_bytes, state_transition_count,
             parent_workflow_id, parent_run_id, root_workflow_id, root_run_id, first_run_id,
             memo, search_attributes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
             ?18, ?19, ?20, ?21)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            ns,
            row.run_id,
            row.workflow_id,
            row.workflow_type,
            row.task_queue,
            row.status,
            row.start_time_ns,
            row.execution_time_ns,
            row.close_time_ns,
            row.close_time_ns.unwrap_or(i64::MAX),
            row.execution_duration_ns,
            row.history_length,
            row.history_size_bytes,
            row.state_transition_count,
            row.parent_workflow_id,
            row.parent_run_id,
            row.root_workflow_id,
            row.root_run_id,
            row.first_run_id,
            row.memo,
            row.search_attributes,
        ])
    })
    .map_err(sql_err("failed to write a visibility record"))?;
    for (name, value) in &row.attributes {
        let (int, real, text) = match value {
            Value::Int(i) => (Some(*i), None, None),
            Value::Real(x) => (None, Some(*x), None),
            Value::Text(t) => (None, None, Some(t.as_str())),
        };
        conn.prepare_cached(
            "INSERT INTO visibility_attributes (namespace_id, run_id, name, int_value, real_value,
                 text_value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .and_then(|mut s| s.execute(params![ns, row.run_id, name, int, real, text]))
        .map_err(sql_err("failed to write a search attribute"))?;
    }
    Ok(())
}

pub(crate) fn bind(values: &[Value]) -> Vec<rusqlite::types::Value> {
    values
        .iter()
        .map(|v| match v {
            Value::Int(i) => rusqlite::types::Value::Integer(*i),
            Value::Real(x) => rusqlite::types::Value::Real(*x),
            Value::Text(t) => rusqlite::types::Value::Text(t.clone()),
        })
        .collect()
}

pub(crate) const VISIBILITY_COLUMNS: &str =
    "v.run_id, v.workflow_id, v.workflow_type, v.task_queue,
    v.status, v.start_time, v.execution_time, v.close_time, v.execution_duration,
    v.history_length, v.history_size_bytes, v.state_transition_count, v.parent_workflow_id,
    v.parent_run_id, v.root_workflow_id, v.root_run_id, v.first_run_id, v.memo,
    v.search_attributes";

pub(crate) fn visibility_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<VisibilityRow> {
    Ok(VisibilityRow {
        run_id: r.get(0)?,
        workflow_id: r.get(1)?,
        workflow_type: r.get(2)?,
        task_queue: r.get(3)?,
        status: r.get(4)?,
        start_time_ns: r.get(5)?,
        execution_time_ns: r.get(6)?,
        close_time_ns: r.get(7)?,
        execution_duration_ns: r.get(8)?,
        history_length: r.get(9)?,
        history_size_bytes: r.get(10)?,
        state_transition_count: r.get(11)?,
        parent_workflow_id: r.get(12)?,
        parent_run_id: r.get(13)?,
        root_workflow_id: r.get(14)?,
        root_run_id: r.get(15)?,
        first_run_id: r.get(16)?,
        memo: r.get(17)?,
        search_attributes: r.get(18)?,
        attributes: Vec::new(),
    })
}

/// The SQL of a list or count: the namespace, the filter and (for a list) the cursor.
pub(crate) fn visibility_where(
    namespace_id: &str,
    filter: &Filter,
    after: Option<&VisibilityCursor>,
) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = String::from("v.namespace_id = ?");
    let mut params = vec![Value::Text(namespace_id.to_string())];
    if *filter != Filter::All {
        sql.push_str(" AND (");
        sql.push_str(&render(filter, &mut params));
        sql.push(')');
    }
    let mut values = bind(&params);
    if let Some(c) = after {
        sql.push_str(" AND (v.sort_close, v.start_time, v.run_id) < (?, ?, ?)");
        values.push(rusqlite::types::Value::Integer(c.sort_close));
        values.push(rusqlite::types::Value::Integer(c.start_time_ns));
        values.push(rusqlite::types::Value::Text(c.run_id.clone()));
    }
    (sql, values)
}

/// The column of the visibility table a filter column is.
fn column(c: Column) -> &'static str {
    match c {
        Column::WorkflowId => "v.workflow_id",
        Column::RunId => "v.run_id",
        Column::WorkflowType => "v.workflow_type",
        Column::TaskQueue => "v.task_queue",
        Column::Status => "v.status",
        Column::ParentWorkflowId => "v.parent_workflow_id",
        Column::ParentRunId => "v.parent_run_id",
        Column::RootWorkflowId => "v.root_workflow_id",
        Column::RootRunId => "v.root_run_id",
        Column::StartTime => "v.start_time",
        Column::ExecutionTime => "v.execution_time",
        Column::CloseTime => "v.close_time",
        Column::ExecutionDuration => "v.execution_duration",
        Column::HistoryLength => "v.history_length",
        Column::HistorySizeBytes => "v.history_size_bytes",
        Column::StateTransitionCount => "v.state_transition_count",
    }
}

fn slot_column(slot: Slot) -> &'static str {
    match slot {
        Slot::Int => "a.int_value",
        Slot::Real => "a.real_value",
        Slot::Text => "a.text_value",
    }
}

fn op_sql(op: Op) -> &'static str {
    match op {
        Op::Eq => "=",
        Op::Ne => "!=",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

/// `subject` tested by `test`, its values pushed to `params` in placeholder order.
fn test_sql(subject: &str, test: &Test, params: &mut Vec<Value>) -> String {
    let not = |negated: bool| if negated { "NOT " } else { "" };
    match test {
        Test::Compare(op, v) => {
            params.push(v.clone());
            format!("{subject} {} ?", op_sql(*op))
        }
        Test::In { values, negated } => {
            params.extend(values.iter().cloned());
            let marks = vec!["?"; values.len()].join(", ");
            format!("{subject} {}IN ({marks})", not(*negated))
        }
        Test::Between { low, high, negated } => {
            params.push(low.clone());
            params.push(high.clone());
            format!("{subject} {}BETWEEN ? AND ?", not(*negated))
        }
        Test::StartsWith { prefix, negated } => {
            params.push(Value::Int(prefix.chars().count() as i64));
            params.push(Value::Text(prefix.clone()));
            let op = if *negated { "!=" } else { "=" };
            format!("substr({subject}, 1, ?) {op} ?")
        }
        Test::Contains(needle) => {
            params.push(Value::Text(needle.clone()));
            format!("instr(lower({subject}), lower(?)) > 0")
        }
        Test::IsNull { negated } => format!("{subject} IS {}NULL", not(*negated)),
    }
}

/// `EXISTS` over the run's attribute rows named `name` that satisfy `cond` (rendered after the
/// name's placeholder).
fn attribute_exists(
    name: &str,
    params: &mut Vec<Value>,
    cond: impl FnOnce(&mut Vec<Value>) -> String,
) -> String {
    params.push(Value::Text(name.to_string()));
    let cond = cond(params);
    format!(
        "EXISTS (SELECT 1 FROM visibility_attributes a WHERE a.namespace_id = v.namespace_id \
         AND a.run_id = v.run_id AND a.name = ? AND {cond})"
    )
}

/// A filter as a SQLite boolean expression over `visibility v`; every value a `?` parameter.
fn render(filter: &Filter, params: &mut Vec<Value>) -> String {
    match filter {
        Filter::All => "1 = 1".to_string(),
        Filter::And(parts) | Filter::Or(parts) => {
            let joiner = if matches!(filter, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            let parts: Vec<String> = parts.iter().map(|p| render(p, params)).collect();
            format!("({})", parts.join(joiner))
        }
        Filter::Not(inner) => format!("(NOT {})", render(inner, params)),
        Filter::Column { column: c, test } => test_sql(column(*c), test, params),
        Filter::HasAttribute { name } => attribute_exists(name, params, |_| "1 = 1".into()),
        Filter::Attribute {
            name,
            slot,
            test,
            negated,
        } => {
            // Unknown (NULL) when the run has no value, as a missing column would be.
            let present = attribute_exists(name, params, |_| "1 = 1".into());
            let passes = attribute_exists(name, params, |params| {
                test_sql(slot_column(*slot), test, params)
            });
            let not = if *negated { "NOT " } else { "" };
            format!("(CASE WHEN {present} THEN {not}{passes} END)")
        }
    }
}
