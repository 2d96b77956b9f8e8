//! Page headers parsed straight from the chunk's bytes (Thrift compact protocol), so pages can
//! be copied as they are and cut ones written with the same fields.

use parquet::errors::{ParquetError, Result};

use super::*;

/// The fields of a Parquet page header that page surgery needs, read from its Thrift compact
/// encoding (parquet keeps its own reader private).
pub(super) struct PageHeader {
    pub(super) header_len: usize,
    pub(super) uncompressed: usize,
    pub(super) compressed: usize,
    /// For data pages (v1 and v2).
    pub(super) data: Option<DataHeader>,
    /// For the dictionary page.
    pub(super) dict: Option<DictHeader>,
}

pub(super) struct DictHeader {
    pub(super) num_values: u32,
    pub(super) encoding: i32,
    pub(super) is_sorted: bool,
}

pub(super) struct DataHeader {
    pub(super) v2: bool,
    pub(super) num_values: u32,
    pub(super) encoding: i32,
    /// v1: the definition and repetition level encodings.
    pub(super) def_encoding: i32,
    pub(super) rep_encoding: i32,
    /// v2: rows, level byte lengths and whether the values are compressed.
    pub(super) num_rows: u32,
    pub(super) def_len: usize,
    pub(super) rep_len: usize,
    pub(super) is_compressed: bool,
}

impl PageHeader {
    pub(super) fn parse(buf: &[u8]) -> Result<PageHeader> {
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

pub(super) fn non_negative(v: i32) -> Result<usize> {
    usize::try_from(v)
        .map_err(|_| ParquetError::General(format!("negative count {v} in a page header")))
}

pub(super) const T_TRUE: u8 = 1;
pub(super) const T_FALSE: u8 = 2;
pub(super) const T_I32: u8 = 5;
pub(super) const T_STRUCT: u8 = 12;

/// A reader of the Thrift compact protocol, enough to walk a page header and skip the rest.
pub(super) struct Thrift<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
    pub(super) depth: usize,
}

pub(super) type FieldFn<'f, 'a> = dyn FnMut(&mut Thrift<'a>, i16, u8) -> Result<()> + 'f;

impl<'a> Thrift<'a> {
    pub(super) fn byte(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| ParquetError::General("page header ends early".into()))?;
        self.pos += 1;
        Ok(b)
    }

    pub(super) fn varint(&mut self) -> Result<u64> {
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

    pub(super) fn i64(&mut self) -> Result<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    pub(super) fn i32(&mut self) -> Result<i32> {
        i32::try_from(self.i64()?)
            .map_err(|_| ParquetError::General("i32 out of range in a page header".into()))
    }

    pub(super) fn advance(&mut self, n: u64) -> Result<()> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| ParquetError::General("page header ends early".into()))?;
        self.pos = end;
        Ok(())
    }

    /// Reads a struct, handing each field (id, compact type) to `field`, which must consume it.
    pub(super) fn read_struct(&mut self, field: &mut FieldFn<'_, 'a>) -> Result<()> {
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

    pub(super) fn skip(&mut self, ty: u8) -> Result<()> {
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

    pub(super) fn skip_elements(&mut self, n: u64, ty: u8) -> Result<()> {
        if n > self.buf.len() as u64 {
            return Err(ParquetError::General("page header ends early".into()));
        }
        for _ in 0..n {
            self.skip_element(ty)?;
        }
        Ok(())
    }

    /// Collection elements: booleans take a byte there.
    pub(super) fn skip_element(&mut self, ty: u8) -> Result<()> {
        if ty == 1 || ty == 2 {
            self.advance(1)
        } else {
            self.skip(ty)
        }
    }
}
