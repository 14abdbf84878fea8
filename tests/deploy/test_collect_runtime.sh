#!/usr/bin/env bash
# test_collect_runtime.sh BINARY...: checks docker/collect-runtime.sh, which
# the image build stages use to decide the runtime packages, on this
# machine's own build (Debian 12, the CPU image's base): the binaries are
# copied, the list is sorted and unique, every listed package is installed,
# and every library a binary links directly is owned by a listed package or
# is one the GPU runtime image provides (the Dockerfile's --provided list).
set -uo pipefail
[ $# -ge 1 ] || { echo "usage: test_collect_runtime.sh BINARY..." >&2; exit 2; }
for t in dpkg-query readelf ldd; do
  command -v "$t" >/dev/null 2>&1 || { echo "SKIP: $t not found (not a Debian/Ubuntu system)"; exit 77; }
done
root=$(cd "$(dirname "$0")/../.." && pwd)
collect=$root/docker/collect-runtime.sh
# The same --provided list the GPU image's build stage passes (the CUDA and
# cuDNN libraries its runtime base image carries), taken from the Dockerfile.
provided=$(grep -o -- "--provided '[^']*'" "$root/docker/Dockerfile.gpu" | sed "s/^--provided '//; s/'\$//")
[ -n "$provided" ] || { echo "FAIL: no --provided list in docker/Dockerfile.gpu"; exit 1; }
IFS=, read -r -a globs <<<"$provided"
is_provided() {
  local g
  for g in "${globs[@]}"; do
    # shellcheck disable=SC2053 # the right side is a glob on purpose
    [[ $1 == $g ]] && return 0
  done
  return 1
}
work=$(mktemp -d "${TMPDIR:-/tmp}/fm-collect-XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
ok() { echo "  ok   $1"; }
bad() { echo "  FAIL $1"; failures=$((failures + 1)); }

if ! "$collect" --provided "$provided" "$work/out" "$@" >"$work/log" 2>&1; then
  bad "collect-runtime.sh failed: $(cat "$work/log")"
  exit 1
fi
list=$work/out/runtime-packages.txt
for b in "$@"; do
  if [ -x "$work/out/bin/$(basename "$b")" ]; then ok "$(basename "$b") copied"; else bad "$(basename "$b") not copied"; fi
done
if [ -s "$list" ] && sort -u "$list" | cmp -s - "$list"; then
  ok "package list is non-empty, sorted and unique ($(wc -l <"$list") packages: $(tr '\n' ' ' <"$list"))"
else
  bad "package list empty or unsorted: $(cat "$list")"
fi
while read -r pkg; do
  [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || bad "$pkg is not an installed package"
done <"$list"
for b in "$@"; do
  for so in $(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case $so in libcuda.so.*) continue ;; esac
    if is_provided "$so"; then
      ok "$(basename "$b"): $so is provided by the GPU runtime image (skipped, as in docker/Dockerfile.gpu)"
      continue
    fi
    path=$(ldd "$b" | awk -v so="$so" '$1 == so && $3 ~ /^\// { print $3; exit }')
    [ -n "$path" ] || { bad "$so of $b not resolved by ldd"; continue; }
    owner=""
    for p in "$path" "$(readlink -f "$path")" "/usr$path" "${path#/usr}"; do
      owner=$(dpkg-query -S "$p" 2>/dev/null | head -n1 | sed 's/[:,].*//') && [ -n "$owner" ] && break
    done
    if [ -n "$owner" ] && grep -qx "$owner" "$list"; then
      ok "$(basename "$b"): $so -> $owner listed"
    else
      bad "$(basename "$b"): $so ($path) owner '${owner:-none}' missing from the list"
    fi
  done
done
# A binary that is not executable is refused with its name.
printf 'not a binary' >"$work/plain"
if "$collect" "$work/out2" "$work/plain" >"$work/log2" 2>&1; then
  bad "a non-executable file was accepted"
elif grep -q "plain is not an executable" "$work/log2"; then
  ok "a non-executable file is refused, naming it"
else
  bad "wrong refusal message: $(cat "$work/log2")"
fi
echo "test_collect_runtime: $failures failure(s)"
[ $failures -eq 0 ]
