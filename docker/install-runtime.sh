#!/usr/bin/env bash
# install-runtime.sh LIST [EXTRA...]: run in an image's runtime stage. Installs
# the packages named in LIST (written by collect-runtime.sh) plus EXTRA ones,
# skipping those the base image already has: reinstalling them would upgrade
# them past the versions the binaries were built against (cuDNN in the CUDA
# images). Leaves no apt lists or caches behind.
set -euo pipefail

if [ $# -lt 1 ] || [ ! -r "$1" ]; then
  echo "usage: install-runtime.sh LIST [EXTRA...]" >&2
  exit 2
fi
list=$1
shift

# A here-string, not process substitution: that needs /dev/fd, which a bare
# chroot lacks.
wanted=$(cat "$list"; printf '%s\n' "$@")
missing=()
while read -r pkg; do
  [ -n "$pkg" ] || continue
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done <<<"$wanted"

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-runtime: nothing to install"
else
  echo "install-runtime: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
