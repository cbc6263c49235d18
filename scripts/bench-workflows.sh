#!/usr/bin/env bash
# Per-workflow request latency and throughput, side by side in one run:
# the unfused deployment (a pool of worker processes per function, --ipc) against
# the fused root served alone (--ipc) at each lowering tier (--lower none,
# dispatch, direct), and the fused root in the host's own process (no IPC
# at all: the limit for a fused deployment).
#
# Every mode of every workflow is measured REPS times in turn (default 3);
# the summary gives medians over the repeats and the p50's spread
# (min-max).
#
# Usage: [REPS=3] scripts/bench-workflows.sh [ROUNDS]   (default 100 rounds of 64 inputs)
# Writes out/bench/workflows.csv and out/bench/workflows.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-100}"
OUT=out/bench/workflows
mkdir -p "$OUT"
cargo build --release --quiet
FF=target/release/faasfuse
scripts/build-fixtures.sh "$OUT/lib" > /dev/null
LIB="$OUT/lib/default"

python3 scripts/workflow-inputs.py "$PWD/$LIB" "$OUT"

CSV=out/bench/workflows.csv
echo "rep,workflow,mode,p50_us,p99_us,requests_per_s" > "$CSV"
REPS="${REPS:-3}"
measure() { # workflow mode root deploy...
  local wf="$1" mode="$2" root="$3"; shift 3
  local rep
  for rep in $(seq 1 "$REPS"); do
  "$FF" run "$@" --repeat "$ROUNDS" --inputs "$OUT/$wf.inputs" --json -- "$root" > "$OUT/r.json"
  python3 - "$OUT/r.json" "$rep" "$wf" "$mode" >> "$CSV" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
q = r["request_latency"]
print(f'{sys.argv[2]},{sys.argv[3]},{sys.argv[4]},{q["p50_ns"]/1000:.2f},{q["p99_ns"]/1000:.2f},{r["requests"]/(r["wall_ns"]/1e9):.0f}')
PY
  done
}
while IFS=$'\t' read -r name root _ declare libs; do
  # A function that calls itself is fused as re-entrant, so the in-process
  # run below can serve it (the host never re-enters a function otherwise).
  [ "$declare" = - ] && declare=
  # shellcheck disable=SC2086
  measure "$name" unfused-ipc "$root" $libs --ipc
  for level in none dispatch direct; do
    # shellcheck disable=SC2086
    "$FF" merge $libs $declare --lower "$level" -o "$OUT/$name-$level.so" > /dev/null
    measure "$name" "fused-$level-ipc" "$root" "$root=$OUT/$name-$level.so" --ipc
  done
  measure "$name" fused-direct-in-process "$root" "$root=$OUT/$name-direct.so"
done < "$OUT/workflows.tsv"

python3 - "$CSV" <<'PY'
import csv, collections, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
runs = collections.defaultdict(lambda: collections.defaultdict(list))
for r in rows:
    runs[r["workflow"]][r["mode"]].append(r)
by = collections.defaultdict(dict)
spread = collections.defaultdict(dict)
for wf, ms in runs.items():
    for m, rs in ms.items():
        p50 = [float(r["p50_us"]) for r in rs]
        by[wf][m] = {k: f'{statistics.median(float(r[k]) for r in rs):.2f}' for k in ("p50_us", "p99_us")}
        spread[wf][m] = (min(p50), max(p50))
modes = ["unfused-ipc", "fused-none-ipc", "fused-dispatch-ipc", "fused-direct-ipc", "fused-direct-in-process"]
print(f'{"workflow":<9}' + "".join(f"{m:>25}" for m in modes) + f'{"speedup":>9}')
wide = open(sys.argv[1].replace(".csv", "-p50.csv"), "w")
wide.write("workflow," + ",".join(modes) + "\n")
for wf, m in by.items():
    cells = "".join(f'{m[x]["p50_us"] + " / " + m[x]["p99_us"] + " us":>25}' for x in modes)
    speed = float(m["unfused-ipc"]["p50_us"]) / float(m["fused-direct-ipc"]["p50_us"])
    print(f"{wf:<9}{cells}{speed:>8.1f}x")
    wide.write(wf + "," + ",".join(m[x]["p50_us"] for x in modes) + "\n")
print("(medians over the repeats of p50 / p99 request latency; speedup = unfused-ipc p50 / fused-direct-ipc p50)")
print("p50 spread (min-max) over the repeats:")
for wf in by:
    print(f'{wf:<9}' + "".join(f'{f"{spread[wf][x][0]:.1f}-{spread[wf][x][1]:.1f} us":>25}' for x in modes))
PY
python3 scripts/plot.py bars out/bench/workflows-p50.csv out/bench/workflows.svg workflow \
  unfused-ipc fused-none-ipc fused-dispatch-ipc fused-direct-ipc fused-direct-in-process \
  --title "request latency p50 per workflow" --unit us
echo "wrote $CSV, out/bench/workflows.svg"
