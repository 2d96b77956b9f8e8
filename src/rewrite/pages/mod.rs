//! Page surgery: removes erased rows from one column chunk page by page.
//!
//! Pages without an erased row are copied as their original bytes (header, compressed body,
//! checksum and page statistics included). A page holding erased rows is decompressed, its
//! definition levels and its values are cut without decoding the values into objects (PLAIN
//! values are byte ranges, dictionary-encoded values are indices), and the rest is compressed
//! again with the chunk's codec. A page left with no rows is dropped.
//!
//! The dictionary page is kept as it is, unless an entry was used only by erased rows: such an
//! entry is dropped, the other entries keep their order, and the indices past the first
//! dropped entry are renumbered, so no erased value stays in the file and no value appears
//! twice (readers that map a Parquet dictionary onto an Arrow dictionary, pyarrow's
//! `read_dictionary` and pandas categoricals among them, need distinct entries). Finding out
//! reads the indices of the other pages too (decompression, no compression); a page whose
//! indices all come before the first dropped entry is still copied, any other
//! dictionary-encoded page is re-encoded with its indices renumbered.
//!
//! This applies to flat and nested columns with PLAIN or dictionary-encoded data pages, v1 and
//! v2 (not booleans, DELTA or BYTE_STREAM_SPLIT pages, nor redact). Anything else returns
//! `None`, and the caller re-encodes the chunk whole. A nested column's records are followed by
//! their repetition levels across pages, so all its pages are decompressed to find them.
//!
//! Statistics must not keep an erased value either. The chunk's min/max stay when no erased
//! value could be one of them (equal to it, or for a truncated byte-array bound, its possible
//! source), or when a kept value equals the bound exactly (then it is the kept values' bound);
//! otherwise the chunk goes to the whole re-encode, which recomputes them. With a page index,
//! page locations are rebuilt and each page's column index entry is held to the same rule
//! within its page, null counts adjusted. The distinct count is dropped. A bloom filter is
//! rebuilt, at the original size, from every kept value.
//!
//! [`splice_chunk`] runs the surgery; [`header`] parses page headers, [`decode`] decompresses a
//! page into levels and values, [`cut`] splits them into kept and erased rows and builds the
//! new page, [`dictionary`] drops dictionary entries only erased rows used, [`bounds`]
//! decides whether statistics and page-index bounds may stay, and [`write`] writes the chunk
//! and its metadata.

use bytes::Bytes;
use parquet::basic::{BoundaryOrder, Encoding, PageType, Type as PhysicalType};
use parquet::bloom_filter::Sbbf;
use parquet::column::page::PageWriter;
use parquet::column::writer::ColumnCloseResult;
use parquet::compression::{Codec, CodecOptionsBuilder, create_codec};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder, PageEncodingStats};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;

mod bounds;
mod cut;
mod decode;
mod dictionary;
mod header;
mod write;

use bounds::*;
use cut::*;
use decode::*;
use dictionary::*;
use header::*;
use write::*;

/// The original chunk's page index (the file has one).
#[derive(Clone, Copy)]
pub(super) struct PageIndex<'a> {
    pub offsets: &'a OffsetIndexMetaData,
    pub columns: Option<&'a ColumnIndexMetaData>,
}

/// A column chunk rebuilt by page surgery, ready for `append_column`.
pub(super) struct Spliced {
    pub bytes: Bytes,
    pub close: ColumnCloseResult,
    pub pages_copied: usize,
    pub pages_rewritten: usize,
}

/// One page of the chunk: where its header and body are, and what the header says.
struct RawPage {
    start: usize,
    body: usize,
    end: usize,
    header: PageHeader,
}

/// What pass 2 does with a data page.
enum Plan {
    Copy,
    Cut(Box<(Decoded, Cut)>),
}

/// Rebuilds the chunk described by `column` (bytes in `file`) without the rows in `erased`
/// (row indices within the row group, ascending), or returns `None` when the chunk is not
/// eligible for page surgery. `bloom` is the chunk's bloom filter, if it has one.
pub(super) fn splice_chunk(
    chunk: Bytes,
    column: &ColumnChunkMetaData,
    num_rows: u64,
    erased: &[u32],
    bloom: Option<&Sbbf>,
    index: Option<PageIndex<'_>>,
) -> Result<Option<Spliced>> {
    let Some(width) = value_width(column)? else {
        return Ok(None);
    };
    let Some(pages) = parse_pages(&chunk, column)? else {
        return Ok(None);
    };
    let mut codec = create_codec(
        column.compression(),
        &CodecOptionsBuilder::default().build(),
    )?;
    let dict = match pages.first() {
        Some(p) if p.header.dict.is_some() => {
            Some(Dictionary::decode(&chunk, p, width, codec.as_mut())?)
        }
        _ => None,
    };
    if dict.is_some() != column.dictionary_page_offset().is_some() {
        return Ok(None);
    }
    let (dict_page, data_pages) = pages.split_at(usize::from(dict.is_some()));
    if index.is_some_and(|ix| ix.offsets.page_locations.len() != data_pages.len()) {
        return Ok(None);
    }
    let descr = column.column_descr();
    let c = ChunkPages {
        chunk: &chunk,
        pages: data_pages,
        levels: (descr.max_rep_level(), descr.max_def_level()),
        width,
        entries: dict.as_ref().map_or(0, |d| d.entries.len()),
        ty: descr.physical_type(),
        dict: dict.as_ref(),
        column_index: index.and_then(|ix| ix.columns),
    };
    // The chunk's min/max, which an erased value must not stay in.
    let chunk_bounds = column.statistics().map(Bounds::of);
    let Some(mut cut) = cut_pages(&c, erased, bloom, chunk_bounds.as_ref(), codec.as_mut())? else {
        return Ok(None);
    };
    // Pages that disagree with the row group: leave the chunk to the whole re-encode, whose
    // reader judges the file.
    let past_end = erased.last().is_some_and(|r| u64::from(*r) >= cut.held);
    if cut.held != num_rows || past_end {
        return Ok(None);
    }
    if !chunk_bounds_hold(&c, &cut, chunk_bounds.as_ref(), codec.as_mut())? {
        return Ok(None);
    }
    let Some(scrub) = scrub_dictionary(&c, &mut cut, codec.as_mut())? else {
        return Ok(None);
    };
    let Some(written) = write_pages(
        &c,
        dict_page.first(),
        cut.plans,
        &cut.rows_in,
        &scrub,
        codec.as_mut(),
    )?
    else {
        return Ok(None);
    };
    let Some(metadata) = chunk_metadata(column, &written, cut.erased_nulls)? else {
        return Ok(None);
    };
    Ok(Some(Spliced {
        close: ColumnCloseResult {
            bytes_written: written.bytes.len() as u64,
            rows_written: num_rows - erased.len() as u64,
            metadata,
            bloom_filter: cut.bloom,
            column_index: written.column_index,
            offset_index: index.map(|_| OffsetIndexMetaData {
                page_locations: written.locations,
                unencoded_byte_array_data_bytes: None,
            }),
        },
        bytes: written.bytes,
        pages_copied: written.pages_copied,
        pages_rewritten: written.pages_rewritten,
    }))
}

/// The byte width of a PLAIN value of the column (`None` inside for BYTE_ARRAY), or `None` for
/// booleans, which page surgery leaves to the whole re-encode.
fn value_width(column: &ColumnChunkMetaData) -> Result<Option<Option<usize>>> {
    let descr = column.column_descr();
    Ok(Some(match descr.physical_type() {
        PhysicalType::BOOLEAN => return Ok(None),
        PhysicalType::INT32 | PhysicalType::FLOAT => Some(4),
        PhysicalType::INT64 | PhysicalType::DOUBLE => Some(8),
        PhysicalType::INT96 => Some(12),
        PhysicalType::FIXED_LEN_BYTE_ARRAY => Some(
            usize::try_from(descr.type_length())
                .ok()
                .filter(|w| *w > 0)
                .ok_or_else(|| {
                    general(format!(
                        "invalid FIXED_LEN_BYTE_ARRAY length {}",
                        descr.type_length()
                    ))
                })?,
        ),
        PhysicalType::BYTE_ARRAY => None,
    }))
}

/// The chunk's pages, header by header; `None` if one is of a kind page surgery cannot handle.
fn parse_pages(chunk: &Bytes, column: &ColumnChunkMetaData) -> Result<Option<Vec<RawPage>>> {
    let descr = column.column_descr();
    let (max_rep, max_def) = (descr.max_rep_level(), descr.max_def_level());
    let mut pages: Vec<RawPage> = Vec::new();
    let mut pos = 0usize;
    let mut values_seen = 0u64;
    while pos < chunk.len() {
        let header = PageHeader::parse(&chunk[pos..])?;
        check_sizes(&header, column, &mut values_seen)?;
        let body = pos + header.header_len;
        let end = body
            .checked_add(header.compressed)
            .filter(|n| *n <= chunk.len())
            .ok_or_else(|| general("page extends past its column chunk"))?;
        let supported = match (&header.data, &header.dict) {
            (Some(d), None) => {
                encoding(d.encoding).is_some()
                    && (max_def == 0 || d.v2 || d.def_encoding == ENCODING_RLE)
                    && (max_rep == 0 || d.v2 || d.rep_encoding == ENCODING_RLE)
                    && (d.encoding == ENCODING_PLAIN
                        || pages.first().is_some_and(|p| p.header.dict.is_some()))
            }
            (None, Some(d)) => {
                pages.is_empty()
                    && (d.encoding == ENCODING_PLAIN || d.encoding == ENCODING_PLAIN_DICTIONARY)
            }
            _ => false,
        };
        if !supported {
            return Ok(None);
        }
        pages.push(RawPage {
            start: pos,
            body,
            end,
            header,
        });
        pos = end;
    }
    Ok(Some(pages))
}

/// What pass 1 found over the data pages.
struct CutPages {
    /// Per data page: copy it, or the cut to write.
    plans: Vec<Plan>,
    /// Per data page: the records starting in it.
    rows_in: Vec<u64>,
    /// Dictionary entries kept rows use, and entries erased rows use.
    referenced: Vec<bool>,
    erased_entries: Vec<bool>,
    /// Dictionary-encoded pages copied without being read (for the dictionary check).
    unread: Vec<usize>,
    /// The new bloom filter, from every kept value (when the chunk had one).
    bloom: Option<Sbbf>,
    /// Erased values that could be the chunk's min / max, and that equal it.
    erased_hits: (u64, u64),
    erased_equal: (u64, u64),
    /// Erased rows that were null.
    erased_nulls: u64,
    /// The records the pages hold.
    held: u64,
}

impl CutPages {
    /// Records a decoded page and its cut: the dictionary entries its rows use, its kept
    /// values in the new bloom filter, its erased values that could be the chunk's min or max
    /// (the bound may stay only if a kept value equals it, counted over the whole chunk in
    /// [`chunk_bounds_hold`]), and what pass 2 does with it.
    fn add(&mut self, c: &ChunkPages<'_>, bounds: Option<&Bounds<'_>>, page: Decoded, cut: Cut) {
        self.rows_in.push(cut.records_started);
        for i in &cut.kept_indices {
            self.referenced[*i as usize] = true;
        }
        for i in &cut.erased_indices {
            self.erased_entries[*i as usize] = true;
        }
        if let (Some(b), Values::Plain(values)) = (self.bloom.as_mut(), &page.values) {
            for r in &cut.each_kept {
                b.insert(&values[r.clone()]);
            }
        }
        if let Some(bounds) = bounds {
            let hits = erased_counts(&page, &cut, c.dict, |v| bounds.hits(v, c.ty));
            let equal = erased_counts(&page, &cut, c.dict, |v| bounds.equals(v, c.ty));
            self.erased_hits = (self.erased_hits.0 + hits.0, self.erased_hits.1 + hits.1);
            self.erased_equal = (self.erased_equal.0 + equal.0, self.erased_equal.1 + equal.1);
        }
        self.erased_nulls += cut.erased_nulls;
        self.plans.push(if cut.erased_levels == 0 {
            Plan::Copy
        } else {
            Plan::Cut(Box::new((page, cut)))
        });
    }
}

/// Pass 1: cuts the pages holding erased rows. Other pages are read only for a bloom filter
/// (every kept value) or, later, for the dictionary check. `None` when a page's own bounds in
/// the column index cannot be kept (the chunk then goes to the whole re-encode).
fn cut_pages(
    c: &ChunkPages<'_>,
    erased: &[u32],
    bloom: Option<&Sbbf>,
    chunk_bounds: Option<&Bounds<'_>>,
    mut codec: Option<&mut Box<dyn Codec>>,
) -> Result<Option<CutPages>> {
    let mut out = CutPages {
        plans: Vec::with_capacity(c.pages.len()),
        rows_in: Vec::with_capacity(c.pages.len()),
        referenced: vec![false; c.entries],
        erased_entries: vec![false; c.entries],
        unread: Vec::new(),
        bloom: bloom.map(|b| Sbbf::new_with_num_of_bytes(b.num_blocks() * 32)),
        erased_hits: (0, 0),
        erased_equal: (0, 0),
        erased_nulls: 0,
        held: 0,
    };
    // Records: a flat column has one level per record, so a page's records come from its
    // header; a nested column starts a record at each repetition level 0 (a v1 page may begin
    // inside one), so its pages are all read to know which records they hold.
    let nested = c.levels.0 > 0;
    let mut records = Records {
        erased,
        next: 0,
        current: None,
    };
    let mut first_row = 0u64;
    for (k, p) in c.pages.iter().enumerate() {
        let Some(d) = &p.header.data else {
            return Ok(None);
        };
        let flat_here = if nested {
            None
        } else {
            // One level per record: the level count is the row count (v2 headers also carry
            // num_rows, which some writers got wrong).
            let page_rows = u64::from(d.num_values);
            let here = records.flat_page(first_row, page_rows);
            first_row += page_rows;
            if here.is_empty() && out.bloom.is_none() {
                if d.encoding != ENCODING_PLAIN {
                    out.unread.push(k);
                }
                out.rows_in.push(page_rows);
                out.plans.push(Plan::Copy);
                continue;
            }
            Some(here)
        };
        let mut rows = match flat_here {
            Some(here) => Rows::Flat { here, next: 0 },
            None => Rows::Nested(&mut records),
        };
        let Some(page) = decode(c.chunk, p, c.levels, codec.as_deref_mut())? else {
            return Ok(None);
        };
        let n = d.num_values as usize;
        let each = out.bloom.is_some();
        let cut = Cut::new(&page, &mut rows, n, c.width, c.levels.1, each, c.entries)?;
        if !page_bounds_hold(c, k, n, &page, &cut)? {
            return Ok(None);
        }
        out.add(c, chunk_bounds, page, cut);
    }
    out.held = if nested {
        records.current.map_or(0, |r| r + 1)
    } else {
        first_row
    };
    Ok(Some(out))
}

/// Whether data page `k`'s own bounds in the column index may stay after its cut (the same
/// rule as for the chunk's statistics, within the page).
fn page_bounds_hold(
    c: &ChunkPages<'_>,
    k: usize,
    n: usize,
    page: &Decoded,
    cut: &Cut,
) -> Result<bool> {
    let Some(ci) = c.column_index.filter(|_| cut.erased_levels > 0) else {
        return Ok(true);
    };
    let Some(entry) = IndexEntry::of(ci, k) else {
        return Ok(false);
    };
    let bounds = Bounds {
        min: Some(&entry.min[..]),
        max: Some(&entry.max[..]),
        min_exact: false,
        max_exact: false,
    };
    let erased_hits = erased_counts(page, cut, c.dict, |v| bounds.hits(v, c.ty));
    let erased_equal = erased_counts(page, cut, c.dict, |v| bounds.equals(v, c.ty));
    let all_equal = page_hits(page, n, c.width, c.levels.1, c.dict, |v| {
        bounds.equals(v, c.ty)
    })?;
    Ok(entry.null_page || kept_hold(erased_hits, erased_equal, all_equal))
}

/// Whether the chunk's min/max may stay: each bound an erased value could have produced is
/// still held by a kept value equal to it. Pages cut in pass 1 are still decoded; the others
/// are decompressed again (only when an erased value hit a bound).
fn chunk_bounds_hold(
    c: &ChunkPages<'_>,
    cut: &CutPages,
    bounds: Option<&Bounds<'_>>,
    mut codec: Option<&mut Box<dyn Codec>>,
) -> Result<bool> {
    let Some(bounds) = bounds.filter(|_| cut.erased_hits != (0, 0)) else {
        return Ok(true);
    };
    let mut all_equal = (0u64, 0u64);
    for (p, plan) in c.pages.iter().zip(&cut.plans) {
        let Some(d) = &p.header.data else {
            return Ok(false);
        };
        let decoded;
        let page = match plan {
            Plan::Cut(cut) => &cut.0,
            Plan::Copy => {
                let Some(page) = decode(c.chunk, p, c.levels, codec.as_deref_mut())? else {
                    return Ok(false);
                };
                decoded = page;
                &decoded
            }
        };
        let n = d.num_values as usize;
        let equal = page_hits(page, n, c.width, c.levels.1, c.dict, |v| {
            bounds.equals(v, c.ty)
        })?;
        all_equal = (all_equal.0 + equal.0, all_equal.1 + equal.1);
    }
    Ok(kept_hold(cut.erased_hits, cut.erased_equal, all_equal))
}

/// Dictionary entries that only erased rows used must not stay in the file: finds them
/// (reading the unread pages' indices as long as one is in doubt), adds the kept entries to
/// the new bloom filter, and renumbers the pages for a dictionary without them (see
/// [`renumber`]). Returns the entries to drop (ascending), or `None` when a page cannot be
/// renumbered.
fn scrub_dictionary(
    c: &ChunkPages<'_>,
    cut: &mut CutPages,
    mut codec: Option<&mut Box<dyn Codec>>,
) -> Result<Option<Vec<usize>>> {
    let Some(dict) = c.dict else {
        return Ok(Some(Vec::new()));
    };
    let mut decoded_unread = Vec::new();
    for k in std::mem::take(&mut cut.unread) {
        let pending = (0..c.entries).any(|i| cut.erased_entries[i] && !cut.referenced[i]);
        if !pending {
            break;
        }
        let Some(page) = decode(c.chunk, &c.pages[k], c.levels, codec.as_deref_mut())? else {
            return Ok(None);
        };
        if let Values::Dict { indices, .. } = &page.values {
            for i in indices {
                *cut.referenced
                    .get_mut(*i as usize)
                    .ok_or_else(|| bad_index(*i, c.entries))? = true;
            }
        }
        decoded_unread.push((k, page));
    }
    let scrub: Vec<usize> = (0..c.entries)
        .filter(|i| cut.erased_entries[*i] && !cut.referenced[*i])
        .collect();
    if let Some(b) = cut.bloom.as_mut() {
        for i in (0..c.entries).filter(|i| cut.referenced[*i]) {
            b.insert(dict.entry(i as u32));
        }
    }
    if !scrub.is_empty() && !renumber(c, &scrub, &mut cut.plans, decoded_unread, codec)? {
        return Ok(None);
    }
    Ok(Some(scrub))
}

/// The data pages of a column chunk, and what reading and judging them needs.
struct ChunkPages<'a> {
    chunk: &'a Bytes,
    pages: &'a [RawPage],
    /// (max repetition level, max definition level).
    levels: (i16, i16),
    /// See [`value_width`].
    width: Option<usize>,
    /// The dictionary's size (0 without one).
    entries: usize,
    ty: PhysicalType,
    dict: Option<&'a Dictionary>,
    /// The chunk's column index entries, where the file has a page index.
    column_index: Option<&'a ColumnIndexMetaData>,
}

/// Holds a page header's sizes, which come from the untrusted file and size allocations, to
/// what the chunk's metadata allows: a page decompresses to no more than the whole chunk, the
/// data pages hold no more values than the chunk, and a dictionary holds no more entries than
/// it has bytes. A header past that is corrupt (an error, exit 2), never a huge allocation.
fn check_sizes(
    header: &PageHeader,
    column: &ColumnChunkMetaData,
    values_seen: &mut u64,
) -> Result<()> {
    let chunk_bytes = u64::try_from(column.uncompressed_size()).unwrap_or(0);
    if header.uncompressed as u64 > chunk_bytes {
        return Err(general(format!(
            "page header claims {} bytes, more than its column chunk's {chunk_bytes}",
            header.uncompressed
        )));
    }
    if let Some(d) = &header.data {
        *values_seen += u64::from(d.num_values);
        let chunk_values = u64::try_from(column.num_values()).unwrap_or(0);
        if *values_seen > chunk_values {
            return Err(general(format!(
                "page headers claim {values_seen} values, more than their column chunk's \
                 {chunk_values}"
            )));
        }
    }
    if let Some(d) = &header.dict
        && d.num_values as usize > header.uncompressed
    {
        return Err(general(format!(
            "dictionary page header claims {} entries in {} bytes",
            d.num_values, header.uncompressed
        )));
    }
    Ok(())
}

const ENCODING_PLAIN: i32 = 0;
const ENCODING_PLAIN_DICTIONARY: i32 = 2;
const ENCODING_RLE: i32 = 3;
const ENCODING_RLE_DICTIONARY: i32 = 8;
const PAGE_DATA: i32 = 0;
const PAGE_DICTIONARY: i32 = 2;
const PAGE_DATA_V2: i32 = 3;

/// The value encodings page surgery handles.
fn encoding(e: i32) -> Option<Encoding> {
    match e {
        ENCODING_PLAIN => Some(Encoding::PLAIN),
        ENCODING_PLAIN_DICTIONARY => Some(Encoding::PLAIN_DICTIONARY),
        ENCODING_RLE_DICTIONARY => Some(Encoding::RLE_DICTIONARY),
        _ => None,
    }
}

fn general(message: impl Into<String>) -> ParquetError {
    ParquetError::General(message.into())
}

fn bad_index(i: u32, entries: usize) -> ParquetError {
    general(format!(
        "dictionary index {i} out of range (dictionary of {entries})"
    ))
}

/// The byte range of the PLAIN value at `cursor` (length prefix included).
fn plain_value(values: &[u8], cursor: usize, width: Option<usize>) -> Result<Range<usize>> {
    let len = match width {
        Some(w) => w,
        None => {
            let b = values.get(cursor..cursor + 4).ok_or_else(truncated)?;
            4 + u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize
        }
    };
    let r = cursor..cursor + len;
    if r.end > values.len() {
        return Err(truncated());
    }
    Ok(r)
}

/// Room for any codec's output of `n` bytes (snappy's bound is the largest), so that the output
/// buffer never grows by copying; untouched capacity costs no memory.
fn compress_bound(n: usize) -> usize {
    n + n / 6 + 64
}

fn compress(codec: Option<&mut Box<dyn Codec>>, raw: Vec<u8>) -> Result<Vec<u8>> {
    match codec {
        Some(codec) => {
            let mut buf = Vec::with_capacity(compress_bound(raw.len()));
            codec.compress(&raw, &mut buf)?;
            Ok(buf)
        }
        None => Ok(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::column::page::Page;
    use parquet::file::reader::FileReader;

    /// A Thrift compact encoding of an unsigned varint.
    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// An i32 field `delta` ids after the previous one.
    fn i32_field(delta: u8, v: i32) -> Vec<u8> {
        let mut out = vec![(delta << 4) | T_I32];
        out.extend(varint(((v << 1) ^ (v >> 31)) as u32 as u64));
        out
    }

    /// A v1 data page header: PLAIN values, RLE levels.
    fn data_page_header(uncompressed: i32, compressed: i32, num_values: i32) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend(i32_field(1, PAGE_DATA));
        h.extend(i32_field(1, uncompressed));
        h.extend(i32_field(1, compressed));
        h.push((2 << 4) | T_STRUCT); // field 5, data_page_header
        h.extend(i32_field(1, num_values));
        h.extend(i32_field(1, ENCODING_PLAIN));
        h.extend(i32_field(1, ENCODING_RLE));
        h.extend(i32_field(1, ENCODING_RLE));
        h.push(0); // end of data_page_header
        h.push(0); // end of the page header
        h
    }

    /// A parquet-rs file of one optional INT64 column (PLAIN, 100-row pages) and its first
    /// column chunk: bytes and metadata.
    fn int_chunk() -> (Bytes, ColumnChunkMetaData) {
        use arrow::array::{ArrayRef, Int64Array, RecordBatch};
        let ids: Int64Array = (0..1000i64).map(|i| (i % 9 != 0).then_some(i)).collect();
        let batch =
            RecordBatch::try_from_iter(vec![("id", std::sync::Arc::new(ids) as ArrayRef)]).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .build();
        let mut buf = Vec::new();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let file = Bytes::from(buf);
        let reader =
            parquet::file::serialized_reader::SerializedFileReader::new(file.clone()).unwrap();
        let column = reader.metadata().row_group(0).column(0).clone();
        let (start, len) = column.byte_range();
        (file.slice(start as usize..(start + len) as usize), column)
    }

    #[test]
    fn a_written_header_parses_with_its_fields() {
        let (chunk, column) = int_chunk();
        let h = PageHeader::parse(&chunk).unwrap();
        let d = h.data.as_ref().unwrap();
        assert_eq!(
            (d.num_values, d.encoding, d.v2),
            (100, ENCODING_PLAIN, false)
        );
        assert!(h.compressed > 0 && h.header_len > 0);
        let spliced = splice_chunk(chunk, &column, 1000, &[3, 500], None, None)
            .unwrap()
            .unwrap();
        assert_eq!(spliced.close.rows_written, 998);
        assert_eq!((spliced.pages_rewritten, spliced.pages_copied), (2, 8));
    }

    #[test]
    fn truncated_and_negative_headers_are_errors() {
        let (chunk, _) = int_chunk();
        let len = PageHeader::parse(&chunk).unwrap().header_len;
        for cut in 0..len {
            assert!(
                PageHeader::parse(&chunk[..cut]).is_err(),
                "{cut} of {len} bytes"
            );
        }
        for (uncompressed, compressed, values) in [(-1, 10, 10), (10, -1, 10), (10, 10, -5)] {
            let h = data_page_header(uncompressed, compressed, values);
            assert!(
                PageHeader::parse(&h).is_err(),
                "{uncompressed} {compressed} {values}"
            );
        }
        // Deeply nested structs stop at a depth limit.
        let deep: Vec<u8> = std::iter::repeat_n((1 << 4) | T_STRUCT, 10_000).collect();
        assert!(PageHeader::parse(&deep).is_err());
    }

    #[test]
    fn garbage_headers_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (chunk, _) = int_chunk();
        for _ in 0..20_000 {
            // Random bytes, and a real header with random bytes flipped.
            let mut bytes: Vec<u8> = chunk[..64].to_vec();
            if rng.gen_bool(0.5) {
                rng.fill(&mut bytes[..]);
            } else {
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] = rng.r#gen();
                }
            }
            let _ = PageHeader::parse(&bytes);
        }
    }

    #[test]
    fn hostile_header_sizes_are_errors_not_allocations() {
        let (chunk, column) = int_chunk();
        let real = PageHeader::parse(&chunk).unwrap();
        let body = &chunk[real.header_len..];
        let (u, c) = (real.uncompressed as i32, real.compressed as i32);
        for (header, says) in [
            (data_page_header(u, c, i32::MAX), "values"),
            (data_page_header(i32::MAX, c, 100), "bytes"),
        ] {
            let mut hostile = header;
            hostile.extend_from_slice(body);
            let e = splice_chunk(Bytes::from(hostile), &column, 1000, &[3], None, None)
                .err()
                .expect("a hostile header is an error");
            assert!(e.to_string().contains(says), "{e}");
        }
    }

    #[test]
    fn a_cut_keeps_the_other_rows_levels_and_values() {
        // An optional INT32 column: rows 0..5, row 1 null; rows 1 and 3 erased.
        let values: Vec<u8> = [10i32, 20, 30, 40]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let page = Decoded {
            reps: None,
            defs: Some(vec![1, 0, 1, 1, 1]),
            values: Values::Plain(Bytes::from(values.clone())),
        };
        let mut rows = Rows::Flat {
            here: vec![1, 3],
            next: 0,
        };
        let cut = Cut::new(&page, &mut rows, 5, Some(4), 1, true, 0).unwrap();
        assert_eq!(cut.erased_levels, 2);
        assert_eq!(cut.erased_nulls, 1);
        assert_eq!(cut.kept_defs.as_deref(), Some(&[1, 1, 1][..]));
        assert_eq!((cut.records_started, cut.kept_records), (5, 3));
        let kept: Vec<u8> = cut
            .kept
            .iter()
            .flat_map(|r| values[r.clone()].to_vec())
            .collect();
        let expected: Vec<u8> = [10i32, 20, 40]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(kept, expected);
        let erased: Vec<&[u8]> = cut
            .erased_values
            .iter()
            .map(|r| &values[r.clone()])
            .collect();
        assert_eq!(erased, vec![&30i32.to_le_bytes()[..]]);
        // An erased row past the page is an error, not a silent skip.
        let mut rows = Rows::Flat {
            here: vec![7],
            next: 0,
        };
        assert!(Cut::new(&page, &mut rows, 5, Some(4), 1, false, 0).is_err());
    }

    #[test]
    fn dropping_dictionary_entries_keeps_order_and_distinct_values() {
        assert_eq!(index_map(5, &[1, 3]), vec![0, u32::MAX, 1, u32::MAX, 2]);
        let mut raw = Vec::new();
        let mut entries = Vec::new();
        for v in ["apple", "pear", "fig"] {
            raw.extend_from_slice(&(v.len() as u32).to_le_bytes());
            entries.push(raw.len()..raw.len() + v.len());
            raw.extend_from_slice(v.as_bytes());
        }
        let dict = Dictionary {
            bytes: Bytes::from(raw),
            entries,
        };
        let h = DictHeader {
            num_values: 3,
            encoding: ENCODING_PLAIN,
            is_sorted: false,
        };
        let page = dict.without(&[1], None, &h, None).unwrap().unwrap();
        let Page::DictionaryPage {
            buf, num_values, ..
        } = page.compressed_page()
        else {
            panic!("not a dictionary page");
        };
        assert_eq!(*num_values, 2);
        let mut expected = Vec::new();
        for v in ["apple", "fig"] {
            expected.extend_from_slice(&(v.len() as u32).to_le_bytes());
            expected.extend_from_slice(v.as_bytes());
        }
        assert_eq!(&buf[..], &expected[..]);
        // No entry left: no surgery (the chunk is re-encoded whole).
        assert!(dict.without(&[0, 1, 2], None, &h, None).unwrap().is_none());
    }

    #[test]
    fn bounds_stay_only_when_a_kept_value_holds_them() {
        // No erased value hits a bound: it stays; one does: it stays only if more values than
        // the erased ones equal it.
        assert!(kept_hold((0, 0), (0, 0), (0, 0)));
        assert!(!kept_hold((1, 0), (1, 0), (1, 0)));
        assert!(kept_hold((1, 0), (1, 0), (2, 0)));
        assert!(!kept_hold((0, 1), (0, 1), (5, 1)));
        let (min, max) = (7i64.to_le_bytes(), 9i64.to_le_bytes());
        let b = Bounds {
            min: Some(&min),
            max: Some(&max),
            min_exact: true,
            max_exact: true,
        };
        assert_eq!(
            b.hits(&7i64.to_le_bytes(), PhysicalType::INT64),
            (true, false)
        );
        assert_eq!(
            b.hits(&8i64.to_le_bytes(), PhysicalType::INT64),
            (false, false)
        );
        // A truncated byte-array min is hit by any value it is a prefix of.
        let b = Bounds {
            min: Some(b"ab"),
            max: None,
            min_exact: false,
            max_exact: false,
        };
        assert_eq!(b.hits(b"abz", PhysicalType::BYTE_ARRAY), (true, false));
        assert_eq!(b.hits(b"b", PhysicalType::BYTE_ARRAY), (false, false));
    }
}
