#!/bin/sh
# fm-drift-loop [ARGS...]: the compose stack's periodic drift check. Runs
# `fmctl drift check ARGS` every FM_DRIFT_INTERVAL_MIN minutes (default 60) and
# logs one line per run: exit 0 = no drift, 3 = drift detected, anything else =
# the check itself failed. In Kubernetes a CronJob does this job instead.
# FM_DRIFT_ONCE=1 runs a single check and exits with fmctl's status.
set -u

interval_min=${FM_DRIFT_INTERVAL_MIN:-60}
fmctl=${FMCTL:-fmctl}
case $interval_min in
  '' | *[!0-9]*)
    echo "fm-drift-loop: FM_DRIFT_INTERVAL_MIN must be a whole number of minutes, got '$interval_min'" >&2
    exit 2
    ;;
esac
if [ "$interval_min" -lt 1 ]; then
  echo "fm-drift-loop: FM_DRIFT_INTERVAL_MIN must be at least 1" >&2
  exit 2
fi

log() {
  echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) fm-drift-loop: $*"
}

# `docker stop` sends SIGTERM to PID 1; a shell waiting on `sleep` would not
# see it until the sleep ended, so sleep in the background and wait on it.
sleeper=
trap 'log "stopping"; [ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; exit 0' TERM INT

while :; do
  "$fmctl" drift check "$@"
  rc=$?
  case $rc in
    0) log "no drift" ;;
    3) log "DRIFT DETECTED (fmctl drift check exited 3)" ;;
    *) log "drift check failed (fmctl exited $rc)" ;;
  esac
  if [ "${FM_DRIFT_ONCE:-0}" = 1 ]; then
    exit "$rc"
  fi
  log "next check in $interval_min min"
  sleep $((interval_min * 60)) &
  sleeper=$!
  wait "$sleeper"
  sleeper=
done
