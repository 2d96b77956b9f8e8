//! Legal holds and table exemptions (#27): a warehouse written by pyarrow, holds in an NDJSON
//! hold dataset (one on every table, one on one table, one on a composite id, one whose subject
//! has no rows), a table exempt by its spec; purged, then purged again after a hold is
//! released. Every table is checked against an independent pyarrow oracle, and the manifest,
//! the confirmations, `status --json` and `verify --deep` against the same expectations.

use std::path::Path;

use serde_json::{Value, json};

use crate::common::*;

/// The warehouse under argv[1]: users, orders, invoices (exempt by its spec) and messages
/// (a composite key: tenant and user).
const WAREHOUSE: &str = r#"
import sys, os
import pyarrow as pa, pyarrow.parquet as pq
wh = sys.argv[1]
def put(rel, table):
    path = os.path.join(wh, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path)
i64 = lambda v: pa.array(v, pa.int64())
put("users/part-0.parquet", pa.table({"user_id": i64([1, 2, 3, 5, 6]), "name": ["a", "b", "c", "e", "f"]}))
put("orders/part-0.parquet", pa.table({"order_id": i64([10, 11, 12, 13, 14, 15]),
                                       "user_id": i64([1, 1, 2, 3, 5, 6])}))
put("orders/part-1.parquet", pa.table({"order_id": i64([16, 17]), "user_id": i64([2, 6])}))
put("invoices/part-0.parquet", pa.table({"invoice": i64([100, 101, 102]), "user_id": i64([2, 3, 6])}))
put("messages/part-0.parquet", pa.table({"tenant": ["t1", "t1", "t2", "t1"], "user": i64([9, 8, 9, 7]),
                                         "body": ["x", "y", "z", "w"]}))
"#;

/// The rows each table must hold after a run, computed from the warehouse as written (not
/// from lakepurge's output): argv[1] the warehouse, argv[2] a JSON list of the subjects
/// erased and held, by table. Prints {table: sorted rows}.
const ORACLE: &str = r#"
import sys, json, pyarrow.dataset as ds
wh, spec = sys.argv[1], json.loads(sys.argv[2])
out = {}
for table, (key, erased, held) in spec.items():
    rows = ds.dataset(f"{wh}/{table}", format="parquet").to_table().to_pylist()
    def k(r): return [r[c] for c in key] if len(key) > 1 else r[key[0]]
    kept = [r for r in rows if k(r) not in erased or k(r) in held]
    out[table] = sorted(json.dumps(r, sort_keys=True) for r in kept)
print(json.dumps(out))
"#;

/// What each table holds now, read back with pyarrow: {table: sorted rows}.
const READ_BACK: &str = r#"
import sys, json, pyarrow.dataset as ds
wh = sys.argv[1]
print(json.dumps({t: sorted(json.dumps(r, sort_keys=True) for r in
      ds.dataset(f"{wh}/{t}", format="parquet").to_table().to_pylist())
      for t in ["users", "orders", "invoices", "messages"]}))
"#;

fn job_text(ws: &Path) -> String {
    let root = file_url(ws);
    format!(
        r#"[job]
name = "gdpr"
manifests = "{root}manifests"
[events]
location = "{root}events"
format = "ndjson"
[holds]
location = "{root}holds"
format = "ndjson"
[[table]]
name = "users"
location = "wh/users"
[[table.match]]
column = "user_id"
subject_type = "user_id"
[[table]]
name = "orders"
location = "wh/orders"
[[table.match]]
column = "user_id"
subject_type = "user_id"
[[table]]
name = "invoices"
location = "wh/invoices"
retain = {{ basis = "legal_obligation", reference = "commercial code, 10 years", until = "2036-01-01" }}
[[table.match]]
column = "user_id"
subject_type = "user_id"
[[table]]
name = "messages"
location = "wh/messages"
[[table.match]]
columns = ["tenant", "user"]
subject_type = "tenant_user"
"#
    )
}

fn hold(
    id: &str,
    ty: &str,
    subject: Value,
    table: Option<&str>,
    basis: &str,
    placed: &str,
) -> String {
    let mut row = json!({"hold_id": id, "subject_type": ty, "subject_id": subject, "basis": basis,
        "reference": format!("ref-{id}"), "placed_at": placed});
    if let Some(t) = table {
        row["table"] = json!(t);
    }
    row.to_string() + "\n"
}

/// The confirmations of the job, as (event, run, status, rows removed, rows held, bases, hold
/// ids), read with pyarrow over the whole dataset.
fn confirmations(ws: &Path) -> Vec<Value> {
    let script = r#"
import sys, json, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1]).to_pylist()
print(json.dumps(sorted([[r["event_id"], r["run_id"], r["status"], r["rows_removed"], r["rows_held"],
    sorted(r["held_bases"]), sorted(r["hold_ids"])] for r in t])))
"#;
    let out = run_python(
        "confirmations",
        script,
        &[ws.join("manifests/gdpr/confirmations")],
    );
    serde_json::from_str(&out).unwrap()
}

fn oracle(wh: &Path, spec: Value) -> Value {
    serde_json::from_str(&run_python(
        "oracle",
        ORACLE,
        &[wh.to_str().unwrap(), &spec.to_string()],
    ))
    .unwrap()
}

/// A workspace with the warehouse (`wh`), a copy of it as written (`original`) and the job
/// (`job.toml`): the folder (kept alive by the first value), its absolute path, and the two.
fn workspace() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let ws = std::path::absolute(dir.path()).unwrap();
    let wh = ws.join("wh");
    run_python("the warehouse", WAREHOUSE, &[&wh]);
    let original = ws.join("original");
    copy_dir(&wh, &original);
    write(&ws.join("job.toml"), &job_text(&ws));
    (dir, ws, wh, original)
}

#[test]
fn holds_keep_exactly_what_they_hold_and_release_it_later() {
    let (_dir, ws, wh, original) = workspace();
    let job = ws.join("job.toml");
    let job = job.to_str().unwrap();
    write_events(
        &ws.join("events/e.json"),
        &[
            ("e1", "user_id", json!("1")),
            ("e2", "user_id", json!("2")),
            ("e3", "user_id", json!("3")),
            ("e4", "user_id", json!("4")),
            ("e5", "user_id", json!("5")),
            ("e6", "tenant_user", json!("[\"t1\", 9]")),
            ("e7", "tenant_user", json!("[\"t1\", 8]")),
        ],
    );
    // H1 holds user 1 everywhere; H2 user 2 in orders only; H3 user 4, who has no rows; H4
    // the composite (t1, 9) in messages, written without the space the event has.
    let mut holds = hold(
        "H1",
        "user_id",
        json!("1"),
        None,
        "legal_claims",
        "2026-11-01T00:00:00Z",
    );
    holds += &hold(
        "H2",
        "user_id",
        json!("2"),
        Some("orders"),
        "legal_obligation",
        "2026-11-02",
    );
    holds += &hold(
        "H3",
        "user_id",
        json!("4"),
        None,
        "archiving",
        "2026-11-03T00:00:00Z",
    );
    holds += &hold(
        "H4",
        "tenant_user",
        json!("[\"t1\",9]"),
        Some("messages"),
        "other",
        "2026-11-04T00:00:00Z",
    );
    write(&ws.join("holds/part-0.json"), &holds);

    let v = lakepurge(&["validate", "--job", job]);
    assert_eq!(v.code, 0, "{}", v.all_output());
    let run = lakepurge(&["purge", "--job", job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.all_output());

    // Every table against the oracle: erased subjects gone except where held; the exempt
    // table untouched, byte for byte.
    let tu = |a: &str, b: i64| json!([a, b]);
    let expected = oracle(
        &original,
        json!({
            "users": [["user_id"], [1, 2, 3, 4, 5], [1]],
            "orders": [["user_id"], [1, 2, 3, 4, 5], [1, 2]],
            "invoices": [["user_id"], [], []],
            "messages": [["tenant", "user"], [tu("t1", 9), tu("t1", 8)], [tu("t1", 9)]],
        }),
    );
    let now: Value = serde_json::from_str(&run_python("read back", READ_BACK, &[&wh])).unwrap();
    assert_eq!(now, expected);
    assert_eq!(
        tree_hashes(&wh.join("invoices")),
        tree_hashes(&original.join("invoices"))
    );

    // The manifest: held rows per table, basis and event; the holds applied, never a subject.
    let m = read_json(&ws.join("manifests/gdpr/r1.json"));
    let table = |name: &str| -> Value {
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == json!(name))
            .unwrap()
            .clone()
    };
    assert_eq!(table("users")["held"]["rows"], json!(1));
    assert_eq!(
        table("users")["held"]["by_basis"],
        json!({"legal_claims": 1})
    );
    assert_eq!(table("users")["rows_removed"], json!(3));
    assert_eq!(table("orders")["held"]["rows"], json!(4));
    assert_eq!(
        table("orders")["held"]["by_basis"],
        json!({"legal_claims": 2, "legal_obligation": 2})
    );
    assert_eq!(table("orders")["held"]["hold_ids"], json!(["H1", "H2"]));
    assert_eq!(
        table("orders")["held"]["per_event"]["e2"],
        json!({"rows": 2, "hold_ids": ["H2"]})
    );
    assert_eq!(table("orders")["rows_removed"], json!(2));
    assert_eq!(table("invoices")["held"]["rows"], json!(2));
    assert_eq!(
        table("invoices")["held"]["retain"]["basis"],
        json!("legal_obligation")
    );
    assert_eq!(
        table("invoices")["held"]["per_event"]["e3"],
        json!({"rows": 1, "retained": true})
    );
    assert_eq!(table("invoices")["files_rewritten"], json!(0));
    assert_eq!(table("messages")["held"]["hold_ids"], json!(["H4"]));
    assert_eq!(table("messages")["rows_removed"], json!(1));
    assert_eq!(m["holds"]["in_force"], json!(4));
    let applied: Vec<&String> = m["holds"]["applied"].as_object().unwrap().keys().collect();
    assert_eq!(applied, ["H1", "H2", "H4"]);
    assert_eq!(m["holds"]["applied"]["H1"]["basis"], json!("legal_claims"));

    // Confirmations: held events with their counts, bases and holds; the rest final.
    let held = |e: &str, removed: i64, kept: i64, bases: Value, ids: Value| {
        json!([e, "r1", "held", removed, kept, bases, ids])
    };
    assert_eq!(
        confirmations(&ws),
        vec![
            held("e1", 0, 3, json!(["legal_claims"]), json!(["H1"])),
            held("e2", 1, 3, json!(["legal_obligation"]), json!(["H2"])),
            held("e3", 2, 1, json!(["legal_obligation"]), json!([])),
            json!(["e4", "r1", "no_data", 0, 0, [], []]),
            json!(["e5", "r1", "erased", 2, 0, [], []]),
            held("e6", 0, 1, json!(["other"]), json!(["H4"])),
            json!(["e7", "r1", "erased", 1, 0, [], []]),
        ]
    );
    let deep = lakepurge(&[
        "verify",
        &format!("{}", ws.join("manifests/gdpr/r1.json").display()),
        "--deep",
        "--job",
        job,
    ]);
    assert_eq!(deep.code, 0, "{}", deep.all_output());

    // status: the held requests apart from the late ones, by basis, since when.
    let status = lakepurge_env(
        &["status", "--job", job, "--json", "--sla", "1d"],
        &[("LAKEPURGE_NOW", "2026-12-05T00:00:00Z")],
    );
    assert_eq!(
        status.code,
        0,
        "held requests are not late: {}",
        status.all_output()
    );
    let s: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s["held"]["requests"], json!(4), "{s}");
    assert_eq!(
        s["held"]["by_basis"],
        json!({"legal_claims": 1, "legal_obligation": 2, "other": 1}),
        "{s}"
    );
    assert_eq!(
        s["held"]["oldest_hold_placed_at"],
        json!("2026-11-01T00:00:00Z"),
        "{s}"
    );
    assert_eq!(s["pending"], json!(0), "{s}");
    assert_eq!(s["late"]["count"], json!(0), "{s}");

    // H1 released: the next run erases user 1's rows and confirms e1 again, finally; e2, e3
    // and e6 stay held and are not confirmed again.
    write(
        &ws.join("holds/part-1.json"),
        &(json!({"hold_id": "H1", "released_at": "2026-11-20T00:00:00Z"}).to_string() + "\n"),
    );
    let run = lakepurge(&["purge", "--job", job, "--run-id", "r2"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let expected = oracle(
        &original,
        json!({
            "users": [["user_id"], [1, 2, 3, 4, 5], []],
            "orders": [["user_id"], [1, 2, 3, 4, 5], [2]],
            "invoices": [["user_id"], [], []],
            "messages": [["tenant", "user"], [tu("t1", 9), tu("t1", 8)], [tu("t1", 9)]],
        }),
    );
    let now: Value = serde_json::from_str(&run_python("read back", READ_BACK, &[&wh])).unwrap();
    assert_eq!(now, expected);
    let all = confirmations(&ws);
    let r2: Vec<&Value> = all.iter().filter(|c| c[1] == json!("r2")).collect();
    assert_eq!(r2, [&json!(["e1", "r2", "erased", 3, 0, [], []])]);
    for m in ["r1", "r2"] {
        let v = lakepurge(&[
            "verify",
            &format!("{}", ws.join(format!("manifests/gdpr/{m}.json")).display()),
            "--deep",
            "--job",
            job,
        ]);
        assert_eq!(v.code, 0, "{m}: {}", v.all_output());
    }
    let s: Value = serde_json::from_str(
        &lakepurge_env(
            &["status", "--job", job, "--json"],
            &[("LAKEPURGE_NOW", "2026-12-05T00:00:00Z")],
        )
        .stdout,
    )
    .unwrap();
    assert_eq!(s["held"]["requests"], json!(3), "{s}");
    // No subject id in any record.
    let m2 = std::fs::read_to_string(ws.join("manifests/gdpr/r2.json")).unwrap();
    assert!(!m2.contains("t1") && !m2.contains("\"user_id\": 1"), "{m2}");
}

/// A malformed hold row, or a hold naming a table the job does not have, is refused before
/// anything is written (exit 2, naming the file and row, or the hold and the table).
#[test]
fn bad_holds_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let ws = std::path::absolute(dir.path()).unwrap();
    let wh = ws.join("wh");
    run_python("the warehouse", WAREHOUSE, &[&wh]);
    write(&ws.join("job.toml"), &job_text(&ws));
    let job = ws.join("job.toml");
    let job = job.to_str().unwrap();
    write_events(&ws.join("events/e.json"), &[("e1", "user_id", json!("1"))]);
    let before = tree_hashes(&ws);
    let cases = [
        (
            hold(
                "H1",
                "user_id",
                json!("1"),
                None,
                "legal_claims",
                "2026-11-01",
            ) + &hold(
                "H2",
                "user_id",
                json!("1"),
                None,
                "litigation",
                "2026-11-01",
            ),
            vec![
                "part-0.json",
                "row 2",
                "basis \"litigation\"",
                "legal_claims",
            ],
        ),
        (
            hold(
                "H1",
                "user_id",
                json!("1"),
                None,
                "legal_claims",
                "yesterday",
            ),
            vec!["part-0.json", "row 1", "placed_at \"yesterday\""],
        ),
        (
            hold(
                "H1",
                "user_id",
                json!("1"),
                Some("user"),
                "legal_claims",
                "2026-11-01",
            ),
            vec!["hold H1", "table \"user\""],
        ),
    ];
    for (text, says) in cases {
        write(&ws.join("holds/part-0.json"), &text);
        for cmd in [
            vec!["validate", "--job", job],
            vec!["purge", "--job", job, "--run-id", "r1"],
        ] {
            let r = lakepurge(&cmd);
            assert_eq!(r.code, 2, "{cmd:?}: {}", r.all_output());
            for s in &says {
                assert!(r.stderr.contains(s), "{cmd:?}: {s:?} not in {}", r.stderr);
            }
        }
        let mut after = tree_hashes(&ws);
        after.remove("holds/part-0.json");
        let mut was = before.clone();
        was.remove("holds/part-0.json");
        assert_eq!(after, was, "something was written");
    }
}

/// One event naming several subjects (a request covering two accounts and a tenant-scoped
/// id), one of them under a hold: the hold keeps the rows of the subject it names, and the
/// other subjects of the same event are erased everywhere (but in the exempt table).
#[test]
fn a_hold_keeps_its_subject_not_the_other_subjects_of_its_event() {
    let (_dir, ws, wh, original) = workspace();
    let job = ws.join("job.toml");
    let job = job.to_str().unwrap();
    write_events(
        &ws.join("events/e.json"),
        &[
            ("e1", "user_id", json!("1")),
            ("e1", "user_id", json!("2")),
            ("e1", "tenant_user", json!("[\"t1\", 9]")),
        ],
    );
    write(
        &ws.join("holds/part-0.json"),
        &hold(
            "H1",
            "user_id",
            json!("1"),
            None,
            "legal_claims",
            "2026-11-01T00:00:00Z",
        ),
    );
    let run = lakepurge(&["purge", "--job", job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let tu = |a: &str, b: i64| json!([a, b]);
    let expected = oracle(
        &original,
        json!({
            "users": [["user_id"], [1, 2], [1]],
            "orders": [["user_id"], [1, 2], [1]],
            "invoices": [["user_id"], [], []],
            "messages": [["tenant", "user"], [tu("t1", 9)], []],
        }),
    );
    let now: Value = serde_json::from_str(&run_python("read back", READ_BACK, &[&wh])).unwrap();
    assert_eq!(now, expected);
    let m = read_json(&ws.join("manifests/gdpr/r1.json"));
    let table = |name: &str| -> Value {
        m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == json!(name))
            .unwrap()
            .clone()
    };
    // users: user 1 held, user 2 removed; orders: user 1's two orders held, user 2's two
    // removed; messages: the tenant-scoped id removed, nothing held there.
    assert_eq!(
        [
            &table("users")["rows_removed"],
            &table("users")["held"]["rows"]
        ],
        [&json!(1), &json!(1)]
    );
    assert_eq!(
        [
            &table("orders")["rows_removed"],
            &table("orders")["held"]["rows"]
        ],
        [&json!(2), &json!(2)]
    );
    assert_eq!(table("messages")["rows_removed"], json!(1));
    assert!(table("messages").get("held").is_none(), "{m}");
    let deep = lakepurge(&["verify", "--job", job, "--run-id", "r1", "--deep"]);
    assert_eq!(deep.code, 0, "{}", deep.all_output());
}

/// A hold names its subject as the rules read it: a hold on user `5` keeps the rows an event
/// naming `05` would erase, and a hold on `["t1", 9]` the row an event naming `["t1","9"]`
/// would (ids are converted to the key columns' types on both sides). And the run applies the
/// hold files as its first attempt read them: one changed in place between two shards of the
/// run is refused (exit 2), never read anew.
#[test]
fn holds_match_as_rules_do_and_are_pinned_by_content() {
    let (_dir, ws, wh, original) = workspace();
    let job = ws.join("job.toml");
    let job = job.to_str().unwrap();
    write_events(
        &ws.join("events/e.json"),
        &[
            ("e1", "user_id", json!("05")),
            ("e2", "user_id", json!("6")),
            ("e3", "tenant_user", json!("[\"t1\",\"9\"]")),
        ],
    );
    let holds = hold(
        "H1",
        "user_id",
        json!("5"),
        None,
        "legal_claims",
        "2026-11-01T00:00:00Z",
    ) + &hold(
        "H2",
        "tenant_user",
        json!("[\"t1\", 9]"),
        Some("messages"),
        "other",
        "2026-11-01T00:00:00Z",
    );
    write(&ws.join("holds/part-0.json"), &holds);
    let run = lakepurge(&["purge", "--job", job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let tu = |a: &str, b: i64| json!([a, b]);
    let expected = oracle(
        &original,
        json!({
            "users": [["user_id"], [5, 6], [5]],
            "orders": [["user_id"], [5, 6], [5]],
            "invoices": [["user_id"], [], []],
            "messages": [["tenant", "user"], [tu("t1", 9)], [tu("t1", 9)]],
        }),
    );
    let now: Value = serde_json::from_str(&run_python("read back", READ_BACK, &[&wh])).unwrap();
    assert_eq!(now, expected);
    let deep = lakepurge(&["verify", "--job", job, "--run-id", "r1", "--deep"]);
    assert_eq!(deep.code, 0, "{}", deep.all_output());

    // A second run in two shards; the hold file is appended to in place between them.
    write_events(
        &ws.join("events/f.json"),
        &[("e4", "user_id", json!("2")), ("e5", "user_id", json!("3"))],
    );
    let first = lakepurge(&["purge", "--job", job, "--run-id", "r2", "--shard", "0/2"]);
    assert_eq!(first.code, 0, "{}", first.all_output());
    write(
        &ws.join("holds/part-0.json"),
        &(holds
            + &hold(
                "H3",
                "user_id",
                json!("2"),
                None,
                "legal_claims",
                "2026-11-01T00:00:00Z",
            )),
    );
    let second = lakepurge(&["purge", "--job", job, "--run-id", "r2", "--shard", "1/2"]);
    assert_eq!(second.code, 2, "{}", second.all_output());
    assert!(
        second
            .stderr
            .contains("part-0.json changed since it was read"),
        "{}",
        second.stderr
    );
}

/// A hold on a subject type no event of the run names (an email) keeps the row another
/// rule's event (a user id) would erase, and `verify --deep` passes on it; a Parquet hold
/// file whose `subject_id` is a list is refused (exit 2), never a hold that holds nothing.
#[test]
fn a_hold_of_a_type_without_events_keeps_its_rows_and_list_ids_are_refused() {
    let (_dir, ws, wh, _original) = workspace();
    let job = ws.join("job.toml");
    let text = std::fs::read_to_string(&job).unwrap().replacen(
        "[[table.match]]\ncolumn = \"user_id\"\nsubject_type = \"user_id\"\n[[table]]\nname = \"orders\"",
        "[[table.match]]\ncolumn = \"user_id\"\nsubject_type = \"user_id\"\n[[table.match]]\ncolumn = \"name\"\nsubject_type = \"name\"\nnormalize = \"lowercase_trim\"\n[[table]]\nname = \"orders\"",
        1,
    );
    assert!(text.contains("subject_type = \"name\""), "{text}");
    write(&job, &text);
    let job = job.to_str().unwrap();
    write_events(&ws.join("events/e.json"), &[("e1", "user_id", json!("3"))]);
    write(
        &ws.join("holds/part-0.json"),
        &hold(
            "H1",
            "name",
            json!(" C "),
            Some("users"),
            "legal_claims",
            "2026-11-01T00:00:00Z",
        ),
    );
    let run = lakepurge(&["purge", "--job", job, "--run-id", "r1"]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let now: Value = serde_json::from_str(&run_python("read back", READ_BACK, &[&wh])).unwrap();
    let users: Vec<&str> = now["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        users.iter().any(|r| r.contains("\"user_id\": 3")),
        "user 3's row (name c) is held: {users:?}"
    );
    let deep = lakepurge(&["verify", "--job", job, "--run-id", "r1", "--deep"]);
    assert_eq!(deep.code, 0, "{}", deep.all_output());

    // A list-typed subject_id in a Parquet hold file.
    std::fs::remove_file(ws.join("holds/part-0.json")).unwrap();
    write(
        &ws.join("job.toml"),
        &std::fs::read_to_string(ws.join("job.toml"))
            .unwrap()
            .replacen(
                "[holds]\nlocation",
                "[holds]\nformat = \"parquet\"\nlocation",
                1,
            )
            .replacen("format = \"ndjson\"\n[[table]]", "[[table]]", 1),
    );
    run_python(
        "a hold file with a list id",
        "import sys, pyarrow as pa, pyarrow.parquet as pq\n\
         pq.write_table(pa.table({'hold_id': ['H2'], 'subject_type': ['user_id'], \
         'subject_id': pa.array([['3']]), 'basis': ['other'], 'placed_at': ['2026-11-01']}), \
         sys.argv[1] + '/holds/h.parquet')\n\
         import os\n\
         os._exit(0)\n",
        &[&ws],
    );
    let bad = lakepurge(&["purge", "--job", job, "--run-id", "r2"]);
    assert_eq!(bad.code, 2, "{}", bad.all_output());
    assert!(
        bad.stderr.contains("h.parquet") && bad.stderr.contains("subject_id"),
        "{}",
        bad.stderr
    );
}
