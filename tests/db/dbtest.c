/* dbtest.c: helpers for the PostgreSQL tests (see dbtest.h). */
#include "dbtest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_migrate.h"
#include "fm_pg.h"
#include "fm_test.h"

int dbtest_open(const char *name, fm_db_t **db, char *url, size_t cap) {
    char u[512];
    *db = NULL;
    int rc = fm_pg_test_db(name, u, sizeof u);
    if (rc)
        return rc;
    if (url)
        snprintf(url, cap, "%s", u);
    if ((rc = fm_db_connect(u, db)) != 0)
        return rc;
    fm_migrate_result_t res;
    if ((rc = fm_migrate_all(*db, &res)) != 0) {
        fm_db_close(*db);
        *db = NULL;
    }
    return rc;
}

int dbtest_run(const char *cmdline, char **out) {
    if (out)
        *out = NULL;
    char *cmd = malloc(strlen(cmdline) + 16);
    if (!cmd)
        return -1;
    sprintf(cmd, "%s 2>&1", cmdline);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p)
        return -1;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, p)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
    }
    if (buf)
        buf[len] = '\0';
    int st = pclose(p);
    if (out)
        *out = buf;
    else
        free(buf);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *dbtest_python(const char **why) {
    static char path[1024];
    static const char *reason;
    static int tried;
    if (tried) {
        *why = reason;
        return path[0] ? path : NULL;
    }
    tried = 1;
    const char *env = getenv("FM_TEST_PYTHON");
    if (!env || !*env) {
        reason = "FM_TEST_PYTHON is not set (the test suite sets it to build/venv/bin/python3; "
                 "scripts/test-env.sh makes that venv from tests/requirements.txt)";
        *why = reason;
        return NULL;
    }
    if (access(env, X_OK) != 0) {
        reason = "FM_TEST_PYTHON names no executable (run scripts/test-env.sh BUILD_DIR to make the venv)";
        *why = reason;
        return NULL;
    }
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import numpy, scipy' >/dev/null 2>&1", env);
    if (system(cmd) != 0) {
        reason = "the FM_TEST_PYTHON interpreter cannot import numpy and scipy (tests/requirements.txt)";
        *why = reason;
        return NULL;
    }
    snprintf(path, sizeof path, "%s", env);
    *why = NULL;
    return path;
}

const char *dbtest_fmctl(void) {
#ifdef FM_FMCTL_PATH
    return FM_FMCTL_PATH;
#else
    return "fmctl";
#endif
}

char *dbtest_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        if (len)
            *len = (size_t)n;
    }
    return buf;
}

int dbtest_query_int(fm_db_t *db, const char *sql, int64_t *out) {
    fm_db_result_t *r;
    int rc = fm_db_query(db, sql, 0, NULL, &r);
    if (rc)
        return rc;
    if (fm_db_result_rows(r) < 1)
        rc = fm_fail(FM_ENOTFOUND, "no rows from: %s", sql);
    else
        rc = fm_db_result_int64(r, 0, 0, out);
    fm_db_result_free(r);
    return rc;
}

int dbtest_rollups_vs_rebuild(fm_db_t *db, const char *since, const char *until, int64_t *diffs, int64_t *buckets) {
    *diffs = -1;
    *buckets = 0;
    const char *p[] = {since, until};
    int rc = fm_db_exec(db, "DROP TABLE IF EXISTS dbtest_rb, dbtest_pr");
    if (rc == 0)
        rc = fm_db_query(db,
                         "CREATE TEMP TABLE dbtest_rb AS SELECT * FROM rollup_buckets "
                         "WHERE bucket_start >= fm_bucket_start($1) AND bucket_start < $2",
                         2, p, NULL);
    if (rc == 0)
        rc = fm_db_query(db,
                         "CREATE TEMP TABLE dbtest_pr AS SELECT * FROM pixel_rollups "
                         "WHERE bucket_start >= fm_bucket_start($1) AND bucket_start < $2",
                         2, p, NULL);
    if (rc == 0)
        rc = fm_db_query(db, "SELECT fm_rollup_rebuild($1, $2)", 2, p, NULL);
    fm_db_result_t *r = NULL;
    if (rc == 0)
        rc = fm_db_query(
            db,
            "WITH rb AS (SELECT * FROM rollup_buckets WHERE bucket_start >= fm_bucket_start($1) AND bucket_start < $2), "
            "pr AS (SELECT * FROM pixel_rollups WHERE bucket_start >= fm_bucket_start($1) AND bucket_start < $2) "
            "SELECT (SELECT count(*) FROM (SELECT * FROM dbtest_rb EXCEPT ALL SELECT * FROM rb) a) + "
            "(SELECT count(*) FROM (SELECT * FROM rb EXCEPT ALL SELECT * FROM dbtest_rb) b) + "
            "(SELECT count(*) FROM (SELECT * FROM dbtest_pr EXCEPT ALL SELECT * FROM pr) c) + "
            "(SELECT count(*) FROM (SELECT * FROM pr EXCEPT ALL SELECT * FROM dbtest_pr) d), "
            "(SELECT count(*) FROM rb)",
            2, p, &r);
    if (rc == 0) {
        rc = fm_db_result_int64(r, 0, 0, diffs);
        if (rc == 0)
            rc = fm_db_result_int64(r, 0, 1, buckets);
    }
    fm_db_result_free(r);
    return rc;
}

const fm_dataset_t *dbtest_fixture_images(void) {
    static fm_dataset_t fixtures;
    if (!fixtures.n) {
        char *dir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
        int rc = fm_dataset_load(dir, "t10k", &fixtures);
        free(dir);
        if (rc != 0)
            return NULL;
    }
    return &fixtures;
}
