//! Table formats with a log of their own (Delta Lake, Iceberg, Hudi) are never rewritten
//! behind it: a `format = "parquet"` table spec whose location is, holds or lies inside one is
//! refused by validate, plan and purge (exit 2, nothing written), with a message naming the
//! format. Tables written by the `deltalake` and `pyiceberg` packages; Hudi's layout by hand
//! (it has no Python writer here).

use std::path::Path;

use serde_json::json;

use crate::common::*;

/// Writes, under `argv[1]`: a partitioned Delta table of two commits (`delta/`), an Iceberg
/// table through a SQL catalog (its root printed on stdout), and a Hudi-like folder (`hudi/`).
const WRITE_TABLE_FORMATS: &str = r#"
import os, sys
import pyarrow as pa, pyarrow.parquet as pq
from deltalake import write_deltalake
from pyiceberg.catalog.sql import SqlCatalog
out = sys.argv[1]
t = pa.table({"user_id": pa.array([1, 2, 3], pa.int64()), "dt": ["a", "a", "b"]})
write_deltalake(f"{out}/delta", t, partition_by=["dt"])
write_deltalake(f"{out}/delta", t, mode="append", partition_by=["dt"])
os.makedirs(f"{out}/iceberg", exist_ok=True)
catalog = SqlCatalog("local", uri=f"sqlite:///{out}/catalog.db", warehouse=f"file://{out}/iceberg")
catalog.create_namespace("db")
table = catalog.create_table("db.users", schema=t.schema)
table.append(t)
os.makedirs(f"{out}/hudi/.hoodie", exist_ok=True)
open(f"{out}/hudi/.hoodie/hoodie.properties", "w").write("hoodie.table.name=users\n")
pq.write_table(t, f"{out}/hudi/part-0.parquet")
print(table.location().removeprefix("file://"))
"#;

/// Runs validate, plan and purge of a job whose one table is at `location`: each must exit 2
/// naming `format`, and nothing under `root` may change.
fn assert_refused(ws: &Path, root: &Path, location: &Path, format: &str, inside: bool) {
    let job = ws.join("job.toml");
    write(
        &job,
        &user_id_job(
            "formats",
            &file_url(&ws.join("manifests")),
            &file_url(&ws.join("events")),
            &file_url(location),
        ),
    );
    let job = job.to_str().unwrap();
    let before = tree_hashes(root);
    for args in [
        vec!["validate", "--job", job],
        vec!["plan", "--job", job],
        vec!["purge", "--job", job, "--run-id", "r1"],
    ] {
        let run = lakepurge(&args);
        assert_eq!(run.code, 2, "{format} at {}: {args:?}", location.display());
        let said = if inside {
            format!("inside the {format} table")
        } else {
            format!("is a {format} table")
        };
        assert!(run.stderr.contains(&said), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("never rewrites"), "{}", run.stderr);
    }
    assert_eq!(tree_hashes(root), before, "{format}: something was written");
    assert!(!ws.join("manifests").exists());
}

#[test]
fn table_formats_with_a_log_are_refused_never_rewritten() {
    let ws = tempfile::tempdir().unwrap();
    let wh = ws.path().join("wh");
    std::fs::create_dir_all(&wh).unwrap();
    let out = run_python(
        "writing Delta, Iceberg and Hudi tables",
        WRITE_TABLE_FORMATS,
        &[&wh],
    );
    let iceberg = Path::new(out.trim());
    assert!(iceberg.join("metadata").is_dir(), "{}", iceberg.display());
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", json!("2"))],
    );
    // The table's root, a partition inside it, and (Iceberg) its data folder.
    assert_refused(ws.path(), &wh, &wh.join("delta"), "Delta Lake", false);
    assert_refused(ws.path(), &wh, &wh.join("delta/dt=a"), "Delta Lake", true);
    assert_refused(ws.path(), &wh, iceberg, "Iceberg", false);
    assert_refused(ws.path(), &wh, &iceberg.join("data"), "Iceberg", true);
    assert_refused(ws.path(), &wh, &wh.join("hudi"), "Hudi", false);
}

#[test]
fn a_folder_holding_a_delta_table_is_refused() {
    let ws = tempfile::tempdir().unwrap();
    let wh = ws.path().join("wh");
    std::fs::create_dir_all(&wh).unwrap();
    let script = "import sys, pyarrow as pa\nfrom deltalake import write_deltalake\n\
        write_deltalake(sys.argv[1] + '/sales', pa.table({'user_id': pa.array([1, 2], pa.int64())}))\n";
    run_python("writing a Delta table", script, &[&wh]);
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", json!("2"))],
    );
    // The warehouse folder above the table: its listing shows sales/_delta_log.
    assert_refused(ws.path(), &wh, &wh, "Delta Lake", false);
}
