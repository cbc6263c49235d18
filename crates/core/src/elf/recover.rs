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

use super::loader::{LoaderView, DT_RELR, DT_RELRSZ};

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

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
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

/// Sections for the tables the dynamic segment and program headers locate.
fn tables(view: &LoaderView, ph: &[Phdr]) -> Result<Vec<Recovered>, String> {
    let a = u64::from(elf::SHF_ALLOC);
    let wa = a | u64::from(elf::SHF_WRITE);
    let mut out = Vec::new();
    let mut push = |name, sh_type, flags: u64, addr, size, link, info, entsize| {
        out.push(Recovered {
            name,
            sh_type,
            flags: flags as u32,
            addr,
            size,
            link,
            info,
            entsize,
            align: align_of(addr).min(8),
        })
    };
    let extent = |tag: u32, what: &str| {
        view.extent(tag)
            .ok_or_else(|| format!("the extent of {what} cannot be read"))
    };
    let sized = |addr_tag: u32, size_tag: u32| Some((view.get(addr_tag)?, view.get(size_tag)?));

    if let Some((addr, size)) = view.interp {
        push(".interp", elf::SHT_PROGBITS, a, addr, size, None, 0, 0);
    }
    for &(addr, size) in &view.notes {
        push(".note", elf::SHT_NOTE, a, addr, size, None, 0, 0);
    }
    let dynsym = view
        .get(elf::DT_SYMTAB)
        .ok_or("no dynamic symbol table (DT_SYMTAB)")?;
    let dynsym_size = extent(elf::DT_SYMTAB, "the dynamic symbol table (DT_SYMTAB)")?;
    let locals = first_global(view, dynsym, dynsym_size);
    push(
        ".dynsym",
        elf::SHT_DYNSYM,
        a,
        dynsym,
        dynsym_size,
        Some(".dynstr"),
        locals,
        24,
    );
    let (strtab, strsz) = sized(elf::DT_STRTAB, elf::DT_STRSZ)
        .ok_or("no dynamic string table (DT_STRTAB, DT_STRSZ)")?;
    push(".dynstr", elf::SHT_STRTAB, a, strtab, strsz, None, 0, 0);
    if let Some(addr) = view.get(elf::DT_GNU_HASH) {
        let size = extent(elf::DT_GNU_HASH, "DT_GNU_HASH")?;
        push(
            ".gnu.hash",
            elf::SHT_GNU_HASH,
            a,
            addr,
            size,
            Some(".dynsym"),
            0,
            0,
        );
    }
    if let Some(addr) = view.get(elf::DT_HASH) {
        let size = extent(elf::DT_HASH, "DT_HASH")?;
        push(".hash", elf::SHT_HASH, a, addr, size, Some(".dynsym"), 0, 4);
    }
    if let Some(addr) = view.get(elf::DT_VERSYM) {
        let size = extent(elf::DT_VERSYM, "DT_VERSYM")?;
        push(
            ".gnu.version",
            elf::SHT_GNU_VERSYM,
            a,
            addr,
            size,
            Some(".dynsym"),
            0,
            2,
        );
    }
    for (tag, num, name, sh_type) in [
        (
            elf::DT_VERDEF,
            elf::DT_VERDEFNUM,
            ".gnu.version_d",
            elf::SHT_GNU_VERDEF,
        ),
        (
            elf::DT_VERNEED,
            elf::DT_VERNEEDNUM,
            ".gnu.version_r",
            elf::SHT_GNU_VERNEED,
        ),
    ] {
        if let Some(addr) = view.get(tag) {
            let size = extent(tag, name)?;
            let count = view.get(num).unwrap_or(0) as u32;
            push(name, sh_type, a, addr, size, Some(".dynstr"), count, 0);
        }
    }
    if let Some((addr, size)) = sized(elf::DT_RELA, elf::DT_RELASZ) {
        push(
            ".rela.dyn",
            elf::SHT_RELA,
            a,
            addr,
            size,
            Some(".dynsym"),
            0,
            24,
        );
    }
    if let Some((addr, size)) = sized(elf::DT_JMPREL, elf::DT_PLTRELSZ) {
        push(
            ".rela.plt",
            elf::SHT_RELA,
            a,
            addr,
            size,
            Some(".dynsym"),
            0,
            24,
        );
    }
    if let Some((addr, size)) = sized(DT_RELR, DT_RELRSZ) {
        push(".relr.dyn", SHT_RELR, a, addr, size, None, 0, 8);
    }
    if let Some((addr, size)) = sized(elf::DT_INIT_ARRAY, elf::DT_INIT_ARRAYSZ) {
        push(
            ".init_array",
            elf::SHT_INIT_ARRAY,
            wa,
            addr,
            size,
            None,
            0,
            8,
        );
    }
    if let Some((addr, size)) = sized(elf::DT_FINI_ARRAY, elf::DT_FINI_ARRAYSZ) {
        push(
            ".fini_array",
            elf::SHT_FINI_ARRAY,
            wa,
            addr,
            size,
            None,
            0,
            8,
        );
    }
    if let Some((addr, size)) = view.dynamic_range {
        push(
            ".dynamic",
            elf::SHT_DYNAMIC,
            wa,
            addr,
            size,
            Some(".dynstr"),
            0,
            16,
        );
    }
    if let Some((addr, size)) = view.eh_frame_hdr {
        push(
            ".eh_frame_hdr",
            elf::SHT_PROGBITS,
            a,
            addr,
            size,
            None,
            0,
            0,
        );
        if let Some(start) = view.eh_frame_start() {
            let size = view
                .eh_frame_extent(start)
                .ok_or("the unwind table (.eh_frame) cannot be read")?;
            push(".eh_frame", elf::SHT_PROGBITS, a, start, size, None, 0, 0);
        }
    }
    for p in ph.iter().filter(|p| p.p_type == elf::PT_TLS) {
        let tls = wa | u64::from(elf::SHF_TLS);
        if p.filesz > 0 {
            push(
                ".tdata",
                elf::SHT_PROGBITS,
                tls,
                p.vaddr,
                p.filesz,
                None,
                0,
                0,
            );
        }
        if p.memsz > p.filesz {
            let at = p.vaddr + p.filesz;
            push(
                ".tbss",
                elf::SHT_NOBITS,
                tls,
                at,
                p.memsz - p.filesz,
                None,
                0,
                0,
            );
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
