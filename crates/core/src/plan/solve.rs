//! Choosing fusion groups. Each group is rooted at an entry function and
//! holds callees reachable from it through hot, same-domain edges inside
//! the group; a callee may be copied into several groups.
//!
//! Cost model: a group's image serves every execution of its root. A member
//! `u` runs inside the group when a member calls it in-process, so the
//! share of `u`'s executions inside group G is
//! `f(u) = Σ_{q∈G} calls(q→u)·f(q) / executions(u)` with `f(root) = 1`
//! (a fixed point, bounded by 1, so cycles are safe). The RPCs a group
//! removes are `Σ_{u,v∈G} calls(u→v)·f(u)`; their cost is that count times
//! the cost of one RPC. A call that can find its callee already running
//! (the callee is the root, the caller itself, or reaches the caller inside
//! the group) stays an RPC in the fused image, as the platform never
//! re-enters a busy process, unless the callee is declared re-entrant: such
//! edges remove nothing. Groups are independent under this model, so the
//! plan is the best group per root: exact (every candidate subset) when a
//! root has at most [`EXACT_LIMIT`] candidates; otherwise a lazy greedy
//! (add the reachable candidate with the largest gain that fits the
//! budgets, re-evaluating only the top of the queue and the neighbours of
//! each new member) followed by local search (drop or add single members
//! while that helps). The work per group grows with the candidates and
//! their edges, not with the number of subsets.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::graph::RpcGraph;
use super::group::Local;

/// Candidates up to which a root's group is found by enumeration.
pub const EXACT_LIMIT: usize = 14;

/// Budgets and thresholds that apply to one root's group.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_image_bytes: Option<u64>,
    pub cpu_budget: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// Edges below this share of their caller's executions are cold.
    pub cold: f64,
}

/// Why a candidate is not in a group, or why it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fused,
    Cold {
        share: f64,
    },
    OtherDomain,
    OverBudget(String),
    NoGain,
    /// Every call to it inside the group would re-enter a running function.
    Reenters,
}

pub struct Solved {
    pub members: BTreeSet<NodeIndex>,
    pub removed_calls: f64,
    pub exact: bool,
    pub verdicts: BTreeMap<NodeIndex, Verdict>,
}

/// Removed RPCs of group `members` rooted at `root`.
pub fn removed_calls(rg: &RpcGraph, root: NodeIndex, members: &BTreeSet<NodeIndex>) -> f64 {
    let cands: Vec<NodeIndex> = members.iter().copied().collect();
    let local = Local::new(rg, root, &cands, 0.0);
    local.value(&vec![true; local.len()])
}

/// Approximate size the fusion runtime adds to an image.
pub const RUNTIME_BYTES: u64 = 16 * 1024;

/// Callees that may join `root`'s group: reachable through hot edges
/// between functions of the root's domain. Everything else gets its verdict.
fn candidates(
    rg: &RpcGraph,
    root: NodeIndex,
    l: &Limits,
    verdicts: &mut BTreeMap<NodeIndex, Verdict>,
) -> Vec<NodeIndex> {
    let g = &rg.g;
    let mut seen = BTreeSet::from([root]);
    let mut stack = vec![root];
    let mut out = Vec::new();
    while let Some(u) = stack.pop() {
        let mut edges: Vec<_> = g.edges(u).collect();
        edges.sort_by_key(|e| e.target());
        for e in edges {
            let v = e.target();
            if seen.contains(&v) {
                continue;
            }
            if g[v].domain != g[root].domain {
                verdicts.entry(v).or_insert(Verdict::OtherDomain);
                continue;
            }
            let share = e.weight().share;
            if share < l.cold {
                verdicts.entry(v).or_insert(Verdict::Cold { share });
                continue;
            }
            verdicts.remove(&v);
            seen.insert(v);
            out.push(v);
            stack.push(v);
        }
    }
    out.sort();
    out
}

/// The best group rooted at `root`; `heuristic` forces the greedy search.
pub fn solve(rg: &RpcGraph, root: NodeIndex, l: &Limits, heuristic: bool) -> Solved {
    let mut verdicts = BTreeMap::new();
    let cands = candidates(rg, root, l, &mut verdicts);
    let local = Local::new(rg, root, &cands, l.cold);
    let exact = !heuristic && cands.len() <= EXACT_LIMIT;
    let member = if exact {
        enumerate(rg, &local, l)
    } else {
        // Greedy by gain, and by gain per unit of the tightest budget (the
        // knapsack rule); each improved by local search; the better wins.
        let by_gain = local_search(rg, &local, l, greedy(rg, &local, l, false));
        let by_density = local_search(rg, &local, l, greedy(rg, &local, l, true));
        if local.value(&by_density) > local.value(&by_gain) + 1e-9 {
            by_density
        } else {
            by_gain
        }
    };
    let members: BTreeSet<NodeIndex> = (0..local.len())
        .filter(|&i| member[i])
        .map(|i| local.nodes[i])
        .collect();
    // Verdicts of candidates left out.
    for (i, &c) in local.nodes.iter().enumerate().skip(1) {
        if member[i] {
            verdicts.insert(c, Verdict::Fused);
            continue;
        }
        let mut with = member.clone();
        with[i] = true;
        let stays = local.staying(&with);
        let only_reentry = local.ins[i]
            .iter()
            .filter(|&&ei| with[local.edges[ei].from])
            .all(|&ei| stays[ei]);
        let v = match Usage::of(rg, &local, &with).over(l) {
            Some(why) => Verdict::OverBudget(why.to_string()),
            None if only_reentry => Verdict::Reenters,
            None => Verdict::NoGain,
        };
        verdicts.insert(c, v);
    }
    Solved {
        removed_calls: local.value(&member),
        members,
        exact,
        verdicts,
    }
}

/// The exact optimum of `root`'s group by enumeration, whatever the
/// number of candidates (2^candidates evaluations): the yardstick the
/// planning benchmark measures the greedy search against.
pub fn exact_removed_calls(rg: &RpcGraph, root: NodeIndex, l: &Limits) -> f64 {
    let cands = candidates(rg, root, l, &mut BTreeMap::new());
    let local = Local::new(rg, root, &cands, l.cold);
    local.value(&enumerate(rg, &local, l))
}

/// Running totals of a member set against the root's budgets.
#[derive(Clone, Copy, Default)]
struct Usage {
    bytes: u64,
    cpu: f64,
    mem: u64,
}

impl Usage {
    fn of(rg: &RpcGraph, local: &Local, member: &[bool]) -> Usage {
        let mut u = Usage {
            bytes: RUNTIME_BYTES,
            ..Usage::default()
        };
        for i in (0..local.len()).filter(|&i| member[i]) {
            u = u.with(rg, local, i);
        }
        u
    }
    fn with(self, rg: &RpcGraph, local: &Local, i: usize) -> Usage {
        let n = &rg.g[local.nodes[i]];
        Usage {
            bytes: self.bytes + n.image_bytes,
            cpu: self.cpu + n.cpu,
            mem: self.mem + n.memory_bytes,
        }
    }
    /// The first budget this usage breaks, if any.
    fn over(&self, l: &Limits) -> Option<Over> {
        match (l.max_image_bytes, l.cpu_budget, l.memory_bytes) {
            (Some(max), _, _) if self.bytes > max => Some(Over::Image(self.bytes, max)),
            (_, Some(max), _) if self.cpu > max => Some(Over::Cpu(self.cpu, max)),
            (_, _, Some(max)) if self.mem > max => Some(Over::Memory(self.mem, max)),
            _ => None,
        }
    }
    fn fits(&self, l: &Limits) -> bool {
        self.over(l).is_none()
    }
}

/// A budget broken: (usage, limit).
enum Over {
    Image(u64, u64),
    Cpu(f64, f64),
    Memory(u64, u64),
}

impl std::fmt::Display for Over {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Over::Image(b, max) => write!(f, "image {b} B > maxImageBytes {max} B"),
            Over::Cpu(c, max) => write!(f, "CPU share {c:.3} > cpuBudget {max:.3}"),
            Over::Memory(m, max) => write!(f, "memory {m} B > memoryBytes {max} B"),
        }
    }
}

/// Every subset of the candidates: the best connected one within budget,
/// the smaller on ties.
fn enumerate(rg: &RpcGraph, local: &Local, l: &Limits) -> Vec<bool> {
    let n = local.len() - 1;
    let mut best: Option<(f64, usize, Vec<bool>)> = None;
    for mask in 0u32..(1 << n) {
        let mut member = vec![true; local.len()];
        for (i, m) in member.iter_mut().enumerate().skip(1) {
            *m = mask >> (i - 1) & 1 == 1;
        }
        if !local.connected(&member) || !Usage::of(rg, local, &member).fits(l) {
            continue;
        }
        let r = local.value(&member);
        let size = mask.count_ones() as usize;
        let better = match &best {
            None => true,
            Some((b, s, _)) => r > b + 1e-9 || ((r - b).abs() <= 1e-9 && size < *s),
        };
        if better {
            best = Some((r, size, member));
        }
    }
    best.map(|b| b.2).unwrap_or_else(|| {
        let mut m = vec![false; local.len()];
        m[0] = true;
        m
    })
}

/// A candidate's gain in the greedy queue, largest first; ties go to the
/// lower local index (deterministic).
#[derive(PartialEq)]
struct Gain(f64, usize, u32);

impl Eq for Gain {}
impl PartialOrd for Gain {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Gain {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then_with(|| o.1.cmp(&self.1))
    }
}

/// Lazy greedy: keep every reachable candidate's last known gain in a
/// queue; take the top, re-evaluate it, and add it if it still beats the
/// next one (else requeue it with its new gain). Adding a member changes
/// the gains of its neighbours most, so those are re-evaluated at once.
fn greedy(rg: &RpcGraph, local: &Local, l: &Limits, per_budget: bool) -> Vec<bool> {
    let n = local.len();
    // A member's share of the tightest budget it uses (1 without budgets).
    let weight = |c: usize| -> f64 {
        let node = &rg.g[local.nodes[c]];
        let shares = [
            l.max_image_bytes
                .map(|m| node.image_bytes as f64 / m.max(1) as f64),
            l.cpu_budget.map(|m| node.cpu / m.max(1e-12)),
            l.memory_bytes
                .map(|m| node.memory_bytes as f64 / m.max(1) as f64),
        ];
        let w = shares.iter().flatten().fold(0.0f64, |a, &b| a.max(b));
        if per_budget && w > 0.0 {
            w
        } else {
            1.0
        }
    };
    let mut member = vec![false; n];
    member[0] = true;
    let mut value = local.value(&member);
    let mut usage = Usage::of(rg, local, &member);
    let mut version = vec![0u32; n];
    let mut heap = std::collections::BinaryHeap::new();
    // What adding `c` gains, looking one hot call further: a callee that
    // removes little itself may open the way to a hot callee of its own.
    let gain_of = |member: &mut Vec<bool>, usage: Usage, value: f64, c: usize| {
        member[c] = true;
        let mut best = (local.value(member) - value) / weight(c);
        let with_c = usage.with(rg, local, c);
        for &ei in &local.outs[c] {
            let d = local.edges[ei].to;
            if !local.edges[ei].hot || member[d] || !with_c.with(rg, local, d).fits(l) {
                continue;
            }
            member[d] = true;
            best = best.max((local.value(member) - value) / (weight(c) + weight(d)));
            member[d] = false;
        }
        member[c] = false;
        best
    };
    let push_neighbours = |member: &mut Vec<bool>,
                           usage: Usage,
                           value: f64,
                           version: &mut Vec<u32>,
                           heap: &mut std::collections::BinaryHeap<Gain>,
                           u: usize| {
        let mut near: Vec<usize> = local.outs[u]
            .iter()
            .filter(|&&ei| local.edges[ei].hot)
            .map(|&ei| local.edges[ei].to)
            .chain(local.ins[u].iter().map(|&ei| local.edges[ei].from))
            .filter(|&v| !member[v] && reachable(local, member, v))
            .collect();
        near.sort_unstable();
        near.dedup();
        for v in near {
            version[v] += 1;
            heap.push(Gain(gain_of(member, usage, value, v), v, version[v]));
        }
    };
    push_neighbours(&mut member, usage, value, &mut version, &mut heap, 0);
    while let Some(Gain(_, c, ver)) = heap.pop() {
        if ver != version[c] || member[c] {
            continue;
        }
        let after = usage.with(rg, local, c);
        if !after.fits(l) {
            continue; // budgets only fill up: it never fits again
        }
        let g = gain_of(&mut member, usage, value, c);
        if let Some(next) = heap.peek() {
            if g + 1e-9 < next.0 {
                version[c] += 1;
                heap.push(Gain(g, c, version[c]));
                continue;
            }
        }
        if g <= 1e-9 {
            break;
        }
        member[c] = true;
        value = local.value(&member);
        usage = after;
        push_neighbours(&mut member, usage, value, &mut version, &mut heap, c);
    }
    member
}

/// A hot edge from a member reaches `v`.
fn reachable(local: &Local, member: &[bool], v: usize) -> bool {
    local.ins[v]
        .iter()
        .any(|&ei| local.edges[ei].hot && member[local.edges[ei].from])
}

/// Candidates up to which local search also tries swapping a member for a
/// non-member (quadratic in the candidates).
const SWAP_LIMIT: usize = 64;

/// Drop or add single members, and for small groups swap one for another,
/// while that removes more RPCs (within budget, connected); a few rounds at
/// most.
fn local_search(rg: &RpcGraph, local: &Local, l: &Limits, mut member: Vec<bool>) -> Vec<bool> {
    let mut value = local.value(&member);
    let n = local.len();
    let try_flip = |member: &mut Vec<bool>, value: &mut f64, flips: &[usize]| -> bool {
        for &i in flips {
            member[i] = !member[i];
        }
        let ok = local.connected(member) && Usage::of(rg, local, member).fits(l);
        let v = if ok {
            local.value(member)
        } else {
            f64::NEG_INFINITY
        };
        if v > *value + 1e-9 {
            *value = v;
            return true;
        }
        for &i in flips {
            member[i] = !member[i];
        }
        false
    };
    for _ in 0..3 {
        let mut improved = false;
        for i in 1..n {
            improved |= try_flip(&mut member, &mut value, &[i]);
        }
        if n <= SWAP_LIMIT + 1 {
            for i in 1..n {
                for j in 1..n {
                    if member[i] && !member[j] {
                        improved |= try_flip(&mut member, &mut value, &[i, j]);
                    }
                }
            }
        }
        if !improved {
            break;
        }
    }
    member
}
