#!/usr/bin/env bash
# train-models.sh: retrains the two shipped models (models/v1, models/v2) with
# the exact settings they were committed with. Same data, same thread count
# and the same CPU type give bit-identical weights (see docs/training.md).
#
# usage: scripts/train-models.sh [--data DIR] [--only v1|v2] [--out DIR]
#   --data DIR   the full Fashion-MNIST (default $FM_DATA)
#   --only V     train one of the two
#   --out DIR    write DIR/v1 and DIR/v2 instead of models/ (to compare with the committed ones)
# Builds fmctl into ${FM_BUILD_DIR:-build} when it is not there yet.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${FM_BUILD_DIR:-$root/build}
data=${FM_DATA:-}
only=""
out=$root/models
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "train-models: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$data" ]; then
  echo "train-models: pass --data DIR or set FM_DATA (fmctl data fetch downloads Fashion-MNIST)" >&2
  exit 2
fi
case "$only" in ""|v1|v2) ;; *) echo "train-models: --only wants v1 or v2" >&2; exit 2 ;; esac

fmctl=$build/host/cli/fmctl
if [ ! -x "$fmctl" ]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target fmctl
fi

# The sidecar records the commit of the code that trained the model.
if [ -z "${FM_SOURCE_COMMIT:-}" ] && git rev-parse HEAD >/dev/null 2>&1; then
  FM_SOURCE_COMMIT=$(git rev-parse HEAD)
  git diff --quiet HEAD -- host cmake CMakeLists.txt || FM_SOURCE_COMMIT="$FM_SOURCE_COMMIT-dirty"
  export FM_SOURCE_COMMIT
fi

# Two threads: the reference count for bit-identical retraining (a different
# count trains an equally good model whose last bits differ). Idle OpenMP
# threads sleep instead of spinning, which keeps a shared machine usable and
# does not change a single bit of the result.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
mkdir -p "$out"
if [ -z "$only" ] || [ "$only" = v1 ]; then
  "$fmctl" train --arch mlp --name fashion-mnist-mlp --version v1 --data "$data" --out "$out/v1" \
    --epochs 40 --batch-size 128 --learning-rate 0.001 --optimizer adam --lr-schedule cosine \
    --dropout 0.2 --seed 1 --val-split 5000 --threads 2
fi
if [ -z "$only" ] || [ "$only" = v2 ]; then
  "$fmctl" train --arch cnn --name fashion-mnist-cnn --version v2 --data "$data" --out "$out/v2" \
    --epochs 20 --batch-size 128 --learning-rate 0.001 --optimizer adam --lr-schedule cosine \
    --dropout 0.4 --augment-shift 1 --augment-flip --seed 1 --val-split 5000 --threads 2
fi
