//! Byte-level surgery on ELF files for tests that damage inputs: field
//! reads and writes, program headers, sections and dynamic entries by
//! name.

pub fn u16_at(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(d[at..at + 2].try_into().unwrap())
}
pub fn u32_at(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(d[at..at + 4].try_into().unwrap())
}
pub fn u64_at(d: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(d[at..at + 8].try_into().unwrap())
}
pub fn put64(d: &mut [u8], at: usize, v: u64) {
    d[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// File offsets of the program headers of type `t`.
pub fn phdrs(d: &[u8], t: u32) -> Vec<usize> {
    let (off, size, n) = (
        u64_at(d, 32) as usize,
        u16_at(d, 54) as usize,
        u16_at(d, 56),
    );
    (0..n as usize)
        .map(|i| off + i * size)
        .filter(|&p| u32_at(d, p) == t)
        .collect()
}

/// (header offset, sh_offset, sh_size) of the section called `name`.
pub fn section(d: &[u8], name: &str) -> Option<(usize, usize, usize)> {
    let (off, size, n) = (
        u64_at(d, 40) as usize,
        u16_at(d, 58) as usize,
        u16_at(d, 60),
    );
    let strtab = off + u16_at(d, 62) as usize * size;
    let names = u64_at(d, strtab + 24) as usize;
    (0..n as usize).map(|i| off + i * size).find_map(|h| {
        let at = names + u32_at(d, h) as usize;
        let end = at + d[at..].iter().position(|&b| b == 0)?;
        (&d[at..end] == name.as_bytes())
            .then(|| (h, u64_at(d, h + 24) as usize, u64_at(d, h + 32) as usize))
    })
}

/// File offset of the value of dynamic tag `tag`.
pub fn dyn_value(d: &[u8], tag: u64) -> usize {
    let (_, off, size) = section(d, ".dynamic").unwrap();
    (off..off + size)
        .step_by(16)
        .find(|&e| u64_at(d, e) == tag)
        .map(|e| e + 8)
        .unwrap_or_else(|| panic!("no dynamic tag {tag}"))
}

/// File offset of the `.dynsym` entry of `name`.
pub fn dynsym(d: &[u8], name: &str) -> usize {
    let (_, off, size) = section(d, ".dynsym").unwrap();
    let (_, stroff, _) = section(d, ".dynstr").unwrap();
    (off..off + size)
        .step_by(24)
        .find(|&e| {
            let at = stroff + u32_at(d, e) as usize;
            d[at..].starts_with(name.as_bytes()) && d[at + name.len()] == 0
        })
        .unwrap()
}

pub fn put32(d: &mut [u8], at: usize, v: u32) {
    d[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
