//! Writes the program headers.

use object::elf;

use super::input::Part;
use super::layout::{file_offset, FileOff, InAddr, Inputs, NewSegments, OutAddr, Slot, TlsBlock};

/// Size of one program header.
pub const PHDR_SIZE: u64 = 56;

#[derive(Debug, Clone, Copy)]
pub struct Phdr {
    pub(super) p_type: u32,
    pub(super) flags: u32,
    pub(super) offset: FileOff,
    pub(super) vaddr: OutAddr,
    pub(super) filesz: u64,
    pub(super) memsz: u64,
    pub(super) align: u64,
}

/// What the program headers describe besides the inputs' loads.
pub struct Segments<'a> {
    pub(super) parts: &'a [Part],
    pub(super) inputs: &'a Inputs,
    pub(super) text: Option<Slot>,
    pub(super) tls: TlsBlock,
    pub(super) exec_stack: bool,
}

impl Segments<'_> {
    /// How many program headers there are: the list for segments not yet
    /// placed (with a property note when `property`) has the final length.
    pub fn count(&self, property: bool) -> usize {
        let unplaced = NewSegments {
            property: property.then(Slot::default),
            ..NewSegments::default()
        };
        self.program_headers(&unplaced).len()
    }

    /// `PT_PHDR` and the loads that hold the inputs and the new code.
    fn input_loads(&self, new: &NewSegments) -> Vec<Phdr> {
        let page = self.inputs.page;
        let mut phdrs = vec![Phdr {
            p_type: elf::PT_PHDR,
            flags: elf::PF_R,
            offset: new.phdr.offset,
            vaddr: new.phdr.vaddr,
            filesz: new.phdr.size,
            memsz: new.phdr.size,
            align: 8,
        }];
        for (p, pl) in self.parts.iter().zip(&self.inputs.placements) {
            for (l, off) in p.pieces.iter().zip(&pl.load_offsets) {
                phdrs.push(Phdr {
                    p_type: elf::PT_LOAD,
                    flags: l.flags,
                    offset: *off,
                    vaddr: pl.out(InAddr(l.vaddr)),
                    filesz: l.filesz,
                    memsz: l.memsz,
                    align: page,
                });
            }
        }
        if let Some(t) = self.text {
            phdrs.push(Phdr {
                p_type: elf::PT_LOAD,
                flags: elf::PF_R | elf::PF_X,
                offset: t.offset,
                vaddr: t.vaddr,
                filesz: t.size,
                memsz: t.size,
                align: page,
            });
        }
        phdrs
    }

    pub fn program_headers(&self, new: &NewSegments) -> Vec<Phdr> {
        let page = self.inputs.page;
        let mut phdrs = self.input_loads(new);
        let seg = |p_type, flags, start: Slot, end_vaddr: OutAddr, memsz: u64, align| Phdr {
            p_type,
            flags,
            offset: start.offset,
            vaddr: start.vaddr,
            filesz: end_vaddr - start.vaddr,
            memsz,
            align,
        };
        phdrs.push(seg(
            elf::PT_LOAD,
            elf::PF_R,
            new.r_start,
            new.r_end,
            new.r_end - new.r_start.vaddr,
            page,
        ));
        phdrs.push(seg(
            elf::PT_LOAD,
            elf::PF_R | elf::PF_W,
            new.rw_start,
            new.rw_end,
            new.rw_end - new.rw_start.vaddr,
            page,
        ));
        phdrs.push(seg(
            elf::PT_DYNAMIC,
            elf::PF_R | elf::PF_W,
            new.dynamic,
            new.dynamic.end(),
            new.dynamic.size,
            8,
        ));
        phdrs.push(seg(
            elf::PT_NOTE,
            elf::PF_R,
            new.build_id,
            new.build_id.vaddr + 36,
            36,
            4,
        ));
        if let Some(s) = new.property {
            phdrs.push(seg(elf::PT_NOTE, elf::PF_R, s, s.vaddr + 32, 32, 8));
            phdrs.push(seg(elf::PT_GNU_PROPERTY, elf::PF_R, s, s.vaddr + 32, 32, 8));
        }
        if self.tls.size > 0 {
            phdrs.push(seg(
                elf::PT_TLS,
                elf::PF_R,
                new.tdata,
                new.tdata.vaddr + self.tls.filesz,
                self.tls.size,
                self.tls.align,
            ));
        }
        phdrs.push(seg(
            elf::PT_GNU_EH_FRAME,
            elf::PF_R,
            new.eh_frame_hdr,
            new.eh_frame_hdr.end(),
            new.eh_frame_hdr.size,
            4,
        ));
        phdrs.push(Phdr {
            p_type: elf::PT_GNU_STACK,
            flags: elf::PF_R | elf::PF_W | if self.exec_stack { elf::PF_X } else { 0 },
            offset: FileOff(0),
            vaddr: OutAddr(0),
            filesz: 0,
            memsz: 0,
            align: 16,
        });
        if let Some((s, e)) = self.parts[0].relro {
            let off = file_offset(&self.parts[0], &self.inputs.placements[0], InAddr(s));
            phdrs.push(Phdr {
                p_type: elf::PT_GNU_RELRO,
                flags: elf::PF_R,
                offset: off,
                vaddr: OutAddr(s),
                filesz: e - s,
                memsz: e - s,
                align: 1,
            });
        }
        phdrs
    }
}

/// The file offset of `len` bytes at `vaddr`, if a loaded segment holds them.
pub fn output_range(phdrs: &[Phdr], vaddr: OutAddr, len: u64) -> Option<usize> {
    phdrs
        .iter()
        .find(|p| p.p_type == elf::PT_LOAD && vaddr >= p.vaddr && vaddr + len <= p.vaddr + p.filesz)
        .map(|p| (p.offset.0 + (vaddr - p.vaddr)) as usize)
}

pub fn encode(phdrs: &[Phdr]) -> Vec<u8> {
    let mut ph = Vec::with_capacity(phdrs.len() * PHDR_SIZE as usize);
    for p in phdrs {
        ph.extend_from_slice(&p.p_type.to_le_bytes());
        ph.extend_from_slice(&p.flags.to_le_bytes());
        for v in [p.offset.0, p.vaddr.0, p.vaddr.0, p.filesz, p.memsz, p.align] {
            ph.extend_from_slice(&v.to_le_bytes());
        }
    }
    ph
}
