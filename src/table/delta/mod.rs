//! Delta Lake tables (`format = "delta"`), through delta-rs: the files of the log's current
//! snapshot (what `plan` scans, never a listing), the statistics of a new file's `add` from its
//! own footer ([`stats`]), and a purge's changes to a table as one transaction ([`commit`]).
//!
//! Everything else (matching, the Parquet-level rewrite) is what plain Parquet tables get. A
//! Delta file is never replaced in place: its rewrite goes to a new path next to it, and the
//! commit removes the old path and adds the new one. What lakepurge cannot purge faithfully is
//! refused with exit 2 before anything is written: files with deletion vectors (their
//! soft-deleted rows are still in the Parquet file) and column mapping (Parquet column names
//! differ from the table's).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use deltalake_core::kernel::{Add, Remove};
use deltalake_core::logstore::{LogStoreRef, StorageConfig, default_logstore};
use deltalake_core::{DeltaTable, DeltaTableError};
use object_store::ObjectMeta;
use object_store::prefix::PrefixStore;

use super::{Changes, Committed, DataFile, Files, Format, Log, Snapshot, Table};
use crate::error::{Error, Result};

pub mod commit;
pub mod stats;

/// The Delta Lake format.
#[derive(Debug)]
pub struct Delta;

#[async_trait::async_trait]
impl Format for Delta {
    async fn files(&self, table: &Table) -> Result<Files> {
        let snapshot = load(table).await?;
        let version = snapshot.version;
        let files = snapshot.files.into_iter().map(|f| f.meta).collect();
        Ok((super::stream(files), Some(version)))
    }

    fn log(&self) -> Option<&dyn Log> {
        Some(self)
    }
}

#[async_trait::async_trait]
impl Log for Delta {
    fn entry(&self) -> &'static str {
        "_delta_log"
    }

    async fn snapshot(&self, table: &Table) -> Result<Snapshot> {
        load(table).await
    }

    fn key(&self, job: &str, run_id: &str) -> String {
        app_id(job, run_id)
    }

    fn new_path(&self, old: &str, run_id: &str) -> String {
        new_path(old, run_id)
    }

    async fn commit(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        changes: Changes,
    ) -> Result<Committed> {
        commit::commit(table, snapshot, state(table, snapshot)?, changes).await
    }

    async fn find(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        key: &str,
        since: u64,
    ) -> Result<Option<u64>> {
        commit::find(table, state(table, snapshot)?, key, since).await
    }

    async fn history(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        exclude: &BTreeSet<String>,
    ) -> Result<Vec<ObjectMeta>> {
        history_files(table, snapshot, exclude).await
    }
}

/// What the snapshot of a Delta table keeps of delta-rs's state: what a commit against that
/// version needs.
pub struct State {
    pub table: DeltaTable,
    pub version: u64,
    /// The table's properties (`delta.*` keys), as its metadata holds them.
    pub configuration: HashMap<String, String>,
    /// The `remove` action that takes each file (by relative path) out of the table.
    pub removes: HashMap<String, Remove>,
}

impl State {
    /// The log store commits go through.
    pub fn log_store(&self) -> LogStoreRef {
        self.table.log_store()
    }
}

/// The Delta state of a snapshot [`load`] made.
pub fn state<'a>(table: &Table, snapshot: &'a Snapshot) -> Result<&'a State> {
    snapshot.state.downcast_ref::<State>().ok_or_else(|| {
        Error::Internal(format!(
            "table {}: a snapshot not read from a Delta log",
            table.spec.name
        ))
    })
}

/// An error of delta-rs about `table`: a storage failure underneath stays a storage error (exit
/// 1, retried); a log that cannot be read as a Delta table is bad input (exit 2).
pub fn error(table: &Table, what: &str, e: DeltaTableError) -> Error {
    match e {
        DeltaTableError::ObjectStore { source } => {
            Error::store(format!("{what} of Delta table {}", table.location), source)
        }
        DeltaTableError::NotATable(_) => Error::table(
            &table.spec.name,
            &table.location,
            "format = \"delta\" but there is no Delta log (_delta_log/) here: give the table's \
             root folder, or format = \"parquet\" for a plain Parquet table",
        ),
        e => Error::Delta {
            table: table.spec.name.clone(),
            context: format!("{what} at {}", table.location),
            source: Box::new(e),
        },
    }
}

/// A log store over the table's own store (so `file://` gets lakepurge's conditional writes
/// and every store the same code), rooted at the table's location.
fn log_store(table: &Table) -> LogStoreRef {
    let root = Arc::clone(&table.location.store);
    let prefixed: Arc<dyn object_store::ObjectStore> = Arc::new(PrefixStore::new(
        Arc::clone(&root),
        table.location.prefix.clone(),
    ));
    default_logstore(
        prefixed,
        root,
        &table.location.url,
        &StorageConfig::default(),
    )
}

/// Reads the table's log at its latest version. Refuses (exit 2) what lakepurge cannot purge
/// faithfully.
pub async fn load(table: &Table) -> Result<Snapshot> {
    let mut delta = DeltaTable::new(log_store(table));
    delta
        .load()
        .await
        .map_err(|e| error(table, "reading the log", e))?;
    let state = delta
        .snapshot()
        .map_err(|e| error(table, "reading the log", e))?;
    let metadata = state.metadata();
    let configuration = metadata.configuration().clone();
    refuse_column_mapping(table, &configuration)?;
    refuse_unsupported_features(table, state)?;
    let mut files = Vec::new();
    let mut removes = HashMap::new();
    for view in state.log_data().iter() {
        let path = view.path().to_string();
        if view.deletion_vector_descriptor().is_some() {
            return Err(Error::table(
                &table.spec.name,
                format!("{}{path}", table.location.url),
                "the file has a deletion vector: its soft-deleted rows are still in the Parquet \
                 file, and lakepurge does not apply deletion vectors. Purge the table after an \
                 OPTIMIZE/REORG that materializes them (REORG TABLE ... APPLY (PURGE)), or \
                 disable delta.enableDeletionVectors",
            ));
        }
        let location = table.location.child(&path);
        removes.insert(path.clone(), view.remove_action(true));
        files.push(DataFile {
            meta: ObjectMeta {
                location,
                last_modified: view.modification_datetime().unwrap_or_default(),
                size: u64::try_from(view.size()).unwrap_or(0),
                e_tag: None,
                version: None,
            },
            partition_values: view.partition_values_map(),
            path,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let version = state.version();
    Ok(Snapshot {
        version,
        files,
        state: Box::new(State {
            table: delta,
            version,
            configuration,
            removes,
        }),
    })
}

/// How old a file no version of the log references (and no tombstone names) must be before it
/// is taken for history rather than a concurrent writer's file not committed yet.
pub const ORPHAN_MIN_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The table's history still on disk: Parquet files under the table that its current version
/// (`snapshot`) does not reference — files earlier commits removed (tombstones the log still
/// lists) and files no version references any more (older than [`ORPHAN_MIN_AGE`], so never a
/// writer's uncommitted file) — less `exclude` (the run's own removed files). Time travel to
/// the versions that still name them reads their rows back until VACUUM deletes them.
async fn history_files(
    table: &Table,
    snapshot: &Snapshot,
    exclude: &BTreeSet<String>,
) -> Result<Vec<ObjectMeta>> {
    use futures::StreamExt;
    let delta = state(table, snapshot)?;
    let log_store = delta.log_store();
    let state = delta
        .table
        .snapshot()
        .map_err(|e| error(table, "reading the log", e))?;
    let mut tombstones = std::collections::BTreeSet::new();
    {
        let mut stream = state.all_tombstones(log_store.as_ref());
        while let Some(t) = stream.next().await {
            let t = t.map_err(|e| error(table, "reading the log's removed files", e))?;
            tombstones.insert(t.path().into_owned());
        }
    }
    let now = chrono::Utc::now();
    let listed = table.location.list_files().await?;
    Ok(listed
        .into_iter()
        .filter(|m| {
            let rel = table.location.relative(&m.location);
            rel.ends_with(".parquet")
                && snapshot.file(&rel).is_none()
                && !exclude.contains(&rel)
                && (tombstones.contains(&rel) || now - m.last_modified > ORPHAN_MIN_AGE)
        })
        .collect())
}

/// Column mapping (`delta.columnMapping.mode` = `name` or `id`) gives Parquet columns physical
/// names unlike the table's: match rules would not find them. Refused, not guessed.
fn refuse_column_mapping(table: &Table, configuration: &HashMap<String, String>) -> Result<()> {
    match configuration
        .get("delta.columnMapping.mode")
        .map(String::as_str)
    {
        None | Some("none") => Ok(()),
        Some(mode) => Err(Error::table(
            &table.spec.name,
            &table.location,
            format!(
                "the Delta table uses column mapping (delta.columnMapping.mode = {mode}): its \
                 Parquet files name columns differently from the table, which lakepurge does \
                 not support yet"
            ),
        )),
    }
}

/// The table's protocol (reader and writer versions, table features, append-only) checked by
/// delta-rs's own checker against the commit a purge makes (a DELETE removing files), before
/// anything is written: a feature the commit path cannot honour (change data feed, CHECK
/// constraints, generated columns, identity columns, ...) is refused with exit 2 by
/// `validate`, `plan` and `purge`, rather than failing at the commit after the new files were
/// written, on every rerun.
fn refuse_unsupported_features(
    table: &Table,
    state: &deltalake_core::table::state::DeltaTableState,
) -> Result<()> {
    use deltalake_core::kernel::Action;
    use deltalake_core::kernel::transaction::PROTOCOL;
    use deltalake_core::protocol::DeltaOperation;
    let probe = [Action::Remove(Remove {
        path: "probe.parquet".into(),
        data_change: true,
        ..Default::default()
    })];
    let operation = DeltaOperation::Delete { predicate: None };
    PROTOCOL.can_commit(state, &probe, &operation).map_err(|e| {
        let protocol = state.protocol();
        Error::table(
            &table.spec.name,
            &table.location,
            format!(
                "the Delta table's protocol (reader {}, writer {}) needs what lakepurge's commit \
                 path (delta-rs) cannot honour: {e}. Nothing was written. Purge it with an engine \
                 that supports those features, or drop them from the table (for change data \
                 feed: its _change_data/ files also hold erased rows)",
                protocol.min_reader_version(),
                protocol.min_writer_version()
            ),
        )
    })
}

/// The `add` of a new file written in place of `old` at `path` (relative to the table,
/// decoded), `size` bytes, with `stats` (JSON) from its own footer.
fn add_for(old: &DataFile, path: &str, size: u64, stats: String) -> Add {
    Add {
        // Decoded, as delta-rs holds paths: it percent-encodes them when writing the log.
        path: path.to_string(),
        partition_values: old.partition_values.clone(),
        size: i64::try_from(size).unwrap_or(i64::MAX),
        modification_time: chrono::Utc::now().timestamp_millis(),
        data_change: true,
        stats: Some(stats),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    }
}

/// The path a purge run writes the rewrite of `old` to: next to it (same partition folder),
/// named after the run and the old path, so a resumed run writes the same name again.
fn new_path(old: &str, run_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(run_id.as_bytes());
    h.update([0]);
    h.update(old.as_bytes());
    let id = hex::encode(&h.finalize()[..16]);
    match old.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/part-{id}-lakepurge.parquet"),
        None => format!("part-{id}-lakepurge.parquet"),
    }
}

/// The application id of a run's transaction in the table's log.
fn app_id(job: &str, run_id: &str) -> String {
    format!("lakepurge:{job}:{run_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_paths_stay_in_the_partition_folder_and_are_stable() {
        let a = new_path("dt=2026-11-24/part-0.parquet", "run-1");
        assert!(a.starts_with("dt=2026-11-24/part-"), "{a}");
        assert_eq!(a, new_path("dt=2026-11-24/part-0.parquet", "run-1"));
        assert_ne!(a, new_path("dt=2026-11-24/part-0.parquet", "run-2"));
        assert!(!new_path("x.parquet", "r").contains('/'));
    }
}
