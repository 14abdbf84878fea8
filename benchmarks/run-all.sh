#!/usr/bin/env bash
# run-all.sh BUILD_DIR: the benchmarks `./fm bench` runs, results in
# benchmarks/results/: the CPU engine alone (bench_engine), the prediction log
# (bench_writer.sh: skipped when PostgreSQL is not installed), then fmserve end
# to end with fmbench: the full sweep and the side-by-side comparisons
# (sweep.sh, which runs compare.sh). The end-to-end part needs models/v1 (and v2); it is
# skipped, saying so, when they are missing. Data: $FM_DATA when set.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-${FM_BUILD_DIR:-$root/build}}
out=$root/benchmarks/results
mkdir -p "$out"
host=$(hostname -s 2>/dev/null || echo host)

echo "== bench_engine (CPU engine, in process)"
"$build/benchmarks/bench_engine" --json "$out/bench_engine-$host.json"

echo "== bench_writer.sh (the prediction log into a throwaway PostgreSQL while serving)"
rc=0
"$here/bench_writer.sh" "$build" || rc=$?
[ "$rc" -eq 0 ] || [ "$rc" -eq 77 ] || exit "$rc"

if [ ! -f "$root/models/v1/model.json" ]; then
  echo "== fmserve end to end: skipped (no models/v1; scripts/train-models.sh trains the shipped models)"
  exit 0
fi
echo "== sweep.sh (closed- and open-loop sweep of each version, then compare.sh)"
"$here/sweep.sh" --build "$build"
