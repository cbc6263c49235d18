//! Planning time against deployment size, and the heuristic's optimality
//! gap where the exact optimum can be computed.
//!
//! Run: `cargo bench --bench plan` (or `scripts/bench-plan.sh`); writes
//! out/bench/plan.csv.

use std::time::Instant;

use faasfuse::plan::solve::solve;
use faasfuse::plan::synthetic::deployment;

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
