//! Stage 2, events: reads the erasure-event dataset with DataFusion.
//!
//! The dataset is every Parquet or NDJSON (optionally `.gz`) file under the events location,
//! hive partition folders included, with the column names the job spec gives. DataFusion casts
//! the columns to strings, drops rows without a usable subject id (counted as `skipped`),
//! computes the normalised forms of each id (`lower`, `btrim`) and de-duplicates. The result
//! is small: one entry per distinct (event, subject type, subject id).
//!
//! No subject id ever leaves this module in a log line: only counts and event ids do.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray, StringBuilder};
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

/// One event file of the snapshot a run applies.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct EventFile {
    pub path: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// The distinct subjects of one subject type, column-wise: the subject id as an Arrow string
/// array (compact, and handed to the type conversion as it is), its normalised forms made
/// when a rule first asks for them, and for each row the event it belongs to.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// Index into [`Events::event_ids`], per row.
    pub events: Vec<u32>,
    raw: StringArray,
    /// Lowercase, trim, lowercase + trim ([`normalize_value`]), made on first use.
    normalized: [std::sync::OnceLock<StringArray>; 3],
}

impl Subjects {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The subject ids as a rule with `normalize` compares them.
    pub fn values(&self, normalize: Option<Normalize>) -> &StringArray {
        let Some(n) = normalize else {
            return &self.raw;
        };
        let slot = match n {
            Normalize::Lowercase => 0,
            Normalize::Trim => 1,
            Normalize::LowercaseTrim => 2,
        };
        self.normalized[slot].get_or_init(|| {
            self.raw
                .iter()
                .map(|v| v.map(|s| normalize_value(n, s)))
                .collect()
        })
    }
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
    /// Distinct event ids with a usable subject, sorted (an Arrow array: ten million ids take
    /// 14 bytes each rather than 40 as `String`s).
    pub event_ids: StringArray,
    /// Distinct subjects by subject type.
    pub by_type: BTreeMap<String, Subjects>,
    pub max_requested_at: Option<String>,
    /// sha256 over the sorted distinct event ids, newline-separated.
    pub digest: String,
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
    let files = loc.list_files().await?;
    Ok(files
        .into_iter()
        .filter(|m| is_event_file(spec.format, m.location.as_ref()).is_some())
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
    let spec = &job.events;
    let loc = location(job)?;
    let mut listed = list(spec, &loc).await?;
    if let Some(files) = snapshot {
        listed.retain(|(_, f)| files.iter().any(|s| s.path == f.path));
        if let Some(missing) = files
            .iter()
            .find(|s| !listed.iter().any(|(_, f)| f.path == s.path))
        {
            return Err(Error::events(
                &loc,
                format!("event file {} of the snapshot is gone", missing.path),
            ));
        }
    }
    let mut events = Events {
        location: loc.url.to_string(),
        files: listed.iter().map(|(_, f)| f.clone()).collect(),
        ..Events::default()
    };
    if listed.is_empty() {
        tracing::info!(location = %loc, "event dataset is empty: nothing to erase");
        return Ok(events);
    }

    let memory = std::env::var("LAKEPURGE_EVENTS_MEMORY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(EVENTS_QUERY_MEMORY)
        .max(32 << 20);
    let pool = datafusion::execution::memory_pool::FairSpillPool::new(memory);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .build_arc()
        .map_err(|e| Error::events(&loc, e))?;
    // A few partitions, each holding back 1 MiB (not DataFusion's 10 MB) of the pool for the
    // merge of its spilled sort runs, so a small pool still spills rather than failing.
    let partitions = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut config = SessionConfig::new().with_target_partitions(partitions);
    config.options_mut().execution.sort_spill_reservation_bytes = 1 << 20;
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    ctx.register_object_store(&loc.store_url(), Arc::clone(&loc.store));
    let shown = loc.url.to_string();
    let qerr = |e| Error::events(&shown, e);
    let df = match spec.format {
        EventFormat::Parquet => {
            let urls: Vec<String> = listed
                .iter()
                .map(|(m, _)| loc.object_url(&m.location))
                .collect();
            ctx.read_parquet(urls, ParquetReadOptions::default().file_extension(""))
                .await
                .map_err(qerr)?
        }
        EventFormat::Ndjson => {
            let mut frames: Vec<DataFrame> = Vec::new();
            for compression in [FileCompressionType::UNCOMPRESSED, FileCompressionType::GZIP] {
                let urls: Vec<String> = listed
                    .iter()
                    .filter(|(m, _)| {
                        is_event_file(spec.format, m.location.as_ref()) == Some(compression)
                    })
                    .map(|(m, _)| loc.object_url(&m.location))
                    .collect();
                if urls.is_empty() {
                    continue;
                }
                let opts = JsonReadOptions::default()
                    .file_extension("")
                    .file_compression_type(compression);
                frames.push(ctx.read_json(urls, opts).await.map_err(|e| {
                    Error::events(
                        &shown,
                        format!("cannot read NDJSON (does a column mix JSON types?): {e}"),
                    )
                })?);
            }
            let mut frames = frames.into_iter();
            let first = frames
                .next()
                .ok_or_else(|| Error::events(&shown, "no NDJSON files"))?;
            let first = project_columns(first, spec, &shown)?;
            frames.try_fold(first, |acc, f| {
                let f = project_columns(f, spec, &shown)?;
                acc.union(f).map_err(|e| Error::events(&shown, e))
            })?
        }
    };
    let df = project_columns(df, spec, &shown)?;
    ctx.register_table("events", df.into_view()).map_err(qerr)?;

    let mut sizes = (0u64, 0u64);
    let stats = ctx
        .sql(
            "SELECT count(*) AS n, \
             sum(CASE WHEN event_id IS NULL OR subject_type IS NULL OR subject_id IS NULL \
                      OR btrim(subject_id) = '' THEN 1 ELSE 0 END) AS skipped, \
             CAST(max(requested_at) AS VARCHAR) AS max_requested_at, \
             sum(octet_length(event_id)) AS id_bytes, \
             sum(octet_length(subject_id)) AS subject_bytes FROM events",
        )
        .await
        .map_err(qerr)?
        .collect()
        .await
        .map_err(qerr)?;
    if let Some(batch) = stats.first() {
        events.rows = int_at(batch, 0, &shown)?;
        events.skipped = int_at(batch, 1, &shown)?;
        let max = string_column(batch, 2, &shown)?;
        events.max_requested_at = max.first().cloned().flatten();
        // Upper bounds for the compact arrays below, so they are allocated once.
        sizes = (int_at(batch, 3, &shown)?, int_at(batch, 4, &shown)?);
    }

    // Distinct (event, type, subject) rows in event id order, streamed: DataFusion spills the
    // DISTINCT and the sort to temporary files past its memory pool, and each batch goes into
    // compact arrays as it comes (event ids once each, subjects by type).
    let mut stream = ctx
        .sql(
            "SELECT DISTINCT event_id, subject_type, subject_id FROM events \
             WHERE event_id IS NOT NULL AND subject_type IS NOT NULL AND subject_id IS NOT NULL \
             AND btrim(subject_id) <> '' ORDER BY event_id",
        )
        .await
        .map_err(qerr)?
        .execute_stream()
        .await
        .map_err(qerr)?;
    let aerr = |e| Error::arrow(format!("events at {shown}"), e);
    let rows = usize::try_from(events.rows).unwrap_or(usize::MAX);
    let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    let mut ids = StringBuilder::with_capacity(rows, bytes(sizes.0));
    let mut last_id: Option<String> = None;
    let mut by_type: BTreeMap<String, (StringBuilder, Vec<u32>)> = BTreeMap::new();
    let mut count = 0u32;
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
            let (id, ty, subject) = (cols[0].value(row), cols[1].value(row), cols[2].value(row));
            if last_id.as_deref() != Some(id) {
                if last_id.as_deref().is_some_and(|last| last > id) {
                    return Err(Error::events(&shown, "event ids came back out of order"));
                }
                ids.append_value(id);
                last_id = Some(id.to_string());
                count = count
                    .checked_add(1)
                    .ok_or_else(|| Error::events(&shown, "more than 4 billion events"))?;
            }
            // The first subject type gets room for every subject (usually the only one).
            let room = by_type.is_empty();
            let (subjects, events_of) = by_type.entry(ty.to_string()).or_insert_with(|| {
                if room {
                    (
                        StringBuilder::with_capacity(rows, bytes(sizes.1)),
                        Vec::with_capacity(rows),
                    )
                } else {
                    (StringBuilder::new(), Vec::new())
                }
            });
            subjects.append_value(subject);
            events_of.push(count - 1);
        }
    }
    events.event_ids = ids.finish();
    events.event_ids.shrink_to_fit();
    events.digest = digest(events.event_ids.iter().flatten());
    for (subject_type, (mut raw, mut event_idx)) in by_type {
        let mut raw = raw.finish();
        raw.shrink_to_fit();
        event_idx.shrink_to_fit();
        events.by_type.insert(
            subject_type,
            Subjects {
                events: event_idx,
                raw,
                normalized: Default::default(),
            },
        );
    }
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

impl Default for Events {
    fn default() -> Events {
        Events {
            location: String::new(),
            files: Vec::new(),
            rows: 0,
            skipped: 0,
            event_ids: StringArray::from_iter_values(std::iter::empty::<&str>()),
            by_type: BTreeMap::new(),
            max_requested_at: None,
            digest: digest(std::iter::empty()),
        }
    }
}

impl Events {
    /// How many distinct events the run applies.
    pub fn count(&self) -> usize {
        self.event_ids.len()
    }

    /// The id of event `i` (an index [`Subjects::events`] holds).
    pub fn event_id(&self, i: u32) -> &str {
        self.event_ids.value(i as usize)
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
                        schema
                            .fields()
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
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
    use super::*;

    #[test]
    fn normalisation_matches_datafusion_semantics() {
        assert_eq!(normalize_value(Normalize::Lowercase, " Ab "), " ab ");
        assert_eq!(normalize_value(Normalize::Trim, "  Ab \t"), "Ab \t");
        assert_eq!(normalize_value(Normalize::LowercaseTrim, " ÄB "), "äb");
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
