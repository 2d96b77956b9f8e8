//! Whether a chunk's (or a page's) min/max may stay once erased values are gone: only when no
//! erased value could be a bound, or a kept value equals it exactly.

use parquet::basic::Type as PhysicalType;
use parquet::data_type::AsBytes;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::ColumnIndexBuilder;
use parquet::file::page_index::column_index::{ColumnIndexMetaData, PrimitiveColumnIndex};
use parquet::file::statistics::{Statistics, ValueStatistics};

use super::*;

/// Whether the bounds an erased value could have produced (`erased_hits`, min and max) are each
/// still held by a kept value equal to them: more values equal to the bound in all than among
/// the erased. A kept value equal to a bound makes it exactly the kept values' bound, whether
/// or not it was truncated, so it reveals nothing of the erased rows.
pub(super) fn kept_hold(
    erased_hits: (u64, u64),
    erased_equal: (u64, u64),
    all_equal: (u64, u64),
) -> bool {
    let held = |hits: u64, erased: u64, all: u64| hits == 0 || all > erased;
    held(erased_hits.0, erased_equal.0, all_equal.0)
        && held(erased_hits.1, erased_equal.1, all_equal.1)
}

/// How many of a cut page's erased values match the min and the max, by `test`.
pub(super) fn erased_counts(
    page: &Decoded,
    cut: &Cut,
    dict: Option<&Dictionary>,
    test: impl Fn(&[u8]) -> (bool, bool),
) -> (u64, u64) {
    let mut out = (0u64, 0u64);
    let mut add = |v: &[u8]| {
        let (min, max) = test(v);
        out.0 += u64::from(min);
        out.1 += u64::from(max);
    };
    match (&page.values, dict) {
        (Values::Plain(values), _) => cut
            .erased_values
            .iter()
            .for_each(|r| add(&values[r.clone()])),
        (Values::Dict { .. }, Some(dict)) => {
            cut.erased_indices.iter().for_each(|i| add(dict.entry(*i)))
        }
        (Values::Dict { .. }, None) => {}
    }
    out
}

/// How many of a page's values match the min and the max, by `hits`.
pub(super) fn page_hits(
    page: &Decoded,
    n: usize,
    width: Option<usize>,
    max_def: i16,
    dict: Option<&Dictionary>,
    hits: impl Fn(&[u8]) -> (bool, bool),
) -> Result<(u64, u64)> {
    let mut out = (0u64, 0u64);
    let mut add = |v: &[u8]| {
        let (min, max) = hits(v);
        out.0 += u64::from(min);
        out.1 += u64::from(max);
    };
    match &page.values {
        Values::Plain(values) => {
            let present = page
                .defs
                .as_ref()
                .map_or(n, |d| d.iter().filter(|l| **l == max_def).count());
            let prefix = if width.is_none() { 4 } else { 0 };
            let mut cursor = 0;
            for _ in 0..present {
                let r = plain_value(values, cursor, width)?;
                cursor = r.end;
                add(&values[r.start + prefix..r.end]);
            }
        }
        Values::Dict { indices, .. } => {
            let dict =
                dict.ok_or_else(|| general("dictionary-encoded page without a dictionary"))?;
            for i in indices {
                add(dict.entry(*i));
            }
        }
    }
    Ok(out)
}

pub(super) fn truncated() -> ParquetError {
    general("PLAIN values do not fit the page")
}

/// A min/max pair (PLAIN bytes, byte arrays without length prefix), from chunk statistics or
/// a page's column index entry; `exact` false when the bound may be truncated.
pub(super) struct Bounds<'a> {
    pub(super) min: Option<&'a [u8]>,
    pub(super) max: Option<&'a [u8]>,
    pub(super) min_exact: bool,
    pub(super) max_exact: bool,
}

impl<'a> Bounds<'a> {
    pub(super) fn of(stats: &'a Statistics) -> Bounds<'a> {
        Bounds {
            min: stats.min_bytes_opt(),
            max: stats.max_bytes_opt(),
            min_exact: stats.min_is_exact(),
            max_exact: stats.max_is_exact(),
        }
    }

    /// Whether `value` is equal to the min, and to the max (floats by value: -0.0 == +0.0).
    pub(super) fn equals(&self, value: &[u8], ty: PhysicalType) -> (bool, bool) {
        let equal = |bound: Option<&[u8]>| {
            bound.is_some_and(|b| match ty {
                PhysicalType::FLOAT | PhysicalType::DOUBLE => {
                    float(b).zip(float(value)).is_some_and(|(b, v)| b == v)
                }
                _ => b == value,
            })
        };
        (equal(self.min), equal(self.max))
    }

    /// Whether `value` matches the min, and the max: is equal to it, or for a truncated
    /// byte-array bound, could be its source.
    pub(super) fn hits(&self, value: &[u8], ty: PhysicalType) -> (bool, bool) {
        let (min, max) = (self.min, self.max);
        match ty {
            PhysicalType::FLOAT | PhysicalType::DOUBLE => {
                // -0.0 and +0.0 compare equal; an unreadable bound counts as a hit.
                let v = float(value);
                let hit = |bound: Option<&[u8]>| {
                    bound.is_some_and(|b| match (float(b), v) {
                        (Some(b), Some(v)) => b == v,
                        _ => true,
                    })
                };
                (hit(min), hit(max))
            }
            PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => {
                let min_hit = min.is_some_and(|m| {
                    if self.min_exact {
                        value == m
                    } else {
                        value.starts_with(m)
                    }
                });
                // A truncated max has had its last characters incremented: compare the rest.
                let max_hit = max.is_some_and(|m| {
                    if self.max_exact {
                        value == m
                    } else {
                        value.starts_with(&m[..m.len().saturating_sub(4)])
                    }
                });
                (min_hit, max_hit)
            }
            _ => (min == Some(value), max == Some(value)),
        }
    }
}

/// A PLAIN FLOAT or DOUBLE as f64.
pub(super) fn float(b: &[u8]) -> Option<f64> {
    match b.len() {
        4 => Some(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        8 => Some(f64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ])),
        _ => None,
    }
}

/// One page's entry in a column index, bounds as PLAIN bytes.
pub(super) struct IndexEntry {
    pub(super) null_page: bool,
    pub(super) min: Vec<u8>,
    pub(super) max: Vec<u8>,
    pub(super) null_count: i64,
}

impl IndexEntry {
    /// Appends this page's entry to the new column index: bounds kept (the caller checked
    /// them), or none when the page holds only nulls now; `erased_nulls` fewer nulls.
    pub(super) fn append_to(self, b: &mut ColumnIndexBuilder, now_null: bool, erased_nulls: i64) {
        let null_page = self.null_page || now_null;
        let (min, max) = if null_page {
            (Vec::new(), Vec::new())
        } else {
            (self.min, self.max)
        };
        b.append(null_page, min, max, self.null_count - erased_nulls);
    }

    pub(super) fn of(ci: &ColumnIndexMetaData, k: usize) -> Option<IndexEntry> {
        fn prim<T: AsBytes>(i: &PrimitiveColumnIndex<T>, k: usize) -> (Vec<u8>, Vec<u8>) {
            let bytes = |v: Option<&T>| v.map(|v| v.as_bytes().to_vec()).unwrap_or_default();
            (bytes(i.min_value(k)), bytes(i.max_value(k)))
        }
        let (min, max) = match ci {
            ColumnIndexMetaData::NONE => return None,
            ColumnIndexMetaData::BOOLEAN(i) => prim(i, k),
            ColumnIndexMetaData::INT32(i) => prim(i, k),
            ColumnIndexMetaData::INT64(i) => prim(i, k),
            ColumnIndexMetaData::INT96(i) => prim(i, k),
            ColumnIndexMetaData::FLOAT(i) => prim(i, k),
            ColumnIndexMetaData::DOUBLE(i) => prim(i, k),
            ColumnIndexMetaData::BYTE_ARRAY(i) | ColumnIndexMetaData::FIXED_LEN_BYTE_ARRAY(i) => (
                i.min_value(k).map(<[u8]>::to_vec).unwrap_or_default(),
                i.max_value(k).map(<[u8]>::to_vec).unwrap_or_default(),
            ),
        };
        Some(IndexEntry {
            null_page: ci.is_null_page(k),
            min,
            max,
            null_count: ci.null_count(k)?,
        })
    }
}

/// The chunk statistics with min/max kept (checked by `may_reveal`), the null count lowered
/// by the erased nulls and the distinct count dropped.
pub(super) fn without_erased(stats: &Statistics, erased_nulls: u64) -> Statistics {
    let deprecated = stats.is_min_max_deprecated();
    pub(super) fn adjust<T: Clone>(
        s: &ValueStatistics<T>,
        erased_nulls: u64,
        deprecated: bool,
    ) -> ValueStatistics<T> {
        ValueStatistics::new(
            s.min_opt().cloned(),
            s.max_opt().cloned(),
            None,
            s.null_count_opt().map(|n| n.saturating_sub(erased_nulls)),
            deprecated,
        )
        .with_min_is_exact(s.min_is_exact())
        .with_max_is_exact(s.max_is_exact())
        .with_backwards_compatible_min_max(s.is_min_max_backwards_compatible())
    }
    match stats {
        Statistics::Boolean(s) => Statistics::Boolean(adjust(s, erased_nulls, deprecated)),
        Statistics::Int32(s) => Statistics::Int32(adjust(s, erased_nulls, deprecated)),
        Statistics::Int64(s) => Statistics::Int64(adjust(s, erased_nulls, deprecated)),
        Statistics::Int96(s) => Statistics::Int96(adjust(s, erased_nulls, deprecated)),
        Statistics::Float(s) => Statistics::Float(adjust(s, erased_nulls, deprecated)),
        Statistics::Double(s) => Statistics::Double(adjust(s, erased_nulls, deprecated)),
        Statistics::ByteArray(s) => Statistics::ByteArray(adjust(s, erased_nulls, deprecated)),
        Statistics::FixedLenByteArray(s) => {
            Statistics::FixedLenByteArray(adjust(s, erased_nulls, deprecated))
        }
    }
}
