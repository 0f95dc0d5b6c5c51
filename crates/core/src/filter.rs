//! A compiled visibility filter as the store runs it: a SQL condition over the `visibility`
//! table (alias `v`) with `?` placeholders, and the values bound to them in order. Built only
//! by `kairos-visibility` from a parsed query; no user text is ever spliced into the SQL.

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Int(i64),
    Real(f64),
    Text(String),
}

/// A condition and its bound values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SqlFilter {
    /// A boolean SQL expression; empty means every row.
    pub where_sql: String,
    pub params: Vec<SqlValue>,
}
