/* fm_drift_check.c: runs fm_drift_run() in PostgreSQL and reads a stored run
 * back (its features, class counts and mean images) for the reports. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_drift.h"
#include "fm_error.h"

void fm_drift_check_opts_default(fm_drift_check_opts_t *o) {
    memset(o, 0, sizeof *o);
    o->num_threshold = NAN;
    o->cat_threshold = NAN;
    o->drift_share = NAN;
}

int fm_drift_check(fm_db_t *db, const fm_drift_check_opts_t *o, int64_t *run_id) {
    *run_id = 0;
    char ref[24], nthr[40], cthr[40], share[40];
    snprintf(ref, sizeof ref, "%lld", (long long)o->reference_id);
    snprintf(nthr, sizeof nthr, "%.17g", o->num_threshold);
    snprintf(cthr, sizeof cthr, "%.17g", o->cat_threshold);
    snprintf(share, sizeof share, "%.17g", o->drift_share);
    const char *params[] = {
        o->since, o->until, o->window, o->model_version, o->reference_id > 0 ? ref : NULL,
        o->num_stattest, o->cat_stattest, isnan(o->num_threshold) ? NULL : nthr,
        isnan(o->cat_threshold) ? NULL : cthr, isnan(o->drift_share) ? NULL : share,
    };
    /* The server parses the times, so every PostgreSQL spelling works
     * ('2026-05-01 12:00+02', 'now', '90 min', '1h'). */
    fm_db_result_t *res;
    int rc = fm_db_query(db,
                         "SELECT fm_drift_run("
                         " coalesce($1::timestamptz, coalesce($2::timestamptz, now()) - coalesce($3, '1 hour')::interval),"
                         " coalesce($2::timestamptz, now()), $4, $5::bigint, $6, $7, $8::float8, $9::float8,"
                         " coalesce($10::float8, 0.5))",
                         10, params, &res);
    if (rc)
        return rc;
    rc = fm_db_result_int64(res, 0, 0, run_id);
    fm_db_result_free(res);
    return rc;
}

static void copy_text(char *dst, size_t cap, const char *src) { snprintf(dst, cap, "%s", src ? src : ""); }

#define TS(col) "to_char(" col " AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || 'Z'"

static int load_header(fm_db_t *db, const char *id, fm_drift_run_t *r) {
    const char *params[] = {id};
    fm_db_result_t *res;
    int rc = fm_db_query(db,
                         "SELECT r.id, r.reference_id, coalesce(r.model_version, ''), " TS("r.started_at") ", "
                         TS("r.requested_start") ", " TS("r.requested_end") ", " TS("r.window_start") ", "
                         TS("r.window_end") ", r.images, r.predictions, r.features, r.drifted, r.share, "
                         "r.drift_share, r.dataset_drift, coalesce(p.description, ''), p.data_source, p.images, "
                         "concat_ws(' ', p.model_name, p.model_version) "
                         "FROM drift_runs AS r JOIN reference_profiles AS p ON p.id = r.reference_id "
                         "WHERE r.id = $1::bigint",
                         1, params, &res);
    if (rc)
        return rc;
    if (fm_db_result_rows(res) != 1) {
        fm_db_result_free(res);
        return fm_fail(FM_ENOTFOUND, "drift run %s does not exist", id);
    }
    int64_t v;
    rc |= fm_db_result_int64(res, 0, 0, &r->id);
    rc |= fm_db_result_int64(res, 0, 1, &r->reference_id);
    copy_text(r->model_version, sizeof r->model_version, fm_db_result_value(res, 0, 2));
    copy_text(r->started_at, sizeof r->started_at, fm_db_result_value(res, 0, 3));
    copy_text(r->requested_start, sizeof r->requested_start, fm_db_result_value(res, 0, 4));
    copy_text(r->requested_end, sizeof r->requested_end, fm_db_result_value(res, 0, 5));
    copy_text(r->window_start, sizeof r->window_start, fm_db_result_value(res, 0, 6));
    copy_text(r->window_end, sizeof r->window_end, fm_db_result_value(res, 0, 7));
    rc |= fm_db_result_int64(res, 0, 8, &r->images);
    rc |= fm_db_result_int64(res, 0, 9, &r->predictions);
    rc |= fm_db_result_int64(res, 0, 10, &v);
    r->features = (int)v;
    rc |= fm_db_result_int64(res, 0, 11, &v);
    r->drifted = (int)v;
    rc |= fm_db_result_double(res, 0, 12, &r->share);
    rc |= fm_db_result_double(res, 0, 13, &r->drift_share);
    r->dataset_drift = strcmp(fm_db_result_value(res, 0, 14), "t") == 0;
    copy_text(r->ref_description, sizeof r->ref_description, fm_db_result_value(res, 0, 15));
    copy_text(r->ref_source, sizeof r->ref_source, fm_db_result_value(res, 0, 16));
    rc |= fm_db_result_int64(res, 0, 17, &r->ref_images);
    copy_text(r->ref_model, sizeof r->ref_model, fm_db_result_value(res, 0, 18));
    fm_db_result_free(res);
    return rc ? fm_fail(FM_EFORMAT, "drift run %s: unexpected values in drift_runs", id) : 0;
}

static int load_features(fm_db_t *db, const char *id, fm_drift_run_t *r) {
    const char *params[] = {id};
    fm_db_result_t *res;
    int rc = fm_db_query(db,
                         "SELECT feature_id, feature, feature_group, column_type, stattest, score, threshold, "
                         "coalesce(p_value, 'NaN'), coalesce(statistic, 'NaN'), drifted, n_ref, n_cur, n_values, "
                         "fm_drift_strength(stattest, score, threshold) AS strength "
                         "FROM drift_results WHERE run_id = $1::bigint ORDER BY strength DESC, feature_id",
                         1, params, &res);
    if (rc)
        return rc;
    int n = fm_db_result_rows(res);
    r->f = calloc((size_t)(n > 0 ? n : 1), sizeof *r->f);
    if (!r->f) {
        fm_db_result_free(res);
        return fm_fail(FM_ENOMEM, "drift run: out of memory");
    }
    r->nfeatures = n;
    for (int i = 0; i < n && rc == 0; i++) {
        fm_drift_feature_t *f = &r->f[i];
        int64_t v;
        rc |= fm_db_result_int64(res, i, 0, &v);
        f->fid = (int)v;
        copy_text(f->name, sizeof f->name, fm_db_result_value(res, i, 1));
        copy_text(f->group, sizeof f->group, fm_db_result_value(res, i, 2));
        copy_text(f->column_type, sizeof f->column_type, fm_db_result_value(res, i, 3));
        copy_text(f->stattest, sizeof f->stattest, fm_db_result_value(res, i, 4));
        rc |= fm_db_result_double(res, i, 5, &f->score);
        rc |= fm_db_result_double(res, i, 6, &f->threshold);
        rc |= fm_db_result_double(res, i, 7, &f->p_value);
        rc |= fm_db_result_double(res, i, 8, &f->statistic);
        f->drifted = strcmp(fm_db_result_value(res, i, 9), "t") == 0;
        rc |= fm_db_result_int64(res, i, 10, &f->n_ref);
        rc |= fm_db_result_int64(res, i, 11, &f->n_cur);
        rc |= fm_db_result_int64(res, i, 12, &v);
        f->n_values = (int)v;
        rc |= fm_db_result_double(res, i, 13, &f->strength);
        if (f->fid >= 0 && f->fid < 784)
            r->pixel_f[f->fid] = i;
    }
    fm_db_result_free(res);
    return rc ? fm_fail(FM_EFORMAT, "drift run %s: unexpected values in drift_results", id) : 0;
}

/* Rows of (index, value) into an array; index outside [0, n) is ignored. */
static int load_indexed(fm_db_t *db, const char *sql, int nparams, const char *const *params, double *dst, int n) {
    fm_db_result_t *res;
    int rc = fm_db_query(db, sql, nparams, params, &res);
    if (rc)
        return rc;
    for (int i = 0; i < fm_db_result_rows(res) && rc == 0; i++) {
        int64_t k;
        double v;
        rc = fm_db_result_int64(res, i, 0, &k);
        if (rc == 0)
            rc = fm_db_result_double(res, i, 1, &v);
        if (rc == 0 && k >= 0 && k < n)
            dst[k] = v;
    }
    fm_db_result_free(res);
    return rc;
}

static int load_distributions(fm_db_t *db, fm_drift_run_t *r) {
    char ref[24], id[24];
    snprintf(ref, sizeof ref, "%lld", (long long)r->reference_id);
    snprintf(id, sizeof id, "%lld", (long long)r->id);
    double rc10[10] = {0}, cc10[10] = {0};
    const char *p1[] = {ref};
    const char *pr[] = {id};
    int rc = load_indexed(db,
                          "SELECT value::integer, count::float8 FROM reference_values "
                          "WHERE profile_id = $1::bigint AND feature = 'pred_class'",
                          1, p1, rc10, 10);
    /* The run's own window (full precision) and version filter. */
    if (rc == 0)
        rc = load_indexed(db,
                          "SELECT u.k - 1, u.n::float8 FROM drift_runs AS r, "
                          "fm_prediction_hist_window(r.window_start, r.window_end, r.model_version) AS h, "
                          "unnest(h.class_counts) WITH ORDINALITY AS u(n, k) WHERE r.id = $1::bigint",
                          1, pr, cc10, 10);
    for (int k = 0; k < 10; k++) {
        r->ref_class[k] = (int64_t)rc10[k];
        r->cur_class[k] = (int64_t)cc10[k];
    }
    if (rc == 0)
        rc = load_indexed(db,
                          "SELECT h.pixel, sum((u.o - 1) * u.c)::float8 / nullif(sum(u.c), 0) "
                          "FROM reference_pixel_hist AS h, unnest(h.counts) WITH ORDINALITY AS u(c, o) "
                          "WHERE h.profile_id = $1::bigint GROUP BY h.pixel",
                          1, p1, r->ref_mean, 784);
    if (rc == 0)
        rc = load_indexed(db,
                          "SELECT h.pixel, sum((u.o - 1) * u.c)::float8 / nullif(sum(u.c), 0) "
                          "FROM drift_runs AS r, fm_pixel_hist_window(r.window_start, r.window_end, r.model_version) AS h, "
                          "unnest(h.counts) WITH ORDINALITY AS u(c, o) WHERE r.id = $1::bigint GROUP BY h.pixel",
                          1, pr, r->cur_mean, 784);
    return rc;
}

int fm_drift_run_load(fm_db_t *db, int64_t run_id, fm_drift_run_t **out) {
    *out = NULL;
    fm_drift_run_t *r = calloc(1, sizeof *r);
    if (!r)
        return fm_fail(FM_ENOMEM, "drift run: out of memory");
    for (int p = 0; p < 784; p++)
        r->pixel_f[p] = -1;
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)run_id);
    int rc = load_header(db, id, r);
    if (rc == 0)
        rc = load_features(db, id, r);
    if (rc == 0)
        rc = load_distributions(db, r);
    if (rc) {
        fm_drift_run_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

void fm_drift_run_free(fm_drift_run_t *r) {
    if (!r)
        return;
    free(r->f);
    free(r);
}

const fm_drift_feature_t *fm_drift_run_pixel(const fm_drift_run_t *r, int pixel) {
    if (pixel < 0 || pixel >= 784 || r->pixel_f[pixel] < 0)
        return NULL;
    return &r->f[r->pixel_f[pixel]];
}
