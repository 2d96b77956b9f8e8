//! The `trace` command: where one erasure request took effect, from the manifests alone.
//!
//! Reads every manifest of the job (oldest first) and lists each run, table and file where the
//! event removed rows, with counts and times: the answer to "can I acknowledge request X?".

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

#[derive(Debug, Serialize)]
pub struct Trace {
    pub event_id: String,
    pub runs_checked: u64,
    pub runs_with_rows: u64,
    pub rows: u64,
    pub hits: Vec<Hit>,
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
    };
    for s in &history {
        let m = &s.manifest;
        let before = out.hits.len();
        for t in &m.tables {
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
