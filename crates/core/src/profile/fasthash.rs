//! A fast hasher for the accumulators' integer keys (addresses): the
//! default SipHash dominates ingestion time on large profiles, and these
//! keys come from the profile, not from an adversary that needs HashDoS
//! resistance.

use std::hash::{BuildHasherDefault, Hasher};

/// Multiply-rotate hashing of machine words (as in rustc's FxHasher).
#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
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

/// A key of a [`FlatMap`]: a packed integer with one value reserved for
/// empty slots.
pub trait FlatKey: Copy + Eq {
    /// Never inserted: marks an empty slot.
    const EMPTY: Self;
    fn hash(&self) -> u64;
}

impl FlatKey for u64 {
    const EMPTY: u64 = u64::MAX;
    #[inline]
    fn hash(&self) -> u64 {
        self.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl FlatKey for (u64, u32) {
    const EMPTY: (u64, u32) = (u64::MAX, u32::MAX);
    #[inline]
    fn hash(&self) -> u64 {
        (self.0 ^ (u64::from(self.1)).rotate_left(23)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// An open-addressing hash table (linear probing, key and value side by
/// side in one array, at most 3/4 full): one cache line per lookup, no
/// allocation per key, memory proportional to the distinct keys.
#[derive(Clone)]
pub struct FlatMap<K: FlatKey, V: Copy + Default> {
    slots: Vec<(K, V)>,
    len: usize,
    /// log2 of the number of slots.
    bits: u32,
    /// Mixed into the hash: each table places keys in its own order, so
    /// adding one table's keys to another in slot order (a merge) does not
    /// pile them up in runs.
    seed: u64,
}

/// Seeds of successive tables.
static SEEDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<K: FlatKey, V: Copy + Default> Default for FlatMap<K, V> {
    fn default() -> Self {
        Self::with_bits(4)
    }
}

impl<K: FlatKey, V: Copy + Default> FlatMap<K, V> {
    fn with_bits(bits: u32) -> Self {
        let n = SEEDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::with_seed(bits, n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn with_seed(bits: u32, seed: u64) -> Self {
        FlatMap {
            slots: vec![(K::EMPTY, V::default()); 1 << bits],
            len: 0,
            bits,
            seed,
        }
    }

    /// Start loading the slot where `k` would be (counting a sample's
    /// branches first prefetches all of them: their cache misses overlap).
    #[inline]
    pub fn prefetch(&self, k: &K) {
        faasfuse_sys::hint::prefetch(self.slots.as_ptr().wrapping_add(self.home(k)));
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn home(&self, k: &K) -> usize {
        ((k.hash() ^ self.seed).wrapping_mul(0xff51_afd7_ed55_8ccd) >> (64 - self.bits)) as usize
    }

    /// The value of `k`, inserted as the default if absent. `k` must not
    /// be [`FlatKey::EMPTY`].
    #[inline]
    pub fn slot(&mut self, k: K) -> &mut V {
        debug_assert!(k != K::EMPTY);
        let mask = self.slots.len() - 1;
        let mut i = self.home(&k);
        loop {
            let s = self.slots[i].0;
            if s == k {
                return &mut self.slots[i].1;
            }
            if s == K::EMPTY {
                break;
            }
            i = (i + 1) & mask;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
            return self.slot(k);
        }
        self.len += 1;
        self.slots[i].0 = k;
        &mut self.slots[i].1
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(k);
        loop {
            let s = &self.slots[i];
            if s.0 == *k {
                return Some(&s.1);
            }
            if s.0 == K::EMPTY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        *self = Self::with_seed(self.bits + 1, self.seed);
        for (k, v) in old {
            if k != K::EMPTY {
                *self.slot(k) = v;
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.slots
            .iter()
            .filter(|s| s.0 != K::EMPTY)
            .map(|(k, v)| (k, v))
    }
}

/// `None` as a packed 32-bit address.
const NONE32: u32 = u32::MAX;

/// Taken-branch counts: `(from, to) -> (count, mispredicted)`, `to` None
/// outside the image. Addresses below 4 GiB (every function library) are
/// packed into one word in a [`FlatMap`]; others go to an ordinary map.
#[derive(Default, Clone)]
pub struct BranchTable {
    flat: FlatMap<u64, (u64, u64)>,
    wide: FastMap<(u64, Option<u64>), (u64, u64)>,
}

/// A place in a [`BranchTable`], as `HashMap::entry` gives one.
pub struct BranchEntry<'t> {
    table: &'t mut BranchTable,
    key: (u64, Option<u64>),
}

impl<'t> BranchEntry<'t> {
    #[inline]
    pub fn or_default(self) -> &'t mut (u64, u64) {
        self.table.slot(self.key.0, self.key.1)
    }
}

#[inline]
fn pack32(a: u64) -> Option<u32> {
    u32::try_from(a).ok().filter(|&a| a != NONE32)
}

impl BranchTable {
    #[inline]
    fn pack(from: u64, to: Option<u64>) -> Option<u64> {
        match (pack32(from), to) {
            (Some(f), None) => Some(u64::from(f) | u64::from(NONE32) << 32),
            (Some(f), Some(t)) => pack32(t).map(|t| u64::from(f) | u64::from(t) << 32),
            _ => None,
        }
    }

    /// Start loading where `(from, to)` is counted.
    #[inline]
    pub fn prefetch(&self, from: u64, to: Option<u64>) {
        if let Some(k) = Self::pack(from, to) {
            self.flat.prefetch(&k);
        }
    }

    /// The counts of `(from, to)`, inserted as zero if absent.
    #[inline]
    pub fn slot(&mut self, from: u64, to: Option<u64>) -> &mut (u64, u64) {
        match Self::pack(from, to) {
            Some(k) => self.flat.slot(k),
            None => self.wide.entry((from, to)).or_default(),
        }
    }

    pub fn entry(&mut self, key: (u64, Option<u64>)) -> BranchEntry<'_> {
        BranchEntry { table: self, key }
    }

    pub fn len(&self) -> usize {
        self.flat.len() + self.wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `((from, to), (count, mispredicted))`, in no order.
    pub fn iter(&self) -> impl Iterator<Item = ((u64, Option<u64>), (u64, u64))> + '_ {
        self.flat
            .iter()
            .map(|(&k, &v)| {
                let to = (k >> 32) as u32;
                (
                    (k & 0xffff_ffff, (to != NONE32).then_some(u64::from(to))),
                    v,
                )
            })
            .chain(self.wide.iter().map(|(&k, &v)| (k, v)))
    }

    pub fn values(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Add every count of `other`.
    pub fn merge(&mut self, other: &BranchTable) {
        for ((from, to), (c, m)) in other.iter() {
            let e = self.slot(from, to);
            e.0 += c;
            e.1 += m;
        }
    }
}

/// Straight-line runs between consecutive branches,
/// `(start, end, source of the branch that began it) -> count`, packed as
/// in [`BranchTable`].
#[derive(Default, Clone)]
pub struct TraceTable {
    flat: FlatMap<(u64, u32), u64>,
    wide: FastMap<(u64, u64, Option<u64>), u64>,
}

impl TraceTable {
    #[inline]
    fn pack(start: u64, end: u64, came_from: Option<u64>) -> Option<(u64, u32)> {
        match (pack32(start), pack32(end), came_from.map(pack32)) {
            (Some(s), Some(e), None) => Some((u64::from(s) | u64::from(e) << 32, NONE32)),
            (Some(s), Some(e), Some(Some(c))) => Some((u64::from(s) | u64::from(e) << 32, c)),
            _ => None,
        }
    }

    /// Start loading where the trace is counted.
    #[inline]
    pub fn prefetch(&self, start: u64, end: u64, came_from: Option<u64>) {
        if let Some(k) = Self::pack(start, end, came_from) {
            self.flat.prefetch(&k);
        }
    }

    #[inline]
    pub fn slot(&mut self, start: u64, end: u64, came_from: Option<u64>) -> &mut u64 {
        match Self::pack(start, end, came_from) {
            Some(k) => self.flat.slot(k),
            None => self.wide.entry((start, end, came_from)).or_default(),
        }
    }

    pub fn len(&self) -> usize {
        self.flat.len() + self.wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `((start, end, came_from), count)`, in no order.
    pub fn iter(&self) -> impl Iterator<Item = ((u64, u64, Option<u64>), u64)> + '_ {
        self.flat
            .iter()
            .map(|(&(k, c), &n)| {
                (
                    (
                        k & 0xffff_ffff,
                        k >> 32,
                        (c != NONE32).then_some(u64::from(c)),
                    ),
                    n,
                )
            })
            .chain(self.wide.iter().map(|(&k, &n)| (k, n)))
    }

    pub fn merge(&mut self, other: &TraceTable) {
        for ((s, e, c), n) in other.iter() {
            *self.slot(s, e, c) += n;
        }
    }
}
