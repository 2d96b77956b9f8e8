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
    "event_id": [f"e{i}" for i in range(1, 9)],
    "subject_type": ["user_id"] * 5 + ["email"] * 3,
    "subject_id": ["u-1001", "u-1002", "u-1003", "u-1004", "u-1005",
                   "Alice@Example.org", "Carol@Example.org", "Dave@Example.org"],
    "requested_at": ["2026-11-20T00:00:00Z"] * 8}))
# Registered (user_id); referrer_uid holds erased ids and no rule covers it.
# (Each table also holds people who were not erased: a reference names mostly those.)
others = [f"u-{n}" for n in range(5100, 5110)]
put("crm/users/part-0.parquet", pa.table({
    "user_id": ["u-1001", "u-5009", "u-5010", "u-5011", "u-5012", "u-5013"] + others,
    "referrer_uid": ["u-5020", "u-1002", "u-1002", "u-1003", "u-1004", None] + others,
    "plan": ["a", "b", "c", "d", "e", "f"] + ["g"] * 10}))
# Unregistered, hive-partitioned: erased ids in a struct field under another name.
visitor = pa.struct([("uid", pa.string()), ("country", pa.string())])
for dt, uids in [("2026-11-01", ["u-1001", "u-1001", "u-5050"] + others), ("2026-11-02", ["u-1003", "u-5060", "u-1005"] + others)]:
    put(f"analytics/clicks/dt={dt}/part-0.parquet", pa.table({
        "visitor": pa.array([{"uid": u, "country": "FR"} for u in uids], visitor),
        "session_id": [f"s-{i}" for i in range(len(uids))]}))
# Unregistered: emails differently cased and padded.
put("marketing/leads/part-0.parquet", pa.table({
    "lead_id": pa.array(range(1, 16), pa.int64()),
    "email": ["ALICE@example.org ", " alice@EXAMPLE.org", "bob@example.org", "carol@example.org",
              "DAVE@example.org"] + [f"lead{i}@example.org" for i in range(10)]}))
# Columns that look like ids but hold no erased value.
put("billing/invoices/part-0.parquet", pa.table({
    "account_id": pa.array([100, 200], pa.int64()), "customer_id": ["c-1", "c-2"],
    "amount": [1.5, 2.5]}))
# Hidden folders hold erased ids too: never looked at.
put(".staging/part-0.parquet", pa.table({"user_id": ["u-1001", "u-1002", "u-1003"]}))
put("_tmp/part-0.parquet", pa.table({"user_id": ["u-1002", "u-1003", "u-1004"]}))
# A Delta table (its log makes it one table).
write_deltalake(os.path.join(wh, "lake/orders"), pa.table({
    "order_id": pa.array(range(1, 15), pa.int64()),
    "buyer_id": ["u-1002", "u-5099", "u-1004", "u-1005"] + others}))
"#;

/// Rows per (table folder, column) holding erased subjects, counted by pyarrow (emails
/// lowercased and trimmed), over every file.
const ORACLE: &str = r#"
import sys, json, pyarrow.dataset as ds
wh = sys.argv[1]
ids = {"u-1001", "u-1002", "u-1003", "u-1004", "u-1005"}
emails = {"alice@example.org", "carol@example.org", "dave@example.org"}
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

/// The spec of the registered table at `wh/<folder>` (named by its folders), its `user_id`
/// column covered.
fn registered(folder: &str) -> String {
    format!(
        "[[table]]\nname = \"{}\"\nlocation = \"../wh/{folder}\"\n\
         [[table.match]]\ncolumn = \"user_id\"\nsubject_type = \"user_id\"\n",
        folder.replace('/', ".")
    )
}

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
    write(&job_path, &job_text(&ws, &registered("crm/users")));
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
        4 + 4 + 4 + 3
    );

    // No subject id or raw value in any output or proposed spec.
    let mut outputs = vec![run.all_output(), discover(job, &root, &[]).all_output()];
    for entry in std::fs::read_dir(&specs).unwrap() {
        outputs.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    for text in &outputs {
        for secret in [
            "u-1001", "u-1002", "u-1003", "alice", "ALICE", "carol", "dave",
        ] {
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
    // crm.users: its own rule (u-1001, one row) and the new one.
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

/// A warehouse where erased subjects are rare and coincidences common (argv: folder, seed):
/// integer user ids (a tenth of them old, small and dense, the rest spread over a million),
/// text customer ids (`C-` and six digits) and emails. Genuine references hold about 1 row in
/// 100 naming an erased subject; beside them are per-day counters, durations in milliseconds,
/// amounts, other entities' own sequences (orders, messages, pages, coupons `C-` and six
/// digits), and epoch timestamps, all of which hold erased ids by coincidence. Prints the
/// genuine references as JSON: [folder, column, subject type].
const NOISY_WAREHOUSE: &str = r#"
import sys, os, json, random
import pyarrow as pa, pyarrow.parquet as pq
wh, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
def put(rel, cols):
    path = os.path.join(wh, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(cols), path)
old = rng.sample(range(1, 20_001), 2_000)
new = rng.sample(range(20_001, 1_000_000), 18_000)
users = old + new
erased_users = rng.sample(users, 200)
customers = [f"C-{n:06d}" for n in rng.sample(range(0, 30_000), 1_000) + rng.sample(range(30_000, 1_000_000), 4_000)]
erased_customers = rng.sample(customers, 50)
emails = [f"{rng.choice(['ann','bo','cy','di','ed'])}.{i}.{rng.randrange(10**6)}@mail.example" for i in range(5_000)]
erased_emails = rng.sample(emails, 50)
events = [("user_id", str(u)) for u in erased_users] + [("customer_id", c) for c in erased_customers] \
    + [("email", e.upper() if i % 3 == 0 else e) for i, e in enumerate(erased_emails)]
rng.shuffle(events)
put("events/part-0.parquet", {
    "event_id": [f"e{i:05d}" for i in range(len(events))],
    "subject_type": [t for t, _ in events], "subject_id": [s for _, s in events],
    "requested_at": ["2026-11-20T00:00:00Z"] * len(events)})
def durations(n): return [int(rng.lognormvariate(8, 1.2)) % 600_000 for _ in range(n)]
def maybe(v, p): return v if rng.random() < p else None
# Unregistered: support tickets (a genuine user reference among sequences and measures).
n = 20_000
put("support/tickets/part-0.parquet", {
    "ticket_id": pa.array(range(1, n + 1), pa.int64()),
    "requester_id": pa.array([rng.choice(users) for _ in range(n)], pa.int64()),
    "handle_ms": pa.array(durations(n), pa.int64()),
    "reopen_count": pa.array([rng.randrange(4) for _ in range(n)], pa.int32()),
    "opened_epoch": pa.array([1_700_000_000 + rng.randrange(30_000_000) for _ in range(n)], pa.int64())})
# Registered (user_id covered): an uncovered referrer beside a counter and the profile's sequence.
n = 20_000
put("crm/profiles/part-0.parquet", {
    "user_id": pa.array(rng.sample(users, n), pa.int64()),
    "referrer_uid": pa.array([maybe(rng.choice(users), 0.6) for _ in range(n)], pa.int64()),
    "visits_today": pa.array([rng.randrange(60) for _ in range(n)], pa.int32()),
    "profile_seq": pa.array(range(1, n + 1), pa.int64())})
# Unregistered: orders with a text customer reference, coupons of the same shape, amounts.
n = 30_000
for part in range(3):
    lo = part * n // 3
    put(f"shop/orders/part-{part}.parquet", {
        "order_id": pa.array(range(lo + 1, lo + n // 3 + 1), pa.int64()),
        "customer_ref": [rng.choice(customers) for _ in range(n // 3)],
        "coupon": [f"C-{rng.randrange(30_000):06d}" if rng.random() < 0.5 else None for _ in range(n // 3)],
        "amount_cents": pa.array([rng.randrange(100, 50_000) for _ in range(n // 3)], pa.int64()),
        "items": pa.array([rng.randrange(1, 9) for _ in range(n // 3)], pa.int32())})
# Unregistered, partitioned by day: pageviews (user id, anonymous mostly), with a per-day
# counter, a duration, other entities' ids (pages, messages).
for d in range(4):
    n = 8_000
    put(f"web/pageviews/dt=2026-11-0{d + 1}/part-0.parquet", {
        "user_id": pa.array([maybe(rng.choice(users), 0.7) for _ in range(n)], pa.int64()),
        "view_of_day": pa.array(range(n), pa.int64()),
        "duration_ms": pa.array(durations(n), pa.int64()),
        "page_id": pa.array([rng.randrange(1, 5_000) for _ in range(n)], pa.int64()),
        "message_id": pa.array([d * n + i + 1 for i in range(n)], pa.int64())})
# Unregistered: leads with emails, differently cased.
n = 5_000
put("marketing/leads/part-0.parquet", {
    "lead_id": pa.array(range(1, n + 1), pa.int64()),
    "email": [e.upper() if rng.random() < 0.2 else e for e in rng.sample(emails, n)],
    "score": pa.array([rng.randrange(100) for _ in range(n)], pa.int32())})
# Unregistered: messages, nothing genuine: a dense sequence, threads, sizes, times.
n = 40_000
put("logs/messages/part-0.parquet", {
    "message_id": pa.array(range(1, n + 1), pa.int64()),
    "thread_id": pa.array([rng.randrange(1, 25_000) for _ in range(n)], pa.int64()),
    "length": pa.array([rng.randrange(1, 5_000) for _ in range(n)], pa.int32()),
    "sent_ms": pa.array([1_700_000_000_000 + rng.randrange(10**9) for _ in range(n)], pa.int64())})
# Unregistered: sessions with the user inside a struct, beside a per-user counter.
actor = pa.struct([("uid", pa.int64()), ("session_no", pa.int64())])
n = 15_000
put("app/sessions/part-0.parquet", {
    "actor": pa.array([{"uid": rng.choice(users), "session_no": rng.randrange(1, 400)} for _ in range(n)], actor),
    "session_seq": pa.array(range(1, n + 1), pa.int64())})
print(json.dumps([
    ["support/tickets", "requester_id", "user_id"],
    ["crm/profiles", "referrer_uid", "user_id"],
    ["shop/orders", "customer_ref", "customer_id"],
    ["web/pageviews", "user_id", "user_id"],
    ["marketing/leads", "email", "email"],
    ["app/sessions", "actor.uid", "user_id"],
]))
"#;

/// #26: on a warehouse where coincidences outnumber genuine references, every genuine
/// reference is proposed and nothing else is, over several seeds; the coincidences are listed
/// as weak matches; the written specs hold only genuine columns and validate.
#[test]
fn discover_proposes_every_genuine_reference_and_no_coincidence_over_seeds() {
    let mut lines = Vec::new();
    for seed in 1..=5u32 {
        let dir = tempfile::tempdir().unwrap();
        let ws = std::path::absolute(dir.path()).unwrap();
        let wh = ws.join("wh");
        let truth = run_python(
            "the noisy warehouse",
            NOISY_WAREHOUSE,
            &[wh.to_str().unwrap(), &seed.to_string()],
        );
        let truth: Vec<(String, String, String)> = serde_json::from_str(&truth).unwrap();
        let job_path = ws.join("jobs/gdpr.toml");
        write(&job_path, &job_text(&ws, &registered("crm/profiles")));
        let job = job_path.to_str().unwrap();
        let root = file_url(&wh);
        let specs = ws.join("proposed");
        let run = lakepurge(&[
            "discover",
            "--job",
            job,
            "--root",
            &root,
            "--json",
            "--write",
            specs.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        let mut proposed = Vec::new();
        let mut weak = Vec::new();
        let (mut genuine_lift, mut weak_lift) = (f64::MAX, 0f64);
        for t in report["tables"].as_array().unwrap() {
            assert_eq!(t["examined"], json!(true), "{t}");
            let folder = t["location"].as_str().unwrap()[root.len()..]
                .trim_end_matches('/')
                .to_string();
            for e in t["evidence"].as_array().unwrap() {
                proposed.push((
                    folder.clone(),
                    e["column"].as_str().unwrap().to_string(),
                    e["subject_type"].as_str().unwrap().to_string(),
                ));
                assert_eq!(e["verdict"], json!("finding"));
                genuine_lift = genuine_lift.min(e["lift"].as_f64().unwrap());
            }
            for e in t["weak_matches"].as_array().unwrap() {
                assert_eq!(e["verdict"], json!("weak_match"));
                assert!(e["reason"].is_string(), "{e}");
                weak.push(format!("{folder} {}", e["column"].as_str().unwrap()));
                weak_lift = weak_lift.max(e["lift"].as_f64().unwrap());
            }
        }
        let hits = proposed.iter().filter(|p| truth.contains(p)).count();
        let precision = hits as f64 / proposed.len().max(1) as f64;
        let recall = hits as f64 / truth.len() as f64;
        lines.push(format!(
            "seed {seed}: precision {precision:.2}, recall {recall:.2}, {} proposed, {} weak \
             matches (highest lift {weak_lift:.1}), lowest finding lift {genuine_lift:.1}",
            proposed.len(),
            weak.len()
        ));
        assert_eq!(
            (precision, recall),
            (1.0, 1.0),
            "seed {seed}: proposed {proposed:?}, truth {truth:?}, weak {weak:?}"
        );
        // Coincidences were there to be found, and were listed, not proposed.
        assert!(weak.len() >= 4, "seed {seed}: weak matches {weak:?}");
        // Only the genuine columns went into the written specs, and they validate.
        let mut rules = Vec::new();
        for entry in std::fs::read_dir(&specs).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            let spec: toml::Value = toml::from_str(&text).unwrap();
            for m in spec["match"].as_array().unwrap() {
                rules.push(m["column"].as_str().unwrap().to_string());
            }
        }
        rules.sort();
        let mut expected: Vec<String> = truth.iter().map(|t| t.1.clone()).collect();
        expected.push("user_id".into()); // crm.profiles' own rule, kept in its extended spec
        expected.sort();
        assert_eq!(rules, expected, "seed {seed}");
        let job2 = ws.join("jobs/proposed.toml");
        write(
            &job2,
            &job_text(&ws, &format!("tables = \"{}\"", specs.display())),
        );
        let v = lakepurge(&["validate", "--job", job2.to_str().unwrap()]);
        assert_eq!(v.code, 0, "{}", v.all_output());
    }
    eprintln!("{}", lines.join("\n"));
}

/// A root that cannot be listed and a file that cannot be read (a 403 from the store, through
/// the fault proxy in front of moto) are reported as not examined, and `--fail-on-findings`
/// fails on them; a weak match alone does not fail it.
#[test]
fn discover_reports_what_it_could_not_examine_and_fails_the_gate() {
    let (moto, _ws, job) = crate::s3::versioned_setup("");
    let proxy = crate::proxy::FaultProxy::start(&moto.endpoint());
    let run = |extra: &[&str]| {
        let mut args = vec![
            "discover",
            "--job",
            &job,
            "--root",
            "s3://lake/warehouse/",
            "--json",
        ];
        args.extend_from_slice(extra);
        let r = moto.lakepurge_via(&proxy.endpoint(), &args, &[]);
        let report: Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.all_output()));
        (r.code, report)
    };
    // No fault: the registered table's text column `v` holds the one erased id: a weak match
    // (too few subjects), not a finding; the gate passes.
    let (code, report) = run(&["--fail-on-findings"]);
    assert_eq!(code, 0, "{report}");
    let t = &report["tables"][0];
    assert_eq!(
        (&t["examined"], &t["files_read"]),
        (&json!(true), &json!(3))
    );
    assert_eq!(t["evidence"], json!([]));
    assert_eq!(t["weak_matches"][0]["column"], json!("v"));
    assert_eq!(t["weak_matches"][0]["subjects"], json!(1));
    assert!(t["finding"].is_null());

    // The listing refused: nothing examined, said so; the gate fails, the report alone does not.
    proxy.inject(json!({"kind": "list", "fault": "status", "status": 403, "code": "AccessDenied", "count": -1}));
    let (code, report) = run(&["--fail-on-findings"]);
    assert_eq!(code, 3, "{report}");
    assert_eq!(report["tables"], json!([]));
    assert_eq!(
        report["roots_not_examined"][0]["root"],
        json!("s3://lake/warehouse/")
    );
    assert!(
        report["roots_not_examined"][0]["error"]
            .as_str()
            .unwrap()
            .contains("403")
            || report["roots_not_examined"][0]["error"]
                .as_str()
                .unwrap()
                .contains("AccessDenied"),
        "{report}"
    );
    assert_eq!(run(&[]).0, 0);
    assert!(proxy.faults_fired() >= 2);

    // One file's reads refused: the table is not fully examined.
    proxy.clear();
    proxy.inject(json!({"kind": "get", "fault": "status", "status": 403, "code": "AccessDenied", "count": -1, "match": "t/a.parquet"}));
    let (code, report) = run(&["--fail-on-findings"]);
    assert_eq!(code, 3, "{report}");
    let t = &report["tables"][0];
    assert_eq!(
        (&t["examined"], &t["files_read"], &t["files_unreadable"]),
        (&json!(false), &json!(2), &json!(1)),
        "{t}"
    );
    assert!(proxy.faults_fired() >= 1);
}

/// Erased-id shapes that fool a naive chance model (argv: folder, case), each with the columns
/// that must never be proposed and, where there is one, the genuine reference that must be:
/// `block` (ids 1..300 erased together: a month, a rating, a skewed count and a sequence all
/// inside the block), `stride` (ids from an allocator stepping by 10, like other entities'
/// ids), `small` (ids 1..5 erased: small-domain columns), `few` (two erased emails: found).
/// Prints [genuine references as [folder, column]].
const ADVERSE: &str = r#"
import sys, os, json, random
import pyarrow as pa, pyarrow.parquet as pq
wh, case = sys.argv[1], sys.argv[2]
rng = random.Random(11)
def put(rel, cols):
    path = os.path.join(wh, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(pa.table(cols), path)
def events(pairs):
    put("events/part-0.parquet", {"event_id": [f"e{i:05d}" for i in range(len(pairs))],
        "subject_type": [t for t, _ in pairs], "subject_id": [s for _, s in pairs],
        "requested_at": ["2026-11-20T00:00:00Z"] * len(pairs)})
i32 = lambda v: pa.array(v, pa.int32())
i64 = lambda v: pa.array(v, pa.int64())
n = 30_000
genuine = []
if case == "block":
    users = list(range(1, 200_001))
    erased = list(range(1, 301)) + rng.sample(range(301, 200_001), 20)
    events([("user_id", str(u)) for u in erased])
    put("logs/messages/part-0.parquet", {
        "message_id": i64(range(1, n + 1)),
        "rating": i32([rng.randrange(1, 6) for _ in range(n)]),
        "month": i32([rng.randrange(1, 13) for _ in range(n)]),
        "attachments": i32([min(int(rng.paretovariate(1.5)) - 1, 200) for _ in range(n)])})
elif case == "stride":
    users = rng.sample(range(1, 10 * 1_000_000, 10), 50_000)
    erased = rng.sample(users, 200)
    events([("user_id", str(u)) for u in erased])
    put("shop/orders/part-0.parquet", {
        "order_id": i64(range(1, 10 * n, 10)),
        "buyer_id": i64([rng.choice(users) if rng.random() < 0.3 else None for _ in range(n)])})
    genuine.append(["shop/orders", "buyer_id"])
elif case == "small":
    users = list(range(1, 11)) + rng.sample(range(11, 2_000_000), 60_000)
    erased = [1, 2, 3, 4, 5] + rng.sample(users[10:], 200)
    events([("user_id", str(u)) for u in erased])
    put("shop/lines/part-0.parquet", {
        "items": i32([rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 5, 6, 10, 12]) for _ in range(n)]),
        "priority": i32([rng.randrange(1, 6) for _ in range(n)]),
        "retries": i32([min(int(rng.paretovariate(1.2)), 1000) - 1 for _ in range(n)])})
elif case == "few":
    emails = [f"person{i}.x{rng.randrange(10**6)}@corp.example" for i in range(10_000)]
    users = []
    events([("email", e) for e in emails[:2]])
    put("marketing/leads/part-0.parquet", {"email": [rng.choice(emails[2:]) for _ in range(2000)] + emails[:2]})
    genuine.append(["marketing/leads", "email"])
put("crm/users/part-0.parquet", {"user_id": i64(users)})
print(json.dumps(genuine))
"#;

/// #26, review: blocks of erased ids, a common stride, small erased ids: nothing proposed but
/// the genuine reference; two erased emails in an unregistered table are a finding.
#[test]
fn discover_is_not_fooled_by_blocks_strides_or_small_ids() {
    for case in ["block", "stride", "small", "few"] {
        let dir = tempfile::tempdir().unwrap();
        let ws = std::path::absolute(dir.path()).unwrap();
        let wh = ws.join("wh");
        let genuine = run_python(case, ADVERSE, &[wh.to_str().unwrap(), case]);
        let genuine: Vec<(String, String)> = serde_json::from_str(&genuine).unwrap();
        let job_path = ws.join("jobs/gdpr.toml");
        write(&job_path, &job_text(&ws, &registered("crm/users")));
        let root = file_url(&wh);
        let run = lakepurge(&[
            "discover",
            "--job",
            job_path.to_str().unwrap(),
            "--root",
            &root,
            "--json",
            "--fail-on-findings",
        ]);
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        let mut proposed = Vec::new();
        for t in report["tables"].as_array().unwrap() {
            let folder = t["location"].as_str().unwrap()[root.len()..]
                .trim_end_matches('/')
                .to_string();
            for e in t["evidence"].as_array().unwrap() {
                proposed.push((folder.clone(), e["column"].as_str().unwrap().to_string()));
            }
        }
        assert_eq!(proposed, genuine, "{case}: {}", run.stdout);
        assert_eq!(run.code, if genuine.is_empty() { 0 } else { 3 }, "{case}");
    }
}
