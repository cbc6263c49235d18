#!/usr/bin/env bash
# The example workflows on the real nightcore stack (gateway, engine,
# launchers, func_worker_v1 from $NIGHTCORE_BIN), unfused and fused side by
# side in one run: both stacks up at once, each round serving every
# workflow at every closed-loop concurrency on one and then the other, the
# order alternating by round. Per run: p50/p99 latency, throughput, CPU
# time per request of every process of the stack, and the resident memory
# (RSS and PSS) of the function processes.
#
# The fused deployment is what `faasfuse build` writes from the unfused
# deployment's platform traces. "empty" is one function that echoes its
# input (tests/data/pm_echo.c), deployed alike in both: the platform's own
# cost per request (HTTP, gateway, engine, one worker), which fusion cannot
# remove. The recursive workflow is left out: nightcore's pools do not grow
# under load, so Loop would need a worker per level per client up front.
#
# Usage: [NIGHTCORE_BIN=DIR] scripts/bench-nightcore.sh [ROUNDS] [REQUESTS] [CONCURRENCY]
#        (defaults: 5 rounds, 1000 requests per run, concurrency 1,8,32)
# Writes out/bench/nightcore.csv (every run), out/bench/nightcore-summary.csv
# (medians over the rounds) and out/bench/nightcore-{p50,throughput}.svg.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-5}"
REQUESTS="${2:-1000}"
CONC="${3:-1,8,32}"
export NIGHTCORE_BIN="${NIGHTCORE_BIN:-$(cd .. && pwd)/shared/nightcore/bin}"
OUT=out/bench/nightcore
rm -rf "$OUT"
mkdir -p "$OUT"
cargo build --release --quiet --workspace
FF=$PWD/target/release/faasfuse
scripts/build-fixtures.sh "$OUT/lib" > /dev/null
LIB="$PWD/$OUT/lib/default"
python3 scripts/workflow-inputs.py "$LIB" "$OUT"

# The empty function, in both deployments.
gcc -shared -fPIC -O2 -Ifixtures/include tests/data/pm_echo.c -o "$OUT/lib/libecho.so"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
config = json.load(open(f"{out}/func_config.json"))
config = [e for e in config if e["funcName"] != "Loop"]
for i, e in enumerate(config):
    e["funcId"] = i + 1
config.append({"funcName": "Echo", "funcId": len(config) + 1, "minWorkers": 1, "maxWorkers": 8,
               "library": os.path.abspath(f"{out}/lib/libecho.so"), "entry": True})
json.dump(config, open(f"{out}/func_config.json", "w"), indent=2)
with open(f"{out}/empty.inputs", "w") as f:
    f.write("".join(f"ping {i}\n" for i in range(64)))
PY

echo "== The unfused deployment's platform traces, then faasfuse build"
ARGS=()
TRACES=()
while IFS=$'\t' read -r name root _; do
  [ "$name" = recurse ] && continue
  "$FF" run --config "$OUT/func_config.json" --ipc --inputs "$OUT/$name.inputs" --json -- "$root" \
    > "$OUT/trace-$name.json"
  TRACES+=("$OUT/trace-$name.json")
  ARGS+=(--workflow "$name=$root:$OUT/$name.inputs")
done < "$OUT/workflows.tsv"
ARGS+=(--workflow "empty=Echo:$OUT/empty.inputs")
"$FF" build --config "$OUT/func_config.json" --profile "${TRACES[@]}" --out-dir "$OUT/fused" \
  | grep '^fused' | sed 's/^/   /'

echo "== Serving both on nightcore ($ROUNDS rounds, $REQUESTS requests per run, concurrency $CONC)"
target/release/faasfuse-testkit nightcore-bench --unfused "$OUT/func_config.json" \
  --fused "$OUT/fused/func_config.json" "${ARGS[@]}" --concurrency "$CONC" \
  --requests "$REQUESTS" --rounds "$ROUNDS" --work-dir "$OUT/stacks" --csv out/bench/nightcore.csv \
  2> "$OUT/runs.log" || { tail -5 "$OUT/runs.log" >&2; exit 1; }

python3 - out/bench/nightcore.csv "$OUT/workflows.tsv" <<'PY'
import csv, collections, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
nfun = {l.split("\t")[0]: int(l.split("\t")[2]) for l in open(sys.argv[2])}
nfun["empty"] = 1
runs = collections.defaultdict(list)
for r in rows:
    runs[(r["workflow"], r["deployment"], int(r["concurrency"]))].append(r)
keys = ["p50_us", "p99_us", "rps", "cpu_us_per_request", "pss_kib", "rss_kib", "processes"]
med = {k: {c: statistics.median(float(r[c]) for r in rs) for c in keys} for k, rs in runs.items()}
lost = sum(int(r["lost"]) for r in rows)
workflows = list(dict.fromkeys(r["workflow"] for r in rows))
concs = sorted({int(r["concurrency"]) for r in rows})
summary = open(sys.argv[1].replace(".csv", "-summary.csv"), "w")
summary.write("workflow,functions,concurrency," + ",".join(f"{d}_{k}" for d in ("unfused", "fused") for k in keys)
              + ",p50_ratio,rps_ratio\n")
print(f'{"workflow":<8} {"fns":>3} {"c":>3} {"p50 us (unf -> fused, ratio)":>30} {"p99 us":>17} '
      f'{"req/s (ratio)":>24} {"CPU us/req":>14} {"worker PSS MiB":>15} {"procs":>8}')
for w in workflows:
    for c in concs:
        u, f = med[(w, "unfused", c)], med[(w, "fused", c)]
        p50r, rpsr = f["p50_us"] / u["p50_us"], f["rps"] / u["rps"]
        print(f'{w:<8} {nfun.get(w, 0):>3} {c:>3} {u["p50_us"]:>10.0f} -> {f["p50_us"]:<6.0f} {p50r:>5.2f}x '
              f'{u["p99_us"]:>7.0f} -> {f["p99_us"]:<6.0f} {u["rps"]:>7.0f} -> {f["rps"]:<6.0f} {rpsr:>5.2f}x '
              f'{u["cpu_us_per_request"]:>5.0f} -> {f["cpu_us_per_request"]:<5.0f} '
              f'{u["pss_kib"]/1024:>5.1f} -> {f["pss_kib"]/1024:<5.1f} {u["processes"]:>3.0f} -> {f["processes"]:<3.0f}')
        summary.write(f"{w},{nfun.get(w, 0)},{c}," + ",".join(f"{m[k]:.1f}" for m in (u, f) for k in keys)
                      + f",{p50r:.3f},{rpsr:.3f}\n")
summary.close()
print(f"(medians over {len({r['round'] for r in rows})} rounds; CPU: every process of the stack; PSS and procs: "
      f"the function processes that served the workflow; lost answers: {lost})")
with open(sys.argv[1].replace(".csv", "-p50.csv"), "w") as p, open(sys.argv[1].replace(".csv", "-rps.csv"), "w") as t:
    p.write("workflow,unfused c=1,fused c=1\n")
    t.write(f"workflow,unfused c={concs[-1]},fused c={concs[-1]}\n")
    for w in workflows:
        p.write(f'{w},{med[(w, "unfused", concs[0])]["p50_us"]},{med[(w, "fused", concs[0])]["p50_us"]}\n')
        t.write(f'{w},{med[(w, "unfused", concs[-1])]["rps"]},{med[(w, "fused", concs[-1])]["rps"]}\n')
if lost:
    sys.exit(f"{lost} requests got no answer")
PY
python3 scripts/plot.py bars out/bench/nightcore-p50.csv out/bench/nightcore-p50.svg workflow \
  "unfused c=1" "fused c=1" --title "nightcore: request latency p50, one client" --unit us
C_MAX="${CONC##*,}"
python3 scripts/plot.py bars out/bench/nightcore-rps.csv out/bench/nightcore-throughput.svg workflow \
  "unfused c=$C_MAX" "fused c=$C_MAX" --title "nightcore: throughput, $C_MAX clients" --unit req/s
echo "wrote out/bench/nightcore.csv, out/bench/nightcore-summary.csv, out/bench/nightcore-{p50,throughput}.svg"
