//! Purging one file of a table: read it (whole, or by ranges when large), match its key
//! columns again against exactly the bytes read, rewrite it, journal the rewrite as pending,
//! replace or delete it conditionally on the version read, and journal it as done. A file that
//! changed meanwhile is read again and redone; one deleted meanwhile is recorded, never
//! recreated; transient storage errors are retried with backoff.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;

use super::{Attempt, budget::Budget};
use crate::commit::{self, ReadVersion};
use crate::error::{Error, Result};
use crate::journal::Entry;
use crate::manifest::{self, FileRecord, FileVersion};
use crate::plan::{self, BytesReader, FilePlan, Matcher, TablePlan};
use crate::rewrite;
use crate::spec::Action;
use crate::store::{self, RangedObject};
use crate::table::Table;

/// How many times a file that a concurrent writer changed is read again and redone.
const CONFLICT_RETRIES: usize = 3;
/// How many times a file is retried after a transient storage error, and the first backoff
/// (multiplied by 4 each time).
const STORE_RETRIES: u32 = 3;
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) async fn purge_table(
    table: &Table,
    tplan: &TablePlan,
    attempt: &Attempt<'_>,
    entries: &mut BTreeMap<(String, String), Entry>,
) -> Result<()> {
    use futures::StreamExt;
    let name = &table.spec.name;
    let mine = |path: &str| attempt.shard.is_none_or(|s| s.owns(name, path));
    store::clean_temporaries(&table.location, |target| mine(target)).await?;
    let matcher = Matcher::new(&table.spec, attempt.events);
    // Several files in flight at once (reads, rewrites on blocking threads, commits); each
    // task owns its journal entry and hands it back.
    let tasks = tplan
        .files
        .iter()
        .filter(|f| f.affected() && mine(&f.path))
        .map(|fp| {
            let key = (name.clone(), fp.path.clone());
            let entry = entries.remove(&key).unwrap_or_else(|| Entry {
                table: name.clone(),
                path: fp.path.clone(),
                ..Entry::default()
            });
            let matcher = &matcher;
            async move {
                let mut entry = entry;
                let need = Budget::need(fp, attempt.large_file);
                let result = match attempt.budget.reserve(need, &fp.path).await {
                    Ok(_reserved) => {
                        match purge_file_with_retries(table, matcher, fp, attempt, &mut entry).await
                        {
                            // Settled apart from the file's retries: a retry re-reads the
                            // file, which a commit already changed, and would skip them.
                            Ok(()) => super::versions::settle(table, attempt, &mut entry).await,
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                };
                (key, entry, result)
            }
        })
        .collect::<Vec<_>>();
    let mut results = futures::stream::iter(tasks).buffer_unordered(attempt.concurrency.max(1));
    let mut first_error = None;
    while let Some((key, entry, result)) = results.next().await {
        attempt.progress.inc(1);
        entries.insert(key, entry);
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn purge_file_with_retries(
    table: &Table,
    matcher: &Matcher<'_>,
    planned: &FilePlan,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    let mut retry = 0;
    loop {
        match purge_file(table, matcher, planned, attempt, entry).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && retry < STORE_RETRIES => {
                let wait = FIRST_BACKOFF * 4u32.pow(retry);
                tracing::warn!(table = %table.spec.name, file = %entry.path, error = %e, retry, ?wait, "transient storage error: retrying");
                tokio::time::sleep(wait).await;
                retry += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Rewrites a file into an upload in parts to its own path: the rewrite (on a blocking thread)
/// writes into a [`commit::PartWriter`], this task uploads each part as it comes. Returns the
/// rewrite, the new file's sha256 and size, and the upload, ready to complete; on any error the
/// upload is aborted.
async fn rewrite_in_parts<S: rewrite::Source + Send>(
    store: &dyn object_store::ObjectStore,
    location: &object_store::path::Path,
    input: S,
    erased: Vec<Vec<u32>>,
    mode: rewrite::Mode,
    shown: String,
) -> Result<(rewrite::Rewritten, (String, u64), commit::PartUpload)> {
    let mut upload = commit::PartUpload::start(store, location).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
    let shown_err = shown.clone();
    let rewriting = tokio::task::spawn_blocking(move || {
        let mut writer = commit::PartWriter::new(tx);
        let rewritten = rewrite::rewrite_to(input, &erased, &mode, &shown, &mut writer)?;
        let new_file = writer
            .finish()
            .map_err(|e| Error::Internal(format!("writing {shown}: {e}")))?;
        Ok::<_, Error>((rewritten, new_file))
    });
    let mut uploaded = Ok(());
    while let Some(part) = rx.recv().await {
        uploaded = upload.put(part).await;
        if uploaded.is_err() {
            break;
        }
    }
    drop(rx); // a writer still sending gets an error and stops
    let rewritten = rewriting
        .await
        .map_err(|e| Error::Internal(format!("rewriting {shown_err}: {e}")));
    match (uploaded, rewritten) {
        (Ok(()), Ok(Ok((rewritten, new_file)))) => Ok((rewritten, new_file, upload)),
        (Err(e), _) | (Ok(()), Err(e)) | (Ok(()), Ok(Err(e))) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// What rewriting a file gave: the rewrite, the new file's sha256 and size (none when every
/// row went), and the upload in parts to complete, if it went up in parts.
pub(super) type Rewrite = (
    rewrite::Rewritten,
    Option<(String, u64)>,
    Option<commit::PartUpload>,
);

/// How a file's new version is produced.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Output {
    /// Into memory, put in one request.
    Whole,
    /// Into an upload in parts, as it is written.
    InParts,
    /// Nothing: every row is erased (the file is deleted).
    Nothing,
}

/// Rewrites `input` on a blocking thread into `output`.
pub(super) async fn rewrite_file<S: rewrite::Source + Send>(
    input: S,
    store: &Arc<dyn object_store::ObjectStore>,
    location: &object_store::path::Path,
    erased: Vec<Vec<u32>>,
    mode: rewrite::Mode,
    shown: String,
    output: Output,
) -> Result<Rewrite> {
    if output == Output::Nothing {
        // Checked, not written: the rewrite of a file left with no rows writes nothing.
        let rewritten = tokio::task::spawn_blocking(move || {
            let rewritten = rewrite::rewrite_to(input, &erased, &mode, &shown, std::io::sink())?;
            if rewritten.rows > 0 {
                return Err(Error::Internal(format!(
                    "{shown}: planned to be emptied, but {} rows remain",
                    rewritten.rows
                )));
            }
            Ok(rewritten)
        })
        .await
        .map_err(|e| Error::Internal(format!("rewriting {location}: {e}")))??;
        return Ok((rewritten, None, None));
    }
    if output == Output::InParts {
        let (rewritten, new_file, upload) =
            rewrite_in_parts(store.as_ref(), location, input, erased, mode, shown).await?;
        return Ok((rewritten, Some(new_file), Some(upload)));
    }
    let failed = shown.clone();
    let (rewritten, new_file) = tokio::task::spawn_blocking(move || {
        let rewritten = rewrite::rewrite(input, &erased, &mode, &shown)?;
        let new_file = rewritten
            .bytes
            .as_deref()
            .map(|b| (manifest::sha256_hex(b), b.len() as u64));
        Ok::<_, Error>((rewritten, new_file))
    })
    .await
    .map_err(|e| Error::Internal(format!("rewriting {failed}: {e}")))??;
    Ok((rewritten, new_file, None))
}

/// The sha256 (hex) of the object version read, streamed: a file replaced meanwhile is a
/// conflict.
async fn sha256_of_object(object: &store::ObjectVersion) -> Result<String> {
    store::hash_object(object).await.map_err(|e| match e {
        object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. } => {
            Error::Conflict {
                path: object.location().to_string(),
            }
        }
        e => Error::store(format!("reading {}", object.location()), e),
    })
}

/// Purges one file, journaling before and after the commit. A file that changed while it
/// was purged is read again and redone, up to [`CONFLICT_RETRIES`] times.
async fn purge_file(
    table: &Table,
    matcher: &Matcher<'_>,
    planned: &FilePlan,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    for try_no in 0..=CONFLICT_RETRIES {
        let last = try_no == CONFLICT_RETRIES;
        match try_file(table, matcher, planned, attempt, entry, last).await {
            Ok(Try::Done) => return Ok(()),
            Ok(Try::Again) => {
                tracing::warn!(table = %table.spec.name, file = %entry.path, try_no, "file changed while purging: reading it again");
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict {
        path: planned.location.to_string(),
    })
}

/// What one try at a file came to.
enum Try {
    /// Purged, found with nothing to erase, or found deleted (journaled).
    Done,
    /// The file changed meanwhile: read it again.
    Again,
}

/// One try at a file: read the version there now, match it again unless it is the version the
/// plan read, rewrite it while hashing the original, then journal and commit. A conflict is
/// `Try::Again` unless this is the `last` try.
async fn try_file(
    table: &Table,
    matcher: &Matcher<'_>,
    planned: &FilePlan,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
    last: bool,
) -> Result<Try> {
    let again = |e: Error| match e {
        Error::Conflict { .. } if !last => Ok(Try::Again),
        e => Err(e),
    };
    // A large file is read by ranges, one row group at a time; the rest is read whole.
    let ranged = planned.size >= attempt.large_file;
    let store = &table.location.store;
    let Some((meta, whole)) = read_version(store, &planned.location, ranged).await? else {
        tracing::warn!(table = %table.spec.name, file = %entry.path, "file deleted by another writer: recorded, not recreated");
        entry.vanished = true;
        attempt.journal.put(entry).await?;
        return Ok(Try::Done);
    };
    let Some(fp) = matched_rows(table, matcher, planned, &meta, whole.as_ref()).await? else {
        return Ok(Try::Again);
    };
    if !fp.affected() {
        return Ok(Try::Done);
    }
    let rewrite = match rewrite_and_hash(table, attempt, &meta, whole, &fp).await {
        Ok(done) => done,
        Err(e) => return again(e),
    };
    match commit_file(table, attempt, entry, &meta, &fp, rewrite, ranged).await {
        Ok(()) => Ok(Try::Done),
        Err(e) => again(e),
    }
}

/// The version of the file there now: its metadata, and its bytes unless it is read by ranges;
/// `None` if it is gone.
async fn read_version(
    store: &Arc<dyn object_store::ObjectStore>,
    location: &object_store::path::Path,
    ranged: bool,
) -> Result<Option<(object_store::ObjectMeta, Option<Bytes>)>> {
    let got = if ranged {
        store.head(location).await.map(|meta| (meta, None))
    } else {
        match store.get(location).await {
            Ok(g) => {
                let meta = g.meta.clone();
                g.bytes().await.map(|b| (meta, Some(b)))
            }
            Err(e) => Err(e),
        }
    };
    match got {
        Ok(got) => Ok(Some(got)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::store(format!("reading {location}"), e)),
    }
}

/// The rows to erase in the version read: the plan's when it is the version the plan read;
/// otherwise (changed since, or a retry after a conflict) its key columns are read again.
/// `None` when it changed again while being read.
async fn matched_rows(
    table: &Table,
    matcher: &Matcher<'_>,
    planned: &FilePlan,
    meta: &object_store::ObjectMeta,
    whole: Option<&Bytes>,
) -> Result<Option<FilePlan>> {
    let (name, rel) = (&table.spec.name, &planned.path);
    if planned.etag.is_some() && planned.etag == meta.e_tag {
        return Ok(Some(planned.clone()));
    }
    if let Some(bytes) = whole {
        let reader = BytesReader {
            bytes: bytes.clone(),
        };
        return matcher.scan(reader, name, rel).await.map(Some);
    }
    let version = store::ObjectVersion::new(Arc::clone(&table.location.store), meta.clone());
    match matcher
        .scan(plan::StoreReader::new(version), name, rel)
        .await
    {
        Err(e) if e.is_conflict() => Ok(None),
        other => other.map(Some),
    }
}

/// The ids of the events whose subjects the file's erased rows matched, with their row counts
/// (read from the spilled event ids, off the async runtime).
pub(super) async fn event_names(
    attempt: &Attempt<'_>,
    fp: &FilePlan,
) -> Result<BTreeMap<String, u64>> {
    let (ids, counts) = (attempt.events.event_ids.clone(), fp.per_event.clone());
    tokio::task::spawn_blocking(move || ids.name_counts(&counts))
        .await
        .map_err(|e| Error::Internal(format!("naming the events of {}: {e}", fp.path)))?
}

/// What the table's rewrite does to matched rows, and whether it redacts (rows stay).
pub(super) fn rewrite_mode(table: &Table) -> (rewrite::Mode, bool) {
    match table.spec.action {
        Action::Redact => (rewrite::Mode::Redact(table.spec.redact.clone()), true),
        Action::Delete => (rewrite::Mode::Delete, false),
    }
}

/// A file rewritten, with the original's sha256 and the events its erased rows matched.
struct NewVersion {
    rewritten: rewrite::Rewritten,
    new_file: Option<(String, u64)>,
    upload: Option<commit::PartUpload>,
    before_sha: String,
    per_event: BTreeMap<String, u64>,
}

/// Rewrites the version read without the rows `fp` erases, hashing the original alongside
/// (CPU work runs off the async runtime). A large file goes up in parts while it is written
/// (see `commit`); the rest is written to memory; a file left with no rows is only checked.
async fn rewrite_and_hash(
    table: &Table,
    attempt: &Attempt<'_>,
    meta: &object_store::ObjectMeta,
    whole: Option<Bytes>,
    fp: &FilePlan,
) -> Result<NewVersion> {
    let (store, location, rel) = (&table.location.store, &meta.location, &fp.path);
    let per_event = event_names(attempt, fp).await?;
    let erased = fp.erased.clone();
    let shown = format!("{}{}", table.location.url, rel);
    let (mode, redacting) = rewrite_mode(table);
    let output = if !redacting && fp.rows_matched == fp.rows {
        Output::Nothing
    } else if meta.size >= attempt.large_file {
        Output::InParts
    } else {
        Output::Whole
    };
    let (before_sha, rewriting) = match whole {
        Some(bytes) => {
            let original = bytes.clone();
            let before_sha = tokio::task::spawn_blocking(move || {
                Ok::<_, Error>(manifest::sha256_hex(&original))
            });
            let rewriting = rewrite_file(bytes, store, location, erased, mode, shown, output).await;
            (before_sha, rewriting)
        }
        None => {
            let runtime = tokio::runtime::Handle::current();
            let version = store::ObjectVersion::new(Arc::clone(store), meta.clone());
            let object = RangedObject::new(version.clone(), runtime.clone());
            let before_sha =
                tokio::task::spawn_blocking(move || runtime.block_on(sha256_of_object(&version)));
            let rewriting =
                rewrite_file(object.clone(), store, location, erased, mode, shown, output)
                    .await
                    .map_err(|e| match object.failure() {
                        Some(
                            object_store::Error::Precondition { .. }
                            | object_store::Error::NotFound { .. },
                        ) => Error::Conflict {
                            path: location.to_string(),
                        },
                        // A storage error under a read, not corrupt data.
                        Some(failure) => Error::store(format!("reading {location}"), failure),
                        None => e,
                    });
            (before_sha, rewriting)
        }
    };
    let (rewritten, new_file, upload) = match rewriting {
        Ok(done) => done,
        Err(e) => {
            before_sha.abort();
            return Err(e);
        }
    };
    let before_sha = match before_sha.await {
        Ok(Ok(sha)) => sha,
        Ok(Err(e)) => {
            if let Some(upload) = upload {
                upload.abort().await;
            }
            return Err(e);
        }
        Err(e) => return Err(Error::Internal(format!("hashing {rel}: {e}"))),
    };
    Ok(NewVersion {
        rewritten,
        new_file,
        upload,
        before_sha,
        per_event,
    })
}

/// The log line of a purged file: what was removed and how much of it was copied.
fn log_purged(table: &Table, record: &FileRecord, w: &rewrite::Rewritten, ranged: bool) {
    tracing::info!(
        table = %table.spec.name,
        file = %record.path,
        rows_removed = record.rows_removed,
        deleted = record.after.is_none(),
        row_groups_copied = w.row_groups_copied,
        row_groups_rewritten = w.row_groups_rewritten,
        chunks_spliced = w.chunks_spliced,
        pages_copied = w.pages_copied,
        pages_rewritten = w.pages_rewritten,
        read_by_ranges = ranged,
        "file purged"
    );
}

/// Journals the rewrite as pending, replaces or deletes the file conditionally on the version
/// read, and journals it as done. A conflict is journaled as not pending and returned.
async fn commit_file(
    table: &Table,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
    meta: &object_store::ObjectMeta,
    fp: &FilePlan,
    r: NewVersion,
    ranged: bool,
) -> Result<()> {
    let (store, location) = (&table.location.store, &meta.location);
    let redacting = table.spec.action == Action::Redact;
    let read = ReadVersion {
        e_tag: meta.e_tag.clone(),
        version: meta.version.clone(),
    };
    let mut record = FileRecord {
        path: fp.path.clone(),
        new_path: None,
        rows_removed: if redacting { 0 } else { fp.rows_matched },
        rows_redacted: if redacting { fp.rows_matched } else { 0 },
        rows_already_deleted: 0,
        before: FileVersion {
            size: meta.size,
            sha256: r.before_sha,
            rows: fp.rows,
            etag: read.e_tag.clone(),
            version: read.version.clone(),
        },
        after: r.new_file.map(|(sha256, size)| FileVersion {
            size,
            sha256,
            rows: r.rewritten.rows,
            etag: None,
            version: None,
        }),
        per_event: r.per_event,
        old_versions: None,
    };
    entry.pending = Some(record.clone());
    if let Err(e) = attempt.journal.put(entry).await {
        if let Some(upload) = r.upload {
            upload.abort().await;
        }
        return Err(e);
    }
    attempt.crash_if(
        &attempt.intents,
        attempt.failpoint.after_intent,
        "after_intent",
    );
    let result = match (r.upload, &r.rewritten.bytes) {
        (Some(upload), _) => upload.complete_if(store.as_ref(), &read).await.map(Some),
        (None, Some(new)) => commit::replace(store.as_ref(), location, new.clone(), &read)
            .await
            .map(Some),
        (None, None) => commit::delete(store.as_ref(), location, &read)
            .await
            .map(|()| None),
    };
    let written = match result {
        Ok(written) => written,
        // The outcome is not known: a lost response (a retried conditional put then answers
        // 412), a timeout, an error completing an upload. Look before anything is redone.
        Err(e) => match committed(table, location, &record).await {
            Ok(Some(found)) => {
                tracing::warn!(table = %table.spec.name, file = %entry.path, error = %e, "the store reported an error, but the file holds this run's new version: the commit happened");
                record = found;
                None
            }
            Ok(None) => {
                // Not committed (and it never will be: a later landing of the write is
                // conditional on the version read, which a redo finds and reads again).
                entry.pending = None;
                attempt.journal.put(entry).await?;
                return Err(e);
            }
            Err(look) => {
                tracing::error!(table = %table.spec.name, file = %entry.path, error = %look, "could not look up whether the commit happened: left pending for the next attempt");
                return Err(e);
            }
        },
    };
    attempt.crash_if(
        &attempt.commits,
        attempt.failpoint.after_commit,
        "after_commit",
    );
    if let (Some(a), Some(w)) = (record.after.as_mut(), written) {
        a.etag = w.e_tag;
        a.version = w.version;
    }
    log_purged(table, &record, &r.rewritten, ranged);
    entry.pending = None;
    entry.done.push(record);
    attempt.journal.put(entry).await
}

/// Whether the rewrite `pending` (of the file at `path`) committed, looked up at the store: the
/// object holds its new bytes (the record, with the object's etag and version), or is gone
/// when the rewrite deleted it; or, on a versioned bucket, the version right after the one read
/// is the rewrite's although another writer replaced the key since. `None` when it did not.
pub(super) async fn committed(
    table: &Table,
    path: &object_store::path::Path,
    pending: &FileRecord,
) -> Result<Option<FileRecord>> {
    let current = store::current_object(&table.location.store, path)
        .await
        .map_err(|e| Error::store(format!("reading {path}"), e))?;
    let found = match (&pending.after, current) {
        (Some(after), Some((meta, sha))) if sha == after.sha256 => {
            let mut record = pending.clone();
            if let Some(a) = record.after.as_mut() {
                a.etag = meta.e_tag;
                a.version = meta.version;
            }
            Some(record)
        }
        (None, None) => Some(pending.clone()),
        _ => super::versions::committed_before_a_newer_write(table, path, pending)
            .await?
            .map(|version| {
                let mut record = pending.clone();
                if let Some(a) = record.after.as_mut() {
                    a.version = version;
                }
                record
            }),
    };
    Ok(found)
}
