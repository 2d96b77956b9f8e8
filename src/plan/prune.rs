//! Ruling row groups and pages out before reading them: min/max statistics (where their
//! order is known to be right), bloom filters and the page index. Never under-deletes.

use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::basic::{ColumnOrder, LogicalType, SortOrder, Type as PhysicalType};
use parquet::file::metadata::{ParquetMetaData, RowGroupMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;

use super::*;

/// The leaf column index of a single top-level column `name`, if it is one.
pub(super) fn top_level_leaf(metadata: &ParquetMetaData, name: &str) -> Option<usize> {
    let schema = metadata.file_metadata().schema_descr();
    (0..schema.num_columns()).find(|&i| {
        let column = schema.column(i);
        let parts = column.path().parts();
        parts.len() == 1 && parts[0] == name
    })
}

/// Bloom filters are probed for at most this many erased values per rule and row group.
pub(super) const BLOOM_PROBE_LIMIT: usize = 4096;

/// Whether the row group's bloom filter for the rule's column proves that none of the erased
/// values is in it. Same conditions as statistics pruning (single top-level column, values not
/// normalised); a missing or unreadable filter proves nothing (the data is read).
pub(super) async fn bloom_rule_out<R>(
    builder: &mut ParquetRecordBatchStreamBuilder<R>,
    lookup: &Lookup,
    paths: &[Vec<String>],
    metadata: &ParquetMetaData,
    rg: usize,
) -> bool
where
    R: AsyncFileReader + Unpin + Send + 'static,
{
    let Some(sorted) = &lookup.sorted else {
        return false;
    };
    let Some(leaf) = top_level_leaf(metadata, &paths[0][0]) else {
        return false;
    };
    let chunk = metadata.row_group(rg).column(leaf);
    if chunk.bloom_filter_offset().is_none() {
        return false;
    }
    let physical = chunk.column_descr().physical_type();
    let probes = match sorted {
        SortedKeys::Ints(k) => k.len(),
        SortedKeys::Bytes(k) => k.len(),
    };
    if probes > BLOOM_PROBE_LIMIT {
        return false;
    }
    let Ok(Some(filter)) = builder.get_row_group_column_bloom_filter(rg, leaf).await else {
        return false;
    };
    let any_present = match (sorted, physical) {
        (SortedKeys::Ints(keys), PhysicalType::INT64) => keys.iter().any(|k| filter.check(k)),
        (SortedKeys::Ints(keys), PhysicalType::INT32) => keys
            .iter()
            .any(|k| i32::try_from(*k).map_or(true, |v| filter.check(&v))),
        (SortedKeys::Bytes(keys), PhysicalType::BYTE_ARRAY) => {
            keys.iter().any(|k| filter.check(k.as_slice()))
        }
        _ => true,
    };
    !any_present
}

/// Whether the row group's statistics prove that no erased value of this rule is in it.
/// Only single top-level signed-integer or string columns with trustworthy ordering qualify;
/// anything else returns `false` (read the data).
pub(super) fn stats_rule_out(
    lookup: &Lookup,
    paths: &[Vec<String>],
    rg: &RowGroupMetaData,
    metadata: &ParquetMetaData,
) -> bool {
    let Some(sorted) = &lookup.sorted else {
        return false;
    };
    let Some(leaf) = top_level_leaf(metadata, &paths[0][0]) else {
        return false;
    };
    let Some(stats) = rg.column(leaf).statistics() else {
        return false;
    };
    let range = match stats {
        Statistics::Int32(s) => s
            .min_opt()
            .zip(s.max_opt())
            .map(|(&lo, &hi)| KeyRange::Ints(i64::from(lo), i64::from(hi))),
        Statistics::Int64(s) => s
            .min_opt()
            .zip(s.max_opt())
            .map(|(&lo, &hi)| KeyRange::Ints(lo, hi)),
        Statistics::ByteArray(_) => stats
            .min_bytes_opt()
            .zip(stats.max_bytes_opt())
            .map(|(lo, hi)| KeyRange::Bytes(lo, hi)),
        _ => None,
    };
    range.is_some_and(|range| no_key_in(sorted, range, metadata, leaf))
}

/// A column's min/max (chunk statistics or a page's column index entry), as keys compare.
pub(super) enum KeyRange<'a> {
    Ints(i64, i64),
    Bytes(&'a [u8], &'a [u8]),
}

/// Whether none of the sorted erased keys falls in `range` of column `leaf`: only for signed
/// integers and byte arrays with unsigned order (otherwise false: the range proves nothing).
pub(super) fn no_key_in(
    sorted: &SortedKeys,
    range: KeyRange<'_>,
    metadata: &ParquetMetaData,
    leaf: usize,
) -> bool {
    let descr = metadata.file_metadata().schema_descr().column(leaf);
    match (sorted, range) {
        (SortedKeys::Ints(keys), KeyRange::Ints(lo, hi)) if signed(&descr) => {
            !any_in_range(keys, &lo, &hi)
        }
        (SortedKeys::Bytes(keys), KeyRange::Bytes(lo, hi)) => {
            let ordered = matches!(
                metadata.file_metadata().column_order(leaf),
                ColumnOrder::TYPE_DEFINED_ORDER(SortOrder::UNSIGNED)
            );
            let i = keys.partition_point(|k| k.as_slice() < lo);
            ordered && !(i < keys.len() && keys[i].as_slice() <= hi)
        }
        _ => false,
    }
}

/// Whether page `k` of a column index can hold none of the sorted erased keys: all null, or a
/// min/max range (signed integers, byte arrays with unsigned order) containing none of them.
/// Truncated byte-array bounds still enclose the page's values, so the test stays safe.
pub(super) fn page_rule_out(
    sorted: &SortedKeys,
    index: &ColumnIndexMetaData,
    k: usize,
    metadata: &ParquetMetaData,
    leaf: usize,
) -> bool {
    if index.is_null_page(k) {
        return true;
    }
    let range = match index {
        ColumnIndexMetaData::INT32(x) => x
            .min_value(k)
            .zip(x.max_value(k))
            .map(|(&lo, &hi)| KeyRange::Ints(i64::from(lo), i64::from(hi))),
        ColumnIndexMetaData::INT64(x) => x
            .min_value(k)
            .zip(x.max_value(k))
            .map(|(&lo, &hi)| KeyRange::Ints(lo, hi)),
        ColumnIndexMetaData::BYTE_ARRAY(x) => x
            .min_value(k)
            .zip(x.max_value(k))
            .map(|(lo, hi)| KeyRange::Bytes(lo, hi)),
        _ => None,
    };
    range.is_some_and(|range| no_key_in(sorted, range, metadata, leaf))
}

pub(super) fn signed(descr: &parquet::schema::types::ColumnDescriptor) -> bool {
    matches!(
        descr.physical_type(),
        PhysicalType::INT32 | PhysicalType::INT64
    ) && match descr.logical_type_ref() {
        None => !matches!(
            descr.converted_type(),
            parquet::basic::ConvertedType::UINT_8
                | parquet::basic::ConvertedType::UINT_16
                | parquet::basic::ConvertedType::UINT_32
                | parquet::basic::ConvertedType::UINT_64
        ),
        Some(LogicalType::Integer(int)) => int.is_signed,
        Some(_) => false,
    }
}

pub(super) fn any_in_range<T: Ord>(sorted: &[T], lo: &T, hi: &T) -> bool {
    let i = sorted.partition_point(|v| v < lo);
    i < sorted.len() && &sorted[i] <= hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_check() {
        assert!(any_in_range(&[1, 5, 9], &4, &6));
        assert!(!any_in_range(&[1, 5, 9], &6, &8));
        assert!(!any_in_range::<i64>(&[], &0, &10));
    }
}
