//! The store conformance suite (`kairos_persistence::conformance`) on SQLite.
use std::sync::Arc;

use kairos_persistence::Store;
use kairos_persistence_sqlite::{Location, SqliteStore};

async fn fresh() -> Option<Arc<dyn Store>> {
    let store = SqliteStore::open(&Location::Memory).expect("a scratch database opens");
    Some(Arc::new(store))
}

kairos_persistence::conformance_suite!(fresh);
