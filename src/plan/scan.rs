//! Matching one file: its footer, what pruning leaves of it, its key columns read and looked
//! up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, RecordBatch, make_array,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Schema};
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, RowSelection};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::page_index::column_index::ColumnIndexMetaData;

use super::*;
use crate::error::{Error, Result};
use crate::events::{Events, Subjects};
use crate::spec::{MatchSpec, Normalize, TableSpec};

/// The match rules of one table, with the subjects each rule looks for.
pub struct Matcher<'e> {
    pub(super) rules: Vec<RuleSubjects<'e>>,
    /// `action = "redact"`: the columns nulled in matching rows. A row whose redacted columns
    /// are all null already is not matched again.
    pub(super) redact: Vec<String>,
    /// Lookup tables per (rule, key types): built once per distinct schema.
    pub(super) compiled: std::sync::Mutex<HashMap<LookupKey, Arc<Lookup>>>,
    /// A key or redact column a file does not have is all null there (a table with a log whose
    /// schema gained the column after the file was written), rather than an error.
    pub(super) absent_is_null: bool,
    /// What is held in the table (legal holds on subjects, the table's exemption): matched
    /// rows it covers are kept and counted, not erased.
    pub(super) held: Option<Arc<crate::holds::TableHolds>>,
    /// The events the holds were matched against (to name them in the record).
    pub(super) events: &'e Events,
    /// The subjects held in the table, matched on their own (a row is kept when it holds
    /// one), and the holds keeping each of their pseudo events.
    pub(super) held_subjects: Option<(Box<Matcher<'e>>, &'e [Vec<u32>])>,
}

/// A rule index and the key types a lookup was built for.
pub(super) type LookupKey = (usize, Vec<DataType>);

pub(super) struct RuleSubjects<'e> {
    pub(super) spec: MatchSpec,
    pub(super) paths: Vec<Vec<String>>,
    pub(super) subjects: Option<&'e Subjects>,
}

/// How a rule's key column resolved against a file's Arrow schema.
#[derive(Debug, Clone)]
pub struct ResolvedKey {
    /// The type values are compared as (dictionaries unpacked, string kinds unified).
    pub compare_type: DataType,
    /// The path goes through a list: any element may match.
    pub through_list: bool,
}

/// The rows a scan reads of its selected row groups, and how a position in what was read maps
/// back to a row of a row group.
struct ReadRows {
    /// The rows read, as ranges over the selected row groups taken as one run of rows.
    kept: Vec<Range<usize>>,
    /// The rows of the selected row groups, and those not read.
    total: usize,
    skipped: u64,
    /// Per kept range: where it starts in what is read, and in the run of rows.
    segments: Vec<(u64, u64)>,
    /// Where each selected row group starts in the run of rows.
    starts: Vec<u64>,
}

impl ReadRows {
    fn new(
        kept: Vec<Range<usize>>,
        selected: &[usize],
        row_groups: &[parquet::file::metadata::RowGroupMetaData],
    ) -> Self {
        let mut starts = Vec::with_capacity(selected.len());
        let mut total = 0u64;
        for &i in selected {
            starts.push(total);
            total += row_groups[i].num_rows() as u64;
        }
        let mut segments = Vec::with_capacity(kept.len());
        let mut read = 0u64;
        for r in &kept {
            segments.push((read, r.start as u64));
            read += r.len() as u64;
        }
        ReadRows {
            kept,
            total: total as usize,
            skipped: total - read,
            segments,
            starts,
        }
    }

    /// The selected row group (its index in the selection) and the row within it of the
    /// `read`th row read.
    fn locate(&self, read: u64) -> (usize, u32) {
        let seg = self.segments.partition_point(|&(o, _)| o <= read) - 1;
        let pos = self.segments[seg].1 + (read - self.segments[seg].0);
        let k = self.starts.partition_point(|&s| s <= pos) - 1;
        (k, (pos - self.starts[k]) as u32)
    }
}

/// The file's metadata with its page index loaded, and a reader builder over it.
async fn with_page_index<R>(
    mut reader: R,
    metadata: &ParquetMetaData,
    table: &str,
    file: &str,
) -> Result<(Arc<ParquetMetaData>, ParquetRecordBatchStreamBuilder<R>)>
where
    R: AsyncFileReader + Unpin + Send + 'static,
{
    let failed = |e| read_error(table, file, "cannot read the page index", e);
    let mut loader = ParquetMetaDataReader::new_with_metadata(metadata.clone())
        .with_page_index_policy(PageIndexPolicy::Optional);
    loader.load_page_index(&mut reader).await.map_err(failed)?;
    let metadata = Arc::new(loader.finish().map_err(failed)?);
    let with_index =
        ArrowReaderMetadata::try_new(Arc::clone(&metadata), Default::default()).map_err(failed)?;
    Ok((
        metadata,
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, with_index),
    ))
}

/// Test hook (`LAKEPURGE_FAILPOINT=broken_matcher`, see `purge::failpoint`): every matcher of
/// the process ignores its table's last match rule, as a matching bug would, so that a test can
/// show that `verify --deep`, which does not use this code, catches it.
static BROKEN_MATCHER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Breaks every matcher made from now on in this process (tests only; see [`BROKEN_MATCHER`]).
pub fn break_matcher_for_tests() {
    tracing::warn!("failpoint broken_matcher: each table's last match rule is ignored");
    BROKEN_MATCHER.store(true, std::sync::atomic::Ordering::Relaxed);
}

impl<'e> Matcher<'e> {
    pub fn new(spec: &TableSpec, events: &'e Events) -> Self {
        let mut rules: Vec<RuleSubjects<'e>> = spec
            .matches
            .iter()
            .map(|m| RuleSubjects {
                spec: m.clone(),
                paths: m.key_paths(),
                subjects: events.by_type.get(&m.subject_type),
            })
            .collect();
        if BROKEN_MATCHER.load(std::sync::atomic::Ordering::Relaxed) && rules.len() > 1 {
            rules.pop();
        }
        let held = events
            .holds
            .as_ref()
            .map(|h| h.for_table(spec))
            .filter(|t| !t.is_empty())
            .map(Arc::new);
        let held_subjects = events
            .holds
            .as_ref()
            .and_then(|h| h.subjects_in(&spec.name))
            .map(|hs| {
                (
                    Box::new(Matcher::new(spec, &hs.events)),
                    hs.holds.as_slice(),
                )
            });
        Matcher {
            rules,
            redact: match spec.action {
                crate::spec::Action::Redact => spec.redact.clone(),
                crate::spec::Action::Delete => Vec::new(),
            },
            compiled: std::sync::Mutex::new(HashMap::new()),
            absent_is_null: false,
            held,
            events,
            held_subjects,
        }
    }

    /// The holds keeping matched row `row` (indices into the held holds, or
    /// [`crate::holds::RETAIN`] for the table's exemption); `None` when the row is erased. A
    /// row is kept when it holds a subject held here (`held_hits`: the rows of the batch that
    /// match held subjects, by pseudo event), whatever else it matches: the hold preserves the
    /// row. Another subject of the same event does not keep a row.
    fn holding(
        &self,
        row: usize,
        held_hits: &BTreeMap<usize, BTreeSet<u32>>,
    ) -> Option<BTreeSet<u32>> {
        let held = self.held.as_ref()?;
        if held.retain.is_some() {
            return Some(BTreeSet::from([crate::holds::RETAIN]));
        }
        let (_, holds_of) = self.held_subjects.as_ref()?;
        let holds: BTreeSet<u32> = held_hits
            .get(&row)?
            .iter()
            .filter_map(|p| holds_of.get(*p as usize))
            .flatten()
            .copied()
            .collect();
        (!holds.is_empty()).then_some(holds)
    }

    /// The lookups of the held subjects for a file's schema (none when nothing is held here).
    fn held_lookups_for(
        &self,
        schema: &Schema,
        table: &str,
        file: &str,
    ) -> Result<Option<Vec<Arc<Lookup>>>> {
        match &self.held_subjects {
            Some((m, _)) => m.lookups_for(schema, table, file).map(Some),
            None => Ok(None),
        }
    }

    /// The rows of `batch` that hold a subject held here, by pseudo event.
    fn held_hits(
        &self,
        batch: &RecordBatch,
        lookups: Option<&Vec<Arc<Lookup>>>,
        table: &str,
        file: &str,
    ) -> Result<BTreeMap<usize, BTreeSet<u32>>> {
        match (&self.held_subjects, lookups) {
            (Some((m, _)), Some(l)) => m.match_batch(batch, l, table, file),
            _ => Ok(BTreeMap::new()),
        }
    }

    /// The record of the rows this matcher kept (`tally`, summed over the table's files).
    pub fn held_record(
        &self,
        tally: &crate::holds::HeldTally,
    ) -> Result<Option<crate::holds::HeldRecord>> {
        match (&self.events.holds, &self.held) {
            (Some(h), Some(here)) => h.record(tally, self.events, here),
            _ => Ok(None),
        }
    }

    /// The basis of a hold [`Matcher::holding`] returned.
    fn basis_of(&self, hold: u32) -> Option<crate::spec::Basis> {
        let held = self.held.as_ref()?;
        if hold == crate::holds::RETAIN {
            return held.retain;
        }
        held.basis.get(hold as usize).copied()
    }

    /// With `yes` (a table with a log, whose schema a file may predate): a match or redact
    /// column a file lacks holds only nulls there, so the rule matches nothing in it.
    pub fn absent_columns_null(mut self, yes: bool) -> Self {
        self.absent_is_null = yes;
        if let Some((m, _)) = self.held_subjects.as_mut() {
            m.absent_is_null = yes;
        }
        self
    }

    /// A matcher of the rules whose key columns `schema` has, the others passed over: for
    /// values that are not a file's rows, such as the statistics a table format's log keeps
    /// (see [`Matcher::count_matches`]).
    pub fn for_schema(&self, schema: &Schema) -> Matcher<'e> {
        Matcher {
            rules: self
                .rules
                .iter()
                .filter(|r| {
                    r.paths
                        .iter()
                        .all(|p| resolve_key(schema, p, r.spec.normalize).is_ok())
                })
                .map(|r| RuleSubjects {
                    spec: r.spec.clone(),
                    paths: r.paths.clone(),
                    subjects: r.subjects,
                })
                .collect(),
            redact: Vec::new(),
            compiled: std::sync::Mutex::new(HashMap::new()),
            absent_is_null: false,
            held: None,
            events: self.events,
            held_subjects: None,
        }
    }

    /// How many rows of `batch` (`what`, for errors) hold an erased subject. Every rule's key
    /// columns must be in it (see [`Matcher::for_schema`]).
    pub fn count_matches(&self, batch: &RecordBatch, what: &str) -> Result<usize> {
        let schema = batch.schema();
        let mut lookups = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let keys = r
                .paths
                .iter()
                .map(|p| resolve_key(&schema, p, r.spec.normalize))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|m| Error::Internal(format!("{what}: {m}")))?;
            lookups.push(self.lookup(i, &keys)?);
        }
        Ok(self.match_batch(batch, &lookups, "", what)?.len())
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
            let field = match schema.field_with_name(c) {
                Ok(field) => field,
                Err(_) if self.absent_is_null => continue,
                Err(_) => return Err(format!("redact column {c:?} does not exist")),
            };
            if !field.is_nullable() {
                return Err(format!(
                    "redact column {c:?} is required (non-nullable): its values cannot be set to null"
                ));
            }
        }
        self.rules
            .iter()
            .map(|r| {
                let absent = r
                    .paths
                    .iter()
                    .any(|p| schema.field_with_name(&p[0]).is_err());
                if self.absent_is_null && absent {
                    // No keys: the rule matches nothing in this file.
                    return Ok(Vec::new());
                }
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
    pub(super) fn lookups_for(
        &self,
        schema: &Schema,
        table: &str,
        file: &str,
    ) -> Result<Vec<Arc<Lookup>>> {
        let resolved = self
            .check_schema(schema)
            .map_err(|m| Error::table(table, file, m))?;
        resolved
            .iter()
            .enumerate()
            .map(|(i, keys)| match keys.is_empty() {
                true => Lookup::empty().map(Arc::new),
                false => self.lookup(i, keys),
            })
            .collect()
    }

    pub(super) fn lookup(&self, rule: usize, keys: &[ResolvedKey]) -> Result<Arc<Lookup>> {
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
        let held_lookups = self.held_lookups_for(&schema, table, file)?;

        let mut plan = FilePlan::unmatched(file, &metadata);
        let mut builder = builder;
        let selected = self
            .select_row_groups(&mut builder, &lookups, &metadata)
            .await;
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
            (metadata, builder) = with_page_index(index_reader, &metadata, table, file).await?;
        }
        let row_groups = metadata.row_groups();

        let mask = self.key_columns(builder.parquet_schema());
        let rows = ReadRows::new(
            self.kept_rows(&lookups, &metadata, &selected),
            &selected,
            row_groups,
        );
        plan.rows_skipped_by_page_index = rows.skipped;
        let mut builder = builder
            .with_projection(mask)
            .with_row_groups(selected.clone())
            .with_batch_size(8192);
        if rows.skipped > 0 {
            builder = builder.with_row_selection(RowSelection::from_consecutive_ranges(
                rows.kept.iter().cloned(),
                rows.total,
            ));
        }
        let mut stream = builder
            .build()
            .map_err(|e| read_error(table, file, "cannot read key columns", e))?;
        let mut offset = 0u64;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| read_error(table, file, "cannot read key columns", e))?;
            let mut hits = self.match_batch(&batch, &lookups, table, file)?;
            self.drop_already_redacted(&batch, &mut hits);
            let held_hits = if hits.is_empty() {
                BTreeMap::new()
            } else {
                self.held_hits(&batch, held_lookups.as_ref(), table, file)?
            };
            let at = |row: usize| {
                let (k, row) = rows.locate(offset + row as u64);
                (selected[k], row)
            };
            self.tally(&mut plan, hits, &held_hits, at);
            offset += batch.num_rows() as u64;
        }
        Ok(plan)
    }

    /// Adds a batch's matched rows (`hits`, each with its events) to `plan`: kept and counted
    /// when a hold keeps it (`held_hits`), else erased at its place (`at`: row group, row).
    fn tally(
        &self,
        plan: &mut FilePlan,
        hits: BTreeMap<usize, BTreeSet<u32>>,
        held_hits: &BTreeMap<usize, BTreeSet<u32>>,
        at: impl Fn(usize) -> (usize, u32),
    ) {
        for (row, evs) in hits {
            if let Some(holds) = self.holding(row, held_hits) {
                let bases = holds.iter().filter_map(|h| self.basis_of(*h)).collect();
                plan.held.add_row(&evs, &holds, &bases);
                continue;
            }
            let (group, row) = at(row);
            plan.erased[group].push(row);
            plan.rows_matched += 1;
            for e in evs {
                *plan.per_event.entry(e).or_default() += 1;
            }
        }
    }

    /// The projection of a file's schema to the top-level columns the rules (and redact) read.
    fn key_columns(
        &self,
        parquet_schema: &parquet::schema::types::SchemaDescriptor,
    ) -> ProjectionMask {
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
        ProjectionMask::roots(parquet_schema, roots)
    }

    /// Within the `selected` row groups (taken as one run of rows), the rows to read: those of
    /// pages the page index cannot rule out for some rule.
    fn kept_rows(
        &self,
        lookups: &[Arc<Lookup>],
        metadata: &ParquetMetaData,
        selected: &[usize],
    ) -> Vec<Range<usize>> {
        let mut kept: Vec<Range<usize>> = Vec::new();
        let mut at = 0usize;
        for &i in selected {
            let n = metadata.row_group(i).num_rows() as usize;
            match self.page_rows(lookups, metadata, i) {
                Some(ranges) => kept.extend(ranges.into_iter().map(|r| at + r.start..at + r.end)),
                None => kept.push(at..at + n),
            }
            at += n;
        }
        kept
    }

    /// The row groups that statistics, then bloom filters, cannot rule out for at least one
    /// rule.
    async fn select_row_groups<R>(
        &self,
        builder: &mut ParquetRecordBatchStreamBuilder<R>,
        lookups: &[Arc<Lookup>],
        metadata: &ParquetMetaData,
    ) -> Vec<usize>
    where
        R: AsyncFileReader + Unpin + Send + 'static,
    {
        let mut selected = Vec::new();
        for (i, rg) in metadata.row_groups().iter().enumerate() {
            if rg.num_rows() <= 0 {
                continue;
            }
            for (rule, lookup) in self.rules.iter().zip(lookups) {
                if lookup.keys.is_empty() || stats_rule_out(lookup, &rule.paths, rg, metadata) {
                    continue;
                }
                if bloom_rule_out(builder, lookup, &rule.paths, metadata, i).await {
                    continue;
                }
                selected.push(i);
                break;
            }
        }
        selected
    }

    /// The rows of row group `i` that the page index cannot rule out for some rule (ascending,
    /// disjoint), or `None` when every row must be read (no page index, or a rule it cannot
    /// judge: a nested or normalised key, an unordered type).
    pub(super) fn page_rows(
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
    pub(super) fn key_roots(&self) -> Vec<String> {
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

    /// Under redact, a row whose redacted columns are all null already is done.
    pub(super) fn drop_already_redacted(
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
    pub(super) fn match_batch(
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
            if matches!(lookup.keys, KeyIndex::Ints { .. }) {
                let Some(values) = columns[0].as_primitive_opt::<arrow::datatypes::Int64Type>()
                else {
                    return Err(Error::table(
                        table,
                        file,
                        format!("match {}: key column is not Int64", rule.spec.label()),
                    ));
                };
                match_ints(values, &lookup.keys, row_of.as_deref(), &mut hits);
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
/// Adds to `hits` the rows of `values` (an Int64 key column; `row_of` maps its values to
/// rows, for a list column) whose value an Int64 lookup `index` holds, with its events.
fn match_ints(
    values: &arrow::array::Int64Array,
    index: &KeyIndex,
    row_of: Option<&[u32]>,
    hits: &mut BTreeMap<usize, BTreeSet<u32>>,
) {
    let KeyIndex::Ints {
        keys,
        events,
        starts,
        hasher,
    } = index
    else {
        return;
    };
    for i in 0..values.len() {
        if values.is_null(i) {
            continue;
        }
        let v = values.value(i);
        let Some(&lo) = starts.find(hasher.hash_one(v), |&j| keys[j as usize] == v) else {
            continue;
        };
        let lo = lo as usize;
        let n = keys[lo..].partition_point(|k| *k == v);
        let target = row_of.map_or(i as u32, |map| map[i]);
        if target != u32::MAX {
            hits.entry(target as usize)
                .or_default()
                .extend(events[lo..lo + n].iter().copied());
        }
    }
}

pub(super) fn combined_nulls(columns: &[ArrayRef]) -> Option<NullBuffer> {
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
            crate::error::column_names(schema)
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

/// Follows `path` into `batch`: struct fields by name, lists flattened. Returns the leaf
/// values and, when a list was flattened, the row each value belongs to (`u32::MAX` for a
/// value under a null list, which never matches).
pub(super) fn extract(
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

pub(super) fn flatten_lists(
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

pub(super) fn flatten_one<O: OffsetSizeTrait>(
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
