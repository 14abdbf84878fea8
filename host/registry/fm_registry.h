/* fm_registry.h: the model registry in PostgreSQL (sql/010_registry.sql):
 * registering model versions, giving them roles (stable, canary, archived),
 * rolling back, and reading the roles and their history. Shared by
 * `fmctl models` and the server's registry follower.
 *
 * Every role change is one transaction that ends with NOTIFY on
 * FM_REGISTRY_CHANNEL; its payload is the roles after the change as JSON,
 * {"operation": "promote", "operation_id": 7, "stable": "v2", "canary": null}.
 * Listeners re-read the roles rather than trust the payload, so a missed or
 * merged notification costs nothing. */
#ifndef FM_REGISTRY_H
#define FM_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "fm_db.h"

#define FM_REGISTRY_CHANNEL "fm_registry"

typedef struct fm_reg_version {
    char version[64];
    char name[64];
    char arch[8];
    char artifact_uri[1024];
    char sha256[65];
    char role[16]; /* stable, canary, archived, none */
    char mlflow_run_id[64];
    char mlflow_model[128];
    char mlflow_version[32];
    char trained_at[40];
    char created_at[40];
    char registered_by[128];
    char metrics[1024]; /* the sidecar's "metrics" object as JSON text (cut to fit) */
} fm_reg_version_t;

typedef struct fm_reg_change {
    int64_t id, operation_id;
    char operation[16];
    char version[64];
    char from_role[16], to_role[16];
    char previous_stable[64];
    char changed_at[40];
    char changed_by[128];
    char reason[256];
} fm_reg_change_t;

/* FM_EUNAVAILABLE with "run fmctl db migrate" when the tables are missing. */
int fm_registry_check_schema(fm_db_t *db);

/* Who is acting, for the history: $USER@host (or `by` when given). */
void fm_registry_actor(const char *by, char *out, size_t cap);

/* Registers the model in directory `dir`: loads it (format, shapes, finite
 * values, the weights' SHA-256 against the sidecar: a corrupt artifact is
 * refused here), and records version, name, architecture, the directory's
 * absolute path as artifact location, the SHA-256, the sidecar's metrics and
 * MLflow run id/version. `role` NULL or "none" leaves it without a role;
 * "stable" or "canary" promotes it in the same transaction. FM_EINVAL when
 * the version id is already registered. */
int fm_registry_register(fm_db_t *db, const char *dir, const char *role, const char *by, const char *reason,
                         fm_reg_version_t *out);
/* Registers a model whose files are elsewhere (e.g. mlflow-artifacts:),
 * from a local copy `dir` that was checked against `expected_sha256`. */
int fm_registry_register_uri(fm_db_t *db, const char *dir, const char *artifact_uri, const char *role,
                             const char *by, const char *reason, fm_reg_version_t *out);

/* fm_registry_promote(): `version` NULL = the current canary (to stable). */
int fm_registry_promote(fm_db_t *db, const char *version, const char *role, const char *by, const char *reason,
                        int64_t *operation_id);
/* Restores the previous stable version; *restored / *retired name them. */
int fm_registry_rollback(fm_db_t *db, const char *by, const char *reason, char *restored, size_t rcap,
                         char *retired, size_t tcap);
int fm_registry_archive(fm_db_t *db, const char *version, const char *by, const char *reason);

/* Every version, newest first (caller frees *out). */
int fm_registry_list(fm_db_t *db, fm_reg_version_t **out, int *n);
/* One version; FM_ENOTFOUND when unknown. */
int fm_registry_get(fm_db_t *db, const char *version, fm_reg_version_t *out);
/* The versions holding the stable and canary roles; *has_* 0 when empty. */
int fm_registry_roles(fm_db_t *db, fm_reg_version_t *stable, int *has_stable, fm_reg_version_t *canary,
                      int *has_canary);
/* Role changes, oldest first; `version` NULL for all (caller frees *out). */
int fm_registry_history(fm_db_t *db, const char *version, fm_reg_change_t **out, int *n);

/* Checks that the artifact of `v` is a loadable model with the registered
 * SHA-256 and version; for local artifact locations only (others: 0). */
int fm_registry_verify_local(const fm_reg_version_t *v);

#endif /* FM_REGISTRY_H */
