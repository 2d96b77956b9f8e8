//! `discover`: where erased subjects still live outside the job's rules.
//!
//! Walks each root ([`walk`]: the listing grouped into tables), reads a sample of each table's
//! files, and looks every column that can hold a subject id up against the job's erased
//! subjects ([`evidence`]). Findings: (a) an unregistered table holding erased subjects, (b) a
//! registered table with a column that holds erased subjects and that no rule covers, each with
//! a proposed spec ([`propose`]); (c) columns whose names look like identifiers but where no
//! erased subject was found. The job's own event dataset and manifests are never reported.
//! Read-only but for `--write DIR`; counts only, never a subject id or a value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::events::{self, Events};
use crate::spec::{Job, Normalize};
use crate::store::Location;
use crate::table::Table;
use crate::table::detect::Logged;

mod chance;
mod evidence;
mod propose;
mod walk;

pub use chance::{DEFAULT_MIN_LIFT, DEFAULT_MIN_SUBJECTS, Verdict};
pub use evidence::Evidence;

/// Files read per table by default, spread over its (partition) folders.
pub const DEFAULT_FILES_PER_TABLE: usize = 10;

pub struct Options {
    pub roots: Vec<String>,
    /// Files read per table; 0 reads every file.
    pub files_per_table: usize,
    /// Where the proposed specs are written.
    pub write: Option<PathBuf>,
    /// The lift and the distinct subjects a finding needs.
    pub min_lift: f64,
    pub min_subjects: u64,
}

/// What `discover` found in one table.
#[derive(Debug, Serialize)]
pub struct TableReport {
    pub location: String,
    /// The registered table's name, or the proposed one.
    pub name: String,
    pub registered: bool,
    pub format: String,
    pub files: u64,
    pub files_read: u64,
    /// Files of the sample that could not be read: the table is not fully examined.
    pub files_unreadable: u64,
    /// Every file of the sample was read and looked up.
    pub examined: bool,
    /// Columns (not covered by a rule) holding erased subjects well beyond chance: findings.
    pub evidence: Vec<EvidenceReport>,
    /// Columns holding erased subjects that chance explains, or too few to tell: never
    /// proposed.
    pub weak_matches: Vec<EvidenceReport>,
    /// Columns whose names look like identifiers, not covered, where nothing was found.
    pub suspects: Vec<String>,
    /// `unregistered` (a) or `uncovered` (b).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposed_spec: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    /// Why no spec is proposed (a format lakepurge cannot purge).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EvidenceReport {
    pub column: String,
    pub subject_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    pub rows: u64,
    pub files_with: u64,
    /// Distinct erased subjects held, what chance would give, and the verdict.
    #[serde(flatten)]
    pub weighed: chance::Weighed,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub job: String,
    pub roots: Vec<String>,
    /// The bar a finding passed.
    pub min_lift: f64,
    pub min_subjects: u64,
    pub tables: Vec<TableReport>,
    /// Roots that could not be listed: nothing under them was examined.
    pub roots_not_examined: Vec<RootError>,
}

#[derive(Debug, Serialize)]
pub struct RootError {
    pub root: String,
    pub error: String,
}

impl Report {
    /// Findings (a) and (b).
    pub fn findings(&self) -> usize {
        self.tables.iter().filter(|t| t.finding.is_some()).count()
    }

    /// Roots and tables that were not (fully) examined: a finding may hide there.
    pub fn not_examined(&self) -> usize {
        self.roots_not_examined.len() + self.tables.iter().filter(|t| !t.examined).count()
    }
}

/// The job's places that are not tables to report: its event dataset and manifests.
fn own_locations(job: &Job) -> Result<Vec<String>> {
    let mut own = vec![events::location(job)?.url.to_string()];
    own.push(crate::manifest::folder(job)?.url.to_string());
    own.push(crate::confirm::location(job)?.url.to_string());
    Ok(own)
}

/// How the job's rules normalise each subject type's ids (emails lowercased and trimmed when
/// no rule says).
fn normalizations(job: &Job, events: &Events) -> BTreeMap<String, Option<Normalize>> {
    events
        .by_type
        .keys()
        .map(|t| {
            let ruled = job
                .tables
                .iter()
                .flat_map(|s| &s.matches)
                .find(|m| &m.subject_type == t)
                .map(|m| m.normalize);
            let default = t
                .to_lowercase()
                .contains("mail")
                .then_some(Normalize::LowercaseTrim);
            (t.clone(), ruled.unwrap_or(default))
        })
        .collect()
}

/// Runs `discover` for `job` over `opts.roots`.
pub async fn discover(job: &Job, opts: &Options) -> Result<Report> {
    let events = events::load(job).await?;
    let registered = Table::resolve_all(job).await?;
    let own = own_locations(job)?;
    let normalize = normalizations(job, &events);
    let probe = chance::Probe::new(&events)?;
    drop(events);
    let against = evidence::Against {
        probe: &probe,
        normalize: &normalize,
        bar: chance::Bar {
            min_lift: opts.min_lift,
            min_subjects: opts.min_subjects,
        },
    };
    let mut report = Report {
        job: job.name.clone(),
        roots: opts.roots.clone(),
        min_lift: opts.min_lift,
        min_subjects: opts.min_subjects,
        tables: Vec::new(),
        roots_not_examined: Vec::new(),
    };
    let mut names: BTreeSet<String> = job.tables.iter().map(|t| t.name.clone()).collect();
    for root in &opts.roots {
        let loc = Location::parse(root, std::path::Path::new("."), &Default::default())
            .map_err(|m| Error::Usage(format!("--root {root}: {m}")))?;
        let found_tables = match walk::tables(&loc).await {
            Ok(t) if t.is_empty() => {
                tracing::error!(root = %root, "the root lists no Parquet file: nothing under it was examined");
                report.roots_not_examined.push(RootError {
                    root: root.clone(),
                    error: "lists no Parquet file (is the root right?)".into(),
                });
                continue;
            }
            Ok(t) => t,
            Err(e) => {
                tracing::error!(root = %root, error = %e, "cannot list the root: nothing under it was examined");
                report.roots_not_examined.push(RootError {
                    root: root.clone(),
                    error: e.to_string(),
                });
                continue;
            }
        };
        for found in found_tables {
            let url = format!("{}{}", loc.url, with_slash(&found.root));
            if own.iter().any(|o| url.starts_with(o.as_str())) {
                continue;
            }
            let owner = registered
                .iter()
                .filter(|t| url.starts_with(t.location.url.as_str()))
                .max_by_key(|t| t.location.url.as_str().len());
            let masked = probe.mask(&url);
            let name = match owner {
                Some(t) => t.spec.name.clone(),
                None => unique_name(&masked, &mut names),
            };
            let mut table = examine(&loc, found, url, name, owner, &against, opts).await?;
            if masked != table.location {
                // A folder named after an erased id: said without the id, and no spec
                // proposed (it would have to name the folder).
                table.location = masked;
                if table.proposed_spec.take().is_some() {
                    table.note = Some(
                        "its location names an erased subject: no spec is proposed; review it by hand"
                            .into(),
                    );
                }
            }
            if let (Some(dir), Some(spec)) = (&opts.write, &table.proposed_spec) {
                table.written = Some(write_spec(dir, &table.name, spec)?);
            }
            report.tables.push(table);
        }
    }
    Ok(report)
}

fn with_slash(root: &str) -> String {
    if root.is_empty() {
        String::new()
    } else {
        format!("{root}/")
    }
}

/// A table name for an unregistered table at `url`: its last two folders, not yet taken.
fn unique_name(url: &str, taken: &mut BTreeSet<String>) -> String {
    let parts: Vec<&str> = url.trim_end_matches('/').rsplit('/').take(2).collect();
    let base: String = parts
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(".")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}_{n}");
        n += 1;
    }
    name
}

/// Reads a sample of one found table and makes its report (and proposed spec).
async fn examine(
    root: &Location,
    found: walk::FoundTable,
    url: String,
    name: String,
    owner: Option<&Table>,
    against: &evidence::Against<'_>,
    opts: &Options,
) -> Result<TableReport> {
    let files = found.files.len() as u64;
    let sample: Vec<_> = walk::spread(found.files.len(), opts.files_per_table)
        .into_iter()
        .map(|i| found.files[i].clone())
        .collect();
    let covered: BTreeSet<Vec<String>> = owner
        .iter()
        .flat_map(|t| &t.spec.matches)
        .flat_map(|m| m.key_paths())
        .collect();
    let rel = |m: &object_store::ObjectMeta| root.relative(&m.location);
    let sampled = sample.len() as u64;
    let ev = evidence::gather(&name, root, rel, sample, against, &covered).await;
    let suspects = ev
        .columns
        .iter()
        .filter(|c| !covered.contains(*c) && evidence::name_hint(c))
        .filter(|c| !ev.evidence.iter().any(|e| &e.column == *c))
        .map(|c| c.join("."))
        .collect();
    let mut report = TableReport {
        location: url,
        name,
        registered: owner.is_some(),
        format: found
            .format
            .map_or("parquet", |f| f.name())
            .to_lowercase()
            .replace(' ', "_"),
        files,
        files_read: ev.files_read,
        files_unreadable: ev.unreadable.len() as u64,
        examined: ev.unreadable.is_empty() && ev.files_read == sampled,
        evidence: ev
            .evidence
            .iter()
            .filter(|e| e.finding())
            .map(evidence_report)
            .collect(),
        weak_matches: ev
            .evidence
            .iter()
            .filter(|e| !e.finding())
            .map(evidence_report)
            .collect(),
        suspects,
        finding: None,
        proposed_spec: None,
        written: None,
        note: None,
    };
    let findings: Vec<Evidence> = ev.evidence.into_iter().filter(|e| e.finding()).collect();
    if !findings.is_empty() {
        propose_spec(&mut report, owner, found.format, &findings)?;
    }
    Ok(report)
}

fn evidence_report(e: &Evidence) -> EvidenceReport {
    EvidenceReport {
        column: propose::column_path(&e.column).to_string(),
        subject_type: e.subject_type.clone(),
        normalize: e.normalize,
        rows: e.rows,
        files_with: e.files_with,
        weighed: e.weighed.clone(),
    }
}

/// Makes `report` a finding, with its proposed spec (written with `--write`).
fn propose_spec(
    report: &mut TableReport,
    owner: Option<&Table>,
    format: Option<Logged>,
    evidence: &[Evidence],
) -> Result<()> {
    report.finding = Some(
        if owner.is_some() {
            "uncovered"
        } else {
            "unregistered"
        }
        .into(),
    );
    report.proposed_spec = match (owner, format) {
        (Some(t), _) => Some(propose::extended(
            &t.spec,
            t.location.url.as_str(),
            evidence,
        )),
        (None, None | Some(Logged::Delta)) => Some(propose::unregistered(
            &report.name,
            &report.location,
            format.is_some(),
            evidence,
        )),
        (None, Some(f)) => {
            report.note = Some(format!(
                "a {} table: lakepurge cannot purge it yet; erase these rows with the format's own tools",
                f.name()
            ));
            None
        }
    };
    Ok(())
}

/// Writes a proposed spec to `<dir>/<name>.toml`.
fn write_spec(dir: &std::path::Path, name: &str, spec: &str) -> Result<String> {
    let io = |e: std::io::Error| Error::Usage(format!("--write {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, spec).map_err(io)?;
    Ok(path.display().to_string())
}

/// A normalisation as a spec names it.
fn normalize_name(n: Normalize) -> &'static str {
    match n {
        Normalize::Lowercase => "lowercase",
        Normalize::Trim => "trim",
        Normalize::LowercaseTrim => "lowercase_trim",
    }
}

/// The report as text.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let mut weak = String::new();
    let mut suspects = String::new();
    for t in &r.tables {
        let what = match t.finding.as_deref() {
            Some("unregistered") => "FINDING unregistered table",
            Some(_) => "FINDING uncovered column(s) in registered table",
            None if !t.examined => "NOT EXAMINED (fully)",
            None if t.registered => "ok      registered table",
            None => "ok      unregistered table, no erased subject found in",
        };
        out += &format!(
            "{what} {} ({}, {}): {} of {} files read{}\n",
            t.name,
            t.format,
            t.location,
            t.files_read,
            t.files,
            if t.files_unreadable > 0 {
                format!(", {} could not be read", t.files_unreadable)
            } else {
                String::new()
            }
        );
        for e in &t.evidence {
            out += &format!("    column {}\n", evidence_line(e, t.files_read));
        }
        if let Some(w) = &t.written {
            out += &format!("    proposed spec written to {w}\n");
        } else if t.proposed_spec.is_some() {
            out += "    a proposed spec: --write DIR, or --json\n";
        }
        if let Some(n) = &t.note {
            out += &format!("    {n}\n");
        }
        for e in &t.weak_matches {
            weak += &format!(
                "weak match, not proposed: table {} column {}\n    {}\n",
                t.name,
                evidence_line(e, t.files_read),
                e.weighed.reason.as_deref().unwrap_or_default()
            );
        }
        for s in &t.suspects {
            suspects += &format!(
                "suspect table {}: column {s} looks like an identifier; no erased subject found in {} files read\n",
                t.name, t.files_read
            );
        }
    }
    out += &weak;
    out += &suspects;
    for e in &r.roots_not_examined {
        out += &format!("NOT EXAMINED root {}: {}\n", e.root, e.error);
    }
    out += &format!(
        "{} tables examined under {} root(s); {} finding(s); {} not examined\n",
        r.tables.len(),
        r.roots.len(),
        r.findings(),
        r.not_examined()
    );
    out
}

/// One column's evidence: counts, lift and where.
fn evidence_line(e: &EvidenceReport, files_read: u64) -> String {
    let w = &e.weighed;
    format!(
        "{}: {} erased `{}` subjects in {} rows{} (chance: {:.2}, lift {:.1}), in {} of {} files read",
        e.column,
        w.subjects,
        e.subject_type,
        e.rows,
        e.normalize
            .map(|n| format!(", normalize = {}", normalize_name(n)))
            .unwrap_or_default(),
        w.expected,
        w.lift,
        e.files_with,
        files_read
    )
}
