//! The evidence of one table: its columns that can hold a subject id (nested struct fields and
//! list elements included), and for each, how many rows of the files read hold an erased
//! subject of each subject type: the plan's own matching (ids converted to the column's type,
//! normalised as a rule would, statistics and bloom filters pruning first), as if a rule named
//! the column. Counts only, never a value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{DataType, Fields, Schema};
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore};
use parquet::arrow::async_reader::AsyncFileReader;
use serde::Serialize;

use super::chance::{self, Bar, Probe, ProbeType, Verdict, Weighed};
use crate::plan::{self, Matcher, StoreReader};
use crate::spec::{Action, MatchSpec, Normalize, TableFormat, TableSpec};
use crate::store::ObjectVersion;

/// Name parts of columns that usually hold personal identifiers.
const ID_WORDS: &[&str] = &[
    "id",
    "uid",
    "uuid",
    "guid",
    "user",
    "userid",
    "username",
    "login",
    "account",
    "email",
    "mail",
    "phone",
    "mobile",
    "msisdn",
    "ip",
    "ipv4",
    "ipv6",
    "customer",
    "member",
    "person",
    "subject",
    "ssn",
    "device",
    "owner",
    "referrer",
    "recipient",
    "sender",
    "handle",
];

/// Whether a column's name looks like it holds a personal identifier.
pub fn name_hint(path: &[String]) -> bool {
    let Some(leaf) = path.last() else {
        return false;
    };
    let lower = leaf.to_lowercase();
    lower.ends_with("_id")
        || lower.ends_with("uid")
        || leaf.ends_with("Id")
        || lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| ID_WORDS.contains(&w))
}

/// Rows of one column that hold erased subjects of one type, weighed against chance.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    pub column: Vec<String>,
    pub subject_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    pub rows: u64,
    /// Files read where the column holds at least one.
    pub files_with: u64,
    pub weighed: Weighed,
}

impl Evidence {
    pub fn finding(&self) -> bool {
        self.weighed.verdict == Verdict::Finding
    }
}

/// What a table's columns are looked up against: the probe, how each subject type's ids are
/// normalised (as the job's rules do), and the bar a finding must pass.
#[derive(Clone, Copy)]
pub struct Against<'a> {
    pub probe: &'a Probe,
    pub normalize: &'a BTreeMap<String, Option<Normalize>>,
    pub bar: Bar,
}

/// What reading a table's sample found.
#[derive(Debug, Default)]
pub struct TableEvidence {
    pub files_read: u64,
    /// Files of the sample that could not be read (their footer, or a column looked up).
    pub unreadable: BTreeSet<String>,
    /// Every column that can hold a subject id, as path segments.
    pub columns: BTreeSet<Vec<String>>,
    /// Columns holding erased subjects: findings and weak matches.
    pub evidence: Vec<Evidence>,
}

/// A file of the sample with its footer read.
struct Opened {
    reader: StoreReader,
    schema: Schema,
    rel: String,
}

/// Reads the footers of `files`, then looks every column that can hold a subject id (except
/// those `covered` by a rule) up against every subject type of the `probe`, its erased ids and
/// their decoys. `normalize` says how each subject type's text ids are normalised (as the job's
/// rules do).
pub async fn gather(
    table: &str,
    root: &crate::store::Location,
    relative: impl Fn(&ObjectMeta) -> String,
    files: Vec<ObjectMeta>,
    against: &Against<'_>,
    covered: &BTreeSet<Vec<String>>,
) -> TableEvidence {
    let Against {
        probe,
        normalize,
        bar,
    } = *against;
    let mut out = TableEvidence::default();
    let in_flight = plan::io_concurrency(root);
    let store = &root.store;
    let opened: Vec<std::result::Result<Opened, String>> =
        futures::stream::iter(files.into_iter().map(|meta| {
            let rel = relative(&meta);
            open(table, Arc::clone(store), meta, rel)
        }))
        .buffered(in_flight)
        .collect()
        .await;
    let mut readable = Vec::with_capacity(opened.len());
    for o in opened {
        match o {
            Ok(o) => readable.push(o),
            Err(rel) => {
                out.unreadable.insert(rel);
            }
        }
    }
    let opened = readable;
    out.files_read = opened.len() as u64;
    for o in &opened {
        leaf_paths(o.schema.fields(), &[], &mut out.columns);
    }
    out.columns
        .retain(|p| opened.iter().any(|o| key_type(&o.schema, p).is_some()));
    let ctx = LookUp {
        table,
        files: &opened,
        probe,
        in_flight,
    };
    for column in out.columns.iter().filter(|c| !covered.contains(*c)) {
        for (subject_type, t) in &probe.types {
            let norm = normalize.get(subject_type).copied().flatten();
            let found = ctx.column(column, subject_type, t, norm).await;
            out.unreadable.extend(found.failed.iter().cloned());
            if found.subjects > 0 {
                let weighed = weigh(&opened, column, t, &found, bar);
                out.evidence.push(Evidence {
                    column: column.to_vec(),
                    subject_type: subject_type.clone(),
                    normalize: found.normalize,
                    rows: found.rows,
                    files_with: found.files_with,
                    weighed,
                });
            }
        }
    }
    out.files_read = out.files_read.saturating_sub(
        out.unreadable
            .iter()
            .filter(|f| opened.iter().any(|o| &o.rel == *f))
            .count() as u64,
    );
    out
}

/// What `found` (the column's lookup) says against chance, as [`chance::weigh`] judges it; a
/// finding in a column some file of the sample types so that no rule could match it is only
/// a weak match (a spec naming it would be refused).
fn weigh(
    opened: &[Opened],
    column: &[String],
    t: &ProbeType,
    found: &Found,
    bar: chance::Bar,
) -> chance::Weighed {
    let seen = chance::Observed {
        subjects: found.subjects,
        rows: found.rows,
        rows_scanned: found.rows_scanned,
        seeds_held: &found.seeds_held,
    };
    let mut weighed = chance::weigh(
        seen,
        &t.decoys,
        &found.decoy_hits,
        name_hint(column),
        chance::measure_name(column),
        bar,
    );
    if let Some(f) = unmatchable(opened, column).filter(|_| weighed.verdict == Verdict::Finding) {
        weighed.verdict = Verdict::WeakMatch;
        weighed.reason = Some(format!(
            "in {f} the column has a type no rule can match: a spec naming it would be refused"
        ));
    }
    weighed
}

/// A file's reader and Arrow schema; a file that does not read is a warning, and its path.
async fn open(
    table: &str,
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    rel: String,
) -> std::result::Result<Opened, String> {
    let mut reader = StoreReader::new(ObjectVersion::new(store, meta));
    let schema = match reader.get_metadata(None).await {
        Ok(m) => plan::arrow_schema(&m).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match schema {
        Ok(schema) => Ok(Opened {
            reader,
            schema,
            rel,
        }),
        Err(e) => {
            tracing::warn!(table, file = %rel, error = %e, "not a readable Parquet file: the table is not fully examined");
            Err(rel)
        }
    }
}

/// The leaf columns under `fields`: struct fields by name, through lists.
fn leaf_paths(fields: &Fields, prefix: &[String], out: &mut BTreeSet<Vec<String>>) {
    for f in fields {
        let mut path = prefix.to_vec();
        path.push(f.name().clone());
        let mut ty = f.data_type();
        while let DataType::List(inner)
        | DataType::LargeList(inner)
        | DataType::FixedSizeList(inner, _) = ty
        {
            ty = inner.data_type();
        }
        match ty {
            DataType::Struct(children) => leaf_paths(children, &path, out),
            _ => {
                out.insert(path);
            }
        }
    }
}

/// A file of the sample that has `column` with a type no rule can match (an all-null column,
/// floats), if any.
fn unmatchable<'a>(files: &'a [Opened], column: &[String]) -> Option<&'a str> {
    files
        .iter()
        .find(|o| {
            let mut paths = BTreeSet::new();
            leaf_paths(o.schema.fields(), &[], &mut paths);
            paths.contains(column) && key_type(&o.schema, column).is_none()
        })
        .map(|o| o.rel.as_str())
}

/// The type a column's values are compared as, if it can hold a subject id.
fn key_type(schema: &Schema, path: &[String]) -> Option<DataType> {
    plan::resolve_key(schema, path, None)
        .ok()
        .map(|k| k.compare_type)
}

/// What looking one column up against one subject type found.
struct Found {
    normalize: Option<Normalize>,
    rows: u64,
    /// Rows of the files the column was looked up in.
    rows_scanned: u64,
    files_with: u64,
    /// Distinct erased ids held.
    subjects: u64,
    /// Decoys held, per seed; whether the seed's erased id is held.
    decoy_hits: Vec<u32>,
    seeds_held: Vec<bool>,
    /// Files where the lookup failed.
    failed: Vec<String>,
}

/// The files of a table's sample and the probe they are looked up against.
struct LookUp<'a> {
    table: &'a str,
    files: &'a [Opened],
    probe: &'a Probe,
    in_flight: usize,
}

impl LookUp<'_> {
    /// Looks `column` up against the erased ids of `subject_type` and against their decoys.
    async fn column(
        &self,
        column: &[String],
        subject_type: &str,
        t: &ProbeType,
        normalize: Option<Normalize>,
    ) -> Found {
        let text = self
            .files
            .iter()
            .any(|o| key_type(&o.schema, column) == Some(DataType::Utf8));
        let normalize = normalize.filter(|_| text);
        let mut found = Found {
            normalize,
            rows: 0,
            rows_scanned: 0,
            files_with: 0,
            subjects: 0,
            decoy_hits: vec![0; t.decoys.per_seed.len()],
            seeds_held: vec![false; t.decoys.per_seed.len()],
            failed: Vec::new(),
        };
        let erased = self.scan(column, subject_type, normalize).await;
        let mut held = BTreeSet::new();
        for (rel, plan) in erased {
            match plan {
                Some(p) => {
                    found.rows += p.rows_matched;
                    found.rows_scanned += p.rows;
                    found.files_with += u64::from(p.rows_matched > 0);
                    held.extend(p.per_event.keys().copied());
                }
                None => found.failed.push(rel),
            }
        }
        found.subjects = held.len() as u64;
        if found.subjects == 0 {
            return found;
        }
        for (s, at) in t.decoys.seeds.iter().enumerate() {
            found.seeds_held[s] = held.contains(&(t.erased_base + at));
        }
        let mut decoys_held = BTreeSet::new();
        for (rel, plan) in self.scan(column, &t.decoy_type, normalize).await {
            match plan {
                Some(p) => decoys_held.extend(p.per_event.keys().copied()),
                None => found.failed.push(rel),
            }
        }
        for e in decoys_held {
            let seed = e
                .checked_sub(t.decoy_base)
                .and_then(|i| t.decoys.seed_of.get(i as usize));
            if let Some(hits) = seed.and_then(|&s| found.decoy_hits.get_mut(s as usize)) {
                *hits += 1;
            }
        }
        found
    }

    /// Scans every file that has `column` with a rule matching it against `subject_type`
    /// (of the probe): each file's plan, or `None` where the lookup failed.
    async fn scan(
        &self,
        column: &[String],
        subject_type: &str,
        normalize: Option<Normalize>,
    ) -> Vec<(String, Option<crate::plan::FilePlan>)> {
        let table = self.table;
        let spec = rule(table, column, subject_type, normalize);
        let matcher = Matcher::new(&spec, &self.probe.events);
        let matcher = &matcher;
        futures::stream::iter(self.files.iter().filter(|o| {
            plan::resolve_key(&o.schema, column, normalize).is_ok()
        }))
        .map(|o| async move {
            match matcher.scan(o.reader.clone(), table, &o.rel).await {
                Ok(fp) => (o.rel.clone(), Some(fp)),
                Err(e) => {
                    tracing::warn!(table, file = %o.rel, column = %column.join("."), error = %e, "cannot look the column up: the table is not fully examined");
                    (o.rel.clone(), None)
                }
            }
        })
        .buffer_unordered(self.in_flight)
        .collect()
        .await
    }
}

/// A table spec with one rule: `column` matched against `subject_type`.
fn rule(
    table: &str,
    column: &[String],
    subject_type: &str,
    normalize: Option<Normalize>,
) -> TableSpec {
    TableSpec {
        name: table.to_string(),
        location: String::new(),
        format: TableFormat::Parquet,
        partitioning: Vec::new(),
        action: Action::Delete,
        matches: vec![MatchSpec {
            column: Some(crate::spec::ColumnPath::Segments(column.to_vec())),
            columns: None,
            subject_type: subject_type.to_string(),
            normalize,
        }],
        redact: Vec::new(),
        storage_options: BTreeMap::new(),
        identifier: None,
        catalog: None,
        old_files: None,
        old_versions: None,
        old_log: None,
        allow_empty: false,
        retain: None,
        source: PathBuf::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_like_ids() {
        let p = |s: &str| vec![s.to_string()];
        for yes in [
            "user_id",
            "referrer_uid",
            "userId",
            "email",
            "forwarded_to_email",
            "client_ip",
            "account",
        ] {
            assert!(name_hint(&p(yes)), "{yes}");
        }
        for no in ["amount", "country", "created_at", "payload", "paid"] {
            assert!(!name_hint(&p(no)), "{no}");
        }
    }
}
