//! `verify --deep`: a second, independent implementation of "which rows match an erased
//! subject", so that a matching bug in `plan` (which `purge` carries out) cannot hide from the
//! auditor's check. It shares no matching code with `plan`: each file's match and redact columns
//! are read with DataFusion, and every rule is a SQL semi-join of the file's key values against
//! the rule's subjects, with the conversion of subject ids to the column's type and the
//! normalisation written as SQL expressions:
//!
//! - integers: `TRY_CAST(id AS <the column's integer type>)` (an id that does not convert is
//!   NULL and matches nothing);
//! - strings (any string type, dictionary-encoded too): the id itself, both sides through
//!   `lower` / `btrim(.., ' ')` when the rule normalises;
//! - binary: the id's bytes; fixed-size binary of 16 bytes: a UUID in text form (hex, dashes
//!   allowed) decoded, else (any size) the id's bytes when their length is the column's;
//! - struct paths with `get_field`, list columns (at any level of the path) with `unnest`:
//!   a row matches when any element does; composite keys join on every column (their ids are
//!   JSON arrays, split here into one text column per key column).
//!
//! A row counts once however many rules or elements match it; with `action = "redact"` a row
//! counts only while one of its redacted columns still holds a value.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::error::{Error, Result};
use crate::events::Events;
use crate::spec::{Action, MatchSpec, Normalize};
use crate::table::Table;

/// Files counted at once at most: each holds its key columns whole in memory while counted.
const DEEP_FILES_IN_FLIGHT: usize = 16;

/// The row number column added to each file's key columns.
const ROW: &str = "__lakepurge_row";

/// The subjects held in a table: (subject type, subject id as the hold wrote it).
pub type HeldIds = std::collections::HashSet<(String, String)>;

/// Counts, per file of `table`, the rows that still match a subject of `events`; returns the
/// files (relative paths) with their counts, and the number of files scanned. A row that holds
/// a subject of `held` (held in this table) is expected, whatever else it matches.
pub async fn remaining(
    table: &Table,
    events: &Events,
    held: Option<&HeldIds>,
) -> Result<(Vec<(String, u64)>, usize)> {
    use futures::StreamExt;
    let name = &table.spec.name;
    let qerr = |e| Error::query(format!("deep verify, table {name}"), e);
    let subjects_ctx = SessionContext::new();
    let subjects = register_subjects(&subjects_ctx, table, events, held)?;
    let mut providers = Vec::new();
    // Rules of the same subject type and width share a table: each is registered once.
    let names: std::collections::BTreeSet<&String> = subjects
        .iter()
        .flat_map(|s| s.iter().flat_map(|s| [&s.erased, &s.held]))
        .collect();
    for s in names {
        providers.push((
            s.clone(),
            subjects_ctx
                .table_provider(s.as_str())
                .await
                .map_err(qerr)?,
        ));
    }
    let files = table.list().await?;
    // Files are counted at once, each in its own session sharing the subjects' tables.
    let counts: Vec<Result<(String, u64)>> = futures::stream::iter(&files)
        .map(|meta| {
            let (providers, subjects) = (&providers, &subjects);
            async move {
                let rel = table.location.relative(&meta.location);
                let url = table.location.object_url(&meta.location);
                let ctx = SessionContext::new();
                ctx.register_object_store(
                    &table.location.store_url(),
                    table.location.store.clone(),
                );
                let counted = async {
                    for (s, provider) in providers {
                        ctx.register_table(s.as_str(), Arc::clone(provider))?;
                    }
                    count_file(&ctx, table, subjects, &url).await
                };
                let n = counted
                    .await
                    .map_err(|e| Error::query(format!("deep verify, table {name}: {rel}"), e))?;
                Ok((rel, n))
            }
        })
        .buffered(crate::plan::io_concurrency(&table.location).min(DEEP_FILES_IN_FLIGHT))
        .collect()
        .await;
    let mut out = Vec::new();
    for c in counts {
        let (rel, n) = c?;
        if n > 0 {
            out.push((rel, n));
        }
    }
    Ok((out, files.len()))
}

/// The tables of one rule's subjects: those erased, and those held in the table (a row
/// matching one of these is kept).
#[derive(Debug, Clone)]
struct RuleSubjects {
    erased: String,
    held: String,
}

/// The subjects of each rule as tables `subjects_<n>` (erased) and `held_<n>` (held in this
/// table by `held`) of text columns `p0`, `p1`, ...: the raw ids of the rule's subject type, or
/// for a composite key the parts of each JSON array (an id that is not an array of that many
/// strings or numbers matches nothing); rules of the same subject type and width share them.
/// `None` for a rule with no subject.
fn register_subjects(
    ctx: &SessionContext,
    table: &Table,
    events: &Events,
    held: Option<&HeldIds>,
) -> Result<Vec<Option<RuleSubjects>>> {
    let mut names = Vec::new();
    // One table per subject type and key width, whatever the number of rules using it.
    let mut registered: std::collections::BTreeMap<(&str, usize), RuleSubjects> =
        Default::default();
    for rule in &table.spec.matches {
        // A type no event names may still be held here: its held rows are kept whatever
        // other rule erases them.
        let subjects = events.by_type.get(&rule.subject_type);
        let held_here = held.is_some_and(|ids| ids.iter().any(|(ty, _)| *ty == rule.subject_type));
        if subjects.is_none() && !held_here {
            names.push(None);
            continue;
        }
        let width = rule.key_paths().len();
        if let Some(name) = registered.get(&(rule.subject_type.as_str(), width)) {
            names.push(Some(name.clone()));
            continue;
        }
        // Every subject of the events is looked for; the subjects the holds name in this
        // table (as the holds wrote them: a row holding one is kept, whatever else it
        // matches) are the other side.
        let mut parts: [Vec<Vec<Option<String>>>; 2] =
            [vec![Vec::new(); width], vec![Vec::new(); width]];
        let mut add = |side: usize, id: &str| {
            if width == 1 {
                parts[side][0].push(Some(id.to_string()));
            } else if let Some(split) = split_composite(id, width) {
                for (k, p) in split.into_iter().enumerate() {
                    parts[side][k].push(Some(p));
                }
            }
        };
        for batch in subjects
            .map(|s| s.batches(None))
            .transpose()?
            .into_iter()
            .flatten()
        {
            let batch = batch?;
            for id in batch.ids.iter().flatten() {
                add(0, id);
            }
        }
        for (ty, id) in held.into_iter().flatten() {
            if *ty == rule.subject_type {
                add(1, id);
            }
        }
        let n = registered.len();
        let [erased, kept] = parts;
        let rule_subjects = RuleSubjects {
            erased: register_parts(ctx, table, &format!("subjects_{n}"), erased)?,
            held: register_parts(ctx, table, &format!("held_{n}"), kept)?,
        };
        registered.insert((rule.subject_type.as_str(), width), rule_subjects.clone());
        names.push(Some(rule_subjects));
    }
    Ok(names)
}

/// Registers `parts` (one text column `p<k>` each) as the table `name`.
fn register_parts(
    ctx: &SessionContext,
    table: &Table,
    name: &str,
    parts: Vec<Vec<Option<String>>>,
) -> Result<String> {
    let fields: Vec<Field> = (0..parts.len())
        .map(|k| Field::new(format!("p{k}"), DataType::Utf8, true))
        .collect();
    let columns: Vec<ArrayRef> = parts
        .into_iter()
        .map(|p| Arc::new(StringArray::from(p)) as ArrayRef)
        .collect();
    let what = || format!("deep verify, table {}", table.spec.name);
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::arrow(what(), e))?;
    let mem = MemTable::try_new(batch.schema(), vec![vec![batch]])
        .map_err(|e| Error::query(what(), e))?;
    ctx.register_table(name, Arc::new(mem))
        .map_err(|e| Error::query(what(), e))?;
    Ok(name.to_string())
}

/// A composite subject id (a JSON array of `width` strings or numbers) split into its parts.
fn split_composite(id: &str, width: usize) -> Option<Vec<String>> {
    let values: Vec<serde_json::Value> = serde_json::from_str(id).ok()?;
    if values.len() != width {
        return None;
    }
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .collect()
}

/// The rows of one file that still match, counted with SQL.
async fn count_file(
    ctx: &SessionContext,
    table: &Table,
    subjects: &[Option<RuleSubjects>],
    url: &str,
) -> datafusion::error::Result<u64> {
    let spec = &table.spec;
    let df = ctx
        .read_parquet(url, ParquetReadOptions::default().file_extension(""))
        .await?;
    let schema = df.schema().as_arrow().clone();
    // The file's match and redact columns, each row numbered.
    let mut roots: Vec<String> = spec
        .matches
        .iter()
        .flat_map(|m| m.key_paths().into_iter().map(|p| p[0].clone()))
        .chain(redacted(spec))
        .filter(|c| schema.field_with_name(c).is_ok())
        .collect();
    roots.sort();
    roots.dedup();
    let projected: Vec<&str> = roots.iter().map(String::as_str).collect();
    let batches = df.select_columns(&projected)?.collect().await?;
    let Some(keys) = numbered(batches)? else {
        return Ok(0);
    };
    ctx.deregister_table("keys")?;
    ctx.register_table("keys", Arc::new(keys))?;
    let keys_schema = schema.clone();

    let Some(sql) = count_sql(spec, subjects, &keys_schema)? else {
        return Ok(0);
    };
    let out = ctx.sql(&sql).await?.collect().await?;
    let n = out
        .first()
        .filter(|b| b.num_rows() > 0)
        .and_then(|b| {
            arrow::compute::cast(b.column(0), &DataType::UInt64)
                .ok()
                .map(|a| {
                    arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(&a).value(0)
                })
        })
        .unwrap_or(0);
    Ok(n)
}

/// The SQL counting the rows of the registered `keys` that still match an erased subject of
/// `subjects` and no subject held in the table (with `redact`, only rows whose redacted
/// columns still hold a value); `None` when no rule applies to the file.
fn count_sql(
    spec: &crate::spec::TableSpec,
    subjects: &[Option<RuleSubjects>],
    keys_schema: &arrow::datatypes::Schema,
) -> datafusion::error::Result<Option<String>> {
    let (mut matches, mut kept) = (Vec::new(), Vec::new());
    for (rule, subjects) in spec.matches.iter().zip(subjects) {
        let Some(subjects) = subjects else {
            continue;
        };
        for (on, out) in [
            (&subjects.erased, &mut matches),
            (&subjects.held, &mut kept),
        ] {
            if let Some(sql) = rule_sql(rule, on, keys_schema).map_err(|m| {
                datafusion::error::DataFusionError::Plan(format!("match {}: {m}", rule.label()))
            })? {
                out.push(sql);
            }
        }
    }
    if matches.is_empty() {
        return Ok(None);
    }
    // A row matching a subject held in the table is kept, whatever else it matches.
    let union = if kept.is_empty() {
        matches.join(" UNION ALL ")
    } else {
        format!(
            "SELECT e.r FROM ({}) e LEFT ANTI JOIN ({}) h ON e.r = h.r",
            matches.join(" UNION ALL "),
            kept.join(" UNION ALL ")
        )
    };
    let still = redacted(spec)
        .filter(|c| keys_schema.field_with_name(c).is_ok())
        .map(|c| format!("k.{} IS NOT NULL", ident(&c)))
        .collect::<Vec<_>>();
    let sql = if spec.action == Action::Redact {
        // Rows whose redacted columns are all null already do not count.
        let still = if still.is_empty() {
            "FALSE".to_string()
        } else {
            still.join(" OR ")
        };
        format!(
            "SELECT count(DISTINCT m.r) AS n FROM ({union}) m JOIN keys k ON k.{row} = m.r \
             WHERE {still}",
            row = ident(ROW)
        )
    } else {
        format!("SELECT count(DISTINCT m.r) AS n FROM ({union}) m")
    };
    Ok(Some(sql))
}

/// The batches as one table with each row numbered (column [`ROW`]); `None` for no batch.
fn numbered(batches: Vec<RecordBatch>) -> datafusion::error::Result<Option<MemTable>> {
    let mut out = Vec::with_capacity(batches.len());
    let mut next = 0u64;
    for b in batches {
        let rows: UInt64Array = (next..next + b.num_rows() as u64).collect();
        next += b.num_rows() as u64;
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| (**f).clone()).collect();
        fields.push(Field::new(ROW, DataType::UInt64, false));
        let mut columns = b.columns().to_vec();
        columns.push(Arc::new(rows));
        out.push(RecordBatch::try_new(
            Arc::new(Schema::new(fields)),
            columns,
        )?);
    }
    let Some(first) = out.first() else {
        return Ok(None);
    };
    Ok(Some(MemTable::try_new(first.schema(), vec![out])?))
}

fn redacted(spec: &crate::spec::TableSpec) -> impl Iterator<Item = String> + '_ {
    spec.redact
        .iter()
        .filter(move |_| spec.action == Action::Redact)
        .cloned()
}

/// A quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A quoted SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The SQL giving the row numbers (column `r`) of the rows that match `rule`, or `None` when a
/// key column is not in this file (the file cannot hold a match for the rule).
fn rule_sql(
    rule: &MatchSpec,
    subjects: &str,
    schema: &Schema,
) -> std::result::Result<Option<String>, String> {
    let paths = rule.key_paths();
    let mut conditions = Vec::new();
    let mut keys = Vec::new();
    // Each key column: a subquery of (row, value) pairs with lists unnested.
    let mut from = String::new();
    for (k, path) in paths.iter().enumerate() {
        let Ok(root) = schema.field_with_name(&path[0]) else {
            return Ok(None);
        };
        let (values, leaf) = walk(path, root.data_type())?;
        let (compare, convert) = conversion(&leaf, rule.normalize, &format!("p{k}"))?;
        let alias = format!("c{k}");
        if k == 0 {
            write!(from, "({values}) {alias}").ok();
        } else {
            write!(from, " JOIN ({values}) {alias} ON {alias}.r = c0.r").ok();
        }
        conditions.push(format!(
            "{} = s.k{k}",
            compare.replace("{v}", &format!("{alias}.v"))
        ));
        keys.push(format!("{convert} AS k{k}"));
    }
    Ok(Some(format!(
        "SELECT c0.r AS r FROM {from} JOIN (SELECT DISTINCT {keys} FROM {subjects}) s ON {on}",
        keys = keys.join(", "),
        on = conditions.join(" AND ")
    )))
}

/// Follows `path` from the file's column through struct fields (`get_field`) and lists
/// (`unnest`, every element a value of its row) down to a leaf that is not a list. Returns the
/// SQL of (row `r`, value `v`) pairs and the leaf's type. Struct steps nest as one expression
/// (`get_field(get_field(col, 'a'), 'b')`); only a list starts a subquery, so no projection of
/// a field of a projected field is left for the optimizer to push through (DataFusion 55's
/// `push_down_leaf_projections` loses fields three levels down).
fn walk(path: &[String], root: &DataType) -> std::result::Result<(String, DataType), String> {
    let mut from = "keys".to_string();
    let mut row = ident(ROW);
    let mut expr = ident(&path[0]);
    let mut ty = root.clone();
    let mut rest = path[1..].iter();
    loop {
        ty = match ty {
            DataType::List(f) | DataType::LargeList(f) => {
                from = format!("(SELECT {row} AS r, unnest({expr}) AS v FROM {from})");
                row = "r".into();
                expr = "v".into();
                f.data_type().clone()
            }
            DataType::Struct(fields) => {
                let Some(segment) = rest.next() else {
                    return Err(format!("{} is a struct, not a key column", path.join(".")));
                };
                let field = fields
                    .iter()
                    .find(|f| f.name() == segment)
                    .ok_or_else(|| format!("no field {segment:?} in {}", path.join(".")))?;
                expr = format!("get_field({expr}, {})", literal(segment));
                field.data_type().clone()
            }
            leaf => {
                if let Some(segment) = rest.next() {
                    return Err(format!(
                        "{segment:?} of {} is not in a struct",
                        path.join(".")
                    ));
                }
                return Ok((format!("SELECT {row} AS r, {expr} AS v FROM {from}"), leaf));
            }
        };
    }
}

/// For a key column of type `ty`: the SQL comparing its value `{v}`, and the SQL converting the
/// subject id in column `id` to the same type (NULL when it cannot convert).
fn conversion(
    ty: &DataType,
    normalize: Option<Normalize>,
    id: &str,
) -> std::result::Result<(String, String), String> {
    let norm = |x: String| match normalize {
        None => x,
        Some(Normalize::Lowercase) => format!("lower({x})"),
        Some(Normalize::Trim) => format!("btrim({x}, ' ')"),
        Some(Normalize::LowercaseTrim) => format!("lower(btrim({x}, ' '))"),
    };
    if normalize.is_some()
        && !matches!(
            ty,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(..)
        )
    {
        return Err(format!("normalize needs a string column, not {ty}"));
    }
    let sql_int = |t: &DataType| -> Option<&'static str> {
        Some(match t {
            DataType::Int8 => "TINYINT",
            DataType::Int16 => "SMALLINT",
            DataType::Int32 => "INT",
            DataType::Int64 => "BIGINT",
            DataType::UInt8 => "TINYINT UNSIGNED",
            DataType::UInt16 => "SMALLINT UNSIGNED",
            DataType::UInt32 => "INT UNSIGNED",
            DataType::UInt64 => "BIGINT UNSIGNED",
            _ => return None,
        })
    };
    Ok(match ty {
        DataType::Dictionary(_, value) => {
            let (compare, convert) = conversion(value, normalize, id)?;
            // The dictionary's values, as the value type.
            let cast = match value.as_ref() {
                t if sql_int(t).is_some() => {
                    format!("CAST({{v}} AS {})", sql_int(t).unwrap_or("BIGINT"))
                }
                DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
                    "CAST({v} AS BYTEA)".to_string()
                }
                DataType::FixedSizeBinary(_) => "CAST({v} AS BYTEA)".to_string(),
                _ => "CAST({v} AS VARCHAR)".to_string(),
            };
            (compare.replace("{v}", &cast), convert)
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            (norm("CAST({v} AS VARCHAR)".into()), norm(ident(id)))
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => (
            "CAST({v} AS BYTEA)".into(),
            format!("CAST({} AS BYTEA)", ident(id)),
        ),
        DataType::FixedSizeBinary(n) => {
            let p = ident(id);
            let hex = format!("replace({p}, '-', '')");
            let uuid = if *n == 16 {
                format!(
                    "WHEN length({hex}) = 32 AND ltrim(lower({hex}), '0123456789abcdef') = '' \
                     THEN decode({hex}, 'hex') "
                )
            } else {
                String::new()
            };
            (
                "CAST({v} AS BYTEA)".into(),
                format!("CASE {uuid}WHEN octet_length({p}) = {n} THEN CAST({p} AS BYTEA) END"),
            )
        }
        t => match sql_int(t) {
            Some(sql) => ("{v}".into(), format!("TRY_CAST({} AS {sql})", ident(id))),
            None => return Err(format!("type {t} cannot hold a subject id")),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_ids_split_into_their_parts() {
        assert_eq!(
            split_composite(r#"["acme", 42]"#, 2),
            Some(vec!["acme".to_string(), "42".to_string()])
        );
        assert_eq!(split_composite(r#"["acme"]"#, 2), None);
        assert_eq!(split_composite(r#"["acme", null]"#, 2), None);
        assert_eq!(split_composite("acme", 2), None);
    }
}
