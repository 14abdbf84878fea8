#!/usr/bin/env bash
# bench_writer.sh BUILD_DIR: the prediction-log benchmark. Starts a throwaway
# PostgreSQL with its durability settings on (tests/common/pg-harness.sh,
# FM_PG_DURABLE=1), migrates a fresh database, and runs bench_writer: fmserve
# without and with logging under closed-loop load, then a PostgreSQL outage
# and the catch-up after it (rows/s committed while serving). Writes
# benchmarks/results/bench_writer-DATE.{txt,json}. Extra bench_writer options
# go in $BENCH_WRITER_ARGS (e.g. "--seconds 20 --outage 20").
set -euo pipefail
build=${1:?usage: bench_writer.sh BUILD_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
bench=$build/benchmarks/bench_writer
fmctl=$build/host/cli/fmctl
[ -x "$bench" ] && [ -x "$fmctl" ] || { echo "bench_writer: build $bench and $fmctl first" >&2; exit 2; }
. "$root/tests/common/pg-harness.sh"
FM_PG_DURABLE=1 fm_pg_start || exit $?
url=$(fm_pg_createdb bench)
"$fmctl" db migrate --database-url "$url" >/dev/null
# The catch-up run stops and starts this server; as root it runs as fmtest.
as_owner=""
[ "$(id -u)" -eq 0 ] && as_owner="runuser -u fmtest --"
pg_stop="$as_owner $FM_PG_BINDIR/pg_ctl -D $FM_PG_DIR/data -m fast -w stop >/dev/null"
pg_start="$as_owner $FM_PG_BINDIR/pg_ctl -D $FM_PG_DIR/data -l $FM_PG_DIR/server.log -w -t 60 -o '-p $FM_PG_PORT' start >/dev/null"
day=$(date -u +%F)
out=$root/benchmarks/results/bench_writer-$day
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck disable=SC2086
"$bench" --database-url "$url" --pg-stop "$pg_stop" --pg-start "$pg_start" --json "$out.json" \
  ${BENCH_WRITER_ARGS:-} >"$out.log" 2>&1 || { cat "$out.log" >&2; exit 1; }
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "# bench_writer $day (load average before: $load_before, after: $load_after; figures from one machine running the server, the load and PostgreSQL together)"
  echo "# PostgreSQL $("$FM_PG_BINDIR/postgres" --version | awk '{print $3}') started by tests/common/pg-harness.sh with fsync and synchronous_commit on; reproduce with: benchmarks/bench_writer.sh build"
  cat "$out.log"
} >"$out.txt"
rm -f "$out.log"
cat "$out.txt"
