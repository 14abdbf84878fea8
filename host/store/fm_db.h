/* fm_db.h: fmserve's one door to PostgreSQL (the only file that includes
 * libpq is fm_db.c). Synchronous calls for the command-line tool, tests and
 * benchmarks: connect, run statements, read results, COPY rows in, LISTEN.
 *
 * Errors: every function returns 0 or a negative FM_E* code with a detail
 * from fm_fail() that carries the server's message. FM_EDB is a database or
 * connection error; FM_ENOTFOUND a server error with SQLSTATE class 02 or
 * P0002 (no data found), which the drift functions raise for an empty
 * window. fm_db_sqlstate() gives the last error's SQLSTATE. */
#ifndef FM_DB_H
#define FM_DB_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_db fm_db_t;
typedef struct fm_db_result fm_db_result_t;

/* The database URL: `flag` when given, else $FM_DATABASE_URL, else NULL with
 * an fm_fail detail that says how to give one. */
const char *fm_db_url(const char *flag);

/* Opens a connection from a libpq URI or key=value string (application_name
 * defaults to fmserve; connect_timeout to 10 s). Server notices go to the
 * debug log. */
int fm_db_connect(const char *url, fm_db_t **out);
void fm_db_close(fm_db_t *db);

/* The same for a long-lived connection (the server's log writer) that must
 * notice a dead server or network within about dead_after_ms: connect
 * timeout, TCP keepalives and TCP user timeout follow from it. */
int fm_db_connect_watchful(const char *url, int dead_after_ms, fm_db_t **out);
/* 1 while the connection itself is usable; 0 once it broke (a failed
 * statement on a healthy connection leaves it 1). */
int fm_db_ok(const fm_db_t *db);
/* Callable from another thread: shuts the connection's socket down so that
 * a call blocked on it fails at once. The caller must make sure the
 * connection is not being closed at the same time. */
void fm_db_interrupt(fm_db_t *db);

/* Runs one or more statements without parameters (a simple query); any
 * result rows are discarded. */
int fm_db_exec(fm_db_t *db, const char *sql);

/* Runs one statement with text parameters $1..$n (NULL entries are SQL
 * NULLs). `res` may be NULL when the rows are not wanted; otherwise the
 * caller frees *res with fm_db_result_free. */
int fm_db_query(fm_db_t *db, const char *sql, int nparams, const char *const *params, fm_db_result_t **res);

int fm_db_result_rows(const fm_db_result_t *r);
int fm_db_result_cols(const fm_db_result_t *r);
/* Column index by name, or -1. */
int fm_db_result_col(const fm_db_result_t *r, const char *name);
/* Text of a value ("" for NULL; valid until the result is freed). */
const char *fm_db_result_value(const fm_db_result_t *r, int row, int col);
int fm_db_result_is_null(const fm_db_result_t *r, int row, int col);
/* Parses a value; FM_EFORMAT (naming the column) when it is NULL or not a
 * number. */
int fm_db_result_int64(const fm_db_result_t *r, int row, int col, int64_t *out);
int fm_db_result_double(const fm_db_result_t *r, int row, int col, double *out);
void fm_db_result_free(fm_db_result_t *r);

/* COPY ... FROM STDIN: begin with the COPY statement, put any number of
 * buffers holding whole or partial rows, then end; end reports the server's
 * verdict on the whole COPY (a bad row fails it, naming the line). */
int fm_db_copy_begin(fm_db_t *db, const char *copy_sql);
int fm_db_copy_put(fm_db_t *db, const void *buf, size_t len);
int fm_db_copy_end(fm_db_t *db);

/* LISTEN on a channel (quoted as an identifier). */
int fm_db_listen(fm_db_t *db, const char *channel);
/* Waits up to timeout_ms for a notification. On 0 the caller frees *channel
 * and *payload with free(); FM_EDEADLINE when none arrived in time. */
int fm_db_wait_notify(fm_db_t *db, int timeout_ms, char **channel, char **payload);

/* SQLSTATE of the last failed statement on this connection ("" if none). */
const char *fm_db_sqlstate(const fm_db_t *db);
/* Server version number, e.g. 150018. */
int fm_db_server_version(const fm_db_t *db);

/* Quotes a string as an SQL literal or identifier (malloc'd; NULL on
 * failure with a detail). */
char *fm_db_quote_literal(fm_db_t *db, const char *s);

#endif /* FM_DB_H */
