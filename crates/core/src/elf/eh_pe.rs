//! Pointer encodings of exception-handling data (`DW_EH_PE_*`, gimli's
//! [`DwEhPe`]): how long an encoded value is, what number it holds and
//! where it points. The one decoder behind the `.eh_frame` merge
//! (`merge::eh_frame`) and the LSDA call-site tables
//! (`lower::landing_pads`).

// gimli spells the DWARF constants as DWARF does (DW_EH_PE_sdata4).
#![allow(non_upper_case_globals)]

pub use gimli::constants::DwEhPe;
use gimli::constants::{
    DW_EH_PE_absptr, DW_EH_PE_pcrel, DW_EH_PE_sdata2, DW_EH_PE_sdata4, DW_EH_PE_sdata8,
    DW_EH_PE_sleb128, DW_EH_PE_udata2, DW_EH_PE_udata4, DW_EH_PE_udata8, DW_EH_PE_uleb128,
};
use gimli::{leb128, EndianSlice, LittleEndian};

/// Bytes of a fixed-size value format; `None` for LEB128 and unknown formats.
pub fn fixed_size(enc: DwEhPe) -> Option<usize> {
    match enc.format() {
        DW_EH_PE_absptr | DW_EH_PE_udata8 | DW_EH_PE_sdata8 => Some(8),
        DW_EH_PE_udata2 | DW_EH_PE_sdata2 => Some(2),
        DW_EH_PE_udata4 | DW_EH_PE_sdata4 => Some(4),
        _ => None,
    }
}

/// True for the value formats [`read`] decodes: fixed-size and LEB128.
pub fn is_known_format(enc: DwEhPe) -> bool {
    fixed_size(enc).is_some() || matches!(enc.format(), DW_EH_PE_uleb128 | DW_EH_PE_sleb128)
}

/// The fixed-size value at the start of `bytes`, sign- or zero-extended as
/// its format says; `None` when the format is not fixed-size or `bytes` is
/// too short.
pub fn read_fixed(bytes: &[u8], enc: DwEhPe) -> Option<i128> {
    let b = bytes.get(..fixed_size(enc)?)?;
    Some(match enc.format() {
        DW_EH_PE_udata2 => i128::from(u16::from_le_bytes(b.try_into().ok()?)),
        DW_EH_PE_sdata2 => i128::from(i16::from_le_bytes(b.try_into().ok()?)),
        DW_EH_PE_udata4 => i128::from(u32::from_le_bytes(b.try_into().ok()?)),
        DW_EH_PE_sdata4 => i128::from(i32::from_le_bytes(b.try_into().ok()?)),
        DW_EH_PE_sdata8 => i128::from(i64::from_le_bytes(b.try_into().ok()?)),
        _ => i128::from(u64::from_le_bytes(b.try_into().ok()?)),
    })
}

/// The value in `enc`'s format at the start of `bytes`, fixed-size or
/// LEB128, and how many bytes it takes; `None` when truncated or the
/// format is unknown.
pub fn read(bytes: &[u8], enc: DwEhPe) -> Option<(i128, usize)> {
    if let Some(n) = fixed_size(enc) {
        return Some((read_fixed(bytes, enc)?, n));
    }
    match enc.format() {
        DW_EH_PE_uleb128 => uleb(bytes).map(|(v, n)| (i128::from(v), n)),
        DW_EH_PE_sleb128 => sleb(bytes).map(|(v, n)| (i128::from(v), n)),
        _ => None,
    }
}

/// The unsigned LEB128 at the start of `bytes` and its length.
pub fn uleb(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut r = EndianSlice::new(bytes, LittleEndian);
    let v = leb128::read::unsigned(&mut r).ok()?;
    Some((v, bytes.len() - r.len()))
}

/// The signed LEB128 at the start of `bytes` and its length.
pub fn sleb(bytes: &[u8]) -> Option<(i64, usize)> {
    let mut r = EndianSlice::new(bytes, LittleEndian);
    let v = leb128::read::signed(&mut r).ok()?;
    Some((v, bytes.len() - r.len()))
}

/// Where a decoded `value` points, for the applications that need no
/// section base: absolute, and PC-relative to `field` (the address the
/// value is stored at). `None` for the others (textrel, datarel, …).
pub fn target(enc: DwEhPe, value: i128, field: u64) -> Option<u64> {
    match enc.application() {
        DW_EH_PE_absptr => Some(value as u64),
        DW_EH_PE_pcrel => Some(field.wrapping_add(value as u64)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gimli::constants::DW_EH_PE_datarel;

    #[test]
    fn fixed_leb_and_targets() {
        let sdata4 = DW_EH_PE_pcrel | DW_EH_PE_sdata4;
        assert_eq!(read(&(-8i32).to_le_bytes(), sdata4), Some((-8, 4)));
        assert_eq!(target(sdata4, -8, 0x1010), Some(0x1008));
        assert_eq!(
            read(&0xfffeu16.to_le_bytes(), DW_EH_PE_udata2),
            Some((0xfffe, 2))
        );
        assert_eq!(
            read(&[0xe5, 0x8e, 0x26], DW_EH_PE_uleb128),
            Some((624_485, 3))
        );
        assert_eq!(read(&[0x7f], DW_EH_PE_sleb128), Some((-1, 1)));
        assert_eq!(read(&[0x80], DW_EH_PE_uleb128), None);
        assert_eq!(read(&[1, 2, 3], DW_EH_PE_udata4), None);
        assert_eq!(target(DW_EH_PE_datarel | DW_EH_PE_sdata4, 4, 0), None);
        assert_eq!(fixed_size(DwEhPe(0x07)), None);
    }
}
