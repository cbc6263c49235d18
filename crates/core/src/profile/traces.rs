//! Fall-through paths. Between two consecutive branch-stack entries the
//! program ran straight from the older branch's target to the newer
//! branch's source; every basic-block boundary it crossed on the way is a
//! fall-through edge (a conditional branch not taken, or a block ending at
//! a branch target). perf2bolt counts these edges in `.fdata` as branches
//! from the block's last instruction to the next block; so does faasfuse.

use std::collections::{BTreeSet, HashSet};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

use super::fasthash::{TraceSlot, TraceTable};
use super::images::Lib;

/// A straight-line run: (start, end, whether the branch that began it
/// came from outside the function of `start`: [`began_outside`]).
pub type Trace = (u64, u64, bool);

/// Fall-through edges `((from, to), count)`.
pub type Edges = Vec<((u64, u64), u64)>;

/// Basic blocks of one function, as BOLT forms them: a block starts at the
/// entry, at a direct branch target and after any branch or return; calls
/// do not end blocks.
struct Blocks {
    /// Start address of each block.
    starts: Vec<u64>,
    /// Address of each block's last instruction (alignment nops included,
    /// as BOLT counts them).
    last: Vec<u64>,
    /// Whether control can fall from each block into the next.
    falls: Vec<bool>,
    /// Whether each block ends with a call.
    call: Vec<bool>,
}

impl Blocks {
    fn of(code: &[u8], ip: u64) -> Blocks {
        let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
        let insns: Vec<Instruction> =
            std::iter::from_fn(|| d.can_decode().then(|| d.decode())).collect();
        let end = ip + code.len() as u64;
        let mut leaders = BTreeSet::from([ip]);
        for (i, x) in insns.iter().enumerate() {
            match x.flow_control() {
                FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch => {
                    let t = x.near_branch_target();
                    if (ip..end).contains(&t) {
                        leaders.insert(t);
                    }
                    // BOLT keeps `jcc; jmp` in one block.
                    let jmp_follows = x.flow_control() == FlowControl::ConditionalBranch
                        && insns
                            .get(i + 1)
                            .is_some_and(|n| n.flow_control() == FlowControl::UnconditionalBranch);
                    if !jmp_follows {
                        leaders.insert(x.next_ip());
                    }
                }
                FlowControl::IndirectBranch | FlowControl::Return => {
                    leaders.insert(x.next_ip());
                }
                _ => {}
            }
        }
        let mut b = Blocks {
            starts: Vec::new(),
            last: Vec::new(),
            falls: Vec::new(),
            call: Vec::new(),
        };
        for x in &insns {
            if leaders.contains(&x.ip()) || b.starts.is_empty() {
                b.starts.push(x.ip());
                b.last.push(x.ip());
                b.falls.push(true);
                b.call.push(false);
            }
            let k = b.starts.len() - 1;
            b.last[k] = x.ip();
            b.call[k] = matches!(
                x.flow_control(),
                FlowControl::Call | FlowControl::IndirectCall
            );
            b.falls[k] = !matches!(
                x.flow_control(),
                FlowControl::UnconditionalBranch
                    | FlowControl::IndirectBranch
                    | FlowControl::Return
            );
        }
        b
    }

    /// BOLT gives up on a function with an indirect jump it cannot read as
    /// a jump table (a tail call through a register): such a function is
    /// not "simple" and gets no fall-through edges. A jump table shows as
    /// an indexed load shortly before the jump.
    fn simple(code: &[u8], ip: u64) -> bool {
        let mut d = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
        let insns: Vec<Instruction> =
            std::iter::from_fn(|| d.can_decode().then(|| d.decode())).collect();
        insns.iter().enumerate().all(|(k, x)| {
            x.flow_control() != FlowControl::IndirectBranch
                || insns[k.saturating_sub(8)..k].iter().any(|p| {
                    p.memory_index() != iced_x86::Register::None && p.memory_index_scale() >= 4
                })
        })
    }

    fn containing(&self, addr: u64) -> Option<usize> {
        self.starts.partition_point(|&s| s <= addr).checked_sub(1)
    }
}

/// Function symbols BOLT sees as split into fragments (`f` and `f.cold`):
/// it builds no control flow for them, so records no fall-throughs.
fn split_functions(lib: &Lib) -> HashSet<u64> {
    let mut out = HashSet::new();
    for f in lib.symbols.iter() {
        if let Some(i) = f.name.find(".cold") {
            out.insert(f.start);
            if let Some(parent) = lib.symbols.by_bolt_name(&f.name[..i]) {
                out.insert(parent.start);
            }
        }
    }
    out
}

/// Whether a trace at `start` began with a branch from outside the
/// function of `start` (`came_from` is None outside the image): the one
/// thing [`fallthroughs`] needs of that branch (a trace starting at a
/// return address after a call began in the call's block, unless a jump
/// inside the function led there).
pub(crate) fn began_outside(lib: &Lib, start: u64, came_from: Option<u64>) -> bool {
    let f = lib.symbols.at(start);
    !matches!((f, came_from), (Some(f), Some(a)) if a >= f.start && a < f.start + f.size)
}

/// The fall-through edges of `traces` ((start, end, whether the branch
/// that began the trace came from outside start's function, as
/// [`began_outside`] tells) -> count) in `lib`: (from, to) -> count, sorted
/// by (from, to), and how many traces did not match the code. Traces are
/// taken in address order, so each function's blocks are built once and
/// dropped when the walk leaves it (memory does not grow with the
/// functions touched), and the work splits over `threads` at function
/// boundaries.
pub fn fallthroughs(lib: &Lib, traces: TraceTable, threads: usize) -> (Edges, u64) {
    // The table's own slots, sorted in place by start only: each
    // function's traces together (the edges are sorted at the end).
    let mut list = traces.into_list();
    par_sort_by_key(&mut list.slots, threads, |t| t.start());
    list.wide.sort_unstable_by_key(|t| t.0 .0);
    let split = split_functions(lib);
    // Parts end between functions.
    let parts = split_between(&list.slots, threads, |s| {
        lib.symbols.at(s.start()).map(|f| f.start)
    });
    // Each part sorts its edges: parts hold functions in address order, so
    // the sorted parts joined are (nearly always) sorted already.
    let list = &list;
    let get = |s: &TraceSlot| list.get(s);
    let mut results = map_parts(&parts, |p| sorted_edges(lib, p, &split, get));
    if !list.wide.is_empty() {
        results.push(sorted_edges(lib, &list.wide, &split, |t| *t));
    }
    let mut bad = 0;
    let mut out = Vec::new();
    for (o, b) in results {
        out.extend(o);
        bad += b;
    }
    if !out.windows(2).all(|w| w[0].0 <= w[1].0) {
        out.sort_unstable_by_key(|e| e.0);
    }
    let mut merged: Edges = Vec::with_capacity(out.len());
    for (k, n) in out {
        match merged.last_mut() {
            Some(l) if l.0 == k => l.1 += n,
            _ => merged.push((k, n)),
        }
    }
    (merged, bad)
}

/// `items` cut into up to `threads` consecutive parts of about equal
/// length (at least 65,536 items each), each cut moved on past the items
/// of the same `key` as the one before it, so that no key spans two parts.
pub fn split_between<T, K: PartialEq>(
    items: &[T],
    threads: usize,
    key: impl Fn(&T) -> K,
) -> Vec<&[T]> {
    let threads = threads.clamp(1, 64).min(items.len() / 65536 + 1);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = items;
    for k in (1..=threads).rev() {
        let mut cut = rest.len() / k;
        while cut > 0 && cut < rest.len() && key(&rest[cut]) == key(&rest[cut - 1]) {
            cut += 1;
        }
        let (a, b) = rest.split_at(cut);
        parts.push(a);
        rest = b;
    }
    parts
}

/// `f` of every part, in order, each part on a thread of its own when
/// there are several.
pub fn map_parts<T: Sync, R: Send + Default>(
    parts: &[&[T]],
    f: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    if parts.len() <= 1 {
        return parts.iter().map(|p| f(p)).collect();
    }
    std::thread::scope(|sc| {
        let hs: Vec<_> = parts.iter().map(|p| sc.spawn(|| f(p))).collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// Sort `v` by `key` (unstably) on up to `threads` threads: split at the
/// median, then each half sorted on its own.
pub fn par_sort_by_key<T: Send, K: Ord>(
    v: &mut [T],
    threads: usize,
    key: impl Fn(&T) -> K + Copy + Send + Sync,
) {
    if threads < 2 || v.len() < 1 << 16 {
        v.sort_unstable_by_key(key);
        return;
    }
    let mid = v.len() / 2;
    v.select_nth_unstable_by_key(mid, key);
    let (a, b) = v.split_at_mut(mid);
    let (ta, tb) = (threads / 2, threads - threads / 2);
    std::thread::scope(|sc| {
        sc.spawn(move || par_sort_by_key(a, ta, key));
        par_sort_by_key(b, tb, key);
    });
}

/// [`fallthroughs_in`], its edges sorted.
fn sorted_edges<T>(
    lib: &Lib,
    traces: &[T],
    split: &HashSet<u64>,
    get: impl Fn(&T) -> (Trace, u64),
) -> (Edges, u64) {
    let (mut e, bad) = fallthroughs_in(lib, traces, split, get);
    // In address order already, but for functions whose symbols overlap.
    if !e.windows(2).all(|w| w[0].0 < w[1].0) {
        e.sort_unstable_by_key(|e| e.0);
    }
    (e, bad)
}

/// [`fallthroughs`] over traces sorted by start (`get` gives the trace of
/// each element and its count). A trace adds its count to a run of one
/// function's consecutive fall-through edges (block k to k+1 for k in
/// i..j): that is kept as a difference at both ends of the run, and each
/// function's edges are summed up once, in address order, when the walk
/// leaves it.
fn fallthroughs_in<T>(
    lib: &Lib,
    traces: &[T],
    split: &HashSet<u64>,
    get: impl Fn(&T) -> (Trace, u64),
) -> (Edges, u64) {
    let mut out: Edges = Vec::new();
    let mut bad = 0;
    let mut hint = 0;
    // The function of the last trace, its blocks, and per block k what
    // the count of edge k differs from that of edge k-1 (mod 2^64).
    let mut cur: Option<(u64, Option<Blocks>)> = None;
    let mut diff: Vec<u64> = Vec::new();
    let flush = |cur: &Option<(u64, Option<Blocks>)>, diff: &mut Vec<u64>, out: &mut Edges| {
        if let Some((_, Some(b))) = cur {
            let mut run = 0u64;
            for (k, d) in diff.iter().enumerate() {
                run = run.wrapping_add(*d);
                if run != 0 && k + 1 < b.starts.len() {
                    out.push(((b.last[k], b.starts[k + 1]), run));
                }
            }
        }
        diff.clear();
    };
    for t in traces {
        let ((start, end, outside), n) = get(t);
        let Some(f) = lib.symbols.at_hinted(start, &mut hint) else {
            bad += n;
            continue;
        };
        if start > end || end >= f.start + f.size || split.contains(&f.start) {
            bad += n;
            continue;
        }
        if cur.as_ref().map(|c| c.0) != Some(f.start) {
            flush(&cur, &mut diff, &mut out);
            let blocks = lib
                .image
                .read_vaddr(f.start, f.size as usize)
                .and_then(|code| Blocks::simple(code, f.start).then(|| Blocks::of(code, f.start)));
            if let Some(b) = &blocks {
                diff.resize(b.starts.len(), 0);
            }
            cur = Some((f.start, blocks));
        }
        let Some((_, Some(b))) = &cur else {
            bad += n;
            continue;
        };
        let (Some(mut i), Some(j)) = (b.containing(start), b.containing(end)) else {
            bad += n;
            continue;
        };
        // A trace that starts where a callee returned to, at a block
        // boundary, began in the block that ends with the call.
        if start == b.starts[i] && i > 0 && outside && b.falls[i - 1] && b.call[i - 1] {
            i -= 1;
        }
        if (i..j).any(|k| !b.falls[k]) {
            bad += n;
            continue;
        }
        if i < j {
            diff[i] = diff[i].wrapping_add(n);
            diff[j] = diff[j].wrapping_sub(n);
        }
    }
    flush(&cur, &mut diff, &mut out);
    (out, bad)
}
