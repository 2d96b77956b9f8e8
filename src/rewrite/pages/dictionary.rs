//! The dictionary page: its entries, a copy without the entries only erased rows used, and
//! the renumbering of the data pages' indices that dropping them takes.

use bytes::Bytes;
use parquet::column::page::{CompressedPage, Page};
use parquet::compression::Codec;
use parquet::errors::Result;

use std::collections::BTreeMap;
use std::ops::Range;

use super::*;

/// The dictionary page: its PLAIN bytes and where each entry's value is in them.
pub(super) struct Dictionary {
    pub(super) bytes: Bytes,
    pub(super) entries: Vec<Range<usize>>,
}

impl Dictionary {
    pub(super) fn decode(
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

    pub(super) fn entry(&self, i: u32) -> &[u8] {
        self.entries
            .get(i as usize)
            .map_or(&[][..], |r| &self.bytes[r.clone()])
    }

    /// The dictionary page without the entries in `scrub` (ascending), the others in their
    /// order; `None` if no entry would remain.
    pub(super) fn without(
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

/// Maps each dictionary index to its index once the entries in `scrub` (ascending) are
/// dropped; dropped entries map to `u32::MAX` (no kept row uses them).
pub(super) fn index_map(entries: usize, scrub: &[usize]) -> Vec<u32> {
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
pub(super) fn renumber(
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
