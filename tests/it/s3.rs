//! Real object storage: the same purge against a real S3 API server (moto's, started by the
//! test on a free loopback port and stopped when the test ends), with the same exact-result
//! checks as the local tests; conditional replacement against a concurrent writer on S3.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use lakepurge::commit::{self, ReadVersion};
use lakepurge::store::Location;
use object_store::{ObjectStoreExt, PutMode, PutOptions};

use crate::cloud::{Bucket, Server, purge_matches_local, refused_and_kept};
use crate::common::*;
use crate::fixtures::check_table;

pub(crate) const SECRET: &str = "lakepurge-test-secret-Zq8w1";

/// A moto S3 server on 127.0.0.1 with a bucket `lake`, stopped on drop.
pub(crate) struct Moto {
    server: Server,
}

impl Moto {
    pub(crate) fn start() -> Moto {
        let server = Server::start("moto's S3 server (pip install 'moto[server]')", |port| {
            let mut c = Command::new(python());
            c.args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]);
            c
        });
        let moto = Moto { server };
        moto.boto("c.create_bucket(Bucket='lake')", &[]);
        moto
    }

    pub(crate) fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Puts `t/f.parquet` (`version-1`) and reads its version, as a purge would before
    /// replacing it: the location of `t/`, the object's path, the version read.
    async fn object_read(&self) -> (Location, object_store::path::Path, ReadVersion) {
        self.boto(
            "c.put_object(Bucket='lake', Key='t/f.parquet', Body=b'version-1')",
            &[],
        );
        let loc = self.location("s3://lake/t/");
        let path = loc.child("f.parquet");
        let meta = loc.store.head(&path).await.unwrap();
        let read = ReadVersion {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        };
        (loc, path, read)
    }

    /// `url` as a location configured through storage options (not the environment).
    fn location(&self, url: &str) -> Location {
        let options = [
            ("aws_access_key_id", "test".to_string()),
            ("aws_secret_access_key", SECRET.to_string()),
            ("aws_region", "us-east-1".to_string()),
            ("aws_endpoint", self.endpoint()),
            ("aws_allow_http", "true".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Location::parse(url, Path::new("."), &options).unwrap()
    }

    /// The standard AWS environment pointing at this server.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Runs `lakepurge` with this server's AWS environment pointed at `endpoint` (a proxy in
    /// front of it) and `extra` variables.
    pub(crate) fn lakepurge_via(
        &self,
        endpoint: &str,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> Run {
        let mut env = self.env();
        for (k, v) in env.iter_mut() {
            if *k == "AWS_ENDPOINT_URL" {
                *v = endpoint.to_string();
            }
        }
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        lakepurge_env(args, &env)
    }

    /// Runs `lakepurge` with this server's AWS environment and `extra` variables.
    pub(crate) fn lakepurge(&self, args: &[&str], extra: &[(&str, &str)]) -> Run {
        let env = self.env();
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra);
        lakepurge_env(args, &env)
    }

    /// Runs a Python snippet with a boto3 client `c`; returns its stdout.
    pub(crate) fn boto(&self, body: &str, args: &[&str]) -> String {
        let script = format!(
            "import sys, json, os, boto3\nc = boto3.client('s3', endpoint_url='{}', \
             aws_access_key_id='test', aws_secret_access_key='{SECRET}', region_name='us-east-1')\n{body}\n",
            self.endpoint()
        );
        run_python("boto3", &script, args)
    }
}

impl Bucket for Moto {
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

#[test]
fn s3_purge_gives_the_same_exact_result_as_local() {
    let moto = Moto::start();
    purge_matches_local(&moto, "s3://lake/", &moto.env(), SECRET);
}

/// A Delta table on S3: the log is read and committed through the same S3 store (the commit
/// is a conditional put), the removed files are deleted from the bucket, and the table read
/// back with the `deltalake` package holds exactly the oracle's rows. Every file counts as
/// large here (`LAKEPURGE_MULTIPART_THRESHOLD=1`): read by ranges, its rewrite uploaded in
/// parts, its statistics from the footer read back (the local Delta tests write files whole).
#[test]
fn s3_delta_table_is_purged_through_its_log() {
    use crate::delta::*;
    let moto = Moto::start();
    let (ws, job, start) = delta_on_s3(&moto, "");
    let run = moto.lakepurge(
        &["purge", "--job", &job, "--run-id", "r1"],
        &[("LAKEPURGE_MULTIPART_THRESHOLD", "1")],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("uploaded in parts"), "{}", run.stderr);
    let manifest = "s3://lake/audit/lake/r1.json";
    let verified = moto.lakepurge(&["verify", manifest, "--deep", "--job", &job], &[]);
    assert_eq!(verified.code, 0, "{}", verified.all_output());
    let back = ws.path().join("back");
    moto.download_dir("warehouse/users/", &back);
    let after = read_delta(&back);
    assert_eq!(after["version"], serde_json::json!(start + 1));
    assert_eq!(lakepurge_commits(&after, "r1"), 1);
    check_purged(&back, &after, start + 1);
    assert!(!run.all_output().contains(SECRET));
}

/// The Delta test table written by the `deltalake` package, uploaded to `warehouse/users/`,
/// with events and a job over it (manifests in the bucket): the workspace, the job and the
/// table's version before any purge.
pub(crate) fn delta_on_s3(moto: &Moto, extra: &str) -> (tempfile::TempDir, String, u64) {
    delta_on_s3_after(moto, extra, None)
}

/// [`delta_on_s3`], with more commits made by the `deltalake` package (`script`, given the
/// table's folder) before the upload.
pub(crate) fn delta_on_s3_after(
    moto: &Moto,
    extra: &str,
    script: Option<&str>,
) -> (tempfile::TempDir, String, u64) {
    use crate::delta::*;
    let ws = tempfile::tempdir().unwrap();
    let local = ws.path().join("written");
    std::fs::create_dir_all(&local).unwrap();
    run_python("writing a Delta table", WRITE_DELTA, &[&local]);
    if let Some(script) = script {
        run_python("more commits", script, &[&local]);
    }
    moto.upload_dir(&local, "warehouse/users/");
    let job = delta_job(
        ws.path(),
        "s3://lake/audit/",
        &file_url(&ws.path().join("events")),
        "s3://lake/warehouse/users/",
        extra,
    );
    let start = read_delta(&local)["version"].as_u64().unwrap();
    (ws, job, start)
}

/// Case 5 of #23: a Delta table on a versioned bucket. The files the purge commit removed
/// leave noncurrent versions holding the erased rows: under `old_versions = "delete"` every one
/// is deleted and recorded per file (verify reads each by id and finds none); under `keep` they
/// stay and the manifest counts them (`versions_remaining`), which verify reports. The same for
/// the files of the table's history (an earlier DELETE and UPDATE left them on disk) that the
/// purge deletes because they hold erased rows.
#[test]
fn s3_delta_table_on_a_versioned_bucket_records_its_old_versions() {
    for policy in ["delete", "keep"] {
        let moto = Moto::start();
        moto.boto(
            "c.put_bucket_versioning(Bucket='lake', VersioningConfiguration={'Status': 'Enabled'})",
            &[],
        );
        let (_ws, job, _) = delta_on_s3_after(
            &moto,
            &format!("old_versions = \"{policy}\""),
            Some(crate::delta::DELETE_AND_UPDATE),
        );
        let run = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
        assert_eq!(run.code, 0, "{policy}: {}", run.stderr);
        let out = moto.boto(
            "print(c.get_object(Bucket='lake', Key='audit/lake/r1.json')['Body'].read().decode())",
            &[],
        );
        let m: serde_json::Value = serde_json::from_str(&out).unwrap();
        let t = &m["tables"][0];
        let removed: Vec<String> = t["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect();
        assert!(!removed.is_empty());
        let history: Vec<String> = t["delta"]["history_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_string())
            .collect();
        assert!(!history.is_empty(), "{t}");
        assert_eq!(
            t["delta"]["history_old_versions"]
                .as_object()
                .map(|o| o.len()),
            Some(history.len()),
            "{t}"
        );
        let removed: Vec<String> = removed.into_iter().chain(history).collect();
        let data_versions = |key: &str| -> usize {
            moto.boto(
                "r = c.list_object_versions(Bucket='lake', Prefix=sys.argv[1])\n\
                 print(len([v for v in r.get('Versions', []) if v['Key'] == sys.argv[1]]))",
                &[&format!("warehouse/users/{key}")],
            )
            .trim()
            .parse()
            .unwrap()
        };
        let left: usize = removed.iter().map(|p| data_versions(p)).sum();
        let verify = moto.lakepurge(&["verify", "s3://lake/audit/lake/r1.json"], &[]);
        assert_eq!(verify.code, 0, "{policy}: {}", verify.all_output());
        let n = serde_json::json!(removed.len());
        if policy == "delete" {
            assert_eq!(left, 0, "a removed file's version still holds erased rows");
            assert_eq!(
                (&t["versions_deleted"], &t["versions_remaining"]),
                (&n, &serde_json::json!(0)),
                "{m}"
            );
            assert!(
                verify.stdout.contains("old versions deleted are gone"),
                "{}",
                verify.stdout
            );
        } else {
            assert_eq!(left, removed.len());
            assert_eq!(
                (&t["versions_deleted"], &t["versions_remaining"]),
                (&serde_json::json!(0), &n),
                "{m}"
            );
            assert!(
                verify.stdout.contains("still hold erased rows"),
                "{}",
                verify.stdout
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_replace_refuses_an_object_changed_by_a_concurrent_writer() {
    let moto = Moto::start();
    let (loc, path, read) = moto.object_read().await;
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
    refused_and_kept(&err, &loc, &path, b"version-2 newer").await;
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
    run_python("writing the large file", script, &[path]);
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
        &user_id_job(
            "big",
            "s3://lake/audit/",
            "s3://lake/events/",
            "s3://lake/warehouse/big/",
        ),
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
    // Read by ranges, one row group at a time; its hash streamed from the store.
    let audit = ws.path().join("audit");
    moto.download_dir("audit/", &audit);
    let m = read_json(&audit.join("big/r1.json"));
    let before = &m["tables"][0]["files"][0]["before"];
    assert_eq!(
        before["sha256"].as_str().unwrap(),
        sha256_file(&local.join("part-0.parquet"))
    );
    let uploads = moto.boto(
        "print(len(c.list_multipart_uploads(Bucket='lake').get('Uploads', [])))",
        &[],
    );
    assert_eq!(uploads.trim(), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_upload_in_parts_is_aborted_when_the_object_changed() {
    let moto = Moto::start();
    let (loc, path, read) = moto.object_read().await;
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
    refused_and_kept(&err, &loc, &path, b"version-2 newer").await;
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

/// Writes three versions of each of `a.parquet` (users 1-4 and one more: user 3 is erased),
/// `b.parquet` (user 3 only: emptied) and `c.parquet` (users 5, 6: untouched) under
/// `warehouse/t/` of the versioned bucket.
const WRITE_VERSIONS: &str = "import io, pyarrow as pa, pyarrow.parquet as pq\n\
c.put_bucket_versioning(Bucket='lake', VersioningConfiguration={'Status': 'Enabled'})\n\
def put(key, users):\n\
\x20   buf = io.BytesIO()\n\
\x20   pq.write_table(pa.table({'user_id': pa.array(users, pa.int64()), 'v': [str(u) for u in users]}), buf)\n\
\x20   c.put_object(Bucket='lake', Key='warehouse/t/' + key, Body=buf.getvalue())\n\
for r in range(3):\n\
\x20   put('a.parquet', [1, 2, 3, 4, 10 + r])\n\
\x20   put('b.parquet', [3, 3])\n\
\x20   put('c.parquet', [5, 6, 20 + r])\n";

/// Every version of every key under `warehouse/t/`, newest first: key -> [[id, users or null
/// for a delete marker]].
const LIST_VERSIONS: &str = "import io, pyarrow.parquet as pq\n\
out = {}\n\
r = c.list_object_versions(Bucket='lake', Prefix='warehouse/t/')\n\
entries = [(v, False) for v in r.get('Versions', [])] + [(m, True) for m in r.get('DeleteMarkers', [])]\n\
entries.sort(key=lambda e: e[0]['LastModified'], reverse=True)\n\
for v, marker in entries:\n\
\x20   users = None\n\
\x20   if not marker:\n\
\x20       body = c.get_object(Bucket='lake', Key=v['Key'], VersionId=v['VersionId'])['Body'].read()\n\
\x20       users = pq.read_table(io.BytesIO(body), use_threads=False).column('user_id').to_pylist()\n\
\x20   out.setdefault(v['Key'][len('warehouse/t/'):], []).append([v['VersionId'], users])\n\
print(json.dumps(out))\n\
sys.stdout.flush()\n\
os._exit(0)\n";

/// A versioned bucket holding a table, events erasing user 3, and a job (with `extra` lines in
/// its table section); returns the server, the workspace and the job path.
pub(crate) fn versioned_setup(extra: &str) -> (Moto, tempfile::TempDir, String) {
    let moto = Moto::start();
    moto.boto(WRITE_VERSIONS, &[]);
    let ws = tempfile::tempdir().unwrap();
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", serde_json::json!("3"))],
    );
    let job = ws.path().join("job.toml");
    let text = user_id_job(
        "versioned",
        "s3://lake/audit/",
        &file_url(&ws.path().join("events")),
        "s3://lake/warehouse/t/",
    )
    .replace("[[table.match]]", &format!("{extra}\n[[table.match]]"));
    write(&job, &text);
    let job = job.display().to_string();
    (moto, ws, job)
}

pub(crate) fn versions_now(moto: &Moto) -> serde_json::Value {
    serde_json::from_str(&moto.boto(LIST_VERSIONS, &[])).unwrap()
}

/// The data versions of `key` in a `versions_now` listing (delete markers left out), newest
/// first, each `[version id, user ids]`.
pub(crate) fn data_versions(now: &serde_json::Value, key: &str) -> Vec<serde_json::Value> {
    now[key]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| !v[1].is_null())
        .cloned()
        .collect()
}

/// The user ids of each data version of `key`, newest first.
pub(crate) fn version_users(now: &serde_json::Value, key: &str) -> Vec<serde_json::Value> {
    data_versions(now, key)
        .into_iter()
        .map(|v| v[1].clone())
        .collect()
}

pub(crate) fn manifest_of(moto: &Moto, run: &str) -> serde_json::Value {
    let out = moto.boto(
        "print(c.get_object(Bucket='lake', Key=sys.argv[1])['Body'].read().decode())",
        &[&format!("audit/versioned/{run}.json")],
    );
    serde_json::from_str(&out).unwrap()
}

/// After a purge with `old_versions = "delete"`: the rewritten key has one version (the new
/// one, which the manifest names), the emptied key only a delete marker, the untouched key all
/// three, no version anywhere holds user 3, and verify proves the deleted versions are gone.
pub(crate) fn check_versions_deleted(moto: &Moto) {
    let now = versions_now(moto);
    let data = |key: &str| data_versions(&now, key);
    assert_eq!(data("a.parquet").len(), 1, "{now}");
    assert!(data("b.parquet").is_empty(), "{now}");
    // Delete markers only (a retried delete whose response was lost leaves a second one).
    assert!(
        !now["b.parquet"].as_array().unwrap().is_empty(),
        "a delete marker: {now}"
    );
    assert_eq!(data("c.parquet").len(), 3, "{now}");
    for (key, versions) in now.as_object().unwrap() {
        for v in versions.as_array().unwrap() {
            if let Some(users) = v[1].as_array() {
                assert!(!users.contains(&serde_json::json!(3)), "{key} {v}");
            }
        }
    }
    let m = manifest_of(moto, "r1");
    let t = &m["tables"][0];
    assert_eq!(t["versioning"], serde_json::json!("enabled"));
    assert_eq!(t["versions_deleted"], serde_json::json!(6));
    let a = t["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "a.parquet")
        .unwrap();
    assert_eq!(
        a["after"]["version"],
        data("a.parquet")[0][0],
        "the version left is the new one"
    );
    assert_eq!(a["old_versions"]["deleted"].as_array().unwrap().len(), 3);
    let verified = moto.lakepurge(&["verify", "s3://lake/audit/versioned/r1.json"], &[]);
    assert_eq!(verified.code, 0, "{}", verified.all_output());
    assert!(
        verified.stdout.contains("old versions deleted are gone"),
        "{}",
        verified.stdout
    );
}

#[test]
fn s3_versioned_bucket_old_versions_of_purged_files_are_deleted() {
    let (moto, _ws, job) = versioned_setup("");
    let validated = moto.lakepurge(&["validate", "--job", &job], &[]);
    assert!(
        validated.stdout.contains("object versioning enabled"),
        "{}",
        validated.stdout
    );
    let run = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    check_versions_deleted(&moto);
}

#[test]
fn s3_versioned_bucket_crash_before_version_deletion_resumes() {
    let (moto, _ws, job) = versioned_setup("");
    let crash_env = [("LAKEPURGE_FAILPOINT", "before_version_delete=1")];
    let crashed = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &crash_env);
    assert_ne!(crashed.code, 0);
    assert!(crashed.stderr.contains("failpoint"), "{}", crashed.stderr);
    let resumed = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    check_versions_deleted(&moto);
    // The finished run id again does nothing.
    let before = versions_now(&moto);
    assert_eq!(
        moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[])
            .code,
        0
    );
    assert_eq!(versions_now(&moto), before);
}

#[test]
fn s3_versioned_bucket_keep_deletes_nothing_and_says_so() {
    let (moto, _ws, job) = versioned_setup("old_versions = \"keep\"");
    let run = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let now = versions_now(&moto);
    let count = |key: &str| data_versions(&now, key).len();
    assert_eq!(
        (count("a.parquet"), count("b.parquet"), count("c.parquet")),
        (4, 3, 3),
        "{now}"
    );
    let m = manifest_of(&moto, "r1");
    assert_eq!(m["tables"][0]["versions_deleted"], serde_json::json!(0));
    assert_eq!(m["tables"][0]["versions_remaining"], serde_json::json!(6));
    let verified = moto.lakepurge(&["verify", "s3://lake/audit/versioned/r1.json"], &[]);
    assert_eq!(verified.code, 0, "{}", verified.all_output());
    assert!(verified.stdout.contains("WARN"), "{}", verified.stdout);
    assert!(
        verified.stdout.contains("still hold erased rows"),
        "{}",
        verified.stdout
    );
}

/// A deletion that did not happen, though the manifest records it (the failpoint skips each
/// file's oldest): verify FAILs naming the file and the version.
#[test]
fn s3_verify_finds_an_old_version_recorded_deleted_but_readable() {
    let (moto, _ws, job) = versioned_setup("");
    let before = versions_now(&moto);
    let oldest_a = before["a.parquet"].as_array().unwrap().last().unwrap()[0].clone();
    let skip_env = [("LAKEPURGE_FAILPOINT", "skip_version_delete")];
    let run = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &skip_env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let verified = moto.lakepurge(&["verify", "s3://lake/audit/versioned/r1.json"], &[]);
    assert_eq!(verified.code, 3, "{}", verified.all_output());
    assert!(
        verified.stdout.contains("a.parquet")
            && verified.stdout.contains(oldest_a.as_str().unwrap()),
        "{}",
        verified.stdout
    );
}

/// Another writer puts new versions of the purged keys between the purge's commits and its
/// version deletions (the run is killed there and resumed after the writes): the deletions
/// take only the version read and older ones; the writer's versions and the purge's own stay.
/// The run is killed when the second purged file's deletions are journaled: both files are
/// committed and journaled by then, whichever order they went in (killed at the first, the
/// other file's commit could be in flight, and a writer's object replacing the deleted one
/// hides that the deletion happened).
#[test]
fn s3_versioned_bucket_newer_versions_of_another_writer_are_kept() {
    let (moto, _ws, job) = versioned_setup("");
    let crash_env = [("LAKEPURGE_FAILPOINT", "before_version_delete=2")];
    let crashed = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &crash_env);
    assert_ne!(crashed.code, 0);
    moto.boto(
        "import io, pyarrow as pa, pyarrow.parquet as pq\n\
         for key in ['a.parquet', 'b.parquet']:\n\
         \x20   buf = io.BytesIO()\n\
         \x20   pq.write_table(pa.table({'user_id': pa.array([7, 8], pa.int64()), 'v': ['7', '8']}), buf)\n\
         \x20   c.put_object(Bucket='lake', Key='warehouse/t/' + key, Body=buf.getvalue())\n",
        &[],
    );
    let resumed = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let now = versions_now(&moto);
    let users = |key: &str| version_users(&now, key);
    // a: the writer's version, then the purge's own; b: the writer's version only.
    assert_eq!(
        users("a.parquet"),
        vec![serde_json::json!([7, 8]), serde_json::json!([1, 2, 4, 12])],
        "{now}"
    );
    assert_eq!(users("b.parquet"), vec![serde_json::json!([7, 8])], "{now}");
    assert_eq!(users("c.parquet").len(), 3);
    let m = manifest_of(&moto, "r1");
    assert_eq!(m["tables"][0]["versions_deleted"], serde_json::json!(6));
}

/// Killed right after a commit, before the journal records it, then another writer replaces
/// the key: the object no longer holds the purge's bytes, yet on a versioned bucket the
/// resumed run finds its commit (the version right after the one it read is its own), records
/// it with its version id and deletes the versions that held the erased rows.
#[test]
fn s3_versioned_commit_hidden_by_another_writer_is_found_on_resume() {
    let (moto, _ws, job) = versioned_setup("");
    // One file at a time, in path order: the kill comes right after a.parquet's commit.
    let args = [
        "purge",
        "--job",
        &job,
        "--run-id",
        "r1",
        "--concurrency",
        "1",
    ];
    let crashed = moto.lakepurge(&args, &[("LAKEPURGE_FAILPOINT", "after_commit=1")]);
    assert_ne!(crashed.code, 0);
    moto.boto(
        "import io, pyarrow as pa, pyarrow.parquet as pq\n\
         buf = io.BytesIO()\n\
         pq.write_table(pa.table({'user_id': pa.array([7, 8], pa.int64()), 'v': ['7', '8']}), buf)\n\
         c.put_object(Bucket='lake', Key='warehouse/t/a.parquet', Body=buf.getvalue())\n",
        &[],
    );
    let resumed = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let m = manifest_of(&moto, "r1");
    let a = m["tables"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "a.parquet")
        .cloned()
        .expect("the commit of a.parquet is missing from the manifest");
    assert!(a["after"]["version"].is_string(), "{a}");
    let now = versions_now(&moto);
    assert_eq!(
        version_users(&now, "a.parquet"),
        vec![serde_json::json!([7, 8]), serde_json::json!([1, 2, 4, 12])],
        "{now}"
    );
}

/// Versioning suspended after versions were kept: a put replaces the `null` version in place.
/// The purge's new `null` version stays (it is the one read, replaced), and the versions kept
/// from before the suspension, which hold the erased rows, go.
#[test]
fn s3_suspended_versioning_keeps_the_new_null_version() {
    let (moto, _ws, job) = versioned_setup("");
    moto.boto(
        "import io, pyarrow as pa, pyarrow.parquet as pq\n\
         c.put_bucket_versioning(Bucket='lake', VersioningConfiguration={'Status': 'Suspended'})\n\
         buf = io.BytesIO()\n\
         pq.write_table(pa.table({'user_id': pa.array([3, 9], pa.int64()), 'v': ['3', '9']}), buf)\n\
         c.put_object(Bucket='lake', Key='warehouse/t/a.parquet', Body=buf.getvalue())\n",
        &[],
    );
    let run = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let now = versions_now(&moto);
    let a = data_versions(&now, "a.parquet");
    assert_eq!(a.len(), 1, "{now}");
    assert_eq!(a[0][0], serde_json::json!("null"));
    assert_eq!(a[0][1], serde_json::json!([9]));
    let m = manifest_of(&moto, "r1");
    assert_eq!(m["tables"][0]["versioning"], serde_json::json!("suspended"));
}

/// Case 3 of #23 on S3: a key holding an escaped partition value and a space
/// (`region=eu%3Awest/part 0.parquet`, as Spark and Hive name them) on a versioned bucket. The
/// rewrite replaces that very key (no `%253A` twin appears), its old versions are listed and
/// deleted under that key, and verify and verify --deep find it.
#[test]
fn s3_escaped_keys_are_purged_and_their_versions_deleted_under_their_own_name() {
    let moto = Moto::start();
    moto.boto(
        "import io, pyarrow as pa, pyarrow.parquet as pq\n\
         c.put_bucket_versioning(Bucket='lake', VersioningConfiguration={'Status': 'Enabled'})\n\
         for r in range(3):\n\
         \x20   buf = io.BytesIO()\n\
         \x20   pq.write_table(pa.table({'user_id': pa.array([1, 2, 3, 4, 10 + r], pa.int64())}), buf)\n\
         \x20   c.put_object(Bucket='lake', Key='warehouse/t/region=eu%3Awest/part 0.parquet', Body=buf.getvalue())\n",
        &[],
    );
    let (_ws, job) = user_3_job("lake", "esc", |t| t);
    let job = job.as_str();
    let run = moto.lakepurge(&["purge", "--job", job, "--run-id", "r1"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let listed: serde_json::Value = serde_json::from_str(&moto.boto(
        "import io, pyarrow.parquet as pq\n\
         r = c.list_object_versions(Bucket='lake', Prefix='warehouse/')\n\
         out = [[v['Key'], pq.read_table(io.BytesIO(c.get_object(Bucket='lake', Key=v['Key'], VersionId=v['VersionId'])['Body'].read())).column('user_id').to_pylist()] for v in r.get('Versions', [])]\n\
         print(json.dumps(out))\n\
         sys.stdout.flush()\n\
         os._exit(0)",
        &[],
    ))
    .unwrap();
    assert_eq!(
        listed,
        serde_json::json!([["warehouse/t/region=eu%3Awest/part 0.parquet", [1, 2, 4, 12]]])
    );
    let m: serde_json::Value = serde_json::from_str(&moto.boto(
        "print(c.get_object(Bucket='lake', Key='audit/esc/r1.json')['Body'].read().decode())",
        &[],
    ))
    .unwrap();
    let f = &m["tables"][0]["files"][0];
    assert_eq!(
        f["path"],
        serde_json::json!("region=eu%3Awest/part 0.parquet")
    );
    assert_eq!(f["old_versions"]["deleted"].as_array().unwrap().len(), 3);
    let verify = moto.lakepurge(
        &[
            "verify",
            "s3://lake/audit/esc/r1.json",
            "--deep",
            "--job",
            job,
        ],
        &[],
    );
    assert_eq!(verify.code, 0, "{}", verify.all_output());
    assert!(
        verify.stdout.contains("old versions deleted are gone"),
        "{}",
        verify.stdout
    );
}

/// Writes three versions of `a.parquet` (users 1-4 and one more: user 3 is erased) and of
/// `b.parquet` (user 3 only: emptied) under `warehouse/t/` of the bucket `vault`, made with
/// S3 Object Lock enabled; then puts a legal hold on the oldest version of `a.parquet` and a
/// governance retention until 2099 on its middle one. Prints the version ids of `a.parquet`,
/// oldest first.
const WRITE_LOCKED: &str = "import io, datetime, pyarrow as pa, pyarrow.parquet as pq\n\
c.create_bucket(Bucket='vault', ObjectLockEnabledForBucket=True)\n\
def put(key, users):\n\
\x20   buf = io.BytesIO()\n\
\x20   pq.write_table(pa.table({'user_id': pa.array(users, pa.int64())}), buf)\n\
\x20   return c.put_object(Bucket='vault', Key='warehouse/t/' + key, Body=buf.getvalue())['VersionId']\n\
ids = []\n\
for r in range(3):\n\
\x20   ids.append(put('a.parquet', [1, 2, 3, 4, 10 + r]))\n\
\x20   put('b.parquet', [3, 3])\n\
c.put_object_legal_hold(Bucket='vault', Key='warehouse/t/a.parquet', VersionId=ids[0], LegalHold={'Status': 'ON'})\n\
c.put_object_retention(Bucket='vault', Key='warehouse/t/a.parquet', VersionId=ids[1], Retention={'Mode': 'GOVERNANCE', 'RetainUntilDate': datetime.datetime(2099, 1, 1)})\n\
print(json.dumps(ids))\n\
sys.stdout.flush()\n\
os._exit(0)\n";

/// #27: S3 Object Lock on a versioned bucket. The old versions of a purged file that a legal
/// hold or an unexpired retention protects refuse DeleteObjectVersion: the run records them
/// as held by the store (mode, retain-until date), deletes every other old version, and exits
/// 0; the manifest counts them as remaining and locked, and `verify` passes and reports them.
/// What the bucket holds afterwards is checked against the records, version by version.
#[test]
fn s3_object_lock_versions_are_recorded_as_held_by_the_store() {
    let moto = Moto::start();
    let a_ids: Vec<String> = serde_json::from_str(&moto.boto(WRITE_LOCKED, &[])).unwrap();
    let (_ws, job) = user_3_job("vault", "vault", |t| t);
    let run = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r1"], &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("Object Lock"),
        "never silent: {}",
        run.stderr
    );
    let m: serde_json::Value = serde_json::from_str(&moto.boto(
        "print(c.get_object(Bucket='vault', Key='audit/vault/r1.json')['Body'].read().decode())",
        &[],
    ))
    .unwrap();
    let t = &m["tables"][0];
    let file = |name: &str| {
        t["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == name)
            .unwrap_or_else(|| panic!("{name} in {t}"))
            .clone()
    };
    // a.parquet: the version read (the newest) deleted; the two older ones locked.
    let a = file("a.parquet");
    assert_eq!(
        a["old_versions"]["deleted"],
        serde_json::json!([a_ids[2]]),
        "{a}"
    );
    assert_eq!(
        a["old_versions"]["locked"],
        serde_json::json!([
            {"version_id": a_ids[1], "mode": "governance", "retain_until": a["old_versions"]["locked"][0]["retain_until"]},
            {"version_id": a_ids[0], "mode": "legal_hold"},
        ]),
        "{a}"
    );
    assert!(
        a["old_versions"]["locked"][0]["retain_until"]
            .as_str()
            .unwrap()
            .starts_with("2099-01-01"),
        "{a}"
    );
    // b.parquet (emptied): nothing locked, every data version gone.
    let b = file("b.parquet");
    assert_eq!(
        b["old_versions"]["deleted"].as_array().unwrap().len(),
        3,
        "{b}"
    );
    assert!(b["old_versions"].get("locked").is_none(), "{b}");
    assert_eq!(
        (
            &t["versions_deleted"],
            &t["versions_remaining"],
            &t["versions_locked"]
        ),
        (
            &serde_json::json!(4),
            &serde_json::json!(2),
            &serde_json::json!(2)
        ),
        "{m}"
    );
    // The bucket agrees: exactly the locked versions of a.parquet remain besides the
    // purge's own new version, and each still holds user 3; b.parquet has no data version.
    let left: serde_json::Value = serde_json::from_str(&moto.boto(
        "import io, pyarrow.parquet as pq\n\
         out = {}\n\
         for v in c.list_object_versions(Bucket='vault', Prefix='warehouse/t/').get('Versions', []):\n\
         \x20   body = c.get_object(Bucket='vault', Key=v['Key'], VersionId=v['VersionId'])['Body'].read()\n\
         \x20   users = pq.read_table(io.BytesIO(body)).column('user_id').to_pylist()\n\
         \x20   out.setdefault(v['Key'], {})[v['VersionId']] = 3 in users\n\
         print(json.dumps(out))\n\
         sys.stdout.flush()\n\
         os._exit(0)",
        &[],
    ))
    .unwrap();
    let a_left = left["warehouse/t/a.parquet"].as_object().unwrap();
    assert_eq!(a_left.len(), 3, "{left}");
    for id in &a_ids[..2] {
        assert_eq!(a_left[id.as_str()], true, "{left}");
    }
    assert_eq!(a_left.values().filter(|v| **v == true).count(), 2, "{left}");
    assert!(left.get("warehouse/t/b.parquet").is_none(), "{left}");
    // verify passes and reports the versions the store holds.
    let verify = moto.lakepurge(&["verify", "s3://vault/audit/vault/r1.json"], &[]);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
    assert!(
        verify.stdout.contains(
            "2 old versions still hold erased rows, held by the store under S3 Object Lock"
        ),
        "{}",
        verify.stdout
    );
    // A second run changes nothing and deletes nothing more.
    let again = moto.lakepurge(&["purge", "--job", &job, "--run-id", "r2"], &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
}

/// A job whose stores are configured only in its specs' `storage_options` (the environment
/// points elsewhere): `verify --job` reaches the manifests, the confirmations and the table
/// with the job's options, as the run did, and passes; so does `report`.
#[test]
fn verify_with_the_job_uses_its_storage_options() {
    let moto = Moto::start();
    moto.boto(
        "import io, pyarrow as pa, pyarrow.parquet as pq\n\
         buf = io.BytesIO()\n\
         pq.write_table(pa.table({'user_id': pa.array([1, 2, 3, 4], pa.int64())}), buf)\n\
         c.put_object(Bucket='lake', Key='warehouse/t/a.parquet', Body=buf.getvalue())\n\
         sys.stdout.flush()\n\
         os._exit(0)",
        &[],
    );
    let options = format!(
        "{{ aws_access_key_id = \"test\", aws_secret_access_key = \"{SECRET}\", \
         aws_region = \"us-east-1\", aws_endpoint = \"{}\", aws_allow_http = \"true\" }}",
        moto.endpoint()
    );
    let (ws, job) = user_3_job("lake", "opts", |text| {
        text.replacen(
            "[events]",
            &format!("storage_options = {options}\n[events]"),
            1,
        )
        .replacen(
            "[[table.match]]",
            &format!("storage_options = {options}\n[[table.match]]"),
            1,
        )
    });
    let job = job.as_str();
    // The environment points at nothing: only the specs' options reach the server.
    let elsewhere = [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
        ("AWS_ACCESS_KEY_ID", "nobody"),
    ];
    let run = lakepurge_env(&["purge", "--job", job, "--run-id", "r1"], &elsewhere);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let verify = lakepurge_env(&["verify", "--job", job, "--run-id", "r1"], &elsewhere);
    assert_eq!(verify.code, 0, "{}", verify.all_output());
    assert!(
        verify.stdout.contains("a.parquet has its purged content")
            && verify
                .stdout
                .contains("confirmations: 1 rows, sha256 as recorded"),
        "{}",
        verify.stdout
    );
    let page = ws.path().join("report.html");
    let report = lakepurge_env(
        &[
            "report",
            "--job",
            job,
            "--out",
            page.to_str().unwrap(),
            "--json",
        ],
        &elsewhere,
    );
    assert_eq!(report.code, 0, "{}", report.stderr);
    let r: serde_json::Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(r["runs"][0]["verified"], true, "{r}");
    assert_eq!(r["status"]["erased"], 1, "{r}");
}

/// A workspace with events erasing user 3 and the job text `name` over
/// `s3://<bucket>/warehouse/t/` (manifests in `s3://<bucket>/audit/`), edited by `edit`;
/// returns the workspace and the job file.
fn user_3_job(
    bucket: &str,
    name: &str,
    edit: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, String) {
    let ws = tempfile::tempdir().unwrap();
    write_events(
        &ws.path().join("events/e.json"),
        &[("ev-1", "user_id", serde_json::json!("3"))],
    );
    let job = ws.path().join("job.toml");
    let text = user_id_job(
        name,
        &format!("s3://{bucket}/audit/"),
        &file_url(&ws.path().join("events")),
        &format!("s3://{bucket}/warehouse/t/"),
    );
    write(&job, &edit(text));
    let job = job.display().to_string();
    (ws, job)
}
