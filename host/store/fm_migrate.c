/* fm_migrate.c: applies sql/NNN_*.sql migrations once each, in order, under
 * an advisory lock, refusing any that changed after being applied. */
#include "fm_migrate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "fm_hash.h"
#include "fm_log.h"

#define LOCK_SQL "SELECT pg_advisory_lock(7380660287854572129)"
#define UNLOCK_SQL "SELECT pg_advisory_unlock(7380660287854572129)"
_Static_assert(FM_MIGRATE_LOCK_KEY == 7380660287854572129LL, "lock key in the SQL text must match");

static const char *const create_table_sql =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " name text PRIMARY KEY,"
    " checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

/* Index of `name` in the applied rows, or -1. */
static int find_applied(const fm_db_result_t *r, const char *name) {
    for (int i = 0; i < fm_db_result_rows(r); i++)
        if (strcmp(fm_db_result_value(r, i, 0), name) == 0)
            return i;
    return -1;
}

static int apply_one(fm_db_t *db, const fm_migration_t *m, const char *sum) {
    int rc = fm_db_exec(db, "BEGIN");
    if (rc)
        return rc;
    rc = fm_db_exec(db, m->sql);
    if (rc == 0) {
        const char *params[] = {m->name, sum};
        rc = fm_db_query(db, "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", 2, params, NULL);
    }
    if (rc == 0)
        rc = fm_db_exec(db, "COMMIT");
    if (rc) {
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        fm_db_exec(db, "ROLLBACK");
        return fm_fail(rc, "migration %s failed (nothing of it was applied): %s", m->name, detail);
    }
    return 0;
}

static int migrate_locked(fm_db_t *db, const fm_migration_t *list, int n, fm_migrate_result_t *res) {
    int rc = fm_db_exec(db, create_table_sql);
    if (rc)
        return rc;
    fm_db_result_t *applied = NULL;
    rc = fm_db_query(db, "SELECT name, checksum FROM schema_migrations ORDER BY name", 0, NULL, &applied);
    if (rc)
        return rc;
    char (*sums)[FM_SHA256_HEX_LEN + 1] = calloc((size_t)(n > 0 ? n : 1), sizeof *sums);
    if (!sums) {
        fm_db_result_free(applied);
        return fm_fail(FM_ENOMEM, "fm_migrate: out of memory");
    }
    /* Check everything before applying anything: a changed migration means
     * the database and this binary disagree about the schema's history. */
    for (int i = 0; i < n && rc == 0; i++) {
        fm_sha256_hex(list[i].sql, list[i].len, sums[i]);
        int row = find_applied(applied, list[i].name);
        if (row >= 0 && strcmp(fm_db_result_value(applied, row, 1), sums[i]) != 0)
            rc = fm_fail(FM_ECHECKSUM,
                         "migration %s was changed after it was applied (the database recorded checksum %.16s..., "
                         "this fmctl has %.16s...); applied migrations are immutable: restore the file and add a "
                         "new migration instead",
                         list[i].name, fm_db_result_value(applied, row, 1), sums[i]);
    }
    for (int i = 0; i < fm_db_result_rows(applied) && rc == 0; i++) {
        const char *name = fm_db_result_value(applied, i, 0);
        int known = 0;
        for (int j = 0; j < n; j++)
            known |= strcmp(list[j].name, name) == 0;
        if (!known) {
            res->unknown++;
            fm_warn("db", "the database has migration %s, which this fmctl does not know (applied by a newer one?)",
                    name);
        }
    }
    for (int i = 0; i < n && rc == 0; i++) {
        if (find_applied(applied, list[i].name) >= 0) {
            res->present++;
            continue;
        }
        rc = apply_one(db, &list[i], sums[i]);
        if (rc == 0) {
            res->applied++;
            fm_info("db", "applied migration %s", list[i].name);
        }
    }
    free(sums);
    fm_db_result_free(applied);
    return rc;
}

int fm_migrate(fm_db_t *db, const fm_migration_t *list, int n, fm_migrate_result_t *res) {
    memset(res, 0, sizeof *res);
    for (int i = 1; i < n; i++)
        if (strcmp(list[i - 1].name, list[i].name) >= 0)
            return fm_fail(FM_EINVAL, "migrations out of order: %s before %s", list[i - 1].name, list[i].name);
    /* A session lock (not a transaction lock): each migration commits on its
     * own while the lock keeps a second migrator waiting until we finish. */
    int rc = fm_db_exec(db, LOCK_SQL);
    if (rc)
        return rc;
    rc = migrate_locked(db, list, n, res);
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", fm_last_error());
    int urc = fm_db_exec(db, UNLOCK_SQL);
    if (rc)
        return fm_fail(rc, "%s", detail);
    return urc;
}

int fm_migrate_all(fm_db_t *db, fm_migrate_result_t *res) {
    int n;
    const fm_migration_t *list = fm_migrations(&n);
    return fm_migrate(db, list, n, res);
}
