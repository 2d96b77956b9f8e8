//! Every claim true under store faults: purges on a versioned moto bucket through the fault
//! proxy (`proxy.rs`), one fault per case — a response lost after the store applied the
//! request, a reset, a 403, a 5xx, a delay — on each kind of request the run makes. Each case
//! ends one of two ways, and both are checked against what the bucket holds:
//! - the run exits 0: the table, every object version, the manifest, the confirmations and
//!   `verify --deep` agree with the oracle (user 3 erased from a.parquet, b.parquet emptied,
//!   c.parquet untouched, the 6 versions that held user 3 deleted and recorded so);
//! - the run fails (exit 1 or 2): no manifest and no confirmation, and the same run id, run
//!   again without the fault, ends as above.

use serde_json::{Value, json};

use crate::proxy::FaultProxy;
use crate::s3::{Moto, check_versions_deleted, manifest_of, versioned_setup, versions_now};

/// The keys under `prefix` of the bucket.
fn keys(moto: &Moto, prefix: &str) -> Vec<String> {
    let out = moto.boto(
        "print(json.dumps([o['Key'] for o in c.list_objects_v2(Bucket='lake', Prefix=sys.argv[1]).get('Contents', [])]))",
        &[prefix],
    );
    serde_json::from_str(&out).unwrap()
}

/// The rows of the run's confirmations file: (event id, status, rows removed).
fn confirmations(moto: &Moto, run: &str) -> Vec<(String, String, i64)> {
    let out = moto.boto(
        "import io, pyarrow.parquet as pq\n\
         body = c.get_object(Bucket='lake', Key=sys.argv[1])['Body'].read()\n\
         t = pq.read_table(io.BytesIO(body)).to_pylist()\n\
         print(json.dumps([[r['event_id'], r['status'], r['rows_removed']] for r in t]))\n\
         sys.stdout.flush()\n\
         os._exit(0)",
        &[&format!(
            "audit/versioned/confirmations/job=versioned/run_id={run}/part-0.parquet"
        )],
    );
    serde_json::from_str(&out).unwrap()
}

/// What a completed run r1 must have left, checked against the bucket itself: the versions
/// (see `check_versions_deleted`, which also runs verify), the manifest's counts, the one
/// confirmation, and `verify --deep` straight to the server.
fn check_claims(moto: &Moto, job: &str) {
    check_versions_deleted(moto);
    let m = manifest_of(moto, "r1");
    let t = &m["tables"][0];
    assert_eq!(
        (
            &t["files_rewritten"],
            &t["files_deleted"],
            &t["rows_removed"]
        ),
        (&json!(1), &json!(1), &json!(3)),
        "{m}"
    );
    assert_eq!(t["versions_remaining"], json!(0), "{m}");
    assert_eq!(m["per_event"], json!({"ev-1": 3}), "{m}");
    assert_eq!(
        confirmations(moto, "r1"),
        vec![("ev-1".to_string(), "erased".to_string(), 3)]
    );
    let deep = moto.lakepurge(
        &[
            "verify",
            "s3://lake/audit/versioned/r1.json",
            "--deep",
            "--job",
            job,
        ],
        &[],
    );
    assert_eq!(deep.code, 0, "{}", deep.all_output());
}

/// Runs r1 through the proxy with `rule` in force. The fault must have fired (else the case
/// proves nothing). On exit 0 the claims are checked; on a failure, that nothing was recorded,
/// then the same run id without the fault, then the claims. Returns the faulted run's exit code.
fn fault_case(rule: Value) -> i32 {
    let (moto, _ws, job) = versioned_setup("");
    let proxy = FaultProxy::start(&moto.endpoint());
    proxy.inject(rule.clone());
    let args = ["purge", "--job", job.as_str(), "--run-id", "r1"];
    let run = moto.lakepurge_via(&proxy.endpoint(), &args, &[]);
    assert!(
        proxy.faults_fired() >= 1,
        "{rule}: the fault never fired: {:?}",
        proxy.log()
    );
    if run.code != 0 {
        assert!(
            run.code == 1 || run.code == 2,
            "{rule}: exit {}: {}",
            run.code,
            run.stderr
        );
        let audit = keys(&moto, "audit/versioned/");
        assert!(
            !audit.iter().any(|k| k.ends_with("/r1.json")
                || k.contains("confirmations/")
                || k.ends_with(".lease.json")),
            "{rule}: a failed run left a record or its lease: {audit:?}"
        );
        proxy.clear();
        let again = moto.lakepurge_via(&proxy.endpoint(), &args, &[]);
        assert_eq!(again.code, 0, "{rule}: the rerun: {}", again.stderr);
    }
    check_claims(&moto, &job);
    assert!(
        keys(&moto, "audit/versioned/")
            .iter()
            .all(|k| !k.ends_with(".lease.json")),
        "the lease outlived the run"
    );
    run.code
}

/// Case 1 of #23: the conditional put of the rewritten file is applied, its response lost;
/// the run looks at the object, finds its own bytes and counts the file, settling its versions.
#[test]
fn fault_lost_response_of_a_rewrite_is_looked_up_not_assumed() {
    fault_case(
        json!({"kind": "cond_put", "fault": "lost", "count": 1, "match": "warehouse/t/a.parquet"}),
    );
}

#[test]
fn fault_reset_and_5xx_on_the_rewrite() {
    fault_case(
        json!({"kind": "cond_put", "fault": "reset", "count": 1, "match": "warehouse/t/a.parquet"}),
    );
}

#[test]
fn fault_5xx_burst_on_the_rewrite() {
    fault_case(
        json!({"kind": "cond_put", "fault": "status", "status": 503, "count": 3, "match": "warehouse/t/a.parquet"}),
    );
}

/// Case 8 of #23: one 503 on the listing of a key's versions is retried; never a manifest that
/// says nothing remains while a version holds the rows.
#[test]
fn fault_503_listing_versions_is_retried() {
    fault_case(json!({"kind": "version_list", "fault": "status", "status": 503, "count": 1}));
}

/// Case 8 of #23: one 500 on a version delete is retried; a version is recorded as deleted only
/// once the store confirmed it.
#[test]
fn fault_500_deleting_a_version_is_retried() {
    fault_case(json!({"kind": "version_delete", "fault": "status", "status": 500, "count": 1}));
}

#[test]
fn fault_lost_response_of_a_version_delete() {
    fault_case(json!({"kind": "version_delete", "fault": "lost", "count": 1}));
}

/// Version deletes keep failing: the run fails (exit 1), records nothing, and resumes.
#[test]
fn fault_version_deletes_keep_failing_then_resume() {
    let code = fault_case(
        json!({"kind": "version_delete", "fault": "status", "status": 503, "count": -1}),
    );
    assert_eq!(code, 1);
}

/// A refused version listing (403) fails the run naming the permission; it resumes once the
/// role has it.
#[test]
fn fault_403_listing_versions_fails_the_run() {
    let code =
        fault_case(json!({"kind": "version_list", "fault": "status", "status": 403, "count": -1}));
    assert_eq!(code, 1);
}

/// A version delete refused (403) by a role that lacks the permission, not by Object Lock (the
/// version's headers show no lock): the run fails naming the permission and resumes once the
/// role has it; it is never recorded as held by the store.
#[test]
fn fault_403_deleting_a_version_without_a_lock_fails_the_run() {
    let code = fault_case(
        json!({"kind": "version_delete", "fault": "status", "status": 403, "count": -1}),
    );
    assert_eq!(code, 1);
}

#[test]
fn fault_lost_and_reset_reads() {
    fault_case(json!({"kind": "get", "fault": "reset", "count": 2, "match": "warehouse/t/"}));
}

#[test]
fn fault_lost_response_of_a_file_delete() {
    fault_case(
        json!({"kind": "delete", "fault": "lost", "count": 1, "match": "warehouse/t/b.parquet"}),
    );
}

#[test]
fn fault_5xx_on_listing_and_heads() {
    fault_case(json!({"kind": "list", "fault": "status", "status": 503, "count": 2}));
}

/// The manifest's create-only put is applied and its response lost: the retry finds the
/// run's own manifest there, and the run succeeds rather than failing with a manifest written.
#[test]
fn fault_lost_response_of_the_manifest_put() {
    let code = fault_case(
        json!({"kind": "cond_put", "fault": "lost", "count": 1, "match": "audit/versioned/r1.json"}),
    );
    assert_eq!(code, 0);
}

/// The lease's create-only put is applied and its response lost: the run finds its own claim.
#[test]
fn fault_lost_response_of_the_lease_put() {
    let code = fault_case(
        json!({"kind": "cond_put", "fault": "lost", "count": 1, "match": ".lease.json"}),
    );
    assert_eq!(code, 0);
}

/// Case 4 of #23: GetBucketVersioning refused (403) under the default `old_versions =
/// "delete"`: exit 2 naming the permission, nothing written, every version as it was.
#[test]
fn fault_403_on_versioning_state_is_an_error_not_a_downgrade() {
    let (moto, _ws, job) = versioned_setup("");
    let before = versions_now(&moto);
    let proxy = FaultProxy::start(&moto.endpoint());
    proxy.inject(json!({"kind": "versioning", "fault": "status", "status": 403, "count": -1}));
    for cmd in [
        vec!["validate", "--job", job.as_str()],
        vec!["plan", "--job", job.as_str()],
        vec!["purge", "--job", job.as_str(), "--run-id", "r1"],
    ] {
        let run = moto.lakepurge_via(&proxy.endpoint(), &cmd, &[]);
        assert_eq!(run.code, 2, "{cmd:?}: {}", run.all_output());
        assert!(
            run.stderr.contains("s3:GetBucketVersioning"),
            "{cmd:?}: {}",
            run.stderr
        );
    }
    assert_eq!(versions_now(&moto), before);
    assert_eq!(keys(&moto, "audit/"), Vec::<String>::new());
    // With old_versions = "keep" the refusal is a warning: nothing is deleted, the run goes on.
    drop(proxy);
    let (moto, _ws, job) = versioned_setup("old_versions = \"keep\"");
    let proxy = FaultProxy::start(&moto.endpoint());
    proxy.inject(json!({"kind": "versioning", "fault": "status", "status": 403, "count": -1}));
    let run = moto.lakepurge_via(
        &proxy.endpoint(),
        &["purge", "--job", &job, "--run-id", "r1"],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let m = manifest_of(&moto, "r1");
    assert!(m["tables"][0]["versioning"].is_null(), "{m}");
}

/// Cases 6 and 9 of #23: a second run of the job while one works — the same run id or
/// another — exits 1 naming the run that holds the job's lease, and writes nothing; the first
/// completes; the second, run again afterwards, chains after it (one sequence each, every event
/// confirmed once, verify passes for both).
#[test]
fn one_run_of_a_job_at_a_time_on_s3() {
    let (moto, _ws, job) = versioned_setup("");
    let proxy = FaultProxy::start(&moto.endpoint());
    // The first run is slowed at its rewrite, while it holds the lease.
    proxy.inject(json!({"kind": "cond_put", "fault": "delay", "delay_ms": 4000, "count": 1, "match": "warehouse/t/a.parquet"}));
    let endpoint = proxy.endpoint();
    let first = {
        let job = job.clone();
        let env = moto.env();
        std::thread::spawn(move || {
            let mut env: Vec<(&str, String)> = env
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        if k == "AWS_ENDPOINT_URL" {
                            endpoint.clone()
                        } else {
                            v
                        },
                    )
                })
                .collect();
            env.push(("LAKEPURGE_LOG", "info".into()));
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            crate::common::lakepurge_env(&["purge", "--job", &job, "--run-id", "r1"], &env)
        })
    };
    // Wait until the first run holds the lease.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !keys(&moto, "audit/versioned/")
        .iter()
        .any(|k| k.ends_with(".lease.json"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never took the lease"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for run_id in ["r1", "r2"] {
        let second = moto.lakepurge(&["purge", "--job", &job, "--run-id", run_id], &[]);
        assert_eq!(second.code, 1, "{run_id}: {}", second.all_output());
        assert!(
            second.stderr.contains("being run by run r1"),
            "{run_id}: {}",
            second.stderr
        );
    }
    let first = first.join().unwrap();
    assert_eq!(first.code, 0, "{}", first.stderr);
    check_claims(&moto, &job);
    let second = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r2"], &[]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let m1 = manifest_of(&moto, "r1");
    let m2 = manifest_of(&moto, "r2");
    assert_eq!((&m1["sequence"], &m2["sequence"]), (&json!(1), &json!(2)));
    assert!(
        !keys(&moto, "audit/versioned/confirmations/")
            .iter()
            .any(|k| k.contains("run_id=r2")),
        "an event confirmed twice"
    );
    for run_id in ["r1", "r2"] {
        let v = moto.lakepurge(
            &[
                "verify",
                &format!("s3://lake/audit/versioned/{run_id}.json"),
            ],
            &[],
        );
        assert_eq!(v.code, 0, "{run_id}: {}", v.all_output());
    }
}

/// Case 2 of #23: the Delta commit's conditional put of the log entry is applied and its
/// response lost; delta-rs's retry finds the version taken (by this very commit) and reports a
/// conflict. The run looks for its transaction in the log, finds it, and never deletes the new
/// files the committed version references: one commit, the table reads back exactly.
#[test]
fn fault_lost_response_of_a_delta_commit() {
    use crate::delta::*;
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint());
    let (ws, job, start) = crate::s3::delta_on_s3(&moto, "");
    proxy.inject(json!({"kind": "delta_log", "fault": "lost", "count": 1, "match": format!("_delta_log/{:020}.json", start + 1)}));
    let run = moto.lakepurge_via(
        &proxy.endpoint(),
        &["purge", "--job", &job, "--run-id", "r1"],
        &[],
    );
    assert!(proxy.faults_fired() >= 1, "{:?}", proxy.log());
    if run.code != 0 {
        // Failing is allowed (nothing claimed); the rerun must then complete from the log.
        proxy.clear();
        let again = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
        assert_eq!(again.code, 0, "{}", again.stderr);
    }
    let verified = moto.lakepurge(
        &[
            "verify",
            "s3://lake/audit/lake/r1.json",
            "--deep",
            "--job",
            &job,
        ],
        &[],
    );
    assert_eq!(verified.code, 0, "{}", verified.all_output());
    let back = ws.path().join("back");
    crate::cloud::Bucket::download_dir(&moto, "warehouse/users/", &back);
    let after = read_delta(&back);
    assert_eq!(after["version"], json!(start + 1));
    assert_eq!(lakepurge_commits(&after, "r1"), 1);
    check_purged(&back, &after, start + 1);
}
