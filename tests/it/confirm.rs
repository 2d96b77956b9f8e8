//! The confirmations dataset and `status`: events arriving over several runs, crashes and
//! resumes, read back by pyarrow and DuckDB, checked against an independent count.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use serde_json::{Value, json};

use crate::common::*;

/// Subjects and how many rows each has in `crm.users` (deleted) and `audit.log` (redacted).
const USERS: [(&str, usize, usize); 7] = [
    ("sub-alice-91f2", 3, 2),
    ("sub-bob-77c1", 2, 0),
    ("sub-carol-12aa", 1, 0),
    ("sub-dave-55e0", 4, 0),
    ("sub-erin-3b3b", 0, 1),
    ("sub-fay-8d8d", 1, 0),
    ("keep-me", 20, 10),
];

fn table_file(path: &Path, rows: impl Fn(&(&str, usize, usize)) -> usize) {
    let ids: Vec<String> = USERS
        .iter()
        .flat_map(|u| std::iter::repeat_n(u.0.to_string(), rows(u)))
        .collect();
    let emails: Vec<String> = ids.iter().map(|i| format!("{i}@example.org")).collect();
    let n = ids.len() as i64;
    let batch = RecordBatch::try_from_iter_with_nullable([
        (
            "user_id",
            Arc::new(StringArray::from(ids)) as ArrayRef,
            false,
        ),
        (
            "email",
            Arc::new(StringArray::from(emails)) as ArrayRef,
            true,
        ),
        (
            "n",
            Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
            false,
        ),
    ])
    .unwrap();
    write_parquet(path, &batch);
}

/// One NDJSON event file: (event id, subject id or null, requested_at or null).
fn events_file(path: &Path, rows: &[(&str, Value, Value)]) {
    let text: String = rows
        .iter()
        .map(|(id, subject, at)| {
            let row = json!({"event_id": id, "subject_type": "user_id", "subject_id": subject,
                             "requested_at": at});
            format!("{row}\n")
        })
        .collect();
    write(path, &text);
}

fn job_spec(ws: &Path) -> String {
    let root = file_url(ws);
    format!(
        r#"[job]
name = "gdpr"
manifests = "{root}manifests"
[events]
location = "{root}events"
format = "ndjson"
[[table]]
name = "crm.users"
location = "{root}warehouse/users"
[[table.match]]
column = "user_id"
subject_type = "user_id"
[[table]]
name = "audit.log"
location = "{root}warehouse/audit"
action = "redact"
redact = ["email"]
[[table.match]]
column = "user_id"
subject_type = "user_id"
"#
    )
}

fn purge(job: &str, run: &str, env: &[(&str, &str)]) -> Run {
    lakepurge_env(&["purge", "--job", job, "--run-id", run], env)
}

fn confirmations_dir(ws: &Path) -> std::path::PathBuf {
    ws.join("manifests/gdpr/confirmations")
}

/// The folder of a run's file: keyed by job, then run.
fn run_dir(ws: &Path, run: &str) -> std::path::PathBuf {
    confirmations_dir(ws).join(format!("job=gdpr/run_id={run}"))
}

/// The dataset read by pyarrow (`pq.read_table` over the folder, hive partitions included):
/// event id -> [status, removed, redacted, tables, run id, manifest sequence]; and its full text.
fn read_with_pyarrow(dir: &Path) -> (BTreeMap<String, Value>, String) {
    let script = "import sys, json, pyarrow.parquet as pq\n\
        t = pq.read_table(sys.argv[1])\n\
        rows = t.to_pylist()\n\
        ids = [r['event_id'] for r in rows]\n\
        assert len(ids) == len(set(ids)), 'an event confirmed twice'\n\
        out = {r['event_id']: [r['status'], r['rows_removed'], r['rows_redacted'], r['tables'], str(r['run_id']), r['manifest_sequence']] for r in rows}\n\
        print(json.dumps({'rows': out, 'text': str(t.to_pydict())}))\n";
    let out: Value = serde_json::from_str(&run_python("pyarrow", script, &[dir])).unwrap();
    let rows = out["rows"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (rows, out["text"].as_str().unwrap().to_string())
}

/// A workspace with the two tables (written from [`USERS`]) and the job over them.
fn workspace() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let ws = std::path::absolute(dir.path()).unwrap();
    table_file(&ws.join("warehouse/users/part-0.parquet"), |u| u.1);
    table_file(&ws.join("warehouse/audit/part-0.parquet"), |u| u.2);
    let job_path = ws.join("jobs/gdpr.toml");
    write(&job_path, &job_spec(&ws));
    (dir, job_path)
}

#[test]
fn each_event_is_confirmed_once_with_its_counts_over_runs_crashes_and_resumes() {
    let (dir, job_path) = workspace();
    let ws = std::path::absolute(dir.path()).unwrap();
    let job = job_path.to_str().unwrap();
    let at = |d: &str| json!(format!("2026-{d}T09:00:00Z"));

    // Run 1: a duplicate and a malformed event; one subject with no data.
    events_file(
        &ws.join("events/batch-1.json"),
        &[
            ("e-001", json!("sub-alice-91f2"), at("10-01")),
            ("e-001", json!("sub-alice-91f2"), at("10-01")),
            ("e-002", json!("sub-bob-77c1"), at("10-05")),
            ("e-003", json!("sub-zed-0000"), at("10-06")),
            ("e-004", Value::Null, at("10-06")),
        ],
    );
    assert_eq!(purge(job, "r1", &[]).code, 0);
    // Run 2: a new file repeating an event already confirmed.
    events_file(
        &ws.join("events/batch-2.json"),
        &[
            ("e-005", json!("sub-carol-12aa"), at("11-01")),
            ("e-001", json!("sub-alice-91f2"), at("10-01")),
            ("e-006", json!("sub-yan-0000"), at("11-02")),
        ],
    );
    assert_eq!(purge(job, "r2", &[]).code, 0);
    // Run 3 crashes mid-rewrite (no confirmation), then resumes.
    events_file(
        &ws.join("events/batch-3.json"),
        &[
            ("e-007", json!("sub-dave-55e0"), at("11-10")),
            ("e-008", json!("sub-erin-3b3b"), at("11-11")),
        ],
    );
    let crashed = purge(job, "r3", &[("LAKEPURGE_FAILPOINT", "after_commit=1")]);
    assert_ne!(crashed.code, 0);
    assert!(!run_dir(&ws, "r3").exists());
    assert_eq!(purge(job, "r3", &[]).code, 0);
    // Run 4 crashes between its confirmations and its manifest, then resumes: its file is
    // derived again (runs completed meanwhile could have confirmed its events) and replaced.
    events_file(
        &ws.join("events/batch-4.json"),
        &[("e-009", json!("sub-fay-8d8d"), at("11-20"))],
    );
    let crashed = purge(job, "r4", &[("LAKEPURGE_FAILPOINT", "after_confirmations")]);
    assert_ne!(crashed.code, 0);
    let r4_file = run_dir(&ws, "r4").join("part-0.parquet");
    assert!(r4_file.exists());
    assert!(!ws.join("manifests/gdpr/r4.json").exists());
    assert_eq!(purge(job, "r4", &[]).code, 0);
    let r4 = read_json(&ws.join("manifests/gdpr/r4.json"));
    assert_eq!(r4["confirmations"]["sha256"], json!(sha256_file(&r4_file)));
    assert_eq!(r4["confirmations"]["rows"], json!(1));
    // A rerun of a finished run id writes nothing.
    let before = tree_hashes(&confirmations_dir(&ws));
    assert_eq!(purge(job, "r4", &[]).code, 0);
    assert_eq!(tree_hashes(&confirmations_dir(&ws)), before);
    // Run 5 has no new event: no file.
    assert_eq!(purge(job, "r5", &[]).code, 0);
    let r5 = read_json(&ws.join("manifests/gdpr/r5.json"));
    assert_eq!(r5["confirmations"]["rows"], json!(0));
    assert!(r5["confirmations"]["file"].is_null());
    assert!(!run_dir(&ws, "r5").exists());

    // The independent expectation: rows per subject as written, the tables holding them.
    let count = |subject: &str| {
        USERS
            .iter()
            .find(|u| u.0 == subject)
            .map_or((0, 0), |u| (u.1, u.2))
    };
    let expect = |subject: &str, run: &str, seq: u64| {
        let (removed, redacted) = count(subject);
        let mut tables = Vec::new();
        if redacted > 0 {
            tables.push("audit.log");
        }
        if removed > 0 {
            tables.push("crm.users");
        }
        let status = if removed + redacted > 0 {
            "erased"
        } else {
            "no_data"
        };
        json!([status, removed, redacted, tables, run, seq])
    };
    let expected: BTreeMap<String, Value> = [
        ("e-001", "sub-alice-91f2", "r1", 1),
        ("e-002", "sub-bob-77c1", "r1", 1),
        ("e-003", "sub-zed-0000", "r1", 1),
        ("e-005", "sub-carol-12aa", "r2", 2),
        ("e-006", "sub-yan-0000", "r2", 2),
        ("e-007", "sub-dave-55e0", "r3", 3),
        ("e-008", "sub-erin-3b3b", "r3", 3),
        ("e-009", "sub-fay-8d8d", "r4", 4),
    ]
    .into_iter()
    .map(|(e, s, r, q)| (e.to_string(), expect(s, r, q)))
    .collect();
    let (rows, text) = read_with_pyarrow(&confirmations_dir(&ws));
    assert_eq!(rows, expected);
    // They agree with the manifests' per-event counts.
    for run in ["r1", "r2", "r3", "r4"] {
        let m = read_json(&ws.join(format!("manifests/gdpr/{run}.json")));
        for (event, n) in m["per_event"].as_object().unwrap() {
            let row = &rows[event];
            if row[4] == json!(run) {
                let total = row[1].as_u64().unwrap() + row[2].as_u64().unwrap();
                assert_eq!(json!(total), *n, "{event} in {run}");
            }
        }
        let verified = lakepurge(&[
            "verify",
            ws.join(format!("manifests/gdpr/{run}.json"))
                .to_str()
                .unwrap(),
        ]);
        assert_eq!(verified.code, 0, "{run}");
        assert!(verified.stdout.contains("confirmations"));
    }
    // No subject id anywhere in the dataset: raw bytes and decoded values.
    assert!(!text.contains("sub-"), "a subject id in the confirmations");
    for (rel, _) in tree_hashes(&confirmations_dir(&ws)) {
        let bytes = std::fs::read(confirmations_dir(&ws).join(rel)).unwrap();
        assert!(!bytes.windows(4).any(|w| w == b"sub-"));
    }
    // DuckDB reads the folder as one hive-partitioned table.
    let duck = run_python(
        "duckdb",
        "import sys, duckdb\n\
         r = duckdb.sql(f\"SELECT count(*), count(DISTINCT event_id), \
         count(*) FILTER (WHERE status = 'no_data'), string_agg(DISTINCT run_id, ',' ORDER BY run_id) \
         FROM read_parquet('{sys.argv[1]}/**/*.parquet', hive_partitioning = true)\").fetchall()[0]\n\
         print(list(r))\n",
        &[confirmations_dir(&ws)],
    );
    assert_eq!(duck.trim(), "[8, 8, 2, 'r1,r2,r3,r4']");

    check_status(&ws, job);
    // A second file confirming r1's events again, in r2's folder, is no confirmation (status
    // and the dataset's readers through lakepurge ignore it) and is caught by verify.
    std::fs::copy(
        run_dir(&ws, "r1").join("part-0.parquet"),
        run_dir(&ws, "r2").join("part-1.parquet"),
    )
    .unwrap();
    let verified = lakepurge(&[
        "verify",
        ws.join("manifests/gdpr/r2.json").to_str().unwrap(),
    ]);
    assert_eq!(verified.code, 3);
    assert!(
        verified
            .stdout
            .contains("confirmations: 1 objects in the run's folder are not its file")
            && verified.stdout.contains("run_id=r2/part-1.parquet"),
        "{}",
        verified.stdout
    );
    check_status(&ws, job);
    std::fs::remove_file(run_dir(&ws, "r2").join("part-1.parquet")).unwrap();
    // Another run's rows as r2's own file: caught as not the file r2's manifest recorded.
    let own = run_dir(&ws, "r2").join("part-0.parquet");
    std::fs::copy(run_dir(&ws, "r1").join("part-0.parquet"), &own).unwrap();
    let verified = lakepurge(&[
        "verify",
        ws.join("manifests/gdpr/r2.json").to_str().unwrap(),
    ]);
    assert_eq!(verified.code, 3);
    assert!(
        verified.stdout.contains("the manifest recorded"),
        "{}",
        verified.stdout
    );
}

/// `status` against a fixed clock: counts, ages, the oldest pending event and the SLA's exit
/// codes.
fn check_status(ws: &Path, job: &str) {
    events_file(
        &ws.join("events/batch-5.json"),
        &[
            (
                "e-010",
                json!("sub-gus-0000"),
                json!("2026-10-20T00:00:00Z"),
            ),
            (
                "e-011",
                json!("sub-hal-0000"),
                json!("2026-11-28T00:00:00Z"),
            ),
            ("e-012", json!("sub-ivy-0000"), Value::Null),
            // A time that does not parse (case 6 of #24): erased like any other, and late.
            ("e-013", json!("sub-jon-0000"), json!("01/02/2025 10:00")),
        ],
    );
    let now = [("LAKEPURGE_NOW", "2026-11-30T00:00:00Z")];
    let late = lakepurge_env(&["status", "--job", job, "--sla", "25d", "--json"], &now);
    assert_eq!(late.code, 3);
    let s: Value = serde_json::from_str(&late.stdout).unwrap();
    assert_eq!(
        (
            s["events"].clone(),
            s["skipped_rows"].clone(),
            s["confirmed"].clone()
        ),
        (json!(12), json!(1), json!(8))
    );
    assert_eq!(
        (
            s["erased"].clone(),
            s["no_data"].clone(),
            s["pending"].clone()
        ),
        (json!(6), json!(2), json!(4))
    );
    assert_eq!(
        s["pending_by_age"],
        json!({"under_1d": 0, "from_1d_to_7d": 1, "from_7d_to_30d": 0, "over_30d": 1, "unknown": 2})
    );
    assert_eq!(s["oldest_pending"]["event_id"], json!("e-010"));
    assert_eq!(s["oldest_pending"]["age_seconds"], json!(41 * 86_400));
    // Events of unknown age are late, listed first: an SLA is never escaped by a bad time.
    assert_eq!(s["late"]["event_ids"], json!(["e-012", "e-013", "e-010"]));
    assert!(!late.all_output().contains("sub-"));
    let text = lakepurge_env(&["status", "--job", job, "--sla", "25d"], &now);
    assert_eq!(text.code, 3);
    assert!(
        text.stdout
            .contains("LATE: 3 pending events are older: e-012, e-013, e-010"),
        "{}",
        text.stdout
    );
    let within = lakepurge_env(&["status", "--job", job, "--sla", "45d"], &now);
    assert_eq!(
        within.code, 3,
        "the events of unknown age are late at any SLA"
    );
    assert!(
        within.stdout.contains("LATE: 2 pending"),
        "{}",
        within.stdout
    );
    assert_eq!(lakepurge_env(&["status", "--job", job], &now).code, 0);
    assert_eq!(
        lakepurge_env(&["status", "--job", job, "--sla", "soon"], &now).code,
        2
    );
}

/// The confirmations and `status` over many events in a small events pool (32 MiB, so 128 MiB
/// for their joins): the anti-join against 400,000 confirmed events and the counts spill
/// rather than fail (a hash join and a COUNT(DISTINCT) ran out of this pool).
#[test]
fn many_confirmed_events_within_a_small_pool() {
    let (dir, job_path) = workspace();
    let ws = std::path::absolute(dir.path()).unwrap();
    let job = job_path.to_str().unwrap();
    let n = 400_000;
    let mut text = String::with_capacity(n * 110);
    for i in 0..n {
        text.push_str(&format!(
            "{{\"event_id\":\"e-{i:07}\",\"subject_type\":\"user_id\",\"subject_id\":\"x-{i}\",\
             \"requested_at\":\"2026-11-20T00:00:00Z\"}}\n"
        ));
    }
    write(&ws.join("events/many.json"), &text);
    let env = [("LAKEPURGE_EVENTS_MEMORY", "33554432")];
    assert_eq!(purge(job, "r1", &env).code, 0);
    assert_eq!(purge(job, "r2", &env).code, 0);
    let r1 = read_json(&ws.join("manifests/gdpr/r1.json"));
    let r2 = read_json(&ws.join("manifests/gdpr/r2.json"));
    assert_eq!(r1["confirmations"]["rows"], json!(n));
    assert_eq!(r2["confirmations"]["rows"], json!(0));
    let env = [
        ("LAKEPURGE_EVENTS_MEMORY", "33554432"),
        ("LAKEPURGE_NOW", "2026-11-30T00:00:00Z"),
    ];
    let status = lakepurge_env(&["status", "--job", job, "--json"], &env);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let s: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        (
            s["events"].clone(),
            s["confirmed"].clone(),
            s["pending"].clone()
        ),
        (json!(n), json!(n), json!(0))
    );
}
