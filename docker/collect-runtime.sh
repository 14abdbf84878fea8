#!/usr/bin/env bash
# collect-runtime.sh [--provided GLOB[,GLOB...]] OUT BINARY...: run in an
# image's build stage. Copies the binaries to OUT/bin and writes
# OUT/runtime-packages.txt, the Debian/Ubuntu packages that own the shared
# libraries the binaries link directly, so the runtime stage installs exactly
# those (apt pulls in their own dependencies). --provided names sonames the
# runtime base image already carries (CUDA and cuDNN in NVIDIA's runtime
# image); they are skipped, as is the NVIDIA driver's libcuda, which the
# container runtime mounts. Any other library that belongs to no package
# makes it fail, naming the library.
set -euo pipefail

provided=""
if [ "${1:-}" = --provided ]; then
  provided=${2:?--provided needs a list}
  shift 2
fi
if [ $# -lt 2 ]; then
  echo "usage: collect-runtime.sh [--provided GLOB[,GLOB...]] OUT BINARY..." >&2
  exit 2
fi
out=$1
shift

globs=()
[ -z "$provided" ] || IFS=, read -r -a globs <<<"$provided"
is_provided() {
  local glob
  for glob in "${globs[@]}"; do
    # shellcheck disable=SC2053 # the right side is a glob on purpose
    [[ $1 == $glob ]] && return 0
  done
  return 1
}
mkdir -p "$out/bin"

# Resolves a library path to its owning package. Merged-/usr systems register
# some files under /lib and others under /usr/lib, so both spellings are tried.
owner_of() {
  local path=$1 real alt
  real=$(readlink -f "$path")
  for candidate in "$path" "$real" "${path#/usr}" "${real#/usr}" "/usr$path" "/usr$real"; do
    [ -n "$candidate" ] || continue
    if alt=$(dpkg-query -S "$candidate" 2>/dev/null); then
      # "pkg:arch: /path" or "pkg1, pkg2: /path"; take the first package name.
      alt=${alt%%: *}
      alt=${alt%%,*}
      echo "${alt%%:*}"
      return 0
    fi
  done
  return 1
}

packages=()
unowned=()
skipped=()
for bin in "$@"; do
  if [ ! -x "$bin" ]; then
    echo "collect-runtime: $bin is not an executable file" >&2
    exit 1
  fi
  install -m 0755 "$bin" "$out/bin/"
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  for soname in $needed; do
    case $soname in
      libcuda.so.*) continue ;;  # the driver's library: mounted by the NVIDIA container runtime
    esac
    if is_provided "$soname"; then
      skipped+=("$soname")
      continue
    fi
    path=$(ldd "$bin" | awk -v so="$soname" '$1 == so && $3 ~ /^\// { print $3; exit }')
    if [ -z "$path" ]; then
      unowned+=("$soname (not found by ldd)")
      continue
    fi
    if pkg=$(owner_of "$path"); then
      packages+=("$pkg")
    else
      unowned+=("$soname ($path)")
    fi
  done
done

if [ ${#unowned[@]} -gt 0 ]; then
  echo "collect-runtime: no package owns these libraries: ${unowned[*]}" >&2
  exit 1
fi
if [ ${#skipped[@]} -gt 0 ]; then
  echo "collect-runtime: provided by the runtime base image: $(printf '%s\n' "${skipped[@]}" | sort -u | tr '\n' ' ')"
fi
printf '%s\n' "${packages[@]}" | sort -u >"$out/runtime-packages.txt"
echo "collect-runtime: runtime packages: $(tr '\n' ' ' <"$out/runtime-packages.txt")"
