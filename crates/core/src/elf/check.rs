//! Up-front validation: reject what faasfuse cannot handle with a reason a
//! user understands, before any deeper parsing.

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, SectionHeader, Sym};

use super::loader::LoaderView;
use super::DynReloc;
use object::LittleEndian as LE;

/// Size of an ELF64 file header.
const EHDR64: usize = 64;

/// The highest `EI_ABIVERSION` glibc's loader takes with `ELFOSABI_GNU`
/// (unique symbols, IFUNCs, absolute symbols, and the ones after).
const MAX_GNU_ABIVERSION: u8 = 3;

fn machine_name(m: u16) -> String {
    match m {
        elf::EM_386 => "i386 (EM_386)".into(),
        elf::EM_ARM => "32-bit ARM (EM_ARM)".into(),
        elf::EM_AARCH64 => "AArch64 (EM_AARCH64)".into(),
        elf::EM_RISCV => "RISC-V (EM_RISCV)".into(),
        elf::EM_PPC64 => "PowerPC64 (EM_PPC64)".into(),
        elf::EM_S390 => "s390 (EM_S390)".into(),
        other => format!("machine {other}"),
    }
}

fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

fn u64_at(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}

/// Check the identification and the header tables' bounds.
pub(super) fn header(d: &[u8]) -> Result<(), String> {
    if d.is_empty() {
        return Err("empty file, not a shared object".into());
    }
    if d.len() < 4 || &d[..4] != b"\x7fELF" {
        return Err("not an ELF file (bad magic)".into());
    }
    if d.len() < 16 {
        return Err(format!("truncated ELF header ({} bytes)", d.len()));
    }
    match d[4] {
        elf::ELFCLASS64 => {}
        elf::ELFCLASS32 => {
            return Err("32-bit ELF (ELFCLASS32); faasfuse handles 64-bit x86-64 only".into())
        }
        c => return Err(format!("unknown ELF class {c}")),
    }
    if d[5] != elf::ELFDATA2LSB {
        return Err("big-endian ELF; faasfuse handles little-endian x86-64 only".into());
    }
    // What ld.so checks of the identification before it maps anything.
    if d[6] != elf::EV_CURRENT {
        return Err(format!(
            "ELF identification version {} (EI_VERSION), not 1",
            d[6]
        ));
    }
    match (d[7], d[8]) {
        (elf::ELFOSABI_SYSV, 0) => {}
        (elf::ELFOSABI_GNU, v) if v <= MAX_GNU_ABIVERSION => {}
        (elf::ELFOSABI_SYSV | elf::ELFOSABI_GNU, v) => {
            return Err(format!(
                "ELF ABI version {v} (EI_ABIVERSION) for OS ABI {}, which the dynamic linker refuses",
                d[7]
            ))
        }
        (osabi, _) => {
            return Err(format!(
                "built for OS ABI {osabi} (EI_OSABI), not System V or GNU/Linux: the dynamic linker refuses it"
            ))
        }
    }
    if d[9..16].iter().any(|&b| b != 0) {
        return Err(
            "nonzero padding in the ELF identification (EI_PAD), which the dynamic linker refuses"
                .into(),
        );
    }
    if d.len() < EHDR64 {
        return Err(format!(
            "truncated: ELF header needs {EHDR64} bytes, file has {}",
            d.len()
        ));
    }
    let machine = u16_at(d, 18);
    if machine != elf::EM_X86_64 {
        return Err(format!("built for {}, not x86-64", machine_name(machine)));
    }
    match u16_at(d, 16) {
        elf::ET_DYN => {}
        elf::ET_EXEC => return Err("an executable (ET_EXEC), not a shared object".into()),
        elf::ET_REL => {
            return Err(
                "a relocatable object (ET_REL), not a shared object; link it with -shared".into(),
            )
        }
        elf::ET_CORE => return Err("a core dump, not a shared object".into()),
        t => return Err(format!("ELF type {t}, not a shared object")),
    }
    let len = d.len() as u64;
    let table = |what: &str, off: u64, num: u16, size: u16| -> Result<(), String> {
        let end = off.saturating_add(u64::from(num) * u64::from(size));
        if num > 0 && end > len {
            Err(format!(
                "truncated: {what} table at offset {off:#x}..{end:#x} lies beyond the end of the file ({len:#x} bytes)"
            ))
        } else {
            Ok(())
        }
    };
    table(
        "program header",
        u64_at(d, 32),
        u16_at(d, 56),
        u16_at(d, 54),
    )?;
    table(
        "section header",
        u64_at(d, 40),
        u16_at(d, 60),
        u16_at(d, 58),
    )?;
    Ok(())
}

/// Every loadable segment and every section with file contents lies within
/// the file.
pub(super) fn ranges(file: &ElfFile64<LE>, len: u64) -> Result<(), String> {
    let e = LE;
    let h = file.elf_header();
    if h.e_phnum(e) == 0 {
        return Err("no program headers: not a loadable shared object".into());
    }
    for p in file.elf_program_headers() {
        let end = p.p_offset(e).saturating_add(p.p_filesz(e));
        if end > len {
            return Err(format!(
                "truncated: segment at offset {:#x} ends at {end:#x}, beyond the end of the file ({len:#x} bytes)",
                p.p_offset(e)
            ));
        }
    }
    for p in file.elf_program_headers() {
        let t = p.p_type(e);
        if p.p_vaddr(e).checked_add(p.p_memsz(e)).is_none() {
            return Err(format!(
                "program header {t:#x}: p_vaddr + p_memsz ({:#x} + {:#x}) overflows",
                p.p_vaddr(e),
                p.p_memsz(e)
            ));
        }
        let (limit, name) = match t {
            elf::PT_LOAD => (2u64 << 20, "PT_LOAD"),
            elf::PT_TLS => (64 << 10, "PT_TLS"),
            _ => continue,
        };
        let a = p.p_align(e);
        if a > limit || (a > 1 && !a.is_power_of_two()) {
            return Err(format!(
                "{name} p_align {a:#x} is not a power of two up to {limit:#x}"
            ));
        }
    }
    for symbols in [file.elf_symbol_table(), file.elf_dynamic_symbol_table()] {
        for (i, s) in symbols.iter().enumerate() {
            if s.st_value(e).checked_add(s.st_size(e)).is_none() {
                let name = s
                    .name(e, symbols.strings())
                    .map(|n| String::from_utf8_lossy(n).into_owned())
                    .unwrap_or_else(|_| format!("#{i}"));
                return Err(format!(
                    "symbol {name}: st_value + st_size ({:#x} + {:#x}) overflows",
                    s.st_value(e),
                    s.st_size(e)
                ));
            }
        }
    }
    let table = file.elf_section_table();
    for s in table.iter() {
        if s.sh_type(e) == elf::SHT_NOBITS {
            continue;
        }
        let end = s.sh_offset(e).saturating_add(s.sh_size(e));
        if end > len {
            let name = table
                .section_name(e, s)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_else(|_| "?".into());
            return Err(format!(
                "truncated: section {name} ends at offset {end:#x}, beyond the end of the file ({len:#x} bytes)"
            ));
        }
    }
    Ok(())
}

/// What ld.so would do with the image holds as faasfuse reads it: every
/// lazy-binding slot binds a symbol with no addend (ld.so jumps to the
/// symbol plus the addend; linkers write 0), and the section headers
/// faasfuse reads agree with the program headers and the dynamic segment
/// (ld.so reads only those, so a header that disagrees is damage that
/// would mislead the merge).
pub(super) fn agrees_with_loader(
    file: &ElfFile64<LE>,
    view: &LoaderView,
    relocs: &[DynReloc],
) -> Result<(), String> {
    let e = LE;
    for r in relocs
        .iter()
        .filter(|r| r.r_type == elf::R_X86_64_JUMP_SLOT)
    {
        if r.symbol.is_none() {
            return Err(format!(
                "lazy-binding slot at {:#x} (R_X86_64_JUMP_SLOT) names no symbol",
                r.offset
            ));
        }
        if r.addend != 0 {
            return Err(format!(
                "lazy-binding slot at {:#x} (R_X86_64_JUMP_SLOT) has addend {}: ld.so would bind it to {} plus that",
                r.offset,
                r.addend,
                r.symbol.as_deref().unwrap_or("?")
            ));
        }
    }
    let table = file.elf_section_table();
    let disagree = |what: String| {
        Err(format!(
            "its section headers disagree with what the dynamic linker reads: {what}"
        ))
    };
    for s in table.iter() {
        let addr = s.sh_addr(e);
        match s.sh_type(e) {
            elf::SHT_DYNSYM => {
                let symtab = view.get(elf::DT_SYMTAB);
                if symtab != Some(addr) {
                    return disagree(format!(".dynsym at {addr:#x}, DT_SYMTAB {symtab:#x?}"));
                }
                let entries = s.sh_size(e) / 24;
                if let Some(n) = view.symbol_count()? {
                    if n != entries {
                        return disagree(format!(
                            ".dynsym holds {entries} symbols, the hash table {n}"
                        ));
                    }
                }
                let strtab = view.get(elf::DT_STRTAB);
                let linked = table
                    .section(object::SectionIndex(s.sh_link(e) as usize))
                    .map(|l| l.sh_addr(e))
                    .ok();
                if linked.is_none() || linked != strtab {
                    return disagree(format!(
                        ".dynsym's strings at {linked:#x?}, DT_STRTAB {strtab:#x?}"
                    ));
                }
            }
            elf::SHT_DYNAMIC => {
                let seg = view.dynamic_range.map(|r| r.0);
                if seg != Some(addr) {
                    return disagree(format!(".dynamic at {addr:#x}, PT_DYNAMIC {seg:#x?}"));
                }
            }
            _ => {
                let name = table.section_name(e, s).unwrap_or_default();
                if name == b".eh_frame" && view.eh_frame_hdr.is_some() {
                    let start = view.eh_frame_start();
                    if start != Some(addr) {
                        return disagree(format!(
                            ".eh_frame at {addr:#x}, PT_GNU_EH_FRAME's header points at {start:#x?}"
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
