#!/usr/bin/env bash
# drift-check.sh BUILD_DIR [DATA_DIR]: the drift-check benchmark. Starts a
# throwaway PostgreSQL with its durability settings on (tests/common/
# pg-harness.sh), runs bench_drift (1,000,000 logged predictions, 100,000
# sampled images, a 60-minute window) and writes
# benchmarks/results/bench_drift-DATE.{json,txt}. DATA_DIR (or $FM_DATA) holds
# the full Fashion-MNIST. Extra bench_drift options go in $BENCH_DRIFT_ARGS.
set -euo pipefail
build=${1:?usage: drift-check.sh BUILD_DIR [DATA_DIR]}
data=${2:-${FM_DATA:-}}
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$data" ]; then
  echo "drift-check: give DATA_DIR or set FM_DATA to the full Fashion-MNIST" >&2
  exit 2
fi
bench=$build/benchmarks/bench_drift
[ -x "$bench" ] || { echo "drift-check: $bench is not built" >&2; exit 2; }
. "$root/tests/common/pg-harness.sh"
FM_PG_DURABLE=1 fm_pg_start || exit $?
url=$(fm_pg_createdb bench)
day=$(date -u +%F)
out=$root/benchmarks/results/bench_drift-$day
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086
"$bench" --database-url "$url" --data "$data" --json "$out.json" ${BENCH_DRIFT_ARGS:-} 2>"$out.log"
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "# bench_drift $day (load average before: $load_before, after: $load_after; figures from one machine running the server, the load and PostgreSQL together)"
  echo "# PostgreSQL $("$FM_PG_BINDIR/postgres" --version | awk '{print $3}') started by tests/common/pg-harness.sh with fsync and synchronous_commit on"
  grep -E '^bench_drift: (check|[0-9])| {13}drift check' "$out.log"
  echo
  cat "$out.json"
} >"$out.txt"
rm -f "$out.log"
cat "$out.txt"
