//! Every address control can enter other than by falling through: targets
//! of direct branches and calls anywhere in the image (a function's cold
//! part jumps back into its hot part), jump-table entries, and exception
//! landing pads. Code may be moved only from between such addresses.
//!
//! Lowering asks about few addresses: the bytes just before each site's
//! return address, and whether the site's function jumps where the
//! analysis cannot follow. [`collect_for`] answers exactly those questions
//! as [`collect`] (which decodes every function) would, decoding only the
//! functions a byte scan cannot rule out ([`crate::analyze::scan`]).

use std::collections::BTreeSet;

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, OpKind};

use super::{landing_pads, DIRECT_CALL_LEN};
use crate::analyze::retpoline::Thunks;
use crate::analyze::scan::{self, BranchScan};
use crate::analyze::RpcSite;
use crate::elf::{FunctionSymbol, Image};

/// Most entries one jump table is read for.
const MAX_TABLE: u64 = 4096;

pub struct BranchTargets {
    pub targets: BTreeSet<u64>,
    /// Functions (by start address) with an indirect jump whose targets
    /// were not found: nothing inside them may move.
    pub unresolved: BTreeSet<u64>,
}

/// The executable sections' address ranges.
struct Code(Vec<(u64, u64)>);

impl Code {
    fn of(image: &Image) -> Code {
        Code(
            image
                .code_ranges()
                .iter()
                .map(|r| (r.vaddr, r.vaddr + r.bytes.len() as u64))
                .collect(),
        )
    }

    fn contains(&self, a: u64) -> bool {
        self.0.iter().any(|&(lo, hi)| a >= lo && a < hi)
    }
}

/// What decoding one function tells.
#[derive(Default)]
struct Decoded {
    /// Targets of its direct branches and calls.
    targets: Vec<u64>,
    /// It jumps indirectly (not a tail call through a GOT slot).
    indirect_jump: bool,
    /// Addresses outside the code it refers to PC-relatively: candidate
    /// jump tables (and where other tables or objects start).
    tables: Vec<u64>,
}

fn decode(f: &FunctionSymbol, bytes: &[u8], code: &Code, thunks: &Thunks) -> Decoded {
    let mut out = Decoded::default();
    let mut dec = Decoder::with_ip(64, bytes, f.address, DecoderOptions::NONE);
    let mut x = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut x);
        match x.flow_control() {
            // A jump through a retpoline thunk is an indirect jump.
            FlowControl::UnconditionalBranch if thunks.register_of(&x).is_some() => {
                out.indirect_jump = true;
            }
            FlowControl::ConditionalBranch
            | FlowControl::UnconditionalBranch
            | FlowControl::Call => {
                out.targets.push(x.near_branch_target());
            }
            // A jump through a GOT slot is a tail call of an import.
            FlowControl::IndirectBranch
                if !(x.op0_kind() == OpKind::Memory && x.is_ip_rel_memory_operand()) =>
            {
                out.indirect_jump = true;
            }
            _ => {}
        }
        // Jump tables are addressed PC-relatively outside the code.
        if x.is_ip_rel_memory_operand() && !code.contains(x.ip_rel_memory_address()) {
            out.tables.push(x.ip_rel_memory_address());
        }
    }
    out
}

/// Read the jump table at `base` as `int32` offsets from it, at most `end`
/// entries, while they land in code; `visit` gets each target. Whether
/// any did.
fn read_table(image: &Image, code: &Code, base: u64, end: u64, mut visit: impl FnMut(u64)) -> bool {
    let mut found = false;
    for i in 0..end {
        let Some(b) = image.read_vaddr(base + 4 * i, 4) else {
            break;
        };
        let e = i32::from_le_bytes(b.try_into().expect("4 bytes"));
        let t = base.wrapping_add_signed(i64::from(e));
        if !code.contains(t) {
            break;
        }
        visit(t);
        found = true;
    }
    found
}

/// Entries read from a table at `base` when the next address code refers
/// to is `next` (none: the most).
fn table_len(base: u64, next: Option<&u64>) -> u64 {
    next.map_or(MAX_TABLE, |next| ((next - base) / 4).min(MAX_TABLE))
}

/// The functions with bytes in the file, with them.
fn functions(image: &Image) -> Vec<(&FunctionSymbol, &[u8])> {
    image
        .info
        .functions
        .iter()
        .filter(|f| f.size > 0)
        .filter_map(|f| Some((f, image.read_vaddr(f.address, f.size as usize)?)))
        .collect()
}

/// Decode every function of `image` and collect what enters code.
pub fn collect(image: &Image) -> BranchTargets {
    let code = Code::of(image);
    let mut targets = BTreeSet::new();
    let mut unresolved = BTreeSet::new();
    let thunks = Thunks::new(image);
    // Each function's candidate jump tables, if it jumps indirectly.
    let mut jumping: Vec<(u64, Vec<u64>)> = Vec::new();
    let mut bases = BTreeSet::new();
    for (f, bytes) in functions(image) {
        targets.insert(f.address);
        let d = decode(f, bytes, &code, &thunks);
        targets.extend(d.targets);
        bases.extend(d.tables.iter().copied());
        if d.indirect_jump {
            jumping.push((f.address, d.tables));
        }
    }
    // Read each candidate table as `int32` offsets from its base while they
    // land in code, up to the next address code refers to (where another
    // table or object starts; tables of consecutive functions lie side by
    // side, and their offsets land in code from any of their bases): more
    // targets than real only makes moving code rarer, never wrong.
    for (function, tables) in jumping {
        let mut found = false;
        for base in tables {
            let end = table_len(base, bases.range(base + 1..).next());
            found |= read_table(image, &code, base, end, |t| {
                targets.insert(t);
            });
        }
        if !found {
            unresolved.insert(function);
        }
    }
    let (pads, unknown) = landing_pads::collect(image);
    targets.extend(pads);
    for start in unknown {
        if let Some(f) = image.function_at(start) {
            unresolved.insert(f.address);
        }
    }
    BranchTargets {
        targets,
        unresolved,
    }
}

/// Sorted, disjoint address ranges `[lo, hi)`.
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn new(mut v: Vec<(u64, u64)>) -> Ranges {
        v.retain(|&(lo, hi)| lo < hi);
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match out.last_mut() {
                Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Ranges(out)
    }

    fn contains(&self, a: u64) -> bool {
        let (Some(first), Some(last)) = (self.0.first(), self.0.last()) else {
            return false;
        };
        if a < first.0 || a >= last.1 {
            return false;
        }
        let i = self.0.partition_point(|&(lo, _)| lo <= a);
        i > 0 && a < self.0[i - 1].1
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// In parallel over `items`, in consecutive parts, the indices for which
/// `keep` holds (`keep` gets a per-thread value made by `init`).
fn indices_where<T: Sync, S>(
    items: &[T],
    init: impl Fn() -> S + Sync,
    keep: impl Fn(&S, &T) -> bool + Sync,
) -> Vec<usize> {
    let threads = crate::threads::worker_threads();
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(chunk)
            .enumerate()
            .map(|(k, part)| {
                let (init, keep) = (&init, &keep);
                scope.spawn(move || {
                    let state = init();
                    part.iter()
                        .enumerate()
                        .filter(|(_, x)| keep(&state, x))
                        .map(|(i, _)| k * chunk + i)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("scan thread"))
            .collect()
    })
}

/// What [`collect`] would find, exactly where lowering `sites` looks: the
/// targets in the last `DIRECT_CALL_LEN - 1` bytes before each site's
/// return address (the instructions a direct call there overwrites), and
/// whether each site's function is unresolved. Other answers are left out.
///
/// Only functions a byte scan cannot rule out are decoded: those that may
/// branch into such bytes, may jump indirectly (their jump tables), or hold
/// a site; where a jump table of those may reach such bytes, the functions
/// that may refer to the addresses that bound the table's length, too.
pub fn collect_for(image: &Image, sites: &[RpcSite]) -> BranchTargets {
    let windows = Ranges::new(
        sites
            .iter()
            .map(|s| {
                let end = s.address.saturating_add(s.length as u64);
                (end.saturating_sub(DIRECT_CALL_LEN - 1), end)
            })
            .collect(),
    );
    // A `syscall` (a call without a target) counts as one to address 0.
    if windows.contains(0) {
        return collect(image);
    }
    let scope = Windows {
        image,
        sited: sites
            .iter()
            .filter_map(|s| image.function_at(s.address))
            .map(|f| f.address)
            .collect(),
        code: Code::of(image),
        funcs: functions(image),
        windows,
    };
    let mut targets: BTreeSet<u64> = scope
        .funcs
        .iter()
        .map(|(f, _)| f.address)
        .filter(|&a| scope.windows.contains(a))
        .collect();
    let chosen = scope.may_branch_into_windows();
    let thunks = Thunks::new(image);
    let mut first = scope.decode(&chosen, &thunks);
    targets.append(&mut first.targets);
    scope.learn_table_bounds(&mut first, &thunks);
    let mut unresolved = scope.read_jump_tables(first.jumping, &first.bases, &mut targets);

    image.release_code();
    let (pads, unknown) = landing_pads::collect(image);
    targets.extend(pads.into_iter().filter(|&t| scope.windows.contains(t)));
    for start in unknown {
        if let Some(f) = image.function_at(start) {
            if scope.sited.contains(&f.address) {
                unresolved.insert(f.address);
            }
        }
    }
    BranchTargets {
        targets,
        unresolved,
    }
}

/// What [`collect_for`] looks at: the bytes a lowered call overwrites (the
/// windows) and the functions that hold a site.
struct Windows<'a> {
    image: &'a Image,
    windows: Ranges,
    /// Start addresses of the functions that hold a site.
    sited: BTreeSet<u64>,
    code: Code,
    funcs: Vec<(&'a FunctionSymbol, &'a [u8])>,
}

/// What decoding the chosen functions found.
struct FirstDecode {
    /// Which of the functions are decoded.
    decoded: Vec<bool>,
    /// Targets in the windows.
    targets: BTreeSet<u64>,
    /// Every address code refers to that is known (bounds of tables).
    bases: BTreeSet<u64>,
    /// The functions that jump indirectly, with their candidate tables.
    jumping: Vec<(u64, Vec<u64>)>,
}

impl Windows<'_> {
    /// The functions to decode: those that hold a site, or that a byte scan
    /// finds may branch into a window or jump indirectly.
    fn may_branch_into_windows(&self) -> Vec<usize> {
        indices_where(
            &self.funcs,
            || Thunks::new(self.image),
            |thunks, (f, bytes)| {
                let wanted = |t: u64| self.windows.contains(t);
                let thunk = |t: u64| thunks.is_thunk(t);
                self.sited.contains(&f.address)
                    || scan::may_branch_to_or_jump_indirectly(
                        bytes,
                        f.address,
                        &BranchScan {
                            wanted: &wanted,
                            thunk: &thunk,
                        },
                    )
            },
        )
    }

    fn decode(&self, chosen: &[usize], thunks: &Thunks) -> FirstDecode {
        let mut out = FirstDecode {
            decoded: vec![false; self.funcs.len()],
            targets: BTreeSet::new(),
            bases: BTreeSet::new(),
            jumping: Vec::new(),
        };
        for &i in chosen {
            let (f, bytes) = self.funcs[i];
            out.decoded[i] = true;
            let d = decode(f, bytes, &self.code, thunks);
            out.targets
                .extend(d.targets.into_iter().filter(|&t| self.windows.contains(t)));
            out.bases.extend(d.tables.iter().copied());
            if d.indirect_jump {
                out.jumping.push((f.address, d.tables));
            }
        }
        out
    }

    /// A table's length matters up to the last entry that lands in a window
    /// (or, for a sited function, its first entry: whether it has any):
    /// read it without a bound to find which, then learn every address code
    /// refers to below that entry.
    fn learn_table_bounds(&self, first: &mut FirstDecode, thunks: &Thunks) {
        let mut need = Vec::new();
        for (function, tables) in &first.jumping {
            for &base in tables {
                let mut last = None;
                let mut i = 0u64;
                read_table(self.image, &self.code, base, MAX_TABLE, |t| {
                    if self.windows.contains(t) || (i == 0 && self.sited.contains(function)) {
                        last = Some(i);
                    }
                    i += 1;
                });
                if let Some(last) = last {
                    need.push((base + 1, base.saturating_add(4 * (last + 1))));
                }
            }
        }
        let need = Ranges::new(need);
        if need.is_empty() {
            return;
        }
        let refer = indices_where(
            &self.funcs,
            || (),
            |_, (f, bytes)| {
                scan::may_refer_to(bytes, f.address, |a| {
                    need.contains(a) && !self.code.contains(a)
                })
            },
        );
        for i in refer {
            if !first.decoded[i] {
                let (f, bytes) = self.funcs[i];
                first
                    .bases
                    .extend(decode(f, bytes, &self.code, thunks).tables);
            }
        }
    }

    /// Add the window targets of each jumping function's tables, each read
    /// up to the next known address; the sited functions none of whose
    /// tables was found are unresolved.
    fn read_jump_tables(
        &self,
        jumping: Vec<(u64, Vec<u64>)>,
        bases: &BTreeSet<u64>,
        targets: &mut BTreeSet<u64>,
    ) -> BTreeSet<u64> {
        let mut unresolved = BTreeSet::new();
        for (function, tables) in jumping {
            let mut found = false;
            for base in tables {
                let end = table_len(base, bases.range(base + 1..).next());
                found |= read_table(self.image, &self.code, base, end, |t| {
                    if self.windows.contains(t) {
                        targets.insert(t);
                    }
                });
            }
            if !found && self.sited.contains(&function) {
                unresolved.insert(function);
            }
        }
        unresolved
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::Callee;
    use std::path::PathBuf;

    fn libraries() -> Vec<PathBuf> {
        crate::analyze::test_libraries()
    }

    fn site(x: &Instruction) -> RpcSite {
        RpcSite {
            address: x.ip(),
            length: x.len(),
            function: None,
            callee: Callee::Dynamic,
            name_address: None,
            instruction: String::new(),
        }
    }

    /// Every call instruction of `image`, and whether its function jumps
    /// indirectly.
    fn calls(image: &Image) -> Vec<(RpcSite, bool)> {
        let code = Code::of(image);
        let thunks = Thunks::new(image);
        let mut out = Vec::new();
        for (f, bytes) in functions(image) {
            let jumps = decode(f, bytes, &code, &thunks).indirect_jump;
            let mut dec = Decoder::with_ip(64, bytes, f.address, DecoderOptions::NONE);
            for x in dec.iter() {
                if matches!(
                    x.flow_control(),
                    FlowControl::Call | FlowControl::IndirectCall
                ) {
                    out.push((site(&x), jumps));
                }
            }
        }
        out
    }

    /// `collect_for` answers every question lowering asks about `sites`
    /// as `collect` does; how many answers were "yes".
    fn agrees(image: &Image, full: &BranchTargets, sites: &[RpcSite]) -> usize {
        let fast = collect_for(image, sites);
        let mut yes = 0;
        for s in sites {
            let end = s.address + s.length as u64;
            for a in end - (DIRECT_CALL_LEN - 1)..end {
                assert_eq!(
                    full.targets.contains(&a),
                    fast.targets.contains(&a),
                    "{}: target {a:#x} (site {:#x})",
                    image.path.display(),
                    s.address
                );
                yes += usize::from(full.targets.contains(&a));
            }
            if let Some(f) = image.function_at(s.address) {
                assert_eq!(
                    full.unresolved.contains(&f.address),
                    fast.unresolved.contains(&f.address),
                    "{}: function {} at {:#x}",
                    image.path.display(),
                    f.name,
                    f.address
                );
                yes += usize::from(full.unresolved.contains(&f.address));
            }
        }
        yes
    }

    /// Sites anywhere (every call, a sparse sample, the calls of
    /// functions with jump tables): decoding only what the scans keep
    /// answers as decoding everything.
    #[test]
    fn answers_as_decoding_every_function() {
        let mut yes = 0;
        for path in libraries() {
            let image = Image::load(&path).unwrap();
            let full = collect(&image);
            let all = calls(&image);
            let every: Vec<RpcSite> = all.iter().map(|(s, _)| s.clone()).collect();
            let sparse: Vec<RpcSite> = every.iter().step_by(97).cloned().collect();
            let jumping: Vec<RpcSite> = all
                .iter()
                .filter(|(_, j)| *j)
                .map(|(s, _)| s.clone())
                .step_by(7)
                .collect();
            let one: Vec<RpcSite> = every
                .iter()
                .skip(every.len() / 2)
                .take(1)
                .cloned()
                .collect();
            for sites in [&every, &sparse, &jumping, &one] {
                yes += agrees(&image, &full, sites);
            }
            // Each call alone, in the functions with jump tables.
            for s in jumping.iter().step_by(11) {
                yes += agrees(&image, &full, std::slice::from_ref(s));
            }
        }
        // Not vacuous where there are libraries: some answers are "yes".
        if !libraries().is_empty() {
            assert!(yes > 0);
        }
    }

    /// A site whose window reaches address 0 (which `collect` counts as a
    /// target of every `syscall`) is answered by decoding everything.
    #[test]
    fn windows_at_address_zero_decode_everything() {
        let Some(path) = libraries().into_iter().next() else {
            return;
        };
        let image = Image::load(&path).unwrap();
        let s = RpcSite {
            address: 0,
            length: 2,
            function: None,
            callee: Callee::Dynamic,
            name_address: None,
            instruction: String::new(),
        };
        let full = collect(&image);
        let fast = collect_for(&image, &[s]);
        assert_eq!(full.targets.contains(&0), fast.targets.contains(&0));
    }
}
