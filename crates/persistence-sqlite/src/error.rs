//! Store errors from SQLite's: its own message and result code kept as the cause.
use super::*;

pub(crate) fn sql_err(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::unavailable(what.to_string(), SqliteCause::of(e))
}

/// SQLite's own message with its result code, as the cause of a store error: "database or
/// disk is full (SQLITE_FULL, code 13)" says what to do where rusqlite's text alone may not.
#[derive(Debug)]
pub(crate) struct SqliteCause(String);

impl SqliteCause {
    pub(crate) fn of(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(failure, message) => {
                let text = message.clone().unwrap_or_else(|| failure.to_string());
                SqliteCause(format!(
                    "{text} (SQLite result code {})",
                    failure.extended_code
                ))
            }
            _ => SqliteCause(e.to_string()),
        }
    }
}

impl std::fmt::Display for SqliteCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqliteCause {}

pub(crate) fn closed() -> Error {
    Error::Unavailable {
        message: "the sqlite writer has stopped".into(),
        source: None,
    }
}

pub(crate) fn corrupt(run_id: &str, detail: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        message: format!("history of run {run_id} is corrupt: {detail}"),
        source: None,
    }
}
