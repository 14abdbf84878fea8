# pg-harness.sh: a real, throwaway PostgreSQL server for shell tests and
# benchmarks. Source it, then call fm_pg_start; everything is torn down when
# the sourcing shell exits. The C twin is tests/common/fm_pg.{h,c}.
#
#   . tests/common/pg-harness.sh
#   fm_pg_start || exit $?     # 77 (skip) when no PostgreSQL server binaries exist
#   psql "$FM_PG_URL" -c 'select 1'
#   fm_pg_stop; fm_pg_restart  # stop and start the same cluster mid-test
#
# Sets FM_PG_URL (unix socket), FM_PG_TCP_URL (127.0.0.1), FM_PG_DIR, FM_PG_PORT,
# FM_PG_BINDIR, FM_PG_USER. initdb refuses to run as root, so as root the server runs as the
# unprivileged user fmtest (created on first use) in a directory it owns.
# FM_PG_BINDIR may name the server binaries; FM_PG_KEEP=1 keeps the directory;
# FM_PG_DURABLE=1 keeps PostgreSQL's durability settings (fsync, synchronous
# commit) for benchmarks, where the test defaults (off) would flatter writes.

fm_pg_find_bindir() {
  if [ -n "${FM_PG_BINDIR:-}" ] && [ -x "$FM_PG_BINDIR/initdb" ]; then
    echo "$FM_PG_BINDIR"; return 0
  fi
  local d best=""
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && best=$d
  done
  if [ -z "$best" ] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    best=$(dirname "$(command -v initdb)")
  fi
  [ -n "$best" ] && echo "$best"
}

# Runs a command as the server's owner (fmtest when we are root).
fm_pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u fmtest -- "$@"
  else
    "$@"
  fi
}

fm_pg_ensure_user() {
  [ "$(id -u)" -eq 0 ] || return 0
  id fmtest >/dev/null 2>&1 && return 0
  # Two tests may race to create the user; the loser sees it exist afterwards.
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin fmtest >/dev/null 2>&1 ||
    id fmtest >/dev/null 2>&1 || { echo "pg-harness: cannot create user fmtest (useradd failed)" >&2; return 1; }
}

fm_pg_port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

fm_pg_start() {
  FM_PG_BINDIR=$(fm_pg_find_bindir) || true
  if [ -z "$FM_PG_BINDIR" ]; then
    echo "SKIP: no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin or on PATH;" \
      "install the postgresql package (scripts/install-deps.sh --test)" >&2
    return 77
  fi
  fm_pg_ensure_user || return 1
  FM_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/fmpg-XXXXXX") || return 1
  chmod 755 "$FM_PG_DIR"
  [ "$(id -u)" -eq 0 ] && chown fmtest "$FM_PG_DIR"
  trap fm_pg_cleanup EXIT
  local user
  user=$([ "$(id -u)" -eq 0 ] && echo fmtest || id -un)
  if ! fm_pg_as_owner "$FM_PG_BINDIR/initdb" -D "$FM_PG_DIR/data" -U "$user" -A trust -E UTF8 --locale=C \
      --no-sync >"$FM_PG_DIR/initdb.log" 2>&1; then
    echo "pg-harness: initdb failed:" >&2; cat "$FM_PG_DIR/initdb.log" >&2; return 1
  fi
  if [ "${FM_PG_DURABLE:-0}" != 1 ]; then
    printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' >>"$FM_PG_DIR/data/postgresql.conf"
  fi
  cat >>"$FM_PG_DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$FM_PG_DIR'
max_connections = 60
shared_buffers = 128MB
work_mem = 64MB
maintenance_work_mem = 256MB
logging_collector = off
CONF
  local try
  for try in 1 2 3 4 5 6 7 8; do
    FM_PG_PORT=$((20000 + RANDOM % 40000))
    fm_pg_port_in_use "$FM_PG_PORT" && continue
    if fm_pg_as_owner "$FM_PG_BINDIR/pg_ctl" -D "$FM_PG_DIR/data" -l "$FM_PG_DIR/server.log" -w -t 60 \
        -o "-p $FM_PG_PORT" start >/dev/null 2>&1; then
      break
    fi
    FM_PG_PORT=""
  done
  if [ -z "$FM_PG_PORT" ]; then
    echo "pg-harness: PostgreSQL did not start; server log:" >&2; tail -20 "$FM_PG_DIR/server.log" >&2; return 1
  fi
  FM_PG_USER=$user
  FM_PG_URL="postgresql:///postgres?host=$FM_PG_DIR&port=$FM_PG_PORT&user=$user"
  FM_PG_TCP_URL="postgresql://$user@127.0.0.1:$FM_PG_PORT/postgres"
  export FM_PG_URL FM_PG_TCP_URL FM_PG_DIR FM_PG_PORT FM_PG_BINDIR FM_PG_USER
}

fm_pg_stop() {
  fm_pg_as_owner "$FM_PG_BINDIR/pg_ctl" -D "$FM_PG_DIR/data" -m fast -w stop >/dev/null
}

fm_pg_restart() {
  fm_pg_as_owner "$FM_PG_BINDIR/pg_ctl" -D "$FM_PG_DIR/data" -l "$FM_PG_DIR/server.log" -w -t 60 \
    -o "-p $FM_PG_PORT" start >/dev/null
}

# Creates database $1 (owned by the harness user) and prints its unix-socket URL.
fm_pg_createdb() {
  "$FM_PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "$FM_PG_URL" -c "CREATE DATABASE \"$1\"" >/dev/null || return 1
  echo "postgresql:///$1?host=$FM_PG_DIR&port=$FM_PG_PORT&user=$FM_PG_USER"
}

fm_pg_cleanup() {
  [ -n "${FM_PG_DIR:-}" ] && [ -d "$FM_PG_DIR" ] || return 0
  if [ -f "$FM_PG_DIR/data/postmaster.pid" ]; then
    fm_pg_as_owner "$FM_PG_BINDIR/pg_ctl" -D "$FM_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  if [ "${FM_PG_KEEP:-0}" = 1 ]; then
    echo "pg-harness: kept $FM_PG_DIR" >&2
  else
    rm -rf "$FM_PG_DIR"
  fi
  FM_PG_DIR=""
}
