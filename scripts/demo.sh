#!/usr/bin/env bash
# The main job on the bundled example functions: build faasfuse and the
# example function libraries, inspect them, and serve every workflow on the
# local FaaS host in one process and as one worker process per function
# (--ipc, real RPCs), printing the latency of each.
#
# Usage: scripts/demo.sh [REQUESTS]   (default 2000 requests per workflow)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
OUT=out/demo

cargo build --release --quiet
FF=target/release/faasfuse
scripts/build-fixtures.sh "$OUT/lib"
LIB="$OUT/lib/default"

python3 - "$LIB" <<'PY' > "$OUT/workflows.tsv"
import json, sys
for w in json.load(open("fixtures/workflows.json"))["workflows"]:
    libs = " ".join(f"{n}={sys.argv[1]}/{l}" for n, l in w["functions"].items())
    print(f'{w["name"]}\t{w["root"]}\t{libs}\t{w["keywords"][0] if w["keywords"] else "x"}')
PY

echo "== RPC call sites found by faasfuse inspect"
for so in "$LIB"/*.so; do
  "$FF" inspect --json "$so" | python3 -c '
import json, sys
r = json.load(sys.stdin)
sites = ", ".join(f"{s[\"callee\"].get(\"name\", \"dynamic\")} in {s[\"function\"]}" for s in r["rpc_sites"])
print(f"  {r[\"path\"].split(\"/\")[-1]:22} {sites or \"-\"}")'
done

echo
echo "== Serving $N requests per workflow"
printf '%-10s %-6s %12s %12s %14s %14s\n' workflow mode "req p50" "req p99" "nested p50" "nested p99"
while IFS=$'\t' read -r name root libs kw; do
  for mode in in-process ipc; do
    flag=""; [ "$mode" = ipc ] && flag="--ipc"
    # shellcheck disable=SC2086
    "$FF" run $libs $flag --repeat "$N" --json -- "$root" "hello world" "$kw 3 items" > "$OUT/$name-$mode.json"
    python3 - "$OUT/$name-$mode.json" "$name" "$mode" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
def us(p, k): return f'{p[k]/1000:.1f} us' if p else '-'
q, n = r["request_latency"], r["nested_call_latency"]
print(f'{sys.argv[2]:10} {sys.argv[3][:6]:6} {us(q,"p50_ns"):>12} {us(q,"p99_ns"):>12} {us(n,"p50_ns"):>14} {us(n,"p99_ns"):>14}')
PY
  done
done < "$OUT/workflows.tsv"
echo
echo "Reports: $OUT/*.json"
