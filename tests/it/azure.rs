//! Azure Blob Storage through a real Azure API: Azurite (the emulator from the npm registry;
//! `.ci/run` installs it), started by the test on a free loopback port and stopped when the test
//! ends. The same purge and exact-result checks as local and S3, with `az://` locations and
//! object_store's Azure client configured from the standard environment; conditional
//! replacement (If-Match) against a concurrent writer.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use lakepurge::commit::{self, ReadVersion};
use lakepurge::store::Location;
use object_store::ObjectStoreExt;

use crate::cloud::{Bucket, Server, purge_matches_local, refused_and_kept};
use crate::common::*;

/// Azurite's well-known development account key (public, documented by Microsoft).
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `azurite-blob` command: `LAKEPURGE_AZURITE`, else where `.ci/run` installs it.
fn azurite_bin() -> PathBuf {
    if let Ok(p) = std::env::var("LAKEPURGE_AZURITE") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").expect("HOME");
    Path::new(&home).join(".cache/lakepurge-azurite/node_modules/.bin/azurite-blob")
}

/// An Azurite blob server on 127.0.0.1 with a container `lake`, stopped on drop.
struct Azurite {
    server: Server,
    _data: tempfile::TempDir,
}

impl Azurite {
    fn start() -> Azurite {
        let data = tempfile::tempdir().unwrap();
        let server = Server::start("azurite-blob (npm install azurite)", |port| {
            let mut c = Command::new(azurite_bin());
            c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(data.path())
                .args(["--silent", "--skipApiVersionCheck"]);
            c
        });
        let azurite = Azurite {
            server,
            _data: data,
        };
        azurite.sdk("s.create_container('lake')", &[]);
        azurite
    }

    fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// The environment object_store's Azure client reads for the emulator.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint()),
        ]
    }

    /// Runs a Python snippet with the Azure SDK's service client `s` and container client `c`.
    fn sdk(&self, body: &str, args: &[&str]) -> String {
        let script = format!(
            "import sys, json, os\nfrom azure.storage.blob import BlobServiceClient\n\
             s = BlobServiceClient.from_connection_string('DefaultEndpointsProtocol=http;\
             AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};\
             BlobEndpoint={}/devstoreaccount1;')\nc = s.get_container_client('lake')\n{body}\n",
            self.endpoint()
        );
        run_python("azure sdk", &script, args)
    }
}

impl Bucket for Azurite {
    fn upload_dir(&self, local: &Path, prefix: &str) {
        self.sdk(
            "root, prefix = sys.argv[1], sys.argv[2]\n\
             for d, _, files in os.walk(root):\n\
             \x20   for f in files:\n\
             \x20       p = os.path.join(d, f)\n\
             \x20       with open(p, 'rb') as fh:\n\
             \x20           c.upload_blob(prefix + os.path.relpath(p, root), fh)",
            &[local.to_str().unwrap(), prefix],
        );
    }

    fn download_dir(&self, prefix: &str, local: &Path) {
        self.sdk(
            "prefix, root = sys.argv[1], sys.argv[2]\n\
             for b in c.list_blobs(name_starts_with=prefix):\n\
             \x20   p = os.path.join(root, b.name[len(prefix):])\n\
             \x20   os.makedirs(os.path.dirname(p), exist_ok=True)\n\
             \x20   open(p, 'wb').write(c.download_blob(b.name).readall())",
            &[prefix, local.to_str().unwrap()],
        );
    }

    /// Etags by blob name, without quotes.
    fn etags(&self, prefix: &str) -> serde_json::Value {
        let out = self.sdk(
            "print(json.dumps({b.name: b.etag.strip('\"') for b in c.list_blobs(name_starts_with=sys.argv[1])}))",
            &[prefix],
        );
        serde_json::from_str(&out).unwrap()
    }
}

#[test]
fn azure_purge_gives_the_same_exact_result_as_local() {
    let azurite = Azurite::start();
    purge_matches_local(&azurite, "az://lake/", &azurite.env(), ACCOUNT_KEY);
}

#[tokio::test(flavor = "multi_thread")]
async fn azure_replace_refuses_a_blob_changed_by_a_concurrent_writer() {
    let azurite = Azurite::start();
    azurite.sdk("c.upload_blob('t/f.parquet', b'version-1')", &[]);
    // Configured as an account with an endpoint (storage options, not the environment).
    let options = [
        ("azure_storage_account_name", "devstoreaccount1".to_string()),
        ("azure_storage_account_key", ACCOUNT_KEY.to_string()),
        (
            "azure_storage_endpoint",
            format!("{}/devstoreaccount1", azurite.endpoint()),
        ),
        ("azure_allow_http", "true".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let loc = Location::parse("az://lake/t/", Path::new("."), &options).unwrap();
    let path = loc.child("f.parquet");
    let meta = loc.store.head(&path).await.unwrap();
    let read = ReadVersion {
        e_tag: meta.e_tag.clone(),
        version: meta.version.clone(),
    };
    azurite.sdk(
        "c.upload_blob('t/f.parquet', b'version-2 newer', overwrite=True)",
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
}

/// The rewrite's conditional put (If-Match) is applied by Azurite and its response lost, through
/// the fault proxy: the run looks the blob up, finds its own bytes, and the result is exactly
/// what it is without the fault (rows, counts, confirmations, verify --deep).
#[test]
fn azure_lost_response_of_a_rewrite_is_looked_up() {
    let azurite = Azurite::start();
    let proxy = crate::proxy::FaultProxy::start(&azurite.endpoint());
    proxy.inject(serde_json::json!({"kind": "cond_put", "fault": "lost", "count": 1, "match": "warehouse/users/"}));
    let env = vec![
        ("AZURE_STORAGE_USE_EMULATOR", "true".to_string()),
        ("AZURITE_BLOB_STORAGE_URL", proxy.endpoint()),
    ];
    purge_matches_local(&azurite, "az://lake/", &env, ACCOUNT_KEY);
    assert!(proxy.faults_fired() >= 1, "{:?}", proxy.log());
}

/// A Delta table on Azure Blob Storage (Azurite), as on S3: the log read and committed through
/// the Azure store (its conditional put), the removed files and the history holding erased rows
/// deleted, and the table read back with the `deltalake` package (every version) and polars
/// holding exactly the oracle's rows.
#[test]
fn azure_delta_table_is_purged_through_its_log() {
    use crate::delta::*;
    let azurite = Azurite::start();
    let ws = tempfile::tempdir().unwrap();
    let local = ws.path().join("written");
    std::fs::create_dir_all(&local).unwrap();
    run_python("writing a Delta table", WRITE_DELTA, &[&local]);
    run_python("a DELETE and an UPDATE", DELETE_AND_UPDATE, &[&local]);
    azurite.upload_dir(&local, "warehouse/users/");
    let start = read_delta(&local)["version"].as_u64().unwrap();
    let job = delta_job(
        ws.path(),
        "az://lake/audit/",
        &file_url(&ws.path().join("events")),
        "az://lake/warehouse/users/",
        "",
    );
    let env = azurite.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let run = lakepurge_env(&["purge", "--job", &job, "--run-id", "r1"], &env);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let verified = lakepurge_env(
        &[
            "verify",
            "az://lake/audit/lake/r1.json",
            "--deep",
            "--job",
            &job,
        ],
        &env,
    );
    assert_eq!(verified.code, 0, "{}", verified.all_output());
    let back = ws.path().join("back");
    azurite.download_dir("warehouse/users/", &back);
    let after = read_delta(&back);
    assert_eq!(after["version"], serde_json::json!(start + 1));
    assert_eq!(lakepurge_commits(&after, "r1"), 1);
    // The oracle's rows, less seq 3 (the earlier DELETE's).
    let seqs: Vec<i64> = serde_json::from_value(after["seqs"].clone()).unwrap();
    let expected: Vec<i64> = oracle().into_iter().filter(|s| *s != 3).collect();
    assert_eq!(seqs, expected);
    assert_eq!(after["polars_rows"], serde_json::json!(expected.len()));
    for (v, users) in after["versions"].as_object().unwrap() {
        if let Some(users) = users.as_array() {
            for e in ERASED {
                assert!(
                    !users.contains(&serde_json::json!(e)),
                    "version {v} serves {e}"
                );
            }
        }
    }
    let on_disk = run_python(
        "reading every Parquet file under the table",
        USER_IDS_ON_DISK,
        &[&back],
    );
    let on_disk: Vec<i64> = serde_json::from_str(&on_disk).unwrap();
    for e in ERASED {
        assert!(
            !on_disk.contains(&e),
            "a file in the container still holds {e}"
        );
    }
}
