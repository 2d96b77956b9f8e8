//! `report`: one self-contained HTML page for the people who read lakepurge's results (the
//! privacy office, auditors): requests confirmed per day by status, the time from request to
//! confirmation against the SLA, pending requests by age, held requests by basis, and per run
//! the tables and rows it changed and whether its manifest verifies.
//!
//! The numbers come from the same places as `status` (the event dataset against the job's
//! confirmations, with DataFusion) and `verify` (each manifest, checked in full); the page
//! ([`page`]) only draws them. Event ids and counts only, never a subject id.

use std::collections::BTreeMap;

use object_store::ObjectStoreExt;
use serde::Serialize;

use super::status::{self, Status};
use crate::error::{Error, Result};
use crate::events::USABLE;
use crate::manifest::{self, Stored};
use crate::spec::Job;
use crate::verify;

mod page;

pub use page::render;

/// What the report is asked for.
pub struct Options {
    pub now: chrono::DateTime<chrono::Utc>,
    pub sla: Option<std::time::Duration>,
    /// With a key, each manifest's signature is checked too.
    pub public_key: Option<ed25519_dalek::VerifyingKey>,
}

/// Requests confirmed on one day (UTC), by status: an event counts once per status, on the
/// day that status was first confirmed.
#[derive(Debug, Serialize, PartialEq)]
pub struct Day {
    pub day: String,
    pub by_status: BTreeMap<String, u64>,
}

/// Time from request to first confirmation (any status, `held` included: the request was
/// answered), over the confirmed requests whose request time is known. Seconds; nearest rank.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Latency {
    pub requests: u64,
    pub p50_seconds: Option<i64>,
    pub p95_seconds: Option<i64>,
    pub max_seconds: Option<i64>,
    /// With an SLA: the requests confirmed within it.
    pub within_sla: Option<u64>,
    /// Of the requests measured, those whose request time is after their confirmation (a
    /// clock or data error upstream): their durations are negative, and counted as they are.
    pub negative: u64,
    /// Confirmed requests without a usable request time: not measured.
    pub unmeasured: u64,
}

/// One table a run changed.
#[derive(Debug, Serialize, PartialEq)]
pub struct TableChange {
    pub name: String,
    pub rows_removed: u64,
    pub rows_redacted: u64,
    pub rows_held: u64,
    pub files_rewritten: u64,
    pub files_deleted: u64,
}

/// One run of the job, from its manifest and `verify`'s verdict on it.
#[derive(Debug, Serialize, PartialEq)]
pub struct Run {
    /// The manifest's object, as `verify` takes it.
    pub manifest: String,
    pub sequence: Option<u64>,
    pub run_id: Option<String>,
    pub finished_at: Option<String>,
    pub events: u64,
    pub confirmations: u64,
    /// Tables with a removed, redacted or held row, or a rewritten or deleted file.
    pub tables_changed: Vec<TableChange>,
    pub rows_removed: u64,
    pub rows_redacted: u64,
    /// `verify`'s verdict; with a key, a signed manifest's signature is part of it (an
    /// unsigned one is verified without it, and shown unsigned).
    pub verified: bool,
    pub signature: SignatureState,
    /// What failed, one line each (at most [`FAILED_LISTED`]).
    pub failed_checks: Vec<String>,
}

/// Failed checks listed per run at most.
pub const FAILED_LISTED: usize = 5;

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SignatureState {
    Valid,
    Invalid,
    Unsigned,
    /// Signed, but no public key was given to check it with.
    NotChecked,
}

/// Everything the page shows.
#[derive(Debug, Serialize)]
pub struct Report {
    pub status: Status,
    pub per_day: Vec<Day>,
    pub latency: Latency,
    pub runs: Vec<Run>,
}

impl Report {
    /// Runs whose manifest does not verify.
    pub fn runs_failing(&self) -> usize {
        self.runs.iter().filter(|r| !r.verified).count()
    }
}

/// The report of `job`.
pub async fn report(job: &Job, opts: &Options) -> Result<Report> {
    // The events and confirmations are read once, for the status and the charts.
    let opened = status::open(job).await?;
    let status = status::status_of(job, opened.as_ref(), opts.now, opts.sla).await?;
    let (per_day, latency) = match &opened {
        Some(open) if open.confirmed.is_some() => {
            (per_day(open).await?, latency(open, opts.sla).await?)
        }
        _ => (Vec::new(), Latency::default()),
    };
    let runs = runs(job, opts.public_key.as_ref()).await?;
    Ok(Report {
        status,
        per_day,
        latency,
        runs,
    })
}

/// The usable events, distinct, joined to a query over `confirmed` aliased `c`.
const EVENTS_JOIN: &str = "JOIN (SELECT DISTINCT event_id FROM events WHERE {USABLE}) e \
                           ON c.event_id = e.event_id";

fn events_join() -> String {
    EVENTS_JOIN.replace("{USABLE}", USABLE)
}

async fn per_day(open: &status::Opened) -> Result<Vec<Day>> {
    let rows = status::count_rows(
        &open.ctx,
        &format!(
            "SELECT concat(coalesce(CAST(CAST(c.confirmed_at AS DATE) AS VARCHAR), 'unknown'), \
             ' ', c.status), count(*) FROM \
             (SELECT event_id, status, min(confirmed_at) AS confirmed_at FROM confirmed \
              GROUP BY event_id, status) c {} GROUP BY 1 ORDER BY 1",
            events_join()
        ),
        &open.shown,
        true,
    )
    .await?;
    let mut days: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (key, counts) in rows {
        let (day, status) = key.split_once(' ').unwrap_or((key.as_str(), ""));
        *days
            .entry(day.to_string())
            .or_default()
            .entry(status.to_string())
            .or_default() += counts.first().copied().unwrap_or(0);
    }
    Ok(days
        .into_iter()
        .map(|(day, by_status)| Day { day, by_status })
        .collect())
}

async fn latency(open: &status::Opened, sla: Option<std::time::Duration>) -> Result<Latency> {
    let sla_seconds = sla.map_or(-1, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let first = format!(
        "SELECT c.event_id, CAST(min(c.confirmed_at) AS BIGINT) AS c_us, \
         CAST(min(c.requested_at) AS BIGINT) AS r_us FROM confirmed c {} GROUP BY c.event_id",
        events_join()
    );
    let unmeasured = status::count_rows(
        &open.ctx,
        &format!("SELECT count(*) FROM ({first}) WHERE r_us IS NULL OR c_us IS NULL"),
        &open.shown,
        false,
    )
    .await?
    .first()
    .and_then(|(_, v)| v.first().copied())
    .unwrap_or(0);
    let v = signed_row(
        open,
        &format!(
            "WITH f AS (SELECT (c_us - r_us) / 1000000 AS d FROM ({first}) \
               WHERE c_us IS NOT NULL AND r_us IS NOT NULL), \
             r AS (SELECT d, row_number() OVER (ORDER BY d) AS rn, count(*) OVER () AS n FROM f) \
             SELECT n, \
               max(CASE WHEN rn = CAST(ceil(0.5 * n) AS BIGINT) THEN d END), \
               max(CASE WHEN rn = CAST(ceil(0.95 * n) AS BIGINT) THEN d END), \
               max(d), sum(CASE WHEN d <= {sla_seconds} THEN 1 ELSE 0 END), \
               sum(CASE WHEN d < 0 THEN 1 ELSE 0 END) \
             FROM r GROUP BY n"
        ),
    )
    .await?;
    let at = |i: usize| v.get(i).copied().flatten();
    let count = |i: usize| at(i).map_or(0, |n| n.max(0) as u64);
    Ok(Latency {
        requests: count(0),
        p50_seconds: at(1),
        p95_seconds: at(2),
        max_seconds: at(3),
        within_sla: sla.map(|_| count(4)),
        negative: count(5),
        unmeasured,
    })
}

/// The first row of a query whose columns are integers, signs and nulls kept (empty when the
/// query returns no row).
async fn signed_row(open: &status::Opened, sql: &str) -> Result<Vec<Option<i64>>> {
    use arrow::array::{Array, AsArray};
    let qerr = |e| Error::query(&open.shown, e);
    let batches = open
        .ctx
        .sql(sql)
        .await
        .map_err(qerr)?
        .collect()
        .await
        .map_err(qerr)?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(b.num_columns());
    for c in b.columns() {
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Int64)
            .map_err(|e| Error::arrow(format!("confirmations of {}", open.shown), e))?;
        let c = c.as_primitive::<arrow::datatypes::Int64Type>();
        out.push((!c.is_null(0)).then(|| c.value(0)));
    }
    Ok(out)
}

/// Every manifest of the job, oldest first, each verified in full.
async fn runs(job: &Job, public_key: Option<&ed25519_dalek::VerifyingKey>) -> Result<Vec<Run>> {
    let folder = manifest::folder(job)?;
    let (stored, unreadable) = manifest::all_lenient(&folder).await?;
    // With a key: once a run of the job was signed, a later unsigned manifest is a failure
    // (a stripped signature), not a warning.
    let signed_from = stored
        .iter()
        .filter(|s| s.manifest.signature.is_some())
        .map(|s| s.manifest.sequence)
        .min()
        .filter(|_| public_key.is_some());
    let mut out = Vec::with_capacity(stored.len() + unreadable.len());
    for s in &stored {
        // An unsigned manifest is verified without the key and shown as unsigned (a job may
        // have signed only its later runs); a signed one must carry a valid signature.
        let opts = verify::Options {
            public_key: public_key
                .copied()
                .filter(|_| s.manifest.signature.is_some()),
            deep: None,
            job: Some(job),
        };
        let mut v = verify::verify(&s.url, &opts).await?;
        if let Some(first) =
            signed_from.filter(|f| s.manifest.signature.is_none() && s.manifest.sequence > *f)
        {
            v.pass = false;
            v.checks.push(verify::Check {
                ok: false,
                what: format!(
                    "signature: none, though the job's manifests are signed from sequence \
                     {first} on (a signature removed?)"
                ),
            });
        }
        out.push(run_row(s, &v, public_key.is_some()));
    }
    for (path, why) in unreadable {
        out.push(Run {
            manifest: path,
            sequence: None,
            run_id: None,
            finished_at: None,
            events: 0,
            confirmations: 0,
            tables_changed: Vec::new(),
            rows_removed: 0,
            rows_redacted: 0,
            verified: false,
            signature: SignatureState::NotChecked,
            failed_checks: vec![format!("not a readable manifest: {why}")],
        });
    }
    out.sort_by_key(|r| (r.sequence.is_none(), r.sequence));
    Ok(out)
}

fn run_row(s: &Stored, v: &verify::Report, key_given: bool) -> Run {
    let m = &s.manifest;
    let tables_changed: Vec<TableChange> = m
        .tables
        .iter()
        .map(|t| TableChange {
            name: t.name.clone(),
            rows_removed: t.rows_removed,
            rows_redacted: t.rows_redacted,
            rows_held: t.held.as_ref().map_or(0, |h| h.rows),
            files_rewritten: t.files_rewritten,
            files_deleted: t.files_deleted,
        })
        .filter(|c| {
            c.rows_removed + c.rows_redacted + c.rows_held + c.files_rewritten + c.files_deleted > 0
        })
        .collect();
    let signature = match (&m.signature, key_given) {
        (None, _) => SignatureState::Unsigned,
        (Some(_), false) => SignatureState::NotChecked,
        (Some(_), true) => {
            let bad = v
                .checks
                .iter()
                .any(|c| !c.ok && c.what.starts_with("signature:"));
            if bad {
                SignatureState::Invalid
            } else {
                SignatureState::Valid
            }
        }
    };
    Run {
        manifest: s.url.clone(),
        sequence: Some(m.sequence),
        run_id: Some(m.run_id.clone()),
        finished_at: Some(m.finished_at.clone()),
        events: m.events.count,
        confirmations: m.confirmations.as_ref().map_or(0, |c| c.rows),
        rows_removed: m.tables.iter().map(|t| t.rows_removed).sum(),
        rows_redacted: m.tables.iter().map(|t| t.rows_redacted).sum(),
        tables_changed,
        verified: v.pass,
        signature,
        failed_checks: v
            .checks
            .iter()
            .filter(|c| !c.ok)
            .take(FAILED_LISTED)
            .map(|c| c.what.clone())
            .collect(),
    }
}

/// Writes the page to `out` (a local path or an object store URL), whole: object_store's
/// put replaces a local file by a rename and an object in one request, so a reader never sees
/// half a page.
pub async fn write(out: &str, html: String) -> Result<()> {
    let (dir, name) = match out.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => (".", out),
    };
    // A local path, written as a path or a file:// URL.
    let local = |p: &str| -> Option<std::path::PathBuf> {
        match p.strip_prefix("file://") {
            Some(_) => url::Url::parse(p).ok()?.to_file_path().ok(),
            None if p.contains("://") => None,
            None => Some(std::path::PathBuf::from(p)),
        }
    };
    let local_folder = local(out).is_some_and(|p| p.is_dir());
    if name.is_empty() || name == "." || name == ".." || local_folder {
        return Err(Error::Usage(format!(
            "report --out {out:?}: expected a file, not a folder"
        )));
    }
    if local(dir).is_some_and(|p| p.is_file()) {
        return Err(Error::Usage(format!(
            "report --out {out:?}: {dir} is a file, not a folder"
        )));
    }
    let folder = crate::store::Location::parse(dir, std::path::Path::new("."), &Default::default())
        .map_err(|m| Error::Usage(format!("report --out {out:?}: {m}")))?;
    let path = folder.child(name);
    folder
        .store
        .put(&path, html.into_bytes().into())
        .await
        .map_err(|e| Error::store(format!("writing report {}", folder.object_url(&path)), e))?;
    Ok(())
}
