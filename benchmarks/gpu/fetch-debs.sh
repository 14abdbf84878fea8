#!/usr/bin/env bash
# fetch-debs.sh: downloads into .debs/ (git-ignored) the Debian packages an
# engine-only build needs on a GPU machine that lacks them: cJSON, oneDNN,
# and the zlib and OpenSSL headers (about 10 MB). Run it where apt works
# (a Debian 12 machine), carry .debs/ to the GPU machine, and
# run-on-gpu.sh unpacks them into a private prefix (nothing is installed).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$root/.debs"
cd "$root/.debs"
apt-get download libcjson1 libcjson-dev libdnnl2 libdnnl-dev zlib1g-dev libssl-dev
ls -la "$root/.debs"
