#!/usr/bin/env bash
# ensure-cmake.sh: makes sure `cmake` is new enough for this project. The root
# CMakeLists needs 3.24, but Ubuntu 22.04 (the base of NVIDIA's CUDA images)
# ships 3.22, so there a pinned CMake from PyPI is installed into /usr/local.
# Used by the GPU image's build stage and the CUDA compile job in CI.
set -euo pipefail

required=3.24
pinned=${FM_CMAKE_VERSION:-4.2.3}

have=$(cmake --version 2>/dev/null | sed -n '1s/^cmake version \([0-9.]*\).*/\1/p' || true)
if [ -n "$have" ] && [ "$(printf '%s\n%s\n' "$required" "$have" | sort -V | head -n1)" = "$required" ]; then
  echo "ensure-cmake: cmake $have is new enough (>= $required)"
  exit 0
fi
echo "ensure-cmake: cmake ${have:-not found} is older than $required; installing cmake==$pinned from PyPI"
if ! python3 -m pip --version >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-cmake: python3-pip is missing; install it as root (apt-get install python3-pip)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends python3-pip
fi
python3 -m pip install --no-cache-dir --disable-pip-version-check "cmake==$pinned"
hash -r
cmake --version | head -n1
