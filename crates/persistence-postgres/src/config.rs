//! The database URL: a libpq-style `postgres://user:password@host:port/database` with two
//! parameters of ours, taken off before the driver sees it: `schema` (the PostgreSQL schema the
//! tables live in, default `kairos`, so several clusters can share one database) and
//! `pool_size` (connections kept open, default 16).
use kairos_persistence::{Error, Result};

/// Connections a store keeps open unless the URL says otherwise.
const DEFAULT_POOL_SIZE: usize = 16;

/// The schema the tables live in unless the URL says otherwise.
const DEFAULT_SCHEMA: &str = "kairos";

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Options {
    /// The driver's configuration (host, port, user, password, database, ...).
    pub pg: tokio_postgres::Config,
    /// The PostgreSQL schema holding the tables.
    pub schema: String,
    /// Connections in the pool.
    pub pool_size: usize,
}

impl Options {
    /// Parses a database URL (see the module doc).
    pub fn parse(url: &str) -> Result<Options> {
        let invalid = |what: String| Error::Unavailable {
            message: what,
            source: None,
        };
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut schema = DEFAULT_SCHEMA.to_string();
        let mut pool_size = DEFAULT_POOL_SIZE;
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "schema" => schema = value.to_string(),
                "pool_size" => {
                    pool_size = value.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        invalid(format!(
                            "pool_size must be a positive number, got {value:?}"
                        ))
                    })?;
                }
                _ => passed.push(pair),
            }
        }
        if !valid_schema_name(&schema) {
            return Err(invalid(format!(
                "schema {schema:?} is not a valid name: use lower-case letters, digits and _, \
                 starting with a letter, at most 63"
            )));
        }
        let rest = if passed.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", passed.join("&"))
        };
        let mut pg: tokio_postgres::Config = rest
            .parse()
            .map_err(|e| Error::unavailable("the database URL is not valid".to_string(), e))?;
        if pg.get_application_name().is_none() {
            pg.application_name("kairos");
        }
        // Every connection of the pool resolves table names in our schema only.
        // Notices ("already exists, skipping" from migrations) are not worth a log line.
        // Every execution planned for its own values: a generic plan is made once per
        // connection from the statistics of that moment, and a schema's tables start empty, so
        // the plans cached then scanned a whole shard's timers (or a namespace's visibility
        // rows) for each delete by key, for good. Measured at K=3 C=200 (docs/benchmarks.md):
        // PostgreSQL's CPU per workflow 7.7 -> 4.0 ms, throughput +50 %.
        pg.options(format!(
            "-c search_path={schema} -c client_min_messages=warning \
             -c plan_cache_mode=force_custom_plan"
        ));
        Ok(Options {
            pg,
            schema,
            pool_size,
        })
    }

    /// The first key of this schema's advisory locks (the second is the shard): a hash of the
    /// schema's name, so deployments in other schemas of the database never wait on ours.
    pub fn lock_space(&self) -> i32 {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.schema.bytes() {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
        hash as i32
    }

    /// `host:port/database`, for messages (never the password).
    pub fn describe(&self) -> String {
        let host = match self.pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_string(),
        };
        let port = self.pg.get_ports().first().copied().unwrap_or(5432);
        let db = self.pg.get_dbname().unwrap_or("");
        format!("{host}:{port}/{db} (schema {})", self.schema)
    }
}

/// A schema name we can write into SQL without quoting: the only name that is ever spliced in.
fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 63
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_parameters_are_taken_off_the_url() {
        let o = Options::parse(
            "postgres://me:secret@db.local:6000/shop?schema=prod_1&pool_size=4&connect_timeout=3",
        )
        .expect("valid");
        assert_eq!(o.schema, "prod_1");
        assert_eq!(o.pool_size, 4);
        assert_eq!(
            o.pg.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert_eq!(o.describe(), "db.local:6000/shop (schema prod_1)");
        let d = Options::parse("postgres://localhost/test").expect("valid");
        assert_eq!((d.schema.as_str(), d.pool_size), ("kairos", 16));
        for bad in [
            "postgres://localhost/test?schema=Bad",
            "postgres://localhost/test?schema=a;drop",
            "postgres://localhost/test?pool_size=0",
            "not a url at all",
        ] {
            assert!(Options::parse(bad).is_err(), "{bad}");
        }
    }
}
