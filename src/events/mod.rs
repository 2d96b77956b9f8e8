//! Stage 2, events: reads the erasure-event dataset with DataFusion.
//!
//! The dataset is every Parquet or NDJSON (optionally `.gz`) file under the events location,
//! hive partition folders included, with the column names the job spec gives. DataFusion casts
//! the columns to strings, drops rows without a usable subject id (counted as `skipped`),
//! de-duplicates (event, subject type, subject id) and sorts by event id. The normalised forms
//! a rule asks for (DataFusion's `lower` and `btrim` semantics) are made as the subjects are
//! read back.
//!
//! What the query returns is spilled as it streams, in Arrow IPC, to anonymous temporary files
//! (unlinked at creation: nothing is left behind, even by a killed run): the sorted event ids
//! and, per subject type, the subject ids with the event of each. Memory stays flat however
//! many events there are; the plan reads the subjects back in batches to build its key tables,
//! and the purge looks up the ids of the events that matched.
//!
//! No subject id ever leaves this module in a log line: only counts and event ids do.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{
    DataFrame, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext,
};
use futures::StreamExt;
use object_store::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::spec::{EventFormat, EventsSpec, Job, Normalize};
use crate::store::Location;

mod spill;

use spill::Spiller;
pub use spill::{EventIds, SubjectBatch, Subjects};

/// One event file of the snapshot a run applies.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct EventFile {
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// The memory DataFusion may use to read the events; its DISTINCT and sort spill to temporary
/// files past it, so erasure sets of any size are read within it (plus the compact arrays).
/// `LAKEPURGE_EVENTS_MEMORY` (bytes, at least 32 MiB: the sorts' merges need room) overrides
/// it.
const EVENTS_QUERY_MEMORY: usize = 128 << 20;

/// The erasure events a run applies.
#[derive(Debug, Clone)]
pub struct Events {
    pub location: String,
    pub files: Vec<EventFile>,
    /// Rows read from the dataset, duplicates included.
    pub rows: u64,
    /// Rows skipped for a null or empty subject id, event id or subject type.
    pub skipped: u64,
    /// Distinct event ids with a usable subject, sorted.
    pub event_ids: EventIds,
    /// Distinct subjects by subject type.
    pub by_type: BTreeMap<String, Subjects>,
    pub max_requested_at: Option<String>,
    /// sha256 over the sorted distinct event ids, newline-separated.
    pub digest: String,
    /// The holds in force at the run's start: a held subject's rows are kept where its hold
    /// applies (see [`crate::holds`]); the plan's matcher consults them.
    pub holds: Option<Arc<crate::holds::Held>>,
}

/// Normalises a table value the way DataFusion's `lower` and `btrim` normalised the events:
/// `lower` is Unicode lowercasing, `btrim` strips spaces (U+0020) from both ends.
pub fn normalize_value(normalize: Normalize, value: &str) -> String {
    match normalize {
        Normalize::Lowercase => value.to_lowercase(),
        Normalize::Trim => value.trim_matches(' ').to_string(),
        Normalize::LowercaseTrim => value.trim_matches(' ').to_lowercase(),
    }
}

fn is_event_file(format: EventFormat, name: &str) -> Option<FileCompressionType> {
    let lower = name.to_ascii_lowercase();
    match format {
        EventFormat::Parquet => lower
            .ends_with(".parquet")
            .then_some(FileCompressionType::UNCOMPRESSED),
        EventFormat::Ndjson => {
            let (stem, compression) = match lower.strip_suffix(".gz") {
                Some(stem) => (stem.to_string(), FileCompressionType::GZIP),
                None => (lower.clone(), FileCompressionType::UNCOMPRESSED),
            };
            [".json", ".ndjson", ".jsonl"]
                .iter()
                .any(|ext| stem.ends_with(ext))
                .then_some(compression)
        }
    }
}

/// Resolves the events location of `job`.
pub fn location(job: &Job) -> Result<Location> {
    Location::parse(&job.events.location, &job.dir, &job.events.storage_options)
        .map_err(|m| Error::spec(job.file.display(), format!("events.location: {m}")))
}

/// Lists the event files under `loc` (the snapshot a run applies).
pub async fn list(spec: &EventsSpec, loc: &Location) -> Result<Vec<(ObjectMeta, EventFile)>> {
    list_format(spec.format, loc).await
}

/// Lists the files of `format` under `loc` (events, holds), with what a snapshot pins of each.
pub async fn list_format(
    format: EventFormat,
    loc: &Location,
) -> Result<Vec<(ObjectMeta, EventFile)>> {
    let files = loc.list_files().await?;
    Ok(files
        .into_iter()
        .filter(|m| is_event_file(format, m.location.as_ref()).is_some())
        .map(|m| {
            let f = EventFile {
                path: loc.relative(&m.location),
                size: m.size,
                etag: m.e_tag.clone(),
            };
            (m, f)
        })
        .collect())
}

/// Reads, checks, normalises and de-duplicates the event dataset of `job`.
pub async fn load(job: &Job) -> Result<Events> {
    load_snapshot(job, None).await
}

/// Like [`load`], restricted to the event files of `snapshot` when given (the files a manifest
/// recorded); a file of the snapshot that is gone is an error naming it.
pub async fn load_snapshot(job: &Job, snapshot: Option<&[EventFile]>) -> Result<Events> {
    let (loc, listed) = snapshot_files(job, snapshot).await?;
    let mut events = Events {
        location: loc.url.to_string(),
        files: listed.iter().map(|(_, f)| f.clone()).collect(),
        ..Events::default()
    };
    if listed.is_empty() {
        tracing::warn!(
            location = %loc,
            format = ?job.events.format,
            "no event files at the events location: nothing to erase (check events.location \
             and events.format)"
        );
        return Ok(events);
    }
    let ctx = session(&loc, events_memory())?;
    register(&ctx, &job.events, &loc, &listed).await?;
    let shown = loc.url.to_string();
    read_stats(&ctx, &job.events, &loc, &listed, &mut events).await?;
    (events.event_ids, events.digest, events.by_type) = spill_distinct(&ctx, &shown).await?;
    drop(ctx);
    give_back_freed_memory();
    tracing::info!(
        location = %loc,
        files = events.files.len(),
        rows = events.rows,
        skipped = events.skipped,
        events = events.event_ids.len(),
        "read erasure events"
    );
    Ok(events)
}

/// The events location of `job` and its event files, restricted to `snapshot` when given (a
/// file of the snapshot that is gone is an error naming it).
pub async fn snapshot_files(
    job: &Job,
    snapshot: Option<&[EventFile]>,
) -> Result<(Location, Vec<(ObjectMeta, EventFile)>)> {
    let loc = location(job)?;
    let mut listed = list(&job.events, &loc).await?;
    if let Err(gone) = pin(&mut listed, snapshot) {
        return Err(Error::events(
            &loc,
            format!("event file {gone} of the snapshot is gone"),
        ));
    }
    Ok((loc, listed))
}

/// Restricts `listed` to the files of `snapshot` when given; `Err` names a file of the
/// snapshot that is not listed (gone).
pub fn pin(
    listed: &mut Vec<(ObjectMeta, EventFile)>,
    snapshot: Option<&[EventFile]>,
) -> std::result::Result<(), String> {
    let Some(files) = snapshot else {
        return Ok(());
    };
    listed.retain(|(_, f)| files.iter().any(|s| s.path == f.path));
    match files
        .iter()
        .find(|s| !listed.iter().any(|(_, f)| f.path == s.path))
    {
        Some(gone) => Err(gone.path.clone()),
        None => Ok(()),
    }
}

/// [`pin`], and each file must be as the snapshot recorded it (its size, and its etag where
/// both know one): `Err` says which file is gone or changed. For datasets whose content no
/// digest pins (the holds): a file rewritten in place would change what a run applies.
pub fn pin_exact(
    listed: &mut Vec<(ObjectMeta, EventFile)>,
    snapshot: Option<&[EventFile]>,
) -> std::result::Result<(), String> {
    pin(listed, snapshot).map_err(|gone| format!("{gone} is gone"))?;
    for s in snapshot.unwrap_or_default() {
        let Some((_, now)) = listed.iter().find(|(_, f)| f.path == s.path) else {
            continue;
        };
        let etag_changed = matches!((&s.etag, &now.etag), (Some(a), Some(b)) if a != b);
        if now.size != s.size || etag_changed {
            return Err(format!(
                "{} changed since it was read ({} bytes then, {} now{})",
                s.path,
                s.size,
                now.size,
                if etag_changed { ", another etag" } else { "" }
            ));
        }
    }
    Ok(())
}

/// A DataFusion session over the event files `listed` (at least one), registered as the view
/// `events` with the standard column names (`event_id`, `subject_type`, `subject_id`,
/// `requested_at`): for the queries of `status` and the confirmations. Their joins and
/// groupings merge spilled runs of both sides at once, so they get [`JOIN_MEMORY_FACTOR`]
/// times the events pool (a purge runs them after its rewrites, when their memory is free).
pub async fn query(
    spec: &EventsSpec,
    loc: &Location,
    listed: &[(ObjectMeta, EventFile)],
) -> Result<SessionContext> {
    let ctx = session(loc, events_memory() * JOIN_MEMORY_FACTOR)?;
    register(&ctx, spec, loc, listed).await?;
    Ok(ctx)
}

/// See [`query`].
pub const JOIN_MEMORY_FACTOR: usize = 4;

/// Registers the event files `listed` in `ctx` as the view `events`.
async fn register(
    ctx: &SessionContext,
    spec: &EventsSpec,
    loc: &Location,
    listed: &[(ObjectMeta, EventFile)],
) -> Result<()> {
    let df = events_frame(ctx, spec, loc, listed).await?;
    ctx.register_table("events", df.into_view())
        .map_err(|e| Error::events(&loc.url, e))?;
    Ok(())
}

/// The error of a query over the events view that failed reading the files: bad input named
/// with its file (an NDJSON file whose column types disagree with the others...).
pub async fn read_error(
    ctx: &SessionContext,
    spec: &EventsSpec,
    loc: &Location,
    listed: &[(ObjectMeta, EventFile)],
    error: datafusion::error::DataFusionError,
) -> Error {
    match spec.format {
        EventFormat::Ndjson => ndjson_error(ctx, loc, listed, error).await,
        EventFormat::Parquet => Error::events(&loc.url, error),
    }
}

/// The condition a usable event row meets (the others are skipped as malformed).
pub const USABLE: &str = "event_id IS NOT NULL AND subject_type IS NOT NULL \
                          AND subject_id IS NOT NULL AND btrim(subject_id) <> ''";

/// The events pool: `LAKEPURGE_EVENTS_MEMORY` (bytes, at least 32 MiB), else
/// [`EVENTS_QUERY_MEMORY`].
fn events_memory() -> usize {
    std::env::var("LAKEPURGE_EVENTS_MEMORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EVENTS_QUERY_MEMORY)
        .max(32 << 20)
}

/// A DataFusion session for event queries, within its own memory pool of `memory` bytes:
/// past it, DISTINCT, groupings and sorts spill.
fn session(loc: &Location, memory: usize) -> Result<SessionContext> {
    let pool = datafusion::execution::memory_pool::FairSpillPool::new(memory);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .build_arc()
        .map_err(|e| Error::events(loc, e))?;
    // A few partitions, each holding back 1 MiB (not DataFusion's 10 MB) of the pool for the
    // merge of its spilled sort runs, so a small pool still spills rather than failing.
    let partitions = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut config = SessionConfig::new().with_target_partitions(partitions);
    config.options_mut().execution.sort_spill_reservation_bytes = 1 << 20;
    // Joins (the confirmations' anti-join, `status`) as sort-merge joins: their sorts spill
    // past the pool, where a hash join's table of the other side must fit in it.
    config.options_mut().optimizer.prefer_hash_join = false;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_object_store(&loc.store_url(), Arc::clone(&loc.store));
    Ok(ctx)
}

/// The event files as one DataFrame with the standard column names. Each read is projected
/// once: the NDJSON reads (plain and gzip) are projected apart, then united.
async fn events_frame(
    ctx: &SessionContext,
    spec: &EventsSpec,
    loc: &Location,
    listed: &[(ObjectMeta, EventFile)],
) -> Result<DataFrame> {
    let shown = loc.url.to_string();
    let urls = |compression: Option<FileCompressionType>| -> Vec<String> {
        listed
            .iter()
            .filter(|(m, _)| {
                compression.is_none()
                    || is_event_file(spec.format, m.location.as_ref()) == compression
            })
            .map(|(m, _)| loc.object_url(&m.location))
            .collect()
    };
    if spec.format == EventFormat::Parquet {
        let df = ctx
            .read_parquet(urls(None), ParquetReadOptions::default().file_extension(""))
            .await
            .map_err(|e| Error::events(&shown, e))?;
        return project_columns(df, spec, &shown);
    }
    let mut united: Option<DataFrame> = None;
    for compression in [FileCompressionType::UNCOMPRESSED, FileCompressionType::GZIP] {
        let urls = urls(Some(compression));
        if urls.is_empty() {
            continue;
        }
        let opts = JsonReadOptions::default()
            .file_extension("")
            .file_compression_type(compression);
        let frame = match ctx.read_json(urls, opts).await {
            Ok(frame) => project_columns(frame, spec, &shown)?,
            Err(e) => return Err(ndjson_error(ctx, loc, listed, e).await),
        };
        united = Some(match united {
            None => frame,
            Some(acc) => acc.union(frame).map_err(|e| Error::events(&shown, e))?,
        });
    }
    united.ok_or_else(|| Error::events(&shown, "no NDJSON files"))
}

/// Counts the event rows, those skipped (a null or empty id or type) and the latest request
/// time into `events`. The first query reads every row: a malformed NDJSON line shows up here,
/// and is named with its file.
async fn read_stats(
    ctx: &SessionContext,
    spec: &EventsSpec,
    loc: &Location,
    listed: &[(ObjectMeta, EventFile)],
    events: &mut Events,
) -> Result<()> {
    let shown = loc.url.to_string();
    let stats = ctx
        .sql(&format!(
            "SELECT count(*) AS n, sum(CASE WHEN {USABLE} THEN 0 ELSE 1 END) AS skipped, \
             CAST(max(requested_at) AS VARCHAR) AS max_requested_at FROM events"
        ))
        .await
        .map_err(|e| Error::events(&shown, e))?
        .collect()
        .await;
    let stats = match stats {
        Ok(stats) => stats,
        Err(e) if spec.format == EventFormat::Ndjson => {
            return Err(ndjson_error(ctx, loc, listed, e).await);
        }
        Err(e) => return Err(Error::events(&shown, e)),
    };
    if let Some(batch) = stats.first() {
        events.rows = int_at(batch, 0, &shown)?;
        events.skipped = int_at(batch, 1, &shown)?;
        let max = string_column(batch, 2, &shown)?;
        events.max_requested_at = max.first().cloned().flatten();
    }
    Ok(())
}

/// Distinct (event, type, subject) rows in event id order, streamed: DataFusion spills the
/// DISTINCT and the sort to temporary files past its memory pool, and each batch goes on to
/// the spilled files as it comes (event ids once each, subjects by type).
async fn spill_distinct(
    ctx: &SessionContext,
    shown: &str,
) -> Result<(EventIds, String, BTreeMap<String, Subjects>)> {
    let qerr = |e| Error::events(shown, e);
    let mut stream = ctx
        .sql(&format!(
            "SELECT DISTINCT event_id, subject_type, subject_id FROM events \
             WHERE {USABLE} ORDER BY event_id"
        ))
        .await
        .map_err(qerr)?
        .execute_stream()
        .await
        .map_err(qerr)?;
    let aerr = |e| Error::arrow(format!("events at {shown}"), e);
    let mut spill = Spiller::new(shown)?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(qerr)?;
        let cols = (0..3)
            .map(|i| {
                arrow::compute::cast(batch.column(i), &DataType::Utf8)
                    .map(|c| c.as_string::<i32>().clone())
                    .map_err(aerr)
            })
            .collect::<Result<Vec<_>>>()?;
        for row in 0..batch.num_rows() {
            spill.push(cols[0].value(row), cols[1].value(row), cols[2].value(row))?;
        }
    }
    spill.finish()
}

/// The error of a failed read of several NDJSON files, naming the file at fault: each file is
/// read again alone (only on this error path) and the first that fails is named with its own
/// error; if none fails alone, the error names the location.
async fn ndjson_error(
    ctx: &SessionContext,
    loc: &Location,
    listed: &[(ObjectMeta, EventFile)],
    error: datafusion::error::DataFusionError,
) -> Error {
    // Out of memory is not a file's fault: said as DataFusion says it (exit 1).
    if matches!(
        error.find_root(),
        datafusion::error::DataFusionError::ResourcesExhausted(_)
    ) {
        return Error::query(&loc.url, error);
    }
    for (m, f) in listed {
        let Some(compression) = is_event_file(EventFormat::Ndjson, m.location.as_ref()) else {
            continue;
        };
        let opts = JsonReadOptions::default()
            .file_extension("")
            .file_compression_type(compression);
        let failed = match ctx.read_json(loc.object_url(&m.location), opts).await {
            Ok(df) => df.count().await.err(),
            Err(e) => Some(e),
        };
        if let Some(e) = failed {
            return Error::events(
                format!("{}{}", loc.url, f.path),
                format!(
                    "cannot read NDJSON (a malformed line, or a column mixing JSON types?): {}",
                    crate::error::without_values(&e.to_string())
                ),
            );
        }
    }
    Error::events(
        &loc.url,
        format!(
            "cannot read NDJSON (does a column mix JSON types across files?): {}",
            crate::error::without_values(&error.to_string())
        ),
    )
}

/// Returns the heap memory freed so far to the OS. The event query's buffers (its pool, the
/// JSON reader, the sort's merges) are spread over the threads' allocator arenas, which keep
/// freed memory for reuse; the plan's key tables that come next are large single blocks that
/// would not reuse it, so without this the process would hold both at once.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe in glibc.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Default for Events {
    fn default() -> Events {
        Events {
            location: String::new(),
            files: Vec::new(),
            rows: 0,
            skipped: 0,
            event_ids: EventIds::default(),
            by_type: BTreeMap::new(),
            max_requested_at: None,
            digest: digest(std::iter::empty()),
            holds: None,
        }
    }
}

impl Events {
    /// How many distinct events the run applies.
    pub fn count(&self) -> usize {
        self.event_ids.len()
    }

    /// A set of subjects that is not read from an event dataset (`discover`'s probes): each
    /// id of each type becomes an event of its own, numbered in the order given, so that a
    /// match's event index says which id it was.
    pub fn from_subjects<'a>(
        what: &str,
        types: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Result<Events> {
        let mut spill = Spiller::new(what)?;
        let mut n: u64 = 0;
        for (ty, ids) in types {
            for id in ids {
                spill.push(&format!("{n:012}"), ty, id)?;
                n += 1;
            }
        }
        let (event_ids, digest, by_type) = spill.finish()?;
        Ok(Events {
            location: what.to_string(),
            rows: n,
            event_ids,
            by_type,
            digest,
            ..Events::default()
        })
    }
}

/// The digest of a sorted list of distinct event ids.
pub fn digest<'a>(event_ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for id in event_ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Checks the event columns exist with usable types and renames them to the standard names.
fn project_columns(df: DataFrame, spec: &EventsSpec, shown: &str) -> Result<DataFrame> {
    use datafusion::prelude::{cast, ident};
    let wanted = [
        ("event_id", &spec.event_id, true),
        ("subject_type", &spec.subject_type, true),
        ("subject_id", &spec.subject_id, true),
        ("requested_at", &spec.requested_at, false),
    ];
    let schema = df.schema().clone();
    let mut exprs = Vec::new();
    for (standard, name, must_be_text) in wanted {
        let field = schema
            .fields()
            .iter()
            .find(|f| f.name() == name)
            .ok_or_else(|| {
                Error::events(
                    shown,
                    format!(
                        "missing column {name:?} (events.{standard}); the dataset has: {}",
                        crate::error::column_names(schema.as_arrow())
                    ),
                )
            })?;
        let ty = field.data_type();
        let base = match ty {
            DataType::Dictionary(_, v) => v.as_ref(),
            other => other,
        };
        let ok = if must_be_text {
            base.is_integer()
                || matches!(
                    base,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
        } else {
            base.is_temporal()
                || matches!(
                    base,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null
                )
        };
        if !ok {
            return Err(Error::events(
                shown,
                format!(
                    "column {name:?} (events.{standard}) has type {ty}, expected {}",
                    if must_be_text {
                        "a string or integer"
                    } else {
                        "a timestamp, date or string"
                    }
                ),
            ));
        }
        let expr = if must_be_text {
            cast(ident(name.as_str()), DataType::Utf8)
        } else {
            ident(name.as_str())
        };
        exprs.push(expr.alias(standard));
    }
    df.select(exprs).map_err(|e| Error::events(shown, e))
}

fn string_column(batch: &RecordBatch, i: usize, shown: &str) -> Result<Vec<Option<String>>> {
    let col = arrow::compute::cast(batch.column(i), &DataType::Utf8)
        .map_err(|e| Error::arrow(format!("events at {shown}"), e))?;
    let s = col.as_string::<i32>();
    Ok((0..s.len())
        .map(|r| s.is_valid(r).then(|| s.value(r).to_string()))
        .collect())
}

fn int_at(batch: &RecordBatch, i: usize, shown: &str) -> Result<u64> {
    let col = arrow::compute::cast(batch.column(i), &DataType::UInt64)
        .map_err(|e| Error::arrow(format!("events at {shown}"), e))?;
    let a = col.as_primitive::<arrow::datatypes::UInt64Type>();
    Ok(if a.is_empty() || a.is_null(0) {
        0
    } else {
        a.value(0)
    })
}

#[cfg(test)]
mod tests {
    use super::spill::{IDS_PER_BATCH, SUBJECTS_PER_BATCH};
    use super::*;

    #[test]
    fn normalisation_matches_datafusion_semantics() {
        assert_eq!(normalize_value(Normalize::Lowercase, " Ab "), " ab ");
        assert_eq!(normalize_value(Normalize::Trim, "  Ab \t"), "Ab \t");
        assert_eq!(normalize_value(Normalize::LowercaseTrim, " ÄB "), "äb");
    }

    #[test]
    fn spilled_events_read_back_exactly() {
        // More ids than one spilled batch holds, two subject types, more subjects than a
        // subject batch holds.
        let n = IDS_PER_BATCH * 2 + 7;
        let ids: Vec<String> = (0..n).map(|i| format!("ev-{i:06}")).collect();
        let mut spill = Spiller::new("test").unwrap();
        let mut emails = 0;
        for (i, id) in ids.iter().enumerate() {
            spill.push(id, "user_id", &i.to_string()).unwrap();
            for k in 0..(SUBJECTS_PER_BATCH / n + 1) {
                spill.push(id, "user_id", &format!("{i}-{k}")).unwrap();
            }
            if i % 3 == 0 {
                spill.push(id, "email", &format!(" A{i}@X.org ")).unwrap();
                emails += 1;
            }
        }
        let (event_ids, digest_hex, by_type) = spill.finish().unwrap();
        assert_eq!(event_ids.len(), n);
        assert_eq!(digest_hex, digest(ids.iter().map(String::as_str)));
        let picks = [0u32, 1, 4095, 4096, 4097, (n - 1) as u32];
        let names = event_ids.names(&picks).unwrap();
        let expected: Vec<&str> = picks.iter().map(|&i| ids[i as usize].as_str()).collect();
        assert_eq!(names, expected);
        assert!(event_ids.names(&[5, 2]).is_err(), "indices must ascend");
        assert!(event_ids.names(&[n as u32]).is_err(), "past the end");

        let users = &by_type["user_id"];
        let per_event = SUBJECTS_PER_BATCH / n + 2;
        assert_eq!(users.len(), n * per_event);
        let batches: Vec<SubjectBatch> = users.batches(None).unwrap().map(|b| b.unwrap()).collect();
        assert!(batches.len() > 1);
        let rows: Vec<(String, u32)> = batches
            .iter()
            .flat_map(|b| (0..b.ids.len()).map(|i| (b.ids.value(i).to_string(), b.events.value(i))))
            .collect();
        assert_eq!(rows.len(), users.len());
        assert_eq!(rows[0], ("0".to_string(), 0));
        assert_eq!(rows[per_event], ("1".to_string(), 1));
        assert_eq!(rows[rows.len() - 1].1, (n - 1) as u32);

        let mails = &by_type["email"];
        assert_eq!(mails.len(), emails);
        let first = mails
            .batches(Some(Normalize::LowercaseTrim))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(first.ids.value(1), "a3@x.org");
        assert_eq!(first.events.value(1), 3);

        let mut backwards = Spiller::new("test").unwrap();
        backwards.push("b", "t", "1").unwrap();
        assert!(backwards.push("a", "t", "2").is_err());
    }

    #[test]
    fn event_file_names() {
        assert!(
            is_event_file(EventFormat::Ndjson, "a/b.json.gz") == Some(FileCompressionType::GZIP)
        );
        assert!(is_event_file(EventFormat::Ndjson, "b.ndjson").is_some());
        assert!(is_event_file(EventFormat::Ndjson, "b.parquet").is_none());
        assert!(is_event_file(EventFormat::Parquet, "dt=1/b.snappy.parquet").is_some());
    }
}
