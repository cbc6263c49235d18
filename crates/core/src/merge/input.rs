//! What the merger needs from each input image: loadable segments, dynamic
//! symbols with versions, every dynamic relocation (packed relative ones
//! decoded), TLS, initializers, RELRO, unwind tables, sections and symbols.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use object::elf;
use object::read::elf::{ElfFile64, ProgramHeader, SectionHeader, SectionTable, Sym};
use object::LittleEndian as LE;

use crate::elf::loader::LoaderView;
use crate::elf::{Image, ENTRY_POINTS};
use crate::error::InputError;

const E: LE = LE;

/// Largest segment alignment accepted (x86-64's largest page size).
pub const MAX_LOAD_ALIGN: u64 = 2 << 20;
/// Largest TLS alignment accepted.
pub const MAX_TLS_ALIGN: u64 = 64 << 10;
/// Largest TLS block accepted (per thread).
pub const MAX_TLS_BYTES: u64 = 1 << 30;
/// Highest address an input image may use: the fused image must stay
/// within reach of the 32-bit displacements of direct calls.
pub const MAX_ADDRESS: u64 = 1 << 30;
/// Most entries in an initializer or finalizer array.
pub const MAX_ARRAY_ENTRIES: u64 = 1 << 20;
type Table<'a> = SectionTable<'a, elf::FileHeader64<LE>, &'a [u8]>;

/// What an input is in the fused image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Root,
    Callee,
    Runtime,
}

#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub(super) vaddr: u64,
    pub(super) memsz: u64,
    pub(super) offset: u64,
    pub(super) filesz: u64,
    pub(super) flags: u32,
    pub(super) align: u64,
}

/// A symbol version required from a library.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Needed {
    pub(super) file: String,
    pub(super) version: String,
}

#[derive(Debug, Clone)]
pub struct DynSym {
    pub(super) name: String,
    pub(super) value: u64,
    pub(super) size: u64,
    pub(super) info: u8,
    pub(super) other: u8,
    pub(super) defined: bool,
    pub(super) abs: bool,
    pub(super) version: Option<Needed>,
}

impl DynSym {
    pub fn st_type(&self) -> u8 {
        self.info & 0xf
    }

    /// A definition with `STB_GNU_UNIQUE` binding: one per process.
    pub fn is_unique_definition(&self) -> bool {
        self.defined && !self.abs && self.info >> 4 == object::elf::STB_GNU_UNIQUE
    }
}

/// A dynamic relocation; packed relative ones appear as `RELATIVE` with the
/// addend read from the word they relocate.
#[derive(Debug, Clone, Copy)]
pub struct Reloc {
    pub(super) offset: u64,
    pub(super) r_type: u32,
    pub(super) sym: u32,
    pub(super) addend: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Tls {
    pub(super) vaddr: u64,
    pub(super) filesz: u64,
    pub(super) memsz: u64,
    pub(super) align: u64,
}

#[derive(Debug, Clone)]
pub struct Section {
    pub(super) name: String,
    pub(super) sh_type: u32,
    pub(super) flags: u64,
    pub(super) addr: u64,
    pub(super) size: u64,
    pub(super) align: u64,
    pub(super) entsize: u64,
}

#[derive(Debug, Clone)]
pub struct Symbol {
    pub(super) name: String,
    pub(super) value: u64,
    pub(super) size: u64,
    pub(super) info: u8,
}

/// A non-allocated `.debug_*` section, with the header fields a reader
/// needs to decode it: `SHF_COMPRESSED` (`-gz`) and the alignment of its
/// `Elf64_Chdr`, `SHF_MERGE | SHF_STRINGS` and the entry size of string
/// sections.
#[derive(Debug, Clone)]
pub struct DebugSection {
    pub(super) name: String,
    pub(super) offset: u64,
    pub(super) size: u64,
    pub(super) flags: u64,
    pub(super) align: u64,
    pub(super) entsize: u64,
}

/// One input image, as the merger sees it.
pub struct Part {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) role: Role,
    pub(super) data: std::sync::Arc<crate::files::FileBytes>,
    pub(super) build_id: Option<String>,
    /// Why the input's section headers were not used (see
    /// [`crate::elf::ImageInfo::sections_recovered`]).
    pub(super) sections_recovered: Option<String>,
    pub(super) loads: Vec<Load>,
    /// The parts of `loads` the fused image copies: read-only loads lose
    /// the metadata the fused image regenerates (ELF and program headers,
    /// dynamic symbols, relocations, notes, unwind tables), whole pages of it.
    pub(super) pieces: Vec<Load>,
    pub(super) tls: Option<Tls>,
    pub(super) relro: Option<(u64, u64)>,
    pub(super) exec_stack: bool,
    /// CET feature bits (IBT=1, SHSTK=2) from `.note.gnu.property`.
    pub(super) cet_bits: u32,
    pub(super) dynamic: DynamicEntries,
    pub(super) dynsyms: Vec<DynSym>,
    pub(super) relocs: Vec<Reloc>,
    pub(super) initializers: Initializers,
    pub(super) eh_frame: Option<(u64, u64)>,
    pub(super) sections: Vec<Section>,
    pub(super) symbols: Vec<Symbol>,
    /// Addresses of the four worker_v1 entry points.
    pub(super) entry: [u64; 4],
    /// The image's `.debug_*` sections, copied as they are (the root's).
    pub(super) debug_sections: Vec<DebugSection>,
    pub(super) fusion: Fusion,
}

/// The dynamic entries of an input the fused image's `.dynamic` joins.
#[derive(Debug, Clone, Default)]
pub struct DynamicEntries {
    pub(super) needed: Vec<String>,
    pub(super) runpath: Option<String>,
    pub(super) soname: Option<String>,
    /// Marked `DF_1_NODELETE`: never unloaded.
    pub(super) nodelete: bool,
    pub(super) static_tls: bool,
}

/// An input's initializers and finalizers: `DT_INIT`, `DT_FINI`, and the
/// arrays as (vaddr, entries).
#[derive(Debug, Clone, Copy, Default)]
pub struct Initializers {
    pub(super) init: Option<u64>,
    pub(super) fini: Option<u64>,
    pub(super) init_array: Option<(u64, u64)>,
    pub(super) fini_array: Option<(u64, u64)>,
}

/// How an input runs in the fused image, as the merge options say.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fusion {
    /// Declared re-entrant: a call into it while it runs is served
    /// in-process by an extra worker instead of going to the host.
    pub(super) reentrant: bool,
    /// How it is kept apart from its callers (callees only).
    pub(super) isolation: super::Isolation,
}

impl Part {
    /// `size` bytes at `addr` lie in one loadable segment (its file bytes
    /// when `file`) with program header flag `flag` (any when 0).
    fn in_load(&self, addr: u64, size: u64, flag: u32, file: bool) -> bool {
        let Some(end) = addr.checked_add(size) else {
            return false;
        };
        self.loads.iter().any(|l| {
            let lim = if file { l.filesz } else { l.memsz };
            (flag == 0 || l.flags & flag != 0) && addr >= l.vaddr && end <= l.vaddr + lim
        })
    }

    /// The link-time value a relocated pointer slot holds.
    pub fn slot_value(&self, slot: u64) -> Option<u64> {
        self.slot_value_with(self.relocs.iter().find(|r| r.offset == slot), slot)
    }

    /// The same, given the slot's relocation (if any).
    fn slot_value_with(&self, reloc: Option<&Reloc>, slot: u64) -> Option<u64> {
        match reloc {
            Some(r) if r.r_type == elf::R_X86_64_RELATIVE => Some(r.addend as u64),
            Some(r) if r.sym != 0 => {
                let s = &self.dynsyms[r.sym as usize];
                s.defined
                    .then(|| (s.value as i64).wrapping_add(r.addend) as u64)
            }
            _ => self.word_at(slot),
        }
    }

    /// Lowest and highest (exclusive) virtual address of the loaded image.
    pub fn span(&self) -> (u64, u64) {
        let lo = self.loads.iter().map(|l| l.vaddr).min().unwrap_or(0);
        let hi = self
            .loads
            .iter()
            .map(|l| l.vaddr + l.memsz)
            .max()
            .unwrap_or(0);
        (lo, hi)
    }

    /// The file bytes behind `len` bytes at `vaddr`.
    pub fn bytes_at(&self, vaddr: u64, len: u64) -> Option<&[u8]> {
        let end = vaddr.checked_add(len)?;
        let l = self
            .loads
            .iter()
            .find(|l| vaddr >= l.vaddr && end <= l.vaddr.saturating_add(l.filesz))?;
        let off = usize::try_from(l.offset.checked_add(vaddr - l.vaddr)?).ok()?;
        self.data
            .get(off..off.checked_add(usize::try_from(len).ok()?)?)
    }

    pub fn word_at(&self, vaddr: u64) -> Option<u64> {
        self.bytes_at(vaddr, 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }

    fn err(&self, reason: impl Into<String>) -> anyhow::Error {
        InputError::new(&self.path, reason).into()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Read everything the merger needs from a validated image; every value
/// is checked against the image itself, and any fault names the file.
pub fn read_part(image: &Image, name: &str, role: Role) -> Result<Part> {
    let path = image.path.clone();
    read_part_unchecked(image, name, role).map_err(|e| {
        if crate::error::exit_code(&e) == crate::error::EXIT_BAD_INPUT {
            e
        } else {
            InputError::new(&path, format!("malformed ELF: {e:#}")).into()
        }
    })
}

fn read_part_unchecked(image: &Image, name: &str, role: Role) -> Result<Part> {
    let (path, data, info) = (image.path.as_path(), image.data.clone(), &image.info);
    if !info.pic {
        return Err(fault(
            path,
            "not position-independent (has text relocations); rebuild it with -fPIC",
        ));
    }
    let file = ElfFile64::<LE>::parse(&data[..])?;
    let table = file.elf_section_table();
    let segments = read_program_headers(&file, path)?;
    let view = LoaderView::read(&data).map_err(|r| fault(path, r))?;
    let (dynamic, initializers) = read_dynamic(info, &view, path)?;
    let dynsyms = read_dynsyms(table, &data)?;
    let relocs = read_relocs(&view, &data, &segments.loads, path)?;
    let sections = read_sections(table, &view)?;
    let symbols = read_symbols(&file)?;
    let entry = entry_points(&dynsyms, role, path)?;
    let mut part = Part {
        name: name.to_string(),
        path: path.to_path_buf(),
        role,
        data,
        build_id: info.build_id.clone(),
        sections_recovered: info.sections_recovered.clone(),
        loads: segments.loads,
        pieces: Vec::new(),
        tls: segments.tls,
        relro: info.relro.as_ref().map(|r| (r.start, r.end)),
        exec_stack: segments.exec_stack,
        cet_bits: u32::from(info.cet.ibt) | (u32::from(info.cet.shstk) << 1),
        dynamic,
        dynsyms,
        relocs,
        initializers,
        eh_frame: sections.eh_frame,
        sections: sections.named,
        symbols,
        entry,
        debug_sections: sections.debug,
        fusion: Fusion::default(),
    };
    validate(&part)?;
    part.pieces = live_pieces(&part, &sections.regenerated);
    Ok(part)
}

/// A fault of the input at `path`.
fn fault(path: &Path, reason: impl Into<String>) -> anyhow::Error {
    InputError::new(path, reason).into()
}

/// What the program headers say.
struct Segments {
    loads: Vec<Load>,
    tls: Option<Tls>,
    exec_stack: bool,
}

/// The loads, the TLS block and whether the stack is executable; an
/// executable (`PT_INTERP`) is refused.
fn read_program_headers(file: &ElfFile64<LE>, path: &Path) -> Result<Segments> {
    let mut out = Segments {
        loads: Vec::new(),
        tls: None,
        exec_stack: false,
    };
    for p in file.elf_program_headers() {
        match p.p_type(E) {
            elf::PT_LOAD => out.loads.push(Load {
                vaddr: p.p_vaddr(E),
                memsz: p.p_memsz(E),
                offset: p.p_offset(E),
                filesz: p.p_filesz(E),
                flags: p.p_flags(E),
                align: p.p_align(E).max(1),
            }),
            elf::PT_TLS => {
                out.tls = Some(Tls {
                    vaddr: p.p_vaddr(E),
                    filesz: p.p_filesz(E),
                    memsz: p.p_memsz(E),
                    align: p.p_align(E).max(1),
                })
            }
            elf::PT_GNU_STACK => out.exec_stack = p.p_flags(E) & elf::PF_X != 0,
            elf::PT_INTERP => {
                return Err(fault(
                    path,
                    "an executable (has PT_INTERP), not a function library",
                ))
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The addresses of the four entry points (a function library exports
/// them all; the runtime need not).
fn entry_points(dynsyms: &[DynSym], role: Role, path: &Path) -> Result<[u64; 4]> {
    let mut entry = [0; 4];
    for (i, ep) in ENTRY_POINTS.iter().enumerate() {
        let sym = dynsyms
            .iter()
            .find(|s| s.defined && s.name == *ep && s.st_type() == elf::STT_FUNC);
        match sym {
            Some(s) => entry[i] = s.value,
            None if role == Role::Runtime => {}
            None => {
                return Err(fault(
                    path,
                    format!("not a function library: does not export {ep}"),
                ))
            }
        }
    }
    Ok(entry)
}

/// The dynamic entries faasfuse carries, from the dynamic segment; `DT_INIT`
/// and `DT_FINI`, `DT_NEEDED` and `DT_SONAME` as the image's `info` has them.
fn read_dynamic(
    info: &crate::elf::ImageInfo,
    view: &LoaderView,
    path: &Path,
) -> Result<(DynamicEntries, Initializers)> {
    let mut dynamic = DynamicEntries {
        needed: info.needed.clone(),
        soname: info.soname.clone(),
        ..Default::default()
    };
    let (mut ia, mut ias, mut fa, mut fas) = (None, 0, None, 0);
    for &(tag, v) in &view.dynamic {
        let Ok(tag) = u32::try_from(tag) else {
            continue;
        };
        match tag {
            elf::DT_INIT_ARRAY => ia = Some(v),
            elf::DT_INIT_ARRAYSZ => ias = array_len(path, "DT_INIT_ARRAYSZ", v)?,
            elf::DT_FINI_ARRAY => fa = Some(v),
            elf::DT_FINI_ARRAYSZ => fas = array_len(path, "DT_FINI_ARRAYSZ", v)?,
            elf::DT_RUNPATH | elf::DT_RPATH => {
                dynamic.runpath = Some(
                    view.string(v)
                        .map_err(|e| fault(path, format!("DT_RUNPATH: {e}")))?,
                )
            }
            elf::DT_FLAGS if v & u64::from(elf::DF_STATIC_TLS) != 0 => dynamic.static_tls = true,
            elf::DT_FLAGS_1 if v & u64::from(elf::DF_1_NODELETE) != 0 => dynamic.nodelete = true,
            elf::DT_PREINIT_ARRAY => {
                return Err(fault(
                    path,
                    "has DT_PREINIT_ARRAY, which a shared object may not use",
                ))
            }
            _ => {}
        }
    }
    let initializers = Initializers {
        init: info.init_fini.init,
        fini: info.init_fini.fini,
        init_array: ia.map(|a| (a, ias)),
        fini_array: fa.map(|a| (a, fas)),
    };
    Ok((dynamic, initializers))
}

/// Entries of an initializer array of `bytes` bytes.
fn array_len(path: &Path, tag: &str, bytes: u64) -> Result<u64> {
    if bytes % 8 != 0 || bytes > MAX_ARRAY_ENTRIES * 8 {
        return Err(fault(path, format!(
            "{tag} = {bytes:#x}: not a whole number of pointers, or more than {MAX_ARRAY_ENTRIES} entries"
        )));
    }
    Ok(bytes / 8)
}

fn read_dynsyms(table: &Table, data: &[u8]) -> Result<Vec<DynSym>> {
    let syms = table.symbols(E, data, elf::SHT_DYNSYM)?;
    let versions = table.versions(E, data)?;
    let mut out = Vec::new();
    for (i, s) in syms.iter().enumerate() {
        let version = match &versions {
            Some(v) if i > 0 => {
                let idx = v.version_index(E, object::SymbolIndex(i));
                match v.version(idx)? {
                    Some(ver) => ver.file().map(|f| Needed {
                        file: text(f),
                        version: text(ver.name()),
                    }),
                    None => None,
                }
            }
            _ => None,
        };
        out.push(DynSym {
            name: text(s.name(E, syms.strings())?),
            value: s.st_value(E),
            size: s.st_size(E),
            info: s.st_info(),
            other: s.st_other(),
            defined: s.st_shndx(E) != elf::SHN_UNDEF,
            abs: s.st_shndx(E) == elf::SHN_ABS,
            version,
        });
    }
    Ok(out)
}

/// The dynamic relocations ld.so applies (`DT_RELA`, `DT_JMPREL`,
/// `DT_RELR`), whatever the section headers say.
fn read_relocs(view: &LoaderView, data: &[u8], loads: &[Load], path: &Path) -> Result<Vec<Reloc>> {
    let mut out = Vec::new();
    for r in view.relocations().map_err(|e| fault(path, e))? {
        out.push(Reloc {
            offset: r.offset,
            r_type: r.r_type,
            sym: r.sym,
            addend: r.addend,
        });
    }
    if let Some(words) = view.relr().map_err(|e| fault(path, e))? {
        let mut addrs = Vec::new();
        decode_relr(words, &mut addrs);
        for &a in &addrs {
            out.push(packed_relative(data, loads, a, path)?);
        }
    }
    Ok(out)
}

/// The relative relocation of a packed (`DT_RELR`) entry at `a`; its
/// addend is the word in the file.
fn packed_relative(data: &[u8], loads: &[Load], a: u64, path: &Path) -> Result<Reloc> {
    let word = a
        .checked_add(8)
        .and_then(|end| {
            loads.iter().find(|l| {
                l.flags & elf::PF_W != 0 && a >= l.vaddr && end <= l.vaddr.saturating_add(l.filesz)
            })
        })
        .and_then(|l| {
            let off = usize::try_from(l.offset.checked_add(a - l.vaddr)?).ok()?;
            data.get(off..off.checked_add(8)?)
        })
        .ok_or_else(|| {
            fault(
                path,
                format!(
                "packed relocation (DT_RELR) at {a:#x} lies outside the image's writable segments"
            ),
            )
        })?;
    let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
    Ok(Reloc {
        offset: a,
        r_type: elf::R_X86_64_RELATIVE,
        sym: 0,
        addend: word as i64,
    })
}

/// Decode `SHT_RELR` words into the addresses they relocate.
pub fn decode_relr(words: &[u8], out: &mut Vec<u64>) {
    // Addresses wrap like the loader's arithmetic; the caller checks each
    // against the image.
    let mut next = 0u64;
    for w in words.chunks_exact(8) {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        if w & 1 == 0 {
            out.push(w);
            next = w.wrapping_add(8);
        } else {
            let mut bits = w >> 1;
            let mut at = next;
            while bits != 0 {
                if bits & 1 != 0 {
                    out.push(at);
                }
                bits >>= 1;
                at = at.wrapping_add(8);
            }
            next = next.wrapping_add(63 * 8);
        }
    }
}

/// Sections whose contents the fused image regenerates or drops.
fn is_regenerated(name: &str, sh_type: u32, flags: u64) -> bool {
    flags & u64::from(elf::SHF_TLS) != 0
        || matches!(
            sh_type,
            elf::SHT_DYNSYM
                | elf::SHT_DYNAMIC
                | elf::SHT_GNU_HASH
                | elf::SHT_HASH
                | elf::SHT_GNU_VERSYM
                | elf::SHT_GNU_VERDEF
                | elf::SHT_GNU_VERNEED
                | elf::SHT_RELA
                | elf::SHT_RELR
                | elf::SHT_NOTE
                | elf::SHT_INIT_ARRAY
                | elf::SHT_FINI_ARRAY
                | elf::SHT_PREINIT_ARRAY
        )
        || matches!(name, ".interp" | ".dynstr" | ".eh_frame_hdr" | ".eh_frame")
}

/// What the section headers say.
struct Sections {
    /// The sections the output names: code and data.
    named: Vec<Section>,
    debug: Vec<DebugSection>,
    eh_frame: Option<(u64, u64)>,
    /// Read-only metadata the fused image regenerates (ELF and program
    /// headers, dynamic symbols, relocations, notes, unwind tables), where
    /// ld.so's view confirms what the section headers say: (start, end).
    regenerated: Vec<(u64, u64)>,
}

fn read_sections(table: &Table, view: &LoaderView) -> Result<Sections> {
    let mut out = Sections {
        named: Vec::new(),
        debug: Vec::new(),
        eh_frame: None,
        regenerated: view.headers(),
    };
    for s in table.iter().skip(1) {
        let name = text(table.section_name(E, s)?);
        let flags = s.sh_flags(E);
        if name == ".eh_frame" {
            out.eh_frame = Some((s.sh_addr(E), s.sh_size(E)));
        }
        if flags & u64::from(elf::SHF_ALLOC) == 0 {
            if name.starts_with(".debug_") {
                out.debug.push(DebugSection {
                    name,
                    offset: s.sh_offset(E),
                    size: s.sh_size(E),
                    // Only the flags that say how to read the bytes; an
                    // alignment that is not a power of two up to a page is
                    // not one (the gABI), so 8 serves.
                    flags: flags
                        & u64::from(elf::SHF_COMPRESSED | elf::SHF_MERGE | elf::SHF_STRINGS),
                    align: Some(s.sh_addralign(E).max(1))
                        .filter(|a| a.is_power_of_two() && *a <= 4096)
                        .unwrap_or(8),
                    entsize: s.sh_entsize(E),
                });
            }
            continue;
        }
        if is_regenerated(&name, s.sh_type(E), flags) {
            // Its bytes are dropped only where ld.so's view says the same;
            // otherwise they stay, unnamed (the output names its own).
            if let Some(r) = view.confirms(&name, s.sh_type(E), flags, s.sh_addr(E), s.sh_size(E)) {
                out.regenerated.push(r);
            }
            continue;
        }
        // Only code and data are named in the output; a header that calls
        // some other kind of section (a symbol or string table) allocated
        // is not believed, and its bytes stay unnamed.
        if !matches!(
            s.sh_type(E),
            elf::SHT_PROGBITS | elf::SHT_NOBITS | elf::SHT_X86_64_UNWIND
        ) {
            continue;
        }
        out.named.push(Section {
            name,
            sh_type: s.sh_type(E),
            flags,
            addr: s.sh_addr(E),
            size: s.sh_size(E),
            align: s.sh_addralign(E),
            entsize: s.sh_entsize(E),
        });
    }
    Ok(out)
}

/// Split each read-only load into the runs of it the fused image copies:
/// everything but the metadata it regenerates (`regenerated`, each range
/// confirmed by ld.so's view), cutting only dead stretches of at
/// least a page so that no two pieces share a page. The root keeps its
/// first bytes: the output's ELF header goes there.
fn live_pieces(part: &Part, regenerated: &[(u64, u64)]) -> Vec<Load> {
    let page = part
        .loads
        .iter()
        .map(|l| l.align)
        .max()
        .unwrap_or(1)
        .max(0x1000);
    let mut out = Vec::new();
    for l in &part.loads {
        let end = l.vaddr + l.memsz;
        if l.flags & elf::PF_W != 0 || l.filesz != l.memsz {
            out.push(*l);
            continue;
        }
        let keep = if part.role == Role::Root && l.vaddr == 0 {
            64.min(end)
        } else {
            0
        };
        let mut dead: Vec<(u64, u64)> = regenerated
            .iter()
            .map(|&(a, b)| (a.max(l.vaddr).max(keep), b.min(end)))
            .filter(|(a, b)| a < b)
            .collect();
        dead.sort_unstable();
        // The live runs between the dead ranges.
        let mut live: Vec<(u64, u64)> = Vec::new();
        let mut at = l.vaddr;
        for (a, b) in dead {
            if a > at {
                live.push((at, a));
            }
            at = at.max(b);
        }
        if at < end {
            live.push((at, end));
        }
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for (a, b) in live {
            match runs.last_mut() {
                Some(r) if a < r.1 + page || a / page <= (r.1 - 1) / page => r.1 = r.1.max(b),
                _ => runs.push((a, b)),
            }
        }
        for (a, b) in runs {
            out.push(Load {
                vaddr: a,
                memsz: b - a,
                offset: l.offset + (a - l.vaddr),
                filesz: b - a,
                flags: l.flags,
                align: l.align,
            });
        }
    }
    out
}

/// Function and object symbols, from `.symtab` or, when stripped, `.dynsym`.
fn read_symbols(file: &ElfFile64<LE>) -> Result<Vec<Symbol>> {
    let mut out = Vec::new();
    let symtab = file.elf_symbol_table();
    let source = if symtab.is_empty() {
        file.elf_dynamic_symbol_table()
    } else {
        symtab
    };
    for s in source.iter() {
        let t = s.st_type();
        if !matches!(t, elf::STT_FUNC | elf::STT_OBJECT | elf::STT_GNU_IFUNC)
            || s.st_shndx(E) == elf::SHN_UNDEF
            || s.st_shndx(E) == elf::SHN_ABS
        {
            continue;
        }
        let name = text(s.name(E, source.strings())?);
        if name.is_empty() {
            continue;
        }
        out.push(Symbol {
            name,
            value: s.st_value(E),
            size: s.st_size(E),
            info: s.st_info(),
        });
    }
    out.sort_by(|a, b| (a.value, &a.name).cmp(&(b.value, &b.name)));
    out.dedup_by(|a, b| a.value == b.value && a.name == b.name);
    Ok(out)
}

/// Refuse what the transplant cannot carry.
/// libc's functions that change protection keys or the thread's rights
/// to them: a callee that imports one could reopen its callers' keys.
const PKEY_CHANGERS: [&str; 4] = ["pkey_set", "pkey_mprotect", "pkey_alloc", "pkey_free"];

/// What `--isolate mpk` cannot key apart.
fn check_mpk(part: &Part) -> Result<()> {
    if part.fusion.isolation != super::Isolation::Mpk {
        return Ok(());
    }
    if part.tls.is_some() {
        // Its thread-local storage lies in each thread's static TLS block,
        // on pages it shares with libc's and its callers': no key of its
        // own can cover it, and a key over those pages would lock libc out.
        bail!(InputError::new(
            &part.path,
            "has thread-local storage, which --isolate mpk cannot key apart from its callers' \
             (it shares their pages): isolate it with `stack` instead"
        ));
    }
    if let Some(s) = part
        .dynsyms
        .iter()
        .find(|s| !s.defined && PKEY_CHANGERS.contains(&s.name.as_str()))
    {
        bail!(InputError::new(
            &part.path,
            format!(
                "imports {}, with which it could reopen the protection keys --isolate mpk \
                 closes to it: isolate it with `stack` instead",
                s.name
            )
        ));
    }
    Ok(())
}

pub fn check_supported(part: &Part) -> Result<()> {
    check_mpk(part)?;
    for r in &part.relocs {
        match r.r_type {
            elf::R_X86_64_RELATIVE
            | elf::R_X86_64_IRELATIVE
            | elf::R_X86_64_64
            | elf::R_X86_64_GLOB_DAT
            | elf::R_X86_64_JUMP_SLOT
            | elf::R_X86_64_DTPMOD64
            | elf::R_X86_64_DTPOFF64
            | elf::R_X86_64_TPOFF64
            | elf::R_X86_64_NONE => {}
            elf::R_X86_64_TLSDESC => bail!(InputError::new(
                &part.path,
                "uses TLS descriptors (-mtls-dialect=gnu2), which faasfuse cannot yet relocate"
            )),
            t => bail!(InputError::new(
                &part.path,
                format!(
                    "has a dynamic relocation of type {} at {:#x}, which faasfuse cannot carry",
                    crate::elf::reloc_type_name(t),
                    r.offset
                )
            )),
        }
        if r.sym as usize >= part.dynsyms.len() && r.sym != 0 {
            bail!(InputError::new(
                &part.path,
                format!(
                    "relocation at {:#x} names symbol {} beyond .dynsym",
                    r.offset, r.sym
                )
            ));
        }
    }
    if part.loads.is_empty() {
        bail!(InputError::new(&part.path, "no loadable segments"));
    }
    Ok(())
}

/// Check every structure the merger uses against the image it comes from:
/// segments, TLS, relocations, initializers, symbols, sections, unwind
/// table and entry points, with checked arithmetic and sane limits.
fn validate(p: &Part) -> Result<()> {
    validate_segments(p)?;
    validate_tables(p)?;
    validate_symbols(p)?;
    validate_sections(p)
}

/// Loadable segments (sorted, aligned, inside the file and the address
/// limit) and TLS.
fn validate_segments(p: &Part) -> Result<()> {
    let len = p.data.len() as u64;
    if p.loads.is_empty() {
        return Err(p.err("no loadable segments"));
    }
    let mut prev_end = 0u64;
    for (i, l) in p.loads.iter().enumerate() {
        let what = format!("PT_LOAD segment {i} (at {:#x})", l.vaddr);
        if !l.align.is_power_of_two() || l.align > MAX_LOAD_ALIGN {
            return Err(p.err(format!(
                "{what}: p_align {:#x} is not a power of two up to {MAX_LOAD_ALIGN:#x}",
                l.align
            )));
        }
        let end = l.vaddr.checked_add(l.memsz).filter(|&e| e <= MAX_ADDRESS);
        let Some(end) = end else {
            return Err(p.err(format!(
                "{what}: p_vaddr + p_memsz ({:#x} + {:#x}) is beyond {MAX_ADDRESS:#x}",
                l.vaddr, l.memsz
            )));
        };
        if l.offset.checked_add(l.filesz).map_or(true, |e| e > len) {
            return Err(p.err(format!("{what}: file bytes lie beyond the end of the file")));
        }
        if l.filesz > l.memsz {
            return Err(p.err(format!("{what}: p_filesz exceeds p_memsz")));
        }
        if l.offset % l.align != l.vaddr % l.align {
            return Err(p.err(format!(
                "{what}: p_offset {:#x} not congruent to p_vaddr modulo p_align {:#x}",
                l.offset, l.align
            )));
        }
        if i > 0 && l.vaddr < prev_end {
            return Err(p.err(format!(
                "{what}: unsorted or overlapping the previous segment"
            )));
        }
        prev_end = end;
    }
    if p.role == Role::Root && p.loads[0].vaddr != 0 {
        return Err(p.err(format!(
            "the root image's first PT_LOAD is at {:#x}, not 0",
            p.loads[0].vaddr
        )));
    }
    if let Some(t) = p.tls {
        if !t.align.is_power_of_two() || t.align > MAX_TLS_ALIGN {
            return Err(p.err(format!(
                "PT_TLS p_align {:#x} is not a power of two up to {MAX_TLS_ALIGN:#x}",
                t.align
            )));
        }
        if t.filesz > t.memsz || t.memsz > MAX_TLS_BYTES {
            return Err(p.err(format!(
                "PT_TLS sizes (p_filesz {:#x}, p_memsz {:#x}) are inconsistent or above {MAX_TLS_BYTES:#x}",
                t.filesz, t.memsz
            )));
        }
        if t.filesz > 0 && !p.in_load(t.vaddr, t.filesz, 0, true) {
            return Err(p.err(format!(
                "PT_TLS initialization image at {:#x} (+{:#x}) lies outside the file's loadable bytes",
                t.vaddr, t.filesz
            )));
        }
    }
    Ok(())
}

/// Dynamic relocations, initializer and finalizer arrays, `DT_INIT`/`DT_FINI`.
fn validate_tables(p: &Part) -> Result<()> {
    for r in &p.relocs {
        if r.r_type == elf::R_X86_64_NONE {
            continue;
        }
        if !p.in_load(r.offset, 8, elf::PF_W, false) {
            return Err(p.err(format!(
                "dynamic relocation ({}) at r_offset {:#x} lies outside the image's writable segments",
                crate::elf::reloc_type_name(r.r_type),
                r.offset
            )));
        }
    }
    for (tag, arr) in [
        ("DT_INIT_ARRAY", p.initializers.init_array),
        ("DT_FINI_ARRAY", p.initializers.fini_array),
    ] {
        if let Some((addr, n)) = arr {
            if n > 0 && !p.in_load(addr, n * 8, 0, false) {
                return Err(p.err(format!(
                    "{tag} at {addr:#x} ({n} entries) lies outside the image's segments"
                )));
            }
            // Every entry is a function of this image (or a 0 / -1 marker).
            let by_offset: std::collections::HashMap<u64, &Reloc> =
                p.relocs.iter().map(|r| (r.offset, r)).collect();
            for i in 0..n {
                let slot = addr + 8 * i;
                let v = p.slot_value_with(by_offset.get(&slot).copied(), slot);
                if let Some(v) = v.filter(|&v| v != 0 && v != u64::MAX) {
                    if !p.in_load(v, 1, elf::PF_X, false) {
                        return Err(p.err(format!(
                            "{tag} entry {i} = {v:#x} is not in an executable segment"
                        )));
                    }
                }
            }
        }
    }
    for (tag, f) in [
        ("DT_INIT", p.initializers.init),
        ("DT_FINI", p.initializers.fini),
    ] {
        if let Some(a) = f {
            if !p.in_load(a, 1, elf::PF_X, false) {
                return Err(p.err(format!("{tag} = {a:#x} is not in an executable segment")));
            }
        }
    }
    Ok(())
}

/// Dynamic and static symbols lie inside the image (TLS ones in its block).
fn validate_symbols(p: &Part) -> Result<()> {
    let (lo, hi) = p.span();
    let tls_size = p.tls.map(|t| t.memsz);
    for s in &p.dynsyms {
        if !s.defined || s.abs {
            continue;
        }
        let Some(end) = s.value.checked_add(s.size) else {
            return Err(p.err(format!(
                "dynamic symbol {}: st_value + st_size ({:#x} + {:#x}) overflows",
                s.name, s.value, s.size
            )));
        };
        let ok = match s.st_type() {
            elf::STT_TLS => tls_size.is_some_and(|m| end <= m),
            elf::STT_FUNC | elf::STT_OBJECT | elf::STT_GNU_IFUNC => s.value >= lo && end <= hi,
            _ => true,
        };
        if !ok {
            return Err(p.err(format!(
                "dynamic symbol {} at {:#x} (+{:#x}) lies outside the image",
                s.name, s.value, s.size
            )));
        }
    }
    for s in &p.symbols {
        if s.value
            .checked_add(s.size)
            .map_or(true, |e| s.value < lo || e > hi)
        {
            return Err(p.err(format!(
                "symbol {} at {:#x} (+{:#x}) lies outside the image",
                s.name, s.value, s.size
            )));
        }
    }
    Ok(())
}

/// Sections, the unwind table, RELRO and the entry points.
fn validate_sections(p: &Part) -> Result<()> {
    for s in &p.sections {
        if s.align > MAX_LOAD_ALIGN || (s.align > 1 && !s.align.is_power_of_two()) {
            return Err(p.err(format!(
                "section {}: sh_addralign {:#x} is not a power of two up to {MAX_LOAD_ALIGN:#x}",
                s.name, s.align
            )));
        }
        if s.size == 0 {
            continue;
        }
        let file = s.sh_type != elf::SHT_NOBITS;
        if !p.in_load(s.addr, s.size, 0, file) {
            return Err(p.err(format!(
                "section {} at {:#x} (+{:#x}) lies outside the image's loadable segments",
                s.name, s.addr, s.size
            )));
        }
        for (bit, pf, what) in [
            (elf::SHF_EXECINSTR, elf::PF_X, "executable"),
            (elf::SHF_WRITE, elf::PF_W, "writable"),
        ] {
            if s.flags & u64::from(bit) != 0 && !p.in_load(s.addr, s.size, pf, false) {
                return Err(p.err(format!(
                    "section {} at {:#x} is {what} but its segment is not",
                    s.name, s.addr
                )));
            }
        }
    }
    if let Some((addr, size)) = p.eh_frame {
        if size > 0 && p.bytes_at(addr, size).is_none() {
            return Err(p.err(format!(
                ".eh_frame at {addr:#x} (+{size:#x}) lies outside the file's loadable bytes"
            )));
        }
    }
    if let Some((a, b)) = p.relro {
        // Inside one writable load, whose end may be rounded up to its page.
        let within = p.loads.iter().any(|l| {
            let end = l.vaddr + l.memsz;
            let page = l.align.max(0x1000);
            l.flags & elf::PF_W != 0 && a >= l.vaddr && a <= end && b <= end.div_ceil(page) * page
        });
        let (lo, _) = p.span();
        if a > b || a < lo || !within {
            return Err(p.err(format!(
                "PT_GNU_RELRO {a:#x}..{b:#x} lies outside the image"
            )));
        }
    }
    for (i, &e) in p.entry.iter().enumerate() {
        if p.role != Role::Runtime && !p.in_load(e, 1, elf::PF_X, false) {
            return Err(p.err(format!(
                "{} at {e:#x} is not in an executable segment",
                ENTRY_POINTS[i]
            )));
        }
    }
    Ok(())
}
