//! One root's candidate group as a small local graph (the root is node 0),
//! and the value of a member set on it: the RPCs the fused image removes.
//! Built once per root, so the search evaluates member sets without
//! touching the deployment graph or allocating maps.

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::graph::RpcGraph;

pub struct LocalEdge {
    pub from: usize,
    pub to: usize,
    pub calls: f64,
    /// At or above the cold threshold: can make its callee reachable.
    pub hot: bool,
}

pub struct Local {
    /// Deployment node of each local node; `nodes[0]` is the root.
    pub nodes: Vec<NodeIndex>,
    pub edges: Vec<LocalEdge>,
    /// Edge indices into and out of each local node.
    pub ins: Vec<Vec<usize>>,
    pub outs: Vec<Vec<usize>>,
    executions: Vec<f64>,
    reentrant: Vec<bool>,
}

impl Local {
    /// The root and `cands` (the root first), with every edge among them.
    pub fn new(rg: &RpcGraph, root: NodeIndex, cands: &[NodeIndex], cold: f64) -> Local {
        let mut nodes = vec![root];
        nodes.extend(cands.iter().copied().filter(|&c| c != root));
        let mut local = vec![usize::MAX; rg.g.node_count()];
        for (i, &n) in nodes.iter().enumerate() {
            local[n.index()] = i;
        }
        let mut edges = Vec::new();
        for (u, &n) in nodes.iter().enumerate() {
            let mut out: Vec<_> = rg.g.edges(n).collect();
            out.sort_by_key(|e| e.target());
            for e in out {
                let v = local[e.target().index()];
                if v == usize::MAX {
                    continue;
                }
                edges.push(LocalEdge {
                    from: u,
                    to: v,
                    calls: e.weight().calls,
                    hot: e.weight().share >= cold,
                });
            }
        }
        let executions = nodes.iter().map(|&n| rg.g[n].executions).collect();
        let reentrant = nodes.iter().map(|&n| rg.g[n].reentrant).collect();
        Local::assemble(nodes, edges, executions, reentrant)
    }

    /// The local graph of `nodes` (the root first) and `edges` between them.
    fn assemble(
        nodes: Vec<NodeIndex>,
        edges: Vec<LocalEdge>,
        executions: Vec<f64>,
        reentrant: Vec<bool>,
    ) -> Local {
        let mut ins = vec![Vec::new(); nodes.len()];
        let mut outs = vec![Vec::new(); nodes.len()];
        for (i, e) in edges.iter().enumerate() {
            ins[e.to].push(i);
            outs[e.from].push(i);
        }
        Local {
            executions,
            reentrant,
            nodes,
            edges,
            ins,
            outs,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Edges between members whose call can find the callee running, so
    /// that it stays an RPC: into the root (always running), a self-call,
    /// or an edge inside a cycle of members that avoids the root (the
    /// callee is then on some call stack of the image above the caller);
    /// unless the callee is declared re-entrant.
    pub fn staying(&self, member: &[bool]) -> Vec<bool> {
        let scc = self.components(member);
        self.edges
            .iter()
            .map(|e| {
                member[e.from]
                    && member[e.to]
                    && !self.reentrant[e.to]
                    && (e.to == 0 || e.from == e.to || scc[e.from] == scc[e.to])
            })
            .collect()
    }

    /// Strongly connected component of each member other than the root,
    /// in the subgraph of members without the root (Tarjan, iterative);
    /// `usize::MAX` for the rest.
    fn components(&self, member: &[bool]) -> Vec<usize> {
        let n = self.len();
        let mut index = vec![usize::MAX; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut comp = vec![usize::MAX; n];
        let mut stack = Vec::new();
        let mut next = 0;
        let mut ncomp = 0;
        let inside = |v: usize| v != 0 && member[v];
        for s in (1..n).filter(|&v| inside(v)) {
            if index[s] != usize::MAX {
                continue;
            }
            // (node, position in its out-edge list)
            let mut work = vec![(s, 0usize)];
            index[s] = next;
            low[s] = next;
            next += 1;
            stack.push(s);
            on_stack[s] = true;
            while let Some(&mut (v, ref mut pos)) = work.last_mut() {
                if let Some(&ei) = self.outs[v].get(*pos) {
                    *pos += 1;
                    let w = self.edges[ei].to;
                    if !inside(w) {
                        continue;
                    }
                    if index[w] == usize::MAX {
                        index[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        work.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                work.pop();
                if let Some(&(p, _)) = work.last() {
                    low[p] = low[p].min(low[v]);
                }
                if low[v] == index[v] {
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp[w] = ncomp;
                        if w == v {
                            break;
                        }
                    }
                    ncomp += 1;
                }
            }
        }
        comp
    }

    /// RPCs removed by fusing `member` (the root always in): every call on
    /// an edge between members that does not stay an RPC, counted for the
    /// share `f(u)` of its caller's executions that run inside the image,
    /// `f(u) = Σ calls(q→u)·f(q) / executions(u)` over in-image calls into
    /// `u`, `f(root) = 1` (a fixed point bounded by 1, so cycles are safe).
    pub fn value(&self, member: &[bool]) -> f64 {
        let stays = self.staying(member);
        let counts = |ei: usize| member[self.edges[ei].from] && !stays[ei];
        let mut f = vec![0.0; self.len()];
        f[0] = 1.0;
        for _ in 0..64 {
            let mut changed = false;
            for u in (1..self.len()).filter(|&u| member[u]) {
                let exec = self.executions[u];
                if exec <= 0.0 {
                    continue;
                }
                let calls_in: f64 = self.ins[u]
                    .iter()
                    .filter(|&&ei| counts(ei))
                    .map(|&ei| self.edges[ei].calls * f[self.edges[ei].from])
                    .sum();
                let v = (calls_in / exec).min(1.0);
                if (v - f[u]).abs() > 1e-12 {
                    f[u] = v;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        self.edges
            .iter()
            .enumerate()
            .filter(|&(ei, e)| counts(ei) && member[e.to])
            .map(|(_, e)| e.calls * f[e.from])
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    }

    /// Every member is reached from the root through hot edges between
    /// members.
    pub fn connected(&self, member: &[bool]) -> bool {
        let mut seen = vec![false; self.len()];
        seen[0] = true;
        let mut stack = vec![0];
        while let Some(u) = stack.pop() {
            for &ei in &self.outs[u] {
                let e = &self.edges[ei];
                if e.hot && member[e.to] && !seen[e.to] {
                    seen[e.to] = true;
                    stack.push(e.to);
                }
            }
        }
        (0..self.len()).all(|v| !member[v] || seen[v])
    }
}

/// Which calls of a fused image with `n` functions (0 the root) and these
/// `(caller, callee)` edges can find their callee running, by the rule
/// [`Local::staying`] applies (no function declared re-entrant): what
/// `merge` reports per edge, the same rule the planner weighs edges by.
pub fn reentering_edges(n: usize, edges: &[(usize, usize)]) -> Vec<bool> {
    let edges = edges
        .iter()
        .map(|&(from, to)| LocalEdge {
            from,
            to,
            calls: 0.0,
            hot: true,
        })
        .collect();
    let local = Local::assemble(
        (0..n).map(NodeIndex::new).collect(),
        edges,
        vec![0.0; n],
        vec![false; n],
    );
    local.staying(&vec![true; n])
}
