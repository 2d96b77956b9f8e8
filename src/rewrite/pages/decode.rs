//! A data page decompressed and split into repetition levels, definition levels and values
//! (PLAIN bytes, or dictionary indices); nothing is decoded into objects.

use bytes::Bytes;
use parquet::compression::Codec;
use parquet::encodings::rle::RleDecoder;
use parquet::errors::Result;

use super::*;

/// A decompressed data page's values: PLAIN bytes, or dictionary indices.
pub(super) enum Values {
    Plain(Bytes),
    Dict { bit_width: u8, indices: Vec<u32> },
}

/// A decompressed data page: its definition levels (none for a required column) and values.
pub(super) struct Decoded {
    /// Repetition levels (none for a flat column).
    pub(super) reps: Option<Vec<i16>>,
    pub(super) defs: Option<Vec<i16>>,
    pub(super) values: Values,
}

/// Decompresses and splits data page `p` of `chunk`; `None` for what surgery does not handle.
pub(super) fn decode(
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

pub(super) fn decompress(codec: &mut Box<dyn Codec>, input: &[u8], size: usize) -> Result<Bytes> {
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

pub(super) fn levels(data: Bytes, max_level: i16, n: usize) -> Result<Vec<i16>> {
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

pub(super) fn bit_width(max_level: i16) -> u8 {
    (16 - (max_level as u16).leading_zeros()) as u8
}
