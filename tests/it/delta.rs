//! `format = "delta"`: Delta Lake tables written by the `deltalake` Python package (partitioned,
//! several commits, a checkpoint, nested and list columns) are purged through their log. After
//! a purge the package's reader sees exactly the oracle's rows at the latest version, its
//! history shows one commit for the run with no subject id in it, the files the commit removed
//! are gone (so no reachable version serves an erased row), a second run commits nothing, and
//! a crash around the commit or another writer's commit before it still gives one commit.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::common::*;

/// Writes a Delta table at `argv[1]`: five commits over three partitions (one file holds only
/// user 900099), a checkpoint after the fourth. `user_id` is 900000 + seq % 7 otherwise.
pub(crate) const WRITE_DELTA: &str = r#"
import sys
import pyarrow as pa
from deltalake import write_deltalake, DeltaTable
out = sys.argv[1]
profile = pa.struct([("city", pa.string()), ("score", pa.int32())])
def batch(start, n, dt, user=None):
    seqs = list(range(start, start + n))
    users = [user if user else 900000 + s % 7 for s in seqs]
    return pa.table({
        "user_id": pa.array(users, pa.int64()),
        "seq": pa.array(seqs, pa.int64()),
        "email": pa.array([f"u{u}@example.com" for u in users]),
        "profile": pa.array([{"city": f"c{s % 3}", "score": s} for s in seqs], profile),
        "tags": pa.array([[f"t{s % 2}", f"u{u}"] for s, u in zip(seqs, users)], pa.list_(pa.string())),
        "at": pa.array([1_700_000_000_000_000 + s * 1_001 for s in seqs], pa.timestamp("us", tz="UTC")),
        "dt": pa.array([dt] * n),
    })
write_deltalake(out, batch(0, 40, "2026-11-01"), partition_by=["dt"])
write_deltalake(out, batch(40, 40, "2026-11-02"), partition_by=["dt"], mode="append")
write_deltalake(out, batch(80, 5, "2026-11-02", user=900099), partition_by=["dt"], mode="append")
write_deltalake(out, batch(85, 30, "2026-11-03"), partition_by=["dt"], mode="append")
DeltaTable(out).create_checkpoint()
write_deltalake(out, batch(115, 10, "2026-11-01"), partition_by=["dt"], mode="append")
"#;

/// Reads the table at `argv[1]` with the `deltalake` package (every version), polars, and each
/// file of the latest snapshot with pyarrow (plain and with dictionary reads); prints JSON.
const READ_DELTA: &str = r#"
import sys, json
import pyarrow.parquet as pq
import polars as pl
from deltalake import DeltaTable
p = sys.argv[1]
dt = DeltaTable(p)
t = dt.to_pyarrow_table()
versions = {}
for v in range(dt.version() + 1):
    try:
        old = DeltaTable(p, version=v).to_pyarrow_table()
        versions[v] = sorted(set(old.column("user_id").to_pylist()))
    except Exception as e:
        versions[v] = "unreadable: " + type(e).__name__
files = dt.file_uris()
file_rows = 0
for f in files:
    file_rows += pq.read_table(f).num_rows
    assert pq.read_table(f, read_dictionary=["email"]).num_rows == pq.read_table(f).num_rows
print(json.dumps({
    "version": dt.version(),
    "seqs": sorted(t.column("seq").to_pylist()),
    "users": sorted(set(t.column("user_id").to_pylist())),
    "profiles": sorted(r["score"] for r in t.column("profile").to_pylist()),
    "polars_rows": pl.read_delta(p).height,
    "file_rows": file_rows,
    "files": len(files),
    "history": dt.history(),
    "versions": versions,
}, default=str))
"#;

/// The subjects every test erases: one in every mixed file (the largest id there, so that it
/// was each file's max), and the only subject of one file (which is emptied).
pub(crate) const ERASED: [i64; 2] = [900006, 900099];

pub(crate) fn read_delta(table: &Path) -> Value {
    serde_json::from_str(&run_python("reading the Delta table", READ_DELTA, &[table])).unwrap()
}

/// The seqs the oracle keeps of the table `WRITE_DELTA` writes.
pub(crate) fn oracle() -> Vec<i64> {
    (0..125)
        .filter(|s| !(80..85).contains(s) && s % 7 != 6)
        .collect()
}

/// A workspace with the Delta table at `wh/users`, events erasing [`ERASED`], and a job with
/// `extra` lines in its table section; returns the job path.
fn setup(ws: &Path, extra: &str) -> String {
    let table = ws.join("wh/users");
    std::fs::create_dir_all(&table).unwrap();
    run_python("writing a Delta table", WRITE_DELTA, &[&table]);
    local_delta_job(ws, &table, extra)
}

/// [`delta_job`] with the manifests and events in `ws` and the table at `table`, all local.
fn local_delta_job(ws: &Path, table: &Path, extra: &str) -> String {
    delta_job(
        ws,
        &file_url(&ws.join("manifests")),
        &file_url(&ws.join("events")),
        &file_url(table),
        extra,
    )
}

/// Events erasing [`ERASED`] under `ws/events/`, and a job at `ws/job.toml` whose Delta table
/// is at `table` (with `extra` lines), its manifests and events at the URLs given.
pub(crate) fn delta_job(
    ws: &Path,
    manifests: &str,
    events: &str,
    table: &str,
    extra: &str,
) -> String {
    write_events(
        &ws.join("events/e.json"),
        &[
            ("ev-1", "user_id", json!(ERASED[0].to_string())),
            ("ev-2", "user_id", json!(ERASED[1].to_string())),
        ],
    );
    let job = ws.join("job.toml");
    let text = user_id_job("lake", manifests, events, table).replace(
        "[[table.match]]",
        &format!("format = \"delta\"\n{extra}\n[[table.match]]"),
    );
    write(&job, &text);
    job.display().to_string()
}

/// The commit file of `version`.
pub(crate) fn commit_text(table: &Path, version: u64) -> String {
    std::fs::read_to_string(table.join(format!("_delta_log/{version:020}.json"))).unwrap()
}

/// The actions of a commit file.
pub(crate) fn actions(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The history entries of lakepurge commits of `run_id`.
pub(crate) fn lakepurge_commits(read: &Value, run_id: &str) -> usize {
    read["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["lakepurge"]["runId"] == json!(run_id))
        .count()
}

/// What every purged table must show: the oracle's rows through every reader, no erased subject
/// in any version that can still be read, and the run's commit clean of subject ids with
/// statistics from the new files.
pub(crate) fn check_purged(table: &Path, read: &Value, version: u64) {
    let seqs: Vec<i64> = serde_json::from_value(read["seqs"].clone()).unwrap();
    assert_eq!(seqs, oracle(), "latest version's rows");
    assert_eq!(read["polars_rows"], json!(oracle().len()));
    assert_eq!(read["file_rows"], json!(oracle().len()));
    assert_eq!(read["profiles"], json!(oracle()), "nested struct values");
    for (v, users) in read["versions"].as_object().unwrap() {
        if let Some(users) = users.as_array() {
            for erased in ERASED {
                assert!(
                    !users.contains(&json!(erased)),
                    "version {v} still serves user {erased}"
                );
            }
        }
    }
    let text = commit_text(table, version);
    for erased in ERASED {
        assert!(
            !text.contains(&erased.to_string()),
            "the purge commit names subject {erased}: {text}"
        );
    }
    for action in actions(&text) {
        if let Some(path) = action["remove"]["path"].as_str() {
            assert!(
                !table.join(path).exists(),
                "removed file {path} still there"
            );
        }
        if let Some(add) = action["add"].as_object() {
            let stats: Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
            let n = stats["numRecords"].as_u64().unwrap();
            assert!(n > 0);
            assert!(
                stats["maxValues"]["user_id"].as_i64().unwrap() < ERASED[0],
                "{stats}"
            );
            assert_eq!(stats["nullCount"]["profile"]["city"], json!(0), "{stats}");
            assert!(stats["minValues"]["at"].as_str().unwrap().ends_with('Z'));
            let path = table.join(add["path"].as_str().unwrap());
            assert_eq!(
                std::fs::metadata(&path).unwrap().len(),
                add["size"].as_u64().unwrap(),
                "the add's size"
            );
        }
    }
}

#[test]
fn delta_table_is_purged_through_its_log() {
    let ws = tempfile::tempdir().unwrap();
    let job = setup(ws.path(), "");
    let table = ws.path().join("wh/users");
    let before = read_delta(&table);
    let start = before["version"].as_u64().unwrap();
    let planned = lakepurge(&["plan", "--job", &job, "--json"]);
    assert_eq!(planned.code, 0);
    let plan: Value = serde_json::from_str(&planned.stdout).unwrap();
    assert_eq!(plan["tables"][0]["delta_version"], json!(start));

    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read_delta(&table);
    assert_eq!(after["version"], json!(start + 1), "one commit");
    check_purged(&table, &after, start + 1);
    let last = &after["history"][0];
    assert_eq!(last["operation"], json!("DELETE"));
    assert_eq!(last["lakepurge"]["job"], json!("lake"));
    assert!(
        last["engineInfo"]
            .as_str()
            .unwrap()
            .starts_with("lakepurge/")
    );
    assert_eq!(lakepurge_commits(&after, "r1"), 1);
    // The rewrite of the file of 900099 alone removed it and added nothing.
    let acts = actions(&commit_text(&table, start + 1));
    let removes = acts.iter().filter(|a| a.get("remove").is_some()).count();
    let adds = acts.iter().filter(|a| a.get("add").is_some()).count();
    assert_eq!(removes, adds + 1, "{acts:?}");

    let manifest = read_json(&ws.path().join("manifests/lake/r1.json"));
    let t = &manifest["tables"][0];
    assert_eq!(t["delta"]["version"], json!(start + 1));
    assert_eq!(t["delta"]["old_files"], json!("delete"));
    assert_eq!(t["delta"]["old_files_deleted"], json!(removes));
    assert_eq!(t["files_deleted"], json!(1));
    assert_eq!(t["rows_removed"], json!(125 - oracle().len()));
    for f in t["files"].as_array().unwrap() {
        if let Some(new) = f["new_path"].as_str() {
            assert_eq!(
                sha256_file(&table.join(new)),
                f["after"]["sha256"].as_str().unwrap()
            );
        }
    }
    let manifest_path = ws.path().join("manifests/lake/r1.json");
    let verified = lakepurge(&[
        "verify",
        manifest_path.to_str().unwrap(),
        "--deep",
        "--job",
        &job,
    ]);
    assert_eq!(verified.code, 0, "{}", verified.all_output());
    assert!(
        verified.stdout.contains("Delta commit"),
        "{}",
        verified.stdout
    );

    // The same run id again: nothing; a new run id: no commit, no file touched.
    let files_before = tree_hashes(&table);
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "r1"]).code,
        0
    );
    let again = lakepurge(&["purge", "--job", &job, "--run-id", "r2"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(
        tree_hashes(&table),
        files_before,
        "a second run changed the table"
    );
    let second = read_json(&ws.path().join("manifests/lake/r2.json"));
    assert_eq!(second["tables"][0]["files"], json!([]));
    assert_eq!(second["tables"][0]["delta"]["version"], Value::Null);

    // An old file put back (from a backup, say) is found by verify.
    let removed: Vec<String> = acts
        .iter()
        .filter_map(|a| a["remove"]["path"].as_str().map(String::from))
        .collect();
    std::fs::write(table.join(&removed[0]), b"restored").unwrap();
    let verified = lakepurge(&["verify", manifest_path.to_str().unwrap()]);
    assert_eq!(verified.code, 3, "{}", verified.all_output());
    assert!(
        verified.stdout.contains("still there"),
        "{}",
        verified.stdout
    );
}

#[test]
fn delta_old_files_kept_on_request_and_said_so() {
    let ws = tempfile::tempdir().unwrap();
    let job = setup(ws.path(), "old_files = \"keep\"");
    let table = ws.path().join("wh/users");
    let start = read_delta(&table)["version"].as_u64().unwrap();
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read_delta(&table);
    let seqs: Vec<i64> = serde_json::from_value(after["seqs"].clone()).unwrap();
    assert_eq!(seqs, oracle());
    // Time travel still serves the erased rows from the kept files, and the manifest says so.
    let v = after["versions"][start.to_string()].clone();
    assert!(v.as_array().unwrap().contains(&json!(ERASED[0])), "{v}");
    let manifest = read_json(&ws.path().join("manifests/lake/r1.json"));
    let d = &manifest["tables"][0]["delta"];
    assert_eq!(d["old_files"], json!("keep"));
    assert_eq!(d["old_files_deleted"], json!(0));
    assert!(d["old_files_remaining"].as_u64().unwrap() > 0, "{d}");
    assert!(d["retention"].as_str().unwrap().contains("VACUUM"));
    let m = ws.path().join("manifests/lake/r1.json");
    let verified = lakepurge(&["verify", m.to_str().unwrap(), "--deep", "--job", &job]);
    assert_eq!(verified.code, 0, "{}", verified.all_output());
}

#[test]
fn delta_crash_around_the_commit_resumes_to_one_commit() {
    for point in ["after_intent=1", "after_commit=1"] {
        let ws = tempfile::tempdir().unwrap();
        let job = setup(ws.path(), "");
        let table = ws.path().join("wh/users");
        let start = read_delta(&table)["version"].as_u64().unwrap();
        let crashed = lakepurge_env(
            &["purge", "--job", &job, "--run-id", "r1"],
            &[("LAKEPURGE_FAILPOINT", point)],
        );
        assert_ne!(crashed.code, 0, "{point}: the failpoint did not fire");
        assert!(crashed.stderr.contains("failpoint"), "{point}");
        let resumed = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
        assert_eq!(resumed.code, 0, "{point}: {}", resumed.stderr);
        let after = read_delta(&table);
        assert_eq!(lakepurge_commits(&after, "r1"), 1, "{point}");
        assert_eq!(after["version"], json!(start + 1), "{point}");
        check_purged(&table, &after, start + 1);
        let m = ws.path().join("manifests/lake/r1.json");
        let verified = lakepurge(&["verify", m.to_str().unwrap(), "--deep", "--job", &job]);
        assert_eq!(verified.code, 0, "{point}: {}", verified.all_output());
        // No file is left that the table does not name, but those of versions before the purge
        // that the commit did not remove.
        let named: BTreeSet<String> = (0..=start + 1)
            .flat_map(|v| {
                actions(&commit_text(&table, v))
                    .into_iter()
                    .filter_map(|a| a["add"]["path"].as_str().map(String::from))
            })
            .collect();
        for (file, _) in tree_hashes(&table) {
            if file.ends_with(".parquet") && !file.starts_with("_delta_log") {
                assert!(named.contains(&file), "{point}: stray file {file}");
            }
        }
    }
}

/// Another writer commits between the plan (a crashed first attempt) and the commit: it
/// appends rows of an erased subject and deletes rows of a file the purge had planned to
/// rewrite. The resumed run plans again from the new version: the appended rows are erased
/// too, and the other writer's delete is not undone.
#[test]
fn delta_writer_between_plan_and_commit() {
    let ws = tempfile::tempdir().unwrap();
    let job = setup(ws.path(), "");
    let table = ws.path().join("wh/users");
    let crashed = lakepurge_env(
        &["purge", "--job", &job, "--run-id", "r1"],
        &[("LAKEPURGE_FAILPOINT", "after_intent=1")],
    );
    assert_ne!(crashed.code, 0);
    let other = "import sys\nimport pyarrow as pa\nfrom deltalake import DeltaTable, write_deltalake\n\
        p = sys.argv[1]\nDeltaTable(p).delete(\"seq = 1\")\n\
        import pyarrow.compute as pc\n\
        src = DeltaTable(p).to_pyarrow_table()\n\
        extra = src.filter(pc.is_in(src['seq'], pa.array([0, 6, 13], pa.int64())))\n\
        extra = extra.set_column(1, 'seq', pa.array([1000, 1006, 1013], pa.int64()))\n\
        write_deltalake(p, extra, partition_by=['dt'], mode='append')\n";
    run_python("another writer", other, &[&table]);
    let resumed = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let after = read_delta(&table);
    assert_eq!(lakepurge_commits(&after, "r1"), 1);
    let seqs: Vec<i64> = serde_json::from_value(after["seqs"].clone()).unwrap();
    // seq 6 and 13 are of user 900006: their copies 1006 and 1013 are erased as well.
    let mut expected: Vec<i64> = oracle().into_iter().filter(|s| *s != 1).collect();
    expected.push(1000);
    assert_eq!(seqs, expected);
    let users: Vec<i64> = serde_json::from_value(after["users"].clone()).unwrap();
    assert!(!users.contains(&ERASED[0]) && !users.contains(&ERASED[1]));
}

#[test]
fn delta_table_misregistered_is_refused() {
    let ws = tempfile::tempdir().unwrap();
    // A plain Parquet folder registered as Delta: exit 2, nothing written.
    let plain = ws.path().join("wh/plain");
    std::fs::create_dir_all(&plain).unwrap();
    run_python(
        "writing a Parquet file",
        "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
         pq.write_table(pa.table({'user_id': pa.array([1], pa.int64())}), sys.argv[1] + '/p.parquet')\n",
        &[&plain],
    );
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", json!("1"))],
    );
    let job = ws.path().join("job.toml");
    let text = user_id_job(
        "lake",
        &file_url(&ws.path().join("manifests")),
        &file_url(&ws.path().join("events")),
        &file_url(&plain),
    )
    .replace("[[table.match]]", "format = \"delta\"\n[[table.match]]");
    write(&job, &text);
    let before = tree_hashes(&plain);
    for args in [
        vec!["validate"],
        vec!["plan"],
        vec!["purge", "--run-id", "r1"],
    ] {
        let mut full = args.clone();
        full.splice(1..1, ["--job", job.to_str().unwrap()]);
        let run = lakepurge(&full);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("no Delta log"), "{}", run.stderr);
    }
    assert_eq!(tree_hashes(&plain), before);
    assert!(!ws.path().join("manifests").exists());
    // old_files on a Parquet table is a spec error naming the field.
    write(
        &job,
        &text.replace("format = \"delta\"", "old_files = \"keep\""),
    );
    let run = lakepurge(&["validate", "--job", job.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("old_files"), "{}", run.stderr);
}

/// Runs validate, plan and purge of the one-table Delta job `job`: each exits 2 saying
/// `said`, and nothing under `table` changes.
fn assert_refused(ws: &Path, job: &str, table: &Path, said: &str) {
    let before = tree_hashes(table);
    for args in [
        vec!["validate", "--job", job],
        vec!["plan", "--job", job],
        vec!["purge", "--job", job, "--run-id", "r1"],
    ] {
        let run = lakepurge(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(said), "{args:?}: {}", run.stderr);
    }
    assert_eq!(tree_hashes(table), before, "something was written");
    assert!(!ws.join("manifests").exists());
}

/// A column-mapped Delta table (`delta.columnMapping.mode = name`, as Databricks makes any table
/// whose column was renamed or dropped) with a history: two writes (one partition value needing
/// escapes), a checkpoint, a DELETE, then the match column renamed (`user_id` to `account_id`,
/// a metadata-only commit as Spark writes it: the physical name stays), then a write under the
/// new name. The spec names the table's columns (`account_id`, and `owner.uid` inside a
/// struct); the purge finds them by their physical names. After it, the `deltalake` reader
/// reads exactly the oracle's rows, no version it can open and no file on disk holds the erased
/// subject, the purge commit's statistics and partition values use physical names, and
/// `verify --deep` passes.
#[test]
fn delta_column_mapped_table_with_a_renamed_column_is_purged() {
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh/users");
    run_python(
        "writing a column-mapped Delta table",
        WRITE_MAPPED,
        &[&table],
    );
    let job = mapped_job(ws.path(), &table, "");
    let before: Value = serde_json::from_str(&run_python(
        "reading the column-mapped table",
        READ_MAPPED,
        &[&table],
    ))
    .unwrap();
    assert_eq!(before["versions_serving"], before["readable"], "{before}");
    assert_eq!(before["readable"].as_array().unwrap().len(), 5, "{before}");
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let read: Value = serde_json::from_str(&run_python(
        "reading the column-mapped table back",
        READ_MAPPED,
        &[&table],
    ))
    .unwrap();
    // The oracle: seq 3 was deleted; rows of user 900006 (seq % 7 == 6) or owned by it
    // ((seq + 1) % 7 == 6) are erased.
    let oracle: Vec<i64> = (0..70)
        .filter(|s| *s != 3 && s % 7 != 6 && (s + 1) % 7 != 6)
        .collect();
    assert_eq!(read["seqs"], json!(oracle), "{read}");
    assert_eq!(
        read["columns"],
        json!(["account_id", "seq", "email", "owner", "dt"])
    );
    assert_eq!(read["versions_serving"], json!([]), "{read}");
    assert!(
        read["readable"]
            .as_array()
            .unwrap()
            .contains(&read["version"]),
        "{read}"
    );
    assert_eq!(read["files_holding"], json!([]), "{read}");
    assert!(read["files_on_disk"].as_u64().unwrap() > 0);
    assert_eq!(read["partitions"], json!(["2026-11-02", "a b%c/d"]));
    // The purge commit: statistics and partition values under physical names only.
    let version = read["version"].as_u64().unwrap();
    let adds: Vec<Value> = actions(&commit_text(&table, version))
        .into_iter()
        .filter_map(|a| a.get("add").cloned())
        .collect();
    assert!(!adds.is_empty());
    for add in &adds {
        let stats: Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
        let keys: Vec<&String> = stats["minValues"]
            .as_object()
            .unwrap()
            .keys()
            .chain(add["partitionValues"].as_object().unwrap().keys())
            .collect();
        assert!(!keys.is_empty());
        assert!(keys.iter().all(|k| k.starts_with("col-")), "{add}");
    }
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    let d = &m["tables"][0]["delta"];
    assert!(!d["history_files"].as_array().unwrap().is_empty(), "{d}");
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
    assert!(!run.all_output().contains("900006"));
}

/// Events erasing user 900006 and a job (`extra` lines in its table) over the column-mapped
/// table at `table`, matching `account_id` and `owner.uid`; returns the job path.
fn mapped_job(ws: &Path, table: &Path, extra: &str) -> String {
    let events = ws.join("events");
    write_events(
        &events.join("e.json"),
        &[("ev-1", "user_id", json!("900006"))],
    );
    let job = ws.join("job.toml");
    let text = user_id_job(
        "lake",
        &file_url(&ws.join("manifests")),
        &file_url(&events),
        &file_url(table),
    )
    .replace(
        "[[table.match]]\ncolumn = \"user_id\"",
        &format!("format = \"delta\"\n{extra}[[table.match]]\ncolumn = \"account_id\""),
    ) + "[[table.match]]\ncolumn = \"owner.uid\"\nsubject_type = \"user_id\"\n";
    write(&job, &text);
    job.display().to_string()
}

/// Writes the column-mapped table of the test above at `argv[1]`.
const WRITE_MAPPED: &str = r#"
import sys, json, glob, time
import pyarrow as pa
from deltalake import write_deltalake, DeltaTable
out = sys.argv[1]
owner = pa.struct([("uid", pa.int64())])
def batch(start, n, dt, key):
    seqs = list(range(start, start + n))
    return pa.table({
        key: pa.array([900000 + s % 7 for s in seqs], pa.int64()),
        "seq": pa.array(seqs, pa.int64()),
        "email": pa.array([f"u{900000 + s % 7}@example.com" for s in seqs]),
        "owner": pa.array([{"uid": 900000 + (s + 1) % 7} for s in seqs], owner),
        "dt": pa.array([dt] * n),
    })
write_deltalake(out, batch(0, 30, "a b%c/d", "user_id"), partition_by=["dt"],
                configuration={"delta.columnMapping.mode": "name"})
write_deltalake(out, batch(30, 30, "2026-11-02", "user_id"), partition_by=["dt"], mode="append")
DeltaTable(out).create_checkpoint()
DeltaTable(out).delete("seq = 3")
# RENAME COLUMN user_id TO account_id, as Spark commits it: a new metaData, same physical name.
meta = None
for f in sorted(glob.glob(out + "/_delta_log/*.json")):
    for line in open(f):
        action = json.loads(line)
        if "metaData" in action:
            meta = action["metaData"]
schema = json.loads(meta["schemaString"])
for field in schema["fields"]:
    if field["name"] == "user_id":
        field["name"] = "account_id"
meta["schemaString"] = json.dumps(schema)
v = DeltaTable(out).version() + 1
with open(f"{out}/_delta_log/{v:020}.json", "x") as fh:
    fh.write(json.dumps({"commitInfo": {"timestamp": int(time.time() * 1000),
        "operation": "RENAME COLUMN",
        "operationParameters": {"oldColumnPath": "user_id", "newColumnPath": "account_id"}}}) + "\n")
    fh.write(json.dumps({"metaData": meta}) + "\n")
write_deltalake(out, batch(60, 10, "a b%c/d", "account_id"), partition_by=["dt"], mode="append")
"#;

/// Reads the column-mapped table at `argv[1]`: the latest version's rows, the versions still
/// serving user 900006 (under either column name, or as an owner), and the Parquet files on
/// disk holding it anywhere (pyarrow, under the physical names).
const READ_MAPPED: &str = r#"
import sys, json, glob
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable, QueryBuilder
p = sys.argv[1]
# The package's DataFusion reader applies column mapping (to_pyarrow_table reads nulls).
def read(table):
    return pa.table(QueryBuilder().register("t", table).execute("select * from t").read_all())
dt = DeltaTable(p)
t = read(dt)
def serves(table):
    rows = table.to_pylist()
    return any(900006 in (r.get("user_id"), r.get("account_id"), (r.get("owner") or {}).get("uid"))
               for r in rows)
versions, readable = [], []
for v in range(dt.version() + 1):
    try:
        old = read(DeltaTable(p, version=v))
    except Exception:
        continue
    readable.append(v)
    if serves(old):
        versions.append(v)
files = [f for f in glob.glob(p + "/**/*.parquet", recursive=True) if "_delta_log" not in f]
holding = [f for f in files if "900006" in json.dumps(pq.read_table(f).to_pylist(), default=str)]
print(json.dumps({
    "version": dt.version(),
    "columns": t.column_names,
    "seqs": sorted(t.column("seq").to_pylist()),
    "partitions": sorted(set(t.column("dt").to_pylist())),
    "versions_serving": versions,
    "readable": readable,
    "files_on_disk": len(files),
    "files_holding": holding,
}))
"#;

/// Prints the user ids of every Parquet file under the table at `argv[1]` (its log aside).
pub const USER_IDS_ON_DISK: &str = "import sys, glob, json, pyarrow.parquet as pq\n\
     ids = set()\n\
     for f in glob.glob(sys.argv[1] + '/**/*.parquet', recursive=True):\n\
     \x20   if '_delta_log' not in f:\n\
     \x20       ids.update(pq.read_table(f).column('user_id').to_pylist())\n\
     print(json.dumps(sorted(ids)))\n";

/// A DELETE and an UPDATE by the `deltalake` package on the table [`WRITE_DELTA`] wrote (its
/// folder the argument): both rewrite files and leave the old ones on disk as tombstones.
pub const DELETE_AND_UPDATE: &str = "import sys\nfrom deltalake import DeltaTable\n\
     dt = DeltaTable(sys.argv[1])\n\
     dt.delete('seq = 3')\n\
     DeltaTable(sys.argv[1]).update(predicate='seq = 50', updates={'email': \"'changed@example.com'\"})\n";

/// Time travel (#25 case 1): after a DELETE and an UPDATE (the `deltalake` package's, which
/// rewrite files and leave the old ones on disk as tombstones), older versions still serve the
/// erased subjects from files no current version references. The purge scans that history,
/// deletes the files holding an erased row (old_files = "delete"), records them, and verify
/// checks they are gone: every version the reader can still open holds no erased row, and no
/// Parquet file under the table does.
#[test]
fn delta_history_on_disk_holding_erased_rows_is_deleted() {
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh/users");
    std::fs::create_dir_all(&table).unwrap();
    run_python("writing a Delta table", WRITE_DELTA, &[&table]);
    run_python("a DELETE and an UPDATE", DELETE_AND_UPDATE, &[&table]);
    let before = read_delta(&table);
    let serves_erased = |read: &Value| -> Vec<String> {
        read["versions"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, users)| {
                users
                    .as_array()
                    .is_some_and(|u| ERASED.iter().any(|e| u.contains(&json!(e))))
            })
            .map(|(v, _)| v.clone())
            .collect()
    };
    assert!(!serves_erased(&before).is_empty());
    let job = local_delta_job(ws.path(), &table, "");
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read_delta(&table);
    assert_eq!(
        serves_erased(&after),
        Vec::<String>::new(),
        "{}",
        after["versions"]
    );
    let on_disk = run_python(
        "reading every Parquet file under the table",
        USER_IDS_ON_DISK,
        &[&table],
    );
    let on_disk: Vec<i64> = serde_json::from_str(&on_disk).unwrap();
    for e in ERASED {
        assert!(!on_disk.contains(&e), "a file on disk still holds {e}");
    }
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    let d = &m["tables"][0]["delta"];
    let history = d["history_files"].as_array().unwrap();
    assert!(!history.is_empty(), "{d}");
    assert_eq!(d["history_files_deleted"], json!(history.len()));
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
    assert!(
        verify
            .stdout
            .contains("history files that held erased rows are gone"),
        "{}",
        verify.stdout
    );
    // A restored history file is caught.
    let restored = table.join(history[0].as_str().unwrap());
    std::fs::write(&restored, b"restored").unwrap();
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1"]);
    assert_eq!(verify.code, 3, "{}", verify.all_output());
}

/// Counts, independently of lakepurge, the files of the log at `argv[1]` whose data-file
/// statistics name a user id of `argv[2]` (JSON list): entries, checkpoints (pyarrow) and
/// checksums; prints JSON with the versions of those files.
const LOG_NAMING: &str = r#"
import sys, json, glob, os
import pyarrow.parquet as pq
erased = set(json.loads(sys.argv[2]))
def names(stats):
    if isinstance(stats, str):
        stats = json.loads(stats)
    if not stats:
        return False
    return any((stats.get(k) or {}).get("user_id") in erased for k in ("minValues", "maxValues"))
found = {"entries": [], "checkpoints": [], "checksums": [], "files": 0}
for f in sorted(glob.glob(sys.argv[1] + "/_delta_log/0*")):
    name = os.path.basename(f)
    version = int(name[:20])
    found["files"] += 1
    if ".checkpoint" in name and name.endswith(".parquet"):
        rows = pq.read_table(f).to_pylist()
        hit = any(names((r.get(k) or {}).get("stats")) for r in rows for k in ("add", "remove"))
        kind = "checkpoints"
    elif name.endswith(".json"):
        actions = [json.loads(l) for l in open(f) if l.strip()]
        hit = any(names(a[k].get("stats")) for a in actions for k in ("add", "remove") if k in a)
        kind = "entries"
    elif name.endswith(".crc"):
        crc = json.load(open(f))
        hit = any(names(a.get("stats")) for a in crc.get("allFiles") or [])
        kind = "checksums"
    else:
        continue
    if hit:
        found[kind].append(version)
print(json.dumps(found))
"#;

/// #25 log statistics: the `add` statistics of earlier commits and of the checkpoint keep
/// the erased ids as `maxValues` (each mixed file's largest user id is an erased one). Under
/// `old_log = "keep"` the manifest counts the log files naming them, the same as an
/// independent count with pyarrow, and verify warns; under `expire` a checkpoint is written
/// after the purge commit, the log before it is removed (the reader opens the latest version
/// with the oracle's rows, no log file names an erased value any more), and verify fails if an
/// expired log file comes back.
#[test]
fn delta_log_statistics_naming_erased_values_are_counted_or_expired() {
    let naming = |table: &Path| -> Value {
        serde_json::from_str(&run_python(
            "counting the log files naming erased ids",
            LOG_NAMING,
            &[table.to_str().unwrap(), &json!(ERASED).to_string()],
        ))
        .unwrap()
    };
    for policy in ["keep", "expire"] {
        let ws = tempfile::tempdir().unwrap();
        let job = setup(ws.path(), &format!("old_log = \"{policy}\""));
        let table = ws.path().join("wh/users");
        let before = naming(&table);
        let found = |k: &str| before[k].as_array().unwrap().len() as u64;
        assert!(found("entries") > 0 && found("checkpoints") > 0, "{before}");
        let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
        assert_eq!(run.code, 0, "{policy}: {}", run.stderr);
        let m = read_json(&ws.path().join("manifests/lake/r1.json"));
        let o = &m["tables"][0]["delta"]["old_log"];
        assert_eq!(o["entries_naming_erased"], json!(found("entries")), "{o}");
        assert_eq!(
            o["checkpoints_naming_erased"],
            json!(found("checkpoints")),
            "{o}"
        );
        assert_eq!(
            o["checksums_naming_erased"],
            json!(found("checksums")),
            "{o}"
        );
        assert!(o["files_scanned"].as_u64().unwrap() >= before["files"].as_u64().unwrap());
        let after = naming(&table);
        let left = |k: &str| after[k].as_array().unwrap().len() as u64;
        let remaining = left("entries") + left("checkpoints") + left("checksums");
        assert_eq!(
            o["remaining_naming_erased"],
            json!(remaining),
            "{o} {after}"
        );
        let read = read_delta(&table);
        let version = read["version"].as_u64().unwrap();
        let seqs: Vec<i64> = serde_json::from_value(read["seqs"].clone()).unwrap();
        assert_eq!(seqs, oracle());
        let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
        assert_eq!(verify.code, 0, "{}", verify.all_output());
        if policy == "keep" {
            assert!(remaining > 0);
            assert!(o.get("expired_before").is_none(), "{o}");
            assert!(
                verify
                    .stdout
                    .contains("kept statistics naming erased values"),
                "{}",
                verify.stdout
            );
            continue;
        }
        assert_eq!(remaining, 0, "{after}");
        assert_eq!(o["expired_before"], json!(version), "{o}");
        assert!(
            verify
                .stdout
                .contains(&format!("the log before version {version}")),
            "{}",
            verify.stdout
        );
        // Versions before the checkpoint cannot be opened any more; the latest can.
        for (v, users) in read["versions"].as_object().unwrap() {
            let v: u64 = v.parse().unwrap();
            assert_eq!(users.is_string(), v < version, "version {v}: {users}");
        }
        // An expired log entry restored is caught.
        let first = table.join("_delta_log/00000000000000000000.json");
        assert!(!first.exists());
        std::fs::write(&first, "{}\n").unwrap();
        let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1"]);
        assert_eq!(verify.code, 3, "{}", verify.all_output());
    }
}

/// Review findings on the log's statistics: subject ids given as `0900006` and `+900099` are
/// the integers 900006 and 900099 (as for the rows), so the log files naming them are counted;
/// and a later run's `old_log = "expire"` removing an earlier run's commit entry does not make
/// the earlier, honest manifest fail `verify` (the checkpoint still records its transaction).
#[test]
fn delta_log_statistics_match_ids_as_rows_do_and_survive_a_later_expiry() {
    let ws = tempfile::tempdir().unwrap();
    let job = setup(ws.path(), "old_log = \"keep\"");
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", json!("0900006"))],
    );
    let table = ws.path().join("wh/users");
    let before: Value = serde_json::from_str(&run_python(
        "counting the log files naming erased ids",
        LOG_NAMING,
        &[table.to_str().unwrap(), &json!([ERASED[0]]).to_string()],
    ))
    .unwrap();
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    let o = &m["tables"][0]["delta"]["old_log"];
    assert_eq!(
        o["entries_naming_erased"],
        json!(before["entries"].as_array().unwrap().len()),
        "{o}"
    );
    assert!(o["entries_naming_erased"].as_u64().unwrap() > 0, "{o}");
    // A later run erases another subject and expires the log, r1's commit entry with it.
    write_events(
        &ws.path().join("events/e2.json"),
        &[("ev-2", "user_id", json!("+900099"))],
    );
    let text = std::fs::read_to_string(&job).unwrap();
    write(
        Path::new(&job),
        &text.replace("old_log = \"keep\"", "old_log = \"expire\""),
    );
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let r2 = read_json(&ws.path().join("manifests/lake/r2.json"));
    assert!(
        r2["tables"][0]["delta"]["old_log"]["expired_before"].is_u64(),
        "{r2}"
    );
    let seqs: Vec<i64> = serde_json::from_value(read_delta(&table)["seqs"].clone()).unwrap();
    assert_eq!(seqs, oracle());
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
    assert!(
        verify
            .stdout
            .contains("still records the run's transaction"),
        "{}",
        verify.stdout
    );
}

/// Change data files left by a change data feed that was on earlier (#25, review): an UPDATE
/// wrote the erased rows' pre- and post-images to `_change_data/`, then the feed was turned
/// off. The purge scans them as history and deletes those holding erased rows; no Parquet file
/// under the table holds the erased subject afterwards.
#[test]
fn delta_change_data_files_of_an_earlier_feed_are_purged_as_history() {
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh/users");
    run_python(
        "a table whose change data feed was on",
        "import sys, pyarrow as pa\nfrom deltalake import write_deltalake, DeltaTable\n\
         p = sys.argv[1]\n\
         write_deltalake(p, pa.table({'user_id': pa.array([1, 2, 900006, 900006, 5], pa.int64()),\n\
         \x20   'email': pa.array(['a', 'b', 'c', 'd', 'e'])}), configuration={'delta.enableChangeDataFeed': 'true'})\n\
         DeltaTable(p).update(predicate='user_id = 900006', updates={'email': \"'z'\"})\n\
         DeltaTable(p).alter.set_table_properties({'delta.enableChangeDataFeed': 'false'})\n",
        &[&table],
    );
    let holding = || -> Vec<String> {
        serde_json::from_str(&run_python(
            "files holding 900006",
            "import sys, glob, json, pyarrow.parquet as pq\n\
             print(json.dumps(sorted(f[len(sys.argv[1]) + 1:] for f in glob.glob(sys.argv[1] + '/**/*.parquet', recursive=True)\n\
             \x20   if '_delta_log' not in f and 900006 in pq.read_table(f).column('user_id').to_pylist())))\n",
            &[&table],
        ))
        .unwrap()
    };
    assert!(
        holding().iter().any(|f| f.starts_with("_change_data/")),
        "{:?}",
        holding()
    );
    let job = local_delta_job(ws.path(), &table, "");
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(holding(), Vec::<String>::new());
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    let history = m["tables"][0]["delta"]["history_files"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|f| f.as_str().unwrap().starts_with("_change_data/")),
        "{history:?}"
    );
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
}

/// Writer features (#25 case 3), written by the `deltalake` package. What a purge could not
/// keep true is refused by `validate`, `plan` and `purge` with exit 2 before anything is
/// written: change data feed (its `_change_data/` files keep erased rows), and, under
/// `action = "redact"`, a CHECK constraint or a NOT NULL column to set to null. Deleting rows
/// keeps a CHECK constraint true, so a table with one is purged under `delete`, and the
/// constraint is still there afterwards.
#[test]
fn delta_writer_features_a_purge_cannot_keep_are_refused_before_writing() {
    const TWO_USERS: &str = "pa.table({'user_id': pa.array([1, 900006], pa.int64()), \
                             'email': pa.array(['a@x', 'b@x'])})";
    let redact = "action = \"redact\"\nredact = [\"email\"]";
    for (what, script, extra, said) in [
        (
            "change data feed",
            format!(
                "import sys, pyarrow as pa\nfrom deltalake import write_deltalake\n\
                 write_deltalake(sys.argv[1], {TWO_USERS},\n\
                 \x20   configuration={{'delta.enableChangeDataFeed': 'true'}})\n"
            ),
            "",
            "change data feed",
        ),
        (
            "a CHECK constraint, redacted",
            format!(
                "import sys, pyarrow as pa\nfrom deltalake import write_deltalake, DeltaTable\n\
                 write_deltalake(sys.argv[1], {TWO_USERS})\n\
                 DeltaTable(sys.argv[1]).alter.add_constraint({{'positive': 'user_id > 0'}})\n"
            ),
            redact,
            "CHECK constraint",
        ),
        (
            "a NOT NULL column to redact",
            "import sys, pyarrow as pa\nfrom deltalake import write_deltalake\n\
             schema = pa.schema([pa.field('user_id', pa.int64()), pa.field('email', pa.string(), nullable=False)])\n\
             write_deltalake(sys.argv[1], pa.table({'user_id': [1, 900006], 'email': ['a@x', 'b@x']}, schema=schema))\n"
                .to_string(),
            redact,
            "cannot be set to null",
        ),
    ] {
        let ws = tempfile::tempdir().unwrap();
        let table = ws.path().join("wh/users");
        run_python(what, &script, &[&table]);
        let job = local_delta_job(ws.path(), &table, extra);
        assert_refused(ws.path(), &job, &table, said);
    }
    // A CHECK constraint under delete: purged, and the constraint stays.
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh/users");
    run_python(
        "a CHECK constraint",
        &format!(
            "import sys, pyarrow as pa\nfrom deltalake import write_deltalake, DeltaTable\n\
             write_deltalake(sys.argv[1], {TWO_USERS})\n\
             DeltaTable(sys.argv[1]).alter.add_constraint({{'positive': 'user_id > 0'}})\n"
        ),
        &[&table],
    );
    let job = local_delta_job(ws.path(), &table, "");
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = run_python(
        "reading it back",
        "import sys, json\nfrom deltalake import DeltaTable\n\
         dt = DeltaTable(sys.argv[1])\n\
         print(json.dumps([sorted(dt.to_pyarrow_table().column('user_id').to_pylist()),\n\
         \x20   {k: v for k, v in dt.metadata().configuration.items() if k.startswith('delta.constraints')}]))\n",
        &[&table],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&after).unwrap(),
        json!([[1], {"delta.constraints.positive": "user_id > 0"}])
    );
}

/// Writes a three-file Delta table at `argv[1]` (seqs 0..10, 10..20, 21..26; user_id is
/// 900000 + seq % 7) and prints the paths of its files in that order.
const WRITE_FOR_VECTORS: &str = r#"
import sys, json, glob
import pyarrow as pa
from deltalake import write_deltalake, DeltaTable
p = sys.argv[1]
def batch(seqs):
    return pa.table({"user_id": pa.array([900000 + s % 7 for s in seqs], pa.int64()),
                     "seq": pa.array(seqs, pa.int64())})
for seqs in (range(0, 10), range(10, 20), range(21, 26)):
    write_deltalake(p, batch(list(seqs)), mode="append")
paths = []
for v in range(3):
    for line in open(f"{p}/_delta_log/{v:020}.json"):
        a = json.loads(line)
        if "add" in a:
            paths.append(a["add"]["path"])
print(json.dumps(paths))
"#;

/// Reads the table at `argv[1]` with the `deltalake` package's DataFusion reader (it applies
/// deletion vectors) and every Parquet file of the latest version with pyarrow.
const READ_WITH_VECTORS: &str = r#"
import sys, json
import pyarrow as pa, pyarrow.parquet as pq
from deltalake import DeltaTable, QueryBuilder
dt = DeltaTable(sys.argv[1])
t = pa.table(QueryBuilder().register("t", dt).execute("select * from t").read_all())
physical = [r for f in dt.file_uris() for r in pq.read_table(f).column("seq").to_pylist()]
print(json.dumps({"seqs": sorted(t.column("seq").to_pylist()), "physical": sorted(physical),
                  "version": dt.version()}))
"#;

/// Deletion vectors (#25), as Spark writes them: one deletion vector file (written by
/// delta-rs's kernel) holding the vectors of two files, committed with the protocol upgrade.
/// The first file's only erased row is one its vector already hides (still in its bytes); the
/// second has a visible erased row and a hidden other one. The purge rewrites both without the
/// hidden and the erased rows, adds them with no vector, deletes the vector file once nothing
/// refers to it, and records the hidden rows it dropped (`rows_already_deleted`). The reader
/// then reads exactly the oracle's rows, the files hold no hidden row any more, and `verify
/// --deep` passes. Under `action = "redact"` such a table is refused before anything is
/// written.
#[test]
fn delta_deletion_vectors_are_applied() {
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh/users");
    let paths: Vec<String> = serde_json::from_str(&run_python(
        "writing a Delta table",
        WRITE_FOR_VECTORS,
        &[&table],
    ))
    .unwrap();
    // One vector file: file 0 hides rows 1 and 6 (seq 6 is user 900006), file 1 hides row 0.
    let (dv_file, descriptors) = write_vectors(&table, &[vec![1, 6], vec![0]]);
    let mut lines = vec![
        json!({"commitInfo": {"timestamp": 1, "operation": "DELETE",
                              "engineInfo": "Apache-Spark/3.5.0 Delta-Lake/3.2.0"}}),
        json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                            "readerFeatures": ["deletionVectors"],
                            "writerFeatures": ["deletionVectors"]}}),
    ];
    for (path, dv) in paths.iter().zip(&descriptors) {
        let size = std::fs::metadata(table.join(path)).unwrap().len();
        lines.push(
            json!({"remove": {"path": path, "dataChange": true, "deletionTimestamp": 1,
                                      "extendedFileMetadata": true, "partitionValues": {},
                                      "size": size}}),
        );
        lines.push(
            json!({"add": {"path": path, "partitionValues": {}, "size": size,
                                   "modificationTime": 1, "dataChange": true,
                                   "deletionVector": dv}}),
        );
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(table.join("_delta_log/00000000000000000003.json"), text).unwrap();
    let read = |what: &str| -> Value {
        serde_json::from_str(&run_python(what, READ_WITH_VECTORS, &[&table])).unwrap()
    };
    let all: Vec<i64> = (0..20).chain(21..26).collect();
    let before = read("reading the table with its vectors");
    let visible: Vec<i64> = all
        .iter()
        .copied()
        .filter(|s| ![1, 6, 10].contains(s))
        .collect();
    assert_eq!(
        before["seqs"],
        json!(visible),
        "the reader applies the vectors"
    );
    assert_eq!(before["physical"], json!(all));
    // redact cannot drop the hidden rows: refused, nothing written.
    let redacting = local_delta_job(ws.path(), &table, "action = \"redact\"\nredact = [\"seq\"]");
    assert_refused(ws.path(), &redacting, &table, "deletion vector");
    let job = local_delta_job(ws.path(), &table, "");
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read("reading the purged table");
    let oracle: Vec<i64> = visible.iter().copied().filter(|s| s % 7 != 6).collect();
    assert_eq!(after["seqs"], json!(oracle), "{after}");
    assert_eq!(
        after["physical"],
        json!(oracle),
        "a hidden or erased row is still in a file"
    );
    assert!(
        !dv_file.exists(),
        "the vector file of the removed files is still there"
    );
    let version = after["version"].as_u64().unwrap();
    let commit = actions(&commit_text(&table, version));
    let adds: Vec<&Value> = commit.iter().filter_map(|a| a.get("add")).collect();
    assert_eq!(adds.len(), 2);
    assert!(
        adds.iter().all(|a| a["deletionVector"].is_null()),
        "{commit:?}"
    );
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    let files = m["tables"][0]["files"].as_array().unwrap();
    let counts: BTreeSet<(u64, u64)> = files
        .iter()
        .map(|f| {
            (
                f["rows_removed"].as_u64().unwrap(),
                f["rows_already_deleted"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, BTreeSet::from([(1, 1)]), "{files:?}");
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
}

/// #25 done-when: a table with the full history a Databricks table has — column mapping with a
/// renamed match column, a partition value needing escapes, a checkpoint, a DELETE, an UPDATE,
/// then a deletion vector (written by the kernel's writer, committed as Spark does) hiding two
/// rows of a file — purged under `old_files = "delete"` and `old_log = "expire"`: every
/// version the `deltalake` reader can still open holds no erased row, the latest is exactly
/// the oracle's rows, no file on disk under the table holds an erased row, and `verify --deep`
/// passes.
#[test]
fn delta_full_history_table_is_purged_everywhere() {
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh/users");
    run_python(
        "writing a column-mapped Delta table",
        WRITE_MAPPED,
        &[&table],
    );
    // An UPDATE, then the add of the last write (seqs 60..70, before the UPDATE) found.
    let last_add: Value = serde_json::from_str(&run_python(
        "an UPDATE",
        "import sys, json, glob\nfrom deltalake import DeltaTable\n\
         p = sys.argv[1]\n\
         v = DeltaTable(p).version()\n\
         add = [json.loads(l)['add'] for l in open(f'{p}/_delta_log/{v:020}.json') if '\"add\"' in l][0]\n\
         DeltaTable(p).update(predicate='seq = 50', updates={'email': \"'changed@example.com'\"})\n\
         print(json.dumps(add))\n",
        &[&table],
    ))
    .unwrap();
    let version: u64 = read_delta_version(&table);
    // The deletion vector: rows 0 and 2 of that file (seqs 60 and 62) hidden.
    let (dv_file, descriptors) = write_vectors(&table, &[vec![0, 2]]);
    let mut add = last_add.clone();
    add["deletionVector"] = descriptors[0].clone();
    let features = json!(["columnMapping", "deletionVectors"]);
    let lines = [
        json!({"commitInfo": {"timestamp": 1, "operation": "DELETE",
                              "engineInfo": "Apache-Spark/3.5.0 Delta-Lake/3.2.0"}}),
        json!({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7,
                            "readerFeatures": features, "writerFeatures": features}}),
        json!({"remove": {"path": last_add["path"], "dataChange": true, "deletionTimestamp": 1,
                          "extendedFileMetadata": true,
                          "partitionValues": last_add["partitionValues"],
                          "size": last_add["size"]}}),
        json!({"add": add}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(
        table.join(format!("_delta_log/{:020}.json", version + 1)),
        text,
    )
    .unwrap();
    let before: Value = serde_json::from_str(&run_python(
        "reading the table with its history",
        READ_MAPPED,
        &[&table],
    ))
    .unwrap();
    assert_eq!(before["readable"].as_array().unwrap().len(), 7, "{before}");
    assert!(
        !before["seqs"].as_array().unwrap().contains(&json!(60)),
        "{before}"
    );
    let job = mapped_job(ws.path(), &table, "old_log = \"expire\"\n");
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after: Value = serde_json::from_str(&run_python(
        "reading the purged table",
        READ_MAPPED,
        &[&table],
    ))
    .unwrap();
    let oracle: Vec<i64> = (0..70)
        .filter(|s| ![3, 60, 62].contains(s) && s % 7 != 6 && (s + 1) % 7 != 6)
        .collect();
    assert_eq!(after["seqs"], json!(oracle), "{after}");
    assert_eq!(after["versions_serving"], json!([]), "{after}");
    assert!(
        after["readable"]
            .as_array()
            .unwrap()
            .contains(&after["version"]),
        "{after}"
    );
    assert_eq!(after["files_holding"], json!([]), "{after}");
    assert!(!dv_file.exists());
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
}

/// Writes one deletion vector file under `table` (by delta-rs's kernel) holding a vector per
/// entry of `hidden` (row positions); returns the file and the vectors' descriptors as Spark
/// writes them (`u`: relative, named by a z85-encoded uuid).
fn write_vectors(table: &Path, hidden: &[Vec<u64>]) -> (std::path::PathBuf, Vec<Value>) {
    use delta_kernel::actions::deletion_vector_writer::{
        KernelDeletionVector, StreamingDeletionVectorWriter,
    };
    let uuid = uuid::Uuid::new_v4();
    let mut bytes = Vec::new();
    let mut writer = StreamingDeletionVectorWriter::new(&mut bytes);
    let mut descriptors = Vec::new();
    for rows in hidden {
        let mut dv = KernelDeletionVector::new();
        dv.add_deleted_row_indexes(rows.iter().copied());
        let written = writer.write_deletion_vector(dv).unwrap();
        descriptors.push(json!({
            "storageType": "u",
            "pathOrInlineDv": z85::encode(uuid.as_bytes()),
            "offset": written.offset,
            "sizeInBytes": written.size_in_bytes,
            "cardinality": written.cardinality,
        }));
    }
    writer.finalize().unwrap();
    let file = table.join(format!("deletion_vector_{uuid}.bin"));
    std::fs::write(&file, &bytes).unwrap();
    (file, descriptors)
}

/// The latest version of the Delta table at `table`.
fn read_delta_version(table: &Path) -> u64 {
    run_python(
        "reading the table's version",
        "import sys\nfrom deltalake import DeltaTable\nprint(DeltaTable(sys.argv[1]).version())\n",
        &[table],
    )
    .trim()
    .parse()
    .unwrap()
}

/// Schema evolution (review): the match column was added to the table after its first file was
/// written (`schema_mode = "merge"`), so that file lacks it — the column is null in all its rows
/// for every reader. `validate` and `purge` accept the table (for a plain Parquet table a
/// missing match column stays an error); the later file's erased rows go, the older file is
/// left as it is.
#[test]
fn delta_match_column_added_after_a_file_is_null_there() {
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh/users");
    run_python(
        "a table whose match column came later",
        "import sys, pyarrow as pa\nfrom deltalake import write_deltalake\n\
         p = sys.argv[1]\n\
         write_deltalake(p, pa.table({'seq': pa.array([0, 1, 2], pa.int64())}))\n\
         write_deltalake(p, pa.table({'seq': pa.array([3, 4, 5], pa.int64()),\n\
         \x20   'user_id': pa.array([900006, 7, 900006], pa.int64())}), mode='append', schema_mode='merge')\n",
        &[&table],
    );
    let job = local_delta_job(ws.path(), &table, "");
    let validated = lakepurge(&["validate", "--job", &job]);
    assert_eq!(validated.code, 0, "{}", validated.stderr);
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seqs = run_python(
        "reading it back",
        "import sys, os, json\nfrom deltalake import DeltaTable\n\
         t = DeltaTable(sys.argv[1]).to_pyarrow_table()\n\
         print(json.dumps(sorted(zip(t.column('seq').to_pylist(), t.column('user_id').to_pylist()), key=lambda r: r[0])), flush=True)\n\
         os._exit(0)  # pyarrow's teardown can abort after this read\n",
        &[&table],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&seqs).unwrap(),
        json!([[0, null], [1, null], [2, null], [4, 7]])
    );
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    assert_eq!(m["tables"][0]["rows_removed"], json!(2));
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
}

/// A table whose checkpoint is a v2 checkpoint with a sidecar (`_delta_log/_sidecars/`) holding
/// the `add` actions, and no commit entry before it (readers must use the checkpoint).
const WRITE_V2_CHECKPOINT: &str = r#"
import sys, json, glob, os, time, uuid
import pyarrow as pa, pyarrow.parquet as pq
from deltalake import write_deltalake, DeltaTable
out = sys.argv[1]
def batch(start, n):
    seqs = list(range(start, start + n))
    return pa.table({"user_id": pa.array([900000 + s % 7 for s in seqs], pa.int64()), "seq": pa.array(seqs, pa.int64())})
write_deltalake(out, batch(0, 20))
write_deltalake(out, batch(20, 20), mode="append")
# protocol upgrade to v2 checkpoints
v = DeltaTable(out).version() + 1
meta = None
for f in sorted(glob.glob(out + "/_delta_log/*.json")):
    for line in open(f):
        a = json.loads(line)
        if "metaData" in a: meta = a["metaData"]
meta["configuration"]["delta.checkpointPolicy"] = "v2"
with open(f"{out}/_delta_log/{v:020}.json", "x") as fh:
    fh.write(json.dumps({"commitInfo": {"timestamp": int(time.time()*1000), "operation": "SET TBLPROPERTIES"}}) + "\n")
    fh.write(json.dumps({"protocol": {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["v2Checkpoint"], "writerFeatures": ["v2Checkpoint"]}}) + "\n")
    fh.write(json.dumps({"metaData": meta}) + "\n")
DeltaTable(out).create_checkpoint()
cp = glob.glob(out + f"/_delta_log/{v:020}.checkpoint.parquet")[0]
t = pq.read_table(cp)
adds = t.filter(pa.compute.is_valid(t.column("add"))).select(["add"])
sid = str(uuid.uuid4()) + ".parquet"
os.makedirs(out + "/_delta_log/_sidecars", exist_ok=True)
pq.write_table(adds, out + "/_delta_log/_sidecars/" + sid)
size = os.path.getsize(out + "/_delta_log/_sidecars/" + sid)
rest = t.filter(pa.compute.is_null(t.column("add")))
os.remove(cp)
name = f"{out}/_delta_log/{v:020}.checkpoint.{uuid.uuid4()}.json"
with open(name, "w") as fh:
    fh.write(json.dumps({"checkpointMetadata": {"version": v}}) + "\n")
    for r in rest.to_pylist():
        for k in ("protocol", "metaData", "txn", "remove"):
            if r.get(k) is not None:
                x = {kk: vv for kk, vv in r[k].items() if vv is not None}
                if k == "metaData":
                    x = meta
                if k == "protocol":
                    x = {"minReaderVersion": 3, "minWriterVersion": 7, "readerFeatures": ["v2Checkpoint"], "writerFeatures": ["v2Checkpoint"]}
                fh.write(json.dumps({k: x}) + "\n")
    fh.write(json.dumps({"sidecar": {"path": sid, "sizeInBytes": size, "modificationTime": int(time.time()*1000)}}) + "\n")
lc = json.load(open(out + "/_delta_log/_last_checkpoint"))
print(lc)
lc.pop("parts", None); lc.pop("checksum", None)
json.dump(lc, open(out + "/_delta_log/_last_checkpoint", "w"))
# remove the commits before the checkpoint, so the reader must use it
for f in glob.glob(out + "/_delta_log/*.json"):
    b = os.path.basename(f)
    if b[:20].isdigit() and int(b[:20]) < v: os.remove(f)
print(DeltaTable(out).version(), len(DeltaTable(out).file_uris()))
"#;

/// v2 checkpoints (review): the statistics in a checkpoint's sidecar name the erased id. Under
/// `old_log = "expire"` the sidecar is counted, the log is summed up in a new checkpoint, and
/// no sidecar or log file naming an erased value remains; the table still reads back (through
/// the `deltalake` package's DataFusion reader) with exactly the rows not erased.
#[test]
fn delta_v2_checkpoint_sidecars_are_counted_and_expired() {
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wh/users");
    run_python(
        "a table with a v2 checkpoint",
        WRITE_V2_CHECKPOINT,
        &[&table],
    );
    let job = local_delta_job(ws.path(), &table, "old_log = \"expire\"");
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    let o = &m["tables"][0]["delta"]["old_log"];
    assert!(o["checkpoints_naming_erased"].as_u64().unwrap() >= 1, "{o}");
    assert_eq!(o["remaining_naming_erased"], json!(0), "{o}");
    let left = run_python(
        "reading the log and the table",
        "import sys, os, glob, json, pyarrow as pa, pyarrow.parquet as pq\n\
         from deltalake import DeltaTable, QueryBuilder\n\
         p = sys.argv[1]\n\
         named = []\n\
         for f in glob.glob(p + '/_delta_log/_sidecars/*.parquet'):\n\
         \x20   for r in pq.read_table(f).to_pylist():\n\
         \x20       st = json.loads(((r.get('add') or {}).get('stats')) or '{}')\n\
         \x20       if 900006 in ((st.get('minValues') or {}).get('user_id'), (st.get('maxValues') or {}).get('user_id')):\n\
         \x20           named.append(f)\n\
         t = pa.table(QueryBuilder().register('t', DeltaTable(p)).execute('select seq from t').read_all())\n\
         print(json.dumps({'named': named, 'seqs': sorted(t.column('seq').to_pylist())}), flush=True)\n\
         os._exit(0)\n",
        &[&table],
    );
    let left: Value = serde_json::from_str(&left).unwrap();
    assert_eq!(left["named"], json!([]), "{left}");
    let kept: Vec<i64> = (0..40).filter(|s| s % 7 != 6).collect();
    assert_eq!(left["seqs"], json!(kept), "{left}");
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
}

/// delta-rs's conflict checking, as a purge commit meets it: committing on a snapshot that
/// another writer has since appended to succeeds after the append (a blind append does not
/// conflict); one on a snapshot whose files another writer has since removed (the purge read
/// them all) is a conflict (the purge then plans again), never a commit that would bring a
/// removed file back.
#[tokio::test(flavor = "multi_thread")]
async fn delta_commit_conflicts_with_a_removal_not_with_an_append() {
    use lakepurge::table::{Changes, Committed, Replacement, Snapshot, Table};
    let ws = tempfile::tempdir().unwrap();
    let job = setup(ws.path(), "");
    let path = ws.path().join("wh/users");
    let job = lakepurge::spec::Job::load(Path::new(&job)).unwrap();
    let table = &Table::resolve_all(&job).await.unwrap()[0];
    let log = table.format.log().expect("a Delta table has a log");
    let snapshot = log.snapshot(table).await.unwrap();
    let changes = |snapshot: &Snapshot, app: &str| Changes {
        replaced: vec![Replacement {
            old: snapshot.files[0].path.clone(),
            new: None,
        }],
        key: app.into(),
        job: "lake".into(),
        run_id: app.into(),
        manifest: String::new(),
    };
    run_python(
        "appending",
        "import sys, pyarrow as pa\nfrom deltalake import DeltaTable, write_deltalake\n\
         t = DeltaTable(sys.argv[1]).to_pyarrow_table().slice(0, 3)\n\
         write_deltalake(sys.argv[1], t, mode='append', partition_by=['dt'])\n",
        &[&path],
    );
    match log
        .commit(table, &snapshot, changes(&snapshot, "t1"))
        .await
        .unwrap()
    {
        Committed::Version(v) => assert_eq!(v, snapshot.version + 2),
        Committed::Conflict(why) => panic!("a blind append conflicted: {why}"),
    }
    let snapshot = log.snapshot(table).await.unwrap();
    // Another writer's DELETE rewrites every file holding user 900001: all of them.
    run_python(
        "deleting",
        "import sys\nfrom deltalake import DeltaTable\nDeltaTable(sys.argv[1]).delete('user_id = 900001')\n",
        &[&path],
    );
    let before = commit_text(&path, snapshot.version + 1);
    match log
        .commit(table, &snapshot, changes(&snapshot, "t2"))
        .await
        .unwrap()
    {
        Committed::Conflict(_) => {}
        Committed::Version(v) => panic!("committed version {v} over a removal it read"),
    }
    assert!(
        !path
            .join(format!("_delta_log/{:020}.json", snapshot.version + 2))
            .exists()
    );
    assert_eq!(commit_text(&path, snapshot.version + 1), before);
}
