#!/usr/bin/env bash
# Planning time and quality (benches/plan.rs): time against deployment size
# (10 to 2000 functions, median of 5 random deployments each) and on shapes
# that blow up a search over subsets; the corners of the shape space and a
# sweep of random deployments (PLAN_SWEEP, default 1000, without budgets
# and as many with) of up to 2000 functions and 10000 edges, with the
# median, p99 and worst plan time and the worst's shape, on every core and
# on one; the heuristic's gap against exact enumeration on groups of up to
# 20 candidates (PLAN_GAP groups of 15-20, default 300). A few minutes on
# two cores. Writes out/bench/plan.csv, plan.svg, plan-shapes.csv,
# plan-sweep.csv and plan-gap.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench plan
python3 scripts/plot.py lines out/bench/plan.csv out/bench/plan.svg functions plan_ms_median \
  --title "planning time vs deployment size" --unit ms
echo "wrote out/bench/plan.csv, plan.svg, plan-shapes.csv, plan-sweep.csv, plan-gap.csv"
