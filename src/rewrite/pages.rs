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

use bytes::Bytes;
use parquet::basic::{BoundaryOrder, Encoding, PageType, Type as PhysicalType};
use parquet::bloom_filter::Sbbf;
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::compression::{Codec, CodecOptionsBuilder, create_codec};
use parquet::data_type::AsBytes;
use parquet::encodings::levels::LevelEncoder;
use parquet::encodings::rle::{RleDecoder, RleEncoder};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ColumnChunkMetaData, ColumnIndexBuilder, PageEncodingStats};
use parquet::file::page_index::column_index::{ColumnIndexMetaData, PrimitiveColumnIndex};
use parquet::file::page_index::offset_index::{OffsetIndexMetaData, PageLocation};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;

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
    let descr = column.column_descr();
    let ty = descr.physical_type();
    let width = match ty {
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
    };
    let (max_rep, max_def) = (descr.max_rep_level(), descr.max_def_level());

    // The page headers. A page surgery cannot handle means no surgery.
    let mut pages = Vec::new();
    let mut pos = 0usize;
    while pos < chunk.len() {
        let header = PageHeader::parse(&chunk[pos..])?;
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
                        || pages
                            .first()
                            .is_some_and(|p: &RawPage| p.header.dict.is_some()))
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
    let data_pages = &pages[usize::from(dict.is_some())..];
    if index.is_some_and(|ix| ix.offsets.page_locations.len() != data_pages.len()) {
        return Ok(None);
    }
    let column_index = index.and_then(|ix| ix.columns);
    let entries = dict.as_ref().map_or(0, |d| d.entries.len());
    let stats = column.statistics();

    // Pass 1: cut the pages holding erased rows. Other pages are read only for a bloom filter
    // (every kept value) or, below, for the dictionary check.
    let mut new_bloom = bloom.map(|b| Sbbf::new_with_num_of_bytes(b.num_blocks() * 32));
    let mut referenced = vec![false; entries];
    let mut erased_entries = vec![false; entries];
    let mut unread = Vec::new();
    let mut plans = Vec::with_capacity(data_pages.len());
    // Records: a flat column has one level per record, so a page's records come from its
    // header; a nested column starts a record at each repetition level 0 (a v1 page may begin
    // inside one), so its pages are all read to know which records they hold.
    let nested = max_rep > 0;
    let chunk_bounds = stats.map(Bounds::of);
    let (mut chunk_erased_hits, mut chunk_erased_equal) = ((0u64, 0u64), (0u64, 0u64));
    let mut records = Records {
        erased,
        next: 0,
        current: None,
    };
    let mut rows_in = Vec::with_capacity(data_pages.len());
    let (mut first_row, mut erased_nulls) = (0u64, 0u64);
    for (k, p) in data_pages.iter().enumerate() {
        let Some(d) = &p.header.data else {
            return Ok(None);
        };
        let flat_here = if nested {
            None
        } else {
            // One level per record: the level count is the row count (v2 headers also carry
            // num_rows, which some writers got wrong).
            let page_rows = u64::from(d.num_values);
            let lo = records.next;
            while records.next < erased.len()
                && u64::from(erased[records.next]) < first_row + page_rows
            {
                records.next += 1;
            }
            let here: Vec<usize> = erased[lo..records.next]
                .iter()
                .map(|r| (u64::from(*r) - first_row) as usize)
                .collect();
            first_row += page_rows;
            if here.is_empty() && new_bloom.is_none() {
                if d.encoding != ENCODING_PLAIN {
                    unread.push(k);
                }
                rows_in.push(page_rows);
                plans.push(Plan::Copy);
                continue;
            }
            Some(here)
        };
        let mut rows = match flat_here {
            Some(here) => Rows::Flat { here, next: 0 },
            None => Rows::Nested(&mut records),
        };
        let Some(page) = decode(&chunk, p, (max_rep, max_def), codec.as_mut())? else {
            return Ok(None);
        };
        let cut = Cut::new(
            &page,
            &mut rows,
            d.num_values as usize,
            width,
            max_def,
            new_bloom.is_some(),
            entries,
        )?;
        rows_in.push(cut.records_started);
        for i in &cut.kept_indices {
            referenced[*i as usize] = true;
        }
        for i in &cut.erased_indices {
            erased_entries[*i as usize] = true;
        }
        if let (Some(b), Values::Plain(values)) = (new_bloom.as_mut(), &page.values) {
            for r in &cut.each_kept {
                b.insert(&values[r.clone()]);
            }
        }
        // The page's own bounds in the column index are held to the same rule, within the
        // page.
        if let Some(ci) = column_index.filter(|_| cut.erased_levels > 0) {
            let Some(entry) = IndexEntry::of(ci, k) else {
                return Ok(None);
            };
            let bounds = Bounds {
                min: Some(&entry.min[..]),
                max: Some(&entry.max[..]),
                min_exact: false,
                max_exact: false,
            };
            let n = d.num_values as usize;
            let erased_hits = erased_counts(&page, &cut, dict.as_ref(), |v| bounds.hits(v, ty));
            let erased_equal = erased_counts(&page, &cut, dict.as_ref(), |v| bounds.equals(v, ty));
            let all_equal = page_hits(&page, n, width, max_def, dict.as_ref(), |v| {
                bounds.equals(v, ty)
            })?;
            if !entry.null_page && !kept_hold(erased_hits, erased_equal, all_equal) {
                return Ok(None);
            }
        }
        // Erased values that could be the chunk's min or max: the bound may stay only if a
        // kept value equals it (counted over the whole chunk below).
        if let Some(bounds) = &chunk_bounds {
            let hits = erased_counts(&page, &cut, dict.as_ref(), |v| bounds.hits(v, ty));
            let equal = erased_counts(&page, &cut, dict.as_ref(), |v| bounds.equals(v, ty));
            chunk_erased_hits = (chunk_erased_hits.0 + hits.0, chunk_erased_hits.1 + hits.1);
            chunk_erased_equal = (
                chunk_erased_equal.0 + equal.0,
                chunk_erased_equal.1 + equal.1,
            );
        }
        erased_nulls += cut.erased_nulls;
        plans.push(if cut.erased_levels == 0 {
            Plan::Copy
        } else {
            Plan::Cut(Box::new((page, cut)))
        });
    }
    let held = if nested {
        records.current.map_or(0, |r| r + 1)
    } else {
        first_row
    };
    // Pages that disagree with the row group: leave the chunk to the whole re-encode, whose
    // reader judges the file.
    let past_end = erased.last().is_some_and(|r| u64::from(*r) >= held);
    if held != num_rows || past_end {
        return Ok(None);
    }
    if let Some(bounds) = chunk_bounds
        .as_ref()
        .filter(|_| chunk_erased_hits != (0, 0))
    {
        // Pages cut in pass 1 are still decoded; the others are decompressed again.
        let mut all_equal = (0u64, 0u64);
        for (p, plan) in data_pages.iter().zip(&plans) {
            let Some(d) = &p.header.data else {
                return Ok(None);
            };
            let decoded;
            let page = match plan {
                Plan::Cut(cut) => &cut.0,
                Plan::Copy => {
                    let Some(page) = decode(&chunk, p, (max_rep, max_def), codec.as_mut())? else {
                        return Ok(None);
                    };
                    decoded = page;
                    &decoded
                }
            };
            let n = d.num_values as usize;
            let equal = page_hits(page, n, width, max_def, dict.as_ref(), |v| {
                bounds.equals(v, ty)
            })?;
            all_equal = (all_equal.0 + equal.0, all_equal.1 + equal.1);
        }
        if !kept_hold(chunk_erased_hits, chunk_erased_equal, all_equal) {
            return Ok(None);
        }
    }

    // Dictionary entries that only erased rows used must not stay in the file: they are
    // dropped, and the indices after them renumbered (see [`renumber`]).
    let mut scrub = Vec::new();
    let mut decoded_unread = Vec::new();
    if let Some(dict) = &dict {
        let pending =
            |referenced: &[bool]| (0..entries).any(|i| erased_entries[i] && !referenced[i]);
        for k in unread {
            if !pending(&referenced) {
                break;
            }
            let Some(page) = decode(&chunk, &data_pages[k], (max_rep, max_def), codec.as_mut())?
            else {
                return Ok(None);
            };
            if let Values::Dict { indices, .. } = &page.values {
                for i in indices {
                    *referenced
                        .get_mut(*i as usize)
                        .ok_or_else(|| bad_index(*i, entries))? = true;
                }
            }
            decoded_unread.push((k, page));
        }
        scrub = (0..entries)
            .filter(|i| erased_entries[*i] && !referenced[*i])
            .collect();
        if let Some(b) = new_bloom.as_mut() {
            for i in (0..entries).filter(|i| referenced[*i]) {
                b.insert(dict.entry(i as u32));
            }
        }
    }
    if !scrub.is_empty() {
        let chunk_pages = ChunkPages {
            chunk: &chunk,
            pages: data_pages,
            levels: (max_rep, max_def),
            width,
            entries,
        };
        if !renumber(
            &chunk_pages,
            &scrub,
            &mut plans,
            decoded_unread,
            codec.as_mut(),
        )? {
            return Ok(None);
        }
    }

    // Pass 2: write the chunk.
    let mut out = TrackedWrite::new(Vec::with_capacity(compress_bound(chunk.len())));
    let (mut num_values, mut uncompressed) = (0i64, 0i64);
    let (mut pages_copied, mut pages_rewritten) = (0, 0);
    let mut encoding_counts: BTreeMap<(i32, i32), i32> = BTreeMap::new();
    let mut data_page_offset = 0i64;
    if let (Some(dict), Some(first)) = (&dict, pages.first()) {
        let Some(h) = &first.header.dict else {
            return Ok(None);
        };
        if scrub.is_empty() {
            out.write_all(&chunk[first.start..first.end])?;
            uncompressed += (first.header.header_len + first.header.uncompressed) as i64;
            pages_copied += 1;
        } else {
            let Some(page) = dict.without(&scrub, width, h, codec.as_mut())? else {
                return Ok(None);
            };
            uncompressed += SerializedPageWriter::new(&mut out)
                .write_page(page)?
                .uncompressed_size as i64;
            pages_rewritten += 1;
        }
        *encoding_counts
            .entry((PAGE_DICTIONARY, h.encoding))
            .or_default() += 1;
        data_page_offset = out.bytes_written() as i64;
    }
    // The page index, when the file has one: page locations always, page bounds when the
    // original chunk has them with null counts.
    let mut locations = Vec::new();
    let mut bounds_index = column_index
        .filter(|ci| (0..data_pages.len()).all(|k| ci.null_count(k).is_some()))
        .map(|ci| {
            let mut b = ColumnIndexBuilder::new(ty);
            b.set_boundary_order(ci.get_boundary_order().unwrap_or(BoundaryOrder::UNORDERED));
            (ci, b)
        });
    let mut kept_rows = 0i64;
    for (k, (p, plan)) in data_pages.iter().zip(plans).enumerate() {
        let Some(d) = &p.header.data else {
            return Ok(None);
        };
        let page_type = if d.v2 { PAGE_DATA_V2 } else { PAGE_DATA };
        let page_start = out.bytes_written();
        let (entry_nulls, now_null) = match &plan {
            Plan::Copy => (0, false),
            Plan::Cut(cut) => (cut.1.erased_nulls as i64, cut.1.kept_all_null()),
        };
        // Records starting in the page that stay, and whether the page stays at all.
        let (kept_here, page_kept) = match &plan {
            Plan::Copy => (rows_in[k] as i64, true),
            Plan::Cut(cut) => (
                cut.1.kept_records as i64,
                cut.1.erased_levels < d.num_values as usize,
            ),
        };
        if let Some((ci, b)) = bounds_index.as_mut().filter(|_| page_kept) {
            let Some(entry) = IndexEntry::of(ci, k) else {
                return Ok(None);
            };
            let null_page = entry.null_page || now_null;
            let (min, max) = if null_page {
                (Vec::new(), Vec::new())
            } else {
                (entry.min, entry.max)
            };
            b.append(null_page, min, max, entry.null_count - entry_nulls);
        }
        match plan {
            Plan::Copy => {
                out.write_all(&chunk[p.start..p.end])?;
                num_values += i64::from(d.num_values);
                uncompressed += (p.header.header_len + p.header.uncompressed) as i64;
                pages_copied += 1;
            }
            Plan::Cut(cut) => {
                let (page, cut) = *cut;
                pages_rewritten += 1;
                let kept_levels = d.num_values as usize - cut.erased_levels;
                if kept_levels == 0 {
                    continue; // every row of the page is erased: the page goes
                }
                let compressed =
                    cut.build(&page, d, kept_levels, (max_rep, max_def), codec.as_mut())?;
                num_values += kept_levels as i64;
                uncompressed += SerializedPageWriter::new(&mut out)
                    .write_page(compressed)?
                    .uncompressed_size as i64;
            }
        }
        *encoding_counts.entry((page_type, d.encoding)).or_default() += 1;
        if page_kept {
            locations.push(PageLocation {
                offset: page_start as i64,
                compressed_page_size: (out.bytes_written() - page_start) as i32,
                first_row_index: kept_rows,
            });
        }
        kept_rows += kept_here;
    }
    let offset_index = index.map(|_| OffsetIndexMetaData {
        page_locations: locations,
        unencoded_byte_array_data_bytes: None,
    });
    let column_index = bounds_index.map(|(_, b)| b.build()).transpose()?;
    let bytes = Bytes::from(out.into_inner().map_err(|e| general(e.to_string()))?);

    let mut builder = column
        .clone()
        .into_builder()
        .set_num_values(num_values)
        .set_total_compressed_size(bytes.len() as i64)
        .set_total_uncompressed_size(uncompressed)
        .set_data_page_offset(data_page_offset)
        .set_dictionary_page_offset(dict.as_ref().map(|_| 0))
        .set_index_page_offset(None)
        .set_unencoded_byte_array_data_bytes(None)
        .set_repetition_level_histogram(None)
        .set_definition_level_histogram(None)
        .set_bloom_filter_offset(None)
        .set_bloom_filter_length(None)
        .set_offset_index_offset(None)
        .set_offset_index_length(None)
        .set_column_index_offset(None)
        .set_column_index_length(None);
    if let Some(stats) = stats {
        builder = builder.set_statistics(without_erased(stats, erased_nulls));
    }
    if column.page_encoding_stats().is_some() {
        let mut counts = Vec::new();
        for ((page_type, enc), count) in encoding_counts {
            let page_type = match page_type {
                PAGE_DATA => PageType::DATA_PAGE,
                PAGE_DATA_V2 => PageType::DATA_PAGE_V2,
                _ => PageType::DICTIONARY_PAGE,
            };
            let Some(encoding) = encoding(enc) else {
                return Ok(None);
            };
            counts.push(PageEncodingStats {
                page_type,
                encoding,
                count,
            });
        }
        builder = builder.set_page_encoding_stats(counts);
    }
    let metadata = builder.build()?;
    Ok(Some(Spliced {
        close: ColumnCloseResult {
            bytes_written: bytes.len() as u64,
            rows_written: num_rows - erased.len() as u64,
            metadata,
            bloom_filter: new_bloom,
            column_index,
            offset_index,
        },
        bytes,
        pages_copied,
        pages_rewritten,
    }))
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

/// The dictionary page: its PLAIN bytes and where each entry's value is in them.
struct Dictionary {
    bytes: Bytes,
    entries: Vec<Range<usize>>,
}

impl Dictionary {
    fn decode(
        chunk: &Bytes,
        p: &RawPage,
        width: Option<usize>,
        codec: Option<&mut Box<dyn Codec>>,
    ) -> Result<Dictionary> {
        let Some(h) = &p.header.dict else {
            return Err(general("not a dictionary page"));
        };
        let body = &chunk[p.body..p.end];
        let bytes = match codec {
            Some(codec) => decompress(codec, body, p.header.uncompressed)?,
            None => chunk.slice(p.body..p.end),
        };
        let mut entries = Vec::with_capacity(h.num_values as usize);
        let mut cursor = 0usize;
        for _ in 0..h.num_values {
            let r = plain_value(&bytes, cursor, width)?;
            cursor = r.end;
            entries.push(r.start + if width.is_none() { 4 } else { 0 }..r.end);
        }
        Ok(Dictionary { bytes, entries })
    }

    fn entry(&self, i: u32) -> &[u8] {
        self.entries
            .get(i as usize)
            .map_or(&[][..], |r| &self.bytes[r.clone()])
    }

    /// The dictionary page without the entries in `scrub` (ascending), the others in their
    /// order; `None` if no entry would remain.
    fn without(
        &self,
        scrub: &[usize],
        width: Option<usize>,
        h: &DictHeader,
        codec: Option<&mut Box<dyn Codec>>,
    ) -> Result<Option<CompressedPage>> {
        let kept = self.entries.len() - scrub.len();
        if kept == 0 {
            return Ok(None);
        }
        let mut raw = Vec::with_capacity(self.bytes.len());
        let mut dropped = scrub.iter().peekable();
        for (i, range) in self.entries.iter().enumerate() {
            if dropped.next_if_eq(&&i).is_some() {
                continue;
            }
            let value = &self.bytes[range.clone()];
            if width.is_none() {
                raw.extend_from_slice(&(value.len() as u32).to_le_bytes());
            }
            raw.extend_from_slice(value);
        }
        let uncompressed = raw.len();
        let buf = compress(codec, raw)?;
        let Some(encoding) = encoding(h.encoding) else {
            return Ok(None);
        };
        let page = Page::DictionaryPage {
            buf: Bytes::from(buf),
            num_values: kept as u32,
            encoding,
            is_sorted: h.is_sorted,
        };
        Ok(Some(CompressedPage::new(page, uncompressed)))
    }
}

/// The data pages of a column chunk, and what decoding them needs.
struct ChunkPages<'a> {
    chunk: &'a Bytes,
    pages: &'a [RawPage],
    levels: (i16, i16),
    width: Option<usize>,
    /// The dictionary's size.
    entries: usize,
}

/// Maps each dictionary index to its index once the entries in `scrub` (ascending) are
/// dropped; dropped entries map to `u32::MAX` (no kept row uses them).
fn index_map(entries: usize, scrub: &[usize]) -> Vec<u32> {
    let mut map = Vec::with_capacity(entries);
    let mut dropped = scrub.iter().peekable();
    let mut next = 0u32;
    for i in 0..entries {
        if dropped.next_if_eq(&&i).is_some() {
            map.push(u32::MAX);
        } else {
            map.push(next);
            next += 1;
        }
    }
    map
}

/// Renumbers the dictionary indices of the chunk's data pages for a dictionary without the
/// entries in `scrub` (ascending; kept rows use none of them). Entries keep their order, so a
/// page whose indices all come before the first dropped entry is still copied; any other
/// dictionary-encoded page that was to be copied is re-encoded with its indices renumbered
/// (`decoded` holds pages already decoded). Returns `false` if a page cannot be renumbered
/// (the chunk then goes to the whole re-encode).
fn renumber(
    c: &ChunkPages<'_>,
    scrub: &[usize],
    plans: &mut [Plan],
    decoded: Vec<(usize, Decoded)>,
    mut codec: Option<&mut Box<dyn Codec>>,
) -> Result<bool> {
    let map = index_map(c.entries, scrub);
    let first = scrub[0] as u32;
    let mut decoded: BTreeMap<usize, Decoded> = decoded.into_iter().collect();
    for (k, (p, plan)) in c.pages.iter().zip(plans.iter_mut()).enumerate() {
        let Some(d) = &p.header.data else {
            return Ok(false);
        };
        if d.encoding == ENCODING_PLAIN {
            continue;
        }
        if let Plan::Copy = plan {
            let page = match decoded.remove(&k) {
                Some(page) => page,
                None => match decode(c.chunk, p, c.levels, codec.as_deref_mut())? {
                    Some(page) => page,
                    None => return Ok(false),
                },
            };
            let Values::Dict { indices, .. } = &page.values else {
                return Ok(false);
            };
            if indices.iter().all(|i| *i < first) {
                continue;
            }
            // The whole page is kept: a cut that erases nothing.
            let mut records = Records {
                erased: &[],
                next: 0,
                current: Some(0),
            };
            let mut rows = if c.levels.0 > 0 {
                Rows::Nested(&mut records)
            } else {
                Rows::Flat {
                    here: Vec::new(),
                    next: 0,
                }
            };
            let n = d.num_values as usize;
            let cut = Cut::new(&page, &mut rows, n, c.width, c.levels.1, false, c.entries)?;
            *plan = Plan::Cut(Box::new((page, cut)));
        }
        if let Plan::Cut(cut) = plan {
            for i in cut.1.kept_indices.iter_mut() {
                let new = map[*i as usize];
                if new == u32::MAX {
                    return Err(general(format!(
                        "dictionary entry {i} is used by a kept row but was to be dropped"
                    )));
                }
                *i = new;
            }
        }
    }
    Ok(true)
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

/// A decompressed data page's values: PLAIN bytes, or dictionary indices.
enum Values {
    Plain(Bytes),
    Dict { bit_width: u8, indices: Vec<u32> },
}

/// A decompressed data page: its definition levels (none for a required column) and values.
struct Decoded {
    /// Repetition levels (none for a flat column).
    reps: Option<Vec<i16>>,
    defs: Option<Vec<i16>>,
    values: Values,
}

/// Decompresses and splits data page `p` of `chunk`; `None` for what surgery does not handle.
fn decode(
    chunk: &Bytes,
    p: &RawPage,
    (max_rep, max_def): (i16, i16),
    codec: Option<&mut Box<dyn Codec>>,
) -> Result<Option<Decoded>> {
    let (header, body) = (&p.header, &chunk.slice(p.body..p.end));
    let Some(d) = &header.data else {
        return Ok(None);
    };
    let n = d.num_values as usize;
    let (reps, defs, values) = if d.v2 {
        let levels_end = d.rep_len + d.def_len;
        if levels_end > body.len() || (max_rep == 0 && d.rep_len != 0) {
            return Err(general("data page v2 levels do not fit the page"));
        }
        let reps = (max_rep > 0)
            .then(|| levels(body.slice(..d.rep_len), max_rep, n))
            .transpose()?;
        let defs = (max_def > 0)
            .then(|| levels(body.slice(d.rep_len..levels_end), max_def, n))
            .transpose()?;
        let values = match codec {
            Some(codec) if d.is_compressed => decompress(
                codec,
                &body[levels_end..],
                header.uncompressed.saturating_sub(levels_end),
            )?,
            _ => body.slice(levels_end..),
        };
        (reps, defs, values)
    } else {
        let mut raw = match codec {
            Some(codec) => decompress(codec, body, header.uncompressed)?,
            None => body.clone(),
        };
        // v1: each level section is its byte length (u32, little-endian), then the levels.
        let mut section = |max: i16| -> Result<Option<Vec<i16>>> {
            if max == 0 {
                return Ok(None);
            }
            let len = raw
                .get(..4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .filter(|len| 4 + len <= raw.len())
                .ok_or_else(|| general("levels do not fit the page"))?;
            let decoded = levels(raw.slice(4..4 + len), max, n)?;
            raw = raw.slice(4 + len..);
            Ok(Some(decoded))
        };
        let reps = section(max_rep)?;
        let defs = section(max_def)?;
        (reps, defs, raw)
    };
    if d.encoding == ENCODING_PLAIN {
        return Ok(Some(Decoded {
            reps,
            defs,
            values: Values::Plain(values),
        }));
    }
    let present = defs
        .as_ref()
        .map_or(n, |d| d.iter().filter(|l| **l == max_def).count());
    let bit_width = values.first().copied().unwrap_or(0);
    if bit_width == 0 || bit_width > 32 {
        return Ok(None);
    }
    let mut decoder = RleDecoder::new(bit_width);
    decoder.set_data(values.slice(1..))?;
    let mut indices = vec![0u32; present];
    let got = decoder.get_batch(&mut indices)?;
    if got != present {
        return Err(general(format!(
            "page has {got} dictionary indices, expected {present}"
        )));
    }
    Ok(Some(Decoded {
        reps,
        defs,
        values: Values::Dict { bit_width, indices },
    }))
}

fn decompress(codec: &mut Box<dyn Codec>, input: &[u8], size: usize) -> Result<Bytes> {
    let mut out = Vec::with_capacity(size);
    codec.decompress(input, &mut out, Some(size))?;
    if out.len() != size {
        return Err(general(format!(
            "page decompressed to {} bytes, its header says {size}",
            out.len()
        )));
    }
    Ok(Bytes::from(out))
}

fn levels(data: Bytes, max_level: i16, n: usize) -> Result<Vec<i16>> {
    let mut decoder = RleDecoder::new(bit_width(max_level));
    decoder.set_data(data)?;
    let mut out = vec![0i16; n];
    let got = decoder.get_batch(&mut out)?;
    if got != n || out.iter().any(|l| *l < 0 || *l > max_level) {
        return Err(general(format!(
            "page has {got} valid levels (at most {max_level}), expected {n}"
        )));
    }
    Ok(out)
}

/// Which records the levels of a page belong to, and which are erased.
enum Rows<'r, 'e> {
    /// A flat column: level `i` is the page's record `i`; `here` are the page's erased records.
    Flat { here: Vec<usize>, next: usize },
    /// A nested column: records run across pages.
    Nested(&'r mut Records<'e>),
}

/// The record walk of a nested column chunk: the current record and the next erased one.
struct Records<'a> {
    erased: &'a [u32],
    next: usize,
    current: Option<u64>,
}

impl Rows<'_, '_> {
    /// For level `i` (repetition level `rep`): whether its record is erased, and whether the
    /// level starts a record.
    fn level(&mut self, i: usize, rep: i16) -> Result<(bool, bool)> {
        match self {
            Rows::Flat { here, next } => {
                let erased = *next < here.len() && here[*next] == i;
                if erased {
                    *next += 1;
                }
                Ok((erased, true))
            }
            Rows::Nested(r) => {
                let starts = rep == 0;
                let current = match (starts, r.current) {
                    (true, c) => c.map_or(0, |c| c + 1),
                    (false, Some(c)) => c,
                    (false, None) => {
                        return Err(general("the column chunk starts inside a record"));
                    }
                };
                r.current = Some(current);
                while r.next < r.erased.len() && u64::from(r.erased[r.next]) < current {
                    r.next += 1;
                }
                let erased = r.next < r.erased.len() && u64::from(r.erased[r.next]) == current;
                Ok((erased, starts))
            }
        }
    }

    /// After the page: whether every erased record the page was given was found.
    fn finished(&self) -> bool {
        match self {
            Rows::Flat { here, next } => *next == here.len(),
            Rows::Nested(_) => true,
        }
    }
}

fn bit_width(max_level: i16) -> u8 {
    (16 - (max_level as u16).leading_zeros()) as u8
}

/// One page's rows split into kept and erased, over its levels and values.
#[derive(Default)]
struct Cut {
    /// Levels erased (for a flat column, rows).
    erased_levels: usize,
    /// Records starting in the page, and those of them kept.
    records_started: u64,
    kept_records: u64,
    /// PLAIN: the bytes of the values of erased rows, without length prefixes.
    erased_values: Vec<Range<usize>>,
    /// Dictionary: the indices of erased rows.
    erased_indices: Vec<u32>,
    /// Erased rows that were null.
    erased_nulls: u64,
    /// PLAIN: the byte ranges of kept values as stored (length prefixes included), runs merged.
    kept: Vec<Range<usize>>,
    /// PLAIN: every kept value's bytes, without length prefixes (only when asked for).
    each_kept: Vec<Range<usize>>,
    /// Dictionary: the indices of kept rows.
    kept_indices: Vec<u32>,
    /// Repetition and definition levels of kept rows (none for a flat, or required, column).
    kept_reps: Option<Vec<i16>>,
    kept_defs: Option<Vec<i16>>,
    /// Kept levels that are null.
    kept_nulls: u32,
}

impl Cut {
    /// Whether every kept level is null (never, for a required column).
    fn kept_all_null(&self) -> bool {
        self.kept_defs
            .as_ref()
            .is_some_and(|d| d.len() == self.kept_nulls as usize)
    }

    /// Walks the page's `n` levels and values once; `rows` says which levels belong to
    /// erased records. `each`: also list every kept PLAIN value (for a bloom filter).
    /// `entries`: the dictionary's size, to check indices against.
    fn new(
        page: &Decoded,
        rows: &mut Rows<'_, '_>,
        n: usize,
        width: Option<usize>,
        max_def: i16,
        each: bool,
        entries: usize,
    ) -> Result<Cut> {
        let mut cut = Cut {
            kept_reps: page.reps.as_ref().map(|_| Vec::with_capacity(n)),
            kept_defs: page.defs.as_ref().map(|_| Vec::with_capacity(n)),
            ..Cut::default()
        };
        if page.defs.as_ref().is_some_and(|d| d.len() != n)
            || page.reps.as_ref().is_some_and(|r| r.len() != n)
        {
            return Err(general("levels do not match the page"));
        }
        let prefix = if width.is_none() { 4 } else { 0 };
        let (mut cursor, mut run_start, mut value) = (0usize, 0usize, 0usize);
        for i in 0..n {
            let def = page.defs.as_ref().map_or(max_def, |d| d[i]);
            let rep = page.reps.as_ref().map_or(0, |r| r[i]);
            let (erased, starts) = rows.level(i, rep)?;
            cut.records_started += u64::from(starts);
            if erased {
                cut.erased_levels += 1;
            } else {
                cut.kept_records += u64::from(starts);
                if let Some(defs) = cut.kept_defs.as_mut() {
                    defs.push(def);
                }
                if let Some(reps) = cut.kept_reps.as_mut() {
                    reps.push(rep);
                }
            }
            if def != max_def {
                if erased {
                    cut.erased_nulls += 1;
                } else {
                    cut.kept_nulls += 1;
                }
                continue;
            }
            match &page.values {
                Values::Plain(values) => {
                    let r = plain_value(values, cursor, width)?;
                    cursor = r.end;
                    if erased {
                        if run_start < r.start {
                            cut.kept.push(run_start..r.start);
                        }
                        run_start = r.end;
                        cut.erased_values.push(r.start + prefix..r.end);
                    } else if each {
                        cut.each_kept.push(r.start + prefix..r.end);
                    }
                }
                Values::Dict { indices, .. } => {
                    let index = *indices
                        .get(value)
                        .ok_or_else(|| general("too few dictionary indices"))?;
                    value += 1;
                    if index as usize >= entries {
                        return Err(bad_index(index, entries));
                    }
                    if erased {
                        cut.erased_indices.push(index);
                    } else {
                        cut.kept_indices.push(index);
                    }
                }
            }
        }
        if !rows.finished() {
            return Err(general("erased row past the end of its page"));
        }
        if run_start < cursor {
            cut.kept.push(run_start..cursor);
        }
        Ok(cut)
    }

    /// The page without its erased rows, compressed again, ready for a page writer.
    fn build(
        &self,
        page: &Decoded,
        d: &DataHeader,
        kept_levels: usize,
        (max_rep, max_def): (i16, i16),
        codec: Option<&mut Box<dyn Codec>>,
    ) -> Result<CompressedPage> {
        let encode = |kept: &Option<Vec<i16>>, max: i16| {
            kept.as_ref()
                .map(|levels| {
                    let mut encoder = if d.v2 {
                        LevelEncoder::v2_streaming(max)
                    } else {
                        LevelEncoder::v1_streaming(max)
                    };
                    encoder.put_with_observer(levels, |_, _| {});
                    encoder.consume()
                })
                .unwrap_or_default()
        };
        // Repetition levels first, then definition levels (both pages versions).
        let rep_levels = encode(&self.kept_reps, max_rep);
        let mut levels = rep_levels.clone();
        levels.extend_from_slice(&encode(&self.kept_defs, max_def));
        // v1: one buffer, levels then values; v2: values alone (compressed apart).
        let value_bytes: usize = self.kept.iter().map(|r| r.len()).sum();
        let mut values = if d.v2 {
            Vec::with_capacity(value_bytes + 1)
        } else {
            let mut v = Vec::with_capacity(levels.len() + value_bytes + 1);
            v.extend_from_slice(&levels);
            v
        };
        match &page.values {
            Values::Plain(bytes) => {
                for r in &self.kept {
                    values.extend_from_slice(&bytes[r.clone()]);
                }
            }
            Values::Dict { bit_width, .. } => {
                let mut encoder = RleEncoder::new(*bit_width, self.kept_indices.len() + 16);
                for i in &self.kept_indices {
                    encoder.put(u64::from(*i));
                }
                values.push(*bit_width);
                values.extend_from_slice(&encoder.consume());
            }
        }
        let Some(encoding) = encoding(d.encoding) else {
            return Err(general("unsupported page encoding"));
        };
        let num_values = kept_levels as u32;
        if d.v2 {
            let uncompressed = levels.len() + values.len();
            let mut buf = Vec::with_capacity(compress_bound(uncompressed));
            buf.extend_from_slice(&levels);
            match codec {
                Some(codec) if d.is_compressed => codec.compress(&values, &mut buf)?,
                _ => buf.extend_from_slice(&values),
            }
            let page = Page::DataPageV2 {
                buf: Bytes::from(buf),
                num_values,
                encoding,
                num_nulls: self.kept_nulls,
                num_rows: self.kept_records as u32,
                def_levels_byte_len: (levels.len() - rep_levels.len()) as u32,
                rep_levels_byte_len: rep_levels.len() as u32,
                is_compressed: d.is_compressed,
                statistics: None,
            };
            return Ok(CompressedPage::new(page, uncompressed));
        }
        let uncompressed = values.len();
        let page = Page::DataPage {
            buf: Bytes::from(compress(codec, values)?),
            num_values,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        Ok(CompressedPage::new(page, uncompressed))
    }
}

/// Whether the bounds an erased value could have produced (`erased_hits`, min and max) are each
/// still held by a kept value equal to them: more values equal to the bound in all than among
/// the erased. A kept value equal to a bound makes it exactly the kept values' bound, whether
/// or not it was truncated, so it reveals nothing of the erased rows.
fn kept_hold(erased_hits: (u64, u64), erased_equal: (u64, u64), all_equal: (u64, u64)) -> bool {
    let held = |hits: u64, erased: u64, all: u64| hits == 0 || all > erased;
    held(erased_hits.0, erased_equal.0, all_equal.0)
        && held(erased_hits.1, erased_equal.1, all_equal.1)
}

/// How many of a cut page's erased values match the min and the max, by `test`.
fn erased_counts(
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
fn page_hits(
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

fn truncated() -> ParquetError {
    general("PLAIN values do not fit the page")
}

/// A min/max pair (PLAIN bytes, byte arrays without length prefix), from chunk statistics or
/// a page's column index entry; `exact` false when the bound may be truncated.
struct Bounds<'a> {
    min: Option<&'a [u8]>,
    max: Option<&'a [u8]>,
    min_exact: bool,
    max_exact: bool,
}

impl<'a> Bounds<'a> {
    fn of(stats: &'a Statistics) -> Bounds<'a> {
        Bounds {
            min: stats.min_bytes_opt(),
            max: stats.max_bytes_opt(),
            min_exact: stats.min_is_exact(),
            max_exact: stats.max_is_exact(),
        }
    }

    /// Whether `value` is equal to the min, and to the max (floats by value: -0.0 == +0.0).
    fn equals(&self, value: &[u8], ty: PhysicalType) -> (bool, bool) {
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
    fn hits(&self, value: &[u8], ty: PhysicalType) -> (bool, bool) {
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
fn float(b: &[u8]) -> Option<f64> {
    match b.len() {
        4 => Some(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        8 => Some(f64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ])),
        _ => None,
    }
}

/// One page's entry in a column index, bounds as PLAIN bytes.
struct IndexEntry {
    null_page: bool,
    min: Vec<u8>,
    max: Vec<u8>,
    null_count: i64,
}

impl IndexEntry {
    fn of(ci: &ColumnIndexMetaData, k: usize) -> Option<IndexEntry> {
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
fn without_erased(stats: &Statistics, erased_nulls: u64) -> Statistics {
    let deprecated = stats.is_min_max_deprecated();
    fn adjust<T: Clone>(
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

/// The fields of a Parquet page header that page surgery needs, read from its Thrift compact
/// encoding (parquet keeps its own reader private).
struct PageHeader {
    header_len: usize,
    uncompressed: usize,
    compressed: usize,
    /// For data pages (v1 and v2).
    data: Option<DataHeader>,
    /// For the dictionary page.
    dict: Option<DictHeader>,
}

struct DictHeader {
    num_values: u32,
    encoding: i32,
    is_sorted: bool,
}

struct DataHeader {
    v2: bool,
    num_values: u32,
    encoding: i32,
    /// v1: the definition and repetition level encodings.
    def_encoding: i32,
    rep_encoding: i32,
    /// v2: rows, level byte lengths and whether the values are compressed.
    num_rows: u32,
    def_len: usize,
    rep_len: usize,
    is_compressed: bool,
}

impl PageHeader {
    fn parse(buf: &[u8]) -> Result<PageHeader> {
        let mut t = Thrift {
            buf,
            pos: 0,
            depth: 0,
        };
        let (mut kind, mut uncompressed, mut compressed) = (-1i32, -1i64, -1i64);
        let (mut data, mut dict) = (None, None);
        t.read_struct(&mut |t, id, ty| {
            match (id, ty) {
                (1, T_I32) => kind = t.i32()?,
                (2, T_I32) => uncompressed = i64::from(t.i32()?),
                (3, T_I32) => compressed = i64::from(t.i32()?),
                (5, T_STRUCT) | (8, T_STRUCT) => {
                    let v2 = id == 8;
                    let mut d = DataHeader {
                        v2,
                        num_values: 0,
                        encoding: -1,
                        def_encoding: -1,
                        rep_encoding: -1,
                        num_rows: 0,
                        def_len: 0,
                        rep_len: 0,
                        is_compressed: true,
                    };
                    t.read_struct(&mut |t, id, ty| {
                        match (v2, id, ty) {
                            (_, 1, T_I32) => d.num_values = non_negative(t.i32()?)? as u32,
                            (false, 2, T_I32) | (true, 4, T_I32) => d.encoding = t.i32()?,
                            (false, 3, T_I32) => d.def_encoding = t.i32()?,
                            (false, 4, T_I32) => d.rep_encoding = t.i32()?,
                            (true, 3, T_I32) => d.num_rows = non_negative(t.i32()?)? as u32,
                            (true, 5, T_I32) => d.def_len = non_negative(t.i32()?)?,
                            (true, 6, T_I32) => d.rep_len = non_negative(t.i32()?)?,
                            (true, 7, T_TRUE) => d.is_compressed = true,
                            (true, 7, T_FALSE) => d.is_compressed = false,
                            _ => t.skip(ty)?,
                        }
                        Ok(())
                    })?;
                    data = Some(d);
                }
                (7, T_STRUCT) => {
                    let mut d = DictHeader {
                        num_values: 0,
                        encoding: -1,
                        is_sorted: false,
                    };
                    t.read_struct(&mut |t, id, ty| {
                        match (id, ty) {
                            (1, T_I32) => d.num_values = non_negative(t.i32()?)? as u32,
                            (2, T_I32) => d.encoding = t.i32()?,
                            (3, T_TRUE) => d.is_sorted = true,
                            (3, T_FALSE) => d.is_sorted = false,
                            _ => t.skip(ty)?,
                        }
                        Ok(())
                    })?;
                    dict = Some(d);
                }
                _ => t.skip(ty)?,
            }
            Ok(())
        })?;
        let is_data = kind == PAGE_DATA || kind == PAGE_DATA_V2;
        let is_dict = kind == PAGE_DICTIONARY;
        if uncompressed < 0
            || compressed < 0
            || is_data != data.is_some()
            || is_dict != dict.is_some()
        {
            return Err(ParquetError::General("invalid page header".into()));
        }
        Ok(PageHeader {
            header_len: t.pos,
            uncompressed: uncompressed as usize,
            compressed: compressed as usize,
            data,
            dict,
        })
    }
}

fn non_negative(v: i32) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| ParquetError::General(format!("negative count {v} in a page header")))
}

const T_TRUE: u8 = 1;
const T_FALSE: u8 = 2;
const T_I32: u8 = 5;
const T_STRUCT: u8 = 12;

/// A reader of the Thrift compact protocol, enough to walk a page header and skip the rest.
struct Thrift<'a> {
    buf: &'a [u8],
    pos: usize,
    depth: usize,
}

type FieldFn<'f, 'a> = dyn FnMut(&mut Thrift<'a>, i16, u8) -> Result<()> + 'f;

impl<'a> Thrift<'a> {
    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| ParquetError::General("page header ends early".into()))?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ParquetError::General(
            "overlong varint in a page header".into(),
        ))
    }

    fn i64(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i32(&mut self) -> Result<i32> {
        i32::try_from(self.i64()?)
            .map_err(|_| ParquetError::General("i32 out of range in a page header".into()))
    }

    fn advance(&mut self, n: u64) -> Result<()> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| ParquetError::General("page header ends early".into()))?;
        self.pos = end;
        Ok(())
    }

    /// Reads a struct, handing each field (id, compact type) to `field`, which must consume it.
    fn read_struct(&mut self, field: &mut FieldFn<'_, 'a>) -> Result<()> {
        self.depth += 1;
        if self.depth > 32 {
            return Err(ParquetError::General(
                "page header nested too deeply".into(),
            ));
        }
        let mut last = 0i16;
        loop {
            let b = self.byte()?;
            if b == 0 {
                break;
            }
            let ty = b & 0x0f;
            let delta = (b >> 4) as i16;
            let id = if delta == 0 {
                i16::try_from(self.i64()?)
                    .map_err(|_| ParquetError::General("bad field id in a page header".into()))?
            } else {
                last.wrapping_add(delta)
            };
            last = id;
            field(self, id, ty)?;
        }
        self.depth -= 1;
        Ok(())
    }

    fn skip(&mut self, ty: u8) -> Result<()> {
        match ty {
            1 | 2 => Ok(()),
            3 => self.advance(1),
            4..=6 => self.varint().map(|_| ()),
            7 => self.advance(8),
            8 => {
                let n = self.varint()?;
                self.advance(n)
            }
            9 | 10 => {
                let h = self.byte()?;
                let n = match h >> 4 {
                    15 => self.varint()?,
                    n => u64::from(n),
                };
                self.skip_elements(n, h & 0x0f)
            }
            11 => {
                let n = self.varint()?;
                if n == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                for _ in 0..n {
                    self.skip_element(kv >> 4)?;
                    self.skip_element(kv & 0x0f)?;
                }
                Ok(())
            }
            12 => self.read_struct(&mut |t, _, ty| t.skip(ty)),
            13 => self.advance(16),
            _ => Err(ParquetError::General(format!(
                "unknown Thrift type {ty} in a page header"
            ))),
        }
    }

    fn skip_elements(&mut self, n: u64, ty: u8) -> Result<()> {
        if n > self.buf.len() as u64 {
            return Err(ParquetError::General("page header ends early".into()));
        }
        for _ in 0..n {
            self.skip_element(ty)?;
        }
        Ok(())
    }

    /// Collection elements: booleans take a byte there.
    fn skip_element(&mut self, ty: u8) -> Result<()> {
        if ty == 1 || ty == 2 {
            self.advance(1)
        } else {
            self.skip(ty)
        }
    }
}
