//! What the object-store suites share: a bucket the test server holds, and the purge that must
//! give there exactly what it gives on local disk.

use std::path::Path;

use crate::common::*;
use crate::fixtures::{
    check_counts, check_table, pyarrow_user_erased, pyarrow_users_job, write_pyarrow_user_events,
};

/// A bucket (container) on a test server, reached with the server's own client library.
pub trait Bucket {
    /// Uploads every file under `local` as `prefix` + its relative path.
    fn upload_dir(&self, local: &Path, prefix: &str);
    /// Downloads every object under `prefix` into `local`.
    fn download_dir(&self, prefix: &str, local: &Path);
    /// Object etags under `prefix`, by key.
    fn etags(&self, prefix: &str) -> serde_json::Value;
}

/// Uploads the pyarrow users fixture and its events to `bucket`, runs validate, plan, purge
/// (twice: the second finds the run complete) and verify --deep against `root` (such as
/// `s3://lake/`) with `env`, and checks the result exactly as the local tests do: rows,
/// schema, counts, the untouched object's etag unchanged, the manifest in the bucket with the
/// new etag, and `secret` in no output.
pub fn purge_matches_local(bucket: &dyn Bucket, root: &str, env: &[(&str, String)], secret: &str) {
    let ws = tempfile::tempdir().unwrap();
    bucket.upload_dir(&testdata().join("pyarrow/users"), "warehouse/users/");
    write_pyarrow_user_events(&ws.path().join("events/dt=2026-11-24/part-0.json"));
    bucket.upload_dir(&ws.path().join("events"), "events/");
    let etags_before = bucket.etags("warehouse/");
    let job = ws.path().join("job.toml");
    write(
        &job,
        &pyarrow_users_job(
            &format!("{root}audit/"),
            &format!("{root}events/"),
            &format!("{root}warehouse/users/"),
        ),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let job = job.to_str().unwrap();
    let mut outputs = String::new();
    let mut run = |args: &[&str]| {
        let r = lakepurge_env(args, &env);
        outputs.push_str(&r.all_output());
        r
    };
    assert_eq!(run(&["validate", "--job", job]).code, 0);
    let plan = run(&["plan", "--job", job, "--json"]);
    assert_eq!(plan.code, 0);
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert_eq!(run(&["purge", "--job", job, "--run-id", "run-1"]).code, 0);
    let manifest_url = format!("{root}audit/fixtures/run-1.json");
    let verify = run(&["verify", &manifest_url, "--deep", "--job", job]);
    assert_eq!(verify.code, 0);
    assert!(verify.stdout.trim_end().ends_with("PASS"));
    let again = run(&["purge", "--job", job, "--run-id", "run-1"]);
    assert!(again.stdout.contains("already complete"));

    // Same exact-result checks as local, on the objects as stored in the bucket.
    let purged = ws.path().join("purged");
    bucket.download_dir("warehouse/users/", &purged);
    let files = ["part-0.parquet", "part-1.parquet", "part-2.parquet"];
    let removed = check_table(
        &testdata().join("pyarrow/users"),
        &purged,
        &files,
        pyarrow_user_erased,
    );
    let audit = ws.path().join("audit");
    bucket.download_dir("audit/", &audit);
    let manifest = read_json(&audit.join("fixtures/run-1.json"));
    check_counts(&manifest, &plan, "py.users", &removed);
    // The run's confirmations went to the bucket too, as the manifest records them.
    let confirmations =
        audit.join("fixtures/confirmations/job=fixtures/run_id=run-1/part-0.parquet");
    assert_eq!(
        manifest["confirmations"]["sha256"].as_str(),
        Some(sha256_file(&confirmations).as_str())
    );
    let etags_after = bucket.etags("warehouse/");
    let etag = |tags: &serde_json::Value, file: &str| {
        tags[format!("warehouse/users/{file}")]
            .as_str()
            .unwrap()
            .trim_matches('"')
            .to_string()
    };
    assert_eq!(
        etag(&etags_before, "part-2.parquet"),
        etag(&etags_after, "part-2.parquet"),
        "the untouched object's etag changed"
    );
    assert_ne!(
        etag(&etags_before, "part-0.parquet"),
        etag(&etags_after, "part-0.parquet")
    );
    let recorded = manifest["tables"][0]["files"][0]["after"]["etag"]
        .as_str()
        .unwrap()
        .trim_matches('"');
    assert_eq!(recorded, etag(&etags_after, "part-0.parquet"));
    // The secret never shows.
    assert!(!outputs.contains(secret));
    let stored = std::fs::read_to_string(audit.join("fixtures/run-1.json")).unwrap();
    assert!(!stored.contains(secret));
}

/// A test server process listening on a free port of 127.0.0.1, killed (and reaped) on drop.
pub struct Server {
    child: std::process::Child,
    pub port: u16,
}

impl Server {
    /// Picks a free loopback port, spawns `command(port)` with its output discarded, and waits
    /// (up to a minute) until the port accepts connections. `what` names it in failures.
    pub fn start(what: &str, command: impl FnOnce(u16) -> std::process::Command) -> Server {
        use std::time::{Duration, Instant};
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = command(port)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what} ({e}; .ci/run installs it)"));
        let mut server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{what} exited early: {status}");
            }
            assert!(Instant::now() < deadline, "{what} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts that a replacement was refused as a conflict (`err`) and that the object at `path`
/// still holds the concurrent writer's `newer` bytes.
pub async fn refused_and_kept(
    err: &lakepurge::Error,
    loc: &lakepurge::store::Location,
    path: &object_store::path::Path,
    newer: &[u8],
) {
    use object_store::ObjectStoreExt;
    assert!(matches!(err, lakepurge::Error::Conflict { .. }), "{err}");
    let body = loc.store.get(path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], newer, "the newer data was overwritten");
}

/// The plan over an S3 endpoint that delays every request (`benches/slow_s3.py`, the
/// benchmark's) equals the plan of the same files on local disk, at every `--io-concurrency`,
/// and reads each small file in one request.
#[test]
fn plan_over_a_delayed_endpoint_equals_the_local_plan() {
    let ws = tempfile::tempdir().unwrap();
    lakepurge::cmd::demo::write_sample(ws.path()).unwrap();
    let root = std::path::absolute(ws.path()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/slow_s3.py");
    let server = Server::start("benches/slow_s3.py", |port| {
        let mut c = std::process::Command::new(python());
        c.arg(&script)
            .args(["--root", root.to_str().unwrap(), "--delay-ms", "10"]);
        c.args(["--port", &port.to_string()]);
        c
    });
    let local_job = root.join("jobs/demo.toml");
    let local = lakepurge(&["plan", "--job", local_job.to_str().unwrap(), "--json"]);
    assert_eq!(local.code, 0);
    // The same job with its tables in the bucket `warehouse` of the endpoint.
    let remote = root.join("remote");
    copy_dir(&root.join("jobs"), &remote);
    let local_url = file_url(&root.join("warehouse"));
    for entry in std::fs::read_dir(remote.join("tables")).unwrap() {
        let p = entry.unwrap().path();
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace(&local_url, "s3://warehouse/");
        std::fs::write(&p, text).unwrap();
    }
    let remote_job = remote.join("demo.toml");
    let env = [
        ("AWS_ACCESS_KEY_ID", "test".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", server.endpoint()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let fields = |out: &str| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                serde_json::json!([
                    t["name"],
                    t["files_listed"],
                    t["files_pruned"],
                    t["files_affected"],
                    t["files_emptied"],
                    t["rows_matched"],
                    t["ids_unconvertible"],
                    t["table_bytes"]
                ])
            })
            .collect()
    };
    let expected = fields(&local.stdout);
    assert!(
        expected.iter().any(|t| t[3].as_u64().unwrap() > 0),
        "nothing to find"
    );
    for io in ["1", "3", "64"] {
        let args = [
            "--io-concurrency",
            io,
            "plan",
            "--job",
            remote_job.to_str().unwrap(),
            "--json",
        ];
        let over = lakepurge_env(&args, &env);
        assert_eq!(over.code, 0, "{}", over.stderr);
        assert_eq!(fields(&over.stdout), expected, "--io-concurrency {io}");
        let v: serde_json::Value = serde_json::from_str(&over.stdout).unwrap();
        for t in v["tables"].as_array().unwrap() {
            // The sample's files are small: one request each, never more bytes than they hold.
            assert_eq!(t["requests"], t["files_listed"], "{t}");
            assert!(t["bytes_read"].as_u64() <= t["table_bytes"].as_u64(), "{t}");
        }
    }
}
