#!/usr/bin/env bash
# Planning time against deployment size (10 to 2000 functions, median of 5
# random deployments each) and the heuristic's optimality gap against the
# exact optimum on small deployments. Writes out/bench/plan.csv and plan.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench plan
python3 scripts/plot.py lines out/bench/plan.csv out/bench/plan.svg functions plan_ms_median \
  --title "planning time vs deployment size" --unit ms
echo "wrote out/bench/plan.csv, out/bench/plan.svg"
