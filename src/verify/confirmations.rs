//! The checks of a run's confirmations: its file is there with the recorded sha256; its rows
//! belong to the run and agree with the manifest's files (status, counts, tables); every event
//! whose rows the run erased or kept is confirmed, by this run or an earlier one (with a final
//! status where this run's is final); no event is confirmed twice in the job's dataset, but for
//! one `held` confirmation before its final one.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int64Type};
use datafusion::common::JoinType;
use datafusion::prelude::{SessionContext, col, lit};

use super::{Check, fail, ok};
use crate::confirm::{self, Tally};
use crate::error::{Error, Result};
use crate::manifest::{self, ConfirmationsRecord, Manifest};
use crate::store::Location;

/// Ids named in a failed check at most.
const NAMED: usize = 5;

/// The checks of `m`'s confirmations; `folder` holds the job's manifests. None for a manifest
/// that records no confirmations (written before they existed). `options` are the
/// confirmations store's.
pub async fn checks(
    folder: &Location,
    m: &Manifest,
    options: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<Check>> {
    let Some(rec) = &m.confirmations else {
        return Ok(Vec::new());
    };
    let loc =
        Location::parse(&rec.location, std::path::Path::new("."), options).map_err(|msg| {
            Error::Manifest {
                path: folder.url.to_string(),
                message: format!("confirmations.location: {msg}"),
            }
        })?;
    let tallies = confirm::tallies(m);
    let mut out = Vec::new();
    let mut in_file = HashSet::new();
    if rec.file.is_some() {
        match read_file(&loc, m, rec).await? {
            // The events the file should hold are not looked for elsewhere.
            Err(why) => return Ok(vec![fail(why)]),
            Ok(batches) => {
                out.push(ok(format!(
                    "confirmations: {} rows, sha256 as recorded",
                    rec.rows
                )));
                out.push(agree(&batches, m, &tallies, &mut in_file)?);
            }
        }
    }
    if let Some(stray) = stray_files(&loc, m).await? {
        out.push(stray);
    }
    let ctx = SessionContext::new();
    let runs = manifest::run_ids(folder).await?;
    let earlier: BTreeSet<String> = runs.iter().filter(|r| **r != m.run_id).cloned().collect();
    let missing: Vec<&str> = tallies
        .keys()
        .copied()
        .filter(|e| !in_file.contains(*e))
        .collect();
    // A held event may have been confirmed `held` before; an event whose rows this run erased
    // (and kept none) needs a final confirmation.
    let (held, done): (Vec<&str>, Vec<&str>) = missing
        .into_iter()
        .partition(|e| tallies.get(e).is_some_and(|t| t.rows_held > 0));
    out.push(confirmed_earlier(&ctx, &loc, m, &earlier, &done, true).await?);
    if !held.is_empty() {
        out.push(confirmed_earlier(&ctx, &loc, m, &earlier, &held, false).await?);
    }
    out.push(once(&ctx, &loc, m, &runs).await?);
    Ok(out)
}

/// A failed check naming the objects in the run's folders of the dataset that are not the
/// run's file (readers of the dataset would take their rows for confirmations); none when
/// there is none.
async fn stray_files(loc: &Location, m: &Manifest) -> Result<Option<Check>> {
    use futures::TryStreamExt;
    let mut stray = Vec::new();
    for legacy in [false, true] {
        let file = confirm::run_file(&m.job, &m.run_id, legacy);
        let folder = loc.child(file.trim_end_matches("part-0.parquet"));
        let listed: Vec<object_store::ObjectMeta> = loc
            .store
            .list(Some(&folder))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("listing {}", loc.object_url(&folder)), e))?;
        stray.extend(
            listed
                .into_iter()
                .filter(|o| {
                    let rel = loc.relative(&o.location);
                    // A temporary a killed write left is no reader's data (the next attempt
                    // deletes it).
                    rel != file && !crate::store::is_temporary(&rel)
                })
                .map(|o| loc.object_url(&o.location)),
        );
    }
    Ok((!stray.is_empty()).then(|| {
        fail(format!(
            "confirmations: {} objects in the run's folder are not its file (confirmations \
             no manifest records): {}",
            stray.len(),
            stray
                .iter()
                .take(NAMED)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }))
}

/// The run's file, checked against its record: `Err` says what is wrong.
async fn read_file(
    loc: &Location,
    m: &Manifest,
    rec: &ConfirmationsRecord,
) -> Result<std::result::Result<Vec<RecordBatch>, String>> {
    // The run's file, keyed by job; a manifest written before that layout names its file
    // under `run_id=<id>/` alone.
    let keyed = confirm::file_path(loc, &m.job, &m.run_id);
    let legacy = loc.child(&format!("run_id={}/part-0.parquet", m.run_id));
    let Some(path) = [keyed.clone(), legacy]
        .into_iter()
        .find(|p| rec.file.as_deref() == Some(loc.object_url(p).as_str()))
    else {
        return Ok(Err(format!(
            "confirmations: the recorded file {} is not the run's file {}",
            rec.file.as_deref().unwrap_or("none"),
            loc.object_url(&keyed)
        )));
    };
    let url = loc.object_url(&path);
    let store = loc.store.as_ref();
    let Some(bytes) = crate::store::read_if_exists(store, &path, "confirmations").await? else {
        return Ok(Err(format!("confirmations: {url} is missing")));
    };
    let sha = manifest::sha256_hex(&bytes);
    if rec.sha256.as_deref() != Some(sha.as_str()) {
        return Ok(Err(format!(
            "confirmations: {url} has sha256 {sha}, the manifest recorded {}",
            rec.sha256.as_deref().unwrap_or("none")
        )));
    }
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .and_then(|b| b.build())
        .map_err(|e| Error::parquet(&url, e))?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::arrow(&url, e))?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows as u64 != rec.rows {
        return Ok(Err(format!(
            "confirmations: {url} has {rows} rows, the manifest recorded {}",
            rec.rows
        )));
    }
    Ok(Ok(batches))
}

/// The columns of a confirmations batch [`agree`] compares, as text, integers and lists.
struct Columns {
    types: StringArray,
    ids: StringArray,
    job: StringArray,
    run: StringArray,
    status: StringArray,
    seq: arrow::array::Int64Array,
    removed: arrow::array::Int64Array,
    redacted: arrow::array::Int64Array,
    /// Files written before holds existed have no held columns: nothing was held.
    held_rows: Option<arrow::array::Int64Array>,
    tables: arrow::array::ListArray,
    bases: Option<arrow::array::ListArray>,
    holds: Option<arrow::array::ListArray>,
}

impl Columns {
    fn of(b: &RecordBatch) -> Result<Columns> {
        let text = |name: &str| -> Result<StringArray> {
            let c = b
                .column_by_name(name)
                .ok_or_else(|| Error::Internal(format!("confirmations: no column {name}")))?;
            let c = arrow::compute::cast(c, &DataType::Utf8)
                .map_err(|e| Error::arrow("confirmations", e))?;
            Ok(c.as_string::<i32>().clone())
        };
        let int = |name: &str| -> Result<arrow::array::Int64Array> {
            let c = b
                .column_by_name(name)
                .ok_or_else(|| Error::Internal(format!("confirmations: no column {name}")))?;
            let c = arrow::compute::cast(c, &DataType::Int64)
                .map_err(|e| Error::arrow("confirmations", e))?;
            Ok(c.as_primitive::<Int64Type>().clone())
        };
        let types = text("subject_type")?;
        let (ids, job, run, status) = (
            text("event_id")?,
            text("job")?,
            text("run_id")?,
            text("status")?,
        );
        let (seq, removed, redacted) = (
            int("manifest_sequence")?,
            int("rows_removed")?,
            int("rows_redacted")?,
        );
        // Files written before holds existed have no held columns: nothing was held.
        let held_rows = b
            .column_by_name("rows_held")
            .map(|_| int("rows_held"))
            .transpose()?;
        let list = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_list_opt::<i32>().cloned())
        };
        let tables = list("tables")
            .ok_or_else(|| Error::Internal("confirmations: no list column tables".into()))?;
        let (bases, holds) = (list("held_bases"), list("hold_ids"));
        Ok(Columns {
            types,
            ids,
            job,
            run,
            status,
            seq,
            removed,
            redacted,
            held_rows,
            tables,
            bases,
            holds,
        })
    }
}

/// Each row of the run's file belongs to the run, names an event once and agrees with what
/// the manifest's files record of it. Fills `seen` with the file's event ids.
fn agree(
    batches: &[RecordBatch],
    m: &Manifest,
    tallies: &BTreeMap<&str, Tally>,
    seen: &mut HashSet<String>,
) -> Result<Check> {
    let mut wrong = Vec::new();
    let ruled = crate::confirm::ruled_types(m);
    for b in batches {
        let c = Columns::of(b)?;
        for i in 0..b.num_rows() {
            let id = c.ids.value(i);
            let set_at = |l: &arrow::array::ListArray| -> BTreeSet<String> {
                let t = l.value(i);
                t.as_string_opt::<i32>()
                    .map(|t| (0..t.len()).map(|k| t.value(k).to_string()).collect())
                    .unwrap_or_default()
            };
            let names = set_at(&c.tables);
            let tally = tallies.get(id);
            let subject_type = c.types.is_valid(i).then(|| c.types.value(i));
            let expected_status = crate::confirm::status(tally, subject_type, ruled.as_ref());
            let good = c.job.value(i) == m.job
                && c.run.value(i) == m.run_id
                && c.seq.value(i) == m.sequence as i64
                && c.status.value(i) == expected_status
                && c.removed.value(i) == tally.map_or(0, |t| t.rows_removed as i64)
                && c.redacted.value(i) == tally.map_or(0, |t| t.rows_redacted as i64)
                && names == tally.map(|t| t.tables.clone()).unwrap_or_default()
                && c.held_rows.as_ref().map_or(0, |h| h.value(i))
                    == tally.map_or(0, |t| t.rows_held as i64)
                && c.bases.as_ref().map(&set_at).unwrap_or_default()
                    == tally.map(|t| t.bases.clone()).unwrap_or_default()
                && c.holds.as_ref().map(&set_at).unwrap_or_default()
                    == tally.map(|t| t.hold_ids.clone()).unwrap_or_default()
                && seen.insert(id.to_string());
            if !good {
                wrong.push(id.to_string());
            }
        }
    }
    Ok(if wrong.is_empty() {
        ok(format!(
            "confirmations: {} events, each once, agree with the manifest's files",
            seen.len()
        ))
    } else {
        fail(format!(
            "confirmations: {} rows disagree with the manifest (run, status, counts or tables) \
             or repeat an event: {}",
            wrong.len(),
            named(&wrong)
        ))
    })
}

/// The events whose rows the run erased or kept and that its file does not hold (`missing`)
/// are confirmed by an earlier completed run (with a final status when `finally`).
async fn confirmed_earlier(
    ctx: &SessionContext,
    loc: &Location,
    m: &Manifest,
    earlier: &BTreeSet<String>,
    missing: &[&str],
    finally: bool,
) -> Result<Check> {
    if missing.is_empty() {
        return Ok(ok(
            "confirmations: every event with erased rows is confirmed".into(),
        ));
    }
    let qerr = |e| Error::query(&loc.url, e);
    let wanted = RecordBatch::try_from_iter([(
        "event_id",
        Arc::new(StringArray::from(missing.to_vec())) as _,
    )])
    .map_err(|e| Error::arrow("confirmations", e))?;
    let wanted = ctx.read_batch(wanted).map_err(qerr)?;
    let unconfirmed = match confirm::dataset(ctx, loc, &m.job, earlier).await? {
        None => missing.iter().map(|s| s.to_string()).collect(),
        Some(c) => {
            let c = if finally {
                c.filter(col("status").not_eq(lit(confirm::HELD)))
                    .map_err(qerr)?
            } else {
                c
            };
            let c = c
                .select(vec![col("event_id").alias("confirmed_id")])
                .map_err(qerr)?;
            let rows = wanted
                .join(
                    c,
                    JoinType::LeftAnti,
                    &["event_id"],
                    &["confirmed_id"],
                    None,
                )
                .map_err(qerr)?
                .collect()
                .await
                .map_err(qerr)?;
            strings(&rows, 0)?
        }
    };
    Ok(if unconfirmed.is_empty() {
        ok(format!(
            "confirmations: every event with {} rows is confirmed ({} by earlier runs)",
            if finally { "erased" } else { "held" },
            missing.len()
        ))
    } else {
        fail(format!(
            "confirmations: {} events with {} rows are confirmed nowhere{}: {}",
            unconfirmed.len(),
            if finally { "erased" } else { "held" },
            if finally { " with a final status" } else { "" },
            named(&unconfirmed)
        ))
    })
}

/// No event is confirmed twice over the files of the job's completed runs: at most one
/// final confirmation, and at most one `held` before it.
async fn once(
    ctx: &SessionContext,
    loc: &Location,
    m: &Manifest,
    runs: &BTreeSet<String>,
) -> Result<Check> {
    let Some(all) = confirm::dataset(ctx, loc, &m.job, runs).await? else {
        return Ok(ok(
            "confirmations: the dataset confirms no event twice".into()
        ));
    };
    let qerr = |e| Error::query(&loc.url, e);
    ctx.register_table("all_confirmed", all.into_view())
        .map_err(qerr)?;
    let rows = ctx
        .sql(
            "SELECT event_id FROM all_confirmed GROUP BY event_id \
             HAVING sum(CASE WHEN status = 'held' THEN 1 ELSE 0 END) > 1 \
             OR sum(CASE WHEN status = 'held' THEN 0 ELSE 1 END) > 1",
        )
        .await
        .map_err(qerr)?
        .collect()
        .await
        .map_err(qerr)?;
    let twice = strings(&rows, 0)?;
    Ok(if twice.is_empty() {
        ok("confirmations: the dataset confirms no event twice".into())
    } else {
        fail(format!(
            "confirmations: {} events are confirmed more than once in {}: {}",
            twice.len(),
            loc.url,
            named(&twice)
        ))
    })
}

fn strings(batches: &[RecordBatch], column: usize) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(column), &DataType::Utf8)
            .map_err(|e| Error::arrow("confirmations", e))?;
        let s = c.as_string::<i32>();
        out.extend(
            (0..s.len())
                .filter(|&i| s.is_valid(i))
                .map(|i| s.value(i).to_string()),
        );
    }
    out.sort();
    Ok(out)
}

/// The first few of `ids`, for a message.
fn named(ids: &[String]) -> String {
    let mut s = ids
        .iter()
        .take(NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > NAMED {
        s += &format!(" (and {} more)", ids.len() - NAMED);
    }
    s
}
