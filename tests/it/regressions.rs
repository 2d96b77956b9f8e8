//! Regressions found by running lakepurge as a new user would, against files and tables
//! written by other tools: each test is named after the defect it pins.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use serde_json::json;

use crate::common::*;

/// A table file of `users` (user ids), one row each, with a second column.
fn users_file(path: &Path, users: &[i64]) {
    let batch = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            Arc::new(Int64Array::from(users.to_vec())) as ArrayRef,
        ),
        (
            "note",
            Arc::new(StringArray::from_iter_values(
                users.iter().map(|u| format!("note of {u}")),
            )),
        ),
    ])
    .unwrap();
    write_parquet(path, &batch);
}

/// The user ids in a Parquet file (read with arrow-rs).
fn user_ids(path: &Path) -> Vec<i64> {
    let b = read_all(path);
    b.column_by_name("user_id")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>()
        .values()
        .to_vec()
}

/// The values of a string column (any string or dictionary type), as strings.
fn strings(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let col = arrow::compute::cast(batch.column_by_name(column).unwrap(), &DataType::Utf8).unwrap();
    let s = col.as_string::<i32>();
    (0..s.len())
        .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
        .collect()
}

/// Writes the same table (2000 rows; `uid` a string of 50 distinct values in small pages, a
/// pandas categorical `cat` and an ordered one `level`, `n` an integer) with every writer at
/// hand: pyarrow, pandas, polars, DuckDB and fastparquet.
const WRITE_DICTIONARY_TABLE: &str = r#"
import sys, os
import pyarrow as pa, pyarrow.parquet as pq, pandas as pd, polars as pl, duckdb, fastparquet
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
n = 2000
uid = [f"u{(i * 37) % 50:02d}" for i in range(n)]
levels = ["low", "mid", "high"]
df = pd.DataFrame({
    "uid": uid,
    "cat": pd.Categorical(uid),
    "level": pd.Categorical([levels[(i * 7) % 3] if uid[i] != "u07" else "high" for i in range(n)],
                            categories=levels, ordered=True),
    "n": list(range(n)),
})
# pyarrow: dictionary-encoded strings in many small pages, two row groups.
pq.write_table(pa.table({"uid": uid, "n": list(range(n))}), f"{out}/pyarrow.parquet",
               data_page_size=256, row_group_size=1000)
# pyarrow with the column read and written as an Arrow dictionary (ARROW:schema says so).
pq.write_table(pa.table({"uid": pa.array(uid).dictionary_encode(), "n": list(range(n))}),
               f"{out}/pyarrow-dict.parquet", data_page_size=256)
# pandas: categoricals (ordered too), through pyarrow, with its pandas metadata.
df.to_parquet(f"{out}/pandas.parquet", data_page_size=256, row_group_size=700)
pl.DataFrame({"uid": uid, "n": list(range(n))}).write_parquet(f"{out}/polars.parquet",
                                                              row_group_size=800)
con = duckdb.connect()
con.register("src", pa.table({"uid": uid, "n": list(range(n))}))
con.execute(f"COPY (SELECT * FROM src) TO '{out}/duckdb.parquet' (FORMAT parquet)")
fastparquet.write(f"{out}/fastparquet.parquet", pd.DataFrame({"uid": uid, "n": list(range(n))}),
                  row_group_offsets=900, object_encoding="utf8")
"#;

#[test]
fn duplicate_dictionary_entries_no_reader_gets_wrong_values() {
    let ws = tempfile::tempdir().unwrap();
    let wh = ws.path().join("warehouse/t");
    run_python(
        "writing the dictionary table",
        WRITE_DICTIONARY_TABLE,
        &[&wh],
    );
    let original = ws.path().join("original");
    copy_dir(&wh, &original);
    let files = [
        "pyarrow.parquet",
        "pyarrow-dict.parquet",
        "pandas.parquet",
        "polars.parquet",
        "duckdb.parquet",
        "fastparquet.parquet",
    ];
    let manifests = ws.path().join("manifests");
    let events = ws.path().join("events");
    write_events(&events.join("e.json"), &[("ev-7", "user", json!("u07"))]);
    let job = ws.path().join("job.toml");
    write(
        &job,
        &format!(
            r#"[job]
name = "dict"
manifests = "{}"
[events]
location = "{}"
format = "ndjson"
[[table]]
name = "t"
location = "{}"
[[table.match]]
column = "uid"
subject_type = "user"
"#,
            file_url(&manifests),
            file_url(&events),
            file_url(&wh)
        ),
    );
    let run = lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "r1"]);
    assert_eq!(run.code, 0);
    let mut cases = Vec::new();
    for f in files {
        let before = read_all(&original.join(f));
        let uids = strings(&before, "uid");
        let kept: Vec<usize> = (0..uids.len())
            .filter(|i| uids[*i].as_deref() != Some("u07"))
            .collect();
        assert_eq!(kept.len(), 1960, "{f}");
        let after = read_all(&wh.join(f));
        assert_eq!(after.num_rows(), 1960, "{f}");
        assert!(
            strings(&after, "uid")
                .iter()
                .all(|u| u.as_deref() != Some("u07")),
            "{f}"
        );
        // The erased value is in no page of the file, dictionary pages included.
        assert!(assert_values_gone(&wh.join(f), &[b"u07".to_vec()]) > 0);
        cases.push(ReadBack {
            original: original.join(f),
            purged: wh.join(f),
            kept,
        });
    }
    // Each reader, pyarrow with read_dictionary and pandas categoricals included, reads the
    // kept rows with their values; no dictionary page holds a value twice.
    let compared = assert_read_back(&cases);
    assert!(compared >= files.len() * 4, "{compared} reads compared");
    // The ordered categorical keeps its order of categories (entries are dropped, not moved).
    let script = "import sys, pandas as pd\n\
        d = pd.read_parquet(sys.argv[1])\n\
        print(list(d['level'].cat.categories), d['level'].cat.ordered, list(d['cat'].cat.categories)[:8])\n";
    let out = run_python("pandas categoricals", script, &[wh.join("pandas.parquet")]);
    assert_eq!(
        out.trim(),
        "['low', 'mid', 'high'] True ['u00', 'u01', 'u02', 'u03', 'u04', 'u05', 'u06', 'u08']"
    );
}

/// A job of two tables, `a` and `b`, each one file of users, with NDJSON events.
fn two_table_job(ws: &Path) -> PathBuf {
    let job = ws.join("job.toml");
    let mut text = format!(
        r#"[job]
name = "two"
manifests = "{}"
[events]
location = "{}"
format = "ndjson"
"#,
        file_url(&ws.join("manifests")),
        file_url(&ws.join("events")),
    );
    for t in ["a", "b"] {
        text.push_str(&format!(
            "[[table]]\nname = \"{t}\"\nlocation = \"{}\"\n[[table.match]]\ncolumn = \"user_id\"\nsubject_type = \"user_id\"\n",
            file_url(&ws.join("warehouse").join(t))
        ));
    }
    write(&job, &text);
    job
}

#[test]
fn emptied_table_does_not_stop_later_runs() {
    let ws = tempfile::tempdir().unwrap();
    users_file(&ws.path().join("warehouse/a/part-0.parquet"), &[1, 2]);
    users_file(&ws.path().join("warehouse/b/part-0.parquet"), &[3, 4, 5]);
    let job = two_table_job(ws.path());
    let job = job.to_str().unwrap();
    // Run 1 erases every row of table a: its only file is deleted.
    write_events(
        &ws.path().join("events/1.json"),
        &[
            ("ev-1", "user_id", json!("1")),
            ("ev-2", "user_id", json!("2")),
        ],
    );
    assert_eq!(
        lakepurge(&["purge", "--job", job, "--run-id", "r1"]).code,
        0
    );
    assert!(!ws.path().join("warehouse/a/part-0.parquet").exists());

    // Run 2, with an event for table b: a is a table with zero files, with a warning.
    write_events(
        &ws.path().join("events/2.json"),
        &[("ev-3", "user_id", json!("4"))],
    );
    for args in [vec!["validate"], vec!["plan"], vec!["plan", "--json"]] {
        let mut args = args.clone();
        args.extend(["--job", job]);
        let run = lakepurge(&args);
        assert_eq!(run.code, 0, "{args:?}");
        assert!(run.stderr.contains("no data files"), "{args:?}");
    }
    let run = lakepurge(&["purge", "--job", job, "--run-id", "r2"]);
    assert_eq!(run.code, 0);
    assert!(run.stderr.contains("no data files"));
    assert_eq!(
        user_ids(&ws.path().join("warehouse/b/part-0.parquet")),
        vec![3, 5]
    );
    let m = read_json(&ws.path().join("manifests/two/r2.json"));
    let a = &m["tables"][0];
    assert_eq!(
        (a["name"].as_str(), a["files_listed"].as_u64()),
        (Some("a"), Some(0))
    );
    assert_eq!(m["tables"][1]["rows_removed"], 1);
    let manifest = ws.path().join("manifests/two/r2.json");
    let verify = lakepurge(&["verify", manifest.to_str().unwrap(), "--deep", "--job", job]);
    assert_eq!(verify.code, 0);
    assert!(verify.stdout.trim_end().ends_with("PASS"));
}

/// Events with every column renamed (`id`, `kind`, `value`, `ts`).
fn renamed_events(ws: &Path, format: &str) -> PathBuf {
    let job = ws.join(format!("job-{format}.toml"));
    write(
        &job,
        &format!(
            r#"[job]
name = "renamed-{format}"
manifests = "{}"
[events]
location = "{}"
format = "{format}"
event_id = "id"
subject_type = "kind"
subject_id = "value"
requested_at = "ts"
[[table]]
name = "users"
location = "{}"
[[table.match]]
column = "user_id"
subject_type = "user_id"
"#,
            file_url(&ws.join("manifests")),
            file_url(&ws.join(format!("events-{format}"))),
            file_url(&ws.join(format!("warehouse-{format}"))),
        ),
    );
    users_file(
        &ws.join(format!("warehouse-{format}/part-0.parquet")),
        &[1, 2, 3, 4],
    );
    job
}

#[test]
fn ndjson_and_parquet_events_with_renamed_columns() {
    let ws = tempfile::tempdir().unwrap();
    // NDJSON, plain and gzip files together (read apart, then united).
    let job = renamed_events(ws.path(), "ndjson");
    let rows = [
        json!({"id": "ev-1", "kind": "user_id", "value": "2", "ts": "2026-11-20T00:00:00Z"}),
        json!({"id": "ev-2", "kind": "user_id", "value": "4", "ts": "2026-11-21T00:00:00Z"}),
    ];
    write(
        &ws.path().join("events-ndjson/a.json"),
        &format!("{}\n", rows[0]),
    );
    let gz = ws.path().join("events-ndjson/b.json.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, format!("{}\n", rows[1]).as_bytes()).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let run = lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "r1"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        user_ids(&ws.path().join("warehouse-ndjson/part-0.parquet")),
        vec![1, 3]
    );
    let m = read_json(&ws.path().join("manifests/renamed-ndjson/r1.json"));
    assert_eq!(m["events"]["count"], 2);
    assert_eq!(
        m["events"]["max_requested_at"].as_str().unwrap()[..10],
        *"2026-11-21"
    );

    // Parquet events with the same names.
    let job = renamed_events(ws.path(), "parquet");
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(StringArray::from(vec!["ev-9"])) as ArrayRef),
        ("kind", Arc::new(StringArray::from(vec!["user_id"]))),
        ("value", Arc::new(StringArray::from(vec!["3"]))),
        (
            "ts",
            Arc::new(StringArray::from(vec!["2026-11-22T00:00:00Z"])),
        ),
    ])
    .unwrap();
    write_parquet(&ws.path().join("events-parquet/e.parquet"), &batch);
    let run = lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "r1"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        user_ids(&ws.path().join("warehouse-parquet/part-0.parquet")),
        vec![1, 2, 4]
    );
}

#[test]
fn events_location_without_event_files_warns() {
    let ws = tempfile::tempdir().unwrap();
    let job = renamed_events(ws.path(), "ndjson");
    // A Parquet file where NDJSON is expected: no event file, nothing to erase, and a warning.
    std::fs::create_dir_all(ws.path().join("events-ndjson")).unwrap();
    std::fs::write(ws.path().join("events-ndjson/e.parquet"), b"PAR1").unwrap();
    let run = lakepurge(&["plan", "--job", job.to_str().unwrap()]);
    assert_eq!(run.code, 0);
    assert!(
        run.stderr.contains("WARN") && run.stderr.contains("no event files"),
        "{}",
        run.stderr
    );
}

#[test]
fn malformed_ndjson_line_names_its_file() {
    let ws = tempfile::tempdir().unwrap();
    let job = renamed_events(ws.path(), "ndjson");
    let good = json!({"id": "ev-1", "kind": "user_id", "value": "2", "ts": "2026-11-20T00:00:00Z"});
    write(
        &ws.path().join("events-ndjson/a.json"),
        &format!("{good}\n"),
    );
    write(
        &ws.path().join("events-ndjson/b.json"),
        &format!("{good}\n{{\"id\": \"ev-2\", \"kind\": \n"),
    );
    let before = tree_hashes(&ws.path().join("warehouse-ndjson"));
    let run = lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "r1"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("events-ndjson/b.json"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("events-ndjson/a.json"),
        "{}",
        run.stderr
    );
    assert_eq!(tree_hashes(&ws.path().join("warehouse-ndjson")), before);
    assert!(!ws.path().join("manifests").exists());
}

#[test]
fn top_level_column_with_a_dot_in_its_name() {
    let ws = tempfile::tempdir().unwrap();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "user.id",
            Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef,
        ),
        ("n", Arc::new(Int64Array::from(vec![10, 20, 30]))),
    ])
    .unwrap();
    write_parquet(&ws.path().join("warehouse/part-0.parquet"), &batch);
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", json!("2"))],
    );
    let job = ws.path().join("job.toml");
    let text = user_id_job(
        "dotted",
        &file_url(&ws.path().join("manifests")),
        &file_url(&ws.path().join("events")),
        &file_url(&ws.path().join("warehouse")),
    );
    // As a dotted path the name means a struct field, which does not exist.
    write(
        &job,
        &text.replace("\"user_id\"\nsubject_type", "\"user.id\"\nsubject_type"),
    );
    let run = lakepurge(&["validate", "--job", job.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    // As an array of path segments it is the top-level column.
    write(
        &job,
        &text.replace("\"user_id\"\nsubject_type", "[\"user.id\"]\nsubject_type"),
    );
    assert_eq!(
        lakepurge(&["validate", "--job", job.to_str().unwrap()]).code,
        0
    );
    let run = lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "r1"]);
    assert_eq!(run.code, 0);
    let after = read_all(&ws.path().join("warehouse/part-0.parquet"));
    let ids = after
        .column(0)
        .as_primitive::<arrow::datatypes::Int64Type>()
        .values()
        .to_vec();
    assert_eq!(ids, vec![1, 3]);
    let manifest = ws.path().join("manifests/dotted/r1.json");
    let job = job.to_str().unwrap();
    let verify = lakepurge(&["verify", manifest.to_str().unwrap(), "--deep", "--job", job]);
    assert_eq!(verify.code, 0);
}

/// Writes with pyarrow, at `argv[1]`, users 1-4 with a `note` column encrypted (Parquet
/// modular encryption, a toy KMS); `argv[2]` is `plaintext` or `encrypted` for the footer.
const WRITE_ENCRYPTED: &str = r#"
import sys, base64
import pyarrow as pa, pyarrow.parquet as pq, pyarrow.parquet.encryption as pe
class Kms(pe.KmsClient):
    def __init__(self, config):
        pe.KmsClient.__init__(self)
    def wrap_key(self, key_bytes, master_key_identifier):
        return base64.b64encode(key_bytes)
    def unwrap_key(self, wrapped_key, master_key_identifier):
        return base64.b64decode(wrapped_key)
factory = pe.CryptoFactory(lambda config: Kms(config))
config = pe.EncryptionConfiguration(footer_key="footer", column_keys={"col": ["note"]},
                                    plaintext_footer=sys.argv[2] == "plaintext",
                                    double_wrapping=False)
props = factory.file_encryption_properties(pe.KmsConnectionConfig(), config)
table = pa.table({"user_id": pa.array([1, 2, 3, 4], pa.int64()),
                  "note": ["a", "b", "c", "d"]})
pq.write_table(table, sys.argv[1], encryption_properties=props)
"#;

#[test]
fn encrypted_columns_are_refused_from_the_footer_before_anything_is_written() {
    for footer in ["plaintext", "encrypted"] {
        let ws = tempfile::tempdir().unwrap();
        users_file(&ws.path().join("warehouse/a/part-0.parquet"), &[1, 2, 3]);
        users_file(&ws.path().join("warehouse/b/part-0.parquet"), &[1, 2, 3]);
        let secret = ws.path().join("warehouse/b/part-1.parquet");
        run_python(
            "writing an encrypted file",
            WRITE_ENCRYPTED,
            &[secret.to_str().unwrap(), footer],
        );
        write_events(
            &ws.path().join("events/e.json"),
            &[("ev-1", "user_id", json!("2"))],
        );
        let job = two_table_job(ws.path());
        let before = tree_hashes(&ws.path().join("warehouse"));
        for command in ["validate", "plan", "purge"] {
            let mut args = vec![command, "--job", job.to_str().unwrap()];
            if command == "purge" {
                args.extend(["--run-id", "r1"]);
            }
            let run = lakepurge(&args);
            assert_eq!(run.code, 2, "{footer} footer, {command}");
            assert!(
                run.stderr.contains("part-1.parquet") && run.stderr.contains("encrypted"),
                "{footer} footer, {command}: {}",
                run.stderr
            );
            if footer == "plaintext" {
                assert!(run.stderr.contains("columns: note"), "{}", run.stderr);
            }
        }
        assert_eq!(tree_hashes(&ws.path().join("warehouse")), before);
        assert!(!ws.path().join("manifests").exists());
    }
}

#[test]
fn corrupt_page_found_mid_rewrite_leaves_its_file_and_exits_2() {
    let ws = tempfile::tempdir().unwrap();
    // pyarrow files with zstd pages: one page per column chunk.
    let script = "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
        for p in sys.argv[1:]:\n\
        \x20   pq.write_table(pa.table({'user_id': pa.array(range(100), pa.int64()),\n\
        \x20       'note': [f'note {i}' for i in range(100)]}), p, compression='zstd',\n\
        \x20       use_dictionary=False)\n";
    let wh = ws.path().join("warehouse");
    std::fs::create_dir_all(wh.join("a")).unwrap();
    std::fs::create_dir_all(wh.join("b")).unwrap();
    let (bad, good, other) = (
        wh.join("a/part-0.parquet"),
        wh.join("a/part-1.parquet"),
        wh.join("b/part-0.parquet"),
    );
    run_python("writing zstd files", script, &[&bad, &good, &other]);
    // Break the `note` page of one file: its zstd frame's magic number. The footer and the
    // key column stay readable, so only the rewrite finds it.
    let (start, len) = metadata(&bad).row_group(0).column(1).byte_range();
    let mut bytes = std::fs::read(&bad).unwrap();
    let chunk = &mut bytes[start as usize..(start + len) as usize];
    let at = chunk
        .windows(4)
        .position(|w| w == [0x28, 0xB5, 0x2F, 0xFD])
        .unwrap();
    chunk[at..at + 4].copy_from_slice(&[0, 0, 0, 0]);
    std::fs::write(&bad, &bytes).unwrap();
    let bad_hash = sha256_file(&bad);

    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", json!("7"))],
    );
    let job = two_table_job(ws.path());
    let job = job.to_str().unwrap();
    let run = lakepurge(&["purge", "--job", job, "--run-id", "r1"]);
    assert_eq!(run.code, 2, "bad input, not a failure a rerun resolves");
    assert!(
        run.stderr.contains("a/part-0.parquet")
            && run.stderr.contains("note")
            && run.stderr.contains("corrupt"),
        "{}",
        run.stderr
    );
    // The corrupt file is untouched; the other files of its table and the other table are done.
    assert_eq!(sha256_file(&bad), bad_hash);
    assert_eq!(read_all(&good).num_rows(), 99);
    assert_eq!(read_all(&other).num_rows(), 99);
    assert!(!ws.path().join("manifests/two/r1.json").exists());
    // A rerun meets it again: exit 2, nothing else changes.
    let after = tree_hashes(&wh);
    let run = lakepurge(&["purge", "--job", job, "--run-id", "r1"]);
    assert_eq!(run.code, 2);
    assert_eq!(tree_hashes(&wh), after);
    assert!(!ws.path().join("manifests/two/r1.json").exists());
}

#[test]
fn concurrent_purges_of_one_local_table_lose_no_erasure() {
    // Two jobs with different events purge the same file:// table at the same moment, many
    // times over: every erased row of both must be gone, and every other row kept.
    let users: Vec<i64> = (0..300).collect();
    for round in 0..12 {
        let ws = tempfile::tempdir().unwrap();
        let table = ws.path().join("warehouse");
        for f in 0..8 {
            users_file(&table.join(format!("part-{f}.parquet")), &users);
        }
        let mut jobs = Vec::new();
        for (name, parity) in [("odd", 1), ("even", 0)] {
            let events: Vec<(String, &str, serde_json::Value)> = (1..100)
                .filter(|u| u % 2 == parity)
                .map(|u| (format!("ev-{name}-{u}"), "user_id", json!(u.to_string())))
                .collect();
            let events: Vec<(&str, &str, serde_json::Value)> = events
                .iter()
                .map(|(e, t, s)| (e.as_str(), *t, s.clone()))
                .collect();
            write_events(&ws.path().join(format!("events-{name}/e.json")), &events);
            let job = ws.path().join(format!("{name}.toml"));
            write(
                &job,
                &user_id_job(
                    name,
                    &file_url(&ws.path().join("manifests")),
                    &file_url(&ws.path().join(format!("events-{name}"))),
                    &file_url(&table),
                ),
            );
            jobs.push(job);
        }
        let children: Vec<_> = jobs
            .iter()
            .map(|job| {
                std::process::Command::new(env!("CARGO_BIN_EXE_lakepurge"))
                    .args([
                        "--quiet",
                        "purge",
                        "--job",
                        job.to_str().unwrap(),
                        "--run-id",
                        "r1",
                    ])
                    // Every file goes up in parts: the version check, the flush to disk and
                    // the rename are apart, the widest window two writers can meet in.
                    .env("LAKEPURGE_MULTIPART_THRESHOLD", "1")
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let expected: Vec<i64> = users
            .iter()
            .copied()
            .filter(|u| *u == 0 || *u >= 100)
            .collect();
        for f in 0..8 {
            let got = user_ids(&table.join(format!("part-{f}.parquet")));
            assert_eq!(
                got, expected,
                "round {round}, part-{f}: an erasure was lost"
            );
        }
    }
}
