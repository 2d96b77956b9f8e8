//! Real object storage: the same purge against a real S3 API server (moto's, started by the
//! test on a free loopback port and stopped when the test ends), with the same exact-result
//! checks as the local tests; conditional replacement against a concurrent writer on S3.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lakepurge::commit::{self, ReadVersion};
use lakepurge::store::Location;
use object_store::{ObjectStoreExt, PutMode, PutOptions};

use crate::common::*;
use crate::fixtures::{
    check_counts, check_table, pyarrow_user_erased, pyarrow_users_job, write_pyarrow_user_events,
};

const SECRET: &str = "lakepurge-test-secret-Zq8w1";

/// A moto S3 server on 127.0.0.1, killed on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto's S3 server (pip install 'moto[server]'; .ci/run does)");
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto server exited early: {status}");
            }
            assert!(Instant::now() < deadline, "moto server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.boto("c.create_bucket(Bucket='lake')", &[]);
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The standard AWS environment pointing at this server.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Runs a Python snippet with a boto3 client `c`; returns its stdout.
    fn boto(&self, body: &str, args: &[&str]) -> String {
        let script = format!(
            "import sys, json, os, boto3\nc = boto3.client('s3', endpoint_url='{}', \
             aws_access_key_id='test', aws_secret_access_key='{SECRET}', region_name='us-east-1')\n{body}\n",
            self.endpoint()
        );
        let out = Command::new(python())
            .arg("-c")
            .arg(script)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "boto3: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn upload_dir(&self, local: &Path, prefix: &str) {
        self.boto(
            "root, prefix = sys.argv[1], sys.argv[2]\n\
             for d, _, files in os.walk(root):\n\
             \x20   for f in files:\n\
             \x20       p = os.path.join(d, f)\n\
             \x20       c.upload_file(p, 'lake', prefix + os.path.relpath(p, root))",
            &[local.to_str().unwrap(), prefix],
        );
    }

    fn download_dir(&self, prefix: &str, local: &Path) {
        self.boto(
            "prefix, root = sys.argv[1], sys.argv[2]\n\
             for o in c.list_objects_v2(Bucket='lake', Prefix=prefix).get('Contents', []):\n\
             \x20   p = os.path.join(root, o['Key'][len(prefix):])\n\
             \x20   os.makedirs(os.path.dirname(p), exist_ok=True)\n\
             \x20   c.download_file('lake', o['Key'], p)",
            &[prefix, local.to_str().unwrap()],
        );
    }

    fn etags(&self, prefix: &str) -> serde_json::Value {
        let out = self.boto(
            "print(json.dumps({o['Key']: o['ETag'] for o in c.list_objects_v2(Bucket='lake', Prefix=sys.argv[1]).get('Contents', [])}))",
            &[prefix],
        );
        serde_json::from_str(&out).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn s3_purge_gives_the_same_exact_result_as_local() {
    let moto = Moto::start();
    let ws = tempfile::tempdir().unwrap();
    moto.upload_dir(&testdata().join("pyarrow/users"), "warehouse/users/");
    write_pyarrow_user_events(&ws.path().join("events/dt=2026-11-24/part-0.json"));
    moto.upload_dir(&ws.path().join("events"), "events/");
    let etags_before = moto.etags("warehouse/");
    let job = ws.path().join("job.toml");
    write(
        &job,
        &pyarrow_users_job(
            "s3://lake/audit/",
            "s3://lake/events/",
            "s3://lake/warehouse/users/",
        ),
    );
    let env = moto.env();
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
    let verify = run(&[
        "verify",
        "s3://lake/audit/fixtures/run-1.json",
        "--deep",
        "--job",
        job,
    ]);
    assert_eq!(verify.code, 0);
    assert!(verify.stdout.trim_end().ends_with("PASS"));
    let again = run(&["purge", "--job", job, "--run-id", "run-1"]);
    assert!(again.stdout.contains("already complete"));

    // Same exact-result checks as local, on the objects as stored in the bucket.
    let purged = ws.path().join("purged");
    moto.download_dir("warehouse/users/", &purged);
    let files = ["part-0.parquet", "part-1.parquet", "part-2.parquet"];
    let removed = check_table(
        &testdata().join("pyarrow/users"),
        &purged,
        &files,
        pyarrow_user_erased,
    );
    let audit = ws.path().join("audit");
    moto.download_dir("audit/", &audit);
    let manifest = read_json(&audit.join("fixtures/run-1.json"));
    check_counts(&manifest, &plan, "py.users", &removed);
    let etags_after = moto.etags("warehouse/");
    assert_eq!(
        etags_before["warehouse/users/part-2.parquet"],
        etags_after["warehouse/users/part-2.parquet"],
        "the untouched object's etag changed"
    );
    assert_ne!(
        etags_before["warehouse/users/part-0.parquet"],
        etags_after["warehouse/users/part-0.parquet"]
    );
    assert_eq!(
        manifest["tables"][0]["files"][0]["after"]["etag"],
        etags_after["warehouse/users/part-0.parquet"]
    );
    // The secret never shows.
    assert!(!outputs.contains(SECRET));
    assert!(
        !std::fs::read_to_string(audit.join("fixtures/run-1.json"))
            .unwrap()
            .contains(SECRET)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_replace_refuses_an_object_changed_by_a_concurrent_writer() {
    let moto = Moto::start();
    moto.boto(
        "c.put_object(Bucket='lake', Key='t/f.parquet', Body=b'version-1')",
        &[],
    );
    let options = [
        ("aws_access_key_id", "test".to_string()),
        ("aws_secret_access_key", SECRET.to_string()),
        ("aws_region", "us-east-1".to_string()),
        ("aws_endpoint", moto.endpoint()),
        ("aws_allow_http", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let loc = Location::parse("s3://lake/t/", Path::new("."), &options).unwrap();
    let path = loc.child("f.parquet");
    let meta = loc.store.head(&path).await.unwrap();
    let read = ReadVersion {
        e_tag: meta.e_tag.clone(),
        version: meta.version.clone(),
    };
    // A concurrent writer replaces the object after we read it.
    moto.boto(
        "c.put_object(Bucket='lake', Key='t/f.parquet', Body=b'version-2 newer')",
        &[],
    );
    let err = commit::replace(
        loc.store.as_ref(),
        &path,
        Bytes::from_static(b"stale rewrite"),
        &read,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, lakepurge::Error::Conflict { .. }), "{err}");
    let body = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(
        &body[..],
        b"version-2 newer",
        "the newer data was overwritten"
    );
    // With the current version the replace goes through.
    let current = loc.store.head(&path).await.unwrap();
    let read = ReadVersion {
        e_tag: current.e_tag,
        version: current.version,
    };
    commit::replace(
        loc.store.as_ref(),
        &path,
        Bytes::from_static(b"purged"),
        &read,
    )
    .await
    .unwrap();
    let body = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"purged");
    // Manifests are create-only (If-None-Match): an existing one is never overwritten.
    let err = loc
        .store
        .put_opts(&path, "x".into(), PutOptions::from(PutMode::Create))
        .await
        .unwrap_err();
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err}"
    );
}

/// A 12 MB file (uncompressed, several row groups) with user ids 0..200000, written by pyarrow.
fn write_large_file(path: &Path) {
    let script = "import sys, hashlib, pyarrow as pa, pyarrow.parquet as pq\n\
        n = 200000\n\
        ids = list(range(n))\n\
        payload = [hashlib.sha256(str(i).encode()).hexdigest() for i in ids]\n\
        t = pa.table({'user_id': pa.array(ids, pa.int64()), 'payload': payload})\n\
        pq.write_table(t, sys.argv[1], compression='none', row_group_size=50000, use_dictionary=False)\n";
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn s3_large_file_goes_up_in_parts() {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Int64Type;
    let moto = Moto::start();
    let ws = tempfile::tempdir().unwrap();
    let local = ws.path().join("big");
    std::fs::create_dir_all(&local).unwrap();
    write_large_file(&local.join("part-0.parquet"));
    assert!(
        std::fs::metadata(local.join("part-0.parquet"))
            .unwrap()
            .len()
            > 12_000_000
    );
    moto.upload_dir(&local, "warehouse/big/");
    write_events(
        &ws.path().join("events/part-0.json"),
        &[
            ("ev-1", "user_id", serde_json::json!("5")),
            ("ev-2", "user_id", serde_json::json!("123456")),
            ("ev-3", "user_id", serde_json::json!("199999")),
        ],
    );
    moto.upload_dir(&ws.path().join("events"), "events/");
    let job = ws.path().join("job.toml");
    write(
        &job,
        r#"[job]
name = "big"
manifests = "s3://lake/audit/"
[events]
location = "s3://lake/events/"
format = "ndjson"
[[table]]
name = "big"
location = "s3://lake/warehouse/big/"
[[table.match]]
column = "user_id"
subject_type = "user_id"
"#,
    );
    let mut env = moto.env();
    env.push(("LAKEPURGE_MULTIPART_THRESHOLD", "1000000".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let job = job.to_str().unwrap();
    let purge = lakepurge_env(&["purge", "--job", job, "--run-id", "r1"], &env);
    assert_eq!(purge.code, 0);
    let verify = lakepurge_env(&["verify", "--job", job, "--run-id", "r1", "--deep"], &env);
    assert_eq!(verify.code, 0, "{}", verify.stdout);

    // Uploaded in two parts of 8 MiB and less (S3's etag of a multipart object ends in -N),
    // with exactly the three rows gone, and no incomplete upload left behind.
    let etag = moto.etags("warehouse/big/")["warehouse/big/part-0.parquet"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(etag.trim_matches('"').ends_with("-2"), "{etag}");
    let purged = ws.path().join("purged");
    moto.download_dir("warehouse/big/", &purged);
    let removed = check_table(&local, &purged, &["part-0.parquet"], |b, i| {
        let id = b.column(0).as_primitive::<Int64Type>();
        id.is_valid(i) && [5, 123456, 199999].contains(&id.value(i))
    });
    assert_eq!(removed[0].1, 3);
    let uploads = moto.boto(
        "print(len(c.list_multipart_uploads(Bucket='lake').get('Uploads', [])))",
        &[],
    );
    assert_eq!(uploads.trim(), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_upload_in_parts_is_aborted_when_the_object_changed() {
    let moto = Moto::start();
    moto.boto(
        "c.put_object(Bucket='lake', Key='t/f.parquet', Body=b'version-1')",
        &[],
    );
    let options = [
        ("aws_access_key_id", "test".to_string()),
        ("aws_secret_access_key", SECRET.to_string()),
        ("aws_region", "us-east-1".to_string()),
        ("aws_endpoint", moto.endpoint()),
        ("aws_allow_http", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let loc = Location::parse("s3://lake/t/", Path::new("."), &options).unwrap();
    let path = loc.child("f.parquet");
    let meta = loc.store.head(&path).await.unwrap();
    let read = ReadVersion {
        e_tag: meta.e_tag.clone(),
        version: meta.version.clone(),
    };
    let mut upload = commit::PartUpload::start(loc.store.as_ref(), &path)
        .await
        .unwrap();
    upload.put(Bytes::from(vec![7u8; 6 << 20])).await.unwrap();
    let pending = moto.boto(
        "print(len(c.list_multipart_uploads(Bucket='lake').get('Uploads', [])))",
        &[],
    );
    assert_eq!(pending.trim(), "1");
    moto.boto(
        "c.put_object(Bucket='lake', Key='t/f.parquet', Body=b'version-2 newer')",
        &[],
    );
    let err = upload
        .complete_if(loc.store.as_ref(), &read)
        .await
        .unwrap_err();
    assert!(matches!(err, lakepurge::Error::Conflict { .. }), "{err}");
    let body = loc.store.get(&path).await.unwrap().bytes().await.unwrap();
    assert_eq!(
        &body[..],
        b"version-2 newer",
        "the newer data was overwritten"
    );
    let pending = moto.boto(
        "print(len(c.list_multipart_uploads(Bucket='lake').get('Uploads', [])))",
        &[],
    );
    assert_eq!(
        pending.trim(),
        "0",
        "the refused upload's parts are left behind"
    );
}
