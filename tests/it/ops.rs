//! Operations: shards (any order, concurrent, killed and resumed) equal an unsharded run;
//! JSON log lines parse and carry run id, table and file; verify by job and run id.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

fn sample() -> (tempfile::TempDir, String) {
    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    let job = ws.path().join("jobs/demo.toml").display().to_string();
    (ws, job)
}

/// Files and manifest counts after an unsharded purge of the demo sample.
fn unsharded() -> (
    std::collections::BTreeMap<String, String>,
    serde_json::Value,
) {
    let (ws, job) = sample();
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "2026-11-25"]).code,
        0
    );
    (
        tree_hashes(&ws.path().join("warehouse")),
        read_json(&ws.path().join("manifests/demo/2026-11-25.json")),
    )
}

fn assert_same_as_unsharded(ws: &Path, job: &str) {
    let (files, m) = unsharded();
    assert_eq!(tree_hashes(&ws.join("warehouse")), files);
    let got = read_json(&ws.join("manifests/demo/2026-11-25.json"));
    assert_eq!(got["per_event"], m["per_event"]);
    for (a, b) in got["tables"]
        .as_array()
        .unwrap()
        .iter()
        .zip(m["tables"].as_array().unwrap())
    {
        for k in [
            "name",
            "rows_removed",
            "files_rewritten",
            "files_deleted",
            "files_listed",
        ] {
            assert_eq!(a[k], b[k], "{k}");
        }
    }
    let v = lakepurge(&["verify", "--job", job, "--run-id", "2026-11-25"]);
    assert_eq!(v.code, 0);
    assert!(v.stdout.trim_end().ends_with("PASS"));
}

fn shard(job: &str, s: &str) -> Run {
    lakepurge(&[
        "purge",
        "--job",
        job,
        "--run-id",
        "2026-11-25",
        "--shard",
        s,
    ])
}

#[test]
fn shards_in_any_order_then_a_final_purge_equal_one_unsharded_run() {
    let (ws, job) = sample();
    let mut done = 0;
    for s in ["2/3", "0/3", "1/3"] {
        let run = shard(&job, s);
        assert_eq!(run.code, 0);
        assert!(
            !ws.path().join("manifests/demo/2026-11-25.json").exists(),
            "a shard wrote the manifest"
        );
        let n: u64 = run
            .stdout
            .split("done: ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        done += n;
    }
    assert_eq!(done, 4, "every affected file in exactly one shard");
    let last = lakepurge(&["purge", "--job", &job, "--run-id", "2026-11-25"]);
    assert_eq!(last.code, 0);
    assert_same_as_unsharded(ws.path(), &job);
}

#[test]
fn concurrent_shards_equal_one_unsharded_run() {
    let (ws, job) = sample();
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_lakepurge"))
                .args([
                    "--quiet",
                    "purge",
                    "--job",
                    &job,
                    "--run-id",
                    "2026-11-25",
                    "--shard",
                    &format!("{i}/3"),
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "2026-11-25"]).code,
        0
    );
    assert_same_as_unsharded(ws.path(), &job);
}

#[test]
fn a_shard_killed_mid_way_resumes() {
    let (ws, job) = sample();
    let owner = (0..2)
        .find(|i| shard_owns_two(*i))
        .expect("one of two shards owns two files");
    let crashed = lakepurge_env(
        &[
            "purge",
            "--job",
            &job,
            "--run-id",
            "2026-11-25",
            "--shard",
            &format!("{owner}/2"),
        ],
        &[("LAKEPURGE_FAILPOINT", "after_commit=1")],
    );
    assert_ne!(crashed.code, 0);
    assert_eq!(shard(&job, &format!("{owner}/2")).code, 0);
    assert_eq!(shard(&job, &format!("{}/2", 1 - owner)).code, 0);
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "2026-11-25"]).code,
        0
    );
    assert_same_as_unsharded(ws.path(), &job);
}

/// Whether shard `i` of 2 owns at least two of the demo's four affected files.
fn shard_owns_two(i: u32) -> bool {
    let s = lakepurge::purge::Shard { index: i, count: 2 };
    [
        ("crm.users", "part-00000.parquet"),
        ("crm.users", "part-00001.parquet"),
        ("chat.messages", "dt=2026-11-20/part-00000.parquet"),
        ("web.sessions", "part-00000.parquet"),
    ]
    .iter()
    .filter(|(t, p)| s.owns(t, p))
    .count()
        >= 2
}

#[test]
fn a_bad_shard_is_exit_2() {
    let (_ws, job) = sample();
    for bad in ["3/3", "1", "a/b", "0/0"] {
        let run = shard(&job, bad);
        assert_eq!(run.code, 2, "{bad}");
        assert!(run.stderr.contains("--shard"));
    }
}

#[test]
fn json_log_lines_parse_and_carry_run_table_and_file() {
    let (_ws, job) = sample();
    let run = purge_json(&job, "r-json", &[], &[]);
    assert_eq!(run.code, 0);
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let purged: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["message"] == "file purged")
        .collect();
    assert_eq!(purged.len(), 4);
    for l in &purged {
        assert!(l["timestamp"].is_string() && l["level"] == "INFO");
        assert_eq!(l["span"]["run_id"], "r-json");
        assert!(l["table"].is_string() && l["file"].is_string());
    }
    assert!(!run.stderr.contains("USER7@example.com") && !run.stderr.contains("user7@example.com"));
}

#[test]
fn redact_keeps_rows_and_nulls_exactly_the_listed_columns_in_matching_rows() {
    use arrow::array::{Array, AsArray};
    let (ws, job) = sample();
    set_redact(ws.path(), "[\"email\", \"country\"]");
    let original = read_all(&ws.path().join("warehouse/users/part-00000.parquet"));
    let original_meta = ws.path().join("original.parquet");
    std::fs::copy(
        ws.path().join("warehouse/users/part-00000.parquet"),
        &original_meta,
    )
    .unwrap();

    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "r1"]).code,
        0
    );
    let after = read_all(&ws.path().join("warehouse/users/part-00000.parquet"));
    assert_eq!(
        after.num_rows(),
        original.num_rows(),
        "redact must keep every row"
    );
    assert_same_format(
        &original_meta,
        &ws.path().join("warehouse/users/part-00000.parquet"),
    );
    let ids = original
        .column_by_name("user_id")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int64Type>();
    // User 142 is under the demo's legal hold in crm.users: its row is kept as it is.
    let matched = |i: usize| [42, 7].contains(&ids.value(i));
    assert_eq!(
        after.column_by_name("user_id").unwrap(),
        original.column_by_name("user_id").unwrap()
    );
    for c in ["email", "country"] {
        let (a, o) = (
            after.column_by_name(c).unwrap().as_string::<i32>(),
            original.column_by_name(c).unwrap().as_string::<i32>(),
        );
        for i in 0..after.num_rows() {
            if matched(i) {
                assert!(a.is_null(i), "{c} of row {i} not nulled");
            } else {
                assert_eq!(a.value(i), o.value(i), "{c} of row {i} changed");
            }
        }
    }
    // The file whose every row matches is kept, redacted.
    let second = read_all(&ws.path().join("warehouse/users/part-00001.parquet"));
    assert_eq!(second.num_rows(), 2);
    assert_eq!(second.column_by_name("email").unwrap().null_count(), 2);

    let m = read_json(&ws.path().join("manifests/demo/r1.json"));
    let t = m["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "crm.users")
        .unwrap();
    assert_eq!(t["rows_redacted"], 4); // and 142's row held
    assert_eq!(t["held"]["rows"], 1);
    assert_eq!(t["rows_removed"], 0);
    assert_eq!(t["files_deleted"], 0);
    assert_eq!(m["per_event"]["ev-2"], 1);
    assert_eq!(
        lakepurge(&["verify", "--job", &job, "--run-id", "r1"]).code,
        0
    );

    // Already-redacted rows are not matched again: a new run id rewrites nothing.
    let before = tree_hashes(&ws.path().join("warehouse"));
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "r2"]).code,
        0
    );
    assert_eq!(tree_hashes(&ws.path().join("warehouse")), before);
}

#[test]
fn redacting_a_required_column_is_a_validate_error() {
    let (ws, job) = sample();
    set_redact(ws.path(), "[\"user_id\"]");
    let run = lakepurge(&["validate", "--job", &job]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("crm.users") && run.stderr.contains("\"user_id\" is required"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_progress_bar_only_when_stderr_is_a_terminal() {
    let (ws, job) = sample();
    // Under a pseudo-terminal (util-linux `script`), the bar is drawn.
    let cmd = format!(
        "{} purge --job {job} --run-id tty",
        env!("CARGO_BIN_EXE_lakepurge")
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("files purged"),
        "no progress bar on a terminal:\n{shown}"
    );
    // Captured (not a terminal): no bar.
    let (_ws2, job2) = sample();
    let run = lakepurge(&["purge", "--job", &job2, "--run-id", "pipe"]);
    assert_eq!(run.code, 0);
    assert!(!run.all_output().contains("files purged"));
    assert!(ws.path().join("manifests/demo/tty.json").exists());
}

/// Turns the demo's users table into a redact table nulling `columns` (a TOML array).
fn set_redact(ws: &Path, columns: &str) {
    let users = ws.join("jobs/tables/users.toml");
    let text = std::fs::read_to_string(&users).unwrap();
    let redacted = text.replace(
        "action = \"delete\"",
        &format!("action = \"redact\"\nredact = {columns}"),
    );
    assert_ne!(text, redacted);
    std::fs::write(&users, redacted).unwrap();
}

#[test]
fn plan_reads_footers_and_key_columns_only() {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("wide");
    std::fs::create_dir_all(&table).unwrap();
    // A narrow key column beside a wide payload: planning must not read the payload.
    let n = 100_000i64;
    let batch = RecordBatch::try_from_iter(vec![
        (
            "user_id",
            std::sync::Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
        ),
        (
            "payload",
            std::sync::Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("{i:0>64}-{}", i * 7919)),
            )),
        ),
    ])
    .unwrap();
    write_parquet(&table.join("part-0.parquet"), &batch);
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", serde_json::json!("77"))],
    );
    let job = ws.path().join("job.toml");
    write(
        &job,
        &format!(
            "[job]\nname = \"wide\"\nmanifests = \"{}\"\n[events]\nlocation = \"{}\"\nformat = \"ndjson\"\n\
             [[table]]\nname = \"wide\"\nlocation = \"{}\"\n[[table.match]]\ncolumn = \"user_id\"\nsubject_type = \"user_id\"\n",
            file_url(&ws.path().join("manifests")),
            file_url(&ws.path().join("events")),
            file_url(&table)
        ),
    );
    let plan = lakepurge(&["plan", "--job", job.to_str().unwrap(), "--json"]);
    assert_eq!(plan.code, 0);
    let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let t = &p["tables"][0];
    assert_eq!(t["rows_matched"], 1);
    let (read, size) = (
        t["bytes_read"].as_u64().unwrap(),
        t["table_bytes"].as_u64().unwrap(),
    );
    assert!(read * 4 < size, "plan read {read} of {size} bytes");
    // The footer (with the 64 KiB before it), then the key column in one request.
    assert_eq!(t["requests"], 2, "{t}");
}

#[test]
fn small_files_are_planned_in_one_request_each() {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let ws = tempfile::tempdir().unwrap();
    let table = ws.path().join("small");
    // 20 small files whose key ranges all hold the erased id (statistics cannot prune them);
    // only two hold it.
    for f in 0..20i64 {
        let ids: Vec<i64> = (0..300).map(|i| i * 2 + f % 2).collect();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "user_id",
                std::sync::Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            ),
            (
                "note",
                std::sync::Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("note {i}")),
                )),
            ),
        ])
        .unwrap();
        write_parquet(&table.join(format!("part-{f:02}.parquet")), &batch);
    }
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", serde_json::json!("101"))],
    );
    let job = ws.path().join("job.toml");
    write(
        &job,
        &user_id_job(
            "small",
            &file_url(&ws.path().join("manifests")),
            &file_url(&ws.path().join("events")),
            &file_url(&table),
        ),
    );
    let plan = lakepurge(&["plan", "--job", job.to_str().unwrap(), "--json"]);
    assert_eq!(plan.code, 0);
    let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    let t = &p["tables"][0];
    assert_eq!(
        (t["files_listed"].as_u64(), t["files_pruned"].as_u64()),
        (Some(20), Some(0))
    );
    assert_eq!(t["rows_matched"], 10, "{t}");
    // One request a file: the footer read brings the whole file, and the key column is served
    // from it. Never more bytes than the files hold.
    assert_eq!(t["requests"], 20, "{t}");
    assert!(t["bytes_read"].as_u64() <= t["table_bytes"].as_u64(), "{t}");
}

/// Two files whose key ranges both cover the erased id; only one holds it.
fn bloom_table(dir: &Path, bloom: bool) {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    std::fs::create_dir_all(dir).unwrap();
    for (name, start) in [("even.parquet", 0i64), ("odd.parquet", 1)] {
        let ids: Vec<i64> = (0..10_000).map(|i| start + 2 * i).collect();
        let batch = RecordBatch::try_from_iter(vec![
            (
                "user_id",
                std::sync::Arc::new(Int64Array::from(ids.clone())) as ArrayRef,
            ),
            (
                "email",
                std::sync::Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("u{i}@x.org")),
                )),
            ),
        ])
        .unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_bloom_filter_enabled(bloom)
            .build();
        let file = std::fs::File::create(dir.join(name)).unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
    }
}

#[test]
fn bloom_filters_prune_a_file_statistics_cannot_and_never_under_delete() {
    for bloom in [true, false] {
        let ws = tempfile::tempdir().unwrap();
        let table = ws.path().join("t");
        bloom_table(&table, bloom);
        let odd_before = sha256_file(&table.join("odd.parquet"));
        write_events(
            &ws.path().join("events/e.json"),
            &[
                ("ev-1", "user_id", serde_json::json!("5000")),
                ("ev-2", "email", serde_json::json!("u5002@x.org")),
            ],
        );
        let job = ws.path().join("job.toml");
        write(
            &job,
            &format!(
                "[job]\nname = \"bloom\"\nmanifests = \"{}\"\n[events]\nlocation = \"{}\"\nformat = \"ndjson\"\n\
                 [[table]]\nname = \"t\"\nlocation = \"{}\"\n[[table.match]]\ncolumn = \"user_id\"\nsubject_type = \"user_id\"\n\
                 [[table.match]]\ncolumn = \"email\"\nsubject_type = \"email\"\n",
                file_url(&ws.path().join("manifests")),
                file_url(&ws.path().join("events")),
                file_url(&table)
            ),
        );
        let plan = lakepurge(&["plan", "--job", job.to_str().unwrap(), "--json"]);
        let p: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
        let t = &p["tables"][0];
        // Statistics cannot rule out the odd file (5000 and "u5002@x.org" are inside its
        // ranges); its bloom filters can.
        assert_eq!(
            t["files_pruned"],
            if bloom { 1 } else { 0 },
            "bloom filters: {bloom}"
        );
        assert_eq!(t["rows_matched"], 2);
        assert_eq!(
            lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "r"]).code,
            0
        );
        let even = read_all(&table.join("even.parquet"));
        assert_eq!(even.num_rows(), 9_998);
        assert_eq!(sha256_file(&table.join("odd.parquet")), odd_before);
    }
}

/// The `memory budget` log line of a JSON-logged purge: (limit, held when the rewrites
/// started, budget for the files, peak reserved).
fn budget_of(run: &Run) -> [u64; 4] {
    let line: serde_json::Value = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "memory budget")
        .expect("a memory budget log line");
    ["limit", "held", "for_files", "peak_reserved"].map(|k| line[k].as_u64().unwrap())
}

#[test]
fn memory_limit_bounds_the_files_in_flight() {
    // Each demo file needs a few KiB: with 1 KiB they run one at a time (each alone, over the
    // limit, said in a warning), with plenty several at once; both give the same result. The
    // files get the limit less what the process holds when the rewrites start.
    let (ws, job) = sample();
    let tight = purge_json(&job, "2026-11-25", &["--memory-limit", "1KiB"], &[]);
    assert_eq!(tight.code, 0, "{}", tight.stderr);
    let [limit, held, for_files, peak] = budget_of(&tight);
    assert_eq!((limit, for_files, peak), (1024, 1024, 1024));
    assert!(
        held > 1 << 20,
        "a running process holds more than a MiB: {held}"
    );
    assert!(tight.stderr.contains("needs more than the memory limit"));
    assert_same_as_unsharded(ws.path(), &job);

    let (_ws, job) = sample();
    let roomy = purge_json(&job, "r", &["--memory-limit", "1GiB"], &[]);
    assert_eq!(roomy.code, 0);
    let [limit, held, for_files, peak] = budget_of(&roomy);
    assert_eq!(limit, 1 << 30);
    assert!(held > 1 << 20 && held < 1 << 30, "{held}");
    assert_eq!(for_files, (limit - held) / 1024 * 1024);
    assert!(peak > 1024 && peak < for_files, "{peak}");
    assert!(!roomy.stderr.contains("needs more than the memory limit"));

    for bad in ["0", "12XB", "lots"] {
        let run = lakepurge(&[
            "purge",
            "--job",
            &job,
            "--run-id",
            "x",
            "--memory-limit",
            bad,
        ]);
        assert_eq!(run.code, 2, "{bad}");
        assert!(run.stderr.contains("memory-limit"), "{}", run.stderr);
    }
}

#[test]
fn a_million_events_read_in_a_small_memory_pool_give_the_same_plan() {
    // 32 MiB cannot hold the DISTINCT of a million (event, subject) rows: DataFusion spills it
    // and its sort to temporary files, and the plan and the event digest come out the same.
    let (ws, job) = sample();
    let events = ws.path().join("events/dt=2026-11-25/bulk.json");
    std::fs::create_dir_all(events.parent().unwrap()).unwrap();
    let mut text = String::with_capacity(120 << 20);
    for i in 0..1_000_000u64 {
        text.push_str(&format!(
            "{{\"event_id\": \"bulk-{i}\", \"subject_type\": \"user_id\", \"subject_id\": \"{}\", \"requested_at\": \"2026-11-24T00:00:00Z\"}}\n",
            10_000_000 + i
        ));
    }
    std::fs::write(&events, text).unwrap();
    let plan = |memory: &str| {
        let run = lakepurge_env(
            &["plan", "--job", &job, "--json"],
            &[("LAKEPURGE_EVENTS_MEMORY", memory)],
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap()
    };
    let small = plan(&(32u64 << 20).to_string());
    let default = plan(&(128u64 << 20).to_string());
    assert_eq!(small, default);
    assert!(
        small["events"]["count"].as_u64().unwrap() > 1_000_000,
        "{small}"
    );
}
