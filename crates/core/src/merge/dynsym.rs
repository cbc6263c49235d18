//! The fused image's dynamic symbol table: the imports every input still
//! needs from system libraries (with their versions) and the four exported
//! entry points; plus `.dynstr`, `.gnu.version`, `.gnu.version_r` and
//! `.gnu.hash`.

use std::collections::HashMap;

use object::elf;

use super::input::{DynSym, Needed};

/// A symbol the fused image imports, keyed so that inputs importing the
/// same symbol the same way share one entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImportKey {
    pub name: String,
    pub version: Option<Needed>,
    pub info: u8,
}

/// An exported definition.
#[derive(Debug, Clone)]
pub struct Export {
    pub name: String,
    pub value: u64,
    pub size: u64,
    pub shndx: u16,
    /// `st_info`: a global function (the entry points) or an input's
    /// `STB_GNU_UNIQUE` object or function.
    pub info: u8,
}

#[derive(Default)]
pub struct StrTab {
    pub bytes: Vec<u8>,
    /// Where each string starts in `bytes` (it ends at the next NUL),
    /// hashed by its bytes: a table of hundreds of thousands of names is
    /// built without a second copy of each.
    index: hashbrown::HashTable<u32>,
}

fn hash_str(s: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = crate::hash::WordHasher::default();
    h.write(s);
    h.write_usize(s.len());
    h.finish()
}

/// The hash of the string at `at` in `bytes` (it ends at the next NUL).
fn hash_at(bytes: &[u8], at: u32) -> u64 {
    let at = at as usize;
    let len = bytes[at..].iter().position(|&b| b == 0).unwrap_or(0);
    hash_str(&bytes[at..at + len])
}

impl StrTab {
    pub fn new() -> StrTab {
        StrTab {
            bytes: vec![0],
            index: hashbrown::HashTable::new(),
        }
    }

    /// Room for `strings` more strings of `bytes` bytes in all.
    pub fn reserve(&mut self, bytes: usize, strings: usize) {
        self.bytes.reserve(bytes);
        let bytes = &self.bytes;
        self.index.reserve(strings, |&at| hash_at(bytes, at));
    }

    /// The offset of `s`, added on first use.
    pub fn add(&mut self, s: &str) -> u32 {
        self.add_parts(&[s])
    }

    /// The offset of the concatenation of `parts`, added on first use.
    pub fn add_parts(&mut self, parts: &[&str]) -> u32 {
        let start = self.bytes.len();
        for p in parts {
            self.bytes.extend_from_slice(p.as_bytes());
        }
        if self.bytes.len() == start {
            return 0;
        }
        let bytes = &self.bytes;
        let s = &bytes[start..];
        let hash = hash_str(s);
        let same = |&at: &u32| {
            let at = at as usize;
            bytes.get(at..at + s.len()) == Some(s) && bytes.get(at + s.len()) == Some(&0)
        };
        if let Some(&at) = self.index.find(hash, same) {
            self.bytes.truncate(start);
            return at;
        }
        self.bytes.push(0);
        let bytes = &self.bytes;
        self.index
            .insert_unique(hash, start as u32, |&at| hash_at(bytes, at));
        start as u32
    }
}

/// The dynamic symbol table under construction.
#[derive(Default)]
pub struct DynSymtab {
    pub imports: Vec<(ImportKey, DynSym)>,
    index: HashMap<ImportKey, u32>,
    pub exports: Vec<Export>,
    /// `.dynsym` index of each exported `STB_GNU_UNIQUE` symbol, known once
    /// imports and exports are final.
    pub unique: HashMap<String, u32>,
}

impl DynSymtab {
    /// The `.dynsym` index of an import, adding it on first use.
    pub fn import(&mut self, s: &DynSym) -> u32 {
        let key = ImportKey {
            name: s.name.clone(),
            version: s.version.clone(),
            info: s.info,
        };
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = 1 + self.imports.len() as u32;
        self.index.insert(key.clone(), i);
        self.imports.push((key, s.clone()));
        i
    }

    /// Versions required, grouped by file in first-use order, numbered
    /// from 2.
    pub fn needed_versions(&self) -> Vec<(String, Vec<(String, u16)>)> {
        let mut out: Vec<(String, Vec<(String, u16)>)> = Vec::new();
        let mut next = 2u16;
        for (k, _) in &self.imports {
            let Some(v) = &k.version else { continue };
            let pos = match out.iter().position(|(f, _)| *f == v.file) {
                Some(p) => p,
                None => {
                    out.push((v.file.clone(), Vec::new()));
                    out.len() - 1
                }
            };
            if !out[pos].1.iter().any(|(n, _)| *n == v.version) {
                out[pos].1.push((v.version.clone(), next));
                next += 1;
            }
        }
        out
    }
}

/// The SysV ELF hash of a name (`vna_hash`).
fn elf_hash(name: &str) -> u32 {
    object::elf::hash(name.as_bytes())
}

/// The GNU hash of a name (`.gnu.hash` buckets and chains).
fn gnu_hash(name: &str) -> u32 {
    object::elf::gnu_hash(name.as_bytes())
}

/// Encoded tables, given the string table to add names to.
pub struct Encoded {
    pub dynsym: Vec<u8>,
    pub versym: Vec<u8>,
    pub verneed: Vec<u8>,
    pub verneed_count: usize,
    pub gnu_hash: Vec<u8>,
}

fn push_sym(out: &mut Vec<u8>, name: u32, info: u8, other: u8, shndx: u16, value: u64, size: u64) {
    out.extend_from_slice(&name.to_le_bytes());
    out.push(info);
    out.push(other);
    out.extend_from_slice(&shndx.to_le_bytes());
    out.extend_from_slice(&value.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
}

impl DynSymtab {
    /// Sort exports into GNU hash order (call before taking indices).
    pub fn sort_exports(&mut self) {
        let nb = buckets(self.exports.len());
        self.exports
            .sort_by_key(|e| (gnu_hash(&e.name) % nb, e.name.clone()));
    }

    /// Record the final `.dynsym` index of every unique export.
    pub fn index_unique(&mut self) {
        let base = 1 + self.imports.len() as u32;
        self.unique = self
            .exports
            .iter()
            .enumerate()
            .filter(|(_, e)| e.info >> 4 == elf::STB_GNU_UNIQUE)
            .map(|(i, e)| (e.name.clone(), base + i as u32))
            .collect();
    }

    /// The `.dynsym` index of the unique export `name`.
    pub fn unique_index(&self, name: &str) -> u32 {
        self.unique.get(name).copied().unwrap_or(0)
    }

    pub fn encode(&self, strtab: &mut StrTab) -> Encoded {
        let versions = self.needed_versions();
        let mut dynsym = vec![0u8; 24];
        let mut versym = vec![0u8; 2];
        for (k, s) in &self.imports {
            let name = strtab.add(&k.name);
            push_sym(&mut dynsym, name, s.info, s.other, elf::SHN_UNDEF, 0, 0);
            let v = match &k.version {
                Some(n) => versions
                    .iter()
                    .find(|(f, _)| *f == n.file)
                    .and_then(|(_, vs)| vs.iter().find(|(v, _)| *v == n.version))
                    .map(|(_, i)| *i)
                    .unwrap_or(1),
                None => 1,
            };
            versym.extend_from_slice(&v.to_le_bytes());
        }
        for e in &self.exports {
            let name = strtab.add(&e.name);
            push_sym(
                &mut dynsym,
                name,
                e.info,
                elf::STV_DEFAULT,
                e.shndx,
                e.value,
                e.size,
            );
            versym.extend_from_slice(&1u16.to_le_bytes());
        }
        let mut verneed = Vec::new();
        for (i, (file, vs)) in versions.iter().enumerate() {
            let file_off = strtab.add(file);
            let next = if i + 1 == versions.len() {
                0
            } else {
                16 + 16 * vs.len() as u32
            };
            verneed.extend_from_slice(&1u16.to_le_bytes());
            verneed.extend_from_slice(&(vs.len() as u16).to_le_bytes());
            verneed.extend_from_slice(&file_off.to_le_bytes());
            verneed.extend_from_slice(&16u32.to_le_bytes());
            verneed.extend_from_slice(&next.to_le_bytes());
            for (j, (v, idx)) in vs.iter().enumerate() {
                let name = strtab.add(v);
                let next = if j + 1 == vs.len() { 0 } else { 16u32 };
                verneed.extend_from_slice(&elf_hash(v).to_le_bytes());
                verneed.extend_from_slice(&0u16.to_le_bytes());
                verneed.extend_from_slice(&idx.to_le_bytes());
                verneed.extend_from_slice(&name.to_le_bytes());
                verneed.extend_from_slice(&next.to_le_bytes());
            }
        }
        Encoded {
            dynsym,
            versym,
            verneed,
            verneed_count: versions.len(),
            gnu_hash: self.encode_gnu_hash(),
        }
    }

    fn encode_gnu_hash(&self) -> Vec<u8> {
        let nb = buckets(self.exports.len());
        let symoffset = 1 + self.imports.len() as u32;
        let shift = 6u32;
        let mut bloom = 0u64;
        let mut bucket = vec![0u32; nb as usize];
        let mut chain = Vec::with_capacity(self.exports.len());
        for (i, e) in self.exports.iter().enumerate() {
            let h = gnu_hash(&e.name);
            bloom |= 1 << (h % 64);
            bloom |= 1 << ((h >> shift) % 64);
            let b = (h % nb) as usize;
            if bucket[b] == 0 {
                bucket[b] = symoffset + i as u32;
            }
            let last = self
                .exports
                .get(i + 1)
                .map(|n| gnu_hash(&n.name) % nb != h % nb)
                .unwrap_or(true);
            chain.push((h & !1) | u32::from(last));
        }
        let mut out = Vec::new();
        for w in [nb, symoffset, 1, shift] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&bloom.to_le_bytes());
        for b in bucket.iter().chain(&chain) {
            out.extend_from_slice(&b.to_le_bytes());
        }
        out
    }
}

fn buckets(n: usize) -> u32 {
    (n as u32 / 2).max(1)
}
