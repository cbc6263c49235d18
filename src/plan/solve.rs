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
//! root has at most [`EXACT_LIMIT`] candidates, a beam search otherwise.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use petgraph::Direction;

use super::graph::RpcGraph;

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

/// Edges inside `members` whose call can find the callee running, so that
/// it stays an RPC: into the root (always running), or into a member that
/// reaches the caller (itself included) inside the group without passing
/// through the root, i.e. lies on some call stack of the image below the
/// root and above the caller; unless the callee is declared re-entrant.
fn reentering(
    rg: &RpcGraph,
    root: NodeIndex,
    members: &BTreeSet<NodeIndex>,
) -> BTreeSet<(NodeIndex, NodeIndex)> {
    let g = &rg.g;
    let reaches = |from: NodeIndex, to: NodeIndex| {
        let mut seen = BTreeSet::from([from]);
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            if n == to {
                return true;
            }
            for e in g.edges(n) {
                let t = e.target();
                if t != root && members.contains(&t) && seen.insert(t) {
                    stack.push(t);
                }
            }
        }
        false
    };
    let mut out = BTreeSet::new();
    for &u in members {
        for e in g.edges(u) {
            let v = e.target();
            if members.contains(&v) && !g[v].reentrant && (v == root || reaches(v, u)) {
                out.insert((u, v));
            }
        }
    }
    out
}

/// Removed RPCs of group `members` rooted at `root`.
pub fn removed_calls(rg: &RpcGraph, root: NodeIndex, members: &BTreeSet<NodeIndex>) -> f64 {
    let g = &rg.g;
    let stays = reentering(rg, root, members);
    let inside = |u: NodeIndex, v: NodeIndex| members.contains(&v) && !stays.contains(&(u, v));
    let mut f: BTreeMap<NodeIndex, f64> = members.iter().map(|&m| (m, 0.0)).collect();
    f.insert(root, 1.0);
    for _ in 0..64 {
        let mut changed = false;
        for &u in members {
            if u == root {
                continue;
            }
            let exec = g[u].executions;
            if exec <= 0.0 {
                continue;
            }
            let calls_in: f64 = g
                .edges_directed(u, Direction::Incoming)
                .filter(|e| members.contains(&e.source()) && inside(e.source(), u))
                .map(|e| e.weight().calls * f[&e.source()])
                .sum();
            let v = (calls_in / exec).min(1.0);
            if (v - f[&u]).abs() > 1e-12 {
                f.insert(u, v);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    members
        .iter()
        .map(|&u| {
            g.edges(u)
                .filter(|e| inside(u, e.target()))
                .map(|e| e.weight().calls * f[&u])
                .sum::<f64>()
        })
        .sum::<f64>()
        + 0.0 // an empty sum is -0.0
}

/// The first budget `members` break, if any.
fn over_budget(rg: &RpcGraph, members: &BTreeSet<NodeIndex>, l: &Limits) -> Option<String> {
    let g = &rg.g;
    let bytes: u64 = members.iter().map(|&m| g[m].image_bytes).sum::<u64>() + RUNTIME_BYTES;
    if let Some(max) = l.max_image_bytes {
        if bytes > max {
            return Some(format!("image {bytes} B > maxImageBytes {max} B"));
        }
    }
    let cpu: f64 = members.iter().map(|&m| g[m].cpu).sum();
    if let Some(max) = l.cpu_budget {
        if cpu > max {
            return Some(format!("CPU share {cpu:.3} > cpuBudget {max:.3}"));
        }
    }
    let mem: u64 = members.iter().map(|&m| g[m].memory_bytes).sum();
    if let Some(max) = l.memory_bytes {
        if mem > max {
            return Some(format!("memory {mem} B > memoryBytes {max} B"));
        }
    }
    None
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

/// Every member is reached from the root through hot edges inside.
fn connected(rg: &RpcGraph, root: NodeIndex, members: &BTreeSet<NodeIndex>, l: &Limits) -> bool {
    let mut seen = BTreeSet::from([root]);
    let mut stack = vec![root];
    while let Some(u) = stack.pop() {
        for e in rg.g.edges(u) {
            let v = e.target();
            if members.contains(&v) && e.weight().share >= l.cold && seen.insert(v) {
                stack.push(v);
            }
        }
    }
    seen.len() == members.len()
}

/// The best group rooted at `root`; `heuristic` forces the beam search.
pub fn solve(rg: &RpcGraph, root: NodeIndex, l: &Limits, heuristic: bool) -> Solved {
    let mut verdicts = BTreeMap::new();
    let cands = candidates(rg, root, l, &mut verdicts);
    let exact = !heuristic && cands.len() <= EXACT_LIMIT;
    let base = BTreeSet::from([root]);
    let members = if exact {
        let mut best = (removed_calls(rg, root, &base), base.clone());
        for mask in 1u32..(1 << cands.len()) {
            let mut m = base.clone();
            m.extend(
                (0..cands.len())
                    .filter(|i| mask >> i & 1 == 1)
                    .map(|i| cands[i]),
            );
            if !connected(rg, root, &m, l) || over_budget(rg, &m, l).is_some() {
                continue;
            }
            let r = removed_calls(rg, root, &m);
            // Strictly better, or as good with fewer members.
            if r > best.0 + 1e-9 || ((r - best.0).abs() <= 1e-9 && m.len() < best.1.len()) {
                best = (r, m);
            }
        }
        best.1
    } else {
        beam(rg, root, &cands, l)
    };
    // Verdicts of candidates left out.
    for &c in &cands {
        if members.contains(&c) {
            verdicts.insert(c, Verdict::Fused);
            continue;
        }
        let mut with = members.clone();
        with.insert(c);
        let stays = reentering(rg, root, &with);
        let only_reentry =
            rg.g.edges_directed(c, Direction::Incoming)
                .filter(|e| with.contains(&e.source()))
                .all(|e| stays.contains(&(e.source(), c)));
        let v = match over_budget(rg, &with, l) {
            Some(why) => Verdict::OverBudget(why),
            None if only_reentry => Verdict::Reenters,
            None => Verdict::NoGain,
        };
        verdicts.insert(c, v);
    }
    Solved {
        removed_calls: removed_calls(rg, root, &members),
        members,
        exact,
        verdicts,
    }
}

/// Beam search over groups: grow every kept group by one reachable
/// callee, keep the `width` best of each size, remember the best seen. The
/// width shrinks as candidates grow (`BEAM_WORK / candidates`, at least
/// [`MIN_BEAM`]), so small groups are searched nearly exhaustively and large
/// ones stay fast.
fn beam(rg: &RpcGraph, root: NodeIndex, cands: &[NodeIndex], l: &Limits) -> BTreeSet<NodeIndex> {
    let width = (BEAM_WORK / cands.len().max(1)).max(MIN_BEAM);
    let start = BTreeSet::from([root]);
    let mut best = (removed_calls(rg, root, &start), start.clone());
    let mut layer = vec![start];
    let mut seen: BTreeSet<Vec<NodeIndex>> = BTreeSet::new();
    while !layer.is_empty() {
        let mut next: Vec<(f64, BTreeSet<NodeIndex>)> = Vec::new();
        for members in &layer {
            for &c in cands {
                if members.contains(&c) {
                    continue;
                }
                let reachable =
                    rg.g.edges_directed(c, Direction::Incoming)
                        .any(|e| members.contains(&e.source()) && e.weight().share >= l.cold);
                if !reachable {
                    continue;
                }
                let mut m = members.clone();
                m.insert(c);
                if !seen.insert(m.iter().copied().collect()) || over_budget(rg, &m, l).is_some() {
                    continue;
                }
                let r = removed_calls(rg, root, &m);
                if r > best.0 + 1e-9 {
                    best = (r, m.clone());
                }
                next.push((r, m));
            }
        }
        next.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        next.truncate(width);
        layer = next.into_iter().map(|(_, m)| m).collect();
    }
    best.1
}

/// Search effort of the beam: width × candidates.
const BEAM_WORK: usize = 4096;
/// Narrowest beam.
const MIN_BEAM: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::synthetic;

    /// The heuristic against the exact optimum on every entry of many
    /// random deployments small enough to enumerate.
    #[test]
    fn heuristic_matches_the_exact_optimum_on_small_graphs() {
        let mut roots = 0;
        for seed in 0..300 {
            let n = 3 + (seed % 10) as usize;
            let (rg, limits) = synthetic::deployment(n, seed);
            for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
                let l = &limits[root.index()];
                let exact = solve(&rg, root, l, false);
                let heur = solve(&rg, root, l, true);
                assert!(exact.exact);
                assert!(
                    (exact.removed_calls - heur.removed_calls).abs()
                        <= 1e-6 * exact.removed_calls.max(1.0),
                    "seed {seed} root {root:?}: exact {} heuristic {}",
                    exact.removed_calls,
                    heur.removed_calls
                );
                roots += 1;
            }
        }
        assert!(roots >= 300);
    }

    #[test]
    fn cycles_terminate_and_stay_bounded() {
        let (rg, limits) = synthetic::deployment(12, 7);
        let all: BTreeSet<NodeIndex> = rg.g.node_indices().collect();
        for root in rg.g.node_indices() {
            let r = removed_calls(&rg, root, &all);
            let total: f64 = rg.g.edge_weights().map(|e| e.calls).sum();
            assert!(r.is_finite() && r <= total + 1e-6);
            let _ = solve(&rg, root, &limits[root.index()], false);
        }
    }
}
