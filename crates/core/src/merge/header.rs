//! Writes the ELF header, the notes (build-id, CET property) and the build-id hash.

use object::elf;

use super::layout::{FileOff, BUILD_ID_NOTE};

/// The build-id note, its hash still zero (see [`fill_build_id`]).
pub fn build_id_note() -> Vec<u8> {
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&20u32.to_le_bytes());
    note.extend_from_slice(&elf::NT_GNU_BUILD_ID.to_le_bytes());
    note.extend_from_slice(b"GNU\0");
    note.extend_from_slice(&[0; 20]);
    debug_assert_eq!(note.len() as u64, BUILD_ID_NOTE);
    note
}

/// The `.note.gnu.property` note with the CET feature bits `cet`.
pub fn property_note(cet: u32) -> Vec<u8> {
    let mut n = Vec::new();
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&16u32.to_le_bytes());
    n.extend_from_slice(&elf::NT_GNU_PROPERTY_TYPE_0.to_le_bytes());
    n.extend_from_slice(b"GNU\0");
    n.extend_from_slice(&elf::GNU_PROPERTY_X86_FEATURE_1_AND.to_le_bytes());
    n.extend_from_slice(&4u32.to_le_bytes());
    n.extend_from_slice(&cet.to_le_bytes());
    n.extend_from_slice(&0u32.to_le_bytes());
    n
}

/// Hash the finished image into its build-id note at `note`.
pub fn fill_build_id(out: &mut [u8], note: FileOff) {
    let id = build_id(out);
    let at = note.at() + 16;
    out[at..at + 20].copy_from_slice(&id);
}

pub fn write_elf_header(
    out: &mut [u8],
    phoff: FileOff,
    phnum: usize,
    shoff: FileOff,
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
    h.extend_from_slice(&phoff.0.to_le_bytes());
    h.extend_from_slice(&shoff.0.to_le_bytes());
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
fn build_id(bytes: &[u8]) -> [u8; 20] {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut lanes = [
        0xcbf2_9ce4_8422_2325u64,
        0x84222325_cbf29ce4,
        0x9e37_79b9_7f4a_7c15,
        0xbf58_476d_1ce4_e5b9,
        0x94d0_49bb_1331_11eb,
    ];
    // Word i goes to lane i % 5: five words at a time, then the rest.
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().expect("8 bytes"));
    let rows = bytes.chunks_exact(40);
    let rest = rows.remainder();
    for row in rows {
        for (l, c) in lanes.iter_mut().zip(row.chunks_exact(8)) {
            *l = (*l ^ word(c)).wrapping_mul(PRIME);
        }
    }
    let chunks = rest.chunks_exact(8);
    let tail = chunks.remainder();
    for (l, c) in lanes.iter_mut().zip(chunks) {
        *l = (*l ^ word(c)).wrapping_mul(PRIME);
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
