//! The ELF header and the build-id of the fused image.

use object::elf;

pub fn write_elf_header(
    out: &mut [u8],
    phoff: u64,
    phnum: usize,
    shoff: u64,
    shnum: usize,
    shstrndx: usize,
    osabi: u8,
) {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(b"\x7fELF");
    h.extend_from_slice(&[elf::ELFCLASS64, elf::ELFDATA2LSB, elf::EV_CURRENT, osabi, 0]);
    h.extend_from_slice(&[0; 7]);
    h.extend_from_slice(&elf::ET_DYN.to_le_bytes());
    h.extend_from_slice(&elf::EM_X86_64.to_le_bytes());
    h.extend_from_slice(&u32::from(elf::EV_CURRENT).to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes()); // entry
    h.extend_from_slice(&phoff.to_le_bytes());
    h.extend_from_slice(&shoff.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes()); // flags
    h.extend_from_slice(&64u16.to_le_bytes());
    h.extend_from_slice(&56u16.to_le_bytes());
    h.extend_from_slice(&(phnum as u16).to_le_bytes());
    h.extend_from_slice(&64u16.to_le_bytes());
    h.extend_from_slice(&(shnum as u16).to_le_bytes());
    h.extend_from_slice(&(shstrndx as u16).to_le_bytes());
    out[..64].copy_from_slice(&h);
}

/// A 160-bit content hash for the build-id (deterministic, not
/// cryptographic): five FNV-style lanes over 8-byte words.
pub fn build_id(bytes: &[u8]) -> [u8; 20] {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut lanes = [
        0xcbf2_9ce4_8422_2325u64,
        0x84222325_cbf29ce4,
        0x9e37_79b9_7f4a_7c15,
        0xbf58_476d_1ce4_e5b9,
        0x94d0_49bb_1331_11eb,
    ];
    let chunks = bytes.chunks_exact(8);
    let tail = chunks.remainder();
    for (i, c) in chunks.enumerate() {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        let l = &mut lanes[i % 5];
        *l = (*l ^ w).wrapping_mul(PRIME);
    }
    for &b in tail {
        lanes[0] = (lanes[0] ^ u64::from(b)).wrapping_mul(PRIME);
    }
    let mut out = [0u8; 20];
    for (i, l) in lanes.iter().enumerate() {
        let mixed = l ^ (l >> 29) ^ (bytes.len() as u64).rotate_left(i as u32 * 7);
        out[i * 4..i * 4 + 4].copy_from_slice(&(mixed as u32 ^ (mixed >> 32) as u32).to_le_bytes());
    }
    out
}
