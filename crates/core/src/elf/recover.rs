//! Section headers for a library that has none (`objcopy --strip-sections`
//! and `sstrip`-style tools remove them; ld.so never reads them). Every
//! section written here is one the loader's own view locates: the tables
//! the dynamic segment points at, with the extents their contents imply,
//! the program headers' notes, TLS, unwind tables and dynamic segment, and
//! what is left of each loadable segment as plain code or data. The rest
//! of faasfuse then reads the copy as it reads any library, and its checks
//! that sections agree with the loader hold by construction.
//!
//! No section is guessed: where two tables the loader locates overlap, or
//! one lies outside the loaded bytes, there is no recovery and the input
//! is refused.

use object::elf;

use super::loader::{u16_at, u32_at, u64_at, LoaderView, DT_RELR, DT_RELRSZ};

const SHT_RELR: u32 = 19;

/// One section to write.
#[derive(Debug, Clone)]
struct Recovered {
    name: &'static str,
    sh_type: u32,
    flags: u32,
    addr: u64,
    size: u64,
    /// Name of the section `sh_link` refers to.
    link: Option<&'static str>,
    info: u32,
    entsize: u64,
    align: u64,
}

/// A program header's fields this module needs.
#[derive(Debug, Clone, Copy)]
struct Phdr {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn phdrs(data: &[u8]) -> Option<Vec<Phdr>> {
    let phoff = usize::try_from(u64_at(data, 32)?).ok()?;
    let entsize = usize::from(u16_at(data, 54)?);
    (0..usize::from(u16_at(data, 56)?))
        .map(|i| {
            let h = phoff.checked_add(i.checked_mul(entsize)?)?;
            Some(Phdr {
                p_type: u32_at(data, h)?,
                flags: u32_at(data, h + 4)?,
                offset: u64_at(data, h + 8)?,
                vaddr: u64_at(data, h + 16)?,
                filesz: u64_at(data, h + 32)?,
                memsz: u64_at(data, h + 40)?,
            })
        })
        .collect()
}

/// The largest power of two, up to a page, that `addr` is a multiple of:
/// the alignment a recovered section can promise.
fn align_of(addr: u64) -> u64 {
    1 << addr.trailing_zeros().min(12)
}

/// How a table the dynamic segment points at is sized.
#[derive(Clone, Copy)]
enum Size {
    /// By another dynamic tag.
    Tag(u32),
    /// By its own contents ([`LoaderView::extent`]).
    Extent,
}

/// One table the dynamic segment locates: (name, address tag, size, type,
/// writable, link, entry size).
type DynTable = (
    &'static str,
    u32,
    Size,
    u32,
    bool,
    Option<&'static str>,
    u64,
);

#[rustfmt::skip]
const DYN_TABLES: &[DynTable] = &[
    (".dynsym", elf::DT_SYMTAB, Size::Extent, elf::SHT_DYNSYM, false, Some(".dynstr"), 24),
    (".dynstr", elf::DT_STRTAB, Size::Tag(elf::DT_STRSZ), elf::SHT_STRTAB, false, None, 0),
    (".gnu.hash", elf::DT_GNU_HASH, Size::Extent, elf::SHT_GNU_HASH, false, Some(".dynsym"), 0),
    (".hash", elf::DT_HASH, Size::Extent, elf::SHT_HASH, false, Some(".dynsym"), 4),
    (".gnu.version", elf::DT_VERSYM, Size::Extent, elf::SHT_GNU_VERSYM, false, Some(".dynsym"), 2),
    (".gnu.version_d", elf::DT_VERDEF, Size::Extent, elf::SHT_GNU_VERDEF, false, Some(".dynstr"), 0),
    (".gnu.version_r", elf::DT_VERNEED, Size::Extent, elf::SHT_GNU_VERNEED, false, Some(".dynstr"), 0),
    (".rela.dyn", elf::DT_RELA, Size::Tag(elf::DT_RELASZ), elf::SHT_RELA, false, Some(".dynsym"), 24),
    (".rela.plt", elf::DT_JMPREL, Size::Tag(elf::DT_PLTRELSZ), elf::SHT_RELA, false, Some(".dynsym"), 24),
    (".relr.dyn", DT_RELR, Size::Tag(DT_RELRSZ), SHT_RELR, false, None, 8),
    (".init_array", elf::DT_INIT_ARRAY, Size::Tag(elf::DT_INIT_ARRAYSZ), elf::SHT_INIT_ARRAY, true, None, 8),
    (".fini_array", elf::DT_FINI_ARRAY, Size::Tag(elf::DT_FINI_ARRAYSZ), elf::SHT_FINI_ARRAY, true, None, 8),
];

/// A table section at `addr` (tables promise at most 8-byte alignment).
fn table(name: &'static str, sh_type: u32, flags: u32, addr: u64, size: u64) -> Recovered {
    Recovered {
        align: align_of(addr).min(8),
        ..gap(name, sh_type, flags, addr, size)
    }
}

/// Sections for the tables the dynamic segment and program headers locate.
fn tables(view: &LoaderView, ph: &[Phdr]) -> Result<Vec<Recovered>, String> {
    let (a, wa) = (elf::SHF_ALLOC, elf::SHF_ALLOC | elf::SHF_WRITE);
    let mut out = Vec::new();
    if view.get(elf::DT_SYMTAB).is_none() || view.get(elf::DT_STRTAB).is_none() {
        return Err("no dynamic symbol or string table (DT_SYMTAB, DT_STRTAB)".into());
    }
    for &(name, tag, size, sh_type, writable, link, entsize) in DYN_TABLES {
        let Some(addr) = view.get(tag) else { continue };
        let size = match size {
            Size::Tag(t) => view.get(t),
            Size::Extent => view.extent(tag),
        }
        .ok_or_else(|| format!("the size of its {name} cannot be read"))?;
        let info = match tag {
            elf::DT_SYMTAB => first_global(view, addr, size),
            elf::DT_VERDEF => view.get(elf::DT_VERDEFNUM).unwrap_or(0) as u32,
            elf::DT_VERNEED => view.get(elf::DT_VERNEEDNUM).unwrap_or(0) as u32,
            _ => 0,
        };
        out.push(Recovered {
            link,
            info,
            entsize,
            ..table(name, sh_type, if writable { wa } else { a }, addr, size)
        });
    }
    if let Some((addr, size)) = view.interp {
        out.push(table(".interp", elf::SHT_PROGBITS, a, addr, size));
    }
    for &(addr, size) in &view.notes {
        out.push(table(".note", elf::SHT_NOTE, a, addr, size));
    }
    if let Some((addr, size)) = view.dynamic_range {
        let dynamic = table(".dynamic", elf::SHT_DYNAMIC, wa, addr, size);
        out.push(Recovered {
            link: Some(".dynstr"),
            entsize: 16,
            ..dynamic
        });
    }
    if let Some((addr, size)) = view.eh_frame_hdr {
        out.push(table(".eh_frame_hdr", elf::SHT_PROGBITS, a, addr, size));
        if let Some(start) = view.eh_frame_start() {
            let size = view
                .eh_frame_extent(start)
                .ok_or("the unwind table (.eh_frame) cannot be read")?;
            out.push(table(".eh_frame", elf::SHT_PROGBITS, a, start, size));
        }
    }
    let tls = wa | elf::SHF_TLS;
    for p in ph.iter().filter(|p| p.p_type == elf::PT_TLS) {
        if p.filesz > 0 {
            out.push(table(".tdata", elf::SHT_PROGBITS, tls, p.vaddr, p.filesz));
        }
        if p.memsz > p.filesz {
            let at = p.vaddr + p.filesz;
            out.push(table(".tbss", elf::SHT_NOBITS, tls, at, p.memsz - p.filesz));
        }
    }
    Ok(out)
}

/// `sh_info` of `.dynsym`: one past the last local symbol.
fn first_global(view: &LoaderView, addr: u64, size: u64) -> u32 {
    let Some(bytes) = view.bytes(addr, size) else {
        return 1;
    };
    bytes
        .chunks_exact(24)
        .position(|s| s[4] >> 4 != elf::STB_LOCAL)
        .unwrap_or(bytes.len() / 24) as u32
}

/// Sections for what each loadable segment holds beyond the tables: code,
/// read-only data, data and zero-initialised data.
fn fill(ph: &[Phdr], tables: &[Recovered], headers: &[(u64, u64)]) -> Vec<Recovered> {
    let mut out = Vec::new();
    for p in ph.iter().filter(|p| p.p_type == elf::PT_LOAD) {
        let (name, flags) = if p.flags & elf::PF_X != 0 {
            (".text", elf::SHF_ALLOC | elf::SHF_EXECINSTR)
        } else if p.flags & elf::PF_W != 0 {
            (".data", elf::SHF_ALLOC | elf::SHF_WRITE)
        } else {
            (".rodata", elf::SHF_ALLOC)
        };
        let mut taken: Vec<(u64, u64)> = tables
            .iter()
            .filter(|t| t.flags & elf::SHF_TLS == 0 || t.sh_type != elf::SHT_NOBITS)
            .map(|t| (t.addr, t.addr + t.size))
            .collect();
        // The ELF header and program headers stay outside every section.
        taken.extend_from_slice(headers);
        taken.sort_unstable();
        let mut at = p.vaddr;
        let file_end = p.vaddr + p.filesz;
        for (start, end) in taken.into_iter().chain([(file_end, file_end)]) {
            if start > file_end || end < p.vaddr {
                continue;
            }
            if start > at {
                out.push(gap(
                    name,
                    elf::SHT_PROGBITS,
                    flags,
                    at,
                    start.min(file_end) - at,
                ));
            }
            at = at.max(end);
        }
        if p.memsz > p.filesz {
            out.push(gap(
                ".bss",
                elf::SHT_NOBITS,
                elf::SHF_ALLOC | elf::SHF_WRITE,
                file_end,
                p.memsz - p.filesz,
            ));
        }
    }
    out
}

/// A section of what a segment holds beyond its tables, at `addr`.
fn gap(name: &'static str, sh_type: u32, flags: u32, addr: u64, size: u64) -> Recovered {
    Recovered {
        name,
        sh_type,
        flags,
        addr,
        size,
        link: None,
        info: 0,
        entsize: 0,
        align: align_of(addr),
    }
}

/// A copy of `data` (a library without section headers) with a section
/// header table recovered from what the loader reads; `Err` with the
/// reason when that cannot be done without guessing.
pub fn with_sections(data: &[u8]) -> Result<Vec<u8>, String> {
    let view = LoaderView::read(data)?;
    let ph = phdrs(data).ok_or("truncated program header table")?;
    for p in &ph {
        let in_file = p
            .offset
            .checked_add(p.filesz)
            .is_some_and(|end| end <= data.len() as u64);
        if p.vaddr.checked_add(p.memsz.max(p.filesz)).is_none()
            || (p.p_type == elf::PT_LOAD && !in_file)
        {
            return Err(format!(
                "its program header at {:#x} (+{:#x}) does not fit the address space or the file",
                p.vaddr, p.memsz
            ));
        }
    }
    let mut sections = tables(&view, &ph)?;
    if let Some(t) = sections
        .iter()
        .find(|t| t.addr.checked_add(t.size).is_none())
    {
        return Err(format!(
            "its {} at {:#x} (+{:#x}) does not fit the address space",
            t.name, t.addr, t.size
        ));
    }
    sections.sort_by_key(|s| (s.addr, s.size));
    for w in sections.windows(2) {
        let (x, y) = (&w[0], &w[1]);
        let tls_bss = |s: &Recovered| s.sh_type == elf::SHT_NOBITS;
        if x.addr + x.size > y.addr && !tls_bss(x) && !tls_bss(y) {
            return Err(format!(
                "its {} and {} overlap (at {:#x} and {:#x}), so its sections cannot be recovered",
                x.name, y.name, x.addr, y.addr
            ));
        }
    }
    let offset_of = |s: &Recovered| -> Result<u64, String> {
        if s.sh_type == elf::SHT_NOBITS {
            return Ok(0);
        }
        ph.iter()
            .filter(|p| p.p_type == elf::PT_LOAD)
            .find(|p| s.addr >= p.vaddr && s.addr + s.size <= p.vaddr + p.filesz)
            .map(|p| p.offset + (s.addr - p.vaddr))
            .ok_or_else(|| {
                format!(
                    "its {} at {:#x} (+{:#x}) lies outside the file's loaded bytes",
                    s.name, s.addr, s.size
                )
            })
    };
    sections.extend(fill(&ph, &sections, &view.headers()));
    sections.sort_by_key(|s| (s.addr, s.sh_type == elf::SHT_NOBITS, s.size));
    write(data, &sections, offset_of)
}

/// Append the string table and the section header table to a copy of
/// `data` and point the ELF header at them.
fn write(
    data: &[u8],
    sections: &[Recovered],
    offset_of: impl Fn(&Recovered) -> Result<u64, String>,
) -> Result<Vec<u8>, String> {
    let mut names = vec![0u8];
    let mut name_at = std::collections::BTreeMap::new();
    for n in sections.iter().map(|s| s.name).chain([".shstrtab"]) {
        name_at.entry(n).or_insert_with(|| {
            let at = names.len() as u32;
            names.extend_from_slice(n.as_bytes());
            names.push(0);
            at
        });
    }
    let index_of = |name: &str| {
        sections
            .iter()
            .position(|s| s.name == name)
            .map_or(0, |i| i as u32 + 1)
    };
    let mut out = data.to_vec();
    let strtab_at = out.len() as u64;
    out.extend_from_slice(&names);
    out.resize(out.len().next_multiple_of(8), 0);
    let shoff = out.len() as u64;
    let header = |out: &mut Vec<u8>, fields: (u32, u32, u64, u64, u64, u64, u32, u32, u64, u64)| {
        let (name, ty, flags, addr, off, size, link, info, align, entsize) = fields;
        out.extend_from_slice(&name.to_le_bytes());
        out.extend_from_slice(&ty.to_le_bytes());
        for v in [flags, addr, off, size] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&link.to_le_bytes());
        out.extend_from_slice(&info.to_le_bytes());
        out.extend_from_slice(&align.to_le_bytes());
        out.extend_from_slice(&entsize.to_le_bytes());
    };
    header(&mut out, (0, 0, 0, 0, 0, 0, 0, 0, 0, 0));
    for s in sections {
        let link = s.link.map_or(0, index_of);
        header(
            &mut out,
            (
                name_at[s.name],
                s.sh_type,
                u64::from(s.flags),
                s.addr,
                offset_of(s)?,
                s.size,
                link,
                s.info,
                s.align,
                s.entsize,
            ),
        );
    }
    header(
        &mut out,
        (
            name_at[".shstrtab"],
            elf::SHT_STRTAB,
            0,
            0,
            strtab_at,
            names.len() as u64,
            0,
            0,
            1,
            0,
        ),
    );
    let count = sections.len() as u16 + 2;
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    out[60..62].copy_from_slice(&count.to_le_bytes());
    out[62..64].copy_from_slice(&(count - 1).to_le_bytes());
    Ok(out)
}
