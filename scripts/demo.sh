#!/usr/bin/env bash
# The main job on the bundled example functions: build faasfuse and the
# example function libraries, show the RPC sites faasfuse finds, serve every
# workflow unfused (one worker process per function, real IPC), fuse each
# workflow's root with its callees, serve the fused root alone under the same
# load, check both give identical outputs, and print a before/after table.
#
# Usage: scripts/demo.sh [ROUNDS]   (default 200 rounds over 64 inputs)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-200}"
OUT=out/demo
mkdir -p "$OUT/fused"

cargo build --release --quiet
FF=target/release/faasfuse
scripts/build-fixtures.sh "$OUT/lib" > /dev/null
LIB="$OUT/lib/default"

echo "== RPC call sites (faasfuse inspect)"
for so in "$LIB"/*.so; do
  "$FF" inspect --json "$so" | python3 -c '
import json, sys
r = json.load(sys.stdin)
sites = ", ".join(s["callee"].get("name", "dynamic") + " in " + s["function"] for s in r["rpc_sites"])
print("  %-22s %s" % (r["path"].split("/")[-1], sites or "-"))'
done

# One line per workflow: name, root, NAME=LIB arguments root first; and its
# 64 request inputs built from the workflow's keywords.
python3 - "$LIB" "$OUT" <<'PY' > "$OUT/workflows.tsv"
import itertools, json, sys
lib, out = sys.argv[1], sys.argv[2]
words = ["alpha", "beta", "red shoes", "x", "12", "hello world"]
for w in json.load(open("fixtures/workflows.json"))["workflows"]:
    fns = sorted(w["functions"].items(), key=lambda kv: kv[0] != w["root"])
    kws = w["keywords"] or ["x"]
    combos = itertools.cycle(itertools.product(kws + words, words))
    with open(f"{out}/{w['name']}.inputs", "w") as f:
        for _ in range(64):
            a, b = next(combos)
            f.write(f"{a} {b}\n")
    print(w["name"], w["root"], " ".join(f"{n}={lib}/{l}" for n, l in fns), sep="\t")
PY

echo
echo "== Serving each workflow: $ROUNDS rounds of 64 requests, unfused (--ipc) vs fused root alone (--ipc)"
printf '%-8s %5s %5s %10s %10s %10s %10s %8s %9s %9s %9s  %s\n' \
  workflow procs after "p50 before" "p50 after" "p99 before" "p99 after" speedup "req/s bef" "req/s aft" "KB b/a" outputs
while IFS=$'\t' read -r name root libs; do
  # shellcheck disable=SC2086
  "$FF" run $libs --ipc --repeat "$ROUNDS" --inputs "$OUT/$name.inputs" --json -- "$root" > "$OUT/$name.unfused.json"
  # shellcheck disable=SC2086
  "$FF" merge $libs -o "$OUT/fused/$name.so" --manifest "$OUT/fused/$name.manifest.json" > /dev/null
  "$FF" run "$root=$OUT/fused/$name.so" --ipc --repeat "$ROUNDS" --inputs "$OUT/$name.inputs" --json -- "$root" > "$OUT/$name.fused.json"
  # shellcheck disable=SC2086
  python3 - "$OUT" "$name" $libs <<'PY'
import json, os, sys
out, name, libs = sys.argv[1], sys.argv[2], [a.split("=", 1)[1] for a in sys.argv[3:]]
b = json.load(open(f"{out}/{name}.unfused.json"))
a = json.load(open(f"{out}/{name}.fused.json"))
same = [(r["rc"], r["output"]) for r in b["results"]] == [(r["rc"], r["output"]) for r in a["results"]]
def us(r, k): return r["request_latency"][k] / 1000
def rps(r): return r["requests"] / (r["wall_ns"] / 1e9)
kb_b = sum(os.path.getsize(l) for l in libs) / 1024
kb_a = os.path.getsize(f"{out}/fused/{name}.so") / 1024
print(f'{name:8} {len(b["functions"]):5} {len(a["functions"]):5} '
      f'{us(b,"p50_ns"):8.1f}us {us(a,"p50_ns"):8.1f}us {us(b,"p99_ns"):8.1f}us {us(a,"p99_ns"):8.1f}us '
      f'{us(b,"p50_ns")/us(a,"p50_ns"):7.1f}x {rps(b):9.0f} {rps(a):9.0f} {kb_b:4.0f}/{kb_a:<4.0f}  '
      f'{"identical" if same else "DIFFER"}')
if not same:
    sys.exit(f"{name}: fused outputs differ from the unfused deployment")
PY
done < "$OUT/workflows.tsv"
echo
echo "procs: worker processes serving a request; KB b/a: sum of the input libraries / the fused image."
echo "Reports: $OUT/*.json; fused images and manifests: $OUT/fused/"
