//! One page's levels and values split into kept and erased records, and the page rebuilt
//! from what is kept.

use bytes::Bytes;
use parquet::basic::Encoding;
use parquet::column::page::{CompressedPage, Page};
use parquet::compression::Codec;
use parquet::encodings::levels::LevelEncoder;
use parquet::encodings::rle::RleEncoder;
use parquet::errors::Result;

use std::ops::Range;

use super::*;

/// Which records the levels of a page belong to, and which are erased.
pub(super) enum Rows<'r, 'e> {
    /// A flat column: level `i` is the page's record `i`; `here` are the page's erased records.
    Flat { here: Vec<usize>, next: usize },
    /// A nested column: records run across pages.
    Nested(&'r mut Records<'e>),
}

/// The record walk of a nested column chunk: the current record and the next erased one.
pub(super) struct Records<'a> {
    pub(super) erased: &'a [u32],
    pub(super) next: usize,
    pub(super) current: Option<u64>,
}

impl Records<'_> {
    /// For a flat column, the erased rows of the page holding rows `first_row` to
    /// `first_row + page_rows`, as positions within the page; moves past them.
    pub(super) fn flat_page(&mut self, first_row: u64, page_rows: u64) -> Vec<usize> {
        let lo = self.next;
        while self.next < self.erased.len()
            && u64::from(self.erased[self.next]) < first_row + page_rows
        {
            self.next += 1;
        }
        self.erased[lo..self.next]
            .iter()
            .map(|r| (u64::from(*r) - first_row) as usize)
            .collect()
    }
}

impl Rows<'_, '_> {
    /// For level `i` (repetition level `rep`): whether its record is erased, and whether the
    /// level starts a record.
    pub(super) fn level(&mut self, i: usize, rep: i16) -> Result<(bool, bool)> {
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
    pub(super) fn finished(&self) -> bool {
        match self {
            Rows::Flat { here, next } => *next == here.len(),
            Rows::Nested(_) => true,
        }
    }
}

/// One page's rows split into kept and erased, over its levels and values.
#[derive(Default)]
pub(super) struct Cut {
    /// Levels erased (for a flat column, rows).
    pub(super) erased_levels: usize,
    /// Records starting in the page, and those of them kept.
    pub(super) records_started: u64,
    pub(super) kept_records: u64,
    /// PLAIN: the bytes of the values of erased rows, without length prefixes.
    pub(super) erased_values: Vec<Range<usize>>,
    /// Dictionary: the indices of erased rows.
    pub(super) erased_indices: Vec<u32>,
    /// Erased rows that were null.
    pub(super) erased_nulls: u64,
    /// PLAIN: the byte ranges of kept values as stored (length prefixes included), runs merged.
    pub(super) kept: Vec<Range<usize>>,
    /// PLAIN: every kept value's bytes, without length prefixes (only when asked for).
    pub(super) each_kept: Vec<Range<usize>>,
    /// Dictionary: the indices of kept rows.
    pub(super) kept_indices: Vec<u32>,
    /// Repetition and definition levels of kept rows (none for a flat, or required, column).
    pub(super) kept_reps: Option<Vec<i16>>,
    pub(super) kept_defs: Option<Vec<i16>>,
    /// Kept levels that are null.
    pub(super) kept_nulls: u32,
}

impl Cut {
    /// Whether every kept level is null (never, for a required column).
    pub(super) fn kept_all_null(&self) -> bool {
        self.kept_defs
            .as_ref()
            .is_some_and(|d| d.len() == self.kept_nulls as usize)
    }

    /// Walks the page's `n` levels and values once; `rows` says which levels belong to
    /// erased records. `each`: also list every kept PLAIN value (for a bloom filter).
    /// `entries`: the dictionary's size, to check indices against.
    pub(super) fn new(
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
    pub(super) fn build(
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
