//! The `purge` command: runs the stages for one job and run id.
//!
//! Everything is planned first (events read, every table's footers and key columns scanned), so
//! bad input fails with exit 2 before anything is written. Then each affected file is read
//! whole, matched again against exactly the bytes read (so the rewrite agrees with the version
//! it replaces), rewritten, and replaced or deleted conditionally on that version. A file that
//! changed meanwhile is read again and redone. The manifest is written last.
//!
//! Idempotence: a run id whose manifest exists is done (nothing happens, exit 0). A new run id
//! over the same events finds nothing left to erase and rewrites nothing.
//!
//! Hazards: a crash part-way leaves every file either original or fully purged, but the
//! counts of files done before the crash are not yet journaled; the rerun's manifest records
//! only what it did itself (issue #4 adds the run journal).

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::{ObjectStoreExt, path::Path};

use crate::commit::{self, ReadVersion};
use crate::error::{Error, Result};
use crate::events::{self, Events};
use crate::manifest::{self, Engine, EventsRecord, FileRecord, FileVersion, Manifest, TableRecord};
use crate::plan::{self, BytesReader, Matcher, Table, TablePlan};
use crate::rewrite;
use crate::spec::{Job, check_name};

/// How many times a file that a concurrent writer changed is read again and redone.
const CONFLICT_RETRIES: usize = 3;

/// What `purge` did.
#[derive(Debug)]
pub enum Outcome {
    /// The run id already has a manifest: nothing was done.
    AlreadyComplete(manifest::Stored),
    /// The run completed and wrote this manifest.
    Completed(manifest::Stored),
    /// Some tables failed; the others completed. No manifest was written.
    Failed { failures: Vec<(String, Error)> },
}

/// Injected time, so tests and manifests agree on what "now" is.
pub trait Clock: Send + Sync {
    fn now(&self) -> String;
}

/// The wall clock, in RFC 3339 UTC.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> String {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

/// Runs `purge` for `job` and `run_id`.
pub async fn purge(
    job: &Job,
    run_id: &str,
    clock: &dyn Clock,
    signing_key: Option<&ed25519_dalek::SigningKey>,
) -> Result<Outcome> {
    check_name("run id", run_id).map_err(Error::Usage)?;
    let folder = manifest::folder(job)?;
    if let Some(done) = manifest::read(&folder, &manifest::path(&folder, run_id)).await? {
        tracing::info!(run_id, "run already complete: nothing to do");
        return Ok(Outcome::AlreadyComplete(done));
    }
    let started_at = clock.now();
    let events = events::load(job).await?;
    let tables = Table::resolve_all(job)?;
    let plans = plan::plan_tables(&tables, &events).await?;

    let mut records = Vec::new();
    let mut failures = Vec::new();
    for (table, tplan) in tables.iter().zip(&plans) {
        match purge_table(table, tplan, &events).await {
            Ok(r) => records.push(r),
            Err(e) => {
                tracing::error!(table = %table.spec.name, error = %e, "table failed");
                failures.push((table.spec.name.clone(), e));
            }
        }
    }
    if !failures.is_empty() {
        return Ok(Outcome::Failed { failures });
    }

    let mut per_event: BTreeMap<String, u64> = BTreeMap::new();
    for t in &records {
        for (ev, n) in &t.per_event {
            *per_event
                .entry(events.event_ids[*ev as usize].clone())
                .or_default() += n;
        }
    }
    let history = manifest::all(&folder).await?;
    let previous = history.last();
    let manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        job: job.name.clone(),
        run_id: run_id.to_string(),
        status: "complete".into(),
        started_at,
        finished_at: clock.now(),
        engine: Engine {
            name: "lakepurge".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        spec_sha256: job.spec_sha256.clone(),
        previous_sha256: previous.map(|p| p.sha256.clone()),
        sequence: previous.map_or(1, |p| p.manifest.sequence + 1),
        events: EventsRecord {
            location: events.location.clone(),
            count: events.event_ids.len() as u64,
            skipped: events.skipped,
            rows: events.rows,
            max_requested_at: events.max_requested_at.clone(),
            digest: events.digest.clone(),
            files: events.files.clone(),
        },
        tables: records.into_iter().map(|t| t.record).collect(),
        per_event,
        signature: None,
    };
    let mut manifest = manifest;
    if let Some(key) = signing_key {
        manifest.sign(key);
    }
    let stored = manifest::write(&folder, &manifest).await?;
    tracing::info!(run_id, manifest = %stored.url, "run complete");
    Ok(Outcome::Completed(stored))
}

struct TableDone {
    record: TableRecord,
    per_event: BTreeMap<u32, u64>,
}

async fn purge_table(table: &Table, tplan: &TablePlan, events: &Events) -> Result<TableDone> {
    let matcher = Matcher::new(&table.spec, events);
    let mut record = TableRecord {
        name: table.spec.name.clone(),
        location: table.location.url.to_string(),
        files_listed: tplan.files_listed,
        files_pruned: tplan.files_pruned,
        files_rewritten: 0,
        files_deleted: 0,
        rows_removed: 0,
        ids_unconvertible: tplan.ids_unconvertible,
        files: Vec::new(),
    };
    let mut per_event: BTreeMap<u32, u64> = BTreeMap::new();
    for fp in tplan.files.iter().filter(|f| f.affected()) {
        let Some((file_record, file_events)) =
            purge_file(table, &matcher, &fp.location, &fp.path, events).await?
        else {
            continue;
        };
        record.rows_removed += file_record.rows_removed;
        if file_record.after.is_some() {
            record.files_rewritten += 1;
        } else {
            record.files_deleted += 1;
        }
        for (e, n) in file_events {
            *per_event.entry(e).or_default() += n;
        }
        record.files.push(file_record);
    }
    Ok(TableDone { record, per_event })
}

/// Purges one file; `None` if it no longer holds an erased row (or no longer exists).
async fn purge_file(
    table: &Table,
    matcher: &Matcher<'_>,
    location: &Path,
    rel: &str,
    events: &Events,
) -> Result<Option<(FileRecord, BTreeMap<u32, u64>)>> {
    let name = &table.spec.name;
    let store = &table.location.store;
    for attempt in 0..=CONFLICT_RETRIES {
        let got = match store.get(location).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => {
                tracing::warn!(table = %name, file = rel, "file deleted by another writer: skipped");
                return Ok(None);
            }
            Err(e) => return Err(Error::store(format!("reading {location}"), e)),
        };
        let read = ReadVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes: Bytes = got
            .bytes()
            .await
            .map_err(|e| Error::store(format!("reading {location}"), e))?;
        let fp = matcher
            .scan(
                BytesReader {
                    bytes: bytes.clone(),
                },
                name,
                rel,
            )
            .await?;
        if !fp.affected() {
            return Ok(None);
        }
        let before = FileVersion {
            size: bytes.len() as u64,
            sha256: manifest::sha256_hex(&bytes),
            rows: fp.rows,
            etag: read.e_tag.clone(),
        };
        let erased = fp.erased.clone();
        let shown = format!("{}{}", table.location.url, rel);
        let input = bytes.clone();
        let rewritten =
            tokio::task::spawn_blocking(move || rewrite::rewrite(input, &erased, &shown))
                .await
                .map_err(|e| Error::Internal(format!("rewriting {rel}: {e}")))??;
        let result = match &rewritten.bytes {
            Some(new) => commit::replace(store.as_ref(), location, new.clone(), &read)
                .await
                .map(|w| {
                    Some(FileVersion {
                        size: new.len() as u64,
                        sha256: manifest::sha256_hex(new),
                        rows: rewritten.rows,
                        etag: w.e_tag,
                    })
                }),
            None => commit::delete(store.as_ref(), location, &read)
                .await
                .map(|()| None),
        };
        match result {
            Ok(after) => {
                tracing::info!(
                    table = %name,
                    file = rel,
                    rows_removed = fp.rows_matched,
                    deleted = after.is_none(),
                    row_groups_copied = rewritten.row_groups_copied,
                    row_groups_rewritten = rewritten.row_groups_rewritten,
                    "file purged"
                );
                return Ok(Some((
                    FileRecord {
                        path: rel.to_string(),
                        rows_removed: fp.rows_matched,
                        before,
                        after,
                        per_event: fp
                            .per_event
                            .iter()
                            .map(|(e, n)| (events.event_ids[*e as usize].clone(), *n))
                            .collect(),
                    },
                    fp.per_event,
                )));
            }
            Err(Error::Conflict { .. }) if attempt < CONFLICT_RETRIES => {
                tracing::warn!(table = %name, file = rel, attempt, "file changed while purging: reading it again");
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict {
        path: location.to_string(),
    })
}
