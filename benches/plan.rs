//! Planning time against deployment size, and the heuristic's optimality
//! gap where the exact optimum can be computed.
//!
//! Run: `cargo bench --bench plan` (or `scripts/bench-plan.sh`); writes
//! out/bench/plan.csv.

use std::time::Instant;

use faasfuse_core::plan::solve::{exact_removed_calls, solve};
use faasfuse_testkit::synthetic::{deployment, star, unbounded_deployment};
use petgraph::graph::NodeIndex;

/// Median of five timed runs of `f` (ms), and its last result.
fn median_ms<T>(mut f: impl FnMut(u64) -> T) -> (f64, T) {
    let mut times = Vec::new();
    let mut last = None;
    for seed in 0..5 {
        let t = Instant::now();
        last = Some(f(seed));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    (times[2], last.expect("five runs"))
}

fn main() {
    std::fs::create_dir_all("out/bench").expect("out/bench");
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
            let t = Instant::now();
            let mut groups = 0;
            for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
                let s = solve(&rg, root, &limits[root.index()], false);
                groups += s.members.len();
            }
            times.push(t.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(groups);
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

    // Shapes where a search over subsets blows up: one root with many hot
    // callees, and whole deployments without budgets.
    println!(
        "\n{:<44} {:>16} {:>9}",
        "shape", "plan ms (median)", "members"
    );
    let mut shapes = String::from("shape,plan_ms_median,members\n");
    let mut shape = |name: String, ms: f64, members: usize| {
        println!("{name:<44} {ms:>16.2} {members:>9}");
        shapes.push_str(&format!("{name},{ms:.3},{members}\n"));
    };
    for (n, fit) in [(1000, None), (1000, Some(100)), (399, None), (999, None)] {
        let (ms, m) = median_ms(|seed| {
            let (rg, l) = star(n, fit, seed);
            solve(&rg, NodeIndex::new(0), &l, false).members.len()
        });
        let budget = fit.map_or("no budget".to_string(), |k| format!("budget for ~{k}"));
        shape(format!("one root, {n} hot callees, {budget}"), ms, m);
    }
    let (ms, m) = median_ms(|seed| {
        let (rg, limits) = unbounded_deployment(2000, seed);
        rg.g.node_indices()
            .filter(|&i| rg.g[i].entry)
            .map(|root| solve(&rg, root, &limits[root.index()], false).members.len())
            .sum::<usize>()
    });
    shape("random 2000 functions, no budgets".into(), ms, m);
    std::fs::write("out/bench/plan-shapes.csv", shapes).expect("write plan-shapes.csv");

    // The greedy search against exact enumeration where the greedy runs
    // (more than 14 candidates) and enumeration is still feasible.
    let (mut groups, mut optimal, mut worst, mut sum) = (0, 0, 0.0f64, 0.0f64);
    for k in 15..=18 {
        for seed in 0..10 {
            let (rg, l) = star(k, Some(k / 2), 500 + seed);
            let e = exact_removed_calls(&rg, NodeIndex::new(0), &l);
            let h = solve(&rg, NodeIndex::new(0), &l, false).removed_calls;
            let gap = if e > 0.0 { (e - h) / e } else { 0.0 };
            groups += 1;
            optimal += usize::from(gap <= 1e-9);
            worst = worst.max(gap);
            sum += gap;
        }
    }
    println!(
        "\ngreedy vs exact on {groups} groups of 15..18 candidates under a size budget: optimal on {optimal}, mean gap {:.3}%, worst gap {:.3}%",
        100.0 * sum / groups as f64,
        100.0 * worst
    );
    csv.push_str(&format!(
        "# greedy gap (15..18 candidates): groups={groups} optimal={optimal} mean_gap={:.6} worst_gap={worst:.6}\n",
        sum / groups as f64
    ));

    // Optimality gap of the heuristic on graphs small enough to enumerate.
    let (mut roots, mut optimal, mut worst) = (0, 0, 0.0f64);
    for seed in 0..2000 {
        let n = 3 + (seed % 12) as usize;
        let (rg, limits) = deployment(n, 1000 + seed);
        for root in rg.g.node_indices().filter(|&i| rg.g[i].entry) {
            let l = &limits[root.index()];
            let e = solve(&rg, root, l, false).removed_calls;
            let h = solve(&rg, root, l, true).removed_calls;
            roots += 1;
            let gap = if e > 0.0 { (e - h) / e } else { 0.0 };
            if gap <= 1e-9 {
                optimal += 1;
            }
            worst = worst.max(gap);
        }
    }
    println!(
        "\nheuristic vs exact on {roots} groups of 3..14-function deployments: optimal on {optimal} ({:.1}%), worst gap {:.2}%",
        100.0 * optimal as f64 / roots as f64,
        100.0 * worst
    );
    csv.push_str(&format!(
        "# gap: groups={roots} optimal={optimal} worst_gap={worst:.6}\n"
    ));
    std::fs::write("out/bench/plan.csv", csv).expect("write out/bench/plan.csv");
}
