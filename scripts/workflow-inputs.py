#!/usr/bin/env python3
"""The example deployment and its load, for the demo and the benchmarks.

  workflow-inputs.py LIBDIR OUTDIR

Writes OUTDIR/func_config.json (every function of every workflow in
fixtures/workflows.json, its library in LIBDIR, workflow roots as entries),
OUTDIR/<workflow>.inputs (64 requests built from the workflow's keywords)
and OUTDIR/workflows.tsv (name, root, function count, the `merge` option
declaring its re-entrant functions or `-`, NAME=LIB arguments root first;
tab-separated).
"""
import itertools
import json
import sys

lib, out = sys.argv[1], sys.argv[2]
words = ["alpha", "beta", "red shoes", "x", "12", "hello world"]
config, rows = [], []
for w in json.load(open("fixtures/workflows.json"))["workflows"]:
    # A function that calls itself (listed re-entrant) runs each nesting level
    # in a worker process of its own: give it one per level the host allows.
    recursive = set(w.get("reentrant", []))
    for name, file in w["functions"].items():
        if not any(e["funcName"] == name for e in config):
            config.append({"funcName": name, "funcId": len(config) + 1, "minWorkers": 1,
                           "maxWorkers": 65 if name in recursive else 8,
                           "library": f"{lib}/{file}", "entry": name == w["root"]})
    combos = itertools.cycle(itertools.product((w["keywords"] or ["x"]) + words, words))
    with open(f"{out}/{w['name']}.inputs", "w") as f:
        for _ in range(64):
            f.write(" ".join(next(combos)) + "\n")
    fns = sorted(w["functions"].items(), key=lambda kv: kv[0] != w["root"])
    libs = " ".join(f"{n}={lib}/{l}" for n, l in fns)
    reentrant = ",".join(w.get("reentrant", []))
    declare = f"--reentrant={reentrant}" if reentrant else "-"
    rows.append(f'{w["name"]}\t{w["root"]}\t{len(fns)}\t{declare}\t{libs}\n')
json.dump(config, open(f"{out}/func_config.json", "w"), indent=2)
open(f"{out}/workflows.tsv", "w").writelines(rows)
