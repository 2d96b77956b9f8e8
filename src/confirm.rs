//! Stage 6a, confirmations: what the erasure pipeline reads back to close its requests.
//!
//! A run that completes writes, just before its manifest, one Parquet file
//! `<confirmations>/job=<job>/run_id=<id>/part-0.parquet` with a row per event the run is
//! the first to confirm: the run's events (DataFusion, over the manifest's event snapshot)
//! anti-joined with the event ids already in the dataset. Only files of runs that completed
//! (that have a manifest) count, so a run that stopped between the two writes and was never
//! resumed confirms nothing; a resumed run derives its file again (runs that completed
//! meanwhile may have confirmed some of its events) and replaces it. Each row says
//! whether the run erased rows of the event's subject (`erased`, with the counts and tables from
//! the manifest's files), found none where tables have a rule for its subject type (`no_data`:
//! the run completed, so each of them was searched), or no table has such a rule (`no_rule`: a
//! subject type the pipeline sends that no table uses, or a typo). No subject id is ever
//! written.
//!
//! `run_id` is dictionary-encoded in the file so that readers adding the `run_id=` folder as a
//! hive partition (pyarrow, pandas, DuckDB, polars) merge it with the file's column.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int32Array, Int64Array, ListBuilder, RecordBatch,
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

/// The status of an event some of whose rows were kept: not final, the event is confirmed
/// again once the rows are erased.
pub const HELD: &str = "held";

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

/// The file of `job`'s `run_id` in the dataset at `loc`: keyed by job, so that jobs sharing a
/// location (and run ids such as the DAG's `{{ ds }}`) never meet.
pub fn file_path(loc: &Location, job: &str, run_id: &str) -> Path {
    loc.child(&run_file(job, run_id, false))
}

/// The run of `job` whose file `rel` (relative to the dataset) is: `job=<job>/run_id=<id>/…`,
/// or a file of the layout before files were keyed by job, `run_id=<id>/…` (its rows name
/// their job, and are filtered by it).
fn run_of<'a>(rel: &'a str, job: &str) -> Option<(&'a str, bool)> {
    let mut parts = rel.split('/');
    let first = parts.next()?;
    if let Some(run) = first.strip_prefix("run_id=") {
        return Some((run, true));
    }
    let run = parts.next()?.strip_prefix("run_id=")?;
    (first.strip_prefix("job=")? == job).then_some((run, false))
}

/// The path a run's file has relative to the dataset: keyed by job, or (`legacy`) under
/// `run_id=<id>/` alone.
pub fn run_file(job: &str, run_id: &str, legacy: bool) -> String {
    if legacy {
        format!("run_id={run_id}/part-0.parquet")
    } else {
        format!("job={job}/run_id={run_id}/part-0.parquet")
    }
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
        Field::new("job", dict.clone(), false),
        Field::new("run_id", dict, false),
        Field::new("manifest", DataType::Utf8, false),
        Field::new("manifest_sequence", DataType::Int64, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("rows_removed", DataType::Int64, false),
        Field::new("rows_redacted", DataType::Int64, false),
        Field::new_list("tables", Field::new_list_field(DataType::Utf8, true), false),
        Field::new("rows_held", DataType::Int64, false),
        Field::new_list(
            "held_bases",
            Field::new_list_field(DataType::Utf8, true),
            false,
        ),
        Field::new_list(
            "hold_ids",
            Field::new_list_field(DataType::Utf8, true),
            false,
        ),
        Field::new("held_since", utc_type(), true),
    ]))
}

fn utc_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// What a run did for one event, from its manifest's files and held rows.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub rows_removed: u64,
    pub rows_redacted: u64,
    /// Tables where rows were removed or redacted.
    pub tables: BTreeSet<String>,
    /// Rows kept under holds or exemptions, their bases and hold ids, and the earliest time a
    /// hold keeping them was placed.
    pub rows_held: u64,
    pub bases: BTreeSet<String>,
    pub hold_ids: BTreeSet<String>,
    pub held_since: Option<String>,
}

/// Per event id with a row removed, redacted or kept under a hold, what the manifest `m`
/// records of it.
pub fn tallies(m: &Manifest) -> BTreeMap<&str, Tally> {
    let mut out: BTreeMap<&str, Tally> = BTreeMap::new();
    for t in &m.tables {
        let Some(held) = &t.held else { continue };
        for (event, h) in &held.per_event {
            let tally = out.entry(event.as_str()).or_default();
            tally.rows_held += h.rows;
            if let Some(r) = held.retain.as_ref().filter(|_| h.retained) {
                tally.bases.insert(r.basis.name().to_string());
            }
            for id in &h.hold_ids {
                tally.hold_ids.insert(id.clone());
                let applied = m.holds.as_ref().and_then(|d| d.applied.get(id));
                if let Some(a) = applied {
                    tally.bases.insert(a.basis.name().to_string());
                    let earlier = tally
                        .held_since
                        .as_deref()
                        .is_none_or(|since| a.placed_at.as_str() < since);
                    if earlier {
                        tally.held_since = Some(a.placed_at.clone());
                    }
                }
            }
        }
    }
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
/// and returns what the manifest records of them. A file an earlier attempt of the run left
/// (no manifest refers to it yet) is derived again and replaced: runs that completed meanwhile
/// may have confirmed some of its events, and its sequence may have moved; with nothing left
/// to confirm it is deleted.
pub async fn write(
    job: &Job,
    m: &Manifest,
    manifest_url: &str,
    runs: &BTreeSet<String>,
) -> Result<ConfirmationsRecord> {
    use object_store::ObjectStoreExt;
    let now = m.finished_at.as_str();
    let loc = location(job)?;
    let path = file_path(&loc, &job.name, &m.run_id);
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
        match loc.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                return Err(Error::store(
                    format!("deleting stale confirmations {path}"),
                    e,
                ));
            }
        }
        tracing::info!("no event to confirm: every event of the run was confirmed before");
        return Ok(record);
    }
    let sha256 = manifest::sha256_hex(&bytes);
    // A temporary an interrupted attempt left beside the file (local disk) goes first.
    let folder = loc
        .folder(&format!("job={}", job.name))
        .folder(&format!("run_id={}", m.run_id));
    crate::store::clean_temporaries(&folder, |target| target == "part-0.parquet").await?;
    loc.store
        .put(&path, bytes.into())
        .await
        .map_err(|e| Error::store(format!("writing confirmations {path}"), e))?;
    record.file = Some(loc.object_url(&path));
    record.sha256 = Some(sha256);
    tracing::info!(file = %loc.object_url(&path), events = rows, "confirmations written");
    Ok(record)
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
    let (finals, held_before) = match confirmed {
        Some(c) => {
            let held = held_events(&c, &shown).await?;
            let finals = c.filter(col("status").not_eq(lit(HELD))).map_err(qerr)?;
            (Some(finals), held)
        }
        None => (None, BTreeSet::new()),
    };
    let mut stream = unconfirmed(&ctx, finals)
        .await?
        .sort_by(vec![col("event_id")])
        .map_err(qerr)?
        .execute_stream()
        .await
        .map_err(qerr)?;
    let tallies = tallies(m);
    let ruled = ruled_types(m);
    let mut writer = writer(file)?;
    let mut count = 0;
    while let Some(batch) = stream.next().await {
        let batch = rows(
            &batch.map_err(qerr)?,
            &tallies,
            ruled.as_ref(),
            &held_before,
            row,
            &shown,
        )?;
        count += batch.num_rows() as u64;
        writer.write(&batch).map_err(|e| Error::parquet(file, e))?;
    }
    let bytes = writer.into_inner().map_err(|e| Error::parquet(file, e))?;
    Ok((count, bytes))
}

/// The event ids `confirmed` (a frame of `event_id`, `status`) holds as `held`: few, and
/// collected.
async fn held_events(confirmed: &DataFrame, shown: &str) -> Result<BTreeSet<String>> {
    let qerr = |e| Error::query(shown, e);
    let batches = confirmed
        .clone()
        .filter(col("status").eq(lit(HELD)))
        .map_err(qerr)?
        .select(vec![col("event_id")])
        .map_err(qerr)?
        .collect()
        .await
        .map_err(qerr)?;
    let mut out = BTreeSet::new();
    for b in batches {
        let ids = arrow::compute::cast(b.column(0), &DataType::Utf8)
            .map_err(|e| Error::arrow(format!("confirmations at {shown}"), e))?;
        out.extend(ids.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
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
/// a manifest), as a frame of `event_id`, `status`, `run_id`, `held_bases`, `held_since`,
/// `confirmed_at`, `requested_at`; none when there is no such file.
pub async fn dataset(
    ctx: &SessionContext,
    loc: &Location,
    job: &str,
    runs: &BTreeSet<String>,
) -> Result<Option<DataFrame>> {
    // Files of the layout before the job key (`job` a plain string there) and of today's
    // (`job` dictionary-encoded, like `run_id`) are read apart and their columns unified.
    let (mut legacy, mut keyed) = (Vec::new(), Vec::new());
    for m in loc.list_files().await? {
        let rel = loc.relative(&m.location);
        match run_of(&rel, job) {
            // Only the file a run writes (the one its manifest records and `verify` checks):
            // any other file in a run's folder is no confirmation.
            Some((run, old)) if runs.contains(run) && rel == run_file(job, run, old) => {
                if old {
                    legacy.push(loc.object_url(&m.location));
                } else {
                    keyed.push(loc.object_url(&m.location));
                }
            }
            _ => {}
        }
    }
    ctx.register_object_store(&loc.store_url(), Arc::clone(&loc.store));
    let shown = loc.url.to_string();
    let qerr = |e| Error::query(&shown, e);
    let mut out: Option<DataFrame> = None;
    for files in [legacy, keyed] {
        if files.is_empty() {
            continue;
        }
        let utf8 = |c: &str| datafusion::prelude::cast(col(c), DataType::Utf8).alias(c);
        let df = ctx
            .read_parquet(files, ParquetReadOptions::default().file_extension(""))
            .await
            .map_err(qerr)?;
        // Files written before holds existed have no held columns: null there.
        let schema = df.schema().clone();
        let or_null = |c: &str, ty: DataType| {
            if schema.has_column_with_unqualified_name(c) {
                datafusion::prelude::cast(col(c), ty).alias(c)
            } else {
                datafusion::prelude::cast(lit(datafusion::scalar::ScalarValue::Null), ty).alias(c)
            }
        };
        let bases_type = DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        let df = df
            .select(vec![
                col("event_id"),
                col("status"),
                utf8("run_id"),
                utf8("job"),
                or_null("held_bases", bases_type),
                or_null("held_since", utc_type()),
                col("confirmed_at"),
                col("requested_at"),
            ])
            .map_err(qerr)?
            .filter(col("job").eq(lit(job)))
            .map_err(qerr)?
            .select(vec![
                col("event_id"),
                col("status"),
                col("run_id"),
                col("held_bases"),
                col("held_since"),
                datafusion::prelude::cast(col("confirmed_at"), utc_type()).alias("confirmed_at"),
                datafusion::prelude::cast(col("requested_at"), utc_type()).alias("requested_at"),
            ])
            .map_err(qerr)?;
        out = Some(match out {
            None => df,
            Some(prev) => prev.union(df).map_err(qerr)?,
        });
    }
    Ok(out)
}

/// The subject types some table of the run `m` has a rule for; `None` for a manifest written
/// before tables recorded them (its events were confirmed `erased` or `no_data` only).
pub fn ruled_types(m: &Manifest) -> Option<BTreeSet<&str>> {
    let mut out = BTreeSet::new();
    for t in &m.tables {
        out.extend(t.subject_types.as_ref()?.iter().map(String::as_str));
    }
    Some(out)
}

/// The status of an event: `held` when rows of its subject were kept under a hold or an
/// exemption (the rest erased; not final), `erased` when the run removed or redacted rows of
/// its subject, `no_rule` when no table has a rule for its subject type (nothing was searched
/// for it), `no_data` otherwise (every table with a rule for it was searched by the completed
/// run).
pub fn status(
    tally: Option<&Tally>,
    subject_type: Option<&str>,
    ruled: Option<&BTreeSet<&str>>,
) -> &'static str {
    match (tally, subject_type, ruled) {
        (Some(t), _, _) if t.rows_held > 0 => HELD,
        (Some(_), _, _) => "erased",
        (None, _, None) => "no_data",
        (None, Some(t), Some(ruled)) if ruled.contains(t) => "no_data",
        (None, _, Some(_)) => "no_rule",
    }
}

/// The file rows of a batch of unconfirmed events (`event_id`, `subject_type`,
/// `requested_at`). An event confirmed `held` before (`held_before`) that is still held is left
/// out: it was confirmed so already, and is confirmed again once its status is final.
fn rows(
    batch: &RecordBatch,
    tallies: &BTreeMap<&str, Tally>,
    ruled: Option<&BTreeSet<&str>>,
    held_before: &BTreeSet<String>,
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
    let lists = |f: fn(&Tally) -> &BTreeSet<String>| {
        let mut list = ListBuilder::new(StringBuilder::new())
            .with_field(Arc::new(Field::new_list_field(DataType::Utf8, true)));
        for t in &found {
            for name in t.iter().flat_map(|t| f(t)) {
                list.values().append_value(name);
            }
            list.append(true);
        }
        Arc::new(list.finish()) as ArrayRef
    };
    let repeat = |s: &str| Arc::new(StringArray::from(vec![s; n])) as ArrayRef;
    let count = |f: fn(&Tally) -> u64| {
        Arc::new(Int64Array::from_iter_values(
            found.iter().map(|t| t.map_or(0, |t| f(t) as i64)),
        )) as ArrayRef
    };
    let one = |value: &str| {
        Arc::new(DictionaryArray::<Int32Type>::new(
            Int32Array::from(vec![0; n]),
            Arc::new(StringArray::from(vec![value])),
        )) as ArrayRef
    };
    let type_names = types.as_string::<i32>();
    let statuses: Vec<&str> = (0..n)
        .map(|i| {
            let subject_type = type_names.is_valid(i).then(|| type_names.value(i));
            status(found[i], subject_type, ruled)
        })
        .collect();
    let keep: arrow::array::BooleanArray = (0..n)
        .map(|i| Some(!(statuses[i] == HELD && held_before.contains(ids.value(i)))))
        .collect();
    let since = StringArray::from_iter(found.iter().map(|t| t.and_then(|t| t.held_since.clone())));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids.clone()),
        types,
        Arc::new(requested),
        Arc::new(TimestampMicrosecondArray::from(vec![row.confirmed_at; n]).with_timezone("UTC")),
        one(row.job),
        one(row.run_id),
        repeat(row.manifest),
        Arc::new(Int64Array::from(vec![row.sequence; n])),
        Arc::new(StringArray::from(statuses)),
        count(|t| t.rows_removed),
        count(|t| t.rows_redacted),
        lists(|t| &t.tables),
        count(|t| t.rows_held),
        lists(|t| &t.bases),
        lists(|t| &t.hold_ids),
        Arc::new(requested_at_utc(&(Arc::new(since) as ArrayRef)).map_err(aerr)?),
    ];
    let all = RecordBatch::try_new(schema(), columns).map_err(aerr)?;
    arrow::compute::filter_record_batch(&all, &keep).map_err(aerr)
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
