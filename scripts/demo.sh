#!/usr/bin/env bash
# demo.sh BUILD_DIR DATA_DIR: the main job.
#  1. Evaluates both shipped models on the 10,000 Fashion-MNIST test images
#     with the CPU engine.
#  2. Runs the service as it runs in production, on this machine: a
#     throwaway PostgreSQL (tests/common/pg-harness.sh; nothing to set up,
#     removed at the end), the schema migrated, a drift reference stored for
#     the stable model, fmserve with the prediction log on (stable v1, canary
#     v2 at 20 %), the test set streamed through it with `fmctl predict
#     --stream` (which also sends the true label of a quarter of the images
#     back, as clients do when they learn it), the live accuracy computed in
#     PostgreSQL from that feedback, and a drift check over what was logged.
set -euo pipefail
build=$1 data=$2
root=$(cd "$(dirname "$0")/.." && pwd)
fmctl=$build/host/cli/fmctl
fmserve=$build/host/server/fmserve

for v in v1 v2; do
  if [ ! -f "$root/models/$v/model.safetensors" ]; then
    echo "demo: models/$v is missing; scripts/train-models.sh trains it" >&2
    exit 1
  fi
done

for v in v1 v2; do
  echo "== models/$v =="
  "$fmctl" eval --model "$root/models/$v" --data "$data"
  echo
done

echo "== the service with its prediction log =="
. "$root/tests/common/pg-harness.sh"
rc=0
fm_pg_start || rc=$?
if [ "$rc" -ne 0 ]; then
  if [ "$rc" -eq 77 ]; then
    echo "demo: PostgreSQL is not installed; scripts/install-deps.sh installs it (package postgresql)" >&2
  else
    echo "demo: could not start a local PostgreSQL (see above)" >&2
  fi
  exit 1
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/fmdemo-XXXXXX")
server=""
cleanup() {
  # fmserve first (it flushes its log into PostgreSQL), then the database.
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
  fm_pg_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT TERM
url=$(fm_pg_createdb fmserve_demo)
echo "PostgreSQL $("$FM_PG_BINDIR/postgres" --version | awk '{print $3}') on port $FM_PG_PORT (throwaway, in $FM_PG_DIR)"
"$fmctl" db migrate --database-url "$url"

echo
echo "-- drift reference: the stable model on the 60,000 training images"
"$fmctl" drift reference --model "$root/models/v1" --data "$data" --database-url "$url" \
  --description "demo: training set, stable model"

echo
echo "-- fmserve with the prediction log on (every prediction; every image's pixels kept for the drift check)"
FM_DATABASE_URL="$url" FM_SPOOL_DIR="$work/spool" FM_SAMPLE_RATE=1 FM_LOG_LEVEL=warn \
  "$fmserve" --stable-model "$root/models/v1" --canary-model "$root/models/v2" --ab-test-ratio 0.2 \
  --listen 127.0.0.1 --port 0 --http-port 0 --ports-file "$work/ports" >"$work/fmserve.log" 2>&1 &
server=$!
for _ in $(seq 600); do
  [ -s "$work/ports" ] && break
  if ! kill -0 "$server" 2>/dev/null; then
    echo "demo: fmserve did not start; its log:" >&2
    cat "$work/fmserve.log" >&2
    exit 1
  fi
  sleep 0.1
done
[ -s "$work/ports" ] || { echo "demo: fmserve took more than 60 s to start" >&2; exit 1; }
read -r rpc http <"$work/ports"
echo "fmserve ready: rpc 127.0.0.1:$rpc, metrics http://127.0.0.1:$http/metrics"

echo
echo "-- streaming the 10,000 test images through it; 25 % of the true labels go back as feedback"
"$fmctl" predict --server "127.0.0.1:$rpc" --stream --data "$data" --split t10k --connections 4 --batch 16 \
  --feedback 0.25

# The writer's own account, from /metrics (bash's /dev/tcp: no HTTP tool needed).
metrics() {
  exec 3<>"/dev/tcp/127.0.0.1/$http"
  printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
  cat <&3
  exec 3<&-
}
for _ in $(seq 300); do
  written=$(metrics | awk '/^fm_log_rows_written\{kind="prediction"\}/ {print $2}')
  labels=$(metrics | awk '/^fm_log_rows_written\{kind="feedback"\}/ {print $2}')
  [ "${written:-0}" -ge 10000 ] && [ "${labels:-0}" -ge 2500 ] && break
  sleep 0.1
done
echo
echo "prediction log (from /metrics):"
metrics | grep -E '^fm_log_(rows_written|rows_spooled|rows_dropped\{kind="prediction"|batches|database_connected)' |
  grep -v ' 0$' | sed 's/^/  /'

# A clean stop applies the rollups of the minute still open.
kill -TERM "$server"
wait "$server" || { echo "demo: fmserve did not stop cleanly; its log:" >&2; cat "$work/fmserve.log" >&2; exit 1; }
server=""

echo
echo "-- live accuracy per version, from the feedback joined with the logged predictions"
"$fmctl" db accuracy --database-url "$url" --window '1 hour'

echo
echo "-- drift check of the stable version's logged traffic against its reference"
status=0
"$fmctl" drift check --database-url "$url" --window '1 hour' --version v1 || status=$?
case $status in
  0) echo "demo: no dataset drift (the test set looks like the training set, as it should)" ;;
  3) echo "demo: dataset drift detected" ;;
  *) echo "demo: the drift check failed" >&2; exit 1 ;;
esac
