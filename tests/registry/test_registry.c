/* test_registry.c: `fmctl models` against a real PostgreSQL: register
 * (verified, with sha256, metrics and MLflow run id), list and show, promote
 * a canary and promote directly, roll back twice along the line of stable
 * versions, the errors (unknown version, nothing to roll back, a corrupt
 * artifact refused at register and at promote), the history (who, when,
 * from, to, reason), NOTIFY on fm_registry after each role change and only
 * then, the at-most-one-stable/canary constraints, and promotes racing. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dbtest.h"
#include "fm_db.h"
#include "fm_error.h"
#include "fm_pg.h"
#include "fm_registry.h"
#include "fm_test.h"
#include "regtest.h"

static char models[512];

/* <tmp>/regmodels/vN for N in 1..5: v1 mlp, v2 cnn, v3 mlp, v4 mlp, v5 mlp. */
static const char *model_dir(int n) {
    static char path[6][600];
    if (!models[0]) {
        snprintf(models, sizeof models, "%s/regmodels", fm_test_tmpdir());
        mkdir(models, 0755);
        for (int i = 1; i <= 5; i++) {
            char v[8];
            snprintf(v, sizeof v, "v%d", i);
            snprintf(path[i], sizeof path[i], "%s/%s", models, v);
            if (regtest_write_model(path[i], i == 2, (uint64_t)i, v, 0.80 + 0.01 * i, i == 1 ? "0123abcdrun" : NULL)) {
                fprintf(stderr, "cannot write %s: %s\n", path[i], fm_last_error());
                exit(1);
            }
        }
    }
    return path[n];
}

#define OPEN_DB(name, db, url)                                             \
    do {                                                                   \
        int rc_ = dbtest_open(name, &db, url, sizeof url);                 \
        if (rc_ == FM_EUNSUPPORTED)                                        \
            FM_TEST_SKIP(fm_last_error());                                 \
        FM_REQUIRE_OK(rc_);                                                \
    } while (0)

static void role_of(fm_db_t *db, const char *version, char *out, size_t cap) {
    fm_reg_version_t v;
    if (fm_registry_get(db, version, &v) == 0)
        snprintf(out, cap, "%s", v.role);
    else
        snprintf(out, cap, "?");
}

#define CHECK_ROLE(db, version, want)                \
    do {                                             \
        char r_[16];                                 \
        role_of(db, version, r_, sizeof r_);         \
        FM_CHECK_STR(r_, want);                      \
    } while (0)

/* The next notification on `listener`, or "" after timeout_ms. */
static void next_notify(fm_db_t *listener, int timeout_ms, char *payload, size_t cap) {
    char *ch, *pl;
    payload[0] = '\0';
    if (fm_db_wait_notify(listener, timeout_ms, &ch, &pl) == 0) {
        if (strcmp(ch, FM_REGISTRY_CHANNEL) == 0)
            snprintf(payload, cap, "%s", pl);
        free(ch);
        free(pl);
    }
}

static int run(const char *url, char **out, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(const char *url, char **out, const char *fmt, ...) {
    char args[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    char *o = NULL;
    int rc = regtest_fmctl(url, args, &o);
    if (out)
        *out = o;
    else
        free(o);
    return rc;
}

static void test_lifecycle_commands(void) {
    fm_db_t *db, *listener;
    char url[512];
    OPEN_DB("reg_lifecycle", db, url);
    FM_REQUIRE_OK(fm_db_connect(url, &listener));
    FM_REQUIRE_OK(fm_db_listen(listener, FM_REGISTRY_CHANNEL));
    char payload[512], *out;

    /* register v1 as the first stable version */
    FM_CHECK_EQ(run(url, &out, "models register '%s' --role stable --reason initial --by alice", model_dir(1)), 0);
    FM_CHECK_CONTAINS(out, "registered v1 (fashion-mnist-mlp, mlp)");
    FM_CHECK_CONTAINS(out, "role stable");
    free(out);
    fm_reg_version_t v;
    FM_REQUIRE_OK(fm_registry_get(db, "v1", &v));
    char sha[65], abs[600];
    FM_REQUIRE_OK(regtest_model_sha(model_dir(1), sha));
    FM_CHECK_STR(v.sha256, sha);
    FM_REQUIRE(realpath(model_dir(1), abs) != NULL);
    FM_CHECK_STR(v.artifact_uri, abs);
    FM_CHECK_STR(v.mlflow_run_id, "0123abcdrun");
    FM_CHECK_STR(v.mlflow_version, "7");
    FM_CHECK_STR(v.registered_by, "alice");
    FM_CHECK_CONTAINS(v.metrics, "\"test_accuracy\": 0.81");
    FM_CHECK(v.trained_at[0] != '\0');
    next_notify(listener, 2000, payload, sizeof payload);
    FM_CHECK_CONTAINS(payload, "\"stable\" : \"v1\"");
    FM_CHECK_CONTAINS(payload, "\"canary\" : null");

    /* register without a role: no role change, no notification */
    FM_CHECK_EQ(run(url, NULL, "models register '%s'", model_dir(2)), 0);
    CHECK_ROLE(db, "v2", "none");
    next_notify(listener, 300, payload, sizeof payload);
    FM_CHECK_STR(payload, "");
    /* the same version id twice is refused, naming where the first one is */
    FM_CHECK_EQ(run(url, &out, "models register '%s'", model_dir(2)), 1);
    FM_CHECK_CONTAINS(out, "version v2 is already registered");
    free(out);

    /* v2 becomes the canary, then the stable version */
    FM_CHECK_EQ(run(url, &out, "models promote v2 --role canary --reason 'try the cnn'"), 0);
    FM_CHECK_CONTAINS(out, "v2 is the canary");
    free(out);
    next_notify(listener, 2000, payload, sizeof payload);
    FM_CHECK_CONTAINS(payload, "\"canary\" : \"v2\"");
    FM_CHECK_CONTAINS(payload, "\"operation\" : \"set-canary\"");
    FM_CHECK_EQ(run(url, &out, "models promote --reason 'canary is good'"), 0);
    FM_CHECK_CONTAINS(out, "promoted v2 to stable; v1 archived");
    free(out);
    CHECK_ROLE(db, "v2", "stable");
    CHECK_ROLE(db, "v1", "archived");
    next_notify(listener, 2000, payload, sizeof payload);
    FM_CHECK_CONTAINS(payload, "\"stable\" : \"v2\"");
    FM_CHECK_CONTAINS(payload, "\"canary\" : null");

    /* v3 straight to stable, then roll back twice: v2, then v1 */
    FM_CHECK_EQ(run(url, NULL, "models register '%s'", model_dir(3)), 0);
    FM_CHECK_EQ(run(url, NULL, "models promote v3"), 0);
    CHECK_ROLE(db, "v3", "stable");
    CHECK_ROLE(db, "v2", "archived");
    next_notify(listener, 2000, payload, sizeof payload);
    FM_CHECK_EQ(run(url, &out, "models rollback --reason 'v3 is worse' --by bob"), 0);
    FM_CHECK_CONTAINS(out, "rolled back: v2 is the stable version again (v3 archived)");
    free(out);
    next_notify(listener, 2000, payload, sizeof payload);
    FM_CHECK_CONTAINS(payload, "\"operation\" : \"rollback\"");
    FM_CHECK_CONTAINS(payload, "\"stable\" : \"v2\"");
    FM_CHECK_EQ(run(url, &out, "models rollback"), 0);
    FM_CHECK_CONTAINS(out, "v1 is the stable version again (v2 archived)");
    free(out);
    CHECK_ROLE(db, "v1", "stable");
    next_notify(listener, 2000, payload, sizeof payload);
    FM_CHECK_CONTAINS(payload, "\"stable\" : \"v1\"");
    FM_CHECK_EQ(run(url, &out, "models rollback"), 1);
    FM_CHECK_CONTAINS(out, "nothing to roll back: v1 is the first stable version in the history");
    free(out);

    /* errors */
    FM_CHECK_EQ(run(url, &out, "models promote v9"), 1);
    FM_CHECK_CONTAINS(out, "unknown model version \"v9\"");
    free(out);
    FM_CHECK_EQ(run(url, &out, "models promote"), 1);
    FM_CHECK_CONTAINS(out, "there is no canary to promote");
    free(out);
    FM_CHECK_EQ(run(url, &out, "models promote v1"), 1);
    FM_CHECK_CONTAINS(out, "already the stable");
    free(out);
    FM_CHECK_EQ(run(url, &out, "models archive v1"), 1);
    FM_CHECK_CONTAINS(out, "v1 is the stable version and cannot be archived");
    free(out);
    FM_CHECK_EQ(run(url, &out, "models promote v1 --role canary"), 1);
    FM_CHECK_CONTAINS(out, "cannot also be the canary");
    free(out);
    FM_CHECK_EQ(run(url, &out, "models promote v2 --role bogus"), 2);
    FM_CHECK_CONTAINS(out, "--role must be stable or canary");
    free(out);
    /* failed commands notified nobody */
    next_notify(listener, 300, payload, sizeof payload);
    FM_CHECK_STR(payload, "");

    /* history: every change, who, why, from, to */
    fm_reg_change_t *h;
    int n;
    FM_REQUIRE_OK(fm_registry_history(db, NULL, &h, &n));
    int promote_v2 = -1, rollback_v3 = -1;
    for (int i = 0; i < n; i++) {
        if (!strcmp(h[i].version, "v2") && !strcmp(h[i].to_role, "stable") && !strcmp(h[i].operation, "promote"))
            promote_v2 = i;
        if (!strcmp(h[i].version, "v3") && !strcmp(h[i].operation, "rollback"))
            rollback_v3 = i;
    }
    FM_REQUIRE(promote_v2 >= 0 && rollback_v3 >= 0);
    FM_CHECK_STR(h[promote_v2].from_role, "canary");
    FM_CHECK_STR(h[promote_v2].reason, "canary is good");
    FM_CHECK_STR(h[promote_v2].previous_stable, "v1");
    FM_CHECK(strchr(h[promote_v2].changed_by, '@') != NULL); /* $USER@host by default */
    FM_CHECK_STR(h[rollback_v3].from_role, "stable");
    FM_CHECK_STR(h[rollback_v3].to_role, "archived");
    FM_CHECK_STR(h[rollback_v3].changed_by, "bob");
    FM_CHECK_STR(h[rollback_v3].reason, "v3 is worse");
    FM_CHECK(h[rollback_v3].changed_at[0] == '2');
    free(h);

    /* list and show */
    FM_CHECK_EQ(run(url, &out, "models list"), 0);
    FM_CHECK_CONTAINS(out, "VERSION");
    FM_CHECK_CONTAINS(out, "v1         stable");
    FM_CHECK_CONTAINS(out, "v2         archived");
    FM_CHECK_CONTAINS(out, "0.8100");
    free(out);
    FM_CHECK_EQ(run(url, &out, "models list --history"), 0);
    FM_CHECK_CONTAINS(out, "canary->stable");
    FM_CHECK_CONTAINS(out, "v3 is worse");
    free(out);
    FM_CHECK_EQ(run(url, &out, "models show v2"), 0);
    FM_CHECK_CONTAINS(out, "role          archived");
    FM_CHECK_CONTAINS(out, "try the cnn");
    free(out);
    FM_CHECK_EQ(run(url, &out, "models show v42"), 1);
    FM_CHECK_CONTAINS(out, "unknown model version");
    free(out);
    fm_db_close(listener);
    fm_db_close(db);
}

static void test_corrupt_artifacts(void) {
    fm_db_t *db;
    char url[512], *out;
    OPEN_DB("reg_corrupt", db, url);
    FM_CHECK_EQ(run(url, NULL, "models register '%s' --role stable", model_dir(1)), 0);
    /* a corrupt model is refused at register time, and nothing is recorded */
    char *bad = fm_test_path(fm_test_tmpdir(), "bad-v7");
    FM_REQUIRE_OK(regtest_write_model(bad, 0, 7, "v7", 0.5, NULL));
    FM_REQUIRE_OK(regtest_corrupt(bad));
    FM_CHECK_EQ(run(url, &out, "models register '%s' --role canary", bad), 1);
    FM_CHECK_CONTAINS(out, "refusing to register");
    FM_CHECK_CONTAINS(out, "SHA-256");
    free(out);
    int64_t count = -1;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM model_versions WHERE version = 'v7'", &count));
    FM_CHECK_EQ(count, 0);
    FM_CHECK_EQ(run(url, &out, "models register /nonexistent/model"), 1);
    FM_CHECK_CONTAINS(out, "/nonexistent/model");
    free(out);
    /* registered intact, damaged afterwards: promote refuses it... */
    char *v8 = fm_test_path(fm_test_tmpdir(), "v8");
    FM_REQUIRE_OK(regtest_write_model(v8, 0, 8, "v8", 0.5, NULL));
    FM_CHECK_EQ(run(url, NULL, "models register '%s'", v8), 0);
    FM_REQUIRE_OK(regtest_corrupt(v8));
    FM_CHECK_EQ(run(url, &out, "models promote v8"), 1);
    FM_CHECK_CONTAINS(out, "refusing to change roles");
    free(out);
    CHECK_ROLE(db, "v1", "stable");
    CHECK_ROLE(db, "v8", "none");
    /* ... and so does rollback's target: replaced by another valid model
     * under the same name, the sha256 differs from the registry's */
    FM_CHECK_EQ(run(url, NULL, "models register '%s'", model_dir(3)), 0);
    FM_CHECK_EQ(run(url, NULL, "models promote v3"), 0);
    FM_REQUIRE_OK(regtest_write_model(model_dir(1), 0, 99, "v1", 0.5, NULL));
    FM_CHECK_EQ(run(url, &out, "models rollback"), 1);
    FM_CHECK_CONTAINS(out, "the registry recorded");
    free(out);
    CHECK_ROLE(db, "v3", "stable");
    /* --no-verify leaves the check to the servers */
    FM_CHECK_EQ(run(url, NULL, "models promote v8 --no-verify"), 0);
    CHECK_ROLE(db, "v8", "stable");
    FM_REQUIRE_OK(regtest_write_model(model_dir(1), 0, 1, "v1", 0.81, "0123abcdrun")); /* restore for other cases */
    free(bad);
    free(v8);
    fm_db_close(db);
}

static void test_constraints(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("reg_constraints", db, url);
    FM_CHECK_EQ(run(url, NULL, "models register '%s' --role stable", model_dir(1)), 0);
    FM_CHECK_EQ(run(url, NULL, "models register '%s' --role canary", model_dir(2)), 0);
    FM_CHECK_EQ(run(url, NULL, "models register '%s'", model_dir(3)), 0);
    /* whatever writes the table, a second stable or canary is impossible */
    FM_CHECK_ERR(fm_db_exec(db, "UPDATE model_versions SET role = 'stable' WHERE version = 'v3'"), FM_EDB);
    FM_CHECK_STR(fm_db_sqlstate(db), "23505");
    FM_CHECK_ERR(fm_db_exec(db, "UPDATE model_versions SET role = 'canary' WHERE version = 'v3'"), FM_EDB);
    FM_CHECK_STR(fm_db_sqlstate(db), "23505");
    FM_CHECK_ERR(fm_db_exec(db, "INSERT INTO model_versions (version, name, arch, artifact_uri, weights_sha256, "
                                "registered_by) VALUES ('bad version!', 'x', 'mlp', '/x', repeat('a', 64), 't')"),
                 FM_EDB);
    FM_CHECK_ERR(fm_db_exec(db, "INSERT INTO model_versions (version, name, arch, artifact_uri, weights_sha256, "
                                "registered_by) VALUES ('v99', 'x', 'mlp', '/x', 'not-a-sha', 't')"),
                 FM_EDB);
    /* the SQL functions are usable from psql too, with the same checks */
    FM_CHECK_ERR(fm_db_exec(db, "SELECT fm_registry_promote('v404', 'stable', 'sql', '')"), FM_ENOTFOUND);
    FM_CHECK_OK(fm_db_exec(db, "SELECT fm_registry_promote('v3', 'canary', 'sql', 'from sql')"));
    CHECK_ROLE(db, "v3", "canary");
    CHECK_ROLE(db, "v2", "archived");
    fm_db_close(db);
}

/* Eight promotes at once, to different versions: they serialize, and the
 * registry ends with exactly one stable version and a history in which each
 * promote archived the one before it. */
static void test_racing_promotes(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("reg_race", db, url);
    FM_CHECK_EQ(run(url, NULL, "models register '%s' --role stable", model_dir(1)), 0);
    for (int i = 2; i <= 5; i++)
        FM_CHECK_EQ(run(url, NULL, "models register '%s'", model_dir(i)), 0);
    pid_t kids[8];
    for (int k = 0; k < 8; k++) {
        fflush(NULL);
        kids[k] = fork();
        if (kids[k] == 0) {
            char args[64];
            snprintf(args, sizeof args, "models promote v%d --reason race%d --no-verify", 2 + k % 4, k);
            _exit(regtest_fmctl(url, args, NULL));
        }
    }
    int ok = 0;
    for (int k = 0; k < 8; k++) {
        int st;
        waitpid(kids[k], &st, 0);
        ok += WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    FM_CHECK(ok >= 4); /* the other four found their version already stable */
    int64_t stables = -1;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM model_versions WHERE role = 'stable'", &stables));
    FM_CHECK_EQ(stables, 1);
    /* each stable->archived is paired with the next version's ->stable */
    int64_t bad = -1;
    FM_CHECK_OK(dbtest_query_int(db,
                                 "SELECT count(*) FROM model_role_changes c WHERE c.to_role = 'stable' AND "
                                 "c.previous_stable IS DISTINCT FROM (SELECT d.version FROM model_role_changes d "
                                 "WHERE d.operation_id = c.operation_id AND d.from_role = 'stable')",
                                 &bad));
    FM_CHECK_EQ(bad, 0);
    fm_db_close(db);
}

static void test_needs_migration(void) {
    char url[512];
    int rc = fm_pg_test_db("reg_empty", url, sizeof url);
    if (rc == FM_EUNSUPPORTED)
        FM_TEST_SKIP(fm_last_error());
    FM_REQUIRE_OK(rc);
    char *out;
    FM_CHECK_EQ(run(url, &out, "models list"), 1);
    FM_CHECK_CONTAINS(out, "fmctl db migrate");
    free(out);
    FM_CHECK_EQ(run(NULL, &out, "models list"), 1);
    FM_CHECK_CONTAINS(out, "FM_DATABASE_URL");
    free(out);
}

FM_TEST_MAIN({"lifecycle_commands", test_lifecycle_commands}, {"corrupt_artifacts", test_corrupt_artifacts},
             {"constraints", test_constraints}, {"racing_promotes", test_racing_promotes},
             {"needs_migration", test_needs_migration})
