//! A bounds-checked little-endian reader that knows where it is.

pub struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
    /// Name of the section, for errors.
    what: &'static str,
}

pub type R<T> = Result<T, String>;

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8], pos: usize, what: &'static str) -> Cursor<'a> {
        Cursor { bytes, pos, what }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn short(&self) -> String {
        format!("{} is truncated at {:#x}", self.what, self.pos)
    }

    pub fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| self.short())?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn skip(&mut self, n: u64) -> R<()> {
        self.take(usize::try_from(n).map_err(|_| self.short())?)
            .map(|_| ())
    }

    pub fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> R<u16> {
        Ok(self.fixed(2)? as u16)
    }

    /// A little-endian value of `n` (1 to 8) bytes.
    pub fn fixed(&mut self, n: u8) -> R<u64> {
        Ok(self
            .take(n as usize)?
            .iter()
            .rev()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }

    pub fn uleb(&mut self) -> R<u64> {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
    }

    pub fn sleb(&mut self) -> R<i64> {
        let mut v = 0i64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            if shift < 64 {
                v |= i64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    v |= -1 << shift;
                }
                return Ok(v);
            }
        }
    }

    /// A NUL-terminated string.
    pub fn cstr(&mut self) -> R<&'a [u8]> {
        let rest = &self.bytes[self.pos.min(self.bytes.len())..];
        let n = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| self.short())?;
        let s = &rest[..n];
        self.pos += n + 1;
        Ok(s)
    }

    /// A unit's initial length: (length after the field, offset size).
    pub fn initial_length(&mut self) -> R<(u64, u8)> {
        let l = self.fixed(4)?;
        if l == 0xffff_ffff {
            Ok((self.fixed(8)?, 8))
        } else if l >= 0xffff_fff0 {
            Err(format!(
                "{} at {:#x}: reserved unit length {l:#x}",
                self.what,
                self.pos - 4
            ))
        } else {
            Ok((l, 4))
        }
    }

    /// The end of a unit of `len` bytes starting here, within the section.
    pub fn end_of(&self, len: u64) -> R<usize> {
        usize::try_from(len)
            .ok()
            .and_then(|l| self.pos.checked_add(l))
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| {
                format!(
                    "{} at {:#x}: unit runs past the section",
                    self.what, self.pos
                )
            })
    }
}

/// Where entry `index` of `size`-byte entries from `base` lies.
pub fn entry(base: u64, index: u64, size: u8) -> R<u64> {
    index
        .checked_mul(u64::from(size))
        .and_then(|o| o.checked_add(base))
        .ok_or_else(|| format!("index {index:#x} from {base:#x} is out of range"))
}

/// `v` as ULEB128 in exactly `len` bytes, if it fits.
pub fn uleb_padded(v: u64, len: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len as usize);
    let mut v = v;
    for i in 0..len {
        let mut b = (v & 0x7f) as u8;
        v >>= 7;
        if i + 1 < len {
            b |= 0x80;
        }
        out.push(b);
    }
    (v == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_uleb_reads_back() {
        for (v, len) in [(0u64, 1u8), (127, 1), (128, 2), (5, 3), (1 << 20, 3)] {
            let b = uleb_padded(v, len).unwrap();
            assert_eq!(b.len(), len as usize);
            assert_eq!(Cursor::new(&b, 0, "t").uleb().unwrap(), v);
        }
        assert!(uleb_padded(128, 1).is_none());
    }
}
