//! `format = "iceberg"`: tables written by pyiceberg through its SQL catalog on SQLite
//! (partitioned, several appends, a schema change, an overwrite, a file of one subject only)
//! are purged through the catalog. Afterwards pyiceberg reads exactly the oracle's rows at the
//! current snapshot; every snapshot left is readable and holds no erased row; no file on disk
//! holds one; no manifest left names an erased value in its bounds; the metadata is valid
//! (pyiceberg loads it, its `inspect` tables agree with the files); the purge snapshot's
//! summary names the run, never a subject. A second run commits nothing; a crash on either
//! side of the commit, a catalog that does not swap, and another writer's commit between the
//! plan and the commit all end in one purge snapshot and the same rows.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

/// Writes the table `crm.users` of catalog `prod` (SQLite database `argv[1]`, warehouse
/// `argv[2]`, extra catalog properties as JSON in `argv[3]`, format version `argv[4]`, default
/// 2). `user_id` is 900000 + seq % 7,
/// but for the last append, of user 900099 only.
pub(crate) const WRITE_ICEBERG: &str = r#"
import sys, os, json
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, LongType, StringType, IntegerType
from pyiceberg.partitioning import PartitionSpec, PartitionField
from pyiceberg.transforms import IdentityTransform
from pyiceberg.expressions import LessThan
db, warehouse = sys.argv[1], sys.argv[2]
props = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
version = sys.argv[4] if len(sys.argv) > 4 else "2"
cat = SqlCatalog("prod", uri=f"sqlite:///{db}", warehouse=warehouse, **props)
cat.create_namespace("crm")
schema = Schema(
    NestedField(1, "user_id", LongType(), required=False),
    NestedField(2, "seq", LongType(), required=False),
    NestedField(3, "email", StringType(), required=False),
    NestedField(4, "region", StringType(), required=False),
)
spec = PartitionSpec(PartitionField(source_id=4, field_id=1000, transform=IdentityTransform(), name="region"))
t = cat.create_table("crm.users", schema=schema, partition_spec=spec, properties={"format-version": version})
def batch(start, n, user=None, score=False):
    seqs = list(range(start, start + n))
    users = [user if user else 900000 + s % 7 for s in seqs]
    cols = {
        "user_id": pa.array(users, pa.int64()),
        "seq": pa.array(seqs, pa.int64()),
        "email": pa.array([f"u{u}@example.com" for u in users]),
        "region": pa.array(["eu" if s % 2 else "us" for s in seqs]),
    }
    if score:
        cols["score"] = pa.array([s % 100 for s in seqs], pa.int32())
    return pa.table(cols)
t.append(batch(0, 40))
t.append(batch(40, 40))
with t.update_schema() as u:
    u.add_column("score", IntegerType())
t = cat.load_table("crm.users")
t.append(batch(80, 30, score=True))
t.overwrite(batch(1000, 4, score=True), overwrite_filter=LessThan("seq", 10))
t.append(batch(200, 5, user=900099, score=True))
os._exit(0)
"#;

/// Reads `crm.users` (arguments as [`WRITE_ICEBERG`], then the table's root as a pyarrow
/// filesystem URI) with pyiceberg: the current rows, every snapshot's users, the `inspect`
/// tables, and every Parquet and Avro file under the root; prints JSON.
const READ_ICEBERG: &str = r#"
import sys, os, json
import pyarrow.parquet as pq
import pyarrow.fs as pafs
from pyiceberg.catalog.sql import SqlCatalog
db, warehouse, props, root = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
cat = SqlCatalog("prod", uri=f"sqlite:///{db}", warehouse=warehouse, **props)
t = cat.load_table("crm.users")
cur = t.scan().to_arrow()
snapshots = {}
bounds = []
for s in t.metadata.snapshots:
    try:
        a = t.scan(snapshot_id=s.snapshot_id).to_arrow()
        snapshots[str(s.snapshot_id)] = sorted(set(a.column("user_id").to_pylist()))
    except Exception as e:
        snapshots[str(s.snapshot_id)] = "unreadable: " + repr(e)
    for e in t.inspect.entries(snapshot_id=s.snapshot_id).to_pylist():
        m = (e.get("readable_metrics") or {}).get("user_id") or {}
        bounds += [m.get("lower_bound"), m.get("upper_bound")]
        bounds += list((e.get("data_file") or {}).get("partition", {}).values())
files = t.inspect.files().to_pylist()
referenced = set(m["path"] for m in t.inspect.all_manifests().to_pylist())
referenced |= set(s.manifest_list for s in t.metadata.snapshots)
if root.startswith("s3://"):
    fs = pafs.S3FileSystem(endpoint_override=props["s3.endpoint"], access_key=props["s3.access-key-id"],
        secret_key=props["s3.secret-access-key"], region="us-east-1", scheme="http")
    base = root[len("s3://"):].rstrip("/")
    prefix = "s3://"
else:
    fs = pafs.LocalFileSystem()
    base = root[len("file://"):].rstrip("/")
    prefix = "file://"
on_disk = {}
avro = []
for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
    if info.type != pafs.FileType.File:
        continue
    rel = info.path[len(base) + 1:]
    if rel.endswith(".parquet"):
        with fs.open_input_file(info.path) as f:
            users = pq.read_table(f).column("user_id").to_pylist()
        on_disk[rel] = {"users": sorted(set(users)), "rows": len(users), "size": info.size}
    elif rel.endswith(".avro"):
        avro.append(prefix + info.path)
summaries = [dict(s.summary.additional_properties, operation=str(s.summary.operation)) for s in t.metadata.snapshots]
print(json.dumps({
    "current": t.metadata.current_snapshot_id,
    "seqs": sorted(cur.column("seq").to_pylist()),
    "users": sorted(set(cur.column("user_id").to_pylist())),
    "scores": sorted(x for x in cur.column("score").to_pylist() if x is not None),
    "snapshots": snapshots,
    "bounds": [str(b) for b in bounds if b is not None],
    "files": [{"path": f["file_path"], "rows": f["record_count"], "size": f["file_size_in_bytes"]} for f in files],
    "on_disk": on_disk,
    "avro_unreferenced": sorted(a for a in avro if a not in referenced),
    "summaries": summaries,
}, default=str))
sys.stdout.flush()
os._exit(0)
"#;

/// The subjects every test erases: one in every mixed file, and the only one of two files.
pub(crate) const ERASED: [i64; 2] = [900006, 900099];

/// The rows (`seq`) left after the purge: what pyiceberg wrote, less the erased subjects.
fn oracle() -> Vec<i64> {
    let mut seqs: Vec<i64> = (10..110).chain(1000..1004).collect();
    seqs.retain(|s| 900000 + s % 7 != ERASED[0]);
    seqs
}

/// An Iceberg table written by pyiceberg in `ws` (catalog `ws/cat.db`, warehouse `ws/wh`):
/// the catalog URI, and the table's root.
fn write_table(ws: &Path) -> (String, std::path::PathBuf) {
    write_version(ws, "2")
}

/// [`write_table`] in format `version`.
fn write_version(ws: &Path, version: &str) -> (String, std::path::PathBuf) {
    let db = ws.join("cat.db");
    let wh = ws.join("wh");
    std::fs::create_dir_all(&wh).unwrap();
    run_python(
        "writing an Iceberg table with pyiceberg",
        WRITE_ICEBERG,
        &[db.to_str().unwrap(), &file_url(&wh), "{}", version],
    );
    (format!("sqlite:///{}", db.display()), wh.join("crm/users"))
}

/// The table read back by pyiceberg (see [`READ_ICEBERG`]).
fn read(ws: &Path, table: &Path) -> Value {
    read_at(ws, &file_url(&ws.join("wh")), "{}", &file_url(table))
}

/// [`read`] of a table in warehouse `wh` with catalog properties `props` (JSON), at `root`.
fn read_at(ws: &Path, wh: &str, props: &str, root: &str) -> Value {
    let out = run_python(
        "reading the Iceberg table with pyiceberg",
        READ_ICEBERG,
        &[ws.join("cat.db").to_str().unwrap(), wh, props, root],
    );
    serde_json::from_str(out.lines().last().unwrap_or_default()).unwrap()
}

/// A job over the table (events erasing [`ERASED`], manifests in `ws/manifests`).
fn ice_job(ws: &Path, catalog: &str, extra: &str) -> String {
    write_events(
        &ws.join("events/part-0.ndjson"),
        &[
            ("e1", "user_id", serde_json::json!(ERASED[0])),
            ("e2", "user_id", serde_json::json!(ERASED[1])),
        ],
    );
    let text = format!(
        r#"[job]
name = "lake"
manifests = "{}"
[events]
location = "{}"
format = "ndjson"
[[table]]
name = "users"
format = "iceberg"
identifier = "crm.users"
catalog = {{ type = "sql", uri = "{catalog}", name = "prod" }}
{extra}
[[table.match]]
column = "user_id"
subject_type = "user_id"
"#,
        file_url(&ws.join("manifests")),
        file_url(&ws.join("events")),
    );
    let path = ws.join("job.toml");
    write(&path, &text);
    path.display().to_string()
}

/// The snapshots whose summary names the run `run_id`.
fn purge_snapshots(read: &Value, run_id: &str) -> usize {
    read["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["lakepurge.run-id"] == run_id)
        .count()
}

/// Everything a purge promises of the table, as pyiceberg and the files show it.
fn check_purged(read: &Value) {
    let seqs: Vec<i64> = serde_json::from_value(read["seqs"].clone()).unwrap();
    assert_eq!(seqs, oracle(), "current snapshot rows");
    for (id, users) in read["snapshots"].as_object().unwrap() {
        let users = users
            .as_array()
            .unwrap_or_else(|| panic!("snapshot {id}: {users}"));
        for e in ERASED {
            assert!(
                !users.contains(&Value::from(e)),
                "snapshot {id} still reads user {e}"
            );
        }
    }
    for (file, f) in read["on_disk"].as_object().unwrap() {
        for e in ERASED {
            assert!(
                !f["users"].as_array().unwrap().contains(&Value::from(e)),
                "{file} on disk holds user {e}"
            );
        }
    }
    for b in read["bounds"].as_array().unwrap() {
        let b = b.as_str().unwrap();
        assert!(
            ERASED.iter().all(|e| b != e.to_string()),
            "a manifest left names erased value {b}"
        );
    }
    assert_eq!(
        read["avro_unreferenced"],
        Value::Array(vec![]),
        "manifests or manifest lists left that no snapshot uses"
    );
    // pyiceberg's files table agrees with the files.
    let on_disk = read["on_disk"].as_object().unwrap();
    let mut rows = 0;
    for f in read["files"].as_array().unwrap() {
        let path = f["path"].as_str().unwrap();
        let rel = path.split("/crm/users/").nth(1).unwrap();
        let disk = &on_disk[rel];
        assert_eq!(f["rows"], disk["rows"], "{rel}: record count");
        assert_eq!(f["size"], disk["size"], "{rel}: size");
        rows += f["rows"].as_u64().unwrap();
    }
    assert_eq!(rows as usize, oracle().len());
    for s in read["summaries"].as_array().unwrap() {
        let text = s.to_string();
        for e in ERASED {
            assert!(
                !text.contains(&e.to_string()),
                "a summary names {e}: {text}"
            );
        }
    }
}

#[test]
fn iceberg_table_is_purged_through_its_catalog() {
    purged_through_its_catalog("2");
}

#[test]
fn iceberg_v1_table_is_purged_through_its_catalog() {
    purged_through_its_catalog("1");
}

fn purged_through_its_catalog(version: &str) {
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_version(ws.path(), version);
    let before = read(ws.path(), &table);
    let before_location = catalog_location(ws.path());
    assert!(
        before["snapshots"].as_object().unwrap().len() >= 5,
        "{before}"
    );
    assert_eq!(
        before["avro_unreferenced"],
        Value::Array(vec![]),
        "{before}"
    );
    let job = ice_job(ws.path(), &catalog, "");
    let run = purge_json(&job, "r1", &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read(ws.path(), &table);
    check_purged(&after);
    assert_eq!(purge_snapshots(&after, "r1"), 1);
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    let t = &m["tables"][0];
    let ice = &t["iceberg"];
    assert!(ice["version"].is_u64(), "{t}");
    assert!(ice["snapshots_expired"].as_u64().unwrap() >= 1, "{t}");
    assert!(ice["metadata_files_deleted"].as_u64().unwrap() >= 1, "{t}");
    assert_eq!(t["files_deleted"], 2, "the two files of user 900099 only");
    // The snapshots not reading an erased row are kept: the current one, and the purge's.
    let current = after["current"].to_string();
    assert!(after["snapshots"].get(&current).is_some());
    // Rows removed are what the oracle lost.
    let removed: u64 = t["rows_removed"].as_u64().unwrap();
    let before_rows = before["seqs"].as_array().unwrap().len() as u64;
    assert_eq!(before_rows - removed, oracle().len() as u64);

    // A second run over the same events commits nothing and rewrites nothing.
    let again = purge_json(&job, "r2", &[], &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let m2 = read_json(&ws.path().join("manifests/lake/r2.json"));
    assert_eq!(m2["tables"][0]["files"], Value::Array(vec![]));
    assert!(m2["tables"][0]["iceberg"]["version"].is_null());
    assert_eq!(read(ws.path(), &table)["current"], after["current"]);

    let m = ws.path().join("manifests/lake/r1.json");
    let verified = lakepurge(&["verify", m.to_str().unwrap(), "--deep", "--job", &job]);
    assert_eq!(verified.code, 0, "{}", verified.all_output());
    assert!(
        verified.stdout.contains("Iceberg snapshot"),
        "{}",
        verified.stdout
    );

    // The catalog rolled back to the metadata from before the purge: its snapshots' files
    // are gone, and verify says so.
    set_catalog(ws.path(), &before_location);
    let verified = lakepurge(&["verify", m.to_str().unwrap(), "--job", &job]);
    assert_eq!(verified.code, 3, "{}", verified.all_output());
    assert!(
        verified.stdout.contains("rolled back"),
        "{}",
        verified.stdout
    );
    let deep = lakepurge(&["verify", m.to_str().unwrap(), "--deep", "--job", &job]);
    assert_eq!(deep.code, 3, "{}", deep.all_output());
}

/// Points the catalog at `ws/cat.db` to the metadata at `location` (as a rollback would).
fn set_catalog(ws: &Path, location: &str) {
    let sql = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
               c.execute('UPDATE iceberg_tables SET metadata_location = ?', (sys.argv[2],))\n\
               c.commit()\n";
    run_python(
        "setting the catalog",
        sql,
        &[ws.join("cat.db").to_str().unwrap(), location],
    );
}

/// The metadata location the catalog at `ws/cat.db` names.
fn catalog_location(ws: &Path) -> String {
    let sql = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
               print(c.execute('SELECT metadata_location FROM iceberg_tables').fetchone()[0])\n";
    run_python("the catalog", sql, &[ws.join("cat.db")])
        .trim()
        .to_string()
}

#[test]
fn iceberg_crash_around_the_commit_resumes_to_one_snapshot() {
    for point in ["after_intent=1", "after_commit=1"] {
        let ws = tempfile::tempdir().unwrap();
        let (catalog, table) = write_table(ws.path());
        let job = ice_job(ws.path(), &catalog, "");
        let crashed = lakepurge_env(
            &["purge", "--job", &job, "--run-id", "r1"],
            &[("LAKEPURGE_FAILPOINT", point)],
        );
        assert_ne!(crashed.code, 0, "{point}: the failpoint did not fire");
        let resumed = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
        assert_eq!(resumed.code, 0, "{point}: {}", resumed.stderr);
        let after = read(ws.path(), &table);
        assert_eq!(purge_snapshots(&after, "r1"), 1, "{point}");
        check_purged(&after);
        let m = ws.path().join("manifests/lake/r1.json");
        let verified = lakepurge(&["verify", m.to_str().unwrap(), "--deep", "--job", &job]);
        assert_eq!(verified.code, 0, "{point}: {}", verified.all_output());
    }
}

/// The catalog does not swap: a trigger makes the `UPDATE` change nothing while SQLite still
/// answers success. That is never taken for a commit: the first time it is a conflict and the
/// table is planned again (the second swap goes through); when it never swaps, the run fails
/// with nothing committed and none of its files left.
#[test]
fn iceberg_catalog_that_does_not_swap_is_no_commit() {
    let ignore = |n: u32| {
        format!(
            "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
             c.execute('CREATE TABLE IF NOT EXISTS ignored (n INTEGER)')\n\
             c.execute('DELETE FROM ignored')\nc.execute('INSERT INTO ignored VALUES ({n})')\n\
             c.execute('CREATE TRIGGER IF NOT EXISTS no_swap BEFORE UPDATE ON iceberg_tables \
             WHEN (SELECT n FROM ignored) > 0 BEGIN UPDATE ignored SET n = n - 1; \
             SELECT RAISE(IGNORE); END')\nc.commit()\n"
        )
    };
    // Once: a conflict, planned again, committed.
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_table(ws.path());
    let db = ws.path().join("cat.db");
    run_python("a catalog that ignores one swap", &ignore(1), &[&db]);
    let job = ice_job(ws.path(), &catalog, "");
    let run = purge_json(&job, "r1", &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("conflict"), "{}", run.stderr);
    let after = read(ws.path(), &table);
    assert_eq!(purge_snapshots(&after, "r1"), 1);
    check_purged(&after);

    // Always: exit 1, the table as it was, no file of the run left.
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_table(ws.path());
    let db = ws.path().join("cat.db");
    run_python("a catalog that ignores every swap", &ignore(1000), &[&db]);
    let before_files = tree_hashes(&table);
    let job = ice_job(ws.path(), &catalog, "");
    let run = purge_json(&job, "r1", &[], &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let after = read(ws.path(), &table);
    assert_eq!(purge_snapshots(&after, "r1"), 0);
    let left: BTreeSet<String> = tree_hashes(&table)
        .into_keys()
        .filter(|f| !before_files.contains_key(f))
        .collect();
    assert!(
        left.is_empty(),
        "files of a commit that never happened: {left:?}"
    );
    assert_eq!(tree_hashes(&table), before_files);
}

/// Another writer commits between the plan (a crashed first attempt) and the commit: it
/// appends rows of an erased subject and overwrites rows of a file the purge had planned to
/// rewrite. The resumed run plans again from the new snapshot: the appended rows are erased
/// too, and the other writer's change is kept.
#[test]
fn iceberg_writer_between_plan_and_commit() {
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_table(ws.path());
    let job = ice_job(ws.path(), &catalog, "");
    let crashed = lakepurge_env(
        &["purge", "--job", &job, "--run-id", "r1"],
        &[("LAKEPURGE_FAILPOINT", "after_intent=1")],
    );
    assert_ne!(crashed.code, 0);
    let other = r#"
import sys, os
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo
cat = SqlCatalog("prod", uri=f"sqlite:///{sys.argv[1]}", warehouse=sys.argv[2])
t = cat.load_table("crm.users")
t.delete(EqualTo("seq", 11))
seqs = [2000, 2001, 2008]
t.append(pa.table({
    "user_id": pa.array([900000 + s % 7 for s in seqs], pa.int64()),
    "seq": pa.array(seqs, pa.int64()),
    "email": pa.array(["x@example.com"] * 3),
    "region": pa.array(["eu", "us", "eu"]),
    "score": pa.array([1, 2, 3], pa.int32()),
}))
os._exit(0)
"#;
    run_python(
        "another writer",
        other,
        &[
            ws.path().join("cat.db").to_str().unwrap(),
            &file_url(&ws.path().join("wh")),
        ],
    );
    let resumed = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let after = read(ws.path(), &table);
    assert_eq!(purge_snapshots(&after, "r1"), 1);
    let seqs: Vec<i64> = serde_json::from_value(after["seqs"].clone()).unwrap();
    // 2001 and 2008 are of user 900006: erased too.
    let mut expected: Vec<i64> = oracle().into_iter().filter(|s| *s != 11).collect();
    expected.push(2000);
    expected.sort();
    assert_eq!(seqs, expected);
    let users: Vec<i64> = serde_json::from_value(after["users"].clone()).unwrap();
    assert!(!users.contains(&ERASED[0]) && !users.contains(&ERASED[1]));
}

#[test]
fn iceberg_table_misregistered_is_refused() {
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_table(ws.path());
    let before = tree_hashes(&table);
    // A location that is not the table's, a table the catalog lacks, a missing database.
    for (extra, catalog, said) in [
        (
            format!(
                "location = \"{}\"",
                file_url(&ws.path().join("wh/crm/other"))
            ),
            catalog.clone(),
            "is not the Iceberg table's location",
        ),
        (String::new(), format!("{catalog}x"), "no SQLite database"),
    ] {
        let job = ice_job(ws.path(), &catalog, &extra);
        let run = lakepurge(&["purge", "--job", &job, "--run-id", "bad"]);
        assert_eq!(run.code, 2, "{}", run.all_output());
        assert!(run.stderr.contains(said), "{said}: {}", run.stderr);
    }
    let job_text = std::fs::read_to_string(ice_job(ws.path(), &catalog, "")).unwrap();
    write(
        &ws.path().join("job.toml"),
        &job_text.replace("crm.users", "crm.nobody"),
    );
    let run = lakepurge(&[
        "purge",
        "--job",
        ws.path().join("job.toml").to_str().unwrap(),
        "--run-id",
        "bad",
    ]);
    assert_eq!(run.code, 2, "{}", run.all_output());
    assert!(run.stderr.contains("no table crm.nobody"), "{}", run.stderr);
    assert_eq!(tree_hashes(&table), before);
    assert!(
        !ws.path().join("manifests/lake/bad.json").exists(),
        "a refused run wrote a manifest"
    );
}

/// The same table on S3 (moto), its catalog on SQLite: purged exactly, history included, and
/// verified deeply, with the store configured from the environment.
#[test]
fn iceberg_table_on_s3_is_purged_through_its_catalog() {
    use crate::s3::Moto;
    let moto = Moto::start();
    let ws = tempfile::tempdir().unwrap();
    let (props, job) = s3_table(&moto, ws.path());
    let run = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read_at(ws.path(), "s3://lake/wh", &props, "s3://lake/wh/crm/users");
    check_purged(&after);
    assert_eq!(purge_snapshots(&after, "r1"), 1);
    let m = ws.path().join("manifests/lake/r1.json");
    let manifest = read_json(&m);
    assert!(
        manifest["tables"][0]["iceberg"]["snapshots_expired"]
            .as_u64()
            .unwrap()
            >= 1
    );
    let verified = moto.lakepurge(
        &["verify", m.to_str().unwrap(), "--deep", "--job", &job],
        &[],
    );
    assert_eq!(verified.code, 0, "{}", verified.all_output());
}

/// A match column renamed in the table's history (older files name it otherwise), or one the
/// schema lacks: exit 2 before anything is written.
#[test]
fn iceberg_renamed_or_missing_match_column_is_refused() {
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_table(ws.path());
    change(
        ws.path(),
        "renaming a column",
        "with t.update_schema() as u:\n    u.rename_column('user_id', 'uid')\n",
    );
    let before = tree_hashes(&table);
    let job = ice_job(ws.path(), &catalog, "");
    for (column, said) in [
        ("uid", "was named \"user_id\""),
        ("user_id", "no such column"),
    ] {
        let text = std::fs::read_to_string(&job)
            .unwrap()
            .replace("column = \"user_id\"", &format!("column = \"{column}\""));
        write(Path::new(&job), &text);
        let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
        assert_eq!(run.code, 2, "{column}: {}", run.all_output());
        assert!(run.stderr.contains(said), "{column}: {}", run.stderr);
        let text = text.replace(&format!("column = \"{column}\""), "column = \"user_id\"");
        write(Path::new(&job), &text);
    }
    assert_eq!(tree_hashes(&table), before);
}

/// Store faults on S3 while the purge writes the table's metadata and deletes its old files
/// (through the fault proxy in front of moto): a lost answer to the create-only put of the new
/// metadata (the retried put finds the run's own bytes), a 503 on a manifest list, a reset on
/// the catalog-side read-back... Every run ends with the same claims true: one purge snapshot,
/// exact rows, no erased row anywhere; a run that fails records nothing and a rerun finishes.
#[test]
fn iceberg_on_s3_store_faults_keep_every_claim_true() {
    use crate::proxy::FaultProxy;
    use crate::s3::Moto;
    for rule in [
        serde_json::json!({"kind": "cond_put", "fault": "lost", "count": 1, "match": ".metadata.json"}),
        serde_json::json!({"kind": "cond_put", "fault": "status", "status": 503, "count": 1, "match": "/snap-"}),
        serde_json::json!({"kind": "delete", "fault": "status", "status": 403, "code": "AccessDenied", "count": 1, "match": ".parquet"}),
        serde_json::json!({"kind": "delete", "fault": "lost", "count": 1, "match": ".avro"}),
    ] {
        let moto = Moto::start();
        let proxy = FaultProxy::start(&moto.endpoint());
        let ws = tempfile::tempdir().unwrap();
        let (props, job) = s3_table(&moto, ws.path());
        proxy.inject(rule.clone());
        let args = ["purge", "--job", job.as_str(), "--run-id", "r1"];
        let run = moto.lakepurge_via(&proxy.endpoint(), &args, &[]);
        assert!(proxy.faults_fired() >= 1, "{rule}: the fault never fired");
        if run.code != 0 {
            assert!(run.code == 1 || run.code == 2, "{rule}: exit {}", run.code);
            assert!(
                !ws.path().join("manifests/lake/r1.json").exists(),
                "{rule}: a failed run left its manifest"
            );
            proxy.clear();
            let again = moto.lakepurge_via(&proxy.endpoint(), &args, &[]);
            assert_eq!(again.code, 0, "{rule}: the rerun: {}", again.stderr);
        }
        let after = read_at(ws.path(), "s3://lake/wh", &props, "s3://lake/wh/crm/users");
        check_purged(&after);
        assert_eq!(purge_snapshots(&after, "r1"), 1, "{rule}");
        let m = ws.path().join("manifests/lake/r1.json");
        let verified = moto.lakepurge(
            &["verify", m.to_str().unwrap(), "--deep", "--job", &job],
            &[],
        );
        assert_eq!(verified.code, 0, "{rule}: {}", verified.all_output());
    }
}

/// The table written by pyiceberg to `s3://lake/wh` on `moto`, its catalog at `ws/cat.db`:
/// the catalog properties pyiceberg needs (JSON) and the job over it.
fn s3_table(moto: &crate::s3::Moto, ws: &Path) -> (String, String) {
    let props = serde_json::json!({
        "s3.endpoint": moto.endpoint(),
        "s3.access-key-id": "test",
        "s3.secret-access-key": crate::s3::SECRET,
        "s3.region": "us-east-1",
    })
    .to_string();
    let db = ws.join("cat.db");
    run_python(
        "writing an Iceberg table on S3 with pyiceberg",
        WRITE_ICEBERG,
        &[db.to_str().unwrap(), "s3://lake/wh", &props],
    );
    let job = ice_job(ws, &format!("sqlite:///{}", db.display()), "");
    (props, job)
}

/// A table whose current snapshot has a position delete file (written here with the `iceberg`
/// crate, as pyiceberg writes none): `validate`, `plan` and `purge` refuse it with exit 2 and
/// nothing is written, since the rows such a file hides are still in the data files.
#[tokio::test(flavor = "multi_thread")]
async fn iceberg_delete_files_are_refused_before_anything_is_written() {
    use iceberg::io::FileIO;
    use iceberg::spec::{
        DataContentType, DataFileBuilder, DataFileFormat, MAIN_BRANCH, ManifestList,
        ManifestListWriter, ManifestWriterBuilder, Operation, Snapshot, Summary, TableMetadata,
    };
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_table(ws.path());
    let db = ws.path().join("cat.db");
    let sql = "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1])\n\
               print(c.execute('SELECT metadata_location FROM iceberg_tables').fetchone()[0])\n";
    let loc = run_python("the catalog", sql, &[&db]).trim().to_string();
    let local = |uri: &str| std::path::PathBuf::from(uri.strip_prefix("file://").unwrap());
    let metadata: TableMetadata =
        serde_json::from_slice(&std::fs::read(local(&loc)).unwrap()).unwrap();
    let current = metadata.current_snapshot().unwrap();
    let memory = FileIO::new_with_memory();
    let stage = |path: &str| {
        let bytes = std::fs::read(local(path)).unwrap();
        let out = memory.new_output(path).unwrap();
        async move { out.write(bytes.into()).await.unwrap() }
    };
    let list_bytes = std::fs::read(local(current.manifest_list())).unwrap();
    let list = ManifestList::parse_with_version(&list_bytes, metadata.format_version()).unwrap();
    let first = list.entries()[0].clone();
    stage(&first.manifest_path).await;
    let manifest = first.load_manifest(&memory).await.unwrap();
    let data = manifest.entries()[0].data_file().clone();
    let spec = manifest.metadata().partition_spec().clone();
    let (id, seq, base) = (4242, metadata.next_sequence_number(), metadata.location());
    let deletes = format!("{base}/metadata/deletes-m0.avro");
    let mut writer = ManifestWriterBuilder::new(
        memory.new_output(&deletes).unwrap(),
        Some(id),
        metadata.current_schema().clone(),
        spec.clone(),
    )
    .build_v2_deletes();
    let file = DataFileBuilder::default()
        .content(DataContentType::PositionDeletes)
        .file_path(format!("{base}/data/pos-deletes.parquet"))
        .file_format(DataFileFormat::Parquet)
        .partition(data.partition().clone())
        .partition_spec_id(spec.spec_id())
        .record_count(1)
        .file_size_in_bytes(100)
        .build()
        .unwrap();
    writer.add_file(file, seq).unwrap();
    let added = writer.write_manifest_file().await.unwrap();
    let read = |path: String| {
        let input = memory.new_input(&path).unwrap();
        async move {
            let bytes = input.read().await.unwrap();
            std::fs::write(local(&path), bytes).unwrap();
        }
    };
    read(deletes.clone()).await;
    let list_path = format!("{base}/metadata/snap-{id}-deletes.avro");
    let out = memory
        .new_output(&list_path)
        .unwrap()
        .writer()
        .await
        .unwrap();
    let mut lists = ManifestListWriter::v2(out, id, Some(current.snapshot_id()), seq);
    lists
        .add_manifests(list.entries().iter().cloned().chain([added]))
        .unwrap();
    lists.close().await.unwrap();
    read(list_path.clone()).await;
    let snapshot = Snapshot::builder()
        .with_snapshot_id(id)
        .with_parent_snapshot_id(Some(current.snapshot_id()))
        .with_sequence_number(seq)
        .with_timestamp_ms(chrono::Utc::now().timestamp_millis())
        .with_manifest_list(list_path)
        .with_summary(Summary {
            operation: Operation::Delete,
            additional_properties: Default::default(),
        })
        .with_schema_id(metadata.current_schema_id())
        .build();
    let next = metadata
        .clone()
        .into_builder(Some(loc.clone()))
        .set_branch_snapshot(snapshot, MAIN_BRANCH)
        .unwrap()
        .build()
        .unwrap()
        .metadata;
    let next_loc = format!("{base}/metadata/99999-deletes.metadata.json");
    std::fs::write(local(&next_loc), serde_json::to_vec(&next).unwrap()).unwrap();
    set_catalog(ws.path(), &next_loc);
    let before = tree_hashes(&table);
    let job = ice_job(ws.path(), &catalog, "");
    for args in [
        vec!["validate", "--job", &job],
        vec!["plan", "--job", &job],
        vec!["purge", "--job", &job, "--run-id", "r1"],
    ] {
        let run = lakepurge(&args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all_output());
        assert!(
            run.stderr.contains("delete files"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert_eq!(tree_hashes(&table), before);
    assert!(!ws.path().join("manifests/lake/r1.json").exists());
}

/// `old_files = "keep"`: the current snapshot is exact, nothing older is expired or deleted,
/// and the manifest counts what still reads erased rows (older snapshots, removed files).
#[test]
fn iceberg_old_files_kept_on_request_and_counted() {
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_table(ws.path());
    let before = read(ws.path(), &table);
    let before_location = catalog_location(ws.path());
    let job = ice_job(ws.path(), &catalog, "old_files = \"keep\"");
    let run = purge_json(&job, "r1", &[], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let after = read(ws.path(), &table);
    let seqs: Vec<i64> = serde_json::from_value(after["seqs"].clone()).unwrap();
    assert_eq!(seqs, oracle());
    let snapshots = after["snapshots"].as_object().unwrap();
    assert_eq!(
        snapshots.len(),
        before["snapshots"].as_object().unwrap().len() + 1
    );
    let reading_erased = snapshots
        .values()
        .filter(|users| users.as_array().unwrap().contains(&Value::from(ERASED[0])))
        .count() as u64;
    assert!(reading_erased >= 1);
    let m = read_json(&ws.path().join("manifests/lake/r1.json"));
    let ice = &m["tables"][0]["iceberg"];
    assert_eq!(
        ice["snapshots_remaining"].as_u64(),
        Some(reading_erased),
        "{ice}"
    );
    assert!(ice["snapshots_expired"].is_null(), "{ice}");
    assert_eq!(
        ice["old_files_remaining"],
        m["tables"][0]["files"].as_array().unwrap().len()
    );
    let path = ws.path().join("manifests/lake/r1.json");
    let verified = lakepurge(&["verify", path.to_str().unwrap(), "--deep", "--job", &job]);
    assert_eq!(verified.code, 0, "{}", verified.all_output());
    // Rolled back to the metadata from before the purge (kept under keep): not the purge's.
    set_catalog(ws.path(), &before_location);
    let verified = lakepurge(&["verify", path.to_str().unwrap(), "--job", &job]);
    assert_eq!(verified.code, 3, "{}", verified.all_output());
    assert!(
        verified.stdout.contains("does not list the purge"),
        "{}",
        verified.stdout
    );
}

/// Writes `crm.users` (arguments as [`WRITE_ICEBERG`]) with history another writer left.
/// `argv[4]` = `region`: partitioned by region, a copy-on-write delete leaves an older copy of
/// a file holding user 900006 that only the first snapshot names, and that snapshot also reads
/// a file the purge removes. `identity`: partitioned by `user_id`, with partition summaries in
/// the snapshot summaries, a delete of user 900006 whose deleted entries keep the file's
/// bounds and partition tuple, then the user's rows appended again. Prints the rows (`seq`)
/// that must remain.
const WRITE_HISTORY: &str = r#"
import sys, os, json
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, LongType, StringType, IntegerType
from pyiceberg.partitioning import PartitionSpec, PartitionField
from pyiceberg.transforms import IdentityTransform
from pyiceberg.expressions import EqualTo
db, warehouse, props, layout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
cat = SqlCatalog("prod", uri=f"sqlite:///{db}", warehouse=warehouse, **props)
cat.create_namespace("crm")
schema = Schema(
    NestedField(1, "user_id", LongType(), required=False),
    NestedField(2, "seq", LongType(), required=False),
    NestedField(3, "email", StringType(), required=False),
    NestedField(4, "region", StringType(), required=False),
    NestedField(5, "score", IntegerType(), required=False),
)
source = 1 if layout == "identity" else 4
spec = PartitionSpec(PartitionField(source_id=source, field_id=1000, transform=IdentityTransform(), name="p"))
properties = {"write.summary.partition-limit": "100", "write.metadata.previous-versions-max": "1"} if layout == "identity" else {}
t = cat.create_table("crm.users", schema=schema, partition_spec=spec, properties=properties)
def batch(users, start):
    n = len(users)
    return pa.table({
        "user_id": pa.array(users, pa.int64()),
        "seq": pa.array(range(start, start + n), pa.int64()),
        "email": pa.array([f"u{u}@example.com" for u in users]),
        "region": pa.array(["eu" if i % 2 else "us" for i in range(n)]),
        "score": pa.array([i for i in range(n)], pa.int32()),
    })
if layout == "identity":
    t.append(batch([1, 900006, 2, 900006, 3, 4], 0))
    t.delete(EqualTo("seq", 0))
    t.append(batch([5, 6], 100))
    t.delete(EqualTo("user_id", 900006))
    t.append(batch([7, 900006, 8, 900006], 200))
else:
    # us: 1, 900006, 3; eu: 900006, 900006, 4. The delete rewrites the eu file: its older copy
    # is named only by the first snapshot, which also reads the us file the purge removes.
    t.append(batch([1, 900006, 900006, 900006, 3, 4], 0))
    t.delete(EqualTo("seq", 5))
    t.append(batch([5, 6], 100))
rows = cat.load_table("crm.users").scan().to_arrow().to_pylist()
print(json.dumps(sorted(r["seq"] for r in rows if r["user_id"] != 900006)))
sys.stdout.flush()
os._exit(0)
"#;

/// History another writer left behind (P1, P3 and P6 of the review of #29): after the purge
/// no file on disk holds the erased user, no snapshot left reads or names it (deleted entries
/// included), and no metadata file left (JSON or Avro) names its id.
#[test]
fn iceberg_history_deleted_entries_and_summaries_hold_no_erased_value() {
    for layout in ["region", "identity"] {
        let ws = tempfile::tempdir().unwrap();
        let db = ws.path().join("cat.db");
        let wh = ws.path().join("wh");
        std::fs::create_dir_all(&wh).unwrap();
        let out = run_python(
            "writing an Iceberg table with history",
            WRITE_HISTORY,
            &[db.to_str().unwrap(), &file_url(&wh), "{}", layout],
        );
        let expected: Vec<i64> = serde_json::from_str(out.trim()).unwrap();
        let table = wh.join("crm/users");
        let job = ice_job(ws.path(), &format!("sqlite:///{}", db.display()), "");
        let run = purge_json(&job, "r1", &[], &[]);
        assert_eq!(run.code, 0, "{layout}: {}", run.stderr);
        let after = read(ws.path(), &table);
        let seqs: Vec<i64> = serde_json::from_value(after["seqs"].clone()).unwrap();
        assert_eq!(seqs, expected, "{layout}");
        for (id, users) in after["snapshots"].as_object().unwrap() {
            let users = users
                .as_array()
                .unwrap_or_else(|| panic!("{layout}: {id}: {users}"));
            assert!(
                !users.contains(&Value::from(ERASED[0])),
                "{layout}: snapshot {id}"
            );
        }
        for (file, f) in after["on_disk"].as_object().unwrap() {
            let users = f["users"].as_array().unwrap();
            assert!(
                !users.contains(&Value::from(ERASED[0])),
                "{layout}: {file} on disk"
            );
        }
        for b in after["bounds"].as_array().unwrap() {
            assert_ne!(
                b.as_str(),
                Some("900006"),
                "{layout}: a manifest left names it"
            );
        }
        assert_eq!(after["avro_unreferenced"], Value::Array(vec![]), "{layout}");
        for entry in std::fs::read_dir(table.join("metadata")).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with(".json") {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    !text.contains("900006"),
                    "{layout}: {} names it",
                    path.display()
                );
            }
        }
        let m = ws.path().join("manifests/lake/r1.json");
        let verified = lakepurge(&["verify", m.to_str().unwrap(), "--deep", "--job", &job]);
        assert_eq!(verified.code, 0, "{layout}: {}", verified.all_output());
    }
}

/// A branch other than main is refused before anything is written (expiring a snapshot it
/// stands on would drop its rows); a tag on a snapshot that reads erased rows goes with the
/// snapshot and the manifest names it.
#[test]
fn iceberg_branches_are_refused_and_tags_on_erased_snapshots_recorded() {
    for (kind, version) in [("branch", "2"), ("tag", "2"), ("tag", "1")] {
        let ws = tempfile::tempdir().unwrap();
        let (catalog, table) = write_version(ws.path(), version);
        change(
            ws.path(),
            "a ref",
            &format!(
                "first = t.metadata.snapshots[0].snapshot_id\n\
                 t.manage_snapshots().create_{kind}(first, 'old').commit()\n"
            ),
        );
        let before = tree_hashes(&table);
        let job = ice_job(ws.path(), &catalog, "");
        let run = purge_json(&job, "r1", &[], &[]);
        // A v1 table's refs cannot be kept by the metadata lakepurge writes for it.
        let refused = match (kind, version) {
            ("branch", _) => Some("branch other than main"),
            (_, "1") => Some("format v1 table with branches or tags"),
            _ => None,
        };
        if let Some(said) = refused {
            assert_eq!(run.code, 2, "{kind} v{version}: {}", run.all_output());
            assert!(run.stderr.contains(said), "{}", run.stderr);
            assert_eq!(tree_hashes(&table), before);
            continue;
        }
        assert_eq!(run.code, 0, "{}", run.stderr);
        check_purged(&read(ws.path(), &table));
        let m = read_json(&ws.path().join("manifests/lake/r1.json"));
        assert_eq!(
            m["tables"][0]["iceberg"]["refs_removed"],
            serde_json::json!(["old"])
        );
    }
}

/// A redact column that a partition spec takes values from (the partition tuple keeps its
/// value), and a match column whose name an older, other field had (older files hold that
/// field under the name): exit 2, nothing written.
#[test]
fn iceberg_redacting_a_partition_source_or_a_reused_name_is_refused() {
    let ws = tempfile::tempdir().unwrap();
    let (catalog, table) = write_table(ws.path());
    let before = tree_hashes(&table);
    let job = ice_job(
        ws.path(),
        &catalog,
        "action = \"redact\"\nredact = [\"region\"]",
    );
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 2, "{}", run.all_output());
    assert!(run.stderr.contains("partition source"), "{}", run.stderr);
    assert_eq!(tree_hashes(&table), before);
    change(
        ws.path(),
        "reusing a column name",
        "from pyiceberg.types import LongType\n\
         with t.update_schema() as u:\n    u.rename_column('user_id', 'old_uid')\n\
         t = cat.load_table('crm.users')\n\
         with t.update_schema() as u:\n    u.add_column('user_id', LongType())\n",
    );
    let before = tree_hashes(&table);
    let job = ice_job(ws.path(), &catalog, "");
    let run = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(run.code, 2, "{}", run.all_output());
    assert!(run.stderr.contains("was another column"), "{}", run.stderr);
    assert_eq!(tree_hashes(&table), before);
}

/// Runs `body` (Python, with `cat` the catalog and `t` the table `crm.users` of the workspace
/// `ws`) as another writer would.
fn change(ws: &Path, what: &str, body: &str) {
    let script = format!(
        "import sys, os\nfrom pyiceberg.catalog.sql import SqlCatalog\n\
         cat = SqlCatalog('prod', uri=f'sqlite:///{{sys.argv[1]}}', warehouse=sys.argv[2])\n\
         t = cat.load_table('crm.users')\n{body}os._exit(0)\n"
    );
    run_python(
        what,
        &script,
        &[
            ws.join("cat.db").to_str().unwrap(),
            &file_url(&ws.join("wh")),
        ],
    );
}
