//! Random deployments for testing and benchmarking the planner: a layered
//! call graph (entries call services that call deeper services), a few
//! cycles, log-uniform call counts, sizes and CPU shares, budgets on the
//! entries and a couple of trust domains.

use faasfuse_core::plan::graph::{Node, RpcGraph};
use faasfuse_core::plan::solve::Limits;

/// A small deterministic generator (xorshift).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Log-uniform in `[lo, hi)`.
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        (lo.ln() + self.unit() * (hi.ln() - lo.ln())).exp()
    }
}

/// A random deployment of `n` functions and the limits of each entry.
pub fn deployment(n: usize, seed: u64) -> (RpcGraph, Vec<Limits>) {
    let mut r = Rng::new(seed);
    let entries = (n / 10).max(1);
    let domains = ["a", "a", "a", "b"];
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(Node {
            name: format!("F{i}"),
            library: format!("libf{i}.so"),
            image_bytes: r.log_uniform(8e3, 2e6) as u64,
            cpu: r.log_uniform(1e-4, 0.05),
            memory_bytes: r.log_uniform(16e6, 512e6) as u64,
            domain: Some(domains[r.below(4) as usize].to_string()),
            entry: i < entries,
            executions: if i < entries {
                r.log_uniform(1e3, 1e5)
            } else {
                0.0
            },
            reentrant: false,
        });
    }
    let mut edges = Vec::new();
    for callee in 1..n {
        // One to three callers among the functions before it.
        let k = 1 + r.below(3) as usize;
        for _ in 0..k {
            let caller = r.below(callee as u64) as usize;
            if !edges.iter().any(|&(a, b, _)| a == caller && b == callee) {
                edges.push((caller, callee, r.log_uniform(1.0, 1e5).round()));
            }
        }
    }
    // A few back edges make cycles.
    for _ in 0..n / 20 {
        let a = r.below(n as u64) as usize;
        let b = r.below(a as u64 + 1) as usize;
        edges.push((a, b, r.log_uniform(1.0, 1e3).round()));
    }
    let limits = (0..n)
        .map(|_| Limits {
            max_image_bytes: Some(r.log_uniform(1e6, 8e6) as u64),
            cpu_budget: Some(0.05 + 0.2 * r.unit()),
            memory_bytes: None,
            cold: 0.01,
        })
        .collect();
    (RpcGraph::from_parts(nodes, &edges), limits)
}

/// One entry calling `n` hot callees (each called on most requests), with
/// a layer of calls among the callees, a few cycles, and a size budget
/// that admits about `fit` of them (`None`: no budgets): the shape of a
/// front end over a large service mesh.
pub fn star(n: usize, fit: Option<usize>, seed: u64) -> (RpcGraph, Limits) {
    let mut r = Rng::new(seed);
    let mut nodes = Vec::new();
    let mut bytes = 0u64;
    for i in 0..=n {
        let image_bytes = r.log_uniform(8e3, 2e6) as u64;
        bytes += image_bytes;
        nodes.push(Node {
            name: format!("F{i}"),
            library: format!("libf{i}.so"),
            image_bytes,
            cpu: r.log_uniform(1e-5, 1e-3),
            memory_bytes: r.log_uniform(16e6, 512e6) as u64,
            domain: None,
            entry: i == 0,
            executions: if i == 0 { 1e5 } else { 0.0 },
            reentrant: false,
        });
    }
    let mut edges = Vec::new();
    for callee in 1..=n {
        edges.push((0, callee, r.log_uniform(2e3, 1e5).round()));
        if callee > 1 && r.below(2) == 0 {
            let caller = 1 + r.below(callee as u64 - 1) as usize;
            edges.push((caller, callee, r.log_uniform(1e2, 1e4).round()));
        }
    }
    for _ in 0..n / 20 {
        let a = 1 + r.below(n as u64) as usize;
        let b = 1 + r.below(a as u64) as usize;
        edges.push((a, b, r.log_uniform(1.0, 1e3).round()));
    }
    let limits = Limits {
        max_image_bytes: fit.map(|k| bytes * k as u64 / n.max(1) as u64),
        cpu_budget: None,
        memory_bytes: None,
        cold: 0.01,
    };
    (RpcGraph::from_parts(nodes, &edges), limits)
}

/// `deployment` without any budget: every group is bounded only by its
/// hot edges and trust domain.
pub fn unbounded_deployment(n: usize, seed: u64) -> (RpcGraph, Vec<Limits>) {
    let (rg, mut limits) = deployment(n, seed);
    for l in &mut limits {
        l.max_image_bytes = None;
        l.cpu_budget = None;
    }
    (rg, limits)
}
