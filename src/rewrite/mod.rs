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
    let deleting = matches!(mode, Mode::Delete);
    let kept: u64 = row_groups
        .iter()
        .zip(erased)
        .map(|(rg, e)| rg.num_rows() as u64 - if deleting { e.len() as u64 } else { 0 })
        .sum();
    let mut done = Rewritten {
        bytes: None,
        rows: kept,
        row_groups_copied: 0,
        row_groups_rewritten: 0,
        chunks_spliced: 0,
        pages_copied: 0,
        pages_rewritten: 0,
    };
    if kept == 0 {
        return Ok(done);
    }
    let f = FileRewrite {
        file: &file,
        reader: &reader,
        metadata,
        path,
        deleting,
        redacted: redacted_columns(metadata, mode),
        keep_page_index: keeps_page_index(metadata),
    };
    let props = Arc::new(writer_properties(metadata, f.keep_page_index));
    let schema = metadata.file_metadata().schema_descr().root_schema_ptr();
    let mut writer = SerializedFileWriter::new(out, schema, props).map_err(perr)?;
    for (i, rg) in row_groups.iter().enumerate() {
        let erased_here = &erased[i];
        if deleting && erased_here.len() as i64 == rg.num_rows() && rg.num_rows() > 0 {
            continue;
        }
        f.row_group(i, erased_here, &mut writer, &mut done)?;
        if erased_here.is_empty() {
            done.row_groups_copied += 1;
        } else {
            done.row_groups_rewritten += 1;
        }
    }
    writer.close().map_err(perr)?;
    Ok(done)
}

/// The leaf columns whose values are nulled in matched rows (redact), or none (delete).
fn redacted_columns(metadata: &ParquetMetaData, mode: &Mode) -> Vec<bool> {
    let schema_descr = metadata.file_metadata().schema_descr();
    (0..schema_descr.num_columns())
        .map(|j| match mode {
            Mode::Delete => false,
            Mode::Redact(columns) => {
                let column = schema_descr.column(j);
                columns.iter().any(|c| column.path().parts()[0] == *c)
            }
        })
        .collect()
}

/// Whether the page indexes of copied chunks are kept: only when every chunk of the file has
/// one (the writer cannot mix chunks with and without an offset index).
fn keeps_page_index(metadata: &ParquetMetaData) -> bool {
    metadata.offset_index().is_some_and(|oi| {
        oi.iter().all(|rg| {
            rg.len() == metadata.file_metadata().schema_descr().num_columns()
                && rg.iter().all(|c| !c.page_locations.is_empty())
        })
    })
}

/// The original file being rewritten, and what applies to all its row groups.
struct FileRewrite<'a, S: Source> {
    file: &'a S,
    reader: &'a SerializedFileReader<S>,
    metadata: &'a ParquetMetaData,
    /// The file, for messages.
    path: &'a str,
    deleting: bool,
    redacted: Vec<bool>,
    keep_page_index: bool,
}

impl<S: Source> FileRewrite<'_, S> {
    fn perr(&self, e: ParquetError) -> Error {
        Error::parquet(self.path, e)
    }

    /// Writes row group `i` without the rows in `erased`, chunk by chunk: untouched chunks (all
    /// of a row group without matched rows; under redact, those of columns not redacted) as
    /// raw bytes, the others by page surgery where the chunk allows it, else re-encoded whole.
    fn row_group<W: std::io::Write + Send>(
        &self,
        i: usize,
        erased: &[u32],
        writer: &mut SerializedFileWriter<W>,
        done: &mut Rewritten,
    ) -> Result<()> {
        let rg = self.metadata.row_group(i);
        let chunks = rg.columns().iter().map(|c| {
            let (start, len) = c.byte_range();
            start..start.saturating_add(len)
        });
        let span = chunks.reduce(|a, b| a.start.min(b.start)..a.end.max(b.end));
        if let Some(span) = span.filter(|s| s.end <= self.file.len()) {
            self.file.prefetch(span).map_err(|e| self.perr(e))?;
        }
        let rg_reader = self.reader.get_row_group(i).map_err(|e| self.perr(e))?;
        let mut rg_writer = writer.next_row_group().map_err(|e| self.perr(e))?;
        for (j, column) in rg.columns().iter().enumerate() {
            if erased.is_empty() || !(self.deleting || self.redacted[j]) {
                let close = ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: rg.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: rg_reader.get_column_bloom_filter(j).cloned(),
                    column_index: self.column_index(i, j).cloned(),
                    offset_index: self.offset_index(i, j).cloned(),
                };
                rg_writer
                    .append_column(self.file, close)
                    .map_err(|e| self.perr(e))?;
                continue;
            }
            let at = || {
                format!(
                    "{} (row group {i}, column {})",
                    self.path,
                    column.column_path()
                )
            };
            if let Some(s) = self.splice(i, j, erased, rg_reader.as_ref(), &at)? {
                done.chunks_spliced += 1;
                done.pages_copied += s.pages_copied;
                done.pages_rewritten += s.pages_rewritten;
                rg_writer
                    .append_column(&s.bytes, s.close)
                    .map_err(|e| self.perr(e))?;
                continue;
            }
            let column_reader = rg_reader.get_column_reader(j).map_err(|e| self.perr(e))?;
            let mut column_writer = rg_writer
                .next_column()
                .map_err(|e| self.perr(e))?
                .ok_or_else(|| {
                    self.perr(ParquetError::General(format!("no writer for column {j}")))
                })?;
            let descr = column.column_descr_ptr();
            let edit = if self.deleting {
                Edit::Drop
            } else {
                Edit::Null
            };
            let levels = (descr.max_def_level(), descr.max_rep_level());
            copy_kept(
                column_reader,
                &mut column_writer,
                erased,
                edit,
                levels.0,
                levels.1,
            )
            .map_err(|e| Error::corrupt(at(), e))?;
            column_writer.close().map_err(|e| self.perr(e))?;
        }
        rg_writer.close().map_err(|e| self.perr(e))?;
        Ok(())
    }

    /// The kept column index of chunk (`i`, `j`), if the file's page index is kept.
    fn column_index(&self, i: usize, j: usize) -> Option<&ColumnIndexMetaData> {
        self.metadata
            .column_index()
            .filter(|_| self.keep_page_index)
            .and_then(|ci| ci.get(i)?.get(j))
            .filter(|ci| !matches!(ci, ColumnIndexMetaData::NONE))
    }

    /// The kept offset index of chunk (`i`, `j`), if the file's page index is kept.
    fn offset_index(
        &self,
        i: usize,
        j: usize,
    ) -> Option<&parquet::file::page_index::offset_index::OffsetIndexMetaData> {
        self.metadata
            .offset_index()
            .filter(|_| self.keep_page_index)
            .and_then(|oi| oi.get(i)?.get(j))
    }

    /// Page surgery on chunk (`i`, `j`) (see [`pages`]), when deleting and the chunk allows
    /// it; `None` leaves the chunk to the whole re-encode.
    fn splice(
        &self,
        i: usize,
        j: usize,
        erased: &[u32],
        rg_reader: &dyn parquet::file::reader::RowGroupReader,
        at: &dyn Fn() -> String,
    ) -> Result<Option<pages::Spliced>> {
        let index = self.offset_index(i, j).map(|offsets| pages::PageIndex {
            offsets,
            columns: self.column_index(i, j),
        });
        if !self.deleting || (index.is_none() && self.keep_page_index) {
            return Ok(None);
        }
        let rg = self.metadata.row_group(i);
        let column = rg.column(j);
        let (start, len) = column.byte_range();
        if start
            .checked_add(len)
            .is_none_or(|end| end > self.file.len())
        {
            return Err(Error::corrupt(
                at(),
                ParquetError::General("column chunk extends past the end of the file".into()),
            ));
        }
        let chunk = self
            .file
            .get_bytes(start, len as usize)
            .map_err(|e| self.perr(e))?;
        let bloom = rg_reader.get_column_bloom_filter(j);
        pages::splice_chunk(chunk, column, rg.num_rows() as u64, erased, bloom, index)
            .map_err(|e| Error::corrupt(at(), e))
    }
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
