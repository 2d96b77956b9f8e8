//! Stage 7, verify: the auditor's check of a manifest, trusting nothing but the manifests and
//! the objects they name.
//!
//! Checks, one line each: the manifest parses with every required field; with a public key,
//! its ed25519 signature; the hash chain back through every earlier manifest of the job (an
//! edited, missing or reordered one is named); per file `before.rows − rows_removed −
//! rows_already_deleted = after.rows`, table and per-event sums; each rewritten file still has its recorded sha256
//! unless a later manifest of the job accounts for a newer version, and each deleted file is
//! still gone (a file restored from backup is named); the run's confirmations agree with the
//! manifest and confirm no event twice (see [`confirmations`]). `--deep` re-reads the event snapshot the
//! manifest covers (its digest must match) and scans every table of the job, files added since
//! included, reading key columns only, for any row that still matches; each such file is named
//! with its count. The verdict is PASS or FAIL (exit 0 or 3); a manifest that cannot be read at
//! all is exit 2.

use std::collections::BTreeMap;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::events;
use crate::manifest::{self, Manifest, Stored};
use crate::spec::Job;
use crate::store::Location;
use crate::table::Table;

mod confirmations;
pub mod deep;

/// One check and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub ok: bool,
    pub what: String,
}

/// The outcome of `verify`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub manifest: String,
    pub checks: Vec<Check>,
    pub pass: bool,
}

/// What to check beyond the manifest and its files.
#[derive(Default)]
pub struct Options<'a> {
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
    /// `--deep`: the job whose event snapshot and tables are re-scanned.
    pub deep: Option<&'a Job>,
    /// The manifest's job (`--job`): its `storage_options` reach the manifests, the
    /// confirmations and each table as the runs reached them. Without it, the environment's
    /// configuration alone.
    pub job: Option<&'a Job>,
}

impl Options<'_> {
    /// The storage options of the manifests and confirmations locations.
    fn manifests_storage(&self) -> BTreeMap<String, String> {
        self.job
            .map(|j| j.manifests_storage_options.clone())
            .unwrap_or_default()
    }

    /// The storage options of table `name` (the job's spec of that name).
    fn table_storage(&self, name: &str) -> BTreeMap<String, String> {
        self.job
            .and_then(|j| j.tables.iter().find(|t| t.name == name))
            .map(|t| t.storage_options.clone())
            .unwrap_or_default()
    }
}

fn ok(what: String) -> Check {
    Check { ok: true, what }
}

fn fail(what: String) -> Check {
    Check { ok: false, what }
}

/// Resolves a manifest argument (a local path or a URL) to its folder and object path, with
/// the store's `options`.
pub fn locate(arg: &str, options: &BTreeMap<String, String>) -> Result<(Location, Path)> {
    let (dir, name) = match arg.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => (".", arg),
    };
    let folder =
        Location::parse(dir, std::path::Path::new("."), options).map_err(|m| Error::Manifest {
            path: arg.to_string(),
            message: m,
        })?;
    let path = folder.child(name);
    Ok((folder, path))
}

/// Verifies the manifest at `arg`.
pub async fn verify(arg: &str, opts: &Options<'_>) -> Result<Report> {
    let (folder, path) = locate(arg, &opts.manifests_storage())?;
    let stored = manifest::read(&folder, &path)
        .await?
        .ok_or_else(|| Error::Manifest {
            path: arg.to_string(),
            message: "no such manifest".into(),
        })?;
    let m = &stored.manifest;
    let mut checks = vec![Check {
        ok: m.status == "complete",
        what: format!(
            "manifest parses, all required fields present, status {:?} (job {}, run {}, sequence {})",
            m.status, m.job, m.run_id, m.sequence
        ),
    }];
    if let Some(key) = &opts.public_key {
        checks.push(match m.check_signature(key) {
            Ok(()) => ok("signature: valid ed25519 signature by the given key".into()),
            Err(why) => fail(format!("signature: {why}")),
        });
    }
    // Manifests in the folder that parse; one that does not is a chain failure, not exit 2.
    let (history, unreadable) = manifest::all_lenient(&folder).await?;
    for (p, why) in &unreadable {
        checks.push(fail(format!(
            "hash chain: {p} is not a readable manifest: {why}"
        )));
    }
    checks.extend(check_chain(&stored, &history));
    checks.extend(check_arithmetic(m));
    let later: Vec<&Stored> = history
        .iter()
        .filter(|s| s.manifest.sequence > m.sequence)
        .collect();
    for t in &m.tables {
        let loc = Location::parse(
            &t.location,
            std::path::Path::new("."),
            &opts.table_storage(&t.name),
        )
        .map_err(|msg| Error::Manifest {
            path: arg.to_string(),
            message: format!("table {} location: {msg}", t.name),
        })?;
        if let Some(d) = &t.delta {
            checks.extend(delta_checks(&loc, t, d).await?);
            checks.extend(old_log_check(&loc, t, d).await?);
        }
        if let Some(d) = &t.iceberg {
            checks.push(iceberg_check(&loc, t, d).await?);
            let spec = opts
                .job
                .or(opts.deep)
                .and_then(|j| j.tables.iter().find(|s| s.name == t.name));
            if let Some(spec) = spec {
                checks.push(iceberg_catalog_check(&loc, spec, t, d, &later).await?);
            }
        }
        if let Some(d) = manifest::DeltaRecord::of(t) {
            checks.extend(delta_history_check(&loc, t, d).await?);
            for (file, old) in &d.history_old_versions {
                checks.extend(check_old_versions(&loc, &t.name, file, old).await?);
            }
        }
        for f in &t.files {
            checks.push(match manifest::DeltaRecord::of(t) {
                Some(_) => check_delta_file(&loc, t, f, &later).await?,
                None => check_file(&loc, &t.name, &t.location, f, &later).await?,
            });
            if let Some(old) = &f.old_versions {
                checks.extend(check_old_versions(&loc, &t.name, &f.path, old).await?);
            }
        }
    }
    checks.extend(confirmations::checks(&folder, m, &opts.manifests_storage()).await?);
    if let Some(job) = opts.deep {
        checks.extend(deep(job, m).await?);
    }
    let pass = checks.iter().all(|c| c.ok);
    Ok(Report {
        manifest: folder.object_url(&path),
        checks,
        pass,
    })
}

/// Walks `previous_sha256` back to the job's first manifest.
fn check_chain(stored: &Stored, history: &[Stored]) -> Vec<Check> {
    let mut out = Vec::new();
    let mut current = stored;
    loop {
        let m = &current.manifest;
        if m.sequence <= 1 {
            if m.previous_sha256.is_some() {
                out.push(fail(format!(
                    "hash chain: {} is sequence 1 but records a previous manifest",
                    current.url
                )));
            } else {
                out.push(ok(format!(
                    "hash chain: intact back to the job's first manifest ({})",
                    m.run_id
                )));
            }
            return out;
        }
        let candidates: Vec<&Stored> = history
            .iter()
            .filter(|s| s.manifest.job == m.job && s.manifest.sequence == m.sequence - 1)
            .collect();
        let Some(expected) = &m.previous_sha256 else {
            out.push(fail(format!(
                "hash chain: {} (sequence {}) records no previous manifest",
                current.url, m.sequence
            )));
            return out;
        };
        match candidates.iter().find(|c| &c.sha256 == expected) {
            Some(prev) => current = prev,
            None => {
                out.push(fail(match candidates.first() {
                    Some(c) => format!(
                        "hash chain: {} does not match the sha256 that {} records for it (edited or replaced)",
                        c.url, current.url
                    ),
                    None => format!(
                        "hash chain: the manifest before {} (sequence {}) is missing",
                        current.url,
                        m.sequence - 1
                    ),
                }));
                return out;
            }
        }
    }
}

fn check_arithmetic(m: &Manifest) -> Vec<Check> {
    let mut out = Vec::new();
    let mut per_event: BTreeMap<&str, u64> = BTreeMap::new();
    for t in &m.tables {
        let mut bad = Vec::new();
        for f in &t.files {
            let after_rows = f.after.as_ref().map_or(0, |a| a.rows);
            let dropped = f.rows_removed.checked_add(f.rows_already_deleted);
            if dropped.and_then(|d| f.before.rows.checked_sub(d)) != Some(after_rows) {
                bad.push(format!(
                    "{}: {} - {} - {} already deleted != {}",
                    f.path, f.before.rows, f.rows_removed, f.rows_already_deleted, after_rows
                ));
            }
            for (e, n) in &f.per_event {
                *per_event.entry(e.as_str()).or_default() += n;
            }
        }
        let sum: u64 = t.files.iter().map(|f| f.rows_removed).sum();
        let rewritten = t.files.iter().filter(|f| f.after.is_some()).count() as u64;
        let deleted = t.files.len() as u64 - rewritten;
        if sum != t.rows_removed {
            bad.push(format!(
                "rows_removed {} != sum over files {sum}",
                t.rows_removed
            ));
        }
        if rewritten != t.files_rewritten || deleted != t.files_deleted {
            bad.push(format!(
                "files_rewritten/files_deleted {}/{} != files in the manifest {rewritten}/{deleted}",
                t.files_rewritten, t.files_deleted
            ));
        }
        out.push(if bad.is_empty() {
            ok(format!(
                "table {}: row arithmetic holds ({} rows removed)",
                t.name, t.rows_removed
            ))
        } else {
            fail(format!(
                "table {}: row arithmetic broken: {}",
                t.name,
                bad.join("; ")
            ))
        });
    }
    let recorded: BTreeMap<&str, u64> = m.per_event.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    out.push(if recorded == per_event {
        ok(format!(
            "per_event: {} events, sums match the files",
            recorded.len()
        ))
    } else {
        fail("per_event: counts differ from the sums over the files".into())
    });
    out
}

async fn check_file(
    loc: &Location,
    table: &str,
    table_location: &str,
    f: &manifest::FileRecord,
    later: &[&Stored],
) -> Result<Check> {
    let shown = format!("{}{}", loc.url, f.path);
    // The file's sha256 as it is now, streamed (a large file is never held whole).
    let current = current_sha(loc, &loc.child(&f.path), &shown).await?;
    // A later run that started from this run's result accounts for whatever is there now.
    let superseded_by = f.after.as_ref().and_then(|after| {
        later.iter().find(|s| {
            s.manifest.tables.iter().any(|t| {
                t.location == table_location
                    && t.files
                        .iter()
                        .any(|lf| lf.path == f.path && lf.before.sha256 == after.sha256)
            })
        })
    });
    Ok(match (&f.after, current) {
        (Some(after), Some(sha)) => {
            if sha == after.sha256 {
                ok(format!("table {table}: {} has its purged content", f.path))
            } else if sha == f.before.sha256 {
                fail(format!(
                    "table {table}: {shown} holds its PRE-PURGE content (restored from backup?)"
                ))
            } else if let Some(s) = superseded_by {
                ok(format!(
                    "table {table}: {} was rewritten again by run {}",
                    f.path, s.manifest.run_id
                ))
            } else {
                fail(format!(
                    "table {table}: {shown} changed since the purge and no later manifest accounts for it"
                ))
            }
        }
        (Some(_), None) => match superseded_by {
            Some(s) => ok(format!(
                "table {table}: {} was purged again by run {}",
                f.path, s.manifest.run_id
            )),
            None => fail(format!("table {table}: {shown} is missing")),
        },
        (None, None) => ok(format!("table {table}: {} stays deleted", f.path)),
        (None, Some(sha)) => {
            let restored = sha == f.before.sha256;
            fail(format!(
                "table {table}: {shown} was deleted by the purge but exists again{}",
                if restored {
                    " with its PRE-PURGE content"
                } else {
                    ""
                }
            ))
        }
    })
}

/// A file whose old versions the purge deleted: a read of each by version id finds nothing. A
/// version that can be read again is a FAIL naming the file and the version. Old versions kept
/// (`old_versions = "keep"`) are a warning line: they still hold erased rows.
async fn check_old_versions(
    loc: &Location,
    table: &str,
    file: &str,
    old: &manifest::OldVersionsRecord,
) -> Result<Vec<Check>> {
    let shown = format!("{}{file}", loc.url);
    let mut out = Vec::new();
    if old.remaining > 0 {
        out.push(ok(format!(
            "WARN table {table}: {shown}: {} old versions still hold erased rows \
             (old_versions = keep)",
            old.remaining
        )));
    }
    if !old.locked.is_empty() {
        let what: Vec<String> = old
            .locked
            .iter()
            .map(|l| match &l.retain_until {
                Some(until) => format!("{} ({} until {until})", l.version_id, l.mode),
                None => format!("{} ({})", l.version_id, l.mode),
            })
            .collect();
        out.push(ok(format!(
            "WARN table {table}: {shown}: {} old versions still hold erased rows, held by the \
             store under S3 Object Lock (deletion refused): {}",
            old.locked.len(),
            what.join(", ")
        )));
    }
    if old.deleted.is_empty() {
        return Ok(out);
    }
    let path = loc.child(file);
    let mut readable = Vec::new();
    for id in &old.deleted {
        let opts = object_store::GetOptions {
            version: Some(id.clone()),
            head: true,
            ..Default::default()
        };
        match loc.store.get_opts(&path, opts).await {
            Ok(_) => readable.push(id.clone()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(Error::store(format!("reading {shown} version {id}"), e));
            }
        }
    }
    out.push(if readable.is_empty() {
        ok(format!(
            "table {table}: {file}: the {} old versions deleted are gone",
            old.deleted.len()
        ))
    } else {
        fail(format!(
            "table {table}: {shown}: old versions recorded as deleted can still be read: {}",
            readable.join(", ")
        ))
    });
    Ok(out)
}

/// The sha256 of the object at `path` as it is now (streamed), or `None` if it is gone.
async fn current_sha(loc: &Location, path: &Path, shown: &str) -> Result<Option<String>> {
    crate::store::current_object(&loc.store, path)
        .await
        .map(|found| found.map(|(_, sha)| sha))
        .map_err(|e| Error::store(format!("reading {shown}"), e))
}

/// A file of a Delta table the purge removed from the table, and rewrote to `new_path` unless
/// every row went: with `old_files = "delete"` the old file is gone, and the new file has its
/// recorded content (a later run may have rewritten it in turn).
async fn check_delta_file(
    loc: &Location,
    t: &manifest::TableRecord,
    f: &manifest::FileRecord,
    later: &[&Stored],
) -> Result<Check> {
    let table = &t.name;
    let old_shown = format!("{}{}", loc.url, f.path);
    let delete_policy =
        manifest::DeltaRecord::of(t).is_some_and(|d| d.old_files == crate::spec::OldFiles::Delete);
    if delete_policy
        && current_sha(loc, &loc.child(&f.path), &old_shown)
            .await?
            .is_some()
    {
        return Ok(fail(format!(
            "table {table}: {old_shown} was removed by the purge commit (old_files = delete) but \
             is still there, with the erased rows"
        )));
    }
    let Some(new_path) = &f.new_path else {
        return Ok(ok(format!(
            "table {table}: {} (every row erased) is out of the table{}",
            f.path,
            if delete_policy {
                " and deleted"
            } else {
                "; kept until VACUUM (old_files = keep)"
            }
        )));
    };
    let shown = format!("{}{new_path}", loc.url);
    let after_sha = f.after.as_ref().map(|a| a.sha256.as_str());
    let superseded = later.iter().find(|s| {
        s.manifest.tables.iter().any(|lt| {
            lt.location == t.location
                && lt
                    .files
                    .iter()
                    .any(|lf| lf.path == *new_path && Some(lf.before.sha256.as_str()) == after_sha)
        })
    });
    Ok(
        match current_sha(loc, &loc.child(new_path), &shown).await? {
            Some(sha) if Some(sha.as_str()) == after_sha => ok(format!(
                "table {table}: {} was rewritten to {new_path}, which has its purged content",
                f.path
            )),
            _ if superseded.is_some() => ok(format!(
                "table {table}: {new_path} was purged again by a later run"
            )),
            Some(_) => fail(format!(
                "table {table}: {shown} changed since the purge and no later manifest accounts for it"
            )),
            None if delete_policy => fail(format!("table {table}: {shown} is missing")),
            None => ok(format!(
                "table {table}: {new_path} is no longer there (removed since, e.g. by VACUUM after a              later commit)"
            )),
        },
    )
}

/// A Delta table's commit: the log version the manifest names holds the run's transaction,
/// exactly the removes and adds of the manifest's files, and no subject id (the commit holds
/// nothing but paths, sizes, statistics and lakepurge's own metadata).
/// A Delta table's history still on disk that held erased rows: under `old_files = "delete"`
/// every file recorded is gone (one still there is a FAIL naming it); under `keep` their number
/// is a warning line (time travel still reads them).
async fn delta_history_check(
    loc: &Location,
    t: &manifest::TableRecord,
    d: &manifest::DeltaRecord,
) -> Result<Option<Check>> {
    let table = &t.name;
    if d.history_files.is_empty() {
        return Ok((d.history_files_scanned > 0).then(|| {
            ok(format!(
                "table {table}: {} history files on disk scanned, none holds an erased row",
                d.history_files_scanned
            ))
        }));
    }
    if d.history_files_deleted == 0 {
        return Ok(Some(ok(format!(
            "WARN table {table}: {} history files still hold erased rows (old_files = keep; \
             time travel reads them until VACUUM)",
            d.history_files_remaining
        ))));
    }
    let mut present = Vec::new();
    for f in &d.history_files {
        match loc.store.head(&loc.child(f)).await {
            Ok(_) => present.push(f.clone()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(Error::store(format!("checking {}{f}", loc.url), e)),
        }
    }
    Ok(Some(if present.is_empty() {
        ok(format!(
            "table {table}: the {} history files that held erased rows are gone",
            d.history_files.len()
        ))
    } else {
        fail(format!(
            "table {table}: history files recorded as deleted are still there: {}",
            present.join(", ")
        ))
    }))
}

/// A Delta table's own log files naming erased values in their statistics: under `old_log =
/// "expire"` no log file older than the checkpoint written remains (one is a FAIL naming it);
/// those still naming an erased value are a warning line (counts only).
async fn old_log_check(
    loc: &Location,
    t: &manifest::TableRecord,
    d: &manifest::DeltaRecord,
) -> Result<Vec<Check>> {
    let table = &t.name;
    let Some(o) = &d.old_log else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    if let Some(version) = o.expired_before {
        let older: Vec<String> = crate::table::delta::old_log::log_files(loc)
            .await?
            .into_iter()
            .filter(|f| f.version < version && f.kind != crate::table::LogFileKind::Sidecar)
            .map(|f| f.path)
            .collect();
        out.push(if older.is_empty() {
            ok(format!(
                "table {table}: the log before version {version} (whose statistics named erased \
                 values) is gone"
            ))
        } else {
            fail(format!(
                "table {table}: the log was expired before version {version}, yet these remain: \
                 {}",
                older.join(", ")
            ))
        });
    }
    if o.remaining_naming_erased > 0 {
        out.push(ok(format!(
            "WARN table {table}: at the end of the run, {} of the log's own files kept \
             statistics naming erased values (old_log = {}; they go with the log's retention, \
             or set old_log = \"expire\")",
            o.remaining_naming_erased,
            serde_json::to_value(o.policy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        )));
    }
    Ok(out)
}

/// The purge commit's entry is not in the log. The log's cleanup (its retention, or a later
/// run's `old_log = "expire"`) removes entries before a checkpoint: then the table's state
/// must still record the run's transaction (a checkpoint keeps every transaction), and the
/// entry itself can no longer be re-read (said so). Otherwise the commit is missing: a FAIL.
async fn missing_commit(
    loc: &Location,
    table: &str,
    d: &manifest::DeltaRecord,
    version: u64,
    shown: &str,
) -> Result<Check> {
    use crate::table::LogFileKind;
    let files = crate::table::delta::old_log::log_files(loc).await?;
    let cleaned = files
        .iter()
        .any(|f| f.kind == LogFileKind::Checkpoint && f.version >= version)
        && !files
            .iter()
            .any(|f| f.kind == LogFileKind::Entry && f.version <= version);
    if !cleaned {
        return Ok(fail(format!(
            "table {table}: the purge commit {shown} is missing from the log"
        )));
    }
    let recorded = crate::table::delta::transaction_version(loc, &d.app_id)
        .await
        .map_err(|e| Error::Delta {
            table: table.to_string(),
            context: format!("reading the log at {}", loc.url),
            source: Box::new(e),
        })?;
    Ok(match recorded {
        Some(_) => ok(format!(
            "table {table}: the log was cleaned up past version {version} (a later checkpoint); \
             the table's state still records the run's transaction {} (the commit's actions \
             can no longer be re-read)",
            d.app_id
        )),
        None => fail(format!(
            "table {table}: the purge commit {shown} is gone from the log and the table's state \
             does not record the run's transaction {}",
            d.app_id
        )),
    })
}

/// An Iceberg table's purge snapshot: a metadata file of the table (the newest first) lists
/// the snapshot the manifest names, with the run's key in its summary. Read from the table's
/// `metadata/` folder, so that no catalog is needed.
async fn iceberg_check(
    loc: &Location,
    t: &manifest::TableRecord,
    d: &manifest::DeltaRecord,
) -> Result<Check> {
    let table = &t.name;
    let Some(version) = d.version else {
        return Ok(ok(format!(
            "table {table}: Iceberg snapshot {} planned, nothing to commit",
            crate::table::iceberg::snapshot_id(d.read_version)
        )));
    };
    let id = crate::table::iceberg::snapshot_id(version);
    let folder = loc.child("metadata");
    let mut files: Vec<object_store::ObjectMeta> = loc
        .store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| Error::store(format!("listing {}metadata/", loc.url), e))?;
    files.retain(|m| m.location.as_ref().ends_with(".metadata.json"));
    files.sort_by(|a, b| b.location.cmp(&a.location));
    let mut newest = true;
    for m in &files {
        let shown = format!("{}{}", loc.url, loc.relative(&m.location));
        let bytes = loc
            .store
            .get(&m.location)
            .await
            .map_err(|e| Error::store(format!("reading {shown}"), e))?
            .bytes()
            .await
            .map_err(|e| Error::store(format!("reading {shown}"), e))?;
        let Ok(metadata) = serde_json::from_slice::<iceberg::spec::TableMetadata>(&bytes) else {
            return Ok(fail(format!(
                "table {table}: {shown} is not readable Iceberg table metadata"
            )));
        };
        if crate::table::iceberg::find_key(&metadata, &d.app_id) == Some(version) {
            return Ok(ok(format!(
                "table {table}: Iceberg snapshot {id} (overwrite, key {}) is in {}the table's \
                 metadata{}",
                d.app_id,
                if newest { "" } else { "an older file of " },
                if newest {
                    ""
                } else {
                    " (expired since by a later commit)"
                }
            )));
        }
        newest = false;
    }
    Ok(fail(format!(
        "table {table}: no metadata file of the table lists snapshot {id} with the run's key {}",
        d.app_id
    )))
}

/// With the job: the metadata the table's catalog names now lists only snapshots whose
/// manifest lists are there (a catalog rolled back to metadata from before the run's expiry
/// names snapshots whose files the run deleted, or still reads erased rows).
async fn iceberg_catalog_check(
    loc: &Location,
    spec: &crate::spec::TableSpec,
    t: &manifest::TableRecord,
    d: &manifest::DeltaRecord,
    later: &[&Stored],
) -> Result<Check> {
    let table = &spec.name;
    let base = spec.source.parent().unwrap_or(std::path::Path::new("."));
    let (uri, metadata) = match crate::table::iceberg::current_metadata(spec, base).await {
        Ok(got) => got,
        Err(Error::Store {
            context,
            source: object_store::Error::NotFound { .. },
        }) => {
            return Ok(fail(format!(
                "table {table}: the catalog names metadata that is gone ({context}): it was \
                 rolled back to metadata a purge's expiry deleted"
            )));
        }
        Err(e) => return Err(e),
    };
    let mut missing = Vec::new();
    for snapshot in metadata.snapshots() {
        let Some(rel) =
            crate::table::iceberg::relative(metadata.location(), snapshot.manifest_list())
        else {
            missing.push(snapshot.snapshot_id());
            continue;
        };
        match loc.store.head(&loc.child(&rel)).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => missing.push(snapshot.snapshot_id()),
            Err(e) => return Err(Error::store(format!("checking {}{rel}", loc.url), e)),
        }
    }
    // The purge snapshot is in the table, unless a later run's commit took it out.
    let purge_snapshot = d.version.map(crate::table::iceberg::snapshot_id);
    let later_commit = later.iter().any(|s| {
        s.manifest.tables.iter().any(|lt| {
            lt.location == t.location && lt.iceberg.as_ref().is_some_and(|i| i.version.is_some())
        })
    });
    if let Some(id) = purge_snapshot.filter(|id| metadata.snapshot_by_id(*id).is_none())
        && !later_commit
    {
        return Ok(fail(format!(
            "table {table}: the catalog's current metadata ({uri}) does not list the purge \
             snapshot {id}: the catalog was rolled back to metadata from before the purge"
        )));
    }
    Ok(if missing.is_empty() {
        ok(format!(
            "table {table}: the catalog's current metadata ({uri}) lists {} snapshots, each with \
             its manifest list",
            metadata.snapshots().len()
        ))
    } else {
        fail(format!(
            "table {table}: the catalog's current metadata ({uri}) lists snapshots whose manifest \
             lists are gone ({missing:?}): the catalog was rolled back to metadata from before \
             a purge's expiry"
        ))
    })
}

async fn delta_checks(
    loc: &Location,
    t: &manifest::TableRecord,
    d: &manifest::DeltaRecord,
) -> Result<Vec<Check>> {
    let table = &t.name;
    let Some(version) = d.version else {
        return Ok(vec![ok(format!(
            "table {table}: Delta log version {} planned, nothing to commit",
            d.read_version
        ))]);
    };
    let path = loc.child(&format!("_delta_log/{version:020}.json"));
    let shown = format!("{}_delta_log/{version:020}.json", loc.url);
    let bytes = match loc.store.get(&path).await {
        Ok(g) => g
            .bytes()
            .await
            .map_err(|e| Error::store(format!("reading {shown}"), e))?,
        Err(object_store::Error::NotFound { .. }) => {
            return Ok(vec![missing_commit(loc, table, d, version, &shown).await?]);
        }
        Err(e) => return Err(Error::store(format!("reading {shown}"), e)),
    };
    let found = crate::table::delta::commit::summarize(&bytes);
    let mut expected_removes: Vec<String> = t.files.iter().map(|f| f.path.clone()).collect();
    let mut expected_adds: Vec<String> =
        t.files.iter().filter_map(|f| f.new_path.clone()).collect();
    expected_removes.sort();
    expected_adds.sort();
    let mut out = Vec::new();
    out.push(
        if found.txn_app_ids.contains(&d.app_id)
            && found.removes == expected_removes
            && found.adds == expected_adds
        {
            ok(format!(
                "table {table}: Delta commit {version} is in the log with the run's transaction, \
             {} removes and {} adds as recorded",
                found.removes.len(),
                found.adds.len()
            ))
        } else {
            fail(format!(
                "table {table}: Delta log version {version} is not the purge commit the manifest \
             records (transaction {}: {}, removes {:?} vs {:?}, adds {:?} vs {:?})",
                d.app_id,
                found.txn_app_ids.contains(&d.app_id),
                found.removes,
                expected_removes,
                found.adds,
                expected_adds
            ))
        },
    );
    Ok(out)
}

/// Scans every file of one table for rows that still match, with the independent SQL matching
/// of [`deep`] (not the `plan` code that `purge` used).
async fn deep_table(
    table: &Table,
    events: &events::Events,
    held: &crate::holds::Held,
) -> Result<Check> {
    let name = &table.spec.name;
    if held.retains(&table.spec) {
        return Ok(ok(format!(
            "deep: table {name}: exempt (retain) at the run's start: searched and counted, \
             never changed; not checked"
        )));
    }
    let here = held.subjects_in(name).map(|s| &s.ids);
    let (remaining, files) = deep::remaining(table, events, here).await?;
    let kept = match here {
        Some(ids) if !ids.is_empty() => {
            format!("; rows of the {} subjects held there are kept", ids.len())
        }
        _ => String::new(),
    };
    Ok(if remaining.is_empty() {
        ok(format!(
            "deep: table {name}: no erased subject in {files} files (match columns scanned with \
             DataFusion, matched by SQL independently of purge){kept}"
        ))
    } else {
        let named: Vec<String> = remaining
            .iter()
            .map(|(rel, n)| format!("{}{rel} ({n} rows)", table.location.url))
            .collect();
        fail(format!(
            "deep: table {name}: erased subjects still present in {}",
            named.join(", ")
        ))
    })
}

/// `--deep`: the event snapshot of the manifest, then every table of the job, key columns only.
async fn deep(job: &Job, m: &Manifest) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    if job.name != m.job {
        out.push(fail(format!(
            "deep: the job spec is for job {} but the manifest is of job {}",
            job.name, m.job
        )));
        return Ok(out);
    }
    let events = match events::load_snapshot(job, Some(&m.events.files)).await {
        Ok(e) => e,
        Err(e) => {
            out.push(fail(format!(
                "deep: cannot re-read the event snapshot: {e}"
            )));
            return Ok(out);
        }
    };
    if events.digest != m.events.digest {
        out.push(fail(format!(
            "deep: the event snapshot's digest {} differs from the manifest's {}",
            events.digest, m.events.digest
        )));
        return Ok(out);
    }
    out.push(ok(format!(
        "deep: event snapshot re-read, {} events, digest matches",
        events.count()
    )));
    // The holds the run applied: its hold files, in force at its start.
    let dataset = match &m.holds {
        Some(h) => match crate::holds::load(job, Some(&h.files)).await {
            Ok(d) => d,
            // Holds read otherwise than the run read them would excuse other rows.
            Err(Error::Holds { message, .. }) => {
                out.push(fail(format!(
                    "deep: the run's hold dataset cannot be re-read as the run read it: {message}"
                )));
                return Ok(out);
            }
            Err(e) => return Err(e),
        },
        None => None,
    };
    let started = crate::spec::parse_time(&m.started_at).ok_or_else(|| Error::Manifest {
        path: m.run_id.clone(),
        message: format!("started_at {:?} is not a time", m.started_at),
    })?;
    let held = crate::holds::Held::new(job, dataset, started)?;
    let tables = match Table::open_all(job).await {
        Ok(tables) => tables,
        // A table whose log names files that are gone (an Iceberg catalog rolled back to
        // metadata a purge deleted): it cannot be scanned, which is a failure of the claim.
        Err(Error::Store {
            context,
            source: object_store::Error::NotFound { .. },
        }) => {
            out.push(fail(format!(
                "deep: a table cannot be read as its catalog or log names it ({context}): \
                 not found"
            )));
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    for table in tables {
        match deep_table(&table, &events, &held).await {
            Err(Error::Store {
                context,
                source: object_store::Error::NotFound { .. },
            }) => out.push(fail(format!(
                "deep: table {}: a file its log names is gone ({context})",
                table.spec.name
            ))),
            checked => out.push(checked?),
        }
    }
    Ok(out)
}
