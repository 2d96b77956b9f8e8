//! Stage 1, specs: the job file and its table specs, parsed once into typed structs.
//!
//! A job file names the job, where manifests go, the event dataset and the tables (inline
//! `[[table]]` entries and/or a folder of one-table spec files). Unknown keys are errors, as
//! are missing keys, duplicate table names and inconsistent match rules; every error names the
//! file and the field. Nothing here touches storage: `validate` and `plan` do that.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A parsed and checked job: the job section, the events section and every table.
#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    /// Where manifests go, as written (resolved against `dir`).
    pub manifests: String,
    pub manifests_storage_options: BTreeMap<String, String>,
    /// Where the confirmations dataset goes, as written (default: `<manifests>/<job>/confirmations/`);
    /// it uses the `[job]` storage options, like the manifests.
    pub confirmations: Option<String>,
    pub events: EventsSpec,
    /// The hold dataset (`[holds]`): subjects whose rows are kept under a legal hold.
    pub holds: Option<HoldsSpec>,
    pub tables: Vec<TableSpec>,
    /// The folder of the job file: relative locations resolve against it.
    pub dir: PathBuf,
    /// The job file itself.
    pub file: PathBuf,
    /// sha256 over the job file and every table spec file, as read.
    pub spec_sha256: String,
    /// sha256 of each spec file as read: `job` for the job file, a table spec by its path
    /// relative to the job file's folder (what changed, when a run's spec did).
    pub spec_files: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobFile {
    job: JobSection,
    events: EventsSpec,
    holds: Option<HoldsSpec>,
    #[serde(default, rename = "table")]
    tables: Vec<TableSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSection {
    name: String,
    manifests: String,
    confirmations: Option<String>,
    tables: Option<String>,
    #[serde(default)]
    storage_options: BTreeMap<String, String>,
    old_files: Option<OldFiles>,
    old_versions: Option<OldVersions>,
}

/// The `[holds]` section: where the hold dataset is, its format, and what its columns are
/// called (each defaults to its standard name).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldsSpec {
    pub location: String,
    pub format: EventFormat,
    #[serde(default)]
    pub columns: HoldColumns,
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
}

/// The hold dataset's column names (`[holds.columns]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HoldColumns {
    pub hold_id: String,
    pub subject_type: String,
    pub subject_id: String,
    pub table: String,
    pub basis: String,
    pub reference: String,
    pub placed_at: String,
    pub released_at: String,
}

impl Default for HoldColumns {
    fn default() -> HoldColumns {
        HoldColumns {
            hold_id: "hold_id".into(),
            subject_type: "subject_type".into(),
            subject_id: "subject_id".into(),
            table: "table".into(),
            basis: "basis".into(),
            reference: "reference".into(),
            placed_at: "placed_at".into(),
            released_at: "released_at".into(),
        }
    }
}

/// The lawful grounds for keeping data an erasure request names (GDPR Art. 17(3)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    LegalClaims,
    LegalObligation,
    PublicInterest,
    Archiving,
    Other,
}

impl Basis {
    pub const ALL: [Basis; 5] = [
        Basis::LegalClaims,
        Basis::LegalObligation,
        Basis::PublicInterest,
        Basis::Archiving,
        Basis::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Basis::LegalClaims => "legal_claims",
            Basis::LegalObligation => "legal_obligation",
            Basis::PublicInterest => "public_interest",
            Basis::Archiving => "archiving",
            Basis::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Basis> {
        Basis::ALL.into_iter().find(|b| b.name() == s)
    }
}

/// A table's exemption (`retain = { basis, reference, until }`): the table is searched and
/// counted, never changed, until `until` (an RFC 3339 time or a date) when given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retain {
    pub basis: Basis,
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl Retain {
    /// Whether the exemption is in force at `now`.
    pub fn in_force(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.until
            .as_deref()
            .and_then(parse_time)
            .is_none_or(|until| now < until)
    }
}

/// An RFC 3339 time, a `YYYY-MM-DD HH:MM:SS` time (UTC) or a date (its midnight, UTC).
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let s = s.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(t.and_utc());
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The `[events]` section: where the erasure-event dataset is and what its columns are called.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsSpec {
    pub location: String,
    pub format: EventFormat,
    #[serde(default = "default_event_id")]
    pub event_id: String,
    #[serde(default = "default_subject_type")]
    pub subject_type: String,
    #[serde(default = "default_subject_id")]
    pub subject_id: String,
    #[serde(default = "default_requested_at")]
    pub requested_at: String,
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
}

fn default_event_id() -> String {
    "event_id".into()
}
fn default_subject_type() -> String {
    "subject_type".into()
}
fn default_subject_id() -> String {
    "subject_id".into()
}
fn default_requested_at() -> String {
    "requested_at".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventFormat {
    Parquet,
    Ndjson,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    #[default]
    Parquet,
    /// A Delta Lake table: files come from its log, and a purge is one transaction in it.
    Delta,
    /// An Apache Iceberg table, through its catalog: files come from its current snapshot,
    /// and a purge is one snapshot committed with the catalog's compare-and-swap.
    Iceberg,
}

/// The catalog of an Iceberg table (`catalog = { type = "sql", uri = "...", name = "..." }`).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CatalogSpec {
    #[serde(rename = "type")]
    pub kind: CatalogKind,
    /// `sql`: the database (`sqlite:///relative.db`, `sqlite:////absolute.db`,
    /// `postgresql://...`), as pyiceberg, Spark and Trino give it. `rest`: the server.
    pub uri: String,
    /// `sql`: the catalog's name (the `catalog_name` column of its tables).
    pub name: Option<String>,
    /// `rest`: the warehouse to ask for.
    pub warehouse: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatalogKind {
    /// The JDBC catalog schema (`iceberg_tables`) that pyiceberg, Spark and Trino share.
    Sql,
    /// The REST catalog protocol.
    Rest,
}

/// What happens to the noncurrent versions of purged objects on versioned buckets (they hold
/// the erased rows, readable by version id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OldVersions {
    /// Deleted by version id once the replacement or deletion committed.
    #[default]
    Delete,
    /// Left; the manifest and `verify` say how many still hold erased rows.
    Keep,
}

/// What happens to the files a Delta purge commit removed (they still hold the erased rows,
/// and time travel to earlier versions serves them until VACUUM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OldFiles {
    /// Deleted right after the commit (time travel to earlier versions then fails for them).
    #[default]
    Delete,
    /// Left for VACUUM; the manifest says how many still hold erased rows.
    Keep,
}

/// What happens to a Delta table's older log entries and checkpoints, whose file statistics
/// (`minValues`/`maxValues`) may name erased values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OldLog {
    /// Left (the log's own retention removes them); the manifest counts those naming an
    /// erased value and `verify` warns about them.
    #[default]
    Keep,
    /// When one names an erased value: a checkpoint is written after the purge commit and the
    /// log entries and checkpoints before it are removed (time travel before it ends).
    Expire,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Delete,
    Redact,
}

/// One registered table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub name: String,
    /// Required but for `format = "iceberg"`, whose location its metadata gives (when given,
    /// it must be that one).
    #[serde(default)]
    pub location: String,
    #[serde(default)]
    pub format: TableFormat,
    #[serde(default)]
    pub partitioning: Vec<String>,
    #[serde(default)]
    pub action: Action,
    #[serde(rename = "match")]
    pub matches: Vec<MatchSpec>,
    #[serde(default)]
    pub redact: Vec<String>,
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
    /// `format = "iceberg"` only: the table's name in its catalog (`namespace.table`).
    pub identifier: Option<String>,
    /// `format = "iceberg"` only: where the table's current metadata is named.
    pub catalog: Option<CatalogSpec>,
    /// `format = "delta"` or `"iceberg"` only; when absent, the job's `old_files` (default
    /// `delete`).
    pub old_files: Option<OldFiles>,
    /// When absent, the job's `old_versions` (default `delete`).
    pub old_versions: Option<OldVersions>,
    /// `format = "delta"` only (default `keep`).
    pub old_log: Option<OldLog>,
    /// A location that lists no data file is refused (most likely a typo) unless an earlier
    /// manifest of the job saw files there, or this is set (a table registered before its
    /// first file lands).
    #[serde(default)]
    pub allow_empty: bool,
    /// A lawful exemption: the table is searched and counted, never changed.
    pub retain: Option<Retain>,
    /// The file this table was declared in (the job file for inline tables).
    #[serde(skip)]
    pub source: PathBuf,
}

/// One `[[match]]` rule: a column (or dotted struct path, or list column) or a composite key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    pub column: Option<ColumnPath>,
    pub columns: Option<Vec<ColumnPath>>,
    pub subject_type: String,
    pub normalize: Option<Normalize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    Lowercase,
    Trim,
    LowercaseTrim,
}

/// A column as a spec names it: a string is a column name or a dotted path into structs
/// (`"sender.id"`); an array gives the path's segments one by one, for names that hold a dot
/// themselves (`["user.id"]` is the top-level column `user.id`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ColumnPath {
    Dotted(String),
    Segments(Vec<String>),
}

impl ColumnPath {
    /// The path's segments, from the top-level column down.
    pub fn segments(&self) -> Vec<String> {
        match self {
            ColumnPath::Dotted(s) => s.split('.').map(str::to_string).collect(),
            ColumnPath::Segments(v) => v.clone(),
        }
    }
}

impl std::fmt::Display for ColumnPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnPath::Dotted(s) => f.write_str(s),
            ColumnPath::Segments(v) => write!(f, "{v:?}"),
        }
    }
}

impl MatchSpec {
    /// The key columns of this rule, each as its path's segments.
    pub fn key_paths(&self) -> Vec<Vec<String>> {
        match (&self.column, &self.columns) {
            (Some(c), _) => vec![c.segments()],
            (None, Some(cs)) => cs.iter().map(ColumnPath::segments).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// Whether the rule is a composite key (`columns = [...]`).
    pub fn is_composite(&self) -> bool {
        self.columns.is_some()
    }

    /// A short label for messages: `user_id`, `sender.id`, `["user.id"]` or
    /// `[tenant_id, user_id]`.
    pub fn label(&self) -> String {
        match (&self.column, &self.columns) {
            (Some(c), _) => c.to_string(),
            (None, Some(cs)) => format!(
                "[{}]",
                cs.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            (None, None) => "<none>".into(),
        }
    }
}

/// Checks a run id or job name: it becomes part of an object path, so only letters, digits,
/// `-`, `_`, `.` and `:` are allowed, and it must not start with `.`.
pub fn check_name(kind: &str, value: &str) -> std::result::Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= 200
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} {value:?} is not allowed: use 1-200 letters, digits, '-', '_', '.' or ':', not starting with '.'"
        ))
    }
}

impl Job {
    /// Reads and checks the job file at `path` and every table spec it refers to.
    pub fn load(path: &Path) -> Result<Job> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::spec(&shown, format!("cannot read job spec: {e}")))?;
        let parsed: JobFile = toml::from_str(&text).map_err(|e| Error::spec(&shown, e))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut hasher = Sha256::new();
        hash_file(&mut hasher, "job", text.as_bytes());
        let mut spec_files = BTreeMap::from([(
            "job".to_string(),
            hex::encode(Sha256::digest(text.as_bytes())),
        )]);

        check_name("job.name", &parsed.job.name).map_err(|m| Error::spec(&shown, m))?;
        let mut tables = parsed.tables;
        for t in &mut tables {
            t.source = path.to_path_buf();
        }
        let (job_old_files, job_old_versions) = (parsed.job.old_files, parsed.job.old_versions);
        if let Some(folder) = &parsed.job.tables {
            let found = read_table_folder(&dir, folder, &shown, &mut hasher, &mut spec_files)?;
            tables.extend(found);
        }
        let mut seen = BTreeSet::new();
        for t in &mut tables {
            check_table(t)?;
            t.old_versions = t.old_versions.or(job_old_versions);
            if t.format != TableFormat::Parquet {
                t.old_files = t.old_files.or(job_old_files).or(Some(OldFiles::default()));
            }
            if !seen.insert(t.name.clone()) {
                return Err(Error::spec(
                    t.source.display(),
                    format!(
                        "table name {:?} is declared twice; table names must be unique",
                        t.name
                    ),
                ));
            }
        }
        if tables.is_empty() {
            return Err(Error::spec(
                &shown,
                "the job has no tables: add [[table]] entries or job.tables = \"<folder>\"",
            ));
        }
        Ok(Job {
            name: parsed.job.name,
            manifests: parsed.job.manifests,
            manifests_storage_options: parsed.job.storage_options,
            confirmations: parsed.job.confirmations,
            events: parsed.events,
            holds: parsed.holds,
            tables,
            dir,
            file: path.to_path_buf(),
            spec_sha256: hex::encode(hasher.finalize()),
            spec_files,
        })
    }
}

fn hash_file(hasher: &mut Sha256, name: &str, bytes: &[u8]) {
    hasher.update((name.len() as u64).to_le_bytes());
    hasher.update(name.as_bytes());
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

/// The table specs of `folder` (`job.tables`, relative to the job's `dir`), by file name; each
/// file's text is hashed into `hasher` and its digest recorded in `spec_files`.
fn read_table_folder(
    dir: &Path,
    folder: &str,
    shown: &str,
    hasher: &mut Sha256,
    spec_files: &mut BTreeMap<String, String>,
) -> Result<Vec<TableSpec>> {
    let mut tables = Vec::new();
    let folder_path = dir.join(folder);
    let entries = std::fs::read_dir(&folder_path).map_err(|e| {
        Error::spec(
            shown,
            format!(
                "job.tables: cannot read folder {}: {e}",
                folder_path.display()
            ),
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for file in files {
        let shown_t = file.display().to_string();
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::spec(&shown_t, format!("cannot read table spec: {e}")))?;
        let mut table: TableSpec = toml::from_str(&text).map_err(|e| Error::spec(&shown_t, e))?;
        table.source = file.clone();
        hash_file(hasher, &shown_t, text.as_bytes());
        let rel = file
            .strip_prefix(dir)
            .unwrap_or(&file)
            .display()
            .to_string();
        spec_files.insert(rel, hex::encode(Sha256::digest(text.as_bytes())));
        tables.push(table);
    }
    Ok(tables)
}

fn check_table(t: &TableSpec) -> Result<()> {
    let file = t.source.display().to_string();
    let err = |m: String| Error::spec(&file, format!("table {:?}: {m}", t.name));
    if t.name.trim().is_empty() {
        return Err(Error::spec(&file, "name: must not be empty"));
    }
    if t.location.trim().is_empty() && t.format != TableFormat::Iceberg {
        return Err(err("location: must not be empty".into()));
    }
    check_iceberg(t).map_err(err)?;
    if t.matches.is_empty() {
        return Err(err("needs at least one [[match]] rule".into()));
    }
    if let Some(r) = &t.retain {
        if r.reference.trim().is_empty() {
            return Err(err(
                "retain.reference: must name the ground for keeping the table (a law, a case)"
                    .into(),
            ));
        }
        if let Some(until) = r.until.as_deref().filter(|u| parse_time(u).is_none()) {
            return Err(err(format!(
                "retain.until: {until:?} is not a time: expected RFC 3339 or YYYY-MM-DD"
            )));
        }
    }
    if t.format == TableFormat::Parquet && t.old_files.is_some() {
        return Err(err(
            "old_files: only allowed with format = \"delta\" or \"iceberg\" (it says what \
             happens to the files a commit removed)"
                .into(),
        ));
    }
    if t.format != TableFormat::Delta && t.old_log.is_some() {
        return Err(err(
            "old_log: only allowed with format = \"delta\" (it says what happens to the log \
             entries whose statistics name erased values)"
                .into(),
        ));
    }
    if t.format != TableFormat::Parquet && !t.partitioning.is_empty() {
        return Err(err(
            "partitioning: not used with format = \"delta\" or \"iceberg\" (the partition \
             values come from the table's log or manifests); remove it"
                .into(),
        ));
    }
    for (i, m) in t.matches.iter().enumerate() {
        check_match(m, &format!("match[{i}]")).map_err(err)?;
    }
    match t.action {
        Action::Delete => {
            if !t.redact.is_empty() {
                return Err(err("redact: only allowed with action = \"redact\"".into()));
            }
        }
        Action::Redact => {
            if t.redact.is_empty() {
                return Err(err("redact: action = \"redact\" needs the columns to null, e.g. redact = [\"email\"]".into()));
            }
            if let Some(c) = t.redact.iter().find(|c| c.is_empty() || c.contains('.')) {
                return Err(err(format!("redact: {c:?} is not a top-level column name")));
            }
        }
    }
    Ok(())
}

/// The fields only an Iceberg table has: `identifier` (`namespace.table`) and a `catalog`,
/// both required for it and refused for any other format.
fn check_iceberg(t: &TableSpec) -> std::result::Result<(), String> {
    if t.format != TableFormat::Iceberg {
        if t.identifier.is_some() || t.catalog.is_some() {
            return Err(
                "identifier and catalog: only allowed with format = \"iceberg\" (they name the \
                 table in its catalog)"
                    .into(),
            );
        }
        return Ok(());
    }
    let Some(identifier) = t.identifier.as_deref() else {
        return Err(
            "identifier: format = \"iceberg\" needs the table's name in its catalog, e.g. \
             identifier = \"crm.users\""
                .into(),
        );
    };
    let parts: Vec<&str> = identifier.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.trim().is_empty()) {
        return Err(format!(
            "identifier: {identifier:?} is not namespace.table (e.g. \"crm.users\")"
        ));
    }
    let Some(catalog) = &t.catalog else {
        return Err(
            "catalog: format = \"iceberg\" needs its catalog, e.g. catalog = { type = \"sql\", \
             uri = \"sqlite:////var/lib/iceberg/catalog.db\", name = \"prod\" }"
                .into(),
        );
    };
    if catalog.uri.trim().is_empty() {
        return Err("catalog.uri: must not be empty".into());
    }
    match catalog.kind {
        CatalogKind::Sql => {
            if catalog.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
                return Err(
                    "catalog.name: a SQL catalog needs its name (the catalog_name of its tables, \
                     e.g. name = \"prod\")"
                        .into(),
                );
            }
            if catalog.warehouse.is_some() {
                return Err("catalog.warehouse: only for type = \"rest\"".into());
            }
        }
        CatalogKind::Rest => {
            return Err(
                "catalog.type = \"rest\": not supported by this version of lakepurge (type = \
                 \"sql\" is); nothing was written"
                    .into(),
            );
        }
    }
    Ok(())
}

/// Checks one match rule of a table spec (`at` names it in messages).
fn check_match(m: &MatchSpec, at: &str) -> std::result::Result<(), String> {
    match (&m.column, &m.columns) {
        (Some(_), Some(_)) => {
            return Err(format!("{at}: give either column or columns, not both"));
        }
        (None, None) => return Err(format!("{at}: missing column (or columns)")),
        (None, Some(cs)) if cs.len() < 2 => {
            return Err(format!(
                "{at}.columns: a composite key needs at least two columns, got {}",
                cs.len()
            ));
        }
        _ => {}
    }
    for c in m.key_paths() {
        if c.is_empty() || c.iter().any(String::is_empty) {
            return Err(format!(
                "{at}: {c:?} is not a column name, a dotted path or an array of path \
                 segments"
            ));
        }
    }
    if m.subject_type.trim().is_empty() {
        return Err(format!("{at}.subject_type: must not be empty"));
    }
    if m.is_composite() && m.normalize.is_some() {
        return Err(format!("{at}.normalize: not supported on a composite key"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    const JOB: &str = r#"
[job]
name = "nightly"
manifests = "manifests"
tables = "tables"
[events]
location = "events"
format = "ndjson"
subject_id = "value"
[[table]]
name = "a"
location = "a"
[[table.match]]
column = "user_id"
subject_type = "user_id"
"#;

    #[test]
    fn loads_inline_and_folder_tables() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tables")).unwrap();
        write(
            &dir.path().join("tables"),
            "b.toml",
            "name = \"b\"\nlocation = \"b\"\n[[match]]\ncolumns = [\"t\", \"u\"]\nsubject_type = \"tu\"\n",
        );
        let job = Job::load(&write(dir.path(), "job.toml", JOB)).unwrap();
        assert_eq!(job.tables.len(), 2);
        assert_eq!(job.events.subject_id, "value");
        assert_eq!(job.events.event_id, "event_id");
        assert_eq!(
            job.tables[1].matches[0].key_paths(),
            vec![vec!["t".to_string()], vec!["u".to_string()]]
        );
        assert_eq!(job.spec_sha256.len(), 64);
    }

    #[test]
    fn unknown_key_names_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tables")).unwrap();
        let bad = JOB.replace(
            "subject_type = \"user_id\"",
            "subject_type = \"user_id\"\ncolour = 1",
        );
        let err = Job::load(&write(dir.path(), "job.toml", &bad)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("job.toml") && msg.contains("colour"), "{msg}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn run_ids_with_path_characters_are_refused() {
        assert!(check_name("run id", "2026-11-25").is_ok());
        assert!(check_name("run id", "../x").is_err());
        assert!(check_name("run id", "a/b").is_err());
        assert!(check_name("run id", "").is_err());
    }
}
