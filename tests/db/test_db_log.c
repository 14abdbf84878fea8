/* test_db_log.c: the prediction log as a writer fills it. Rows sent in the
 * text and binary COPY formats come back exactly; the C summary features
 * equal their SQL twin bit for bit; the rollups the writer maintains equal
 * what SQL recomputes from the raw rows, before and after compaction and
 * after a rebuild; buckets are applied when they close; a failed batch
 * leaves nothing behind; bad deltas and rows are refused; feedback works. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "dbtest.h"
#include "fm_db.h"
#include "fm_idx.h"
#include "fm_pixel_stats.h"
#include "fm_rows.h"
#include "fm_store_sync.h"
#include "fm_test.h"

#define MINUTE_US (60LL * 1000000LL)
/* 2026-01-01 00:00:00 UTC: a minute boundary. */
#define T0_US 1767225600000000LL

#define OPEN_DB(name, db, url)                                                  \
    do {                                                                        \
        int rc_ = dbtest_open(name, &(db), url, sizeof url);                    \
        if (rc_ == FM_EUNSUPPORTED) {                                           \
            static char why_[1024];                                             \
            snprintf(why_, sizeof why_, "no PostgreSQL: %s", fm_last_error()); \
            FM_TEST_SKIP(why_);                                                 \
        }                                                                       \
        FM_REQUIRE_OK(rc_);                                                     \
    } while (0)

/* Request ids are UUIDv7s; the tests number theirs: id n is the UUIDv7 of
 * T0's millisecond with n in its last bits, so ids sort as their numbers. */
static void set_id(uint8_t out[FM_UUID_BYTES], int64_t n) { fm_uuid7_make(T0_US / 1000, 0, (uint64_t)n, out); }

static const char *id_text(int64_t n) {
    static char text[4][FM_UUID_TEXT_LEN + 1];
    static int turn;
    uint8_t id[FM_UUID_BYTES];
    set_id(id, n);
    char *t = text[turn++ % 4];
    fm_uuid_format(id, t);
    return t;
}

/* A deterministic prediction for row i. */
static void make_row(fm_prediction_row_t *r, int64_t id, int64_t ts_us, const char *version, int i) {
    memset(r, 0, sizeof *r);
    set_id(r->request_id, id);
    r->image_index = i % 3;
    r->ts_us = ts_us;
    r->role = i % 4 == 0 ? FM_ROLE_CANARY : FM_ROLE_STABLE;
    r->model_version = version;
    r->route = (fm_route_t)(i % 3);
    r->label = (i * 7) % 10;
    float rest = 0;
    for (int k = 0; k < 10; k++) {
        r->probs[k] = (float)((i + 1) * (k + 3) % 97) / 1000.0f;
        rest += r->probs[k];
    }
    r->probs[r->label] += 1.0f - rest;
    r->confidence = r->probs[r->label];
    r->queue_us = 100 + i;
    r->compute_us = 2000 + 3 * i;
    r->total_us = r->queue_us + r->compute_us + 7;
}

static void roundtrip(int binary) {
    fm_db_t *db;
    char url[512];
    OPEN_DB(binary ? "log_binary" : "log_text", db, url);
    const fm_dataset_t *ds = dbtest_fixture_images();
    FM_REQUIRE(ds);
    /* A version with every character COPY text must escape. */
    const char *version = "v1\\tab\there\nnew\rline-é";
    enum { N = 300 };
    fm_prediction_row_t rows[N];
    const uint8_t *imgs[N];
    for (int i = 0; i < N; i++) {
        make_row(&rows[i], 1000 + i / 3, T0_US + (int64_t)i * 123457, version, i);
        imgs[i] = i % 5 == 0 ? ds->images + (size_t)i * 784 : NULL;
    }
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, binary, &w));
    FM_REQUIRE_OK(fm_store_writer_write(w, rows, N, imgs));
    FM_REQUIRE_OK(fm_store_writer_flush(w));
    fm_store_writer_free(w);

    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db,
                              "SELECT request_id, image_index, (extract(epoch FROM ts) * 1000000)::bigint, model_role, "
                              "model_version, route, label, confidence::float8, probs::float8[]::text, queue_us, "
                              "compute_us, total_us FROM predictions ORDER BY request_id, image_index",
                              0, NULL, &r));
    FM_REQUIRE(fm_db_result_rows(r) == N);
    for (int i = 0; i < N; i++) {
        const fm_prediction_row_t *x = &rows[i];
        int64_t v;
        double d;
        char idt[FM_UUID_TEXT_LEN + 1];
        fm_uuid_format(x->request_id, idt);
        FM_CHECK_STR(fm_db_result_value(r, i, 0), idt);
        fm_db_result_int64(r, i, 1, &v);
        FM_CHECK_EQ(v, x->image_index);
        fm_db_result_int64(r, i, 2, &v);
        FM_CHECK_EQ(v, x->ts_us);
        FM_CHECK_STR(fm_db_result_value(r, i, 3), fm_model_role_name(x->role));
        FM_CHECK_STR(fm_db_result_value(r, i, 4), version);
        FM_CHECK_STR(fm_db_result_value(r, i, 5), fm_rows_route_name(x->route));
        fm_db_result_int64(r, i, 6, &v);
        FM_CHECK_EQ(v, x->label);
        fm_db_result_double(r, i, 7, &d);
        FM_CHECK(d == (double)x->confidence); /* float4 exactly */
        char probs[512];
        size_t len = (size_t)snprintf(probs, sizeof probs, "{");
        for (int k = 0; k < 10; k++)
            len += (size_t)snprintf(probs + len, sizeof probs - len, k ? ",%.17g" : "%.17g", (double)x->probs[k]);
        snprintf(probs + len, sizeof probs - len, "}");
        /* PostgreSQL prints float8 with the shortest exact form; compare values. */
        const char *got = fm_db_result_value(r, i, 8);
        const char *p = got + 1;
        for (int k = 0; k < 10; k++) {
            char *end;
            double pv = strtod(p, &end);
            if (pv != (double)x->probs[k])
                FM_TEST_FAIL_AT("row %d probs[%d]: %s", i, k, got);
            p = end + 1;
        }
        fm_db_result_int64(r, i, 9, &v);
        FM_CHECK_EQ(v, x->queue_us);
        fm_db_result_int64(r, i, 10, &v);
        FM_CHECK_EQ(v, x->compute_us);
        fm_db_result_int64(r, i, 11, &v);
        FM_CHECK_EQ(v, x->total_us);
    }
    fm_db_result_free(r);

    FM_REQUIRE_OK(fm_db_query(db,
                              "SELECT request_id, image_index, encode(pixels, 'hex'), mean_intensity, std_intensity, "
                              "nonzero_share, bright_share, centroid_row, centroid_col, "
                              "(extract(epoch FROM ts) * 1000000)::bigint FROM sampled_inputs "
                              "ORDER BY request_id, image_index",
                              0, NULL, &r));
    FM_REQUIRE(fm_db_result_rows(r) == N / 5);
    for (int j = 0; j < N / 5; j++) {
        int i = j * 5;
        int64_t v;
        char idt[FM_UUID_TEXT_LEN + 1];
        fm_uuid_format(rows[i].request_id, idt);
        FM_CHECK_STR(fm_db_result_value(r, j, 0), idt);
        char hex[2 * 784 + 1];
        for (int k = 0; k < 784; k++)
            sprintf(hex + 2 * k, "%02x", imgs[i][k]);
        FM_CHECK_STR(fm_db_result_value(r, j, 2), hex);
        double f[FM_PIXEL_FEATURES];
        fm_pixel_features(imgs[i], f);
        for (int k = 0; k < FM_PIXEL_FEATURES; k++) {
            double d;
            fm_db_result_double(r, j, 3 + k, &d);
            if (d != f[k])
                FM_TEST_FAIL_AT("image %d %s: %.17g stored, %.17g computed", i, fm_pixel_feature_names[k], d, f[k]);
        }
        fm_db_result_int64(r, j, 9, &v);
        FM_CHECK_EQ(v, rows[i].ts_us);
    }
    fm_db_result_free(r);
    fm_db_close(db);
}

static void test_rows_text(void) { roundtrip(0); }
static void test_rows_binary(void) { roundtrip(1); }

static void test_features_c_equal_sql(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_features", db, url);
    const fm_dataset_t *ds = dbtest_fixture_images();
    FM_REQUIRE(ds);
    /* The fixtures plus the edge cases: black, white, one lit pixel. */
    enum { EXTRA = 3 };
    size_t n = ds->n + EXTRA;
    uint8_t *all = calloc(n, 784);
    FM_REQUIRE(all);
    memcpy(all, ds->images, ds->n * 784);
    memset(all + (ds->n + 1) * 784, 255, 784);
    all[(ds->n + 2) * 784 + 30] = 200;
    /* Compared as the bit patterns of the doubles. */
    FM_REQUIRE_OK(fm_db_exec(db, "CREATE TEMP TABLE img (i int, px bytea)"));
    FM_REQUIRE_OK(fm_db_copy_begin(db, "COPY img FROM STDIN"));
    char *line = malloc(2 * 784 + 64);
    for (size_t i = 0; i < n; i++) {
        int len = sprintf(line, "%zu\t\\\\x", i);
        for (int k = 0; k < 784; k++)
            len += sprintf(line + len, "%02x", all[i * 784 + k]);
        line[len++] = '\n';
        FM_REQUIRE_OK(fm_db_copy_put(db, line, (size_t)len));
    }
    free(line);
    FM_REQUIRE_OK(fm_db_copy_end(db));
    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db,
                              "SELECT f.mean_intensity, f.std_intensity, f.nonzero_share, f.bright_share, f.centroid_row, "
                              "f.centroid_col FROM img, fm_image_features(img.px) AS f ORDER BY img.i",
                              0, NULL, &r));
    FM_REQUIRE(fm_db_result_rows(r) == (int)n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double f[FM_PIXEL_FEATURES];
        fm_pixel_features(all + i * 784, f);
        for (int k = 0; k < FM_PIXEL_FEATURES; k++) {
            double d = NAN;
            fm_db_result_double(r, (int)i, k, &d);
            if (memcmp(&d, &f[k], sizeof d) != 0 && bad++ < 5)
                FM_TEST_FAIL_AT("image %zu %s: SQL %.17g, C %.17g", i, fm_pixel_feature_names[k], d, f[k]);
        }
    }
    fm_db_result_free(r);
    /* The edge cases' values, by hand. */
    double f[FM_PIXEL_FEATURES];
    fm_pixel_features(all + ds->n * 784, f);
    FM_CHECK(f[0] == 0 && f[1] == 0 && f[2] == 0 && f[4] == 13.5 && f[5] == 13.5);
    fm_pixel_features(all + (ds->n + 1) * 784, f);
    FM_CHECK(f[0] == 255 && f[1] == 0 && f[2] == 1 && f[3] == 1 && f[4] == 13.5 && f[5] == 13.5);
    fm_pixel_features(all + (ds->n + 2) * 784, f);
    FM_CHECK(f[4] == 1 && f[5] == 2 && f[3] == 1.0 / 784);
    free(all);
    fm_db_close(db);
}

/* Compares the rollup view of [s, e) with the recomputation from raw rows. */
static void check_rollups_equal_raw(fm_db_t *db, const char *s, const char *e, const char *version) {
    const char *p[] = {s, e, version};
    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db,
                              "WITH w AS MATERIALIZED (SELECT * FROM fm_pixel_hist_window($1, $2, $3)), "
                              "x AS MATERIALIZED (SELECT * FROM fm_pixel_hist_recompute($1, $2, $3)) "
                              "SELECT (SELECT count(*) FROM (SELECT * FROM w EXCEPT SELECT * FROM x) AS a), "
                              "(SELECT count(*) FROM (SELECT * FROM x EXCEPT SELECT * FROM w) AS b), "
                              "(SELECT count(*) FROM w), "
                              "(SELECT row(pw.*)::text = row(px.*)::text FROM fm_prediction_hist_window($1, $2, $3) AS pw, "
                              "  fm_prediction_hist_recompute($1, $2, $3) AS px), "
                              "(SELECT coalesce(sum(images), 0) FROM rollup_buckets WHERE bucket_start >= $1 AND "
                              "  bucket_start < $2 AND ($3::text IS NULL OR model_version = $3)), "
                              "(SELECT count(*) FROM sampled_inputs WHERE ts >= $1 AND ts < $2 AND "
                              "  ($3::text IS NULL OR model_version = $3))",
                              3, p, &r));
    int64_t only_rollup, only_raw, pixels, imgs, raw_imgs;
    fm_db_result_int64(r, 0, 0, &only_rollup);
    fm_db_result_int64(r, 0, 1, &only_raw);
    fm_db_result_int64(r, 0, 2, &pixels);
    fm_db_result_int64(r, 0, 4, &imgs);
    fm_db_result_int64(r, 0, 5, &raw_imgs);
    FM_CHECK_EQ(only_rollup, 0);
    FM_CHECK_EQ(only_raw, 0);
    FM_CHECK_EQ(pixels, 784);
    FM_CHECK_STR(fm_db_result_value(r, 0, 3), "t");
    FM_CHECK_EQ(imgs, raw_imgs);
    fm_db_result_free(r);
}

/* Logs `minutes` minutes of traffic for two versions, every 7th image sampled. */
static void log_traffic(fm_db_t *db, int minutes, int per_minute, int64_t first_id) {
    const fm_dataset_t *ds = dbtest_fixture_images();
    FM_REQUIRE(ds);
    size_t n = (size_t)minutes * per_minute * 2;
    fm_prediction_row_t *rows = calloc(n, sizeof *rows);
    const uint8_t **imgs = calloc(n, sizeof *imgs);
    FM_REQUIRE(rows && imgs);
    for (size_t i = 0; i < n; i++) {
        const char *v = i % 2 ? "v2" : "v1";
        make_row(&rows[i], first_id + (int64_t)(i / 3), T0_US + (int64_t)(i / 2) * (MINUTE_US / per_minute), v, (int)i);
        imgs[i] = i % 7 == 0 ? ds->images + (i % ds->n) * 784 : NULL;
    }
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, 1, &w));
    for (size_t off = 0; off < n; off += 500)
        FM_REQUIRE_OK(fm_store_writer_write(w, rows + off, n - off < 500 ? n - off : 500, imgs + off));
    FM_REQUIRE_OK(fm_store_writer_flush(w));
    fm_store_writer_free(w);
    free(rows);
    free(imgs);
}

static void test_rollups_equal_raw(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_rollups", db, url);
    log_traffic(db, 5, 200, 1);
    const char *s = "2026-01-01 00:00:00+00", *e = "2026-01-01 00:05:00+00";
    check_rollups_equal_raw(db, s, e, "v1");
    check_rollups_equal_raw(db, s, e, "v2");
    check_rollups_equal_raw(db, s, e, NULL);
    check_rollups_equal_raw(db, "2026-01-01 00:01:00+00", "2026-01-01 00:03:00+00", "v1");
    int64_t buckets = 0;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM rollup_buckets", &buckets));
    FM_CHECK_EQ(buckets, 10);

    /* Compaction into hours keeps every count and leaves one bucket per
     * version; windows inside the hour widen to it. */
    int64_t merged = 0;
    FM_REQUIRE_OK(dbtest_query_int(db, "SELECT fm_rollup_compact('1 hour', '0 s', '2026-01-02')", &merged));
    FM_CHECK_EQ(merged, 10);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM rollup_buckets", &buckets));
    FM_CHECK_EQ(buckets, 2);
    check_rollups_equal_raw(db, "2026-01-01 00:00:00+00", "2026-01-01 01:00:00+00", "v1");
    check_rollups_equal_raw(db, "2026-01-01 00:00:00+00", "2026-01-01 01:00:00+00", NULL);
    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db, "SELECT window_start = '2026-01-01 00:00+00', window_end = '2026-01-01 01:00+00' "
                                  "FROM fm_window_buckets('2026-01-01 00:10+00', '2026-01-01 00:20+00', 'v1')",
                              0, NULL, &r));
    FM_CHECK_STR(fm_db_result_value(r, 0, 0), "t");
    FM_CHECK_STR(fm_db_result_value(r, 0, 1), "t");
    fm_db_result_free(r);
    /* Nothing left to compact: a second run merges nothing. */
    FM_CHECK_OK(dbtest_query_int(db, "SELECT fm_rollup_compact('1 hour', '0 s', '2026-01-02')", &merged));
    FM_CHECK_EQ(merged, 0);
    /* Late data for the compacted hour merges into it on the next run. */
    log_traffic(db, 1, 50, 1000000);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT fm_rollup_compact('1 hour', '0 s', '2026-01-02')", &merged));
    FM_CHECK_EQ(merged, 2);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM rollup_buckets", &buckets));
    FM_CHECK_EQ(buckets, 2);
    check_rollups_equal_raw(db, "2026-01-01 00:00:00+00", "2026-01-01 01:00:00+00", NULL);

    /* A rebuild from the raw rows gives the same numbers again. */
    FM_CHECK_ERR(fm_db_exec(db, "SELECT fm_rollup_rebuild('2026-01-01 00:00+00', '2026-01-01 00:05+00')"), FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "cuts through a compacted bucket");
    FM_REQUIRE_OK(dbtest_query_int(db, "SELECT fm_rollup_rebuild('2026-01-01 00:00+00', '2026-01-01 01:00+00')",
                                   &merged));
    FM_CHECK_EQ(merged, 10);
    check_rollups_equal_raw(db, s, e, "v1");
    check_rollups_equal_raw(db, s, e, NULL);
    fm_db_close(db);
}

static void test_writer_applies_closed_buckets(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_close", db, url);
    const fm_dataset_t *ds = dbtest_fixture_images();
    FM_REQUIRE(ds);
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, 1, &w));
    fm_prediction_row_t rows[4];
    const uint8_t *imgs[4] = {ds->images, NULL, ds->images + 784, NULL};
    for (int i = 0; i < 4; i++)
        make_row(&rows[i], 100 + i, T0_US + i * 1000000LL, "v1", i);
    FM_REQUIRE_OK(fm_store_writer_write(w, rows, 4, imgs));
    int64_t b = -1;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM rollup_buckets", &b));
    FM_CHECK_EQ(b, 0); /* minute 0 is still open */
    FM_CHECK_EQ(fm_store_writer_pending(w), 1);
    /* A row 3 s into the next minute does not close minute 0 yet (5 s
     * grace); one 6 s in does. */
    make_row(&rows[0], 200, T0_US + MINUTE_US + 3000000LL, "v1", 0);
    FM_REQUIRE_OK(fm_store_writer_write(w, rows, 1, NULL));
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM rollup_buckets", &b));
    FM_CHECK_EQ(b, 0);
    make_row(&rows[0], 201, T0_US + MINUTE_US + 6000000LL, "v1", 1);
    FM_REQUIRE_OK(fm_store_writer_write(w, rows, 1, NULL));
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM rollup_buckets", &b));
    FM_CHECK_EQ(b, 1);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT images * 100 + predictions FROM rollup_buckets", &b));
    FM_CHECK_EQ(b, 2 * 100 + 4);
    FM_CHECK_EQ(fm_store_writer_pending(w), 1);
    FM_REQUIRE_OK(fm_store_writer_flush(w));
    FM_CHECK_EQ(fm_store_writer_pending(w), 0);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT sum(predictions) FROM rollup_buckets", &b));
    FM_CHECK_EQ(b, 6);
    check_rollups_equal_raw(db, "2026-01-01 00:00+00", "2026-01-01 00:02+00", "v1");
    fm_store_writer_free(w);
    fm_db_close(db);
}

static void test_writer_failed_batch_leaves_nothing(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_fail", db, url);
    const fm_dataset_t *ds = dbtest_fixture_images();
    FM_REQUIRE(ds);
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, 0, &w));
    fm_prediction_row_t rows[3];
    const uint8_t *imgs[3] = {ds->images, ds->images + 784, ds->images + 2 * 784};
    for (int i = 0; i < 3; i++)
        make_row(&rows[i], 10 + i, T0_US + i * 1000000LL, "v1", 0);
    FM_REQUIRE_OK(fm_store_writer_write(w, rows, 2, imgs));
    /* The same request id again: the primary key refuses the batch. */
    set_id(rows[2].request_id, 10);
    FM_CHECK_ERR(fm_store_writer_write(w, rows + 2, 1, imgs + 2), FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "predictions_pk");
    /* A bad row is refused before anything is sent. */
    set_id(rows[2].request_id, 12);
    rows[2].label = 12;
    FM_CHECK_ERR(fm_store_writer_write(w, rows + 2, 1, imgs + 2), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "label 12");
    rows[2].label = 3;
    FM_REQUIRE_OK(fm_store_writer_write(w, rows + 2, 1, imgs + 2));
    FM_REQUIRE_OK(fm_store_writer_flush(w));
    int64_t v = 0;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM predictions", &v));
    FM_CHECK_EQ(v, 3);
    check_rollups_equal_raw(db, "2026-01-01 00:00+00", "2026-01-01 00:01+00", "v1");
    fm_store_writer_free(w);

    /* Rows the server itself refuses name the constraint. */
    FM_REQUIRE_OK(fm_db_copy_begin(db, FM_ROWS_PREDICTIONS_COPY));
    const char *bad = "00000000-0000-7000-8000-000000000063\t0\t2026-01-01 00:00:00+00\tstable\tv1\tab\t11\t0.5\t{0,0,0,0,0,0,0,0,0,0}\t1\t1\t1\n";
    FM_CHECK_OK(fm_db_copy_put(db, bad, strlen(bad)));
    FM_CHECK_ERR(fm_db_copy_end(db), FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "predictions_label_ck");
    fm_db_close(db);
}

static void test_delta_apply_validation(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_deltas", db, url);
    FM_CHECK_ERR(fm_db_exec(db, "SELECT fm_pixel_delta_apply('v', '2026-01-01 00:00+00', 1, '{1,2,3}')"), FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "200704 counts, got 3");
    FM_CHECK_ERR(fm_db_exec(db, "SELECT fm_pixel_delta_apply('v', '2026-01-01 00:00:30+00', 1, "
                                "array_fill(0, ARRAY[200704]))"),
                 FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "is not a bucket start");
    FM_CHECK_ERR(fm_db_exec(db, "SELECT fm_prediction_delta_apply('v', '2026-01-01 00:00+00', 2, "
                                "'{1,0,0,0,0,0,0,0,0,0}', '{5000}', '{2}')"),
                 FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "must each sum to 2");
    FM_CHECK_ERR(fm_db_exec(db, "SELECT fm_prediction_delta_apply('v', '2026-01-01 00:00+00', 1, "
                                "'{1,0,0,0,0,0,0,0,0,0}', '{10001}', '{1}')"),
                 FM_EDB);
    /* Two deltas for the same bucket add up, sparse confidences merge. */
    FM_REQUIRE_OK(fm_db_exec(db, "SELECT fm_prediction_delta_apply('v', '2026-01-01 00:00+00', 3, "
                                 "'{1,2,0,0,0,0,0,0,0,0}', '{10,9999}', '{1,2}');"
                                 "SELECT fm_prediction_delta_apply('v', '2026-01-01 00:00+00', 2, "
                                 "'{0,1,0,0,0,0,0,0,0,1}', '{20,9999}', '{1,1}')"));
    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db, "SELECT predictions, class_counts::text, confidence_q::text, confidence_n::text "
                                  "FROM rollup_buckets",
                              0, NULL, &r));
    FM_CHECK_STR(fm_db_result_value(r, 0, 0), "5");
    FM_CHECK_STR(fm_db_result_value(r, 0, 1), "{1,3,0,0,0,0,0,0,0,1}");
    FM_CHECK_STR(fm_db_result_value(r, 0, 2), "{10,20,9999}");
    FM_CHECK_STR(fm_db_result_value(r, 0, 3), "{1,1,3}");
    fm_db_result_free(r);
    /* The C grid agrees with the SQL one, ties to even included. */
    FM_CHECK_EQ(fm_confidence_q(0.5f), 5000);
    FM_CHECK_EQ(fm_confidence_q(1.0f), 10000);
    FM_CHECK_EQ(fm_confidence_q(0.0f), 0);
    FM_REQUIRE_OK(fm_db_query(db, "SELECT fm_confidence_q(0.12345::real), fm_confidence_q(0.00005::float8), "
                                  "fm_confidence_q(0.00015::float8)",
                              0, NULL, &r));
    int64_t q;
    fm_db_result_int64(r, 0, 0, &q);
    FM_CHECK_EQ(q, fm_confidence_q(0.12345f));
    fm_db_result_int64(r, 0, 1, &q);
    FM_CHECK_EQ(q, (int64_t)nearbyint(0.00005 * 10000));
    fm_db_result_int64(r, 0, 2, &q);
    FM_CHECK_EQ(q, (int64_t)nearbyint(0.00015 * 10000));
    fm_db_result_free(r);
    fm_db_close(db);
}

static void test_feedback(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_feedback", db, url);
    fm_prediction_row_t rows[4];
    for (int i = 0; i < 4; i++)
        make_row(&rows[i], 50 + i, T0_US + i, "v1", i);
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, 1, &w));
    FM_REQUIRE_OK(fm_store_writer_write(w, rows, 4, NULL));
    FM_REQUIRE_OK(fm_store_writer_flush(w));
    fm_store_writer_free(w);
    char sql[512];
    /* Two right, one wrong, one corrected later, one for an unlogged request. */
    snprintf(sql, sizeof sql,
             "SELECT fm_feedback_record('%s', %d::smallint, %d::smallint), fm_feedback_record('%s', %d::smallint, "
             "%d::smallint, 'app'), fm_feedback_record('%s', %d::smallint, %d::smallint), "
             "fm_feedback_record('%s', 0::smallint, 1::smallint)",
             id_text(50), rows[0].image_index, rows[0].label, id_text(51), rows[1].image_index, rows[1].label,
             id_text(52), rows[2].image_index, (rows[2].label + 1) % 10, id_text(999));
    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db, sql, 0, NULL, &r));
    FM_CHECK_STR(fm_db_result_value(r, 0, 0), "t");
    FM_CHECK_STR(fm_db_result_value(r, 0, 3), "f");
    fm_db_result_free(r);
    FM_REQUIRE_OK(fm_db_query(db, "SELECT labelled, correct FROM feedback_accuracy WHERE model_version = 'v1'", 0,
                              NULL, &r));
    FM_CHECK_STR(fm_db_result_value(r, 0, 0), "3");
    FM_CHECK_STR(fm_db_result_value(r, 0, 1), "2");
    fm_db_result_free(r);
    snprintf(sql, sizeof sql, "SELECT fm_feedback_record('%s', %d::smallint, %d::smallint)", id_text(52),
             rows[2].image_index, rows[2].label);
    FM_REQUIRE_OK(fm_db_exec(db, sql));
    int64_t correct = 0;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT correct FROM feedback_accuracy", &correct));
    FM_CHECK_EQ(correct, 3);
    snprintf(sql, sizeof sql, "SELECT fm_feedback_record('%s', 0::smallint, 10::smallint)", id_text(1));
    FM_CHECK_ERR(fm_db_exec(db, sql), FM_EDB);
    FM_CHECK_CONTAINS(fm_last_error(), "feedback_label_ck");
    fm_db_close(db);
}

FM_TEST_MAIN({"rows_text", test_rows_text}, {"rows_binary", test_rows_binary},
             {"features_c_equal_sql", test_features_c_equal_sql}, {"rollups_equal_raw", test_rollups_equal_raw},
             {"writer_applies_closed_buckets", test_writer_applies_closed_buckets},
             {"writer_failed_batch_leaves_nothing", test_writer_failed_batch_leaves_nothing},
             {"delta_apply_validation", test_delta_apply_validation}, {"feedback", test_feedback})
