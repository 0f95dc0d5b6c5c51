//! The store conformance suite (`kairos_persistence::conformance`) on PostgreSQL, each case in a
//! schema of its own, at the URL in `KAIROS_TEST_POSTGRES_URL`; without it every case is
//! skipped, saying so. The schemas of test processes that have ended are dropped at the start.
use std::sync::Arc;

use kairos_persistence::Store;
use kairos_persistence_postgres::PostgresStore;

async fn fresh() -> Option<Arc<dyn Store>> {
    let Ok(url) = std::env::var("KAIROS_TEST_POSTGRES_URL") else {
        eprintln!("skipped: KAIROS_TEST_POSTGRES_URL is not set (no PostgreSQL to test against)");
        return None;
    };
    // A schema per case and run: concurrent cases and runs never meet.
    let schema = format!(
        "kairos_test_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = PostgresStore::open(&format!("{url}{separator}schema={schema}&pool_size=4"))
        .await
        .expect("the test database is reachable");
    CLEANED
        .get_or_init(|| async {
            store
                .drop_schemas_of_finished_tests("kairos_test_")
                .await
                .expect("stale test schemas dropped")
        })
        .await;
    Some(Arc::new(store))
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();

kairos_persistence::conformance_suite!(fresh);
