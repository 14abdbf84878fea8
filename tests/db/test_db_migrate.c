/* test_db_migrate.c: the PostgreSQL harness itself (start, stop, restart,
 * teardown) and the schema migrations: applied once each and recorded,
 * re-running is a no-op, a changed migration is refused, a failing one leaves
 * nothing behind, two migrators at once are serialized, and `fmctl db
 * migrate` reports all of that with its exit code; with
 * FM_TEST_DATABASE_URL, the same on that external server. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dbtest.h"
#include "fm_db.h"
#include "fm_hash.h"
#include "fm_migrate.h"
#include "fm_pg.h"
#include "fm_test.h"

#define SKIP_WITHOUT_PG(rc)                                                     \
    do {                                                                        \
        if ((rc) == FM_EUNSUPPORTED) {                                          \
            static char why_[1024];                                             \
            snprintf(why_, sizeof why_, "no PostgreSQL: %s", fm_last_error()); \
            FM_TEST_SKIP(why_);                                                 \
        }                                                                       \
    } while (0)

/* A fresh database without any migration applied. */
static int fresh(const char *name, fm_db_t **db, char *url, size_t cap) {
    int rc = fm_pg_test_db(name, url, cap);
    if (rc == 0)
        rc = fm_db_connect(url, db);
    return rc;
}

static void test_harness_stop_restart(void) {
    fm_pg_t *pg;
    int rc = fm_pg_start(&pg);
    SKIP_WITHOUT_PG(rc);
    FM_REQUIRE_OK(rc);
    char dir[256];
    snprintf(dir, sizeof dir, "%s", fm_pg_dir(pg));
    struct stat st;
    FM_CHECK(stat(dir, &st) == 0);
    FM_CHECK_CONTAINS(fm_pg_url(pg), dir);

    fm_db_t *db = NULL;
    FM_CHECK_OK(fm_db_connect(fm_pg_url(pg), &db));
    fm_db_close(db);
    FM_CHECK_OK(fm_db_connect(fm_pg_tcp_url(pg), &db));
    int64_t one = 0;
    if (db)
        FM_CHECK_OK(dbtest_query_int(db, "SELECT 1", &one));
    FM_CHECK_EQ(one, 1);

    /* Stopping cuts the open session; new connections fail until restart. */
    FM_REQUIRE_OK(fm_pg_stop(pg));
    FM_CHECK(!fm_pg_running(pg));
    if (db)
        FM_CHECK(dbtest_query_int(db, "SELECT 1", &one) == FM_EDB);
    fm_db_close(db);
    db = NULL;
    FM_CHECK_ERR(fm_db_connect(fm_pg_url(pg), &db), FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "cannot connect");

    FM_REQUIRE_OK(fm_pg_restart(pg));
    FM_CHECK_OK(fm_db_connect(fm_pg_tcp_url(pg), &db));
    fm_db_close(db);

    char url[512];
    FM_CHECK_OK(fm_pg_create_db(pg, "harness_db", 1, url, sizeof url));
    FM_CHECK_CONTAINS(url, "/harness_db");
    FM_CHECK_OK(fm_db_connect(url, &db));
    fm_db_close(db);

    fm_pg_free(pg);
    FM_CHECK(stat(dir, &st) != 0); /* the directory is gone */
}

static void test_migrate_apply_and_record(void) {
    fm_db_t *db = NULL;
    char url[512];
    int rc = fresh("mig_apply", &db, url, sizeof url);
    SKIP_WITHOUT_PG(rc);
    FM_REQUIRE_OK(rc);
    int n;
    const fm_migration_t *list = fm_migrations(&n);
    FM_CHECK(n >= 4);
    fm_migrate_result_t res;
    FM_REQUIRE_OK(fm_migrate_all(db, &res));
    FM_CHECK_EQ(res.applied, n);
    FM_CHECK_EQ(res.present, 0);

    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db, "SELECT name, checksum, applied_at <= now() FROM schema_migrations ORDER BY name", 0,
                              NULL, &r));
    FM_CHECK_EQ(fm_db_result_rows(r), n);
    for (int i = 0; i < n && i < fm_db_result_rows(r); i++) {
        char sum[FM_SHA256_HEX_LEN + 1];
        fm_sha256_hex(list[i].sql, list[i].len, sum);
        FM_CHECK_STR(fm_db_result_value(r, i, 0), list[i].name);
        FM_CHECK_STR(fm_db_result_value(r, i, 1), sum);
        FM_CHECK_STR(fm_db_result_value(r, i, 2), "t");
    }
    fm_db_result_free(r);

    static const char *tables[] = {"predictions", "sampled_inputs", "feedback", "pixel_rollups", "rollup_buckets",
                                   "reference_profiles", "reference_pixel_hist", "reference_values", "drift_runs",
                                   "drift_results"};
    for (size_t i = 0; i < sizeof tables / sizeof *tables; i++) {
        const char *p[] = {tables[i]};
        FM_REQUIRE_OK(fm_db_query(db, "SELECT to_regclass($1) IS NOT NULL", 1, p, &r));
        if (strcmp(fm_db_result_value(r, 0, 0), "t") != 0)
            FM_TEST_FAIL_AT("table %s is missing", tables[i]);
        fm_db_result_free(r);
    }
    fm_db_close(db);
}

static void test_migrate_rerun_is_noop(void) {
    fm_db_t *db = NULL;
    char url[512];
    int rc = fresh("mig_rerun", &db, url, sizeof url);
    SKIP_WITHOUT_PG(rc);
    FM_REQUIRE_OK(rc);
    int n;
    fm_migrations(&n);
    fm_migrate_result_t res;
    FM_REQUIRE_OK(fm_migrate_all(db, &res));
    int64_t before = 0, after = 0;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT (extract(epoch FROM max(applied_at)) * 1e6)::bigint FROM schema_migrations",
                                 &before));
    FM_REQUIRE_OK(fm_migrate_all(db, &res));
    FM_CHECK_EQ(res.applied, 0);
    FM_CHECK_EQ(res.present, n);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT (extract(epoch FROM max(applied_at)) * 1e6)::bigint FROM schema_migrations",
                                 &after));
    FM_CHECK_EQ(before, after);
    int64_t rows = 0;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM schema_migrations", &rows));
    FM_CHECK_EQ(rows, n);
    fm_db_close(db);
}

static void test_migrate_changed_is_refused(void) {
    fm_db_t *db = NULL;
    char url[512];
    int rc = fresh("mig_changed", &db, url, sizeof url);
    SKIP_WITHOUT_PG(rc);
    FM_REQUIRE_OK(rc);
    int n;
    const fm_migration_t *list = fm_migrations(&n);
    fm_migrate_result_t res;
    FM_REQUIRE_OK(fm_migrate_all(db, &res));

    /* The same history with 002 edited and a new migration after it: the
     * edit is reported, and the new migration is not applied. */
    fm_migration_t changed[16];
    FM_REQUIRE(n + 1 <= 16);
    memcpy(changed, list, (size_t)n * sizeof *list);
    char *edited = malloc(list[1].len + 64);
    FM_REQUIRE(edited);
    sprintf(edited, "%s\n-- an edit after the fact\n", list[1].sql);
    changed[1].sql = edited;
    changed[1].len = strlen(edited);
    changed[n] = (fm_migration_t){"999_new.sql", "CREATE TABLE new_after_changed (x int);", 39};
    FM_CHECK_ERR(fm_migrate(db, changed, n + 1, &res), FM_ECHECKSUM);
    FM_CHECK_CONTAINS(fm_last_error(), list[1].name);
    FM_CHECK_CONTAINS(fm_last_error(), "changed after it was applied");
    int64_t exists = 1;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT (to_regclass('new_after_changed') IS NOT NULL)::int", &exists));
    FM_CHECK_EQ(exists, 0);
    free(edited);

    /* The lock was released despite the error: a normal run proceeds. */
    FM_CHECK_OK(fm_migrate_all(db, &res));
    fm_db_close(db);

    /* The CLI says the same and fails. */
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' db migrate --database-url '%s'", dbtest_fmctl(), url);
    fm_db_connect(url, &db);
    FM_REQUIRE(db);
    FM_CHECK_OK(fm_db_exec(db, "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE name = '003_rollups.sql'"));
    fm_db_close(db);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 1);
    FM_CHECK_CONTAINS(out, "003_rollups.sql was changed after it was applied");
    free(out);
}

static void test_migrate_failure_rolls_back(void) {
    fm_db_t *db = NULL;
    char url[512];
    int rc = fresh("mig_fail", &db, url, sizeof url);
    SKIP_WITHOUT_PG(rc);
    FM_REQUIRE_OK(rc);
    int n;
    const fm_migration_t *list = fm_migrations(&n);
    fm_migrate_result_t res;
    FM_REQUIRE_OK(fm_migrate_all(db, &res));
    fm_migration_t more[16];
    memcpy(more, list, (size_t)n * sizeof *list);
    const char *bad = "CREATE TABLE half_done (x int);\nSELECT 1 / 0;";
    more[n] = (fm_migration_t){"998_bad.sql", bad, strlen(bad)};
    FM_CHECK_ERR(fm_migrate(db, more, n + 1, &res), FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "998_bad.sql failed");
    FM_CHECK_CONTAINS(fm_last_error(), "division by zero");
    int64_t v = 1;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT (to_regclass('half_done') IS NOT NULL)::int", &v));
    FM_CHECK_EQ(v, 0);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM schema_migrations WHERE name = '998_bad.sql'", &v));
    FM_CHECK_EQ(v, 0);
    /* Out-of-order lists are refused before touching the database. */
    fm_migration_t swapped[2] = {list[1], list[0]};
    FM_CHECK_ERR(fm_migrate(db, swapped, 2, &res), FM_EINVAL);
    fm_db_close(db);
}

static void test_migrate_concurrent(void) {
    fm_db_t *db = NULL;
    char url[512];
    int rc = fresh("mig_concurrent", &db, url, sizeof url);
    SKIP_WITHOUT_PG(rc);
    FM_REQUIRE_OK(rc);
    fm_db_close(db);
    int n;
    fm_migrations(&n);
    /* Three processes migrate the same empty database at once; the advisory
     * lock makes them take turns, so each migration is applied exactly once.
     * A child's exit status is how many it applied (255 on error). */
    pid_t kids[3];
    for (int k = 0; k < 3; k++) {
        kids[k] = fork();
        FM_REQUIRE(kids[k] >= 0);
        if (kids[k] == 0) {
            fm_db_t *c;
            fm_migrate_result_t res;
            if (fm_db_connect(url, &c) != 0 || fm_migrate_all(c, &res) != 0) {
                fprintf(stderr, "child: %s\n", fm_last_error());
                _exit(255);
            }
            fm_db_close(c);
            _exit(res.applied);
        }
    }
    int total = 0;
    for (int k = 0; k < 3; k++) {
        int st;
        waitpid(kids[k], &st, 0);
        FM_CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 255);
        total += WIFEXITED(st) ? WEXITSTATUS(st) : 0;
    }
    FM_CHECK_EQ(total, n);
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    int64_t rows = 0;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM schema_migrations", &rows));
    FM_CHECK_EQ(rows, n);
    fm_db_close(db);
}

static void test_migrate_unknown_is_reported(void) {
    fm_db_t *db = NULL;
    char url[512];
    int rc = fresh("mig_unknown", &db, url, sizeof url);
    SKIP_WITHOUT_PG(rc);
    FM_REQUIRE_OK(rc);
    fm_migrate_result_t res;
    FM_REQUIRE_OK(fm_migrate_all(db, &res));
    FM_REQUIRE_OK(fm_db_exec(db, "INSERT INTO schema_migrations (name, checksum) VALUES ('999_future.sql', 'x')"));
    FM_CHECK_OK(fm_migrate_all(db, &res));
    FM_CHECK_EQ(res.unknown, 1);
    FM_CHECK_EQ(res.applied, 0);
    fm_db_close(db);
}

static void test_cli_migrate(void) {
    fm_db_t *db = NULL;
    char url[512];
    int rc = fresh("mig_cli", &db, url, sizeof url);
    SKIP_WITHOUT_PG(rc);
    FM_REQUIRE_OK(rc);
    fm_db_close(db);
    int n;
    fm_migrations(&n);
    char cmd[1024], *out = NULL, want[64];
    snprintf(cmd, sizeof cmd, "'%s' db migrate --list --database-url '%s'", dbtest_fmctl(), url);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 0);
    FM_CHECK_CONTAINS(out, "001_schema.sql           not applied");
    free(out);
    /* The URL from the environment, as in production. */
    snprintf(cmd, sizeof cmd, "FM_DATABASE_URL='%s' '%s' db migrate", url, dbtest_fmctl());
    FM_CHECK_EQ(dbtest_run(cmd, &out), 0);
    snprintf(want, sizeof want, "migrations: %d applied, 0 already present", n);
    FM_CHECK_CONTAINS(out, want);
    free(out);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 0);
    snprintf(want, sizeof want, "0 applied, %d already present (schema up to date)", n);
    FM_CHECK_CONTAINS(out, want);
    free(out);
    snprintf(cmd, sizeof cmd, "env -u FM_DATABASE_URL '%s' db migrate", dbtest_fmctl());
    FM_CHECK_EQ(dbtest_run(cmd, &out), 1);
    FM_CHECK_CONTAINS(out, "FM_DATABASE_URL");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' db migrate --database-url 'postgresql://nobody@127.0.0.1:1/none'", dbtest_fmctl());
    FM_CHECK_EQ(dbtest_run(cmd, &out), 1);
    FM_CHECK_CONTAINS(out, "cannot connect to PostgreSQL");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' db migrate --bogus", dbtest_fmctl());
    FM_CHECK_EQ(dbtest_run(cmd, NULL), 2);
}

/* An external server (CI's PostgreSQL service container, another major
 * version than the Debian package): every migration applies there, and a
 * second run is a no-op. Its database may have been migrated before. */
static void test_external_server(void) {
    const char *url = getenv("FM_TEST_DATABASE_URL");
    if (!url || !url[0])
        FM_TEST_SKIP("FM_TEST_DATABASE_URL is not set (CI sets it to its PostgreSQL service container)");
    fm_db_t *db = NULL;
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    int n;
    fm_migrations(&n);
    fm_migrate_result_t res;
    FM_REQUIRE_OK(fm_migrate_all(db, &res));
    FM_CHECK_EQ(res.applied + res.present, n);
    FM_REQUIRE_OK(fm_migrate_all(db, &res));
    FM_CHECK_EQ(res.applied, 0);
    FM_CHECK_EQ(res.present, n);
    int64_t version = 0;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT current_setting('server_version_num')::int", &version));
    fprintf(stderr, "  external server: PostgreSQL %lld, %d migrations present\n", (long long)version, n);
    fm_db_close(db);
}

FM_TEST_MAIN({"harness_stop_restart", test_harness_stop_restart},
             {"migrate_apply_and_record", test_migrate_apply_and_record},
             {"migrate_rerun_is_noop", test_migrate_rerun_is_noop},
             {"migrate_changed_is_refused", test_migrate_changed_is_refused},
             {"migrate_failure_rolls_back", test_migrate_failure_rolls_back},
             {"migrate_concurrent", test_migrate_concurrent},
             {"migrate_unknown_is_reported", test_migrate_unknown_is_reported},
             {"cli_migrate", test_cli_migrate}, {"external_server", test_external_server})
