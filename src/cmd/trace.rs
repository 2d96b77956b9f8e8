//! The `trace` command: where one erasure request took effect.
//!
//! Reads every manifest of the job (oldest first) and lists each run, table and file where the
//! event removed rows, with counts and times, and how the job's completed runs confirmed it
//! (`erased`, `no_data`, `no_rule`, `held`), and where its rows were kept under a legal hold or a
//! table's exemption, by which holds: the answer to "can I acknowledge request X?".

use serde::Serialize;

use crate::error::Result;
use crate::manifest;
use crate::spec::Job;

#[derive(Debug, Serialize)]
pub struct Hit {
    pub run_id: String,
    pub finished_at: String,
    pub table: String,
    pub file: String,
    pub rows: u64,
}

/// Rows of the event a run kept in a table, under holds or the table's exemption.
#[derive(Debug, Serialize)]
pub struct HeldHit {
    pub run_id: String,
    pub finished_at: String,
    pub table: String,
    pub rows: u64,
    pub hold_ids: Vec<String>,
    /// The table's exemption (`retain`) kept them: its basis and reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retained: Option<crate::spec::Retain>,
}

#[derive(Debug, Serialize)]
pub struct Trace {
    pub event_id: String,
    pub runs_checked: u64,
    pub runs_with_rows: u64,
    pub rows: u64,
    pub hits: Vec<Hit>,
    /// Where runs kept the event's rows under holds or exemptions.
    pub held: Vec<HeldHit>,
    /// How completed runs of the job confirmed the event: (run id, status).
    pub confirmations: Vec<(String, String)>,
}

/// The confirmations of `event_id` by the completed runs of `job`.
async fn confirmations_of(job: &Job, event_id: &str) -> Result<Vec<(String, String)>> {
    use arrow::array::AsArray;
    use datafusion::prelude::{col, lit};
    let folder = manifest::folder(job)?;
    let runs = manifest::run_ids(&folder).await?;
    let loc = crate::confirm::location(job)?;
    let ctx = datafusion::prelude::SessionContext::new();
    let Some(df) = crate::confirm::dataset(&ctx, &loc, &job.name, &runs).await? else {
        return Ok(Vec::new());
    };
    let qerr = |e| crate::error::Error::query(loc.url.as_str(), e);
    let batches = df
        .filter(col("event_id").eq(lit(event_id)))
        .map_err(qerr)?
        .collect()
        .await
        .map_err(qerr)?;
    let mut out = Vec::new();
    for b in &batches {
        let text = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8).ok())
        };
        if let (Some(status), Some(run)) = (text("status"), text("run_id")) {
            let (status, run) = (status.as_string::<i32>(), run.as_string::<i32>());
            for i in 0..b.num_rows() {
                out.push((run.value(i).to_string(), status.value(i).to_string()));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub async fn trace(job: &Job, event_id: &str) -> Result<Trace> {
    let folder = manifest::folder(job)?;
    let history = manifest::all(&folder).await?;
    let mut out = Trace {
        event_id: event_id.to_string(),
        runs_checked: history.len() as u64,
        runs_with_rows: 0,
        rows: 0,
        hits: Vec::new(),
        held: Vec::new(),
        confirmations: confirmations_of(job, event_id).await?,
    };
    for s in &history {
        let m = &s.manifest;
        let before = out.hits.len();
        for t in &m.tables {
            if let Some((h, e)) = t
                .held
                .as_ref()
                .and_then(|h| h.per_event.get(event_id).map(|e| (h, e)))
            {
                out.held.push(HeldHit {
                    run_id: m.run_id.clone(),
                    finished_at: m.finished_at.clone(),
                    table: t.name.clone(),
                    rows: e.rows,
                    hold_ids: e.hold_ids.clone(),
                    retained: h.retain.clone().filter(|_| e.retained),
                });
            }
            for f in &t.files {
                if let Some(&rows) = f.per_event.get(event_id).filter(|n| **n > 0) {
                    out.rows += rows;
                    out.hits.push(Hit {
                        run_id: m.run_id.clone(),
                        finished_at: m.finished_at.clone(),
                        table: t.name.clone(),
                        file: f.path.clone(),
                        rows,
                    });
                }
            }
        }
        out.runs_with_rows += u64::from(out.hits.len() > before);
    }
    Ok(out)
}
