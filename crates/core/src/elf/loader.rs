//! A shared object as the dynamic linker sees it: the program headers and
//! the dynamic segment, nothing else. ld.so never reads section headers, so
//! a library whose section headers are damaged or absent still loads and
//! runs; every fact a fused image depends on is taken from here, and the
//! section headers are used only where they agree with it.

use object::elf;

/// Packed relative relocations (the gABI's values; `object` predates them).
pub const DT_RELRSZ: u32 = 35;
pub const DT_RELR: u32 = 36;
pub const DT_RELRENT: u32 = 37;
const SHT_RELR: u32 = 19;

/// A `PT_LOAD` segment's addresses and file bytes.
#[derive(Debug, Clone, Copy)]
struct Load {
    vaddr: u64,
    offset: u64,
    filesz: u64,
}

/// One `Elf64_Rela`, as read from `DT_RELA` or `DT_JMPREL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRela {
    pub offset: u64,
    pub r_type: u32,
    pub sym: u32,
    pub addend: i64,
}

/// What ld.so reads of one image.
pub struct LoaderView<'a> {
    data: &'a [u8],
    loads: Vec<Load>,
    /// (tag, value) up to `DT_NULL`.
    pub dynamic: Vec<(i64, u64)>,
    /// `PT_DYNAMIC`, `PT_GNU_EH_FRAME`, `PT_TLS`, `PT_INTERP`: (vaddr, memsz).
    pub dynamic_range: Option<(u64, u64)>,
    pub eh_frame_hdr: Option<(u64, u64)>,
    pub tls: Option<(u64, u64)>,
    pub interp: Option<(u64, u64)>,
    /// Every `PT_NOTE`: (vaddr, memsz).
    pub notes: Vec<(u64, u64)>,
}

pub(super) fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}
pub(super) fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}
pub(super) fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

impl<'a> LoaderView<'a> {
    /// Read the program headers and the dynamic segment of `data` (an
    /// ELF64 header already checked).
    pub fn read(data: &'a [u8]) -> Result<LoaderView<'a>, String> {
        let bad = || "truncated program header table".to_string();
        let phoff = u64_at(data, 32).ok_or_else(bad)? as usize;
        let phentsize = u16_at(data, 54).ok_or_else(bad)? as usize;
        let phnum = u16_at(data, 56).ok_or_else(bad)? as usize;
        if phentsize < 56 {
            return Err(format!(
                "e_phentsize {phentsize} is smaller than a program header"
            ));
        }
        let mut v = LoaderView {
            data,
            loads: Vec::new(),
            dynamic: Vec::new(),
            dynamic_range: None,
            eh_frame_hdr: None,
            tls: None,
            interp: None,
            notes: Vec::new(),
        };
        for i in 0..phnum {
            let h = phoff
                .checked_add(i.checked_mul(phentsize).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            let p_type = u32_at(data, h).ok_or_else(bad)?;
            let offset = u64_at(data, h + 8).ok_or_else(bad)?;
            let vaddr = u64_at(data, h + 16).ok_or_else(bad)?;
            let filesz = u64_at(data, h + 32).ok_or_else(bad)?;
            let memsz = u64_at(data, h + 40).ok_or_else(bad)?;
            match p_type {
                elf::PT_LOAD => v.loads.push(Load {
                    vaddr,
                    offset,
                    filesz,
                }),
                elf::PT_DYNAMIC => v.dynamic_range = Some((vaddr, memsz)),
                elf::PT_GNU_EH_FRAME => v.eh_frame_hdr = Some((vaddr, memsz)),
                elf::PT_TLS => v.tls = Some((vaddr, memsz)),
                elf::PT_INTERP => v.interp = Some((vaddr, memsz)),
                elf::PT_NOTE => v.notes.push((vaddr, memsz)),
                _ => {}
            }
        }
        let (dvaddr, dsize) = v
            .dynamic_range
            .ok_or_else(|| "no dynamic segment (PT_DYNAMIC)".to_string())?;
        let bytes = v.bytes(dvaddr, dsize).ok_or_else(|| {
            format!(
                "dynamic segment at {dvaddr:#x} (+{dsize:#x}) lies outside the file's loaded bytes"
            )
        })?;
        for e in bytes.chunks_exact(16) {
            let tag = i64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
            let val = u64::from_le_bytes(e[8..].try_into().expect("8 bytes"));
            if tag == i64::from(elf::DT_NULL) {
                break;
            }
            v.dynamic.push((tag, val));
        }
        Ok(v)
    }

    /// The value of dynamic tag `tag` (the first, as ld.so keeps it).
    pub fn get(&self, tag: u32) -> Option<u64> {
        self.dynamic
            .iter()
            .find(|(t, _)| *t == i64::from(tag))
            .map(|(_, v)| *v)
    }

    /// The file bytes of `len` bytes at `vaddr`, all within one segment's
    /// file image.
    pub fn bytes(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let l = self
            .loads
            .iter()
            .find(|l| vaddr >= l.vaddr && vaddr - l.vaddr < l.filesz.max(1))?;
        let rel = vaddr - l.vaddr;
        if rel.checked_add(len)? > l.filesz {
            return None;
        }
        let start = usize::try_from(l.offset.checked_add(rel)?).ok()?;
        self.data
            .get(start..start.checked_add(usize::try_from(len).ok()?)?)
    }

    /// A table the dynamic segment points at: `addr_tag` and `size_tag`,
    /// checked to lie in the file's loaded bytes.
    fn table(
        &self,
        addr_tag: u32,
        size_tag: u32,
        what: &str,
    ) -> Result<Option<(u64, &'a [u8])>, String> {
        let (Some(addr), size) = (self.get(addr_tag), self.get(size_tag)) else {
            return Ok(None);
        };
        let size = size.ok_or_else(|| format!("{what} without its size"))?;
        let bytes = self.bytes(addr, size).ok_or_else(|| {
            format!("{what} at {addr:#x} (+{size:#x}) lies outside the file's loaded bytes")
        })?;
        Ok(Some((addr, bytes)))
    }

    /// The dynamic relocations ld.so applies: `DT_RELA` then `DT_JMPREL`
    /// (when `DT_RELA`'s range ends with the PLT relocations, as some
    /// linkers lay them out, those are read once).
    pub fn relocations(&self) -> Result<Vec<RawRela>, String> {
        if self.get(elf::DT_REL).is_some() {
            return Err("uses REL relocations (DT_REL); x86-64 images use RELA".into());
        }
        if let Some(ent) = self.get(elf::DT_RELAENT) {
            if ent != 24 {
                return Err(format!("DT_RELAENT {ent}, not 24"));
            }
        }
        let rela = self.table(elf::DT_RELA, elf::DT_RELASZ, "DT_RELA")?;
        let plt = self.table(elf::DT_JMPREL, elf::DT_PLTRELSZ, "DT_JMPREL")?;
        if plt.is_some() && self.get(elf::DT_PLTREL) != Some(u64::from(elf::DT_RELA)) {
            return Err("DT_PLTREL is not DT_RELA: the PLT relocations are not RELA".into());
        }
        let mut rela = rela;
        if let (Some((ra, rb)), Some((pa, pb))) = (rela.as_mut(), plt) {
            let (rend, pend) = (*ra + rb.len() as u64, pa + pb.len() as u64);
            if pa >= *ra && pend == rend {
                *rb = &rb[..(pa - *ra) as usize];
            } else if pa < rend && *ra < pend {
                return Err(format!(
                    "DT_JMPREL {pa:#x}..{pend:#x} overlaps DT_RELA {ra:#x}..{rend:#x}"
                ));
            }
        }
        let mut out = Vec::new();
        for bytes in rela.map(|(_, b)| b).into_iter().chain(plt.map(|(_, b)| b)) {
            if bytes.len() % 24 != 0 {
                return Err(format!(
                    "relocation table of {} bytes, not whole Elf64_Rela entries",
                    bytes.len()
                ));
            }
            for r in bytes.chunks_exact(24) {
                let info = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
                out.push(RawRela {
                    offset: u64::from_le_bytes(r[..8].try_into().expect("8 bytes")),
                    r_type: info as u32,
                    sym: (info >> 32) as u32,
                    addend: i64::from_le_bytes(r[16..].try_into().expect("8 bytes")),
                });
            }
        }
        Ok(out)
    }

    /// `DT_RELR`'s words (packed relative relocations), if any.
    pub fn relr(&self) -> Result<Option<&'a [u8]>, String> {
        if let Some(ent) = self.get(DT_RELRENT) {
            if ent != 8 {
                return Err(format!("DT_RELRENT {ent}, not 8"));
            }
        }
        Ok(self.table(DT_RELR, DT_RELRSZ, "DT_RELR")?.map(|(_, b)| b))
    }

    /// The name of dynamic symbol `index` (through `DT_SYMTAB` and
    /// `DT_STRTAB`).
    pub fn symbol_name(&self, index: u32) -> Result<String, String> {
        let symtab = self.get(elf::DT_SYMTAB).ok_or("no DT_SYMTAB")?;
        let entry = symtab
            .checked_add(u64::from(index) * 24)
            .and_then(|a| self.bytes(a, 24))
            .ok_or_else(|| {
                format!("dynamic symbol {index} lies outside the file's loaded bytes")
            })?;
        let name = u32::from_le_bytes(entry[..4].try_into().expect("4 bytes"));
        self.string(u64::from(name))
            .map_err(|e| format!("dynamic symbol {index}'s name: {e}"))
    }

    /// The string at offset `at` of `DT_STRTAB`.
    pub fn string(&self, at: u64) -> Result<String, String> {
        let strtab = self.get(elf::DT_STRTAB).ok_or("no DT_STRTAB")?;
        let strsz = self.get(elf::DT_STRSZ).ok_or("no DT_STRSZ")?;
        if at >= strsz {
            return Err(format!(
                "string offset {at:#x} lies beyond DT_STRSZ {strsz:#x}"
            ));
        }
        let strings = self
            .bytes(strtab, strsz)
            .ok_or("DT_STRTAB lies outside the file's loaded bytes")?;
        let s = &strings[at as usize..];
        let end = s
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| format!("string at {at:#x} of DT_STRTAB is not terminated"))?;
        Ok(String::from_utf8_lossy(&s[..end]).into_owned())
    }

    /// The address range `[start, end)` that ld.so's view gives the
    /// metadata section `name` of type `sh_type` at `addr` (`size` bytes
    /// by its header), when it confirms the header: the section starts
    /// where the dynamic segment or a program header puts that table, and
    /// lies within what they say of its size.
    pub fn confirms(
        &self,
        name: &str,
        sh_type: u32,
        flags: u64,
        addr: u64,
        size: u64,
    ) -> Option<(u64, u64)> {
        let end = addr.checked_add(size)?;
        let at = |tag: u32| self.get(tag) == Some(addr);
        let within =
            |r: Option<(u64, u64)>| r.is_some_and(|(a, s)| addr >= a && end <= a.saturating_add(s));
        let sized =
            |tag: u32, size_tag: u32| at(tag) && self.get(size_tag).is_some_and(|s| size <= s);
        // Tables whose size the loader's view implies rather than states.
        let within_extent = |tag: u32| at(tag) && self.extent(tag).is_some_and(|e| size <= e);
        let ok = if flags & u64::from(elf::SHF_TLS) != 0 {
            within(self.tls)
        } else {
            match sh_type {
                elf::SHT_DYNSYM => within_extent(elf::DT_SYMTAB),
                elf::SHT_GNU_HASH => within_extent(elf::DT_GNU_HASH),
                elf::SHT_HASH => within_extent(elf::DT_HASH),
                elf::SHT_GNU_VERSYM => within_extent(elf::DT_VERSYM),
                elf::SHT_GNU_VERDEF => within_extent(elf::DT_VERDEF),
                elf::SHT_GNU_VERNEED => within_extent(elf::DT_VERNEED),
                elf::SHT_RELA => {
                    sized(elf::DT_RELA, elf::DT_RELASZ) || sized(elf::DT_JMPREL, elf::DT_PLTRELSZ)
                }
                SHT_RELR => sized(DT_RELR, DT_RELRSZ),
                elf::SHT_DYNAMIC => within(self.dynamic_range),
                elf::SHT_NOTE => self.notes.iter().any(|n| within(Some(*n))),
                elf::SHT_INIT_ARRAY => sized(elf::DT_INIT_ARRAY, elf::DT_INIT_ARRAYSZ),
                elf::SHT_FINI_ARRAY => sized(elf::DT_FINI_ARRAY, elf::DT_FINI_ARRAYSZ),
                _ => match name {
                    ".dynstr" => sized(elf::DT_STRTAB, elf::DT_STRSZ),
                    ".interp" => within(self.interp),
                    ".eh_frame_hdr" => within(self.eh_frame_hdr),
                    ".eh_frame" => {
                        self.eh_frame_start() == Some(addr)
                            && self.eh_frame_extent(addr).is_some_and(|e| size <= e)
                    }
                    _ => false,
                },
            }
        };
        ok.then_some((addr, end))
    }

    /// The file's ELF header and program header table, by address (the
    /// first `PT_LOAD` maps them in what linkers write): the fused image
    /// writes its own.
    pub fn headers(&self) -> Vec<(u64, u64)> {
        let to_vaddr = |off: u64| {
            self.loads
                .iter()
                .find(|l| off >= l.offset && off - l.offset < l.filesz)
                .map(|l| l.vaddr + (off - l.offset))
        };
        let mut out = Vec::new();
        if let Some(a) = to_vaddr(0) {
            out.push((a, a + 64));
        }
        let phoff = u64_at(self.data, 32).unwrap_or(0);
        let n = u64::from(u16_at(self.data, 56).unwrap_or(0))
            * u64::from(u16_at(self.data, 54).unwrap_or(0));
        if let Some(a) = to_vaddr(phoff) {
            out.push((a, a + n));
        }
        out
    }

    /// How many dynamic symbols there are, as the hash tables bound them
    /// (`DT_HASH`'s chain count, or the last symbol `DT_GNU_HASH` reaches);
    /// `None` without either.
    pub fn symbol_count(&self) -> Result<Option<u64>, String> {
        if let Some(h) = self.get(elf::DT_HASH) {
            let nchain = self
                .u32_at_vaddr(h + 4)
                .ok_or("DT_HASH lies outside the file's loaded bytes")?;
            return Ok(Some(u64::from(nchain)));
        }
        let Some(h) = self.get(elf::DT_GNU_HASH) else {
            return Ok(None);
        };
        let bad = || "DT_GNU_HASH lies outside the file's loaded bytes".to_string();
        let word = |at: u64| self.u32_at_vaddr(at).ok_or_else(bad);
        let (nbuckets, symoffset, bloom) = (word(h)?, word(h + 4)?, word(h + 8)?);
        let buckets_at = h + 16 + u64::from(bloom) * 8;
        let mut last = 0;
        for i in 0..u64::from(nbuckets) {
            last = last.max(word(buckets_at + i * 4)?);
        }
        if last < symoffset {
            return Ok(Some(u64::from(symoffset)));
        }
        let chains_at = buckets_at + u64::from(nbuckets) * 4;
        let mut i = last;
        loop {
            if word(chains_at + u64::from(i - symoffset) * 4)? & 1 != 0 {
                return Ok(Some(u64::from(i) + 1));
            }
            i = i.checked_add(1).ok_or_else(bad)?;
        }
    }

    /// Where `PT_GNU_EH_FRAME`'s header says `.eh_frame` starts.
    pub fn eh_frame_start(&self) -> Option<u64> {
        let (hdr, _) = self.eh_frame_hdr?;
        let head = self.bytes(hdr, 4)?;
        let enc = super::eh_pe::DwEhPe(head[1]);
        let field = hdr + 4;
        let size = super::eh_pe::fixed_size(enc)? as u64;
        let (value, _) = super::eh_pe::read(self.bytes(field, size)?, enc)?;
        super::eh_pe::target(enc, value, field)
    }

    fn u32_at_vaddr(&self, vaddr: u64) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(vaddr, 4)?.try_into().ok()?))
    }

    fn u16_at_vaddr(&self, vaddr: u64) -> Option<u16> {
        Some(u16::from_le_bytes(self.bytes(vaddr, 2)?.try_into().ok()?))
    }

    /// The bytes the table at dynamic tag `tag` spans, as its own contents
    /// and the symbol count say; `None` when that cannot be read.
    pub fn extent(&self, tag: u32) -> Option<u64> {
        let addr = self.get(tag)?;
        let count = || self.symbol_count().ok().flatten();
        match tag {
            elf::DT_SYMTAB => count()?.checked_mul(24),
            elf::DT_VERSYM => count()?.checked_mul(2),
            elf::DT_HASH => {
                let nbucket = u64::from(self.u32_at_vaddr(addr)?);
                let nchain = u64::from(self.u32_at_vaddr(addr + 4)?);
                (2 + nbucket).checked_add(nchain)?.checked_mul(4)
            }
            elf::DT_GNU_HASH => {
                let nbuckets = u64::from(self.u32_at_vaddr(addr)?);
                let symoffset = u64::from(self.u32_at_vaddr(addr + 4)?);
                let bloom = u64::from(self.u32_at_vaddr(addr + 8)?);
                let chains = count()?.saturating_sub(symoffset);
                16u64
                    .checked_add(bloom.checked_mul(8)?)?
                    .checked_add(nbuckets.checked_mul(4)?)?
                    .checked_add(chains.checked_mul(4)?)
            }
            // Verneed: 16 bytes, vn_cnt at 2, vn_aux at 8, vn_next at 12;
            // Vernaux: 16 bytes, vna_next at 12.
            elf::DT_VERNEED => {
                self.version_extent(addr, elf::DT_VERNEEDNUM, [16, 2, 8, 12], [16, 12])
            }
            // Verdef: 20 bytes, vd_cnt at 6, vd_aux at 12, vd_next at 16;
            // Verdaux: 8 bytes, vda_next at 4.
            elf::DT_VERDEF => self.version_extent(addr, elf::DT_VERDEFNUM, [20, 6, 12, 16], [8, 4]),
            _ => None,
        }
    }

    /// The extent of a chain of version entries and their aux entries:
    /// `entry` is [size, count at, aux at, next at], `aux` [size, next at].
    fn version_extent(
        &self,
        addr: u64,
        num_tag: u32,
        entry: [u64; 4],
        aux: [u64; 2],
    ) -> Option<u64> {
        let n = self.get(num_tag)?.min(1 << 16);
        let (mut end, mut cur) = (addr, addr);
        for _ in 0..n {
            self.bytes(cur, entry[0])?;
            end = end.max(cur + entry[0]);
            let cnt = self.u16_at_vaddr(cur + entry[1])?;
            let mut a = cur.checked_add(u64::from(self.u32_at_vaddr(cur + entry[2])?))?;
            for _ in 0..cnt {
                self.bytes(a, aux[0])?;
                end = end.max(a + aux[0]);
                let next = self.u32_at_vaddr(a + aux[1])?;
                if next == 0 {
                    break;
                }
                a = a.checked_add(u64::from(next))?;
            }
            let next = self.u32_at_vaddr(cur + entry[3])?;
            if next == 0 {
                break;
            }
            cur = cur.checked_add(u64::from(next))?;
        }
        Some(end - addr)
    }

    /// The bytes `.eh_frame` at `addr` spans: its records up to the zero
    /// terminator, or to the end of its segment's file bytes.
    pub fn eh_frame_extent(&self, addr: u64) -> Option<u64> {
        let mut at = addr;
        loop {
            let Some(len) = self.u32_at_vaddr(at) else {
                return Some(at - addr);
            };
            if len == 0 {
                return Some(at + 4 - addr);
            }
            let len = if len == u32::MAX {
                u64::from_le_bytes(self.bytes(at + 4, 8)?.try_into().ok()?).checked_add(12)?
            } else {
                u64::from(len) + 4
            };
            self.bytes(at, len)?;
            at = at.checked_add(len)?;
        }
    }
}
