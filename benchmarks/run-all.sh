#!/usr/bin/env bash
# run-all.sh BUILD_DIR: the benchmarks `./fm bench` runs, results in
# benchmarks/results/ (each file names machine, date and commit):
#   bench_engine    the CPU engine alone, in process
#   bench_train     the C trainer, epochs per second for both models
#   drift-check.sh  a drift check over 1M logged predictions (needs PostgreSQL and the full data)
#   bench_writer.sh the prediction log into PostgreSQL while serving (needs PostgreSQL)
#   sweep.sh        fmserve end to end with fmbench: closed- and open-loop
#                   sweeps per version, then compare.sh (batching on/off,
#                   CPU/CUDA, v1/v2 side by side)
# The PostgreSQL parts are skipped, saying so, when PostgreSQL is not
# installed (exit 77 from the harness); the end-to-end part needs models/v1.
# Data: $FM_DATA when set (the drift check is skipped without it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
build=${1:-${FM_BUILD_DIR:-$root/build}}
out=$root/benchmarks/results
mkdir -p "$out"
host=$(hostname -s 2>/dev/null || echo host)
day=$(date -u +%F)

# A script that exits 77 skipped itself (no PostgreSQL); anything else non-zero fails the run.
skip_ok() {
  local rc=0
  "$@" || rc=$?
  [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ] || exit "$rc"
}

echo "== bench_engine (CPU engine, in process)"
"$build/benchmarks/bench_engine" --json "$out/bench_engine-$host.json" | tee "$out/bench_engine-$host.txt"

echo "== bench_train (the trainer; OMP_WAIT_POLICY=passive as scripts/train-models.sh uses)"
OMP_WAIT_POLICY=passive "$build/benchmarks/bench_train" --images 10000 --epochs 3 \
  --json "$out/bench_train-$day.json" | tee "$out/bench_train-$day.txt"

if [ -n "${FM_DATA:-}" ]; then
  echo "== drift-check.sh (drift check in PostgreSQL over 1M logged predictions)"
  skip_ok "$here/drift-check.sh" "$build" "$FM_DATA"
else
  echo "== drift-check.sh: skipped (set FM_DATA to the full Fashion-MNIST)"
fi

echo "== bench_writer.sh (the prediction log into a throwaway PostgreSQL while serving)"
skip_ok "$here/bench_writer.sh" "$build"

if [ ! -f "$root/models/v1/model.json" ]; then
  echo "== fmserve end to end: skipped (no models/v1; scripts/train-models.sh trains the shipped models)"
  exit 0
fi
echo "== sweep.sh (closed- and open-loop sweep of each version, then compare.sh)"
"$here/sweep.sh" --build "$build"
