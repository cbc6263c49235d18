#!/usr/bin/env bash
# Cost of one nested call, measured side by side in one run: unfused over
# IPC (one worker process per function), unfused in one process, fused
# (through the fusion runtime), and a direct C call in one library (the
# physical limit). Per-call cost = (p50 with N nested calls - p50 with 0) / N.
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
"$FF" merge BenchCaller="$OUT/libbenchcaller.so" BenchCallee="$OUT/libbenchcallee.so" \
  -o "$OUT/libbenchcaller.fused.so" > /dev/null

p50() { # deploy... -- N : prints request p50 in ns
  local n="${*: -1}"; local args=("${@:1:$#-1}")
  "$FF" run "${args[@]}" --repeat "$REPEAT" --json -- BenchCaller "$n" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["request_latency"]["p50_ns"])'
}

UNFUSED=(BenchCaller="$OUT/libbenchcaller.so" BenchCallee="$OUT/libbenchcallee.so")
FUSED=(BenchCaller="$OUT/libbenchcaller.fused.so")
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
row fused 10000 "${FUSED[@]}"
row direct-c-call 10000 "${DIRECT[@]}"

python3 - "$OUT/nested.csv" <<'PY'
import csv, sys
rows = {r["mode"]: float(r["ns_per_nested_call"]) for r in csv.DictReader(open(sys.argv[1]))}
print(f'{"mode":<20} {"ns per nested call":>20}')
for m, v in rows.items():
    print(f"{m:<20} {v:>20.1f}")
ipc, fused, direct = rows["unfused-ipc"], rows["fused"], rows["direct-c-call"]
print(f"\nunfused IPC / fused:           {ipc / max(fused, 0.01):,.0f}x")
print(f"fused overhead over direct C:  {fused - direct:.1f} ns")
PY
