//! Writes the ELF header, the notes (build-id, CET property) and the build-id hash.

use object::elf;

use super::layout::{FileOff, BUILD_ID_NOTE};

/// Where in the build-id note its hash is.
pub const BUILD_ID_HASH_AT: u64 = 16;

/// The build-id note, its hash still zero (hashed once the whole image is
/// written: [`BuildIdHash`]).
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

/// The ELF header.
pub fn elf_header(
    phoff: FileOff,
    phnum: usize,
    shoff: FileOff,
    shnum: usize,
    shstrndx: usize,
    osabi: u8,
) -> Vec<u8> {
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
    h
}

/// A 160-bit content hash for the build-id (deterministic, not
/// cryptographic): five FNV-style lanes over 8-byte words, word i to lane
/// i % 5, fed whole 40-byte rows at a time and then the rest.
pub struct BuildIdHash {
    lanes: [u64; 5],
    len: u64,
}

const PRIME: u64 = 0x0000_0100_0000_01b3;

fn word(c: &[u8]) -> u64 {
    u64::from_le_bytes(c.try_into().expect("8 bytes"))
}

impl BuildIdHash {
    pub fn new() -> BuildIdHash {
        BuildIdHash {
            lanes: [
                0xcbf2_9ce4_8422_2325u64,
                0x84222325_cbf29ce4,
                0x9e37_79b9_7f4a_7c15,
                0xbf58_476d_1ce4_e5b9,
                0x94d0_49bb_1331_11eb,
            ],
            len: 0,
        }
    }

    /// Hash `bytes`, a whole number of rows.
    pub fn rows(&mut self, bytes: &[u8]) {
        debug_assert_eq!(bytes.len() % 40, 0);
        for row in bytes.chunks_exact(40) {
            for (l, c) in self.lanes.iter_mut().zip(row.chunks_exact(8)) {
                *l = (*l ^ word(c)).wrapping_mul(PRIME);
            }
        }
        self.len += bytes.len() as u64;
    }

    /// Hash the last `rest` bytes and give the id.
    pub fn finish(mut self, rest: &[u8]) -> [u8; 20] {
        let whole = rest.len() - rest.len() % 40;
        self.rows(&rest[..whole]);
        let rest = &rest[whole..];
        let chunks = rest.chunks_exact(8);
        let tail = chunks.remainder();
        for (l, c) in self.lanes.iter_mut().zip(chunks) {
            *l = (*l ^ word(c)).wrapping_mul(PRIME);
        }
        for &b in tail {
            self.lanes[0] = (self.lanes[0] ^ u64::from(b)).wrapping_mul(PRIME);
        }
        let len = self.len + rest.len() as u64;
        let mut out = [0u8; 20];
        for (i, l) in self.lanes.iter().enumerate() {
            let mixed = l ^ (l >> 29) ^ len.rotate_left(i as u32 * 7);
            out[i * 4..i * 4 + 4]
                .copy_from_slice(&(mixed as u32 ^ (mixed >> 32) as u32).to_le_bytes());
        }
        out
    }
}
