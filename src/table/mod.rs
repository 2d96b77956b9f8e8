//! Table formats: where a table's files come from and how a purge's changes to it are made,
//! behind one interface ([`Format`]), as `object_store` puts every store behind one. `plan` and
//! `purge` ask the table's format, never which format it is.
//!
//! - [`folder::Folder`] (`format = "parquet"`): the files are what the store lists under the
//!   location; each rewritten file replaces the old one in place with a conditional write
//!   (its own commit, see [`crate::commit`]). It has no log.
//! - [`delta::Delta`] (`format = "delta"`): the files are the log's current snapshot; rewrites
//!   go to new paths and one transaction per run swaps them in ([`Log`]); the files earlier
//!   commits removed are its history on disk.
//!
//! A format with a log ([`Format::log`]) gives: a snapshot of its current files with their
//! partition values, pinned at a version; one commit of a set of replacements carrying an
//! idempotency key (a resumed run looks the key up instead of committing twice); and the old
//! files still on disk that time travel can read. [`detect`] refuses a plain folder that is,
//! holds or lies inside a table with a log.

use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectMeta;
use parquet::file::metadata::ParquetMetaData;

use crate::error::{Error, Result};
use crate::spec::{Job, TableFormat, TableSpec};
use crate::store::Location;

pub mod delta;
pub mod detect;
pub mod folder;
pub mod iceberg;

/// A table of the job with its location resolved, and its format.
#[derive(Debug, Clone)]
pub struct Table {
    pub spec: TableSpec,
    pub location: Location,
    pub format: Arc<dyn Format>,
}

/// The table's current data files, streamed in no particular order, and the version of its log
/// they were read at (`None` for a format without a log).
pub type Files = (BoxStream<'static, Result<ObjectMeta>>, Option<u64>);

/// How a table's files are found and changed.
#[async_trait::async_trait]
pub trait Format: std::fmt::Debug + Send + Sync {
    /// The table's current data files.
    async fn files(&self, table: &Table) -> Result<Files>;

    /// The table with its spec's column names as its files name them. A format whose files
    /// name columns otherwise than the table does (Delta's column mapping) translates the
    /// match and redact columns; the default keeps them.
    async fn open(&self, table: Table) -> Result<Table> {
        Ok(table)
    }

    /// The table's log, when changes go through one (one commit per run and table; shards
    /// leave such a table to the final step). `None`: each file is replaced in place.
    fn log(&self) -> Option<&dyn Log>;
}

/// A table format whose files are listed in a log of versions.
#[async_trait::async_trait]
pub trait Log: Send + Sync {
    /// The journal entry name of the table's commit (no data file has it).
    fn entry(&self) -> &'static str;

    /// The log's latest version: its files, in path order. Refuses (exit 2) what the commit
    /// path cannot honour.
    async fn snapshot(&self, table: &Table) -> Result<Snapshot>;

    /// The idempotency key of a run's commit: the same run finds it in the log.
    fn key(&self, job: &str, run_id: &str) -> String;

    /// Where a run writes the rewrite of the file at `old` (relative to the table): a new path
    /// (the log's files never change), the same for the same run, so a resumed run writes it
    /// again rather than leaving a stray file.
    fn new_path(&self, old: &str, run_id: &str) -> String;

    /// Commits `changes` on top of `snapshot`, as one version.
    async fn commit(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        changes: Changes,
    ) -> Result<Committed>;

    /// The version after `since`, up to `snapshot`, whose commit carries `key`, if any.
    async fn find(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        key: &str,
        since: u64,
    ) -> Result<Option<u64>>;

    /// The table's history still on disk: data files `snapshot` does not reference but older
    /// versions may (time travel reads them), less `exclude` (relative paths).
    async fn history(
        &self,
        table: &Table,
        snapshot: &Snapshot,
        exclude: &BTreeSet<String>,
    ) -> Result<Vec<ObjectMeta>>;

    /// Whether the log's own files keep data-file statistics that [`Log::log_files`] and
    /// [`Log::statistics`] give (Delta); an Iceberg table's manifests go with the snapshots
    /// [`Log::release`] expires instead.
    fn keeps_statistics(&self) -> bool {
        true
    }

    /// The log's own files on disk (entries, checkpoints, checksums), in version order.
    async fn log_files(&self, table: &Table) -> Result<Vec<LogFile>>;

    /// The data-file statistics `file` keeps (JSON objects with `minValues`/`maxValues`
    /// keyed by the Parquet column names), which may name erased values.
    async fn statistics(&self, table: &Table, file: &LogFile) -> Result<Vec<serde_json::Value>>;

    /// Sums the log up at its latest version (a checkpoint) and removes its files before it:
    /// time travel to earlier versions ends. Returns that version.
    async fn expire(&self, table: &Table) -> Result<u64>;

    /// Before the files `paths` (relative to the table: removed by the run's commit, or
    /// history holding erased rows) are deleted: what makes the table's older versions that
    /// read them unreachable, so that no version the table lists names a deleted file, planned
    /// (and journaled by the caller) before [`Log::release`] does it. Delta keeps its versions
    /// (time travel to them fails for those files, which is the point): nothing to do.
    async fn plan_release(&self, _table: &Table, _paths: &[String]) -> Result<Released> {
        Ok(Released {
            done: true,
            ..Released::default()
        })
    }

    /// Does what [`Log::plan_release`] planned (adding to `plan` what it deleted besides);
    /// done again after a crash, it finishes it.
    async fn release(&self, _table: &Table, _plan: &mut Released) -> Result<()> {
        Ok(())
    }
}

/// What [`Log::release`] does and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Released {
    /// Older versions (Iceberg snapshot ids) to take out of the table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expire: Vec<i64>,
    /// Their own metadata files to delete then (manifest lists, manifests no kept version
    /// uses), relative to the table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delete: Vec<String>,
    /// Branches and tags that name only versions to expire, removed with them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refs_removed: Vec<String>,
    /// Whether it was done.
    #[serde(default)]
    pub done: bool,
}

/// A file of a table's log on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// Relative to the table.
    pub path: String,
    /// The version it is of (for a checkpoint, the version it sums up).
    pub version: u64,
    pub kind: LogFileKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFileKind {
    /// One version's commit.
    Entry,
    /// The table's state at a version, summed up (or a part of it).
    Checkpoint,
    /// A version's checksum (which may list every file).
    Checksum,
    /// A part of a v2 checkpoint (`_sidecars/`), named by the checkpoints that use it (its
    /// version is 0: it has none of its own).
    Sidecar,
}

/// A log's files at one version.
pub struct Snapshot {
    pub version: u64,
    /// In path order.
    pub files: Vec<DataFile>,
    /// The format's own state at that version (what its commit needs).
    pub state: Box<dyn Any + Send + Sync>,
}

impl Snapshot {
    /// The snapshot's file at `path` (relative to the table), if it is in the table.
    pub fn file(&self, path: &str) -> Option<&DataFile> {
        let at = self
            .files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()?;
        self.files.get(at)
    }
}

/// One file of a snapshot.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Relative to the table root, decoded (what the object's key ends with).
    pub path: String,
    /// Where the object is, and the size the log records (no etag: such files never change).
    pub meta: ObjectMeta,
    pub partition_values: HashMap<String, Option<String>>,
    /// Rows the log marks deleted (a Delta deletion vector): still in the file's bytes, never
    /// read by the table's readers. A rewrite drops them with the erased rows. Row positions
    /// in the file, ascending.
    pub hidden_rows: Option<Arc<Vec<u64>>>,
    /// The file holding that mark (relative to the table), when it is a file of its own.
    pub hidden_by: Option<String>,
}

/// What one run commits to a table with a log.
pub struct Changes {
    /// Each file taken out of the table, with its rewrite when rows remain.
    pub replaced: Vec<Replacement>,
    /// See [`Log::key`].
    pub key: String,
    pub job: String,
    pub run_id: String,
    /// Where the run's manifest will be.
    pub manifest: String,
}

/// A file of the snapshot (relative `old` path) taken out, and the file written in its place.
pub struct Replacement {
    pub old: String,
    pub new: Option<NewFile>,
}

/// A rewritten file, written at `path` (relative to the table), `size` bytes, its `footer`
/// (the log records statistics from it).
pub struct NewFile {
    pub path: String,
    pub size: u64,
    pub footer: Arc<ParquetMetaData>,
}

/// How a commit attempt ended.
pub enum Committed {
    /// The new version.
    Version(u64),
    /// Another writer's commit conflicts (it removed a file this run read): plan again.
    Conflict(String),
}

impl Table {
    /// Resolves the locations and formats of every table of `job` (an Iceberg table's
    /// location is its metadata's, read through its catalog).
    pub async fn resolve_all(job: &Job) -> Result<Vec<Table>> {
        let mut tables = Vec::with_capacity(job.tables.len());
        for spec in &job.tables {
            let base = spec.source.parent().unwrap_or(&job.dir);
            let location = match spec.format {
                TableFormat::Iceberg => self::iceberg::locate(spec, base).await?,
                _ => Location::parse(&spec.location, base, &spec.storage_options).map_err(|m| {
                    Error::spec(
                        spec.source.display(),
                        format!("table {:?}: location: {m}", spec.name),
                    )
                })?,
            };
            let format: Arc<dyn Format> = match spec.format {
                TableFormat::Parquet => Arc::new(folder::Folder),
                TableFormat::Delta => Arc::new(delta::Delta),
                TableFormat::Iceberg => Arc::new(self::iceberg::Iceberg),
            };
            tables.push(Table {
                spec: spec.clone(),
                location,
                format,
            });
        }
        Ok(tables)
    }

    /// [`Table::resolve_all`], then each table opened by its format ([`Format::open`]): what
    /// every command that reads a table's rows uses.
    pub async fn open_all(job: &Job) -> Result<Vec<Table>> {
        let mut opened = Vec::with_capacity(job.tables.len());
        for table in Table::resolve_all(job).await? {
            let format = Arc::clone(&table.format);
            opened.push(format.open(table).await?);
        }
        Ok(opened)
    }

    /// Lists the table's data files, in path order. A location with none is a table with zero
    /// files (a purge may have erased every row of it): a warning, so that the other tables go
    /// on.
    pub async fn list(&self) -> Result<Vec<ObjectMeta>> {
        let (files, _) = self.files().await?;
        let mut files: Vec<ObjectMeta> = files.try_collect().await?;
        files.sort_by(|a, b| a.location.cmp(&b.location));
        if files.is_empty() {
            self.warn_no_files();
        }
        Ok(files)
    }

    /// The table's current data files, as its format finds them.
    pub async fn files(&self) -> Result<Files> {
        self.format.files(self).await
    }

    /// Whether the table's bucket keeps object versions (S3; `None` on other stores). A store
    /// that refuses to say (403) is an error naming the permission (exit 2, before anything is
    /// written): `old_versions = "delete"` needs to know. Only under `old_versions = "keep"`
    /// is it a warning, and the versioning is then recorded as unknown.
    pub async fn versioning(&self) -> Result<Option<crate::store::Versioning>> {
        let Some(calls) = self.location.versions.as_ref() else {
            return Ok(None);
        };
        match calls.status().await {
            Ok(v) => Ok(Some(v)),
            Err(Error::Store {
                context,
                source: source @ object_store::Error::PermissionDenied { .. },
            }) => {
                if self.spec.old_versions.unwrap_or_default() == crate::spec::OldVersions::Keep {
                    tracing::warn!(table = %self.spec.name, error = %source, "cannot tell whether the bucket keeps object versions (old_versions = \"keep\"): versioning unknown");
                    return Ok(None);
                }
                Err(Error::Permission {
                    context: format!(
                        "table {}: reading the versioning state of {} ({context}), which \
                         old_versions = \"delete\" needs (or set old_versions = \"keep\")",
                        self.spec.name, self.location
                    ),
                    permission: "s3:GetBucketVersioning".into(),
                    source,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the table's file at `path` (relative to the table), gone from the table (`why`,
    /// for messages); gone already is fine.
    pub async fn delete_file(&self, path: &str, why: &str) -> Result<()> {
        use object_store::ObjectStoreExt;
        match self.location.store.delete(&self.location.child(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(
                format!("deleting {}{path} ({why})", self.location.url),
                e,
            )),
        }
    }

    /// The warning for a location with no data files (a mistyped location is noticed).
    pub fn warn_no_files(&self) {
        tracing::warn!(
            table = %self.spec.name,
            location = %self.location,
            "no data files at this location: a table with zero files (every row erased, or \
             a mistyped location)"
        );
    }
}

/// The path a purge run writes the rewrite of `old` to: next to it (same partition folder),
/// named after the run and the old path, so a resumed run writes the same name again.
pub fn new_path(old: &str, run_id: &str) -> String {
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

/// A stream of the listed files, boxed.
pub(crate) fn stream(files: Vec<ObjectMeta>) -> BoxStream<'static, Result<ObjectMeta>> {
    futures::stream::iter(files.into_iter().map(Ok)).boxed()
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
