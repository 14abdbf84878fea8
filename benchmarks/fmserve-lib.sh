# shellcheck shell=bash
# fmserve-lib.sh: shell helpers shared by sweep.sh and compare.sh (sourced,
# not run): the build, the models and data, and fmserve processes on
# loopback that are stopped when the script exits.

# fm_lib_init BUILD_DIR: checks for fmserve and fmbench, building them when missing.
fm_lib_init() {
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  build=${1:-${FM_BUILD_DIR:-$root/build}}
  fmserve=$build/host/server/fmserve
  fmbench=$build/host/bench/fmbench
  if [ ! -x "$fmserve" ] || [ ! -x "$fmbench" ]; then
    echo "building fmserve and fmbench in $build" >&2
    cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target fmserve fmbench >/dev/null
  fi
  fm_tmp=$(mktemp -d "${TMPDIR:-/tmp}/fmbench-XXXXXX")
  fm_pids=()
  trap fm_lib_cleanup EXIT
  trap 'exit 130' INT TERM
}

fm_lib_cleanup() {
  local p
  for p in "${fm_pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${fm_pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  [ -n "${FM_KEEP_TMP:-}" ] || rm -rf "$fm_tmp"
}

# fm_models DIR: sets v1 and v2 (v2 empty when absent) from DIR (default models/).
fm_models() {
  local dir=${1:-$root/models}
  v1=$dir/v1
  v2=$dir/v2
  if [ ! -f "$v1/model.json" ]; then
    echo "no model in $v1: pass --models DIR (a directory holding v1/ and v2/), or train them with scripts/train-models.sh" >&2
    exit 2
  fi
  [ -f "$v2/model.json" ] || v2=""
}

# fm_data DIR: sets data to DIR, $FM_DATA, or the committed fixtures (1,000 images) with a note.
fm_data() {
  data=${1:-${FM_DATA:-}}
  if [ -z "$data" ]; then
    data=$root/tests/fixtures/fashion-mnist
    echo "note: no --data or FM_DATA; using the 1,000 fixture images in $data" >&2
  fi
}

# fm_start NAME [fmserve options...]: starts fmserve on free loopback ports;
# sets port_NAME. Returns 1 (after printing the log) when it does not start.
fm_start() {
  local name=$1; shift
  local ports=$fm_tmp/$name.ports log=$fm_tmp/$name.log
  rm -f "$ports"
  "$fmserve" --listen 127.0.0.1 --port 0 --http-port 0 --ports-file "$ports" --log-level warn "$@" >"$log" 2>&1 &
  local pid=$!
  fm_pids+=("$pid")
  local _
  for _ in $(seq 1 1200); do
    if [ -s "$ports" ]; then
      printf -v "port_$name" '%s' "$(cut -d' ' -f1 "$ports")"
      printf -v "pid_$name" '%s' "$pid"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "fmserve ($name) did not start:" >&2
      sed 's/^/  /' "$log" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "fmserve ($name) not ready after 120 s" >&2
  return 1
}

# fm_stop NAME: SIGTERM and wait; returns fmserve's exit code.
fm_stop() {
  local pidvar=pid_$1
  local pid=${!pidvar}
  kill -TERM "$pid" 2>/dev/null || return 0
  local rc=0
  wait "$pid" || rc=$?
  return $rc
}

# fm_csv_field FILE ROW COLUMN: the value of COLUMN (by header name) in data row ROW (1 = first).
fm_csv_field() {
  awk -F, -v row="$2" -v col="$3" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i; next }
    NR == row + 1 { if (c) print $c; exit }' "$1"
}
