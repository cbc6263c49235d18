//! One root's candidate group as a small local graph (the root is node 0),
//! and the value of a member set on it: the RPCs the fused image removes.
//! Built once per root, so the search evaluates member sets without
//! touching the deployment graph or allocating maps.

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::graph::RpcGraph;

/// A deployment graph's edges as flat arrays: the out-edges of node `n`
/// are `out(n)`, sorted by callee (parallel edges in the graph's order).
/// Built once per plan, so each root's group is gathered without walking
/// the graph's edge lists or sorting.
pub struct Adjacency {
    start: Vec<usize>,
    pub to: Vec<usize>,
    pub calls: Vec<f64>,
    pub share: Vec<f64>,
    /// What the profile can show about each edge (see [`super::graph::Edge`]).
    pub evidence: Vec<Option<crate::profile::aggregate::Evidence>>,
    /// Each node's trust domain, numbered (equal numbers, equal domains).
    pub domain: Vec<u32>,
    /// Each node's executions and whether it is re-entrant.
    executions: Vec<f64>,
    reentrant: Vec<bool>,
}

impl Adjacency {
    pub fn new(rg: &RpcGraph) -> Adjacency {
        let n = rg.g.node_count();
        let mut adj = Adjacency {
            start: Vec::with_capacity(n + 1),
            to: Vec::with_capacity(rg.g.edge_count()),
            calls: Vec::with_capacity(rg.g.edge_count()),
            share: Vec::with_capacity(rg.g.edge_count()),
            evidence: Vec::with_capacity(rg.g.edge_count()),
            domain: Vec::with_capacity(n),
            executions: rg.g.node_weights().map(|x| x.executions).collect(),
            reentrant: rg.g.node_weights().map(|x| x.reentrant).collect(),
        };
        let mut domains = std::collections::BTreeMap::new();
        for u in rg.g.node_indices() {
            let next = domains.len() as u32;
            adj.domain
                .push(*domains.entry(rg.g[u].domain.as_deref()).or_insert(next));
        }
        let mut out = Vec::new();
        for u in rg.g.node_indices() {
            adj.start.push(adj.to.len());
            out.clear();
            out.extend(rg.g.edges(u));
            out.sort_by_key(|e| e.target());
            for e in &out {
                adj.to.push(e.target().index());
                adj.calls.push(e.weight().calls);
                adj.share.push(e.weight().share);
                adj.evidence.push(e.weight().evidence);
            }
        }
        adj.start.push(adj.to.len());
        adj
    }

    /// Indices of node `n`'s out-edges.
    pub fn out(&self, n: usize) -> std::ops::Range<usize> {
        self.start[n]..self.start[n + 1]
    }
}

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
    /// Edge indices into and out of each local node: those of node `u`
    /// are `in_list[in_start[u]..in_start[u + 1]]` (likewise out), in
    /// edge order.
    in_start: Vec<usize>,
    in_list: Vec<usize>,
    out_start: Vec<usize>,
    out_list: Vec<usize>,
    /// The callers and callees at the other end of those edges.
    in_from: Vec<u32>,
    out_to: Vec<u32>,
    /// The calls on those edges, and whether the out-edges are hot.
    in_calls: Vec<f64>,
    out_calls: Vec<f64>,
    out_hot: Vec<bool>,
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
        let mut out = Vec::new();
        for (u, &n) in nodes.iter().enumerate() {
            out.clear();
            out.extend(rg.g.edges(n).filter_map(|e| {
                let v = local[e.target().index()];
                (v != usize::MAX).then_some((e.target(), v, e.weight()))
            }));
            out.sort_by_key(|e| e.0);
            for &(_, v, w) in &out {
                edges.push(LocalEdge {
                    from: u,
                    to: v,
                    calls: w.calls,
                    hot: w.share >= cold,
                });
            }
        }
        let executions = nodes.iter().map(|&n| rg.g[n].executions).collect();
        let reentrant = nodes.iter().map(|&n| rg.g[n].reentrant).collect();
        Local::assemble(nodes, edges, executions, reentrant)
    }

    /// [`Local::new`] over a deployment's [`Adjacency`] (the same graph,
    /// built without going through the deployment graph's edge lists).
    pub fn with_adjacency(
        rg: &RpcGraph,
        adj: &Adjacency,
        root: NodeIndex,
        cands: &[NodeIndex],
        cold: f64,
    ) -> Local {
        let mut nodes = vec![root];
        nodes.extend(cands.iter().copied().filter(|&c| c != root));
        let mut local = vec![usize::MAX; rg.g.node_count()];
        for (i, &n) in nodes.iter().enumerate() {
            local[n.index()] = i;
        }
        let most = nodes.iter().map(|n| adj.out(n.index()).len()).sum();
        let mut edges = Vec::with_capacity(most);
        for (u, &n) in nodes.iter().enumerate() {
            for k in adj.out(n.index()) {
                let v = local[adj.to[k]];
                if v != usize::MAX {
                    edges.push(LocalEdge {
                        from: u,
                        to: v,
                        calls: adj.calls[k],
                        hot: adj.share[k] >= cold,
                    });
                }
            }
        }
        let executions = nodes.iter().map(|n| adj.executions[n.index()]).collect();
        let reentrant = nodes.iter().map(|n| adj.reentrant[n.index()]).collect();
        Local::assemble(nodes, edges, executions, reentrant)
    }

    /// The local graph of `nodes` (the root first) and `edges` between them.
    fn assemble(
        nodes: Vec<NodeIndex>,
        edges: Vec<LocalEdge>,
        executions: Vec<f64>,
        reentrant: Vec<bool>,
    ) -> Local {
        // Counting sort of the edge indices by callee and by caller.
        let n = nodes.len();
        let (mut in_start, mut out_start) = (vec![0; n + 1], vec![0; n + 1]);
        for e in &edges {
            in_start[e.to + 1] += 1;
            out_start[e.from + 1] += 1;
        }
        for i in 0..n {
            in_start[i + 1] += in_start[i];
            out_start[i + 1] += out_start[i];
        }
        let (mut in_list, mut out_list) = (vec![0; edges.len()], vec![0; edges.len()]);
        let (mut in_at, mut out_at) = (in_start.clone(), out_start.clone());
        for (i, e) in edges.iter().enumerate() {
            in_list[in_at[e.to]] = i;
            in_at[e.to] += 1;
            out_list[out_at[e.from]] = i;
            out_at[e.from] += 1;
        }
        let in_from = in_list.iter().map(|&i| edges[i].from as u32).collect();
        let out_to = out_list.iter().map(|&i| edges[i].to as u32).collect();
        let in_calls = in_list.iter().map(|&i| edges[i].calls).collect();
        let out_calls = out_list.iter().map(|&i| edges[i].calls).collect();
        let out_hot = out_list.iter().map(|&i| edges[i].hot).collect();
        Local {
            executions,
            reentrant,
            nodes,
            edges,
            in_start,
            in_list,
            out_start,
            out_list,
            in_from,
            out_to,
            in_calls,
            out_calls,
            out_hot,
        }
    }

    /// Indices of the edges into `u`.
    #[inline]
    pub fn ins(&self, u: usize) -> &[usize] {
        &self.in_list[self.in_start[u]..self.in_start[u + 1]]
    }

    /// Indices of the edges out of `u`.
    #[inline]
    pub fn outs(&self, u: usize) -> &[usize] {
        &self.out_list[self.out_start[u]..self.out_start[u + 1]]
    }

    /// The callers of `u`, edge by edge (as [`Local::ins`]).
    #[inline]
    pub fn callers(&self, u: usize) -> &[u32] {
        &self.in_from[self.in_start[u]..self.in_start[u + 1]]
    }

    /// The calls into `u`, edge by edge (as [`Local::ins`]).
    #[inline]
    pub fn calls_in(&self, u: usize) -> &[f64] {
        &self.in_calls[self.in_start[u]..self.in_start[u + 1]]
    }

    /// The calls out of `u`, edge by edge (as [`Local::outs`]).
    #[inline]
    pub fn calls_out(&self, u: usize) -> &[f64] {
        &self.out_calls[self.out_start[u]..self.out_start[u + 1]]
    }

    /// Whether the calls out of `u` are hot, edge by edge (as
    /// [`Local::outs`]).
    #[inline]
    pub fn hot_out(&self, u: usize) -> &[bool] {
        &self.out_hot[self.out_start[u]..self.out_start[u + 1]]
    }

    /// The callees of `u`, edge by edge (as [`Local::outs`]).
    #[inline]
    pub fn callees(&self, u: usize) -> &[u32] {
        &self.out_to[self.out_start[u]..self.out_start[u + 1]]
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
        let mut ev = Eval::default();
        ev.components(self, member);
        (0..self.edges.len())
            .map(|ei| ev.stays(self, member, ei))
            .collect()
    }

    /// RPCs removed by fusing `member` (the root always in): every call on
    /// an edge between members that does not stay an RPC, counted for the
    /// share `f(u)` of its caller's executions that run inside the image,
    /// `f(u) = Σ calls(q→u)·f(q) / executions(u)` over in-image calls into
    /// `u`, `f(root) = 1` (a fixed point bounded by 1, so cycles are safe).
    pub fn value(&self, member: &[bool]) -> f64 {
        Eval::default().value(self, member)
    }

    pub fn executions(&self, i: usize) -> f64 {
        self.executions[i]
    }

    pub fn reentrant(&self, i: usize) -> bool {
        self.reentrant[i]
    }

    /// Every member is reached from the root through hot edges between
    /// members.
    pub fn connected(&self, member: &[bool]) -> bool {
        let mut seen = vec![false; self.len()];
        seen[0] = true;
        let mut stack = vec![0];
        while let Some(u) = stack.pop() {
            for &ei in self.outs(u) {
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

/// Scratch space for evaluating member sets of one [`Local`] without
/// allocating: the strongly connected components of the members other
/// than the root (Tarjan, iterative), in the order Tarjan completes them
/// (each component after every component it reaches), and each member's
/// share `f` of in-image executions. One evaluation is O(nodes + edges).
#[derive(Default)]
pub struct Eval {
    index: Vec<usize>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    /// Component of each member other than the root; `usize::MAX` else.
    pub comp: Vec<usize>,
    stack: Vec<usize>,
    work: Vec<(usize, usize)>,
    /// Members other than the root, component by component, sinks first.
    pub order: Vec<usize>,
    /// Where each component starts in `order` (one more entry at the end).
    pub starts: Vec<usize>,
    /// Share of each member's executions that run inside the image.
    pub f: Vec<f64>,
}

impl Eval {
    /// The components of the members other than the root.
    pub fn components(&mut self, local: &Local, member: &[bool]) {
        let n = local.len();
        for v in [&mut self.index, &mut self.comp] {
            v.clear();
            v.resize(n, usize::MAX);
        }
        self.low.clear();
        self.low.resize(n, 0);
        self.on_stack.clear();
        self.on_stack.resize(n, false);
        self.order.clear();
        self.starts.clear();
        self.starts.push(0);
        let mut next = 0;
        let inside = |v: usize| v != 0 && member[v];
        for s in (1..n).filter(|&v| inside(v)) {
            if self.index[s] != usize::MAX {
                continue;
            }
            // (node, position in its out-edge list)
            self.work.push((s, 0));
            self.index[s] = next;
            self.low[s] = next;
            next += 1;
            self.stack.push(s);
            self.on_stack[s] = true;
            while let Some(&mut (v, ref mut pos)) = self.work.last_mut() {
                if let Some(&w) = local.callees(v).get(*pos) {
                    *pos += 1;
                    let w = w as usize;
                    if !inside(w) {
                        continue;
                    }
                    if self.index[w] == usize::MAX {
                        self.index[w] = next;
                        self.low[w] = next;
                        next += 1;
                        self.stack.push(w);
                        self.on_stack[w] = true;
                        self.work.push((w, 0));
                    } else if self.on_stack[w] {
                        self.low[v] = self.low[v].min(self.index[w]);
                    }
                    continue;
                }
                self.work.pop();
                if let Some(&(p, _)) = self.work.last() {
                    self.low[p] = self.low[p].min(self.low[v]);
                }
                if self.low[v] == self.index[v] {
                    let c = self.starts.len() - 1;
                    while let Some(w) = self.stack.pop() {
                        self.on_stack[w] = false;
                        self.comp[w] = c;
                        self.order.push(w);
                        if w == v {
                            break;
                        }
                    }
                    self.starts.push(self.order.len());
                }
            }
        }
    }

    /// Edge `ei` is between members and stays an RPC (see
    /// [`Local::staying`]); needs [`Eval::components`] of `member` first.
    pub fn stays(&self, local: &Local, member: &[bool], ei: usize) -> bool {
        let e = &local.edges[ei];
        member[e.from]
            && member[e.to]
            && !local.reentrant[e.to]
            && (e.to == 0 || e.from == e.to || self.comp[e.from] == self.comp[e.to])
    }

    /// Edge `ei` removes calls: between members and not staying.
    pub fn counts(&self, local: &Local, member: &[bool], ei: usize) -> bool {
        let e = &local.edges[ei];
        self.counts_call(local, member, e.from, e.to)
    }

    /// [`Eval::counts`] of an edge from `from` to `to`.
    #[inline]
    pub fn counts_call(&self, local: &Local, member: &[bool], from: usize, to: usize) -> bool {
        member[from]
            && member[to]
            && (local.reentrant[to] || !(to == 0 || from == to || self.comp[from] == self.comp[to]))
    }

    /// Whether component `c` has a counting edge inside it (a re-entrant
    /// member on one of its cycles, or a re-entrant member calling
    /// itself), so that its shares are a fixed point rather than a sum.
    pub fn cyclic(&self, local: &Local, c: usize) -> bool {
        self.order[self.starts[c]..self.starts[c + 1]]
            .iter()
            .any(|&v| {
                local.reentrant[v]
                    && local
                        .ins(v)
                        .iter()
                        .any(|&ei| self.comp[local.edges[ei].from] == c)
            })
    }

    /// The shares `f` of `member` (the components must be current).
    fn shares(&mut self, local: &Local, member: &[bool]) {
        self.f.clear();
        self.f.resize(local.len(), 0.0);
        self.f[0] = 1.0;
        // Components in reverse completion order: every counting edge
        // into a component comes from one already done, or from inside
        // it only when it is cyclic.
        for c in (0..self.starts.len() - 1).rev() {
            let rounds = if self.cyclic(local, c) { 64 } else { 1 };
            for _ in 0..rounds {
                let mut changed = false;
                for k in self.starts[c]..self.starts[c + 1] {
                    let u = self.order[k];
                    let exec = local.executions[u];
                    if exec <= 0.0 {
                        continue;
                    }
                    let calls_in: f64 = local
                        .callers(u)
                        .iter()
                        .zip(local.calls_in(u))
                        .filter(|&(&p, _)| self.counts_call(local, member, p as usize, u))
                        .map(|(&p, &calls)| calls * self.f[p as usize])
                        .sum();
                    let v = (calls_in / exec).min(1.0);
                    if (v - self.f[u]).abs() > 1e-12 {
                        self.f[u] = v;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
    }

    /// [`Local::value`] of `member`, leaving its components and shares
    /// here.
    pub fn value(&mut self, local: &Local, member: &[bool]) -> f64 {
        self.components(local, member);
        self.shares(local, member);
        (0..local.edges.len())
            .filter(|&ei| self.counts(local, member, ei))
            .map(|ei| local.edges[ei].calls * self.f[local.edges[ei].from])
            .sum::<f64>()
            + 0.0 // an empty sum is -0.0
    }
}
