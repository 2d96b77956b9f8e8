//! Confirmations that tell the truth (#24): a request is confirmed `no_data` only when every
//! table with a rule for its subject type was searched, `no_rule` when none has one; a
//! mistyped location stops the run before anything is written; jobs sharing a confirmations
//! location never meet; a resumed run never confirms what a later run confirmed; the final step
//! of a sharded run plans a file no shard listed; an oracle over these situations.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::*;

/// A table of users 1..=6 (user 3 twice) in two files, at `dir`.
fn users_table(dir: &Path) {
    let script = "import sys, os, pyarrow as pa, pyarrow.parquet as pq\n\
        d = sys.argv[1]\n\
        os.makedirs(d, exist_ok=True)\n\
        pq.write_table(pa.table({'user_id': pa.array([1, 2, 3], pa.int64()), 'v': ['a', 'b', 'c']}), d + '/part-0.parquet')\n\
        pq.write_table(pa.table({'user_id': pa.array([3, 4, 5, 6], pa.int64()), 'v': ['d', 'e', 'f', 'g']}), d + '/part-1.parquet')\n";
    run_python("writing the users table", script, &[dir]);
}

/// A job `name` over the table at `table` (rule: user_id), its manifests under `ws/audit`,
/// events under `ws/events`, `extra` lines in the table section and `job_extra` in `[job]`.
fn job_file(ws: &Path, name: &str, table: &str, extra: &str, job_extra: &str) -> String {
    let job = ws.join(format!("{name}.toml"));
    write(
        &job,
        &format!(
            r#"[job]
name = "{name}"
manifests = "{}"
{job_extra}
[events]
location = "{}"
format = "ndjson"
[[table]]
name = "{name}.users"
location = "{table}"
{extra}
[[table.match]]
column = "user_id"
subject_type = "user_id"
"#,
            file_url(&ws.join("audit")),
            file_url(&ws.join("events"))
        ),
    );
    job.display().to_string()
}

/// The confirmations dataset under `dir` read by pyarrow as one table: event id -> [status,
/// rows removed, job, run id]; fails on an event confirmed twice for one job.
fn confirmed(dir: &Path) -> std::collections::BTreeMap<String, Value> {
    let script = "import sys, json, pyarrow.parquet as pq\n\
        rows = pq.read_table(sys.argv[1]).to_pylist()\n\
        keys = [(r['job'], r['event_id']) for r in rows]\n\
        assert len(keys) == len(set(keys)), 'an event confirmed twice by one job'\n\
        print(json.dumps({r['job'] + '/' + r['event_id']: [r['status'], r['rows_removed'], str(r['job']), str(r['run_id'])] for r in rows}))\n";
    serde_json::from_str(&run_python("pyarrow", script, &[dir])).unwrap()
}

fn status_json(job: &str) -> Value {
    let s = lakepurge_env(
        &["status", "--job", job, "--json"],
        &[("LAKEPURGE_NOW", "2026-12-01T00:00:00Z")],
    );
    assert_eq!(s.code, 0, "{}", s.stderr);
    serde_json::from_str(&s.stdout).unwrap()
}

/// Case 1: events of a subject type no rule uses (a new identifier kind, a typo): `validate`
/// names each type with its event count; they are confirmed `no_rule`, never `no_data`.
#[test]
fn events_of_a_subject_type_no_rule_uses_are_confirmed_no_rule() {
    let ws = tempfile::tempdir().unwrap();
    let ws = ws.path();
    users_table(&ws.join("wh/users"));
    write_events(
        &ws.join("events/e.json"),
        &[
            ("e-1", "user_id", json!("3")),
            ("e-2", "user_id", json!("99")),
            ("e-3", "device_id", json!("d-77")),
            ("e-4", "user-id", json!("4")),
            ("e-5", "user-id", json!("5")),
        ],
    );
    let job = job_file(ws, "j", &file_url(&ws.join("wh/users")), "", "");
    let v = lakepurge(&["validate", "--job", &job]);
    assert_eq!(v.code, 0, "{}", v.all_output());
    assert!(
        v.stdout.contains("subject type \"device_id\": 1 events"),
        "{}",
        v.stdout
    );
    assert!(
        v.stdout.contains("subject type \"user-id\": 2 events"),
        "{}",
        v.stdout
    );
    assert!(!v.stdout.contains("\"user_id\":"), "{}", v.stdout);
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "r1"]).code,
        0
    );
    let c = confirmed(&ws.join("audit/j/confirmations"));
    let status = |e: &str| c[&format!("j/{e}")][0].as_str().unwrap().to_string();
    assert_eq!(
        ["e-1", "e-2", "e-3", "e-4", "e-5"].map(status),
        ["erased", "no_data", "no_rule", "no_rule", "no_rule"]
    );
    let s = status_json(&job);
    assert_eq!(
        (&s["erased"], &s["no_data"], &s["no_rule"]),
        (&json!(1), &json!(1), &json!(3))
    );
    let verify = lakepurge(&["verify", "--job", &job, "--run-id", "r1"]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
    let trace = lakepurge(&["trace", "--job", &job, "e-3"]);
    assert!(trace.stdout.contains("no_rule"), "{}", trace.all_output());
}

/// Case 2: a location that lists no data file and never held one is most likely a typo: exit 2
/// from validate, plan and purge, nothing written. `allow_empty = true` lets a table wait for
/// its first file; a table a purge emptied is a warning on the next run, which goes on.
#[test]
fn a_mistyped_location_is_refused_before_anything_is_written() {
    let ws = tempfile::tempdir().unwrap();
    let ws = ws.path();
    users_table(&ws.join("wh/users"));
    write_events(&ws.join("events/e.json"), &[("e-1", "user_id", json!("3"))]);
    let typo = file_url(&ws.join("wh/usres"));
    let job = job_file(ws, "j", &typo, "", "");
    for args in [
        vec!["validate", "--job", &job],
        vec!["plan", "--job", &job],
        vec!["purge", "--job", &job, "--run-id", "r1"],
    ] {
        let r = lakepurge(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.all_output());
        assert!(r.stderr.contains("lists no data file"), "{}", r.stderr);
        assert!(r.stderr.contains("usres"), "{}", r.stderr);
    }
    assert!(!ws.join("audit").exists(), "something was written");
    // Registered before its first file lands.
    let job = job_file(ws, "j", &typo, "allow_empty = true", "");
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "r1"]).code,
        0
    );
    // A table every row of which a purge erased: later runs go on, with a warning.
    let one = ws.join("wh/one");
    let script = "import sys, os, pyarrow as pa, pyarrow.parquet as pq\n\
        os.makedirs(sys.argv[1], exist_ok=True)\n\
        pq.write_table(pa.table({'user_id': pa.array([3, 3], pa.int64())}), sys.argv[1] + '/p.parquet')\n";
    run_python("writing", script, &[&one]);
    let job = job_file(ws, "k", &file_url(&one), "", "");
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "r1"]).code,
        0
    );
    assert!(!one.join("p.parquet").exists());
    write_events(&ws.join("events/f.json"), &[("e-2", "user_id", json!("4"))]);
    let r2 = lakepurge(&["purge", "--job", &job, "--run-id", "r2"]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    assert!(
        r2.stderr.contains("a purge emptied the table"),
        "{}",
        r2.stderr
    );
}

/// Case 4: two jobs share one confirmations location and use the same run id (the DAG's `{{
/// ds }}`): each confirms its own events in its own file; both verify; readers see one table.
#[test]
fn jobs_sharing_a_confirmations_location_and_run_id_never_meet() {
    let ws = tempfile::tempdir().unwrap();
    let ws = ws.path();
    users_table(&ws.join("wh/users"));
    users_table(&ws.join("wh/other"));
    write_events(
        &ws.join("events/e.json"),
        &[
            ("e-1", "user_id", json!("3")),
            ("e-2", "user_id", json!("42")),
        ],
    );
    let shared = format!("confirmations = \"{}\"", file_url(&ws.join("confirmed")));
    let a = job_file(ws, "a", &file_url(&ws.join("wh/users")), "", &shared);
    let b = job_file(ws, "b", &file_url(&ws.join("wh/other")), "", &shared);
    for job in [&a, &b] {
        let r = lakepurge(&["purge", "--job", job, "--run-id", "2026-12-05"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    for (job, name) in [(&a, "a"), (&b, "b")] {
        let v = lakepurge(&["verify", "--job", job, "--run-id", "2026-12-05"]);
        assert_eq!(v.code, 0, "{name}: {}", v.all_output());
        let m = read_json(&ws.join(format!("audit/{name}/2026-12-05.json")));
        assert_eq!(m["confirmations"]["rows"], json!(2), "{name}");
    }
    let c = confirmed(&ws.join("confirmed"));
    assert_eq!(c.len(), 4, "{c:?}");
    assert_eq!(c["a/e-1"][0], json!("erased"));
    assert_eq!(c["b/e-1"][0], json!("erased"));
    assert_eq!(c["b/e-2"][0], json!("no_data"));
    let duck = run_python(
        "duckdb",
        "import sys, duckdb\n\
         print(duckdb.sql(f\"SELECT count(*), count(DISTINCT job) FROM read_parquet('{sys.argv[1]}/**/*.parquet', hive_partitioning = true)\").fetchall()[0])\n",
        &[ws.join("confirmed")],
    );
    assert_eq!(duck.trim(), "(4, 2)");
}

/// Case 5: a run killed between its confirmations and its manifest, then a later run that
/// completes (it confirms the same events, the first not having completed), then the first
/// resumed: the resumed run confirms nothing again (its stale file goes), and both verify.
#[test]
fn a_resumed_run_never_confirms_what_a_later_run_confirmed() {
    let ws = tempfile::tempdir().unwrap();
    let ws = ws.path();
    users_table(&ws.join("wh/users"));
    write_events(&ws.join("events/e.json"), &[("e-1", "user_id", json!("3"))]);
    let job = job_file(ws, "j", &file_url(&ws.join("wh/users")), "", "");
    let crashed = lakepurge_env(
        &["purge", "--job", &job, "--run-id", "r1"],
        &[("LAKEPURGE_FAILPOINT", "after_confirmations")],
    );
    assert_ne!(crashed.code, 0);
    let stale = ws.join("audit/j/confirmations/job=j/run_id=r1/part-0.parquet");
    assert!(stale.exists());
    let r2 = lakepurge(&["purge", "--job", &job, "--run-id", "r2"]);
    assert_eq!(r2.code, 0, "{}", r2.stderr);
    let r1 = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(r1.code, 0, "{}", r1.stderr);
    assert!(!stale.exists(), "the stale file confirms e-1 a second time");
    let m1 = read_json(&ws.join("audit/j/r1.json"));
    let m2 = read_json(&ws.join("audit/j/r2.json"));
    assert_eq!(m1["confirmations"]["rows"], json!(0));
    assert_eq!(m2["confirmations"]["rows"], json!(1));
    let c = confirmed(&ws.join("audit/j/confirmations"));
    assert_eq!(c.len(), 1);
    assert_eq!(c["j/e-1"][3], json!("r2"));
    for run in ["r1", "r2"] {
        let v = lakepurge(&["verify", "--job", &job, "--run-id", run]);
        assert_eq!(v.code, 0, "{run}: {}", v.all_output());
    }
}

/// Shard `i` of 2 of run r1 of `job`, with `extra` flags and `env`.
fn purge_shard(job: &str, i: u32, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let shard = format!("{i}/2");
    let mut args = vec!["purge", "--job", job, "--run-id", "r1", "--shard", &shard];
    args.extend_from_slice(extra);
    lakepurge_env(&args, env)
}

/// The shard (of 2) that owns `path` of table `table`.
fn owner(table: &str, path: &str) -> u32 {
    (0..2)
        .find(|&i| lakepurge::purge::Shard { index: i, count: 2 }.owns(table, path))
        .unwrap()
}

/// Case 3: after shard 0 ran, a file owned by shard 1 is moved to a name shard 0 owns (a
/// compaction); shard 1 then finds nothing. The final step lists the table again, plans the
/// moved file (no shard listed it) and purges it before the manifest, which says so; the event
/// is confirmed `erased` with every row counted. A spec changed after the shards ran is
/// refused by the final step (exit 2, naming the file).
#[test]
fn the_final_step_purges_a_file_no_shard_listed() {
    let ws = tempfile::tempdir().unwrap();
    let ws = ws.path();
    let table = ws.join("wh/users");
    users_table(&table);
    // part-1 holds user 3; find a name for it on the other shard.
    let from = owner("j.users", "part-1.parquet");
    let to = (0..1000)
        .map(|i| format!("moved-{i}.parquet"))
        .find(|n| owner("j.users", n) != from)
        .unwrap();
    write_events(&ws.join("events/e.json"), &[("e-1", "user_id", json!("3"))]);
    let job = job_file(ws, "j", &file_url(&table), "", "");
    let shard = |i: u32| purge_shard(&job, i, &[], &[]);
    // The shard that will own the moved name runs first, then the move, then the other.
    assert_eq!(shard(1 - from).code, 0);
    std::fs::rename(table.join("part-1.parquet"), table.join(&to)).unwrap();
    assert_eq!(shard(from).code, 0);
    // A spec changed since the shards ran: refused, naming it.
    let spec = std::fs::read_to_string(&job).unwrap();
    write(
        &std::path::PathBuf::from(&job),
        &spec.replace("format = \"ndjson\"", "format = \"ndjson\"\n# edited"),
    );
    let refused = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(refused.code, 2, "{}", refused.all_output());
    assert!(refused.stderr.contains("job changed"), "{}", refused.stderr);
    write(&std::path::PathBuf::from(&job), &spec);
    let last = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(last.code, 0, "{}", last.stderr);
    let m = read_json(&ws.join("audit/j/r1.json"));
    let t = &m["tables"][0];
    assert_eq!(t["rows_removed"], json!(2), "{m}");
    assert_eq!(t["files_final_step"], json!(1), "{m}");
    assert_eq!(m["per_event"], json!({"e-1": 2}));
    let c = confirmed(&ws.join("audit/j/confirmations"));
    assert_eq!(c["j/e-1"], json!(["erased", 2, "j", "r1"]));
    let v = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(v.code, 0, "{}", v.all_output());
}

/// The oracle: over a matrix of these situations, every `no_data` confirmation is true — no
/// table with a rule for the event's subject type holds a row of its subject (read back with
/// pyarrow, independently of lakepurge), and every `no_rule` event's type has no rule.
#[test]
fn every_no_data_confirmation_is_true_against_an_independent_read() {
    let ws = tempfile::tempdir().unwrap();
    let ws = ws.path();
    users_table(&ws.join("wh/users"));
    let mut events = Vec::new();
    for (i, (t, id)) in [
        ("user_id", "1"),
        ("user_id", "3"),
        ("user_id", "77"),
        ("user_id", "abc"),
        ("device_id", "3"),
        ("user-id", "5"),
    ]
    .into_iter()
    .enumerate()
    {
        events.push((format!("e-{i}"), t, json!(id)));
    }
    let rows: Vec<(&str, &str, Value)> = events
        .iter()
        .map(|(e, t, id)| (e.as_str(), *t, id.clone()))
        .collect();
    write_events(&ws.join("events/e.json"), &rows);
    let original = ws.join("original");
    copy_dir(&ws.join("wh/users"), &original);
    let job = job_file(ws, "j", &file_url(&ws.join("wh/users")), "", "");
    // A run that fails part-way confirms nothing; its resume does.
    let crashed = lakepurge_env(
        &["purge", "--job", &job, "--run-id", "r1"],
        &[("LAKEPURGE_FAILPOINT", "after_commit=1")],
    );
    assert_ne!(crashed.code, 0);
    assert!(!ws.join("audit/j/confirmations").exists());
    assert_eq!(
        lakepurge(&["purge", "--job", &job, "--run-id", "r1"]).code,
        0
    );
    let c = confirmed(&ws.join("audit/j/confirmations"));
    // The independent oracle: the original table's user ids, read by pyarrow.
    let ids: Vec<i64> = serde_json::from_str(&run_python(
        "pyarrow",
        "import sys, json, pyarrow.dataset as ds\n\
         print(json.dumps(ds.dataset(sys.argv[1]).to_table().column('user_id').to_pylist()))\n",
        &[&original],
    ))
    .unwrap();
    for (e, t, id) in &events {
        let got = c[&format!("j/{e}")][0].as_str().unwrap();
        let held = id
            .as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .is_some_and(|n| ids.contains(&n));
        let expected = match (*t, held) {
            ("user_id", true) => "erased",
            ("user_id", false) => "no_data",
            _ => "no_rule",
        };
        assert_eq!(got, expected, "{e} ({t} {id})");
    }
}

/// Case 7 of #23: a shard touches only its own journal entries. Shard 0 is killed with a
/// rewrite pending (journaled, not committed); shard 1 then runs to the end and leaves that
/// entry exactly as it was (resolving it while shard 0 might still be committing would be
/// a guess); shard 0's next attempt resolves it, and the final step completes the run exactly.
#[test]
fn a_shard_resolves_only_its_own_pending_rewrites() {
    let ws = tempfile::tempdir().unwrap();
    let ws = ws.path();
    let table = ws.join("wh/users");
    // Eight files of users i*10 .. i*10+4; user 3 of each erased below.
    let script = "import sys, os, pyarrow as pa, pyarrow.parquet as pq\n\
        d = sys.argv[1]\n\
        os.makedirs(d, exist_ok=True)\n\
        for i in range(8):\n\
        \x20   pq.write_table(pa.table({'user_id': pa.array([i * 10 + k for k in range(5)], pa.int64())}), d + f'/part-{i}.parquet')\n";
    run_python("writing the table", script, &[&table]);
    let events: Vec<(String, Value)> = (0..8)
        .map(|i| (format!("e-{i}"), json!((i * 10 + 3).to_string())))
        .collect();
    let rows: Vec<(&str, &str, Value)> = events
        .iter()
        .map(|(e, id)| (e.as_str(), "user_id", id.clone()))
        .collect();
    write_events(&ws.join("events/e.json"), &rows);
    let job = job_file(ws, "j", &file_url(&table), "", "");
    let shard = |i: u32, env: &[(&str, &str)]| purge_shard(&job, i, &["--concurrency", "1"], env);
    let crashed = shard(0, &[("LAKEPURGE_FAILPOINT", "after_intent=1")]);
    assert_ne!(crashed.code, 0);
    let entries = ws.join("audit/j/r1/files");
    let pending = || -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&entries).unwrap() {
            let p = e.unwrap().path();
            let v = read_json(&p);
            if !v["pending"].is_null() {
                out.push((p.display().to_string(), sha256_file(&p)));
            }
        }
        out
    };
    let before = pending();
    assert_eq!(before.len(), 1, "one rewrite pending");
    assert_eq!(shard(1, &[]).code, 0);
    assert_eq!(pending(), before, "shard 1 touched shard 0's pending entry");
    assert_eq!(shard(0, &[]).code, 0);
    assert!(pending().is_empty());
    let last = lakepurge(&["purge", "--job", &job, "--run-id", "r1"]);
    assert_eq!(last.code, 0, "{}", last.stderr);
    let m = read_json(&ws.join("audit/j/r1.json"));
    assert_eq!(m["tables"][0]["rows_removed"], json!(8), "{m}");
    let v = lakepurge(&["verify", "--job", &job, "--run-id", "r1", "--deep"]);
    assert_eq!(v.code, 0, "{}", v.all_output());
}
