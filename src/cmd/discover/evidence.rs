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

use crate::events::Events;
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

/// Rows of one column that hold erased subjects of one type.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    pub column: Vec<String>,
    pub subject_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    pub rows: u64,
    /// Files read where the column holds at least one.
    pub files_with: u64,
}

/// What reading a table's sample found.
#[derive(Debug, Default)]
pub struct TableEvidence {
    pub files_read: u64,
    pub files_unreadable: u64,
    /// Every column that can hold a subject id, as path segments.
    pub columns: BTreeSet<Vec<String>>,
    pub evidence: Vec<Evidence>,
}

/// A file of the sample with its footer read.
struct Opened {
    reader: StoreReader,
    schema: Schema,
    rel: String,
}

/// Reads the footers of `files`, then looks every column that can hold a subject id (except
/// those `covered` by a rule) up against every subject type of `events`. `normalize` says how
/// each subject type's text ids are normalised (as the job's rules do).
pub async fn gather(
    table: &str,
    root: &crate::store::Location,
    relative: impl Fn(&ObjectMeta) -> String,
    files: Vec<ObjectMeta>,
    events: &Events,
    normalize: &BTreeMap<String, Option<Normalize>>,
    covered: &BTreeSet<Vec<String>>,
) -> TableEvidence {
    let mut out = TableEvidence::default();
    let sampled = files.len() as u64;
    let in_flight = plan::io_concurrency(root);
    let store = &root.store;
    let opened: Vec<Option<Opened>> = futures::stream::iter(files.into_iter().map(|meta| {
        let rel = relative(&meta);
        open(table, Arc::clone(store), meta, rel)
    }))
    .buffered(in_flight)
    .collect()
    .await;
    let opened: Vec<Opened> = opened.into_iter().flatten().collect();
    out.files_read = opened.len() as u64;
    for o in &opened {
        leaf_paths(o.schema.fields(), &[], &mut out.columns);
    }
    out.files_unreadable = sampled - out.files_read;
    out.columns
        .retain(|p| opened.iter().any(|o| key_type(&o.schema, p).is_some()));
    for column in out.columns.iter().filter(|c| !covered.contains(*c)) {
        for subject_type in events.by_type.keys() {
            let norm = normalize.get(subject_type).copied().flatten();
            let found = look_up(
                table,
                &opened,
                column,
                subject_type,
                norm,
                events,
                in_flight,
            )
            .await;
            if found.rows > 0 {
                out.evidence.push(found);
            }
        }
    }
    out
}

/// A file's reader and Arrow schema; a file that does not read is a warning and `None`.
async fn open(
    table: &str,
    store: Arc<dyn ObjectStore>,
    meta: ObjectMeta,
    rel: String,
) -> Option<Opened> {
    let mut reader = StoreReader::new(ObjectVersion::new(store, meta));
    let schema = match reader.get_metadata(None).await {
        Ok(m) => plan::arrow_schema(&m).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match schema {
        Ok(schema) => Some(Opened {
            reader,
            schema,
            rel,
        }),
        Err(e) => {
            tracing::warn!(table, file = %rel, error = %e, "not a readable Parquet file: passed over");
            None
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

/// The type a column's values are compared as, if it can hold a subject id.
fn key_type(schema: &Schema, path: &[String]) -> Option<DataType> {
    plan::resolve_key(schema, path, None)
        .ok()
        .map(|k| k.compare_type)
}

/// Counts the rows of `column` holding erased subjects of `subject_type` over the files.
async fn look_up(
    table: &str,
    files: &[Opened],
    column: &[String],
    subject_type: &str,
    normalize: Option<Normalize>,
    events: &Events,
    in_flight: usize,
) -> Evidence {
    let text = files
        .iter()
        .any(|o| key_type(&o.schema, column) == Some(DataType::Utf8));
    let normalize = normalize.filter(|_| text);
    let spec = rule(table, column, subject_type, normalize);
    let matcher = Matcher::new(&spec, events);
    let matcher = &matcher;
    let counts: Vec<u64> = futures::stream::iter(files.iter().filter(|o| {
        plan::resolve_key(&o.schema, column, normalize).is_ok()
    }))
    .map(|o| async move {
        match matcher.scan(o.reader.clone(), table, &o.rel).await {
            Ok(fp) => fp.rows_matched,
            Err(e) => {
                tracing::warn!(table, file = %o.rel, column = %column.join("."), error = %e, "cannot look the column up: passed over");
                0
            }
        }
    })
    .buffer_unordered(in_flight)
    .collect()
    .await;
    Evidence {
        column: column.to_vec(),
        subject_type: subject_type.to_string(),
        normalize,
        rows: counts.iter().sum(),
        files_with: counts.iter().filter(|n| **n > 0).count() as u64,
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
        old_files: None,
        old_versions: None,
        old_log: None,
        allow_empty: false,
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
