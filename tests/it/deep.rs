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
        for table in lakepurge::table::Table::resolve_all(&job).await.unwrap() {
            let plan = lakepurge::plan::plan_table(&table, &events, None)
                .await
                .unwrap();
            let by_plan: BTreeMap<String, u64> = plan
                .files
                .iter()
                .map(|f| (f.path.clone(), f.rows_matched))
                .collect();
            let (deep, _) = lakepurge::verify::deep::remaining(&table, &events, None)
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

/// Case 10 of #23 and case 3 (paths): a table in a folder whose name holds a space, `%` and
/// non-ASCII, with hive folders holding escaped values (`region=eu%3Awest`, as Spark, Hive and
/// delta-rs write them), and a match rule three struct levels down (`a.b.c`, beside a list
/// under a struct): plan, purge, verify and verify --deep all find the files as they are
/// named; the deep check counts rows through the nested path (it fails naming a file that a
/// writer adds later with an erased subject).
#[test]
fn escaped_keys_and_deep_struct_paths_are_found_by_every_command() {
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh dir/t%1 ü");
    let script = "import sys, os, pyarrow as pa, pyarrow.parquet as pq\n\
        root = sys.argv[1]\n\
        def put(rel, ids, tags):\n\
        \x20   os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)\n\
        \x20   a = pa.array([{'b': {'c': i, 'n': 'x'}} for i in ids])\n\
        \x20   s = pa.array([{'tags': t} for t in tags], pa.struct([('tags', pa.list_(pa.string()))]))\n\
        \x20   pq.write_table(pa.table({'a': a, 's': s, 'v': [str(i) for i in ids]}), os.path.join(root, rel))\n\
        put('region=eu%3Awest/part 0.parquet', [1, 2, 3], [['k'], ['u7'], []])\n\
        put('region=us%2Feast/part-1.parquet', [4, 5], [['u9', 'q'], ['z']])\n\
        put('region=ap/part-2.parquet', [6], [['w']])\n";
    run_python("writing the escaped table", script, &[&table]);
    write_events(
        &ws.path().join("events/e.json"),
        &[
            ("ev-1", "user_id", serde_json::json!("2")),
            ("ev-2", "user_id", serde_json::json!("5")),
            ("ev-3", "tag", serde_json::json!("u9")),
        ],
    );
    let job = ws.path().join("job.toml");
    write(
        &job,
        &format!(
            r#"[job]
name = "esc"
manifests = "{}"
[events]
location = "{}"
format = "ndjson"
[[table]]
name = "esc"
location = "{}"
[[table.match]]
column = "a.b.c"
subject_type = "user_id"
[[table.match]]
column = "s.tags"
subject_type = "tag"
"#,
            file_url(&ws.path().join("audit")),
            file_url(&ws.path().join("events")),
            file_url(&table)
        ),
    );
    let (files, rows) = assert_agree(&job);
    assert_eq!((files, rows), (2, 3), "user 2 (eu), user 5 and tag u9 (us)");
    let job = job.to_str().unwrap();
    let purged = lakepurge(&["purge", "--job", job, "--run-id", "r1"]);
    assert_eq!(purged.code, 0, "{}", purged.stderr);
    let m = read_json(&ws.path().join("audit/esc/r1.json"));
    let mut paths: Vec<&str> = m["tables"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "region=eu%3Awest/part 0.parquet",
            "region=us%2Feast/part-1.parquet"
        ]
    );
    assert_eq!(m["tables"][0]["rows_removed"], serde_json::json!(3));
    // The files on disk are the ones named, rewritten in place (no `%253A` twin).
    let eu = table.join("region=eu%3Awest/part 0.parquet");
    assert_eq!(read_all(&eu).num_rows(), 2);
    assert!(!table.join("region=eu%253Awest").exists());
    let verify = lakepurge(&["verify", "--job", job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
    assert!(
        verify.stdout.trim_end().ends_with("PASS"),
        "{}",
        verify.stdout
    );
    // A writer adds a file holding erased user 2 three levels down: the deep check names it.
    let late = "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
        a = pa.array([{'b': {'c': 2, 'n': 'x'}}])\n\
        s = pa.array([{'tags': []}], pa.struct([('tags', pa.list_(pa.string()))]))\n\
        pq.write_table(pa.table({'a': a, 's': s, 'v': ['2']}), sys.argv[1])\n";
    run_python(
        "adding a late file",
        late,
        &[&table.join("region=eu%3Awest/late #1.parquet")],
    );
    let verify = lakepurge(&["verify", "--job", job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 3, "{}", verify.all_output());
    assert!(
        verify.stdout.contains("region=eu%3Awest/late #1.parquet"),
        "{}",
        verify.stdout
    );
}
