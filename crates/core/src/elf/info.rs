//! The facts about an image that decide whether and how it can be fused.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use object::elf;
use object::read::elf::{Dyn, ElfFile64, ProgramHeader, SectionHeader, SectionTable, Sym};
use object::read::Result;
use object::LittleEndian as LE;
use serde::Serialize;

use super::loader::DT_RELR;
use super::ENTRY_POINTS;

#[derive(Debug, Clone, Serialize)]
pub struct EntryPoint {
    pub name: String,
    /// `None` when the image does not export it.
    pub address: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TlsInfo {
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionNeed {
    pub file: String,
    pub versions: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VersionInfo {
    /// Versions required from each needed library.
    pub needed: Vec<VersionNeed>,
    /// Versions this image defines (without the base version).
    pub defined: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RelroInfo {
    pub start: u64,
    pub end: u64,
}

/// Intel CET markings from `.note.gnu.property`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CetInfo {
    pub ibt: bool,
    pub shstk: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct InitFini {
    pub init: Option<u64>,
    pub fini: Option<u64>,
    pub init_array: usize,
    pub fini_array: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FunctionSymbol {
    pub name: String,
    pub address: u64,
    pub size: u64,
    /// `global`, `weak` or `local`.
    pub binding: &'static str,
    /// Visible to the dynamic linker.
    pub exported: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SectionEntry {
    pub name: String,
    pub kind: String,
    pub address: u64,
    pub offset: u64,
    pub size: u64,
    pub flags: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SegmentEntry {
    pub kind: String,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub flags: String,
    pub align: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub machine: String,
    pub class: u32,
    pub elf_type: String,
    /// Position-independent: no text relocations.
    pub pic: bool,
    pub soname: Option<String>,
    pub build_id: Option<String>,
    pub needed: Vec<String>,
    pub entry_points: Vec<EntryPoint>,
    pub tls: Option<TlsInfo>,
    /// Functions resolved at load time through an IFUNC resolver.
    pub ifuncs: Vec<String>,
    pub irelative_relocs: usize,
    pub versions: VersionInfo,
    pub relro: Option<RelroInfo>,
    pub bind_now: bool,
    pub cet: CetInfo,
    /// Functions that start with an `endbr64` landing pad
    /// (`-fcf-protection`), whether or not the image is marked; counted
    /// for `inspect` only (it reads a page of code per function).
    pub endbr_functions: usize,
    /// Static relocations kept by `-Wl,--emit-relocs`.
    pub emit_relocs: bool,
    pub debug_info: bool,
    /// Packed relative relocations (`DT_RELR`).
    pub relr: bool,
    /// Dynamic relocation counts by type.
    pub dynamic_relocs: BTreeMap<String, usize>,
    pub init_fini: InitFini,
    /// No `.symtab`: only exported functions are named.
    pub stripped: bool,
    /// Why the section headers were not read (absent, or not agreeing
    /// with the loader): the sections were recovered from the program
    /// headers and the dynamic segment instead.
    pub sections_recovered: Option<String>,
    pub functions: Vec<FunctionSymbol>,
    pub sections: Vec<SectionEntry>,
    pub segments: Vec<SegmentEntry>,
}

type File<'a> = ElfFile64<'a, LE>;
type Table<'a> = SectionTable<'a, object::elf::FileHeader64<LE>, &'a [u8]>;

const E: LE = LE;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(super) fn collect(file: &File) -> Result<ImageInfo> {
    let data = file.data();
    let table = file.elf_section_table();
    let dynamic = dynamic_entries(table, data)?;
    let tag = |t: u32| {
        dynamic
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.clone())
    };
    let tag_val = |t: u32| {
        dynamic.iter().find_map(|(k, v)| match v {
            DynValue::Num(n) if *k == t => Some(*n),
            _ => None,
        })
    };
    let needed = dynamic
        .iter()
        .filter(|(k, _)| *k == elf::DT_NEEDED)
        .filter_map(|(_, v)| v.string())
        .collect();
    let flags = tag_val(elf::DT_FLAGS).unwrap_or(0);
    let flags1 = tag_val(elf::DT_FLAGS_1).unwrap_or(0);
    let bind_now = tag(elf::DT_BIND_NOW).is_some()
        || flags & u64::from(elf::DF_BIND_NOW) != 0
        || flags1 & u64::from(elf::DF_1_NOW) != 0;
    let textrel = tag(elf::DT_TEXTREL).is_some() || flags & u64::from(elf::DF_TEXTREL) != 0;

    let functions = functions(file, table, data)?;
    // An entry point is the last exported function of its name (by
    // address), as a map from names would keep it.
    let entry_points = ENTRY_POINTS
        .iter()
        .map(|n| EntryPoint {
            name: n.to_string(),
            address: functions
                .iter()
                .rev()
                .find(|f| f.exported && f.name == *n)
                .map(|f| f.address),
        })
        .collect();

    let phdrs = file.elf_program_headers();
    let tls = phdrs
        .iter()
        .find(|p| p.p_type(E) == elf::PT_TLS)
        .map(|p| TlsInfo {
            vaddr: p.p_vaddr(E),
            filesz: p.p_filesz(E),
            memsz: p.p_memsz(E),
            align: p.p_align(E),
        });
    let relro = phdrs
        .iter()
        .find(|p| p.p_type(E) == elf::PT_GNU_RELRO)
        .map(|p| RelroInfo {
            start: p.p_vaddr(E),
            end: p.p_vaddr(E).saturating_add(p.p_memsz(E)),
        });

    let section_names: BTreeSet<String> = table
        .iter()
        .filter_map(|s| table.section_name(E, s).ok().map(text))
        .collect();
    let emit_relocs = table.iter().any(|s| {
        matches!(s.sh_type(E), elf::SHT_RELA | elf::SHT_REL)
            && s.sh_flags(E) & u64::from(elf::SHF_ALLOC) == 0
    });
    let relr = tag(DT_RELR).is_some() || section_names.contains(".relr.dyn");
    let dynamic_relocs = reloc_counts(table, data)?;
    let irelative_relocs = dynamic_relocs.get("IRELATIVE").copied().unwrap_or(0);

    Ok(ImageInfo {
        machine: "x86-64".into(),
        class: 64,
        elf_type: "DYN (shared object)".into(),
        pic: !textrel,
        soname: tag(elf::DT_SONAME).and_then(|v| v.string()),
        build_id: build_id(file, data)?,
        needed,
        entry_points,
        tls,
        ifuncs: ifuncs(table, data)?,
        irelative_relocs,
        versions: versions(table, data)?,
        relro,
        bind_now,
        cet: cet(file, data)?,
        endbr_functions: 0,
        emit_relocs,
        debug_info: section_names.contains(".debug_info"),
        relr,
        dynamic_relocs,
        init_fini: InitFini {
            init: tag_val(elf::DT_INIT),
            fini: tag_val(elf::DT_FINI),
            init_array: (tag_val(elf::DT_INIT_ARRAYSZ).unwrap_or(0) / 8) as usize,
            fini_array: (tag_val(elf::DT_FINI_ARRAYSZ).unwrap_or(0) / 8) as usize,
        },
        stripped: !table.iter().any(|s| s.sh_type(E) == elf::SHT_SYMTAB),
        sections_recovered: None,
        functions,
        sections: sections(table),
        segments: segments(file),
    })
}

#[derive(Debug, Clone)]
enum DynValue {
    Num(u64),
    Str(String),
}

impl DynValue {
    fn string(&self) -> Option<String> {
        match self {
            DynValue::Str(s) => Some(s.clone()),
            DynValue::Num(_) => None,
        }
    }
}

/// `.dynamic` entries with string-valued tags resolved.
fn dynamic_entries(table: &Table, data: &[u8]) -> Result<Vec<(u32, DynValue)>> {
    let Some((dyns, link)) = table.dynamic(E, data)? else {
        return Ok(Vec::new());
    };
    let strings = table.strings(E, data, link)?;
    let mut out = Vec::new();
    for d in dyns {
        let Some(tag) = d.tag32(E) else { continue };
        if tag == elf::DT_NULL {
            break;
        }
        let v = if d.is_string(E) {
            DynValue::Str(text(d.string(E, strings)?))
        } else {
            DynValue::Num(d.d_val(E))
        };
        out.push((tag, v));
    }
    Ok(out)
}

fn binding(b: u8) -> &'static str {
    match b {
        elf::STB_GLOBAL => "global",
        elf::STB_WEAK => "weak",
        elf::STB_GNU_UNIQUE => "unique",
        _ => "local",
    }
}

fn is_code(st_type: u8) -> bool {
    st_type == elf::STT_FUNC || st_type == elf::STT_GNU_IFUNC
}

/// Defined function symbols from `.symtab` (or `.dynsym` when stripped),
/// marked exported when `.dynsym` defines them with default or protected
/// visibility.
fn functions(file: &File, table: &Table, data: &[u8]) -> Result<Vec<FunctionSymbol>> {
    // (value, name) of every exported function; names are compared as the
    // text they become.
    let mut exported: Vec<(u64, Cow<str>)> = Vec::new();
    let dynsym = file.elf_dynamic_symbol_table();
    for s in dynsym.iter() {
        if is_code(s.st_type()) && s.st_shndx(E) != elf::SHN_UNDEF && s.st_bind() != elf::STB_LOCAL
        {
            exported.push((
                s.st_value(E),
                String::from_utf8_lossy(s.name(E, dynsym.strings())?),
            ));
        }
    }
    let symtab = file.elf_symbol_table();
    let source = if symtab.is_empty() { dynsym } else { symtab };
    let mut out = Vec::new();
    for s in source.iter() {
        if !is_code(s.st_type()) || s.st_shndx(E) == elf::SHN_UNDEF {
            continue;
        }
        let name = String::from_utf8_lossy(s.name(E, source.strings())?);
        if name.is_empty() {
            continue;
        }
        out.push(FunctionSymbol {
            exported: false,
            name: name.into_owned(),
            address: s.st_value(E),
            size: s.st_size(E),
            binding: binding(s.st_bind()),
        });
    }
    let _ = (table, data);
    let mut out = sorted_by_address_and_name(out);
    // Both in (value, name) order: one walk marks the exported ones.
    exported.sort_unstable();
    let mut e = exported.iter().peekable();
    for f in &mut out {
        let key = (f.address, f.name.as_str());
        while e.next_if(|(v, n)| (*v, n.as_ref()) < key).is_some() {}
        f.exported = e.peek().is_some_and(|(v, n)| (*v, n.as_ref()) == key);
    }
    out.dedup_by(|a, b| a.address == b.address && a.name == b.name);
    Ok(out)
}

/// `functions` in (address, name) order, equal ones in their order: a
/// stable sort that moves each symbol once (an image may define hundreds
/// of thousands), comparing names only where addresses tie.
fn sorted_by_address_and_name(functions: Vec<FunctionSymbol>) -> Vec<FunctionSymbol> {
    let mut order: Vec<(u64, usize)> = functions
        .iter()
        .enumerate()
        .map(|(i, f)| (f.address, i))
        .collect();
    order.sort_unstable();
    for run in order.chunk_by_mut(|a, b| a.0 == b.0) {
        run.sort_by(|a, b| functions[a.1].name.cmp(&functions[b.1].name));
    }
    let mut slots: Vec<Option<FunctionSymbol>> = functions.into_iter().map(Some).collect();
    order
        .iter()
        .map(|&(_, i)| slots[i].take().expect("each symbol once"))
        .collect()
}

fn ifuncs(table: &Table, data: &[u8]) -> Result<Vec<String>> {
    let mut out = BTreeSet::new();
    for kind in [elf::SHT_SYMTAB, elf::SHT_DYNSYM] {
        let syms = table.symbols(E, data, kind)?;
        for s in syms.iter() {
            if s.st_type() == elf::STT_GNU_IFUNC && s.st_shndx(E) != elf::SHN_UNDEF {
                out.insert(text(s.name(E, syms.strings())?));
            }
        }
    }
    Ok(out.into_iter().collect())
}

fn versions(table: &Table, data: &[u8]) -> Result<VersionInfo> {
    let mut info = VersionInfo::default();
    if let Some((mut needs, link)) = table.gnu_verneed(E, data)? {
        let strings = table.strings(E, data, link)?;
        while let Some((need, mut aux)) = needs.next()? {
            let mut versions = Vec::new();
            while let Some(a) = aux.next()? {
                versions.push(text(a.name(E, strings)?));
            }
            versions.sort();
            info.needed.push(VersionNeed {
                file: text(need.file(E, strings)?),
                versions,
            });
        }
    }
    if let Some((mut defs, link)) = table.gnu_verdef(E, data)? {
        let strings = table.strings(E, data, link)?;
        while let Some((def, mut aux)) = defs.next()? {
            if def.vd_flags.get(E) & elf::VER_FLG_BASE != 0 {
                continue;
            }
            if let Some(a) = aux.next()? {
                info.defined.push(text(a.name(E, strings)?));
            }
        }
    }
    Ok(info)
}

/// The GNU build-id, from the notes ld.so maps (`PT_NOTE`).
fn build_id(file: &File, data: &[u8]) -> Result<Option<String>> {
    for p in file.elf_program_headers() {
        let Some(mut notes) = p.notes(E, data)? else {
            continue;
        };
        while let Some(note) = notes.next()? {
            if note.name() == elf::ELF_NOTE_GNU && note.n_type(E) == elf::NT_GNU_BUILD_ID {
                return Ok(Some(
                    note.desc().iter().map(|x| format!("{x:02x}")).collect(),
                ));
            }
        }
    }
    Ok(None)
}

/// `GNU_PROPERTY_X86_FEATURE_1_AND` bits from `.note.gnu.property`, read
/// through the notes ld.so maps (`PT_NOTE`).
fn cet(file: &File, data: &[u8]) -> Result<CetInfo> {
    let mut info = CetInfo::default();
    for p in file.elf_program_headers() {
        let Some(mut notes) = p.notes(E, data)? else {
            continue;
        };
        while let Some(note) = notes.next()? {
            if note.name() != elf::ELF_NOTE_GNU || note.n_type(E) != elf::NT_GNU_PROPERTY_TYPE_0 {
                continue;
            }
            let Some(mut props) = note.gnu_properties(E) else {
                continue;
            };
            while let Some(p) = props.next()? {
                if p.pr_type() == elf::GNU_PROPERTY_X86_FEATURE_1_AND {
                    let bits = p.data_u32(E)?;
                    info.ibt |= bits & elf::GNU_PROPERTY_X86_FEATURE_1_IBT != 0;
                    info.shstk |= bits & elf::GNU_PROPERTY_X86_FEATURE_1_SHSTK != 0;
                }
            }
        }
    }
    Ok(info)
}

/// Short name of an x86-64 relocation type.
pub fn reloc_type_name(t: u32) -> String {
    match t {
        elf::R_X86_64_64 => "64".into(),
        elf::R_X86_64_COPY => "COPY".into(),
        elf::R_X86_64_GLOB_DAT => "GLOB_DAT".into(),
        elf::R_X86_64_JUMP_SLOT => "JUMP_SLOT".into(),
        elf::R_X86_64_RELATIVE => "RELATIVE".into(),
        elf::R_X86_64_DTPMOD64 => "DTPMOD64".into(),
        elf::R_X86_64_DTPOFF64 => "DTPOFF64".into(),
        elf::R_X86_64_TPOFF64 => "TPOFF64".into(),
        elf::R_X86_64_IRELATIVE => "IRELATIVE".into(),
        elf::R_X86_64_TLSDESC => "TLSDESC".into(),
        other => format!("type{other}"),
    }
}

/// Counts of dynamic relocations by type; packed relative relocations are
/// counted as `RELR`.
fn reloc_counts(table: &Table, data: &[u8]) -> Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for s in table.iter() {
        if s.sh_flags(E) & u64::from(elf::SHF_ALLOC) == 0 {
            continue;
        }
        if let Some((relas, _)) = s.rela(E, data)? {
            for r in relas {
                *out.entry(reloc_type_name(r.r_type(E, false))).or_insert(0) += 1;
            }
        } else if s.sh_type(E) == elf::SHT_RELR {
            let words = s.sh_size(E) / 8;
            *out.entry("RELR words".to_string()).or_insert(0) += words as usize;
        }
    }
    Ok(out)
}

fn section_kind(t: u32) -> String {
    match t {
        elf::SHT_NULL => "NULL",
        elf::SHT_PROGBITS => "PROGBITS",
        elf::SHT_SYMTAB => "SYMTAB",
        elf::SHT_STRTAB => "STRTAB",
        elf::SHT_RELA => "RELA",
        elf::SHT_HASH => "HASH",
        elf::SHT_DYNAMIC => "DYNAMIC",
        elf::SHT_NOTE => "NOTE",
        elf::SHT_NOBITS => "NOBITS",
        elf::SHT_DYNSYM => "DYNSYM",
        elf::SHT_INIT_ARRAY => "INIT_ARRAY",
        elf::SHT_FINI_ARRAY => "FINI_ARRAY",
        elf::SHT_RELR => "RELR",
        elf::SHT_GNU_HASH => "GNU_HASH",
        elf::SHT_GNU_VERSYM => "VERSYM",
        elf::SHT_GNU_VERDEF => "VERDEF",
        elf::SHT_GNU_VERNEED => "VERNEED",
        elf::SHT_X86_64_UNWIND => "X86_64_UNWIND",
        _ => return format!("{t:#x}"),
    }
    .into()
}

fn sections(table: &Table) -> Vec<SectionEntry> {
    table
        .iter()
        .skip(1)
        .map(|s| {
            let f = s.sh_flags(E);
            let mut flags = String::new();
            for (bit, c) in [
                (elf::SHF_ALLOC, 'A'),
                (elf::SHF_WRITE, 'W'),
                (elf::SHF_EXECINSTR, 'X'),
                (elf::SHF_TLS, 'T'),
            ] {
                if f & u64::from(bit) != 0 {
                    flags.push(c);
                }
            }
            SectionEntry {
                name: table.section_name(E, s).map(text).unwrap_or_default(),
                kind: section_kind(s.sh_type(E)),
                address: s.sh_addr(E),
                offset: s.sh_offset(E),
                size: s.sh_size(E),
                flags,
            }
        })
        .collect()
}

fn segments(file: &File) -> Vec<SegmentEntry> {
    file.elf_program_headers()
        .iter()
        .map(|p| {
            let kind = match p.p_type(E) {
                elf::PT_LOAD => "LOAD".to_string(),
                elf::PT_DYNAMIC => "DYNAMIC".into(),
                elf::PT_INTERP => "INTERP".into(),
                elf::PT_NOTE => "NOTE".into(),
                elf::PT_PHDR => "PHDR".into(),
                elf::PT_TLS => "TLS".into(),
                elf::PT_GNU_EH_FRAME => "GNU_EH_FRAME".into(),
                elf::PT_GNU_STACK => "GNU_STACK".into(),
                elf::PT_GNU_RELRO => "GNU_RELRO".into(),
                elf::PT_GNU_PROPERTY => "GNU_PROPERTY".into(),
                t => format!("{t:#x}"),
            };
            let f = p.p_flags(E);
            let flags: String = [(elf::PF_R, 'R'), (elf::PF_W, 'W'), (elf::PF_X, 'X')]
                .iter()
                .map(|(b, c)| if f & b != 0 { *c } else { '-' })
                .collect();
            SegmentEntry {
                kind,
                offset: p.p_offset(E),
                vaddr: p.p_vaddr(E),
                filesz: p.p_filesz(E),
                memsz: p.p_memsz(E),
                flags,
                align: p.p_align(E),
            }
        })
        .collect()
}
