//! `discover` on a warehouse written by pyarrow and the `deltalake` package: exactly the
//! expected findings, evidence counts equal to an independent pyarrow count, no subject id in
//! any output, proposed specs that validate and purge exactly the rows the oracle expects.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::*;

/// Writes the warehouse under `wh` and the Parquet events under `wh/events` (inside the root
/// discovery walks: it must not be reported).
const WAREHOUSE: &str = r#"
import sys, os
import pyarrow as pa, pyarrow.parquet as pq
from deltalake import write_deltalake
wh = sys.argv[1]
def put(rel, table):
    path = os.path.join(wh, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)
put("events/part-0.parquet", pa.table({
    "event_id": ["e1", "e2", "e3", "e4"],
    "subject_type": ["user_id", "user_id", "user_id", "email"],
    "subject_id": ["u-0001", "u-0002", "u-0003", "Alice@Example.org"],
    "requested_at": ["2026-11-20T00:00:00Z"] * 4}))
# Registered (user_id); referrer_uid holds erased ids and no rule covers it.
put("crm/users/part-0.parquet", pa.table({
    "user_id": ["u-0001", "u-0009", "u-0010", "u-0011", "u-0012"],
    "referrer_uid": ["u-0020", "u-0002", "u-0002", "u-0003", None],
    "plan": ["a", "b", "c", "d", "e"]}))
# Unregistered, hive-partitioned: erased ids in a struct field under another name.
visitor = pa.struct([("uid", pa.string()), ("country", pa.string())])
for dt, uids in [("2026-11-01", ["u-0001", "u-0001", "u-0050"]), ("2026-11-02", ["u-0003", "u-0060"])]:
    put(f"analytics/clicks/dt={dt}/part-0.parquet", pa.table({
        "visitor": pa.array([{"uid": u, "country": "FR"} for u in uids], visitor),
        "session_id": [f"s-{i}" for i in range(len(uids))]}))
# Unregistered: emails differently cased and padded.
put("marketing/leads/part-0.parquet", pa.table({
    "lead_id": pa.array([1, 2, 3], pa.int64()),
    "email": ["ALICE@example.org ", " alice@EXAMPLE.org", "bob@example.org"]}))
# Columns that look like ids but hold no erased value.
put("billing/invoices/part-0.parquet", pa.table({
    "account_id": pa.array([100, 200], pa.int64()), "customer_id": ["c-1", "c-2"],
    "amount": [1.5, 2.5]}))
# Hidden folders hold erased ids too: never looked at.
put(".staging/part-0.parquet", pa.table({"user_id": ["u-0001"]}))
put("_tmp/part-0.parquet", pa.table({"user_id": ["u-0002"]}))
# A Delta table (its log makes it one table).
write_deltalake(os.path.join(wh, "lake/orders"), pa.table({
    "order_id": pa.array([1, 2, 3], pa.int64()), "buyer_id": ["u-0002", "u-0099", "u-0098"]}))
"#;

/// Rows per (table folder, column) holding erased subjects, counted by pyarrow (emails
/// lowercased and trimmed), over every file.
const ORACLE: &str = r#"
import sys, json, pyarrow.dataset as ds
wh = sys.argv[1]
ids = {"u-0001", "u-0002", "u-0003"}
emails = {"alice@example.org"}
def rows(folder, get, wanted):
    t = ds.dataset(f"{wh}/{folder}", format="parquet", partitioning="hive").to_table()
    return sum(1 for r in t.to_pylist() if get(r) is not None and get(r) in wanted)
print(json.dumps({
    "crm/users referrer_uid": rows("crm/users", lambda r: r["referrer_uid"], ids),
    "analytics/clicks visitor.uid": rows("analytics/clicks", lambda r: r["visitor"]["uid"], ids),
    "marketing/leads email": rows("marketing/leads", lambda r: r["email"].strip().lower(), emails),
    "lake/orders buyer_id": rows("lake/orders", lambda r: r["buyer_id"], ids),
}))
"#;

fn job_text(ws: &Path, tables: &str) -> String {
    let root = file_url(ws);
    format!(
        r#"[job]
name = "gdpr"
manifests = "{root}manifests"
{tables}
[events]
location = "{root}wh/events"
format = "parquet"
"#
    )
}

const CRM: &str = r#"[[table]]
name = "crm.users"
location = "../wh/crm/users"
[[table.match]]
column = "user_id"
subject_type = "user_id"
"#;

fn discover(job: &str, root: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "discover",
        "--job",
        job,
        "--root",
        root,
        "--files-per-table",
        "0",
    ];
    args.extend_from_slice(extra);
    lakepurge(&args)
}

#[test]
fn discover_names_every_place_erased_subjects_live_and_proposes_specs_that_purge_them() {
    let dir = tempfile::tempdir().unwrap();
    let ws = std::path::absolute(dir.path()).unwrap();
    let wh = ws.join("wh");
    run_python("the warehouse", WAREHOUSE, &[&wh]);
    let oracle: Value = serde_json::from_str(&run_python("oracle", ORACLE, &[&wh])).unwrap();
    let job_path = ws.join("jobs/gdpr.toml");
    write(&job_path, &job_text(&ws, CRM));
    let job = job_path.to_str().unwrap();
    let root = file_url(&wh);
    let specs = ws.join("proposed");

    let run = discover(job, &root, &["--json", "--write", specs.to_str().unwrap()]);
    assert_eq!(
        run.code, 0,
        "findings alone do not fail without --fail-on-findings"
    );
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let tables = report["tables"].as_array().unwrap();
    let by_folder = |folder: &str| -> &Value {
        let url = format!("{root}{folder}/");
        tables
            .iter()
            .find(|t| t["location"] == json!(url))
            .unwrap_or_else(|| panic!("{folder} not reported: {tables:#?}"))
    };
    // Exactly these tables: the events, hidden folders and nothing else are left out.
    let mut found: Vec<&str> = tables
        .iter()
        .map(|t| t["location"].as_str().unwrap())
        .collect();
    found.sort();
    let expected: Vec<String> = [
        "analytics/clicks",
        "billing/invoices",
        "crm/users",
        "lake/orders",
        "marketing/leads",
    ]
    .iter()
    .map(|f| format!("{root}{f}/"))
    .collect();
    assert_eq!(found, expected);
    let evidence = |folder: &str| -> Vec<(String, String, u64, u64)> {
        by_folder(folder)["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["column"].as_str().unwrap().to_string(),
                    e["subject_type"].as_str().unwrap().to_string(),
                    e["rows"].as_u64().unwrap(),
                    e["files_with"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let n = |k: &str| oracle[k].as_u64().unwrap();
    // (b) the registered table's uncovered column; its covered user_id is not evidence.
    assert_eq!(by_folder("crm/users")["finding"], json!("uncovered"));
    assert_eq!(by_folder("crm/users")["name"], json!("crm.users"));
    assert_eq!(
        evidence("crm/users"),
        vec![(
            "referrer_uid".into(),
            "user_id".into(),
            n("crm/users referrer_uid"),
            1
        )]
    );
    // (a) unregistered tables: a struct field, cased emails, a Delta table.
    assert_eq!(
        by_folder("analytics/clicks")["finding"],
        json!("unregistered")
    );
    assert_eq!(
        evidence("analytics/clicks"),
        vec![(
            "visitor.uid".into(),
            "user_id".into(),
            n("analytics/clicks visitor.uid"),
            2
        )]
    );
    assert_eq!(
        evidence("marketing/leads"),
        vec![(
            "email".into(),
            "email".into(),
            n("marketing/leads email"),
            1
        )]
    );
    assert_eq!(by_folder("lake/orders")["format"], json!("delta_lake"));
    assert_eq!(
        evidence("lake/orders"),
        vec![(
            "buyer_id".into(),
            "user_id".into(),
            n("lake/orders buyer_id"),
            1
        )]
    );
    // (c) only: names like ids, no erased value.
    let invoices = by_folder("billing/invoices");
    assert!(invoices["finding"].is_null());
    assert_eq!(invoices["suspects"], json!(["account_id", "customer_id"]));
    assert!(by_folder("analytics/clicks")["suspects"] == json!(["session_id"]));
    assert_eq!(
        oracle
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        3 + 3 + 2 + 1
    );

    // No subject id or raw value in any output or proposed spec.
    let mut outputs = vec![run.all_output(), discover(job, &root, &[]).all_output()];
    for entry in std::fs::read_dir(&specs).unwrap() {
        outputs.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for text in &outputs {
        for secret in ["u-0001", "u-0002", "u-0003", "alice", "ALICE"] {
            assert!(!text.contains(secret), "{secret} in an output:\n{text}");
        }
    }
    // --fail-on-findings: exit 3 here.
    assert_eq!(discover(job, &root, &["--fail-on-findings"]).code, 3);

    // The written specs replace the registered one and add the others: they validate, and the
    // purge removes exactly the rows the oracle counted.
    let written: Vec<String> = tables
        .iter()
        .filter_map(|t| t["written"].as_str().map(str::to_string))
        .collect();
    assert_eq!(written.len(), 4, "{written:?}");
    let job2 = ws.join("jobs/proposed.toml");
    write(
        &job2,
        &job_text(&ws, &format!("tables = \"{}\"", specs.display())),
    );
    let job2 = job2.to_str().unwrap();
    assert_eq!(lakepurge(&["validate", "--job", job2]).code, 0);
    assert_eq!(
        lakepurge(&["purge", "--job", job2, "--run-id", "r1"]).code,
        0
    );
    let m = read_json(&ws.join("manifests/gdpr/r1.json"));
    let removed = |name: &str| {
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == json!(name))
            .unwrap()["rows_removed"]
            .as_u64()
            .unwrap()
    };
    // crm.users: its own rule (u-0001, one row) and the new one.
    assert_eq!(removed("crm.users"), 1 + n("crm/users referrer_uid"));
    assert_eq!(
        removed("analytics.clicks"),
        n("analytics/clicks visitor.uid")
    );
    assert_eq!(removed("marketing.leads"), n("marketing/leads email"));
    assert_eq!(removed("lake.orders"), n("lake/orders buyer_id"));
    let after: Value =
        serde_json::from_str(&run_python("oracle after the purge", ORACLE, &[&wh])).unwrap();
    assert!(
        after.as_object().unwrap().values().all(|v| v == &json!(0)),
        "{after}"
    );

    // Now clean: no finding, exit 0 with --fail-on-findings.
    let clean = discover(job2, &root, &["--fail-on-findings", "--json"]);
    assert_eq!(clean.code, 0, "{}", clean.stdout);
    let clean: Value = serde_json::from_str(&clean.stdout).unwrap();
    assert!(
        clean["tables"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["finding"].is_null())
    );
}
