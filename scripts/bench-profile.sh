#!/usr/bin/env bash
# perf.data ingestion: faasfuse against perf2bolt-16 on the same LBR
# profiles of SIZE_MB megabytes (default 1100), three datasets:
#   - toy: the chain workflow's four libraries, `faasfuse-testkit gen-lbr` (four
#     processes, independent entries over ~100 branch sites: a table that
#     never grows);
#   - diverse: one 11.7 MB branchy synthetic library
#     (`benches/gen/biglib.py BigA - 10 DIR branchy`, 1.1 million branch
#     sites), `faasfuse-testkit gen-lbr --mode diverse` (four processes, Zipf-distributed
#     walks: 1.1 million distinct branches, 8.4 million distinct traces);
#   - diverse-big: the same over a 117 MB library (100 MB of code, 11
#     million sites): 7.5 million distinct branches, 17 million traces
#     (perf2bolt-16 runs out of memory on it with 23 GB).
# Each run is repeated REPS times (default 3; perf2bolt on the diverse
# profiles P2B_REPS times, default REPS), every tool once per round and the
# rounds in turn, reporting the median and the spread (min-max) of wall
# time, throughput and peak RSS of
#   - faasfuse profile: every library in one pass (JSON profile and .fdata);
#   - faasfuse profile --fdata-dir with one library (what perf2bolt does);
#   - perf2bolt-16 with one library (it reads one binary per run);
# and checks that both tools write the same .fdata for that library.
#
# Usage: [REPS=3] [P2B_REPS=N] [DATASETS="toy diverse diverse-big"] scripts/bench-profile.sh [SIZE_MB]
# Writes out/bench/profile-DATASET.csv (every run; datasets not run keep
# theirs), profile-summary.csv (all datasets) and profile.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1100}
REPS=${REPS:-3}
P2B_REPS=${P2B_REPS:-$REPS}
DATASETS=${DATASETS:-toy diverse diverse-big}
OUT=out/bench/profile
mkdir -p "$OUT"
cargo build --release --quiet --workspace --bins
TARGET=${CARGO_TARGET_DIR:-target}
case "$TARGET" in /*) ;; *) TARGET=$PWD/$TARGET ;; esac
FF=$TARGET/release/faasfuse
TK=$TARGET/release/faasfuse-testkit
PERF2BOLT=/usr/lib/llvm-16/bin/perf2bolt

measure() { # dataset label images rep command... : one run, round `rep`
  local ds="$1" label="$2" images="$3" rep="$4"; shift 4
  {
    cat "$DATA" > /dev/null # same warm page cache for every tool
    if ! /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$@" > "$OUT/$ds-$label.log" 2>&1; then
      echo "$ds $label: failed ($(head -1 "$OUT/time.txt"); $(tail -1 "$OUT/time.txt") s and KB)" >&2
      echo "$ds,$label-FAILED,$images,$rep,$BYTES,$(tail -1 "$OUT/time.txt" | tr ' ' ','),0" >> "$CSV.failed"
      return 1
    fi
    read -r secs rss < <(tail -1 "$OUT/time.txt")
    python3 -c "import sys; s=max(float(sys.argv[3]), 0.01); print(f'{sys.argv[1]},{sys.argv[2]},{sys.argv[4]},{sys.argv[6]},{sys.argv[5]},{s:.2f},{int(sys.argv[5])/1e6/s:.1f},{sys.argv[7]}')" \
      "$ds" "$label" "$secs" "$images" "$BYTES" "$rep" "$rss" >> "$CSV"
  }
}

check_fdata() { # ours theirs
  if diff <(sort "$1") <(sort "$2") > /dev/null; then
    echo "$1: identical to perf2bolt's ($(wc -l < "$1") lines)"
  else
    echo "$1: differs from perf2bolt's" >&2
  fi
}

for ds in $DATASETS; do
  case $ds in
    toy)
      bash scripts/build-fixtures.sh "$OUT/fx" > /dev/null
      D=$OUT/fx/default
      LIBS=(Parse="$D/libparse.so" Validate="$D/libvalidate.so" Enrich="$D/libenrich.so" Store="$D/libstore.so")
      DATA=$OUT/lbr.data
      GEN=("$TK" gen-lbr -o "$DATA" --size-mb "$SIZE" "$D/libparse.so" "$D/libvalidate.so" "$D/libenrich.so" "$D/libstore.so")
      ;;
    diverse | diverse-big)
      if [ "$ds" = diverse ]; then D=$OUT/mid MB=10; else D=$OUT/big MB=100; fi
      mkdir -p "$D"
      if [ ! -f "$D/libbiga.so" ]; then
        python3 benches/gen/biglib.py BigA - "$MB" "$D" branchy
        gcc -shared -fPIC -O2 -Ifixtures/include "$D/BigA.c" "$D/BigA.S" -o "$D/libbiga.so"
        rm -f "$D/BigA.S"
      fi
      LIBS=(BigA="$D/libbiga.so")
      DATA=$D/lbr-diverse.data
      GEN=("$TK" gen-lbr --mode diverse -o "$DATA" --size-mb "$SIZE" "$D/libbiga.so")
      ;;
    *) echo "unknown dataset $ds" >&2; exit 2 ;;
  esac
  if [ ! -f "$DATA" ] || [ "$(stat -c %s "$DATA")" -lt $((SIZE * 1000000)) ]; then
    "${GEN[@]}"
  fi
  BYTES=$(stat -c %s "$DATA")
  CSV=out/bench/profile-$ds.csv
  echo "dataset,tool,images,rep,file_bytes,seconds,mb_per_s,peak_rss_kb" > "$CSV"
  rm -f "$CSV.failed"
  LIBARGS=()
  for l in "${LIBS[@]}"; do LIBARGS+=(--lib "$l"); done
  ONE=${LIBS[0]%%=*}
  ONE_SO=${LIBS[0]#*=}
  p2b_reps=$REPS
  [ "$ds" != toy ] && p2b_reps=$P2B_REPS
  [ -x "$PERF2BOLT" ] || { p2b_reps=0; echo "perf2bolt-16 not installed (Debian bolt-16): faasfuse only" >&2; }
  rm -f "$OUT/$ds.perf2bolt.fdata"
  p2b_ok=1
  # Every tool once per round, the rounds in turn, so that each sees the
  # same machine (a drift in its speed hits every tool alike).
  for rep in $(seq 1 "$REPS"); do
    measure "$ds" faasfuse-all "${#LIBS[@]}" "$rep" "$FF" profile "$DATA" "${LIBARGS[@]}" -o "$OUT/$ds-profile.json" --fdata-dir "$OUT/$ds-fdata"
    measure "$ds" faasfuse-one 1 "$rep" "$FF" profile "$DATA" --lib "${LIBS[0]}" --fdata-dir "$OUT/$ds-fdata-one"
    measure "$ds" faasfuse-one-1thread 1 "$rep" env FAASFUSE_THREADS=1 "$FF" profile "$DATA" --lib "${LIBS[0]}" --fdata-dir "$OUT/$ds-fdata-one"
    if [ "$rep" -le "$p2b_reps" ] && [ "$p2b_ok" = 1 ]; then
      measure "$ds" perf2bolt-one 1 "$rep" "$PERF2BOLT" "$ONE_SO" -p "$DATA" -o "$OUT/$ds.perf2bolt.fdata" || p2b_ok=0
    fi
  done
  if [ "$p2b_reps" -gt 0 ] && [ "$p2b_ok" = 1 ]; then
    check_fdata "$OUT/$ds-fdata-one/$ONE.fdata" "$OUT/$ds.perf2bolt.fdata"
  fi
done

SUMMARY=out/bench/profile-summary.csv
python3 - out/bench/profile-*.csv > "$SUMMARY" <<'PY'
import csv, statistics, sys
rows = [r for f in sys.argv[1:] for r in csv.DictReader(open(f))]
groups = {}
for r in rows:
    groups.setdefault((r["dataset"], r["tool"]), []).append(r)
print("dataset,tool,images,runs,median_s,min_s,max_s,median_mb_per_s,median_peak_rss_mb,label")
for (ds, tool), rs in groups.items():
    s = [float(r["seconds"]) for r in rs]
    mb = [float(r["mb_per_s"]) for r in rs]
    rss = [int(r["peak_rss_kb"]) / 1024 for r in rs]
    print(f"{ds},{tool},{rs[0]['images']},{len(rs)},{statistics.median(s):.2f},{min(s):.2f},{max(s):.2f},"
          f"{statistics.median(mb):.1f},{statistics.median(rss):.0f},{ds} {tool}")
PY
column -s, -t "$SUMMARY"
python3 scripts/plot.py bars "$SUMMARY" out/bench/profile.svg label median_mb_per_s \
  --title "profile ingestion throughput (same perf.data, median)" --unit MB/s
cat out/bench/profile-*.csv.failed 2>/dev/null || true
echo "wrote out/bench/profile-*.csv, $SUMMARY, out/bench/profile.svg"
