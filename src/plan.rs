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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, FixedSizeBinaryArray, GenericListArray, OffsetSizeTrait,
    RecordBatch, StringArray, make_array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Schema};
use arrow::row::{RowConverter, SortField};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, RowSelection};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::basic::{ColumnOrder, LogicalType, SortOrder, Type as PhysicalType};
use parquet::file::metadata::{
    PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData,
};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::{Events, Subjects, normalize_value};
use crate::spec::{Job, MatchSpec, Normalize, TableSpec};
use crate::store::{Location, ObjectVersion};

/// A table of the job with its location resolved.
#[derive(Debug, Clone)]
pub struct Table {
    pub spec: TableSpec,
    pub location: Location,
}

impl Table {
    /// Resolves the locations of every table of `job`.
    pub fn resolve_all(job: &Job) -> Result<Vec<Table>> {
        job.tables
            .iter()
            .map(|spec| {
                let base = spec.source.parent().unwrap_or(&job.dir);
                let location = Location::parse(&spec.location, base, &spec.storage_options)
                    .map_err(|m| {
                        Error::spec(
                            spec.source.display(),
                            format!("table {:?}: location: {m}", spec.name),
                        )
                    })?;
                Ok(Table {
                    spec: spec.clone(),
                    location,
                })
            })
            .collect()
    }

    /// Lists the table's data files. A location with none is a table with zero files (a purge
    /// may have erased every row of it): a warning, so that the other tables go on.
    pub async fn list(&self) -> Result<Vec<ObjectMeta>> {
        let files = self.location.list_files().await?;
        if files.is_empty() {
            self.warn_no_files();
        }
        Ok(files)
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
    /// Bytes planning read of this file.
    pub bytes_read: u64,
    /// Rows of read row groups that the page index ruled out.
    #[serde(skip)]
    pub rows_skipped_by_page_index: u64,
    /// Matched rows per event (index into the run's event ids).
    #[serde(skip)]
    pub per_event: BTreeMap<u32, u64>,
    /// Compressed bytes of the largest row group: what reading the file by ranges holds.
    #[serde(skip)]
    pub largest_row_group: u64,
}

impl FilePlan {
    pub fn affected(&self) -> bool {
        self.rows_matched > 0
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
    /// Rows of row groups that had to be read but that the page index ruled out (not read).
    pub rows_skipped_by_page_index: u64,
    /// The affected files, in path order.
    #[serde(skip)]
    pub files: Vec<FilePlan>,
}

/// Plans every table of the job against `events`. Reads footers and key columns only.
pub async fn plan_tables(tables: &[Table], events: &Events) -> Result<Vec<TablePlan>> {
    let mut plans = Vec::with_capacity(tables.len());
    for table in tables {
        plans.push(plan_table(table, events).await?);
    }
    Ok(plans)
}

/// Plans one table. The listing streams page by page into the scans (several files at once);
/// only affected files are kept, in path order.
pub async fn plan_table(table: &Table, events: &Events) -> Result<TablePlan> {
    let matcher = Matcher::new(&table.spec, events);
    let mut plan = TablePlan {
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
        rows_skipped_by_page_index: 0,
        files: Vec::new(),
    };
    let concurrency = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
    let matcher_ref = &matcher;
    let mut scans = table
        .location
        .list_data_files()
        .map(|listed| async move {
            let meta = listed?;
            let size = meta.size;
            Ok::<_, Error>((size, scan_listed(table, matcher_ref, meta).await?))
        })
        .buffer_unordered(concurrency);
    while let Some(scanned) = scans.next().await {
        let (size, scanned) = scanned?;
        plan.files_listed += 1;
        plan.table_bytes += size;
        let Some(fp) = scanned else {
            continue;
        };
        plan.bytes_read += fp.bytes_read;
        plan.files_pruned += u64::from(fp.pruned);
        plan.rows_skipped_by_page_index += fp.rows_skipped_by_page_index;
        if fp.affected() {
            plan.files_affected += 1;
            plan.files_emptied += u64::from(fp.rows_matched == fp.rows);
            plan.rows_matched += fp.rows_matched;
            plan.files.push(fp);
        }
    }
    drop(scans);
    if plan.files_listed == 0 {
        table.warn_no_files();
    }
    plan.files.sort_by(|a, b| a.path.cmp(&b.path));
    plan.ids_unconvertible = matcher.unconvertible();
    Ok(plan)
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
        let bytes_read = Arc::clone(&reader.bytes_read);
        match matcher.scan(reader, &table.spec.name, &rel).await {
            Ok(mut fp) => {
                fp.bytes_read = bytes_read.load(std::sync::atomic::Ordering::Relaxed);
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

/// A Parquet object read through its store: the footer first, then only the byte ranges the
/// reader asks for (the key columns of the row groups not pruned).
#[derive(Clone)]
pub struct StoreReader {
    pub object: ObjectVersion,
    /// Bytes fetched so far (footer, page indexes, key-column chunks).
    pub bytes_read: Arc<std::sync::atomic::AtomicU64>,
}

impl StoreReader {
    pub fn new(object: ObjectVersion) -> StoreReader {
        StoreReader {
            object,
            bytes_read: Default::default(),
        }
    }

    /// A ranged read of the version listed: a file replaced while it is being read fails with
    /// a precondition error instead of mixing two versions.
    async fn range(&self, range: Range<u64>) -> parquet::errors::Result<Bytes> {
        let bytes = self.object.range(range).await;
        if let Ok(b) = &bytes {
            self.bytes_read
                .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        bytes.map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.range(range).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let mut out = Vec::with_capacity(ranges.len());
            for r in ranges {
                out.push(self.range(r).await?);
            }
            Ok(out)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.object.size();
            let metadata = metadata_reader(options)
                .with_prefetch_hint(Some(64 * 1024))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A footer reader that loads the page indexes `options` ask for.
fn metadata_reader(options: Option<&ArrowReaderOptions>) -> ParquetMetaDataReader {
    let reader = ParquetMetaDataReader::new();
    match options {
        Some(o) => reader
            .with_column_index_policy(o.column_index_policy())
            .with_offset_index_policy(o.offset_index_policy()),
        None => reader,
    }
}

/// A Parquet file held in memory, readable by the async Arrow reader.
#[derive(Clone)]
pub struct BytesReader {
    pub bytes: Bytes,
}

impl AsyncFileReader for BytesReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        let len = self.bytes.len() as u64;
        let out = if range.start <= range.end && range.end <= len {
            Ok(self.bytes.slice(range.start as usize..range.end as usize))
        } else {
            Err(parquet::errors::ParquetError::EOF(format!(
                "range {range:?} is beyond the end of the file ({len} bytes)"
            )))
        };
        futures::future::ready(out).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        let out = metadata_reader(options)
            .parse_and_finish(&self.bytes)
            .map(Arc::new);
        futures::future::ready(out).boxed()
    }
}

/// The match rules of one table, with the subjects each rule looks for.
pub struct Matcher<'e> {
    rules: Vec<RuleSubjects<'e>>,
    /// `action = "redact"`: the columns nulled in matching rows. A row whose redacted columns
    /// are all null already is not matched again.
    redact: Vec<String>,
    /// Lookup tables per (rule, key types): built once per distinct schema.
    compiled: std::sync::Mutex<HashMap<LookupKey, Arc<Lookup>>>,
}

/// A rule index and the key types a lookup was built for.
type LookupKey = (usize, Vec<DataType>);

struct RuleSubjects<'e> {
    spec: MatchSpec,
    paths: Vec<Vec<String>>,
    subjects: Option<&'e Subjects>,
}

/// Erased keys in Arrow's row format, with the events naming each: the rows in one buffer, a
/// hash table of row indices over them (aHash: every key value of every affected file is looked
/// up), the event of each row, and the further events of keys several events name. About 30
/// bytes a key, where a map of boxed keys to vectors took over 100.
struct KeyTable {
    rows: arrow::row::Rows,
    table: hashbrown::HashTable<u32>,
    hasher: ahash::RandomState,
    /// The event of each row (for a repeated key, of its first row).
    events: Vec<u32>,
    /// By a key's first row: its events after the first.
    more: HashMap<u32, Vec<u32>>,
}

impl KeyTable {
    /// Indexes the valid rows of `rows`; `events[i]` names row `i`.
    fn new(rows: arrow::row::Rows, events: Vec<u32>, valid: impl Fn(usize) -> bool) -> KeyTable {
        let hasher = ahash::RandomState::new();
        let mut table = hashbrown::HashTable::with_capacity(rows.num_rows());
        let mut more: HashMap<u32, Vec<u32>> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            if !valid(i) {
                continue;
            }
            let key = row.as_ref();
            let hash = hasher.hash_one(key);
            match table.find(hash, |&j: &u32| rows.row(j as usize).as_ref() == key) {
                Some(&first) => {
                    let extra = more.entry(first).or_default();
                    if events[first as usize] != events[i] && !extra.contains(&events[i]) {
                        extra.push(events[i]);
                    }
                }
                None => {
                    table.insert_unique(hash, i as u32, |&j: &u32| {
                        hasher.hash_one(rows.row(j as usize).as_ref())
                    });
                }
            }
        }
        more.retain(|_, v| !v.is_empty());
        KeyTable {
            rows,
            table,
            hasher,
            events,
            more,
        }
    }

    fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The events naming `key`, if it is an erased key.
    fn events_of(&self, key: &[u8]) -> Option<impl Iterator<Item = u32> + '_> {
        let hash = self.hasher.hash_one(key);
        let &first = self
            .table
            .find(hash, |&j| self.rows.row(j as usize).as_ref() == key)?;
        let more = self.more.get(&first).into_iter().flatten().copied();
        Some(std::iter::once(self.events[first as usize]).chain(more))
    }
}

/// Erased key values of one rule, encoded in Arrow's row format for one set of key types.
struct Lookup {
    converter: RowConverter,
    keys: KeyIndex,
    unconvertible: u64,
    /// Sorted erased values, for statistics pruning (single top-level columns only).
    sorted: Option<SortedKeys>,
}

enum SortedKeys {
    /// Shared with a [`KeyIndex::Ints`] (a key named by several events may repeat).
    Ints(Arc<Vec<i64>>),
    Bytes(Vec<Vec<u8>>),
}

/// How a rule's erased keys are looked up.
enum KeyIndex {
    /// Keys in Arrow's row format (any key types).
    Rows(KeyTable),
    /// One Int64 key column: the keys sorted (a key named by several events repeats), the
    /// event of each in the same order, and a hash table of where each key starts. About 20
    /// bytes a key.
    Ints {
        keys: Arc<Vec<i64>>,
        events: Vec<u32>,
        starts: hashbrown::HashTable<u32>,
        hasher: ahash::RandomState,
    },
}

impl KeyIndex {
    fn is_empty(&self) -> bool {
        match self {
            KeyIndex::Rows(t) => t.is_empty(),
            KeyIndex::Ints { keys, .. } => keys.is_empty(),
        }
    }

    /// `keys` sorted with `events`: indexed by where each key starts.
    fn ints(keys: Arc<Vec<i64>>, events: Vec<u32>) -> KeyIndex {
        let hasher = ahash::RandomState::new();
        let mut starts = hashbrown::HashTable::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if i == 0 || keys[i - 1] != *k {
                starts.insert_unique(hasher.hash_one(k), i as u32, |&j: &u32| {
                    hasher.hash_one(keys[j as usize])
                });
            }
        }
        KeyIndex::Ints {
            keys,
            events,
            starts,
            hasher,
        }
    }
}

/// How a rule's key column resolved against a file's Arrow schema.
#[derive(Debug, Clone)]
pub struct ResolvedKey {
    /// The type values are compared as (dictionaries unpacked, string kinds unified).
    pub compare_type: DataType,
    /// The path goes through a list: any element may match.
    pub through_list: bool,
}

impl<'e> Matcher<'e> {
    pub fn new(spec: &TableSpec, events: &'e Events) -> Self {
        let rules = spec
            .matches
            .iter()
            .map(|m| RuleSubjects {
                spec: m.clone(),
                paths: m.key_paths(),
                subjects: events.by_type.get(&m.subject_type),
            })
            .collect();
        Matcher {
            rules,
            redact: match spec.action {
                crate::spec::Action::Redact => spec.redact.clone(),
                crate::spec::Action::Delete => Vec::new(),
            },
            compiled: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Subject ids that could not be converted, summed over the rules and schemas seen.
    pub fn unconvertible(&self) -> u64 {
        self.compiled
            .lock()
            .map(|c| c.values().map(|l| l.unconvertible).sum())
            .unwrap_or(0)
    }

    /// Checks every rule against a file's Arrow schema (used by `validate` and before a scan).
    pub fn check_schema(
        &self,
        schema: &Schema,
    ) -> std::result::Result<Vec<Vec<ResolvedKey>>, String> {
        for c in &self.redact {
            let field = schema
                .field_with_name(c)
                .map_err(|_| format!("redact column {c:?} does not exist"))?;
            if !field.is_nullable() {
                return Err(format!(
                    "redact column {c:?} is required (non-nullable): its values cannot be set to null"
                ));
            }
        }
        self.rules
            .iter()
            .map(|r| {
                let keys = r
                    .paths
                    .iter()
                    .map(|p| resolve_key(schema, p, r.spec.normalize))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                if r.spec.is_composite() && keys.iter().any(|k| k.through_list) {
                    return Err(format!(
                        "match {}: a composite key cannot contain a list column",
                        r.spec.label()
                    ));
                }
                Ok(keys)
            })
            .collect()
    }

    /// Checks the rules against a file's schema and returns each rule's lookup table.
    fn lookups_for(&self, schema: &Schema, table: &str, file: &str) -> Result<Vec<Arc<Lookup>>> {
        let resolved = self
            .check_schema(schema)
            .map_err(|m| Error::table(table, file, m))?;
        resolved
            .iter()
            .enumerate()
            .map(|(i, keys)| self.lookup(i, keys))
            .collect()
    }

    fn lookup(&self, rule: usize, keys: &[ResolvedKey]) -> Result<Arc<Lookup>> {
        let types: Vec<DataType> = keys.iter().map(|k| k.compare_type.clone()).collect();
        let key = (rule, types.clone());
        // Built under the lock: scans that need the same table wait for it rather than each
        // building its own (with ten million subjects, a table is hundreds of megabytes).
        let mut cache = self
            .compiled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l) = cache.get(&key) {
            return Ok(Arc::clone(l));
        }
        let r = &self.rules[rule];
        let top_level_scalar = r.paths.len() == 1 && r.paths[0].len() == 1 && !keys[0].through_list;
        let sortable = top_level_scalar && r.spec.normalize.is_none();
        // CPU work of up to seconds (ten million subjects): on a multi-threaded runtime the
        // other tasks move off this thread meanwhile.
        let build = || build_lookup(r, &types, sortable);
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        let lookup = Arc::new(if multi_thread {
            tokio::task::block_in_place(build)?
        } else {
            build()?
        });
        cache.insert(key, Arc::clone(&lookup));
        Ok(lookup)
    }

    /// Finds the rows of one file to erase. `file` is for messages.
    pub async fn scan<R>(&self, reader: R, table: &str, file: &str) -> Result<FilePlan>
    where
        R: AsyncFileReader + Clone + Unpin + Send + 'static,
    {
        // The footer alone first: the page index is loaded only if statistics and bloom
        // filters leave a row group to read (it prunes pages, below).
        let index_reader = reader.clone();
        let builder = ParquetRecordBatchStreamBuilder::new_with_options(reader, Default::default())
            .await
            .map_err(|e| read_error(table, file, "not a readable Parquet file", e))?;
        let mut metadata = Arc::clone(builder.metadata());
        refuse_encrypted(&metadata, table, file)?;
        let schema = Arc::clone(builder.schema());
        let lookups = self.lookups_for(&schema, table, file)?;

        let row_groups = metadata.row_groups();
        let rows: u64 = row_groups
            .iter()
            .map(|rg| rg.num_rows().max(0) as u64)
            .sum();
        let mut plan = FilePlan {
            path: file.to_string(),
            location: Path::default(),
            size: 0,
            etag: None,
            rows,
            pruned: false,
            erased: vec![Vec::new(); row_groups.len()],
            rows_matched: 0,
            bytes_read: 0,
            rows_skipped_by_page_index: 0,
            per_event: BTreeMap::new(),
            largest_row_group: row_groups
                .iter()
                .map(|rg| rg.compressed_size().max(0) as u64)
                .max()
                .unwrap_or(0),
        };
        // Row groups that statistics, then bloom filters, cannot rule out for at least one rule.
        let mut builder = builder;
        let mut selected: Vec<usize> = Vec::new();
        for (i, rg) in row_groups.iter().enumerate() {
            if rg.num_rows() <= 0 {
                continue;
            }
            let mut may_match = false;
            for (r, rule) in self.rules.iter().enumerate() {
                let lookup = &lookups[r];
                if lookup.keys.is_empty() || stats_rule_out(lookup, &rule.paths, rg, &metadata) {
                    continue;
                }
                if bloom_rule_out(&mut builder, lookup, &rule.paths, &metadata, i).await {
                    continue;
                }
                may_match = true;
                break;
            }
            if may_match {
                selected.push(i);
            }
        }
        if selected.is_empty() {
            plan.pruned = true;
            return Ok(plan);
        }
        let has_page_index = selected.iter().any(|&i| {
            metadata
                .row_group(i)
                .columns()
                .iter()
                .any(|c| c.column_index_offset().is_some() && c.offset_index_offset().is_some())
        });
        if has_page_index {
            let mut index_reader = index_reader;
            let mut loader = ParquetMetaDataReader::new_with_metadata((*metadata).clone())
                .with_page_index_policy(PageIndexPolicy::Optional);
            let loaded = match loader.load_page_index(&mut index_reader).await {
                Ok(()) => loader.finish(),
                Err(e) => Err(e),
            };
            let loaded =
                loaded.map_err(|e| read_error(table, file, "cannot read the page index", e))?;
            metadata = Arc::new(loaded);
            let with_index =
                ArrowReaderMetadata::try_new(Arc::clone(&metadata), Default::default())
                    .map_err(|e| read_error(table, file, "cannot read the page index", e))?;
            builder = ParquetRecordBatchStreamBuilder::new_with_metadata(index_reader, with_index);
        }
        let row_groups = metadata.row_groups();

        let parquet_schema = builder.parquet_schema();
        let roots: BTreeSet<usize> = self
            .key_roots()
            .into_iter()
            .filter_map(|name| {
                parquet_schema
                    .root_schema()
                    .get_fields()
                    .iter()
                    .position(|f| f.name() == name)
            })
            .collect();
        let mask = ProjectionMask::roots(parquet_schema, roots);
        // Within the selected row groups, the rows of pages the page index rules out for every
        // rule are not read; `segments` maps the rows read back to their positions.
        let mut kept: Vec<Range<usize>> = Vec::new();
        let mut at = 0usize;
        for &i in &selected {
            let n = row_groups[i].num_rows() as usize;
            match self.page_rows(&lookups, &metadata, i) {
                Some(ranges) => kept.extend(ranges.into_iter().map(|r| at + r.start..at + r.end)),
                None => kept.push(at..at + n),
            }
            at += n;
        }
        let read_rows: usize = kept.iter().map(|r| r.len()).sum();
        plan.rows_skipped_by_page_index = (at - read_rows) as u64;
        let mut segments: Vec<(u64, u64)> = Vec::with_capacity(kept.len());
        let mut out = 0u64;
        for r in &kept {
            segments.push((out, r.start as u64));
            out += r.len() as u64;
        }
        let mut builder = builder
            .with_projection(mask)
            .with_row_groups(selected.clone())
            .with_batch_size(8192);
        if read_rows < at {
            builder = builder
                .with_row_selection(RowSelection::from_consecutive_ranges(kept.into_iter(), at));
        }
        let mut stream = builder
            .build()
            .map_err(|e| read_error(table, file, "cannot read key columns", e))?;

        // Map positions in the selected rows back to (row group, row).
        let starts: Vec<u64> = selected
            .iter()
            .scan(0u64, |acc, &i| {
                let s = *acc;
                *acc += row_groups[i].num_rows() as u64;
                Some(s)
            })
            .collect();
        let mut offset = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| read_error(table, file, "cannot read key columns", e))?;
            let mut hits = self.match_batch(&batch, &lookups, table, file)?;
            self.drop_already_redacted(&batch, &mut hits);
            for (row, evs) in hits {
                let read = offset + row as u64;
                let seg = segments.partition_point(|&(o, _)| o <= read) - 1;
                let pos = segments[seg].1 + (read - segments[seg].0);
                let k = starts.partition_point(|&s| s <= pos) - 1;
                plan.erased[selected[k]].push((pos - starts[k]) as u32);
                plan.rows_matched += 1;
                for e in evs {
                    *plan.per_event.entry(e).or_default() += 1;
                }
            }
            offset += batch.num_rows() as u64;
        }
        Ok(plan)
    }

    /// The rows of row group `i` that the page index cannot rule out for some rule (ascending,
    /// disjoint), or `None` when every row must be read (no page index, or a rule it cannot
    /// judge: a nested or normalised key, an unordered type).
    fn page_rows(
        &self,
        lookups: &[Arc<Lookup>],
        metadata: &ParquetMetaData,
        i: usize,
    ) -> Option<Vec<Range<usize>>> {
        let (ci, oi) = (metadata.column_index()?, metadata.offset_index()?);
        let rows = metadata.row_group(i).num_rows() as usize;
        let mut kept: Vec<Range<usize>> = Vec::new();
        for (r, rule) in self.rules.iter().enumerate() {
            let lookup = &lookups[r];
            if lookup.keys.is_empty() {
                continue;
            }
            let sorted = lookup.sorted.as_ref()?;
            let leaf = top_level_leaf(metadata, &rule.paths[0][0])?;
            let (index, locations) = (ci.get(i)?.get(leaf)?, &oi.get(i)?.get(leaf)?.page_locations);
            if matches!(index, ColumnIndexMetaData::NONE) || locations.is_empty() {
                return None;
            }
            for (k, loc) in locations.iter().enumerate() {
                let start = usize::try_from(loc.first_row_index).ok()?;
                let end = locations
                    .get(k + 1)
                    .map_or(Some(rows), |l| usize::try_from(l.first_row_index).ok())?;
                if !page_rule_out(sorted, index, k, metadata, leaf) {
                    kept.push(start..end.min(rows));
                }
            }
        }
        kept.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(kept.len());
        for r in kept {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        Some(merged)
    }

    /// The top-level columns the rules (and redact) read: all a scan needs to project.
    pub fn key_roots(&self) -> Vec<String> {
        let mut roots: Vec<String> = self
            .rules
            .iter()
            .flat_map(|r| r.paths.iter().map(|p| p[0].clone()))
            .chain(self.redact.iter().cloned())
            .collect();
        roots.sort();
        roots.dedup();
        roots
    }

    /// Counts the rows of `batches` (key columns of one file, read by any reader) that match,
    /// with the same rules and conversions `scan` uses. `file` is for messages.
    pub fn count_matches(&self, batches: &[RecordBatch], table: &str, file: &str) -> Result<u64> {
        let Some(first) = batches.first() else {
            return Ok(0);
        };
        let lookups = self.lookups_for(&first.schema(), table, file)?;
        let mut n = 0;
        for batch in batches {
            let mut hits = self.match_batch(batch, &lookups, table, file)?;
            self.drop_already_redacted(batch, &mut hits);
            n += hits.len() as u64;
        }
        Ok(n)
    }

    /// Under redact, a row whose redacted columns are all null already is done.
    fn drop_already_redacted(
        &self,
        batch: &RecordBatch,
        hits: &mut BTreeMap<usize, BTreeSet<u32>>,
    ) {
        if self.redact.is_empty() {
            return;
        }
        let redacted: Vec<&ArrayRef> = self
            .redact
            .iter()
            .filter_map(|c| batch.column_by_name(c))
            .collect();
        hits.retain(|row, _| redacted.iter().any(|a| a.is_valid(*row)));
    }

    /// The rows of `batch` that match, each with the events whose subjects it matched.
    fn match_batch(
        &self,
        batch: &RecordBatch,
        lookups: &[Arc<Lookup>],
        table: &str,
        file: &str,
    ) -> Result<BTreeMap<usize, BTreeSet<u32>>> {
        let mut hits: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
        for (r, rule) in self.rules.iter().enumerate() {
            let lookup = &lookups[r];
            if lookup.keys.is_empty() {
                continue;
            }
            let mut columns = Vec::with_capacity(rule.paths.len());
            let mut row_of: Option<Vec<u32>> = None;
            for path in &rule.paths {
                let (values, map) = extract(batch, path).map_err(|m| {
                    Error::table(table, file, format!("match {}: {m}", rule.spec.label()))
                })?;
                let values = to_compare_type(&values, rule.spec.normalize).map_err(|e| {
                    Error::arrow(
                        format!("table {table}: {file}: match {}", rule.spec.label()),
                        e,
                    )
                })?;
                columns.push(values);
                if map.is_some() {
                    row_of = map;
                }
            }
            if let KeyIndex::Ints {
                keys,
                events,
                starts,
                hasher,
            } = &lookup.keys
            {
                let Some(values) = columns[0].as_primitive_opt::<arrow::datatypes::Int64Type>()
                else {
                    return Err(Error::table(
                        table,
                        file,
                        format!("match {}: key column is not Int64", rule.spec.label()),
                    ));
                };
                for i in 0..values.len() {
                    if values.is_null(i) {
                        continue;
                    }
                    let v = values.value(i);
                    let Some(&lo) = starts.find(hasher.hash_one(v), |&j| keys[j as usize] == v)
                    else {
                        continue;
                    };
                    let lo = lo as usize;
                    let n = keys[lo..].partition_point(|k| *k == v);
                    let target = row_of.as_ref().map_or(i as u32, |map| map[i]);
                    if target != u32::MAX {
                        hits.entry(target as usize)
                            .or_default()
                            .extend(events[lo..lo + n].iter().copied());
                    }
                }
                continue;
            }
            let KeyIndex::Rows(key_table) = &lookup.keys else {
                continue;
            };
            let converted = lookup.converter.convert_columns(&columns).map_err(|e| {
                Error::arrow(
                    format!("table {table}: {file}: match {}", rule.spec.label()),
                    e,
                )
            })?;
            let valid = combined_nulls(&columns);
            for (i, row) in converted.iter().enumerate() {
                if valid.as_ref().is_some_and(|n| n.is_null(i)) {
                    continue;
                }
                if let Some(evs) = key_table.events_of(row.as_ref()) {
                    let target = match &row_of {
                        Some(map) => map[i],
                        None => i as u32,
                    };
                    if target != u32::MAX {
                        hits.entry(target as usize).or_default().extend(evs);
                    }
                }
            }
        }
        Ok(hits)
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

fn combined_nulls(columns: &[ArrayRef]) -> Option<NullBuffer> {
    columns.iter().fold(None, |acc, c| {
        NullBuffer::union(acc.as_ref(), c.logical_nulls().as_ref())
    })
}

/// Resolves a dotted key path against an Arrow schema.
pub fn resolve_key(
    schema: &Schema,
    path: &[String],
    normalize: Option<Normalize>,
) -> std::result::Result<ResolvedKey, String> {
    let shown = path.join(".");
    let first = schema.field_with_name(&path[0]).map_err(|_| {
        format!(
            "match column {shown:?} does not exist (columns: {})",
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let mut ty = first.data_type().clone();
    let mut through_list = false;
    for part in &path[1..] {
        while let DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) = &ty {
            through_list = true;
            ty = f.data_type().clone();
        }
        ty = match &ty {
            DataType::Struct(fields) => fields
                .iter()
                .find(|f| f.name() == part)
                .map(|f| f.data_type().clone())
                .ok_or_else(|| format!("match column {shown:?}: struct has no field {part:?}"))?,
            other => {
                return Err(format!(
                    "match column {shown:?}: cannot take field {part:?} of a non-struct ({other})"
                ));
            }
        };
    }
    while let DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) = &ty {
        through_list = true;
        ty = f.data_type().clone();
    }
    let compare_type = compare_type(&ty).ok_or_else(|| {
        format!(
            "match column {shown:?} has type {ty}, which cannot hold a subject id \
             (expected an integer, string, binary or fixed-size binary)"
        )
    })?;
    if normalize.is_some() && compare_type != DataType::Utf8 {
        return Err(format!(
            "match column {shown:?}: normalize needs a string column, found {ty}"
        ));
    }
    Ok(ResolvedKey {
        compare_type,
        through_list,
    })
}

/// The type a key column's values are compared as, or `None` if it cannot hold an id.
fn compare_type(ty: &DataType) -> Option<DataType> {
    match ty {
        DataType::Dictionary(_, v) => compare_type(v),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Some(DataType::Binary),
        DataType::FixedSizeBinary(n) => Some(DataType::FixedSizeBinary(*n)),
        t if t.is_integer() => Some(t.clone()),
        _ => None,
    }
}

fn to_compare_type(
    values: &ArrayRef,
    normalize: Option<Normalize>,
) -> arrow::error::Result<ArrayRef> {
    let target = compare_type(values.data_type()).ok_or_else(|| {
        arrow::error::ArrowError::InvalidArgumentError(format!(
            "type {} cannot hold a subject id",
            values.data_type()
        ))
    })?;
    let cast = if values.data_type() == &target {
        Arc::clone(values)
    } else {
        arrow::compute::cast(values, &target)?
    };
    Ok(match normalize {
        None => cast,
        Some(n) => {
            let s = cast.as_string::<i32>();
            Arc::new(
                s.iter()
                    .map(|v| v.map(|v| normalize_value(n, v)))
                    .collect::<StringArray>(),
            )
        }
    })
}

/// Follows `path` into `batch`: struct fields by name, lists flattened. Returns the leaf
/// values and, when a list was flattened, the row each value belongs to (`u32::MAX` for a
/// value under a null list, which never matches).
fn extract(
    batch: &RecordBatch,
    path: &[String],
) -> std::result::Result<(ArrayRef, Option<Vec<u32>>), String> {
    let mut array = batch
        .column_by_name(&path[0])
        .cloned()
        .ok_or_else(|| format!("column {:?} missing from the batch", path[0]))?;
    let mut row_of: Option<Vec<u32>> = None;
    for part in &path[1..] {
        (array, row_of) = flatten_lists(array, row_of);
        let s = array
            .as_struct_opt()
            .ok_or_else(|| format!("{} is not a struct", path.join(".")))?;
        let child = s
            .column_by_name(part)
            .cloned()
            .ok_or_else(|| format!("no field {part:?} in {}", path.join(".")))?;
        // A child under a null struct is null, whatever its slot holds.
        let nulls = NullBuffer::union(s.nulls(), child.nulls());
        let data = child
            .to_data()
            .into_builder()
            .nulls(nulls)
            .build()
            .map_err(|e| e.to_string())?;
        array = make_array(data);
    }
    Ok(flatten_lists(array, row_of))
}

fn flatten_lists(
    mut array: ArrayRef,
    mut row_of: Option<Vec<u32>>,
) -> (ArrayRef, Option<Vec<u32>>) {
    loop {
        let flattened = match array.data_type() {
            DataType::List(_) => flatten_one(array.as_list::<i32>(), row_of.as_deref()),
            DataType::LargeList(_) => flatten_one(array.as_list::<i64>(), row_of.as_deref()),
            DataType::FixedSizeList(_, _) => {
                let l = array.as_fixed_size_list();
                let n = l.value_length() as usize;
                let map = (0..l.len())
                    .flat_map(|i| {
                        let row = if l.is_null(i) {
                            u32::MAX
                        } else {
                            row_of.as_ref().map_or(i as u32, |m| m[i])
                        };
                        std::iter::repeat_n(row, n)
                    })
                    .collect();
                (l.values().slice(l.offset() * n, l.len() * n), map)
            }
            _ => return (array, row_of),
        };
        array = flattened.0;
        row_of = Some(flattened.1);
    }
}

fn flatten_one<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    row_of: Option<&[u32]>,
) -> (ArrayRef, Vec<u32>) {
    let offsets = list.value_offsets();
    let start = offsets[0].as_usize();
    let end = offsets[offsets.len() - 1].as_usize();
    let mut map = vec![u32::MAX; end - start];
    for i in 0..list.len() {
        if list.is_null(i) {
            continue;
        }
        let row = row_of.map_or(i as u32, |m| m[i]);
        for slot in &mut map[offsets[i].as_usize() - start..offsets[i + 1].as_usize() - start] {
            *slot = row;
        }
    }
    (list.values().slice(start, end - start), map)
}

fn build_lookup(rule: &RuleSubjects<'_>, types: &[DataType], sortable: bool) -> Result<Lookup> {
    let label = rule.spec.label();
    let aerr = |e| Error::arrow(format!("match {label}: converting subject ids"), e);
    let converter = RowConverter::new(types.iter().map(|t| SortField::new(t.clone())).collect())
        .map_err(aerr)?;
    let batches = match rule.subjects {
        Some(s) => Some(s.batches(rule.spec.normalize)?),
        None => None,
    };
    if let [DataType::Int64] = types {
        // One Int64 key: sorted keys and their events, no row format, built batch by batch
        // (pairs sorted in place, then split: ~16 bytes a key at the peak).
        let mut pairs: Vec<(i64, u32)> = Vec::with_capacity(rule.subjects.map_or(0, |s| s.len()));
        let mut unconvertible = 0u64;
        for batch in batches.into_iter().flatten() {
            let batch = batch?;
            let col = convert_ids(&batch.ids, &DataType::Int64).map_err(aerr)?;
            let col = col.as_primitive::<arrow::datatypes::Int64Type>();
            for i in 0..col.len() {
                if col.is_valid(i) {
                    pairs.push((col.value(i), batch.events.value(i)));
                } else {
                    unconvertible += 1;
                }
            }
        }
        report_unconvertible(&label, unconvertible);
        pairs.sort_unstable();
        pairs.dedup();
        let key_events: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        // Collected in place (same alignment), then shrunk.
        let mut keys: Vec<i64> = pairs.into_iter().map(|p| p.0).collect();
        keys.shrink_to_fit();
        let keys = Arc::new(keys);
        return Ok(Lookup {
            converter,
            sorted: sortable.then(|| SortedKeys::Ints(Arc::clone(&keys))),
            keys: KeyIndex::ints(keys, key_events),
            unconvertible,
        });
    }
    // Any other key types: the ids are gathered, converted and encoded in Arrow's row format.
    let mut ids = Vec::new();
    let mut events: Vec<u32> = Vec::new();
    for batch in batches.into_iter().flatten() {
        let batch = batch?;
        events.extend(batch.events.values().iter());
        ids.push(batch.ids);
    }
    let values = match ids.len() {
        0 => StringArray::from(Vec::<Option<&str>>::new()),
        1 => ids.swap_remove(0),
        _ => {
            let parts: Vec<&dyn Array> = ids.iter().map(|a| a as &dyn Array).collect();
            let all = arrow::compute::concat(&parts).map_err(aerr)?;
            all.as_string::<i32>().clone()
        }
    };
    drop(ids);
    let values = &values;
    // One string column per key column: the ids themselves, or the parts of composite ids.
    let id_columns: Vec<StringArray> = if types.len() == 1 {
        vec![values.clone()]
    } else {
        let mut parts: Vec<Vec<Option<String>>> =
            vec![Vec::with_capacity(values.len()); types.len()];
        for value in values.iter() {
            let elems = value
                .and_then(|v| serde_json::from_str::<Vec<serde_json::Value>>(v).ok())
                .filter(|v| v.len() == types.len());
            for (k, col) in parts.iter_mut().enumerate() {
                col.push(elems.as_ref().and_then(|v| match &v[k] {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(x) => Some(x.to_string()),
                    _ => None,
                }));
            }
        }
        parts.into_iter().map(StringArray::from).collect()
    };
    let mut columns = Vec::with_capacity(types.len());
    for (col, ty) in id_columns.iter().zip(types) {
        columns.push(convert_ids(col, ty).map_err(aerr)?);
    }
    let valid = combined_nulls(&columns);
    let is_valid = |i: usize| valid.as_ref().is_none_or(|v| v.is_valid(i));
    let unconvertible = (0..values.len()).filter(|&i| !is_valid(i)).count() as u64;
    report_unconvertible(&label, unconvertible);
    let rows = converter.convert_columns(&columns).map_err(aerr)?;
    let keys = KeyIndex::Rows(KeyTable::new(rows, events, is_valid));
    let sorted = if sortable && !columns.is_empty() {
        sorted_keys(&columns[0])
    } else {
        None
    };
    Ok(Lookup {
        converter,
        keys,
        unconvertible,
        sorted,
    })
}

fn report_unconvertible(rule: &str, unconvertible: u64) {
    if unconvertible > 0 {
        tracing::debug!(
            rule,
            unconvertible,
            "subject ids that cannot convert to the key type match nothing"
        );
    }
}

/// Converts subject ids (strings) to a key type; ids that cannot convert become null.
fn convert_ids(ids: &StringArray, ty: &DataType) -> arrow::error::Result<ArrayRef> {
    match ty {
        DataType::Utf8 => Ok(Arc::new(ids.clone())),
        DataType::Binary => Ok(Arc::new(
            ids.iter()
                .map(|v| v.map(str::as_bytes))
                .collect::<BinaryArray>(),
        )),
        DataType::FixedSizeBinary(n) => {
            let n = *n as usize;
            let values: Vec<Option<Vec<u8>>> = ids
                .iter()
                .map(|v| v.and_then(|s| fixed_bytes(s, n)))
                .collect();
            Ok(Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(values.into_iter(), n as i32)?,
            ))
        }
        other => arrow::compute::cast_with_options(
            ids,
            other,
            &arrow::compute::CastOptions {
                safe: true,
                ..Default::default()
            },
        ),
    }
}

/// A subject id as `n` raw bytes: a UUID in text form for 16 bytes, else the id's own bytes.
fn fixed_bytes(s: &str, n: usize) -> Option<Vec<u8>> {
    if n == 16 {
        let hexed: String = s.chars().filter(|c| *c != '-').collect();
        if hexed.len() == 32
            && let Ok(b) = hex::decode(&hexed)
        {
            return Some(b);
        }
    }
    (s.len() == n).then(|| s.as_bytes().to_vec())
}

fn sorted_keys(column: &ArrayRef) -> Option<SortedKeys> {
    let ty = column.data_type();
    if matches!(
        ty,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    ) {
        let c = arrow::compute::cast(column, &DataType::Int64).ok()?;
        let a = c.as_primitive::<arrow::datatypes::Int64Type>();
        let mut v: Vec<i64> = a.iter().flatten().collect();
        v.sort_unstable();
        v.dedup();
        return Some(SortedKeys::Ints(Arc::new(v)));
    }
    if ty == &DataType::Utf8 {
        let a = column.as_string::<i32>();
        let mut v: Vec<Vec<u8>> = a.iter().flatten().map(|s| s.as_bytes().to_vec()).collect();
        v.sort_unstable();
        v.dedup();
        return Some(SortedKeys::Bytes(v));
    }
    None
}

/// The leaf column index of a single top-level column `name`, if it is one.
fn top_level_leaf(metadata: &ParquetMetaData, name: &str) -> Option<usize> {
    let schema = metadata.file_metadata().schema_descr();
    (0..schema.num_columns()).find(|&i| {
        let column = schema.column(i);
        let parts = column.path().parts();
        parts.len() == 1 && parts[0] == name
    })
}

/// Bloom filters are probed for at most this many erased values per rule and row group.
const BLOOM_PROBE_LIMIT: usize = 4096;

/// Whether the row group's bloom filter for the rule's column proves that none of the erased
/// values is in it. Same conditions as statistics pruning (single top-level column, values not
/// normalised); a missing or unreadable filter proves nothing (the data is read).
async fn bloom_rule_out<R>(
    builder: &mut ParquetRecordBatchStreamBuilder<R>,
    lookup: &Lookup,
    paths: &[Vec<String>],
    metadata: &ParquetMetaData,
    rg: usize,
) -> bool
where
    R: AsyncFileReader + Unpin + Send + 'static,
{
    let Some(sorted) = &lookup.sorted else {
        return false;
    };
    let Some(leaf) = top_level_leaf(metadata, &paths[0][0]) else {
        return false;
    };
    let chunk = metadata.row_group(rg).column(leaf);
    if chunk.bloom_filter_offset().is_none() {
        return false;
    }
    let physical = chunk.column_descr().physical_type();
    let probes = match sorted {
        SortedKeys::Ints(k) => k.len(),
        SortedKeys::Bytes(k) => k.len(),
    };
    if probes > BLOOM_PROBE_LIMIT {
        return false;
    }
    let Ok(Some(filter)) = builder.get_row_group_column_bloom_filter(rg, leaf).await else {
        return false;
    };
    let any_present = match (sorted, physical) {
        (SortedKeys::Ints(keys), PhysicalType::INT64) => keys.iter().any(|k| filter.check(k)),
        (SortedKeys::Ints(keys), PhysicalType::INT32) => keys
            .iter()
            .any(|k| i32::try_from(*k).map_or(true, |v| filter.check(&v))),
        (SortedKeys::Bytes(keys), PhysicalType::BYTE_ARRAY) => {
            keys.iter().any(|k| filter.check(k.as_slice()))
        }
        _ => true,
    };
    !any_present
}

/// Whether the row group's statistics prove that no erased value of this rule is in it.
/// Only single top-level signed-integer or string columns with trustworthy ordering qualify;
/// anything else returns `false` (read the data).
fn stats_rule_out(
    lookup: &Lookup,
    paths: &[Vec<String>],
    rg: &RowGroupMetaData,
    metadata: &ParquetMetaData,
) -> bool {
    let Some(sorted) = &lookup.sorted else {
        return false;
    };
    let Some(leaf) = top_level_leaf(metadata, &paths[0][0]) else {
        return false;
    };
    let Some(stats) = rg.column(leaf).statistics() else {
        return false;
    };
    let range = match stats {
        Statistics::Int32(s) => s
            .min_opt()
            .zip(s.max_opt())
            .map(|(&lo, &hi)| KeyRange::Ints(i64::from(lo), i64::from(hi))),
        Statistics::Int64(s) => s
            .min_opt()
            .zip(s.max_opt())
            .map(|(&lo, &hi)| KeyRange::Ints(lo, hi)),
        Statistics::ByteArray(_) => stats
            .min_bytes_opt()
            .zip(stats.max_bytes_opt())
            .map(|(lo, hi)| KeyRange::Bytes(lo, hi)),
        _ => None,
    };
    range.is_some_and(|range| no_key_in(sorted, range, metadata, leaf))
}

/// A column's min/max (chunk statistics or a page's column index entry), as keys compare.
enum KeyRange<'a> {
    Ints(i64, i64),
    Bytes(&'a [u8], &'a [u8]),
}

/// Whether none of the sorted erased keys falls in `range` of column `leaf`: only for signed
/// integers and byte arrays with unsigned order (otherwise false: the range proves nothing).
fn no_key_in(
    sorted: &SortedKeys,
    range: KeyRange<'_>,
    metadata: &ParquetMetaData,
    leaf: usize,
) -> bool {
    let descr = metadata.file_metadata().schema_descr().column(leaf);
    match (sorted, range) {
        (SortedKeys::Ints(keys), KeyRange::Ints(lo, hi)) if signed(&descr) => {
            !any_in_range(keys, &lo, &hi)
        }
        (SortedKeys::Bytes(keys), KeyRange::Bytes(lo, hi)) => {
            let ordered = matches!(
                metadata.file_metadata().column_order(leaf),
                ColumnOrder::TYPE_DEFINED_ORDER(SortOrder::UNSIGNED)
            );
            let i = keys.partition_point(|k| k.as_slice() < lo);
            ordered && !(i < keys.len() && keys[i].as_slice() <= hi)
        }
        _ => false,
    }
}

/// Whether page `k` of a column index can hold none of the sorted erased keys: all null, or a
/// min/max range (signed integers, byte arrays with unsigned order) containing none of them.
/// Truncated byte-array bounds still enclose the page's values, so the test stays safe.
fn page_rule_out(
    sorted: &SortedKeys,
    index: &ColumnIndexMetaData,
    k: usize,
    metadata: &ParquetMetaData,
    leaf: usize,
) -> bool {
    if index.is_null_page(k) {
        return true;
    }
    let range = match index {
        ColumnIndexMetaData::INT32(x) => x
            .min_value(k)
            .zip(x.max_value(k))
            .map(|(&lo, &hi)| KeyRange::Ints(i64::from(lo), i64::from(hi))),
        ColumnIndexMetaData::INT64(x) => x
            .min_value(k)
            .zip(x.max_value(k))
            .map(|(&lo, &hi)| KeyRange::Ints(lo, hi)),
        ColumnIndexMetaData::BYTE_ARRAY(x) => x
            .min_value(k)
            .zip(x.max_value(k))
            .map(|(lo, hi)| KeyRange::Bytes(lo, hi)),
        _ => None,
    };
    range.is_some_and(|range| no_key_in(sorted, range, metadata, leaf))
}

fn signed(descr: &parquet::schema::types::ColumnDescriptor) -> bool {
    matches!(
        descr.physical_type(),
        PhysicalType::INT32 | PhysicalType::INT64
    ) && match descr.logical_type_ref() {
        None => !matches!(
            descr.converted_type(),
            parquet::basic::ConvertedType::UINT_8
                | parquet::basic::ConvertedType::UINT_16
                | parquet::basic::ConvertedType::UINT_32
                | parquet::basic::ConvertedType::UINT_64
        ),
        Some(LogicalType::Integer(int)) => int.is_signed,
        Some(_) => false,
    }
}

fn any_in_range<T: Ord>(sorted: &[T], lo: &T, hi: &T) -> bool {
    let i = sorted.partition_point(|v| v < lo);
    i < sorted.len() && &sorted[i] <= hi
}

/// The Arrow schema of a Parquet footer, for `validate`.
pub fn arrow_schema(metadata: &ParquetMetaData) -> parquet::errors::Result<Schema> {
    parquet::arrow::parquet_to_arrow_schema(
        metadata.file_metadata().schema_descr(),
        metadata.file_metadata().key_value_metadata(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_check() {
        assert!(any_in_range(&[1, 5, 9], &4, &6));
        assert!(!any_in_range(&[1, 5, 9], &6, &8));
        assert!(!any_in_range::<i64>(&[], &0, &10));
    }

    #[test]
    fn uuid_and_raw_fixed_bytes() {
        let u = fixed_bytes("00112233-4455-6677-8899-aabbccddeeff", 16).unwrap();
        assert_eq!(u[0], 0x00);
        assert_eq!(u[15], 0xff);
        assert_eq!(fixed_bytes("abcd", 4).unwrap(), b"abcd");
        assert!(fixed_bytes("abc", 4).is_none());
    }
}
