//! Purges of warehouses written by other tools (pyarrow, DuckDB; see testdata/make_fixtures.py):
//! exactly the matching rows go, every other row stays identical and in order, and the Parquet
//! schema, key-value metadata and codecs are unchanged; pyarrow reads the results.

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use serde_json::json;

use crate::common::*;

/// Runs validate, plan, purge and verify on `job`; returns the manifest, the plan and purge's
/// JSON log lines.
fn purge_job(
    job: &Path,
    manifests: &Path,
    run_id: &str,
) -> (serde_json::Value, serde_json::Value, Vec<serde_json::Value>) {
    purge_job_env(job, manifests, run_id, &[])
}

/// [`purge_job`] with environment variables for the purge.
fn purge_job_env(
    job: &Path,
    manifests: &Path,
    run_id: &str,
    env: &[(&str, &str)],
) -> (serde_json::Value, serde_json::Value, Vec<serde_json::Value>) {
    let job = job.to_str().unwrap();
    assert_eq!(lakepurge(&["validate", "--job", job]).code, 0);
    let plan = lakepurge(&["plan", "--job", job, "--json"]);
    assert_eq!(plan.code, 0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let purge = purge_json(job, run_id, &[], env);
    assert_eq!(purge.code, 0, "{}", purge.stderr);
    let logs = purge
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let manifest_path = manifests.join("fixtures").join(format!("{run_id}.json"));
    let verify = lakepurge(&[
        "verify",
        manifest_path.to_str().unwrap(),
        "--deep",
        "--job",
        job,
    ]);
    assert_eq!(verify.code, 0);
    assert!(
        verify.stdout.trim_end().ends_with("PASS"),
        "{}",
        verify.stdout
    );
    (read_json(&manifest_path), plan, logs)
}

/// Checks one table's files against the oracle: `erase(batch, row)` says which original rows
/// must be gone. Returns the rows removed per file (relative path).
pub fn check_table(
    original_dir: &Path,
    purged_dir: &Path,
    files: &[&str],
    erase: impl Fn(&RecordBatch, usize) -> bool,
) -> Vec<(String, u64, PathBuf)> {
    let mut out = Vec::new();
    let mut read_back = Vec::new();
    for rel in files {
        let before = original_dir.join(rel);
        let after = purged_dir.join(rel);
        let original = read_all(&before);
        let keep: BooleanArray = (0..original.num_rows())
            .map(|i| Some(!erase(&original, i)))
            .collect();
        let expected = arrow::compute::filter_record_batch(&original, &keep).unwrap();
        let removed = (original.num_rows() - expected.num_rows()) as u64;
        if expected.num_rows() == 0 {
            assert!(!after.exists(), "{rel}: fully erased file must be deleted");
        } else if removed == 0 {
            assert_eq!(
                sha256_file(&before),
                sha256_file(&after),
                "{rel}: untouched file changed"
            );
        } else {
            let got = read_all(&after);
            assert_eq!(got, expected, "{rel}: rows differ from the expected result");
            assert_same_format(&before, &after);
            read_back.push(ReadBack {
                original: before.clone(),
                purged: after.clone(),
                kept: kept_rows(&original, &erase),
            });
        }
        out.push((rel.to_string(), removed, after));
    }
    // Every other reader agrees: the same rows, the same values.
    assert_read_back(&read_back);
    out
}

fn manifest_table<'a>(m: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()
}

fn plan_table<'a>(p: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    p["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .unwrap()
}

/// The manifest's per-file counts equal the oracle's; plan and purge agree.
pub fn check_counts(
    manifest: &serde_json::Value,
    plan: &serde_json::Value,
    table: &str,
    removed: &[(String, u64, PathBuf)],
) {
    let t = manifest_table(manifest, table);
    let p = plan_table(plan, table);
    let total: u64 = removed.iter().map(|r| r.1).sum();
    assert_eq!(t["rows_removed"], total, "{table}: rows_removed");
    assert_eq!(p["rows_matched"], total, "{table}: plan rows");
    let affected = removed.iter().filter(|r| r.1 > 0).count() as u64;
    assert_eq!(p["files_affected"], affected);
    assert!(p["bytes_read"].as_u64().unwrap() > 0);
    assert_eq!(
        t["files_rewritten"].as_u64().unwrap() + t["files_deleted"].as_u64().unwrap(),
        affected
    );
    for (rel, n, path) in removed.iter().filter(|r| r.1 > 0) {
        let f = t["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == rel.as_str())
            .unwrap();
        assert_eq!(f["rows_removed"], *n, "{rel}");
        match f["after"].as_object() {
            Some(after) => assert_eq!(after["sha256"], sha256_file(path), "{rel}: after.sha256"),
            None => assert!(!path.exists()),
        }
    }
}

/// The job spec of the pyarrow users fixture: every match kind (column, struct path, list,
/// normalised email, fixed-size binary uid) over one table.
pub fn pyarrow_users_job(manifests: &str, events: &str, table: &str) -> String {
    format!(
        r#"[job]
name = "fixtures"
manifests = "{manifests}"
[events]
location = "{events}"
format = "ndjson"
[[table]]
name = "py.users"
location = "{table}"
[[table.match]]
column = "user_id"
subject_type = "user_id"
[[table.match]]
column = "profile.id"
subject_type = "user_id"
[[table.match]]
column = "friend_ids"
subject_type = "user_id"
[[table.match]]
column = "email"
subject_type = "email"
normalize = "lowercase_trim"
[[table.match]]
column = "uid"
subject_type = "uid"
"#
    )
}

/// The events of the pyarrow users fixture: the erased subjects (USER_IDS, an email needing
/// normalisation, a UUID), plus an unconvertible id, a null id, a duplicated event and an event
/// of a subject type no rule uses.
pub fn write_pyarrow_user_events(path: &Path) {
    write_events(
        path,
        &[
            ("ev-1", "user_id", json!("3")),
            ("ev-2", "user_id", json!("250")),
            ("ev-3", "user_id", json!("1100")),
            ("ev-4", "email", json!("  USER5@example.com")),
            ("ev-5", "user_id", json!("100042")),
            ("ev-6", "user_id", json!("700")),
            ("ev-7", "user_id", json!("not-a-number")),
            ("ev-8", "user_id", json!(null)),
            ("ev-9", "user_id", json!("3")),
            ("ev-9", "user_id", json!("3")),
            (
                "ev-10",
                "uid",
                json!("00000000-0000-0000-0000-00000000004d"),
            ),
            ("ev-11", "device_id", json!("unused-type")),
        ],
    );
}

pub const USER_IDS: [i64; 5] = [3, 250, 1100, 100042, 700];

/// Whether row `i` holds user id `id` as its user, profile id or one of its friends.
fn user_row_has(b: &RecordBatch, i: usize, id: i64) -> bool {
    user_columns_match(b, i, &[id])
}

pub fn pyarrow_user_erased(b: &RecordBatch, i: usize) -> bool {
    if user_columns_match(b, i, &USER_IDS) {
        return true;
    }
    let email = b.column_by_name("email").unwrap().as_string::<i32>();
    if email.is_valid(i) && email.value(i).trim_matches(' ').to_lowercase() == "user5@example.com" {
        return true;
    }
    let uid = b.column_by_name("uid").unwrap().as_fixed_size_binary();
    uid.is_valid(i) && uid.value(i) == 77u128.to_be_bytes()
}

/// The emails of the rows of `path` that `erase` selects.
fn erased_emails(path: &Path, erase: impl Fn(&RecordBatch, usize) -> bool) -> Vec<Vec<u8>> {
    let b = read_all(path);
    let email = b.column_by_name("email").unwrap().as_string::<i32>();
    (0..b.num_rows())
        .filter(|&i| erase(&b, i) && email.is_valid(i))
        .map(|i| email.value(i).as_bytes().to_vec())
        .collect()
}

fn user_columns_match(b: &RecordBatch, i: usize, ids: &[i64]) -> bool {
    let user = b
        .column_by_name("user_id")
        .unwrap()
        .as_primitive::<Int64Type>();
    if user.is_valid(i) && ids.contains(&user.value(i)) {
        return true;
    }
    let profile = b.column_by_name("profile").unwrap().as_struct();
    let pid = profile
        .column_by_name("id")
        .unwrap()
        .as_primitive::<Int64Type>();
    if profile.is_valid(i) && pid.is_valid(i) && ids.contains(&pid.value(i)) {
        return true;
    }
    let friends = b.column_by_name("friend_ids").unwrap().as_list::<i32>();
    if friends.is_valid(i) {
        let v = friends.value(i);
        let v = v.as_primitive::<Int64Type>();
        if v.iter().flatten().any(|x| ids.contains(&x)) {
            return true;
        }
    }
    false
}

/// A workspace with a copy of the pyarrow fixture `fixture` (`users`, `pages`) at `wh/<fixture>`,
/// the pyarrow user events at `events/<events_file>`, and a job over them at `jobs/job.toml`.
/// Returns the workspace, the table folder, the manifests folder and the job.
pub fn pyarrow_workspace(
    fixture: &str,
    events_file: &str,
) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let ws = tempfile::tempdir().unwrap();
    let wh = ws.path().join("wh").join(fixture);
    copy_dir(&testdata().join("pyarrow").join(fixture), &wh);
    let manifests = ws.path().join("manifests");
    write_pyarrow_user_events(&ws.path().join("events").join(events_file));
    let job = ws.path().join("jobs/job.toml");
    write(
        &job,
        &pyarrow_users_job(
            &file_url(&manifests),
            &file_url(&ws.path().join("events")),
            &file_url(&wh),
        ),
    );
    (ws, wh, manifests, job)
}

#[test]
fn pyarrow_warehouse_purged_exactly_and_keeps_its_format() {
    let (_ws, wh, manifests, job) = pyarrow_workspace("users", "dt=2026-11-24/part-0.json");
    let (manifest, plan, _) = purge_job(&job, &manifests, "run-1");
    let files = ["part-0.parquet", "part-1.parquet", "part-2.parquet"];
    let removed = check_table(
        &testdata().join("pyarrow/users"),
        &wh,
        &files,
        pyarrow_user_erased,
    );
    // The erased rows' emails are unique: no page of the result may hold them, dictionary
    // pages included (part-0 is dictionary-encoded).
    for f in &files[..2] {
        let gone = erased_emails(
            &testdata().join("pyarrow/users").join(f),
            pyarrow_user_erased,
        );
        assert!(!gone.is_empty(), "{f}");
        assert!(assert_values_gone(&wh.join(f), &gone) > 10);
    }
    assert!(removed[0].1 > 0 && removed[1].1 > 0, "{removed:?}");
    assert_eq!(removed[2].1, 0, "part-2 holds no erased subject");
    check_counts(&manifest, &plan, "py.users", &removed);

    // Events: 12 rows, one without subject id; ev-9 duplicates are one event.
    assert_eq!(manifest["events"]["rows"], 12);
    assert_eq!(manifest["events"]["skipped"], 1);
    assert_eq!(manifest["events"]["count"], 10);
    // The same subject in two events counts for both.
    assert_eq!(manifest["per_event"]["ev-1"], manifest["per_event"]["ev-9"]);
    // ev-1's count is every row where 3 is the user, the profile id or a friend.
    let ev1_rows: u64 = files
        .iter()
        .map(|f| {
            let b = read_all(&testdata().join("pyarrow/users").join(f));
            (0..b.num_rows())
                .filter(|&i| user_row_has(&b, i, 3))
                .count() as u64
        })
        .sum();
    assert!(ev1_rows >= 1);
    assert_eq!(manifest["per_event"]["ev-1"], ev1_rows);
    assert_eq!(manifest["per_event"]["ev-10"], 1);
    assert!(manifest["per_event"].get("ev-7").is_none());
    assert!(
        manifest_table(&manifest, "py.users")["ids_unconvertible"]
            .as_u64()
            .unwrap()
            >= 1
    );

    // pyarrow reads every rewritten file, with the same schema as the original.
    let originals: Vec<PathBuf> = files[..2]
        .iter()
        .map(|f| testdata().join("pyarrow/users").join(f))
        .collect();
    let results: Vec<PathBuf> = files[..2].iter().map(|f| wh.join(f)).collect();
    let before = pyarrow_describe(&originals);
    let after = pyarrow_describe(&results);
    for i in 0..2 {
        assert_eq!(before[i].1, after[i].1, "pyarrow sees a different schema");
        assert_eq!(before[i].0 - removed[i].1, after[i].0, "pyarrow row count");
    }
}

fn duckdb_order_erased(b: &RecordBatch, i: usize) -> bool {
    let customers = [7i32, 123];
    let c = b
        .column_by_name("customer_id")
        .unwrap()
        .as_primitive::<Int32Type>();
    if c.is_valid(i) && customers.contains(&c.value(i)) {
        return true;
    }
    let addr = b.column_by_name("address").unwrap().as_struct();
    let owner = addr
        .column_by_name("owner_id")
        .unwrap()
        .as_primitive::<Int64Type>();
    if addr.is_valid(i) && owner.is_valid(i) && owner.value(i) == 299 {
        return true;
    }
    let items = b.column_by_name("items").unwrap().as_list::<i32>();
    if items.is_valid(i) {
        let v = items.value(i);
        let s = v.as_struct();
        let sku = s.column_by_name("sku").unwrap().as_string::<i32>();
        if (0..s.len()).any(|k| s.is_valid(k) && sku.is_valid(k) && sku.value(k) == "sku-16") {
            return true;
        }
    }
    false
}

/// A workspace with a copy of the DuckDB orders fixture at `wh/orders`, Parquet events in a hive
/// folder with renamed columns, and a job (table spec in `jobs/tables/`) over them. Returns the
/// workspace, the table folder, the manifests folder and the job.
pub fn duckdb_workspace() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let ws = tempfile::tempdir().unwrap();
    let wh = ws.path().join("wh/orders");
    copy_dir(&testdata().join("duckdb/orders"), &wh);
    let manifests = ws.path().join("manifests");
    // Events as Parquet in a hive folder, with renamed columns.
    let events_dir = ws.path().join("events/dt=2026-11-25");
    std::fs::create_dir_all(&events_dir).unwrap();
    let ev = RecordBatch::try_from_iter(vec![
        (
            "id",
            std::sync::Arc::new(arrow::array::StringArray::from(vec![
                "e1", "e2", "e3", "e4", "e5",
            ])) as arrow::array::ArrayRef,
        ),
        (
            "kind",
            std::sync::Arc::new(arrow::array::StringArray::from(vec![
                "customer", "customer", "customer", "sku", "customer",
            ])),
        ),
        (
            "value",
            std::sync::Arc::new(arrow::array::StringArray::from(vec![
                Some("7"),
                Some("123"),
                Some("299"),
                Some("sku-16"),
                Some(""),
            ])),
        ),
        (
            "ts",
            std::sync::Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![
                1, 2, 3, 4, 5,
            ])),
        ),
    ])
    .unwrap();
    let file = std::fs::File::create(events_dir.join("part-0.parquet")).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, ev.schema(), None).unwrap();
    w.write(&ev).unwrap();
    w.close().unwrap();
    write(&ws.path().join("events/_SUCCESS"), "");

    let job = ws.path().join("jobs/job.toml");
    write(
        &job,
        &format!(
            r#"[job]
name = "fixtures"
manifests = "{}"
tables = "tables"
[events]
location = "{}"
format = "parquet"
event_id = "id"
subject_type = "kind"
subject_id = "value"
requested_at = "ts"
"#,
            file_url(&manifests),
            file_url(&ws.path().join("events")),
        ),
    );
    write(
        &ws.path().join("jobs/tables/orders.toml"),
        &format!(
            r#"name = "duck.orders"
location = "{}"
action = "delete"
[[match]]
column = "customer_id"
subject_type = "customer"
[[match]]
column = "address.owner_id"
subject_type = "customer"
[[match]]
column = "items.sku"
subject_type = "sku"
"#,
            file_url(&wh)
        ),
    );
    (ws, wh, manifests, job)
}

#[test]
fn duckdb_warehouse_with_parquet_events_and_renamed_columns() {
    let (_ws, wh, manifests, job) = duckdb_workspace();
    let (manifest, plan, _) = purge_job(&job, &manifests, "2026-11-25");
    let files = ["orders-0.parquet", "orders-1.parquet"];
    let removed = check_table(
        &testdata().join("duckdb/orders"),
        &wh,
        &files,
        duckdb_order_erased,
    );
    assert!(removed.iter().all(|r| r.1 > 0), "{removed:?}");
    check_counts(&manifest, &plan, "duck.orders", &removed);
    assert_eq!(
        manifest["events"]["skipped"], 1,
        "the empty subject id is skipped"
    );
    assert_eq!(manifest["events"]["count"], 4);

    let results: Vec<PathBuf> = files.iter().map(|f| wh.join(f)).collect();
    let originals: Vec<PathBuf> = files
        .iter()
        .map(|f| testdata().join("duckdb/orders").join(f))
        .collect();
    let (before, after) = (pyarrow_describe(&originals), pyarrow_describe(&results));
    for i in 0..2 {
        assert_eq!(before[i].1, after[i].1);
        assert_eq!(before[i].0 - removed[i].1, after[i].0);
    }
}

/// Checks every flat column chunk's statistics against its values (null count, and min/max
/// equal to the actual min/max), and reads each file verifying page checksums.
const STATS_CHECK: &str = r#"
import sys, json, pyarrow as pa, pyarrow.parquet as pq, pyarrow.compute as pc
checked, bad = 0, []
for path in sys.argv[1:]:
    pq.ParquetFile(path, page_checksum_verification=True).read()
    f = pq.ParquetFile(path)
    m = f.metadata
    for g in range(m.num_row_groups):
        t = f.read_row_group(g)
        for c in range(m.num_columns):
            col = m.row_group(g).column(c)
            st, name = col.statistics, col.path_in_schema
            if st is None or '.list.' in name:
                continue
            parts = name.split('.')
            arr = t.column(parts[0]).combine_chunks()
            if len(parts) == 2:
                arr = arr.flatten()[[f.name for f in arr.type].index(parts[1])]
            if pa.types.is_dictionary(arr.type):
                arr = arr.dictionary_decode()
            checked += 1
            if st.has_null_count and st.null_count != arr.null_count:
                bad.append(f"{path} rg {g} {name}: null_count {st.null_count} != {arr.null_count}")
            if st.has_min_max:
                mm = pc.min_max(arr).as_py()
                if (st.min, st.max) != (mm['min'], mm['max']):
                    bad.append(f"{path} rg {g} {name}: min/max {st.min!r}/{st.max!r} != {mm}")
print(json.dumps({"checked": checked, "bad": bad}))
"#;

#[test]
fn large_files_read_by_ranges_give_the_same_bytes() {
    // The pages fixture (several row groups a file, mixed codecs, a page index) purged twice:
    // read whole, and as large files read by ranges one row group at a time (the threshold
    // lowered to one byte). The new files must be the same bytes, the manifests the same
    // hashes, and the original's hash the file's.
    let run = |threshold: &str| {
        let (ws, wh, manifests, job) = pyarrow_workspace("pages", "part-0.json");
        let env = [("LAKEPURGE_MULTIPART_THRESHOLD", threshold)];
        let (manifest, _, logs) = purge_job_env(&job, &manifests, "r", &env);
        let ranged: Vec<bool> = logs
            .iter()
            .filter(|l| l["message"] == "file purged")
            .map(|l| l["read_by_ranges"].as_bool().unwrap())
            .collect();
        (tree_hashes(&wh), manifest, ranged, ws)
    };
    let (whole, whole_manifest, whole_ranged, _a) = run("1000000000");
    let (ranged, ranged_manifest, by_ranges, _b) = run("1");
    assert_eq!(whole_ranged, vec![false; 3]);
    assert_eq!(by_ranges, vec![true; 3]);
    assert_eq!(whole, ranged);
    let hashes = |m: &serde_json::Value| -> Vec<(String, String, String)> {
        m["tables"][0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let h = |k: &str| f[k]["sha256"].as_str().unwrap().to_string();
                (
                    f["path"].as_str().unwrap().to_string(),
                    h("before"),
                    h("after"),
                )
            })
            .collect()
    };
    assert_eq!(hashes(&whole_manifest), hashes(&ranged_manifest));
    for (path, before, _) in hashes(&ranged_manifest) {
        assert_eq!(
            before,
            sha256_file(&testdata().join("pyarrow/pages").join(&path))
        );
    }
}

#[test]
fn page_surgery_keeps_untouched_pages_and_exact_statistics() {
    // Small pages (testdata/make_fixtures.py, pyarrow/pages): v1 with mixed codecs, v2 with
    // page checksums, and a file with a page index; PLAIN columns, a dictionary column,
    // structs and lists. Erased rows fall in some pages of most chunks.
    let (ws, wh, manifests, job) = pyarrow_workspace("pages", "part-0.json");
    // User 1 is the smallest user_id of part-0's first row group, 3999 the largest of
    // part-1's: their chunks' statistics must be recomputed, not kept.
    write_events(
        &ws.path().join("events/part-1.json"),
        &[
            ("ev-min", "user_id", json!("1")),
            ("ev-max", "user_id", json!("3999")),
        ],
    );
    let (manifest, plan, logs) = purge_job(&job, &manifests, "run-1");
    let files = ["part-0.parquet", "part-1.parquet", "part-2.parquet"];
    let erase =
        |b: &RecordBatch, i| pyarrow_user_erased(b, i) || user_columns_match(b, i, &[1, 3999]);
    let removed = check_table(&testdata().join("pyarrow/pages"), &wh, &files, erase);
    for f in files {
        let gone = erased_emails(&testdata().join("pyarrow/pages").join(f), erase);
        assert!(gone.len() >= 5, "{f}: {gone:?}");
        assert!(assert_values_gone(&wh.join(f), &gone) > 30);
    }
    assert!(removed.iter().all(|r| r.1 > 0), "{removed:?}");
    check_counts(&manifest, &plan, "py.users", &removed);

    let purged = |file: &str| -> &serde_json::Value {
        logs.iter()
            .find(|l| l["message"] == "file purged" && l["file"] == file)
            .unwrap_or_else(|| panic!("no log line for {file}"))
    };
    for file in files {
        let f = purged(file);
        let (spliced, copied, cut) = (
            f["chunks_spliced"].as_u64().unwrap(),
            f["pages_copied"].as_u64().unwrap(),
            f["pages_rewritten"].as_u64().unwrap(),
        );
        assert!(spliced >= 6, "{file}: {f}");
        assert!(copied > cut, "{file}: most pages are copied: {f}");
        assert!(cut > 0, "{file}: {f}");
    }

    let paths: Vec<PathBuf> = files.iter().map(|f| wh.join(f)).collect();
    let out = run_python("statistics check", STATS_CHECK, &paths);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(report["checked"].as_u64().unwrap() >= 3 * 3 * 7, "{report}");
    assert_eq!(report["bad"], json!([]), "statistics must match the values");

    // part-2's page index: every page's location, null count and bounds match its rows.
    let checked = check_page_index(&wh.join("part-2.parquet"));
    assert!(checked > 50, "{checked} pages checked");
}

/// Checks the page index of `path` against the data, for the flat columns user_id and email:
/// page row ranges from the offset index, then per page the column index's null count and
/// min/max against the values in those rows. Returns the number of pages checked.
fn check_page_index(path: &Path) -> usize {
    use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
    use parquet::file::page_index::column_index::ColumnIndexMetaData;
    let options = ArrowReaderOptions::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
    let file = std::fs::File::open(path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).unwrap();
    let meta = builder.metadata().clone();
    let (ci, oi) = (meta.column_index().unwrap(), meta.offset_index().unwrap());
    let batch = read_all(path);
    let schema = meta.file_metadata().schema_descr();
    let mut checked = 0;
    let mut rg_start = 0usize;
    for (i, rg) in meta.row_groups().iter().enumerate() {
        let rg_rows = rg.num_rows() as usize;
        for name in ["user_id", "email"] {
            let j = (0..schema.num_columns())
                .find(|j| schema.column(*j).path().string() == name)
                .unwrap();
            let locations = &oi[i][j].page_locations;
            assert!(locations.len() > 1, "{name}: one page only");
            assert_eq!(locations[0].first_row_index, 0);
            for (k, loc) in locations.iter().enumerate() {
                let start = loc.first_row_index as usize;
                let end = locations
                    .get(k + 1)
                    .map_or(rg_rows, |l| l.first_row_index as usize);
                assert!(start < end, "{name}: empty page {k}");
                let values = batch
                    .column_by_name(name)
                    .unwrap()
                    .slice(rg_start + start, end - start);
                let index = &ci[i][j];
                assert_eq!(
                    index.null_count(k),
                    Some(values.null_count() as i64),
                    "{name} page {k}"
                );
                if index.is_null_page(k) {
                    assert_eq!(values.null_count(), values.len());
                    continue;
                }
                match index {
                    ColumnIndexMetaData::INT64(x) => {
                        let v = values.as_primitive::<Int64Type>();
                        assert_eq!(
                            x.min_value(k).copied(),
                            arrow::compute::min(v),
                            "{name} page {k}"
                        );
                        assert_eq!(
                            x.max_value(k).copied(),
                            arrow::compute::max(v),
                            "{name} page {k}"
                        );
                    }
                    ColumnIndexMetaData::BYTE_ARRAY(x) => {
                        let v = values.as_string::<i32>();
                        let (min, max) =
                            (arrow::compute::min_string(v), arrow::compute::max_string(v));
                        assert_eq!(x.min_value(k), min.map(str::as_bytes), "{name} page {k}");
                        assert_eq!(x.max_value(k), max.map(str::as_bytes), "{name} page {k}");
                    }
                    other => panic!("{name}: unexpected column index {other:?}"),
                }
                checked += 1;
            }
        }
        rg_start += rg_rows;
    }
    checked
}

#[test]
fn the_page_index_is_read_only_for_row_groups_statistics_leave() {
    // A pyarrow file with 64-row pages: its page index (~240 KB) lies outside the 64 KiB read
    // with the footer. A subject outside the file's id range prunes it by statistics, so the
    // page index is never read; one inside reads it, and skips most pages.
    let ws = tempfile::tempdir().unwrap();
    let wh = ws.path().join("wh");
    std::fs::create_dir_all(&wh).unwrap();
    let script = "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
        n = 200000\n\
        t = pa.table({'user_id': pa.array(range(1000, 1000 + n), pa.int64()),\n\
                      'payload': [f'p{i:08d}' for i in range(n)]})\n\
        pq.write_table(t, sys.argv[1], row_group_size=50000, data_page_size=256, write_batch_size=64,\n\
                       write_page_index=True, compression='none', use_dictionary=False)\n";
    run_python(
        "writing a file with a large page index",
        script,
        &[wh.join("part-0.parquet")],
    );
    let plan_for = |id: &str| -> serde_json::Value {
        write_events(
            &ws.path().join("events/e.json"),
            &[("ev-1", "user_id", json!(id))],
        );
        let job = ws.path().join("job.toml");
        write(
            &job,
            &user_id_job(
                "fixtures",
                &file_url(&ws.path().join("manifests")),
                &file_url(&ws.path().join("events")),
                &file_url(&wh),
            ),
        );
        let run = lakepurge(&["plan", "--job", job.to_str().unwrap(), "--json"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let plan: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        plan_table(&plan, "fixtures").clone()
    };
    let outside = plan_for("5");
    assert_eq!(outside["files_pruned"], 1, "{outside}");
    assert!(
        outside["bytes_read"].as_u64().unwrap() <= 64 * 1024,
        "the page index of a pruned file was read: {outside}"
    );
    let inside = plan_for("101000");
    assert_eq!(inside["rows_matched"], 1, "{inside}");
    assert!(inside["bytes_read"].as_u64().unwrap() > 200_000, "{inside}");
    assert!(
        inside["rows_skipped_by_page_index"].as_u64().unwrap() > 49_000,
        "{inside}"
    );
}

#[test]
fn page_index_rules_out_pages_when_planning_and_the_result_is_exact() {
    // part-2 of the pages fixture has a page index; a single user_id rule lets it skip every
    // page whose user_id range holds no erased id.
    let ws = tempfile::tempdir().unwrap();
    let wh = ws.path().join("wh");
    std::fs::create_dir_all(&wh).unwrap();
    std::fs::copy(
        testdata().join("pyarrow/pages/part-2.parquet"),
        wh.join("part-2.parquet"),
    )
    .unwrap();
    // Ten ids spread over the file's three row groups (user ids 6000..8999, 64-row pages).
    const IDS: [i64; 10] = [6013, 6321, 6650, 7001, 7254, 7777, 8012, 8400, 8765, 8999];
    let events: Vec<(String, serde_json::Value)> = IDS
        .iter()
        .map(|id| (format!("ev-{id}"), json!(id.to_string())))
        .collect();
    let events: Vec<(&str, &str, serde_json::Value)> = events
        .iter()
        .map(|(e, v)| (e.as_str(), "user_id", v.clone()))
        .collect();
    write_events(&ws.path().join("events/e.json"), &events);
    let manifests = ws.path().join("manifests");
    let job = ws.path().join("job.toml");
    write(
        &job,
        &user_id_job(
            "fixtures",
            &file_url(&manifests),
            &file_url(&ws.path().join("events")),
            &file_url(&wh),
        ),
    );
    let (manifest, plan, _) = purge_job(&job, &manifests, "run-1");
    let table = plan_table(&plan, "fixtures");
    // 3 row groups of 1000 rows in pages of 64: the pages without an erased id are skipped.
    let skipped = table["rows_skipped_by_page_index"].as_u64().unwrap();
    assert!(skipped > 1500, "{table}");
    let removed = check_table(
        &testdata().join("pyarrow/pages"),
        &wh,
        &["part-2.parquet"],
        |b, i| {
            let id = b
                .column_by_name("user_id")
                .unwrap()
                .as_primitive::<Int64Type>();
            id.is_valid(i) && IDS.contains(&id.value(i))
        },
    );
    assert_eq!(removed[0].1, 10);
    check_counts(&manifest, &plan, "fixtures", &removed);
}
