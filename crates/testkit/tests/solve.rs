//! The planner's group search on random deployments from the test kit's
//! generator: it matches exact enumeration where that runs, and stays
//! bounded on cyclic graphs.

use std::collections::BTreeSet;

use faasfuse_core::plan::solve::{removed_calls, solve};
use faasfuse_testkit::synthetic;
use petgraph::graph::NodeIndex;

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
