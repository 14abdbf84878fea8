#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2154,SC2054  # $fmbench, $data, $v1, $port_* come from fmserve-lib.sh
# sweep.sh: the recorded fmserve benchmarks in one command. Starts fmserve
# (stable v1, canary v2) on loopback and, for each version, runs fmbench: a
# closed-loop sweep over 1..256 requests in flight, then Poisson open-loop
# steps at shares of the closed-loop peak (latency measured from the
# schedule). Writes benchmarks/results/sweep-<backend>-<version>.{json,csv,png,txt};
# then runs compare.sh (batching on/off, CPU/CUDA, v1/v2) into compare-<host>.*.
#
# usage: benchmarks/sweep.sh [--build DIR] [--data DIR] [--models DIR] [--backend auto|cpu|cuda]
#                            [--versions "v1 v2"] [--out DIR] [--quick] [--no-compare]
#                            [-- fmbench options...]
#   --data DIR     Fashion-MNIST directory (default $FM_DATA; else the 1,000 fixture images)
#   --models DIR   holds v1/ and v2/ (default models/)
#   --backend B    fmserve's --backend (default auto: CUDA when built and a GPU is present)
#   --versions L   versions to sweep, pinned one at a time (default "v1 v2", those present)
#   --out DIR      where results go (default benchmarks/results)
#   --quick        a short sweep (a few minutes) to check the setup, written with a -quick suffix
#   --no-compare   the sweep alone, without compare.sh
#   -- ...         anything after -- is passed to fmbench (e.g. --window 5 --max-windows 10)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build_arg="" data_arg="" models_arg="" backend=auto versions="" out="" quick=0 compare=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build_arg=$2; shift 2 ;;
    --data) data_arg=$2; shift 2 ;;
    --models) models_arg=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --versions) versions=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --no-compare) compare=0; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) echo "sweep.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
. "$here/fmserve-lib.sh"
fm_lib_init "$build_arg"
fm_models "$models_arg"
fm_data "$data_arg"
out=${out:-$root/benchmarks/results}
mkdir -p "$out"
if [ -z "$versions" ]; then
  versions="v1"
  [ -n "$v2" ] && versions="v1 v2"
fi

if [ "$quick" = 1 ]; then
  load=(--concurrency 1,4,16 --rate-of-peak 0.5,0.9 --warmup 0.5 --window 1 --stable-windows 2 --max-windows 3)
  suffix=-quick
else
  # Closed loop 1..256 in flight; open loop from a tenth of the peak to past it, to show the knee.
  load=(--concurrency 1:256 --rate-of-peak 0.1,0.25,0.5,0.7,0.8,0.9,1,1.1,1.25
        --warmup 2 --window 3 --stable-windows 3 --max-windows 6)
  suffix=""
fi

canary=()
if [ -n "$v2" ]; then canary=(--canary-model "$v2"); else canary=(--canary-model ""); fi
fm_start sweep --stable-model "$v1" "${canary[@]}" --backend "$backend" --max-batch-size 64 || exit 1

status=0
for v in $versions; do
  prefix=$fm_tmp/sweep-$v
  echo "== sweep of $v ($(date -u +%H:%M:%SZ)); load average $(cut -d' ' -f1-3 /proc/loadavg)"
  rc=0
  "$fmbench" --server "127.0.0.1:$port_sweep" --data "$data" --version "$v" "${load[@]}" \
    --connections 4 --batch 16 --out "$prefix" --title "fmserve sweep: $v pinned" \
    --tag script=benchmarks/sweep.sh --tag backend="$backend" --tag max_batch_size=64 \
    --no-progress "${extra[@]}" | tee "$prefix.txt" || rc=$?
  # Name the files after the backend that served (auto resolves to cpu or cuda).
  served=$(sed -n 's/^server [^,]*, backend \([a-z]*\).*/\1/p' "$prefix.txt" | head -1)
  name=sweep-${served:-$backend}-$v$suffix
  for ext in json csv png txt; do
    [ -f "$prefix.$ext" ] && cp "$prefix.$ext" "$out/$name.$ext"
  done
  echo "results: $out/$name.{json,csv,png,txt}"
  if [ "$rc" -ne 0 ]; then
    echo "sweep.sh: fmbench failed for $v (exit $rc)" >&2
    status=$rc
  fi
done
fm_stop sweep || { echo "sweep.sh: fmserve exited with an error" >&2; status=1; }

if [ "$compare" = 1 ]; then
  echo "== compare.sh ($(date -u +%H:%M:%SZ))"
  cmp_args=(--out "$out" --data "$data" --backend "$backend")
  [ -n "$build_arg" ] && cmp_args+=(--build "$build_arg")
  [ -n "$models_arg" ] && cmp_args+=(--models "$models_arg")
  [ "$quick" = 1 ] && cmp_args+=(--quick)
  "$here/compare.sh" "${cmp_args[@]}" || status=1
fi
exit $status
