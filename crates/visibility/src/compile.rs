//! From a parsed [`Query`] to a typed, resolved [`Filter`] (`kairos_core::filter`): names
//! resolved, operators checked against each attribute's type, values converted to their stored
//! form (datetimes to epoch nanoseconds, statuses to their numbers, durations to nanoseconds).
//! Each store backend renders the filter in its own SQL dialect, every value a bound parameter.
use std::collections::HashMap;

use chrono::DateTime;
use kairos_core::filter::{Filter, Op, Slot, Test, Value};

use crate::attrs::{AttrType, Resolved, resolve};
use crate::parse::{CmpOp, Expr, Literal, Query};

/// A compiled query.
#[derive(Debug, Clone, PartialEq)]
pub struct Compiled {
    pub filter: Filter,
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

/// Internal runs (schedulers, for one) carry this attribute; lists hide them unless asked.
const DIVISION: &str = "TemporalNamespaceDivision";

/// Compiles `query` for the namespace whose custom attributes are `custom`.
pub fn compile(query: &Query, custom: &HashMap<String, AttrType>) -> Result<Compiled, String> {
    let mut mentions_division = false;
    let mut filter = match &query.filter {
        Some(e) => expr(e, custom, &mut mentions_division)?,
        None => Filter::All,
    };
    if !mentions_division {
        let hidden = Filter::Not(Box::new(Filter::HasAttribute {
            name: DIVISION.to_string(),
        }));
        filter = match filter {
            Filter::All => hidden,
            other => Filter::And(vec![other, hidden]),
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
        filter,
        group_by_status,
    })
}

fn op(op: CmpOp) -> Op {
    match op {
        CmpOp::Eq => Op::Eq,
        CmpOp::Ne => Op::Ne,
        CmpOp::Lt => Op::Lt,
        CmpOp::Le => Op::Le,
        CmpOp::Gt => Op::Gt,
        CmpOp::Ge => Op::Ge,
    }
}

fn slot(ty: AttrType) -> Slot {
    match ty {
        AttrType::Int | AttrType::Datetime | AttrType::Bool => Slot::Int,
        AttrType::Double => Slot::Real,
        AttrType::Text | AttrType::Keyword | AttrType::KeywordList => Slot::Text,
    }
}

/// A test of a resolved attribute: of its column, or of its stored values (`negated`: none of
/// them passes; only stored attributes carry their own negation, columns use the test's).
fn test_of(r: &Resolved, test: Test, negated: bool) -> Filter {
    match r {
        Resolved::System(s) => {
            debug_assert!(!negated, "a column test carries its own negation");
            Filter::Column {
                column: s.column,
                test,
            }
        }
        Resolved::Stored { name, ty } => Filter::Attribute {
            name: name.clone(),
            slot: slot(*ty),
            test,
            negated,
        },
    }
}

fn expr(
    e: &Expr,
    custom: &HashMap<String, AttrType>,
    division: &mut bool,
) -> Result<Filter, String> {
    let attr_of = |name: &str, division: &mut bool| -> Result<Resolved, String> {
        let r = resolve(name, custom)?;
        if r.name() == DIVISION {
            *division = true;
        }
        Ok(r)
    };
    Ok(match e {
        // A chain of one operator is kept flat: `(a AND b AND c)`, not nested pairs (SQL
        // engines limit expression depth).
        Expr::And(..) | Expr::Or(..) => {
            let (is_and, parts) = flatten(e);
            let parts = parts
                .into_iter()
                .map(|p| expr(p, custom, division))
                .collect::<Result<Vec<_>, _>>()?;
            if is_and {
                Filter::And(parts)
            } else {
                Filter::Or(parts)
            }
        }
        Expr::Not(a) => Filter::Not(Box::new(expr(a, custom, division)?)),
        Expr::Compare {
            attr,
            op: cmp,
            value,
        } => {
            let r = attr_of(attr, division)?;
            let ty = r.ty();
            let allowed = match ty {
                AttrType::Text | AttrType::KeywordList => matches!(cmp, CmpOp::Eq | CmpOp::Ne),
                _ => true,
            };
            if !allowed {
                return Err(format!(
                    "operator '{}' is not supported for {ty} attribute '{}'",
                    cmp.sql(),
                    r.name()
                ));
            }
            let v = convert(&r, value)?;
            match (&r, ty) {
                (Resolved::System(_), _) => test_of(&r, Test::Compare(op(*cmp), v), false),
                (Resolved::Stored { .. }, AttrType::Text) => {
                    let Value::Text(needle) = v else {
                        return Err(mismatch(&r, value));
                    };
                    test_of(&r, Test::Contains(needle), *cmp == CmpOp::Ne)
                }
                (Resolved::Stored { .. }, AttrType::KeywordList) => {
                    test_of(&r, Test::Compare(Op::Eq, v), *cmp == CmpOp::Ne)
                }
                (Resolved::Stored { .. }, _) => test_of(&r, Test::Compare(op(*cmp), v), false),
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
            let values = values
                .iter()
                .map(|v| convert(&r, v))
                .collect::<Result<Vec<_>, _>>()?;
            if r.ty() == AttrType::KeywordList {
                // NOT IN a list: none of its values is among them.
                test_of(
                    &r,
                    Test::In {
                        values,
                        negated: false,
                    },
                    *negated,
                )
            } else {
                test_of(
                    &r,
                    Test::In {
                        values,
                        negated: *negated,
                    },
                    false,
                )
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
            let test = Test::Between {
                low: convert(&r, low)?,
                high: convert(&r, high)?,
                negated: *negated,
            };
            test_of(&r, test, false)
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
            if prefix.contains('\0') {
                return Err(format!(
                    "invalid expression: a value for search attribute {} contains a NUL character",
                    r.name()
                ));
            }
            let test = Test::StartsWith {
                prefix: prefix.clone(),
                negated: *negated,
            };
            test_of(&r, test, false)
        }
        Expr::IsNull { attr, negated } => {
            let r = attr_of(attr, division)?;
            match &r {
                Resolved::System(s) => Filter::Column {
                    column: s.column,
                    test: Test::IsNull { negated: *negated },
                },
                Resolved::Stored { name, .. } => {
                    let has = Filter::HasAttribute { name: name.clone() };
                    // IS NULL: no value stored.
                    if *negated {
                        has
                    } else {
                        Filter::Not(Box::new(has))
                    }
                }
            }
        }
    })
}

/// The operands of a chain of one boolean operator, left to right (no recursion), and whether
/// it is an AND.
fn flatten(e: &Expr) -> (bool, Vec<&Expr>) {
    let is_and = matches!(e, Expr::And(..));
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
    (is_and, out)
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
fn convert(r: &Resolved, value: &Literal) -> Result<Value, String> {
    if matches!(value, Literal::Str(s) if s.contains('\0')) {
        // No store keeps one, so no stored value can match it.
        return Err(format!(
            "invalid expression: a value for search attribute {} contains a NUL character",
            r.name()
        ));
    }
    if r.name() == "ExecutionStatus" {
        return match value {
            Literal::Str(s) => STATUSES
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(s))
                .map(|(_, v)| Value::Int(*v))
                .ok_or_else(|| {
                    format!(
                        "invalid ExecutionStatus value '{s}': expected one of Running, Completed, Failed, Canceled, Terminated, ContinuedAsNew, TimedOut"
                    )
                }),
            Literal::Int(i) if (1..=7).contains(i) => Ok(Value::Int(*i)),
            _ => Err(mismatch(r, value)),
        };
    }
    if r.name() == "ExecutionDuration" {
        return match value {
            Literal::Int(ns) => Ok(Value::Int(*ns)),
            Literal::Str(s) => parse_duration_ns(s)
                .map(Value::Int)
                .ok_or_else(|| mismatch(r, value)),
            _ => Err(mismatch(r, value)),
        };
    }
    match (r.ty(), value) {
        (AttrType::Keyword | AttrType::KeywordList | AttrType::Text, Literal::Str(s)) => {
            Ok(Value::Text(s.clone()))
        }
        (AttrType::Int, Literal::Int(i)) => Ok(Value::Int(*i)),
        (AttrType::Double, Literal::Int(i)) => Ok(Value::Real(*i as f64)),
        (AttrType::Double, Literal::Float(x)) => Ok(Value::Real(*x)),
        (AttrType::Bool, Literal::Bool(b)) => Ok(Value::Int(*b as i64)),
        (AttrType::Bool, Literal::Str(s)) if s.eq_ignore_ascii_case("true") => Ok(Value::Int(1)),
        (AttrType::Bool, Literal::Str(s)) if s.eq_ignore_ascii_case("false") => {
            Ok(Value::Int(0))
        }
        (AttrType::Datetime, Literal::Int(ns)) => Ok(Value::Int(*ns)),
        (AttrType::Datetime, Literal::Str(s)) => parse_datetime_ns(s)
            .map(Value::Int)
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

/// An RFC 3339 time written as the reference's visibility store gives it back: its own offset
/// (`Z` for zero), the fraction of a second without trailing zeros (none when whole), as Go's
/// `time.RFC3339Nano`. `None` for text that is not an RFC 3339 time.
pub fn rfc3339_nano(s: &str) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(s.trim()).ok()?;
    let mut out = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.timestamp_subsec_nanos();
    if nanos > 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    let offset = t.offset().local_minus_utc();
    if offset == 0 {
        out.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let minutes = offset.unsigned_abs() / 60;
        out.push_str(&format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60));
    }
    Some(out)
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
