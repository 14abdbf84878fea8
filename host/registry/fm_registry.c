/* fm_registry.c: the registry's C side (fm_registry.h): what a model
 * directory contributes to a registry row, and thin wrappers over the SQL
 * functions of sql/010_registry.sql, whose errors become fm_fail details. */
#include "fm_registry.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_model.h"

/* "query: unknown model version ..." reads better without its prefix. */
static int db_fail(int rc) {
    const char *msg = fm_last_error();
    if (strncmp(msg, "query: ", 7) == 0)
        msg += 7;
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", msg);
    /* Where in the SQL function the error was raised is noise to an operator. */
    char *at = strstr(copy, "; at PL/pgSQL");
    if (at)
        *at = '\0';
    return fm_fail(rc, "%s", copy);
}

int fm_registry_check_schema(fm_db_t *db) {
    fm_db_result_t *r;
    int rc = fm_db_query(db, "SELECT to_regclass('model_versions') IS NOT NULL AND "
                             "to_regproc('fm_registry_promote') IS NOT NULL",
                         0, NULL, &r);
    if (rc)
        return rc;
    int ok = strcmp(fm_db_result_value(r, 0, 0), "t") == 0;
    fm_db_result_free(r);
    if (!ok)
        return fm_fail(FM_EUNAVAILABLE, "the database has no model registry (migration 010_registry.sql): run "
                                        "`fmctl db migrate` first");
    return 0;
}

void fm_registry_actor(const char *by, char *out, size_t cap) {
    if (by && *by) {
        snprintf(out, cap, "%s", by);
        return;
    }
    const char *u = getenv("USER");
    if (!u || !*u) {
        struct passwd *pw = getpwuid(getuid());
        u = pw ? pw->pw_name : "unknown";
    }
    char host[256] = "";
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    snprintf(out, cap, "%s@%s", u, host);
}

/* ---- reading rows ------------------------------------------------------ */

#define VERSION_COLS                                                                                        \
    "version, name, arch, artifact_uri, weights_sha256, role::text, coalesce(mlflow_run_id, ''), "         \
    "coalesce(mlflow_model, ''), coalesce(mlflow_version, ''), "                                            \
    "coalesce(to_char(trained_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), ''), "             \
    "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), registered_by, metrics::text"

static void copy_col(char *dst, size_t cap, const fm_db_result_t *r, int row, int col) {
    snprintf(dst, cap, "%s", fm_db_result_value(r, row, col));
}

static void read_version(const fm_db_result_t *r, int row, fm_reg_version_t *v) {
    memset(v, 0, sizeof *v);
    copy_col(v->version, sizeof v->version, r, row, 0);
    copy_col(v->name, sizeof v->name, r, row, 1);
    copy_col(v->arch, sizeof v->arch, r, row, 2);
    copy_col(v->artifact_uri, sizeof v->artifact_uri, r, row, 3);
    copy_col(v->sha256, sizeof v->sha256, r, row, 4);
    copy_col(v->role, sizeof v->role, r, row, 5);
    copy_col(v->mlflow_run_id, sizeof v->mlflow_run_id, r, row, 6);
    copy_col(v->mlflow_model, sizeof v->mlflow_model, r, row, 7);
    copy_col(v->mlflow_version, sizeof v->mlflow_version, r, row, 8);
    copy_col(v->trained_at, sizeof v->trained_at, r, row, 9);
    copy_col(v->created_at, sizeof v->created_at, r, row, 10);
    copy_col(v->registered_by, sizeof v->registered_by, r, row, 11);
    copy_col(v->metrics, sizeof v->metrics, r, row, 12);
}

int fm_registry_get(fm_db_t *db, const char *version, fm_reg_version_t *out) {
    fm_db_result_t *r;
    const char *p[] = {version};
    int rc = fm_db_query(db, "SELECT " VERSION_COLS " FROM model_versions WHERE version = $1", 1, p, &r);
    if (rc)
        return db_fail(rc);
    if (fm_db_result_rows(r) == 0) {
        fm_db_result_free(r);
        return fm_fail(FM_ENOTFOUND, "unknown model version \"%s\" (fmctl models list shows the registered versions)",
                       version);
    }
    read_version(r, 0, out);
    fm_db_result_free(r);
    return 0;
}

int fm_registry_list(fm_db_t *db, fm_reg_version_t **out, int *n) {
    *out = NULL;
    *n = 0;
    fm_db_result_t *r;
    int rc = fm_db_query(db, "SELECT " VERSION_COLS " FROM model_versions ORDER BY created_at DESC, version DESC", 0,
                         NULL, &r);
    if (rc)
        return db_fail(rc);
    int rows = fm_db_result_rows(r);
    fm_reg_version_t *v = calloc(rows > 0 ? (size_t)rows : 1, sizeof *v);
    if (!v) {
        fm_db_result_free(r);
        return fm_fail(FM_ENOMEM, "registry list");
    }
    for (int i = 0; i < rows; i++)
        read_version(r, i, &v[i]);
    fm_db_result_free(r);
    *out = v;
    *n = rows;
    return 0;
}

int fm_registry_roles(fm_db_t *db, fm_reg_version_t *stable, int *has_stable, fm_reg_version_t *canary,
                      int *has_canary) {
    *has_stable = *has_canary = 0;
    fm_db_result_t *r;
    int rc = fm_db_query(db, "SELECT " VERSION_COLS " FROM model_versions WHERE role IN ('stable', 'canary')", 0,
                         NULL, &r);
    if (rc)
        return db_fail(rc);
    for (int i = 0; i < fm_db_result_rows(r); i++) {
        if (strcmp(fm_db_result_value(r, i, 5), "stable") == 0) {
            read_version(r, i, stable);
            *has_stable = 1;
        } else {
            read_version(r, i, canary);
            *has_canary = 1;
        }
    }
    fm_db_result_free(r);
    return 0;
}

int fm_registry_history(fm_db_t *db, const char *version, fm_reg_change_t **out, int *n) {
    *out = NULL;
    *n = 0;
    fm_db_result_t *r;
    const char *p[] = {version};
    int rc = fm_db_query(db,
                         "SELECT id, operation_id, operation, version, from_role::text, to_role::text, "
                         "coalesce(previous_stable, ''), "
                         "to_char(changed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), changed_by, reason "
                         "FROM model_role_changes WHERE $1::text IS NULL OR version = $1 ORDER BY id",
                         1, p, &r);
    if (rc)
        return db_fail(rc);
    int rows = fm_db_result_rows(r);
    fm_reg_change_t *c = calloc(rows > 0 ? (size_t)rows : 1, sizeof *c);
    if (!c) {
        fm_db_result_free(r);
        return fm_fail(FM_ENOMEM, "registry history");
    }
    for (int i = 0; i < rows; i++) {
        fm_db_result_int64(r, i, 0, &c[i].id);
        fm_db_result_int64(r, i, 1, &c[i].operation_id);
        copy_col(c[i].operation, sizeof c[i].operation, r, i, 2);
        copy_col(c[i].version, sizeof c[i].version, r, i, 3);
        copy_col(c[i].from_role, sizeof c[i].from_role, r, i, 4);
        copy_col(c[i].to_role, sizeof c[i].to_role, r, i, 5);
        copy_col(c[i].previous_stable, sizeof c[i].previous_stable, r, i, 6);
        copy_col(c[i].changed_at, sizeof c[i].changed_at, r, i, 7);
        copy_col(c[i].changed_by, sizeof c[i].changed_by, r, i, 8);
        copy_col(c[i].reason, sizeof c[i].reason, r, i, 9);
    }
    fm_db_result_free(r);
    *out = c;
    *n = rows;
    return 0;
}

/* ---- role changes ------------------------------------------------------ */

int fm_registry_promote(fm_db_t *db, const char *version, const char *role, const char *by, const char *reason,
                        int64_t *operation_id) {
    char actor[160];
    fm_registry_actor(by, actor, sizeof actor);
    const char *p[] = {version, role ? role : "stable", actor, reason ? reason : ""};
    fm_db_result_t *r;
    int rc = fm_db_query(db, "SELECT fm_registry_promote($1, $2::fm_registry_role, $3, $4)", 4, p, &r);
    if (rc) {
        if (strcmp(fm_db_sqlstate(db), "22P02") == 0) /* not an enum value */
            return fm_fail(FM_EINVAL, "unknown role '%s' (stable or canary)", role);
        return db_fail(rc);
    }
    if (operation_id)
        fm_db_result_int64(r, 0, 0, operation_id);
    fm_db_result_free(r);
    return 0;
}

int fm_registry_rollback(fm_db_t *db, const char *by, const char *reason, char *restored, size_t rcap,
                         char *retired, size_t tcap) {
    char actor[160];
    fm_registry_actor(by, actor, sizeof actor);
    const char *p[] = {actor, reason ? reason : ""};
    fm_db_result_t *r;
    int rc = fm_db_query(db, "SELECT fm_registry_rollback($1, $2)", 2, p, &r);
    if (rc)
        return db_fail(rc);
    char op[32];
    snprintf(op, sizeof op, "%s", fm_db_result_value(r, 0, 0));
    fm_db_result_free(r);
    const char *q[] = {op};
    rc = fm_db_query(db,
                     "SELECT max(version) FILTER (WHERE to_role = 'stable'), "
                     "       max(version) FILTER (WHERE from_role = 'stable') "
                     "FROM model_role_changes WHERE operation_id = $1::bigint",
                     1, q, &r);
    if (rc)
        return db_fail(rc);
    if (restored)
        snprintf(restored, rcap, "%s", fm_db_result_value(r, 0, 0));
    if (retired)
        snprintf(retired, tcap, "%s", fm_db_result_value(r, 0, 1));
    fm_db_result_free(r);
    return 0;
}

int fm_registry_archive(fm_db_t *db, const char *version, const char *by, const char *reason) {
    char actor[160];
    fm_registry_actor(by, actor, sizeof actor);
    const char *p[] = {version, actor, reason ? reason : ""};
    int rc = fm_db_query(db, "SELECT fm_registry_archive($1, $2, $3)", 3, p, NULL);
    return rc ? db_fail(rc) : 0;
}

/* ---- registration ------------------------------------------------------ */

/* The sidecar's "metrics" object as compact JSON ("{}" without one). */
static char *metrics_json(const fm_model_t *m) {
    char *all = fm_model_meta_json(m);
    cJSON *doc = all ? cJSON_Parse(all) : NULL;
    free(all);
    const cJSON *mx = cJSON_GetObjectItemCaseSensitive(doc, "metrics");
    char *out = cJSON_IsObject(mx) ? cJSON_PrintUnformatted(mx) : NULL;
    cJSON_Delete(doc);
    if (!out)
        out = strdup("{}");
    return out;
}

/* "2026-11-26T12:00:00Z" and the like; anything else is not recorded. */
static int looks_like_timestamp(const char *s) {
    return s && strlen(s) >= 19 && s[4] == '-' && s[7] == '-' && s[10] == 'T' && s[13] == ':';
}

static int do_register(fm_db_t *db, const char *dir, const char *artifact_uri, const char *role, const char *by,
                       const char *reason, fm_reg_version_t *out) {
    int rc = fm_registry_check_schema(db);
    if (rc)
        return rc;
    if (role && *role && strcmp(role, "none") != 0 && strcmp(role, "stable") != 0 && strcmp(role, "canary") != 0)
        return fm_fail(FM_EINVAL, "--role must be stable, canary or none, got '%s'", role);
    fm_model_t *m = NULL;
    if ((rc = fm_model_load(dir, &m)) != 0) {
        char detail[900];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        return fm_fail(rc, "refusing to register %s: %s", dir, detail);
    }
    char version[64]; /* outlives the model, which is freed before the final read */
    snprintf(version, sizeof version, "%s", fm_model_version(m));
    fm_reg_version_t existing;
    if (fm_registry_get(db, version, &existing) == 0) {
        rc = fm_fail(FM_EINVAL,
                     "version %s is already registered (%s, sha256 %.16s..., role %s); give the new model another "
                     "version id (fmctl train --version)",
                     version, existing.artifact_uri, existing.sha256, existing.role);
        fm_model_free(m);
        return rc;
    }
    char actor[160];
    fm_registry_actor(by, actor, sizeof actor);
    char *mx = metrics_json(m);
    const char *trained = fm_model_meta_get_string(m, NULL, "created_at");
    const char *run_id = fm_model_meta_get_string(m, "mlflow", "run_id");
    const char *mlf_model = fm_model_meta_get_string(m, "mlflow", "registered_model");
    const char *mlf_version = fm_model_meta_get_string(m, "mlflow", "model_version");
    const char *p[] = {version,
                       fm_model_name(m),
                       fm_arch_name(fm_model_arch(m)),
                       artifact_uri,
                       fm_model_weights_sha256(m),
                       mx ? mx : "{}",
                       run_id && *run_id ? run_id : NULL,
                       mlf_model && *mlf_model ? mlf_model : NULL,
                       mlf_version && *mlf_version ? mlf_version : NULL,
                       looks_like_timestamp(trained) ? trained : NULL,
                       actor,
                       reason ? reason : ""};
    rc = fm_db_exec(db, "BEGIN");
    if (rc == 0)
        rc = fm_db_query(db,
                         "INSERT INTO model_versions (version, name, arch, artifact_uri, weights_sha256, metrics, "
                         "mlflow_run_id, mlflow_model, mlflow_version, trained_at, registered_by) "
                         "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10::timestamptz, $11)",
                         11, p, NULL);
    if (rc == 0) {
        const char *h[] = {version, actor, p[11]};
        rc = fm_db_query(db,
                         "INSERT INTO model_role_changes (operation_id, operation, version, from_role, to_role, "
                         "changed_by, reason) VALUES (nextval('model_role_operation_seq'), 'register', $1, 'none', "
                         "'none', $2, $3)",
                         3, h, NULL);
    }
    if (rc == 0 && role && *role && strcmp(role, "none") != 0)
        rc = fm_registry_promote(db, version, role, actor, reason, NULL);
    else if (rc)
        rc = db_fail(rc);
    if (rc == 0)
        rc = fm_db_exec(db, "COMMIT");
    if (rc) {
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        if (strcmp(fm_db_sqlstate(db), "23505") == 0)
            snprintf(detail, sizeof detail, "version %s was registered by someone else meanwhile", version);
        fm_db_exec(db, "ROLLBACK");
        rc = fm_fail(rc, "%s", detail);
    }
    free(mx);
    fm_model_free(m);
    if (rc == 0 && out)
        rc = fm_registry_get(db, version, out);
    return rc;
}

int fm_registry_register(fm_db_t *db, const char *dir, const char *role, const char *by, const char *reason,
                         fm_reg_version_t *out) {
    char abs[PATH_MAX];
    if (!realpath(dir, abs))
        return fm_fail(errno == ENOENT ? FM_ENOTFOUND : FM_EIO, "refusing to register %s: %s", dir, strerror(errno));
    return do_register(db, abs, abs, role, by, reason, out);
}

int fm_registry_register_uri(fm_db_t *db, const char *dir, const char *artifact_uri, const char *role,
                             const char *by, const char *reason, fm_reg_version_t *out) {
    return do_register(db, dir, artifact_uri, role, by, reason, out);
}

int fm_registry_verify_local(const fm_reg_version_t *v) {
    const char *dir = v->artifact_uri;
    if (strncmp(dir, "file://", 7) == 0)
        dir += 7;
    else if (strncmp(dir, "file:", 5) == 0)
        dir += 5;
    if (dir[0] != '/')
        return 0;
    fm_model_t *m = NULL;
    int rc = fm_model_load(dir, &m);
    if (rc) {
        char detail[900];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        return fm_fail(rc, "version %s: its artifact %s does not load: %s", v->version, dir, detail);
    }
    if (strcmp(fm_model_weights_sha256(m), v->sha256) != 0)
        rc = fm_fail(FM_ECHECKSUM,
                     "version %s: the weights in %s have sha256 %.16s..., the registry recorded %.16s... (the files "
                     "were replaced after registration)",
                     v->version, dir, fm_model_weights_sha256(m), v->sha256);
    else if (strcmp(fm_model_version(m), v->version) != 0)
        rc = fm_fail(FM_EINVAL, "version %s: the model in %s says it is version %s", v->version, dir,
                     fm_model_version(m));
    fm_model_free(m);
    return rc;
}
