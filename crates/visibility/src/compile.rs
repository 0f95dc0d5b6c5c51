//! From a parsed [`Query`] to a parameterized SQL condition over the `visibility` table
//! (alias `v`) and its `visibility_attributes` rows: names resolved, operators checked against
//! each attribute's type, values converted (datetimes to epoch nanoseconds, statuses to their
//! numbers, durations to nanoseconds). Every value is a bound parameter.
use std::collections::HashMap;

use chrono::DateTime;
use kairos_core::filter::{SqlFilter, SqlValue};

use crate::attrs::{AttrType, Resolved, resolve};
use crate::parse::{CmpOp, Expr, Literal, Query};

/// A compiled query.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub filter: SqlFilter,
    /// `GROUP BY ExecutionStatus` (the only grouping supported).
    pub group_by_status: bool,
}

/// The workflow statuses by name, as queries may write them.
const STATUSES: &[(&str, i64)] = &[
    ("Running", 1),
    ("Completed", 2),
    ("Failed", 3),
    ("Canceled", 4),
    ("Terminated", 5),
    ("ContinuedAsNew", 6),
    ("TimedOut", 7),
];

/// Compiles `query` for the namespace whose custom attributes are `custom`.
pub fn compile(query: &Query, custom: &HashMap<String, AttrType>) -> Result<Compiled, String> {
    let mut params = Vec::new();
    let mut mentions_division = false;
    let mut sql = match &query.filter {
        Some(e) => expr(e, custom, &mut params, &mut mentions_division)?,
        None => String::new(),
    };
    if !mentions_division {
        // Internal runs (schedulers, for one) carry a division; lists hide them unless asked.
        let hidden = stored_exists("TemporalNamespaceDivision", "1 = 1", &mut params);
        let cond = format!("NOT {hidden}");
        sql = if sql.is_empty() {
            cond
        } else {
            format!("({sql}) AND {cond}")
        };
    }
    let group_by_status = match query.group_by.as_deref() {
        None => false,
        Some(name) => {
            let r = resolve(name, custom)?;
            if r.name() != "ExecutionStatus" {
                return Err(format!(
                    "operation is not supported: 'GROUP BY' clause is not supported for search attribute {name}"
                ));
            }
            true
        }
    };
    Ok(Compiled {
        filter: SqlFilter {
            where_sql: sql,
            params,
        },
        group_by_status,
    })
}

fn expr(
    e: &Expr,
    custom: &HashMap<String, AttrType>,
    params: &mut Vec<SqlValue>,
    division: &mut bool,
) -> Result<String, String> {
    let attr_of = |name: &str, division: &mut bool| -> Result<Resolved, String> {
        let r = resolve(name, custom)?;
        if r.name() == "TemporalNamespaceDivision" {
            *division = true;
        }
        Ok(r)
    };
    Ok(match e {
        // A chain of one operator is written flat: `(a AND b AND c)`, not nested pairs (SQLite
        // limits expression depth).
        Expr::And(..) | Expr::Or(..) => {
            let (op, parts) = flatten(e);
            let sql = parts
                .into_iter()
                .map(|p| expr(p, custom, params, division))
                .collect::<Result<Vec<_>, _>>()?;
            format!("({})", sql.join(op))
        }
        Expr::Not(a) => format!("(NOT {})", expr(a, custom, params, division)?),
        Expr::Compare { attr, op, value } => {
            let r = attr_of(attr, division)?;
            let ty = r.ty();
            let allowed = match ty {
                AttrType::Text | AttrType::KeywordList => matches!(op, CmpOp::Eq | CmpOp::Ne),
                _ => true,
            };
            if !allowed {
                return Err(format!(
                    "operator '{}' is not supported for {ty} attribute '{}'",
                    op.sql(),
                    r.name()
                ));
            }
            let v = convert(&r, value)?;
            match (&r, ty) {
                (Resolved::System(s), _) => {
                    params.push(v);
                    format!("v.{} {} ?", s.column, op.sql())
                }
                (Resolved::Stored { name, .. }, AttrType::Text) => {
                    let cond = "instr(lower(a.text_value), lower(?)) > 0";
                    stored_test(name, cond, vec![v], *op == CmpOp::Ne, params)
                }
                (Resolved::Stored { name, .. }, AttrType::KeywordList) => {
                    stored_test(name, "a.text_value = ?", vec![v], *op == CmpOp::Ne, params)
                }
                (Resolved::Stored { name, .. }, ty) => {
                    let cond = format!("a.{} {} ?", value_column(ty), op.sql());
                    stored_test(name, &cond, vec![v], false, params)
                }
            }
        }
        Expr::In {
            attr,
            values,
            negated,
        } => {
            let r = attr_of(attr, division)?;
            if r.ty() == AttrType::Text {
                return Err(format!(
                    "operator 'IN' is not supported for Text attribute '{}'",
                    r.name()
                ));
            }
            let vs = values
                .iter()
                .map(|v| convert(&r, v))
                .collect::<Result<Vec<_>, _>>()?;
            let marks = vec!["?"; vs.len()].join(", ");
            let not = if *negated { "NOT " } else { "" };
            match &r {
                Resolved::System(s) => {
                    params.extend(vs);
                    format!("v.{} {not}IN ({marks})", s.column)
                }
                Resolved::Stored { name, ty } if *ty == AttrType::KeywordList => {
                    let cond = format!("a.text_value IN ({marks})");
                    stored_test(name, &cond, vs, *negated, params)
                }
                Resolved::Stored { name, ty } => {
                    let cond = format!("a.{} {not}IN ({marks})", value_column(*ty));
                    stored_test(name, &cond, vs, false, params)
                }
            }
        }
        Expr::Between {
            attr,
            low,
            high,
            negated,
        } => {
            let r = attr_of(attr, division)?;
            if matches!(
                r.ty(),
                AttrType::Text | AttrType::KeywordList | AttrType::Bool
            ) {
                return Err(format!(
                    "operator 'BETWEEN' is not supported for {} attribute '{}'",
                    r.ty(),
                    r.name()
                ));
            }
            let vs = vec![convert(&r, low)?, convert(&r, high)?];
            let not = if *negated { "NOT " } else { "" };
            match &r {
                Resolved::System(s) => {
                    params.extend(vs);
                    format!("v.{} {not}BETWEEN ? AND ?", s.column)
                }
                Resolved::Stored { name, ty } => {
                    let cond = format!("a.{} {not}BETWEEN ? AND ?", value_column(*ty));
                    stored_test(name, &cond, vs, false, params)
                }
            }
        }
        Expr::StartsWith {
            attr,
            prefix,
            negated,
        } => {
            let r = attr_of(attr, division)?;
            if r.ty() != AttrType::Keyword || r.name() == "ExecutionStatus" {
                return Err(format!(
                    "operator 'STARTS_WITH' is only supported for Keyword attributes, not '{}'",
                    r.name()
                ));
            }
            let len = SqlValue::Int(prefix.chars().count() as i64);
            let text = SqlValue::Text(prefix.clone());
            let op = if *negated { "!=" } else { "=" };
            match &r {
                Resolved::System(s) => {
                    params.push(len);
                    params.push(text);
                    format!("substr(v.{}, 1, ?) {op} ?", s.column)
                }
                Resolved::Stored { name, .. } => stored_test(
                    name,
                    &format!("substr(a.text_value, 1, ?) {op} ?"),
                    vec![len, text],
                    false,
                    params,
                ),
            }
        }
        Expr::IsNull { attr, negated } => {
            let r = attr_of(attr, division)?;
            let not = if *negated { "NOT " } else { "" };
            match &r {
                Resolved::System(s) => format!("v.{} IS {not}NULL", s.column),
                Resolved::Stored { name, .. } => {
                    let inner = stored_exists(name, "1 = 1", params);
                    // IS NULL: no value stored.
                    if *negated {
                        inner
                    } else {
                        format!("NOT {inner}")
                    }
                }
            }
        }
    })
}

/// The operands of a chain of one boolean operator, left to right (no recursion).
fn flatten(e: &Expr) -> (&'static str, Vec<&Expr>) {
    let is_and = matches!(e, Expr::And(..));
    let op = if is_and { " AND " } else { " OR " };
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match x {
            Expr::And(a, b) if is_and => {
                stack.push(b);
                stack.push(a);
            }
            Expr::Or(a, b) if !is_and => {
                stack.push(b);
                stack.push(a);
            }
            other => out.push(other),
        }
    }
    (op, out)
}

fn value_column(ty: AttrType) -> &'static str {
    match ty {
        AttrType::Int | AttrType::Datetime | AttrType::Bool => "int_value",
        AttrType::Double => "real_value",
        AttrType::Text | AttrType::Keyword | AttrType::KeywordList => "text_value",
    }
}

/// A test of a stored attribute with SQL's three-valued logic, as a column would give: NULL
/// (neither true nor false, so `NOT` does not flip it) when the run has no value for the
/// attribute; otherwise whether a value satisfies `cond` (or, `negated`, whether none does).
fn stored_test(
    name: &str,
    cond: &str,
    values: Vec<SqlValue>,
    negated: bool,
    params: &mut Vec<SqlValue>,
) -> String {
    let present = stored_exists(name, "1 = 1", params);
    let test = stored_exists_with(name, cond, values, params);
    let not = if negated { "NOT " } else { "" };
    format!("(CASE WHEN {present} THEN {not}{test} END)")
}

fn stored_exists(name: &str, cond: &str, params: &mut Vec<SqlValue>) -> String {
    stored_exists_with(name, cond, Vec::new(), params)
}

/// `EXISTS` over the run's attribute rows named `name` that satisfy `cond` (whose `?` take
/// `values`, after the name).
fn stored_exists_with(
    name: &str,
    cond: &str,
    values: Vec<SqlValue>,
    params: &mut Vec<SqlValue>,
) -> String {
    params.push(SqlValue::Text(name.to_string()));
    params.extend(values);
    format!(
        "EXISTS (SELECT 1 FROM visibility_attributes a WHERE a.namespace_id = v.namespace_id \
         AND a.run_id = v.run_id AND a.name = ? AND {cond})"
    )
}

fn mismatch(r: &Resolved, value: &Literal) -> String {
    let (shown, ty) = match value {
        Literal::Str(s) => (format!("\"{s}\""), "string"),
        Literal::Int(i) => (i.to_string(), "int64"),
        Literal::Float(x) => (x.to_string(), "float64"),
        Literal::Bool(b) => (b.to_string(), "bool"),
    };
    format!(
        "invalid expression: invalid value type for search attribute {} of type {}: {shown} (type: {ty})",
        r.name(),
        r.ty()
    )
}

/// Converts a literal to the stored representation of the attribute's type.
fn convert(r: &Resolved, value: &Literal) -> Result<SqlValue, String> {
    if r.name() == "ExecutionStatus" {
        return match value {
            Literal::Str(s) => STATUSES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(s))
                .map(|(_, v)| SqlValue::Int(*v))
                .ok_or_else(|| {
                    format!(
                        "invalid ExecutionStatus value '{s}': expected one of Running, Completed, Failed, Canceled, Terminated, ContinuedAsNew, TimedOut"
                    )
                }),
            Literal::Int(i) if (1..=7).contains(i) => Ok(SqlValue::Int(*i)),
            _ => Err(mismatch(r, value)),
        };
    }
    if r.name() == "ExecutionDuration" {
        return match value {
            Literal::Int(ns) => Ok(SqlValue::Int(*ns)),
            Literal::Str(s) => parse_duration_ns(s)
                .map(SqlValue::Int)
                .ok_or_else(|| mismatch(r, value)),
            _ => Err(mismatch(r, value)),
        };
    }
    match (r.ty(), value) {
        (AttrType::Keyword | AttrType::KeywordList | AttrType::Text, Literal::Str(s)) => {
            Ok(SqlValue::Text(s.clone()))
        }
        (AttrType::Int, Literal::Int(i)) => Ok(SqlValue::Int(*i)),
        (AttrType::Double, Literal::Int(i)) => Ok(SqlValue::Real(*i as f64)),
        (AttrType::Double, Literal::Float(x)) => Ok(SqlValue::Real(*x)),
        (AttrType::Bool, Literal::Bool(b)) => Ok(SqlValue::Int(*b as i64)),
        (AttrType::Bool, Literal::Str(s)) if s.eq_ignore_ascii_case("true") => Ok(SqlValue::Int(1)),
        (AttrType::Bool, Literal::Str(s)) if s.eq_ignore_ascii_case("false") => {
            Ok(SqlValue::Int(0))
        }
        (AttrType::Datetime, Literal::Int(ns)) => Ok(SqlValue::Int(*ns)),
        (AttrType::Datetime, Literal::Str(s)) => parse_datetime_ns(s)
            .map(SqlValue::Int)
            .ok_or_else(|| {
                format!(
                    "invalid expression: invalid value for search attribute {} of type Datetime: {value} (expected an RFC 3339 time)",
                    r.name()
                )
            }),
        _ => Err(mismatch(r, value)),
    }
}

/// An RFC 3339 time as epoch nanoseconds (UTC).
pub fn parse_datetime_ns(s: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
}

/// `300ms`, `2h45m`, `1d`, `01:02:03` or plain nanoseconds.
pub fn parse_duration_ns(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(ns) = s.parse::<i64>() {
        return Some(ns);
    }
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 3 {
        let h: f64 = parts[0].parse::<u32>().ok()?.into();
        let m: f64 = parts[1].parse::<u32>().ok()?.into();
        let sec: f64 = parts[2].parse().ok()?;
        let total = (h * 3600.0 + m * 60.0 + sec) * 1e9;
        return (total.is_finite() && total >= 0.0 && total < i64::MAX as f64)
            .then_some(total as i64);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if digits == 0 {
            return None;
        }
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * unit;
    }
    (total.is_finite() && total < i64::MAX as f64).then_some(total as i64)
}
