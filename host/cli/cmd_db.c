/* cmd_db.c: `fmctl db migrate` (brings a PostgreSQL database's schema up to
 * date with the migrations built into this binary, sql/NNN_*.sql) and
 * `fmctl db accuracy` (live accuracy per version from the feedback). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "fm_cli.h"
#include "fm_db.h"
#include "fm_error.h"
#include "fm_migrate.h"

static void usage(FILE *f) {
    int n;
    const fm_migration_t *m = fm_migrations(&n);
    fprintf(f, "usage: fmctl db migrate [--database-url URL] [--list]\n"
               "  Applies the schema migrations the database lacks, each in its own transaction, and records\n"
               "  them in schema_migrations. Running it again changes nothing; two at once wait for each\n"
               "  other; a migration changed after it was applied is an error. The URL comes from\n"
               "  --database-url or $FM_DATABASE_URL (a libpq URI, e.g. postgresql://fm@db:5432/fmserve).\n"
               "  --list  print which migrations are applied, without applying any\n"
               "built-in migrations:");
    for (int i = 0; i < n; i++)
        fprintf(f, " %s", m[i].name);
    fprintf(f, "\n");
}

static int list(fm_db_t *db) {
    int n;
    const fm_migration_t *m = fm_migrations(&n);
    fm_db_result_t *res = NULL;
    /* to_regclass: a fresh database has no schema_migrations yet. */
    int rc = fm_db_query(db,
                         "SELECT name, to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || 'Z' "
                         "FROM schema_migrations ORDER BY name",
                         0, NULL, &res);
    if (rc && strcmp(fm_db_sqlstate(db), "42P01") != 0)
        return fm_cli_fail("db migrate --list");
    for (int i = 0; i < n; i++) {
        const char *when = NULL;
        for (int j = 0; res && j < fm_db_result_rows(res); j++)
            if (strcmp(fm_db_result_value(res, j, 0), m[i].name) == 0)
                when = fm_db_result_value(res, j, 1);
        printf("%-24s %s\n", m[i].name, when ? when : "not applied");
    }
    fm_db_result_free(res);
    return 0;
}

int fm_cmd_db_migrate(int argc, char **argv) {
    const char *url_flag = NULL;
    int only_list = 0;
    static const struct option opts[] = {{"database-url", required_argument, 0, 'u'},
                                         {"list", no_argument, 0, 'l'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "u:lh", opts, NULL)) != -1) {
        switch (c) {
        case 'u': url_flag = optarg; break;
        case 'l': only_list = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    const char *url = fm_db_url(url_flag);
    if (!url)
        return fm_cli_fail("db migrate");
    fm_db_t *db;
    if (fm_db_connect(url, &db) != 0)
        return fm_cli_fail("db migrate");
    int rc;
    if (only_list) {
        rc = list(db);
    } else {
        fm_migrate_result_t res;
        if (fm_migrate_all(db, &res) != 0) {
            rc = fm_cli_fail("db migrate");
        } else {
            printf("migrations: %d applied, %d already present%s\n", res.applied, res.present,
                   res.applied ? "" : " (schema up to date)");
            if (res.unknown)
                printf("warning: the database has %d migration(s) newer than this fmctl\n", res.unknown);
            rc = 0;
        }
    }
    fm_db_close(db);
    return rc;
}

/* ---- fmctl db accuracy ----------------------------------------------------- */

static void accuracy_usage(FILE *f) {
    fprintf(f, "usage: fmctl db accuracy [--database-url URL] [--since TIME] [--until TIME] [--window INTERVAL]\n"
               "  Live accuracy per model version: the predictions made in a time window (default: the last\n"
               "  hour; --since/--until take any PostgreSQL timestamp, --window an interval such as 1h or\n"
               "  '30 min') that clients sent feedback for (the feedback RPC), with a 95%% Wilson interval.\n"
               "  Prints nothing but a note when no feedback arrived for the window. Exit 0, or 1 on error.\n");
}

int fm_cmd_db_accuracy(int argc, char **argv) {
    const char *url_flag = NULL, *since = NULL, *until = NULL, *window = NULL;
    static const struct option opts[] = {{"database-url", required_argument, 0, 'u'},
                                         {"since", required_argument, 0, 'S'},
                                         {"until", required_argument, 0, 'U'},
                                         {"window", required_argument, 0, 'w'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "u:S:U:w:h", opts, NULL)) != -1) {
        switch (c) {
        case 'u': url_flag = optarg; break;
        case 'S': since = optarg; break;
        case 'U': until = optarg; break;
        case 'w': window = optarg; break;
        case 'h': accuracy_usage(stdout); return 0;
        default: accuracy_usage(stderr); return 2;
        }
    }
    if (optind < argc || (since && window)) {
        if (since && window)
            fprintf(stderr, "fmctl db accuracy: give --since or --window, not both\n");
        accuracy_usage(stderr);
        return 2;
    }
    const char *url = fm_db_url(url_flag);
    if (!url)
        return fm_cli_fail("db accuracy");
    fm_db_t *db;
    if (fm_db_connect(url, &db) != 0)
        return fm_cli_fail("db accuracy");
    const char *params[] = {since, until, window};
    fm_db_result_t *r = NULL;
    /* The window is resolved in SQL, so any timestamp or interval syntax
     * PostgreSQL reads works. */
    int rc = fm_db_query(db,
                         "WITH w AS (SELECT coalesce($2::timestamptz, now()) AS e), "
                         "b AS (SELECT coalesce($1::timestamptz, w.e - coalesce($3::interval, interval '1 hour')) AS s, "
                         "w.e FROM w) "
                         "SELECT to_char(b.s AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || 'Z', "
                         "to_char(b.e AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || 'Z', a.model_version, "
                         "a.labelled, a.correct, a.accuracy, a.ci_low, a.ci_high "
                         "FROM b LEFT JOIN LATERAL fm_accuracy(b.s, b.e) AS a ON true",
                         3, params, &r);
    if (rc) {
        fm_db_close(db);
        return fm_cli_fail("db accuracy");
    }
    printf("accuracy from feedback on the requests of %s .. %s\n", fm_db_result_value(r, 0, 0),
           fm_db_result_value(r, 0, 1));
    if (fm_db_result_rows(r) == 1 && fm_db_result_is_null(r, 0, 2)) {
        printf("no feedback for predictions in this window\n");
    } else {
        printf("%-12s %10s %10s %9s   %s\n", "version", "labelled", "correct", "accuracy", "95% interval");
        for (int i = 0; i < fm_db_result_rows(r); i++) {
            double acc = 0, lo = 0, hi = 0;
            fm_db_result_double(r, i, 5, &acc);
            fm_db_result_double(r, i, 6, &lo);
            fm_db_result_double(r, i, 7, &hi);
            printf("%-12s %10s %10s %9.4f   %.4f..%.4f\n", fm_db_result_value(r, i, 2), fm_db_result_value(r, i, 3),
                   fm_db_result_value(r, i, 4), acc, lo, hi);
        }
    }
    fm_db_result_free(r);
    fm_db_close(db);
    return 0;
}
