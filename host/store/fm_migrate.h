/* fm_migrate.h: the database schema as numbered migrations (sql/NNN_*.sql,
 * built into the binary) and the runner behind `fmctl db migrate`.
 *
 * Each migration runs in its own transaction and is recorded in
 * schema_migrations (name, SHA-256 checksum, applied_at). Running again is a
 * no-op; two migrators at once are serialized by an advisory lock; a migration
 * whose text changed after it was applied is refused (FM_ECHECKSUM) before
 * anything is applied. Migrations must not contain BEGIN/COMMIT. */
#ifndef FM_MIGRATE_H
#define FM_MIGRATE_H

#include <stddef.h>

#include "fm_db.h"

typedef struct fm_migration {
    const char *name; /* "001_schema.sql" */
    const char *sql;  /* the file's text, NUL-terminated */
    size_t len;       /* its length in bytes */
} fm_migration_t;

/* The migrations built into this binary, in order (generated). */
const fm_migration_t *fm_migrations(int *count);

typedef struct fm_migrate_result {
    int applied; /* migrations applied by this call */
    int present; /* migrations that were already applied */
    int unknown; /* applied migrations this binary does not know (a newer fmctl's) */
} fm_migrate_result_t;

/* The advisory lock key the runner holds (also for tests and operators). */
#define FM_MIGRATE_LOCK_KEY 0x666d5f6d69677261LL /* "fm_migra" */

/* Applies the migrations of `list` that the database lacks, in order. */
int fm_migrate(fm_db_t *db, const fm_migration_t *list, int n, fm_migrate_result_t *res);
/* fm_migrate() with the built-in list. */
int fm_migrate_all(fm_db_t *db, fm_migrate_result_t *res);

#endif /* FM_MIGRATE_H */
