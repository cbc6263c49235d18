//! The sections walked unit by unit from their start: line programs,
//! address ranges, string offsets, addresses, name tables; and macro units,
//! walked from the offsets units and imports give.

use std::collections::{BTreeMap, BTreeSet};

use gimli::constants as dw;

use super::cursor::{Cursor, R};
use super::lists::to_usize;
use super::units::Walk;
use super::{Enc, Kind, Sec};

/// The line programs: header string offsets and `DW_LNE_set_address`.
pub fn line(w: &mut Walk) -> R<()> {
    let Some(bytes) = w.s.get(Sec::Line) else {
        return Ok(());
    };
    let mut c = Cursor::new(bytes, 0, ".debug_line");
    while !c.is_empty() {
        let start = c.pos;
        let (len, osize) = c.initial_length()?;
        let end = c.end_of(len)?;
        line_unit(w, &mut c, osize, end)
            .map_err(|e| format!(".debug_line unit at {start:#x}: {e}"))?;
        c.pos = end;
    }
    Ok(())
}

fn line_unit(w: &mut Walk, c: &mut Cursor, osize: u8, end: usize) -> R<()> {
    let version = c.u16()?;
    if !(2..=5).contains(&version) {
        return Err(format!("line table version {version} is not supported"));
    }
    let mut asize = 8u8;
    if version >= 5 {
        asize = c.u8()?;
        c.u8()?; // segment selector size
    }
    let header_len = c.fixed(osize)?;
    let program = c.end_of(header_len)?;
    c.u8()?; // minimum_instruction_length
    if version >= 4 {
        c.u8()?; // maximum_operations_per_instruction
    }
    c.u8()?; // default_is_stmt
    c.u8()?; // line_base
    c.u8()?; // line_range
    let opcode_base = c.u8()?;
    let lengths: Vec<u8> = c.take(opcode_base.saturating_sub(1) as usize)?.to_vec();
    if version >= 5 {
        for _ in 0..2 {
            // Directories, then file names: a format, then the entries.
            let nformats = c.u8()?;
            let mut formats = Vec::new();
            for _ in 0..nformats {
                c.uleb()?;
                formats.push(c.uleb()?);
            }
            let count = c.uleb()?;
            for _ in 0..count {
                for f in &formats {
                    form(w, Sec::Line, c, *f, osize, asize)?;
                }
            }
        }
    }
    c.pos = program;
    while c.pos < end {
        let op = c.u8()?;
        if op == 0 {
            let len = c.uleb()?;
            let body = c.pos;
            if len == 0 {
                continue;
            }
            let sub = c.u8()?;
            if dw::DwLne(sub) == dw::DW_LNE_set_address {
                let n = (len - 1) as u8;
                w.push(Sec::Line, c.pos, Enc::Fixed(n), Kind::Addr);
            }
            c.pos = body;
            c.skip(len)?;
        } else if op < opcode_base {
            if dw::DwLns(op) == dw::DW_LNS_fixed_advance_pc {
                c.u16()?;
            } else {
                for _ in 0..lengths[op as usize - 1] {
                    c.uleb()?;
                }
            }
        }
    }
    Ok(())
}

/// Skip one value of form `f`, recording it if it is an offset.
fn form(w: &mut Walk, sec: Sec, c: &mut Cursor, f: u64, osize: u8, asize: u8) -> R<()> {
    let at = c.pos;
    match dw::DwForm(f as u16) {
        dw::DW_FORM_string => {
            c.cstr()?;
        }
        dw::DW_FORM_line_strp => {
            c.fixed(osize)?;
            w.push(sec, at, Enc::Fixed(osize), Kind::Offset(Sec::LineStr));
        }
        dw::DW_FORM_strp => {
            c.fixed(osize)?;
            w.push(sec, at, Enc::Fixed(osize), Kind::Offset(Sec::Str));
        }
        dw::DW_FORM_udata => {
            c.uleb()?;
        }
        dw::DW_FORM_sdata => {
            c.sleb()?;
        }
        dw::DW_FORM_data1 | dw::DW_FORM_flag => c.skip(1)?,
        dw::DW_FORM_data2 => c.skip(2)?,
        dw::DW_FORM_data4 => c.skip(4)?,
        dw::DW_FORM_data8 => c.skip(8)?,
        dw::DW_FORM_data16 => c.skip(16)?,
        dw::DW_FORM_block => {
            let n = c.uleb()?;
            c.skip(n)?;
        }
        dw::DW_FORM_block1 => {
            let n = c.u8()?;
            c.skip(n.into())?;
        }
        dw::DW_FORM_addr => {
            c.fixed(asize)?;
            w.push(sec, at, Enc::Fixed(asize), Kind::Addr);
        }
        other => return Err(format!("form {other} is not supported here")),
    }
    Ok(())
}

/// `.debug_aranges`: each set's unit offset and range starts.
pub fn aranges(w: &mut Walk) -> R<()> {
    let Some(bytes) = w.s.get(Sec::Aranges) else {
        return Ok(());
    };
    let mut c = Cursor::new(bytes, 0, ".debug_aranges");
    while !c.is_empty() {
        let start = c.pos;
        let (len, osize) = c.initial_length()?;
        let end = c.end_of(len)?;
        c.u16()?;
        w.push(
            Sec::Aranges,
            c.pos,
            Enc::Fixed(osize),
            Kind::Offset(Sec::Info),
        );
        c.fixed(osize)?;
        let asize = c.u8()?;
        let seg = c.u8()?;
        if !matches!(asize, 4 | 8) || seg != 0 {
            return Err(format!(
                ".debug_aranges at {start:#x}: address size {asize}, segment size {seg}"
            ));
        }
        let tuple = 2 * asize as usize;
        c.pos = start + (c.pos - start).div_ceil(tuple) * tuple;
        while c.pos + tuple <= end {
            w.push(Sec::Aranges, c.pos, Enc::Fixed(asize), Kind::Addr);
            c.skip(tuple as u64)?;
        }
        c.pos = end;
    }
    Ok(())
}

/// `.debug_str_offsets` (DWARF 5): every entry is a `.debug_str` offset.
pub fn str_offsets(w: &mut Walk) -> R<()> {
    let Some(bytes) = w.s.get(Sec::StrOffsets) else {
        return Ok(());
    };
    let mut c = Cursor::new(bytes, 0, ".debug_str_offsets");
    while !c.is_empty() {
        let start = c.pos;
        let (len, osize) = c.initial_length()?;
        let end = c.end_of(len)?;
        let version = c.u16()?;
        if version != 5 {
            return Err(format!(
                ".debug_str_offsets at {start:#x}: version {version} is not supported"
            ));
        }
        c.u16()?;
        while c.pos + osize as usize <= end {
            w.push(
                Sec::StrOffsets,
                c.pos,
                Enc::Fixed(osize),
                Kind::Offset(Sec::Str),
            );
            c.skip(osize.into())?;
        }
        c.pos = end;
    }
    Ok(())
}

/// `.debug_addr`: addresses, except the entries TLS operators read.
/// DWARF 5 contributions have headers; the GNU extension for DWARF 4 has
/// none, so each of its contributions runs from one unit's base to the next.
pub fn addr(w: &mut Walk) -> R<()> {
    let Some(bytes) = w.s.get(Sec::Addr) else {
        return Ok(());
    };
    let mut runs: Vec<(usize, usize, u8)> = Vec::new();
    let mut c = Cursor::new(bytes, 0, ".debug_addr");
    let headed =
        bytes.len() >= 8 && bytes[4..6] == [5, 0] || bytes.len() >= 16 && bytes[..4] == [0xff; 4];
    if headed {
        while !c.is_empty() {
            let (len, _) = c.initial_length()?;
            let end = c.end_of(len)?;
            let version = c.u16()?;
            let asize = c.u8()?;
            let seg = c.u8()?;
            if version != 5 || !matches!(asize, 4 | 8) || seg != 0 {
                return Err(format!(
                    ".debug_addr: version {version}, address size {asize}, segment size {seg}"
                ));
            }
            runs.push((c.pos, end, asize));
            c.pos = end;
        }
    } else {
        let bases: Vec<usize> = w
            .addr_bases
            .iter()
            .map(|b| to_usize(*b))
            .collect::<R<_>>()?;
        for (i, b) in bases.iter().enumerate() {
            let end = bases.get(i + 1).copied().unwrap_or(bytes.len());
            runs.push((*b, end.min(bytes.len()), 8));
        }
    }
    for (start, end, asize) in runs {
        let mut p = start;
        while p + asize as usize <= end {
            let kind = if w.tls_addr.contains(&(p as u64)) {
                Kind::Tls
            } else {
                Kind::Addr
            };
            w.push(Sec::Addr, p, Enc::Fixed(asize), kind);
            p += asize as usize;
        }
    }
    Ok(())
}

/// `.debug_pubnames` and the like: each set's unit offset.
pub fn name_table(w: &mut Walk, sec: Sec) -> R<()> {
    let Some(bytes) = w.s.get(sec) else {
        return Ok(());
    };
    let mut c = Cursor::new(bytes, 0, sec.name());
    while !c.is_empty() {
        let (len, osize) = c.initial_length()?;
        let end = c.end_of(len)?;
        c.u16()?;
        w.push(sec, c.pos, Enc::Fixed(osize), Kind::Offset(Sec::Info));
        c.pos = end;
    }
    Ok(())
}

/// Macro units (`.debug_macro`, DWARF 5 and the GNU extension to 4), from
/// the units' references, following imports.
pub fn macros(w: &mut Walk) -> R<()> {
    if w.macro_units.is_empty() {
        return Ok(());
    }
    let bytes = w.s.bytes(Sec::Macro)?;
    let mut todo: Vec<u64> = w.macro_units.iter().copied().collect();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    while let Some(off) = todo.pop() {
        if !seen.insert(off) {
            continue;
        }
        macro_unit(w, bytes, to_usize(off)?, &mut todo)
            .map_err(|e| format!(".debug_macro unit at {off:#x}: {e}"))?;
    }
    Ok(())
}

fn macro_unit(w: &mut Walk, bytes: &[u8], at: usize, todo: &mut Vec<u64>) -> R<()> {
    let mut c = Cursor::new(bytes, at, ".debug_macro");
    let version = c.u16()?;
    if !(4..=5).contains(&version) {
        return Err(format!("version {version} is not supported"));
    }
    let flags = c.u8()?;
    let osize = if flags & 1 != 0 { 8 } else { 4 };
    if flags & 2 != 0 {
        w.push(
            Sec::Macro,
            c.pos,
            Enc::Fixed(osize),
            Kind::Offset(Sec::Line),
        );
        c.fixed(osize)?;
    }
    let mut table: BTreeMap<u8, Vec<u64>> = BTreeMap::new();
    if flags & 4 != 0 {
        for _ in 0..c.u8()? {
            let op = c.u8()?;
            let n = c.uleb()?;
            let forms = c
                .take(to_usize(n)?)?
                .iter()
                .map(|f| u64::from(*f))
                .collect();
            table.insert(op, forms);
        }
    }
    loop {
        let op = c.u8()?;
        match dw::DwMacro(op) {
            dw::DW_MACRO_end_file => {}
            _ if op == 0 => return Ok(()),
            dw::DW_MACRO_define | dw::DW_MACRO_undef => {
                c.uleb()?;
                c.cstr()?;
            }
            dw::DW_MACRO_start_file => {
                c.uleb()?;
                c.uleb()?;
            }
            dw::DW_MACRO_define_strp | dw::DW_MACRO_undef_strp => {
                c.uleb()?;
                w.push(Sec::Macro, c.pos, Enc::Fixed(osize), Kind::Offset(Sec::Str));
                c.fixed(osize)?;
            }
            dw::DW_MACRO_import => {
                w.push(
                    Sec::Macro,
                    c.pos,
                    Enc::Fixed(osize),
                    Kind::Offset(Sec::Macro),
                );
                todo.push(c.fixed(osize)?);
            }
            dw::DW_MACRO_define_strx | dw::DW_MACRO_undef_strx => {
                c.uleb()?;
                c.uleb()?;
            }
            dw::DW_MACRO_define_sup | dw::DW_MACRO_undef_sup | dw::DW_MACRO_import_sup => {
                return Err("refers to a supplementary object file (dwz)".into())
            }
            _ => {
                let forms = table
                    .get(&op)
                    .ok_or_else(|| format!("macro opcode {op:#x} is not known"))?
                    .clone();
                for f in forms {
                    form(w, Sec::Macro, &mut c, f, osize, 8)?;
                }
            }
        }
    }
}
