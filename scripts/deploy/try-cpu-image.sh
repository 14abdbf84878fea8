#!/usr/bin/env bash
# try-cpu-image.sh BUILD_DIR MODELS_DIR: a manual check of docker/Dockerfile.cpu's
# runtime stage on a machine without a Docker engine (root, debootstrap and
# access to deb.debian.org needed; not part of the test suite). It
#   1. debootstraps a Debian 12 minbase root (cached in $FM_ROOTFS_CACHE,
#      default /tmp/fm-bookworm-minbase.tar), close to debian:bookworm-slim;
#   2. runs the runtime stage's RUN instruction, taken verbatim from the
#      Dockerfile, in a chroot, after collect-runtime.sh has derived the
#      package list from BUILD_DIR's fmserve and fmctl (a CPU-only build);
#   3. copies the binaries, fm-drift-loop and MODELS_DIR/{v1,v2} like the COPY
#      lines, then runs fmserve like the Kubernetes pod: UID 10001, read-only
#      root, tmpfs /tmp and spool, the Dockerfile's ENV (ports 17070/18080);
#   4. checks /health, /ready, the HEALTHCHECK command run inside as 10001, one
#      prediction with BUILD_DIR's fmctl, and exit 0 after SIGTERM.
set -euo pipefail
build=$(cd "${1:?usage: try-cpu-image.sh BUILD_DIR MODELS_DIR}" && pwd)
models=$(cd "${2:?usage: try-cpu-image.sh BUILD_DIR MODELS_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
cache=${FM_ROOTFS_CACHE:-/tmp/fm-bookworm-minbase.tar}
work=$(mktemp -d /tmp/fm-try-image-XXXXXX)
trap 'rm -rf "$work"' EXIT
R=$work/rootfs
[ "$(id -u)" -eq 0 ] || { echo "try-cpu-image: needs root (chroot, mounts)" >&2; exit 1; }

if [ ! -f "$cache" ]; then
  command -v debootstrap >/dev/null || { echo "try-cpu-image: apt-get install debootstrap" >&2; exit 1; }
  debootstrap --variant=minbase bookworm "$work/fresh" http://deb.debian.org/debian >"$work/debootstrap.log"
  tar -C "$work/fresh" -cf "$cache" .
  rm -rf "$work/fresh"
fi
mkdir -p "$R" && tar -C "$R" -xf "$cache"
cp /etc/resolv.conf "$R/etc/resolv.conf"

"$root/docker/collect-runtime.sh" "$work/out" "$build/host/server/fmserve" "$build/host/cli/fmctl"
# The runtime stage's single RUN instruction and its ENV, from the Dockerfile itself.
python3 - "$root/docker/Dockerfile.cpu" "$work" <<'PY'
import re, shlex, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
stage = text[text.rindex("\nFROM "):]
runs = re.findall(r"^RUN (.*)$", stage, re.M)
assert len(runs) == 1, f"expected one RUN in the runtime stage, found {len(runs)}"
open(sys.argv[2] + "/run.sh", "w").write(runs[0] + "\n")
env = []
for line in re.findall(r"^ENV (.*)$", stage, re.M):
    env += shlex.split(line)
open(sys.argv[2] + "/env", "w").write("\n".join(env) + "\n")
PY
cp "$work/out/runtime-packages.txt" "$R/tmp/runtime-packages.txt"
cp "$root/docker/install-runtime.sh" "$R/tmp/install-runtime.sh"
cp "$work/run.sh" "$R/run.sh"
unshare --mount --fork bash -euo pipefail -c "
  mount --make-rprivate /
  mount -t proc proc '$R/proc'
  mount --rbind /dev '$R/dev'
  chroot '$R' /bin/sh -e /run.sh
"
rm "$R/run.sh"
cp -a "$work/out/bin/." "$R/usr/local/bin/"
cp -a "$root/docker/fm-drift-loop.sh" "$R/usr/local/bin/fm-drift-loop"
mkdir -p "$R/opt/fmserve/models" && cp -a "$models/v1" "$models/v2" "$R/opt/fmserve/models/"
echo "try-cpu-image: root filesystem $(du -sh "$R" | cut -f1), runtime packages: $(tr '\n' ' ' <"$work/out/runtime-packages.txt")"

mapfile -t envs <"$work/env"
envs+=(FM_PORT=17070 FM_HTTP_PORT=18080 PATH=/usr/local/bin:/usr/bin:/bin)
health=$(sed -n 's/.*CMD \["\/bin\/sh", "-c", "\(.*\)"\]$/\1/p' "$root/docker/Dockerfile.cpu" | sed 's/\\"/"/g')
export R health build root
export ENVS="${envs[*]}"
# Single quotes: the inner script expands its own variables.
# shellcheck disable=SC2016
unshare --mount --fork bash -uo pipefail -c '
  fail=0
  mount --make-rprivate /
  mount --bind "$R" "$R" && mount -o remount,bind,ro "$R"
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  mount -t tmpfs -o mode=1777,size=64m tmpfs "$R/tmp"
  mount -t tmpfs -o uid=10001,gid=10001,mode=0750 tmpfs "$R/var/spool/fmserve"
  as_fmserve() { chroot --userspec=10001:10001 "$R" /usr/bin/env -i $ENVS "$@"; }
  # Even root must not be able to write outside /tmp and the spool directory.
  if chroot "$R" /bin/sh -c "touch /opt/x" 2>/dev/null; then echo "FAIL: the root filesystem is writable"; fail=1; fi
  as_fmserve /bin/sh -c "touch /tmp/x /var/spool/fmserve/x" || { echo "FAIL: /tmp or the spool is not writable"; fail=1; }
  # Started directly (not through the function) so $! is fmserve itself: chroot,
  # env and sh all exec into it.
  chroot --userspec=10001:10001 "$R" /usr/bin/env -i $ENVS /bin/sh -c "cd /opt/fmserve && exec fmserve" \
    >"$R/../fmserve.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 150); do curl -fsS -o /dev/null http://127.0.0.1:18080/ready 2>/dev/null && break; sleep 0.2; done
  for path in /health /ready; do
    code=$(curl -s -o /dev/null -w "%{http_code}" "http://127.0.0.1:18080$path")
    echo "try-cpu-image: GET $path -> $code"; [ "$code" = 200 ] || fail=1
  done
  if as_fmserve /bin/sh -c "$health"; then echo "try-cpu-image: HEALTHCHECK passes"; else echo "FAIL: HEALTHCHECK"; fail=1; fi
  "$build/host/cli/fmctl" predict --server 127.0.0.1:17070 --data "$root/tests/fixtures/fashion-mnist" --limit 3 || fail=1
  kill -TERM "$pid"; wait "$pid"; rc=$?
  echo "try-cpu-image: fmserve exited $rc after SIGTERM"; [ "$rc" = 0 ] || { fail=1; cat "$R/../fmserve.log"; }
  exit $fail
'
echo "try-cpu-image: all checks passed"
