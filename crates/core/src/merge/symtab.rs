//! Writes `.symtab` and `.strtab`.

use object::elf;

use super::dynsym::{DynSymtab, StrTab};
use super::input::Part;
use super::layout::{InAddr, OutAddr, Placement};
use super::sections::OutSection;
use super::text::CodeSymbol;

/// `.symtab` naming every image's functions and objects as
/// `Image::symbol` (local), plus the global entry points.
pub fn symtab_bytes(
    parts: &[Part],
    placements: &[Placement],
    sections: &[OutSection],
    syms: &DynSymtab,
    code_symbols: &[CodeSymbol],
) -> (Vec<u8>, Vec<u8>, u32) {
    let mut strtab = StrTab::new();
    let count: usize = parts.iter().map(|p| p.symbols.len()).sum::<usize>()
        + code_symbols.len()
        + syms.exports.len();
    let mut out = Vec::with_capacity(24 * (count + 1));
    out.resize(24, 0);
    strtab.reserve(
        parts
            .iter()
            .flat_map(|p| p.symbols.iter().map(|s| p.name.len() + 3 + s.name.len()))
            .sum(),
        count,
    );
    // The section that holds the whole symbol (empty sections hold nothing).
    let shndx = |addr: OutAddr, size: u64| {
        sections
            .iter()
            .position(|s| {
                s.flags & u64::from(elf::SHF_ALLOC) != 0
                    && s.flags & u64::from(elf::SHF_TLS) == 0
                    && s.size > 0
                    && addr >= s.addr
                    && addr + size <= s.addr + s.size
            })
            .map(|i| i as u16)
    };
    let mut count = 1u32;
    for (p, pl) in parts.iter().zip(placements) {
        for s in &p.symbols {
            let value = pl.out(InAddr(s.value));
            let Some(ndx) = shndx(value, s.size) else {
                continue;
            };
            let name = strtab.add_parts(&[&p.name, "::", &s.name]);
            let t = s.info & 0xf;
            let info = (elf::STB_LOCAL << 4) | t;
            out.extend_from_slice(&name.to_le_bytes());
            out.push(info);
            out.push(elf::STV_DEFAULT);
            out.extend_from_slice(&ndx.to_le_bytes());
            out.extend_from_slice(&value.0.to_le_bytes());
            out.extend_from_slice(&s.size.to_le_bytes());
            count += 1;
        }
    }
    for c in code_symbols {
        let Some(ndx) = shndx(c.addr, c.size) else {
            continue;
        };
        let name = strtab.add(&c.name);
        out.extend_from_slice(&name.to_le_bytes());
        out.push((elf::STB_LOCAL << 4) | elf::STT_FUNC);
        out.push(elf::STV_DEFAULT);
        out.extend_from_slice(&ndx.to_le_bytes());
        out.extend_from_slice(&c.addr.0.to_le_bytes());
        out.extend_from_slice(&c.size.to_le_bytes());
        count += 1;
    }
    let first_global = count;
    for e in &syms.exports {
        let name = strtab.add(&e.name);
        out.extend_from_slice(&name.to_le_bytes());
        out.push((elf::STB_GLOBAL << 4) | elf::STT_FUNC);
        out.push(elf::STV_DEFAULT);
        out.extend_from_slice(&e.shndx.to_le_bytes());
        out.extend_from_slice(&e.value.to_le_bytes());
        out.extend_from_slice(&e.size.to_le_bytes());
    }
    (out, strtab.bytes, first_global)
}
