//! Purging a table with a log (Delta, see [`crate::table::Log`]): each affected file of the
//! log's current snapshot is rewritten (the same Parquet-level rewrite as plain tables) to a
//! new path next to it, then all of the table's changes are committed as one version with the
//! run's idempotency key, then, with `old_files = "delete"`, the files the commit removed are
//! deleted, and the table's history still on disk is scanned and settled.
//!
//! Crash safety, through the run journal's entry for the table's log: the changes are journaled
//! before the commit; an attempt that finds them looks for the run's key in the log and, if it
//! is there, only finishes the deletions; if not, it plans again from the current snapshot and
//! commits anew (the new files' names depend on the run and the old path only, so they are
//! written again in place of any a crash left behind, which no snapshot names). A conflicting
//! commit by another writer (it removed a file this purge read) means planning again from the
//! new version, up to [`CONFLICT_RETRIES`] times.

use std::collections::BTreeMap;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use parquet::file::metadata::ParquetMetaDataReader;

use super::Attempt;
use super::budget::Budget;
use super::file::{Output, event_names, rewrite_file, rewrite_mode};
use super::versions;
use crate::error::{Error, Result};
use crate::journal::{DeltaCommit, Entry};
use crate::manifest::{self, FileRecord, FileVersion, OldLogRecord};
use crate::plan::{self, FilePlan, TablePlan};
use crate::spec::{OldFiles, OldLog};
use crate::table::{
    Changes, Committed, DataFile, Log, LogFileKind, NewFile, Replacement, Snapshot, Table,
};

/// How many times the table is planned again after a conflicting commit.
const CONFLICT_RETRIES: usize = 3;

pub(super) async fn purge_table(
    table: &Table,
    log: &dyn Log,
    tplan: &TablePlan,
    attempt: &Attempt<'_>,
    entries: &mut BTreeMap<(String, String), Entry>,
) -> Result<()> {
    if let Some(shard) = attempt.shard {
        tracing::info!(table = %table.spec.name, %shard, "a table with a log: purged by the final unsharded run, in one commit");
        return Ok(());
    }
    let key = (table.spec.name.clone(), log.entry().to_string());
    let mut entry = entries.remove(&key).unwrap_or_else(|| Entry {
        table: table.spec.name.clone(),
        path: log.entry().into(),
        ..Entry::default()
    });
    // The history is scanned before any file is deleted: releasing the commit's removed files
    // (expiring the Iceberg snapshots that read them) can leave older files no snapshot names.
    let mut result = purge(table, log, tplan, attempt, &mut entry).await;
    if result.is_ok() {
        result = scan_history(table, log, attempt, &mut entry).await;
    }
    if result.is_ok() {
        result = delete_old_files(table, log, attempt, &mut entry).await;
    }
    if result.is_ok() {
        result = settle_history(table, log, attempt, &mut entry).await;
    }
    if result.is_ok() && log.keeps_statistics() {
        result = settle_log(table, log, attempt, &mut entry).await;
    }
    entries.insert(key, entry);
    result
}

/// The table's history still on disk (see [`Log::history`]): each file is scanned like
/// a current one; those holding an erased row are journaled. Runs after the run's commit and
/// before any file is deleted, once per run.
async fn scan_history(
    table: &Table,
    log: &dyn Log,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    if entry.history.is_none() {
        let snapshot = log.snapshot(table).await?;
        // The files the run's own commit removed are counted as its old files.
        let own: std::collections::BTreeSet<String> = entry
            .delta
            .iter()
            .flat_map(|c| c.removed.iter().cloned())
            .collect();
        let candidates = log.history(table, &snapshot, &own).await?;
        let mut history = crate::journal::DeltaHistory {
            scanned: candidates.len() as u64,
            ..Default::default()
        };
        for meta in candidates {
            let mut found = TablePlan::unscanned(table, None);
            match plan::plan_files(table, attempt.events, vec![meta.clone()], &mut found).await {
                Ok(()) => history
                    .files
                    .extend(found.files.iter().map(|f| f.path.clone())),
                Err(e) if e.exit_code() == 2 => {
                    tracing::warn!(table = %table.spec.name, file = %meta.location, error = %e, "a file of the table's history is not readable Parquet: left alone");
                    history.unreadable += 1;
                }
                Err(e) => return Err(e),
            }
        }
        history.files.sort();
        tracing::info!(table = %table.spec.name, scanned = history.scanned, holding_erased_rows = history.files.len(), "scanned the table's history still on disk");
        entry.history = Some(history);
        attempt.journal.put(entry).await?;
    }
    Ok(())
}

/// The history files [`scan_history`] found holding an erased row: under `old_files =
/// "delete"`, deleted once what the table's older versions need of them is released (Delta:
/// time travel to the versions that name them then fails for them, which is the point;
/// Iceberg: the snapshots that read them are expired), or, under `keep`, counted.
async fn settle_history(
    table: &Table,
    log: &dyn Log,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    if entry.history.as_ref().is_some_and(|h| h.deleted) {
        return Ok(());
    }
    let delete = table.spec.old_files.unwrap_or_default() == OldFiles::Delete;
    let Some(history) = entry.history.as_mut() else {
        return Ok(());
    };
    if history.files.is_empty() {
        return Ok(());
    }
    let files = history.files.clone();
    release(table, log, attempt, entry, &files, delete, |e| {
        e.history.as_mut().map(|h| &mut h.released)
    })
    .await?;
    if !delete {
        return Ok(());
    }
    let versioned = attempt.versioned.get(&table.spec.name);
    let files = entry
        .history
        .as_ref()
        .map(|h| h.files.clone())
        .unwrap_or_default();
    for path in files {
        let settled = |e: &Entry| {
            e.history
                .as_ref()
                .and_then(|h| h.old_versions.get(&path))
                .is_some_and(|o| !o.pending)
        };
        if settled(entry) {
            continue;
        }
        table
            .delete_file(&path, "history holding erased rows")
            .await?;
        let Some(v) = versioned else {
            continue;
        };
        // Its noncurrent versions hold the same rows: recorded (journaled) before any is
        // deleted, like a removed file's.
        let location = table.location.child(&path);
        let Some(history) = entry.history.as_mut() else {
            break;
        };
        if !history.old_versions.contains_key(&path) {
            let decided = versions::decide_all(v, &location).await?;
            history.old_versions.insert(path.clone(), decided);
            attempt.journal.put(entry).await?;
        }
        if let Some(old) = entry
            .history
            .as_mut()
            .and_then(|h| h.old_versions.get_mut(&path))
        {
            versions::delete_all_pending(v, &location, old).await?;
        }
        attempt.journal.put(entry).await?;
    }
    if let Some(history) = entry.history.as_mut() {
        tracing::info!(table = %table.spec.name, files = history.files.len(), "deleted the history files that held erased rows");
        history.deleted = true;
    }
    attempt.journal.put(entry).await
}

/// The log's own files, scanned for data-file statistics naming an erased value (counted,
/// never shown) and journaled; under `old_log = "expire"`, when any does, the log is summed
/// up in a checkpoint and its files before it removed (time travel before it ends), then
/// scanned again. Once per run (a resumed run finishes an expiry left undone).
async fn settle_log(
    table: &Table,
    log: &dyn Log,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    let policy = table.spec.old_log.unwrap_or_default();
    let matcher = crate::plan::Matcher::new(&table.spec, attempt.events);
    if entry.old_log.is_none() {
        let mut record = scan_log(table, log, &matcher).await?;
        record.policy = policy;
        record.remaining_naming_erased = record.naming_erased();
        tracing::info!(table = %table.spec.name, scanned = record.files_scanned, naming_erased_values = record.naming_erased(), "scanned the log's own files for statistics naming erased values");
        entry.old_log = Some(record);
        attempt.journal.put(entry).await?;
    }
    let Some(record) = entry.old_log.as_mut() else {
        return Ok(());
    };
    if policy != OldLog::Expire || record.naming_erased() == 0 || record.expired_before.is_some() {
        return Ok(());
    }
    let version = log.expire(table).await?;
    let after = scan_log(table, log, &matcher).await?;
    record.expired_before = Some(version);
    record.remaining_naming_erased = after.naming_erased();
    attempt.journal.put(entry).await
}

/// Counts the log's files whose statistics name an erased value under one of the table's
/// rules. Statistics are compared as text (a number's digits, a string as it is), the way
/// subject ids are given.
async fn scan_log(
    table: &Table,
    log: &dyn Log,
    matcher: &crate::plan::Matcher<'_>,
) -> Result<OldLogRecord> {
    let schema = stats_schema(&table.spec, key_schema(table, log).await?.as_ref());
    let matcher = matcher.for_schema(&schema);
    let mut record = OldLogRecord::default();
    for file in log.log_files(table).await? {
        let stats = log.statistics(table, &file).await?;
        record.files_scanned += 1;
        let bounds: Vec<&serde_json::Value> = stats
            .iter()
            .flat_map(|s| [&s["minValues"], &s["maxValues"]])
            .filter(|v| v.is_object())
            .collect();
        if bounds.is_empty() {
            continue;
        }
        let shown = format!("{}{}", table.location.url, file.path);
        let mut decoder = arrow::json::ReaderBuilder::new(std::sync::Arc::new(schema.clone()))
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| Error::arrow(format!("reading the statistics in {shown}"), e))?;
        let mut named = 0;
        for chunk in bounds.chunks(8192) {
            decoder
                .serialize(chunk)
                .map_err(|e| Error::arrow(format!("reading the statistics in {shown}"), e))?;
            if let Some(batch) = decoder
                .flush()
                .map_err(|e| Error::arrow(format!("reading the statistics in {shown}"), e))?
            {
                named += matcher.count_matches(&batch, &shown)?;
            }
        }
        if named > 0 {
            match file.kind {
                LogFileKind::Entry => record.entries_naming_erased += 1,
                LogFileKind::Checkpoint | LogFileKind::Sidecar => {
                    record.checkpoints_naming_erased += 1;
                }
                LogFileKind::Checksum => record.checksums_naming_erased += 1,
            }
        }
    }
    Ok(record)
}

/// The Arrow schema of a current file of the table (the key columns' types), if it has one.
async fn key_schema(table: &Table, log: &dyn Log) -> Result<Option<arrow::datatypes::Schema>> {
    use parquet::arrow::async_reader::AsyncFileReader;
    let snapshot = log.snapshot(table).await?;
    let Some(file) = snapshot.files.first() else {
        return Ok(None);
    };
    let mut reader = crate::plan::StoreReader::new(crate::store::ObjectVersion::new(
        table.location.store.clone(),
        file.meta.clone(),
    ));
    let metadata = reader.get_metadata(None).await.map_err(|e| {
        crate::plan::read_error(
            &table.spec.name,
            &file.path,
            "not a readable Parquet file",
            e,
        )
    })?;
    Ok(crate::plan::arrow_schema(&metadata).ok())
}

/// The type of the leaf at `path` in `schema` (through structs and lists), as statistics
/// hold it: a dictionary's values, a view as its plain kind; text when unknown.
fn leaf_type(
    schema: Option<&arrow::datatypes::Schema>,
    path: &[String],
) -> arrow::datatypes::DataType {
    use arrow::datatypes::DataType;
    let Some(schema) = schema else {
        return DataType::Utf8;
    };
    let Some((first, rest)) = path.split_first() else {
        return DataType::Utf8;
    };
    let Ok(field) = schema.field_with_name(first) else {
        return DataType::Utf8;
    };
    let mut ty = field.data_type().clone();
    for part in rest {
        while let DataType::List(f) | DataType::LargeList(f) = &ty {
            ty = f.data_type().clone();
        }
        ty = match &ty {
            DataType::Struct(fields) => match fields.iter().find(|f| f.name() == part) {
                Some(f) => f.data_type().clone(),
                None => return DataType::Utf8,
            },
            _ => return DataType::Utf8,
        };
    }
    match ty {
        DataType::Dictionary(_, values) => *values,
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        t if t.is_primitive() => t,
        DataType::Utf8 => DataType::Utf8,
        _ => DataType::Utf8,
    }
}

/// The schema statistics are read with: every rule's key path, each leaf of its type in the
/// table's files (`schema`), so a subject id is converted to it as for the rows (lists have no
/// statistics).
fn stats_schema(
    spec: &crate::spec::TableSpec,
    schema: Option<&arrow::datatypes::Schema>,
) -> arrow::datatypes::Schema {
    use arrow::datatypes::{DataType, Field, Fields};
    fn insert(fields: &mut Vec<Field>, path: &[String], leaf: DataType) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let at = fields.iter().position(|f| f.name() == first);
        if rest.is_empty() {
            if at.is_none() {
                fields.push(Field::new(first, leaf, true));
            }
            return;
        }
        let mut children: Vec<Field> = match at.map(|i| fields[i].data_type().clone()) {
            Some(DataType::Struct(c)) => c.iter().map(|f| f.as_ref().clone()).collect(),
            _ => Vec::new(),
        };
        insert(&mut children, rest, leaf);
        let field = Field::new(first, DataType::Struct(Fields::from(children)), true);
        match at {
            Some(i) => fields[i] = field,
            None => fields.push(field),
        }
    }
    let mut fields = Vec::new();
    for rule in &spec.matches {
        for path in rule.key_paths() {
            let leaf = leaf_type(schema, &path);
            insert(&mut fields, &path, leaf);
        }
    }
    arrow::datatypes::Schema::new(fields)
}

async fn purge(
    table: &Table,
    log: &dyn Log,
    tplan: &TablePlan,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    let app_id = log.key(&attempt.run.job, &attempt.run.run_id);
    let mut snapshot = log.snapshot(table).await?;
    settle_earlier_commit(table, log, &snapshot, &app_id, attempt, entry).await?;
    if entry.delta.as_ref().is_some_and(|c| c.version.is_some()) {
        return Ok(());
    }
    let mut replanned;
    let mut tplan = tplan;
    for try_no in 0..=CONFLICT_RETRIES {
        if tplan.delta_version != Some(snapshot.version) {
            replanned = plan::plan_table(table, attempt.events, None).await?;
            tplan = &replanned;
            if tplan.delta_version != Some(snapshot.version) {
                snapshot = log.snapshot(table).await?;
                continue;
            }
        }
        if tplan.files.is_empty() {
            return Ok(());
        }
        let (files, changes) =
            rewrite_files(table, log, tplan, &snapshot, attempt, &app_id).await?;
        entry.delta = Some(DeltaCommit {
            app_id: app_id.clone(),
            read_version: snapshot.version,
            version: None,
            removed: files.iter().map(|f| f.path.clone()).collect(),
            old_files_deleted: 0,
            marks: files
                .iter()
                .filter_map(|f| snapshot.file(&f.path)?.hidden_by.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            files: files.clone(),
            released: None,
        });
        attempt.journal.put(entry).await?;
        attempt.crash_if(
            &attempt.intents,
            attempt.failpoint.after_intent,
            "after_intent",
        );
        let committed = match log.commit(table, &snapshot, changes).await {
            Ok(Committed::Version(version)) => Some(version),
            // A conflict, or an error, may hide the run's own commit (its response lost, the
            // retried put found the version taken, by this very commit): the log tells.
            Ok(Committed::Conflict(why)) => {
                tracing::warn!(table = %table.spec.name, try_no, conflict = %why, "a commit conflicts: looking for the run's transaction in the log");
                snapshot = log.snapshot(table).await?;
                log.find(table, &snapshot, &app_id, entry_read_version(entry))
                    .await?
            }
            Err(e) => {
                let fresh = log.snapshot(table).await?;
                match log
                    .find(table, &fresh, &app_id, entry_read_version(entry))
                    .await?
                {
                    Some(version) => Some(version),
                    None => return Err(e),
                }
            }
        };
        match committed {
            Some(version) => {
                attempt.crash_if(
                    &attempt.commits,
                    attempt.failpoint.after_commit,
                    "after_commit",
                );
                tracing::info!(table = %table.spec.name, version, files = files.len(), "commit made");
                if let Some(c) = entry.delta.as_mut() {
                    c.version = Some(version);
                }
                entry.done = files;
                attempt.journal.put(entry).await?;
                return Ok(());
            }
            None => {
                tracing::warn!(table = %table.spec.name, try_no, "another writer's commit conflicts: planning the table again");
                delete_unreferenced(table, &files).await;
                entry.delta = None;
                attempt.journal.put(entry).await?;
            }
        }
    }
    Err(Error::Conflict {
        path: format!("{}{}/", table.location.url, log.entry()),
    })
}

/// The log version the journaled commit of `entry` was planned on.
fn entry_read_version(entry: &Entry) -> u64 {
    entry.delta.as_ref().map_or(0, |c| c.read_version)
}

/// An earlier attempt journaled a commit: if the run's transaction is in the log, it was made
/// (the entry is completed); if not, it never will be and is forgotten (planned anew).
async fn settle_earlier_commit(
    table: &Table,
    log: &dyn Log,
    snapshot: &Snapshot,
    app_id: &str,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    let Some(pending) = entry.delta.as_mut().filter(|c| c.version.is_none()) else {
        return Ok(());
    };
    let found = log
        .find(table, snapshot, app_id, pending.read_version)
        .await?;
    tracing::info!(table = %table.spec.name, committed = found.is_some(), "resolved a commit left pending by an earlier attempt");
    match found {
        Some(version) => {
            pending.version = Some(version);
            entry.done = pending.files.clone();
        }
        None => {
            // The files it wrote are in no snapshot: deleted, not left for VACUUM.
            delete_unreferenced(table, &pending.files).await;
            entry.delta = None;
        }
    }
    attempt.journal.put(entry).await
}

/// Rewrites every affected file of the plan to its new path, several at once; returns their
/// manifest records and the commit's changes.
async fn rewrite_files(
    table: &Table,
    log: &dyn Log,
    tplan: &TablePlan,
    snapshot: &Snapshot,
    attempt: &Attempt<'_>,
    key: &str,
) -> Result<(Vec<FileRecord>, Changes)> {
    use futures::{StreamExt, TryStreamExt};
    let tasks = tplan
        .files
        .iter()
        .filter(|f| f.affected())
        .map(|fp| async move {
            let old = snapshot.file(&fp.path).ok_or_else(|| {
                Error::Internal(format!(
                    "table {}: planned file {} is not in version {} of the log",
                    table.spec.name, fp.path, snapshot.version
                ))
            })?;
            let _reserved = attempt
                .budget
                .reserve(Budget::need(fp, u64::MAX), &fp.path)
                .await?;
            rewrite_one(table, log, fp, old, attempt).await
        });
    let done: Vec<(FileRecord, Replacement)> = futures::stream::iter(tasks)
        .buffered(attempt.concurrency.max(1))
        .try_collect()
        .await?;
    let mut changes = Changes {
        replaced: Vec::with_capacity(done.len()),
        key: key.to_string(),
        job: attempt.run.job.clone(),
        run_id: attempt.run.run_id.clone(),
        manifest: attempt.run.manifest.clone(),
    };
    let mut records = Vec::with_capacity(done.len());
    for (record, replaced) in done {
        changes.replaced.push(replaced);
        records.push(record);
    }
    Ok((records, changes))
}

/// Rewrites one file to its new path: returns its record and its replacement (no new file
/// when every row went).
async fn rewrite_one(
    table: &Table,
    log: &dyn Log,
    fp: &FilePlan,
    old: &DataFile,
    attempt: &Attempt<'_>,
) -> Result<(FileRecord, Replacement)> {
    let store = &table.location.store;
    let shown = format!("{}{}", table.location.url, fp.path);
    if old.meta.size >= attempt.large_file && old.hidden_rows.is_none() {
        return rewrite_in_parts(table, log, fp, old, attempt).await;
    }
    let bytes = read_whole(table, old, &shown).await?;
    let per_event = event_names(attempt, fp).await?;
    let (mode, redacting) = rewrite_mode(table);
    // Rows the log already marks deleted go with the erased ones: the new file has no mark.
    let (erased, already_deleted) = match &old.hidden_rows {
        Some(hidden) => with_hidden_rows(&bytes, &fp.erased, hidden, &shown)?,
        None => (fp.erased.clone(), 0),
    };
    let output = if !redacting && fp.rows_matched + already_deleted == fp.rows {
        Output::Nothing
    } else {
        Output::Whole
    };
    let before_sha = manifest::sha256_hex(&bytes);
    let new_rel = log.new_path(&fp.path, &attempt.run.run_id);
    let new_location = table.location.child(&new_rel);
    let (rewritten, new_file, _) = rewrite_file(
        bytes,
        store,
        &new_location,
        erased,
        mode,
        shown.clone(),
        output,
    )
    .await?;
    let mut replacement = Replacement {
        old: fp.path.clone(),
        new: None,
    };
    let after = match (&rewritten.bytes, new_file) {
        (Some(new), Some((sha256, size))) => {
            let footer = ParquetMetaDataReader::new()
                .parse_and_finish(new)
                .map_err(|e| Error::parquet(format!("{shown} (rewritten)"), e))?;
            store
                .put(&new_location, new.clone().into())
                .await
                .map_err(|e| Error::store(format!("writing {}{new_rel}", table.location.url), e))?;
            let (file, version) = written(&new_rel, (size, sha256), rewritten.rows, footer.into());
            replacement.new = Some(file);
            Some(version)
        }
        _ => None,
    };
    let new_path = after.as_ref().map(|_| new_rel);
    let record = file_record(fp, old, new_path, (before_sha, after), per_event, redacting);
    Ok((
        FileRecord {
            rows_already_deleted: already_deleted,
            ..record
        },
        replacement,
    ))
}

/// [`rewrite_one`] for a large file: read by ranges and written to its new path in parts as
/// it is rewritten (neither held whole in memory); the new file's footer is read back for its
/// statistics.
async fn rewrite_in_parts(
    table: &Table,
    log: &dyn Log,
    fp: &FilePlan,
    old: &DataFile,
    attempt: &Attempt<'_>,
) -> Result<(FileRecord, Replacement)> {
    use parquet::arrow::async_reader::AsyncFileReader;
    let store = &table.location.store;
    let shown = format!("{}{}", table.location.url, fp.path);
    let per_event = event_names(attempt, fp).await?;
    let (mode, redacting) = rewrite_mode(table);
    let output = if !redacting && fp.rows_matched == fp.rows {
        Output::Nothing
    } else {
        Output::InParts
    };
    let new_rel = log.new_path(&fp.path, &attempt.run.run_id);
    let new_location = table.location.child(&new_rel);
    let runtime = tokio::runtime::Handle::current();
    let version = crate::store::ObjectVersion::new(std::sync::Arc::clone(store), old.meta.clone());
    let object = crate::store::RangedObject::new(version.clone(), runtime.clone());
    let hashing =
        tokio::task::spawn_blocking(move || runtime.block_on(crate::store::hash_object(&version)));
    let (rewritten, new_file, upload) = rewrite_file(
        object,
        store,
        &new_location,
        fp.erased.clone(),
        mode,
        shown.clone(),
        output,
    )
    .await?;
    let before_sha = hashing
        .await
        .map_err(|e| Error::Internal(format!("hashing {shown}: {e}")))?
        .map_err(|e| Error::store(format!("reading {shown}"), e))?;
    let mut replacement = Replacement {
        old: fp.path.clone(),
        new: None,
    };
    let after = match (upload, new_file) {
        (Some(upload), Some((sha256, size))) => {
            upload.complete().await?;
            tracing::info!(table = %table.spec.name, file = %new_rel, size, "large file: rewritten by ranges and uploaded in parts");
            let meta = store
                .head(&new_location)
                .await
                .map_err(|e| Error::store(format!("reading {}{new_rel}", table.location.url), e))?;
            let mut reader = crate::plan::StoreReader::new(crate::store::ObjectVersion::new(
                std::sync::Arc::clone(store),
                meta,
            ));
            let footer = reader.get_metadata(None).await.map_err(|e| {
                crate::plan::read_error(&table.spec.name, &new_rel, "reading the new file back", e)
            })?;
            let (file, version) = written(&new_rel, (size, sha256), rewritten.rows, footer);
            replacement.new = Some(file);
            Some(version)
        }
        _ => None,
    };
    let new_path = after.as_ref().map(|_| new_rel);
    let record = file_record(fp, old, new_path, (before_sha, after), per_event, redacting);
    Ok((record, replacement))
}

/// A rewritten file at `path` (`size` bytes and its sha256, `rows`, its `footer`): what the
/// commit adds, and its version in the manifest.
fn written(
    path: &str,
    (size, sha256): (u64, String),
    rows: u64,
    footer: std::sync::Arc<parquet::file::metadata::ParquetMetaData>,
) -> (NewFile, FileVersion) {
    let file = NewFile {
        path: path.to_string(),
        size,
        footer,
    };
    let version = FileVersion {
        size,
        sha256,
        rows,
        etag: None,
        version: None,
    };
    (file, version)
}

/// The manifest record of a file of the log rewritten to `new_path` (none: emptied), from its
/// old content's sha256 and the new version (`versions`).
fn file_record(
    fp: &FilePlan,
    old: &DataFile,
    new_path: Option<String>,
    versions: (String, Option<FileVersion>),
    per_event: BTreeMap<String, u64>,
    redacting: bool,
) -> FileRecord {
    let (before_sha, after) = versions;
    FileRecord {
        path: fp.path.clone(),
        new_path,
        rows_removed: if redacting { 0 } else { fp.rows_matched },
        rows_redacted: if redacting { fp.rows_matched } else { 0 },
        rows_already_deleted: 0,
        before: FileVersion {
            size: old.meta.size,
            sha256: before_sha,
            rows: fp.rows,
            etag: None,
            version: None,
        },
        after,
        per_event,
        old_versions: None,
    }
}

/// The rows to drop from a file (`bytes`): the erased ones (`erased`, per row group) and those
/// its log marks deleted (`hidden`, positions in the file). Returns them per row group, and
/// how many of the marked rows were not erased ones.
fn with_hidden_rows(
    bytes: &Bytes,
    erased: &[Vec<u32>],
    hidden: &[u64],
    shown: &str,
) -> Result<(Vec<Vec<u32>>, u64)> {
    let footer = ParquetMetaDataReader::new()
        .parse_and_finish(bytes)
        .map_err(|e| Error::parquet(shown.to_string(), e))?;
    let groups = footer.row_groups();
    let mut out: Vec<Vec<u32>> = erased.to_vec();
    out.resize(groups.len(), Vec::new());
    let mut start = 0u64;
    let mut extra = 0;
    let mut next = hidden.iter().copied().peekable();
    for (dropped, group) in out.iter_mut().zip(groups) {
        let end = start + u64::try_from(group.num_rows()).unwrap_or(0);
        let before = dropped.len();
        while let Some(row) = next.next_if(|r| *r < end) {
            if let Ok(at) = u32::try_from(row - start.min(row)) {
                dropped.push(at);
            }
        }
        dropped.sort_unstable();
        dropped.dedup();
        extra += (dropped.len() - before) as u64;
        start = end;
    }
    if let Some(beyond) = next.next() {
        return Err(Error::table(
            "",
            shown,
            format!(
                "its deletion vector marks row {beyond}, but the file has {start} rows: the \
                 vector does not belong to this file"
            ),
        ));
    }
    Ok((out, extra))
}

/// A file of the log's bytes; its size must be the one the log records.
async fn read_whole(table: &Table, file: &DataFile, shown: &str) -> Result<Bytes> {
    let bytes = table
        .location
        .store
        .get(&file.meta.location)
        .await
        .map_err(|e| Error::store(format!("reading {shown}"), e))?
        .bytes()
        .await
        .map_err(|e| Error::store(format!("reading {shown}"), e))?;
    if bytes.len() as u64 != file.meta.size {
        return Err(Error::table(
            &table.spec.name,
            shown,
            format!(
                "the file is {} bytes but the table's log records {}: it was changed behind the log",
                bytes.len(),
                file.meta.size
            ),
        ));
    }
    Ok(bytes)
}

/// With `old_files = "delete"`, deletes the files the run's commit removed (each once; gone
/// already is fine), and journals how many. On a versioned bucket the delete leaves the file's
/// bytes as noncurrent versions: Delta never rewrites a path, so every data version of it held
/// the erased rows. They are listed and recorded in the file's record (journaled before they
/// are deleted, like a plain file's), deleted under `old_versions = "delete"`, counted as
/// remaining under `keep`.
async fn delete_old_files(
    table: &Table,
    log: &dyn Log,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
) -> Result<()> {
    let Some(removed) = entry.delta.as_ref().map(|c| c.removed.clone()) else {
        return Ok(());
    };
    let delete = table.spec.old_files.unwrap_or_default() == OldFiles::Delete;
    release(table, log, attempt, entry, &removed, delete, |e| {
        e.delta.as_mut().map(|c| &mut c.released)
    })
    .await?;
    if !delete {
        return Ok(());
    }
    let versioned = attempt.versioned.get(&table.spec.name);
    for path in &removed {
        let location = table.location.child(path);
        let record = entry.done.iter().position(|f| &f.path == path);
        let settled = |e: &Entry| {
            record.is_some_and(|i| e.done[i].old_versions.as_ref().is_some_and(|o| !o.pending))
        };
        if versioned.is_some() && settled(entry) {
            continue;
        }
        table
            .delete_file(path, "removed by the purge commit")
            .await?;
        let (Some(v), Some(i)) = (versioned, record) else {
            continue;
        };
        if entry.done[i].old_versions.is_none() {
            entry.done[i].old_versions = Some(versions::decide_all(v, &location).await?);
            attempt.journal.put(entry).await?;
        }
        if let Some(old) = entry.done[i].old_versions.as_mut().filter(|o| o.pending) {
            versions::delete_all_pending(v, &location, old).await?;
            attempt.journal.put(entry).await?;
        }
    }
    delete_marks(table, log, entry).await?;
    if let Some(c) = entry.delta.as_mut() {
        if c.old_files_deleted as usize == removed.len() {
            return Ok(());
        }
        c.old_files_deleted = removed.len() as u64;
    }
    tracing::info!(table = %table.spec.name, files = removed.len(), "deleted the files the purge commit removed");
    attempt.journal.put(entry).await
}

/// Releases `files` before they are deleted (see [`Log::plan_release`]): what it takes is
/// planned once and journaled in the entry's `slot`; under `delete` it is then done (and
/// journaled done). Under `keep` the plan only records what still reads the files.
async fn release(
    table: &Table,
    log: &dyn Log,
    attempt: &Attempt<'_>,
    entry: &mut Entry,
    files: &[String],
    delete: bool,
    slot: fn(&mut Entry) -> Option<&mut Option<crate::table::Released>>,
) -> Result<()> {
    if slot(entry).is_some_and(|r| r.is_none()) {
        let plan = log.plan_release(table, files).await?;
        if let Some(r) = slot(entry) {
            *r = Some(plan);
        }
        attempt.journal.put(entry).await?;
    }
    if !delete {
        return Ok(());
    }
    if let Some(plan) = slot(entry).and_then(|r| r.as_mut()).filter(|r| !r.done) {
        log.release(table, plan).await?;
        plan.done = true;
        attempt.journal.put(entry).await?;
    }
    Ok(())
}

/// Deletes the files holding the deletion marks of the files the commit removed, each once no
/// file of the table's current version refers to it (several files may share one).
async fn delete_marks(table: &Table, log: &dyn Log, entry: &Entry) -> Result<()> {
    let Some(marks) = entry
        .delta
        .as_ref()
        .map(|c| &c.marks)
        .filter(|m| !m.is_empty())
    else {
        return Ok(());
    };
    let current = log.snapshot(table).await?;
    let referenced: std::collections::BTreeSet<&String> = current
        .files
        .iter()
        .filter_map(|f| f.hidden_by.as_ref())
        .collect();
    for mark in marks.iter().filter(|m| !referenced.contains(m)) {
        table
            .delete_file(mark, "deletion vector of a removed file")
            .await?;
    }
    Ok(())
}

/// Deletes new files a commit that did not happen would have added (no snapshot names them).
async fn delete_unreferenced(table: &Table, files: &[FileRecord]) {
    for path in files.iter().filter_map(|f| f.new_path.as_ref()) {
        if let Err(e) = table
            .location
            .store
            .delete(&table.location.child(path))
            .await
        {
            tracing::warn!(table = %table.spec.name, file = %path, error = %e, "could not delete a file no commit added");
        }
    }
}
