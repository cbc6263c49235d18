#!/usr/bin/env bash
# Merge time, peak memory and output size against input size: the fixture
# workflows, then synthetic pairs of function libraries with SIZES megabytes
# of code each (default "1 4 20 50 100"): a scaling curve. Writes
# out/bench/merge.csv and out/bench/merge-time.svg, merge-memory.svg.
#
# Each merge runs REPS times (default 3), each run right after a run of
# `sha256sum` over the same input files: the CSV holds the median time and
# peak memory, the time's spread (min-max), sha256sum's median time and the
# merge's time over it (a ratio that holds on a busy machine where seconds
# alone do not).
#
# Usage: [REPS=3] [DEBUG_MB=20|0] scripts/bench-merge.sh [SIZES...]
# Writes out/bench/merge.csv; DEBUG_MB=0 skips the debug-info pair.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=("$@")
[ $# -eq 0 ] && SIZES=(1 4 20 50 100)
OUT=out/bench/merge
mkdir -p "$OUT"
cargo build --release --quiet
FF=${CARGO_TARGET_DIR:-$PWD/target}/release/faasfuse
CSV=out/bench/merge.csv
REPS="${REPS:-3}"
echo "case,input_bytes,output_bytes,size_overhead_pct,merge_seconds,merge_seconds_min,merge_seconds_max,peak_rss_kb,rss_over_input,sha256_seconds,time_over_sha256" > "$CSV"

measure() { # label out.so [NAME=]LIB...
  local label="$1" so="$2"; shift 2
  : > "$OUT/times.txt"
  : > "$OUT/sha-times.txt"
  local rep a files=()
  for a in "$@"; do files+=("${a#*=}"); done
  for rep in $(seq 1 "$REPS"); do
    /usr/bin/time -f "%e" -o "$OUT/time.txt" sha256sum "${files[@]}" > /dev/null
    cat "$OUT/time.txt" >> "$OUT/sha-times.txt"
    /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$FF" merge "$@" -o "$so" --json > "$OUT/m.json"
    cat "$OUT/time.txt" >> "$OUT/times.txt"
  done
  python3 - "$label" "$OUT/m.json" "$OUT/times.txt" "$OUT/sha-times.txt" >> "$CSV" <<'PY'
import json, statistics, sys
label, m = sys.argv[1], json.load(open(sys.argv[2]))
runs = [l.split() for l in open(sys.argv[3]) if l.strip()]
secs = [float(a) for a, _ in runs]
sha = statistics.median(float(l) for l in open(sys.argv[4]) if l.strip())
rss = int(statistics.median(int(b) for _, b in runs))
i, o = m["input_bytes"], m["output_bytes"]
t = statistics.median(secs)
ratio = f"{t / sha:.2f}" if sha > 0 else ""
print(f"{label},{i},{o},{100 * (o - i) / i:.1f},{t:.3f},{min(secs):.3f},{max(secs):.3f},{rss},{rss * 1024 / i:.2f},{sha:.3f},{ratio}")
PY
}

scripts/build-fixtures.sh out/bench/fixtures > /dev/null
python3 - out/bench/fixtures/default <<'PY' > "$OUT/workflows.txt"
import json, sys
for w in json.load(open("fixtures/workflows.json"))["workflows"]:
    fns = sorted(w["functions"].items(), key=lambda kv: kv[0] != w["root"])
    print(w["name"], " ".join(f"{n}={sys.argv[1]}/{l}" for n, l in fns))
PY
while read -r name args; do
  # shellcheck disable=SC2086
  measure "fixture-$name" "$OUT/$name.fused.so" $args
done < "$OUT/workflows.txt"

for mb in "${SIZES[@]}"; do
  d="$OUT/big$mb"; mkdir -p "$d"
  if [ ! -f "$d/libbigb.so" ]; then
    python3 benches/gen/biglib.py BigA BigB "$mb" "$d"
    python3 benches/gen/biglib.py BigB - "$mb" "$d"
    for n in BigA BigB; do
      gcc -shared -fPIC -O2 -Ifixtures/include "$d/$n.c" "$d/$n.S" -o "$d/lib${n,,}.so"
    done
  fi
  measure "synthetic-${mb}MB-x2" "$d/fused.so" BigA="$d/libbiga.so" BigB="$d/libbigb.so"
done

# Debug info: two libraries of DEBUG_MB megabytes each (default 20), built
# from C with -O2 -g, merged with their DWARF carried and with it stripped
# (the same code): what carrying every image's DWARF costs.
for mb in ${DEBUG_MB:-20}; do
  [ "$mb" = 0 ] && continue
  d="$OUT/debug$mb"; mkdir -p "$d"
  if [ ! -f "$d/libdbgb.nodebug.so" ]; then
    python3 benches/gen/biglib.py DbgA DbgB "$mb" "$d" debug
    python3 benches/gen/biglib.py DbgB - "$mb" "$d" debug
    # shellcheck disable=SC2016
    ls "$d"/Dbg*.c | xargs -P2 -I{} sh -c 'gcc -c -fPIC -O2 -g -Ifixtures/include "$1" -o "${1%.c}.o"' _ {}
    for n in DbgA DbgB; do
      gcc -shared -fPIC "$d/$n".o "$d/$n"-*.o -o "$d/lib${n,,}.so"
      objcopy --strip-debug "$d/lib${n,,}.so" "$d/lib${n,,}.nodebug.so"
    done
  fi
  measure "debug-${mb}MB-x2-g" "$d/fused.so" DbgA="$d/libdbga.so" DbgB="$d/libdbgb.so"
  measure "debug-${mb}MB-x2-stripped" "$d/fused-nodebug.so" DbgA="$d/libdbga.nodebug.so" DbgB="$d/libdbgb.nodebug.so"
done
column -s, -t "$CSV"
python3 - "$CSV" > out/bench/merge-scaling.csv <<'PY'
import csv, sys
print("input_mb,merge_seconds,peak_rss_mb,input_size_mb")
for r in csv.DictReader(open(sys.argv[1])):
    if r["case"].startswith("synthetic"):
        mb = int(r["input_bytes"]) / 1e6
        print(f'{mb:.2f},{max(float(r["merge_seconds"]), 0.001)},{int(r["peak_rss_kb"]) / 1024:.1f},{mb:.2f}')
PY
python3 scripts/plot.py lines out/bench/merge-scaling.csv out/bench/merge-time.svg input_mb merge_seconds \
  --title "merge time vs input size" --unit s
python3 scripts/plot.py lines out/bench/merge-scaling.csv out/bench/merge-memory.svg input_mb peak_rss_mb input_size_mb \
  --title "merge peak memory vs input size" --unit MB
