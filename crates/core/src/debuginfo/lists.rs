//! Range and location lists: `.debug_ranges`/`.debug_loc` (DWARF 2 to 4)
//! and `.debug_rnglists`/`.debug_loclists` (DWARF 5).

use super::collect::{read_at, Collect as Walk};
use super::cursor::{entry, Cursor, R};
use super::{expr, Enc, Kind, Sec};

/// What a list needs from the unit that references it.
pub struct ListCtx {
    pub enc: gimli::Encoding,
    /// The unit's base address (its `DW_AT_low_pc`, or 0).
    pub base: u64,
    pub addr_base: Option<u64>,
}

/// A DWARF 2–4 list at `off`: pairs of addresses relative to the base,
/// base-address selections, and (for locations) an expression per entry.
pub fn v4(w: &mut Walk, loc: bool, off: u64, cx: &ListCtx) -> R<()> {
    let sec = if loc { Sec::Loc } else { Sec::Ranges };
    let bytes = w.s.bytes(sec)?;
    let asize = cx.enc.address_size;
    let all = if asize == 8 {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    let mut c = Cursor::new(bytes, to_usize(off)?, sec.name());
    let mut base = cx.base;
    loop {
        let at = c.pos;
        let begin = c.fixed(asize)?;
        let end = c.fixed(asize)?;
        if begin == 0 && end == 0 {
            return Ok(());
        }
        if begin == all {
            w.push(sec, at + asize as usize, Enc::Fixed(asize), Kind::Addr);
            base = end;
            continue;
        }
        // Relative to a base that moves with the image: nothing to shift.
        if !w.s.inside(base) {
            for p in [at, at + asize as usize] {
                w.push(sec, p, Enc::Fixed(asize), Kind::Relative { base });
            }
        }
        if loc {
            let len = c.u16()? as usize;
            let e = c.pos;
            c.skip(len as u64)?;
            expr_fields(w, sec, bytes, e, len, cx)?;
        }
    }
}

/// A DWARF 5 list at `off`.
pub fn v5(w: &mut Walk, loc: bool, off: u64, cx: &ListCtx) -> R<()> {
    let sec = if loc { Sec::LocLists } else { Sec::RngLists };
    let bytes = w.s.bytes(sec)?;
    let asize = cx.enc.address_size;
    let mut c = Cursor::new(bytes, to_usize(off)?, sec.name());
    let mut base = cx.base;
    let addr = Enc::Fixed(asize);
    loop {
        let at = c.pos;
        let kind = c.u8()?;
        // DW_RLE_* and DW_LLE_* share 0–4; from 5 on, locations insert
        // DW_LLE_default_location, so their kinds 6–8 are the ranges' 5–7.
        let k = match (loc, kind) {
            (true, 5) => 0x85, // default location
            (true, 6..=8) => kind - 1,
            (true, 9) => 0x89, // GNU view pair
            _ => kind,
        };
        let mut has_expr = loc;
        match k {
            0 => return Ok(()),
            // base_addressx
            1 => {
                let i = c.uleb()?;
                let b = cx
                    .addr_base
                    .ok_or("DW_RLE_base_addressx without DW_AT_addr_base")?;
                base = read_at(w.s.bytes(Sec::Addr)?, entry(b, i, asize)?, asize)?;
                has_expr = false;
            }
            // startx_endx, startx_length: indices into .debug_addr
            2 | 3 => {
                c.uleb()?;
                c.uleb()?;
            }
            // offset_pair
            4 => {
                for _ in 0..2 {
                    let p = c.pos;
                    c.uleb()?;
                    w.push(
                        sec,
                        p,
                        Enc::Uleb((c.pos - p) as u8),
                        Kind::Relative { base },
                    );
                }
            }
            // base_address
            5 => {
                w.push(sec, c.pos, addr, Kind::Addr);
                base = c.fixed(asize)?;
                has_expr = false;
            }
            // start_end
            6 => {
                w.push(sec, c.pos, addr, Kind::Addr);
                c.fixed(asize)?;
                w.push(sec, c.pos, addr, Kind::Addr);
                c.fixed(asize)?;
            }
            // start_length
            7 => {
                w.push(sec, c.pos, addr, Kind::Addr);
                c.fixed(asize)?;
                c.uleb()?;
            }
            0x85 => {}
            0x89 => {
                c.uleb()?;
                c.uleb()?;
                has_expr = false;
            }
            _ => {
                return Err(format!(
                    "{} at {at:#x}: unknown entry kind {kind}",
                    sec.name()
                ))
            }
        }
        if has_expr {
            let len = to_usize(c.uleb()?)?;
            let e = c.pos;
            c.skip(len as u64)?;
            expr_fields(w, sec, bytes, e, len, cx)?;
        }
    }
}

fn expr_fields(w: &mut Walk, sec: Sec, bytes: &[u8], at: usize, len: usize, cx: &ListCtx) -> R<()> {
    let tls = expr::scan(w, sec, bytes, at, len, cx.enc)?;
    for i in tls {
        let b = cx.addr_base.ok_or("DW_OP_constx without DW_AT_addr_base")?;
        w.tls_addr.insert(entry(b, i, cx.enc.address_size)?);
    }
    Ok(())
}

pub fn to_usize(v: u64) -> R<usize> {
    usize::try_from(v).map_err(|_| format!("offset {v:#x} is out of range"))
}
