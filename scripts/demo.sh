#!/usr/bin/env bash
# The main job on the bundled example functions, start to finish:
#   1. build faasfuse and the example function libraries (gcc/g++);
#   2. serve every workflow on the unfused deployment (a pool of worker
#      processes per function, real IPC) under load, recording a profile with
#      `perf record --call-graph dwarf` (or, where perf is missing or not
#      permitted, the bundled fixtures/profile.json) and the platform's own
#      call trace;
#   3. `faasfuse profile`, then `faasfuse build`: plan fusion groups, merge,
#      verify, write the fused deployment; say whether that plan (sampled
#      counts, plus the edges only the platform trace names) equals the plan
#      from the trace's exact counts alone, or which callee decisions differ;
#   4. serve the same load on the fused deployment, check every output is
#      identical, and print a before/after table.
#
# Usage: scripts/demo.sh [ROUNDS]   (default 100 rounds of 64 requests per workflow)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-100}"
OUT=out/demo
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== Building faasfuse and the example functions"
cargo build --release --quiet
FF=$PWD/target/release/faasfuse
scripts/build-fixtures.sh "$OUT/lib" > /dev/null
LIB="$PWD/$OUT/lib/default"

# The deployment (every function of every workflow, roots as entries) and
# 64 requests per workflow.
python3 scripts/workflow-inputs.py "$LIB" "$OUT"

# serve CONFIG TAG: every workflow under load, one JSON report each.
serve() {
  while IFS=$'\t' read -r name root _; do
    "$FF" run --config "$1" --ipc --repeat "$ROUNDS" --inputs "$OUT/$name.inputs" --json \
      -- "$root" > "$OUT/$2-$name.json"
  done < "$OUT/workflows.tsv"
}
export -f serve
export FF OUT ROUNDS

echo "== Serving the unfused deployment ($ROUNDS x 64 requests per workflow, --ipc)"
serve "$OUT/func_config.json" before
PROFILES=("$OUT"/before-*.json)
echo "== Profiling it: perf record --call-graph dwarf (a shorter load)"
if command -v perf > /dev/null && perf record -q -o "$OUT/probe.data" -e cpu-clock -- true 2> "$OUT/perf-probe.txt"; then
  perf record -q -e cpu-clock -F 2000 --call-graph dwarf,16384 -o "$OUT/perf.data" \
    -- bash -c "ROUNDS=$(( (ROUNDS + 4) / 5 )) serve $OUT/func_config.json profiled" 2> "$OUT/perf-record.txt"
  LIBS=$(python3 -c 'import json,sys; print(" ".join("--lib %s=%s" % (e["funcName"], e["library"]) for e in json.load(open(sys.argv[1]))))' "$OUT/func_config.json")
  # shellcheck disable=SC2086
  "$FF" profile "$OUT/perf.data" $LIBS -o "$OUT/profile.json" > "$OUT/profile.txt"
  echo "   recorded $(du -h "$OUT/perf.data" | cut -f1) of perf.data; profile: $OUT/profile.json"
  PROFILES+=("$OUT/profile.json")
else
  echo "   perf cannot record here ($(head -1 "$OUT/perf-probe.txt" 2>/dev/null || echo 'not installed')); using fixtures/profile.json"
  PROFILES+=(fixtures/profile.json)
fi

echo "== faasfuse build"
"$FF" build --config "$OUT/func_config.json" --profile "${PROFILES[@]}" --out-dir "$OUT/fused" | sed 's/^/   /'

# The plan above counts calls from samples where a sample names the edge
# (the platform traces only add edges no sample names, e.g. RPCs whose
# callee name is computed at run time). Does it match the plan from the
# exact counts, the traces alone?
echo "== The plan from samples against the plan from exact counts (the traces alone)"
"$FF" plan --config "$OUT/func_config.json" --profile "$OUT"/before-*.json \
  -o "$OUT/plan-exact.json" > /dev/null
python3 - "$OUT/fused/plan.json" "$OUT/plan-exact.json" "${PROFILES[-1]}" <<'PY'
import json, sys
sampled, exact = (json.load(open(p)) for p in sys.argv[1:3])
def decisions(plan):
    return {(d["root"], d["function"]): d for d in plan["decisions"]}
def shares(plan, f):
    return ", ".join(f'{e["caller"]}->{f} {100 * e["share"]:.2f}% of its caller'
                     for e in plan["edges"] if e["callee"] == f) or "no edge"
ds, de = decisions(sampled), decisions(exact)
named = json.load(open(sys.argv[3])).get("calls", {})
edges = [(e["caller"], e["callee"]) for e in exact["edges"] if e["calls"] > 0]
seen = sum(1 for a, b in edges if named.get(a, {}).get(b, 0) > 0)
print(f"   samples name {seen} of the {len(edges)} edges the traces count; the traces add the other {len(edges) - seen}")
groups = lambda plan: {g["root"]: sorted(g["members"]) for g in plan["groups"]}
diff = [k for k in sorted(set(ds) | set(de))
        if (k in ds) != (k in de) or ds[k]["fused"] != de[k]["fused"]]
if not diff and groups(sampled) == groups(exact):
    print(f"   equal: samples ({sys.argv[3]}) plus trace-only edges give the plan the exact counts give: "
          f"{len(groups(exact))} groups, {len(de)} callee decisions")
else:
    print(f"   differ on {len(diff)} of {len(set(ds) | set(de))} callee decisions (samples: {sys.argv[3]}):")
    for root, f in diff:
        say = lambda d, plan: f'{d[(root, f)]["reason"]} ({shares(plan, f)})' \
            if (root, f) in d else "not a candidate"
        print(f"   {root} <- {f}:\n     from samples: {say(ds, sampled)}\n     from exact counts: {say(de, exact)}")
    for root in sorted(set(groups(sampled)) | set(groups(exact))):
        a, b = groups(sampled).get(root), groups(exact).get(root)
        if a != b:
            print(f"   group {root}: from samples {a}, from exact counts {b}")
PY

echo "== Serving the fused deployment (same load, --ipc)"
serve "$OUT/fused/func_config.json" after

# Loop calls itself. nightcore never re-enters a busy process, so by default
# that call stays an RPC (the plan says so) and Loop is not fused. Loop keeps
# no state across its nested call: declared re-entrant, its recursion runs
# inside one fused image.
echo "== The recursive workflow again, Loop declared \"reentrant\": true"
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
config = json.load(open(f"{out}/func_config.json"))
for e in config:
    if e["funcName"] == "Loop":
        e["reentrant"] = True
json.dump(config, open(f"{out}/func_config-reentrant.json", "w"), indent=2)
PY
"$FF" build --config "$OUT/func_config-reentrant.json" --profile "${PROFILES[@]}" \
  --out-dir "$OUT/fused-reentrant" > "$OUT/build-reentrant.txt"
grep -E "^ *Loop" "$OUT/build-reentrant.txt" | sed 's/^/   /' || true
"$FF" run --config "$OUT/fused-reentrant/func_config.json" --ipc --repeat "$ROUNDS" \
  --inputs "$OUT/recurse.inputs" --json -- Loop > "$OUT/after-reentrant-recurse.json"

echo
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
plan = json.load(open(f"{out}/fused/plan.json"))
groups = {g["root"]: g for g in plan["groups"]}
config = {e["funcName"]: e for e in json.load(open(f"{out}/func_config.json"))}
print(f'{"workflow":<9} {"procs":>9} {"p50 us":>17} {"p99 us":>19} {"req/s":>15} {"image KB":>13}  outputs')
bad = []
rows = [line.split("\t")[:3] for line in open(f"{out}/workflows.tsv")]
rows.append(["recurse", "Loop", "1", "reentrant"])
for name, root, nfun, *declared in rows:
    b = json.load(open(f"{out}/before-{name}.json"))
    a = json.load(open(f"{out}/after-{'reentrant-' if declared else ''}{name}.json"))
    if declared:
        groups = {g["root"]: g for g in json.load(open(f"{out}/fused-reentrant/plan.json"))["groups"]}
        name = "recurse*"
    else:
        groups = {g["root"]: g for g in plan["groups"]}
    same = [(r["rc"], r["output"]) for r in b["results"]] == [(r["rc"], r["output"]) for r in a["results"]]
    if not same:
        bad.append(name)
    members = groups.get(root, {}).get("members", [root])
    # Worker processes the workflow's requests used: of the root and of
    # every function the host relayed a call to (the pools start 1 each).
    procs = lambda r: sum(r["processes"].get(f, 1) for f in
                          {root} | {c for cs in r["calls"].values() for c in cs})
    q = lambda r, k: r["request_latency"][k] / 1000
    rps = lambda r: r["requests"] / (r["wall_ns"] / 1e9)
    kb_b = sum(os.path.getsize(config[m]["library"]) for m in members) / 1024
    fused = f"{out}/fused{'-reentrant' if declared else ''}/lib{root.lower()}.fused.so"
    kb_a = os.path.getsize(fused) / 1024 if os.path.exists(fused) else kb_b
    print(f'{name:<9} {procs(b):>4} -> {procs(a):<2} {q(b,"p50_ns"):>7.0f} -> {q(a,"p50_ns"):<6.0f} '
          f'{q(b,"p99_ns"):>8.0f} -> {q(a,"p99_ns"):<7.0f} {rps(b):>6.0f} -> {rps(a):<6.0f} '
          f'{kb_b:>5.0f} -> {kb_a:<5.0f}  {"identical" if same else "DIFFER"}')
print("\nprocs: worker processes the requests used; image KB: the group's libraries -> its fused image")
print("recurse: Loop's call to itself stays an RPC (nightcore never re-enters a busy process);")
print("recurse*: Loop declared re-entrant, so its recursion runs inside the fused image")
svg, dot = f"{out}/fused/graph.svg", f"{out}/fused/graph.dot"
print(f"plan: {out}/fused/plan.json   graph: {svg if os.path.exists(svg) else dot}")
if bad:
    sys.exit(f"fused outputs differ from the unfused deployment: {', '.join(bad)}")
PY
