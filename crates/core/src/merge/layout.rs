//! Where everything goes: input placements, sections and program headers
//! of the output, and sequential placement of new contents.

use object::elf;

use super::input::Part;

pub fn align_up(v: u64, a: u64) -> u64 {
    if a <= 1 {
        v
    } else {
        v.div_ceil(a) * a
    }
}

/// Smallest offset `>= at` congruent to `vaddr` modulo `page`.
pub fn congruent(at: u64, vaddr: u64, page: u64) -> u64 {
    let want = vaddr % page;
    let base = at - at % page + want;
    if base >= at {
        base
    } else {
        base + page
    }
}

/// Where each input landed.
#[derive(Debug, Clone)]
pub struct Placement {
    pub disp: u64,
    /// File offset of each of the part's loads in the output.
    pub load_offsets: Vec<u64>,
    /// Offset of the part's TLS block in the combined block.
    pub tls_offset: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct OutSection {
    pub name: String,
    pub sh_type: u32,
    pub flags: u64,
    pub addr: u64,
    pub offset: u64,
    pub size: u64,
    pub link: u32,
    pub info: u32,
    pub align: u64,
    pub entsize: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Phdr {
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// A blob in one of the new segments.
#[derive(Default, Clone, Copy)]
pub struct Slot {
    pub vaddr: u64,
    pub offset: u64,
    pub size: u64,
}

/// Sequential placement inside a new segment.
pub struct Cursor {
    pub vaddr: u64,
    pub offset: u64,
}

impl Cursor {
    pub fn place(&mut self, size: u64, align: u64) -> Slot {
        let pad = align_up(self.vaddr, align) - self.vaddr;
        self.vaddr += pad;
        self.offset += pad;
        let s = Slot {
            vaddr: self.vaddr,
            offset: self.offset,
            size,
        };
        self.vaddr += size;
        self.offset += size;
        s
    }
}

/// Where an input address of `part` lands in the output file.
pub fn file_offset(part: &Part, pl: &Placement, vaddr: u64) -> u64 {
    for (l, off) in part.pieces.iter().zip(&pl.load_offsets) {
        if vaddr >= l.vaddr && vaddr <= l.vaddr + l.memsz {
            return off + (vaddr - l.vaddr).min(l.filesz);
        }
    }
    0
}

/// The file offset of `len` bytes at `vaddr`, if a loaded segment holds them.
pub fn output_range(phdrs: &[Phdr], vaddr: u64, len: u64) -> Option<usize> {
    phdrs
        .iter()
        .find(|p| p.p_type == elf::PT_LOAD && vaddr >= p.vaddr && vaddr + len <= p.vaddr + p.filesz)
        .map(|p| (p.offset + vaddr - p.vaddr) as usize)
}
