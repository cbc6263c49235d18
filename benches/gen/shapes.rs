//! Random deployment shapes for the planning benchmark and tests: sizes,
//! callees per function, how many calls go back up the graph (cycles),
//! call-count distributions, entry ratios, trust domains, re-entrant
//! functions, with or without budgets. Deterministic per seed.

#![allow(dead_code)]

use faasfuse_core::plan::graph::{Node, RpcGraph};
use faasfuse_core::plan::solve::Limits;
use faasfuse_testkit::synthetic::Rng;

/// How call counts are drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Calls {
    /// Uniform in 1..=max.
    Uniform(f64),
    /// Log-uniform in 1..max.
    LogUniform(f64),
    /// Pareto with this tail index (heavy-tailed), scale 1, capped at 1e9.
    Pareto(f64),
}

impl std::fmt::Display for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Calls::Uniform(m) => write!(f, "uniform<={m:.0e}"),
            Calls::LogUniform(m) => write!(f, "loguniform<={m:.0e}"),
            Calls::Pareto(a) => write!(f, "pareto{a}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Shape {
    pub functions: usize,
    pub entries: usize,
    /// Callees per function, drawn uniformly in this range.
    pub callees: (usize, usize),
    /// Share of callees drawn among all functions (closing cycles); the
    /// rest among the functions after the caller (a DAG).
    pub back: f64,
    pub calls: Calls,
    /// Trust domains drawn at random per function.
    pub domains: usize,
    /// Share of functions declared re-entrant.
    pub reentrant: f64,
    /// Entries have counted external requests (else only calls in).
    pub external: bool,
    /// Size, CPU and memory budgets on the entries.
    pub budgets: bool,
    /// At most this many edges (the rest of the draws are dropped).
    pub max_edges: usize,
    pub seed: u64,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} entries={} callees={}..{} back={:.2} calls={} domains={} reentrant={:.2} external={} budgets={} seed={}",
            self.functions,
            self.entries,
            self.callees.0,
            self.callees.1,
            self.back,
            self.calls,
            self.domains,
            self.reentrant,
            self.external,
            self.budgets,
            self.seed
        )
    }
}

impl Shape {
    /// The deployment the planner issue describes: 2,000 functions, 200
    /// entries, one to three callees each anywhere in the deployment,
    /// call counts up to 10^6, CPU shares for all, no budgets.
    pub fn issue(seed: u64) -> Shape {
        Shape {
            functions: 2000,
            entries: 200,
            callees: (1, 3),
            back: 1.0,
            calls: Calls::LogUniform(1e6),
            domains: 1,
            reentrant: 0.0,
            external: true,
            budgets: false,
            max_edges: 10_000,
            seed,
        }
    }

    /// A random shape of up to `max_functions` functions and 10,000 edges;
    /// half of them have at least 1,000 functions.
    pub fn random(max_functions: usize, budgets: bool, seed: u64) -> Shape {
        let mut r = Rng::new(seed ^ 0x5eed);
        let functions = if r.below(2) == 0 {
            (1000 + r.below(max_functions.saturating_sub(999) as u64) as usize).min(max_functions)
        } else {
            r.log_uniform(10.0, max_functions as f64 + 1.0) as usize
        }
        .max(2);
        let ratio = [0.005, 0.02, 0.1, 0.1, 0.25][r.below(5) as usize];
        let entries = ((functions as f64 * ratio).round() as usize).clamp(1, functions);
        let hi = [2, 3, 3, 5, 8][r.below(5) as usize];
        let lo = 1 + r.below(hi as u64) as usize / 2;
        let back = [0.0, 0.02, 0.1, 0.5, 1.0][r.below(5) as usize];
        let calls = match r.below(4) {
            0 => Calls::Uniform(1e6),
            1 => Calls::LogUniform(1e6),
            2 => Calls::Pareto(1.1),
            _ => Calls::Pareto(0.7),
        };
        Shape {
            functions,
            entries,
            callees: (lo, hi),
            back,
            calls,
            domains: 1 + r.below(2) as usize,
            reentrant: if r.below(4) == 0 { 0.05 } else { 0.0 },
            external: r.below(4) != 0,
            budgets,
            max_edges: 10_000,
            seed,
        }
    }

    /// The deployment and the limits of every function (by node index).
    pub fn build(&self) -> (RpcGraph, Vec<Limits>) {
        let mut r = Rng::new(self.seed);
        let n = self.functions;
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let entry = i < self.entries;
            nodes.push(Node {
                name: format!("F{i}"),
                library: format!("libf{i}.so"),
                image_bytes: r.log_uniform(8e3, 4e6) as u64,
                cpu: r.log_uniform(1e-5, 0.05),
                memory_bytes: r.log_uniform(16e6, 512e6) as u64,
                domain: Some(format!("d{}", r.below(self.domains as u64))),
                entry,
                executions: if entry && self.external {
                    r.log_uniform(1e3, 1e6)
                } else {
                    0.0
                },
                reentrant: r.unit() < self.reentrant,
            });
        }
        let mut edges = Vec::new();
        let mut seen = std::collections::HashSet::new();
        'all: for caller in 0..n {
            let (lo, hi) = self.callees;
            let k = lo + r.below((hi - lo + 1) as u64) as usize;
            for _ in 0..k {
                let callee = if caller + 1 >= n || r.unit() < self.back {
                    r.below(n as u64) as usize
                } else {
                    caller + 1 + r.below((n - caller - 1) as u64) as usize
                };
                if !seen.insert((caller, callee)) {
                    continue;
                }
                let calls = match self.calls {
                    Calls::Uniform(max) => 1.0 + r.below(max as u64) as f64,
                    Calls::LogUniform(max) => r.log_uniform(1.0, max).round(),
                    Calls::Pareto(a) => (r.unit().max(1e-12).powf(-1.0 / a)).min(1e9).round(),
                };
                edges.push((caller, callee, calls));
                if edges.len() >= self.max_edges {
                    break 'all;
                }
            }
        }
        let limits = (0..n)
            .map(|_| {
                let mut l = Limits {
                    max_image_bytes: None,
                    cpu_budget: None,
                    memory_bytes: None,
                    cold: 0.01,
                };
                if self.budgets {
                    l.max_image_bytes = Some(r.log_uniform(2e6, 6e7) as u64);
                    l.cpu_budget = Some(0.02 + 0.5 * r.unit());
                    if r.below(2) == 0 {
                        l.memory_bytes = Some(r.log_uniform(5e8, 2e10) as u64);
                    }
                }
                l
            })
            .collect();
        (RpcGraph::from_parts(nodes, &edges), limits)
    }
}
