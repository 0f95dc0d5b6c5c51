//! Visibility lists and counts: a typed filter rendered as PostgreSQL SQL with every value a
//! bound parameter (`$n`). The records are written with their run's batch (`batch`).
use kairos_core::filter::{Column, Filter, Op, Slot, Test, Value};
use kairos_persistence::{Result, VisibilityCursor, VisibilityRow};
use tokio_postgres::types::ToSql;

use crate::error::pg_err;

const COLUMNS: &str = "v.run_id, v.workflow_id, v.workflow_type, v.task_queue,
    v.status, v.start_time, v.execution_time, v.close_time, v.execution_duration,
    v.history_length, v.history_size_bytes, v.state_transition_count, v.parent_workflow_id,
    v.parent_run_id, v.root_workflow_id, v.root_run_id, v.first_run_id, v.memo,
    v.search_attributes";

/// A value bound to a placeholder.
enum Param {
    Int(i64),
    Real(f64),
    Text(String),
}

impl Param {
    fn of(v: &Value) -> Param {
        match v {
            Value::Int(i) => Param::Int(*i),
            Value::Real(x) => Param::Real(*x),
            Value::Text(t) => Param::Text(t.clone()),
        }
    }

    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Param::Int(i) => i,
            Param::Real(x) => x,
            Param::Text(t) => t,
        }
    }
}

/// Renders SQL with `$n` placeholders, collecting their values in order.
struct Sql {
    params: Vec<Param>,
}

impl Sql {
    fn bind(&mut self, value: Param) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    /// The condition of a list or count: the namespace, the filter and (for a list) the cursor.
    fn conditions(
        &mut self,
        namespace_id: &str,
        filter: &Filter,
        after: Option<&VisibilityCursor>,
    ) -> String {
        let mut sql = format!(
            "v.namespace_id = {}",
            self.bind(Param::Text(namespace_id.to_string()))
        );
        if *filter != Filter::All {
            sql.push_str(" AND (");
            let cond = self.render(filter);
            sql.push_str(&cond);
            sql.push(')');
        }
        if let Some(c) = after {
            let (a, b, r) = (
                self.bind(Param::Int(c.sort_close)),
                self.bind(Param::Int(c.start_time_ns)),
                self.bind(Param::Text(c.run_id.clone())),
            );
            sql.push_str(&format!(
                " AND (v.sort_close, v.start_time, v.run_id) < ({a}, {b}, {r})"
            ));
        }
        sql
    }

    fn test(&mut self, subject: &str, test: &Test) -> String {
        let not = |negated: bool| if negated { "NOT " } else { "" };
        match test {
            Test::Compare(op, v) => {
                let p = self.bind(Param::of(v));
                format!("{subject} {} {p}", op_sql(*op))
            }
            Test::In { values, negated } => {
                let marks: Vec<String> = values.iter().map(|v| self.bind(Param::of(v))).collect();
                format!("{subject} {}IN ({})", not(*negated), marks.join(", "))
            }
            Test::Between { low, high, negated } => {
                let (l, h) = (self.bind(Param::of(low)), self.bind(Param::of(high)));
                format!("{subject} {}BETWEEN {l} AND {h}", not(*negated))
            }
            Test::StartsWith { prefix, negated } => {
                let p = self.bind(Param::Text(prefix.clone()));
                format!("{}starts_with({subject}, {p})", not(*negated))
            }
            Test::Contains(needle) => {
                let p = self.bind(Param::Text(needle.clone()));
                format!("strpos(lower({subject}), lower({p})) > 0")
            }
            Test::IsNull { negated } => format!("{subject} IS {}NULL", not(*negated)),
        }
    }

    fn attribute_exists(&mut self, name: &str, cond: impl FnOnce(&mut Sql) -> String) -> String {
        let n = self.bind(Param::Text(name.to_string()));
        let cond = cond(self);
        format!(
            "EXISTS (SELECT 1 FROM visibility_attributes a WHERE a.namespace_id = v.namespace_id \
             AND a.run_id = v.run_id AND a.name = {n} AND {cond})"
        )
    }

    fn render(&mut self, filter: &Filter) -> String {
        match filter {
            Filter::All => "TRUE".to_string(),
            Filter::And(parts) | Filter::Or(parts) => {
                let joiner = if matches!(filter, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                let parts: Vec<String> = parts.iter().map(|p| self.render(p)).collect();
                format!("({})", parts.join(joiner))
            }
            Filter::Not(inner) => format!("(NOT {})", self.render(inner)),
            Filter::Column { column: c, test } => self.test(column(*c), test),
            Filter::HasAttribute { name } => self.attribute_exists(name, |_| "TRUE".into()),
            Filter::Attribute {
                name,
                slot,
                test,
                negated,
            } => {
                let present = self.attribute_exists(name, |_| "TRUE".into());
                let passes = self.attribute_exists(name, |sql| sql.test(slot_column(*slot), test));
                let not = if *negated { "NOT " } else { "" };
                format!("(CASE WHEN {present} THEN {not}{passes} END)")
            }
        }
    }

    fn values(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params.iter().map(Param::sql).collect()
    }
}

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
        Op::Ne => "<>",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
    }
}

/// A page of a namespace's records matching `filter`, newest first, after `after`.
pub(crate) async fn list(
    client: &deadpool_postgres::Object,
    namespace_id: &str,
    filter: &Filter,
    after: Option<VisibilityCursor>,
    limit: usize,
) -> Result<Vec<VisibilityRow>> {
    let mut sql = Sql { params: Vec::new() };
    let cond = sql.conditions(namespace_id, filter, after.as_ref());
    let limit = sql.bind(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    let text = format!(
        "SELECT {COLUMNS} FROM visibility v WHERE {cond}
         ORDER BY v.sort_close DESC, v.start_time DESC, v.run_id DESC LIMIT {limit}"
    );
    let rows = client
        .query(&text, &sql.values())
        .await
        .map_err(pg_err("failed to list workflows"))?;
    Ok(rows
        .into_iter()
        .map(|r| VisibilityRow {
            run_id: r.get(0),
            workflow_id: r.get(1),
            workflow_type: r.get(2),
            task_queue: r.get(3),
            status: r.get::<_, i64>(4) as i32,
            start_time_ns: r.get(5),
            execution_time_ns: r.get(6),
            close_time_ns: r.get(7),
            execution_duration_ns: r.get(8),
            history_length: r.get(9),
            history_size_bytes: r.get(10),
            state_transition_count: r.get(11),
            parent_workflow_id: r.get(12),
            parent_run_id: r.get(13),
            root_workflow_id: r.get(14),
            root_run_id: r.get(15),
            first_run_id: r.get(16),
            memo: r.get(17),
            search_attributes: r.get(18),
            attributes: Vec::new(),
        })
        .collect())
}

/// Counts a namespace's records matching `filter`; with `by_status`, one count per status.
pub(crate) async fn count(
    client: &deadpool_postgres::Object,
    namespace_id: &str,
    filter: &Filter,
    by_status: bool,
) -> Result<Vec<(Option<i32>, i64)>> {
    let mut sql = Sql { params: Vec::new() };
    let cond = sql.conditions(namespace_id, filter, None);
    let text = if by_status {
        format!(
            "SELECT v.status, COUNT(*) FROM visibility v WHERE {cond}
             GROUP BY v.status ORDER BY v.status"
        )
    } else {
        format!("SELECT NULL::BIGINT, COUNT(*) FROM visibility v WHERE {cond}")
    };
    let rows = client
        .query(&text, &sql.values())
        .await
        .map_err(pg_err("failed to count workflows"))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.get::<_, Option<i64>>(0).map(|s| s as i32),
                r.get::<_, i64>(1),
            )
        })
        .collect())
}
