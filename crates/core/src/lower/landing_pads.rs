//! Exception landing pads, from the LSDA (`.gcc_except_table`) that each
//! FDE's augmentation points to: the unwinder jumps to them directly.

use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, Pointer, UnwindSection};
use object::{Object, ObjectSection};

use crate::elf::Image;

/// Landing pad addresses of every function with an LSDA, and the start of
/// every function whose LSDA could not be read (its pads are unknown).
pub fn collect(image: &Image) -> (Vec<u64>, Vec<u64>) {
    let mut pads = Vec::new();
    let mut unknown = Vec::new();
    let Ok(file) = object::File::parse(&*image.data) else {
        return (pads, unknown);
    };
    let Some(section) = file.section_by_name(".eh_frame") else {
        return (pads, unknown);
    };
    let Ok(data) = section.data() else {
        return (pads, unknown);
    };
    let mut bases = BaseAddresses::default().set_eh_frame(section.address());
    if let Some(t) = file.section_by_name(".text") {
        bases = bases.set_text(t.address());
    }
    if let Some(h) = file.section_by_name(".eh_frame_hdr") {
        bases = bases.set_eh_frame_hdr(h.address());
    }
    if let Some(g) = file.section_by_name(".got") {
        bases = bases.set_got(g.address());
    }
    let eh = EhFrame::new(data, LittleEndian);
    let mut entries = eh.entries(&bases);
    while let Ok(Some(entry)) = entries.next() {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) = partial.parse(EhFrame::cie_from_offset) else {
            continue;
        };
        let start = fde.initial_address();
        match fde.lsda() {
            None => {}
            Some(Pointer::Direct(lsda)) => match lsda_pads(image, lsda, start) {
                Some(p) => pads.extend(p),
                None => unknown.push(start),
            },
            Some(Pointer::Indirect(_)) => unknown.push(start),
        }
    }
    (pads, unknown)
}

/// Parse one LSDA header and call-site table (encodings as GCC and LLVM
/// emit them); `None` when it cannot be read.
fn lsda_pads(image: &Image, lsda: u64, func_start: u64) -> Option<Vec<u64>> {
    let mut r = Reader { image, at: lsda };
    let lp_enc = r.u8()?;
    let lp_start = if lp_enc == 0xff {
        func_start
    } else {
        r.encoded(lp_enc)?
    };
    let tt_enc = r.u8()?;
    if tt_enc != 0xff {
        r.uleb()?;
    }
    let cs_enc = r.u8()?;
    let len = r.uleb()?;
    let end = r.at.checked_add(len)?;
    let mut pads = Vec::new();
    while r.at < end {
        let _start = r.encoded(cs_enc)?;
        let _len = r.encoded(cs_enc)?;
        let pad = r.encoded(cs_enc)?;
        r.uleb()?;
        if pad != 0 {
            pads.push(lp_start.wrapping_add(pad));
        }
    }
    Some(pads)
}

struct Reader<'a> {
    image: &'a Image,
    at: u64,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let b = self.image.read_vaddr(self.at, n)?;
        self.at += n as u64;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn uleb(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// A value in a call-site/LPStart encoding: offsets (absolute or
    /// PC-relative to the field) of the common fixed and LEB forms.
    fn encoded(&mut self, enc: u8) -> Option<u64> {
        let field = self.at;
        let v = match enc & 0x0f {
            0x01 => self.uleb()?,
            0x02 => u64::from(u16::from_le_bytes(self.take(2)?.try_into().ok()?)),
            0x03 => u64::from(u32::from_le_bytes(self.take(4)?.try_into().ok()?)),
            0x04 | 0x00 => u64::from_le_bytes(self.take(8)?.try_into().ok()?),
            0x0b => i64::from(i32::from_le_bytes(self.take(4)?.try_into().ok()?)) as u64,
            0x0c => u64::from_le_bytes(self.take(8)?.try_into().ok()?),
            _ => return None,
        };
        match enc & 0x70 {
            0x00 => Some(v),
            0x10 => Some(field.wrapping_add(v)),
            _ => None,
        }
    }
}
