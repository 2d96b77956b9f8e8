//! Page surgery: removes erased rows from one column chunk page by page.
//!
//! Pages without an erased row are copied as their original bytes (header, compressed body,
//! checksum and page statistics included). A page holding erased rows is decompressed, its
//! definition levels and PLAIN values are cut without decoding the values into objects, and
//! the rest is compressed again with the chunk's codec. A page left with no rows is dropped.
//!
//! This applies to flat columns (no repetition), PLAIN-encoded data pages v1 and v2, without a
//! dictionary page and in files without a page index. Anything else returns `None`, and the
//! caller re-encodes the chunk whole. Statistics: the chunk's min/max are kept when no erased
//! value could be one of them (or, for truncated byte-array bounds, a prefix of one); otherwise
//! the chunk is left to the whole re-encode, which recomputes them, so no erased value survives
//! in the file's statistics. The null count is adjusted and the distinct count dropped. A bloom
//! filter is rebuilt, at the original size, from every kept value.

use bytes::Bytes;
use parquet::basic::{Encoding, PageType, Type as PhysicalType};
use parquet::bloom_filter::Sbbf;
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::compression::{Codec, CodecOptionsBuilder, create_codec};
use parquet::encodings::levels::LevelEncoder;
use parquet::encodings::rle::RleDecoder;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ColumnChunkMetaData, PageEncodingStats};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use std::io::Write;
use std::ops::Range;

/// A column chunk rebuilt by page surgery, ready for `append_column`.
pub(super) struct Spliced {
    pub bytes: Bytes,
    pub close: ColumnCloseResult,
    pub pages_copied: usize,
    pub pages_rewritten: usize,
}

/// Rebuilds the chunk described by `column` (bytes in `file`) without the rows in `erased`
/// (row indices within the row group, ascending), or returns `None` when the chunk is not
/// eligible for page surgery. `bloom` is the chunk's bloom filter, if it has one.
pub(super) fn splice_chunk(
    file: &Bytes,
    column: &ColumnChunkMetaData,
    num_rows: u64,
    erased: &[u32],
    bloom: Option<&Sbbf>,
) -> Result<Option<Spliced>> {
    let descr = column.column_descr();
    let width = match descr.physical_type() {
        PhysicalType::BOOLEAN => return Ok(None),
        PhysicalType::INT32 | PhysicalType::FLOAT => Some(4),
        PhysicalType::INT64 | PhysicalType::DOUBLE => Some(8),
        PhysicalType::INT96 => Some(12),
        PhysicalType::FIXED_LEN_BYTE_ARRAY => Some(
            usize::try_from(descr.type_length())
                .ok()
                .filter(|w| *w > 0)
                .ok_or_else(|| {
                    ParquetError::General(format!(
                        "invalid FIXED_LEN_BYTE_ARRAY length {}",
                        descr.type_length()
                    ))
                })?,
        ),
        PhysicalType::BYTE_ARRAY => None,
    };
    if descr.max_rep_level() != 0 || column.dictionary_page_offset().is_some() {
        return Ok(None);
    }
    let max_def = descr.max_def_level();
    let (start, len) = column.byte_range();
    let end = start
        .checked_add(len)
        .filter(|end| *end <= file.len() as u64)
        .ok_or_else(|| {
            ParquetError::General("column chunk extends past the end of the file".into())
        })?;
    let chunk = file.slice(start as usize..end as usize);

    // First pass: the page headers. Any page that is not a PLAIN data page means no surgery.
    let mut pages = Vec::new();
    let mut pos = 0usize;
    while pos < chunk.len() {
        let header = PageHeader::parse(&chunk[pos..])?;
        let body = pos + header.header_len;
        let next = body
            .checked_add(header.compressed)
            .filter(|n| *n <= chunk.len())
            .ok_or_else(|| ParquetError::General("page extends past its column chunk".into()))?;
        match &header.data {
            Some(d)
                if d.encoding == ENCODING_PLAIN
                    && (max_def == 0 || d.v2 || d.def_encoding == ENCODING_RLE) => {}
            _ => return Ok(None),
        }
        pages.push((pos, body, next, header));
        pos = next;
    }

    let stats = column.statistics();
    let mut codec = create_codec(
        column.compression(),
        &CodecOptionsBuilder::default().build(),
    )?;
    let mut new_bloom = bloom.map(|b| Sbbf::new_with_num_of_bytes(b.num_blocks() * 32));
    let mut out = TrackedWrite::new(Vec::with_capacity(chunk.len()));
    let (mut num_values, mut uncompressed, mut erased_nulls) = (0i64, 0i64, 0u64);
    let (mut pages_copied, mut pages_rewritten, mut v1_pages, mut v2_pages) = (0, 0, 0, 0);
    let mut first_row = 0u64;
    let mut next_erased = 0usize;
    for (pos, body, next, header) in &pages {
        let Some(d) = &header.data else {
            return Ok(None);
        };
        let rows = u64::from(if d.v2 { d.num_rows } else { d.num_values });
        let lo = next_erased;
        while next_erased < erased.len() && u64::from(erased[next_erased]) < first_row + rows {
            next_erased += 1;
        }
        let here: Vec<usize> = erased[lo..next_erased]
            .iter()
            .map(|r| (u64::from(*r) - first_row) as usize)
            .collect();
        first_row += rows;
        let needs_values = !here.is_empty() || new_bloom.is_some();
        if !needs_values {
            out.write_all(&chunk[*pos..*next])?;
            num_values += i64::from(d.num_values);
            uncompressed += (header.header_len + header.uncompressed) as i64;
            pages_copied += 1;
            if d.v2 {
                v2_pages += 1
            } else {
                v1_pages += 1
            }
            continue;
        }
        let page = decode(
            &chunk.slice(*body..*next),
            header,
            d,
            max_def,
            codec.as_mut(),
        )?;
        let n = d.num_values as usize;
        let cut = Cut::new(&page, &here, n, width, max_def, new_bloom.is_some())?;
        if let Some(b) = new_bloom.as_mut() {
            for range in &cut.each_kept {
                b.insert(&page.values[range.clone()]);
            }
        }
        if here.is_empty() {
            out.write_all(&chunk[*pos..*next])?;
            num_values += i64::from(d.num_values);
            uncompressed += (header.header_len + header.uncompressed) as i64;
            pages_copied += 1;
            if d.v2 {
                v2_pages += 1
            } else {
                v1_pages += 1
            }
            continue;
        }
        if let Some(stats) = stats {
            let ty = descr.physical_type();
            if cut
                .erased_values
                .iter()
                .any(|r| may_reveal(stats, &page.values[r.clone()], ty))
            {
                return Ok(None);
            }
        }
        erased_nulls += cut.erased_nulls;
        pages_rewritten += 1;
        let kept_levels = n - here.len();
        if kept_levels == 0 {
            continue; // every row of the page is erased: the page goes
        }
        let compressed = cut.build(&page, d, kept_levels, max_def, codec.as_mut())?;
        num_values += kept_levels as i64;
        if d.v2 {
            v2_pages += 1
        } else {
            v1_pages += 1
        }
        let spec = SerializedPageWriter::new(&mut out).write_page(compressed)?;
        uncompressed += spec.uncompressed_size as i64;
    }
    if first_row != num_rows || next_erased != erased.len() {
        return Err(ParquetError::General(format!(
            "the pages of the column chunk hold {first_row} rows, the row group {num_rows}"
        )));
    }
    let bytes = Bytes::from(
        out.into_inner()
            .map_err(|e| ParquetError::General(e.to_string()))?,
    );

    let mut builder = column
        .clone()
        .into_builder()
        .set_num_values(num_values)
        .set_total_compressed_size(bytes.len() as i64)
        .set_total_uncompressed_size(uncompressed)
        .set_data_page_offset(0)
        .set_dictionary_page_offset(None)
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
        for (page_type, count) in [
            (PageType::DATA_PAGE, v1_pages),
            (PageType::DATA_PAGE_V2, v2_pages),
        ] {
            if count > 0 {
                counts.push(PageEncodingStats {
                    page_type,
                    encoding: Encoding::PLAIN,
                    count,
                });
            }
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
            column_index: None,
            offset_index: None,
        },
        bytes,
        pages_copied,
        pages_rewritten,
    }))
}

const ENCODING_PLAIN: i32 = 0;
const ENCODING_RLE: i32 = 3;

/// A decompressed data page: its definition levels (none for a required column) and its
/// PLAIN value bytes.
struct Decoded {
    defs: Option<Vec<i16>>,
    values: Bytes,
}

fn decode(
    body: &Bytes,
    header: &PageHeader,
    d: &DataHeader,
    max_def: i16,
    codec: Option<&mut Box<dyn Codec>>,
) -> Result<Decoded> {
    let n = d.num_values as usize;
    if d.v2 {
        let levels_end = d.rep_len + d.def_len;
        if levels_end > body.len() || d.rep_len != 0 {
            return Err(ParquetError::General(
                "data page v2 levels do not fit the page".into(),
            ));
        }
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
        return Ok(Decoded { defs, values });
    }
    let raw = match codec {
        Some(codec) => decompress(codec, body, header.uncompressed)?,
        None => body.clone(),
    };
    if max_def == 0 {
        return Ok(Decoded {
            defs: None,
            values: raw,
        });
    }
    let len = raw
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|len| 4 + len <= raw.len())
        .ok_or_else(|| ParquetError::General("definition levels do not fit the page".into()))?;
    let defs = levels(raw.slice(4..4 + len), max_def, n)?;
    Ok(Decoded {
        defs: Some(defs),
        values: raw.slice(4 + len..),
    })
}

fn decompress(codec: &mut Box<dyn Codec>, input: &[u8], size: usize) -> Result<Bytes> {
    let mut out = Vec::with_capacity(size);
    codec.decompress(input, &mut out, Some(size))?;
    if out.len() != size {
        return Err(ParquetError::General(format!(
            "page decompressed to {} bytes, its header says {size}",
            out.len()
        )));
    }
    Ok(Bytes::from(out))
}

fn levels(data: Bytes, max_def: i16, n: usize) -> Result<Vec<i16>> {
    let mut decoder = RleDecoder::new(bit_width(max_def));
    decoder.set_data(data)?;
    let mut out = vec![0i16; n];
    let got = decoder.get_batch(&mut out)?;
    if got != n {
        return Err(ParquetError::General(format!(
            "page has {got} definition levels, expected {n}"
        )));
    }
    Ok(out)
}

fn bit_width(max_level: i16) -> u8 {
    (16 - (max_level as u16).leading_zeros()) as u8
}

/// One page's rows split into kept and erased, over its levels and its value bytes.
struct Cut {
    /// The bytes of the values of erased rows (null rows have none), without length prefixes.
    erased_values: Vec<Range<usize>>,
    /// Erased rows that were null.
    erased_nulls: u64,
    /// The byte ranges of kept values as stored (length prefixes included), runs merged.
    kept: Vec<Range<usize>>,
    /// Every kept value's bytes, without length prefixes (only when asked for).
    each_kept: Vec<Range<usize>>,
    /// Definition levels of kept rows (none for a required column).
    kept_defs: Option<Vec<i16>>,
    /// Kept rows that are null.
    kept_nulls: u32,
}

impl Cut {
    /// Walks the page's `n` levels and values once. `here`: erased row indices within the
    /// page, ascending. `each`: also list every kept value (for a bloom filter).
    fn new(
        page: &Decoded,
        here: &[usize],
        n: usize,
        width: Option<usize>,
        max_def: i16,
        each: bool,
    ) -> Result<Cut> {
        let values = &page.values[..];
        let mut cut = Cut {
            erased_values: Vec::new(),
            erased_nulls: 0,
            kept: Vec::new(),
            each_kept: Vec::new(),
            kept_defs: page
                .defs
                .as_ref()
                .map(|_| Vec::with_capacity(n - here.len())),
            kept_nulls: 0,
        };
        if page.defs.as_ref().is_some_and(|d| d.len() != n) {
            return Err(ParquetError::General(
                "definition levels do not match the page".into(),
            ));
        }
        let prefix = if width.is_none() { 4 } else { 0 };
        let (mut cursor, mut run_start, mut next) = (0usize, 0usize, 0usize);
        for i in 0..n {
            let def = page.defs.as_ref().map_or(max_def, |d| d[i]);
            let range = if def == max_def {
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
                cursor = r.end;
                Some(r)
            } else {
                None
            };
            if next < here.len() && here[next] == i {
                next += 1;
                match range {
                    Some(r) => {
                        if run_start < r.start {
                            cut.kept.push(run_start..r.start);
                        }
                        run_start = r.end;
                        cut.erased_values.push(r.start + prefix..r.end);
                    }
                    None => cut.erased_nulls += 1,
                }
                continue;
            }
            if let Some(defs) = cut.kept_defs.as_mut() {
                defs.push(def);
            }
            match range {
                Some(r) if each => cut.each_kept.push(r.start + prefix..r.end),
                Some(_) => {}
                None => cut.kept_nulls += 1,
            }
        }
        if next != here.len() {
            return Err(ParquetError::General(
                "erased row past the end of its page".into(),
            ));
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
        max_def: i16,
        codec: Option<&mut Box<dyn Codec>>,
    ) -> Result<CompressedPage> {
        let value_bytes: usize = self.kept.iter().map(|r| r.len()).sum();
        let levels = self.kept_defs.as_ref().map(|defs| {
            let mut encoder = if d.v2 {
                LevelEncoder::v2_streaming(max_def)
            } else {
                LevelEncoder::v1_streaming(max_def)
            };
            encoder.put_with_observer(defs, |_, _| {});
            encoder.consume()
        });
        let levels = levels.unwrap_or_default();
        let mut raw = Vec::with_capacity(levels.len() + value_bytes);
        if !d.v2 {
            raw.extend_from_slice(&levels);
        }
        for r in &self.kept {
            raw.extend_from_slice(&page.values[r.clone()]);
        }
        let num_values = kept_levels as u32;
        if d.v2 {
            let mut buf = levels.clone();
            match codec {
                Some(codec) if d.is_compressed => codec.compress(&raw, &mut buf)?,
                _ => buf.extend_from_slice(&raw),
            }
            let page = Page::DataPageV2 {
                buf: Bytes::from(buf),
                num_values,
                encoding: Encoding::PLAIN,
                num_nulls: self.kept_nulls,
                num_rows: num_values,
                def_levels_byte_len: levels.len() as u32,
                rep_levels_byte_len: 0,
                is_compressed: d.is_compressed,
                statistics: None,
            };
            return Ok(CompressedPage::new(page, levels.len() + raw.len()));
        }
        let uncompressed = raw.len();
        let buf = match codec {
            Some(codec) => {
                let mut buf = Vec::with_capacity(uncompressed / 2);
                codec.compress(&raw, &mut buf)?;
                buf
            }
            None => raw,
        };
        let page = Page::DataPage {
            buf: Bytes::from(buf),
            num_values,
            encoding: Encoding::PLAIN,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        Ok(CompressedPage::new(page, uncompressed))
    }
}

fn truncated() -> ParquetError {
    ParquetError::General("PLAIN values do not fit the page".into())
}

/// Whether `value` (an erased value, as PLAIN bytes without length prefix) could be the
/// chunk's min or max, or the source of a truncated byte-array bound.
fn may_reveal(stats: &Statistics, value: &[u8], ty: PhysicalType) -> bool {
    let (min, max) = (stats.min_bytes_opt(), stats.max_bytes_opt());
    match ty {
        PhysicalType::FLOAT | PhysicalType::DOUBLE => {
            let as_f64 = |b: &[u8]| match b.len() {
                4 => Some(f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
                8 => Some(f64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ])),
                _ => None,
            };
            let v = as_f64(value);
            [min, max]
                .into_iter()
                .flatten()
                .any(|bound| match (as_f64(bound), v) {
                    (Some(bound), Some(v)) => bound == v,
                    _ => true,
                })
        }
        PhysicalType::BYTE_ARRAY | PhysicalType::FIXED_LEN_BYTE_ARRAY => {
            let min_hit = min.is_some_and(|m| {
                if stats.min_is_exact() {
                    value == m
                } else {
                    value.starts_with(m)
                }
            });
            // A truncated max has had its last characters incremented: compare what is left.
            let max_hit = max.is_some_and(|m| {
                if stats.max_is_exact() {
                    value == m
                } else {
                    value.starts_with(&m[..m.len().saturating_sub(4)])
                }
            });
            min_hit || max_hit
        }
        _ => min == Some(value) || max == Some(value),
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
    /// For data pages (v1 and v2); `None` for dictionary and index pages.
    data: Option<DataHeader>,
}

struct DataHeader {
    v2: bool,
    num_values: u32,
    encoding: i32,
    /// v1: the definition level encoding.
    def_encoding: i32,
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
        let mut data = None;
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
                _ => t.skip(ty)?,
            }
            Ok(())
        })?;
        let is_data = kind == 0 || kind == 3;
        if uncompressed < 0 || compressed < 0 || is_data != data.is_some() {
            return Err(ParquetError::General("invalid page header".into()));
        }
        Ok(PageHeader {
            header_len: t.pos,
            uncompressed: uncompressed as usize,
            compressed: compressed as usize,
            data,
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
