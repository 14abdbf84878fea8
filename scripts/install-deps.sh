#!/usr/bin/env bash
# install-deps.sh: installs the Debian/Ubuntu packages fmserve builds and tests
# with, skipping those already present. Usage: scripts/install-deps.sh [--test]
# (--test adds what the test suite needs: gnuplot, Python venv). The PostgreSQL
# server is in both sets: the main job (./fm demo) runs a throwaway one.
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config
  libuv1-dev libmsgpack-dev libdnnl-dev libcjson-dev libhttp-parser-dev
  zlib1g-dev libcurl4-openssl-dev libssl-dev libpq-dev libpng-dev postgresql)
test_pkgs=(gnuplot-nox python3-venv)

# msgpack-c is libmsgpack-dev up to Debian 12 / Ubuntu 22.04 and libmsgpack-c-dev after.
if command -v apt-cache >/dev/null 2>&1 && ! apt-cache show libmsgpack-dev >/dev/null 2>&1 \
   && apt-cache show libmsgpack-c-dev >/dev/null 2>&1; then
  build_pkgs=("${build_pkgs[@]/libmsgpack-dev/libmsgpack-c-dev}")
fi

want=("${build_pkgs[@]}")
if [ "${1:-}" = "--test" ]; then
  want+=("${test_pkgs[@]}")
fi

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: this is not a Debian/Ubuntu system (no apt-get)." >&2
  echo "install-deps: install these by hand (names are Debian's): ${want[*]}" >&2
  exit 1
fi

missing=()
for p in "${want[@]}"; do
  # python3-venv is only needed where python3 cannot make a venv already (pyenv builds can).
  if [ "$p" = python3-venv ] && python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    continue
  fi
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#want[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_cmd=(sudo)
  else
    echo "install-deps: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq || echo "install-deps: apt-get update failed; trying with the cached package lists" >&2
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
