/* test_log_writer.c: the prediction log's exactly-once protocol
 * (fm_store_sync.h with batch ids) against a real PostgreSQL. A batch
 * written twice under one id lands once; a COMMIT whose reply is lost (a
 * proxy between writer and server drops the connection right after the
 * server committed) is retried under the same ids and neither rows nor
 * rollup deltas are applied twice; a duplicate found after a crash still
 * counts its rows in the rollups once; feedback batches keep the latest
 * label by received time; fm_accuracy() and fm_uuid7_floor() agree with
 * the same numbers computed here. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dbtest.h"
#include "fm_db.h"
#include "fm_idx.h"
#include "fm_pg.h"
#include "fm_pixel_stats.h"
#include "fm_rows.h"
#include "fm_store_sync.h"
#include "fm_test.h"
#include "fm_uuid.h"

#define MINUTE_US (60LL * 1000000LL)
#define T0_US 1767225600000000LL /* 2026-01-01 00:00 UTC */

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

/* n rows from `first` on, one per 100 ms from ts0, every 3rd image sampled. */
static void make_rows(fm_prediction_row_t *rows, const uint8_t **imgs, int first, int n, int64_t ts0) {
    const fm_dataset_t *ds = dbtest_fixture_images();
    for (int k = 0; k < n; k++) {
        int i = first + k;
        fm_prediction_row_t *r = &rows[k];
        memset(r, 0, sizeof *r);
        r->ts_us = ts0 + (int64_t)k * 100000;
        fm_uuid7_make(r->ts_us / 1000, 0, (uint64_t)i, r->request_id);
        r->model_version = i % 2 ? "v2" : "v1";
        r->role = i % 2 ? FM_ROLE_CANARY : FM_ROLE_STABLE;
        r->label = (i * 3) % 10;
        for (int c = 0; c < 10; c++)
            r->probs[c] = 0.01f;
        r->probs[r->label] = 0.91f;
        r->confidence = 0.91f - 0.001f * (float)(i % 50);
        r->queue_us = 10;
        r->compute_us = 20;
        r->total_us = 40;
        imgs[k] = i % 3 == 0 ? ds->images + (size_t)(i % (int)ds->n) * 784 : NULL;
    }
}

static int64_t count(fm_db_t *db, const char *sql) {
    int64_t v = -1;
    if (dbtest_query_int(db, sql, &v) != 0)
        FM_TEST_FAIL_AT("%s: %s", sql, fm_last_error());
    return v;
}

static void check_rollups(fm_db_t *db, const char *since, const char *until) {
    int64_t diffs = -1, buckets = 0;
    FM_CHECK_OK(dbtest_rollups_vs_rebuild(db, since, until, &diffs, &buckets));
    FM_CHECK_EQ(diffs, 0);
    FM_CHECK(buckets > 0);
}

static void test_duplicate_batch_skipped(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("dup_batch", db, url);
    FM_REQUIRE(dbtest_fixture_images());
    enum { N = 300 };
    fm_prediction_row_t rows[N];
    const uint8_t *imgs[N];
    make_rows(rows, imgs, 0, N, T0_US + 10 * 1000000LL); /* 30 s inside minute 0 */
    uint8_t id[16];
    fm_uuid7_new(id);
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, 1, &w));
    int dup = -1;
    FM_REQUIRE_OK(fm_store_writer_write_batch(w, id, rows, N, imgs, &dup));
    FM_CHECK_EQ(dup, 0);
    FM_REQUIRE_OK(fm_store_writer_write_batch(w, id, rows, N, imgs, &dup));
    FM_CHECK_EQ(dup, 1);
    FM_CHECK_EQ(count(db, "SELECT count(*) FROM predictions"), N);
    FM_CHECK_EQ(count(db, "SELECT count(*) FROM sampled_inputs"), N / 3);
    FM_CHECK_EQ(count(db, "SELECT count(*) FROM ingested_batches WHERE kind = 'predictions'"), 1);
    /* The crash case: this writer dies with the batch's counts in memory
     * (free without flush); the batch comes back from a spool to a new
     * writer, which finds it committed and counts it, once. */
    fm_store_writer_free(w);
    FM_REQUIRE_OK(fm_store_writer_new(db, 1, &w));
    FM_REQUIRE_OK(fm_store_writer_write_batch(w, id, rows, N, imgs, &dup));
    FM_CHECK_EQ(dup, 1);
    FM_CHECK_EQ(fm_store_writer_pending(w), 2); /* minute 0 of v1 and v2 */
    FM_REQUIRE_OK(fm_store_writer_flush(w));
    FM_CHECK_EQ(count(db, "SELECT sum(predictions) FROM rollup_buckets"), N);
    FM_CHECK_EQ(count(db, "SELECT sum(images) FROM rollup_buckets"), N / 3);
    check_rollups(db, "2026-01-01 00:00+00", "2026-01-01 00:01+00");
    fm_store_writer_free(w);
    fm_db_close(db);
}

static void test_delta_applied_once(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("dup_delta", db, url);
    fm_pixel_hist_t *h = fm_pixel_hist_new();
    fm_pred_hist_t ph = {0};
    FM_REQUIRE(h && dbtest_fixture_images());
    fm_pixel_hist_add(h, dbtest_fixture_images()->images, 4);
    ph.predictions = 4;
    ph.classes[2] = 4;
    ph.conf[5000] = 4;
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, 1, &w));
    uint8_t id[16];
    fm_uuid7_new(id);
    int dup = -1;
    FM_REQUIRE_OK(fm_store_writer_apply_delta(w, id, T0_US, "v1", h, &ph, &dup));
    FM_CHECK_EQ(dup, 0);
    FM_REQUIRE_OK(fm_store_writer_apply_delta(w, id, T0_US, "v1", h, &ph, &dup));
    FM_CHECK_EQ(dup, 1);
    FM_CHECK_EQ(count(db, "SELECT images * 1000 + predictions FROM rollup_buckets"), 4004);
    FM_CHECK_EQ(count(db, "SELECT sum(c) FROM (SELECT unnest(counts) AS c FROM pixel_rollups) AS x"), 4 * 784);
    fm_store_writer_free(w);
    fm_pixel_hist_free(h);
    fm_db_close(db);
}

/* ---- A proxy that loses a COMMIT's reply ----------------------------------- */

typedef struct proxy {
    int listen_fd, port, upstream_port;
    atomic_int armed;   /* drop the connection at the next "COMMIT" reply */
    atomic_int dropped; /* how many times it did */
    atomic_int stop;
    pthread_t thread;
} proxy_t;

/* The server's CommandComplete for COMMIT: 'C', int32 length 11, "COMMIT\0". */
static const uint8_t commit_reply[] = {'C', 0, 0, 0, 11, 'C', 'O', 'M', 'M', 'I', 'T', 0};

static void *proxy_main(void *arg) {
    proxy_t *p = arg;
    while (!atomic_load(&p->stop)) {
        struct pollfd lp = {p->listen_fd, POLLIN, 0};
        if (poll(&lp, 1, 100) <= 0)
            continue;
        int c = accept(p->listen_fd, NULL, NULL);
        if (c < 0)
            continue;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->upstream_port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
            close(c);
            close(s);
            continue;
        }
        uint8_t buf[65536];
        int open_ = 1;
        while (open_ && !atomic_load(&p->stop)) {
            struct pollfd f[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
            if (poll(f, 2, 100) <= 0)
                continue;
            for (int k = 0; k < 2 && open_; k++) {
                if (!(f[k].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                ssize_t n = read(f[k].fd, buf, sizeof buf);
                if (n <= 0) {
                    open_ = 0;
                    break;
                }
                if (k == 1 && atomic_load(&p->armed)) {
                    for (ssize_t i = 0; i + (ssize_t)sizeof commit_reply <= n; i++)
                        if (memcmp(buf + i, commit_reply, sizeof commit_reply) == 0) {
                            /* Committed on the server; the writer never hears it. */
                            atomic_store(&p->armed, 0);
                            atomic_fetch_add(&p->dropped, 1);
                            open_ = 0;
                            break;
                        }
                    if (!open_)
                        break;
                }
                int to = k == 0 ? s : c;
                for (ssize_t off = 0; off < n;) {
                    ssize_t w = write(to, buf + off, (size_t)(n - off));
                    if (w <= 0) {
                        open_ = 0;
                        break;
                    }
                    off += w;
                }
            }
        }
        close(c);
        close(s);
    }
    return NULL;
}

static int proxy_start(proxy_t *p, int upstream_port) {
    memset(p, 0, sizeof *p);
    p->upstream_port = upstream_port;
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(p->listen_fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(p->listen_fd, 4) != 0 ||
        getsockname(p->listen_fd, (struct sockaddr *)&a, &len) != 0)
        return -1;
    p->port = ntohs(a.sin_port);
    return pthread_create(&p->thread, NULL, proxy_main, p) == 0 ? 0 : -1;
}

static void proxy_stop(proxy_t *p) {
    atomic_store(&p->stop, 1);
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
}

static void test_lost_commit_reply(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("lost_commit", db, url);
    FM_REQUIRE(dbtest_fixture_images());
    proxy_t px;
    FM_REQUIRE(proxy_start(&px, fm_pg_port(fm_pg_shared())) == 0);
    char purl[600];
    /* fm_pg_create_db would drop the database: build the URL by hand. */
    {
        char tcp[512];
        snprintf(tcp, sizeof tcp, "%s", fm_pg_tcp_url(fm_pg_shared()));
        char *slash = strrchr(tcp, '/'), *colon = strrchr(tcp, ':');
        FM_REQUIRE(slash && colon && colon < slash);
        *colon = '\0';
        snprintf(purl, sizeof purl, "%s:%d/lost_commit", tcp, px.port);
    }
    fm_db_t *wdb;
    FM_REQUIRE_OK(fm_db_connect(purl, &wdb));
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(wdb, 1, &w));
    enum { N = 200 };
    fm_prediction_row_t r1[N], r2[N];
    const uint8_t *i1[N], *i2[N];
    make_rows(r1, i1, 0, N, T0_US + 20 * 1000000LL);             /* minute 0 */
    make_rows(r2, i2, N, N, T0_US + MINUTE_US + 10 * 1000000LL); /* minute 1, from 70 s: closes minute 0 */
    uint8_t id1[16], id2[16];
    fm_uuid7_new(id1);
    fm_uuid7_new(id2);
    int dup = -1;
    FM_REQUIRE_OK(fm_store_writer_write_batch(w, id1, r1, N, i1, &dup));
    FM_CHECK_EQ(fm_store_writer_pending(w), 2);
    /* Batch 2 also applies minute 0's frozen deltas; its COMMIT succeeds on
     * the server and the reply is lost. */
    atomic_store(&px.armed, 1);
    int rc = fm_store_writer_write_batch(w, id2, r2, N, i2, &dup);
    FM_CHECK_EQ(atomic_load(&px.dropped), 1);
    FM_CHECK(rc != 0);
    FM_CHECK(!fm_db_ok(wdb));
    FM_CHECK_EQ(count(db, "SELECT count(*) FROM predictions"), 2 * N); /* it did commit */
    FM_CHECK_EQ(count(db, "SELECT sum(predictions) FROM rollup_buckets"), N);
    /* The writer reconnects and retries batch 2 under its id: a duplicate;
     * minute 0's deltas, retried under their own ids, are not applied again. */
    fm_db_close(wdb);
    FM_REQUIRE_OK(fm_db_connect(purl, &wdb));
    fm_store_writer_set_db(w, wdb);
    FM_REQUIRE_OK(fm_store_writer_write_batch(w, id2, r2, N, i2, &dup));
    FM_CHECK_EQ(dup, 1);
    FM_REQUIRE_OK(fm_store_writer_flush(w));
    FM_CHECK_EQ(count(db, "SELECT count(*) FROM predictions"), 2 * N);
    FM_CHECK_EQ(count(db, "SELECT sum(predictions) FROM rollup_buckets"), 2 * N);
    FM_CHECK_EQ(count(db, "SELECT sum(images) FROM rollup_buckets"), 2 * N / 3 + 1);
    check_rollups(db, "2026-01-01 00:00+00", "2026-01-01 00:02+00");

    /* The same for a lost reply of a rollup-only transaction (flush). */
    fm_prediction_row_t r3[N];
    const uint8_t *i3[N];
    make_rows(r3, i3, 2 * N, N, T0_US + 3 * MINUTE_US);
    uint8_t id3[16];
    fm_uuid7_new(id3);
    FM_REQUIRE_OK(fm_store_writer_write_batch(w, id3, r3, N, i3, &dup));
    atomic_store(&px.armed, 1);
    FM_CHECK(fm_store_writer_flush(w) != 0);
    FM_CHECK_EQ(atomic_load(&px.dropped), 2);
    FM_CHECK_EQ(count(db, "SELECT sum(predictions) FROM rollup_buckets"), 3 * N);
    fm_db_close(wdb);
    FM_REQUIRE_OK(fm_db_connect(purl, &wdb));
    fm_store_writer_set_db(w, wdb);
    FM_REQUIRE_OK(fm_store_writer_flush(w));
    FM_CHECK_EQ(fm_store_writer_pending(w), 0);
    FM_CHECK_EQ(count(db, "SELECT sum(predictions) FROM rollup_buckets"), 3 * N);
    check_rollups(db, "2026-01-01 00:00+00", "2026-01-01 00:04+00");

    /* And for feedback. */
    fm_feedback_row_t fb[2] = {{.image_index = 0, .label = 4, .received_us = T0_US, .source = "a"},
                               {.image_index = 0, .label = 5, .received_us = T0_US, .source = NULL}};
    memcpy(fb[0].request_id, r1[0].request_id, 16);
    memcpy(fb[1].request_id, r1[1].request_id, 16);
    uint8_t idf[16];
    fm_uuid7_new(idf);
    atomic_store(&px.armed, 1);
    FM_CHECK(fm_store_writer_feedback(w, idf, fb, 2, &dup) != 0);
    FM_CHECK_EQ(atomic_load(&px.dropped), 3);
    fm_db_close(wdb);
    FM_REQUIRE_OK(fm_db_connect(purl, &wdb));
    fm_store_writer_set_db(w, wdb);
    FM_REQUIRE_OK(fm_store_writer_feedback(w, idf, fb, 2, &dup));
    FM_CHECK_EQ(dup, 1);
    FM_CHECK_EQ(count(db, "SELECT count(*) FROM feedback"), 2);

    fm_store_writer_free(w);
    fm_db_close(wdb);
    proxy_stop(&px);
    fm_db_close(db);
}

static void test_feedback_latest_wins(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("feedback_latest", db, url);
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, 1, &w));
    uint8_t rid[16];
    fm_uuid7_make(T0_US / 1000, 0, 1, rid);
    /* One batch with two words on the same image: the later one stays. */
    fm_feedback_row_t a[2] = {{.image_index = 3, .label = 1, .received_us = T0_US + 2, .source = "q\"uo\\te"},
                              {.image_index = 3, .label = 2, .received_us = T0_US + 1, .source = "old"}};
    memcpy(a[0].request_id, rid, 16);
    memcpy(a[1].request_id, rid, 16);
    uint8_t id[16];
    fm_uuid7_new(id);
    int dup;
    FM_REQUIRE_OK(fm_store_writer_feedback(w, id, a, 2, &dup));
    FM_CHECK_EQ(count(db, "SELECT label FROM feedback"), 1);
    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db, "SELECT source FROM feedback", 0, NULL, &r));
    FM_CHECK_STR(fm_db_result_value(r, 0, 0), "q\"uo\\te");
    fm_db_result_free(r);
    /* A batch replayed late with an older word does not overwrite it... */
    fm_feedback_row_t b = {.image_index = 3, .label = 7, .received_us = T0_US, .source = NULL};
    memcpy(b.request_id, rid, 16);
    fm_uuid7_new(id);
    FM_REQUIRE_OK(fm_store_writer_feedback(w, id, &b, 1, &dup));
    FM_CHECK_EQ(dup, 0);
    FM_CHECK_EQ(count(db, "SELECT label FROM feedback"), 1);
    /* ...a newer one does. */
    b.received_us = T0_US + 10;
    fm_uuid7_new(id);
    FM_REQUIRE_OK(fm_store_writer_feedback(w, id, &b, 1, &dup));
    FM_CHECK_EQ(count(db, "SELECT label FROM feedback"), 7);
    FM_CHECK_EQ(count(db, "SELECT count(*) FROM feedback WHERE source IS NULL"), 1);
    b.label = 10;
    FM_CHECK_ERR(fm_store_writer_feedback(w, id, &b, 1, &dup), FM_EINVAL);
    fm_store_writer_free(w);
    fm_db_close(db);
}

static void test_accuracy_function(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("accuracy", db, url);
    FM_REQUIRE(dbtest_fixture_images());
    /* 60 predictions over 6 s (100 ms apart), feedback on 40 of them: for
     * v1 (even i) labels right when i % 4 == 0, for v2 right when i % 3 != 0. */
    enum { N = 60 };
    fm_prediction_row_t rows[N];
    const uint8_t *imgs[N];
    make_rows(rows, imgs, 0, N, T0_US);
    fm_store_writer_t *w;
    FM_REQUIRE_OK(fm_store_writer_new(db, 1, &w));
    FM_REQUIRE_OK(fm_store_writer_write(w, rows, N, NULL));
    fm_feedback_row_t fb[N];
    int nf = 0, labelled[2] = {0}, correct[2] = {0};
    int lab_window[2] = {0}, cor_window[2] = {0};
    for (int i = 0; i < N; i++) {
        if (i % 3 == 2)
            continue;
        int v = i % 2, ok = v == 0 ? i % 4 == 0 : i % 3 != 0;
        fm_feedback_row_t *f = &fb[nf++];
        memset(f, 0, sizeof *f);
        memcpy(f->request_id, rows[i].request_id, 16);
        f->label = ok ? rows[i].label : (rows[i].label + 1) % 10;
        f->received_us = T0_US + 100000000;
        labelled[v]++;
        correct[v] += ok;
        if (rows[i].ts_us >= T0_US + 2000000 && rows[i].ts_us < T0_US + 5000000) {
            lab_window[v]++;
            cor_window[v] += ok;
        }
    }
    uint8_t id[16];
    fm_uuid7_new(id);
    int dup;
    FM_REQUIRE_OK(fm_store_writer_feedback(w, id, fb, (size_t)nf, &dup));
    fm_store_writer_free(w);
    /* The window [2 s, 5 s) of the run, by the request ids' time. */
    fm_db_result_t *r;
    const char *p[] = {"2026-01-01 00:00:02+00", "2026-01-01 00:00:05+00"};
    FM_REQUIRE_OK(fm_db_query(db, "SELECT model_version, labelled, correct, accuracy, ci_low, ci_high FROM "
                                  "fm_accuracy($1, $2)",
                              2, p, &r));
    FM_REQUIRE(fm_db_result_rows(r) == 2);
    for (int v = 0; v < 2; v++) {
        int64_t n, k;
        double acc, lo, hi;
        FM_CHECK_STR(fm_db_result_value(r, v, 0), v ? "v2" : "v1");
        fm_db_result_int64(r, v, 1, &n);
        fm_db_result_int64(r, v, 2, &k);
        fm_db_result_double(r, v, 3, &acc);
        fm_db_result_double(r, v, 4, &lo);
        fm_db_result_double(r, v, 5, &hi);
        FM_CHECK_EQ(n, lab_window[v]);
        FM_CHECK_EQ(k, cor_window[v]);
        FM_CHECK_NEAR(acc, (double)k / (double)n, 1e-12);
        /* Wilson score interval, 95 %. */
        double z = 1.959963984540054, ph = (double)k / (double)n, d = 1 + z * z / (double)n;
        double c = ph + z * z / (2.0 * (double)n), m = z * sqrt(ph * (1 - ph) / (double)n + z * z / (4.0 * n * n));
        FM_CHECK_NEAR(lo, (c - m) / d, 1e-9);
        FM_CHECK_NEAR(hi, (c + m) / d, 1e-9);
        FM_CHECK(lo <= acc && acc <= hi);
    }
    fm_db_result_free(r);
    /* The whole run. */
    FM_REQUIRE_OK(fm_db_query(db, "SELECT labelled, correct FROM fm_accuracy('2026-01-01', '2026-01-02')", 0, NULL,
                              &r));
    FM_REQUIRE(fm_db_result_rows(r) == 2);
    for (int v = 0; v < 2; v++) {
        int64_t n, k;
        fm_db_result_int64(r, v, 0, &n);
        fm_db_result_int64(r, v, 1, &k);
        FM_CHECK_EQ(n, labelled[v]);
        FM_CHECK_EQ(k, correct[v]);
    }
    fm_db_result_free(r);
    /* fm_uuid7_floor is the smallest uuid of the millisecond. */
    uint8_t lo[16] = {0};
    fm_uuid7_make(T0_US / 1000 + 2000, 0, 0, lo);
    memset(lo + 6, 0, 10);
    char t[37];
    fm_uuid_format(lo, t);
    FM_REQUIRE_OK(fm_db_query(db, "SELECT fm_uuid7_floor('2026-01-01 00:00:02.0009+00')::text", 0, NULL, &r));
    FM_CHECK_STR(fm_db_result_value(r, 0, 0), t);
    fm_db_result_free(r);
    fm_db_close(db);
}

FM_TEST_MAIN({"duplicate_batch_skipped", test_duplicate_batch_skipped},
             {"delta_applied_once", test_delta_applied_once}, {"lost_commit_reply", test_lost_commit_reply},
             {"feedback_latest_wins", test_feedback_latest_wins}, {"accuracy_function", test_accuracy_function})
