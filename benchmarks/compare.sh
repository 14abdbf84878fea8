#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR disable=SC2154,SC2054  # $fmbench, $data, $v1, $port_* come from fmserve-lib.sh
# compare.sh: side-by-side fmserve configurations in one invocation, made to
# hold on a noisy machine: every pair runs interleaved (A B B A A B ...)
# on servers kept up for the whole comparison, repeated, and reported as
# medians with the spread of the per-repeat ratios. Comparisons:
#   batching  max_batch_size 64 vs 1 (same load), plus the light-load server
#             overhead (1 request in flight: response time - server compute, p50)
#   backend   CPU engine vs CUDA backend (skipped, saying why, without a GPU)
#   versions  v1 vs v2 pinned on one server
# Writes benchmarks/results/compare-<host>.{txt,csv}.
#
# usage: benchmarks/compare.sh [--build DIR] [--data DIR] [--models DIR] [--repeats N] [--backend B]
#                              [--only batching|backend|versions] [--concurrency C] [--out DIR] [--quick]
#   --backend B     fmserve's backend for the batching and versions comparisons (default auto)
#   --repeats N     runs of each configuration (default 5); the ratio of each A/B pair is kept
#   --concurrency C requests in flight during the throughput runs (default 32)
#   --quick         3 repeats of short runs, to check the setup
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build_arg="" data_arg="" models_arg="" repeats=5 only="" conc=32 out="" quick=0 backend=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build_arg=$2; shift 2 ;;
    --data) data_arg=$2; shift 2 ;;
    --models) models_arg=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --concurrency) conc=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) awk 'NR > 2 && /^#/ { sub(/^# ?/, ""); print; next } NR > 2 { exit }' "$0"; exit 0 ;;
    *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$only" in ""|batching|backend|versions) ;; *) echo "compare.sh: --only wants batching, backend or versions" >&2; exit 2 ;; esac
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --repeats wants a positive number" >&2; exit 2; }
. "$here/fmserve-lib.sh"
fm_lib_init "$build_arg"
fm_models "$models_arg"
fm_data "$data_arg"
out=${out:-$root/benchmarks/results}
mkdir -p "$out"
host=$(hostname -s 2>/dev/null || echo host)
if [ "$quick" = 1 ]; then
  repeats=3
  timing=(--warmup 0.5 --window 1 --stable-windows 1 --max-windows 2)
else
  timing=(--warmup 1 --window 2 --stable-windows 2 --max-windows 4)
fi
runs=$fm_tmp/runs.csv
echo "comparison,config,repeat,images_per_s,latency_p50_us,latency_p99_us,overhead_p50_us,avg_batch_size,accuracy" >"$runs"
summary=$fm_tmp/summary.txt
# The code's commit; results written by an earlier step of the same sweep do not make it dirty.
commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && ! git -C "$root" diff --quiet HEAD -- . ':(exclude)benchmarks/results'; then
  commit=$commit-dirty
fi
{
  echo "compare.sh $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $commit, on $host ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $repeats interleaved repeats per configuration; medians, and the ratio's min..max over repeats"
  echo "images: $data; 16 images per request, 4 connections; fmserve --backend $backend (batching, versions)"
  echo
} | tee "$summary"

# measure COMPARISON CONFIG REPEAT PORT fmbench-args...: one fmbench run, one row of $runs.
measure() {
  local cmp=$1 cfg=$2 rep=$3 port=$4; shift 4
  local csv=$fm_tmp/$cmp-$cfg-$rep.csv rc=0
  "$fmbench" --server "127.0.0.1:$port" --data "$data" --batch 16 --connections 4 "${timing[@]}" \
    --quiet --csv "$csv" "$@" 2>"$fm_tmp/err" || rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "compare.sh: fmbench failed ($cmp $cfg, exit $rc):" >&2
    sed 's/^/  /' "$fm_tmp/err" >&2
    exit 1
  fi
  local f
  printf '%s,%s,%s' "$cmp" "$cfg" "$rep" >>"$runs"
  for f in images_per_s latency_p50_us latency_p99_us overhead_p50_us avg_batch_size accuracy; do
    printf ',%s' "$(fm_csv_field "$csv" 1 "$f")" >>"$runs"
  done
  printf '\n' >>"$runs"
}

# pair NAME LABEL_A LABEL_B PORT_A PORT_B "ARGS_A" "ARGS_B": R interleaved repeats (ABBA order).
pair() {
  local cmp=$1 la=$2 lb=$3 pa=$4 pb=$5 aa=$6 ab=$7 r
  for r in $(seq 1 "$repeats"); do
    if [ $((r % 2)) -eq 1 ]; then
      # shellcheck disable=SC2086
      measure "$cmp" "$la" "$r" "$pa" $aa
      # shellcheck disable=SC2086
      measure "$cmp" "$lb" "$r" "$pb" $ab
    else
      # shellcheck disable=SC2086
      measure "$cmp" "$lb" "$r" "$pb" $ab
      # shellcheck disable=SC2086
      measure "$cmp" "$la" "$r" "$pa" $aa
    fi
    printf '.' >&2
  done
  printf '\n' >&2
}

# report NAME LABEL_A LABEL_B: medians and ratios (A/B) of throughput and latency.
report() {
  awk -F, -v cmp="$1" -v la="$2" -v lb="$3" '
    function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    function stat(metric, col, scale,   n, i, ra, rb, rr, ma, mb, lo, hi) {
      n = 0
      for (i = 1; i <= nrep; i++) if ((i, la) in v && (i, lb) in v) {
        n++; ra[n] = v[i, la, col] * scale; rb[n] = v[i, lb, col] * scale
        rr[n] = rb[n] > 0 ? ra[n] / rb[n] : 0
        if (n == 1 || rr[n] < lo) lo = rr[n]; if (n == 1 || rr[n] > hi) hi = rr[n]
      }
      if (!n) return
      ma = median(ra, n); mb = median(rb, n)
      fmt = scale < 1 ? "  %-22s %12.3f %12.3f   %6.2fx  (%.2f..%.2f)\n" : "  %-22s %12.1f %12.1f   %6.2fx  (%.2f..%.2f)\n"
      printf fmt, metric, ma, mb, median(rr, n), lo, hi
    }
    NR > 1 && $1 == cmp { v[$3, $2, 4] = $4; v[$3, $2, 5] = $5; v[$3, $2, 6] = $6; v[$3, $2, 7] = $7; v[$3, $2, 8] = $8; v[$3, $2] = 1; if ($3 > nrep) nrep = $3 }
    END {
      printf "%s: A = %s, B = %s\n", cmp, la, lb
      printf "  %-22s %12s %12s   %s\n", "metric (median)", "A", "B", "A/B median (min..max over repeats)"
      stat("images/s", 4, 1); stat("latency p50 ms", 5, 0.001); stat("latency p99 ms", 6, 0.001)
      stat("overhead p50 us", 7, 1); stat("server batch (images)", 8, 1)
      print ""
    }' "$runs" | tee -a "$summary"
}

loadc=(--concurrency "$conc")
if [ -z "$only" ] || [ "$only" = batching ]; then
  echo "batching: max_batch_size 64 vs 1, $conc requests in flight, v1, backend $backend" >&2
  fm_start b64 --stable-model "$v1" --canary-model "" --backend "$backend" --max-batch-size 64 || exit 1
  fm_start b1 --stable-model "$v1" --canary-model "" --backend "$backend" --max-batch-size 1 || exit 1
  pair batching max_batch_size=64 max_batch_size=1 "$port_b64" "$port_b1" "${loadc[*]}" "${loadc[*]}"
  report batching max_batch_size=64 max_batch_size=1
  # Light load: 1 request in flight, where the server's own overhead is the
  # response time minus the compute time it reports.
  echo "light load: 1 request in flight, max_batch_size 64" >&2
  for r in $(seq 1 "$repeats"); do
    measure light c=1 "$r" "$port_b64" --concurrency 1 --connections 1
    printf '.' >&2
  done
  printf '\n' >&2
  awk -F, 'function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NR > 1 && $1 == "light" { n++; lat[n] = $5; ovh[n] = $7; x[n] = $7 }
    END {
      if (!n) exit
      lo = hi = x[1]; for (i = 2; i <= n; i++) { if (x[i] < lo) lo = x[i]; if (x[i] > hi) hi = x[i] }
      printf "light load (1 request of 16 images in flight, max_batch_size 64):\n"
      printf "  latency p50 %.3f ms; server overhead p50 (response time - server compute) %.0f us (%.0f..%.0f over repeats)\n\n",
        median(lat, n) / 1000, median(ovh, n), lo, hi
    }' "$runs" | tee -a "$summary"
  fm_stop b64 || true
  fm_stop b1 || true
fi

if [ -z "$only" ] || [ "$only" = backend ]; then
  echo "backend: CPU engine vs CUDA, $conc requests in flight, v1" >&2
  if fm_start cuda --stable-model "$v1" --canary-model "" --backend cuda 2>"$fm_tmp/cuda.err"; then
    fm_start cpu --stable-model "$v1" --canary-model "" --backend cpu || exit 1
    pair backend cuda cpu "$port_cuda" "$port_cpu" "${loadc[*]}" "${loadc[*]}"
    report backend cuda cpu
    fm_stop cuda || true
    fm_stop cpu || true
  else
    why=$(sed -n 's/.*cannot start: //p' "$fm_tmp/cuda.log" | head -1)
    echo "backend: skipped: fmserve --backend cuda does not start here: ${why:-no CUDA backend or no GPU}" | tee -a "$summary"
    echo | tee -a "$summary"
  fi
fi

if [ -z "$only" ] || [ "$only" = versions ]; then
  if [ -z "$v2" ]; then
    echo "versions: skipped: no v2 model next to $v1" | tee -a "$summary"
  else
    echo "versions: v1 vs v2 pinned on one server, $conc requests in flight" >&2
    fm_start ver --stable-model "$v1" --canary-model "$v2" --backend "$backend" || exit 1
    pair versions v1 v2 "$port_ver" "$port_ver" "${loadc[*]} --version v1" "${loadc[*]} --version v2"
    report versions v1 v2
    fm_stop ver || true
  fi
fi

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$summary"
name=compare-$host
[ "$quick" = 1 ] && name=$name-quick
cp "$summary" "$out/$name.txt"
cp "$runs" "$out/$name.csv"
echo "results: $out/$name.txt (summary), $out/$name.csv (every run)"
