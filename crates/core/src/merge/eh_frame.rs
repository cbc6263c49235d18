//! Combining the `.eh_frame` sections of several images into one `.eh_frame`
//! plus a fresh `.eh_frame_hdr` binary-search table.
//!
//! Each input image is moved as one block to its place in the fused output.
//! Its CIE/FDE records are copied byte for byte, in input order, into a single
//! output `.eh_frame`. The only bytes that change are:
//!
//! * the CIE pointer of every FDE (recomputed from the new record positions),
//! * every pointer whose encoding is PC-relative (`DW_EH_PE_pcrel`): the FDE's
//!   `pc_begin`, the LSDA pointer and the CIE's personality pointer. Their
//!   targets moved with the image, but the field itself moved from the
//!   image's `.eh_frame` to the combined one, so the stored difference is
//!   adjusted by `old_field_address - new_field_address`.
//!
//! The `.eh_frame_hdr` uses the layout that libgcc, gdb and perf expect:
//! version 1, `eh_frame_ptr` as pcrel|sdata4, `fde_count` as udata4, and a
//! table of (initial location, FDE address) pairs encoded datarel|sdata4
//! (relative to the header start), sorted by initial location.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use gimli::constants::{
    DW_EH_PE_absptr, DW_EH_PE_datarel, DW_EH_PE_indirect, DW_EH_PE_omit, DW_EH_PE_pcrel,
    DW_EH_PE_sdata2, DW_EH_PE_sdata4, DW_EH_PE_sdata8, DW_EH_PE_udata2, DW_EH_PE_udata4,
    DW_EH_PE_udata8,
};

use crate::elf::eh_pe::{self, DwEhPe};

/// One input image's .eh_frame: its bytes and the address those bytes will
/// have in the output image (i.e., original section address + displacement).
/// Code the FDEs describe moved by the same displacement, so every PC-relative
/// pointer inside the records stays valid relative to `vaddr`.
pub struct EhFrameInput<'a> {
    pub bytes: &'a [u8],
    pub vaddr: u64,
}

/// Header encodings written into `.eh_frame_hdr`.
const HDR_VERSION: u8 = 1;
const HDR_EH_FRAME_PTR_ENC: u8 = DW_EH_PE_pcrel.0 | DW_EH_PE_sdata4.0; // 0x1b
const HDR_FDE_COUNT_ENC: u8 = DW_EH_PE_udata4.0; // 0x03
const HDR_TABLE_ENC: u8 = DW_EH_PE_datarel.0 | DW_EH_PE_sdata4.0; // 0x3b

/// A pointer field inside a record that must be rebased when the record moves.
#[derive(Clone, Copy, Debug)]
struct PcrelField {
    /// Offset of the field from the start of the record (its length field).
    offset: usize,
    /// Its encoding (of a fixed-size value format).
    enc: DwEhPe,
}

#[derive(Clone, Debug)]
enum Kind {
    Cie,
    Fde {
        /// Index (into `records`) of the CIE this FDE refers to.
        cie: usize,
        /// Absolute address (in the output) of the first instruction covered.
        pc_begin: u64,
        pc_range: u64,
        /// Encoding of `pc_begin` and the field offset within the record.
        pc_enc: DwEhPe,
        pc_offset: usize,
    },
}

#[derive(Clone, Debug)]
struct Record {
    input: usize,
    /// Offset of the record (its length field) within its input.
    in_offset: usize,
    /// Length of the whole record including the length field.
    size: usize,
    /// Offset of the record within the combined output `.eh_frame`.
    out_offset: usize,
    kind: Kind,
    /// PC-relative pointers inside the record that need rebasing.
    pcrel: Vec<PcrelField>,
}

/// Parsed records of all inputs, ready to be laid out in one `.eh_frame`.
pub struct EhFrameLayout {
    /// Input bytes, owned (one entry per input), and each input's `vaddr`.
    inputs: Vec<(Vec<u8>, u64)>,
    records: Vec<Record>,
    /// Total size of the records (without the terminator).
    records_size: usize,
    /// Number of FDEs listed in the header table (FDEs with pc_range != 0).
    table_fdes: usize,
}

/// Parsed CIE facts needed to parse the FDEs that use it.
#[derive(Clone, Debug)]
struct CieInfo {
    has_z: bool,
    fde_enc: DwEhPe,
    lsda_enc: DwEhPe,
}

/// Byte cursor over one input with error messages that name the input and offset.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    end: usize,
    input: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!(
            ".eh_frame input {} at byte offset {:#x}: {}",
            self.input,
            self.pos,
            msg
        )
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.end - self.pos < n {
            return Err(self.err(format!("truncated (need {n} bytes)")));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn uleb(&mut self) -> Result<u64> {
        let (v, n) = eh_pe::uleb(&self.data[self.pos..self.end])
            .ok_or_else(|| self.err("truncated or overlong ULEB128"))?;
        self.pos += n;
        Ok(v)
    }

    fn sleb(&mut self) -> Result<i64> {
        let (v, n) = eh_pe::sleb(&self.data[self.pos..self.end])
            .ok_or_else(|| self.err("truncated or overlong SLEB128"))?;
        self.pos += n;
        Ok(v)
    }

    fn cstr(&mut self) -> Result<&'a [u8]> {
        let rest = &self.data[self.pos..self.end];
        let n = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.err("unterminated augmentation string"))?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }
}

/// A fixed-size value of a format already checked (see [`eh_pe::read_fixed`]).
fn read_fixed(bytes: &[u8], enc: DwEhPe) -> i128 {
    eh_pe::read_fixed(bytes, enc).expect("a checked fixed-size pointer format")
}

/// Write a value in a fixed-size format. 8-byte formats wrap (addresses are
/// modulo 2^64); smaller formats must hold the value exactly.
#[allow(non_upper_case_globals)] // gimli's DW_EH_PE_* names
fn write_fixed(out: &mut [u8], enc: DwEhPe, value: i128) -> Result<()> {
    match enc.format() {
        DW_EH_PE_absptr | DW_EH_PE_udata8 | DW_EH_PE_sdata8 => {
            out[..8].copy_from_slice(&(value as u64).to_le_bytes());
        }
        DW_EH_PE_udata4 => {
            let v = u32::try_from(value).map_err(|_| anyhow!("{value:#x} does not fit udata4"))?;
            out[..4].copy_from_slice(&v.to_le_bytes());
        }
        DW_EH_PE_sdata4 => {
            let v = i32::try_from(value).map_err(|_| anyhow!("{value:#x} does not fit sdata4"))?;
            out[..4].copy_from_slice(&v.to_le_bytes());
        }
        DW_EH_PE_udata2 => {
            let v = u16::try_from(value).map_err(|_| anyhow!("{value:#x} does not fit udata2"))?;
            out[..2].copy_from_slice(&v.to_le_bytes());
        }
        DW_EH_PE_sdata2 => {
            let v = i16::try_from(value).map_err(|_| anyhow!("{value:#x} does not fit sdata2"))?;
            out[..2].copy_from_slice(&v.to_le_bytes());
        }
        format => unreachable!("not a fixed-size format: {:#x}", format.0),
    }
    Ok(())
}

/// The encoding without its indirection bit: pointers to a slot are read
/// and rebased like direct ones (the slot moved with the image).
fn direct(enc: DwEhPe) -> DwEhPe {
    DwEhPe(enc.0 & !DW_EH_PE_indirect.0)
}

/// Check that an encoding is one faasfuse can relocate in x86-64 `.eh_frame`.
/// Returns true if the pointer is PC-relative (needs rebasing).
fn check_encoding(cur: &Cursor, enc: DwEhPe, what: &str) -> Result<bool> {
    if !eh_pe::is_known_format(enc) {
        return Err(cur.err(format!(
            "{what}: unknown pointer format in encoding {:#x}",
            enc.0
        )));
    }
    let app = enc.application();
    if app == DW_EH_PE_absptr {
        Ok(false)
    } else if app == DW_EH_PE_pcrel {
        if eh_pe::fixed_size(enc).is_none() {
            return Err(cur.err(format!(
                "{what}: pc-relative LEB128 pointer (encoding {:#x}) cannot be rebased",
                enc.0
            )));
        }
        Ok(true)
    } else {
        Err(cur.err(format!(
            "{what}: unsupported pointer application in encoding {:#x} \
             (only absolute and pcrel are supported on x86-64)",
            enc.0
        )))
    }
}

/// Skip over an encoded pointer, returning its offset (relative to `base`),
/// its raw value (fixed formats) and whether it must be rebased.
fn read_pointer(
    cur: &mut Cursor,
    enc: DwEhPe,
    base: usize,
    what: &str,
    pcrel: &mut Vec<PcrelField>,
) -> Result<(usize, Option<i128>)> {
    let is_pcrel = check_encoding(cur, enc, what)?;
    let offset = cur.pos - base;
    let (value, n) = eh_pe::read(&cur.data[cur.pos..cur.end], enc)
        .ok_or_else(|| cur.err(format!("{what}: truncated pointer")))?;
    cur.pos += n;
    if is_pcrel {
        pcrel.push(PcrelField { offset, enc });
    }
    Ok((offset, eh_pe::fixed_size(enc).map(|_| value)))
}

fn parse_cie(cur: &mut Cursor, rec_start: usize, pcrel: &mut Vec<PcrelField>) -> Result<CieInfo> {
    let version = cur.u8()?;
    if !matches!(version, 1 | 3 | 4) {
        return Err(cur.err(format!("unsupported CIE version {version}")));
    }
    let aug = cur.cstr()?.to_vec();
    if version == 4 {
        let addr_size = cur.u8()?;
        let seg_size = cur.u8()?;
        if addr_size != 8 || seg_size != 0 {
            return Err(cur.err(format!(
                "unsupported CIE address/segment size {addr_size}/{seg_size}"
            )));
        }
    }
    cur.uleb()?; // code alignment factor
    cur.sleb()?; // data alignment factor
    if version == 1 {
        cur.u8()?; // return address register
    } else {
        cur.uleb()?;
    }
    let mut info = CieInfo {
        has_z: false,
        fde_enc: DW_EH_PE_absptr,
        lsda_enc: DW_EH_PE_omit,
    };
    if aug.is_empty() {
        return Ok(info);
    }
    if aug[0] != b'z' {
        return Err(cur.err(format!(
            "unsupported CIE augmentation {:?} (must start with 'z')",
            String::from_utf8_lossy(&aug)
        )));
    }
    info.has_z = true;
    let aug_len = cur.uleb()? as usize;
    let aug_start = cur.pos;
    if cur.end - aug_start < aug_len {
        return Err(cur.err("CIE augmentation data overruns the record"));
    }
    for &letter in &aug[1..] {
        match letter {
            b'R' => info.fde_enc = DwEhPe(cur.u8()?),
            b'L' => info.lsda_enc = DwEhPe(cur.u8()?),
            b'P' => {
                let enc = DwEhPe(cur.u8()?);
                if !enc.is_absent() {
                    // Pointers to a personality slot (indirect) are rebased
                    // like direct ones: the slot moved with the image.
                    read_pointer(cur, direct(enc), rec_start, "personality", pcrel)?;
                }
            }
            b'S' => {}
            other => {
                return Err(cur.err(format!(
                    "unknown CIE augmentation letter {:?} in {:?}",
                    other as char,
                    String::from_utf8_lossy(&aug)
                )))
            }
        }
    }
    if cur.pos > aug_start + aug_len {
        return Err(cur.err("CIE augmentation data longer than its declared length"));
    }
    // Check the FDE and LSDA encodings now so errors point at the CIE.
    if info.fde_enc.is_absent() || info.fde_enc.is_indirect() {
        return Err(cur.err(format!(
            "unsupported FDE pointer encoding {:#x}",
            info.fde_enc.0
        )));
    }
    check_encoding(cur, info.fde_enc, "FDE pointer encoding")?;
    if eh_pe::fixed_size(info.fde_enc).is_none() {
        return Err(cur.err(format!(
            "variable-length FDE pointer encoding {:#x} is not supported",
            info.fde_enc.0
        )));
    }
    if !info.lsda_enc.is_absent() {
        check_encoding(cur, direct(info.lsda_enc), "LSDA encoding")?;
    }
    Ok(info)
}

impl EhFrameLayout {
    /// Parse every input (stop at a zero terminator or the end). Errors name
    /// the input index and byte offset.
    pub fn parse(inputs: &[EhFrameInput]) -> Result<EhFrameLayout> {
        let mut records: Vec<Record> = Vec::new();
        let mut out_offset = 0usize;
        let mut table_fdes = 0usize;
        for (idx, input) in inputs.iter().enumerate() {
            let data = input.bytes;
            // Offset within this input -> (record index, CIE info).
            let mut cies: HashMap<usize, (usize, CieInfo)> = HashMap::new();
            let mut pos = 0usize;
            while pos < data.len() {
                let mut cur = Cursor {
                    data,
                    pos,
                    end: data.len(),
                    input: idx,
                };
                let length = cur.u32()?;
                if length == 0 {
                    break; // terminator
                }
                if length == 0xffff_ffff {
                    return Err(cur.err("64-bit (extended length) records are not supported"));
                }
                let size = 4 + length as usize;
                if data.len() - pos < size {
                    return Err(cur.err(format!(
                        "record length {length:#x} runs past the end of the section"
                    )));
                }
                cur.end = pos + size;
                let id_pos = cur.pos;
                let id = cur.u32()?;
                let mut pcrel = Vec::new();
                let kind = if id == 0 {
                    let info = parse_cie(&mut cur, pos, &mut pcrel)?;
                    cies.insert(pos, (records.len(), info));
                    Kind::Cie
                } else {
                    let cie_off = id_pos.checked_sub(id as usize).ok_or_else(|| {
                        cur.err(format!("FDE CIE pointer {id:#x} points before the section"))
                    })?;
                    let (cie_rec, info) = cies.get(&cie_off).cloned().ok_or_else(|| {
                        cur.err(format!(
                            "FDE CIE pointer {id:#x} does not reach a CIE (offset {cie_off:#x})"
                        ))
                    })?;
                    let pc_enc = info.fde_enc;
                    let (pc_offset, pc_value) =
                        read_pointer(&mut cur, pc_enc, pos, "FDE pc_begin", &mut pcrel)?;
                    let pc_value = pc_value.expect("FDE encoding is fixed-size");
                    let field = input.vaddr.wrapping_add((pos + pc_offset) as u64);
                    let pc_begin = eh_pe::target(pc_enc, pc_value, field)
                        .expect("FDE encoding is absolute or pcrel");
                    let n = eh_pe::fixed_size(pc_enc).expect("FDE encoding is fixed-size");
                    // pc_range: same value format, never relocated.
                    let range = read_fixed(cur.take(n)?, pc_enc);
                    let pc_range = if n == 8 {
                        range as u64
                    } else {
                        // Treat as an unsigned length of the given width.
                        (range as u64) & ((1u64 << (8 * n)) - 1)
                    };
                    if info.has_z {
                        let aug_len = cur.uleb()? as usize;
                        let aug_start = cur.pos;
                        if cur.end - aug_start < aug_len {
                            return Err(cur.err("FDE augmentation data overruns the record"));
                        }
                        if !info.lsda_enc.is_absent() {
                            read_pointer(&mut cur, direct(info.lsda_enc), pos, "LSDA", &mut pcrel)?;
                            if cur.pos > aug_start + aug_len {
                                return Err(cur.err("LSDA pointer overruns FDE augmentation data"));
                            }
                        }
                    }
                    if pc_range != 0 {
                        table_fdes += 1;
                    }
                    Kind::Fde {
                        cie: cie_rec,
                        pc_begin,
                        pc_range,
                        pc_enc,
                        pc_offset,
                    }
                };
                records.push(Record {
                    input: idx,
                    in_offset: pos,
                    size,
                    out_offset,
                    kind,
                    pcrel,
                });
                out_offset += size;
                pos += size;
            }
        }
        if u32::try_from(table_fdes).is_err() {
            bail!("too many FDEs for .eh_frame_hdr: {table_fdes}");
        }
        Ok(EhFrameLayout {
            inputs: inputs.iter().map(|i| (i.bytes.to_vec(), i.vaddr)).collect(),
            records,
            records_size: out_offset,
            table_fdes,
        })
    }

    /// Size in bytes of the combined .eh_frame (including a 4-byte zero terminator).
    pub fn eh_frame_size(&self) -> u64 {
        (self.records_size + 4) as u64
    }

    /// Size of the .eh_frame_hdr: 12 + 8 * fde_count.
    pub fn hdr_size(&self) -> u64 {
        12 + 8 * self.fde_count() as u64
    }

    /// Number of FDEs listed in the `.eh_frame_hdr` table. FDEs covering no
    /// code (pc_range 0) stay in `.eh_frame` but are not counted.
    pub fn fde_count(&self) -> usize {
        self.table_fdes
    }

    /// Where every PC-relative pointer of the records points (FDE starts,
    /// LSDAs, personality routines and their slots), as parsed.
    pub fn pcrel_targets(&self) -> Vec<u64> {
        let mut out = Vec::new();
        for r in &self.records {
            let (bytes, vaddr) = &self.inputs[r.input];
            for f in &r.pcrel {
                let field = vaddr.wrapping_add((r.in_offset + f.offset) as u64);
                let value = read_fixed(&bytes[r.in_offset + f.offset..], f.enc);
                if let Some(t) = eh_pe::target(f.enc, value, field) {
                    out.push(t);
                }
            }
        }
        out
    }

    /// Absolute (begin, end) of the code described by each FDE, in output
    /// order, when the combined `.eh_frame` is placed at `eh_frame_vaddr`.
    /// Includes FDEs with an empty range.
    pub fn fde_ranges(&self, eh_frame_vaddr: u64) -> Vec<(u64, u64)> {
        self.records
            .iter()
            .filter_map(|r| match r.kind {
                Kind::Fde {
                    pc_begin,
                    pc_range,
                    pc_enc,
                    pc_offset,
                    ..
                } => {
                    // For pcrel pointers, the rebased value plus the new field
                    // address gives back the same target; compute it that way
                    // to mirror what emit() writes.
                    let begin = if pc_enc.application() == DW_EH_PE_pcrel {
                        let old_field = self.inputs[r.input].1 + (r.in_offset + pc_offset) as u64;
                        let new_field = eh_frame_vaddr + (r.out_offset + pc_offset) as u64;
                        let old_value = pc_begin.wrapping_sub(old_field);
                        let new_value = old_value.wrapping_add(old_field.wrapping_sub(new_field));
                        new_field.wrapping_add(new_value)
                    } else {
                        pc_begin
                    };
                    Some((begin, begin.wrapping_add(pc_range)))
                }
                Kind::Cie => None,
            })
            .collect()
    }

    /// Emit the combined .eh_frame for address `eh_frame_vaddr` and the header for `hdr_vaddr`.
    pub fn emit(&self, eh_frame_vaddr: u64, hdr_vaddr: u64) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::with_capacity(self.eh_frame_size() as usize);
        // (initial location, FDE address) for the header table.
        let mut table: Vec<(u64, u64)> = Vec::with_capacity(self.table_fdes);
        for r in &self.records {
            let (bytes, vaddr) = &self.inputs[r.input];
            let start = out.len();
            debug_assert_eq!(start, r.out_offset);
            out.extend_from_slice(&bytes[r.in_offset..r.in_offset + r.size]);
            let rec = &mut out[start..];
            let ctx = || {
                format!(
                    ".eh_frame input {} record at byte offset {:#x}",
                    r.input, r.in_offset
                )
            };
            if let Kind::Fde { cie, .. } = r.kind {
                // CIE pointer: distance from this FDE's id field back to its CIE.
                let back = (r.out_offset + 4) - self.records[cie].out_offset;
                let back = u32::try_from(back)
                    .map_err(|_| anyhow!("CIE pointer {back:#x} too large"))
                    .with_context(ctx)?;
                rec[4..8].copy_from_slice(&back.to_le_bytes());
            }
            for f in &r.pcrel {
                let old_field = vaddr.wrapping_add((r.in_offset + f.offset) as u64);
                let new_field = eh_frame_vaddr.wrapping_add((r.out_offset + f.offset) as u64);
                let delta = i128::from(old_field.wrapping_sub(new_field) as i64);
                let old_value = read_fixed(&rec[f.offset..], f.enc);
                write_fixed(&mut rec[f.offset..], f.enc, old_value + delta)
                    .with_context(|| format!("rebasing pointer at record offset {:#x}", f.offset))
                    .with_context(ctx)?;
            }
            if let Kind::Fde {
                pc_range,
                pc_enc,
                pc_offset,
                pc_begin,
                ..
            } = r.kind
            {
                // Recompute the target from the bytes just written, as a
                // consumer would, and check it matches the parsed target.
                let field = eh_frame_vaddr.wrapping_add((r.out_offset + pc_offset) as u64);
                let value = read_fixed(&rec[pc_offset..], pc_enc);
                let begin =
                    eh_pe::target(pc_enc, value, field).expect("FDE encoding is absolute or pcrel");
                if begin != pc_begin {
                    return Err(anyhow!(
                        "FDE pc_begin changed while rebasing ({pc_begin:#x} -> {begin:#x})"
                    ))
                    .with_context(ctx);
                }
                if pc_range != 0 {
                    table.push((begin, eh_frame_vaddr + r.out_offset as u64));
                }
            }
        }
        out.extend_from_slice(&[0, 0, 0, 0]);

        table.sort();
        let mut hdr = Vec::with_capacity(self.hdr_size() as usize);
        hdr.extend_from_slice(&[
            HDR_VERSION,
            HDR_EH_FRAME_PTR_ENC,
            HDR_FDE_COUNT_ENC,
            HDR_TABLE_ENC,
        ]);
        let rel32 = |target: u64, base: u64, what: &str| -> Result<i32> {
            i32::try_from(target.wrapping_sub(base) as i64).map_err(|_| {
                anyhow!(".eh_frame_hdr: {what} {target:#x} is out of 32-bit range of {base:#x}")
            })
        };
        let eh_ptr = rel32(eh_frame_vaddr, hdr_vaddr.wrapping_add(4), "eh_frame_ptr")?;
        hdr.extend_from_slice(&eh_ptr.to_le_bytes());
        hdr.extend_from_slice(&(table.len() as u32).to_le_bytes());
        for &(pc, fde) in &table {
            hdr.extend_from_slice(&rel32(pc, hdr_vaddr, "initial location")?.to_le_bytes());
            hdr.extend_from_slice(&rel32(fde, hdr_vaddr, "FDE address")?.to_le_bytes());
        }
        debug_assert_eq!(out.len() as u64, self.eh_frame_size());
        debug_assert_eq!(hdr.len() as u64, self.hdr_size());
        Ok((out, hdr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gimli::{
        BaseAddresses, CieOrFde, EhFrame, EhFrameHdr, LittleEndian, Pointer, UnwindSection,
    };
    use object::{Object, ObjectSection};
    use std::sync::OnceLock;

    /// The test library: .eh_frame bytes and address, .eh_frame_hdr bytes and address.
    struct Lib {
        eh_frame: Vec<u8>,
        eh_frame_addr: u64,
        hdr: Vec<u8>,
        hdr_addr: u64,
    }

    const SRC: &str = r#"
#include <stdexcept>
#include <string>
struct Guard { int *p; ~Guard() { ++*p; } };
__attribute__((noinline)) int thrower(int x) {
    if (x > 3) throw std::runtime_error("too big: " + std::to_string(x));
    return x * 2;
}
extern "C" int catcher(int x) {
    int n = 0;
    try { Guard g{&n}; return thrower(x) + n; }
    catch (const std::exception &e) { return -1 - n; }
}
extern "C" int other(int x) {
    try { return thrower(x + 1); } catch (...) { return 0; }
}
"#;

    fn lib() -> &'static Lib {
        static LIB: OnceLock<Lib> = OnceLock::new();
        LIB.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let dir = std::env::temp_dir().join(format!(
                "faasfuse-eh-frame-test-{}-{nanos}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let src = dir.join("t.cc");
            let so = dir.join("libt.so");
            std::fs::write(&src, SRC).unwrap();
            let status = std::process::Command::new("g++")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&so)
                .arg(&src)
                .status()
                .expect("running g++");
            assert!(status.success(), "g++ failed");
            let data = std::fs::read(&so).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            let file = object::File::parse(&*data).unwrap();
            let eh = file.section_by_name(".eh_frame").unwrap();
            let hdr = file.section_by_name(".eh_frame_hdr").unwrap();
            Lib {
                eh_frame: eh.data().unwrap().to_vec(),
                eh_frame_addr: eh.address(),
                hdr: hdr.data().unwrap().to_vec(),
                hdr_addr: hdr.address(),
            }
        })
    }

    /// Per FDE, in section order: (initial address, length, LSDA, personality).
    type FdeFacts = (u64, u64, Option<Pointer>, Option<Pointer>);

    fn decode(bytes: &[u8], addr: u64) -> Vec<FdeFacts> {
        let frame = EhFrame::new(bytes, LittleEndian);
        let bases = BaseAddresses::default().set_eh_frame(addr);
        let mut entries = frame.entries(&bases);
        let mut out = Vec::new();
        while let Some(entry) = entries.next().unwrap() {
            if let CieOrFde::Fde(partial) = entry {
                let fde = partial.parse(EhFrame::cie_from_offset).unwrap();
                out.push((
                    fde.initial_address(),
                    fde.len(),
                    fde.lsda(),
                    fde.cie().personality(),
                ));
            }
        }
        out
    }

    /// The layout of one input at `vaddr`.
    fn parse_one(bytes: &[u8], vaddr: u64) -> Result<EhFrameLayout> {
        EhFrameLayout::parse(&[EhFrameInput { bytes, vaddr }])
    }

    fn shift(p: Option<Pointer>, d: u64) -> Option<Pointer> {
        p.map(|p| match p {
            Pointer::Direct(a) => Pointer::Direct(a + d),
            Pointer::Indirect(a) => Pointer::Indirect(a + d),
        })
    }

    #[test]
    fn identity_at_same_address() {
        let lib = lib();
        let layout = parse_one(&lib.eh_frame, lib.eh_frame_addr).unwrap();
        let (out, hdr) = layout.emit(lib.eh_frame_addr, lib.hdr_addr).unwrap();
        let n = out.len() - 4;
        assert_eq!(out.len() as u64, layout.eh_frame_size());
        assert_eq!(&out[..n], &lib.eh_frame[..n]);
        assert_eq!(&out[n..], &[0, 0, 0, 0]);
        assert_eq!(hdr.len() as u64, layout.hdr_size());
        // The linker's own header for this library should match ours.
        assert_eq!(hdr, lib.hdr);
        let facts = decode(&lib.eh_frame, lib.eh_frame_addr);
        assert!(facts.iter().any(|f| f.2.is_some()), "expected an LSDA");
        assert!(
            facts.iter().any(|f| f.3.is_some()),
            "expected a personality"
        );
    }

    const DISP: u64 = 0x10_0000;
    const OUT_EH: u64 = 0x50_0000;
    const OUT_HDR: u64 = 0x4f_0000;

    fn two_copies() -> (EhFrameLayout, Vec<u8>, Vec<u8>) {
        let lib = lib();
        let layout = EhFrameLayout::parse(&[
            EhFrameInput {
                bytes: &lib.eh_frame,
                vaddr: lib.eh_frame_addr,
            },
            EhFrameInput {
                bytes: &lib.eh_frame,
                vaddr: lib.eh_frame_addr + DISP,
            },
        ])
        .unwrap();
        let (out, hdr) = layout.emit(OUT_EH, OUT_HDR).unwrap();
        (layout, out, hdr)
    }

    #[test]
    fn two_displaced_copies_decode_with_gimli() {
        let lib = lib();
        let orig = decode(&lib.eh_frame, lib.eh_frame_addr);
        let (layout, out, _) = two_copies();
        assert_eq!(out.len() as u64, layout.eh_frame_size());
        let merged = decode(&out, OUT_EH);
        assert_eq!(merged.len(), 2 * orig.len());
        for (i, o) in orig.iter().enumerate() {
            assert_eq!(merged[i], *o);
            let m = &merged[orig.len() + i];
            assert_eq!(m.0, o.0 + DISP);
            assert_eq!(m.1, o.1);
            assert_eq!(m.2, shift(o.2, DISP));
            assert_eq!(m.3, shift(o.3, DISP));
        }
        let ranges = layout.fde_ranges(OUT_EH);
        let expect: Vec<(u64, u64)> = merged.iter().map(|m| (m.0, m.0 + m.1)).collect();
        assert_eq!(ranges, expect);
    }

    #[test]
    fn header_table_is_sorted_and_searchable() {
        let (layout, out, hdr) = two_copies();
        assert_eq!(hdr.len() as u64, layout.hdr_size());
        assert_eq!(&hdr[..4], &[1, 0x1b, 0x03, 0x3b]);
        let bases = BaseAddresses::default()
            .set_eh_frame(OUT_EH)
            .set_eh_frame_hdr(OUT_HDR);
        let parsed = EhFrameHdr::new(&hdr, LittleEndian)
            .parse(&bases, 8)
            .unwrap();
        assert_eq!(parsed.eh_frame_ptr(), Pointer::Direct(OUT_EH));
        let table = parsed.table().unwrap();
        let frame = EhFrame::new(&out, LittleEndian);
        let mut iter = table.iter(&bases);
        let mut count = 0;
        let mut last = 0;
        while let Some((pc, fde_ptr)) = iter.next().unwrap() {
            let pc = pc.direct().unwrap();
            assert!(pc >= last, "table not sorted");
            last = pc;
            let off = table.pointer_to_offset(fde_ptr).unwrap();
            let fde = frame
                .fde_from_offset(&bases, off, EhFrame::cie_from_offset)
                .unwrap();
            assert_eq!(fde.initial_address(), pc);
            count += 1;
        }
        assert_eq!(count, layout.fde_count());
        let nonempty: Vec<_> = layout
            .fde_ranges(OUT_EH)
            .into_iter()
            .filter(|r| r.1 > r.0)
            .collect();
        assert_eq!(count, nonempty.len());
        for &(begin, end) in &nonempty {
            for pc in [begin, (begin + end) / 2, end - 1] {
                let fde = table
                    .fde_for_address(&frame, &bases, pc, EhFrame::cie_from_offset)
                    .unwrap();
                assert!(fde.contains(pc));
                assert_eq!(fde.initial_address(), begin);
            }
        }
    }

    /// A minimal CIE with the given augmentation string and data, 8-aligned.
    fn cie(aug: &str, aug_data: &[u8]) -> Vec<u8> {
        let mut body = vec![0, 0, 0, 0, 1];
        body.extend_from_slice(aug.as_bytes());
        body.extend_from_slice(&[0, 1, 0x78, 16]);
        if aug.starts_with('z') {
            body.push(aug_data.len() as u8);
            body.extend_from_slice(aug_data);
        }
        while (body.len() + 4) % 8 != 0 {
            body.push(0); // DW_CFA_nop
        }
        let mut rec = (body.len() as u32).to_le_bytes().to_vec();
        rec.extend_from_slice(&body);
        rec
    }

    #[test]
    fn rejects_bad_input_cleanly() {
        let bad_letter = cie("zX", &[]);
        let err = EhFrameLayout::parse(&[
            EhFrameInput {
                bytes: &cie("zR", &[0x1b]),
                vaddr: 0,
            },
            EhFrameInput {
                bytes: &bad_letter,
                vaddr: 0,
            },
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("input 1") && err.contains("'X'"), "{err}");

        let datarel = cie("zR", &[0x3b]);
        let err = parse_one(&datarel, 0).err().unwrap().to_string();
        assert!(err.contains("application"), "{err}");

        let mut truncated = cie("zR", &[0x1b]);
        truncated.truncate(10);
        assert!(parse_one(&truncated, 0).is_err());

        let extended = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        let err = parse_one(&extended, 0).err().unwrap().to_string();
        assert!(err.contains("extended"), "{err}");

        // An FDE whose CIE pointer does not reach a CIE.
        let mut orphan = cie("zR", &[0x1b]);
        let at = orphan.len() as u32;
        orphan.extend_from_slice(&16u32.to_le_bytes());
        orphan.extend_from_slice(&(at + 8).to_le_bytes());
        orphan.extend_from_slice(&[0; 12]);
        let err = parse_one(&orphan, 0).err().unwrap().to_string();
        assert!(err.contains("CIE pointer"), "{err}");
    }

    #[test]
    fn sdata4_overflow_is_an_error() {
        let lib = lib();
        let layout = parse_one(&lib.eh_frame, lib.eh_frame_addr).unwrap();
        assert!(layout.emit(lib.eh_frame_addr + (1 << 33), 0x1000).is_err());
    }
}
