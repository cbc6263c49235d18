//! An oracle for PKRU-writing byte sequences, written here and not taken
//! from faasfuse: every byte offset of every page a `PF_X` segment maps
//! (read with the `object` crate), matched against WRPKRU (`0F 01 EF`),
//! XRSTOR (`0F AE`, ModRM with a memory operand and reg 5) and XRSTORS
//! (`0F C7`, memory operand, reg 3).

use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Object, ObjectSymbol};

/// One sequence: its address and its kind (`wrpkru`, `xrstor`, `xrstors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub address: u64,
    pub kind: &'static str,
}

fn kind_at(b: &[u8]) -> Option<&'static str> {
    if b.len() < 3 {
        return None;
    }
    let (m, reg) = (b[2], (b[2] >> 3) & 7);
    let memory = m < 0xc0;
    match (b[0], b[1]) {
        (0x0f, 0x01) if m == 0xef => Some("wrpkru"),
        (0x0f, 0xae) if memory && reg == 5 => Some("xrstor"),
        (0x0f, 0xc7) if memory && reg == 3 => Some("xrstors"),
        _ => None,
    }
}

/// Every sequence in the pages the `PF_X` segments of the ELF file `data`
/// map (their file bytes, with the rest of their first and last pages).
pub fn sequences(data: &[u8]) -> Vec<Found> {
    let elf = ElfFile64::<object::Endianness>::parse(data).unwrap();
    let e = elf.endian();
    let mut out = Vec::new();
    for ph in elf.elf_header().program_headers(e, data).unwrap() {
        if ph.p_type(e) != object::elf::PT_LOAD || ph.p_flags(e) & object::elf::PF_X == 0 {
            continue;
        }
        let (off, vaddr, filesz) = (ph.p_offset(e), ph.p_vaddr(e), ph.p_filesz(e));
        let lead = off % 4096;
        let mut end = (off + filesz).div_ceil(4096) * 4096;
        if ph.p_memsz(e) > filesz {
            end = off + filesz;
        }
        let bytes = &data[(off - lead) as usize..(end as usize).min(data.len())];
        for i in 0..bytes.len() {
            if let Some(kind) = kind_at(&bytes[i..]) {
                out.push(Found {
                    address: vaddr - lead + i as u64,
                    kind,
                });
            }
        }
    }
    out
}

/// `[start, end)` of every symbol of `.symtab` whose name starts with
/// `prefix`.
pub fn symbol_ranges(data: &[u8], prefix: &str) -> Vec<(String, u64, u64)> {
    let f = object::File::parse(data).unwrap();
    f.symbols()
        .filter_map(|s| {
            let name = s.name().ok()?;
            name.starts_with(prefix)
                .then(|| (name.to_string(), s.address(), s.address() + s.size()))
        })
        .collect()
}
