//! Stage 3, plan: finds which rows of which files match an erased subject.
//!
//! `plan` and `purge` share this code: `purge` carries out exactly what `plan` reports. For each
//! file the footer is read first; row groups whose statistics or bloom filters prove no erased
//! value can be in them are skipped, and a file whose row groups are all skipped is *pruned*
//! without reading data. Otherwise only the key columns are read (projection), and each key value is looked up
//! in a hash table of the erased subjects converted to the column's type (Arrow's row format
//! makes that work for every matchable type and for composite keys). Pruning never
//! under-deletes: statistics are used only where their ordering is known to be right.
//!
//! What can go wrong: a match column missing from a file, or of a type that cannot hold an id
//! (both bad input, exit 2); a corrupt Parquet file (exit 2, naming the file).
//!
//! The table's files are listed and scanned here; [`reader`] reads a file's footer and key
//! columns (from the store, or from memory), [`scan`] matches one file ([`Matcher`]), [`prune`]
//! rules row groups and pages out from statistics, bloom filters and the page index,
//! [`lookup`] holds the erased keys as hash tables, and [`convert`] turns subject ids into a
//! key column's type.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::Schema;

pub use crate::holds::{HeldRecord, HeldTally};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::file::metadata::ParquetMetaData;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::Events;
use crate::spec::Job;
use crate::store::{Location, ObjectVersion};
use crate::table::Table;

mod convert;
mod lookup;
mod prune;
mod reader;
mod scan;
mod shard;

use convert::*;
use lookup::*;
use prune::*;
pub use reader::{BytesReader, StoreReader};
use scan::*;
pub use scan::{Matcher, ResolvedKey, break_matcher_for_tests, resolve_key};
pub use shard::Shard;

/// Refuses (exit 2, before anything is written) a table whose location lists no data file
/// (`listed` files): most likely a mistyped location, whose events would all be confirmed
/// `no_data` though nothing was searched. Allowed when an earlier manifest of `job` saw files
/// there (a purge emptied it: a warning) or the spec says `allow_empty = true`. A Delta table's
/// files come from its log, which exists: an empty snapshot is a table.
pub async fn refuse_empty(job: &Job, tables: &[(&Table, u64)]) -> Result<()> {
    let empty: Vec<&Table> = tables
        .iter()
        .filter(|(t, listed)| *listed == 0 && !t.spec.allow_empty && t.format.log().is_none())
        .map(|(t, _)| *t)
        .collect();
    if empty.is_empty() {
        return Ok(());
    }
    let history = crate::manifest::all(&crate::manifest::folder(job)?).await?;
    for table in empty {
        let url = table.location.url.to_string();
        let seen = history
            .iter()
            .flat_map(|s| &s.manifest.tables)
            .any(|t| t.location == url && t.files_listed > 0);
        if !seen {
            return Err(Error::spec(
                table.spec.source.display(),
                format!(
                    "table {}: location {url} lists no data file, and no earlier run of job {} \
                     saw one there: is the location mistyped? (set allow_empty = true for a \
                     table registered before its first file lands)",
                    table.spec.name, job.name
                ),
            ));
        }
        tracing::warn!(table = %table.spec.name, location = %url, "no data files left: an earlier run saw files here (a purge emptied the table)");
    }
    Ok(())
}

/// What the plan found in one file.
#[derive(Debug, Clone, Serialize)]
pub struct FilePlan {
    /// Path relative to the table location.
    pub path: String,
    #[serde(skip)]
    pub location: Path,
    pub size: u64,
    pub etag: Option<String>,
    pub rows: u64,
    /// Every row group was ruled out by statistics: no data was read.
    pub pruned: bool,
    /// Rows to erase, per row group (row indices within the row group, ascending).
    #[serde(skip)]
    pub erased: Vec<Vec<u32>>,
    pub rows_matched: u64,
    /// Bytes planning read of this file, and the requests it took.
    pub bytes_read: u64,
    pub requests: u64,
    /// Rows of read row groups that the page index ruled out.
    #[serde(skip)]
    pub rows_skipped_by_page_index: u64,
    /// Matched rows per event (index into the run's event ids).
    #[serde(skip)]
    pub per_event: BTreeMap<u32, u64>,
    /// Compressed bytes of the largest row group: what reading the file by ranges holds.
    #[serde(skip)]
    pub largest_row_group: u64,
    /// Matched rows kept under a legal hold or the table's exemption (not erased, not in
    /// `rows_matched`).
    #[serde(skip)]
    pub held: HeldTally,
}

impl FilePlan {
    pub fn affected(&self) -> bool {
        self.rows_matched > 0
    }

    /// The plan of a file with `metadata` before anything matched (`file` relative to the
    /// table); where it is and its version are filled in by the caller.
    pub fn unmatched(file: &str, metadata: &ParquetMetaData) -> FilePlan {
        let row_groups = metadata.row_groups();
        FilePlan {
            path: file.to_string(),
            location: Path::default(),
            size: 0,
            etag: None,
            rows: row_groups
                .iter()
                .map(|rg| rg.num_rows().max(0) as u64)
                .sum(),
            pruned: false,
            erased: vec![Vec::new(); row_groups.len()],
            rows_matched: 0,
            bytes_read: 0,
            requests: 0,
            rows_skipped_by_page_index: 0,
            per_event: BTreeMap::new(),
            largest_row_group: row_groups
                .iter()
                .map(|rg| rg.compressed_size().max(0) as u64)
                .max()
                .unwrap_or(0),
            held: HeldTally::default(),
        }
    }
}

/// What the plan found in one table.
#[derive(Debug, Clone, Serialize)]
pub struct TablePlan {
    pub name: String,
    pub location: String,
    pub files_listed: u64,
    pub files_pruned: u64,
    pub files_affected: u64,
    pub files_emptied: u64,
    pub rows_matched: u64,
    /// Subject ids that could not be converted to a key column's type.
    pub ids_unconvertible: u64,
    /// Size of the listed files, and the bytes planning read of them (footers, key columns).
    pub table_bytes: u64,
    pub bytes_read: u64,
    /// Requests planning made to the store (reads of footers, indexes and key columns).
    pub requests: u64,
    /// Rows of row groups that had to be read but that the page index ruled out (not read).
    pub rows_skipped_by_page_index: u64,
    /// On S3: the bucket's versioning (`None` elsewhere, or when the store would not tell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versioning: Option<crate::store::Versioning>,
    /// A Delta table: the version of its log that was planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<u64>,
    /// A sharded run's final step: the files it planned itself (no shard listed them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub files_final_step: Option<u64>,
    /// Matched rows kept under holds or the table's exemption.
    pub rows_held: u64,
    /// What they are, per event and basis (summed over shards in a sharded run's final step).
    #[serde(skip)]
    pub held: Option<HeldRecord>,
    /// The affected files, in path order.
    #[serde(skip)]
    pub files: Vec<FilePlan>,
    /// Every file planned (path, size, etag): what a shard pins, so the final step can tell
    /// the files no shard saw.
    #[serde(skip)]
    pub listed: Vec<Listed>,
}

/// A file as a plan listed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listed {
    /// Relative to the table's location.
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// Files read at once per table on an object store by default: there a request costs tens of
/// milliseconds of latency, not bandwidth or CPU, so many are kept in flight.
pub const OBJECT_STORE_IO_CONCURRENCY: usize = 64;

/// `--io-concurrency`: files read at once per table (0: the default for the store).
static IO_CONCURRENCY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sets the files read at once per table for this process (`--io-concurrency`; 0 restores the
/// defaults).
pub fn set_io_concurrency(n: usize) {
    IO_CONCURRENCY.store(n, std::sync::atomic::Ordering::Relaxed);
}

/// Files read at once when planning (or looking up) the table at `location`: the
/// `--io-concurrency` given, else [`OBJECT_STORE_IO_CONCURRENCY`] on an object store and twice
/// the CPUs (at least 4) on local disk, where reads cost CPU and the disk's queue.
pub fn io_concurrency(location: &Location) -> usize {
    match IO_CONCURRENCY.load(std::sync::atomic::Ordering::Relaxed) {
        0 if matches!(location.url.scheme(), "file") => {
            std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).max(4))
        }
        0 => OBJECT_STORE_IO_CONCURRENCY,
        n => n,
    }
}

impl TablePlan {
    /// The plan of `table` before any file is scanned.
    pub fn unscanned(table: &Table, versioning: Option<crate::store::Versioning>) -> TablePlan {
        TablePlan {
            name: table.spec.name.clone(),
            location: table.location.url.to_string(),
            files_listed: 0,
            files_pruned: 0,
            files_affected: 0,
            files_emptied: 0,
            rows_matched: 0,
            ids_unconvertible: 0,
            table_bytes: 0,
            bytes_read: 0,
            requests: 0,
            rows_skipped_by_page_index: 0,
            delta_version: None,
            versioning,
            files_final_step: None,
            rows_held: 0,
            held: None,
            files: Vec::new(),
            listed: Vec::new(),
        }
    }
}

/// Plans every table of the job against `events`. Reads footers and key columns only.
pub async fn plan_tables(tables: &[Table], events: &Events) -> Result<Vec<TablePlan>> {
    plan_shard(tables, events, None).await
}

/// Plans the files of `shard` (every file when `None`) of every table. A shard reads only the
/// files it owns (decided from the listing) and skips Delta tables, which the final unsharded
/// step purges in one commit.
pub async fn plan_shard(
    tables: &[Table],
    events: &Events,
    shard: Option<Shard>,
) -> Result<Vec<TablePlan>> {
    let mut plans = Vec::with_capacity(tables.len());
    for table in tables {
        plans.push(plan_table(table, events, shard).await?);
    }
    Ok(plans)
}

/// Plans one table (the files `shard` owns, when given). The listing streams page by page
/// into the scans (several files at once); only affected files are kept, in path order.
pub async fn plan_table(table: &Table, events: &Events, shard: Option<Shard>) -> Result<TablePlan> {
    let matcher =
        Matcher::new(&table.spec, events).absent_columns_null(table.format.log().is_some());
    let mut plan = TablePlan::unscanned(table, table.versioning().await?);
    if shard.is_some() && table.format.log().is_some() {
        return Ok(plan);
    }
    let (files, delta_version) = table.files().await?;
    plan.delta_version = delta_version;
    let (name, location) = (table.spec.name.clone(), table.location.clone());
    let files = files
        .try_filter(move |m| {
            let mine = shard.is_none_or(|s| s.owns(&name, &location.relative(&m.location)));
            futures::future::ready(mine)
        })
        .boxed();
    scan_files(table, &matcher, files, &mut plan).await?;
    if plan.files_listed == 0 && shard.is_none() {
        table.warn_no_files();
    }
    Ok(plan)
}

/// Plans exactly the files `metas` of `table` (a final step's files that no shard listed),
/// adding them to `plan`.
pub async fn plan_files(
    table: &Table,
    events: &Events,
    metas: Vec<ObjectMeta>,
    plan: &mut TablePlan,
) -> Result<()> {
    let matcher =
        Matcher::new(&table.spec, events).absent_columns_null(table.format.log().is_some());
    let files = futures::stream::iter(metas.into_iter().map(Ok)).boxed();
    scan_files(table, &matcher, files, plan).await
}

/// Scans the listed `files` (several at once) into `plan`: counts, the affected files in path
/// order, the listing.
async fn scan_files(
    table: &Table,
    matcher: &Matcher<'_>,
    files: futures::stream::BoxStream<'static, Result<ObjectMeta>>,
    plan: &mut TablePlan,
) -> Result<()> {
    let concurrency = io_concurrency(&table.location);
    let mut held = HeldTally::default();
    let mut scans = files
        .map(|listed| async move {
            let meta = listed?;
            let listed = Listed {
                path: table.location.relative(&meta.location),
                size: meta.size,
                etag: meta.e_tag.clone(),
            };
            Ok::<_, Error>((listed, scan_listed(table, matcher, meta).await?))
        })
        .buffer_unordered(concurrency);
    while let Some(scanned) = scans.next().await {
        let (listed, scanned) = scanned?;
        plan.files_listed += 1;
        plan.table_bytes += listed.size;
        plan.listed.push(listed);
        let Some(fp) = scanned else {
            continue;
        };
        plan.bytes_read += fp.bytes_read;
        plan.requests += fp.requests;
        plan.files_pruned += u64::from(fp.pruned);
        plan.rows_skipped_by_page_index += fp.rows_skipped_by_page_index;
        held.merge(&fp.held);
        if fp.affected() {
            plan.files_affected += 1;
            plan.files_emptied += u64::from(fp.rows_matched == fp.rows);
            plan.rows_matched += fp.rows_matched;
            plan.files.push(fp);
        }
    }
    drop(scans);
    plan.files.sort_by(|a, b| a.path.cmp(&b.path));
    plan.listed.sort_by(|a, b| a.path.cmp(&b.path));
    plan.ids_unconvertible = plan.ids_unconvertible.max(matcher.unconvertible());
    if let Some(record) = matcher.held_record(&held)? {
        plan.rows_held += record.rows;
        plan.held.get_or_insert_default().merge(&record);
    }
    Ok(())
}

/// Scans one listed file; a file replaced while being read is read again (its new version),
/// one deleted meanwhile is skipped (`None`).
async fn scan_listed(
    table: &Table,
    matcher: &Matcher<'_>,
    listed: ObjectMeta,
) -> Result<Option<FilePlan>> {
    let rel = table.location.relative(&listed.location);
    let mut meta = listed;
    let mut retries = 0;
    loop {
        let reader = StoreReader::new(ObjectVersion::new(
            Arc::clone(&table.location.store),
            meta.clone(),
        ));
        let (bytes_read, requests) = (Arc::clone(&reader.bytes_read), Arc::clone(&reader.requests));
        match matcher.scan(reader, &table.spec.name, &rel).await {
            Ok(mut fp) => {
                fp.bytes_read = bytes_read.load(std::sync::atomic::Ordering::Relaxed);
                fp.requests = requests.load(std::sync::atomic::Ordering::Relaxed);
                fp.location = meta.location.clone();
                fp.size = meta.size;
                fp.etag = meta.e_tag.clone();
                return Ok(Some(fp));
            }
            // Replaced or deleted while being read (a concurrent writer, another shard).
            Err(e) if e.is_conflict() && retries < 3 => {
                retries += 1;
                match table.location.store.head(&meta.location).await {
                    Ok(m) => meta = m,
                    Err(object_store::Error::NotFound { .. }) => {
                        tracing::info!(table = %table.spec.name, file = %rel, "file deleted while planning: skipped");
                        return Ok(None);
                    }
                    Err(e) => return Err(Error::store(format!("reading {}", meta.location), e)),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// A Parquet read error: a storage failure underneath stays a storage error (exit 1, may be
/// retried); anything else means the file itself is bad (exit 2).
/// What to do with an encrypted file, for messages.
const ENCRYPTED_ADVICE: &str = "lakepurge cannot read or rewrite files written with Parquet \
     modular encryption; decrypt the table or leave it out of the job";

/// Refuses a file written with Parquet modular encryption and a plaintext footer: its
/// encrypted columns cannot be read or rewritten without keys. The footer names them, so this
/// is found before any data is read and before anything is written (bad input, exit 2).
/// (A file with an encrypted footer fails earlier, in [`read_error`].)
pub fn refuse_encrypted(metadata: &ParquetMetaData, table: &str, file: &str) -> Result<()> {
    let mut encrypted: Vec<String> = metadata
        .row_groups()
        .iter()
        .flat_map(|rg| rg.columns())
        .filter(|c| c.crypto_metadata().is_some())
        .map(|c| c.column_path().string())
        .collect();
    encrypted.sort();
    encrypted.dedup();
    if encrypted.is_empty() {
        return Ok(());
    }
    Err(Error::table(
        table,
        file,
        format!(
            "the file is encrypted (Parquet modular encryption, plaintext footer; encrypted \
             columns: {}): {ENCRYPTED_ADVICE}",
            encrypted.join(", ")
        ),
    ))
}

pub fn read_error(table: &str, file: &str, what: &str, e: parquet::errors::ParquetError) -> Error {
    if e.to_string().contains("encrypted footer") {
        return Error::table(
            table,
            file,
            format!(
                "the file is encrypted (Parquet modular encryption, encrypted footer): {ENCRYPTED_ADVICE}"
            ),
        );
    }
    if let parquet::errors::ParquetError::External(source) = e {
        return match source.downcast::<object_store::Error>() {
            Ok(store) => Error::store(format!("table {table}: reading {file}"), *store),
            Err(other) => Error::table(table, file, format!("{what}: {other}")),
        };
    }
    Error::table(table, file, format!("{what}: {e}"))
}

/// The Arrow schema of a Parquet footer, for `validate`.
pub fn arrow_schema(metadata: &ParquetMetaData) -> parquet::errors::Result<Schema> {
    parquet::arrow::parquet_to_arrow_schema(
        metadata.file_metadata().schema_descr(),
        metadata.file_metadata().key_value_metadata(),
    )
}
