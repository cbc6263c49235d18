//! The accumulators' tables, keyed by addresses and hashed with
//! [`crate::hash::WordHasher`].

pub use crate::hash::{FastMap, WordHasher};

/// A slot of a [`FlatMap`]: a packed key beside 32-bit counts, 16 bytes
/// aligned to 16 (four to a cache line, none straddling two), one key
/// value reserved for empty slots.
pub trait Slot: Copy {
    type Key: Copy + Eq;
    /// Never inserted: marks an empty slot.
    const EMPTY: Self;
    fn key(&self) -> Self::Key;
    /// A slot holding `k` with zero counts.
    fn new(k: Self::Key) -> Self;
    fn hash(k: &Self::Key) -> u64;
}

/// An open-addressing hash table (linear probing, key and counts side by
/// side in one array, at most 3/4 full): one cache line per lookup, no
/// allocation per key, memory proportional to the distinct keys.
#[derive(Clone)]
pub struct FlatMap<S: Slot> {
    slots: Vec<S>,
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

impl<S: Slot> Default for FlatMap<S> {
    fn default() -> Self {
        Self::with_bits(4)
    }
}

impl<S: Slot> FlatMap<S> {
    fn with_bits(bits: u32) -> Self {
        let n = SEEDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::with_seed(bits, n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn with_seed(bits: u32, seed: u64) -> Self {
        let mut slots = Vec::with_capacity(1 << bits);
        if std::mem::size_of::<S>() << bits >= 4 << 20 {
            faasfuse_sys::hint::huge_pages(&slots);
        }
        slots.resize(1 << bits, S::EMPTY);
        FlatMap {
            slots,
            len: 0,
            bits,
            seed,
        }
    }

    /// Start loading the slot where `k` would be (counting a sample's
    /// branches first prefetches all of them: their cache misses overlap).
    #[inline]
    pub fn prefetch(&self, k: &S::Key) {
        faasfuse_sys::hint::prefetch(self.slots.as_ptr().wrapping_add(self.home(k)));
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn home(&self, k: &S::Key) -> usize {
        ((S::hash(k) ^ self.seed).wrapping_mul(0xff51_afd7_ed55_8ccd) >> (64 - self.bits)) as usize
    }

    /// The slot of `k`, inserted with zero counts if absent. `k` must not
    /// be the key of [`Slot::EMPTY`].
    #[inline]
    pub fn slot(&mut self, k: S::Key) -> &mut S {
        self.entry(k).0
    }

    /// [`FlatMap::slot`], and whether it was inserted now.
    #[inline]
    pub fn entry(&mut self, k: S::Key) -> (&mut S, bool) {
        debug_assert!(k != S::EMPTY.key());
        let mask = self.slots.len() - 1;
        let mut i = self.home(&k);
        loop {
            let s = self.slots[i].key();
            if s == k {
                return (&mut self.slots[i], false);
            }
            if s == S::EMPTY.key() {
                break;
            }
            i = (i + 1) & mask;
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
            return self.entry(k);
        }
        self.len += 1;
        self.slots[i] = S::new(k);
        (&mut self.slots[i], true)
    }

    /// The slot of `k`, if present.
    #[inline]
    pub fn get(&self, k: &S::Key) -> Option<&S> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(k);
        loop {
            let s = &self.slots[i];
            if s.key() == *k {
                return Some(s);
            }
            if s.key() == S::EMPTY.key() {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let old = std::mem::take(&mut self.slots);
        *self = Self::with_seed(self.bits + 1, self.seed);
        for s in old {
            if s.key() != S::EMPTY.key() {
                *self.slot(s.key()) = s;
            }
        }
    }

    /// Every occupied slot, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &S> + '_ {
        self.slots.iter().filter(|s| s.key() != S::EMPTY.key())
    }
}

/// Adds `n` to a 32-bit count; returns what carries beyond 32 bits (in
/// units of 2^32).
#[inline]
fn add32(c: &mut u32, n: u64) -> u64 {
    let sum = u64::from(*c) + n;
    *c = sum as u32;
    sum >> 32
}

/// `None` as a packed 32-bit address.
const NONE32: u32 = u32::MAX;

/// Adds `n` to the 31-bit count below [`OUTSIDE`] in `c`, keeping that
/// bit; returns what carries beyond 31 bits (in units of 2^31).
#[inline]
fn add31(c: &mut u32, n: u64) -> u64 {
    let sum = u64::from(*c & !OUTSIDE) + n;
    *c = (*c & OUTSIDE) | (sum as u32 & !OUTSIDE);
    sum >> 31
}

/// The flag of a branch in [`BranchSlot::mispred`]: its source lies
/// outside the function of its target (see [`BranchTable::count`]).
const OUTSIDE: u32 = 1 << 31;

/// A branch slot: `from | to << 32` (`to` [`NONE32`] outside the image),
/// count, and mispredictions (31 bits) with the [`OUTSIDE`] flag.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct BranchSlot {
    key: u64,
    count: u32,
    mispred: u32,
}

impl Slot for BranchSlot {
    type Key = u64;
    const EMPTY: Self = BranchSlot {
        key: u64::MAX,
        count: 0,
        mispred: 0,
    };
    #[inline]
    fn key(&self) -> u64 {
        self.key
    }
    #[inline]
    fn new(key: u64) -> Self {
        BranchSlot {
            key,
            count: 0,
            mispred: 0,
        }
    }
    #[inline]
    fn hash(k: &u64) -> u64 {
        k.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

/// A trace slot: `start | end << 32`, whether the branch that began it
/// came from outside the function of `start` (1) or not (0), count.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
pub struct TraceSlot {
    key: u64,
    outside: u32,
    count: u32,
}

impl Slot for TraceSlot {
    type Key = (u64, u32);
    const EMPTY: Self = TraceSlot {
        key: u64::MAX,
        outside: u32::MAX,
        count: 0,
    };
    #[inline]
    fn key(&self) -> (u64, u32) {
        (self.key, self.outside)
    }
    #[inline]
    fn new((key, outside): (u64, u32)) -> Self {
        TraceSlot {
            key,
            outside,
            count: 0,
        }
    }
    /// By `(start, end)` only: a trace's slot can be loaded before its flag
    /// is known, and both flags of one run lie side by side.
    #[inline]
    fn hash(k: &(u64, u32)) -> u64 {
        k.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

impl TraceSlot {
    /// Where the trace starts.
    #[inline]
    pub fn start(&self) -> u64 {
        self.key & 0xffff_ffff
    }
}

/// A trace `(start, end, came from outside start's function)` and its
/// count.
pub type TraceCount = ((u64, u64, bool), u64);

/// A [`TraceTable`] taken apart to be walked in any order, without a copy
/// of its entries: the occupied slots and the entries of wide addresses.
pub struct TraceList {
    pub slots: Vec<TraceSlot>,
    carry: FastMap<(u64, u32), u64>,
    pub wide: Vec<TraceCount>,
}

impl TraceList {
    /// The trace of a slot and its count.
    #[inline]
    pub fn get(&self, s: &TraceSlot) -> TraceCount {
        trace_entry(s, &self.carry)
    }
}

/// The trace a slot holds and its count, with the carries beyond 32 bits.
#[inline]
fn trace_entry(s: &TraceSlot, carry: &FastMap<(u64, u32), u64>) -> TraceCount {
    let (k, o) = s.key();
    let mut n = u64::from(s.count);
    if !carry.is_empty() {
        n += carry.get(&(k, o)).map_or(0, |&cc| cc << 32);
    }
    ((k & 0xffff_ffff, k >> 32, o != 0), n)
}

/// Taken-branch counts: `(from, to) -> (count, mispredicted)`, `to` None
/// outside the image. Addresses below 4 GiB (every function library) are
/// packed into one word in a [`FlatMap`] with 32-bit counts (what carries
/// beyond 32 bits is kept aside); others go to an ordinary map.
#[derive(Default, Clone)]
pub struct BranchTable {
    flat: FlatMap<BranchSlot>,
    /// Carries of the flat counts, in units of 2^32 (counts) and 2^31
    /// (mispredictions).
    carry: FastMap<u64, (u64, u64)>,
    wide: FastMap<(u64, Option<u64>), (u64, u64)>,
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

    /// Count one taken branch, and return its flag: whether `from` lies
    /// outside the function of `to`, as `outside` tells. That is asked
    /// once per distinct branch (the flag is kept in its slot), so the
    /// traces the branch begins can be keyed by the flag instead of by
    /// `from`.
    #[inline]
    pub fn count(
        &mut self,
        from: u64,
        to: Option<u64>,
        mispredicted: bool,
        outside: impl FnOnce() -> bool,
    ) -> bool {
        self.add_flagged(from, to, 1, u64::from(mispredicted), outside)
    }

    /// The flag of `(from, to)` (see [`BranchTable::count`]), if it is
    /// kept here.
    #[inline]
    pub fn outside(&self, from: u64, to: Option<u64>) -> Option<bool> {
        let k = Self::pack(from, to)?;
        self.flat.get(&k).map(|s| s.mispred & OUTSIDE != 0)
    }

    /// Add `count` and `mispred` to `(from, to)`.
    #[inline]
    pub fn add(&mut self, from: u64, to: Option<u64>, count: u64, mispred: u64) {
        self.add_flagged(from, to, count, mispred, || false);
    }

    #[inline]
    fn add_flagged(
        &mut self,
        from: u64,
        to: Option<u64>,
        count: u64,
        mispred: u64,
        outside: impl FnOnce() -> bool,
    ) -> bool {
        match Self::pack(from, to) {
            Some(k) => {
                let (s, new) = self.flat.entry(k);
                if new && outside() {
                    s.mispred = OUTSIDE;
                }
                let flag = s.mispred & OUTSIDE != 0;
                let (c, m) = (add32(&mut s.count, count), add31(&mut s.mispred, mispred));
                if c | m != 0 {
                    let e = self.carry.entry(k).or_default();
                    e.0 += c;
                    e.1 += m;
                }
                flag
            }
            None => {
                let e = self.wide.entry((from, to)).or_default();
                e.0 += count;
                e.1 += mispred;
                outside()
            }
        }
    }

    pub fn len(&self) -> usize {
        self.flat.len() + self.wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `((from, to), (count, mispredicted), flag)`, in no order.
    fn entries(&self) -> impl Iterator<Item = ((u64, Option<u64>), (u64, u64), bool)> + '_ {
        self.flat
            .iter()
            .map(|s| {
                let k = s.key;
                let to = (k >> 32) as u32;
                let (mut c, mut m) = (u64::from(s.count), u64::from(s.mispred & !OUTSIDE));
                if !self.carry.is_empty() {
                    if let Some(&(cc, cm)) = self.carry.get(&k) {
                        c += cc << 32;
                        m += cm << 31;
                    }
                }
                (
                    (k & 0xffff_ffff, (to != NONE32).then_some(u64::from(to))),
                    (c, m),
                    s.mispred & OUTSIDE != 0,
                )
            })
            .chain(self.wide.iter().map(|(&k, &v)| (k, v, false)))
    }

    /// Every `((from, to), (count, mispredicted))`, in no order.
    pub fn iter(&self) -> impl Iterator<Item = ((u64, Option<u64>), (u64, u64))> + '_ {
        self.entries().map(|(k, v, _)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Add every count of `other`, and its flags.
    pub fn merge(&mut self, other: &BranchTable) {
        in_batches(
            self,
            other.entries(),
            |t, e| t.prefetch(e.0 .0, e.0 .1),
            |t, ((from, to), (c, m), flag)| {
                t.add_flagged(from, to, c, m, || flag);
            },
        );
    }
}

/// Straight-line runs between consecutive branches, `(start, end, the
/// branch that began it came from outside start's function) -> count`,
/// packed as in [`BranchTable`], in [`PARTS`] parts.
#[derive(Clone)]
pub struct TraceTable {
    parts: Vec<TracePart>,
    wide: FastMap<(u64, u64, bool), u64>,
}

/// A trace's part follows from its `(start, end)` alone, the same in every
/// table, so that the tables of several counting threads add up part by
/// part, on as many threads.
const PARTS: usize = 8;

#[derive(Default, Clone)]
struct TracePart {
    flat: FlatMap<TraceSlot>,
    /// Carries of the flat counts, in units of 2^32.
    carry: FastMap<(u64, u32), u64>,
}

impl TracePart {
    #[inline]
    fn add(&mut self, k: (u64, u32), n: u64) {
        let c = add32(&mut self.flat.slot(k).count, n);
        if c != 0 {
            *self.carry.entry(k).or_default() += c;
        }
    }

    /// Add every count of `other` (the smaller part goes into the larger).
    fn merge(&mut self, mut other: TracePart) {
        if other.flat.len() > self.flat.len() {
            std::mem::swap(self, &mut other);
        }
        in_batches(
            self,
            other
                .flat
                .iter()
                .map(|s| (s.key(), trace_entry(s, &other.carry).1)),
            |p, (k, _)| p.flat.prefetch(k),
            |p, (k, n)| p.add(k, n),
        );
    }
}

impl Default for TraceTable {
    fn default() -> Self {
        TraceTable {
            parts: (0..PARTS).map(|_| TracePart::default()).collect(),
            wide: FastMap::default(),
        }
    }
}

impl TraceTable {
    #[inline]
    fn pack(start: u64, end: u64, outside: bool) -> Option<(u64, u32)> {
        match (pack32(start), pack32(end)) {
            (Some(s), Some(e)) => Some((u64::from(s) | u64::from(e) << 32, u32::from(outside))),
            _ => None,
        }
    }

    /// The part of a packed `(start, end)` (high bits of another product
    /// than the slot's hash, so that a part's keys still spread over its
    /// slots).
    #[inline]
    fn part(k: u64) -> usize {
        (k.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 61) as usize % PARTS
    }

    /// Start loading where the trace is counted (either flag: both hash
    /// alike).
    #[inline]
    pub fn prefetch(&self, start: u64, end: u64) {
        if let Some(k) = Self::pack(start, end, false) {
            self.parts[Self::part(k.0)].flat.prefetch(&k);
        }
    }

    /// Add `n` to the trace; `outside`: the branch that began it came from
    /// outside the function of `start`.
    #[inline]
    pub fn add(&mut self, start: u64, end: u64, outside: bool, n: u64) {
        match Self::pack(start, end, outside) {
            Some(k) => self.parts[Self::part(k.0)].add(k, n),
            None => *self.wide.entry((start, end, outside)).or_default() += n,
        }
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|p| p.flat.len()).sum::<usize>() + self.wide.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `((start, end, outside), count)`, in no order.
    pub fn iter(&self) -> impl Iterator<Item = TraceCount> + '_ {
        self.parts
            .iter()
            .flat_map(|p| p.flat.iter().map(|s| trace_entry(s, &p.carry)))
            .chain(self.wide.iter().map(|(&k, &n)| (k, n)))
    }

    /// The entries, taken apart in place (see [`TraceList`]).
    pub fn into_list(self) -> TraceList {
        let mut slots = Vec::with_capacity(self.len());
        let mut carry = FastMap::default();
        for p in self.parts {
            slots.extend(
                p.flat
                    .slots
                    .into_iter()
                    .filter(|s| s.key() != TraceSlot::EMPTY.key()),
            );
            carry.extend(p.carry);
        }
        TraceList {
            slots,
            carry,
            wide: self.wide.into_iter().collect(),
        }
    }

    /// Add every count of `other`, part by part on up to `threads` threads.
    pub fn merge(&mut self, other: TraceTable, threads: usize) {
        for (k, n) in other.wide {
            *self.wide.entry(k).or_default() += n;
        }
        let mut pairs: Vec<_> = self.parts.iter_mut().zip(other.parts).collect();
        let per = pairs.len().div_ceil(threads.clamp(1, PARTS));
        std::thread::scope(|sc| {
            for group in pairs.chunks_mut(per) {
                sc.spawn(move || {
                    for (mine, theirs) in group.iter_mut() {
                        mine.merge(std::mem::take(theirs));
                    }
                });
            }
        });
    }
}

/// Apply `add` to every item, a batch at a time, `prefetch` of the whole
/// batch first: adding one table to another is a random walk over the
/// larger one, whose cache misses then overlap.
fn in_batches<M, T: Copy>(
    into: &mut M,
    items: impl Iterator<Item = T>,
    prefetch: impl Fn(&M, &T),
    add: impl Fn(&mut M, T),
) {
    const BATCH: usize = 32;
    let mut buf: Vec<T> = Vec::with_capacity(BATCH);
    let mut items = items.peekable();
    while items.peek().is_some() {
        buf.clear();
        buf.extend(items.by_ref().take(BATCH));
        buf.iter().for_each(|t| prefetch(into, t));
        buf.iter().for_each(|&t| add(into, t));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_16_bytes() {
        assert_eq!(std::mem::size_of::<BranchSlot>(), 16);
        assert_eq!(std::mem::size_of::<TraceSlot>(), 16);
    }

    #[test]
    fn counts_carry_beyond_32_bits() {
        let mut b = BranchTable::default();
        b.add(0x10, Some(0x20), u64::from(u32::MAX), 3);
        b.count(0x10, Some(0x20), true, || true);
        b.add(0x10, Some(0x20), 5 << 32, 1 << 33);
        b.add(0x1_0000_0000, None, 7, 1);
        let mut v: Vec<_> = b.iter().collect();
        v.sort();
        assert_eq!(
            v,
            [
                ((0x10, Some(0x20)), ((6 << 32), 4 + (1 << 33))),
                ((0x1_0000_0000, None), (7, 1)),
            ]
        );
        let mut m = BranchTable::default();
        m.count(0x10, Some(0x20), false, || false);
        m.merge(&b);
        let v: Vec<_> = m.iter().filter(|e| e.0 .0 == 0x10).collect();
        assert_eq!(v, [((0x10, Some(0x20)), ((6 << 32) + 1, 4 + (1 << 33)))]);

        let mut t = TraceTable::default();
        t.add(1, 2, false, u64::from(u32::MAX));
        t.add(1, 2, false, 2);
        t.add(1, 2, true, 1);
        let mut v: Vec<_> = t.iter().collect();
        v.sort();
        assert_eq!(v, [((1, 2, false), (1 << 32) + 1), ((1, 2, true), 1)]);
    }

    #[test]
    fn a_branch_keeps_its_flag() {
        let mut b = BranchTable::default();
        assert!(b.count(1, Some(2), true, || true));
        assert!(!b.count(5, Some(6), true, || false));
        // Mispredictions carry beyond 31 bits without touching the flag.
        b.add(1, Some(2), 0, 3 << 31);
        assert!(b.count(1, Some(2), false, || panic!("asked twice")));
        assert_eq!(b.outside(1, Some(2)), Some(true));
        assert_eq!(b.outside(5, Some(6)), Some(false));
        assert_eq!(b.outside(3, Some(4)), None);
        let v: Vec<_> = b.iter().filter(|e| e.0 .0 == 1).collect();
        assert_eq!(v, [((1, Some(2)), (2, 1 + (3 << 31)))]);
        let mut m = BranchTable::default();
        m.count(7, None, false, || false);
        m.merge(&b);
        assert_eq!(m.outside(1, Some(2)), Some(true));
        assert_eq!(m.outside(5, Some(6)), Some(false));
    }

    #[test]
    fn trace_tables_add_up_part_by_part() {
        let (mut a, mut b, mut one) = (
            TraceTable::default(),
            TraceTable::default(),
            TraceTable::default(),
        );
        for i in 0..60_000u64 {
            let (s, e, o, n) = (i % 7001, i % 7001 + i % 13, i % 5 == 0, i % 3 + 1);
            if i % 3 == 0 { &mut a } else { &mut b }.add(s, e, o, n);
            one.add(s, e, o, n);
        }
        // Counts that carry beyond 32 bits, and wide addresses, in both.
        for (t, times) in [(&mut a, 1), (&mut b, 1), (&mut one, 2)] {
            for _ in 0..times {
                t.add(1, 2, false, 3 << 32 | 7);
                t.add(1 << 40, 3, true, 5);
            }
        }
        a.merge(b, 3);
        let (mut got, mut want): (Vec<_>, Vec<_>) = (a.iter().collect(), one.iter().collect());
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(a.len(), one.len());
        let list = a.into_list();
        let mut listed: Vec<_> = list.slots.iter().map(|s| list.get(s)).collect();
        listed.extend(list.wide.iter().copied());
        listed.sort_unstable();
        assert_eq!(listed, want);
    }

    #[test]
    fn grows_and_keeps_every_key() {
        let mut t = TraceTable::default();
        for i in 0..10_000u64 {
            t.add(i, i + 1, i % 3 == 0, i);
        }
        assert_eq!(t.len(), 10_000);
        let sum: u64 = t.iter().map(|(_, n)| n).sum();
        assert_eq!(sum, (0..10_000u64).sum::<u64>());
    }
}
