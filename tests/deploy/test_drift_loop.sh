#!/usr/bin/env bash
# test_drift_loop.sh FMCTL: checks docker/fm-drift-loop.sh, the compose stack's
# periodic drift check, with the real fmctl: bad intervals are refused, one
# run reports fmctl's exit status in its log line and returns it, and SIGTERM
# during the sleep between checks ends the loop at once with status 0.
set -uo pipefail
fmctl=${1:?usage: test_drift_loop.sh FMCTL}
loop=$(cd "$(dirname "$0")/../.." && pwd)/docker/fm-drift-loop.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/fm-drift-loop-XXXXXX")
trap 'rm -rf "$work"' EXIT
failures=0
ok() { echo "  ok   $1"; }
bad() { echo "  FAIL $1"; failures=$((failures + 1)); }

# 1. Intervals that are not whole positive minutes are refused (exit 2).
for v in abc 0 -5 1.5; do
  FM_DRIFT_INTERVAL_MIN=$v FMCTL=$fmctl "$loop" >"$work/out" 2>&1
  rc=$?
  if [ $rc -eq 2 ] && grep -q FM_DRIFT_INTERVAL_MIN "$work/out"; then
    ok "FM_DRIFT_INTERVAL_MIN=$v refused"
  else
    bad "FM_DRIFT_INTERVAL_MIN=$v: exit $rc, output: $(cat "$work/out")"
  fi
done

# 2. One run: the loop's verdict line matches fmctl's own exit status. The
# database is unreachable on purpose (a closed port), so this needs no server.
export FM_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
env -u FM_DRIFT_ONCE "$fmctl" drift check >/dev/null 2>&1
want=$?
case $want in
  0) phrase="no drift" ;;
  3) phrase="DRIFT DETECTED" ;;
  *) phrase="drift check failed (fmctl exited $want)" ;;
esac
FM_DRIFT_ONCE=1 FMCTL=$fmctl "$loop" >"$work/once" 2>&1
rc=$?
if [ $rc -eq "$want" ] && grep -qF "$phrase" "$work/once"; then
  ok "one run logs '$phrase' and exits $want like fmctl"
else
  bad "one run: exit $rc (fmctl alone: $want), log: $(cat "$work/once")"
fi

# 3. SIGTERM while sleeping between checks stops the loop promptly with 0.
FM_DRIFT_INTERVAL_MIN=30 FMCTL=$fmctl "$loop" >"$work/loop" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  grep -q "next check in 30 min" "$work/loop" && break
  sleep 0.1
done
start=$(date +%s)
kill -TERM "$pid"
wait "$pid"
rc=$?
took=$(($(date +%s) - start))
if [ $rc -eq 0 ] && [ $took -le 3 ] && grep -q stopping "$work/loop"; then
  ok "SIGTERM during the sleep: exit 0 after ${took}s"
else
  bad "SIGTERM: exit $rc after ${took}s, log: $(cat "$work/loop")"
fi

echo "test_drift_loop: $failures failure(s)"
[ $failures -eq 0 ]
