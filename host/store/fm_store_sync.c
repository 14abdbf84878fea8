/* fm_store_sync.c: the prediction-log writer's protocol over a synchronous
 * connection (see fm_store_sync.h): COPY of rows, rollup deltas per closed
 * bucket, and the ingested_batches guard that makes each unit exactly-once. */
#include "fm_store_sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "fm_log.h"

/* Rows are gathered into 1 MB chunks before each PQputCopyData call. */
#define CHUNK (1 << 20)

/* A closed (bucket, version) delta waiting to be applied, with the id that
 * guards its application; the id never changes once chosen. */
typedef struct frozen {
    uint8_t id[FM_UUID_BYTES];
    fm_rollup_deltas_t *one; /* exactly one entry */
} frozen_t;

struct fm_store_writer {
    fm_db_t *db;
    int binary;
    uint8_t *buf;
    fm_rollup_deltas_t *open;  /* buckets still open: counts of committed rows */
    fm_rollup_deltas_t *batch; /* the current batch's own deltas */
    frozen_t *frozen;          /* closed deltas not yet applied */
    int nfrozen, capfrozen;
    int64_t max_ts_us; /* newest row seen */
};

static int closed(int64_t bucket_us, int64_t max_ts_us) {
    return max_ts_us >= bucket_us + FM_PIXEL_BUCKET_US + FM_STORE_CLOSE_AFTER_US;
}

/* Applies one (bucket, version) delta: the prediction counts, then the
 * pixel counts of the sampled images. */
static int apply_one(fm_db_t *db, int64_t bucket, const char *version, const fm_pixel_hist_t *h,
                     const fm_pred_hist_t *ph) {
    char ts[40], count[24];
    fm_rows_timestamp(ts, sizeof ts, bucket);
    int rc = 0;
    if (ph && ph->predictions) {
        char *classes, *q, *n;
        if ((rc = fm_pred_hist_sql_arrays(ph, &classes, &q, &n)) != 0)
            return rc;
        snprintf(count, sizeof count, "%llu", (unsigned long long)ph->predictions);
        const char *params[] = {version, ts, count, classes, q, n};
        rc = fm_db_query(db,
                         "SELECT fm_prediction_delta_apply($1, $2::timestamptz, $3::bigint, $4::int8[], "
                         "$5::int4[], $6::int8[])",
                         6, params, NULL);
        free(classes);
        free(q);
        free(n);
        if (rc)
            return rc;
    }
    if (h && h->images) {
        char *arr = fm_pixel_hist_sql_array(h, NULL);
        if (!arr)
            return FM_ENOMEM;
        snprintf(count, sizeof count, "%llu", (unsigned long long)h->images);
        const char *params[] = {version, ts, count, arr};
        rc = fm_db_query(db, "SELECT fm_pixel_delta_apply($1, $2::timestamptz, $3::bigint, $4::int4[])", 4,
                         params, NULL);
        free(arr);
    }
    return rc;
}

int fm_store_apply_deltas(fm_db_t *db, const fm_rollup_deltas_t *deltas) {
    for (int i = 0; i < fm_rollup_deltas_count(deltas); i++) {
        int64_t bucket;
        const char *version;
        const fm_pixel_hist_t *h;
        const fm_pred_hist_t *ph;
        fm_rollup_deltas_get(deltas, i, &bucket, &version, &h, &ph);
        int rc = apply_one(db, bucket, version, h, ph);
        if (rc)
            return rc;
    }
    return 0;
}

int fm_store_writer_new(fm_db_t *db, int binary, fm_store_writer_t **out) {
    *out = NULL;
    fm_store_writer_t *w = calloc(1, sizeof *w);
    if (!w)
        return fm_fail(FM_ENOMEM, "writer: out of memory");
    w->db = db;
    w->binary = binary;
    w->buf = malloc(CHUNK);
    w->open = fm_rollup_deltas_new(FM_STORE_MAX_OPEN);
    w->batch = fm_rollup_deltas_new(FM_STORE_MAX_OPEN);
    w->max_ts_us = INT64_MIN;
    if (!w->buf || !w->open || !w->batch) {
        fm_store_writer_free(w);
        return fm_fail(FM_ENOMEM, "writer: out of memory");
    }
    *out = w;
    return 0;
}

void fm_store_writer_free(fm_store_writer_t *w) {
    if (!w)
        return;
    free(w->buf);
    fm_rollup_deltas_free(w->open);
    fm_rollup_deltas_free(w->batch);
    for (int i = 0; i < w->nfrozen; i++)
        fm_rollup_deltas_free(w->frozen[i].one);
    free(w->frozen);
    free(w);
}

void fm_store_writer_set_db(fm_store_writer_t *w, fm_db_t *db) { w->db = db; }

int fm_store_writer_pending(const fm_store_writer_t *w) { return fm_rollup_deltas_count(w->open) + w->nfrozen; }

int fm_store_writer_pending_range(const fm_store_writer_t *w, int64_t *first_us, int64_t *last_us) {
    *first_us = *last_us = 0;
    int any = 0;
    for (int s = 0; s < 1 + w->nfrozen; s++) {
        const fm_rollup_deltas_t *d = s == 0 ? w->open : w->frozen[s - 1].one;
        for (int i = 0; i < fm_rollup_deltas_count(d); i++) {
            int64_t b;
            const char *v;
            const fm_pixel_hist_t *h;
            fm_rollup_deltas_get(d, i, &b, &v, &h, NULL);
            if (!any || b < *first_us)
                *first_us = b;
            if (!any || b > *last_us)
                *last_us = b;
            any = 1;
        }
    }
    return 0;
}

/* ---- Frozen deltas ------------------------------------------------------- */

/* A new frozen entry holding (b, v, h, ph) under `id` (a fresh one when NULL). */
static int add_frozen(fm_store_writer_t *w, const uint8_t *id, int64_t b, const char *v, const fm_pixel_hist_t *h,
                      const fm_pred_hist_t *ph) {
    if (w->nfrozen == w->capfrozen) {
        int cap = w->capfrozen ? 2 * w->capfrozen : 8;
        frozen_t *f = realloc(w->frozen, (size_t)cap * sizeof *f);
        if (!f)
            return fm_fail(FM_ENOMEM, "writer: out of memory for a rollup delta");
        w->frozen = f;
        w->capfrozen = cap;
    }
    frozen_t *f = &w->frozen[w->nfrozen];
    f->one = fm_rollup_deltas_new(1);
    if (!f->one)
        return fm_fail(FM_ENOMEM, "writer: out of memory for a rollup delta");
    int rc = fm_rollup_deltas_add_hist(f->one, b, v, h, ph);
    if (rc) {
        fm_rollup_deltas_free(f->one);
        return rc;
    }
    if (id)
        memcpy(f->id, id, FM_UUID_BYTES);
    else
        fm_uuid7_new(f->id);
    w->nfrozen++;
    return 0;
}

static void drop_frozen(fm_store_writer_t *w, int i) {
    fm_rollup_deltas_free(w->frozen[i].one);
    w->frozen[i] = w->frozen[--w->nfrozen];
}

/* Moves the open deltas that `max_ts` closes (all of them when `all`) into
 * the frozen list. In memory only: it does not depend on any commit. */
static int freeze_closed(fm_store_writer_t *w, int64_t max_ts, int all) {
    for (int i = fm_rollup_deltas_count(w->open) - 1; i >= 0; i--) {
        int64_t b;
        const char *v;
        const fm_pixel_hist_t *h;
        const fm_pred_hist_t *ph;
        fm_rollup_deltas_get(w->open, i, &b, &v, &h, &ph);
        if (!all && !closed(b, max_ts))
            continue;
        int rc = add_frozen(w, NULL, b, v, h, ph);
        if (rc)
            return rc;
        fm_rollup_deltas_remove(w->open, i);
    }
    return 0;
}

/* Counts committed rows' deltas into the open buckets; a delta that does
 * not fit there (more than FM_STORE_MAX_OPEN pairs) is frozen at once. */
static void add_open(fm_store_writer_t *w, int64_t b, const char *v, const fm_pixel_hist_t *h,
                     const fm_pred_hist_t *ph) {
    int rc = fm_rollup_deltas_add_hist(w->open, b, v, h, ph);
    if (rc == FM_EOVERLOADED)
        rc = add_frozen(w, NULL, b, v, h, ph);
    if (rc) /* the rows are committed; only the rollups lack them */
        fm_error("store", "rollup counts of bucket %lld for %s lost (%s); run fm_rollup_rebuild() over it",
                 (long long)b, v, fm_last_error());
}

/* Inserts `id` into ingested_batches: *fresh = 1 when it was not there. */
static int guard(fm_db_t *db, const uint8_t id[FM_UUID_BYTES], const char *kind, long long rows, int *fresh) {
    char idtext[FM_UUID_TEXT_LEN + 1], n[24];
    fm_uuid_format(id, idtext);
    snprintf(n, sizeof n, "%lld", rows > 0x7fffffff ? 0x7fffffffLL : rows);
    const char *params[] = {idtext, kind, n};
    fm_db_result_t *r;
    int rc = fm_db_query(db,
                         "INSERT INTO ingested_batches (batch_id, kind, rows) VALUES ($1::uuid, $2, $3::integer) "
                         "ON CONFLICT DO NOTHING RETURNING 1",
                         3, params, &r);
    if (rc)
        return rc;
    *fresh = fm_db_result_rows(r) == 1;
    fm_db_result_free(r);
    return 0;
}

/* A delta to apply in the current transaction. */
typedef struct todo {
    int64_t b;
    const char *v;
    const fm_pixel_hist_t *h;
    const fm_pred_hist_t *ph;
} todo_t;

static int cmp_todo(const void *x, const void *y) {
    const todo_t *a = x, *b = y;
    if (a->b != b->b)
        return a->b < b->b ? -1 : 1;
    return strcmp(a->v, b->v);
}

/* Inside the open transaction: guards every frozen delta's id at once, then
 * applies the frozen deltas not applied before and the batch's own closed
 * ones (`batch` NULL: none) in one order shared by every writer, (bucket,
 * version) ascending, so that two writers' transactions take the same
 * rollup rows in the same order and cannot deadlock. Memory is left as it
 * is until the commit is confirmed. */
static int apply_deltas(fm_store_writer_t *w, const fm_rollup_deltas_t *batch, int64_t batch_max) {
    int nb = batch ? fm_rollup_deltas_count(batch) : 0;
    if (w->nfrozen == 0 && nb == 0)
        return 0;
    todo_t *todo = malloc((size_t)(w->nfrozen + nb + 1) * sizeof *todo);
    if (!todo)
        return fm_fail(FM_ENOMEM, "writer: out of memory");
    int n = 0, rc = 0;
    for (int i = 0; i < nb; i++) {
        todo_t *t = &todo[n];
        fm_rollup_deltas_get(batch, i, &t->b, &t->v, &t->h, &t->ph);
        n += closed(t->b, batch_max);
    }
    fm_db_result_t *r = NULL;
    if (w->nfrozen) {
        size_t cap = (size_t)w->nfrozen * (FM_UUID_TEXT_LEN + 24) + 8;
        char *ids = malloc(cap), *counts = malloc(cap);
        if (!ids || !counts) {
            free(ids);
            free(counts);
            free(todo);
            return fm_fail(FM_ENOMEM, "writer: out of memory");
        }
        size_t li = 0, lc = 0;
        ids[li++] = '{';
        counts[lc++] = '{';
        for (int i = 0; i < w->nfrozen; i++) {
            int64_t b;
            const char *v;
            const fm_pixel_hist_t *h;
            const fm_pred_hist_t *ph;
            fm_rollup_deltas_get(w->frozen[i].one, 0, &b, &v, &h, &ph);
            char t[FM_UUID_TEXT_LEN + 1];
            fm_uuid_format(w->frozen[i].id, t);
            li += (size_t)snprintf(ids + li, cap - li, "%s%s", i ? "," : "", t);
            unsigned long long np = ph->predictions > 0x7fffffff ? 0x7fffffff : ph->predictions;
            lc += (size_t)snprintf(counts + lc, cap - lc, "%s%llu", i ? "," : "", np);
        }
        snprintf(ids + li, cap - li, "}");
        snprintf(counts + lc, cap - lc, "}");
        const char *params[] = {ids, counts};
        rc = fm_db_query(w->db,
                         "INSERT INTO ingested_batches (batch_id, kind, rows) SELECT u.id, 'rollup', u.n "
                         "FROM unnest($1::uuid[], $2::integer[]) AS u(id, n) ON CONFLICT DO NOTHING "
                         "RETURNING batch_id::text",
                         2, params, &r);
        free(ids);
        free(counts);
        for (int i = 0; rc == 0 && i < w->nfrozen; i++) {
            char t[FM_UUID_TEXT_LEN + 1];
            fm_uuid_format(w->frozen[i].id, t);
            int fresh = 0;
            for (int j = 0; j < fm_db_result_rows(r) && !fresh; j++)
                fresh = strcmp(fm_db_result_value(r, j, 0), t) == 0;
            if (fresh) {
                todo_t *td = &todo[n++];
                fm_rollup_deltas_get(w->frozen[i].one, 0, &td->b, &td->v, &td->h, &td->ph);
            }
        }
    }
    qsort(todo, (size_t)n, sizeof *todo, cmp_todo);
    for (int i = 0; rc == 0 && i < n; i++)
        rc = apply_one(w->db, todo[i].b, todo[i].v, todo[i].h, todo[i].ph);
    fm_db_result_free(r);
    free(todo);
    if (rc)
        rc = fm_fail(rc, "applying rollup deltas: %s", fm_last_error());
    return rc;
}

static int rollback(fm_store_writer_t *w, int rc) {
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", fm_last_error());
    fm_db_exec(w->db, "ROLLBACK");
    return fm_fail(rc, "%s", detail);
}

/* One transaction that applies the frozen deltas; they are forgotten once
 * it commits. */
static int apply_frozen_tx(fm_store_writer_t *w) {
    if (w->nfrozen == 0)
        return 0;
    int rc = fm_db_exec(w->db, "BEGIN");
    if (rc)
        return rc;
    rc = apply_deltas(w, NULL, 0);
    if (rc == 0)
        rc = fm_db_exec(w->db, "COMMIT");
    if (rc)
        return rollback(w, rc);
    while (w->nfrozen)
        drop_frozen(w, w->nfrozen - 1);
    return 0;
}

/* ---- Rows ---------------------------------------------------------------- */

/* Sends buf[0..len) when less than `room` bytes remain free. */
static int maybe_send(fm_store_writer_t *w, size_t *len, size_t room) {
    if (CHUNK - *len >= room)
        return 0;
    int rc = fm_db_copy_put(w->db, w->buf, *len);
    *len = 0;
    return rc;
}

static int copy_predictions(fm_store_writer_t *w, const fm_prediction_row_t *preds, size_t n) {
    int rc = fm_db_copy_begin(w->db, w->binary ? FM_ROWS_PREDICTIONS_COPY_BINARY : FM_ROWS_PREDICTIONS_COPY);
    if (rc)
        return rc;
    size_t len = w->binary ? fm_rows_binary_header(w->buf) : 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        int k = w->binary ? fm_rows_prediction_binary(w->buf + len, CHUNK - len, &preds[i])
                          : fm_rows_prediction((char *)w->buf + len, CHUNK - len, &preds[i]);
        if (k < 0) {
            rc = fm_fail(k, "prediction %zu: %s", i, fm_last_error());
            break;
        }
        len += (size_t)k;
        rc = maybe_send(w, &len, FM_ROWS_PREDICTION_MAX + FM_ROWS_BINARY_TRAILER_LEN);
    }
    if (rc == 0 && w->binary)
        len += fm_rows_binary_trailer(w->buf + len);
    if (rc == 0 && len)
        rc = fm_db_copy_put(w->db, w->buf, len);
    int erc = fm_db_copy_end(w->db);
    return rc ? rc : erc;
}

static int copy_sampled(fm_store_writer_t *w, const fm_prediction_row_t *preds, size_t n,
                        const uint8_t *const *images) {
    int rc = fm_db_copy_begin(w->db, w->binary ? FM_ROWS_SAMPLED_COPY_BINARY : FM_ROWS_SAMPLED_COPY);
    if (rc)
        return rc;
    size_t len = w->binary ? fm_rows_binary_header(w->buf) : 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (!images[i])
            continue;
        const fm_prediction_row_t *p = &preds[i];
        double f[FM_PIXEL_FEATURES];
        fm_pixel_features(images[i], f);
        int k = w->binary ? fm_rows_sampled_binary(w->buf + len, CHUNK - len, p->request_id, p->image_index,
                                                   p->ts_us, p->model_version, images[i], f)
                          : fm_rows_sampled((char *)w->buf + len, CHUNK - len, p->request_id, p->image_index,
                                            p->ts_us, p->model_version, images[i], f);
        if (k < 0) {
            rc = fm_fail(k, "sampled input %zu: %s", i, fm_last_error());
            break;
        }
        len += (size_t)k;
        rc = maybe_send(w, &len, FM_ROWS_SAMPLED_MAX + FM_ROWS_BINARY_TRAILER_LEN);
    }
    if (rc == 0 && w->binary)
        len += fm_rows_binary_trailer(w->buf + len);
    if (rc == 0 && len)
        rc = fm_db_copy_put(w->db, w->buf, len);
    int erc = fm_db_copy_end(w->db);
    return rc ? rc : erc;
}

/* The batch's own deltas into w->batch (pure computation). */
static int batch_deltas(fm_store_writer_t *w, const fm_prediction_row_t *preds, size_t n,
                        const uint8_t *const *images) {
    fm_rollup_deltas_clear(w->batch);
    for (size_t i = 0; i < n; i++) {
        int rc = fm_rollup_deltas_add_prediction(w->batch, preds[i].ts_us, preds[i].model_version, preds[i].label,
                                                 preds[i].confidence);
        if (rc == 0 && images && images[i])
            rc = fm_rollup_deltas_add(w->batch, preds[i].ts_us, preds[i].model_version, images[i]);
        if (rc)
            return fm_fail(rc, "prediction %zu: %s", i, fm_last_error());
    }
    return 0;
}

int fm_store_writer_write_batch(fm_store_writer_t *w, const uint8_t id[FM_UUID_BYTES],
                                const fm_prediction_row_t *preds, size_t n, const uint8_t *const *images,
                                int *duplicate) {
    if (duplicate)
        *duplicate = 0;
    if (n == 0)
        return 0;
    int64_t batch_max = INT64_MIN;
    for (size_t i = 0; i < n; i++)
        if (preds[i].ts_us > batch_max)
            batch_max = preds[i].ts_us;
    int64_t max_ts = batch_max > w->max_ts_us ? batch_max : w->max_ts_us;
    int rc = batch_deltas(w, preds, n, images);
    if (rc)
        return rc;
    /* Open buckets this batch closes are frozen now, whatever the outcome;
     * so are all of them when the batch's still-open buckets would not fit
     * beside them. */
    int newkeys = 0;
    for (int i = 0; i < fm_rollup_deltas_count(w->batch); i++) {
        int64_t b;
        const char *v;
        const fm_pixel_hist_t *h;
        fm_rollup_deltas_get(w->batch, i, &b, &v, &h, NULL);
        newkeys += !closed(b, batch_max);
    }
    if ((rc = freeze_closed(w, max_ts, fm_rollup_deltas_count(w->open) + newkeys > FM_STORE_MAX_OPEN)) != 0)
        return rc;

    int any = 0;
    for (size_t i = 0; images && i < n && !any; i++)
        any = images[i] != NULL;
    int fresh = 1;
    if ((rc = fm_db_exec(w->db, "BEGIN")) != 0)
        return rc;
    if (id)
        rc = guard(w->db, id, "predictions", (long long)n, &fresh);
    if (rc == 0 && fresh)
        rc = copy_predictions(w, preds, n);
    if (rc == 0 && fresh && any)
        rc = copy_sampled(w, preds, n, images);
    /* The buckets the batch's own newest row closes are applied with it
     * (with the frozen deltas): which ones is a function of the batch
     * alone, so a duplicate found later knows they are in. */
    if (rc == 0)
        rc = apply_deltas(w, fresh ? w->batch : NULL, batch_max);
    if (rc == 0)
        rc = fm_db_exec(w->db, "COMMIT");
    if (rc) {
        fm_rollup_deltas_clear(w->batch);
        return rollback(w, rc);
    }
    /* Committed (or committed before): forget the applied deltas, count the
     * rest of the batch in its open buckets. */
    while (w->nfrozen)
        drop_frozen(w, w->nfrozen - 1);
    for (int i = 0; i < fm_rollup_deltas_count(w->batch); i++) {
        int64_t b;
        const char *v;
        const fm_pixel_hist_t *h;
        const fm_pred_hist_t *ph;
        fm_rollup_deltas_get(w->batch, i, &b, &v, &h, &ph);
        if (!closed(b, batch_max))
            add_open(w, b, v, h, ph);
    }
    fm_rollup_deltas_clear(w->batch);
    w->max_ts_us = max_ts;
    if (duplicate)
        *duplicate = !fresh;
    return 0;
}

int fm_store_writer_write(fm_store_writer_t *w, const fm_prediction_row_t *preds, size_t n,
                          const uint8_t *const *images) {
    return fm_store_writer_write_batch(w, NULL, preds, n, images, NULL);
}

int fm_store_writer_flush(fm_store_writer_t *w) {
    int rc = freeze_closed(w, 0, 1);
    return rc ? rc : apply_frozen_tx(w);
}

int fm_store_writer_flush_closed(fm_store_writer_t *w, int64_t now_us) {
    int rc = freeze_closed(w, now_us > w->max_ts_us ? now_us : w->max_ts_us, 0);
    return rc ? rc : apply_frozen_tx(w);
}

int fm_store_writer_take_deltas(fm_store_writer_t *w, fm_store_delta_fn take, void *ctx) {
    int rc = freeze_closed(w, 0, 1);
    for (int i = w->nfrozen - 1; rc == 0 && i >= 0; i--) {
        int64_t b;
        const char *v;
        const fm_pixel_hist_t *h;
        const fm_pred_hist_t *ph;
        fm_rollup_deltas_get(w->frozen[i].one, 0, &b, &v, &h, &ph);
        if ((rc = take(ctx, w->frozen[i].id, b, v, h, ph)) == 0)
            drop_frozen(w, i);
    }
    return rc;
}

int fm_store_writer_apply_delta(fm_store_writer_t *w, const uint8_t id[FM_UUID_BYTES], int64_t bucket_start_us,
                                const char *model_version, const fm_pixel_hist_t *hist, const fm_pred_hist_t *pred,
                                int *duplicate) {
    *duplicate = 0;
    int fresh = 0;
    int rc = fm_db_exec(w->db, "BEGIN");
    if (rc)
        return rc;
    rc = guard(w->db, id, "rollup", pred ? (long long)pred->predictions : 0, &fresh);
    if (rc == 0 && fresh)
        rc = apply_one(w->db, bucket_start_us, model_version, hist, pred);
    if (rc == 0)
        rc = fm_db_exec(w->db, "COMMIT");
    if (rc)
        return rollback(w, rc);
    *duplicate = !fresh;
    return 0;
}

/* ---- Feedback ------------------------------------------------------------ */

/* Appends s as a double-quoted array element (backslash and quote escaped). */
static size_t quoted(char *dst, const char *s) {
    size_t k = 0;
    dst[k++] = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            dst[k++] = '\\';
        dst[k++] = *s;
    }
    dst[k++] = '"';
    return k;
}

int fm_store_writer_feedback(fm_store_writer_t *w, const uint8_t id[FM_UUID_BYTES], const fm_feedback_row_t *rows,
                             size_t n, int *duplicate) {
    *duplicate = 0;
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (rows[i].image_index < 0 || rows[i].image_index > 32767 || rows[i].label < 0 || rows[i].label > 9 ||
            (rows[i].source && strlen(rows[i].source) > FM_FEEDBACK_SOURCE_MAX))
            return fm_fail(FM_EINVAL, "feedback row %zu: image_index %d, label %d or source out of range", i,
                           rows[i].image_index, rows[i].label);
    /* Five array literals; the sources may need every byte escaped. */
    size_t cap = n * (FM_UUID_TEXT_LEN + 8 + 8 + 40 + 2 * FM_FEEDBACK_SOURCE_MAX + 8) + 64;
    char *a[5];
    size_t len[5] = {0};
    for (int k = 0; k < 5; k++)
        a[k] = malloc(cap);
    int rc = 0;
    if (!a[0] || !a[1] || !a[2] || !a[3] || !a[4]) {
        rc = fm_fail(FM_ENOMEM, "writer: out of memory for feedback");
        goto out;
    }
    for (int k = 0; k < 5; k++)
        a[k][len[k]++] = '{';
    for (size_t i = 0; i < n; i++) {
        const fm_feedback_row_t *f = &rows[i];
        const char *sep = i ? "," : "";
        char t[FM_UUID_TEXT_LEN + 1], ts[40];
        fm_uuid_format(f->request_id, t);
        fm_rows_timestamp(ts, sizeof ts, f->received_us);
        len[0] += (size_t)sprintf(a[0] + len[0], "%s%s", sep, t);
        len[1] += (size_t)sprintf(a[1] + len[1], "%s%d", sep, f->image_index);
        len[2] += (size_t)sprintf(a[2] + len[2], "%s%d", sep, f->label);
        len[3] += (size_t)sprintf(a[3] + len[3], "%s\"%s\"", sep, ts);
        len[4] += (size_t)sprintf(a[4] + len[4], "%s", sep);
        if (f->source)
            len[4] += quoted(a[4] + len[4], f->source);
        else
            len[4] += (size_t)sprintf(a[4] + len[4], "NULL");
    }
    for (int k = 0; k < 5; k++) {
        a[k][len[k]++] = '}';
        a[k][len[k]] = '\0';
    }
    int fresh = 0;
    if ((rc = fm_db_exec(w->db, "BEGIN")) != 0)
        goto out;
    rc = guard(w->db, id, "feedback", (long long)n, &fresh);
    if (rc == 0 && fresh) {
        const char *params[] = {a[0], a[1], a[2], a[3], a[4]};
        rc = fm_db_query(w->db,
                         "SELECT fm_feedback_ingest($1::uuid[], $2::smallint[], $3::smallint[], $4::timestamptz[], "
                         "$5::text[])",
                         5, params, NULL);
    }
    if (rc == 0)
        rc = fm_db_exec(w->db, "COMMIT");
    if (rc) {
        rc = rollback(w, rc);
        goto out;
    }
    *duplicate = !fresh;
out:
    for (int k = 0; k < 5; k++)
        free(a[k]);
    return rc;
}
