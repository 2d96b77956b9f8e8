//! `report`: the page for the privacy office and auditors, rendered by a real headless Chromium
//! (the system's). Its numbers are read back from the browser's DOM and checked against
//! `status --json`, the manifests, and time-to-confirmation computed independently from the
//! confirmations with pyarrow; the page logs no console message (its Content-Security-Policy
//! makes any network request one, as a control page shows), and names no subject id.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::common::*;

/// The system's Chromium: `LAKEPURGE_CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> String {
    std::env::var("LAKEPURGE_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// Loads `page` in headless Chromium with `flags` (`--dump-dom`, `--screenshot=…`); returns
/// stdout and the console messages Chromium logged.
fn browse(page: &Path, flags: &[&str]) -> (String, Vec<String>) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            // No background connections (this machine's network is closed to them).
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(flags)
        .arg(url::Url::from_file_path(page).unwrap().to_string())
        .output()
        .expect("run chromium (LAKEPURGE_CHROMIUM or `chromium` on the PATH; .ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&out.stdout).into_owned(), console)
}

/// The numbers of a page's DOM, read by their data attributes (Python's HTML parser).
fn numbers(dom: &str) -> Value {
    let script = r#"
import sys, json
from html.parser import HTMLParser
out = {"keys": {}, "days": {}, "ages": {}, "bases": {}, "runs": {}}
class P(HTMLParser):
    day = None
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "data-key" in a:
            out["keys"][a["data-key"]] = a["data-value"]
        if tag == "tr" and "data-day" in a:
            P.day = a["data-day"]
        if tag == "td" and "data-status" in a:
            out["days"].setdefault(P.day, {})[a["data-status"]] = int(a["data-count"])
        if "data-age" in a:
            out["ages"][a["data-age"]] = int(a["data-count"])
        if "data-basis" in a:
            out["bases"][a["data-basis"]] = int(a["data-count"])
        if "data-run" in a:
            out["runs"][a["data-run"]] = {"verified": a["data-verified"] == "true",
                "rows_removed": int(a["data-rows-removed"])}
P().feed(sys.stdin.read())
print(json.dumps(out))
"#;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dom.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Time from request to first confirmation per confirmed event, from the confirmation files
/// with pyarrow: [requests, p50, p95, max, within 30 days] (seconds, nearest rank).
fn latency_oracle(confirmations: &Path) -> Value {
    let script = r#"
import sys, json, math, glob, pyarrow.parquet as pq
first = {}
for f in glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True):
    for r in pq.read_table(f).to_pylist():
        c, q = r["confirmed_at"], r["requested_at"]
        if c is None or q is None:
            continue
        e = first.setdefault(r["event_id"], [c, q])
        e[0], e[1] = min(e[0], c), min(e[1], q)
d = sorted((c - q) // __import__("datetime").timedelta(microseconds=1) // 1000000 for c, q in first.values())
n = len(d)
rank = lambda p: d[math.ceil(p * n) - 1]
print(json.dumps([n, rank(0.5), rank(0.95), d[-1], sum(1 for x in d if x <= 30 * 86400)]))
sys.stdout.flush()
import os
os._exit(0)
"#;
    let out = Command::new(python())
        .args(["-c", script])
        .arg(confirmations)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `lakepurge demo` in a new folder: the folder and its job file.
fn demo() -> (tempfile::TempDir, String) {
    let ws = tempfile::tempdir().unwrap();
    let run = lakepurge(&["demo", "--dir", ws.path().to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.all_output());
    let job = ws.path().join("jobs/demo.toml").display().to_string();
    (ws, job)
}

#[test]
fn report_page_renders_in_chromium_and_its_numbers_are_the_status_and_the_manifests() {
    let (ws, job) = demo();
    let root = ws.path();
    let job = job.as_str();
    // A second, signed run over two more requests; then three requests no run has seen: one
    // new, one 65 days old, one with no request time (late under any SLA).
    let keys = root.join("keys");
    assert_eq!(
        lakepurge(&["keygen", "--out", keys.to_str().unwrap()]).code,
        0
    );
    let event = |id: &str, user: &str, at: Option<&str>| {
        let mut e = json!({"event_id": id, "subject_type": "user_id", "subject_id": user});
        if let Some(at) = at {
            e["requested_at"] = json!(at);
        }
        e.to_string() + "\n"
    };
    write(
        &root.join("events/dt=2026-12-01/more.json"),
        &(event("ev-20", "43", Some("2026-12-01T00:00:00Z"))
            + &event("ev-21", "44", Some("2026-11-30T12:00:00Z"))),
    );
    let signed = lakepurge(&[
        "purge",
        "--job",
        job,
        "--run-id",
        "demo-2",
        "--signing-key",
        keys.join("lakepurge.key").to_str().unwrap(),
    ]);
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    write(
        &root.join("events/dt=2026-12-04/late.json"),
        &(event("ev-30", "45", Some("2026-10-01T00:00:00Z"))
            + &event("ev-31", "46", Some("2026-12-04T12:00:00Z"))
            + &event("ev-32", "47", None)),
    );

    let now = [("LAKEPURGE_NOW", "2026-12-05T00:00:00Z")];
    let page = root.join("out/report.html");
    let public = keys.join("lakepurge.pub");
    let args = |out: &Path| {
        vec![
            "report".to_string(),
            "--job".into(),
            job.into(),
            "--out".into(),
            out.to_str().unwrap().into(),
            "--sla".into(),
            "30d".into(),
            "--public-key".into(),
            public.to_str().unwrap().into(),
            "--json".into(),
        ]
    };
    let run = |out: &Path| {
        let a = args(out);
        lakepurge_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), &now)
    };
    let made = run(&page);
    // Two requests are late: exit 3, like `status --sla`.
    assert_eq!(made.code, 3, "{}", made.stderr);
    let report: Value = serde_json::from_str(&made.stdout).unwrap();
    let status = lakepurge_env(&["status", "--job", job, "--sla", "30d", "--json"], &now);
    assert_eq!(status.code, 3);
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(report["status"], status);
    assert_eq!(
        [
            &status["events"],
            &status["erased"],
            &status["pending"],
            &status["late"]["count"]
        ],
        [&json!(12), &json!(7), &json!(3), &json!(2)]
    );

    // The page in a real browser: no console message, and the DOM's numbers are the same.
    let (dom, console) = browse(&page, &["--dump-dom"]);
    assert!(console.is_empty(), "console messages: {console:?}");
    let n = numbers(&dom);
    for key in [
        "events",
        "confirmed",
        "erased",
        "no_data",
        "no_rule",
        "pending",
    ] {
        assert_eq!(n["keys"][key], status[key].to_string(), "{key}");
    }
    assert_eq!(n["keys"]["held"], status["held"]["requests"].to_string());
    assert_eq!(n["keys"]["late"], "2");
    assert_eq!(n["keys"]["runs_failing"], "0");
    for (age, count) in status["pending_by_age"].as_object().unwrap() {
        assert_eq!(&n["ages"][age], count, "{age}");
    }
    assert_eq!(n["ages"]["over_30d"], 1);
    assert_eq!(n["ages"]["unknown"], 1);
    assert_eq!(n["bases"], status["held"]["by_basis"]);
    assert_eq!(n["bases"], json!({"legal_claims": 1}));
    // Per day: each final status sums to the status's count; held counts the held request.
    for st in ["erased", "no_data", "no_rule"] {
        let total: u64 = n["days"]
            .as_object()
            .unwrap()
            .values()
            .map(|d| d[st].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(json!(total), status[st], "{st} per day");
    }
    // Per run: the manifests' own numbers, each verified (one of them signed).
    let manifests = root.join("manifests/demo");
    for run_id in ["demo-1", "demo-2"] {
        let m = read_json(&manifests.join(format!("{run_id}.json")));
        let removed: u64 = m["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["rows_removed"].as_u64().unwrap())
            .sum();
        assert_eq!(
            n["runs"][run_id],
            json!({"verified": true, "rows_removed": removed}),
            "{run_id}"
        );
    }
    let signatures: Vec<&Value> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["signature"])
        .collect();
    assert_eq!(signatures, [&json!("unsigned"), &json!("valid")]);
    // Time to confirmation, against pyarrow over the confirmation files.
    let oracle = latency_oracle(&manifests.join("confirmations"));
    let l = &report["latency"];
    assert_eq!(
        json!([
            l["requests"],
            l["p50_seconds"],
            l["p95_seconds"],
            l["max_seconds"],
            l["within_sla"]
        ]),
        oracle
    );
    assert_eq!(n["keys"]["p95_seconds"], oracle[2].to_string());
    assert_eq!(n["keys"]["within_sla"], oracle[4].to_string());

    // No subject id on the page (the demo's emails and composite ids).
    let html = std::fs::read_to_string(&page).unwrap();
    for raw in [
        "USER7@example.com",
        "user7@example.com",
        "acme",
        "not-a-number",
    ] {
        assert!(!html.contains(raw), "subject id {raw} on the page");
    }

    // The console check can fail: a page that asks for anything over the network is refused
    // by the same policy, and Chromium logs it.
    let control = root.join("control.html");
    write(
        &control,
        &html.replace(
            "</footer>",
            "</footer><img src=\"http://127.0.0.1:9/x.png\">",
        ),
    );
    let (_, console) = browse(&control, &["--dump-dom"]);
    assert!(
        console
            .iter()
            .any(|l| l.contains("Content Security Policy")),
        "{console:?}"
    );

    // A screenshot renders (a real image, not an empty canvas).
    let shot = root.join("report.png");
    browse(
        &page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1800",
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "{}",
        png.len()
    );

    // An edited manifest: the report says its run FAILS and exits 3 even within the SLA.
    let first = manifests.join("demo-1.json");
    let text = std::fs::read_to_string(&first).unwrap();
    let edited = text.replacen("\"rows_removed\": 8", "\"rows_removed\": 7", 1);
    assert_ne!(text, edited);
    std::fs::write(&first, edited).unwrap();
    let again = run(&root.join("out/again.html"));
    assert_eq!(again.code, 3);
    let again: Value = serde_json::from_str(&again.stdout).unwrap();
    assert_eq!(again["runs"][0]["run_id"], "demo-1");
    assert_eq!(again["runs"][0]["verified"], false);
    let (dom, _) = browse(&root.join("out/again.html"), &["--dump-dom"]);
    let n = numbers(&dom);
    assert_eq!(n["runs"]["demo-1"]["verified"], false);
    assert_ne!(n["keys"]["runs_failing"], "0");
}

/// What the report and `verify` must not be fooled by: a confirmations file that no manifest
/// records (its rows are not confirmations, and verify FAILs the run), a signature removed
/// from a manifest after the job began signing, a request time after its confirmation
/// (counted as negative, never clamped), and bad `--sla` and `--out` values (exit 2).
#[test]
fn report_is_not_fooled_by_a_stray_file_a_stripped_signature_or_a_future_request() {
    let (ws, job) = demo();
    let root = ws.path();
    let job = job.as_str();
    let now = [("LAKEPURGE_NOW", "2026-12-10T00:00:00Z")];
    // A request made "in 2027" (a clock error upstream), purged by a signed run.
    write(
        &root.join("events/dt=2026-12-01/future.json"),
        "{\"event_id\":\"ev-future\",\"subject_type\":\"user_id\",\"subject_id\":\"43\",\
         \"requested_at\":\"2027-01-01T00:00:00Z\"}\n",
    );
    let keys = root.join("keys");
    assert_eq!(
        lakepurge(&["keygen", "--out", keys.to_str().unwrap()]).code,
        0
    );
    let key = keys.join("lakepurge.key");
    let signed = lakepurge(&[
        "purge",
        "--job",
        job,
        "--run-id",
        "demo-2",
        "--signing-key",
        key.to_str().unwrap(),
    ]);
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    let public = keys.join("lakepurge.pub");
    let page = root.join("r.html");
    let report = |extra: &[&str]| {
        let mut args = vec![
            "report",
            "--job",
            job,
            "--out",
            page.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        lakepurge_env(&args, &now)
    };
    let r = report(&["--public-key", public.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.all_output());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["latency"]["negative"], 1, "{}", v["latency"]);
    assert!(v["latency"]["p50_seconds"].as_i64().unwrap() > 0);

    // A file no manifest records, in demo-1's folder, confirming a request no run erased.
    write(
        &root.join("events/dt=2026-12-02/new.json"),
        "{\"event_id\":\"ev-new\",\"subject_type\":\"user_id\",\"subject_id\":\"5\",\
         \"requested_at\":\"2026-11-01T00:00:00Z\"}\n",
    );
    let folder = root.join("manifests/demo/confirmations/job=demo/run_id=demo-1");
    run_python(
        "a forged confirmation",
        "import sys, pyarrow.parquet as pq, pyarrow as pa\n\
         t = pq.read_table(sys.argv[1] + '/part-0.parquet').slice(0, 1)\n\
         t = t.set_column(t.schema.get_field_index('event_id'), 'event_id', pa.array(['ev-new']))\n\
         pq.write_table(t, sys.argv[1] + '/zz-forged.parquet')\n\
         import os\n\
         os._exit(0)\n",
        &[&folder],
    );
    let status = lakepurge_env(&["status", "--job", job, "--json"], &now);
    let s: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(s["pending"], 1, "the forged row is no confirmation: {s}");
    let verify = lakepurge(&["verify", "--job", job, "--run-id", "demo-1"]);
    assert_eq!(verify.code, 3, "{}", verify.stdout);
    assert!(
        verify.stdout.contains("are not its file") && verify.stdout.contains("zz-forged"),
        "{}",
        verify.stdout
    );
    let r = report(&["--public-key", public.to_str().unwrap()]);
    assert_eq!(r.code, 3);
    std::fs::remove_file(folder.join("zz-forged.parquet")).unwrap();

    // A later run left unsigned (or its signature removed): a failure once signing began.
    let unsigned = lakepurge(&["purge", "--job", job, "--run-id", "demo-3"]);
    assert_eq!(unsigned.code, 0, "{}", unsigned.stderr);
    let r = report(&["--public-key", public.to_str().unwrap()]);
    assert_eq!(r.code, 3, "{}", r.stdout);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let runs = v["runs"].as_array().unwrap();
    let state: Vec<(&str, bool)> = runs
        .iter()
        .map(|r| {
            (
                r["signature"].as_str().unwrap(),
                r["verified"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        state,
        [("unsigned", true), ("valid", true), ("unsigned", false)],
        "{v}"
    );
    // Without a key, nothing is checked: the same runs verify.
    assert_eq!(report(&[]).code, 0);

    // Bad values are usage errors, nothing written.
    let huge = lakepurge(&["status", "--job", job, "--sla", "99999999999d"]);
    assert_eq!(huge.code, 2, "{}", huge.stderr);
    let as_url = url::Url::from_directory_path(root).unwrap().to_string();
    for out in [
        ".",
        "..",
        root.to_str().unwrap(),
        as_url.trim_end_matches('/'),
    ] {
        let bad = lakepurge(&["report", "--job", job, "--out", out]);
        assert_eq!(bad.code, 2, "--out {out}: {}", bad.stderr);
    }
    assert!(!root.join("%2E").exists());
}
