//! Store errors from the driver's and the pool's, with PostgreSQL's own message (and SQLSTATE)
//! kept as the cause.
use kairos_persistence::Error;

/// PostgreSQL's error with its code and detail, as the cause of a store error.
#[derive(Debug)]
pub(crate) struct PgCause(String);

impl PgCause {
    pub(crate) fn of(e: &tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
                PgCause(format!(
                    "{}{detail} (PostgreSQL SQLSTATE {})",
                    db.message(),
                    db.code().code()
                ))
            }
            // Connection-level errors: the driver's words and their source (refused, reset).
            None => {
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(e);
                while let Some(c) = cause {
                    text.push_str(": ");
                    text.push_str(&c.to_string());
                    cause = c.source();
                }
                PgCause(text)
            }
        }
    }
}

impl std::fmt::Display for PgCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PgCause {}

/// Maps a driver error to a store error saying what was being done.
pub(crate) fn pg_err(what: &str) -> impl FnOnce(tokio_postgres::Error) -> Error + '_ {
    move |e| Error::unavailable(what.to_string(), PgCause::of(&e))
}

/// A connection the pool could not give: the server is unreachable, refused us, or the pool is
/// closed.
pub(crate) fn pool_err(target: &str, e: deadpool_postgres::PoolError) -> Error {
    match e {
        deadpool_postgres::PoolError::Backend(e) => Error::unavailable(
            format!("failed to connect to PostgreSQL at {target}"),
            PgCause::of(&e),
        ),
        other => Error::Unavailable {
            message: format!("no connection to PostgreSQL at {target}: {other}"),
            source: None,
        },
    }
}
