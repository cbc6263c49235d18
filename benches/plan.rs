//! Planning time and quality.
//!
//! Run: `cargo bench --bench plan` (or `scripts/bench-plan.sh`). Parts, by
//! the first argument or `PLAN_BENCH` (default `all`):
//!
//! - `scale`: time against deployment size and shapes on which a search
//!   over subsets blows up (out/bench/plan.csv, plan-shapes.csv);
//! - `sweep`: the corners of the shape space (2,000 functions, the most
//!   edges and entries, every call-count distribution, nearly acyclic and
//!   fully cyclic), then `PLAN_SWEEP` (default 1,000) random deployments
//!   of up to 2,000 functions and 10,000 edges without budgets, and as
//!   many with budgets (benches/gen/shapes.rs: sizes, callees per
//!   function, cycles, uniform, log-uniform and heavy-tailed call counts,
//!   entry ratios, trust domains, re-entrant functions); prints the
//!   median, the 99th percentile and the worst time with the shape that
//!   produced it, on every core and on one, and how many groups' searches
//!   reached their work limit (out/bench/plan-sweep.csv, one line per
//!   deployment);
//! - `gap`: the heuristic against exact enumeration on groups of up to 20
//!   candidates, and the incremental greedy against plan's whole search
//!   on groups of 21-64 (out/bench/plan-gap.csv, one line per group);
//! - `one SEED [budgets|corner]`: one deployment of the sweep (or corner
//!   SEED), each group solved in turn on one thread, then planned
//!   (`PLAN_REPEAT` times, default 1: the wall and CPU time of each, and
//!   the least; CPU time is the steadier on a machine other work shares);
//! - `digest`: a digest of every plan of the sweep (corners, then
//!   `PLAN_SWEEP` deployments without budgets and as many with), each
//!   plan's JSON hashed whole (groups, members, removed calls, objective,
//!   decisions and their reasons, edges); one line per deployment in
//!   out/bench/plan-digest.txt and the digest of them all on stdout: two
//!   builds plan alike on the sweep when their digests are equal.
//!
//! Times are of `plan_graph`: the whole plan of a built graph (every
//! group, the reasons, the edges' status), release build, on every core
//! (`FAASFUSE_THREADS`), and in the sweep also on one thread.

#[path = "gen/shapes.rs"]
mod shapes;

use std::time::Instant;

use faasfuse_core::plan::solve::{exact_removed_calls, solve, solve_with, Limits, Planner, Search};
use faasfuse_core::plan::{plan_graph, Options, RpcGraph};
use faasfuse_testkit::synthetic::{deployment, star, unbounded_deployment};
use petgraph::graph::NodeIndex;
use shapes::Shape;

/// Time of the whole plan of `rg` (ms), and its groups' members.
fn time_plan(rg: &RpcGraph, limits: &[Limits]) -> (f64, usize) {
    let (ms, members, _) = time_plan_objective(rg, limits);
    (ms, members)
}

/// [`time_plan`], and the plan's objective (removed RPC cost, us).
fn time_plan_objective(rg: &RpcGraph, limits: &[Limits]) -> (f64, usize, f64) {
    let t = Instant::now();
    let plan = plan_graph(rg, limits, &Options::default(), None);
    let ms = t.elapsed().as_secs_f64() * 1e3;
    let members = plan.groups.iter().map(|g| g.members.len()).sum();
    (ms, members, plan.objective_us)
}

/// [`time_plan`] on one thread (the plan is the same).
fn time_plan_one_thread(rg: &RpcGraph, limits: &[Limits]) -> f64 {
    let before = std::env::var_os("FAASFUSE_THREADS");
    std::env::set_var("FAASFUSE_THREADS", "1");
    let ms = time_plan(rg, limits).0;
    match before {
        Some(v) => std::env::set_var("FAASFUSE_THREADS", v),
        None => std::env::remove_var("FAASFUSE_THREADS"),
    }
    ms
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn scale() {
    let mut csv = String::from("functions,entries,edges,plan_ms_median\n");
    println!(
        "{:>9} {:>8} {:>7} {:>16}",
        "functions", "entries", "edges", "plan ms (median)"
    );
    for n in [10, 100, 250, 500, 1000, 2000] {
        let mut times = Vec::new();
        let mut shape = (0, 0);
        for seed in 0..5 {
            let (rg, limits) = deployment(n, seed);
            times.push(time_plan(&rg, &limits).0);
            shape = (
                rg.g.node_weights().filter(|x| x.entry).count(),
                rg.g.edge_count(),
            );
        }
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        println!("{n:>9} {:>8} {:>7} {med:>16.2}", shape.0, shape.1);
        csv.push_str(&format!("{n},{},{},{med:.3}\n", shape.0, shape.1));
    }
    std::fs::write("out/bench/plan.csv", csv).expect("write out/bench/plan.csv");

    // Shapes where a search over subsets blows up: one root with many hot
    // callees, and whole deployments without budgets.
    println!(
        "\n{:<52} {:>16} {:>9}",
        "shape", "plan ms (median)", "members"
    );
    let mut shapes = String::from("shape,plan_ms_median,members\n");
    let mut row = |name: String, mut runs: Vec<(f64, usize)>| {
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ms, m) = runs[runs.len() / 2];
        println!("{name:<52} {ms:>16.2} {m:>9}");
        shapes.push_str(&format!("{name},{ms:.3},{m}\n"));
    };
    for (n, fit) in [(1000, None), (1000, Some(100)), (399, None), (999, None)] {
        let runs = (0..5)
            .map(|seed| {
                let (rg, l) = star(n, fit, seed);
                let limits = vec![l; rg.g.node_count()];
                time_plan(&rg, &limits)
            })
            .collect();
        let budget = fit.map_or("no budget".to_string(), |k| format!("budget for ~{k}"));
        row(format!("one root, {n} hot callees, {budget}"), runs);
    }
    let runs = (0..5)
        .map(|seed| {
            let (rg, limits) = unbounded_deployment(2000, seed);
            time_plan(&rg, &limits)
        })
        .collect();
    row("random 2000 functions, no budgets".into(), runs);
    for calls in [shapes::Calls::LogUniform(1e6), shapes::Calls::Uniform(1e6)] {
        let runs = (0..5)
            .map(|seed| {
                let shape = Shape {
                    calls,
                    ..Shape::issue(seed)
                };
                let (rg, limits) = shape.build();
                time_plan(&rg, &limits)
            })
            .collect();
        row(
            format!("2000 functions, 200 entries, 1-3 callees, {calls}"),
            runs,
        );
    }
    std::fs::write("out/bench/plan-shapes.csv", shapes).expect("write plan-shapes.csv");
}

/// The corners of the sweep's space: the most functions, edges and
/// entries, every call-count distribution, DAGs and fully cyclic graphs.
fn corners() -> Vec<Shape> {
    let mut out = Vec::new();
    let mut seed = 0;
    for budgets in [false, true] {
        for ratio in [0.1, 0.25] {
            for callees in [(1, 3), (4, 8)] {
                for back in [0.1, 1.0] {
                    for calls in [
                        shapes::Calls::Uniform(1e6),
                        shapes::Calls::LogUniform(1e6),
                        shapes::Calls::Pareto(0.7),
                    ] {
                        seed += 1;
                        out.push(Shape {
                            functions: 2000,
                            entries: (2000.0 * ratio) as usize,
                            callees,
                            back,
                            calls,
                            domains: 1,
                            reentrant: 0.0,
                            external: true,
                            budgets,
                            max_edges: 10_000,
                            seed: 9_000 + seed,
                        });
                    }
                }
            }
        }
    }
    out
}

/// One planned deployment of the sweep.
struct Run {
    ms: f64,
    ms_one_thread: f64,
    shape: String,
}

/// Plan `shape` on every core and on one; count the groups whose search
/// reached its work limit (asked again, untimed, where planning took long
/// enough for that to be possible).
fn run_shape(shape: &Shape, stopped: &mut usize, csv: &mut String) -> Run {
    let (rg, limits) = shape.build();
    let (ms, members) = time_plan(&rg, &limits);
    let ms_one_thread = time_plan_one_thread(&rg, &limits);
    if ms_one_thread > 50.0 {
        let planner = Planner::new(&rg);
        for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
            let s = planner.solve(root, &limits[root.index()], &Search::default());
            *stopped += usize::from(s.stopped);
        }
    }
    let entries = rg.g.node_weights().filter(|x| x.entry).count();
    csv.push_str(&format!(
        "{},{},{},{entries},{},{ms:.3},{ms_one_thread:.3},{members},{shape}\n",
        shape.budgets,
        shape.seed,
        rg.g.node_count(),
        rg.g.edge_count()
    ));
    Run {
        ms,
        ms_one_thread,
        shape: format!("{shape} edges={}", rg.g.edge_count()),
    }
}

/// Median, 99th percentile and worst of `runs` (by `time`), and the
/// worst's shape.
fn summary(runs: &[Run], time: impl Fn(&Run) -> f64) -> String {
    let mut times: Vec<f64> = runs.iter().map(&time).collect();
    times.sort_by(f64::total_cmp);
    let worst = runs
        .iter()
        .max_by(|a, b| time(a).total_cmp(&time(b)))
        .expect("some runs");
    format!(
        "median {:.1} ms, p99 {:.1} ms, worst {:.1} ms ({})",
        quantile(&times, 0.5),
        quantile(&times, 0.99),
        time(worst),
        worst.shape
    )
}

fn sweep(count: u64) {
    let mut csv = String::from(
        "budgets,seed,functions,entries,edges,plan_ms,plan_ms_one_thread,members,shape\n",
    );
    let threads = faasfuse_core::threads::worker_threads();
    let t = Instant::now();
    let mut stopped = 0;
    let runs: Vec<Run> = corners()
        .iter()
        .map(|shape| run_shape(shape, &mut stopped, &mut csv))
        .collect();
    println!(
        "\ncorners: {} deployments of 2000 functions in {:.0} s ({stopped} groups reached the work limit)\n  {threads} threads: {}\n  one thread: {}",
        runs.len(),
        t.elapsed().as_secs_f64(),
        summary(&runs, |r| r.ms),
        summary(&runs, |r| r.ms_one_thread)
    );
    for budgets in [false, true] {
        let t = Instant::now();
        let mut stopped = 0;
        let runs: Vec<Run> = (0..count)
            .map(|seed| run_shape(&Shape::random(2000, budgets, seed), &mut stopped, &mut csv))
            .collect();
        if runs.is_empty() {
            continue;
        }
        println!(
            "\nsweep, {} budgets: {count} random deployments of up to 2000 functions and 10000 edges in {:.0} s ({stopped} groups reached the work limit)\n  {threads} threads: {}\n  one thread: {}",
            if budgets { "with" } else { "without" },
            t.elapsed().as_secs_f64(),
            summary(&runs, |r| r.ms),
            summary(&runs, |r| r.ms_one_thread)
        );
    }
    std::fs::write("out/bench/plan-sweep.csv", csv).expect("write plan-sweep.csv");
}

/// Gap of `h` below the optimum `e`.
fn gap(e: f64, h: f64) -> f64 {
    if e > 0.0 {
        ((e - h) / e).max(0.0)
    } else {
        0.0
    }
}

struct Gaps {
    what: &'static str,
    gaps: Vec<f64>,
}

impl Gaps {
    fn print(&self) {
        let mut g = self.gaps.clone();
        g.sort_by(f64::total_cmp);
        let optimal = g.iter().filter(|&&x| x <= 1e-9).count();
        println!(
            "  {:<52} optimal on {optimal} of {} ({:.1}%), median gap {:.3}%, mean {:.3}%, p99 {:.2}%, worst {:.2}%",
            self.what,
            g.len(),
            100.0 * optimal as f64 / g.len() as f64,
            100.0 * quantile(&g, 0.5),
            100.0 * g.iter().sum::<f64>() / g.len() as f64,
            100.0 * quantile(&g, 0.99),
            100.0 * g.last().copied().unwrap_or(0.0)
        );
    }
}

fn gaps(count: usize) {
    use faasfuse_core::plan::solve::Verdict;
    let t = Instant::now();
    let mut csv = String::from("source,seed,root,candidates,budgets,exact,plan,greedy_alone\n");
    let alone = Search {
        heuristic: true,
        refine: false,
        ..Search::default()
    };
    let forced = Search {
        heuristic: true,
        ..Search::default()
    };
    // What `plan` runs on 15-20 candidates; what it would run on <= 14 if
    // it did not enumerate; the incremental greedy that alone serves
    // groups of more than 64 candidates; and on 21-64 candidates, where
    // nothing enumerates, that greedy against plan's search.
    let mut plan_15_20 = Gaps {
        what: "plan's search, groups of 15-20 candidates",
        gaps: Vec::new(),
    };
    let mut forced_small = Gaps {
        what: "plan's search forced onto groups of 1-14 candidates",
        gaps: Vec::new(),
    };
    let mut alone_small = Gaps {
        what: "incremental greedy alone, groups of 1-20 candidates",
        gaps: Vec::new(),
    };
    let mut alone_mid = Gaps {
        what: "greedy alone below plan's search, 21-64 candidates",
        gaps: Vec::new(),
    };
    let mut record = |source: &str, seed: u64, rg: &RpcGraph, root: NodeIndex, l: &Limits| {
        let p = solve(rg, root, l, false);
        let candidates = p
            .verdicts
            .values()
            .filter(|v| !matches!(v, Verdict::Cold { .. } | Verdict::OtherDomain))
            .count();
        if candidates == 0 || candidates > 64 {
            return 0;
        }
        let a = solve_with(rg, root, l, &alone).removed_calls;
        let budgets = l.max_image_bytes.is_some() || l.cpu_budget.is_some();
        let r = root.index();
        if candidates > 20 {
            if alone_mid.gaps.len() < count {
                alone_mid.gaps.push(gap(p.removed_calls, a));
                let h = p.removed_calls;
                csv.push_str(&format!(
                    "{source},{seed},{r},{candidates},{budgets},,{h},{a}\n"
                ));
            }
            return candidates;
        }
        let e = exact_removed_calls(rg, root, l);
        let h = if candidates > 14 {
            p.removed_calls
        } else {
            solve_with(rg, root, l, &forced).removed_calls
        };
        assert!(
            h <= e * (1.0 + 1e-9) + 1e-9,
            "{source} {seed}: beats the optimum"
        );
        if candidates > 14 {
            plan_15_20.gaps.push(gap(e, h));
        } else {
            forced_small.gaps.push(gap(e, h));
        }
        alone_small.gaps.push(gap(e, a));
        csv.push_str(&format!(
            "{source},{seed},{r},{candidates},{budgets},{e},{h},{a}\n"
        ));
        candidates
    };
    // Random shapes of 10-60 functions, with and without budgets, until
    // `count` groups of 15-20 candidates; then of 40-150 functions until
    // `count` groups of 21-64; stars of 15-20 callees under a size budget.
    let (mut n15, mut n21) = (0, 0);
    for seed in 0..400 * count as u64 {
        if n15 >= count && n21 >= count {
            break;
        }
        let mut shape = Shape::random(150, seed % 2 == 0, 7_000_000 + seed);
        shape.functions = if n15 < count {
            10 + (seed % 51) as usize
        } else {
            40 + (seed % 111) as usize
        };
        shape.entries = shape.entries.clamp(1, shape.functions / 4 + 1);
        let (rg, limits) = shape.build();
        for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
            match record("random", seed, &rg, root, &limits[root.index()]) {
                15..=20 => n15 += 1,
                21..=64 => n21 += 1,
                _ => {}
            }
        }
    }
    for k in 15..=20 {
        for seed in 0..(count / 12).max(1) as u64 {
            let (rg, l) = star(k, Some(k / 2), 500 + seed);
            record("star", seed, &rg, NodeIndex::new(0), &l);
        }
    }
    println!(
        "\nheuristic vs exact enumeration ({:.0} s):",
        t.elapsed().as_secs_f64()
    );
    plan_15_20.print();
    forced_small.print();
    alone_small.print();
    alone_mid.print();
    std::fs::write("out/bench/plan-gap.csv", csv).expect("write plan-gap.csv");
}

/// CPU time of this process so far (every thread), ms.
fn cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime");
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

/// FNV-1a, 64 bits: a digest that is the same in every build.
fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The digest of every plan of the sweep (see the module documentation).
fn digest(count: u64) {
    let t = Instant::now();
    let shapes = corners().into_iter().chain(
        [false, true]
            .into_iter()
            .flat_map(|budgets| (0..count).map(move |seed| Shape::random(2000, budgets, seed))),
    );
    let (mut all, mut lines) = (0xcbf2_9ce4_8422_2325u64, String::new());
    for shape in shapes {
        let (rg, limits) = shape.build();
        let plan = plan_graph(&rg, &limits, &Options::default(), None);
        let json = serde_json::to_vec(&plan).expect("plan JSON");
        let h = fnv(0xcbf2_9ce4_8422_2325, &json);
        all = fnv(all, &h.to_le_bytes());
        lines.push_str(&format!("{h:016x} {} {shape}\n", plan.objective_us));
    }
    std::fs::write("out/bench/plan-digest.txt", lines).expect("write plan-digest.txt");
    println!(
        "digest of every plan of the sweep ({count} + {count} deployments and the corners, {:.0} s): {all:016x}",
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    std::fs::create_dir_all("out/bench").expect("out/bench");
    let part = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .or_else(|| std::env::var("PLAN_BENCH").ok())
        .unwrap_or_else(|| "all".into());
    let count: u64 = std::env::var("PLAN_SWEEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let gap_groups: usize = std::env::var("PLAN_GAP")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    if part == "all" || part == "scale" {
        scale();
    }
    if part == "all" || part == "sweep" {
        sweep(count);
    }
    if part == "all" || part == "gap" {
        gaps(gap_groups);
    }
    if part == "digest" {
        digest(count);
    }
    if part == "one" {
        // `one SEED [budgets]`: one deployment of the sweep, timed apart.
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with('-'))
            .collect();
        let seed: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let budgets = args.get(2).is_some_and(|s| s == "budgets");
        let shape = if args.get(2).is_some_and(|s| s == "corner") {
            corners()[seed as usize].clone()
        } else {
            Shape::random(2000, budgets, seed)
        };
        let (rg, limits) = shape.build();
        println!("{shape} edges={}", rg.g.edge_count());
        let t = Instant::now();
        let planner = Planner::new(&rg);
        let mut worst = (0.0, 0, 0);
        for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
            let t1 = Instant::now();
            let s = planner.solve(root, &limits[root.index()], &Search::default());
            let ms = t1.elapsed().as_secs_f64() * 1e3;
            if ms > worst.0 {
                worst = (ms, s.verdicts.len(), s.members.len());
            }
        }
        println!(
            "solve all {:.1} ms, worst group {:.2} ms ({} candidates, {} members)",
            t.elapsed().as_secs_f64() * 1e3,
            worst.0,
            worst.1,
            worst.2
        );
        let repeat: usize = std::env::var("PLAN_REPEAT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        let (mut least, mut least_cpu) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..repeat.max(1) {
            let cpu = cpu_ms();
            let (ms, members, objective) = time_plan_objective(&rg, &limits);
            let cpu = cpu_ms() - cpu;
            (least, least_cpu) = (least.min(ms), least_cpu.min(cpu));
            println!(
                "plan {ms:.1} ms (CPU {cpu:.1} ms), {members} members, objective {objective:.6e}"
            );
        }
        println!("least: plan {least:.1} ms, CPU {least_cpu:.1} ms");
    }
}
