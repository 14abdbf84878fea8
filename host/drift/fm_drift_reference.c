/* fm_drift_reference.c: computes a reference profile from a training set
 * and the model's predictions on it, and stores it with COPY. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_drift.h"
#include "fm_error.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_pixel_stats.h"

int fm_drift_predict(fm_engine_t *engine, fm_backend_model_t *bm, const uint8_t *images, size_t n, int32_t *labels,
                     float *confidence, float *probs) {
    enum { CHUNK = 4096 };
    float *p = probs ? NULL : malloc((size_t)CHUNK * FM_NUM_CLASSES * sizeof *p);
    if (!probs && !p)
        return fm_fail(FM_ENOMEM, "fm_drift_predict: out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i += CHUNK) {
        size_t k = n - i < CHUNK ? n - i : CHUNK;
        fm_batch_t b = {.pixels = images + i * FM_IMAGE_PIXELS,
                        .n = k,
                        .probs = probs ? probs + i * FM_NUM_CLASSES : p,
                        .labels = labels + i,
                        .confidence = confidence + i};
        rc = fm_engine_infer(engine, bm, &b);
    }
    free(p);
    return rc;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Appends "id\tfeature\tvalue\tcount\n" rows for the distinct values of v
 * (sorted in place) to the COPY in progress. */
static int put_value_counts(fm_db_t *db, int64_t id, const char *feature, double *v, size_t n, char *buf,
                            size_t cap) {
    qsort(v, n, sizeof *v, cmp_double);
    size_t len = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && v[j] == v[i])
            j++;
        len += (size_t)snprintf(buf + len, cap - len, "%lld\t%s\t%.17g\t%zu\n", (long long)id, feature, v[i], j - i);
        if (cap - len < 256) {
            int rc = fm_db_copy_put(db, buf, len);
            if (rc)
                return rc;
            len = 0;
        }
        i = j;
    }
    return len ? fm_db_copy_put(db, buf, len) : 0;
}

static int store(fm_db_t *db, const fm_drift_reference_info_t *info, const uint8_t *images, size_t n,
                 const int32_t *labels, const float *confidence, int64_t *profile_id, char *buf, size_t cap,
                 double *vals) {
    char images_text[24];
    snprintf(images_text, sizeof images_text, "%zu", n);
    const char *params[] = {info->description, info->data_source ? info->data_source : "(unknown)",
                            info->data_sha256 ? info->data_sha256 : "", images_text, info->model_name,
                            info->model_version, info->model_sha256};
    fm_db_result_t *res;
    int rc = fm_db_query(db,
                         "INSERT INTO reference_profiles (description, data_source, data_sha256, images, model_name, "
                         "model_version, model_sha256) VALUES ($1, $2, $3, $4::integer, $5, $6, $7) RETURNING id",
                         7, params, &res);
    if (rc)
        return rc;
    rc = fm_db_result_int64(res, 0, 0, profile_id);
    fm_db_result_free(res);
    if (rc)
        return rc;
    int64_t id = *profile_id;

    fm_pixel_hist_t *h = fm_pixel_hist_new();
    if (!h)
        return fm_fail(FM_ENOMEM, "reference: out of memory for the histogram");
    fm_pixel_hist_add(h, images, n);
    rc = fm_db_copy_begin(db, "COPY reference_pixel_hist (profile_id, pixel, counts) FROM STDIN");
    for (int p = 0; p < FM_PIXEL_COUNT && rc == 0; p++) {
        size_t len = (size_t)snprintf(buf, cap, "%lld\t%d\t{", (long long)id, p);
        for (int v = 0; v < FM_PIXEL_VALUES; v++)
            len += (size_t)snprintf(buf + len, cap - len, v ? ",%u" : "%u", h->counts[p * FM_PIXEL_VALUES + v]);
        len += (size_t)snprintf(buf + len, cap - len, "}\n");
        rc = fm_db_copy_put(db, buf, len);
    }
    fm_pixel_hist_free(h);
    int erc = fm_db_copy_end(db);
    if (rc || erc)
        return rc ? rc : erc;

    rc = fm_db_copy_begin(db, "COPY reference_values (profile_id, feature, value, count) FROM STDIN");
    double *feats = malloc(n * FM_PIXEL_FEATURES * sizeof *feats);
    if (!feats)
        rc = fm_fail(FM_ENOMEM, "reference: out of memory for the summary features");
    for (size_t i = 0; i < n && rc == 0; i++)
        fm_pixel_features(images + i * FM_PIXEL_COUNT, feats + i * FM_PIXEL_FEATURES);
    for (int k = 0; k < FM_PIXEL_FEATURES && rc == 0; k++) {
        for (size_t i = 0; i < n; i++)
            vals[i] = feats[i * FM_PIXEL_FEATURES + k];
        rc = put_value_counts(db, id, fm_pixel_feature_names[k], vals, n, buf, cap);
    }
    free(feats);
    for (size_t i = 0; i < n && rc == 0; i++)
        vals[i] = labels[i];
    if (rc == 0)
        rc = put_value_counts(db, id, "pred_class", vals, n, buf, cap);
    /* The confidence as float4 widened to float8: exactly the value a
     * predictions row holds once PostgreSQL widens its real column. */
    for (size_t i = 0; i < n && rc == 0; i++)
        vals[i] = (double)confidence[i];
    if (rc == 0)
        rc = put_value_counts(db, id, "confidence", vals, n, buf, cap);
    erc = fm_db_copy_end(db);
    return rc ? rc : erc;
}

int fm_drift_reference_store(fm_db_t *db, const fm_drift_reference_info_t *info, const uint8_t *images, size_t n,
                             const int32_t *labels, const float *confidence, int64_t *profile_id) {
    *profile_id = 0;
    if (n == 0)
        return fm_fail(FM_EINVAL, "reference: no images");
    if (n > INT32_MAX)
        return fm_fail(FM_EINVAL, "reference: %zu images is more than a profile holds", n);
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= FM_NUM_CLASSES || !isfinite(confidence[i]))
            return fm_fail(FM_EINVAL, "reference: prediction %zu is not a class 0..9 with a finite confidence", i);
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    double *vals = malloc(n * sizeof *vals);
    if (!buf || !vals) {
        free(buf);
        free(vals);
        return fm_fail(FM_ENOMEM, "reference: out of memory");
    }
    int rc = fm_db_exec(db, "BEGIN");
    if (rc == 0)
        rc = store(db, info, images, n, labels, confidence, profile_id, buf, cap, vals);
    if (rc == 0)
        rc = fm_db_exec(db, "COMMIT");
    if (rc) {
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        fm_db_exec(db, "ROLLBACK");
        *profile_id = 0;
        rc = fm_fail(rc, "storing the reference profile: %s", detail);
    }
    free(buf);
    free(vals);
    return rc;
}
