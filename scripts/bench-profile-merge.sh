#!/usr/bin/env bash
# `faasfuse profile merge` of a fleet's per-host profiles: time and peak RSS
# of merging N = 10, 100 and 1000 per-host profile JSONs, and the checks
# that go with them:
#   - memory is bounded by the distinct keys, not by the number of hosts:
#     every host's profile draws its branches, sites and functions from
#     the same key set (IMAGES images of BRANCHES branches each; a host
#     sees a random KEEP % of them), so the peak RSS of merging 1000 stays
#     within 1.5x that of merging 100 (one input is read at a time);
#   - the result does not depend on the order: the 1000 merged in reverse
#     and in a shuffled order give the same bytes.
# The per-host profiles are synthetic (their counts random, their keys
# shared); tests/profile.rs checks on real recordings that merging per-host
# profiles equals profiling all their perf.data files at once, and that
# any grouping and order give the same bytes.
#
# The host profiles are kept for the next run (REGENERATE=1 to make them anew).
# Usage: [IMAGES=8] [BRANCHES=4000] [KEEP=50] [HOSTS="10 100 1000"] scripts/bench-profile-merge.sh
# Writes out/bench/profile-merge.csv (hosts, seconds, peak RSS in KiB, input MB).
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGES=${IMAGES:-8}
BRANCHES=${BRANCHES:-4000}
KEEP=${KEEP:-50}
HOSTS=${HOSTS:-"10 100 1000"}
FF=${FAASFUSE:-target/release/faasfuse}
[ -x "$FF" ] || cargo build --release --bin faasfuse
OUT=out/bench/profile-merge
mkdir -p "$OUT/hosts"
MAX=0
for n in $HOSTS; do [ "$n" -gt "$MAX" ] && MAX=$n; done

if [ "$(ls "$OUT/hosts" | wc -l)" -ne "$MAX" ] || [ -n "${REGENERATE:-}" ]; then
rm -f "$OUT"/hosts/*.json
echo "== generating $MAX per-host profiles ($IMAGES images x $BRANCHES branches, $KEEP% per host)"
python3 - "$OUT/hosts" "$MAX" "$IMAGES" "$BRANCHES" "$KEEP" <<'EOF'
import json, random, sys
out, hosts, images, branches, keep = sys.argv[1], *map(int, sys.argv[2:])
names = [f"Fn{i}" for i in range(images)]
for h in range(hosts):
    r = random.Random(h)
    imgs, samples = {}, 0
    for i, name in enumerate(names):
        bs = [b for b in range(branches) if r.randrange(100) < keep]
        br = [{"from": 0x1000 + 16 * b, "to": 0x1000 + 16 * ((b * 7) % branches),
               "count": r.randrange(1, 1000), "mispred": r.randrange(0, 10)} for b in bs]
        fns = {f"f{k}": {"samples": r.randrange(0, 50), "attributed": r.randrange(50, 100)}
               for k in range(64) if r.randrange(100) < keep}
        s = sum(f["samples"] for f in fns.values())
        samples += s
        callee = names[(i + 1) % images]
        imgs[name] = {
            "path": f"/srv/fleet/lib{name.lower()}.so",
            "build_id": f"{i:040x}",
            "mapped_as": [f"/srv/fleet/lib{name.lower()}.so"],
            "samples": s,
            "attributed_samples": sum(f["attributed"] for f in fns.values()),
            "addresses": [{"address": 0x1000 + 16 * b, "count": r.randrange(1, 9)} for b in bs[:200]],
            "functions": fns,
            "branches": br,
            "fallthroughs": [],
            "calls": [{"caller": "f0", "callee": f"f{k}", "count": r.randrange(1, 99)} for k in range(1, 16)],
            "rpc_sites": [{"address": 0x2000 + 32 * k, "function": "f0", "callee": callee,
                           "branch_count": r.randrange(0, 5000), "sample_count": 0} for k in range(4)],
        }
    p = {"format": "faasfuse-profile", "version": 1, "sources": [f"host{h:04}.data"],
         "stats": {"samples": samples, "lbr_samples": samples, "callchain_samples": 0,
                   "dwarf_samples": 0, "branches": samples * 8, "matched_samples": samples,
                   "lost_samples": 0, "records": samples + 100, "bad_records": 0,
                   "unwind_failures": 0},
         "calls": {}, "cpu": {}, "external": {}, "images": imgs,
         "unmatched": {"[kernel]": r.randrange(0, 100)}}
    with open(f"{out}/host{h:04}.json", "w") as f:
        json.dump(p, f, separators=(",", ":"))
EOF
fi

CSV=out/bench/profile-merge.csv
echo "hosts,seconds,peak_rss_kib,input_mb" > "$CSV"
measure() { # measure TAG FILES...: prints "seconds rss_kib"
  local tag=$1; shift
  /usr/bin/time -v "$FF" profile merge "$@" -o "$OUT/$tag.json" > /dev/null 2> "$OUT/$tag.time"
  awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = t[n] + 60 * t[n-1]} /Maximum resident set size/ {r = $2} END {print s, r}' "$OUT/$tag.time"
}
declare -A RSS
ALL=("$OUT"/hosts/host*.json)
for n in $HOSTS; do
  files=("${ALL[@]:0:$n}")
  mb=$(du -cm "${files[@]}" | tail -1 | cut -f1)
  read -r secs rss < <(measure "merged-$n" "${files[@]}")
  RSS[$n]=$rss
  echo "$n,$secs,$rss,$mb" >> "$CSV"
  echo "merge of $n host profiles ($mb MB): $secs s, peak RSS $((rss / 1024)) MiB"
done

echo "== order: reversed and shuffled"
files=("${ALL[@]:0:$MAX}")
measure reversed $(printf '%s\n' "${files[@]}" | tac) > /dev/null
measure shuffled $(printf '%s\n' "${files[@]}" | shuf --random-source=<(yes)) > /dev/null
cmp "$OUT/merged-$MAX.json" "$OUT/reversed.json"
cmp "$OUT/merged-$MAX.json" "$OUT/shuffled.json"
echo "same bytes in every order"

if [ -n "${RSS[100]:-}" ] && [ -n "${RSS[1000]:-}" ]; then
  if [ $((RSS[1000] * 2)) -gt $((RSS[100] * 3)) ]; then
    echo "FAIL: peak RSS of 1000 hosts (${RSS[1000]} KiB) is over 1.5x that of 100 (${RSS[100]} KiB)" >&2
    exit 1
  fi
  echo "memory bounded by the distinct keys: 1000 hosts ${RSS[1000]} KiB, 100 hosts ${RSS[100]} KiB"
fi
echo "written $CSV"
