//! A visibility filter as the store receives it: typed and resolved, not SQL. `kairos-visibility`
//! builds it from a parsed query (names resolved, values converted to their stored form); each
//! store backend renders it in its own SQL dialect with every value a bound parameter, so no
//! query text, and no SQL, crosses the store's interface.

/// A value as the visibility tables store it: integers (also datetimes as epoch nanoseconds,
/// booleans as 0/1, statuses as their numbers), doubles, and text.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Real(f64),
    Text(String),
}

/// A column of a run's visibility record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    WorkflowId,
    RunId,
    WorkflowType,
    TaskQueue,
    /// `WorkflowExecutionStatus` as its number.
    Status,
    ParentWorkflowId,
    ParentRunId,
    RootWorkflowId,
    RootRunId,
    /// Epoch nanoseconds.
    StartTime,
    /// Epoch nanoseconds.
    ExecutionTime,
    /// Epoch nanoseconds; absent while running.
    CloseTime,
    /// Nanoseconds; absent while running.
    ExecutionDuration,
    HistoryLength,
    HistorySizeBytes,
    StateTransitionCount,
}

/// Which typed slot a stored search attribute's values use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Int, Datetime and Bool attributes.
    Int,
    /// Double attributes.
    Real,
    /// Keyword, KeywordList and Text attributes.
    Text,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A test of one value.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `value op operand`.
    Compare(Op, Value),
    /// `value [NOT] IN (...)`.
    In { values: Vec<Value>, negated: bool },
    /// `value [NOT] BETWEEN low AND high`.
    Between {
        low: Value,
        high: Value,
        negated: bool,
    },
    /// The text value starts (or, negated, does not start) with `prefix`, counted in characters.
    StartsWith { prefix: String, negated: bool },
    /// The text value contains `needle`, ignoring case (Text attributes' `=`).
    Contains(String),
    /// `value IS [NOT] NULL`.
    IsNull { negated: bool },
}

/// A filter over a namespace's visibility records.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Filter {
    /// Every record.
    #[default]
    All,
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    /// A test of a record column.
    Column {
        column: Column,
        test: Test,
    },
    /// A test of a stored search attribute, with SQL's three-valued logic as a column would
    /// give: unknown (neither true nor false, so `NOT` does not flip it) when the run has no
    /// value for `name`; otherwise whether one of its values passes `test` or, `negated`,
    /// whether none does.
    Attribute {
        name: String,
        slot: Slot,
        test: Test,
        negated: bool,
    },
    /// The run has at least one value for the search attribute `name`.
    HasAttribute {
        name: String,
    },
}
