//! Stage 6, manifest: the tamper-evident record of a run, written last at
//! `<manifests>/<job>/<run id>.json`. Its presence means the run completed.
//!
//! Manifests of a job form a hash chain: each records the sha256 of the job's previous manifest
//! (`previous_sha256`) and its position (`sequence`). The counts in it are the run's own
//! metrics, serialised as computed. It holds event ids and counts, never a subject id.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::events::EventFile;
use crate::spec::Job;
use crate::store::Location;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub job: String,
    pub run_id: String,
    pub status: String,
    pub started_at: String,
    pub finished_at: String,
    pub engine: Engine,
    pub spec_sha256: String,
    pub previous_sha256: Option<String>,
    /// 1 for the job's first manifest, then previous + 1.
    pub sequence: u64,
    pub events: EventsRecord,
    /// The hold dataset the run applied (a job with `[holds]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds: Option<crate::holds::HoldsRecord>,
    pub tables: Vec<TableRecord>,
    pub per_event: BTreeMap<String, u64>,
    /// The confirmations this run wrote for the erasure pipeline (see [`crate::confirm`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmations: Option<ConfirmationsRecord>,
    /// ed25519 signature over the manifest serialised without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub algorithm: String,
    /// Hex of the 32-byte ed25519 public key.
    pub public_key: String,
    /// Hex of the 64-byte signature.
    pub value: String,
}

/// The run's file of the confirmations dataset.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationsRecord {
    /// The dataset (a folder of `run_id=<id>/part-0.parquet` files).
    pub location: String,
    /// The run's file, none when the run confirmed no event (every event it applied was
    /// confirmed by an earlier run).
    pub file: Option<String>,
    /// Events the run is the first to confirm: the file's rows.
    pub rows: u64,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventsRecord {
    pub location: String,
    /// Distinct event ids applied.
    pub count: u64,
    /// Rows skipped for a null or empty subject id.
    pub skipped: u64,
    /// Rows read, duplicates included.
    pub rows: u64,
    pub max_requested_at: Option<String>,
    /// sha256 over the sorted distinct event ids applied.
    pub digest: String,
    /// The event files of the snapshot.
    pub files: Vec<EventFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableRecord {
    pub name: String,
    pub location: String,
    pub files_listed: u64,
    pub files_pruned: u64,
    pub files_rewritten: u64,
    pub files_deleted: u64,
    pub rows_removed: u64,
    /// `action = "redact"`: rows kept with their redacted columns set to null.
    #[serde(default)]
    pub rows_redacted: u64,
    /// The subject types the table's rules match (the table was searched for each): an event
    /// of a type no table of the run names is confirmed `no_rule`, not `no_data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_types: Option<Vec<String>>,
    /// Subject ids that could not be converted to a key column's type (they match nothing).
    pub ids_unconvertible: u64,
    /// Matched rows kept under legal holds or the table's exemption (`retain`), never
    /// changed: counts per basis and per event, the hold ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<crate::holds::HeldRecord>,
    /// A sharded run: the files its final step planned itself, because no shard listed them
    /// as they were (new, moved or changed after the shards ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_final_step: Option<u64>,
    /// Files that held erased rows when planned but were deleted by another writer before
    /// lakepurge rewrote them (recorded, never recreated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_vanished: Vec<String>,
    /// On a versioned bucket: the bucket's versioning, and the noncurrent versions the run
    /// deleted and left (they hold erased rows) over the table's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versioning: Option<crate::store::Versioning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions_deleted: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions_remaining: Option<u64>,
    /// Of the remaining versions, those the store holds under S3 Object Lock (listed per file
    /// in `old_versions.locked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versions_locked: Option<u64>,
    /// A Delta table: the commit the purge made, and what became of the files it removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaRecord>,
    /// An Iceberg table: the same, for its snapshot (versions are snapshot ids, `app_id` the
    /// key in the snapshot summary's `lakepurge.key`), with the older snapshots expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iceberg: Option<DeltaRecord>,
    pub files: Vec<FileRecord>,
}

/// A Delta table's side of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DeltaRecord {
    /// The log version the run planned on.
    pub read_version: u64,
    /// The version the run committed (none when no file held an erased row).
    pub version: Option<u64>,
    /// The application transaction id of the commit (`txn.appId`).
    pub app_id: String,
    /// `old_files` policy: `delete` or `keep`.
    pub old_files: crate::spec::OldFiles,
    /// Files the commit removed that were deleted, and that remain (they hold erased rows and
    /// are served by time travel until VACUUM removes them after the table's
    /// `delta.deletedFileRetentionDuration`).
    pub old_files_deleted: u64,
    pub old_files_remaining: u64,
    /// With `keep`: the retention after which VACUUM may delete them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// The table's history still on disk (files earlier commits removed, that time travel
    /// still reads): how many were scanned, and those holding an erased row, deleted under
    /// `old_files = "delete"` or remaining under `keep`.
    #[serde(default)]
    pub history_files_scanned: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history_files: Vec<String>,
    #[serde(default)]
    pub history_files_deleted: u64,
    #[serde(default)]
    pub history_files_remaining: u64,
    /// On a versioned bucket: the noncurrent versions of each deleted history file, deleted
    /// (`old_versions = "delete"`) or counted as remaining (`keep`), by path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history_old_versions: BTreeMap<String, OldVersionsRecord>,
    /// The log's own files whose data-file statistics name an erased value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_log: Option<OldLogRecord>,
    /// Iceberg: older snapshots that read a removed or history file holding erased rows,
    /// expired before the files were deleted, and their manifest lists and manifests (which
    /// list those files and their bounds) deleted; branches and tags that named only them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snapshots_expired: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub metadata_files_deleted: u64,
    /// Iceberg, `old_files = "keep"`: older snapshots that still read a removed or history
    /// file holding erased rows (time travel to them reads those rows).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub snapshots_remaining: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs_removed: Vec<String>,
}

impl DeltaRecord {
    /// The log record of a table record: Delta's or Iceberg's.
    pub fn of(t: &TableRecord) -> Option<&DeltaRecord> {
        t.delta.as_ref().or(t.iceberg.as_ref())
    }
}

/// A table log's own files (entries, checkpoints, checksums) scanned for data-file statistics
/// (`minValues`/`maxValues`) equal to an erased subject's id under one of the table's rules:
/// counts only, never the value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct OldLogRecord {
    /// `keep` or `expire`.
    pub policy: crate::spec::OldLog,
    /// Log files scanned.
    pub files_scanned: u64,
    /// Of those, the ones naming an erased value, by kind.
    pub entries_naming_erased: u64,
    pub checkpoints_naming_erased: u64,
    pub checksums_naming_erased: u64,
    /// `expire`: the version a checkpoint was written at; the log before it was removed, and
    /// time travel to earlier versions ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_before: Option<u64>,
    /// Log files that still name an erased value after the run.
    pub remaining_naming_erased: u64,
}

impl OldLogRecord {
    /// The log files found naming an erased value.
    pub fn naming_erased(&self) -> u64 {
        self.entries_naming_erased + self.checkpoints_naming_erased + self.checksums_naming_erased
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// Relative to the table location.
    pub path: String,
    /// A Delta table: where the rewritten file is (relative to the table); the file at `path`
    /// is removed from the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_path: Option<String>,
    pub rows_removed: u64,
    /// `action = "redact"`: rows kept with their redacted columns set to null.
    #[serde(default)]
    pub rows_redacted: u64,
    /// A file of a table with a log: rows the log already marked deleted (a Delta deletion
    /// vector) that were not erased ones, dropped by the rewrite with them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rows_already_deleted: u64,
    pub before: FileVersion,
    /// `None` for a deleted file.
    pub after: Option<FileVersion>,
    /// Removed (or redacted) rows per event id (a row matching several events counts for each).
    pub per_event: BTreeMap<String, u64>,
    /// On a versioned bucket: the object's old versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_versions: Option<OldVersionsRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileVersion {
    pub size: u64,
    pub sha256: String,
    pub rows: u64,
    pub etag: Option<String>,
    /// The object's version id, on a versioned bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// What became of a purged object's noncurrent versions on a versioned bucket: the version
/// read and every older one held the erased rows.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OldVersionsRecord {
    pub policy: crate::spec::OldVersions,
    /// The version ids deleted (`delete`).
    pub deleted: Vec<String>,
    /// Versions that still hold erased rows (`keep`).
    pub remaining: u64,
    /// Versions the store refused to delete because S3 Object Lock holds them (a legal hold
    /// or a retention): they still hold erased rows, until the store releases them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locked: Vec<LockedVersion>,
    /// Journal only: deletions decided but not all made yet (a resumed run finishes them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

/// An old version the store holds under S3 Object Lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LockedVersion {
    pub version_id: String,
    /// `legal_hold`, `governance` or `compliance`.
    pub mode: String,
    /// The retention's retain-until date, as the store gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_until: Option<String>,
}

impl LockedVersion {
    pub fn new(version_id: &str, lock: crate::store::versions::ObjectLock) -> Self {
        LockedVersion {
            version_id: version_id.to_string(),
            mode: lock.mode,
            retain_until: lock.retain_until,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Manifest {
    /// The bytes a signature covers: the manifest serialised (compact) without its signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = None;
        // Serialising plain structs, strings and integers cannot fail.
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }

    /// Signs the manifest with `key`.
    pub fn sign(&mut self, key: &ed25519_dalek::SigningKey) {
        use ed25519_dalek::Signer;
        let sig = key.sign(&self.signed_bytes());
        self.signature = Some(Signature {
            algorithm: "ed25519".into(),
            public_key: hex::encode(key.verifying_key().to_bytes()),
            value: hex::encode(sig.to_bytes()),
        });
    }

    /// Checks the signature against `key`; `Err` says what is wrong.
    pub fn check_signature(
        &self,
        key: &ed25519_dalek::VerifyingKey,
    ) -> std::result::Result<(), String> {
        let sig = self
            .signature
            .as_ref()
            .ok_or("the manifest is not signed")?;
        if sig.algorithm != "ed25519" {
            return Err(format!(
                "unsupported signature algorithm {:?}",
                sig.algorithm
            ));
        }
        let bytes: [u8; 64] = hex::decode(&sig.value)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the signature is not 64 hex-encoded bytes")?;
        key.verify_strict(
            &self.signed_bytes(),
            &ed25519_dalek::Signature::from_bytes(&bytes),
        )
        .map_err(|_| "the signature does not match the manifest and key".to_string())
    }
}

/// Reads a hex-encoded 32-byte key file (as written by `lakepurge keygen`).
fn read_key_bytes(path: &std::path::Path) -> Result<[u8; 32]> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("{}: cannot read key: {e}", path.display())))?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: expected 64 hex digits (a 32-byte ed25519 key)",
                path.display()
            ))
        })
}

pub fn read_signing_key(path: &std::path::Path) -> Result<ed25519_dalek::SigningKey> {
    Ok(ed25519_dalek::SigningKey::from_bytes(&read_key_bytes(
        path,
    )?))
}

pub fn read_public_key(path: &std::path::Path) -> Result<ed25519_dalek::VerifyingKey> {
    ed25519_dalek::VerifyingKey::from_bytes(&read_key_bytes(path)?).map_err(|e| {
        Error::Usage(format!(
            "{}: not an ed25519 public key: {e}",
            path.display()
        ))
    })
}

/// Writes a new key pair: `<dir>/lakepurge.key` (secret, hex) and `<dir>/lakepurge.pub`.
pub fn keygen(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let io = |p: &std::path::Path, e: std::io::Error| Error::Usage(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let secret = dir.join("lakepurge.key");
    let public = dir.join("lakepurge.pub");
    if secret.exists() {
        return Err(Error::Usage(format!(
            "{} exists: not overwriting a key",
            secret.display()
        )));
    }
    std::fs::write(&secret, format!("{}\n", hex::encode(key.to_bytes())))
        .map_err(|e| io(&secret, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io(&secret, e))?;
    }
    std::fs::write(
        &public,
        format!("{}\n", hex::encode(key.verifying_key().to_bytes())),
    )
    .map_err(|e| io(&public, e))?;
    Ok((secret, public))
}

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The folder holding the manifests of `job`: `<manifests>/<job name>/`.
pub fn folder(job: &Job) -> Result<Location> {
    let base = Location::parse(&job.manifests, &job.dir, &job.manifests_storage_options)
        .map_err(|m| Error::spec(job.file.display(), format!("job.manifests: {m}")))?;
    let url = base
        .url
        .join(&format!("{}/", job.name))
        .map_err(|e| Error::spec(job.file.display(), format!("job.manifests: {e}")))?;
    let prefix = base.child(&job.name);
    Ok(Location {
        url,
        store: base.store,
        prefix,
        versions: base.versions,
    })
}

/// The path of the manifest of `run_id` in `folder`.
pub fn path(folder: &Location, run_id: &str) -> Path {
    folder.child(&format!("{run_id}.json"))
}

/// A manifest as stored: its parsed form, its sha256 and where it is.
#[derive(Debug, Clone)]
pub struct Stored {
    pub manifest: Manifest,
    pub sha256: String,
    pub path: Path,
    /// The manifest's full URL, for messages.
    pub url: String,
}

/// Parses manifest bytes; `shown` names the manifest in errors.
pub fn parse(bytes: &[u8], shown: &str) -> Result<Manifest> {
    let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Manifest {
        path: shown.to_string(),
        message: format!("not a lakepurge manifest: {e}"),
    })?;
    if m.format_version != FORMAT_VERSION {
        return Err(Error::Manifest {
            path: shown.to_string(),
            message: format!(
                "format_version {} is not supported (expected {FORMAT_VERSION})",
                m.format_version
            ),
        });
    }
    Ok(m)
}

/// Reads the manifest at `path`, or `None` if there is none.
pub async fn read(folder: &Location, path: &Path) -> Result<Option<Stored>> {
    let Some(bytes) = crate::store::read_if_exists(folder.store.as_ref(), path, "manifest").await?
    else {
        return Ok(None);
    };
    let url = folder.object_url(path);
    let manifest = parse(&bytes, &url)?;
    Ok(Some(Stored {
        manifest,
        sha256: sha256_hex(&bytes),
        path: path.clone(),
        url,
    }))
}

/// Every manifest in `folder` that parses, ordered by sequence, and the ones that do not
/// (path and reason): `verify` reports those instead of failing.
pub async fn all_lenient(folder: &Location) -> Result<(Vec<Stored>, Vec<(String, String)>)> {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for path in manifest_paths(folder).await? {
        match read(folder, &path).await {
            Ok(Some(s)) => good.push(s),
            Ok(None) => {}
            Err(Error::Manifest { message, .. }) => bad.push((folder.object_url(&path), message)),
            Err(e) => return Err(e),
        }
    }
    good.sort_by_key(|s| s.manifest.sequence);
    Ok((good, bad))
}

async fn manifest_paths(folder: &Location) -> Result<Vec<Path>> {
    let metas: Vec<_> = folder
        .store
        .list(Some(&folder.prefix))
        .try_collect()
        .await
        .map_err(|e| Error::store(format!("listing manifests at {}", folder.url), e))?;
    Ok(metas
        .into_iter()
        .map(|m| m.location)
        .filter(|p| {
            let rel = folder.relative(p);
            !rel.contains('/') && rel.ends_with(".json") && !rel.starts_with('.')
        })
        .collect())
}

/// The run ids with a manifest in `folder`: the job's completed runs (a listing, no reads).
pub async fn run_ids(folder: &Location) -> Result<std::collections::BTreeSet<String>> {
    Ok(manifest_paths(folder)
        .await?
        .iter()
        .filter_map(|p| folder.relative(p).strip_suffix(".json").map(str::to_string))
        .collect())
}

/// Every manifest of the job in `folder`, ordered by sequence; one that does not parse is an
/// error.
pub async fn all(folder: &Location) -> Result<Vec<Stored>> {
    let mut out = Vec::new();
    for path in manifest_paths(folder).await? {
        if let Some(s) = read(folder, &path).await? {
            out.push(s);
        }
    }
    out.sort_by_key(|s| s.manifest.sequence);
    Ok(out)
}

/// `LAKEPURGE_MANIFEST_COPY=<folder>`: each manifest written is also copied into this local
/// folder (the test suite validates every one against `docs/manifest.schema.json`). A copy
/// that cannot be written is a warning, never a failure of the run.
fn keep_copy(manifest: &Manifest, bytes: &[u8]) {
    let Some(dir) = std::env::var_os("LAKEPURGE_MANIFEST_COPY") else {
        return;
    };
    let file = std::path::Path::new(&dir).join(format!(
        "{}.{}.{}.json",
        manifest.job,
        manifest.run_id,
        std::process::id()
    ));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, bytes)) {
        tracing::warn!(file = %file.display(), error = %e, "cannot keep a copy of the manifest");
    }
}

/// Writes a new manifest; fails if one already exists for the run (never overwritten).
pub async fn write(folder: &Location, manifest: &Manifest) -> Result<Stored> {
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| Error::Manifest {
        path: folder.url.to_string(),
        message: format!("cannot serialise: {e}"),
    })?;
    let path = path(folder, &manifest.run_id);
    let put = folder
        .store
        .put_opts(
            &path,
            PutPayload::from(bytes.clone()),
            PutOptions::from(PutMode::Create),
        )
        .await;
    match put {
        Ok(_) => {}
        // A create-only put whose response was lost, retried, finds the object there: it is
        // this manifest if it holds these very bytes; anything else is another writer's.
        Err(object_store::Error::AlreadyExists { .. })
            if crate::store::read_if_exists(folder.store.as_ref(), &path, "manifest")
                .await?
                .is_some_and(|there| there == bytes) => {}
        Err(e) => return Err(Error::store(format!("writing manifest {path}"), e)),
    }
    keep_copy(manifest, &bytes);
    Ok(Stored {
        manifest: manifest.clone(),
        sha256: sha256_hex(&bytes),
        url: folder.object_url(&path),
        path,
    })
}
