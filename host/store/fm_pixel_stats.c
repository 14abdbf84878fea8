/* fm_pixel_stats.c: per-image summary features and per-pixel histogram
 * deltas (see fm_pixel_stats.h). */
#include "fm_pixel_stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

const char *const fm_pixel_feature_names[FM_PIXEL_FEATURES] = {
    "mean_intensity", "std_intensity", "nonzero_share", "bright_share", "centroid_row", "centroid_col",
};

void fm_pixel_features(const uint8_t *image, double out[FM_PIXEL_FEATURES]) {
    int64_t s = 0, q = 0, srow = 0, scol = 0;
    int nonzero = 0, bright = 0;
    for (int r = 0; r < 28; r++)
        for (int c = 0; c < 28; c++) {
            int64_t p = image[r * 28 + c];
            s += p;
            q += p * p;
            srow += r * p;
            scol += c * p;
            nonzero += p > 0;
            bright += p >= 128;
        }
    out[0] = (double)s / 784.0;
    /* 784·Q - S² is exact in int64 (at most 784² · 255²), so the variance is
     * one rounding away from its true value. */
    out[1] = nearbyint(sqrt((double)(784 * q - s * s) / 614656.0) * 100.0) / 100.0;
    out[2] = (double)nonzero / 784.0;
    out[3] = (double)bright / 784.0;
    out[4] = s > 0 ? nearbyint((double)srow / (double)s * 100.0) / 100.0 : 13.5;
    out[5] = s > 0 ? nearbyint((double)scol / (double)s * 100.0) / 100.0 : 13.5;
}

fm_pixel_hist_t *fm_pixel_hist_new(void) { return calloc(1, sizeof(fm_pixel_hist_t)); }

void fm_pixel_hist_free(fm_pixel_hist_t *h) { free(h); }

void fm_pixel_hist_reset(fm_pixel_hist_t *h) { memset(h, 0, sizeof *h); }

void fm_pixel_hist_add(fm_pixel_hist_t *h, const uint8_t *images, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *img = images + i * FM_PIXEL_COUNT;
        uint32_t *c = h->counts;
        for (int p = 0; p < FM_PIXEL_COUNT; p++, c += FM_PIXEL_VALUES)
            c[img[p]]++;
    }
    h->images += n;
}

void fm_pixel_hist_merge(fm_pixel_hist_t *dst, const fm_pixel_hist_t *src) {
    for (size_t i = 0; i < (size_t)FM_PIXEL_COUNT * FM_PIXEL_VALUES; i++)
        dst->counts[i] += src->counts[i];
    dst->images += src->images;
}

char *fm_pixel_hist_sql_array(const fm_pixel_hist_t *h, size_t *len) {
    /* At most 10 digits and a comma per count, plus braces. */
    size_t cap = (size_t)FM_PIXEL_COUNT * FM_PIXEL_VALUES * 11 + 3;
    char *s = malloc(cap);
    if (!s) {
        fm_fail(FM_ENOMEM, "fm_pixel_hist_sql_array: out of memory");
        return NULL;
    }
    char *p = s;
    *p++ = '{';
    for (size_t i = 0; i < (size_t)FM_PIXEL_COUNT * FM_PIXEL_VALUES; i++) {
        uint32_t v = h->counts[i];
        if (i)
            *p++ = ',';
        if (v == 0) { /* most counts: skip the formatting */
            *p++ = '0';
            continue;
        }
        char tmp[10];
        int k = 0;
        while (v) {
            tmp[k++] = (char)('0' + v % 10);
            v /= 10;
        }
        while (k)
            *p++ = tmp[--k];
    }
    *p++ = '}';
    *p = '\0';
    if (len)
        *len = (size_t)(p - s);
    return s;
}

int fm_confidence_q(float confidence) {
    double q = nearbyint((double)confidence * FM_CONF_GRID);
    return q < 0 ? 0 : q > FM_CONF_GRID ? FM_CONF_GRID : (int)q;
}

/* Appends "{a,b,...}" of n unsigned integers (only those with keep[i] when
 * keep is given, or the indexes themselves when `indexes`). */
static char *u64_array(const uint64_t *v, const uint32_t *v32, size_t n, const uint32_t *keep, int indexes) {
    char *s = malloc(n * 21 + 3);
    if (!s)
        return NULL;
    char *p = s;
    *p++ = '{';
    int first = 1;
    for (size_t i = 0; i < n; i++) {
        if (keep && !keep[i])
            continue;
        unsigned long long x = indexes ? i : v ? v[i] : v32[i];
        p += sprintf(p, first ? "%llu" : ",%llu", x);
        first = 0;
    }
    *p++ = '}';
    *p = '\0';
    return s;
}

int fm_pred_hist_sql_arrays(const fm_pred_hist_t *h, char **classes, char **conf_q, char **conf_n) {
    *classes = u64_array(h->classes, NULL, 10, NULL, 0);
    *conf_q = u64_array(NULL, h->conf, FM_CONF_GRID + 1, h->conf, 1);
    *conf_n = u64_array(NULL, h->conf, FM_CONF_GRID + 1, h->conf, 0);
    if (!*classes || !*conf_q || !*conf_n) {
        free(*classes);
        free(*conf_q);
        free(*conf_n);
        *classes = *conf_q = *conf_n = NULL;
        return fm_fail(FM_ENOMEM, "fm_pred_hist_sql_arrays: out of memory");
    }
    return 0;
}

int64_t fm_pixel_bucket_start_us(int64_t ts_us) {
    /* Floor, also for times before 1970. The SQL grid's origin
     * (2000-01-01 UTC) is a whole number of minutes after the epoch. */
    int64_t q = ts_us / FM_PIXEL_BUCKET_US;
    if (ts_us % FM_PIXEL_BUCKET_US < 0)
        q--;
    return q * FM_PIXEL_BUCKET_US;
}

#define VERSION_MAX 128

typedef struct delta {
    int64_t bucket_us;
    char version[VERSION_MAX];
    fm_pixel_hist_t *hist;
    fm_pred_hist_t *pred;
} delta_t;

struct fm_rollup_deltas {
    int max_keys;
    int used;
    int allocated; /* histograms kept for reuse across clears */
    delta_t *d;
};

fm_rollup_deltas_t *fm_rollup_deltas_new(int max_keys) {
    if (max_keys < 1)
        max_keys = 1;
    fm_rollup_deltas_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->d = calloc((size_t)max_keys, sizeof *s->d);
    if (!s->d) {
        free(s);
        return NULL;
    }
    s->max_keys = max_keys;
    return s;
}

void fm_rollup_deltas_free(fm_rollup_deltas_t *s) {
    if (!s)
        return;
    for (int i = 0; i < s->max_keys; i++) {
        fm_pixel_hist_free(s->d[i].hist);
        free(s->d[i].pred);
    }
    free(s->d);
    free(s);
}

/* The delta of (bucket b, version), created empty when missing. */
static int find_or_add(fm_rollup_deltas_t *s, int64_t b, const char *model_version, delta_t **out) {
    if (!model_version || strlen(model_version) >= VERSION_MAX)
        return fm_fail(FM_EINVAL, "model version missing or longer than %d bytes", VERSION_MAX - 1);
    for (int i = 0; i < s->used; i++)
        if (s->d[i].bucket_us == b && strcmp(s->d[i].version, model_version) == 0) {
            *out = &s->d[i];
            return 0;
        }
    if (s->used == s->max_keys)
        return fm_fail(FM_EOVERLOADED, "more than %d (bucket, version) pairs pending; apply some first", s->max_keys);
    delta_t *hit = &s->d[s->used];
    if (!hit->hist) {
        hit->hist = fm_pixel_hist_new();
        hit->pred = calloc(1, sizeof *hit->pred);
        if (!hit->hist || !hit->pred) {
            fm_pixel_hist_free(hit->hist);
            free(hit->pred);
            hit->hist = NULL;
            hit->pred = NULL;
            return fm_fail(FM_ENOMEM, "fm_rollup_deltas: out of memory for a histogram");
        }
        s->allocated++;
    }
    s->used++;
    hit->bucket_us = b;
    snprintf(hit->version, sizeof hit->version, "%s", model_version);
    *out = hit;
    return 0;
}

int fm_rollup_deltas_add(fm_rollup_deltas_t *s, int64_t ts_us, const char *model_version, const uint8_t *image) {
    delta_t *d;
    int rc = find_or_add(s, fm_pixel_bucket_start_us(ts_us), model_version, &d);
    if (rc == 0)
        fm_pixel_hist_add(d->hist, image, 1);
    return rc;
}

int fm_rollup_deltas_add_prediction(fm_rollup_deltas_t *s, int64_t ts_us, const char *model_version, int label,
                                    float confidence) {
    if (label < 0 || label > 9 || !(confidence >= 0 && confidence <= 1))
        return fm_fail(FM_EINVAL, "prediction with label %d, confidence %g is out of range", label, (double)confidence);
    delta_t *d;
    int rc = find_or_add(s, fm_pixel_bucket_start_us(ts_us), model_version, &d);
    if (rc == 0) {
        d->pred->predictions++;
        d->pred->classes[label]++;
        d->pred->conf[fm_confidence_q(confidence)]++;
    }
    return rc;
}

int fm_rollup_deltas_add_hist(fm_rollup_deltas_t *s, int64_t bucket_start_us, const char *model_version,
                              const fm_pixel_hist_t *h, const fm_pred_hist_t *pred) {
    delta_t *d;
    int rc = find_or_add(s, bucket_start_us, model_version, &d);
    if (rc == 0 && h)
        fm_pixel_hist_merge(d->hist, h);
    if (rc == 0 && pred) {
        d->pred->predictions += pred->predictions;
        for (int k = 0; k < 10; k++)
            d->pred->classes[k] += pred->classes[k];
        for (int q = 0; q <= FM_CONF_GRID; q++)
            d->pred->conf[q] += pred->conf[q];
    }
    return rc;
}

void fm_rollup_deltas_remove(fm_rollup_deltas_t *s, int i) {
    if (i < 0 || i >= s->used)
        return;
    /* Swap the slots (histograms included) so that no memory is lost. */
    delta_t gone = s->d[i];
    s->d[i] = s->d[s->used - 1];
    s->d[s->used - 1] = gone;
    fm_pixel_hist_reset(gone.hist);
    memset(gone.pred, 0, sizeof *gone.pred);
    s->used--;
}

int fm_rollup_deltas_count(const fm_rollup_deltas_t *s) { return s->used; }

void fm_rollup_deltas_get(const fm_rollup_deltas_t *s, int i, int64_t *bucket_start_us, const char **model_version,
                          const fm_pixel_hist_t **hist, const fm_pred_hist_t **pred) {
    *bucket_start_us = s->d[i].bucket_us;
    *model_version = s->d[i].version;
    *hist = s->d[i].hist;
    if (pred)
        *pred = s->d[i].pred;
}

void fm_rollup_deltas_clear(fm_rollup_deltas_t *s) {
    for (int i = 0; i < s->used; i++) {
        fm_pixel_hist_reset(s->d[i].hist);
        memset(s->d[i].pred, 0, sizeof *s->d[i].pred);
    }
    s->used = 0;
}
