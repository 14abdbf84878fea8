/* fm_pg.h: a real, throwaway PostgreSQL server for tests (the shell twin is
 * tests/common/pg-harness.sh). Never a mock.
 *
 * fm_pg_start() runs initdb and pg_ctl from /usr/lib/postgresql/<newest>/bin
 * (or $FM_PG_BINDIR, or PATH) in a fresh temporary directory, listening on a
 * free 127.0.0.1 port and on a unix socket in that directory. initdb refuses
 * to run as root, so under root the server runs as the unprivileged user
 * fmtest (created with useradd on first use) in a directory it owns.
 *
 * Teardown: fm_pg_free() stops the server and removes the directory; an
 * atexit handler frees what the test left; and a watchdog process (outside
 * the test's process group) does the same if the test dies without exiting
 * normally (a crash, a timeout kill). FM_PG_KEEP=1 keeps the directory (with
 * server.log) for inspection. */
#ifndef FM_PG_H
#define FM_PG_H

#include <stddef.h>

typedef struct fm_pg fm_pg_t;

/* Starts a server. Returns 0; FM_EUNSUPPORTED when no PostgreSQL server
 * binaries exist (the test should skip, printing fm_last_error()); another
 * code when they exist but the server could not be started. */
int fm_pg_start(fm_pg_t **out);
/* Stops the server (if running) and removes its directory. */
void fm_pg_free(fm_pg_t *pg);

/* libpq URLs for the "postgres" database: through the unix socket, and
 * through TCP on 127.0.0.1. */
const char *fm_pg_url(const fm_pg_t *pg);
const char *fm_pg_tcp_url(const fm_pg_t *pg);
int fm_pg_port(const fm_pg_t *pg);
const char *fm_pg_dir(const fm_pg_t *pg);

/* Creates database `name` (dropping an old one of that name) and writes its
 * unix-socket URL into url. tcp: non-zero for the TCP URL instead. */
int fm_pg_create_db(fm_pg_t *pg, const char *name, int tcp, char *url, size_t cap);

/* Stops the server (fast shutdown: sessions are cut, data kept), and starts
 * it again on the same port with the same data: for tests of what happens
 * when the database goes away mid-traffic. */
int fm_pg_stop(fm_pg_t *pg);
int fm_pg_restart(fm_pg_t *pg);
int fm_pg_running(const fm_pg_t *pg);

/* One server per test program, started on first use and freed at exit, and
 * a fresh database named after the case for each call: the usual entry
 * point of a test case. Returns as fm_pg_start. */
int fm_pg_test_db(const char *name, char *url, size_t cap);
/* The process-wide server of fm_pg_test_db (NULL before its first call). */
fm_pg_t *fm_pg_shared(void);

#endif /* FM_PG_H */
