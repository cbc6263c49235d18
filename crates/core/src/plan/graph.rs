//! The RPC graph: functions of a deployment (library size, CPU share,
//! memory, trust domain) and the RPC edges between them, weighted by the
//! calls a profile counted and marked with the static call sites `inspect`
//! finds.

use std::collections::BTreeMap;

use anyhow::Result;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};

use super::config::Config;
use crate::analyze::Callee;
use crate::error::InputError;
use crate::profile::aggregate::Evidence;

/// What the planner needs from a profile: calls per RPC edge and each
/// function's share of CPU samples, over the same window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Weights {
    /// `caller -> callee -> calls`.
    pub calls: BTreeMap<String, BTreeMap<String, f64>>,
    /// Share of all samples (0..1) in each function's image.
    #[serde(default)]
    pub cpu: BTreeMap<String, f64>,
    /// Requests from outside the deployment, per function, when known.
    #[serde(default)]
    pub external: BTreeMap<String, f64>,
    /// What the profile can show about each edge (`caller -> callee ->
    /// evidence`), from perf.data and BOLT profiles; `None` when the counts
    /// are given outright (a weights file, a platform trace), which sees
    /// every edge. An edge this map lacks is seen by nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<BTreeMap<String, BTreeMap<String, Evidence>>>,
}

impl Weights {
    /// What the profile can show about `caller -> callee`: `None` when
    /// the counts were given outright.
    pub fn evidence_of(&self, caller: &str, callee: &str) -> Option<Evidence> {
        let e = self.evidence.as_ref()?;
        Some(
            e.get(caller)
                .and_then(|m| m.get(callee))
                .copied()
                .unwrap_or(Evidence::Nothing),
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub library: String,
    pub image_bytes: u64,
    pub cpu: f64,
    pub memory_bytes: u64,
    pub domain: Option<String>,
    /// May root a fusion group.
    pub entry: bool,
    /// Executions in the profile window: external requests plus calls in.
    pub executions: f64,
    /// Declared re-entrant: a call into it while it runs can stay in-process.
    pub reentrant: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub calls: f64,
    /// RPC sites with this callee's constant name in the caller.
    pub static_sites: usize,
    /// Calls per execution of the caller, what the cold threshold is
    /// compared with: `calls / executions(caller)`, or when those are
    /// unknown (an entry without request counts) over the hottest edge out
    /// of the caller, which a callee called once per request matches.
    pub share: f64,
    /// What the profile can show about the edge; `None` when its count was
    /// given outright.
    pub evidence: Option<Evidence>,
}

pub struct RpcGraph {
    pub g: DiGraph<Node, Edge>,
    pub index: BTreeMap<String, NodeIndex>,
}

impl RpcGraph {
    /// Build the graph of `config`'s functions with `weights`; `profile`
    /// names the weights' file in errors.
    pub fn build(config: &Config, weights: &Weights, profile: &std::path::Path) -> Result<Self> {
        let mut g = DiGraph::new();
        let mut index = BTreeMap::new();
        let any_entry = config.functions.iter().any(|f| f.entry == Some(true));
        for f in &config.functions {
            let image_bytes = std::fs::metadata(&f.library)
                .map_err(|e| InputError::new(&f.library, format!("cannot read: {e}")))?
                .len();
            let i = g.add_node(Node {
                name: f.func_name.clone(),
                library: f.library.display().to_string(),
                image_bytes,
                cpu: weights.cpu.get(&f.func_name).copied().unwrap_or(0.0),
                memory_bytes: f.memory_bytes.unwrap_or(0),
                domain: f.domain.clone(),
                entry: f.entry == Some(true),
                executions: weights.external.get(&f.func_name).copied().unwrap_or(0.0),
                reentrant: f.reentrant == Some(true),
            });
            index.insert(f.func_name.clone(), i);
        }
        let known = |name: &str| {
            index.get(name).copied().ok_or_else(|| {
                InputError::new(
                    profile,
                    format!("the profile names function {name}, which the config lacks"),
                )
            })
        };
        for name in weights.cpu.keys().chain(weights.external.keys()) {
            known(name)?;
        }
        for (caller, callees) in &weights.calls {
            let a = known(caller)?;
            for (callee, &calls) in callees {
                let b = known(callee)?;
                if calls > 0.0 {
                    g.add_edge(
                        a,
                        b,
                        Edge {
                            calls,
                            static_sites: 0,
                            share: 0.0,
                            evidence: weights.evidence_of(caller, callee),
                        },
                    );
                }
            }
        }
        // Static sites: edges the code can take even if the profile saw none.
        for f in &config.functions {
            let lib = crate::loaded::load(&f.library)?;
            let a = index[&f.func_name];
            for s in &lib.sites {
                let Callee::Constant(n) = &s.callee else {
                    continue;
                };
                let Some(&b) = index.get(n) else { continue };
                match g.find_edge(a, b) {
                    Some(e) => g[e].static_sites += 1,
                    None => {
                        g.add_edge(
                            a,
                            b,
                            Edge {
                                calls: 0.0,
                                static_sites: 1,
                                share: 0.0,
                                evidence: weights.evidence_of(&f.func_name, n),
                            },
                        );
                    }
                }
            }
        }
        Ok(Self::finish(g, index, any_entry))
    }

    /// A graph of given nodes and edges (`(caller, callee, calls)`), e.g. a
    /// generated one; `executions` of a node is its external requests.
    pub fn from_parts(nodes: Vec<Node>, edges: &[(usize, usize, f64)]) -> Self {
        let mut g = DiGraph::new();
        let mut index = BTreeMap::new();
        let any_entry = nodes.iter().any(|n| n.entry);
        for n in nodes {
            let name = n.name.clone();
            index.insert(name, g.add_node(n));
        }
        for &(a, b, calls) in edges {
            g.add_edge(
                NodeIndex::new(a),
                NodeIndex::new(b),
                Edge {
                    calls,
                    static_sites: 1,
                    share: 0.0,
                    evidence: None,
                },
            );
        }
        Self::finish(g, index, any_entry)
    }

    /// Executions: external requests plus calls in. When nothing marks
    /// entries, functions nobody calls are the entries, or every function
    /// if there are none (a cycle).
    fn finish(
        mut g: DiGraph<Node, Edge>,
        index: BTreeMap<String, NodeIndex>,
        any_entry: bool,
    ) -> Self {
        let incoming: Vec<f64> = g
            .node_indices()
            .map(|n| {
                g.edges_directed(n, petgraph::Direction::Incoming)
                    .filter(|e| e.source() != n)
                    .map(|e| e.weight().calls)
                    .sum()
            })
            .collect();
        for (n, inc) in g.node_indices().zip(incoming) {
            let self_calls: f64 = g.edges_connecting(n, n).map(|e| e.weight().calls).sum();
            let node = &mut g[n];
            node.executions += inc + self_calls;
            if !any_entry {
                node.entry = inc == 0.0;
            }
        }
        if !g.node_weights().any(|n| n.entry) {
            for n in g.node_weights_mut() {
                n.entry = true;
            }
        }
        for n in g.node_indices() {
            let base = if g[n].executions > 0.0 {
                g[n].executions
            } else {
                g.edges(n).map(|e| e.weight().calls).fold(0.0, f64::max)
            };
            let out: Vec<_> = g.edges(n).map(|e| e.id()).collect();
            for e in out {
                g[e].share = if base > 0.0 { g[e].calls / base } else { 0.0 };
            }
        }
        RpcGraph { g, index }
    }

    pub fn node(&self, name: &str) -> &Node {
        &self.g[self.index[name]]
    }

    /// One line per function for the plan.
    pub fn summaries(&self) -> Vec<NodeSummary> {
        self.g
            .node_weights()
            .map(|n| NodeSummary {
                name: n.name.clone(),
                library: n.library.clone(),
                image_bytes: n.image_bytes,
                cpu: n.cpu,
                executions: n.executions,
                entry: n.entry,
                domain: n.domain.clone(),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSummary {
    pub name: String,
    pub library: String,
    pub image_bytes: u64,
    pub cpu: f64,
    pub executions: f64,
    pub entry: bool,
    pub domain: Option<String>,
}

use petgraph::visit::EdgeRef;
