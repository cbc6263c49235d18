//! Function symbols of an image for naming profile addresses, including
//! PLT entries (`puts@PLT`), under the names BOLT gives them: a local
//! symbol is `name/N` (its Nth local definition of that name), so `.fdata`
//! written here reads in llvm-bolt and `.fdata` from perf2bolt reads here.

use std::collections::HashMap;

use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
use object::read::elf::{ElfFile64, SectionHeader, Sym as _};
use object::LittleEndian as LE;

use crate::elf::Image;

#[derive(Debug, Clone)]
pub struct Sym {
    pub start: u64,
    pub size: u64,
    /// The symbol's own name (`helper`, `puts@PLT`).
    pub name: String,
    /// The name BOLT uses (`helper/1` for a local `helper`).
    pub bolt: String,
}

#[derive(Debug, Clone, Default)]
pub struct Symbols {
    /// Sorted by start, without overlaps at the same address.
    syms: Vec<Sym>,
    by_bolt: HashMap<String, usize>,
    /// Per 4 KiB page of the address space up to the last symbol: the
    /// index of the first symbol starting at or after the page, so that a
    /// lookup searches the few symbols starting within one page (empty
    /// when the symbols span too much address space for that).
    pages: Vec<u32>,
}

/// Pages of [`Symbols::pages`] at most: 4 MiB of index for 4 GiB of
/// address space, so that a symbol at a hostile address costs little.
const MAX_PAGES: u64 = 1 << 20;

impl Symbols {
    pub fn new(image: &Image) -> Symbols {
        let mut syms: Vec<Sym> = Vec::new();
        let mut locals: HashMap<String, usize> = HashMap::new();
        for (name, start, size, local) in function_symbols(image) {
            let bolt = if local {
                let n = locals.entry(name.clone()).or_default();
                *n += 1;
                format!("{name}/{n}")
            } else {
                name.clone()
            };
            syms.push(Sym {
                start,
                size,
                name,
                bolt,
            });
        }
        for (start, size, name) in plt_entries(image) {
            syms.push(Sym {
                start,
                size,
                bolt: name.clone(),
                name,
            });
        }
        // One symbol per address, the first in symbol-table order (BOLT's
        // choice among aliases); the sort is stable.
        syms.sort_by_key(|s| s.start);
        let mut by_bolt = HashMap::new();
        let mut out: Vec<Sym> = Vec::new();
        for s in syms {
            if out.last().is_some_and(|l| l.start == s.start) {
                // An alias: still findable by its name.
                by_bolt.entry(s.bolt.clone()).or_insert(out.len() - 1);
                continue;
            }
            by_bolt.insert(s.bolt.clone(), out.len());
            out.push(s);
        }
        // A symbol of size 0 (crt code) reaches to the next one or the end
        // of its section, as in BOLT.
        let sections: Vec<(u64, u64)> = image
            .code_ranges()
            .iter()
            .map(|c| (c.vaddr, c.vaddr + c.bytes.len() as u64))
            .collect();
        for i in 0..out.len() {
            if out[i].size == 0 {
                let start = out[i].start;
                let section_end = sections
                    .iter()
                    .find(|(a, b)| (*a..*b).contains(&start))
                    .map_or(start + 1, |(_, b)| *b);
                let next = out.get(i + 1).map_or(u64::MAX, |n| n.start);
                out[i].size = section_end.min(next) - start;
            }
        }
        let pages = page_index(&out);
        Symbols {
            syms: out,
            by_bolt,
            pages,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Sym> {
        self.syms.iter()
    }

    /// [`Symbols::at`], quicker when `vaddr` lies in the same symbol as
    /// the last lookup with the same `hint` (addresses in order).
    pub fn at_hinted(&self, vaddr: u64, hint: &mut usize) -> Option<&Sym> {
        let h = *hint;
        let i = if h > 0
            && h <= self.syms.len()
            && self.syms[h - 1].start <= vaddr
            && !matches!(self.syms.get(h), Some(n) if n.start <= vaddr)
        {
            h
        } else {
            self.first_after(vaddr)
        };
        *hint = i;
        let s = self.syms.get(i.checked_sub(1)?)?;
        (vaddr < s.start + s.size.max(1)).then_some(s)
    }

    /// The symbol containing `vaddr`.
    pub fn at(&self, vaddr: u64) -> Option<&Sym> {
        let i = self.first_after(vaddr);
        let s = self.syms.get(i.checked_sub(1)?)?;
        (vaddr < s.start + s.size.max(1)).then_some(s)
    }

    /// The index of the first symbol starting after `vaddr`.
    #[inline]
    fn first_after(&self, vaddr: u64) -> usize {
        let p = (vaddr >> 12) as usize;
        match (self.pages.get(p), self.pages.get(p + 1)) {
            (Some(&lo), Some(&hi)) => {
                let (lo, hi) = (lo as usize, hi as usize);
                lo + self.syms[lo..hi].partition_point(|s| s.start <= vaddr)
            }
            _ if p + 1 >= self.pages.len() && !self.pages.is_empty() => self.syms.len(),
            _ => self.syms.partition_point(|s| s.start <= vaddr),
        }
    }

    /// A symbol by BOLT name, or by plain name for a BOLT name of another
    /// numbering (`name/2`, `name/file.c/1`).
    pub fn by_bolt_name(&self, name: &str) -> Option<&Sym> {
        if let Some(&i) = self.by_bolt.get(name) {
            return self.syms.get(i);
        }
        let plain = name.split('/').next()?;
        self.syms.iter().find(|s| s.name == plain).or_else(|| {
            self.by_bolt
                .get(&format!("{plain}/1"))
                .and_then(|&i| self.syms.get(i))
        })
    }
}

/// [`Symbols::pages`] of `syms` (sorted by start).
fn page_index(syms: &[Sym]) -> Vec<u32> {
    let Some(last) = syms.last() else {
        return Vec::new();
    };
    let pages = (last.start >> 12) + 2;
    if pages > MAX_PAGES || syms.len() >= u32::MAX as usize {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(pages as usize);
    let mut i = 0;
    for p in 0..pages {
        while i < syms.len() && syms[i].start < p << 12 {
            i += 1;
        }
        out.push(i as u32);
    }
    out
}

/// Defined function symbols in symbol-table order (`.symtab`, else
/// `.dynsym`): (name, address, size, local).
fn function_symbols(image: &Image) -> Vec<(String, u64, u64, bool)> {
    let Ok(file) = ElfFile64::<LE>::parse(&image.data[..]) else {
        return Vec::new();
    };
    let symtab = file.elf_symbol_table();
    let table = if symtab.is_empty() {
        file.elf_dynamic_symbol_table()
    } else {
        symtab
    };
    let mut out = Vec::new();
    for s in table.iter() {
        let kind = s.st_type();
        if (kind != object::elf::STT_FUNC && kind != object::elf::STT_GNU_IFUNC)
            || s.st_shndx(LE) == object::elf::SHN_UNDEF
        {
            continue;
        }
        let Ok(name) = s.name(LE, table.strings()) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        out.push((
            String::from_utf8_lossy(name).into_owned(),
            s.st_value(LE),
            s.st_size(LE),
            s.st_bind() == object::elf::STB_LOCAL,
        ));
    }
    out
}

/// PLT entries `(start, size, name)`: `puts@PLT`, named from the GOT slot
/// the entry jumps through, and BOLT's `__BOLT_PSEUDO_.plt` for the head of
/// a PLT section that is no entry (the lazy-binding stub every entry jumps
/// to on its first call under `RTLD_LAZY`).
fn plt_entries(image: &Image) -> Vec<(u64, u64, String)> {
    let Ok(file) = ElfFile64::<LE>::parse(&image.data[..]) else {
        return Vec::new();
    };
    let table = file.elf_section_table();
    let mut out = Vec::new();
    for s in table.iter() {
        let name = table.section_name(LE, s).unwrap_or_default();
        if !name.starts_with(b".plt") {
            continue;
        }
        let (addr, size, off) = (s.sh_addr(LE), s.sh_size(LE), s.sh_offset(LE));
        let Some(bytes) = image.data.get(off as usize..(off + size) as usize) else {
            continue;
        };
        // .plt.got entries are 8 bytes unless they start with endbr64.
        let entry = if name == b".plt.got" && !bytes.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
            8
        } else {
            16
        };
        let first = out.len();
        let mut d = Decoder::with_ip(64, bytes, addr, DecoderOptions::NONE);
        while d.can_decode() {
            let ins = d.decode();
            if ins.mnemonic() != Mnemonic::Jmp
                || ins.op0_kind() != OpKind::Memory
                || ins.memory_base() != Register::RIP
            {
                continue;
            }
            let slot = ins.memory_displacement64();
            if let Some(sym) = image.got_slot_symbol(slot) {
                let start = addr + (ins.ip() - addr) / entry * entry;
                out.push((start, entry, format!("{sym}@PLT")));
            }
        }
        let head_end = out[first..]
            .iter()
            .map(|e| e.0)
            .min()
            .unwrap_or(addr + size);
        if head_end > addr {
            out.push((
                addr,
                head_end - addr,
                format!("__BOLT_PSEUDO_{}", String::from_utf8_lossy(name)),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_index_finds_what_a_binary_search_finds() {
        // Symbols of every size: several in one page, one over many pages,
        // gaps, one at 0 and one far away.
        let mut syms: Vec<Sym> = Vec::new();
        let mut start = 0u64;
        for i in 0..400u64 {
            let size = [0, 1, 16, 300, 5000, 20_000][(i % 6) as usize];
            syms.push(Sym {
                start,
                size,
                name: format!("f{i}"),
                bolt: format!("f{i}"),
            });
            start += size + (i % 7) * 100;
        }
        syms.push(Sym {
            start: 1 << 30,
            size: 8,
            name: "far".into(),
            bolt: "far".into(),
        });
        let indexed = Symbols {
            pages: page_index(&syms),
            syms: syms.clone(),
            by_bolt: HashMap::new(),
        };
        assert!(!indexed.pages.is_empty());
        let plain = Symbols {
            syms,
            by_bolt: HashMap::new(),
            pages: Vec::new(),
        };
        let mut probes: Vec<u64> = (0..start + 10_000).step_by(37).collect();
        for s in plain.iter() {
            probes.extend([s.start.saturating_sub(1), s.start, s.start + s.size]);
        }
        probes.extend([
            (1 << 30) - 1,
            1 << 30,
            (1 << 30) + 7,
            (1 << 30) + 8,
            u64::MAX,
        ]);
        let mut hint = 0;
        for a in probes {
            let want = plain.at(a).map(|s| s.start);
            assert_eq!(indexed.at(a).map(|s| s.start), want, "at {a:#x}");
            assert_eq!(indexed.at_hinted(a, &mut hint).map(|s| s.start), want);
        }
    }
}
