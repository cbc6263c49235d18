#!/usr/bin/env bash
# Long fuzzing campaign over every parser (tests/fuzz.rs):
#   scripts/fuzz.sh [RUNS_PER_TARGET] [SECONDS_PER_TARGET] [SEED]
# FUZZ_TARGETS=elf-merge,perf.data limits the targets. Findings (inputs and
# a report) go to target/tmp/fuzz-findings/; the script fails on any.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100000}
secs=${2:-86400}
seed=${3:-$RANDOM$RANDOM}
echo "fuzz: up to $runs runs or $secs s per target, seed $seed"
FUZZ_RUNS=$runs FUZZ_SECONDS=$secs FUZZ_SEED=$seed \
    cargo test --release --workspace --test fuzz -- --nocapture 2>&1 | grep -E '^(fuzz|  |test result)'
cat target/tmp/fuzz-findings/report.txt
