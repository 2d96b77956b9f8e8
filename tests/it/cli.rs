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
    assert_eq!(run.stdout.trim_end().lines().last(), Some("PASS"));
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
    assert_eq!(users["rows_removed"], 5);
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
    lakepurge::demo::write_sample(ws.path()).unwrap();
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
    lakepurge::demo::write_sample(ws.path()).unwrap();
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
                "format = \"ndjson\"",
                "format = \"ndjson\"\nsubject_id = \"who\"",
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
    lakepurge::demo::write_sample(ws.path()).unwrap();
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
