//! The `validate` command: checks a job without writing anything.
//!
//! Parses the specs, reads the event dataset (its columns and their types), reaches the manifest
//! and confirmations locations, and for every table lists its files and checks, from each
//! file's footer, that every match column exists with a type that can hold a subject id. The
//! first problem is returned as an error naming the file, table and field (exit 2).

use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::{self, Events};
use crate::manifest;
use crate::plan::{self, Matcher, StoreReader};
use crate::spec::Job;
use crate::store::ObjectVersion;
use crate::table::Table;
use parquet::arrow::async_reader::AsyncFileReader;

#[derive(Debug, Serialize)]
pub struct TableSummary {
    pub name: String,
    pub location: String,
    pub files: u64,
    /// On S3: whether the bucket keeps object versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versioning: Option<crate::store::Versioning>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub job: String,
    pub event_files: u64,
    pub event_rows: u64,
    /// The hold dataset, when the job has one: its files, rows and holds in force now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<(u64, u64, u64)>,
    pub tables: Vec<TableSummary>,
    /// Subject types of the events that no table has a rule for, with their distinct events:
    /// those events are confirmed `no_rule` (a type the pipeline started sending, or a typo).
    pub unruled_subject_types: Vec<(String, u64)>,
}

/// The distinct usable events of each subject type in the event dataset that no table of
/// `job` has a rule for.
async fn unruled_subject_types(job: &Job) -> Result<Vec<(String, u64)>> {
    let (loc, listed) = events::snapshot_files(job, None).await?;
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let ctx = events::query(&job.events, &loc, &listed).await?;
    let by_type = crate::cmd::status::count_rows(
        &ctx,
        &format!(
            "SELECT subject_type, count(*) FROM (SELECT DISTINCT subject_type, event_id FROM \
             events WHERE {}) GROUP BY subject_type ORDER BY subject_type",
            events::USABLE
        ),
        loc.url.as_ref(),
        true,
    )
    .await?;
    let ruled: std::collections::BTreeSet<&str> = job
        .tables
        .iter()
        .flat_map(|t| &t.matches)
        .map(|r| r.subject_type.as_str())
        .collect();
    Ok(by_type
        .into_iter()
        .filter(|(t, _)| !ruled.contains(t.as_str()))
        .map(|(t, c)| (t, c.first().copied().unwrap_or(0)))
        .collect())
}

pub async fn validate(job: &Job) -> Result<Summary> {
    let events = events::load(job).await?;
    // The hold dataset: every row a hold or its release, every table it names the job's.
    let holds = match crate::holds::load(job, None).await? {
        Some(h) => {
            let counts = (h.files.len() as u64, h.rows, 0);
            let held = crate::holds::Held::new(job, Some(h), chrono::Utc::now())?;
            Some((counts.0, counts.1, held.holds.len() as u64))
        }
        None => None,
    };
    let folder = manifest::folder(job)?;
    manifest::all(&folder).await?;
    crate::confirm::location(job)?.list_files().await?;
    let no_events = Events::default();
    let mut tables = Vec::new();
    let resolved = Table::open_all(job).await?;
    let mut listed = Vec::new();
    for table in &resolved {
        let matcher =
            Matcher::new(&table.spec, &no_events).absent_columns_null(table.format.log().is_some());
        let files = table.list().await?;
        for meta in &files {
            let rel = table.location.relative(&meta.location);
            let mut reader = StoreReader::new(ObjectVersion::new(
                table.location.store.clone(),
                meta.clone(),
            ));
            let metadata = reader.get_metadata(None).await.map_err(|e| {
                plan::read_error(&table.spec.name, &rel, "not a readable Parquet file", e)
            })?;
            plan::refuse_encrypted(&metadata, &table.spec.name, &rel)?;
            let schema = plan::arrow_schema(&metadata).map_err(|e| {
                Error::table(
                    &table.spec.name,
                    &rel,
                    format!("cannot map the Parquet schema: {e}"),
                )
            })?;
            matcher
                .check_schema(&schema)
                .map_err(|m| Error::table(&table.spec.name, &rel, m))?;
        }
        listed.push((table, files.len() as u64));
        tables.push(TableSummary {
            name: table.spec.name.clone(),
            location: table.location.url.to_string(),
            files: files.len() as u64,
            versioning: table.versioning().await?,
        });
    }
    plan::refuse_empty(job, &listed).await?;
    Ok(Summary {
        job: job.name.clone(),
        event_files: events.files.len() as u64,
        event_rows: events.rows,
        holds,
        tables,
        unruled_subject_types: unruled_subject_types(job).await?,
    })
}
