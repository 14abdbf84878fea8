#!/usr/bin/env bash
# run-on-gpu.sh [OUTDIR]: everything the CUDA backend needs checked on a GPU
# machine, in one go and within a time budget (9 minutes by default):
#   1. finds nvcc, the Python that has PyTorch, and cuDNN inside PyTorch's
#      packages (site-packages/nvidia/.../cudnn*), or a system cuDNN;
#   2. unpacks carried .deb files (.debs/, see fetch-debs.sh) when the
#      machine lacks cJSON, zlib, OpenSSL headers or oneDNN;
#   3. configures an engine-only build (-DFM_ENGINE_ONLY=ON: engines, GPU
#      tests and benchmarks; no libuv, msgpack, libpq, curl) for sm_90 and
#      builds it;
#   4. runs the GPU tests verbosely (with a cuDNN debug log of the plan
#      search when something fails);
#   5. runs bench_cuda and bench_torch.py on the same weights and images;
#   6. writes at most 8 files into OUTDIR (default $OUT, else
#      benchmarks/results/gpu-<date>): run.log, build.log, tests.log,
#      cudnn-debug.log, bench.log, bench_cuda.json, bench_torch.json,
#      summary.md; and copies the summary and JSON to benchmarks/results/.
# Environment: FM_COMMIT (commit to record when there is no .git), FM_DATA or
# a carried .data/fashion-mnist (full test set), PYTHON, FM_GPU_WORK (build
# dir, default /tmp/fmserve-gpu), FM_GPU_STEPS (default build,test,bench),
# FM_GPU_ARCH (default 90), FM_BENCH_MS (per point, default 80),
# FM_GPU_BUDGET (seconds for the whole run, default 540: each step's time
# limit shrinks to what is left, and a step that cannot fit is skipped).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=${1:-${OUT:-$root/benchmarks/results/gpu-$stamp}}
work=${FM_GPU_WORK:-/tmp/fmserve-gpu}
steps=${FM_GPU_STEPS:-build,test,bench}
arch=${FM_GPU_ARCH:-90}
bench_ms=${FM_BENCH_MS:-80}
budget=${FM_GPU_BUDGET:-540}
mkdir -p "$out" "$work"
runlog=$out/run.log
: >"$runlog"
t0=$(date +%s)
say() { printf '[run-on-gpu +%ss] %s\n' "$(($(date +%s) - t0))" "$*" | tee -a "$runlog"; }
has_step() { case ",$steps," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# Each step has a time limit, cut to what is left of the budget (keeping 15 s
# for the summary), so the whole run ends in time whatever happens.
left() { echo $((budget - ($(date +%s) - t0) - 15)); }
limit() {
  local s=$1 l
  shift
  l=$(left)
  [ "$l" -lt "$s" ] && s=$l
  if [ "$s" -lt 10 ]; then
    echo "run-on-gpu: no time left for: $*" >&2
    return 124
  fi
  timeout --kill-after=10 "$s" "$@"
}

say "fmserve GPU run: root $root, output $out, work $work, steps $steps"
commit=${FM_COMMIT:-}
if [ -z "$commit" ] && command -v git >/dev/null 2>&1 && git -C "$root" rev-parse HEAD >/dev/null 2>&1; then
  commit=$(git -C "$root" describe --always --dirty --abbrev=12)
fi
export FM_COMMIT=${commit:-unknown}
device=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
say "device: ${device:-nvidia-smi unavailable}; commit $FM_COMMIT"
nvidia-smi 2>&1 | head -20 >>"$runlog"

# ---- 1. tools -------------------------------------------------------------------
if ! command -v nvcc >/dev/null 2>&1; then
  for d in /usr/local/cuda/bin /usr/local/cuda-13.0/bin; do [ -x "$d/nvcc" ] && export PATH=$d:$PATH && break; done
fi
command -v nvcc >/dev/null 2>&1 || { say "FATAL: nvcc not found"; exit 1; }
say "nvcc: $(nvcc --version | tail -2 | head -1)"
PY=${PYTHON:-}
for p in $PY python3 /opt/torch/.venv/bin/python3; do
  if [ -n "$p" ] && "$p" -c 'import torch' >/dev/null 2>&1; then PY=$p; break; fi
done
if ! "${PY:-false}" -c 'import torch' >/dev/null 2>&1; then
  say "WARNING: no Python with PyTorch; the PyTorch baseline is skipped"
  PY=python3
fi
say "python: $PY ($("$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null))"

# cuDNN: $CUDNN_PATH, else PyTorch's wheel (nvidia/**/cudnn_backend.h and
# libcudnn.so.9), else the toolkit's. Every nvidia/**/lib directory of the
# wheels goes on LD_LIBRARY_PATH: cuDNN loads libcublasLt and libnvrtc at
# run time.
read -r cudnn_inc cudnn_lib nv_libs < <("$PY" - <<'EOF'
import glob, os, site, sys
roots = []
for r in list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()] + sys.path:
    if r and os.path.isdir(os.path.join(r, "nvidia")) and r not in roots:
        roots.append(r)
inc = lib = ""
libdirs = []
for r in roots:
    for h in glob.glob(os.path.join(r, "nvidia", "**", "cudnn_backend.h"), recursive=True):
        inc = inc or os.path.dirname(h)
    for l in glob.glob(os.path.join(r, "nvidia", "**", "libcudnn.so.9"), recursive=True):
        lib = lib or l
    for d in glob.glob(os.path.join(r, "nvidia", "**", "lib"), recursive=True):
        if glob.glob(os.path.join(d, "*.so*")) and d not in libdirs:
            libdirs.append(d)
print(inc or "-", lib or "-", ":".join(libdirs) or "-")
EOF
)
if [ -n "${CUDNN_PATH:-}" ] && [ -f "$CUDNN_PATH/include/cudnn_backend.h" ]; then
  cudnn_inc=$CUDNN_PATH/include
  cudnn_lib=$(ls "$CUDNN_PATH"/lib*/libcudnn.so* 2>/dev/null | head -1)
fi
if [ "${cudnn_inc:--}" = "-" ] && [ -f /usr/local/cuda/include/cudnn_backend.h ]; then
  cudnn_inc=/usr/local/cuda/include
  cudnn_lib=$(ls /usr/local/cuda/lib64/libcudnn.so* 2>/dev/null | head -1)
fi
if [ "${cudnn_inc:--}" = "-" ] || [ -z "${cudnn_lib:-}" ] || [ "$cudnn_lib" = "-" ]; then
  say "FATAL: cuDNN headers/library not found (set CUDNN_PATH)"
  exit 1
fi
export CUDNN_PATH=$(dirname "$cudnn_inc")
ld=$(dirname "$cudnn_lib")
[ "${nv_libs:--}" != "-" ] && ld=$ld:$nv_libs
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [ -d "$d" ] && ld=$ld:$d; done
say "cuDNN: $cudnn_inc, $cudnn_lib ($(grep -E '#define CUDNN_(MAJOR|MINOR|PATCHLEVEL) ' "$cudnn_inc/cudnn_version.h" | awk '{printf "%s%s", sep, $3; sep="."}'))"

# ---- 2. carried .deb packages ---------------------------------------------------------
prefix=""
if ls "$root"/.debs/*.deb >/dev/null 2>&1; then
  sysroot=$work/sysroot
  mkdir -p "$sysroot"
  for deb in "$root"/.debs/*.deb; do
    if command -v dpkg-deb >/dev/null 2>&1; then
      dpkg-deb -x "$deb" "$sysroot"
    else
      (cd "$work" && rm -f data.tar.* && ar x "$deb" && tar -xf data.tar.* -C "$sysroot")
    fi
  done
  prefix=$sysroot/usr
  ld=$ld:$sysroot/usr/lib/x86_64-linux-gnu
  say "unpacked $(ls "$root"/.debs/*.deb | wc -l) carried .deb files into $sysroot"
fi
export LD_LIBRARY_PATH=$ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# Full test set, when carried or given.
if [ -z "${FM_DATA:-}" ] && [ -d "$root/.data/fashion-mnist" ]; then
  export FM_DATA=$root/.data/fashion-mnist
fi
say "FM_DATA=${FM_DATA:-unset (fixtures only)}"

# ---- 3. build -------------------------------------------------------------------------
build=$work/build
if has_step build; then
  say "configure + build (engine-only, sm_$arch) -> build.log"
  cfg=(-S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DFM_ENGINE_ONLY=ON -DFM_CUDA=ON
       -DCMAKE_CUDA_ARCHITECTURES="$arch" -DFM_CUDNN_INCLUDE="$cudnn_inc" -DFM_CUDNN_LIB="$cudnn_lib")
  [ -n "$prefix" ] && cfg+=(-DCMAKE_PREFIX_PATH="$prefix")
  if ! limit 120 cmake "${cfg[@]}" >"$out/build.log" 2>&1 ||
     ! limit 240 cmake --build "$build" -j "$(nproc)" >>"$out/build.log" 2>&1; then
    say "FATAL: build failed; last lines:"
    tail -30 "$out/build.log" | tee -a "$runlog"
    exit 1
  fi
  say "build done"
fi

# ---- 4. tests ---------------------------------------------------------------------------
tests_rc=0
if has_step test; then
  say "tests -> tests.log (GPU suite verbose)"
  # Leave about 200 s for the benchmarks.
  (cd "$build" && FM_LOG_LEVEL=info limit $(($(left) - 200)) ctest -V -L gpu --timeout 280) >"$out/tests.log" 2>&1 ||
    tests_rc=$?
  grep -E "tests passed|Failed|Timeout|\(Skipped\)" "$out/tests.log" | tee -a "$runlog"
  if [ "$tests_rc" -ne 0 ]; then
    say "tests failed (rc $tests_rc): recording cuDNN's plan search -> cudnn-debug.log"
    (cd "$build" && CUDNN_LOGLEVEL_DBG=2 CUDNN_LOGDEST_DBG="$work/cudnn-debug.log" FM_LOG_LEVEL=debug \
       limit 45 ./tests/gpu/test_cudnn_graphs plans_on_device) >>"$runlog" 2>&1
    tail -c 15000000 "$work/cudnn-debug.log" >"$out/cudnn-debug.log" 2>/dev/null
  fi
fi

# ---- 5. benchmarks ------------------------------------------------------------------
if has_step bench; then
  models=$root/models
  if [ ! -f "$models/v1/model.json" ] || [ ! -f "$models/v2/model.json" ]; then
    models=$work/models # bench_cuda writes random weights there, for both benchmarks
  fi
  data_arg=()
  [ -n "${FM_DATA:-}" ] && data_arg=(--data "$FM_DATA")
  say "bench_cuda (models $models) -> bench_cuda.json, bench.log"
  limit 150 "$build/benchmarks/gpu/bench_cuda" --models "$models" "${data_arg[@]}" --ms "$bench_ms" \
    --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench.log" | grep -vE "^\s*$" | tail -4 | tee -a "$runlog"
  say "bench_torch.py -> bench_torch.json, bench.log"
  PYTHONUNBUFFERED=1 limit 120 "$PY" "$root/benchmarks/gpu/bench_torch.py" --models "$models" "${data_arg[@]}" \
    --ms "$bench_ms" --json "$out/bench_torch.json" 2>&1 | tee -a "$out/bench.log" | tail -4 | tee -a "$runlog"
  "$PY" "$root/benchmarks/gpu/summarize.py" --cuda "$out/bench_cuda.json" --torch "$out/bench_torch.json" \
    --tests "$out/tests.log" --device "${device:-unknown}" --date "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    --commit "$FM_COMMIT" --out "$out/summary.md" >/dev/null 2>>"$runlog"
  say "summary.md written"
  # Copied into the tree only when there are measurements (not on a machine
  # where bench_cuda found no GPU).
  results=$root/benchmarks/results
  if [ -s "$out/bench_cuda.json" ] && [ "$(cd "$out" && pwd)" != "$(cd "$results" 2>/dev/null && pwd)/gpu-$stamp" ] &&
     mkdir -p "$results" 2>/dev/null; then
    cp "$out/summary.md" "$results/gpu-$stamp.md" 2>/dev/null
    cp "$out/bench_cuda.json" "$results/gpu-$stamp.cuda.json" 2>/dev/null
    cp "$out/bench_torch.json" "$results/gpu-$stamp.torch.json" 2>/dev/null
  fi
fi
say "done in $(($(date +%s) - t0)) s; tests rc $tests_rc"
exit "$tests_rc"
