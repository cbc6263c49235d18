//! Fall-through paths. Between two consecutive branch-stack entries the
//! program ran straight from the older branch's target to the newer
//! branch's source; every basic-block boundary it crossed on the way is a
//! fall-through edge (a conditional branch not taken, or a block ending at
//! a branch target). perf2bolt counts these edges in `.fdata` as branches
//! from the block's last instruction to the next block; so does faasfuse.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

use super::fasthash::FastMap;
use super::images::Lib;

/// A straight-line run: (start, end, source address of the branch that
/// began it when that lies in the same image).
pub type Trace = (u64, u64, Option<u64>);

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

/// The fall-through edges of `traces` ((start, end, source of the branch
/// that began the trace) -> count) in `lib`: (from, to) -> count, and how
/// many traces did not match the code.
pub fn fallthroughs(lib: &Lib, traces: &FastMap<Trace, u64>) -> (BTreeMap<(u64, u64), u64>, u64) {
    let mut out: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    let mut bad = 0;
    let mut cache: HashMap<u64, Option<Blocks>> = HashMap::new();
    let split = split_functions(lib);
    for (&(start, end, came_from), &n) in traces {
        let Some(f) = lib.symbols.at(start) else {
            bad += n;
            continue;
        };
        if start > end || end >= f.start + f.size || split.contains(&f.start) {
            bad += n;
            continue;
        }
        let inside = |a: u64| a >= f.start && a < f.start + f.size;
        let blocks = cache.entry(f.start).or_insert_with(|| {
            let code = lib.image.read_vaddr(f.start, f.size as usize)?;
            Blocks::simple(code, f.start).then(|| Blocks::of(code, f.start))
        });
        let Some(b) = blocks else {
            bad += n;
            continue;
        };
        let (Some(mut i), Some(j)) = (b.containing(start), b.containing(end)) else {
            bad += n;
            continue;
        };
        // A trace that starts where a callee returned to, at a block
        // boundary, began in the block that ends with the call.
        if start == b.starts[i]
            && i > 0
            && !came_from.is_some_and(inside)
            && b.falls[i - 1]
            && b.call[i - 1]
        {
            i -= 1;
        }
        if (i..j).any(|k| !b.falls[k]) {
            bad += n;
            continue;
        }
        for k in i..j {
            *out.entry((b.last[k], b.starts[k + 1])).or_default() += n;
        }
    }
    (out, bad)
}
