#!/usr/bin/env bash
# perf.data ingestion: faasfuse against perf2bolt-16 on the same LBR profile
# of SIZE_MB megabytes (default 1100), generated over the chain workflow's
# four libraries (`faasfuse __gen-lbr`, four processes). Measures wall time,
# throughput and peak RSS of
#   - faasfuse profile: every library in one pass (JSON profile and .fdata);
#   - faasfuse profile with one library (what perf2bolt does per run);
#   - perf2bolt-16 with one library (it reads one binary per run);
# and checks that both tools write the same .fdata for that library.
#
# Usage: scripts/bench-profile.sh [SIZE_MB]     Writes out/bench/profile.csv and profile.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1100}
OUT=out/bench/profile
mkdir -p "$OUT"
cargo build --release --quiet
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$PWD/$TARGET ;; esac
FF=$TARGET/release/faasfuse
PERF2BOLT=/usr/lib/llvm-16/bin/perf2bolt

bash scripts/build-fixtures.sh "$OUT/fx" > /dev/null
D=$OUT/fx/default
LIBS=(Parse="$D/libparse.so" Validate="$D/libvalidate.so" Enrich="$D/libenrich.so" Store="$D/libstore.so")
DATA=$OUT/lbr.data
if [ ! -f "$DATA" ] || [ "$(stat -c %s "$DATA")" -lt $((SIZE * 1000000)) ]; then
  "$FF" __gen-lbr -o "$DATA" --size-mb "$SIZE" "$D/libparse.so" "$D/libvalidate.so" "$D/libenrich.so" "$D/libstore.so"
fi
BYTES=$(stat -c %s "$DATA")
CSV=out/bench/profile.csv
echo "tool,images,file_bytes,seconds,mb_per_s,peak_rss_kb" > "$CSV"

measure() { # label images command...
  local label="$1" images="$2"; shift 2
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  cat "$DATA" > /dev/null # same warm page cache for every tool
  /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" > "$OUT/$label.log" 2>&1
  read -r secs rss < "$OUT/time.txt"
  python3 -c "import sys; s=float(sys.argv[2]); print(f'{sys.argv[1]},{sys.argv[3]},{sys.argv[4]},{s:.2f},{int(sys.argv[4])/1e6/s:.1f},{sys.argv[5]}')" \
    "$label" "$secs" "$images" "$BYTES" "$rss" >> "$CSV"
}

LIBARGS=()
for l in "${LIBS[@]}"; do LIBARGS+=(--lib "$l"); done
measure faasfuse-all 4 "$FF" profile "$DATA" "${LIBARGS[@]}" -o "$OUT/profile.json" --fdata-dir "$OUT/fdata"
measure faasfuse-one 1 "$FF" profile "$DATA" --lib "${LIBS[0]}" --fdata-dir "$OUT/fdata-one"
if [ -x "$PERF2BOLT" ]; then
  measure perf2bolt-one 1 "$PERF2BOLT" "$D/libparse.so" -p "$DATA" -o "$OUT/parse.perf2bolt.fdata"
  if diff <(sort "$OUT/fdata-one/Parse.fdata") <(sort "$OUT/parse.perf2bolt.fdata") > /dev/null; then
    echo "Parse.fdata: identical to perf2bolt's ($(wc -l < "$OUT/fdata-one/Parse.fdata") lines)"
  else
    echo "Parse.fdata: differs from perf2bolt's" >&2
  fi
else
  echo "perf2bolt-16 not installed (Debian bolt-16): faasfuse only" >&2
fi
column -s, -t "$CSV"
python3 scripts/plot.py bars "$CSV" out/bench/profile.svg tool mb_per_s \
  --title "profile ingestion throughput (same perf.data)" --unit MB/s
echo "wrote $CSV, out/bench/profile.svg"
