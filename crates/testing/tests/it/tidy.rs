//! Tidy checks run as ordinary tests: every source file says what it is for, no test is
//! ignored, and the crate dependency rules of docs/ARCHITECTURE.md hold.
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&workspace().join("crates"), &mut files);
    rust_files(&workspace().join("bench"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    files
}

#[test]
fn every_file_starts_with_a_module_doc() {
    let missing: Vec<_> = all_sources()
        .into_iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .expect("readable")
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:?}"
    );
}

#[test]
fn no_ignored_tests() {
    let marker = ["#[", "ignore"].concat();
    let offenders: Vec<_> = all_sources()
        .into_iter()
        .filter(|f| {
            std::fs::read_to_string(f)
                .expect("readable")
                .contains(&marker)
        })
        .collect();
    assert!(offenders.is_empty(), "ignored tests in {offenders:?}");
}

fn dependencies(krate: &str) -> Vec<String> {
    let dir = match krate {
        "bench" => workspace().join("bench"),
        _ => workspace().join("crates").join(krate),
    };
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("manifest");
    let deps = manifest.split("[dependencies]").nth(1).unwrap_or_default();
    let deps = deps.split("\n[").next().unwrap_or_default();
    deps.lines()
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|n| n.starts_with("kairos-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn crate_dependency_rules_hold() {
    // The load generator is a black-box client: it must measure any server the same way.
    assert!(
        dependencies("bench").is_empty(),
        "bench uses no Kairos crate: {:?}",
        dependencies("bench")
    );
    assert!(
        dependencies("core").is_empty(),
        "core is a leaf: {:?}",
        dependencies("core")
    );
    for (krate, forbidden) in [
        (
            "persistence",
            &[
                "kairos-history",
                "kairos-matching",
                "kairos-frontend",
                "kairos-server",
            ][..],
        ),
        (
            "history",
            &["kairos-matching", "kairos-frontend", "kairos-server"][..],
        ),
        (
            "matching",
            &[
                "kairos-history",
                "kairos-persistence",
                "kairos-frontend",
                "kairos-server",
            ][..],
        ),
        ("frontend", &["kairos-persistence", "kairos-server"][..]),
        // The query language is pure: it compiles to a typed filter each store renders.
        (
            "visibility",
            &[
                "kairos-persistence",
                "kairos-history",
                "kairos-matching",
                "kairos-frontend",
                "kairos-server",
            ][..],
        ),
        (
            "cli",
            &[
                "kairos-history",
                "kairos-matching",
                "kairos-persistence",
                "kairos-frontend",
            ][..],
        ),
    ] {
        let deps = dependencies(krate);
        for f in forbidden {
            assert!(
                !deps.iter().any(|d| d == f),
                "{krate} must not depend on {f}"
            );
        }
    }
    // Only the composition root (and the test crate) names a store backend.
    let backends = ["kairos-persistence-sqlite", "kairos-persistence-postgres"];
    for krate in [
        "core",
        "persistence",
        "history",
        "matching",
        "visibility",
        "frontend",
        "cli",
    ] {
        let deps = dependencies(krate);
        for backend in backends {
            assert!(
                !deps.iter().any(|d| d == backend),
                "{krate} must not depend on {backend}"
            );
        }
    }
    // history::state does no IO: no storage, no tokio, no clock reads.
    let mut state_files = Vec::new();
    rust_files(
        &workspace().join("crates/history/src/state"),
        &mut state_files,
    );
    for file in state_files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for banned in [
            "kairos_persistence",
            "tokio",
            "SystemTime::now",
            "Instant::now",
        ] {
            assert!(!text.contains(banned), "{} uses {banned}", file.display());
        }
    }
}

/// No SQL text outside the store backends: the rest of the code hands stores typed values
/// (rows, batches, filters), never statements or fragments of them.
#[test]
fn no_sql_outside_the_store_backends() {
    let backends = [
        workspace().join("crates/persistence-sqlite"),
        workspace().join("crates/persistence-postgres"),
    ];
    let keywords = [
        "SELECT ",
        "INSERT INTO",
        "DELETE FROM",
        "CREATE TABLE",
        "CREATE INDEX",
        "ALTER TABLE",
        " WHERE ",
    ];
    let offenders: Vec<String> = all_sources()
        .into_iter()
        .filter(|f| !backends.iter().any(|b| f.starts_with(b)))
        .filter(|f| !f.ends_with("tidy.rs"))
        .filter_map(|f| {
            let text = std::fs::read_to_string(&f).expect("readable");
            keywords
                .iter()
                .find(|k| text.contains(*k))
                .map(|k| format!("{} ({k:?})", f.display()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "SQL outside the backends: {offenders:?}"
    );
}

/// One commit pipe: in the history crate only the engine's plans build write batches and
/// commit them (DESIGN.md, "Next shape"); every other change to a run goes through them.
#[test]
fn only_plans_build_write_batches() {
    let plans = workspace().join("crates/history/src/engine/plan.rs");
    let mut files = Vec::new();
    rust_files(&workspace().join("crates/history/src"), &mut files);
    assert!(files.contains(&plans), "{} is missing", plans.display());
    let offenders: Vec<String> = files
        .into_iter()
        .filter(|f| *f != plans)
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("readable");
            [
                "WriteBatch",
                "ExecutionWrite",
                "CurrentWrite",
                "store.commit(",
            ]
            .iter()
            .any(|word| text.contains(word))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "write batches built outside engine/plan.rs: {offenders:?}"
    );
}
