#!/usr/bin/env bash
# Cost of one nested call, measured side by side in one run: unfused over
# IPC (a pool of worker processes per function), unfused in one process, fused at
# each lowering tier (0: indirect call through the runtime's dispatcher,
# 1: direct call of the dispatcher, 2: direct call of the callee's entry
# stub), and a direct C call in one library (the physical limit). Per-call cost = (p50 with N nested calls - p50 with 0) / N.
#
# The whole set of modes is measured REPS times in turn (default 5), so that
# every mode sees the same machine; the summary gives each mode's median
# and spread (min-max) over the repeats, and ratios of medians.
#
# Usage: [REPS=5] scripts/bench-nested.sh [REPEAT]    (default 200 requests per point)
# Writes out/bench/nested.csv (one row per mode and repeat), nested-insns.csv
# and nested-insns-functions.csv (instructions per call, by function).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT="${1:-200}"
REPS="${REPS:-5}"
OUT=out/bench
mkdir -p "$OUT"
cargo build --release --quiet
FF=target/release/faasfuse
CFLAGS="-shared -fPIC -O2 -Ifixtures/include"
for f in benchcaller benchcallee benchdirect; do
  gcc $CFLAGS "benches/functions/$f.c" -o "$OUT/lib$f.so"
done
for level in none dispatch direct; do
  "$FF" merge BenchCaller="$OUT/libbenchcaller.so" BenchCallee="$OUT/libbenchcallee.so" \
    --lower "$level" -o "$OUT/libbenchcaller.fused-$level.so" > /dev/null
done
# Tier 2 with the callee on a stack of its own (--isolate stack).
"$FF" merge BenchCaller="$OUT/libbenchcaller.so" BenchCallee="$OUT/libbenchcallee.so" \
  --isolate stack -o "$OUT/libbenchcaller.fused-direct-stack.so" > /dev/null

p50() { # deploy... -- N : prints request p50 in ns
  local n="${*: -1}"; local args=("${@:1:$#-1}")
  "$FF" run "${args[@]}" --repeat "$REPEAT" --json -- BenchCaller "$n" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["request_latency"]["p50_ns"])'
}

UNFUSED=(BenchCaller="$OUT/libbenchcaller.so" BenchCallee="$OUT/libbenchcallee.so")
DIRECT=(BenchCaller="$OUT/libbenchdirect.so")

echo "rep,mode,nested_calls_per_request,p50_request_ns,p50_empty_request_ns,ns_per_nested_call" > "$OUT/nested.csv"
row() { # rep label n deploy...
  local rep="$1" label="$2" n="$3"; shift 3
  local full empty
  full=$(p50 "$@" "$n"); empty=$(p50 "$@" 0)
  python3 - "$rep" "$label" "$n" "$full" "$empty" >> "$OUT/nested.csv" <<'PY'
import sys
rep, label, n, full, empty = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
print(f"{rep},{label},{n},{full},{empty},{max(full - empty, 0) / n:.2f}")
PY
}
for rep in $(seq 1 "$REPS"); do
  row "$rep" unfused-ipc 100 "${UNFUSED[@]}" --ipc
  row "$rep" unfused-in-process 1000 "${UNFUSED[@]}"
  row "$rep" fused-tier0 10000 BenchCaller="$OUT/libbenchcaller.fused-none.so"
  row "$rep" fused-tier1 10000 BenchCaller="$OUT/libbenchcaller.fused-dispatch.so"
  row "$rep" fused-tier2 10000 BenchCaller="$OUT/libbenchcaller.fused-direct.so"
  row "$rep" fused-tier2-isolate-stack 10000 BenchCaller="$OUT/libbenchcaller.fused-direct-stack.so"
  row "$rep" direct-c-call 10000 "${DIRECT[@]}"
done

# Instructions per nested call (callgrind counts instructions, so this is
# repeatable on a busy machine): (count with N calls - count with 0) / N.
insns() { # deploy -- N : prints instructions executed
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$FF" run "$1" -- BenchCaller "$2" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "mode,instructions_per_nested_call" > "$OUT/nested-insns.csv"
if command -v valgrind > /dev/null; then
  for m in none:fused-tier0 dispatch:fused-tier1 direct:fused-tier2 direct-stack:fused-tier2-isolate-stack; do
    dep="BenchCaller=$OUT/libbenchcaller.fused-${m%%:*}.so"
    a=$(insns "$dep" 2000); b=$(insns "$dep" 0)
    echo "${m#*:},$(( (a - b) / 2000 ))" >> "$OUT/nested-insns.csv"
  done
  a=$(insns "${DIRECT[0]}" 2000); b=$(insns "${DIRECT[0]}" 0)
  echo "direct-c-call,$(( (a - b) / 2000 ))" >> "$OUT/nested-insns.csv"
  # Where a call's instructions go: callgrind's count per function with N
  # calls minus with 0, over N (functions at 1 or more per call).
  rm -f "$OUT/nested-insns-functions.csv"
  echo "mode,function,instructions_per_nested_call" > "$OUT/nested-insns-functions.csv"
  per_function() { # mode deploy
    local n
    for n in 2000 0; do
      valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$n" "$FF" run "$2" -- BenchCaller "$n" \
        > /dev/null 2>&1
      callgrind_annotate --auto=no --threshold=100 "$OUT/callgrind.$n" > "$OUT/callgrind.$n.txt"
    done
    python3 - "$1" "$OUT/callgrind.2000.txt" "$OUT/callgrind.0.txt" >> "$OUT/nested-insns-functions.csv" <<'PY'
import re, sys
def counts(path):
    c = {}
    for line in open(path):
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*?:\S+)", line)
        if m and ":" in m.group(2):
            fn = m.group(2).split(":", 1)[1].split(" [")[0]
            c[fn] = c.get(fn, 0) + int(m.group(1).replace(",", ""))
    return c
a, b = counts(sys.argv[2]), counts(sys.argv[3])
for fn in sorted(a, key=lambda f: -(a[f] - b.get(f, 0))):
    per = (a[fn] - b.get(fn, 0)) / 2000
    if per >= 1:
        print(f'{sys.argv[1]},"{fn}",{per:.1f}')
PY
    rm -f "$OUT"/callgrind.*
  }
  if command -v callgrind_annotate > /dev/null; then
    per_function fused-tier2 "BenchCaller=$OUT/libbenchcaller.fused-direct.so"
    per_function direct-c-call "${DIRECT[0]}"
  fi
fi

python3 - "$OUT/nested.csv" <<'PY'
import csv, statistics, sys
runs = {}
for r in csv.DictReader(open(sys.argv[1])):
    runs.setdefault(r["mode"], []).append(float(r["ns_per_nested_call"]))
rows = {m: statistics.median(v) for m, v in runs.items()}
print(f'{"mode":<20} {"ns per nested call: median":>28} {"min-max":>22}  ({len(next(iter(runs.values())))} repeats)')
for m, v in rows.items():
    print(f"{m:<20} {v:>28.1f} {min(runs[m]):>10.1f}-{max(runs[m]):<10.1f}")
ipc, direct = rows["unfused-ipc"], rows["direct-c-call"]
t0, t2 = rows["fused-tier0"], rows["fused-tier2"]
print("\nratios of medians:")
print(f"unfused IPC / fused tier 0:    {ipc / max(t0, 0.01):,.0f}x")
print(f"unfused IPC / fused tier 2:    {ipc / max(t2, 0.01):,.0f}x")
print(f"tier 0 over direct C call:     {t0 - direct:.1f} ns")
print(f"tier 2 over direct C call:     {t2 - direct:.1f} ns")
print(f"tier 2 / direct C call:        {t2 / max(direct, 0.01):.1f}x")
print(f"--isolate stack over tier 2:   {rows['fused-tier2-isolate-stack'] - t2:.1f} ns")
ins = list(csv.DictReader(open(sys.argv[1].replace("nested.csv", "nested-insns.csv"))))
if ins:
    print(f'\n{"mode":<20} {"instructions per nested call":>30}')
    for r in ins:
        print(f'{r["mode"]:<20} {r["instructions_per_nested_call"]:>30}')
import os
fns = sys.argv[1].replace("nested.csv", "nested-insns-functions.csv")
if os.path.exists(fns):
    print("\ninstructions per nested call, by function (callgrind):")
    for r in csv.DictReader(open(fns)):
        print(f'{r["mode"]:<20} {r["instructions_per_nested_call"]:>8}  {r["function"]}')
PY
python3 - "$OUT/nested.csv" > "$OUT/nested-plot.csv" <<'PY'
import csv, sys
import statistics
runs = {}
for r in csv.DictReader(open(sys.argv[1])):
    runs.setdefault(r["mode"], []).append(float(r["ns_per_nested_call"]))
print("mode,ns_per_nested_call")
for m, v in runs.items():
    print(f"{m},{statistics.median(v):.2f}")
PY
python3 scripts/plot.py bars "$OUT/nested-plot.csv" "$OUT/nested.svg" mode ns_per_nested_call \
  --title "cost of one nested call" --unit ns
echo "wrote $OUT/nested.csv, $OUT/nested-insns.csv, $OUT/nested.svg"
