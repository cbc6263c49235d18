//! Exception landing pads, from the LSDA (`.gcc_except_table`) that each
//! FDE's augmentation points to: the unwinder jumps to them directly.

use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, Pointer, UnwindSection};
use object::{Object, ObjectSection};

use crate::elf::eh_pe::{self, DwEhPe};
use crate::elf::Image;

/// Landing pad addresses of every function with an LSDA, and the start of
/// every function whose LSDA could not be read (its pads are unknown).
pub fn collect(image: &Image) -> (Vec<u64>, Vec<u64>) {
    let mut pads = Vec::new();
    let mut unknown = Vec::new();
    let Ok(file) = object::File::parse(image.data.as_slice()) else {
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
    let mut r = Reader {
        bytes: image.bytes_from(lsda)?,
        base: lsda,
        pos: 0,
    };
    let lp_enc = r.u8()?;
    let lp_start = if DwEhPe(lp_enc).is_absent() {
        func_start
    } else {
        r.encoded(lp_enc)?
    };
    let tt_enc = r.u8()?;
    if !DwEhPe(tt_enc).is_absent() {
        r.uleb()?;
    }
    let cs_enc = r.u8()?;
    let len = r.uleb()?;
    let end = r.pos.checked_add(usize::try_from(len).ok()?)?;
    let mut pads = Vec::new();
    while r.pos < end {
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

/// The bytes of an LSDA from its start (at `base`) to the end of its
/// segment.
struct Reader<'a> {
    bytes: &'a [u8],
    base: u64,
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }
    fn uleb(&mut self) -> Option<u64> {
        let (v, n) = eh_pe::uleb(self.bytes.get(self.pos..)?)?;
        self.pos += n;
        Some(v)
    }
    /// A value in a call-site/LPStart encoding: absolute or PC-relative to
    /// the field.
    fn encoded(&mut self, enc: u8) -> Option<u64> {
        let field = self.base.wrapping_add(self.pos as u64);
        let enc = DwEhPe(enc);
        let (v, n) = eh_pe::read(self.bytes.get(self.pos..)?, enc)?;
        self.pos += n;
        eh_pe::target(enc, v, field)
    }
}
