//! Writes `.dynamic` and what it lists: needed libraries, exports, init/fini arrays.

use anyhow::Result;
use object::elf;

use super::dynsym::{DynSymtab, Export, StrTab};
use super::input::Part;
use super::layout::{InAddr, NewSegments, Placement};
use super::sections::{section_of, OutSection};

/// Size of one `.dynamic` entry.
pub const DYN_ENTRY: u64 = 16;

/// Export the runtime's entry points and every input's `STB_GNU_UNIQUE`
/// definitions, in `.gnu.hash` order.
pub fn add_exports(
    syms: &mut DynSymtab,
    parts: &[Part],
    placements: &[Placement],
    sections: &[OutSection],
) -> Result<()> {
    let runtime_index = parts.len() - 1;
    let rt = &parts[runtime_index];
    let rt_pl = &placements[runtime_index];
    for name in crate::elf::ENTRY_POINTS.iter() {
        let s = rt
            .dynsyms
            .iter()
            .find(|s| s.defined && s.name == *name)
            .ok_or_else(|| anyhow::anyhow!("fusion runtime lacks {name}"))?;
        let value = rt_pl.out(InAddr(s.value));
        syms.exports.push(Export {
            name: name.to_string(),
            value: value.0,
            size: s.size,
            shndx: section_of(sections, value),
            info: (elf::STB_GLOBAL << 4) | elf::STT_FUNC,
        });
    }
    // STB_GNU_UNIQUE definitions stay exported: the dynamic linker binds
    // every reference to such a name, in any object of the process, to one
    // definition (C++ inline statics and template statics shared with
    // libstdc++ or Boost rely on it). The first image defining a name
    // exports it; every image's references to it stay symbolic.
    for (p, pl) in parts.iter().zip(placements) {
        for s in p.dynsyms.iter().filter(|s| s.is_unique_definition()) {
            if syms.exports.iter().any(|e| e.name == s.name) {
                continue;
            }
            let value = pl.out(InAddr(s.value));
            syms.exports.push(Export {
                name: s.name.clone(),
                value: value.0,
                size: s.size,
                shndx: section_of(sections, value),
                info: s.info,
            });
        }
    }
    syms.sort_exports();
    syms.index_unique();
    Ok(())
}

/// `STB_GNU_UNIQUE` names that more than one image defines: (name, the
/// image that exports it, an image that keeps a copy of its own). Unfused,
/// each function ran in its own process with its own copy; fused, the first
/// image (the root first) exports the name and every later one binds its
/// references to its own definition, so none shares another's state.
pub fn shared_unique(parts: &[Part]) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        for s in p.dynsyms.iter().filter(|s| s.is_unique_definition()) {
            let first = parts[..i].iter().position(|q| {
                q.dynsyms
                    .iter()
                    .any(|t| t.is_unique_definition() && t.name == s.name)
            });
            if let Some(f) = first {
                out.push((s.name.clone(), f, i));
            }
        }
    }
    out
}

/// Initializers: runtime, callees deepest first, root; finalizers the
/// reverse (the loader runs a fini array from its end).
pub struct InitFini {
    pub(super) init: Vec<u64>,
    pub(super) fini: Vec<u64>,
}

impl InitFini {
    pub fn new(parts: &[Part], placements: &[Placement]) -> InitFini {
        let runtime_index = parts.len() - 1;
        let mut order: Vec<usize> = vec![runtime_index];
        order.extend((1..runtime_index).rev());
        order.push(0);
        let mut init = Vec::new();
        for &i in &order {
            init.extend(initializers(&parts[i], placements[i].disp, true));
        }
        let mut fini = Vec::new();
        for &i in &order {
            fini.extend(initializers(&parts[i], placements[i].disp, false));
        }
        InitFini { init, fini }
    }
}

/// What `.dynamic` says, but for the addresses of the new contents.
pub struct Dynamic {
    needed: Vec<u32>,
    soname: Option<u32>,
    runpath: Option<u32>,
    static_tls: bool,
    nodelete: bool,
    verneed_count: usize,
}

impl Dynamic {
    /// Add the needed libraries, the root's name and the joined run paths
    /// of `parts` to `dynstr`.
    pub fn new(parts: &[Part], dynstr: &mut StrTab) -> Dynamic {
        let mut needed: Vec<String> = Vec::new();
        for p in parts {
            for n in &p.dynamic.needed {
                if !needed.contains(n) {
                    needed.push(n.clone());
                }
            }
        }
        let mut runpaths: Vec<String> = Vec::new();
        for p in parts {
            if let Some(r) = &p.dynamic.runpath {
                for d in r.split(':') {
                    if !runpaths.iter().any(|x| x == d) {
                        runpaths.push(d.to_string());
                    }
                }
            }
        }
        let needed = needed.iter().map(|n| dynstr.add(n)).collect();
        let soname = parts[0].dynamic.soname.as_ref().map(|s| dynstr.add(s));
        let runpath = (!runpaths.is_empty()).then(|| dynstr.add(&runpaths.join(":")));
        Dynamic {
            needed,
            soname,
            runpath,
            static_tls: parts.iter().any(|p| {
                p.dynamic.static_tls || p.relocs.iter().any(|r| r.r_type == elf::R_X86_64_TPOFF64)
            }),
            // An input that is never unloaded keeps that promise fused:
            // marked so, or defining a unique symbol (the dynamic linker
            // never unloads an object whose unique definition it bound,
            // since other objects' references may point into it).
            nodelete: parts
                .iter()
                .any(|p| p.dynamic.nodelete || p.dynsyms.iter().any(|s| s.is_unique_definition())),
            verneed_count: 0,
        }
    }

    /// Set the number of `.gnu.version_r` entries, once the dynamic
    /// symbols are encoded.
    pub fn with_verneed(mut self, count: usize) -> Dynamic {
        self.verneed_count = count;
        self
    }

    /// Size of `.dynamic`: the entries do not depend on where things are.
    pub fn size(&self) -> u64 {
        self.entries(&NewSegments::default(), 0).len() as u64 * DYN_ENTRY
    }

    /// The entries, given the new contents' places and the number of
    /// relative relocations (sorted first).
    pub fn entries(&self, new: &NewSegments, relative_count: usize) -> Vec<(u32, u64)> {
        let mut dynamic: Vec<(u32, u64)> = Vec::new();
        for off in &self.needed {
            dynamic.push((elf::DT_NEEDED, u64::from(*off)));
        }
        if let Some(s) = self.soname {
            dynamic.push((elf::DT_SONAME, u64::from(s)));
        }
        if let Some(r) = self.runpath {
            dynamic.push((elf::DT_RUNPATH, u64::from(r)));
        }
        let mut flags = elf::DF_BIND_NOW;
        if self.static_tls {
            flags |= elf::DF_STATIC_TLS;
        }
        let mut flags_1 = elf::DF_1_NOW;
        if self.nodelete {
            flags_1 |= elf::DF_1_NODELETE;
        }
        dynamic.extend([
            (elf::DT_INIT_ARRAY, new.init_array.vaddr.0),
            (elf::DT_INIT_ARRAYSZ, new.init_array.size),
            (elf::DT_FINI_ARRAY, new.fini_array.vaddr.0),
            (elf::DT_FINI_ARRAYSZ, new.fini_array.size),
            (elf::DT_GNU_HASH, new.gnu_hash.vaddr.0),
            (elf::DT_STRTAB, new.dynstr.vaddr.0),
            (elf::DT_SYMTAB, new.dynsym.vaddr.0),
            (elf::DT_STRSZ, new.dynstr.size),
            (elf::DT_SYMENT, 24),
            (elf::DT_RELA, new.rela.vaddr.0),
            (elf::DT_RELASZ, new.rela.size),
            (elf::DT_RELAENT, 24),
            (elf::DT_RELACOUNT, relative_count as u64),
            (elf::DT_FLAGS, u64::from(flags)),
            (elf::DT_FLAGS_1, u64::from(flags_1)),
            (elf::DT_VERSYM, new.versym.vaddr.0),
        ]);
        if self.verneed_count > 0 {
            dynamic.push((elf::DT_VERNEED, new.verneed.vaddr.0));
            dynamic.push((elf::DT_VERNEEDNUM, self.verneed_count as u64));
        }
        dynamic.push((elf::DT_NULL, 0));
        dynamic
    }
}

/// `.dynamic`'s bytes.
pub fn encode(entries: &[(u32, u64)]) -> Vec<u8> {
    let mut db = Vec::new();
    for (t, v) in entries {
        db.extend_from_slice(&u64::from(*t).to_le_bytes());
        db.extend_from_slice(&v.to_le_bytes());
    }
    db
}

/// An image's initializer (or finalizer) functions in the order the loader
/// would run them for it alone: `DT_INIT` then `DT_INIT_ARRAY`; for
/// finalizers the list is given in array order (`DT_FINI` first) because
/// the fused fini array runs from its end.
fn initializers(part: &Part, disp: u64, init: bool) -> Vec<u64> {
    let i = &part.initializers;
    let (single, array) = if init {
        (i.init, i.init_array)
    } else {
        (i.fini, i.fini_array)
    };
    let mut out = Vec::new();
    if let Some(f) = single {
        out.push(f + disp);
    }
    if let Some((addr, count)) = array {
        for i in 0..count {
            let slot = addr + 8 * i;
            if let Some(v) = part.slot_value(slot) {
                if v != 0 && v != u64::MAX {
                    out.push(v + disp);
                }
            }
        }
    }
    out
}
