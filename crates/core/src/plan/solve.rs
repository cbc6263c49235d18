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
//! plan is the best group per root.
//!
//! Search: exact (every candidate subset) when a root has at most
//! [`EXACT_LIMIT`] candidates. Otherwise a greedy search whose work is
//! bounded per group, whatever the shape:
//!
//! - an incremental lazy greedy ([`Grow`]; run twice under budgets: by
//!   gain, and by gain per unit of the tightest budget). The members other
//!   than the root stay free of cycles (a candidate that would close one
//!   is left out for good), so every call between them removes RPCs, and
//!   they are kept in a topological order as they join (a new member whose
//!   last caller comes after its first callee moves the members on one
//!   side of it, searched from both sides at once, the smaller side
//!   first). A candidate's gain is read off its edges: the calls members
//!   make into it (weighted by their shares) plus its own share times its
//!   calls to members, each weighted by the callee's downstream multiplier;
//!   with one call of lookahead (a callee that removes little may open the
//!   way to a hot callee of its own), the hot callee's gain as of its own
//!   last scoring. A new member updates its member callees' shares; every
//!   share and multiplier is recomputed whenever the group has doubled
//!   (pushing every change downstream at once made no measurable
//!   difference to the groups found, at several times the work);
//! - on groups of at most [`FULL_LIMIT`] candidates, the same greedy with
//!   every gain re-evaluated over the whole group, then local search over
//!   all the results (drop or add one member, and with at most
//!   [`SWAP_LIMIT`] candidates swap one for another), each move evaluated
//!   over the whole group, while that helps. The best result wins.
//!
//! Every step counts the nodes and edges it visits against a limit per
//! group of [`WORK_BASE`] plus [`WORK_PER_ITEM`] per candidate and edge,
//! half of it kept for the incremental greedy; a search that reaches it
//! stops with its best group so far, which is always connected and within
//! budget (`Solved::stopped` says so). Beyond the search, a group costs a
//! few passes over its candidates and edges (gathering them, evaluating
//! the result, the verdicts and the reasons). The outcome depends only on
//! the input, never on time or threads.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use petgraph::graph::NodeIndex;

use super::graph::RpcGraph;
use super::group::{Adjacency, Eval, Local};

/// Candidates up to which a root's group is found by enumeration.
pub const EXACT_LIMIT: usize = 14;

/// Candidates up to which the greedy that re-evaluates whole groups runs
/// beside the incremental one.
pub const FULL_LIMIT: usize = 64;

/// Candidates up to which local search also tries swapping a member for a
/// non-member (quadratic in the candidates).
pub const SWAP_LIMIT: usize = 64;

/// Node and edge visits the search may spend on one group: `WORK_BASE`
/// plus `WORK_PER_ITEM` per candidate and edge among them (a few
/// milliseconds). The incremental greedy needs a small multiple of the
/// group's size (it never reached its half on the planning benchmark's
/// random deployments); local search on groups of 50 to 64 candidates can
/// use it up, and then keeps the best group it has.
pub const WORK_BASE: u64 = 500_000;
pub const WORK_PER_ITEM: u64 = 64;

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
    /// The profile cannot show the edge from `caller` (it has `evidence`
    /// of it, which does not see it): not fused on that profile alone.
    NoEvidence {
        caller: NodeIndex,
        evidence: crate::profile::aggregate::Evidence,
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
    /// Each member's [`marginals`] (the root aside).
    pub marginal: BTreeMap<NodeIndex, f64>,
    /// The search reached its work limit somewhere (and kept its best
    /// group so far).
    pub stopped: bool,
    pub exact: bool,
    pub verdicts: BTreeMap<NodeIndex, Verdict>,
}

/// How a group is searched; the default is what `plan` does.
#[derive(Debug, Clone)]
pub struct Search {
    /// Search even where enumeration would run (`exact` is then false).
    pub heuristic: bool,
    /// Work the search may spend on one group beyond its size (see
    /// [`WORK_BASE`]), and per candidate and edge.
    pub work: u64,
    pub work_per_item: u64,
    /// Also run the greedy that re-evaluates whole groups and local search
    /// (where they fit); without them, only the incremental greedy runs,
    /// as it does alone on large groups.
    pub refine: bool,
}

impl Default for Search {
    fn default() -> Self {
        Search {
            heuristic: false,
            work: WORK_BASE,
            work_per_item: WORK_PER_ITEM,
            refine: true,
        }
    }
}

/// Removed RPCs of group `members` rooted at `root`.
pub fn removed_calls(rg: &RpcGraph, root: NodeIndex, members: &BTreeSet<NodeIndex>) -> f64 {
    let cands: Vec<NodeIndex> = members.iter().copied().collect();
    let local = Local::new(rg, root, &cands, 0.0);
    local.value(&vec![true; local.len()])
}

/// For each member of group `members` other than `root`, the RPCs the
/// group removes that it would not remove without that member. After one
/// pass over the group, a member on no cycle of it (every member of the
/// incremental greedy's groups) costs a look at its edges: without it the
/// group loses the calls into it, and its share times its downstream
/// multiplier (exact: shares are linear in the calls into a function, the
/// cap of 1 never cutting a sum, as a function's executions count every
/// call into it; where re-entrant members make them a fixed point, the
/// multipliers are one too). Members on a cycle of the group, or calling
/// themselves in-process, are re-evaluated with the group (O(group)
/// each).
pub fn marginals(
    rg: &RpcGraph,
    root: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> BTreeMap<NodeIndex, f64> {
    let cands: Vec<NodeIndex> = members.iter().copied().collect();
    let local = Local::new(rg, root, &cands, 0.0);
    marginals_on(&local, &vec![true; local.len()])
}

/// [`marginals`] of the members `member` of `local`.
fn marginals_on(local: &Local, member: &[bool]) -> BTreeMap<NodeIndex, f64> {
    let mut ev = Eval::default();
    let total = ev.value(local, member);
    marginals_of(local, member, &mut ev, total)
}

/// [`marginals_on`] with `ev` holding the evaluation of `member` (worth
/// `total`).
fn marginals_of(
    local: &Local,
    member: &[bool],
    ev: &mut Eval,
    total: f64,
) -> BTreeMap<NodeIndex, f64> {
    let n = local.len();
    let mut member = member.to_vec();
    let comps = ev.starts.len() - 1;
    // Downstream multiplier: removed calls per unit of `f`, sinks first;
    // within a component whose calls count among themselves (re-entrant
    // members) a fixed point, as the shares are.
    let mut k = vec![0.0; n];
    for c in 0..comps {
        let rounds = if ev.cyclic(local, c) { 64 } else { 1 };
        for _ in 0..rounds {
            let mut changed = false;
            for &u in &ev.order[ev.starts[c]..ev.starts[c + 1]] {
                let v: f64 = local
                    .callees(u)
                    .iter()
                    .zip(local.calls_out(u))
                    .filter(|&(&w, _)| ev.counts_call(local, &member, u, w as usize))
                    .map(|(&w, &calls)| {
                        let w = w as usize;
                        let exec = local.executions(w);
                        let beyond = if w != 0 && exec > 0.0 {
                            k[w] / exec
                        } else {
                            0.0
                        };
                        calls * (1.0 + beyond)
                    })
                    .sum();
                changed |= (v - k[u]).abs() > 1e-12 * v.abs().max(1.0);
                k[u] = v;
            }
            if !changed {
                break;
            }
        }
    }
    // Members on a cycle of the group, or calling themselves in-process,
    // change which calls count when they leave: evaluated again.
    let mut out = Vec::with_capacity(ev.order.len());
    let mut again = Vec::new();
    for c in 0..comps {
        let (a, b) = (ev.starts[c], ev.starts[c + 1]);
        if b - a > 1 || ev.cyclic(local, c) {
            again.extend_from_slice(&ev.order[a..b]);
            continue;
        }
        let u = ev.order[a];
        let inflow: f64 = local
            .callers(u)
            .iter()
            .zip(local.calls_in(u))
            .filter(|&(&p, _)| ev.counts_call(local, &member, p as usize, u))
            .map(|(&p, &calls)| calls * ev.f[p as usize])
            .sum();
        out.push((local.nodes[u], inflow + ev.f[u] * k[u]));
    }
    again.sort_unstable();
    for u in again {
        member[u] = false;
        out.push((local.nodes[u], total - ev.value(local, &member)));
        member[u] = true;
    }
    // Each member once: sorted, the map is built in one pass.
    out.sort_unstable_by_key(|x| x.0);
    out.into_iter().collect()
}

/// Approximate size the fusion runtime adds to an image.
pub const RUNTIME_BYTES: u64 = 16 * 1024;

/// Callees that may join `root`'s group: reachable through hot edges
/// between functions of the root's domain. Everything else reached gets
/// its verdict (the first edge found to it decides a cold one).
fn candidates(
    rg: &RpcGraph,
    adj: &Adjacency,
    root: NodeIndex,
    l: &Limits,
    verdicts: &mut [Option<Verdict>],
) -> Vec<NodeIndex> {
    let g = &rg.g;
    let mut seen = vec![false; g.node_count()];
    seen[root.index()] = true;
    let mut stack = vec![root.index()];
    let mut out = Vec::new();
    while let Some(u) = stack.pop() {
        for k in adj.out(u) {
            let v = adj.to[k];
            if seen[v] {
                continue;
            }
            if adj.domain[v] != adj.domain[root.index()] {
                verdicts[v].get_or_insert(Verdict::OtherDomain);
                continue;
            }
            let share = adj.share[k];
            if share < l.cold {
                verdicts[v].get_or_insert(match adj.evidence[k] {
                    Some(evidence) if !evidence.sees() => Verdict::NoEvidence {
                        caller: NodeIndex::new(u),
                        evidence,
                    },
                    _ => Verdict::Cold { share },
                });
                continue;
            }
            verdicts[v] = None;
            seen[v] = true;
            out.push(NodeIndex::new(v));
            stack.push(v);
        }
    }
    out.sort();
    out
}

/// The best group rooted at `root`; `heuristic` forces the greedy search.
pub fn solve(rg: &RpcGraph, root: NodeIndex, l: &Limits, heuristic: bool) -> Solved {
    let search = Search {
        heuristic,
        ..Search::default()
    };
    solve_with(rg, root, l, &search)
}

/// [`solve`] with the search spelled out.
pub fn solve_with(rg: &RpcGraph, root: NodeIndex, l: &Limits, search: &Search) -> Solved {
    Planner::new(rg).solve(root, l, search)
}

/// Solves the groups of one deployment graph (built once, shared by
/// every root, and by threads).
pub struct Planner<'a> {
    rg: &'a RpcGraph,
    adj: Adjacency,
}

impl<'a> Planner<'a> {
    pub fn new(rg: &'a RpcGraph) -> Planner<'a> {
        Planner {
            rg,
            adj: Adjacency::new(rg),
        }
    }

    /// The best group rooted at `root` (see [`solve`]).
    pub fn solve(&self, root: NodeIndex, l: &Limits, search: &Search) -> Solved {
        let rg = self.rg;
        let mut found = vec![None; rg.g.node_count()];
        let cands = candidates(rg, &self.adj, root, l, &mut found);
        let local = Local::with_adjacency(rg, &self.adj, root, &cands, l.cold);
        let exact = !search.heuristic && cands.len() <= EXACT_LIMIT;
        let (member, stopped) = if exact {
            (enumerate(rg, &local, l), false)
        } else {
            self::search(rg, &local, l, search)
        };
        let members: BTreeSet<NodeIndex> = (0..local.len())
            .filter(|&i| member[i])
            .map(|i| local.nodes[i])
            .collect();
        let mut ev = Eval::default();
        let removed_calls = ev.value(&local, &member);
        // Verdicts of candidates left out.
        let usage = Usage::of(rg, &local, &member);
        let only_reentry = reentry_only(&local, &member, &ev);
        for (i, &c) in local.nodes.iter().enumerate().skip(1) {
            found[c.index()] = Some(if member[i] {
                Verdict::Fused
            } else {
                match usage.with(rg, &local, i).over(l) {
                    Some(why) => Verdict::OverBudget(why.to_string()),
                    None if only_reentry[i] => Verdict::Reenters,
                    None => Verdict::NoGain,
                }
            });
        }
        let verdicts = found
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| Some((NodeIndex::new(i), v?)))
            .collect();
        Solved {
            removed_calls,
            marginal: marginals_of(&local, &member, &mut ev, removed_calls),
            members,
            exact,
            stopped,
            verdicts,
        }
    }

    /// [`exact_removed_calls`] on this graph.
    pub fn exact_removed_calls(&self, root: NodeIndex, l: &Limits) -> f64 {
        let rg = self.rg;
        let cands = candidates(rg, &self.adj, root, l, &mut vec![None; rg.g.node_count()]);
        let local = Local::with_adjacency(rg, &self.adj, root, &cands, l.cold);
        local.value(&enumerate(rg, &local, l))
    }
}

/// For each non-member `i`: were it added, every call into it from the
/// group (itself included) would stay an RPC (see [`Local::staying`]).
/// `ev` holds the components of `member`. A call from a member `p` into
/// `i` stays when `i` is not re-entrant and `p` is `i` itself or `i`
/// reaches `p` through members other than the root; reachability between
/// components is computed for up to 512 of them at a time (bit sets).
fn reentry_only(local: &Local, member: &[bool], ev: &Eval) -> Vec<bool> {
    let n = local.len();
    let mut only = vec![false; n];
    // (non-member, where the components of its callers that need a path
    // start in `needs`), and whether each has one.
    let mut asks: Vec<(usize, usize)> = Vec::new();
    let mut needs = Vec::new();
    let mut need = Vec::new();
    for i in (1..n).filter(|&i| !member[i]) {
        let mut into = local
            .callers(i)
            .iter()
            .map(|&p| p as usize)
            .filter(|&p| member[p] || p == i);
        if local.reentrant(i) {
            only[i] = into.next().is_none();
            continue;
        }
        need.clear();
        let mut from_root = false;
        for p in into {
            from_root |= p == 0;
            if p != i {
                need.push(ev.comp[p]);
            }
        }
        if from_root {
            continue;
        }
        if need.is_empty() {
            only[i] = true;
            continue;
        }
        // A callee reaches a caller only if its component completed
        // later (or is the caller's).
        let latest = local
            .callees(i)
            .iter()
            .map(|&s| s as usize)
            .filter(|&s| s != 0 && s != i && member[s])
            .map(|s| ev.comp[s])
            .max();
        if latest.is_some_and(|l| need.iter().all(|&c| c <= l)) {
            need.sort_unstable();
            need.dedup();
            asks.push((i, needs.len()));
            needs.extend_from_slice(&need);
        }
    }
    if asks.is_empty() {
        return only;
    }
    let comps = ev.starts.len() - 1;
    let mut targets = needs.clone();
    targets.sort_unstable();
    targets.dedup();
    const WORDS: usize = 8;
    let mut slot = vec![usize::MAX; comps];
    let mut met = vec![false; needs.len()];
    let ends: Vec<usize> = asks
        .iter()
        .skip(1)
        .map(|a| a.1)
        .chain([needs.len()])
        .collect();
    let mut bits = vec![0u64; comps * WORDS];
    // Words of a component's bits in use: a component reaches only
    // components completed before it (or itself), so the bits of targets
    // completed after it are 0, and so are its words whose first target
    // comes after it.
    let mut used = vec![0u8; comps];
    for chunk in targets.chunks(64 * WORDS) {
        slot.iter_mut().for_each(|s| *s = usize::MAX);
        for (k, &t) in chunk.iter().enumerate() {
            slot[t] = k;
        }
        bits.iter_mut().for_each(|b| *b = 0);
        used.iter_mut().for_each(|u| *u = 0);
        let mut words = 0;
        // A component completes after every component it reaches.
        for c in chunk[0]..comps {
            while words < WORDS && chunk.get(64 * words).is_some_and(|&t| t <= c) {
                words += 1;
            }
            used[c] = words as u8;
            if slot[c] != usize::MAX {
                bits[c * WORDS + slot[c] / 64] |= 1 << (slot[c] % 64);
            }
            for &u in &ev.order[ev.starts[c]..ev.starts[c + 1]] {
                for &w in local.callees(u) {
                    let w = w as usize;
                    if w == 0 || !member[w] || ev.comp[w] == c {
                        continue;
                    }
                    let d = ev.comp[w];
                    for k in 0..usize::from(used[d]) {
                        bits[c * WORDS + k] |= bits[d * WORDS + k];
                    }
                }
            }
        }
        for (&(i, start), &end) in asks.iter().zip(&ends) {
            for (t, m) in needs[start..end].iter().zip(&mut met[start..end]) {
                if *m || slot[*t] == usize::MAX {
                    continue;
                }
                let (word, bit) = (slot[*t] / 64, 1u64 << (slot[*t] % 64));
                *m = local.callees(i).iter().any(|&s| {
                    let s = s as usize;
                    s != 0 && s != i && member[s] && bits[ev.comp[s] * WORDS + word] & bit != 0
                });
            }
        }
    }
    for (&(i, start), &end) in asks.iter().zip(&ends) {
        only[i] = met[start..end].iter().all(|&m| m);
    }
    only
}

/// The exact optimum of `root`'s group by enumeration, whatever the
/// number of candidates (2^candidates evaluations, fewer than 32
/// candidates): the yardstick the planning benchmark and tests measure
/// the greedy search against.
pub fn exact_removed_calls(rg: &RpcGraph, root: NodeIndex, l: &Limits) -> f64 {
    Planner::new(rg).exact_removed_calls(root, l)
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
        self.plus(&Usage::own(rg, local, i))
    }
    /// What member `i` of `local` uses alone (no runtime).
    fn own(rg: &RpcGraph, local: &Local, i: usize) -> Usage {
        let n = &rg.g[local.nodes[i]];
        Usage {
            bytes: n.image_bytes,
            cpu: n.cpu,
            mem: n.memory_bytes,
        }
    }
    fn plus(self, o: &Usage) -> Usage {
        Usage {
            bytes: self.bytes + o.bytes,
            cpu: self.cpu + o.cpu,
            mem: self.mem + o.mem,
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
/// the smaller on ties (then the first in mask order).
fn enumerate(rg: &RpcGraph, local: &Local, l: &Limits) -> Vec<bool> {
    let n = local.len() - 1;
    assert!(n < 32, "enumeration of {n} candidates");
    let mut hot_out = vec![0u32; n + 1];
    for e in local.edges.iter().filter(|e| e.hot) {
        hot_out[e.from] |= 1 << e.to;
    }
    let mut ev = Eval::default();
    let mut member = vec![true; local.len()];
    let mut best: Option<(f64, usize, u32)> = None;
    for mask in 0u32..(1 << n) {
        let full = mask << 1 | 1;
        // Reached from the root through hot edges between members.
        let (mut reach, mut frontier) = (1u32, 1u32);
        while frontier != 0 {
            let mut next = 0;
            let mut f = frontier;
            while f != 0 {
                next |= hot_out[f.trailing_zeros() as usize];
                f &= f - 1;
            }
            frontier = next & full & !reach;
            reach |= frontier;
        }
        if reach != full {
            continue;
        }
        let mut usage = Usage {
            bytes: RUNTIME_BYTES,
            ..Usage::default()
        };
        for (i, m) in member.iter_mut().enumerate() {
            *m = full >> i & 1 == 1;
            if *m {
                usage = usage.with(rg, local, i);
            }
        }
        if !usage.fits(l) {
            continue;
        }
        let r = ev.value(local, &member);
        let size = mask.count_ones() as usize;
        let better = match &best {
            None => true,
            Some((b, s, _)) => r > b + 1e-9 || ((r - b).abs() <= 1e-9 && size < *s),
        };
        if better {
            best = Some((r, size, full));
        }
    }
    let full = best.map_or(1, |b| b.2);
    (0..local.len()).map(|i| full >> i & 1 == 1).collect()
}

/// Work left for one group's search, in node and edge visits.
struct Work(u64);

impl Work {
    /// Spend `n`; false once nothing is left.
    fn spend(&mut self, n: usize) -> bool {
        self.0 = self.0.saturating_sub(n as u64);
        self.0 > 0
    }
    fn left(&self) -> bool {
        self.0 > 0
    }
}

/// The heuristic search of one group (see the module documentation), and
/// whether some part of it reached its work limit.
fn search(rg: &RpcGraph, local: &Local, l: &Limits, s: &Search) -> (Vec<bool>, bool) {
    let limit = s.work + s.work_per_item * (local.len() + local.edges.len()) as u64;
    let mut work = Work(limit);
    let mut stopped = false;
    let mut ev = Eval::default();
    let n = local.len() - 1;
    let full = s.refine && n <= FULL_LIMIT;
    // Without budgets both orders are the same.
    let orders: &[bool] = if has_budget(l) {
        &[false, true]
    } else {
        &[false]
    };
    let mut starts = Vec::new();
    let mut grown = Vec::new();
    for &per_budget in orders {
        // Half the work for the incremental greedy, whatever else runs.
        let share = limit / orders.len() as u64 / 2;
        let mut left = Work(share);
        grown.push(Grow::new(rg, local, l, per_budget).run(&mut left));
        stopped |= !left.left();
        work.spend((share - left.0) as usize);
    }
    if full {
        for &per_budget in orders {
            match greedy(rg, local, l, per_budget, &mut ev, &mut work) {
                Some(m) => starts.push(m),
                None => stopped = true,
            }
        }
    }
    starts.extend(grown);
    if starts.len() == 1 && !full {
        return (starts.pop().expect("one result"), stopped);
    }
    let mut best: Option<(f64, Vec<bool>)> = None;
    for m in starts {
        let m = if full {
            let m = local_search(rg, local, l, m, &mut ev, &mut work);
            stopped |= !work.left();
            m
        } else {
            m
        };
        let v = ev.value(local, &m);
        if best.as_ref().map_or(true, |b| v > b.0 + 1e-9) {
            best = Some((v, m));
        }
    }
    (best.map(|b| b.1).expect("a search result"), stopped)
}

/// A candidate's gain in the greedy queue, largest first; ties go to the
/// lower local index (deterministic).
#[derive(PartialEq)]
struct Gain(f64, u32, u32);

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

fn has_budget(l: &Limits) -> bool {
    l.max_image_bytes.is_some() || l.cpu_budget.is_some() || l.memory_bytes.is_some()
}

/// A member's share of the tightest budget it uses (1 without budgets, or
/// when not weighing by budget).
fn budget_weight(rg: &RpcGraph, local: &Local, l: &Limits, per_budget: bool, c: usize) -> f64 {
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
}

/// Lazy greedy re-evaluating whole groups: keep every reachable
/// candidate's last known gain in a queue; take the top, re-evaluate it,
/// and add it if it still beats the next one (else requeue it with its new
/// gain). Adding a member changes the gains of its neighbours most, so
/// those are re-evaluated at once. `None` when the work runs out first.
fn greedy(
    rg: &RpcGraph,
    local: &Local,
    l: &Limits,
    per_budget: bool,
    ev: &mut Eval,
    work: &mut Work,
) -> Option<Vec<bool>> {
    let n = local.len();
    let cost = local.len() + local.edges.len();
    let weight = |c: usize| budget_weight(rg, local, l, per_budget, c);
    let mut member = vec![false; n];
    member[0] = true;
    let mut value = ev.value(local, &member);
    let mut usage = Usage::of(rg, local, &member);
    let mut version = vec![0u32; n];
    let mut heap = BinaryHeap::new();
    // What adding `c` gains, looking one hot call further: a callee that
    // removes little itself may open the way to a hot callee of its own.
    let gain_of = |ev: &mut Eval, member: &mut Vec<bool>, usage: Usage, value: f64, c: usize| {
        member[c] = true;
        let mut best = (ev.value(local, member) - value) / weight(c);
        let mut spent = cost;
        let with_c = usage.with(rg, local, c);
        for &ei in local.outs(c) {
            let d = local.edges[ei].to;
            if !local.edges[ei].hot || member[d] || !with_c.with(rg, local, d).fits(l) {
                continue;
            }
            member[d] = true;
            best = best.max((ev.value(local, member) - value) / (weight(c) + weight(d)));
            spent += cost;
            member[d] = false;
        }
        member[c] = false;
        (best, spent)
    };
    let near = |member: &[bool], u: usize| {
        let mut near: Vec<usize> = local
            .outs(u)
            .iter()
            .filter(|&&ei| local.edges[ei].hot)
            .map(|&ei| local.edges[ei].to)
            .chain(local.ins(u).iter().map(|&ei| local.edges[ei].from))
            .filter(|&v| !member[v] && reachable(local, member, v))
            .collect();
        near.sort_unstable();
        near.dedup();
        near
    };
    let mut next = near(&member, 0);
    loop {
        for v in next.drain(..) {
            let (g, spent) = gain_of(ev, &mut member, usage, value, v);
            if !work.spend(spent) {
                return None;
            }
            version[v] += 1;
            heap.push(Gain(g, v as u32, version[v]));
        }
        let Some(Gain(_, c, ver)) = heap.pop() else {
            break;
        };
        let c = c as usize;
        if ver != version[c] || member[c] {
            continue;
        }
        let after = usage.with(rg, local, c);
        if !after.fits(l) {
            continue; // budgets only fill up: it never fits again
        }
        let (g, spent) = gain_of(ev, &mut member, usage, value, c);
        if !work.spend(spent) {
            return None;
        }
        if let Some(top) = heap.peek() {
            if g + 1e-9 < top.0 {
                version[c] += 1;
                heap.push(Gain(g, c as u32, version[c]));
                continue;
            }
        }
        if g <= 1e-9 {
            break;
        }
        member[c] = true;
        value = ev.value(local, &member);
        usage = after;
        next = near(&member, c);
    }
    Some(member)
}

/// A hot edge from a member reaches `v`.
fn reachable(local: &Local, member: &[bool], v: usize) -> bool {
    local
        .ins(v)
        .iter()
        .any(|&ei| local.edges[ei].hot && member[local.edges[ei].from])
}

/// Drop or add single members, and for small groups swap one for another,
/// while that removes more RPCs (within budget, connected); a few rounds at
/// most, and no more than the work left.
fn local_search(
    rg: &RpcGraph,
    local: &Local,
    l: &Limits,
    mut member: Vec<bool>,
    ev: &mut Eval,
    work: &mut Work,
) -> Vec<bool> {
    let mut value = ev.value(local, &member);
    let n = local.len();
    let cost = 2 * (local.len() + local.edges.len());
    let mut try_flip = |member: &mut Vec<bool>, value: &mut f64, flips: &[usize]| -> bool {
        for &i in flips {
            member[i] = !member[i];
        }
        let ok = local.connected(member) && Usage::of(rg, local, member).fits(l);
        let v = if ok {
            ev.value(local, member)
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
            if !work.spend(cost) {
                return member;
            }
            improved |= try_flip(&mut member, &mut value, &[i]);
        }
        if n <= SWAP_LIMIT + 1 {
            for i in 1..n {
                for j in 1..n {
                    if member[i] && !member[j] {
                        if !work.spend(cost) {
                            return member;
                        }
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

/// Labels of [`Order`]: spaced `LABEL_STEP` apart from `LABEL_BASE` when
/// renumbered; what is inserted between two neighbours shares the gap
/// between their labels evenly.
const LABEL_BASE: u64 = 1 << 61;
const LABEL_STEP: u64 = 1 << 32;
const LABEL_END: u64 = 1 << 62;

/// The label of a function not in [`Order`]: the root, non-members.
const NONE: u64 = u64::MAX;

/// First and last slot of an [`Order`] (no member).
const HEAD: usize = 0;
const TAIL: usize = 1;

/// Members in a topological order: a doubly linked list of slots whose
/// labels increase along it, a member in each. A new member, and the
/// members that move with it, are linked in after a slot with labels
/// spread over the gap to the next one (all labels are spread out again
/// when the gap is too small).
struct Order {
    label: Vec<u64>,
    next: Vec<usize>,
    prev: Vec<usize>,
    node: Vec<usize>,
    len: usize,
}

impl Order {
    fn new() -> Order {
        Order {
            label: vec![0, LABEL_END],
            next: vec![TAIL, TAIL],
            prev: vec![HEAD, HEAD],
            node: vec![usize::MAX; 2],
            len: 0,
        }
    }

    /// Members, first to last.
    fn members(&self) -> impl DoubleEndedIterator<Item = usize> + '_ {
        let mut list = Vec::with_capacity(self.len);
        let mut s = self.next[HEAD];
        while s != TAIL {
            list.push(self.node[s]);
            s = self.next[s];
        }
        list.into_iter()
    }

    /// Take the slots of members `moved` out of the list.
    fn unlink(&mut self, moved: &[usize], slots: &[usize]) {
        for &m in moved {
            let t = slots[m];
            let (p, n) = (self.prev[t], self.next[t]);
            self.next[p] = n;
            self.prev[n] = p;
        }
    }

    /// Right after slot `a`: the members `before` (unlinked), a new slot
    /// for member `u`, and the members `after` (unlinked), in that order;
    /// `slots` and `labels` are each member's, kept current.
    #[allow(clippy::too_many_arguments)]
    fn insert_after(
        &mut self,
        a: usize,
        before: &[usize],
        u: usize,
        after: &[usize],
        slots: &mut [usize],
        labels: &mut [u64],
        work: &mut Work,
    ) {
        let s = self.label.len();
        self.label.push(0);
        self.next.push(TAIL);
        self.prev.push(HEAD);
        self.node.push(u);
        self.len += 1;
        slots[u] = s;
        let k = (before.len() + after.len()) as u64 + 1;
        if (self.label[self.next[a]] - self.label[a]) / (k + 1) == 0 {
            self.renumber(labels, work);
        }
        let (lo, b) = (self.label[a], self.next[a]);
        let step = if b == TAIL {
            LABEL_STEP.min((LABEL_END - lo) / (k + 1))
        } else {
            (self.label[b] - lo) / (k + 1)
        };
        let mut at = a;
        let block = before.iter().chain(std::iter::once(&u)).chain(after);
        for (i, &m) in block.enumerate() {
            let t = slots[m];
            self.label[t] = lo + step * (i as u64 + 1);
            labels[m] = self.label[t];
            self.prev[t] = at;
            self.next[t] = b;
            self.next[at] = t;
            self.prev[b] = t;
            at = t;
        }
    }

    /// Spread the labels out again (`LABEL_STEP` apart).
    fn renumber(&mut self, labels: &mut [u64], work: &mut Work) {
        work.spend(self.len);
        assert!(
            (self.len as u64) < (LABEL_END - LABEL_BASE) / LABEL_STEP,
            "too many members to label"
        );
        let mut s = self.next[HEAD];
        let mut l = LABEL_BASE;
        while s != TAIL {
            self.label[s] = l;
            labels[self.node[s]] = l;
            l += LABEL_STEP;
            s = self.next[s];
        }
    }
}

/// The incremental greedy: members other than the root stay free of
/// cycles (a candidate that would close one is left out for good, as
/// members only join), so every call between members other than into the
/// root removes RPCs and a member's share `f` is the sum over its callers.
/// The members are kept in a topological [`Order`] as they join. A
/// candidate's gain is the calls members make into it plus its share
/// times its calls to members, each weighted by one plus the callee's
/// downstream multiplier `kx`. A new member updates its member callees'
/// shares; all shares and multipliers are recomputed when the group has
/// doubled (see the module documentation).
struct Grow<'a> {
    local: &'a Local,
    l: &'a Limits,
    /// The root has a budget.
    budgets: bool,
    weight: Vec<f64>,
    member: Vec<bool>,
    /// Members other than the root in topological order, each member's
    /// slot in it and label.
    order: Order,
    slot: Vec<usize>,
    label: Vec<u64>,
    f: Vec<f64>,
    /// Downstream multiplier of each member per execution of it (0 for
    /// the root): the calls removed beyond it per call into it.
    kx: Vec<f64>,
    /// What a call into each function removes per unit of its caller's
    /// share: `1 + kx` for members (the root only when re-entrant), 0
    /// for the rest.
    mult: Vec<f64>,
    /// Hot calls into each function from members: it is reachable when
    /// some.
    hot_in: Vec<u32>,
    /// What each candidate uses of the root's budgets.
    own: Vec<Usage>,
    /// Each candidate's in-flow and out-flow when last scored (NaN before).
    fin: Vec<f64>,
    out: Vec<f64>,
    blocked: Vec<bool>,
    usage: Usage,
    refresh_at: usize,
    mark: Vec<u32>,
    stamp: u32,
    fwd: Frontier,
    bwd: Frontier,
}

/// A candidate's member caller labelled last and member callee labelled
/// first ([`Grow::bounds`]).
type Bounds = (Option<usize>, Option<usize>);

/// Which way [`Grow::closes_cycle`] searches, and the bound of the labels
/// it goes through.
#[derive(Clone, Copy)]
enum Side {
    /// From the callees, forward, through labels up to `lb`.
    Ahead { lb: u64 },
    /// From the callers, backward, through labels down to `ub`.
    Back { ub: u64 },
}

/// The members one side of [`Grow::closes_cycle`] reached, in order: at
/// most every function once, appended without a branch (the slot past
/// the end is written whether or not it is kept).
struct Frontier {
    buf: Vec<usize>,
    len: usize,
}

impl Frontier {
    fn new(n: usize) -> Frontier {
        Frontier {
            buf: vec![0; n + 1],
            len: 0,
        }
    }
    fn clear(&mut self) {
        self.len = 0;
    }
    #[inline]
    fn push_if(&mut self, u: usize, keep: bool) {
        self.buf[self.len] = u;
        self.len += usize::from(keep);
    }
    fn items(&self) -> &[usize] {
        &self.buf[..self.len]
    }
}

impl<'a> Grow<'a> {
    fn new(rg: &'a RpcGraph, local: &'a Local, l: &'a Limits, per_budget: bool) -> Grow<'a> {
        let n = local.len();
        let mut member = vec![false; n];
        member[0] = true;
        let mut f = vec![0.0; n];
        f[0] = 1.0;
        let mut mult = vec![0.0; n];
        if local.reentrant(0) {
            mult[0] = 1.0;
        }
        let mut hot_in = vec![0; n];
        for (&w, &hot) in local.callees(0).iter().zip(local.hot_out(0)) {
            hot_in[w as usize] += u32::from(hot);
        }
        Grow {
            local,
            l,
            budgets: has_budget(l),
            weight: (0..n)
                .map(|c| budget_weight(rg, local, l, per_budget, c))
                .collect(),
            member,
            order: Order::new(),
            slot: vec![usize::MAX; n],
            label: vec![NONE; n],
            f,
            kx: vec![0.0; n],
            mult,
            hot_in,
            own: (0..n).map(|c| Usage::own(rg, local, c)).collect(),
            fin: vec![f64::NAN; n],
            out: vec![f64::NAN; n],
            blocked: vec![false; n],
            usage: Usage {
                bytes: RUNTIME_BYTES,
                ..Usage::default()
            }
            .with(rg, local, 0),
            refresh_at: 8,
            mark: vec![0; n],
            stamp: 0,
            fwd: Frontier::new(n),
            bwd: Frontier::new(n),
        }
    }

    /// Calls members make into `c` (weighted by their shares; a
    /// non-member's share is 0).
    fn inflow(&self, c: usize) -> f64 {
        let local = self.local;
        local
            .callers(c)
            .iter()
            .zip(local.calls_in(c))
            .filter(|(&p, _)| p as usize != c)
            .map(|(&p, &n)| n * self.f[p as usize])
            .sum()
    }

    fn share_of(&self, c: usize, inflow: f64) -> f64 {
        let exec = self.local.executions(c);
        if exec > 0.0 {
            (inflow / exec).min(1.0)
        } else {
            0.0
        }
    }

    /// Removed calls per unit of `c`'s share: its calls to members (other
    /// than the root, unless re-entrant), each with the callee's
    /// downstream multiplier per execution `kx`, and a re-entrant
    /// self-call.
    fn outflow(&self, c: usize) -> f64 {
        let local = self.local;
        let own = if local.reentrant(c) { 1.0 } else { 0.0 };
        local
            .callees(c)
            .iter()
            .zip(local.calls_out(c))
            .map(|(&w, &n)| {
                let w = w as usize;
                n * if w == c { own } else { self.mult[w] }
            })
            .sum()
    }

    /// The member caller of `c` labelled last and the member callee
    /// labelled first (the root and `c` aside: their label is `NONE`).
    fn bounds(&self, c: usize) -> Bounds {
        let (mut last, mut lb) = (None, 0);
        for &p in self.local.callers(c) {
            let lp = self.label[p as usize];
            if lp != NONE && lp >= lb {
                (last, lb) = (Some(p as usize), lp);
            }
        }
        let (mut first, mut ub) = (None, NONE);
        for &q in self.local.callees(c) {
            let lq = self.label[q as usize];
            if lq < ub {
                (first, ub) = (Some(q as usize), lq);
            }
        }
        (last, first)
    }

    /// Whether adding `c` would close a cycle among members other than the
    /// root: one of its member callees reaches one of its member callers.
    /// Searches forward from the callees (through members labelled up to
    /// its last caller) and backward from the callers (down to its first
    /// callee) in turn, and stops when the two meet (a cycle) or either
    /// side has nothing left: that side's members are then in `fwd` or
    /// `bwd` (the other empty), for [`Grow::place`]. The work is about
    /// twice the smaller side. `bounds` are `c`'s [`Grow::bounds`].
    fn closes_cycle(&mut self, c: usize, bounds: Bounds, work: &mut Work) -> bool {
        let local = self.local;
        self.fwd.clear();
        self.bwd.clear();
        let (Some(last), Some(first)) = bounds else {
            return false;
        };
        let (lb, ub) = (self.label[last], self.label[first]);
        if lb < ub {
            return false;
        }
        self.stamp += 2;
        let (back, ahead) = (self.stamp - 1, self.stamp);
        work.spend(local.ins(c).len() + local.outs(c).len());
        // Seeds: callers reached backward, callees forward.
        if self.reach(local.callers(c), Side::Back { ub }, back, ahead)
            || self.reach(local.callees(c), Side::Ahead { lb }, ahead, back)
        {
            return true;
        }
        // `fwd[..f]` and `bwd[..b]` are expanded.
        let (mut f, mut b) = (0, 0);
        loop {
            if f == self.fwd.len {
                self.bwd.clear();
                return false;
            }
            let u = self.fwd.buf[f];
            f += 1;
            work.spend(local.callees(u).len());
            if self.reach(local.callees(u), Side::Ahead { lb }, ahead, back) {
                return true;
            }
            if b == self.bwd.len {
                self.fwd.clear();
                return false;
            }
            let u = self.bwd.buf[b];
            b += 1;
            work.spend(local.callers(u).len());
            if self.reach(local.callers(u), Side::Back { ub }, back, ahead) {
                return true;
            }
        }
    }

    /// One step of [`Grow::closes_cycle`]: mark the members of `next` in
    /// the side's label range (`mine`) and append them to its list;
    /// true when one is marked by the other side (`theirs`): the two
    /// met. Without a branch per function but the meeting one.
    #[inline]
    fn reach(&mut self, next: &[u32], side: Side, mine: u32, theirs: u32) -> bool {
        let list = match side {
            Side::Ahead { .. } => &mut self.fwd,
            Side::Back { .. } => &mut self.bwd,
        };
        for &w in next {
            let w = w as usize;
            let (l, m) = (self.label[w], self.mark[w]);
            let in_range = match side {
                Side::Ahead { lb } => l <= lb,
                Side::Back { ub } => (l != NONE) & (l >= ub),
            };
            let take = in_range & (m != mine);
            if take & (m == theirs) {
                return true;
            }
            self.mark[w] = if take { mine } else { m };
            list.push_if(w, take);
        }
        false
    }

    /// Give `c` (about to join, [`Grow::closes_cycle`] just false) a place
    /// after its member callers and before its member callees. When its
    /// last caller comes after its first callee, either the members its
    /// callees reach up to that caller (`fwd`) move, in their order, to
    /// right after it with `c` before them, or the members that reach its
    /// callers down to that callee (`bwd`) move to right before it with
    /// `c` after them: every other call into or out of the moved members
    /// keeps its direction.
    fn place(&mut self, c: usize, (last, first): Bounds, work: &mut Work) {
        let label = &self.label;
        let conflict = matches!((last, first), (Some(p), Some(q)) if label[p] >= label[q]);
        if !conflict {
            self.fwd.clear();
            self.bwd.clear();
        }
        let (nf, nb) = (self.fwd.len, self.bwd.len);
        self.fwd.buf[..nf].sort_unstable_by_key(|&u| label[u]);
        self.bwd.buf[..nb].sort_unstable_by_key(|&u| label[u]);
        work.spend(4 * (nf + nb));
        self.order.unlink(self.fwd.items(), &self.slot);
        self.order.unlink(self.bwd.items(), &self.slot);
        let a = match (last, first) {
            (Some(p), _) if nb == 0 => self.slot[p],
            (_, Some(q)) => self.order.prev[self.slot[q]],
            (Some(p), None) => self.slot[p],
            (None, None) => self.order.prev[TAIL],
        };
        self.order.insert_after(
            a,
            self.bwd.items(),
            c,
            self.fwd.items(),
            &mut self.slot,
            &mut self.label,
            work,
        );
    }

    /// Every member's share, first label first (exact again: a new member
    /// updates only its member callees'), and the downstream multipliers,
    /// last label first.
    fn refresh(&mut self, work: &mut Work) {
        let order: Vec<usize> = self.order.members().collect();
        work.spend(2 * order.len());
        for &u in &order {
            work.spend(self.local.ins(u).len());
            self.f[u] = self.share_of(u, self.inflow(u));
        }
        for &u in order.iter().rev() {
            work.spend(self.local.outs(u).len());
            let exec = self.local.executions(u);
            self.kx[u] = if exec > 0.0 {
                self.outflow(u) / exec
            } else {
                0.0
            };
            self.mult[u] = 1.0 + self.kx[u];
        }
    }

    /// What adding `c` gains per unit of budget, looking one hot call
    /// further: a callee that removes little itself may open the way to a
    /// hot callee of its own. The callee's gain is taken from its own last
    /// scoring (the calls members made into it then, and its calls to
    /// members), plus `c`'s calls into it: one look at `c`'s edges. Whether
    /// `c` closes a cycle is asked when it is taken.
    fn score(&mut self, c: usize, work: &mut Work) -> f64 {
        let local = self.local;
        work.spend(local.ins(c).len() + local.outs(c).len());
        let fin = self.inflow(c);
        let out = self.outflow(c);
        (self.fin[c], self.out[c]) = (fin, out);
        let fc = self.share_of(c, fin);
        let own = fin + fc * out;
        let wc = self.weight[c];
        let mut best = own / wc;
        let with_c = self.usage.plus(&self.own[c]);
        for (&d, (&hot, &calls)) in local
            .callees(c)
            .iter()
            .zip(local.hot_out(c).iter().zip(local.calls_out(c)))
        {
            let d = d as usize;
            if !hot
                || d == c
                || self.member[d]
                || self.blocked[d]
                || (self.budgets && !with_c.plus(&self.own[d]).fits(self.l))
            {
                continue;
            }
            if self.fin[d].is_nan() {
                work.spend(local.ins(d).len() + local.outs(d).len());
                (self.fin[d], self.out[d]) = (self.inflow(d), self.outflow(d));
            }
            let fin_d = self.fin[d] + calls * fc;
            let gd = fin_d + self.share_of(d, fin_d) * self.out[d];
            best = best.max((own + gd) / (wc + self.weight[d]));
        }
        best
    }

    /// Add `c`, push the shares downstream, and leave in `near` the
    /// non-members whose gain changed enough to score again.
    fn add(&mut self, c: usize, bounds: Bounds, work: &mut Work, near: &mut Vec<usize>) {
        let local = self.local;
        let fin = self.inflow(c);
        let fc = self.share_of(c, fin);
        self.place(c, bounds, work);
        self.member[c] = true;
        self.f[c] = fc;
        self.mult[c] = 1.0 + self.kx[c];
        for (&w, &hot) in local.callees(c).iter().zip(local.hot_out(c)) {
            self.hot_in[w as usize] += u32::from(hot);
        }
        self.usage = self.usage.plus(&self.own[c]);
        self.stamp += 1;
        let stamp = self.stamp;
        near.clear();
        // Its callers gain a member callee; its callees a member caller.
        for &v in local.callers(c).iter().chain(local.callees(c)) {
            let v = v as usize;
            if !self.member[v] && !self.blocked[v] && self.mark[v] != stamp {
                self.mark[v] = stamp;
                near.push(v);
            }
        }
        // Its member callees' shares grow; further downstream the shares
        // are brought up to date when the group has doubled (measured: as
        // good as pushing every change through, at a fraction of the work).
        work.spend(local.outs(c).len());
        for (&w, &calls) in local.callees(c).iter().zip(local.calls_out(c)) {
            let w = w as usize;
            let exec = local.executions(w);
            if w != 0 && w != c && self.member[w] && exec > 0.0 {
                self.f[w] = (self.f[w] + calls * fc / exec).min(1.0);
            }
        }
        if self.order.len >= self.refresh_at {
            self.refresh(work);
            self.refresh_at = 2 * self.order.len + 8;
        }
        near.retain(|&v| self.hot_in[v] > 0);
        near.sort_unstable();
    }

    /// Grow the group from the root until no candidate gains or the work
    /// runs out.
    fn run(mut self, work: &mut Work) -> Vec<bool> {
        let n = self.local.len();
        let mut version = vec![0u32; n];
        let mut heap = BinaryHeap::new();
        // Candidates whose latest entry is in the queue, and how many:
        // once none is, the queue holds stale entries only, and popping
        // them all would end the search.
        let mut queued = vec![false; n];
        let mut live = 0usize;
        let mut near: Vec<usize> = self
            .local
            .outs(0)
            .iter()
            .filter(|&&ei| self.local.edges[ei].hot)
            .map(|&ei| self.local.edges[ei].to)
            .filter(|&v| v != 0)
            .collect();
        near.sort_unstable();
        near.dedup();
        let mut swept = false;
        loop {
            for &v in &near {
                version[v] += 1;
                heap.push(Gain(self.score(v, work), v as u32, version[v]));
                live += usize::from(!queued[v]);
                queued[v] = true;
            }
            near.clear();
            if !work.left() || live == 0 {
                break;
            }
            let Some(Gain(_, c, ver)) = heap.pop() else {
                break;
            };
            let c = c as usize;
            if ver == version[c] {
                queued[c] = false;
                live -= 1;
            }
            if ver != version[c] || self.member[c] || self.blocked[c] {
                continue;
            }
            if !self.usage.plus(&self.own[c]).fits(self.l) {
                continue; // budgets only fill up: it never fits again
            }
            let g = self.score(c, work);
            if let Some(top) = heap.peek() {
                if g + 1e-9 < top.0 {
                    version[c] += 1;
                    heap.push(Gain(g, c as u32, version[c]));
                    live += 1;
                    queued[c] = true;
                    continue;
                }
            }
            if g <= 1e-9 {
                // Scores in the queue may be stale low (shares grow when
                // recomputed): score every candidate once more first.
                if swept {
                    break;
                }
                swept = true;
                near.extend(
                    (1..n).filter(|&v| !self.member[v] && !self.blocked[v] && self.hot_in[v] > 0),
                );
                work.spend(n);
                continue;
            }
            let bounds = self.bounds(c);
            if self.closes_cycle(c, bounds, work) {
                self.blocked[c] = true;
                continue;
            }
            self.add(c, bounds, work, &mut near);
            swept = false;
        }
        self.member
    }
}
