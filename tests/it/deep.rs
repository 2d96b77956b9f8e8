//! `verify --deep` is a second implementation of matching (SQL over DataFusion, see
//! `src/verify/deep.rs`): it agrees with `plan` on every fixture, and it catches a matcher bug
//! in `purge` that the shared code could not.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;
use crate::fixtures::{duckdb_workspace, pyarrow_workspace};

/// Plans every table of `job` and counts its matching rows with the deep check, before any
/// purge: per file, the two must agree. Returns the files with matches and the rows matched.
fn assert_agree(job: &Path) -> (usize, u64) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let job = lakepurge::spec::Job::load(job).unwrap();
        let events = lakepurge::events::load(&job).await.unwrap();
        let (mut files, mut rows) = (0, 0);
        for table in lakepurge::plan::Table::resolve_all(&job).unwrap() {
            let plan = lakepurge::plan::plan_table(&table, &events, None)
                .await
                .unwrap();
            let by_plan: BTreeMap<String, u64> = plan
                .files
                .iter()
                .map(|f| (f.path.clone(), f.rows_matched))
                .collect();
            let (deep, _) = lakepurge::verify::deep::remaining(&table, &events)
                .await
                .unwrap();
            let by_sql: BTreeMap<String, u64> = deep.into_iter().collect();
            assert_eq!(by_sql, by_plan, "table {}", table.spec.name);
            files += by_plan.len();
            rows += by_plan.values().sum::<u64>();
        }
        (files, rows)
    })
}

#[test]
fn deep_check_agrees_with_plan_on_every_fixture() {
    // The demo: integer and email (normalised) columns, a struct path, a list, a composite key.
    let demo = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(demo.path()).unwrap();
    let (files, rows) = assert_agree(&demo.path().join("jobs/demo.toml"));
    eprintln!("AGREE demo: {files} files, {rows} rows");
    assert!(files >= 4 && rows >= 8, "demo: {files} files, {rows} rows");
    // pyarrow: INT96, decimals, dictionaries, structs, lists, a fixed-size binary UUID.
    for fixture in ["users", "pages"] {
        let (_ws, _wh, _m, job) = pyarrow_workspace(fixture, "part-0.json");
        let (files, rows) = assert_agree(&job);
        eprintln!("AGREE {fixture}: {files} files, {rows} rows");
        assert!(
            files >= 2 && rows >= 10,
            "{fixture}: {files} files, {rows} rows"
        );
    }
    // DuckDB: a list of structs (items.sku), a struct path, Parquet events with renames.
    let (_ws, _wh, _m, job) = duckdb_workspace();
    let (files, rows) = assert_agree(&job);
    assert!(
        files >= 2 && rows >= 3,
        "duckdb: {files} files, {rows} rows"
    );
}

#[test]
fn a_matcher_bug_in_purge_is_caught_by_verify_deep() {
    // The broken matcher ignores the last rule (the fixed-size binary uid): purge leaves the
    // row the UUID event erases, reports success, and every check but the deep one passes.
    let (_ws, wh, manifests, job) = pyarrow_workspace("users", "part-0.json");
    let job = job.to_str().unwrap();
    let run = lakepurge_env(
        &["purge", "--job", job, "--run-id", "r1"],
        &[("LAKEPURGE_FAILPOINT", "broken_matcher")],
    );
    assert_eq!(run.code, 0);
    let manifest = manifests.join("fixtures/r1.json");
    let shallow = lakepurge(&["verify", manifest.to_str().unwrap()]);
    assert_eq!(shallow.code, 0, "the manifest itself is consistent");
    let deep = lakepurge(&["verify", manifest.to_str().unwrap(), "--deep", "--job", job]);
    assert_eq!(deep.code, 3);
    let failed: Vec<&str> = deep
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect();
    assert_eq!(failed.len(), 2, "{}", deep.stdout);
    assert!(
        failed[0].contains("py.users") && failed[0].contains("(1 rows)"),
        "{}",
        deep.stdout
    );
    // The file it names is the one holding the UUID's row.
    let named = failed[0]
        .split(&file_url(&wh))
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap();
    assert!(wh.join(named).exists(), "{named}");
    // Without the defect, the same purge passes the deep check.
    let (_ws, _wh, manifests, job) = pyarrow_workspace("users", "part-0.json");
    let job = job.to_str().unwrap();
    assert_eq!(
        lakepurge(&["purge", "--job", job, "--run-id", "r1"]).code,
        0
    );
    let manifest = manifests.join("fixtures/r1.json");
    let deep = lakepurge(&["verify", manifest.to_str().unwrap(), "--deep", "--job", job]);
    assert_eq!(deep.code, 0, "{}", deep.stdout);
}
