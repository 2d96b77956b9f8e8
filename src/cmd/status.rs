//! `status`: the events of the event dataset against the job's confirmations (DataFusion),
//! for the operators: how many are confirmed, how many are pending and for how long, and with
//! an SLA, which are late. Read-only; event ids only, never a subject id.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use futures::StreamExt;
use serde::Serialize;

use crate::confirm;
use crate::error::{Error, Result};
use crate::events::{self, USABLE};
use crate::manifest;
use crate::spec::Job;

/// Late event ids listed at most (the count is always whole).
pub const LATE_LISTED: usize = 1000;

const DAY: i64 = 86_400_000_000;

/// Pending events by the age of their request.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Ages {
    pub under_1d: u64,
    pub from_1d_to_7d: u64,
    pub from_7d_to_30d: u64,
    pub over_30d: u64,
    /// No usable `requested_at`.
    pub unknown: u64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Oldest {
    pub event_id: String,
    pub requested_at: String,
    pub age_seconds: i64,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct Late {
    pub sla_seconds: u64,
    pub count: u64,
    /// The oldest first, at most [`LATE_LISTED`].
    pub event_ids: Vec<String>,
}

/// What `status` reports.
#[derive(Debug, Serialize, PartialEq)]
pub struct Status {
    pub job: String,
    pub now: String,
    /// Rows of the event dataset, and those skipped as malformed (no event id, subject type
    /// or subject id).
    pub rows: u64,
    pub skipped_rows: u64,
    /// Distinct usable events.
    pub events: u64,
    pub confirmed: u64,
    pub erased: u64,
    pub no_data: u64,
    /// Confirmed with no table having a rule for the event's subject type.
    pub no_rule: u64,
    pub pending: u64,
    pub pending_by_age: Ages,
    pub oldest_pending: Option<Oldest>,
    pub late: Option<Late>,
    /// Requests confirmed `held` (some rows kept under a hold or an exemption) and not yet
    /// confirmed finally: neither pending nor late.
    pub held: HeldStatus,
}

/// The held requests: how many, by basis, since when.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct HeldStatus {
    pub requests: u64,
    /// Requests per basis (a request kept on two bases counts under each).
    pub by_basis: std::collections::BTreeMap<String, u64>,
    /// When the earliest hold keeping one of them was placed (exemptions have no date).
    pub oldest_hold_placed_at: Option<String>,
    /// The held event ids, at most [`LATE_LISTED`].
    pub event_ids: Vec<String>,
}

impl Status {
    /// The status of a job with no event.
    fn empty(
        job: &Job,
        now: chrono::DateTime<chrono::Utc>,
        sla: Option<std::time::Duration>,
    ) -> Status {
        Status {
            job: job.name.clone(),
            now: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rows: 0,
            skipped_rows: 0,
            events: 0,
            confirmed: 0,
            erased: 0,
            no_data: 0,
            no_rule: 0,
            pending: 0,
            pending_by_age: Ages::default(),
            oldest_pending: None,
            held: HeldStatus::default(),
            late: sla.map(|d| Late {
                sla_seconds: d.as_secs(),
                count: 0,
                event_ids: Vec::new(),
            }),
        }
    }
}

/// A query over the job's events (the view `events`) and, when there are any, its
/// confirmations from runs with a manifest (the view `confirmed`, see [`confirm::dataset`]).
pub(crate) struct Opened {
    pub ctx: datafusion::prelude::SessionContext,
    /// The event dataset, for messages.
    pub shown: String,
    pub confirmed: Option<datafusion::prelude::DataFrame>,
    loc: crate::store::Location,
    listed: Vec<(object_store::ObjectMeta, crate::events::EventFile)>,
}

/// Opens the job's events and confirmations for querying; none when there is no event file.
pub(crate) async fn open(job: &Job) -> Result<Option<Opened>> {
    let (loc, listed) = events::snapshot_files(job, None).await?;
    if listed.is_empty() {
        return Ok(None);
    }
    let ctx = events::query(&job.events, &loc, &listed).await?;
    let shown = loc.url.to_string();
    let runs = manifest::run_ids(&manifest::folder(job)?).await?;
    let confirmed = confirm::dataset(&ctx, &confirm::location(job)?, &job.name, &runs).await?;
    if let Some(c) = &confirmed {
        ctx.register_table("confirmed", c.clone().into_view())
            .map_err(|e| Error::query(&shown, e))?;
    }
    Ok(Some(Opened {
        ctx,
        shown,
        confirmed,
        loc,
        listed,
    }))
}

/// The status of `job`'s events at `now`; with `sla`, the pending events older than it.
pub async fn status(
    job: &Job,
    now: chrono::DateTime<chrono::Utc>,
    sla: Option<std::time::Duration>,
) -> Result<Status> {
    status_of(job, open(job).await?.as_ref(), now, sla).await
}

/// [`status`] over the job's events and confirmations as `opened` (none: no event file).
pub(crate) async fn status_of(
    job: &Job,
    opened: Option<&Opened>,
    now: chrono::DateTime<chrono::Utc>,
    sla: Option<std::time::Duration>,
) -> Result<Status> {
    let mut s = Status::empty(job, now, sla);
    let Some(Opened {
        ctx,
        shown,
        confirmed,
        loc,
        listed,
    }) = opened
    else {
        return Ok(s);
    };
    let qerr = |e| Error::query(shown, e);
    // The first query reads every row: a file that does not read is bad input, named.
    let counts = match count_rows(
        ctx,
        &format!("SELECT count(*), sum(CASE WHEN {USABLE} THEN 0 ELSE 1 END) FROM events"),
        shown,
        false,
    )
    .await
    {
        Ok(rows) => rows.into_iter().next().map(|(_, c)| c).unwrap_or_default(),
        Err(Error::Query { source, .. }) => {
            return Err(events::read_error(ctx, &job.events, loc, listed, *source).await);
        }
        Err(e) => return Err(e),
    };
    let count = |i: usize| counts.get(i).copied().unwrap_or(0);
    [s.rows, s.skipped_rows] = [count(0), count(1)];
    // Distinct events by a grouping, which spills past the pool (a COUNT(DISTINCT) does not).
    let distinct = count_rows(
        ctx,
        &format!(
            "SELECT count(*) FROM (SELECT event_id FROM events WHERE {USABLE} GROUP BY event_id)"
        ),
        shown,
        false,
    )
    .await?;
    s.events = distinct
        .first()
        .and_then(|(_, c)| c.first().copied())
        .unwrap_or(0);
    if confirmed.is_some() {
        count_confirmed(ctx, &mut s, shown).await?;
        held_details(ctx, &mut s.held, shown).await?;
    }
    let mut pending = confirm::unconfirmed(ctx, confirmed.clone())
        .await?
        .execute_stream()
        .await
        .map_err(qerr)?;
    let mut late_all = Vec::new();
    while let Some(batch) = pending.next().await {
        tally_pending(&mut s, &batch.map_err(qerr)?, now, &mut late_all, shown)?;
    }
    if let Some(late) = s.late.as_mut() {
        keep_oldest(&mut late_all);
        late.event_ids = late_all.into_iter().map(|(_, id)| id).collect();
    }
    Ok(s)
}

/// Counts the events of the dataset by their final confirmation (`held` when `held` is their
/// only one) into `s`.
async fn count_confirmed(
    ctx: &datafusion::prelude::SessionContext,
    s: &mut Status,
    shown: &str,
) -> Result<()> {
    let by_status = count_rows(
        ctx,
        &format!(
            "SELECT c.status, count(*) FROM \
             (SELECT DISTINCT event_id FROM events WHERE {USABLE}) e JOIN \
             (SELECT event_id, coalesce(max(CASE WHEN status <> 'held' THEN status END), \
              'held') AS status FROM confirmed GROUP BY event_id) c \
             ON e.event_id = c.event_id GROUP BY c.status"
        ),
        shown,
        true,
    )
    .await?;
    for (status, n) in by_status
        .iter()
        .map(|(k, c)| (k, c.first().copied().unwrap_or(0)))
    {
        match status.as_str() {
            "erased" => s.erased += n,
            "no_rule" => s.no_rule += n,
            confirm::HELD => {
                s.held.requests += n;
                continue;
            }
            _ => s.no_data += n,
        }
        s.confirmed += n;
    }
    Ok(())
}

/// The bases, the earliest hold and the ids of the held requests (those whose only
/// confirmation is `held`): few, collected.
async fn held_details(
    ctx: &datafusion::prelude::SessionContext,
    held: &mut HeldStatus,
    shown: &str,
) -> Result<()> {
    if held.requests == 0 {
        return Ok(());
    }
    let qerr = |e| Error::query(shown, e);
    let batches = ctx
        .sql(&format!(
            "SELECT h.event_id, h.held_bases, CAST(h.held_since AS BIGINT) FROM confirmed h \
             JOIN (SELECT DISTINCT event_id FROM events WHERE {USABLE}) e \
             ON h.event_id = e.event_id \
             LEFT ANTI JOIN (SELECT event_id FROM confirmed WHERE status <> 'held') f \
             ON h.event_id = f.event_id WHERE h.status = 'held' ORDER BY h.event_id"
        ))
        .await
        .map_err(qerr)?
        .collect()
        .await
        .map_err(qerr)?;
    let aerr = |e| Error::arrow(format!("confirmations of {shown}"), e);
    let mut oldest: Option<i64> = None;
    for b in &batches {
        let ids = arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(aerr)?;
        let ids = ids.as_string::<i32>();
        let bases = b.column(1).as_list::<i32>();
        let since = arrow::compute::cast(b.column(2), &DataType::Int64).map_err(aerr)?;
        let since = since.as_primitive::<Int64Type>();
        for r in 0..b.num_rows() {
            if held.event_ids.len() < LATE_LISTED {
                held.event_ids.push(ids.value(r).to_string());
            }
            if !bases.is_null(r) {
                let list = bases.value(r);
                let list = arrow::compute::cast(&list, &DataType::Utf8).map_err(aerr)?;
                for basis in list.as_string::<i32>().iter().flatten() {
                    *held.by_basis.entry(basis.to_string()).or_default() += 1;
                }
            }
            if !since.is_null(r) {
                oldest = Some(oldest.map_or(since.value(r), |o| o.min(since.value(r))));
            }
        }
    }
    held.oldest_hold_placed_at = oldest
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    Ok(())
}

/// Counts a batch of pending events (`event_id`, `subject_type`, `requested_at`) into `s`,
/// keeping (age, id) of the late ones (bounded: see [`keep_oldest`]).
fn tally_pending(
    s: &mut Status,
    batch: &RecordBatch,
    now: chrono::DateTime<chrono::Utc>,
    late_listed: &mut Vec<(i64, String)>,
    shown: &str,
) -> Result<()> {
    let aerr = |e| Error::arrow(format!("events at {shown}"), e);
    let ids = arrow::compute::cast(batch.column(0), &DataType::Utf8).map_err(aerr)?;
    let ids = ids.as_string::<i32>();
    let requested = confirm::requested_at_utc(batch.column(2)).map_err(aerr)?;
    let now_us = now.timestamp_micros();
    for i in 0..batch.num_rows() {
        s.pending += 1;
        if requested.is_null(i) {
            // An age that cannot be told never escapes the SLA: it counts as late, listed
            // before every event whose age is known.
            s.pending_by_age.unknown += 1;
            if let Some(late) = s.late.as_mut() {
                late.count += 1;
                late_listed.push((i64::MAX, ids.value(i).to_string()));
                if late_listed.len() > 2 * LATE_LISTED {
                    keep_oldest(late_listed);
                }
            }
            continue;
        }
        let age = now_us - requested.value(i);
        let ages = &mut s.pending_by_age;
        match age {
            a if a < DAY => ages.under_1d += 1,
            a if a < 7 * DAY => ages.from_1d_to_7d += 1,
            a if a < 30 * DAY => ages.from_7d_to_30d += 1,
            _ => ages.over_30d += 1,
        }
        if s.oldest_pending
            .as_ref()
            .is_none_or(|o| age > o.age_seconds * 1_000_000)
        {
            let at = chrono::DateTime::from_timestamp_micros(requested.value(i))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            s.oldest_pending = Some(Oldest {
                event_id: ids.value(i).to_string(),
                requested_at: at,
                age_seconds: age / 1_000_000,
            });
        }
        if let Some(late) = s
            .late
            .as_mut()
            .filter(|l| age > l.sla_seconds as i64 * 1_000_000)
        {
            late.count += 1;
            late_listed.push((age, ids.value(i).to_string()));
            if late_listed.len() > 2 * LATE_LISTED {
                keep_oldest(late_listed);
            }
        }
    }
    Ok(())
}

/// Keeps the [`LATE_LISTED`] oldest of (age, event id), oldest first (ties by id).
fn keep_oldest(late: &mut Vec<(i64, String)>) {
    late.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    late.truncate(LATE_LISTED);
}

/// The rows of a query whose columns are counts, after a first text column when `keyed` (the
/// group's key; empty otherwise). A null count is 0.
pub(crate) async fn count_rows(
    ctx: &datafusion::prelude::SessionContext,
    sql: &str,
    shown: &str,
    keyed: bool,
) -> Result<Vec<(String, Vec<u64>)>> {
    let qerr = |e| Error::query(shown, e);
    let batches = ctx
        .sql(sql)
        .await
        .map_err(qerr)?
        .collect()
        .await
        .map_err(qerr)?;
    let aerr = |e| Error::arrow(format!("events at {shown}"), e);
    let mut out = Vec::new();
    for b in &batches {
        let keys = match keyed {
            true => Some(arrow::compute::cast(b.column(0), &DataType::Utf8).map_err(aerr)?),
            false => None,
        };
        let counts = (usize::from(keyed)..b.num_columns())
            .map(|i| arrow::compute::cast(b.column(i), &DataType::Int64).map_err(aerr))
            .collect::<Result<Vec<_>>>()?;
        for r in 0..b.num_rows() {
            let key = keys
                .as_ref()
                .map(|k| k.as_string::<i32>().value(r).to_string())
                .unwrap_or_default();
            let values = counts
                .iter()
                .map(|c| {
                    let n = c.as_primitive::<Int64Type>();
                    if n.is_null(r) {
                        0
                    } else {
                        n.value(r).max(0) as u64
                    }
                })
                .collect();
            out.push((key, values));
        }
    }
    Ok(out)
}

/// A duration as people read it: `41d 3h`.
pub fn age(seconds: i64) -> String {
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        (_, 0) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// The report as text lines.
pub fn render(s: &Status) -> String {
    let a = &s.pending_by_age;
    let mut out = format!(
        "job {}: {} events ({} rows read, {} skipped as malformed), at {}\n\
         confirmed {:>8}  (erased {}, no_data {}, no_rule {})\n\
         pending   {:>8}  (under 1d {}, 1-7d {}, 7-30d {}, over 30d {}, unknown age {})\n",
        s.job,
        s.events,
        s.rows,
        s.skipped_rows,
        s.now,
        s.confirmed,
        s.erased,
        s.no_data,
        s.no_rule,
        s.pending,
        a.under_1d,
        a.from_1d_to_7d,
        a.from_7d_to_30d,
        a.over_30d,
        a.unknown
    );
    if s.held.requests > 0 {
        let bases: Vec<String> = s
            .held
            .by_basis
            .iter()
            .map(|(b, n)| format!("{b} {n}"))
            .collect();
        out += &format!(
            "held      {:>8}  ({}){}: kept under holds or exemptions, confirmed again once \
             erased\n",
            s.held.requests,
            bases.join(", "),
            s.held
                .oldest_hold_placed_at
                .as_deref()
                .map(|t| format!(", oldest hold placed {t}"))
                .unwrap_or_default()
        );
    }
    if let Some(o) = &s.oldest_pending {
        out += &format!(
            "oldest pending: {} requested {} ({} ago)\n",
            o.event_id,
            o.requested_at,
            age(o.age_seconds)
        );
    }
    if let Some(l) = &s.late {
        let sla = age(l.sla_seconds as i64);
        if l.count == 0 {
            out += &format!("SLA {sla}: OK, no pending event is older\n");
        } else {
            let more = l.count.saturating_sub(l.event_ids.len() as u64);
            out += &format!(
                "SLA {sla}: LATE: {} pending events are older: {}{}\n",
                l.count,
                l.event_ids.join(", "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            );
        }
    }
    out
}
