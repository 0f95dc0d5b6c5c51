//! Kairos visibility: the list-filter language of `ListWorkflowExecutions` and
//! `CountWorkflowExecutions` ([`parse`]), search-attribute types and name resolution
//! ([`attrs`]), and the compilation of a query into a parameterized SQL condition
//! ([`compile`]). Pure: no IO.
#![allow(missing_docs)]

pub mod attrs;
pub mod compile;
pub mod parse;

pub use attrs::{AttrType, Resolved};
pub use compile::{Compiled, compile};
pub use parse::{Expr, Literal, ParseError, Query, parse};

use std::collections::HashMap;

/// Parses and compiles `text` for a namespace with these custom attributes; the error is the
/// message to answer with (INVALID_ARGUMENT).
pub fn compile_text(text: &str, custom: &HashMap<String, AttrType>) -> Result<Compiled, String> {
    let query = parse(text).map_err(|e| format!("invalid query: {e}"))?;
    compile(&query, custom).map_err(|e| format!("invalid query: {e}"))
}

#[cfg(test)]
mod tests;
