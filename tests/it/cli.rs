//! The command line contract: exit codes, idempotence, clean failure on bad input, verify
//! catching a restored file, and no raw subject id in any output.

use std::path::Path;

use crate::common::*;

fn demo(dir: &Path) -> Run {
    lakepurge(&["demo", "--dir", dir.to_str().unwrap()])
}

#[test]
fn demo_runs_end_to_end_and_ends_with_pass() {
    let ws = tempfile::tempdir().unwrap();
    let run = demo(ws.path());
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("\nPASS\n"), "{}", run.stdout);
    // The file of only erased users is gone; the manifest says so.
    assert!(
        !ws.path()
            .join("warehouse/users/part-00001.parquet")
            .exists()
    );
    let m = read_json(&ws.path().join("manifests/demo/demo-1.json"));
    let users = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "crm.users")
        .unwrap();
    assert_eq!(users["files_deleted"], 1);
    // User 142 (ev-6) is under a legal hold in crm.users: its row is kept, on the record.
    assert_eq!(users["rows_removed"], 4);
    assert_eq!(users["held"]["rows"], 1);
    assert_eq!(
        users["held"]["hold_ids"],
        serde_json::json!(["LH-2026-117"])
    );
    assert_eq!(users["held"]["per_event"]["ev-6"]["rows"], 1);
    // "Which requests are held, why, since when": from status --json.
    let job = ws.path().join("jobs/demo.toml");
    let status = lakepurge(&["status", "--job", job.to_str().unwrap(), "--json"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        s["held"],
        serde_json::json!({"requests": 1, "by_basis": {"legal_claims": 1},
            "oldest_hold_placed_at": "2026-11-20T00:00:00Z", "event_ids": ["ev-6"]})
    );
    assert_eq!([&s["erased"], &s["no_data"], &s["pending"]], [5, 1, 0]);
    // "Where is it held": trace names the table, the rows and the hold.
    let trace = lakepurge(&["trace", "--job", job.to_str().unwrap(), "ev-6", "--json"]);
    assert_eq!(trace.code, 0, "{}", trace.stderr);
    let t: serde_json::Value = serde_json::from_str(&trace.stdout).unwrap();
    assert_eq!(
        t["held"],
        serde_json::json!([{"run_id": "demo-1", "finished_at": m["finished_at"],
            "table": "crm.users", "rows": 1, "hold_ids": ["LH-2026-117"]}])
    );
    assert_eq!(t["confirmations"], serde_json::json!([["demo-1", "held"]]));
    let text = lakepurge(&["trace", "--job", job.to_str().unwrap(), "ev-6"]);
    assert!(
        text.stdout
            .contains("table crm.users: 1 rows kept under holds LH-2026-117"),
        "{}",
        text.stdout
    );
    // No raw subject id (the demo's email and composite ids) in the output or the manifest.
    let manifest_text =
        std::fs::read_to_string(ws.path().join("manifests/demo/demo-1.json")).unwrap();
    for raw in [
        "USER7@example.com",
        "user7@example.com",
        "User7@Example.com",
        "[\"acme\",\"43\"]",
        "not-a-number",
    ] {
        assert!(!run.all_output().contains(raw), "raw id {raw} in output");
        assert!(!manifest_text.contains(raw), "raw id {raw} in manifest");
    }
}

#[test]
fn rerun_is_a_no_op_and_a_new_run_id_rewrites_nothing() {
    let ws = tempfile::tempdir().unwrap();
    assert_eq!(demo(ws.path()).code, 0);
    let job = ws.path().join("jobs/demo.toml");
    let job = job.to_str().unwrap();
    let before = tree_hashes(&ws.path().join("warehouse"));
    let manifest1 = ws.path().join("manifests/demo/demo-1.json");
    let m1_hash = sha256_file(&manifest1);

    let again = lakepurge(&["purge", "--job", job, "--run-id", "demo-1"]);
    assert_eq!(again.code, 0);
    assert!(again.stdout.contains("already complete"));
    assert_eq!(sha256_file(&manifest1), m1_hash);
    assert_eq!(tree_hashes(&ws.path().join("warehouse")), before);

    let second = lakepurge(&["purge", "--job", job, "--run-id", "demo-2"]);
    assert_eq!(second.code, 0);
    assert_eq!(
        tree_hashes(&ws.path().join("warehouse")),
        before,
        "a new run id rewrote files"
    );
    let m2 = read_json(&ws.path().join("manifests/demo/demo-2.json"));
    assert_eq!(m2["previous_sha256"], m1_hash.as_str());
    assert_eq!(m2["sequence"], 2);
    for t in m2["tables"].as_array().unwrap() {
        assert_eq!(t["rows_removed"], 0);
        assert_eq!(t["files"].as_array().unwrap().len(), 0);
    }
    let v = lakepurge(&[
        "verify",
        ws.path()
            .join("manifests/demo/demo-2.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(v.code, 0, "{}", v.stdout);
}

#[test]
fn verify_fails_on_a_file_restored_from_backup() {
    let ws = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    copy_dir(&ws.path().join("warehouse/users"), backup.path());
    let job = ws.path().join("jobs/demo.toml");
    assert_eq!(
        lakepurge(&[
            "purge",
            "--job",
            job.to_str().unwrap(),
            "--run-id",
            "demo-1"
        ])
        .code,
        0
    );
    let manifest = ws.path().join("manifests/demo/demo-1.json");
    assert_eq!(lakepurge(&["verify", manifest.to_str().unwrap()]).code, 0);

    std::fs::copy(
        backup.path().join("part-00000.parquet"),
        ws.path().join("warehouse/users/part-00000.parquet"),
    )
    .unwrap();
    let v = lakepurge(&["verify", manifest.to_str().unwrap()]);
    assert_eq!(v.code, 3);
    assert!(
        v.stdout
            .contains("part-00000.parquet holds its PRE-PURGE content"),
        "{}",
        v.stdout
    );
    assert_eq!(v.stdout.trim_end().lines().last(), Some("FAIL"));
}

#[test]
fn garbage_instead_of_a_manifest_is_exit_2() {
    let ws = tempfile::tempdir().unwrap();
    let p = ws.path().join("m.json");
    std::fs::write(&p, b"{\"format_version\": 1, \"job\": ").unwrap();
    let v = lakepurge(&["verify", p.to_str().unwrap()]);
    assert_eq!(v.code, 2);
    assert!(v.stderr.contains("m.json"), "{}", v.stderr);
}

/// Runs `purge` on the demo sample after `break_it` changed its specs or data; expects exit 2,
/// a message containing every string of `expect`, and nothing written.
fn expect_bad_input(break_it: impl FnOnce(&Path), run_id: &str, expect: &[&str]) {
    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    break_it(ws.path());
    let before = tree_hashes(&ws.path().join("warehouse"));
    let job = ws.path().join("jobs/demo.toml");
    let run = lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", run_id]);
    assert_eq!(run.code, 2, "expected exit 2");
    for e in expect {
        assert!(
            run.stderr.contains(e),
            "message lacks {e:?}: {}",
            run.stderr
        );
    }
    assert_eq!(
        tree_hashes(&ws.path().join("warehouse")),
        before,
        "table data changed"
    );
    assert!(
        !ws.path().join("manifests").exists(),
        "a manifest was written"
    );
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn unknown_key_in_a_table_spec() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/users.toml"),
                "action = \"delete\"",
                "action = \"delete\"\nretention = 3",
            )
        },
        "r1",
        &["users.toml", "retention"],
    );
}

#[test]
fn malformed_toml() {
    expect_bad_input(
        |d| edit(&d.join("jobs/demo.toml"), "[events]", "[events"),
        "r1",
        &["demo.toml"],
    );
}

#[test]
fn missing_match_column() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/sessions.toml"),
                "\"tenant_id\"",
                "\"tenant\"",
            )
        },
        "r1",
        &[
            "web.sessions",
            "part-00000.parquet",
            "\"tenant\"",
            "does not exist",
        ],
    );
}

#[test]
fn dotted_path_through_a_non_struct() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/messages.toml"),
                "\"sender.id\"",
                "\"body.id\"",
            )
        },
        "r1",
        &["chat.messages", "body.id", "non-struct"],
    );
}

#[test]
fn unmatchable_column_type() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/messages.toml"),
                "\"sender.id\"",
                "\"sender\"",
            )
        },
        "r1",
        &["chat.messages", "\"sender\"", "cannot hold a subject id"],
    );
}

#[test]
fn events_missing_a_column() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/demo.toml"),
                "[events]\n",
                "[events]\nsubject_id = \"who\"\n",
            )
        },
        "r1",
        &["events at", "\"who\"", "events.subject_id"],
    );
}

#[test]
fn run_id_with_path_characters() {
    expect_bad_input(|_| {}, "../escape", &["run id", "../escape"]);
}

#[test]
fn duplicate_table_names() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/sessions.toml"),
                "web.sessions",
                "crm.users",
            )
        },
        "r1",
        &["crm.users", "declared twice"],
    );
}

#[test]
fn validate_reports_ok_and_exit_0() {
    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    let run = lakepurge(&[
        "validate",
        "--job",
        ws.path().join("jobs/demo.toml").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("VALID"));
    assert!(run.stdout.contains("chat.messages: 1 files"));
}

#[test]
fn events_of_the_wrong_type() {
    expect_bad_input(
        |d| {
            write(
                &d.join("events/dt=2026-11-24/events.json"),
                "{\"event_id\":\"ev-9\",\"subject_type\":\"user_id\",\"subject_id\":{\"nested\":1},\"requested_at\":\"2026-11-24T08:00:00Z\"}\n",
            );
        },
        "r1",
        &[
            "events at",
            "\"subject_id\"",
            "expected a string or integer",
        ],
    );
}

#[test]
fn missing_required_key() {
    expect_bad_input(
        |d| {
            let p = d.join("jobs/tables/sessions.toml");
            let text = std::fs::read_to_string(&p).unwrap();
            let without: String = text
                .lines()
                .filter(|l| !l.starts_with("location"))
                .map(|l| format!("{l}\n"))
                .collect();
            std::fs::write(&p, without).unwrap();
        },
        "r1",
        &["sessions.toml", "location"],
    );
}

#[test]
fn composite_key_of_one_column() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/sessions.toml"),
                "[\"tenant_id\", \"user_id\"]",
                "[\"tenant_id\"]",
            )
        },
        "r1",
        &["sessions.toml", "composite", "at least two columns"],
    );
}

#[test]
fn column_and_columns_together() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/sessions.toml"),
                "columns = [",
                "column = \"tenant_id\"\ncolumns = [",
            )
        },
        "r1",
        &["sessions.toml", "not both"],
    );
}

#[test]
fn unsupported_location_scheme() {
    expect_bad_input(
        |d| {
            let p = d.join("jobs/tables/sessions.toml");
            let text = std::fs::read_to_string(&p).unwrap();
            let line = text
                .lines()
                .find(|l| l.starts_with("location"))
                .unwrap()
                .to_string();
            edit(&p, &line, "location = \"ftp://example.invalid/sessions/\"");
        },
        "r1",
        &["sessions.toml", "unsupported scheme", "ftp"],
    );
}

/// A confirmations location that cannot be used is found before any table is touched (not
/// after the tables are purged, when the run would write its confirmations).
#[test]
fn unsupported_confirmations_location() {
    expect_bad_input(
        |d| {
            let p = d.join("jobs/demo.toml");
            edit(
                &p,
                "tables = \"tables\"",
                "tables = \"tables\"\nconfirmations = \"ftp://example.invalid/c/\"",
            );
        },
        "r1",
        &[
            "demo.toml",
            "job.confirmations",
            "unsupported scheme",
            "ftp",
        ],
    );
}

/// A location that lists no data file, where no earlier run of the job saw one, is most likely
/// a typo: exit 2 naming the table, its spec file and the location, nothing written (#24; a
/// table a purge emptied goes on, see `truth.rs`).
#[test]
fn mistyped_table_location_is_refused_naming_it() {
    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    edit(
        &ws.path().join("jobs/tables/sessions.toml"),
        "warehouse/sessions/",
        "warehouse/nowhere/",
    );
    let job = ws.path().join("jobs/demo.toml");
    let run = lakepurge(&["validate", "--job", job.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    for e in [
        "sessions.toml",
        "web.sessions",
        "nowhere",
        "lists no data file",
    ] {
        assert!(
            run.stderr.contains(e),
            "message lacks {e:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn truncated_parquet_file() {
    expect_bad_input(
        |d| {
            let p = d.join("warehouse/users/part-00000.parquet");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        },
        "r1",
        &[
            "crm.users",
            "part-00000.parquet",
            "not a readable Parquet file",
        ],
    );
}

#[test]
fn file_whose_schema_differs_from_its_siblings() {
    expect_bad_input(
        |d| {
            use arrow::array::{ArrayRef, Int64Array, RecordBatch};
            let batch = RecordBatch::try_from_iter(vec![(
                "id",
                std::sync::Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            )])
            .unwrap();
            write_parquet(&d.join("warehouse/users/part-00002.parquet"), &batch);
        },
        "r1",
        &[
            "crm.users",
            "part-00002.parquet",
            "\"user_id\" does not exist",
        ],
    );
}

#[test]
fn normalize_on_an_integer_column() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/users.toml"),
                "subject_type = \"user_id\"",
                "subject_type = \"user_id\"\nnormalize = \"lowercase\"",
            )
        },
        "r1",
        &["crm.users", "normalize needs a string column"],
    );
}

#[test]
fn unknown_action() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/tables/users.toml"),
                "action = \"delete\"",
                "action = \"erase\"",
            )
        },
        "r1",
        &["users.toml", "erase"],
    );
}

#[test]
fn unknown_event_format() {
    expect_bad_input(
        |d| {
            edit(
                &d.join("jobs/demo.toml"),
                "format = \"ndjson\"",
                "format = \"csv\"",
            )
        },
        "r1",
        &["demo.toml", "csv"],
    );
}

#[test]
fn job_without_tables() {
    expect_bad_input(
        |d| {
            for t in ["users", "messages", "sessions"] {
                std::fs::remove_file(d.join(format!("jobs/tables/{t}.toml"))).unwrap();
            }
        },
        "r1",
        &["demo.toml", "no tables"],
    );
}

#[test]
fn unreadable_signing_key() {
    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    std::fs::write(ws.path().join("bad.key"), "not hex").unwrap();
    let job = ws.path().join("jobs/demo.toml");
    let run = lakepurge(&[
        "purge",
        "--job",
        job.to_str().unwrap(),
        "--run-id",
        "r1",
        "--signing-key",
        ws.path().join("bad.key").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("bad.key") && run.stderr.contains("64 hex digits"),
        "{}",
        run.stderr
    );
    assert!(!ws.path().join("manifests").exists());
}

#[test]
fn an_empty_event_dataset_is_a_valid_no_op_with_a_manifest() {
    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    std::fs::remove_file(ws.path().join("events/dt=2026-11-24/events.json")).unwrap();
    let before = tree_hashes(&ws.path().join("warehouse"));
    let job = ws.path().join("jobs/demo.toml");
    let run = lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "r1"]);
    assert_eq!(run.code, 0);
    assert_eq!(tree_hashes(&ws.path().join("warehouse")), before);
    let m = read_json(&ws.path().join("manifests/demo/r1.json"));
    assert_eq!(m["events"]["count"], 0);
    assert_eq!(m["events"]["rows"], 0);
    for t in m["tables"].as_array().unwrap() {
        assert_eq!(t["rows_removed"], 0);
        assert_eq!(
            t["files_pruned"], t["files_listed"],
            "with no events every file is pruned unread"
        );
    }
}

/// Text logs to a file or a pipe (an Airflow task log, `2> log`) carry no ANSI colour codes:
/// colour is for terminals only (and never with NO_COLOR).
#[test]
fn text_logs_to_a_pipe_have_no_colour_codes() {
    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    let job = ws.path().join("jobs/demo.toml");
    let run = lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("INFO"), "{}", run.stderr);
    assert!(
        !run.stderr.contains('\u{1b}'),
        "colour codes in a piped log: {:?}",
        run.stderr
    );
}
