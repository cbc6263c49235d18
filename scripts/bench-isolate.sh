#!/usr/bin/env bash
# Cost of one fused call (tier 2) under each isolation, side by side in one
# run on a machine with protection keys: `--isolate none`, `stack` and
# `mpk`. Per-call cost = (p50 with N nested calls - p50 with 0) / N; the
# three modes are measured REPS times in turn (default 5) and the summary
# gives medians and the differences to `none`.
#
# Where the CPU has no protection keys the measurement runs inside the
# emulated machine the tests use (qemu-system-x86_64 -accel tcg -cpu max,
# `faasfuse-testkit pku-run`): every instruction is emulated there, so its
# figures compare the modes with each other and nothing else; the summary
# says where it ran.
#
# Usage: [REPS=5] scripts/bench-isolate.sh [REPEAT]   (default 200 requests per point)
# Writes out/bench/isolate.csv.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT="${1:-200}"
REPS="${REPS:-5}"
OUT="$PWD/out/bench"
mkdir -p "$OUT"
cargo build --release --quiet --workspace
FF="$PWD/target/release/faasfuse"
CFLAGS="-shared -fPIC -O2 -Ifixtures/include"
for f in benchcaller benchcallee; do
  gcc $CFLAGS "benches/functions/$f.c" -o "$OUT/lib$f.so"
done
for mode in none stack mpk; do
  "$FF" merge BenchCaller="$OUT/libbenchcaller.so" BenchCallee="$OUT/libbenchcallee.so" \
    --isolate "$mode" -o "$OUT/libbenchcaller.isolate-$mode.so" > /dev/null
done

# The measurement, as one script for the machine with protection keys.
cat > "$OUT/isolate-run.sh" <<EOF
set -eu
p50() { # mode N
  "$FF" run BenchCaller="$OUT/libbenchcaller.isolate-\$1.so" --repeat "$REPEAT" --json -- BenchCaller "\$2" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["request_latency"]["p50_ns"])'
}
for rep in \$(seq 1 "$REPS"); do
  for mode in none stack mpk; do
    echo "\$rep,\$mode,10000,\$(p50 \$mode 10000),\$(p50 \$mode 0)"
  done
done
EOF
WHERE=native
if grep -qw pku /proc/cpuinfo && grep -qw ospke /proc/cpuinfo; then
  RAW=$(bash "$OUT/isolate-run.sh")
else
  WHERE="emulated (qemu-system-x86_64 -accel tcg -cpu max)"
  RAW=$(target/release/faasfuse-testkit pku-run -- bash "$OUT/isolate-run.sh")
fi
echo "rep,mode,nested_calls_per_request,p50_request_ns,p50_empty_request_ns" > "$OUT/isolate.csv"
echo "$RAW" | grep -E '^[0-9]+,(none|stack|mpk),' >> "$OUT/isolate.csv"
python3 - "$OUT/isolate.csv" "$WHERE" <<'PY'
import csv, statistics, sys
runs = {}
for r in csv.DictReader(open(sys.argv[1])):
    n = int(r["nested_calls_per_request"])
    per = max(int(r["p50_request_ns"]) - int(r["p50_empty_request_ns"]), 0) / n
    runs.setdefault(r["mode"], []).append(per)
if set(runs) != {"none", "stack", "mpk"}:
    sys.exit(f"missing modes in {sys.argv[1]}: {sorted(runs)}")
print(f"where: {sys.argv[2]}")
med = {m: statistics.median(v) for m, v in runs.items()}
print(f'{"mode":<8} {"ns per fused call: median":>26} {"min-max":>20}  ({len(runs["none"])} repeats)')
for m in ["none", "stack", "mpk"]:
    print(f"{m:<8} {med[m]:>26.1f} {min(runs[m]):>9.1f}-{max(runs[m]):<9.1f}")
print(f"\nstack over none: {med['stack'] - med['none']:.1f} ns")
print(f"mpk over none:   {med['mpk'] - med['none']:.1f} ns")
print(f"mpk over stack:  {med['mpk'] - med['stack']:.1f} ns")
PY
