#!/usr/bin/env bash
# test_pg_harness.sh FMCTL: the shell PostgreSQL harness (tests/common/
# pg-harness.sh): start, a database per test, stop and restart mid-test, the
# TCP URL, fmctl against it, and teardown at exit. Exit 77 without server
# binaries.
set -uo pipefail
fmctl=$1
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../common/pg-harness.sh"
fail=0
check() { # check DESCRIPTION COMMAND...
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "[ OK ] $what"; else echo "[FAIL] $what"; fail=1; fi
}
fm_pg_start || exit $?
psql=$FM_PG_BINDIR/psql
[ -x "$psql" ] || psql=$(command -v psql || true)
[ -n "$psql" ] || { echo "SKIP: no psql next to the server binaries"; exit 77; }

url=$(fm_pg_createdb harness_sh) || { echo "[FAIL] createdb"; exit 1; }
check "query through the unix socket" "$psql" -X -At "$url" -c "SELECT 1"
check "query through TCP" "$psql" -X -At "$FM_PG_TCP_URL" -c "SELECT 1"
check "fmctl db migrate" "$fmctl" db migrate --database-url "$url"
check "schema present" test "$("$psql" -X -At "$url" -c "SELECT count(*) FROM schema_migrations")" -ge 4
fm_pg_stop
check "no server after stop" test -z "$("$psql" -X -At "$url" -c "SELECT 1" 2>/dev/null)"
fm_pg_restart
check "data kept across restart" test "$("$psql" -X -At "$url" -c "SELECT count(*) FROM schema_migrations")" -ge 4

# A harness in a subshell is torn down when that shell exits.
dir=$(bash -c ". '$here/../common/pg-harness.sh'; fm_pg_start >/dev/null 2>&1 || exit 9; echo \$FM_PG_DIR")
check "subshell harness started" test -n "$dir"
check "subshell harness removed at exit" test ! -e "$dir"
exit $fail
