//! The manifest entry of a rewritten file: Iceberg's statistics computed from the new file's
//! own Parquet footer (record count, size, per-field column sizes, value and null counts,
//! lower and upper bounds in Iceberg's single-value encoding), keyed by the field ids the
//! rewrite kept. A bound is written only where the footer proves it (a truncated maximum is
//! left out, so is a type whose Parquet encoding lakepurge does not convert): an absent bound
//! only costs pruning, a wrong one would hide rows from readers.

use std::cmp::Ordering;
use std::collections::HashMap;

use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, Datum, PrimitiveType, Schema, Type,
};
use parquet::basic::{LogicalType, TimeUnit};
use parquet::file::metadata::ParquetMetaData;
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnDescriptor;

/// The data file written at `path` (absolute), `size` bytes, in place of `old` (of partition
/// spec `spec_id`).
pub fn data_file(
    old: &DataFile,
    spec_id: i32,
    path: String,
    size: u64,
    footer: &ParquetMetaData,
    schema: &Schema,
) -> std::result::Result<DataFile, String> {
    let Columns {
        sizes,
        values,
        nulls,
        lower,
        upper,
    } = columns(footer, schema);
    let split_offsets: Vec<i64> = footer
        .row_groups()
        .iter()
        .filter_map(|rg| {
            rg.file_offset().or_else(|| {
                rg.columns().first().map(|c| {
                    c.dictionary_page_offset()
                        .unwrap_or_else(|| c.data_page_offset())
                })
            })
        })
        .collect();
    let mut builder = DataFileBuilder::default();
    builder
        .content(DataContentType::Data)
        .file_path(path)
        .file_format(DataFileFormat::Parquet)
        .partition(old.partition().clone())
        .partition_spec_id(spec_id)
        .record_count(u64::try_from(footer.file_metadata().num_rows()).unwrap_or(0))
        .file_size_in_bytes(size)
        .column_sizes(sizes)
        .value_counts(values)
        .null_value_counts(
            nulls
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect(),
        )
        .lower_bounds(
            lower
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.known()?)))
                .collect(),
        )
        .upper_bounds(
            upper
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.known()?)))
                .collect(),
        )
        .split_offsets(Some(split_offsets));
    if let Some(order) = old.sort_order_id() {
        builder.sort_order_id(order);
    }
    builder.build().map_err(|e| e.to_string())
}

/// A file's per-field statistics, keyed by field id, summed or folded over its row groups.
struct Columns {
    sizes: HashMap<i32, u64>,
    values: HashMap<i32, u64>,
    /// `None`: a row group did not say.
    nulls: HashMap<i32, Option<u64>>,
    lower: HashMap<i32, Bound>,
    upper: HashMap<i32, Bound>,
}

/// The statistics of every leaf column of `footer` that has a field id (Iceberg type from
/// `schema`).
fn columns(footer: &ParquetMetaData, schema: &Schema) -> Columns {
    let mut sizes: HashMap<i32, u64> = HashMap::new();
    let mut values: HashMap<i32, u64> = HashMap::new();
    let mut nulls: HashMap<i32, Option<u64>> = HashMap::new();
    let mut lower: HashMap<i32, Bound> = HashMap::new();
    let mut upper: HashMap<i32, Bound> = HashMap::new();
    let descr = footer.file_metadata().schema_descr();
    for rg in footer.row_groups() {
        for (i, chunk) in rg.columns().iter().enumerate() {
            let column = descr.column(i);
            let info = column.self_type().get_basic_info();
            if !info.has_id() {
                continue;
            }
            let id = info.id();
            *sizes.entry(id).or_default() += u64::try_from(chunk.compressed_size()).unwrap_or(0);
            *values.entry(id).or_default() += u64::try_from(chunk.num_values()).unwrap_or(0);
            let stats = chunk.statistics();
            let null = nulls.entry(id).or_insert(Some(0));
            *null = match (*null, stats.and_then(Statistics::null_count_opt)) {
                (Some(n), Some(m)) => Some(n + m),
                _ => None,
            };
            // Bounds of fields inside lists and maps are not kept (as Iceberg writers do).
            let Some(ty) = (column.max_rep_level() == 0)
                .then(|| primitive(schema, id))
                .flatten()
            else {
                lower.insert(id, Bound::Unknown);
                upper.insert(id, Bound::Unknown);
                continue;
            };
            let (lo, hi) = stats.map_or((None, None), |s| bounds(s, &column, &ty));
            let all_null = stats.is_some_and(|s| {
                s.null_count_opt()
                    .is_some_and(|n| i64::try_from(n).is_ok_and(|n| n == chunk.num_values()))
            });
            lower
                .entry(id)
                .or_insert(Bound::Unset)
                .fold(lo, all_null, Ordering::Less);
            upper
                .entry(id)
                .or_insert(Bound::Unset)
                .fold(hi, all_null, Ordering::Greater);
        }
    }
    Columns {
        sizes,
        values,
        nulls,
        lower,
        upper,
    }
}

/// A file's bound of one field, folded over its row groups.
enum Bound {
    /// No row group gave one yet.
    Unset,
    Known(Datum),
    /// A row group with values but no bound: the file has none.
    Unknown,
}

impl Bound {
    /// Folds a row group's bound in: the lower of two lower bounds (`keep` = `Less`), the
    /// greater of two upper ones. A row group of nulls only has none and constrains nothing.
    fn fold(&mut self, next: Option<Datum>, all_null: bool, keep: Ordering) {
        *self = match (std::mem::replace(self, Bound::Unknown), next) {
            (Bound::Unknown, _) => Bound::Unknown,
            (prev, None) if all_null => prev,
            (_, None) => Bound::Unknown,
            (Bound::Unset, Some(v)) => Bound::Known(v),
            (Bound::Known(a), Some(v)) => match v.partial_cmp(&a) {
                Some(o) if o == keep => Bound::Known(v),
                Some(_) => Bound::Known(a),
                None => Bound::Unknown,
            },
        }
    }

    fn known(self) -> Option<Datum> {
        match self {
            Bound::Known(d) => Some(d),
            _ => None,
        }
    }
}

/// The Iceberg primitive type of field `id` in `schema`.
fn primitive(schema: &Schema, id: i32) -> Option<PrimitiveType> {
    match schema.field_by_id(id)?.field_type.as_ref() {
        Type::Primitive(p) => Some(p.clone()),
        _ => None,
    }
}

/// A row group's bounds of a column of Iceberg type `ty`, where the footer proves them.
fn bounds(
    s: &Statistics,
    column: &ColumnDescriptor,
    ty: &PrimitiveType,
) -> (Option<Datum>, Option<Datum>) {
    let micros = matches!(
        column.logical_type_ref(),
        Some(LogicalType::Timestamp(t)) if matches!(t.unit, TimeUnit::MICROS)
    );
    match (ty, s) {
        (PrimitiveType::Boolean, Statistics::Boolean(v)) => (
            v.min_opt().map(|x| Datum::bool(*x)),
            v.max_opt().map(|x| Datum::bool(*x)),
        ),
        (PrimitiveType::Int, Statistics::Int32(v)) => (
            v.min_opt().map(|x| Datum::int(*x)),
            v.max_opt().map(|x| Datum::int(*x)),
        ),
        (PrimitiveType::Date, Statistics::Int32(v)) => (
            v.min_opt().map(|x| Datum::date(*x)),
            v.max_opt().map(|x| Datum::date(*x)),
        ),
        (PrimitiveType::Long, Statistics::Int32(v)) => (
            v.min_opt().map(|x| Datum::long(i64::from(*x))),
            v.max_opt().map(|x| Datum::long(i64::from(*x))),
        ),
        (PrimitiveType::Long, Statistics::Int64(v)) => (
            v.min_opt().map(|x| Datum::long(*x)),
            v.max_opt().map(|x| Datum::long(*x)),
        ),
        (PrimitiveType::Timestamp, Statistics::Int64(v)) if micros => (
            v.min_opt().map(|x| Datum::timestamp_micros(*x)),
            v.max_opt().map(|x| Datum::timestamp_micros(*x)),
        ),
        (PrimitiveType::Timestamptz, Statistics::Int64(v)) if micros => (
            v.min_opt().map(|x| Datum::timestamptz_micros(*x)),
            v.max_opt().map(|x| Datum::timestamptz_micros(*x)),
        ),
        (PrimitiveType::Float, Statistics::Float(v)) => (
            v.min_opt()
                .filter(|x| !x.is_nan())
                .map(|x| Datum::float(*x)),
            v.max_opt()
                .filter(|x| !x.is_nan())
                .map(|x| Datum::float(*x)),
        ),
        (PrimitiveType::Double, Statistics::Float(v)) => (
            v.min_opt()
                .filter(|x| !x.is_nan())
                .map(|x| Datum::double(f64::from(*x))),
            v.max_opt()
                .filter(|x| !x.is_nan())
                .map(|x| Datum::double(f64::from(*x))),
        ),
        (PrimitiveType::Double, Statistics::Double(v)) => (
            v.min_opt()
                .filter(|x| !x.is_nan())
                .map(|x| Datum::double(*x)),
            v.max_opt()
                .filter(|x| !x.is_nan())
                .map(|x| Datum::double(*x)),
        ),
        (PrimitiveType::String, Statistics::ByteArray(v)) => (
            // A truncated minimum is still a lower bound; a truncated maximum is not an upper one.
            v.min_opt()
                .and_then(|x| std::str::from_utf8(x.data()).ok())
                .map(Datum::string),
            v.max_opt()
                .filter(|_| s.max_is_exact())
                .and_then(|x| std::str::from_utf8(x.data()).ok())
                .map(Datum::string),
        ),
        _ => (None, None),
    }
}
