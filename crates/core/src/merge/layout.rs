//! Places the inputs, the new code, the combined TLS block and the two new segments.

use std::ops::{Add, Sub};

use anyhow::Result;

use super::input::Part;
use crate::error::InputError;

/// An address in an input image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct InAddr(pub u64);

/// An address in the fused image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutAddr(pub u64);

/// An offset in the fused image's file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct FileOff(pub u64);

impl Add<u64> for OutAddr {
    type Output = OutAddr;
    fn add(self, n: u64) -> OutAddr {
        OutAddr(self.0 + n)
    }
}

impl Sub for OutAddr {
    type Output = u64;
    fn sub(self, o: OutAddr) -> u64 {
        self.0 - o.0
    }
}

impl Add<u64> for FileOff {
    type Output = FileOff;
    fn add(self, n: u64) -> FileOff {
        FileOff(self.0 + n)
    }
}

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
    pub(super) disp: u64,
    /// File offset of each of the part's loads in the output.
    pub(super) load_offsets: Vec<FileOff>,
    /// Offset of the part's TLS block in the combined block.
    pub(super) tls_offset: Option<u64>,
}

impl Placement {
    /// Where an input address of the part lands in the fused image.
    pub fn out(&self, a: InAddr) -> OutAddr {
        OutAddr(a.0 + self.disp)
    }
}

/// Where an input address of `part` lands in the output file.
pub fn file_offset(part: &Part, pl: &Placement, vaddr: InAddr) -> FileOff {
    let vaddr = vaddr.0;
    for (l, off) in part.pieces.iter().zip(&pl.load_offsets) {
        if vaddr >= l.vaddr && vaddr <= l.vaddr + l.memsz {
            return *off + (vaddr - l.vaddr).min(l.filesz);
        }
    }
    FileOff(0)
}

/// A blob in one of the new segments.
#[derive(Debug, Default, Clone, Copy)]
pub struct Slot {
    pub(super) vaddr: OutAddr,
    pub(super) offset: FileOff,
    pub(super) size: u64,
}

impl Slot {
    pub fn end(&self) -> OutAddr {
        self.vaddr + self.size
    }
}

/// Sequential placement inside a new segment.
pub struct Cursor {
    pub(super) vaddr: OutAddr,
    pub(super) offset: FileOff,
}

impl Cursor {
    pub fn place(&mut self, size: u64, align: u64) -> Slot {
        let pad = align_up(self.vaddr.0, align) - self.vaddr.0;
        self.vaddr = self.vaddr + pad;
        self.offset = self.offset + pad;
        let s = Slot {
            vaddr: self.vaddr,
            offset: self.offset,
            size,
        };
        self.vaddr = self.vaddr + size;
        self.offset = self.offset + size;
        s
    }

    /// An empty slot here: the start of a segment.
    fn here(&self) -> Slot {
        Slot {
            vaddr: self.vaddr,
            offset: self.offset,
            size: 0,
        }
    }
}

/// The inputs as displaced blocks, root at its own addresses, and where
/// the next contents may go.
pub struct Inputs {
    /// The largest page any input's segments use.
    pub(super) page: u64,
    pub(super) placements: Vec<Placement>,
    /// End of the address space used so far.
    pub(super) vend: OutAddr,
    /// End of the file bytes used so far.
    pub(super) fend: FileOff,
}

pub fn place_inputs(parts: &[Part]) -> Result<Inputs> {
    let page = parts
        .iter()
        .flat_map(|p| p.loads.iter().map(|l| l.align))
        .max()
        .unwrap_or(0x1000)
        .max(0x1000);
    let mut placements = Vec::new();
    let mut vcur = 0u64;
    let mut fcur = 0u64;
    for (i, p) in parts.iter().enumerate() {
        let (lo, hi) = p.span();
        let disp = if i == 0 {
            if lo != 0 {
                return Err(
                    InputError::new(&p.path, "root image does not start at address 0").into(),
                );
            }
            0
        } else {
            align_up(vcur, page) - lo - lo % page
        };
        let mut load_offsets = Vec::new();
        for (j, l) in p.pieces.iter().enumerate() {
            let off = if i == 0 && j == 0 {
                l.offset
            } else {
                congruent(fcur, l.vaddr + disp, page)
            };
            load_offsets.push(FileOff(off));
            fcur = fcur.max(off + l.filesz);
        }
        vcur = hi + disp;
        placements.push(Placement {
            disp,
            load_offsets,
            tls_offset: None,
        });
    }
    Ok(Inputs {
        page,
        placements,
        vend: OutAddr(vcur),
        fend: FileOff(fcur),
    })
}

impl Inputs {
    /// A new executable segment of `size` bytes after the inputs, if any.
    pub fn place_text(&mut self, size: u64) -> Option<Slot> {
        (size > 0).then(|| {
            let offset = align_up(self.fend.0, 16);
            let slot = Slot {
                vaddr: OutAddr(align_up(self.vend.0, self.page) + offset % self.page),
                offset: FileOff(offset),
                size,
            };
            self.vend = slot.end();
            self.fend = FileOff(offset + size);
            slot
        })
    }

    /// Give each input with TLS its place in the combined block.
    pub fn place_tls(&mut self, parts: &[Part]) -> TlsBlock {
        let mut size = 0u64;
        let mut align = 1u64;
        for (i, p) in parts.iter().enumerate() {
            if let Some(t) = p.tls {
                let x = align_up(size, t.align);
                self.placements[i].tls_offset = Some(x);
                size = x + t.memsz;
                align = align.max(t.align);
            }
        }
        let filesz = parts
            .iter()
            .zip(&self.placements)
            .filter_map(|(p, pl)| Some(pl.tls_offset? + p.tls?.filesz))
            .max()
            .unwrap_or(0);
        TlsBlock {
            size,
            align,
            filesz,
        }
    }
}

/// The combined TLS block of every input.
#[derive(Debug, Clone, Copy)]
pub struct TlsBlock {
    pub(super) size: u64,
    pub(super) align: u64,
    /// Bytes of its initialization image.
    pub(super) filesz: u64,
}

/// Sizes of the new contents, known before any is placed.
pub struct Sizes {
    pub(super) phdrs: u64,
    pub(super) property: bool,
    pub(super) gnu_hash: u64,
    pub(super) dynsym: u64,
    pub(super) dynstr: u64,
    pub(super) versym: u64,
    pub(super) verneed: u64,
    pub(super) rela: u64,
    pub(super) eh_frame_hdr: u64,
    pub(super) eh_frame: u64,
    pub(super) dynamic: u64,
    pub(super) init_array: u64,
    pub(super) fini_array: u64,
    pub(super) table: u64,
    pub(super) tls: TlsBlock,
}

/// The new read-only segment (program headers, notes, dynamic symbols,
/// relocations, unwind tables) and the new writable one (`.dynamic`,
/// initializer arrays, the fused table, the combined TLS image).
#[derive(Debug, Default, Clone, Copy)]
pub struct NewSegments {
    pub(super) r_start: Slot,
    pub(super) phdr: Slot,
    pub(super) build_id: Slot,
    pub(super) property: Option<Slot>,
    pub(super) gnu_hash: Slot,
    pub(super) dynsym: Slot,
    pub(super) dynstr: Slot,
    pub(super) versym: Slot,
    pub(super) verneed: Slot,
    pub(super) rela: Slot,
    pub(super) eh_frame_hdr: Slot,
    pub(super) eh_frame: Slot,
    pub(super) r_end: OutAddr,
    pub(super) rw_start: Slot,
    pub(super) dynamic: Slot,
    pub(super) init_array: Slot,
    pub(super) fini_array: Slot,
    pub(super) table: Slot,
    pub(super) tdata: Slot,
    pub(super) rw_end: OutAddr,
    /// End of the allocated file bytes.
    pub(super) alloc_end: FileOff,
}

/// Size of the build-id note.
pub const BUILD_ID_NOTE: u64 = 36;
/// Size of the `.note.gnu.property` note.
pub const PROPERTY_NOTE: u64 = 32;

impl Inputs {
    /// Place the new segments after everything else. Each starts on a new
    /// page in memory but right after the previous bytes in the file
    /// (offset and address stay congruent).
    pub fn place_new(&self, s: &Sizes) -> NewSegments {
        let page = self.page;
        let fcur = align_up(self.fend.0, 8);
        let mut cur = Cursor {
            vaddr: OutAddr(align_up(self.vend.0, page) + fcur % page),
            offset: FileOff(fcur),
        };
        let r_start = cur.here();
        let phdr = cur.place(s.phdrs, 8);
        let build_id = cur.place(BUILD_ID_NOTE, 4);
        let property = s.property.then(|| cur.place(PROPERTY_NOTE, 8));
        let gnu_hash = cur.place(s.gnu_hash, 8);
        let dynsym = cur.place(s.dynsym, 8);
        let dynstr = cur.place(s.dynstr, 1);
        let versym = cur.place(s.versym, 2);
        let verneed = cur.place(s.verneed, 4);
        let rela = cur.place(s.rela, 8);
        let eh_frame_hdr = cur.place(s.eh_frame_hdr, 4);
        let eh_frame = cur.place(s.eh_frame, 8);
        let r_end = cur.vaddr;

        let mut cur = Cursor {
            vaddr: OutAddr(align_up(r_end.0, page) + cur.offset.0 % page),
            offset: cur.offset,
        };
        let rw_start = cur.here();
        let dynamic = cur.place(s.dynamic, 8);
        let init_array = cur.place(s.init_array, 8);
        let fini_array = cur.place(s.fini_array, 8);
        let table = cur.place(s.table, 8);
        let tdata = cur.place(s.tls.filesz, s.tls.align);
        NewSegments {
            r_start,
            phdr,
            build_id,
            property,
            gnu_hash,
            dynsym,
            dynstr,
            versym,
            verneed,
            rela,
            eh_frame_hdr,
            eh_frame,
            r_end,
            rw_start,
            dynamic,
            init_array,
            fini_array,
            table,
            tdata,
            rw_end: cur.vaddr,
            alloc_end: cur.offset,
        }
    }
}
