//! Stage 6a, confirmations: what the erasure pipeline reads back to close its requests.
//!
//! A run that completes writes, just before its manifest, one Parquet file
//! `<confirmations>/run_id=<id>/part-0.parquet` (create-only) with a row per event the run is
//! the first to confirm: the run's events (DataFusion, over the manifest's event snapshot)
//! anti-joined with the event ids already in the dataset. Only files of runs that completed
//! (that have a manifest) count, so a run that stopped between the two writes and was never
//! resumed confirms nothing; a resumed run finds its own file and keeps it. Each row says
//! whether the run erased rows of the event's subject (`erased`, with the counts and tables from
//! the manifest's files) or found none (`no_data`). No subject id is ever written.
//!
//! `run_id` is dictionary-encoded in the file so that readers adding the `run_id=` folder as a
//! hive partition (pyarrow, pandas, DuckDB, polars) merge it with the file's column.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, DictionaryArray, Int32Array, Int64Array, ListBuilder, RecordBatch,
    StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::JoinType;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, col, lit};
use futures::StreamExt;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::events::{self, USABLE};
use crate::manifest::{self, ConfirmationsRecord, Manifest};
use crate::spec::Job;
use crate::store::Location;

/// The folder of the default dataset, under the job's manifest folder.
pub const DEFAULT_FOLDER: &str = "confirmations";

/// The confirmations dataset of `job`: `[job] confirmations`, or
/// `<manifests>/<job>/confirmations/`.
pub fn location(job: &Job) -> Result<Location> {
    match &job.confirmations {
        Some(l) => Location::parse(l, &job.dir, &job.manifests_storage_options)
            .map_err(|m| Error::spec(job.file.display(), format!("job.confirmations: {m}"))),
        None => Ok(manifest::folder(job)?.folder(DEFAULT_FOLDER)),
    }
}

/// The file of `run_id` in the dataset at `loc`.
pub fn file_path(loc: &Location, run_id: &str) -> Path {
    loc.child(&format!("run_id={run_id}/part-0.parquet"))
}

/// The columns of a confirmations file.
pub fn schema() -> SchemaRef {
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("subject_type", DataType::Utf8, true),
        Field::new("requested_at", utc.clone(), true),
        Field::new("confirmed_at", utc, false),
        Field::new("job", DataType::Utf8, false),
        Field::new("run_id", dict, false),
        Field::new("manifest", DataType::Utf8, false),
        Field::new("manifest_sequence", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_removed", DataType::Int64, false),
        Field::new("rows_redacted", DataType::Int64, false),
        Field::new_list("tables", Field::new_list_field(DataType::Utf8, true), false),
    ]))
}

/// What a run did for one event, from its manifest's files.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub rows_removed: u64,
    pub rows_redacted: u64,
    pub tables: BTreeSet<String>,
}

/// Per event id with a row removed or redacted, what the manifest `m` records of it.
pub fn tallies(m: &Manifest) -> BTreeMap<&str, Tally> {
    let mut out: BTreeMap<&str, Tally> = BTreeMap::new();
    for t in &m.tables {
        for f in &t.files {
            let redacted = f.rows_redacted > 0;
            for (event, &n) in f.per_event.iter().filter(|(_, n)| **n > 0) {
                let tally = out.entry(event.as_str()).or_default();
                if redacted {
                    tally.rows_redacted += n;
                } else {
                    tally.rows_removed += n;
                }
                tally.tables.insert(t.name.clone());
            }
        }
    }
    out
}

/// Writes the confirmations of the completed run `m` (its manifest not yet written, to be at
/// `manifest_url`; confirmed at its `finished_at`) against those of the job's completed `runs`,
/// and returns what the manifest records of them. An earlier attempt's file for the run is
/// kept as it is.
pub async fn write(
    job: &Job,
    m: &Manifest,
    manifest_url: &str,
    runs: &BTreeSet<String>,
) -> Result<ConfirmationsRecord> {
    let now = m.finished_at.as_str();
    let loc = location(job)?;
    let path = file_path(&loc, &m.run_id);
    if let Some(done) = existing(&loc, &path).await? {
        tracing::info!(file = %done.file.as_deref().unwrap_or_default(), "confirmations written by an earlier attempt of this run");
        return Ok(done);
    }
    let confirmed_at = chrono::DateTime::parse_from_rfc3339(now)
        .map_err(|e| Error::Internal(format!("confirmation time {now:?}: {e}")))?
        .timestamp_micros();
    let row = RowValues {
        job: &job.name,
        run_id: &m.run_id,
        manifest: manifest_url,
        sequence: m.sequence as i64,
        confirmed_at,
    };
    let (rows, bytes) = first_confirmed(job, m, &loc, runs, &row, &loc.object_url(&path)).await?;
    let mut record = ConfirmationsRecord {
        location: loc.url.to_string(),
        file: None,
        rows,
        sha256: None,
    };
    if rows == 0 {
        tracing::info!("no event to confirm: every event of the run was confirmed before");
        return Ok(record);
    }
    let sha256 = manifest::sha256_hex(&bytes);
    let store = loc.store.as_ref();
    if !crate::store::put_if_absent(store, &path, bytes, "confirmations").await? {
        // A concurrent attempt of the run wrote it first.
        return existing(&loc, &path)
            .await?
            .ok_or_else(|| Error::Internal(format!("confirmations {path} vanished")));
    }
    record.file = Some(loc.object_url(&path));
    record.sha256 = Some(sha256);
    tracing::info!(file = %loc.object_url(&path), events = rows, "confirmations written");
    Ok(record)
}

/// The record of the run's file if an earlier attempt wrote it.
async fn existing(loc: &Location, path: &Path) -> Result<Option<ConfirmationsRecord>> {
    let Some(bytes) =
        crate::store::read_if_exists(loc.store.as_ref(), path, "confirmations").await?
    else {
        return Ok(None);
    };
    let url = loc.object_url(path);
    let meta = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&bytes)
        .map_err(|e| Error::parquet(&url, e))?;
    Ok(Some(ConfirmationsRecord {
        location: loc.url.to_string(),
        file: Some(url),
        rows: meta.file_metadata().num_rows() as u64,
        sha256: Some(manifest::sha256_hex(&bytes)),
    }))
}

/// The values every row of a run's file shares.
struct RowValues<'a> {
    job: &'a str,
    run_id: &'a str,
    manifest: &'a str,
    sequence: i64,
    confirmed_at: i64,
}

/// The run's file, encoded as its rows stream (only Parquet's compressed pages are held): its
/// events that no completed run of the job confirmed. Returns the rows and the bytes.
async fn first_confirmed(
    job: &Job,
    m: &Manifest,
    loc: &Location,
    runs: &BTreeSet<String>,
    row: &RowValues<'_>,
    file: &str,
) -> Result<(u64, Vec<u8>)> {
    let (events_loc, listed) = events::snapshot_files(job, Some(&m.events.files)).await?;
    if listed.is_empty() {
        return Ok((0, Vec::new()));
    }
    let ctx = events::query(&job.events, &events_loc, &listed).await?;
    let shown = events_loc.url.to_string();
    let qerr = |e| Error::query(&shown, e);
    let earlier: BTreeSet<String> = runs.iter().filter(|r| *r != &m.run_id).cloned().collect();
    let confirmed = dataset(&ctx, loc, &job.name, &earlier).await?;
    let mut stream = unconfirmed(&ctx, confirmed)
        .await?
        .sort_by(vec![col("event_id")])
        .map_err(qerr)?
        .execute_stream()
        .await
        .map_err(qerr)?;
    let tallies = tallies(m);
    let mut writer = writer(file)?;
    let mut count = 0;
    while let Some(batch) = stream.next().await {
        let batch = rows(&batch.map_err(qerr)?, &tallies, row, &shown)?;
        count += batch.num_rows() as u64;
        writer.write(&batch).map_err(|e| Error::parquet(file, e))?;
    }
    let bytes = writer.into_inner().map_err(|e| Error::parquet(file, e))?;
    Ok((count, bytes))
}

/// The distinct usable events of the view `events` (id, a subject type, the earliest request
/// time) that `confirmed` (a frame with `event_id`) does not hold.
pub async fn unconfirmed(ctx: &SessionContext, confirmed: Option<DataFrame>) -> Result<DataFrame> {
    let qerr = |e| Error::query("the event dataset", e);
    let events = ctx
        .sql(&format!(
            "SELECT event_id, min(subject_type) AS subject_type, \
             min(requested_at) AS requested_at FROM events WHERE {USABLE} GROUP BY event_id"
        ))
        .await
        .map_err(qerr)?;
    let Some(confirmed) = confirmed else {
        return Ok(events);
    };
    let confirmed = confirmed
        .select(vec![col("event_id").alias("confirmed_id")])
        .map_err(qerr)?;
    events
        .join(
            confirmed,
            JoinType::LeftAnti,
            &["event_id"],
            &["confirmed_id"],
            None,
        )
        .map_err(qerr)
}

/// The job's confirmations in the dataset at `loc`, from the files of `runs` only (runs with
/// a manifest), as a frame of `event_id`, `status`, `run_id`; none when there is no such file.
pub async fn dataset(
    ctx: &SessionContext,
    loc: &Location,
    job: &str,
    runs: &BTreeSet<String>,
) -> Result<Option<DataFrame>> {
    let files: Vec<String> = loc
        .list_files()
        .await?
        .into_iter()
        .filter(|m| {
            let rel = loc.relative(&m.location);
            rel.ends_with(".parquet")
                && rel
                    .split('/')
                    .next()
                    .and_then(|dir| dir.strip_prefix("run_id="))
                    .is_some_and(|run| runs.contains(run))
        })
        .map(|m| loc.object_url(&m.location))
        .collect();
    if files.is_empty() {
        return Ok(None);
    }
    ctx.register_object_store(&loc.store_url(), Arc::clone(&loc.store));
    let shown = loc.url.to_string();
    let qerr = |e| Error::query(&shown, e);
    let df = ctx
        .read_parquet(files, ParquetReadOptions::default().file_extension(""))
        .await
        .map_err(qerr)?
        .filter(col("job").eq(lit(job)))
        .map_err(qerr)?
        .select(vec![
            col("event_id"),
            col("status"),
            datafusion::prelude::cast(col("run_id"), DataType::Utf8).alias("run_id"),
        ])
        .map_err(qerr)?;
    Ok(Some(df))
}

/// The file rows of a batch of unconfirmed events (`event_id`, `subject_type`,
/// `requested_at`).
fn rows(
    batch: &RecordBatch,
    tallies: &BTreeMap<&str, Tally>,
    row: &RowValues<'_>,
    shown: &str,
) -> Result<RecordBatch> {
    let aerr = |e| Error::arrow(format!("events at {shown}"), e);
    let n = batch.num_rows();
    let ids = arrow::compute::cast(batch.column(0), &DataType::Utf8).map_err(aerr)?;
    let ids = ids.as_string::<i32>();
    let types = arrow::compute::cast(batch.column(1), &DataType::Utf8).map_err(aerr)?;
    let requested = requested_at_utc(batch.column(2)).map_err(aerr)?;
    let found: Vec<Option<&Tally>> = (0..n).map(|i| tallies.get(ids.value(i))).collect();
    let mut tables = ListBuilder::new(StringBuilder::new())
        .with_field(Arc::new(Field::new_list_field(DataType::Utf8, true)));
    for t in &found {
        for name in t.iter().flat_map(|t| &t.tables) {
            tables.values().append_value(name);
        }
        tables.append(true);
    }
    let repeat = |s: &str| Arc::new(StringArray::from(vec![s; n])) as ArrayRef;
    let count = |f: fn(&Tally) -> u64| {
        Arc::new(Int64Array::from_iter_values(
            found.iter().map(|t| t.map_or(0, |t| f(t) as i64)),
        )) as ArrayRef
    };
    let run_id = DictionaryArray::<Int32Type>::new(
        Int32Array::from(vec![0; n]),
        Arc::new(StringArray::from(vec![row.run_id])),
    );
    let status = StringArray::from_iter_values(
        found
            .iter()
            .map(|t| if t.is_some() { "erased" } else { "no_data" }),
    );
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.clone()),
        types,
        Arc::new(requested),
        Arc::new(TimestampMicrosecondArray::from(vec![row.confirmed_at; n]).with_timezone("UTC")),
        repeat(row.job),
        Arc::new(run_id),
        repeat(row.manifest),
        Arc::new(Int64Array::from(vec![row.sequence; n])),
        Arc::new(status),
        count(|t| t.rows_removed),
        count(|t| t.rows_redacted),
        Arc::new(tables.finish()),
    ];
    RecordBatch::try_new(schema(), columns).map_err(aerr)
}

/// A request time (timestamp, date or text) as a UTC timestamp; text that is not a time is
/// null.
pub fn requested_at_utc(
    column: &ArrayRef,
) -> std::result::Result<TimestampMicrosecondArray, arrow::error::ArrowError> {
    let target = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let opts = arrow::compute::CastOptions {
        safe: true,
        ..Default::default()
    };
    let cast = arrow::compute::cast_with_options(column, &target, &opts)?;
    Ok(cast
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .clone())
}

/// A writer of a confirmations file in memory (snappy, as every common reader reads).
fn writer(file: &str) -> Result<parquet::arrow::ArrowWriter<Vec<u8>>> {
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    parquet::arrow::ArrowWriter::try_new(Vec::new(), schema(), Some(props))
        .map_err(|e| Error::parquet(file, e))
}
