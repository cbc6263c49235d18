//! Loading x86-64 ELF shared objects: validation with errors a user can act
//! on, the facts `inspect` reports, and address-level access for analysis.

mod check;
pub mod eh_pe;
mod info;
pub mod loader;
mod recover;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use object::elf;
use object::read::elf::{ElfFile64, ProgramHeader, SectionHeader};
use object::LittleEndian as LE;

pub use info::{
    reloc_type_name, CetInfo, EntryPoint, FunctionSymbol, ImageInfo, InitFini, RelroInfo,
    SectionEntry, SegmentEntry, TlsInfo, VersionInfo, VersionNeed,
};

use crate::error::InputError;
pub use crate::files::FileBytes;

/// The four worker_v1 entry points a function library exports.
pub const ENTRY_POINTS: [&str; 4] = [
    "faas_init",
    "faas_create_func_worker",
    "faas_destroy_func_worker",
    "faas_func_call",
];

/// A validated x86-64 ELF shared object: its file's bytes (mapped, not
/// copied, when read from a file) and the facts read from them.
pub struct Image {
    pub path: PathBuf,
    pub data: std::sync::Arc<FileBytes>,
    pub info: ImageInfo,
    loads: Vec<Segment>,
    /// Executable sections but the PLT stubs.
    code: Vec<CodeSection>,
    /// GOT slots bound to a symbol by a dynamic relocation.
    got_symbols: BTreeMap<u64, String>,
    relocs: Vec<DynReloc>,
}

/// A `PT_LOAD` segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub vaddr: u64,
    pub memsz: u64,
    /// File offset.
    pub offset: u64,
    pub filesz: u64,
    pub executable: bool,
}

/// The `PT_LOAD` segments of `file`.
pub fn load_segments(file: &ElfFile64<LE>) -> Vec<Segment> {
    let e = LE;
    file.elf_program_headers()
        .iter()
        .filter(|p| p.p_type(e) == elf::PT_LOAD)
        .map(|p| Segment {
            vaddr: p.p_vaddr(e),
            memsz: p.p_memsz(e),
            offset: p.p_offset(e),
            filesz: p.p_filesz(e),
            executable: p.p_flags(e) & elf::PF_X != 0,
        })
        .collect()
}

/// An executable section.
struct CodeSection {
    name: String,
    vaddr: u64,
    /// File offset.
    offset: u64,
    size: u64,
}

/// One executable section's bytes.
pub struct CodeRange<'a> {
    pub name: &'a str,
    pub vaddr: u64,
    pub bytes: &'a [u8],
}

/// One dynamic relocation (from `DT_RELA` or `DT_JMPREL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynReloc {
    pub offset: u64,
    pub r_type: u32,
    pub symbol: Option<String>,
    pub addend: i64,
}

impl Image {
    /// Read and validate `path`. The file is mapped, not copied: its
    /// pages are read as analysis and merging touch them.
    pub fn load(path: &Path) -> Result<Image> {
        // The magic is checked before the rest is read.
        let data = crate::files::map_checked(
            path,
            crate::files::MAX_ELF_BYTES,
            "a shared object",
            |head| match check::header(head) {
                Err(r) if head.len() < 4 || !r.starts_with("truncated") => Err(r),
                _ => Ok(()),
            },
        )?;
        Image::parse(path, data)
    }

    /// Validate `data` (the contents of `path`) as an x86-64 ELF shared
    /// object and collect its facts.
    ///
    /// ld.so never reads section headers. When they are absent, or do not
    /// parse or agree with what the loader reads, the image is read as
    /// ld.so reads it: its sections are recovered from the program headers
    /// and the dynamic segment (losing only `.symtab` and debug info); it
    /// is refused, with the first reason, only when that fails too.
    pub fn parse(path: &Path, data: impl Into<FileBytes>) -> Result<Image> {
        let data: FileBytes = data.into();
        check::header(&data).map_err(|reason| InputError::new(path, reason))?;
        let first = if section_count(&data) == 0 {
            Err(NO_SECTIONS.to_string())
        } else {
            Facts::read(&data)
        };
        let (data, facts, recovered) = match first {
            Ok(facts) => (data, facts, None),
            Err(reason) => {
                let mut bare = data.to_vec();
                drop(data);
                bare[40..48].fill(0);
                bare[60..64].fill(0);
                let again =
                    recover::with_sections(&bare).and_then(|d| Facts::read(&d).map(|f| (d, f)));
                match again {
                    Ok((d, f)) => (d.into(), f, Some(reason)),
                    Err(r) if reason == NO_SECTIONS => {
                        return Err(InputError::new(path, format!("{NO_SECTIONS} and {r}")).into())
                    }
                    Err(_) => return Err(InputError::new(path, reason).into()),
                }
            }
        };
        let Facts {
            mut info,
            loads,
            code,
            relocs,
        } = facts;
        info.sections_recovered = recovered;
        let got_symbols = relocs
            .iter()
            .filter(|r| {
                matches!(
                    r.r_type,
                    elf::R_X86_64_GLOB_DAT | elf::R_X86_64_JUMP_SLOT | elf::R_X86_64_64
                )
            })
            .filter_map(|r| Some((r.offset, r.symbol.clone()?)))
            .collect();
        let image = Image {
            path: path.to_path_buf(),
            data: data.into(),
            info,
            loads,
            code,
            got_symbols,
            relocs,
        };
        Ok(image)
    }

    /// How many functions start with `endbr64` (read on demand: it touches
    /// a page of code per function).
    pub fn count_endbr_functions(&self) -> usize {
        const ENDBR64: [u8; 4] = [0xf3, 0x0f, 0x1e, 0xfa];
        self.info
            .functions
            .iter()
            .filter(|f| self.read_vaddr(f.address, 4) == Some(&ENDBR64[..]))
            .count()
    }

    /// The file bytes from `vaddr` to the end of its segment's file image.
    pub fn bytes_from(&self, vaddr: u64) -> Option<&[u8]> {
        let seg = self.segment_at(vaddr)?;
        if vaddr - seg.vaddr >= seg.filesz {
            return None;
        }
        let start = usize::try_from(seg.offset.checked_add(vaddr - seg.vaddr)?).ok()?;
        let end = usize::try_from(seg.offset.saturating_add(seg.filesz))
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        self.data.get(start..end)
    }

    /// The file bytes backing `len` bytes at `vaddr`, if all are in the file.
    pub fn read_vaddr(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        self.bytes_from(vaddr)?.get(..len)
    }

    /// The NUL-terminated string at `vaddr` (without the NUL), if one ends
    /// within `max` bytes.
    pub fn read_cstr(&self, vaddr: u64, max: usize) -> Option<&[u8]> {
        let avail = self.bytes_from(vaddr)?;
        let window = &avail[..avail.len().min(max)];
        let nul = window.iter().position(|&b| b == 0)?;
        Some(&window[..nul])
    }

    /// The `PT_LOAD` segments.
    pub fn loads(&self) -> &[Segment] {
        &self.loads
    }

    /// The segment whose file bytes hold `vaddr`.
    fn segment_at(&self, vaddr: u64) -> Option<&Segment> {
        self.loads
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
    }

    /// Every executable section except the PLT stubs.
    pub fn code_ranges(&self) -> Vec<CodeRange<'_>> {
        self.code
            .iter()
            .filter_map(|c| {
                let start = usize::try_from(c.offset).ok()?;
                let bytes = self
                    .data
                    .get(start..start.checked_add(usize::try_from(c.size).ok()?)?)?;
                Some(CodeRange {
                    name: &c.name,
                    vaddr: c.vaddr,
                    bytes,
                })
            })
            .collect()
    }

    /// Whether the file at `path` is still the one this image was mapped
    /// from (not rewritten in place nor replaced since); always, for an
    /// image not mapped from a file. A mapping shows what the file holds
    /// now, so an image of a file changed since must be read again.
    pub fn is_current(&self) -> bool {
        match self.data.version() {
            None => true,
            Some(v) => crate::files::FileVersion::now(&self.path) == Some(v),
        }
    }

    /// Let the pages of the executable sections leave this process's
    /// resident memory until they are read again (see
    /// [`FileBytes::release`]): for after a pass over all code, as the
    /// analysis makes; the bytes stay the same.
    pub fn release_code(&self) {
        for c in &self.code {
            let (Ok(start), Ok(size)) = (usize::try_from(c.offset), usize::try_from(c.size)) else {
                continue;
            };
            self.data.release(start..start.saturating_add(size));
        }
    }

    /// The function symbol containing `vaddr`.
    pub fn function_at(&self, vaddr: u64) -> Option<&FunctionSymbol> {
        self.info
            .functions
            .iter()
            .filter(|f| vaddr >= f.address && vaddr - f.address < f.size.max(1))
            .min_by_key(|f| f.size)
    }

    /// The symbol a GOT slot at `vaddr` is bound to, if any.
    pub fn got_slot_symbol(&self, vaddr: u64) -> Option<&str> {
        self.got_symbols.get(&vaddr).map(String::as_str)
    }

    /// The dynamic relocations, `DT_RELA` then `DT_JMPREL`.
    pub fn dynamic_relocs(&self) -> &[DynReloc] {
        &self.relocs
    }

    /// Fail unless the image exports all four worker_v1 entry points.
    pub fn require_entry_points(&self) -> Result<&Image> {
        let missing: Vec<&str> = self
            .info
            .entry_points
            .iter()
            .filter(|e| e.address.is_none())
            .map(|e| e.name.as_str())
            .collect();
        if missing.is_empty() {
            Ok(self)
        } else {
            Err(InputError::new(
                &self.path,
                format!(
                    "not a function library: does not export {}",
                    missing.join(", ")
                ),
            )
            .into())
        }
    }
}

type File<'a> = ElfFile64<'a, LE>;

const NO_SECTIONS: &str = "has no section headers (as `objcopy --strip-sections` leaves it)";

/// What an image's validation yields, read from its bytes.
struct Facts {
    info: ImageInfo,
    loads: Vec<Segment>,
    code: Vec<CodeSection>,
    relocs: Vec<DynReloc>,
}

impl Facts {
    /// Read and check `data` through its section headers and what the
    /// loader reads; `Err` with the reason it cannot be read so.
    fn read(data: &[u8]) -> Result<Facts, String> {
        let file = ElfFile64::<LE>::parse(data).map_err(|e| format!("malformed ELF: {e}"))?;
        check::ranges(&file, data.len() as u64)?;
        let info = info::collect(&file).map_err(|e| format!("malformed ELF: {e}"))?;
        let (loads, code) = layout(&file);
        let view = loader::LoaderView::read(data)?;
        let relocs = dynamic_relocs(&view)?;
        check::agrees_with_loader(&file, &view, &relocs)?;
        Ok(Facts {
            info,
            loads,
            code,
            relocs,
        })
    }
}

/// `e_shnum` of an ELF64 header already checked (0 when there is no
/// section header table).
fn section_count(data: &[u8]) -> u16 {
    let shoff = u64::from_le_bytes(data[40..48].try_into().expect("checked header"));
    let shnum = u16::from_le_bytes(data[60..62].try_into().expect("checked header"));
    if shoff == 0 {
        0
    } else {
        shnum
    }
}

/// Loadable segments and executable sections.
fn layout(file: &File) -> (Vec<Segment>, Vec<CodeSection>) {
    let e = LE;
    let loads = load_segments(file);
    let table = file.elf_section_table();
    let code = table
        .iter()
        .filter(|s| {
            s.sh_type(e) == elf::SHT_PROGBITS && s.sh_flags(e) & u64::from(elf::SHF_EXECINSTR) != 0
        })
        .filter_map(|s| {
            let name = String::from_utf8_lossy(table.section_name(e, s).ok()?).into_owned();
            (!name.starts_with(".plt")).then(|| CodeSection {
                name,
                vaddr: s.sh_addr(e),
                offset: s.sh_offset(e),
                size: s.sh_size(e),
            })
        })
        .collect();
    (loads, code)
}

/// The dynamic relocations as ld.so reads them (`DT_RELA`, `DT_JMPREL`),
/// with their symbols' names (`DT_SYMTAB`, `DT_STRTAB`).
fn dynamic_relocs(view: &loader::LoaderView) -> Result<Vec<DynReloc>, String> {
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    let mut out = Vec::new();
    for r in view.relocations()? {
        let symbol = if r.sym == 0 {
            None
        } else {
            if let std::collections::btree_map::Entry::Vacant(e) = names.entry(r.sym) {
                e.insert(view.symbol_name(r.sym)?);
            }
            names.get(&r.sym).cloned()
        };
        out.push(DynReloc {
            offset: r.offset,
            r_type: r.r_type,
            symbol,
            addend: r.addend,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(data: Vec<u8>) -> String {
        match Image::parse(Path::new("x.so"), data) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rejects_non_elf_inputs() {
        assert!(err(vec![]).contains("empty"));
        assert!(err(b"hello world\n".to_vec()).contains("not an ELF file"));
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 1;
        h[5] = 1;
        h[6] = 1; // EV_CURRENT
        assert!(err(h.clone()).contains("32-bit"));
        h[4] = 2;
        h[5] = 2;
        assert!(err(h.clone()).contains("big-endian"));
        h[5] = 1;
        h[16] = 3; // ET_DYN
        h[18] = 183; // EM_AARCH64
        assert!(err(h.clone()).contains("AArch64"));
        h[18] = 62;
        h[16] = 2;
        assert!(err(h.clone()).contains("executable"));
        // What ld.so refuses in the identification.
        h[16] = 3;
        h[7] = 9;
        assert!(err(h.clone()).contains("EI_OSABI"));
        h[7] = 3;
        h[8] = 4;
        assert!(err(h.clone()).contains("EI_ABIVERSION"));
        h[8] = 3;
        h[10] = 1;
        assert!(err(h.clone()).contains("EI_PAD"));
        h[10] = 0;
        h[6] = 0;
        assert!(err(h.clone()).contains("EI_VERSION"));
    }

    /// An image knows whether its file has changed since it was read.
    #[test]
    fn an_image_knows_when_its_file_changed() {
        let exe = std::env::current_exe().unwrap();
        let dir = std::env::temp_dir().join(format!("faasfuse-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join("image.so");
        std::fs::copy(&exe, &copy).unwrap();
        let img = Image::load(&copy).unwrap();
        assert!(img.data.is_mapped() && img.is_current());
        // Rewritten in place (the same bytes), then replaced by a rename.
        std::fs::write(&copy, std::fs::read(&exe).unwrap()).unwrap();
        assert!(!img.is_current());
        drop(img);
        let img = Image::load(&copy).unwrap();
        assert!(img.is_current());
        let other = dir.join("other.so");
        std::fs::copy(&exe, &other).unwrap();
        std::fs::rename(&other, &copy).unwrap();
        assert!(!img.is_current());
        // Bytes not read from a file are always current.
        let bytes = std::fs::read(&exe).unwrap();
        assert!(Image::parse(&copy, bytes).unwrap().is_current());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reads_this_test_binary_facts() {
        // Any PIE on the machine is ET_DYN x86-64: the test binary itself.
        let exe = std::env::current_exe().unwrap();
        let img = Image::load(&exe).unwrap();
        assert_eq!(img.info.machine, "x86-64");
        assert!(!img.info.functions.is_empty());
        assert!(img.require_entry_points().is_err());
        let f = &img.info.functions[img.info.functions.len() / 2];
        assert_eq!(
            img.function_at(f.address).map(|g| g.address),
            Some(f.address)
        );
    }
}
