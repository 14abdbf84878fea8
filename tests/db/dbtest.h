/* dbtest.h: helpers shared by the tests in tests/db: a fresh migrated
 * database per case, running fmctl and the Python oracle as processes, and
 * reading small files. */
#ifndef FM_DBTEST_H
#define FM_DBTEST_H

#include <stddef.h>
#include <stdint.h>

#include "fm_db.h"
#include "fm_idx.h"

/* Creates database `name` on the test program's throwaway server, connects
 * and applies the migrations. Returns 0; FM_EUNSUPPORTED when there is no
 * PostgreSQL (the case should skip with fm_last_error()); another code on
 * failure. url (may be NULL) receives the database URL. */
int dbtest_open(const char *name, fm_db_t **db, char *url, size_t cap);

/* Runs a shell command line, capturing stdout+stderr into *out (malloc'd,
 * may be NULL). Returns the exit status, or -1. */
int dbtest_run(const char *cmdline, char **out);

/* The Python interpreter of $FM_TEST_PYTHON when it imports numpy and scipy,
 * else NULL with the reason in *why (static text). */
const char *dbtest_python(const char **why);

/* The committed fixture test images (tests/fixtures/fashion-mnist, t10k),
 * loaded once per test program; NULL with the error recorded on failure. */
const fm_dataset_t *dbtest_fixture_images(void);

/* Path of the fmctl binary under test. */
const char *dbtest_fmctl(void);

/* Reads a whole file (malloc'd, NUL-terminated); NULL on error. */
char *dbtest_read_file(const char *path, size_t *len);

/* One int64 from a query with no parameters (first row, first column). */
int dbtest_query_int(fm_db_t *db, const char *sql, int64_t *out);

/* Compares the rollups of [since, until) (whole 60 s buckets) with what
 * fm_rollup_rebuild() recomputes from the raw rows: *diffs receives the rows
 * that differ (0 when equal), *buckets the rollup_buckets rows. The range's
 * rollups are the rebuilt ones afterwards. */
int dbtest_rollups_vs_rebuild(fm_db_t *db, const char *since, const char *until, int64_t *diffs, int64_t *buckets);

#endif /* FM_DBTEST_H */
