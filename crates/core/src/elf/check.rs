//! Up-front validation: reject what faasfuse cannot handle with a reason a
//! user understands, before any deeper parsing.

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader, SectionHeader, Sym};
use object::LittleEndian as LE;

/// Size of an ELF64 file header.
const EHDR64: usize = 64;

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
