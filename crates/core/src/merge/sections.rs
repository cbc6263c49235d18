//! Writes the section header table: the inputs' sections, the new ones, the non-allocated ones.

use object::elf;

use super::debug::DebugOut;
use super::dynsym::StrTab;
use super::input::{Part, Role};
use super::layout::{
    align_up, file_offset, FileOff, InAddr, NewSegments, OutAddr, Placement, Slot, TlsBlock,
};
use super::layout::{BUILD_ID_NOTE, PROPERTY_NOTE};

/// Size of one section header.
pub const SHDR_SIZE: u64 = 64;

#[derive(Debug, Clone, Default)]
pub struct OutSection {
    pub(super) name: String,
    pub(super) sh_type: u32,
    pub(super) flags: u64,
    pub(super) addr: OutAddr,
    pub(super) offset: FileOff,
    pub(super) size: u64,
    pub(super) link: u32,
    pub(super) info: u32,
    pub(super) align: u64,
    pub(super) entsize: u64,
}

/// The null section and the copied images' sections (indices are final:
/// new sections follow them).
pub fn input_sections(parts: &[Part], placements: &[Placement]) -> Vec<OutSection> {
    let mut sections = vec![OutSection::default()];
    for (p, pl) in parts.iter().zip(placements) {
        for s in &p.sections {
            let name = if p.role == Role::Root {
                s.name.clone()
            } else {
                format!("{}.{}", s.name, p.name)
            };
            sections.push(OutSection {
                name,
                sh_type: s.sh_type,
                flags: s.flags,
                addr: pl.out(InAddr(s.addr)),
                offset: file_offset(p, pl, InAddr(s.addr)),
                size: s.size,
                align: s.align,
                entsize: s.entsize,
                ..Default::default()
            });
        }
    }
    sections
}

/// The index of the allocated section holding `addr` (0 if none).
pub fn section_of(sections: &[OutSection], addr: OutAddr) -> u16 {
    sections
        .iter()
        .position(|s| {
            s.flags & u64::from(elf::SHF_ALLOC) != 0
                && addr >= s.addr
                && addr < s.addr + s.size.max(1)
        })
        .unwrap_or(0) as u16
}

/// Add the section headers of the new contents.
pub fn add_new(
    sections: &mut Vec<OutSection>,
    new: &NewSegments,
    text: Option<Slot>,
    tls: TlsBlock,
    verneed_count: usize,
    imports: usize,
) {
    let mut add = |name: &str, sh_type: u32, flags: u32, slot: Slot, align: u64, entsize: u64| {
        sections.push(OutSection {
            name: name.into(),
            sh_type,
            flags: u64::from(flags),
            addr: slot.vaddr,
            offset: slot.offset,
            size: slot.size,
            align,
            entsize,
            ..Default::default()
        });
        sections.len() as u32 - 1
    };
    let a = elf::SHF_ALLOC;
    let wa = elf::SHF_ALLOC | elf::SHF_WRITE;
    debug_assert_eq!(new.build_id.size, BUILD_ID_NOTE);
    add(".note.gnu.build-id", elf::SHT_NOTE, a, new.build_id, 4, 0);
    if let Some(s) = new.property {
        debug_assert_eq!(s.size, PROPERTY_NOTE);
        add(".note.gnu.property", elf::SHT_NOTE, a, s, 8, 0);
    }
    let hash_idx = add(".gnu.hash", elf::SHT_GNU_HASH, a, new.gnu_hash, 8, 0);
    let dynsym_idx = add(".dynsym", elf::SHT_DYNSYM, a, new.dynsym, 8, 24);
    let dynstr_idx = add(".dynstr", elf::SHT_STRTAB, a, new.dynstr, 1, 0);
    let versym_idx = add(".gnu.version", elf::SHT_GNU_VERSYM, a, new.versym, 2, 2);
    let verneed_idx = (verneed_count > 0)
        .then(|| add(".gnu.version_r", elf::SHT_GNU_VERNEED, a, new.verneed, 4, 0));
    let rela_idx = add(".rela.dyn", elf::SHT_RELA, a, new.rela, 8, 24);
    add(
        ".eh_frame_hdr",
        elf::SHT_PROGBITS,
        a,
        new.eh_frame_hdr,
        4,
        0,
    );
    add(".eh_frame", elf::SHT_PROGBITS, a, new.eh_frame, 8, 0);
    if let Some(t) = text {
        add(
            ".text.faasfuse.rpc",
            elf::SHT_PROGBITS,
            elf::SHF_ALLOC | elf::SHF_EXECINSTR,
            t,
            16,
            0,
        );
    }
    let dynamic_idx = add(".dynamic", elf::SHT_DYNAMIC, wa, new.dynamic, 8, 16);
    add(".init_array", elf::SHT_INIT_ARRAY, wa, new.init_array, 8, 8);
    add(".fini_array", elf::SHT_FINI_ARRAY, wa, new.fini_array, 8, 8);
    add(
        ".data.rel.ro.faasfuse",
        elf::SHT_PROGBITS,
        wa,
        new.table,
        8,
        0,
    );
    if tls.size > 0 {
        add(
            ".tdata",
            elf::SHT_PROGBITS,
            wa | elf::SHF_TLS,
            new.tdata,
            tls.align,
            0,
        );
        if tls.size > tls.filesz {
            let tbss = Slot {
                vaddr: new.tdata.vaddr + tls.filesz,
                offset: new.tdata.offset + tls.filesz,
                size: tls.size - tls.filesz,
            };
            add(
                ".tbss",
                elf::SHT_NOBITS,
                wa | elf::SHF_TLS,
                tbss,
                tls.align,
                0,
            );
        }
    }
    let dynsym_imports_end = 1 + imports as u32;
    sections[hash_idx as usize].link = dynsym_idx;
    sections[dynsym_idx as usize].link = dynstr_idx;
    sections[dynsym_idx as usize].info = 1.min(dynsym_imports_end);
    sections[versym_idx as usize].link = dynsym_idx;
    if let Some(i) = verneed_idx {
        sections[i as usize].link = dynstr_idx;
        sections[i as usize].info = verneed_count as u32;
    }
    sections[rela_idx as usize].link = dynsym_idx;
    sections[dynamic_idx as usize].link = dynstr_idx;
}

/// Where the non-allocated contents go, after the allocated ones.
pub struct NonAlloc {
    /// Where each of the debug sections goes.
    pub(super) debug: Vec<FileOff>,
    pub(super) sites: FileOff,
    pub(super) symtab: FileOff,
    pub(super) symtab_bytes: Vec<u8>,
    pub(super) strtab: FileOff,
    pub(super) strtab_bytes: Vec<u8>,
    pub(super) shstrtab: StrTab,
    pub(super) shstrndx: usize,
    pub(super) name_offsets: Vec<u32>,
    /// Offset of the section header table.
    pub(super) shoff: FileOff,
    /// Size of the whole file.
    pub(super) total: u64,
}

/// Add the non-allocated sections (debug info, the lowered sites'
/// record, `.symtab`, `.strtab`, `.shstrtab`) from `alloc_end` on;
/// `symtab` makes `.symtab` and `.strtab` given the sections so far.
pub fn add_non_alloc(
    sections: &mut Vec<OutSection>,
    debug_sections: &[DebugOut],
    alloc_end: FileOff,
    sites_size: u64,
    symtab: impl FnOnce(&[OutSection]) -> (Vec<u8>, Vec<u8>, u32),
) -> NonAlloc {
    let mut fend = alloc_end.0;
    let mut debug = Vec::new();
    for d in debug_sections {
        fend = align_up(fend, d.align.max(8));
        debug.push(FileOff(fend));
        sections.push(OutSection {
            name: d.name.clone(),
            sh_type: elf::SHT_PROGBITS,
            flags: d.flags,
            offset: FileOff(fend),
            size: d.size(),
            align: d.align,
            entsize: d.entsize,
            ..Default::default()
        });
        fend += d.size();
    }
    fend = align_up(fend, 8);
    let sites = FileOff(fend);
    sections.push(OutSection {
        name: crate::lower::SITES_SECTION.into(),
        sh_type: elf::SHT_PROGBITS,
        offset: sites,
        size: sites_size,
        align: 1,
        ..Default::default()
    });
    fend += sites_size;
    let (symtab, strtab, first_global) = symtab(sections);
    fend = align_up(fend, 8);
    let symtab_off = FileOff(fend);
    fend += symtab.len() as u64;
    let strtab_off = FileOff(fend);
    fend += strtab.len() as u64;
    let symtab_idx = sections.len() as u32;
    sections.push(OutSection {
        name: ".symtab".into(),
        sh_type: elf::SHT_SYMTAB,
        offset: symtab_off,
        size: symtab.len() as u64,
        link: symtab_idx + 1,
        info: first_global,
        align: 8,
        entsize: 24,
        ..Default::default()
    });
    sections.push(OutSection {
        name: ".strtab".into(),
        sh_type: elf::SHT_STRTAB,
        offset: strtab_off,
        size: strtab.len() as u64,
        align: 1,
        ..Default::default()
    });
    let mut shstr = StrTab::new();
    let shstrndx = sections.len();
    sections.push(OutSection {
        name: ".shstrtab".into(),
        sh_type: elf::SHT_STRTAB,
        align: 1,
        ..Default::default()
    });
    let name_offsets: Vec<u32> = sections.iter().map(|s| shstr.add(&s.name)).collect();
    let last = &mut sections[shstrndx];
    last.offset = FileOff(fend);
    last.size = shstr.bytes.len() as u64;
    fend += shstr.bytes.len() as u64;
    let shoff = align_up(fend, 8);
    let total = shoff + SHDR_SIZE * sections.len() as u64;
    NonAlloc {
        debug,
        sites,
        symtab: symtab_off,
        symtab_bytes: symtab,
        strtab: strtab_off,
        strtab_bytes: strtab,
        shstrtab: shstr,
        shstrndx,
        name_offsets,
        shoff: FileOff(shoff),
        total,
    }
}

pub fn encode(sections: &[OutSection], name_offsets: &[u32]) -> Vec<u8> {
    let mut sh = Vec::with_capacity(sections.len() * SHDR_SIZE as usize);
    for (s, name) in sections.iter().zip(name_offsets) {
        sh.extend_from_slice(&name.to_le_bytes());
        sh.extend_from_slice(&s.sh_type.to_le_bytes());
        sh.extend_from_slice(&s.flags.to_le_bytes());
        sh.extend_from_slice(&s.addr.0.to_le_bytes());
        sh.extend_from_slice(&s.offset.0.to_le_bytes());
        sh.extend_from_slice(&s.size.to_le_bytes());
        sh.extend_from_slice(&s.link.to_le_bytes());
        sh.extend_from_slice(&s.info.to_le_bytes());
        sh.extend_from_slice(&s.align.to_le_bytes());
        sh.extend_from_slice(&s.entsize.to_le_bytes());
    }
    sh
}
