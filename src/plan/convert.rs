//! Subject ids (strings) converted to a key column's type.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, FixedSizeBinaryArray, StringArray};
use arrow::datatypes::DataType;

use crate::events::normalize_value;
use crate::spec::Normalize;

/// The type a key column's values are compared as, or `None` if it cannot hold an id.
pub(super) fn compare_type(ty: &DataType) -> Option<DataType> {
    match ty {
        DataType::Dictionary(_, v) => compare_type(v),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Some(DataType::Binary),
        DataType::FixedSizeBinary(n) => Some(DataType::FixedSizeBinary(*n)),
        t if t.is_integer() => Some(t.clone()),
        _ => None,
    }
}

pub(super) fn to_compare_type(
    values: &ArrayRef,
    normalize: Option<Normalize>,
) -> arrow::error::Result<ArrayRef> {
    let target = compare_type(values.data_type()).ok_or_else(|| {
        arrow::error::ArrowError::InvalidArgumentError(format!(
            "type {} cannot hold a subject id",
            values.data_type()
        ))
    })?;
    let cast = if values.data_type() == &target {
        Arc::clone(values)
    } else {
        arrow::compute::cast(values, &target)?
    };
    Ok(match normalize {
        None => cast,
        Some(n) => {
            let s = cast.as_string::<i32>();
            Arc::new(
                s.iter()
                    .map(|v| v.map(|v| normalize_value(n, v)))
                    .collect::<StringArray>(),
            )
        }
    })
}

/// Converts subject ids (strings) to a key type; ids that cannot convert become null.
pub(super) fn convert_ids(ids: &StringArray, ty: &DataType) -> arrow::error::Result<ArrayRef> {
    match ty {
        DataType::Utf8 => Ok(Arc::new(ids.clone())),
        DataType::Binary => Ok(Arc::new(
            ids.iter()
                .map(|v| v.map(str::as_bytes))
                .collect::<BinaryArray>(),
        )),
        DataType::FixedSizeBinary(n) => {
            let n = *n as usize;
            let values: Vec<Option<Vec<u8>>> = ids
                .iter()
                .map(|v| v.and_then(|s| fixed_bytes(s, n)))
                .collect();
            Ok(Arc::new(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(values.into_iter(), n as i32)?,
            ))
        }
        other => arrow::compute::cast_with_options(
            ids,
            other,
            &arrow::compute::CastOptions {
                safe: true,
                ..Default::default()
            },
        ),
    }
}

/// A subject id as `n` raw bytes: a UUID in text form for 16 bytes, else the id's own bytes.
pub(super) fn fixed_bytes(s: &str, n: usize) -> Option<Vec<u8>> {
    if n == 16 {
        let hexed: String = s.chars().filter(|c| *c != '-').collect();
        if hexed.len() == 32
            && let Ok(b) = hex::decode(&hexed)
        {
            return Some(b);
        }
    }
    (s.len() == n).then(|| s.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn uuid_and_raw_fixed_bytes() {
        let u = fixed_bytes("00112233-4455-6677-8899-aabbccddeeff", 16).unwrap();
        assert_eq!(u[0], 0x00);
        assert_eq!(u[15], 0xff);
        assert_eq!(fixed_bytes("abcd", 4).unwrap(), b"abcd");
        assert!(fixed_bytes("abc", 4).is_none());
    }
}
