//! The whole re-encode of a column chunk that page surgery does not take (booleans, DELTA or
//! BYTE_STREAM_SPLIT pages, redact): decoded into values and levels through parquet's column
//! reader, the matched records dropped (or nulled at the top level), the rest written again
//! with the chunk's own writer settings, which recomputes statistics and dictionaries.

use parquet::basic::Type as PhysicalType;
use parquet::column::reader::ColumnReader;
use parquet::data_type::{
    BoolType, ByteArrayType, DataType as ParquetDataType, DoubleType, FixedLenByteArrayType,
    FloatType, Int32Type, Int64Type, Int96Type,
};
use parquet::errors::ParquetError;
use parquet::file::writer::SerializedColumnWriter;

use super::*;

/// What happens to the matched records of a column chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Edit {
    /// Dropped (delete).
    Drop,
    /// Replaced by one null at the top level (redact of an optional top-level column).
    Null,
}

pub(super) fn copy_kept(
    reader: ColumnReader,
    writer: &mut SerializedColumnWriter<'_>,
    erased: &[u32],
    edit: Edit,
    max_def: i16,
    max_rep: i16,
) -> parquet::errors::Result<()> {
    let ty = match &reader {
        ColumnReader::BoolColumnReader(_) => PhysicalType::BOOLEAN,
        ColumnReader::Int32ColumnReader(_) => PhysicalType::INT32,
        ColumnReader::Int64ColumnReader(_) => PhysicalType::INT64,
        ColumnReader::Int96ColumnReader(_) => PhysicalType::INT96,
        ColumnReader::FloatColumnReader(_) => PhysicalType::FLOAT,
        ColumnReader::DoubleColumnReader(_) => PhysicalType::DOUBLE,
        ColumnReader::ByteArrayColumnReader(_) => PhysicalType::BYTE_ARRAY,
        ColumnReader::FixedLenByteArrayColumnReader(_) => PhysicalType::FIXED_LEN_BYTE_ARRAY,
    };
    match ty {
        PhysicalType::BOOLEAN => {
            copy_typed::<BoolType>(reader, writer, erased, edit, max_def, max_rep)
        }
        PhysicalType::INT32 => {
            copy_typed::<Int32Type>(reader, writer, erased, edit, max_def, max_rep)
        }
        PhysicalType::INT64 => {
            copy_typed::<Int64Type>(reader, writer, erased, edit, max_def, max_rep)
        }
        PhysicalType::INT96 => {
            copy_typed::<Int96Type>(reader, writer, erased, edit, max_def, max_rep)
        }
        PhysicalType::FLOAT => {
            copy_typed::<FloatType>(reader, writer, erased, edit, max_def, max_rep)
        }
        PhysicalType::DOUBLE => {
            copy_typed::<DoubleType>(reader, writer, erased, edit, max_def, max_rep)
        }
        PhysicalType::BYTE_ARRAY => {
            copy_typed::<ByteArrayType>(reader, writer, erased, edit, max_def, max_rep)
        }
        PhysicalType::FIXED_LEN_BYTE_ARRAY => {
            copy_typed::<FixedLenByteArrayType>(reader, writer, erased, edit, max_def, max_rep)
        }
    }
}

/// Streams one column chunk from `reader` to `writer`, dropping the records in `erased` or
/// nulling them at the top level.
pub(super) fn copy_typed<T: ParquetDataType>(
    reader: ColumnReader,
    writer: &mut SerializedColumnWriter<'_>,
    erased: &[u32],
    edit: Edit,
    max_def: i16,
    max_rep: i16,
) -> parquet::errors::Result<()> {
    let mut reader = T::get_column_reader(reader)
        .ok_or_else(|| ParquetError::General("column reader of the wrong physical type".into()))?;
    let writer = T::get_column_writer_mut(writer.untyped())
        .ok_or_else(|| ParquetError::General("column writer of the wrong physical type".into()))?;
    let (mut defs, mut reps, mut values) = (Vec::new(), Vec::new(), Vec::new());
    let (mut out_defs, mut out_reps, mut out_values) = (Vec::new(), Vec::new(), Vec::new());
    let mut record: u64 = 0;
    let mut next_erased = 0usize;
    let mut keep = true;
    loop {
        defs.clear();
        reps.clear();
        values.clear();
        let (records, _values_read, levels) =
            reader.read_records(RECORD_BATCH, Some(&mut defs), Some(&mut reps), &mut values)?;
        if records == 0 && levels == 0 {
            break;
        }
        // Fast path: no matched record in this batch, so it is written as read.
        while next_erased < erased.len() && u64::from(erased[next_erased]) < record {
            next_erased += 1;
        }
        let batch_end = record + records as u64;
        if next_erased >= erased.len() || u64::from(erased[next_erased]) >= batch_end {
            let n_levels = if max_def == 0 { values.len() } else { levels };
            writer.write_batch(
                &values,
                (max_def > 0).then(|| &defs[..n_levels]),
                (max_rep > 0).then(|| &reps[..n_levels]),
            )?;
            record = batch_end;
            continue;
        }
        out_defs.clear();
        out_reps.clear();
        out_values.clear();
        // Without definition levels there is one level (and one value) per record.
        let n_levels = if max_def == 0 { values.len() } else { levels };
        let mut value_idx = 0usize;
        for l in 0..n_levels {
            let starts_record = max_rep == 0 || reps[l] == 0;
            if starts_record {
                while next_erased < erased.len() && u64::from(erased[next_erased]) < record {
                    next_erased += 1;
                }
                keep = !(next_erased < erased.len() && u64::from(erased[next_erased]) == record);
                record += 1;
            }
            let has_value = max_def == 0 || defs[l] == max_def;
            if !keep && edit == Edit::Null {
                // One level per nulled record: definition 0 (the top-level field is null).
                if starts_record {
                    out_defs.push(0);
                    if max_rep > 0 {
                        out_reps.push(0);
                    }
                }
            } else if keep {
                if max_def > 0 {
                    out_defs.push(defs[l]);
                }
                if max_rep > 0 {
                    out_reps.push(reps[l]);
                }
                if has_value {
                    out_values.push(values[value_idx].clone());
                }
            }
            if has_value {
                value_idx += 1;
            }
        }
        writer.write_batch(
            &out_values,
            (max_def > 0).then_some(out_defs.as_slice()),
            (max_rep > 0).then_some(out_reps.as_slice()),
        )?;
    }
    Ok(())
}
