//! The `stats` of a new file's `add`: `numRecords`, and per column `minValues`, `maxValues` and
//! `nullCount`, computed from the new file's own footer (whose bounds never reveal an erased
//! value, see `rewrite::pages::bounds`), never carried over from the old file's `add`.
//!
//! Bounds are written only where their JSON form is unambiguous: integers, finite floats,
//! strings, dates and UTC timestamps (milliseconds, the lower bound rounded down and the upper
//! bound up). Other columns get `nullCount` only, which readers take as "no bounds": a reader
//! then reads the file rather than skipping it, never the reverse. Columns inside lists and
//! maps get nothing, as in Delta. The table's `delta.dataSkippingNumIndexedCols` (first N leaf
//! columns, default 32) and `delta.dataSkippingStatsColumns` are honoured.

use std::collections::HashMap;

use parquet::basic::{LogicalType, TimeUnit, Type as PhysicalType};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use serde_json::{Map, Value, json};

/// The `stats` JSON of a file with `metadata`, for a table with `configuration`.
pub fn stats_json(metadata: &ParquetMetaData, configuration: &HashMap<String, String>) -> String {
    let schema = metadata.file_metadata().schema_descr();
    let indexed = Indexed::from(configuration);
    let (mut min, mut max, mut nulls) = (Map::new(), Map::new(), Map::new());
    for (i, column) in schema.columns().iter().enumerate() {
        let parts = column.path().parts();
        if !indexed.covers(i, parts) || column.max_rep_level() > 0 {
            continue;
        }
        let stats: Vec<Option<&Statistics>> = metadata
            .row_groups()
            .iter()
            .map(|rg| rg.column(i).statistics())
            .collect();
        if let Some(n) = null_count(&stats) {
            insert(&mut nulls, parts, json!(n));
        }
        if let Some((lo, hi)) = bounds(&stats, column.logical_type_ref(), column.physical_type()) {
            insert(&mut min, parts, lo);
            insert(&mut max, parts, hi);
        }
    }
    json!({
        "numRecords": metadata.file_metadata().num_rows(),
        "minValues": min,
        "maxValues": max,
        "nullCount": nulls,
    })
    .to_string()
}

/// Which leaf columns get statistics.
enum Indexed {
    /// The first N leaf columns (`None`: all).
    First(Option<usize>),
    /// The columns (or structs, covering their leaves) named by `delta.dataSkippingStatsColumns`.
    Named(Vec<Vec<String>>),
}

impl Indexed {
    fn from(configuration: &HashMap<String, String>) -> Indexed {
        if let Some(named) = configuration.get("delta.dataSkippingStatsColumns") {
            return Indexed::Named(
                named
                    .split(',')
                    .map(|c| {
                        c.trim()
                            .split('.')
                            .map(|s| s.trim_matches('`').to_string())
                            .collect()
                    })
                    .collect(),
            );
        }
        match configuration
            .get("delta.dataSkippingNumIndexedCols")
            .and_then(|n| n.trim().parse::<i64>().ok())
        {
            Some(n) if n < 0 => Indexed::First(None),
            Some(n) => Indexed::First(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            None => Indexed::First(Some(32)),
        }
    }

    fn covers(&self, leaf: usize, parts: &[String]) -> bool {
        match self {
            Indexed::First(None) => true,
            Indexed::First(Some(n)) => leaf < *n,
            Indexed::Named(named) => named.iter().any(|n| parts.starts_with(n)),
        }
    }
}

/// Puts `value` at the nested path `parts` of `map` (a struct's leaves nest as objects).
fn insert(map: &mut Map<String, Value>, parts: &[String], value: Value) {
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut at = map;
    for p in parents {
        let next = at
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(obj) = next else {
            return;
        };
        at = obj;
    }
    at.insert(last.clone(), value);
}

/// The nulls of a column over every row group, if every row group counts them.
fn null_count(stats: &[Option<&Statistics>]) -> Option<u64> {
    stats
        .iter()
        .map(|s| s.and_then(|s| s.null_count_opt()))
        .sum()
}

/// The column's bounds over every row group as JSON, if every row group with a value has both
/// and the type has an unambiguous JSON form.
fn bounds(
    stats: &[Option<&Statistics>],
    logical: Option<&LogicalType>,
    physical: PhysicalType,
) -> Option<(Value, Value)> {
    let signed = |l: &LogicalType| matches!(l, LogicalType::Integer(int) if int.is_signed);
    match (physical, logical) {
        (PhysicalType::INT32, Some(LogicalType::Date)) => {
            let (lo, hi) = int32(stats)?;
            Some((json!(date(lo)?), json!(date(hi)?)))
        }
        (PhysicalType::INT32, l) if l.is_none_or(signed) => {
            int32(stats).map(|(lo, hi)| (json!(lo), json!(hi)))
        }
        (PhysicalType::INT64, l) if l.is_none_or(signed) => {
            int64(stats).map(|(lo, hi)| (json!(lo), json!(hi)))
        }
        (PhysicalType::INT64, Some(LogicalType::Timestamp(t))) if t.is_adjusted_to_u_t_c => {
            let per_ms: i64 = match t.unit {
                TimeUnit::MILLIS => 1,
                TimeUnit::MICROS => 1_000,
                TimeUnit::NANOS => 1_000_000,
            };
            let (lo, hi) = int64(stats)?;
            let (lo, hi) = outward_ms(lo, hi, per_ms);
            Some((json!(timestamp(lo)?), json!(timestamp(hi)?)))
        }
        (PhysicalType::FLOAT, None) => float_bounds(stats, |s| match s {
            Statistics::Float(v) => Some((f64::from(*v.min_opt()?), f64::from(*v.max_opt()?))),
            _ => None,
        }),
        (PhysicalType::DOUBLE, None) => float_bounds(stats, |s| match s {
            Statistics::Double(v) => Some((*v.min_opt()?, *v.max_opt()?)),
            _ => None,
        }),
        (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)) => {
            let (lo, hi) = fold(stats, |s| match s {
                Statistics::ByteArray(v) => Some((
                    v.min_opt()?.as_utf8().ok()?.to_string(),
                    v.max_opt()?.as_utf8().ok()?.to_string(),
                )),
                _ => None,
            })?;
            Some((json!(lo), json!(hi)))
        }
        _ => None,
    }
}

fn int32(stats: &[Option<&Statistics>]) -> Option<(i32, i32)> {
    fold(stats, |s| match s {
        Statistics::Int32(v) => Some((*v.min_opt()?, *v.max_opt()?)),
        _ => None,
    })
}

fn int64(stats: &[Option<&Statistics>]) -> Option<(i64, i64)> {
    fold(stats, |s| match s {
        Statistics::Int64(v) => Some((*v.min_opt()?, *v.max_opt()?)),
        _ => None,
    })
}

/// The smallest min and largest max over the row groups; `None` if a row group holding values
/// lacks them. Row groups of nulls only have no bounds and need none.
fn fold<T: PartialOrd>(
    stats: &[Option<&Statistics>],
    get: impl Fn(&Statistics) -> Option<(T, T)>,
) -> Option<(T, T)> {
    let mut acc: Option<(T, T)> = None;
    for s in stats {
        let s = (*s)?;
        let Some((lo, hi)) = get(s) else {
            if s.min_bytes_opt().is_none() && s.null_count_opt().is_some() {
                continue; // nulls only (or no rows)
            }
            return None;
        };
        acc = Some(match acc {
            None => (lo, hi),
            Some((a, b)) => (if lo < a { lo } else { a }, if hi > b { hi } else { b }),
        });
    }
    acc
}

fn float_bounds(
    stats: &[Option<&Statistics>],
    get: impl Fn(&Statistics) -> Option<(f64, f64)>,
) -> Option<(Value, Value)> {
    let (lo, hi) = fold(stats, get)?;
    (lo.is_finite() && hi.is_finite()).then(|| (json!(lo), json!(hi)))
}

/// Bounds in `per_ms` units as milliseconds: the lower rounded down, the upper up, so that
/// they still hold every value.
fn outward_ms(lo: i64, hi: i64, per_ms: i64) -> (i64, i64) {
    let up = i64::from(hi.rem_euclid(per_ms) != 0);
    (
        lo.div_euclid(per_ms),
        hi.div_euclid(per_ms).saturating_add(up),
    )
}

fn date(days: i32) -> Option<String> {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let d = epoch.checked_add_signed(chrono::Duration::days(i64::from(days)))?;
    Some(d.format("%Y-%m-%d").to_string())
}

fn timestamp(ms: i64) -> Option<String> {
    let t = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)?;
    Some(t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_outward_to_milliseconds() {
        assert_eq!(timestamp(0).unwrap(), "1970-01-01T00:00:00.000Z");
        assert_eq!(date(1).unwrap(), "1970-01-02");
        // 1.5 ms and -1.5 ms in micros: the bounds widen to -2 ms and 2 ms.
        assert_eq!(outward_ms(-1_500, 1_500, 1_000), (-2, 2));
        assert_eq!(outward_ms(3_000, 3_000, 1_000), (3, 3));
    }

    #[test]
    fn nested_leaves_nest_as_objects() {
        let mut m = Map::new();
        insert(&mut m, &["a".into(), "b".into()], json!(1));
        insert(&mut m, &["a".into(), "c".into()], json!(2));
        assert_eq!(Value::Object(m), json!({"a": {"b": 1, "c": 2}}));
    }
}
