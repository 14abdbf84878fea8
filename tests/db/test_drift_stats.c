/* test_drift_stats.c: the SQL statistics of sql/002_stats.sql against
 * independent implementations. Without Python: chi-square and normal tails
 * against closed forms, exact K-S p-values against a brute-force count of
 * lattice paths, Wasserstein and K-S D against sorting the raw values. With
 * $FM_TEST_PYTHON: every test (Wasserstein, Jensen-Shannon, K-S exact and
 * asymptotic, chi-square, z, PSI, KL) and Evidently's choice of test on
 * crafted columns, including the edge cases, against drift_oracle.py
 * (numpy/scipy) to 1e-9, and against evidently itself when it imports. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "dbtest.h"
#include "fm_db.h"
#include "fm_test.h"

#define OPEN_DB(name, db)                                                       \
    do {                                                                        \
        int rc_ = dbtest_open(name, &(db), NULL, 0);                            \
        if (rc_ == FM_EUNSUPPORTED) {                                           \
            static char why_[1024];                                             \
            snprintf(why_, sizeof why_, "no PostgreSQL: %s", fm_last_error()); \
            FM_TEST_SKIP(why_);                                                 \
        }                                                                       \
        FM_REQUIRE_OK(rc_);                                                     \
    } while (0)

static double query_double(fm_db_t *db, const char *sql) {
    fm_db_result_t *r;
    double v = NAN;
    if (fm_db_query(db, sql, 0, NULL, &r) == 0) {
        fm_db_result_double(r, 0, 0, &v);
        fm_db_result_free(r);
    } else {
        FM_TEST_FAIL_AT("%s: %s", sql, fm_last_error());
    }
    return v;
}

/* ---- closed forms ---- */

/* chi2.sf(x, k) for integer k from the finite sums (see docs/drift.md). */
static long double chi2_sf_closed(double x, int k) {
    long double h = (long double)x / 2;
    if (k % 2 == 0) {
        long double term = 1, s = 0;
        for (int j = 0; j < k / 2; j++) {
            s += term;
            term *= h / (j + 1);
        }
        return expl(-h) * s;
    }
    /* odd: erfc(√h) + e^{-h} Σ_{j=1}^{(k-1)/2} h^{j-1/2} / Γ(j+1/2) */
    long double s = 0, g = sqrtl(acosl(-1.0L)) / 2; /* Γ(3/2) */
    for (int j = 1; j <= (k - 1) / 2; j++) {
        s += powl(h, j - 0.5L) / g;
        g *= j + 0.5L;
    }
    return erfcl(sqrtl(h)) + expl(-h) * s;
}

static void test_tails_closed_form(void) {
    fm_db_t *db;
    OPEN_DB("stats_tails", db);
    static const int dofs[] = {1, 2, 3, 4, 5, 9, 10, 49, 255};
    static const double xs[] = {0.01, 0.5, 1, 2.5, 7, 15, 40, 120, 300};
    for (size_t i = 0; i < sizeof dofs / sizeof *dofs; i++)
        for (size_t j = 0; j < sizeof xs / sizeof *xs; j++) {
            char sql[128];
            snprintf(sql, sizeof sql, "SELECT fm_chi2_sf(%.17g, %d)", xs[j], dofs[i]);
            double got = query_double(db, sql);
            double want = (double)chi2_sf_closed(xs[j], dofs[i]);
            if (!(fabs(got - want) <= 1e-13 + 1e-11 * want))
                FM_TEST_FAIL_AT("chi2_sf(%g, %d) = %.17g, closed form %.17g", xs[j], dofs[i], got, want);
        }
    FM_CHECK(query_double(db, "SELECT fm_chi2_sf(0, 3)") == 1.0);
    FM_CHECK(query_double(db, "SELECT fm_chi2_sf('Infinity', 3)") == 0.0);
    /* exp() below -745 is an error in PostgreSQL; the guard returns 0. */
    FM_CHECK(query_double(db, "SELECT fm_chi2_sf(5000, 4)") == 0.0);
    static const double zs[] = {0, 0.1, 1, 1.959963984540054, 3, 6, 8.3, 12, 38};
    for (size_t i = 0; i < sizeof zs / sizeof *zs; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT fm_norm_2sided_p(%.17g)", -zs[i]);
        double got = query_double(db, sql);
        double want = erfc(zs[i] / sqrt(2.0));
        if (!(fabs(got - want) <= 1e-15 + 1e-12 * want))
            FM_TEST_FAIL_AT("2-sided p(%g) = %.17g, erfc gives %.17g", zs[i], got, want);
    }
    FM_CHECK_NEAR(query_double(db, "SELECT fm_norm_2sided_p(1.959963984540054)"), 0.05, 1e-15);
    fm_db_close(db);
}

/* P(D_{m,n} >= d) by counting monotone paths from (0,0) to (m,n) that touch
 * |x/m - y/n| >= d somewhere: exact in 64-bit integers for m, n <= 30. */
static double ks_brute(int m, int n, int h /* d = h / (m*n) */) {
    static uint64_t inside[31][31];
    uint64_t total = 1;
    for (int k = 1; k <= n; k++)
        total = total * (uint64_t)(m + k) / (uint64_t)k;
    for (int x = 0; x <= m; x++)
        for (int y = 0; y <= n; y++) {
            /* Stay strictly inside |x·n - y·m| < h (in units of 1/(m·n)). */
            long diff = (long)x * n - (long)y * m;
            if (labs(diff) >= h) {
                inside[x][y] = 0;
                continue;
            }
            if (x == 0 && y == 0)
                inside[x][y] = 1;
            else
                inside[x][y] = (x ? inside[x - 1][y] : 0) + (y ? inside[x][y - 1] : 0);
        }
    return 1.0 - (double)inside[m][n] / (double)total;
}

static void test_ks_exact_brute_force(void) {
    fm_db_t *db;
    OPEN_DB("stats_ks", db);
    static const int sizes[][2] = {{5, 5}, {7, 9}, {10, 10}, {12, 30}, {25, 30}, {30, 30}, {13, 17}, {1, 20}};
    int checked = 0;
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        int m = sizes[s][0], n = sizes[s][1];
        int g = m, b = n;
        while (b) {
            int t = g % b;
            g = b;
            b = t;
        }
        int lcm = m / g * n;
        /* scipy puts D on the lattice of 1/lcm(m, n); h/lcm is h·g/(m·n). */
        for (int h = 1; h <= lcm; h += lcm / 13 + 1) {
            double d = (double)h / lcm;
            char sql[128];
            snprintf(sql, sizeof sql, "SELECT fm_ks_2samp_p(%.17g, %d, %d)", d, m, n);
            double got = query_double(db, sql);
            double want = ks_brute(m, n, h * g);
            if (!(fabs(got - want) <= 1e-12))
                FM_TEST_FAIL_AT("ks p(d=%d/%d, %d, %d) = %.17g, brute force %.17g", h, lcm, m, n, got, want);
            checked++;
        }
    }
    FM_CHECK(checked > 40);
    FM_CHECK(query_double(db, "SELECT fm_ks_2samp_p(0, 100, 200)") == 1.0);
    fm_db_close(db);
}

/* ---- crafted columns ---- */

static uint64_t rng_state;
static double uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}
static double normal(double mu, double sigma) {
    double u = uniform(), v = uniform();
    return mu + sigma * sqrt(-2 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}
static double choice(const double *vals, const double *p, int k) {
    double u = uniform(), acc = 0;
    for (int i = 0; i < k; i++) {
        acc += p[i];
        if (u < acc)
            return vals[i];
    }
    return vals[k - 1];
}

typedef struct column {
    int fid;
    int cat;
    double *ref, *cur;
    int nref, ncur;
    const char *why;
} column_t;

#define MAXCOLS 40
static column_t cols[MAXCOLS];
static int ncols;

static column_t *add_col(int fid, int cat, int nref, int ncur, const char *why) {
    column_t *c = &cols[ncols++];
    c->fid = fid;
    c->cat = cat;
    c->nref = nref;
    c->ncur = ncur;
    c->ref = malloc((size_t)nref * sizeof(double));
    c->cur = malloc((size_t)ncur * sizeof(double));
    c->why = why;
    return c;
}

#define FILL(arr, n, expr)            \
    for (int i_ = 0; i_ < (n); i_++) \
    (arr)[i_] = (expr)

static void make_columns(void) {
    if (ncols)
        return;
    rng_state = 0x1234567887654321ULL;
    static const double v012[] = {0, 1, 2}, p811[] = {.8, .1, .1}, v0127[] = {0, 1, 2, 7}, pq[] = {.25, .25, .25, .25};
    static const double v05[] = {0, 5}, p64[] = {.6, .4}, v12[] = {1, 2}, v123[] = {1, 2, 3}, p3[] = {1. / 3, 1. / 3, 1. / 3};
    static const double p55[] = {.45, .55}, v49[] = {4, 9}, p532[] = {.5, .3, .2}, half[] = {.5, .5};
    column_t *c;
    /* Reference > 1000 rows: Wasserstein (> 5 values) or Jensen-Shannon. */
    c = add_col(1, 0, 5000, 3000, "pixel-like, no drift");
    FILL(c->ref, c->nref, floor(uniform() * 256));
    FILL(c->cur, c->ncur, floor(uniform() * 256));
    c = add_col(2, 0, 5000, 3000, "pixel-like, shifted");
    FILL(c->ref, c->nref, floor(uniform() * 256));
    FILL(c->cur, c->ncur, 30 + floor(uniform() * 226));
    c = add_col(3, 0, 4000, 2000, "constant column: JS 0");
    FILL(c->ref, c->nref, 0);
    FILL(c->cur, c->ncur, 0);
    c = add_col(4, 0, 4000, 2000, "constant reference, > 5 values in current: norm 0.001");
    FILL(c->ref, c->nref, 0);
    FILL(c->cur, c->ncur, floor(uniform() * 100));
    c = add_col(5, 0, 4000, 3000, "<= 5 values, one only in current: JS");
    FILL(c->ref, c->nref, choice(v012, p811, 3));
    FILL(c->cur, c->ncur, choice(v0127, pq, 4));
    c = add_col(6, 1, 6000, 1000, "categorical: JS");
    FILL(c->ref, c->nref, floor(uniform() * 10));
    FILL(c->cur, c->ncur, floor(uniform() * 10));
    c = add_col(7, 0, 3000, 2500, "floats, shifted");
    FILL(c->ref, c->nref, normal(0, 1));
    FILL(c->cur, c->ncur, normal(0.2, 1));
    c = add_col(8, 0, 1001, 50, "1001 rows: the large-reference branch");
    FILL(c->ref, c->nref, floor(uniform() * 3));
    FILL(c->cur, c->ncur, floor(uniform() * 3));
    c = add_col(9, 0, 2000, 2000, "values only in current, > 20 reference values");
    FILL(c->ref, c->nref, floor(uniform() * 40));
    FILL(c->cur, c->ncur, 20 + floor(uniform() * 40));
    /* Reference <= 1000 rows: K-S, chi-square or z. */
    c = add_col(11, 0, 500, 700, "K-S exact, unequal sizes");
    FILL(c->ref, c->nref, normal(0, 1));
    FILL(c->cur, c->ncur, normal(0, 1));
    c = add_col(12, 0, 800, 800, "K-S exact, equal sizes, shifted");
    FILL(c->ref, c->nref, normal(0, 1));
    FILL(c->cur, c->ncur, normal(0.3, 1));
    c = add_col(13, 0, 300, 12000, "K-S asymptotic (kstwo), DMTW/Pelz-Good range");
    FILL(c->ref, c->nref, normal(0, 1));
    FILL(c->cur, c->ncur, normal(0.1, 1));
    c = add_col(14, 0, 60, 15000, "K-S asymptotic, n <= 140 (Pomeranz range)");
    FILL(c->ref, c->nref, normal(0, 1));
    FILL(c->cur, c->ncur, normal(0.25, 1));
    c = add_col(15, 0, 1000, 1000, "K-S at exactly 1000 reference rows");
    FILL(c->ref, c->nref, normal(5, 2));
    FILL(c->cur, c->ncur, normal(5, 2));
    c = add_col(16, 0, 600, 900, "3 values: chi-square");
    FILL(c->ref, c->nref, choice(v012, p3, 3));
    FILL(c->cur, c->ncur, choice(v012, p532, 3));
    c = add_col(17, 0, 900, 400, "2 values: z");
    FILL(c->ref, c->nref, choice(v05, half, 2));
    FILL(c->cur, c->ncur, choice(v05, p64, 2));
    c = add_col(18, 0, 500, 200, "z: both constant and equal, p = 1");
    FILL(c->ref, c->nref, 3);
    FILL(c->cur, c->ncur, 3);
    c = add_col(19, 0, 500, 200, "z: constant, different values (underflows to 0 in Evidently)");
    FILL(c->ref, c->nref, 3);
    FILL(c->cur, c->ncur, 4);
    c = add_col(20, 1, 1000, 1500, "categorical chi-square");
    FILL(c->ref, c->nref, floor(uniform() * 10));
    FILL(c->cur, c->ncur, floor(uniform() * 10));
    c = add_col(21, 1, 700, 300, "chi-square, a value only in current: p = 0");
    FILL(c->ref, c->nref, choice(v12, half, 2));
    FILL(c->cur, c->ncur, choice(v123, p3, 3));
    c = add_col(22, 1, 1000, 1000, "categorical z");
    FILL(c->ref, c->nref, choice(v49, half, 2));
    FILL(c->cur, c->ncur, choice(v49, p55, 2));
    c = add_col(23, 0, 40, 30, "K-S exact, tiny samples");
    FILL(c->ref, c->nref, floor(uniform() * 12));
    FILL(c->cur, c->ncur, 2 + floor(uniform() * 12));
}

static int write_f64(const char *path, const double *v, int n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(v, sizeof *v, (size_t)n, f);
    fclose(f);
    return w == (size_t)n ? 0 : -1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Loads the columns as (fid, is_cat, value, r, c) value counts. */
static int load_columns(fm_db_t *db) {
    int rc = fm_db_exec(db, "DROP TABLE IF EXISTS crafted; "
                            "CREATE TABLE crafted (fid int, is_cat bool, value float8, r float8, c float8)");
    if (rc == 0)
        rc = fm_db_copy_begin(db, "COPY crafted FROM STDIN");
    for (int k = 0; k < ncols && rc == 0; k++) {
        column_t *c = &cols[k];
        int n = c->nref + c->ncur;
        double *all = malloc((size_t)n * sizeof *all);
        int *side = malloc((size_t)n * sizeof *side);
        /* Sort the values of both sides together, remembering the side by
         * sorting (value, side) pairs encoded in two passes. */
        double *r = malloc((size_t)c->nref * sizeof *r), *u = malloc((size_t)c->ncur * sizeof *u);
        memcpy(r, c->ref, (size_t)c->nref * sizeof *r);
        memcpy(u, c->cur, (size_t)c->ncur * sizeof *u);
        qsort(r, (size_t)c->nref, sizeof *r, cmp_double);
        qsort(u, (size_t)c->ncur, sizeof *u, cmp_double);
        int i = 0, j = 0;
        while ((i < c->nref || j < c->ncur) && rc == 0) {
            double v = i < c->nref && (j >= c->ncur || r[i] <= u[j]) ? r[i] : u[j];
            long nr = 0, nc = 0;
            while (i < c->nref && r[i] == v) {
                i++;
                nr++;
            }
            while (j < c->ncur && u[j] == v) {
                j++;
                nc++;
            }
            char line[128];
            int len = snprintf(line, sizeof line, "%d\t%s\t%.17g\t%ld\t%ld\n", c->fid, c->cat ? "t" : "f", v, nr, nc);
            rc = fm_db_copy_put(db, line, (size_t)len);
        }
        free(r);
        free(u);
        free(all);
        free(side);
    }
    int erc = fm_db_copy_end(db);
    return rc ? rc : erc;
}

/* W1 and K-S D straight from sorted raw values (scipy's _cdf_distance). */
static void raw_w1_d(const column_t *c, double *w1, double *d, double *std) {
    int n = c->nref + c->ncur;
    double *all = malloc((size_t)n * sizeof *all), *r = malloc((size_t)c->nref * sizeof *r),
           *u = malloc((size_t)c->ncur * sizeof *u);
    memcpy(all, c->ref, (size_t)c->nref * sizeof *all);
    memcpy(all + c->nref, c->cur, (size_t)c->ncur * sizeof *all);
    memcpy(r, c->ref, (size_t)c->nref * sizeof *r);
    memcpy(u, c->cur, (size_t)c->ncur * sizeof *u);
    qsort(all, (size_t)n, sizeof *all, cmp_double);
    qsort(r, (size_t)c->nref, sizeof *r, cmp_double);
    qsort(u, (size_t)c->ncur, sizeof *u, cmp_double);
    *w1 = 0;
    *d = 0;
    int i = 0, j = 0;
    for (int k = 0; k < n; k++) {
        while (i < c->nref && r[i] <= all[k])
            i++;
        while (j < c->ncur && u[j] <= all[k])
            j++;
        double diff = fabs((double)i / c->nref - (double)j / c->ncur);
        if (diff > *d)
            *d = diff;
        if (k + 1 < n)
            *w1 += diff * (all[k + 1] - all[k]);
    }
    double mean = 0, var = 0;
    for (int k = 0; k < c->nref; k++)
        mean += c->ref[k];
    mean /= c->nref;
    for (int k = 0; k < c->nref; k++)
        var += (c->ref[k] - mean) * (c->ref[k] - mean);
    *std = sqrt(var / c->nref);
    free(all);
    free(r);
    free(u);
}

static void test_w1_and_d_from_raw(void) {
    fm_db_t *db;
    OPEN_DB("stats_raw", db);
    make_columns();
    FM_REQUIRE_OK(load_columns(db));
    fm_db_result_t *res;
    FM_REQUIRE_OK(fm_db_query(db, "SELECT fid, stattest, statistic, score FROM fm_drift_stats('crafted', "
                                  "'wasserstein') ORDER BY fid",
                              0, NULL, &res));
    FM_CHECK_EQ(fm_db_result_rows(res), ncols);
    for (int k = 0; k < ncols && k < fm_db_result_rows(res); k++) {
        if (cols[k].cat)
            continue;
        double w1, d, std, got_w1, got_score;
        raw_w1_d(&cols[k], &w1, &d, &std);
        fm_db_result_double(res, k, 2, &got_w1);
        fm_db_result_double(res, k, 3, &got_score);
        if (!(fabs(got_w1 - w1) <= 1e-12 * fmax(1, w1)))
            FM_TEST_FAIL_AT("column %d (%s): W1 %.17g, from raw values %.17g", cols[k].fid, cols[k].why, got_w1, w1);
        double want = w1 / fmax(std, 0.001);
        if (!(fabs(got_score - want) <= 1e-9 * fmax(1, want)))
            FM_TEST_FAIL_AT("column %d: normed W1 %.17g, want %.17g", cols[k].fid, got_score, want);
    }
    fm_db_result_free(res);
    /* K-S D where the default choice is K-S (references of <= 1000 rows):
     * forcing K-S on the large columns would spend seconds on exact
     * p-values in PL/pgSQL. */
    FM_REQUIRE_OK(fm_db_query(db, "SELECT fid, statistic FROM fm_drift_stats('crafted') WHERE stattest = 'ks' "
                                  "ORDER BY fid",
                              0, NULL, &res));
    FM_CHECK(fm_db_result_rows(res) >= 5);
    for (int i = 0; i < fm_db_result_rows(res); i++) {
        int fid = atoi(fm_db_result_value(res, i, 0));
        for (int k = 0; k < ncols; k++) {
            if (cols[k].fid != fid)
                continue;
            double w1, d, std, got;
            raw_w1_d(&cols[k], &w1, &d, &std);
            fm_db_result_double(res, i, 1, &got);
            if (!(fabs(got - d) <= 1e-15))
                FM_TEST_FAIL_AT("column %d: K-S D %.17g, from raw values %.17g", fid, got, d);
        }
    }
    fm_db_result_free(res);
    /* A forced test must accept the column type, as in Evidently. */
    FM_CHECK_ERR(fm_db_exec(db, "SELECT * FROM fm_drift_stats('crafted', 'chisquare')"), FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "not a test for numerical columns");
    FM_CHECK_ERR(fm_db_exec(db, "SELECT * FROM fm_drift_stats('crafted', NULL, 'wasserstein')"), FM_EDB);
    fm_db_close(db);
}

/* Runs the oracle on the columns with the given options and compares every
 * column with fm_drift_stats under the same options. */
static void compare_with_oracle(const char *dbname, const char *num, const char *cat, double num_thr,
                                double cat_thr) {
    const char *why;
    const char *py = dbtest_python(&why);
    if (!py) {
        static char msg[512];
        snprintf(msg, sizeof msg, "no oracle: %s", why);
        FM_TEST_SKIP(msg);
    }
    fm_db_t *db;
    OPEN_DB(dbname, db);
    make_columns();
    FM_REQUIRE_OK(load_columns(db));
    const char *dir = fm_test_tmpdir();
    char path[1024], spec_path[1024], out_path[1024];
    snprintf(spec_path, sizeof spec_path, "%s/%s.json", dir, dbname);
    snprintf(out_path, sizeof out_path, "%s/%s.jsonl", dir, dbname);
    FILE *spec = fopen(spec_path, "w");
    FM_REQUIRE(spec);
    fprintf(spec, "{\"options\": {");
    fprintf(spec, "\"num_stattest\": %s%s%s, ", num ? "\"" : "", num ? num : "null", num ? "\"" : "");
    fprintf(spec, "\"cat_stattest\": %s%s%s, ", cat ? "\"" : "", cat ? cat : "null", cat ? "\"" : "");
    if (isnan(num_thr))
        fprintf(spec, "\"num_threshold\": null, ");
    else
        fprintf(spec, "\"num_threshold\": %.17g, ", num_thr);
    if (isnan(cat_thr))
        fprintf(spec, "\"cat_threshold\": null");
    else
        fprintf(spec, "\"cat_threshold\": %.17g", cat_thr);
    fprintf(spec, "}, \"columns\": [");
    for (int k = 0; k < ncols; k++) {
        snprintf(path, sizeof path, "%s/c%d_r.f64", dir, cols[k].fid);
        FM_REQUIRE(write_f64(path, cols[k].ref, cols[k].nref) == 0);
        snprintf(path, sizeof path, "%s/c%d_c.f64", dir, cols[k].fid);
        FM_REQUIRE(write_f64(path, cols[k].cur, cols[k].ncur) == 0);
        fprintf(spec, "%s{\"fid\": %d, \"cat\": %s, \"ref\": \"c%d_r.f64\", \"cur\": \"c%d_c.f64\"}", k ? ", " : "",
                cols[k].fid, cols[k].cat ? "true" : "false", cols[k].fid, cols[k].fid);
    }
    fprintf(spec, "]}\n");
    fclose(spec);
    char cmd[3072], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' '%s'", py, FM_DRIFT_ORACLE, spec_path, out_path);
    int st = dbtest_run(cmd, &out);
    if (st != 0)
        FM_TEST_FAIL_AT("oracle failed (%d): %s", st, out ? out : "");
    free(out);
    FM_REQUIRE(st == 0);

    char sql[512], nt[40], ct[40];
    snprintf(nt, sizeof nt, isnan(num_thr) ? "NULL" : "%.17g", num_thr);
    snprintf(ct, sizeof ct, isnan(cat_thr) ? "NULL" : "%.17g", cat_thr);
    snprintf(sql, sizeof sql,
             "SELECT fid, stattest, score, threshold, drifted, coalesce(p_value, 'NaN'), n_values "
             "FROM fm_drift_stats('crafted', %s%s%s, %s%s%s, %s, %s) ORDER BY fid",
             num ? "'" : "", num ? num : "NULL", num ? "'" : "", cat ? "'" : "", cat ? cat : "NULL", cat ? "'" : "", nt,
             ct);
    fm_db_result_t *res;
    FM_REQUIRE_OK(fm_db_query(db, sql, 0, NULL, &res));
    size_t len;
    char *text = dbtest_read_file(out_path, &len);
    FM_REQUIRE(text);
    int compared = 0, ev_compared = 0, ev_missing = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        FM_REQUIRE(o);
        if (cJSON_GetObjectItem(o, "summary")) {
            if (cJSON_IsNull(cJSON_GetObjectItem(o, "evidently")))
                fprintf(stderr, "  note: evidently not available (%s); compared with numpy/scipy only\n",
                        cJSON_GetStringValue(cJSON_GetObjectItem(o, "evidently_error")));
            cJSON_Delete(o);
            continue;
        }
        int fid = (int)cJSON_GetObjectItem(o, "fid")->valuedouble;
        int row = -1;
        for (int i = 0; i < fm_db_result_rows(res); i++)
            if (atoi(fm_db_result_value(res, i, 0)) == fid)
                row = i;
        const char *why_col = "";
        for (int k = 0; k < ncols; k++)
            if (cols[k].fid == fid)
                why_col = cols[k].why;
        if (row < 0) {
            FM_TEST_FAIL_AT("column %d (%s) missing from the SQL results", fid, why_col);
            cJSON_Delete(o);
            continue;
        }
        const char *want_test = cJSON_GetStringValue(cJSON_GetObjectItem(o, "stattest"));
        double want = cJSON_GetObjectItem(o, "score")->valuedouble;
        double thr = cJSON_GetObjectItem(o, "threshold")->valuedouble;
        int want_drift = cJSON_IsTrue(cJSON_GetObjectItem(o, "drifted"));
        double got = NAN, got_thr = NAN;
        fm_db_result_double(res, row, 2, &got);
        fm_db_result_double(res, row, 3, &got_thr);
        int got_drift = strcmp(fm_db_result_value(res, row, 4), "t") == 0;
        if (strcmp(fm_db_result_value(res, row, 1), want_test) != 0)
            FM_TEST_FAIL_AT("column %d (%s): SQL chose %s, the oracle %s", fid, why_col,
                            fm_db_result_value(res, row, 1), want_test);
        if (!(fabs(got - want) <= 1e-9 * fmax(1, fabs(want))))
            FM_TEST_FAIL_AT("column %d (%s, %s): score %.17g, oracle %.17g (diff %.3g)", fid, why_col, want_test, got,
                            want, fabs(got - want));
        FM_CHECK(got_thr == thr);
        if (got_drift != want_drift)
            FM_TEST_FAIL_AT("column %d (%s): drifted %d, oracle %d", fid, why_col, got_drift, want_drift);
        compared++;
        cJSON *ev = cJSON_GetObjectItem(o, "ev_score");
        if (ev) {
            const char *ev_test = cJSON_GetStringValue(cJSON_GetObjectItem(o, "ev_stattest"));
            if (!ev_test || strcmp(ev_test, want_test) != 0)
                FM_TEST_FAIL_AT("column %d (%s): evidently chose %s, SQL %s", fid, why_col, ev_test ? ev_test : "?",
                                want_test);
            /* Evidently computes 2·(1 - Φ(|z|)), which is 0 below 1e-16;
             * the absolute tolerance covers that. */
            if (!(fabs(got - ev->valuedouble) <= 1e-9 * fmax(1, fabs(ev->valuedouble))))
                FM_TEST_FAIL_AT("column %d (%s): score %.17g, evidently %.17g", fid, why_col, got, ev->valuedouble);
            if (cJSON_IsTrue(cJSON_GetObjectItem(o, "ev_drifted")) != got_drift)
                FM_TEST_FAIL_AT("column %d (%s): drifted %d, evidently says otherwise", fid, why_col, got_drift);
            ev_compared++;
        } else if (cJSON_GetObjectItem(o, "ev_error")) {
            ev_missing++;
            FM_TEST_FAIL_AT("column %d: evidently failed: %s", fid,
                            cJSON_GetStringValue(cJSON_GetObjectItem(o, "ev_error")));
        }
        cJSON_Delete(o);
    }
    free(text);
    fm_db_result_free(res);
    FM_CHECK_EQ(compared, ncols);
    fprintf(stderr, "  %d columns equal to the numpy/scipy oracle, %d to evidently (%d failed there)\n", compared,
            ev_compared, ev_missing);
    fm_db_close(db);
}

static void test_oracle_defaults(void) { compare_with_oracle("stats_defaults", NULL, NULL, NAN, NAN); }
static void test_oracle_psi(void) { compare_with_oracle("stats_psi", "psi", "psi", NAN, NAN); }
static void test_oracle_kl_js(void) { compare_with_oracle("stats_kl", "kl_div", "jensenshannon", 0.05, 0.2); }
static void test_oracle_wasserstein_z(void) { compare_with_oracle("stats_wz", "wasserstein", "z", NAN, 0.01); }

FM_TEST_MAIN({"tails_closed_form", test_tails_closed_form}, {"ks_exact_brute_force", test_ks_exact_brute_force},
             {"w1_and_d_from_raw", test_w1_and_d_from_raw}, {"oracle_defaults", test_oracle_defaults},
             {"oracle_psi", test_oracle_psi}, {"oracle_kl_js", test_oracle_kl_js},
             {"oracle_wasserstein_z", test_oracle_wasserstein_z})
