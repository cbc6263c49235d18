#!/usr/bin/env bash
# Cost of one nested call, measured side by side in one run: unfused over
# IPC (a pool of worker processes per function), unfused in one process, fused at
# each lowering tier (0: indirect call through the runtime's dispatcher,
# 1: direct call of the dispatcher, 2: direct call of the callee's entry
# stub), and a direct C call in one library (the physical limit). Per-call cost = (p50 with N nested calls - p50 with 0) / N.
#
# Usage: scripts/bench-nested.sh [REPEAT]    (default 200 requests per point)
# Writes out/bench/nested.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT="${1:-200}"
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

p50() { # deploy... -- N : prints request p50 in ns
  local n="${*: -1}"; local args=("${@:1:$#-1}")
  "$FF" run "${args[@]}" --repeat "$REPEAT" --json -- BenchCaller "$n" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["request_latency"]["p50_ns"])'
}

UNFUSED=(BenchCaller="$OUT/libbenchcaller.so" BenchCallee="$OUT/libbenchcallee.so")
DIRECT=(BenchCaller="$OUT/libbenchdirect.so")

echo "mode,nested_calls_per_request,p50_request_ns,p50_empty_request_ns,ns_per_nested_call" > "$OUT/nested.csv"
row() { # label n deploy...
  local label="$1" n="$2"; shift 2
  local full empty
  full=$(p50 "$@" "$n"); empty=$(p50 "$@" 0)
  python3 - "$label" "$n" "$full" "$empty" >> "$OUT/nested.csv" <<'PY'
import sys
label, n, full, empty = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"{label},{n},{full},{empty},{max(full - empty, 0) / n:.2f}")
PY
}
row unfused-ipc 100 "${UNFUSED[@]}" --ipc
row unfused-in-process 1000 "${UNFUSED[@]}"
row fused-tier0 10000 BenchCaller="$OUT/libbenchcaller.fused-none.so"
row fused-tier1 10000 BenchCaller="$OUT/libbenchcaller.fused-dispatch.so"
row fused-tier2 10000 BenchCaller="$OUT/libbenchcaller.fused-direct.so"
row direct-c-call 10000 "${DIRECT[@]}"

# Instructions per nested call (callgrind counts instructions, so this is
# repeatable on a busy machine): (count with N calls - count with 0) / N.
insns() { # deploy -- N : prints instructions executed
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$FF" run "$1" -- BenchCaller "$2" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "mode,instructions_per_nested_call" > "$OUT/nested-insns.csv"
if command -v valgrind > /dev/null; then
  for m in none:fused-tier0 dispatch:fused-tier1 direct:fused-tier2; do
    dep="BenchCaller=$OUT/libbenchcaller.fused-${m%%:*}.so"
    a=$(insns "$dep" 2000); b=$(insns "$dep" 0)
    echo "${m#*:},$(( (a - b) / 2000 ))" >> "$OUT/nested-insns.csv"
  done
  a=$(insns "${DIRECT[0]}" 2000); b=$(insns "${DIRECT[0]}" 0)
  echo "direct-c-call,$(( (a - b) / 2000 ))" >> "$OUT/nested-insns.csv"
fi

python3 - "$OUT/nested.csv" <<'PY'
import csv, sys
rows = {r["mode"]: float(r["ns_per_nested_call"]) for r in csv.DictReader(open(sys.argv[1]))}
print(f'{"mode":<20} {"ns per nested call":>20}')
for m, v in rows.items():
    print(f"{m:<20} {v:>20.1f}")
ipc, direct = rows["unfused-ipc"], rows["direct-c-call"]
t0, t2 = rows["fused-tier0"], rows["fused-tier2"]
print(f"\nunfused IPC / fused tier 0:    {ipc / max(t0, 0.01):,.0f}x")
print(f"unfused IPC / fused tier 2:    {ipc / max(t2, 0.01):,.0f}x")
print(f"tier 0 over direct C call:     {t0 - direct:.1f} ns")
print(f"tier 2 over direct C call:     {t2 - direct:.1f} ns")
print(f"tier 2 / direct C call:        {t2 / max(direct, 0.01):.1f}x")
ins = list(csv.DictReader(open(sys.argv[1].replace("nested.csv", "nested-insns.csv"))))
if ins:
    print(f'\n{"mode":<20} {"instructions per nested call":>30}')
    for r in ins:
        print(f'{r["mode"]:<20} {r["instructions_per_nested_call"]:>30}')
PY
python3 - "$OUT/nested.csv" > "$OUT/nested-plot.csv" <<'PY'
import csv, sys
print("mode,ns_per_nested_call")
for r in csv.DictReader(open(sys.argv[1])):
    print(f'{r["mode"]},{r["ns_per_nested_call"]}')
PY
python3 scripts/plot.py bars "$OUT/nested-plot.csv" "$OUT/nested.svg" mode ns_per_nested_call \
  --title "cost of one nested call" --unit ns
echo "wrote $OUT/nested.csv, $OUT/nested-insns.csv, $OUT/nested.svg"
