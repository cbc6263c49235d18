#!/usr/bin/env bash
# Planning time against deployment size (10 to 2000 functions, median of 5
# random deployments each) and the heuristic's optimality gap against the
# exact optimum on small deployments. Writes out/bench/plan.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet --bench plan
