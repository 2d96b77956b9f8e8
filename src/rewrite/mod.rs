//! Stage 4, rewrite: produces a file's new bytes without its erased rows, at the Parquet level.
//!
//! The new file is written with the original file's own schema tree (physical types such as
//! INT96 and fixed-length decimals, logical and converted types, field ids, repetition and list
//! layout), its key-value metadata (an embedded `ARROW:schema` included) and each column's
//! codec, dictionary use and non-default encoding. Row groups with no erased row are copied as
//! raw column-chunk bytes, with their statistics, page indexes and bloom filters. A row group
//! with erased rows is decoded column by column into values and repetition/definition levels,
//! whole records are dropped, and the rest is re-encoded; a row group left with no rows is
//! dropped. No Arrow conversion happens anywhere on this path.
//!
//! The original is a [`Source`]: the whole file in memory, or (large files) an object read by
//! ranges, one row group at a time (`store::RangedObject`).
//!
//! What can go wrong: a corrupt page (the error names the file, row group and column). The
//! caller never writes partial output: the bytes are only returned when the file is complete.

use bytes::Bytes;
use parquet::basic::Encoding;
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, ReaderProperties, WriterProperties};
use parquet::file::reader::{ChunkReader, FileReader};
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;

use std::ops::Range;
use std::sync::Arc;

use crate::error::{Error, Result};

/// The original file, as the rewrite reads it.
pub trait Source: ChunkReader + Clone + 'static {
    /// Says the next reads fall in `range` (a row group's column chunks), so a source read by
    /// ranges fetches it at once and holds it until the next call.
    fn prefetch(&self, range: Range<u64>) -> parquet::errors::Result<()>;
}

/// A file held whole in memory.
impl Source for Bytes {
    fn prefetch(&self, _: Range<u64>) -> parquet::errors::Result<()> {
        Ok(())
    }
}

/// A large file read by ranges: one row group held at a time.
impl Source for crate::store::RangedObject {
    fn prefetch(&self, range: Range<u64>) -> parquet::errors::Result<()> {
        self.hold(range)
    }
}

mod pages;
mod reencode;

use reencode::{Edit, copy_kept};

/// Records decoded and re-encoded per batch in an affected row group.
const RECORD_BATCH: usize = 8192;

/// The result of rewriting one file.
#[derive(Debug)]
pub struct Rewritten {
    /// The new file, or `None` when every row was erased (the file is to be deleted).
    pub bytes: Option<Bytes>,
    /// Rows in the new file.
    pub rows: u64,
    /// Row groups copied as raw bytes, and re-encoded.
    pub row_groups_copied: usize,
    pub row_groups_rewritten: usize,
    /// In the rewritten row groups: column chunks rebuilt by page surgery, their pages copied
    /// as compressed bytes, and their pages cut and compressed again (see `pages`).
    pub chunks_spliced: usize,
    pub pages_copied: usize,
    pub pages_rewritten: usize,
}

/// Rewrites `file` (a whole Parquet file) without the rows in `erased` (per row group, row
/// indices within the row group, ascending). `path` is for messages.
/// What happens to the matched rows.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// The rows go.
    #[default]
    Delete,
    /// The rows stay; these top-level columns (which must be optional) are set to null in them.
    Redact(Vec<String>),
}

pub fn rewrite<S: Source>(
    file: S,
    erased: &[Vec<u32>],
    mode: &Mode,
    path: &str,
) -> Result<Rewritten> {
    // Room for a rewrite larger than the original (another codec level), never reallocated,
    // and the new file starting at a block boundary (padding before it) so that a local store
    // can write it to disk directly (see `store::DIRECT_IO_ALIGN`).
    let size = usize::try_from(file.len()).unwrap_or(usize::MAX);
    let (mut out, pad) = crate::store::aligned_buffer(size.saturating_add(size / 4 + 4096));
    let mut rewritten = rewrite_to(file, erased, mode, path, &mut out)?;
    if rewritten.rows > 0 {
        rewritten.bytes = Some(Bytes::from(out).slice(pad..));
    }
    Ok(rewritten)
}

/// Like [`rewrite`], writing the new file to `out` as it goes (for uploads in parts); the
/// result's `bytes` is `None`. When every row is erased nothing is written and `rows` is 0.
pub fn rewrite_to<S: Source, W: std::io::Write + Send>(
    file: S,
    erased: &[Vec<u32>],
    mode: &Mode,
    path: &str,
    out: W,
) -> Result<Rewritten> {
    let perr = |e: ParquetError| Error::parquet(path, e);
    let options = ReadOptionsBuilder::new()
        .with_page_index()
        .with_reader_properties(
            ReaderProperties::builder()
                .set_read_bloom_filter(true)
                .build(),
        )
        .build();
    let reader = SerializedFileReader::new_with_options(file.clone(), options).map_err(perr)?;
    let metadata = reader.metadata();
    let row_groups = metadata.row_groups();
    if erased.len() != row_groups.len() {
        return Err(perr(ParquetError::General(format!(
            "the plan has {} row groups but the file has {}",
            erased.len(),
            row_groups.len()
        ))));
    }
    // Leaf columns whose values are nulled in matched rows (redact), or none (delete).
    let schema_descr = metadata.file_metadata().schema_descr();
    let redacted: Vec<bool> = (0..schema_descr.num_columns())
        .map(|j| match mode {
            Mode::Delete => false,
            Mode::Redact(columns) => {
                let column = schema_descr.column(j);
                columns.iter().any(|c| column.path().parts()[0] == *c)
            }
        })
        .collect();
    let deleting = matches!(mode, Mode::Delete);
    let kept: u64 = row_groups
        .iter()
        .zip(erased)
        .map(|(rg, e)| rg.num_rows() as u64 - if deleting { e.len() as u64 } else { 0 })
        .sum();
    if kept == 0 {
        return Ok(Rewritten {
            bytes: None,
            rows: 0,
            row_groups_copied: 0,
            row_groups_rewritten: 0,
            chunks_spliced: 0,
            pages_copied: 0,
            pages_rewritten: 0,
        });
    }

    // Page indexes of copied chunks are kept only when every chunk of the file has one: the
    // writer cannot mix chunks with and without an offset index.
    let keep_page_index = metadata.offset_index().is_some_and(|oi| {
        oi.iter().all(|rg| {
            rg.len() == metadata.file_metadata().schema_descr().num_columns()
                && rg.iter().all(|c| !c.page_locations.is_empty())
        })
    });
    let props = Arc::new(writer_properties(metadata, keep_page_index));
    let schema = metadata.file_metadata().schema_descr().root_schema_ptr();
    let mut copied = 0;
    let mut rewritten = 0;
    let (mut spliced, mut pages_copied, mut pages_rewritten) = (0, 0, 0);
    {
        let mut writer = SerializedFileWriter::new(out, schema, props).map_err(perr)?;
        for (i, rg) in row_groups.iter().enumerate() {
            let erased_here = &erased[i];
            if deleting && erased_here.len() as i64 == rg.num_rows() && rg.num_rows() > 0 {
                continue;
            }
            let chunks = rg.columns().iter().map(|c| {
                let (start, len) = c.byte_range();
                start..start.saturating_add(len)
            });
            let span = chunks.reduce(|a, b| a.start.min(b.start)..a.end.max(b.end));
            if let Some(span) = span.filter(|s| s.end <= file.len()) {
                file.prefetch(span).map_err(perr)?;
            }
            let rg_reader = reader.get_row_group(i).map_err(perr)?;
            let mut rg_writer = writer.next_row_group().map_err(perr)?;
            for (j, column) in rg.columns().iter().enumerate() {
                // Untouched chunks are copied as raw bytes: every chunk of a row group without
                // matched rows, and under redact the chunks of columns that are not redacted.
                if erased_here.is_empty() || !(deleting || redacted[j]) {
                    let close = ColumnCloseResult {
                        bytes_written: column.compressed_size() as u64,
                        rows_written: rg.num_rows() as u64,
                        metadata: column.clone(),
                        bloom_filter: rg_reader.get_column_bloom_filter(j).cloned(),
                        column_index: metadata
                            .column_index()
                            .filter(|_| keep_page_index)
                            .and_then(|ci| ci.get(i)?.get(j).cloned())
                            .filter(|ci| !matches!(ci, ColumnIndexMetaData::NONE)),
                        offset_index: metadata
                            .offset_index()
                            .filter(|_| keep_page_index)
                            .and_then(|oi| oi.get(i)?.get(j).cloned()),
                    };
                    rg_writer.append_column(&file, close).map_err(perr)?;
                    continue;
                }
                let at = || format!("{path} (row group {i}, column {})", column.column_path());
                // Page surgery where the chunk allows it (see `pages`); else a whole re-encode.
                let index = metadata
                    .offset_index()
                    .filter(|_| keep_page_index)
                    .and_then(|oi| oi.get(i)?.get(j))
                    .map(|offsets| pages::PageIndex {
                        offsets,
                        columns: metadata
                            .column_index()
                            .and_then(|ci| ci.get(i)?.get(j))
                            .filter(|ci| !matches!(ci, ColumnIndexMetaData::NONE)),
                    });
                if deleting && (index.is_some() || !keep_page_index) {
                    let bloom = rg_reader.get_column_bloom_filter(j);
                    let rows = rg.num_rows() as u64;
                    let (start, len) = column.byte_range();
                    if start.checked_add(len).is_none_or(|end| end > file.len()) {
                        return Err(Error::corrupt(
                            at(),
                            ParquetError::General(
                                "column chunk extends past the end of the file".into(),
                            ),
                        ));
                    }
                    let chunk = file.get_bytes(start, len as usize).map_err(perr)?;
                    let result =
                        pages::splice_chunk(chunk, column, rows, erased_here, bloom, index)
                            .map_err(|e| Error::corrupt(at(), e))?;
                    if let Some(s) = result {
                        spliced += 1;
                        pages_copied += s.pages_copied;
                        pages_rewritten += s.pages_rewritten;
                        rg_writer.append_column(&s.bytes, s.close).map_err(perr)?;
                        continue;
                    }
                }
                let column_reader = rg_reader.get_column_reader(j).map_err(perr)?;
                let mut column_writer =
                    rg_writer.next_column().map_err(perr)?.ok_or_else(|| {
                        perr(ParquetError::General(format!("no writer for column {j}")))
                    })?;
                let descr = column.column_descr_ptr();
                let edit = if deleting { Edit::Drop } else { Edit::Null };
                copy_kept(
                    column_reader,
                    &mut column_writer,
                    erased_here,
                    edit,
                    descr.max_def_level(),
                    descr.max_rep_level(),
                )
                .map_err(|e| Error::corrupt(at(), e))?;
                column_writer.close().map_err(perr)?;
            }
            if erased_here.is_empty() {
                copied += 1;
            } else {
                rewritten += 1;
            }
            rg_writer.close().map_err(perr)?;
        }
        writer.close().map_err(perr)?;
    }
    Ok(Rewritten {
        bytes: None,
        rows: kept,
        row_groups_copied: copied,
        row_groups_rewritten: rewritten,
        chunks_spliced: spliced,
        pages_copied,
        pages_rewritten,
    })
}

/// Writer properties that reproduce the original file's per-column choices. Without a page
/// index in the original, none is written (statistics stay per chunk, as in the original).
fn writer_properties(metadata: &ParquetMetaData, page_index: bool) -> WriterProperties {
    let fm = metadata.file_metadata();
    let mut b =
        WriterProperties::builder().set_key_value_metadata(fm.key_value_metadata().cloned());
    if !page_index {
        b = b
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_offset_index_disabled(true);
    }
    if let Some(first) = metadata.row_groups().first() {
        b = b.set_sorting_columns(first.sorting_columns().cloned());
        for column in first.columns() {
            let path = column.column_path().clone();
            b = b
                .set_column_compression(path.clone(), column.compression())
                .set_column_dictionary_enabled(
                    path.clone(),
                    column.dictionary_page_offset().is_some(),
                )
                .set_column_bloom_filter_enabled(
                    path.clone(),
                    column.bloom_filter_offset().is_some(),
                );
            if let Some(enc) = column.encodings().find(|e| {
                matches!(
                    e,
                    Encoding::DELTA_BINARY_PACKED
                        | Encoding::DELTA_LENGTH_BYTE_ARRAY
                        | Encoding::DELTA_BYTE_ARRAY
                        | Encoding::BYTE_STREAM_SPLIT
                )
            }) {
                b = b.set_column_encoding(path, enc);
            }
        }
    }
    b.build()
}
