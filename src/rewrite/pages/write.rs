//! Pass 2 of the surgery: writes the chunk (the dictionary page without its scrubbed entries,
//! the data pages copied or cut) and its metadata (page locations, column index, encodings).

use super::*;

/// The chunk written by pass 2, with what its metadata needs.
pub(super) struct Written {
    pub(super) bytes: Bytes,
    pub(super) num_values: i64,
    pub(super) uncompressed: i64,
    pub(super) data_page_offset: i64,
    pub(super) encoding_counts: BTreeMap<(i32, i32), i32>,
    pub(super) locations: Vec<PageLocation>,
    pub(super) column_index: Option<ColumnIndexMetaData>,
    pub(super) pages_copied: usize,
    pub(super) pages_rewritten: usize,
}

/// Pass 2: writes the chunk, the dictionary page (without the `scrub` entries) and the data
/// pages as `plans` say, copied or cut; rebuilds the page index (page locations always, page
/// bounds when the original chunk has them with null counts).
pub(super) fn write_pages(
    c: &ChunkPages<'_>,
    dict_page: Option<&RawPage>,
    plans: Vec<Plan>,
    rows_in: &[u64],
    scrub: &[usize],
    mut codec: Option<&mut Box<dyn Codec>>,
) -> Result<Option<Written>> {
    let mut out = TrackedWrite::new(Vec::with_capacity(compress_bound(c.chunk.len())));
    let mut w = Written {
        bytes: Bytes::new(),
        num_values: 0,
        uncompressed: 0,
        data_page_offset: 0,
        encoding_counts: BTreeMap::new(),
        locations: Vec::new(),
        column_index: None,
        pages_copied: 0,
        pages_rewritten: 0,
    };
    if let Some(first) = dict_page
        && !write_dictionary_page(c, first, scrub, &mut out, &mut w, codec.as_deref_mut())?
    {
        return Ok(None);
    }
    let mut bounds_index = c
        .column_index
        .filter(|ci| (0..c.pages.len()).all(|k| ci.null_count(k).is_some()))
        .map(|ci| {
            let mut b = ColumnIndexBuilder::new(c.ty);
            b.set_boundary_order(ci.get_boundary_order().unwrap_or(BoundaryOrder::UNORDERED));
            (ci, b)
        });
    let mut kept_rows = 0i64;
    for (k, (p, plan)) in c.pages.iter().zip(plans).enumerate() {
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
            entry.append_to(b, now_null, entry_nulls);
        }
        if !write_data_page(c, p, d, plan, &mut out, &mut w, codec.as_deref_mut())? {
            continue; // every row of the page is erased: the page goes
        }
        *w.encoding_counts
            .entry((page_type, d.encoding))
            .or_default() += 1;
        if page_kept {
            w.locations.push(PageLocation {
                offset: page_start as i64,
                compressed_page_size: (out.bytes_written() - page_start) as i32,
                first_row_index: kept_rows,
            });
        }
        kept_rows += kept_here;
    }
    w.column_index = bounds_index.map(|(_, b)| b.build()).transpose()?;
    w.bytes = Bytes::from(out.into_inner().map_err(|e| general(e.to_string()))?);
    Ok(Some(w))
}

/// Writes data page `p` to `out` as `plan` says: copied, or cut and compressed again.
/// `false` when the cut left nothing of it (the page goes).
fn write_data_page(
    c: &ChunkPages<'_>,
    p: &RawPage,
    d: &DataHeader,
    plan: Plan,
    out: &mut TrackedWrite<Vec<u8>>,
    w: &mut Written,
    codec: Option<&mut Box<dyn Codec>>,
) -> Result<bool> {
    match plan {
        Plan::Copy => {
            out.write_all(&c.chunk[p.start..p.end])?;
            w.num_values += i64::from(d.num_values);
            w.uncompressed += (p.header.header_len + p.header.uncompressed) as i64;
            w.pages_copied += 1;
        }
        Plan::Cut(cut) => {
            let (page, cut) = *cut;
            w.pages_rewritten += 1;
            let kept_levels = d.num_values as usize - cut.erased_levels;
            if kept_levels == 0 {
                return Ok(false);
            }
            let compressed = cut.build(&page, d, kept_levels, c.levels, codec)?;
            w.num_values += kept_levels as i64;
            w.uncompressed += SerializedPageWriter::new(out)
                .write_page(compressed)?
                .uncompressed_size as i64;
        }
    }
    Ok(true)
}

/// Writes the dictionary page to `out`: copied, or without the `scrub` entries. `false` when
/// it cannot be written (no entry would remain).
fn write_dictionary_page(
    c: &ChunkPages<'_>,
    page: &RawPage,
    scrub: &[usize],
    out: &mut TrackedWrite<Vec<u8>>,
    w: &mut Written,
    codec: Option<&mut Box<dyn Codec>>,
) -> Result<bool> {
    let (Some(dict), Some(h)) = (c.dict, &page.header.dict) else {
        return Ok(false);
    };
    if scrub.is_empty() {
        out.write_all(&c.chunk[page.start..page.end])?;
        w.uncompressed += (page.header.header_len + page.header.uncompressed) as i64;
        w.pages_copied += 1;
    } else {
        let Some(new) = dict.without(scrub, c.width, h, codec)? else {
            return Ok(false);
        };
        w.uncompressed += SerializedPageWriter::new(out)
            .write_page(new)?
            .uncompressed_size as i64;
        w.pages_rewritten += 1;
    }
    *w.encoding_counts
        .entry((PAGE_DICTIONARY, h.encoding))
        .or_default() += 1;
    w.data_page_offset = out.bytes_written() as i64;
    Ok(true)
}

/// The new chunk's metadata: the original's, with sizes, offsets, counts, statistics (without
/// the erased nulls; the bounds were checked) and page encoding counts of the written chunk;
/// offsets of indexes and filters are set by the file writer.
pub(super) fn chunk_metadata(
    column: &ColumnChunkMetaData,
    w: &Written,
    erased_nulls: u64,
) -> Result<Option<ColumnChunkMetaData>> {
    let mut builder = column
        .clone()
        .into_builder()
        .set_num_values(w.num_values)
        .set_total_compressed_size(w.bytes.len() as i64)
        .set_total_uncompressed_size(w.uncompressed)
        .set_data_page_offset(w.data_page_offset)
        .set_dictionary_page_offset(column.dictionary_page_offset().map(|_| 0))
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
    if let Some(stats) = column.statistics() {
        builder = builder.set_statistics(without_erased(stats, erased_nulls));
    }
    if column.page_encoding_stats().is_some() {
        let mut counts = Vec::new();
        for ((page_type, enc), count) in &w.encoding_counts {
            let page_type = match *page_type {
                PAGE_DATA => PageType::DATA_PAGE,
                PAGE_DATA_V2 => PageType::DATA_PAGE_V2,
                _ => PageType::DICTIONARY_PAGE,
            };
            let Some(encoding) = encoding(*enc) else {
                return Ok(None);
            };
            counts.push(PageEncodingStats {
                page_type,
                encoding,
                count: *count,
            });
        }
        builder = builder.set_page_encoding_stats(counts);
    }
    Ok(Some(builder.build()?))
}
