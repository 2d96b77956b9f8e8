//! The Airflow DAG run by real Airflow (`airflow dags test`), with 3 shards, against a fixture
//! warehouse: the result equals an unsharded purge, the manifest of run id <date> exists and
//! verifies. Airflow comes from `$LAKEPURGE_AIRFLOW`, else the virtual environment `.ci/run`
//! installs apache-airflow 3 into.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Runs `airflow ARGS`; returns its exit status and output.
fn airflow_run(home: &Path, env: &[(&str, String)], args: &[&str]) -> (bool, String) {
    let bin = airflow_bin();
    let out = Command::new(&bin)
        .args(args)
        .env("AIRFLOW_HOME", home)
        .env(
            "AIRFLOW__CORE__DAGS_FOLDER",
            Path::new(env!("CARGO_MANIFEST_DIR")).join("jobs/airflow"),
        )
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| {
            panic!("run {bin} (set LAKEPURGE_AIRFLOW; .ci/run installs Airflow): {e}")
        });
    let log = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), log)
}

/// Runs `airflow ARGS`, which must succeed (a DAG run: every task).
fn airflow(home: &Path, env: &[(&str, String)], args: &[&str]) -> String {
    let (ok, log) = airflow_run(home, env, args);
    assert!(ok, "airflow {}:\n{log}", args.join(" "));
    if args[0] == "dags" {
        assert!(
            log.contains("state=success"),
            "the DAG run did not succeed:\n{log}"
        );
    }
    log
}

#[test]
fn nightly_dag_with_three_shards_under_real_airflow() {
    // The unsharded reference.
    let reference = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(reference.path()).unwrap();
    let job = reference.path().join("jobs/demo.toml");
    assert_eq!(
        lakepurge(&["purge", "--job", job.to_str().unwrap(), "--run-id", "ref"]).code,
        0
    );

    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    let home = ws.path().join("airflow-home");
    let env = [
        ("LAKEPURGE_BIN", env!("CARGO_BIN_EXE_lakepurge").to_string()),
        (
            "LAKEPURGE_JOB",
            ws.path().join("jobs/demo.toml").display().to_string(),
        ),
        ("LAKEPURGE_SHARDS", "3".to_string()),
        ("LAKEPURGE_MEMORY_LIMIT", "256MiB".to_string()),
    ];
    airflow(&home, &env, &["db", "migrate"]);
    let log = airflow(
        &home,
        &env,
        &["dags", "test", "lakepurge_nightly", "2026-11-25"],
    );
    assert!(
        log.contains("SLA 25d: OK"),
        "the status task did not run or not OK:\n{log}"
    );

    assert_eq!(
        tree_hashes(&ws.path().join("warehouse")),
        tree_hashes(&reference.path().join("warehouse")),
        "the DAG's sharded purge differs from an unsharded one"
    );
    let m = read_json(&ws.path().join("manifests/demo/2026-11-25.json"));
    let r = read_json(&reference.path().join("manifests/demo/ref.json"));
    assert_eq!(m["run_id"], "2026-11-25");
    assert_eq!(m["per_event"], r["per_event"]);
    let v = lakepurge(&[
        "verify",
        ws.path()
            .join("manifests/demo/2026-11-25.json")
            .to_str()
            .unwrap(),
    ]);
    assert_eq!(v.code, 0);

    // A request that arrived after the run and is already older than the SLA fails the status
    // task (exit 3).
    write_events(
        &ws.path().join("events/late.json"),
        &[("ev-late", "user_id", serde_json::json!("123456789"))],
    );
    let mut env = env.to_vec();
    env.push(("LAKEPURGE_SLA", "1d".to_string()));
    // `airflow tasks test` exits 0 whatever the task did: its log says how the task ended.
    let (_, log) = airflow_run(
        &home,
        &env,
        &["tasks", "test", "lakepurge_nightly", "status", "2026-11-25"],
    );
    assert!(
        log.contains("Command exited with return code 3") && log.contains("Task failed"),
        "the status task did not fail with a late request:\n{log}"
    );
    assert!(
        log.contains("LATE: 1 pending events are older: ev-late"),
        "{log}"
    );
}
