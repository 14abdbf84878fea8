/* fm_db.c: the libpq wrapper behind fm_db.h. Keeps each server error's
 * message and SQLSTATE so that callers can report them and tell "no data"
 * from real failures. */
#include "fm_db.h"

#include <errno.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "fm_error.h"
#include "fm_log.h"

struct fm_db {
    PGconn *conn;
    char sqlstate[6];
};

struct fm_db_result {
    PGresult *res;
};

const char *fm_db_url(const char *flag) {
    if (flag && *flag)
        return flag;
    const char *env = getenv("FM_DATABASE_URL");
    if (env && *env)
        return env;
    fm_fail(FM_EINVAL, "no database: pass --database-url URL or set FM_DATABASE_URL "
                       "(a libpq URI such as postgresql://user@host:5432/fmserve)");
    return NULL;
}

/* Trims the trailing newline libpq puts on messages. */
static void trim(char *s) {
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
}

/* Records a failed result: message, SQLSTATE, and the code it maps to. */
static int fail_result(fm_db_t *db, PGresult *res, const char *what) {
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    snprintf(db->sqlstate, sizeof db->sqlstate, "%s", state ? state : "");
    int code = FM_EDB;
    if (strncmp(db->sqlstate, "02", 2) == 0 || strcmp(db->sqlstate, "P0002") == 0)
        code = FM_ENOTFOUND;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (!primary) {
        /* No server error (a broken connection): libpq's own message. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res)
                                                                           : PQerrorMessage(db->conn));
        trim(msg);
        return fm_fail(code, "%s: %s", what, msg);
    }
    const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
    const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
    const char *context = PQresultErrorField(res, PG_DIAG_CONTEXT);
    char ctx[256] = "";
    if (context) { /* its first line says where: "COPY predictions, line 3" */
        snprintf(ctx, sizeof ctx, "%s", context);
        ctx[strcspn(ctx, "\n")] = '\0';
    }
    return fm_fail(code, "%s: %s%s%s%s%s%s%s%s", what, primary, detail ? " (" : "", detail ? detail : "",
                   detail ? ")" : "", hint ? "; hint: " : "", hint ? hint : "", ctx[0] ? "; at " : "", ctx);
}

/* Server notices (e.g. "relation already exists, skipping") go to the debug
 * log instead of libpq's default of printing them on stderr. */
static void notice_to_log(void *arg, const char *message) {
    (void)arg;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", message);
    trim(msg);
    fm_debug("db", "%s", msg);
}

/* Opens a connection: `keys`/`vals` are libpq keywords applied before the
 * URL (so the URL can override them). */
static int connect_with(const char *url, const char *const *extra_keys, const char *const *extra_vals,
                        fm_db_t **out) {
    *out = NULL;
    if (!url || !*url)
        return fm_fail(FM_EINVAL, "fm_db_connect: empty database URL");
    fm_db_t *db = calloc(1, sizeof *db);
    if (!db)
        return fm_fail(FM_ENOMEM, "fm_db_connect: out of memory");
    /* connect_timeout comes before the URL so that the URL can override it;
     * fallback_application_name applies only when the URL names none. */
    const char *keys[16] = {"connect_timeout"}, *vals[16] = {"10"};
    int k = 1;
    for (int i = 0; extra_keys && extra_keys[i] && k < 12; i++) {
        if (strcmp(extra_keys[i], "connect_timeout") == 0) {
            vals[0] = extra_vals[i];
            continue;
        }
        keys[k] = extra_keys[i];
        vals[k++] = extra_vals[i];
    }
    keys[k] = "dbname";
    vals[k++] = url;
    keys[k] = "fallback_application_name";
    vals[k++] = "fmserve";
    keys[k] = NULL;
    vals[k] = NULL;
    db->conn = PQconnectdbParams(keys, vals, 1);
    if (!db->conn) {
        free(db);
        return fm_fail(FM_ENOMEM, "fm_db_connect: out of memory");
    }
    if (PQstatus(db->conn) != CONNECTION_OK) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", PQerrorMessage(db->conn));
        trim(msg);
        PQfinish(db->conn);
        free(db);
        return fm_fail(FM_EDB, "cannot connect to PostgreSQL: %s", msg);
    }
    PQsetNoticeProcessor(db->conn, notice_to_log, NULL);
    *out = db;
    return 0;
}

int fm_db_connect(const char *url, fm_db_t **out) { return connect_with(url, NULL, NULL, out); }

int fm_db_connect_watchful(const char *url, int dead_after_ms, fm_db_t **out) {
    if (dead_after_ms < 2000)
        dead_after_ms = 2000;
    /* Keepalive probes find a silent peer on an idle connection; the user
     * timeout bounds how long sent data may stay unacknowledged. Both are
     * ignored on unix sockets, where the kernel reports a dead server. */
    char connect_s[16], idle_s[16], interval_s[16], user_ms[16];
    snprintf(connect_s, sizeof connect_s, "%d", dead_after_ms / 1000);
    snprintf(idle_s, sizeof idle_s, "%d", dead_after_ms / 2000 > 0 ? dead_after_ms / 2000 : 1);
    snprintf(interval_s, sizeof interval_s, "%d", dead_after_ms / 6000 > 0 ? dead_after_ms / 6000 : 1);
    snprintf(user_ms, sizeof user_ms, "%d", dead_after_ms);
    const char *keys[] = {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "tcp_user_timeout", NULL};
    const char *vals[] = {connect_s, "1", idle_s, interval_s, "3", user_ms, NULL};
    return connect_with(url, keys, vals, out);
}

int fm_db_ok(const fm_db_t *db) { return db && PQstatus(db->conn) == CONNECTION_OK; }

void fm_db_interrupt(fm_db_t *db) {
    int fd = db ? PQsocket(db->conn) : -1;
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

void fm_db_close(fm_db_t *db) {
    if (!db)
        return;
    PQfinish(db->conn);
    free(db);
}

const char *fm_db_sqlstate(const fm_db_t *db) { return db->sqlstate; }

int fm_db_server_version(const fm_db_t *db) { return PQserverVersion(db->conn); }

int fm_db_exec(fm_db_t *db, const char *sql) {
    db->sqlstate[0] = '\0';
    if (!PQsendQuery(db->conn, sql))
        return fail_result(db, NULL, "query");
    int rc = 0;
    PGresult *res;
    /* A simple query may hold several statements: read every result, keep
     * the first error. */
    while ((res = PQgetResult(db->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (rc == 0 && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY)
            rc = fail_result(db, res, "query");
        PQclear(res);
    }
    return rc;
}

int fm_db_query(fm_db_t *db, const char *sql, int nparams, const char *const *params, fm_db_result_t **out) {
    if (out)
        *out = NULL;
    db->sqlstate[0] = '\0';
    PGresult *res = PQexecParams(db->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        int rc = fail_result(db, res, "query");
        PQclear(res);
        return rc;
    }
    if (!out) {
        PQclear(res);
        return 0;
    }
    fm_db_result_t *r = malloc(sizeof *r);
    if (!r) {
        PQclear(res);
        return fm_fail(FM_ENOMEM, "fm_db_query: out of memory");
    }
    r->res = res;
    *out = r;
    return 0;
}

int fm_db_result_rows(const fm_db_result_t *r) { return PQntuples(r->res); }
int fm_db_result_cols(const fm_db_result_t *r) { return PQnfields(r->res); }
int fm_db_result_col(const fm_db_result_t *r, const char *name) { return PQfnumber(r->res, name); }
const char *fm_db_result_value(const fm_db_result_t *r, int row, int col) { return PQgetvalue(r->res, row, col); }
int fm_db_result_is_null(const fm_db_result_t *r, int row, int col) { return PQgetisnull(r->res, row, col); }

int fm_db_result_int64(const fm_db_result_t *r, int row, int col, int64_t *out) {
    if (row < 0 || row >= PQntuples(r->res) || col < 0 || col >= PQnfields(r->res))
        return fm_fail(FM_EINVAL, "result has no row %d column %d", row, col);
    if (PQgetisnull(r->res, row, col))
        return fm_fail(FM_EFORMAT, "column %s is NULL", PQfname(r->res, col));
    const char *s = PQgetvalue(r->res, row, col);
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return fm_fail(FM_EFORMAT, "column %s: '%s' is not an integer", PQfname(r->res, col), s);
    *out = v;
    return 0;
}

int fm_db_result_double(const fm_db_result_t *r, int row, int col, double *out) {
    if (row < 0 || row >= PQntuples(r->res) || col < 0 || col >= PQnfields(r->res))
        return fm_fail(FM_EINVAL, "result has no row %d column %d", row, col);
    if (PQgetisnull(r->res, row, col))
        return fm_fail(FM_EFORMAT, "column %s is NULL", PQfname(r->res, col));
    const char *s = PQgetvalue(r->res, row, col);
    char *end;
    errno = 0;
    double v = strtod(s, &end); /* PostgreSQL prints Infinity and NaN, which strtod reads */
    if (end == s || *end)
        return fm_fail(FM_EFORMAT, "column %s: '%s' is not a number", PQfname(r->res, col), s);
    *out = v;
    return 0;
}

void fm_db_result_free(fm_db_result_t *r) {
    if (!r)
        return;
    PQclear(r->res);
    free(r);
}

int fm_db_copy_begin(fm_db_t *db, const char *copy_sql) {
    db->sqlstate[0] = '\0';
    PGresult *res = PQexec(db->conn, copy_sql);
    if (!res || PQresultStatus(res) != PGRES_COPY_IN) {
        int rc = fail_result(db, res, "COPY");
        PQclear(res);
        return rc;
    }
    PQclear(res);
    return 0;
}

int fm_db_copy_put(fm_db_t *db, const void *buf, size_t len) {
    const char *p = buf;
    /* PQputCopyData takes an int length. */
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        if (PQputCopyData(db->conn, p, chunk) != 1)
            return fail_result(db, NULL, "COPY data");
        p += chunk;
        len -= (size_t)chunk;
    }
    return 0;
}

int fm_db_copy_end(fm_db_t *db) {
    if (PQputCopyEnd(db->conn, NULL) != 1)
        return fail_result(db, NULL, "COPY end");
    int rc = 0;
    PGresult *res;
    while ((res = PQgetResult(db->conn)) != NULL) {
        if (rc == 0 && PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = fail_result(db, res, "COPY");
        PQclear(res);
    }
    return rc;
}

int fm_db_listen(fm_db_t *db, const char *channel) {
    char *id = PQescapeIdentifier(db->conn, channel, strlen(channel));
    if (!id)
        return fail_result(db, NULL, "LISTEN");
    size_t n = strlen(id) + 16;
    char *sql = malloc(n);
    if (!sql) {
        PQfreemem(id);
        return fm_fail(FM_ENOMEM, "fm_db_listen: out of memory");
    }
    snprintf(sql, n, "LISTEN %s", id);
    PQfreemem(id);
    int rc = fm_db_exec(db, sql);
    free(sql);
    return rc;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int fm_db_wait_notify(fm_db_t *db, int timeout_ms, char **channel, char **payload) {
    *channel = NULL;
    *payload = NULL;
    int64_t deadline = now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    for (;;) {
        if (!PQconsumeInput(db->conn))
            return fail_result(db, NULL, "waiting for a notification");
        PGnotify *n = PQnotifies(db->conn);
        if (n) {
            *channel = strdup(n->relname);
            *payload = strdup(n->extra ? n->extra : "");
            PQfreemem(n);
            if (!*channel || !*payload) {
                free(*channel);
                free(*payload);
                *channel = *payload = NULL;
                return fm_fail(FM_ENOMEM, "fm_db_wait_notify: out of memory");
            }
            return 0;
        }
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return fm_fail(FM_EDEADLINE, "no notification within %d ms", timeout_ms);
        struct pollfd pfd = {.fd = PQsocket(db->conn), .events = POLLIN};
        if (pfd.fd < 0)
            return fm_fail(FM_EDB, "waiting for a notification: connection has no socket");
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno != EINTR)
            return fm_fail(FM_EIO, "poll: %s", strerror(errno));
    }
}

char *fm_db_quote_literal(fm_db_t *db, const char *s) {
    char *q = PQescapeLiteral(db->conn, s, strlen(s));
    if (!q) {
        fail_result(db, NULL, "quoting");
        return NULL;
    }
    char *copy = strdup(q);
    PQfreemem(q);
    if (!copy)
        fm_fail(FM_ENOMEM, "fm_db_quote_literal: out of memory");
    return copy;
}
