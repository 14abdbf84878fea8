#!/usr/bin/env bash
# test_fetch.sh FMCTL FIXTURES: `fmctl data fetch` against a real HTTP server
# on loopback (python3 -m http.server) serving (a) files that are not the
# official ones, which must be refused and never renamed into place, and
# (b) with FM_DATA set, the official files, which must be downloaded and verified.
set -u
fmctl=$1 fixtures=$2
command -v python3 >/dev/null || { echo "SKIP: python3 is needed for the loopback HTTP server"; exit 77; }
tmp=$(mktemp -d)
server_pid=
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail=0
check() { if eval "$2"; then echo "[ OK ] $1"; else echo "[FAIL] $1"; fail=1; fi; }

serve() { # serve DIR: starts a server on a free port, sets $port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$1" >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do curl -s "http://127.0.0.1:$port/" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "could not start the HTTP server"; exit 1
}

# (a) The fixtures carry the official names but not the official content.
mkdir -p "$tmp/mirror-bad"
cp "$fixtures"/fashion-mnist/*.gz "$tmp/mirror-bad/"
cp "$fixtures"/fashion-mnist/t10k-images-idx3-ubyte.gz "$tmp/mirror-bad/"
serve "$tmp/mirror-bad"
out=$("$fmctl" data fetch --out "$tmp/got-bad" --mirror "http://127.0.0.1:$port" 2>&1); rc=$?
check "non-official content is refused (exit 1)" '[ $rc -eq 1 ]'
check "the refusal names the file and the checksum" 'echo "$out" | grep -q "train-images-idx3-ubyte.gz.*MD5"'
check "nothing is renamed into place" '[ ! -e "$tmp/got-bad/train-images-idx3-ubyte.gz" ] && [ -z "$(ls "$tmp/got-bad")" ]'
out=$("$fmctl" data fetch --out "$tmp/got-404" --mirror "http://127.0.0.1:$port/missing" 2>&1); rc=$?
check "a missing file on the mirror is an error naming the URL" '[ $rc -eq 1 ] && echo "$out" | grep -q "missing/train-images"'
kill "$server_pid"; server_pid=

# (b) The official files, when the full data set is available.
if [ -n "${FM_DATA:-}" ] && [ -f "$FM_DATA/train-images-idx3-ubyte.gz" ]; then
  serve "$FM_DATA"
  "$fmctl" data fetch --out "$tmp/got" --mirror "http://127.0.0.1:$port" >/dev/null 2>&1; rc=$?
  check "official files download and verify" '[ $rc -eq 0 ] && [ $(ls "$tmp/got" | wc -l) -eq 4 ]'
  out=$("$fmctl" data fetch --out "$tmp/got" --mirror "http://127.0.0.1:$port" 2>&1); rc=$?
  check "a second fetch reuses the verified files" '[ $rc -eq 0 ] && echo "$out" | grep -q "present and verified"'
  "$fmctl" data fetch --verify --out "$tmp/got" >/dev/null 2>&1
  check "--verify accepts them" '[ $? -eq 0 ]'
else
  echo "[SKIP] official download: FM_DATA is not set to the full Fashion-MNIST"
fi
[ $fail -eq 0 ] && echo "fetch tests passed" || echo "fetch tests FAILED"
exit $fail
