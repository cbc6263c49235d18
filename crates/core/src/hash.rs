//! A fast hasher for integer keys (addresses, offsets): SipHash dominates
//! profile ingestion and DWARF walks, and these keys come from the inputs'
//! structure, not from an adversary that needs HashDoS resistance.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing of machine words (as in rustc's FxHasher).
#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let words = bytes.chunks_exact(8);
        let rest = words.remainder();
        for w in words {
            self.write_u64(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        if !rest.is_empty() {
            // The last word, zero-padded (as a whole word would be).
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(n as u64);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<WordHasher>>;
pub type FastSet<K> = std::collections::HashSet<K, BuildHasherDefault<WordHasher>>;
