/* test_log_server.c: the prediction log end to end: real fmserve processes
 * logging into a real PostgreSQL, driven over the RPC port.
 *
 *  - after a burst of pipelined traffic every accepted prediction is in the
 *    table exactly once, with the labels and confidences the clients got,
 *    and the sampled pixels are the bytes that were sent;
 *  - PostgreSQL stopped mid-traffic and started again: nothing lost, nothing
 *    duplicated (batches went to the spool and were replayed);
 *  - a spool left by a server that stopped while the database was down is
 *    replayed by the next one, which is SIGKILLed mid-replay; a third one
 *    finishes without duplicates, skipping a torn record at the spool's end;
 *  - a server SIGKILLed while it spools: the next one replays every row it
 *    had spooled, once, and nothing a client was not answered;
 *  - rollup deltas spooled at a shutdown with the database down are applied
 *    by the next run;
 *  - serving latency (p50, p99) with the database down stays close to the
 *    latency with it up;
 *  - a full spool (spool_max_mb) drops batches, counted and logged, while
 *    every request is still answered;
 *  - feedback round trip (also while the database is down), its validation,
 *    fm_accuracy and `fmctl db accuracy`;
 *  - after each run the rollups equal fm_rollup_rebuild() from the raw rows. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dbtest.h"
#include "fm_client.h"
#include "fm_db.h"
#include "fm_pg.h"
#include "fm_proto.h"
#include "fm_srv_harness.h"
#include "fm_test.h"
#include "fm_time.h"

#define MAXN 8

typedef struct sent {
    char id[40];
    char version[64];
    char routing[16];
    int n, first; /* images first .. first+n-1 of the fixtures */
    int32_t labels[MAXN];
    float conf[MAXN];
} sent_t;

typedef struct sent_list {
    sent_t *v;
    size_t n, cap, images;
} sent_list_t;

static fm_dataset_t ds;
static char *v1dir, *v2dir;

static int setup(void) {
    static int done;
    if (done)
        return done > 0;
    done = -1;
    if (fm_srv_fixture(&ds) != 0)
        return 0;
    v1dir = fm_test_path(fm_srv_models_dir(), "v1");
    v2dir = fm_test_path(fm_srv_models_dir(), "v2");
    done = 1;
    return 1;
}

#define OPEN_DB(name, db, url)                                                  \
    do {                                                                        \
        FM_REQUIRE(setup());                                                    \
        if (fm_pg_shared() && !fm_pg_running(fm_pg_shared()))                  \
            fm_pg_restart(fm_pg_shared()); /* a failed case may leave it off */ \
        int rc_ = dbtest_open(name, &(db), url, sizeof url);                    \
        if (rc_ == FM_EUNSUPPORTED) {                                           \
            static char why_[1024];                                             \
            snprintf(why_, sizeof why_, "no PostgreSQL: %s", fm_last_error()); \
            FM_TEST_SKIP(why_);                                                 \
        }                                                                       \
        FM_REQUIRE_OK(rc_);                                                     \
    } while (0)

/* Starts fmserve logging into `url` with its spool in `spool` (a fresh
 * directory under the test's tmpdir when NULL), plus extra "NAME=value"
 * settings. */
static int start(fm_srv_t *s, const char *url, const char *spool, const char *const *extra) {
    static char env[16][1200];
    int k = 0;
    snprintf(env[k++], sizeof env[0], "FM_DATABASE_URL=%s", url);
    snprintf(env[k++], sizeof env[0], "FM_SPOOL_DIR=%s", spool);
    snprintf(env[k++], sizeof env[0], "FM_LOG_FLUSH_MS=50");
    for (int i = 0; extra && extra[i] && k < 15; i++)
        snprintf(env[k++], sizeof env[0], "%s", extra[i]);
    const char *envp[17];
    for (int i = 0; i < k; i++)
        envp[i] = env[i];
    envp[k] = NULL;
    const char *args[] = {"--stable-model", v1dir, "--canary-model", v2dir, "--ab-test-ratio", "0.5",
                          "--cpu-workers", "1", NULL};
    return fm_srv_start(s, args, envp);
}

static double metric(const fm_srv_t *s, const char *prefix) {
    char *body = NULL;
    double v = -1;
    if (fm_srv_http_get(s->http_port, "/metrics", &body) == 200)
        v = fm_srv_metric(body, prefix);
    free(body);
    return v;
}

/* Waits up to timeout_ms for metric(prefix) `op` value (op '=' or '>'). */
static int wait_metric(const fm_srv_t *s, const char *prefix, char op, double value, int timeout_ms) {
    uint64_t until = fm_now_us() + (uint64_t)timeout_ms * 1000;
    double v = -1;
    while (fm_now_us() < until) {
        v = metric(s, prefix);
        if ((op == '=' && v == value) || (op == '>' && v > value))
            return 1;
        usleep(50000);
    }
    fprintf(stderr, "  metric %s is %g, waited for %c %g\n", prefix, v, op, value);
    return 0;
}

static char *spool_dir(const char *name) {
    char *d = fm_test_path(fm_test_tmpdir(), name);
    return d;
}

/* ---- Traffic --------------------------------------------------------------- */

static void push(sent_list_t *l, const sent_t *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 1024;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = *s;
    l->images += (size_t)s->n;
}

typedef struct inflight {
    uint32_t msgid;
    sent_t s;
    uint64_t t0;
} inflight_t;

/* Sends nreq predict requests (1..8 images, mixed encodings, some sticky or
 * pinned) with `depth` in flight on one connection, and records each reply.
 * lat_us (may be NULL) receives each request's round trip. Returns the
 * number of error replies (which are not recorded). */
static int traffic(const fm_srv_t *srv, int nreq, int depth, unsigned seed, sent_list_t *out, double *lat_us) {
    fm_client_t *c = fm_srv_connect(srv);
    if (!c)
        return -1;
    inflight_t *q = calloc((size_t)depth, sizeof *q);
    int head = 0, count = 0, errors = 0, sent = 0, got = 0;
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    while (got < nreq) {
        while (sent < nreq && count < depth) {
            inflight_t *f = &q[(head + count) % depth];
            memset(f, 0, sizeof *f);
            unsigned r = seed * 2654435761u + (unsigned)sent * 40503u;
            f->s.n = lat_us ? 1 : 1 + (int)(r % MAXN);
            f->s.first = (int)((r / 8) % (ds.n - MAXN));
            char key[32];
            snprintf(key, sizeof key, "user-%u", r % 97);
            fm_predict_opts_t o = {.images_as_array = (int)(r & 1)};
            if (sent % 10 == 3)
                o.version = "canary";
            else if (sent % 10 == 7)
                o.key = key;
            f->msgid = fm_client_next_msgid(c);
            b.len = 0;
            fm_proto_pack_predict(&b, f->msgid, ds.images + (size_t)f->s.first * 784, (size_t)f->s.n, &o);
            f->t0 = fm_now_us();
            if (fm_client_send_raw(c, b.data, b.len) != 0) {
                errors = -1;
                goto out;
            }
            sent++;
            count++;
        }
        inflight_t *f = &q[head];
        fm_mp_msg_t *msg;
        if (fm_client_wait(c, f->msgid, &msg) != 0) {
            errors = -1;
            goto out;
        }
        if (lat_us)
            lat_us[got] = (double)(fm_now_us() - f->t0);
        uint64_t mid;
        const fm_mp_obj_t *err, *res;
        fm_predict_result_t pr = {.labels = f->s.labels, .confidence = f->s.conf};
        if (fm_proto_parse_response(msg->root, &mid, &err, &res) != 0 || err ||
            fm_proto_read_predict(res, MAXN, &pr) != 0 || pr.n != (size_t)f->s.n) {
            errors++;
        } else {
            snprintf(f->s.id, sizeof f->s.id, "%s", pr.request_id);
            snprintf(f->s.version, sizeof f->s.version, "%s", pr.model_version);
            memcpy(f->s.routing, pr.routing, sizeof f->s.routing);
            push(out, &f->s);
        }
        fm_mp_msg_free(msg);
        head = (head + 1) % depth;
        count--;
        got++;
    }
out:
    fm_mp_buf_free(&b);
    free(q);
    fm_client_close(c);
    return errors;
}

static int by_id(const void *a, const void *b) { return strcmp(((const sent_t *)a)->id, ((const sent_t *)b)->id); }

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, int n, double p) {
    qsort(v, (size_t)n, sizeof *v, by_value);
    return v[(int)(p * (n - 1) + 0.5)];
}

/* ---- Checks ---------------------------------------------------------------- */

/* Every recorded prediction is in the log exactly once, with what the
 * client received, and nothing else is; the sampled pixels are the bytes
 * sent. Returns the number of sampled images. */
static int64_t check_log(const char *url, sent_list_t *l) {
    fm_db_t *db;
    if (fm_db_connect(url, &db) != 0) {
        FM_TEST_FAIL_AT("connect: %s", fm_last_error());
        return -1;
    }
    qsort(l->v, l->n, sizeof *l->v, by_id);
    fm_db_result_t *r;
    if (fm_db_query(db,
                    "SELECT request_id::text, image_index, model_version, route, label, confidence::float8 "
                    "FROM predictions ORDER BY request_id, image_index",
                    0, NULL, &r) != 0) {
        FM_TEST_FAIL_AT("query: %s", fm_last_error());
        fm_db_close(db);
        return -1;
    }
    FM_CHECK_EQ(fm_db_result_rows(r), l->images);
    int row = 0, bad = 0;
    for (size_t i = 0; i < l->n && row < fm_db_result_rows(r) && bad < 5; i++) {
        const sent_t *s = &l->v[i];
        for (int k = 0; k < s->n && row < fm_db_result_rows(r); k++, row++) {
            int64_t idx, label;
            double conf;
            fm_db_result_int64(r, row, 1, &idx);
            fm_db_result_int64(r, row, 4, &label);
            fm_db_result_double(r, row, 5, &conf);
            if (strcmp(fm_db_result_value(r, row, 0), s->id) != 0 || idx != k ||
                strcmp(fm_db_result_value(r, row, 2), s->version) != 0 ||
                strcmp(fm_db_result_value(r, row, 3), s->routing) != 0 || label != s->labels[k] ||
                conf != (double)s->conf[k]) {
                FM_TEST_FAIL_AT("row %d (%s #%lld %s %s %lld %.9g) is not what request %s image %d got (%s %s %d "
                                "%.9g)",
                                row, fm_db_result_value(r, row, 0), (long long)idx, fm_db_result_value(r, row, 2),
                                fm_db_result_value(r, row, 3), (long long)label, conf, s->id, k, s->version,
                                s->routing, s->labels[k], (double)s->conf[k]);
                bad++;
            }
        }
    }
    fm_db_result_free(r);
    if (fm_db_query(db, "SELECT request_id::text, image_index, pixels FROM sampled_inputs ORDER BY 1, 2", 0, NULL,
                    &r) != 0) {
        FM_TEST_FAIL_AT("query: %s", fm_last_error());
        fm_db_close(db);
        return -1;
    }
    int64_t sampled = fm_db_result_rows(r);
    bad = 0;
    for (int j = 0; j < sampled && bad < 5; j++) {
        sent_t key;
        snprintf(key.id, sizeof key.id, "%s", fm_db_result_value(r, j, 0));
        const sent_t *s = bsearch(&key, l->v, l->n, sizeof *l->v, by_id);
        int64_t idx;
        fm_db_result_int64(r, j, 1, &idx);
        if (!s || idx >= s->n) {
            FM_TEST_FAIL_AT("sampled input %s #%lld belongs to no request sent", key.id, (long long)idx);
            bad++;
            continue;
        }
        /* bytea in hex: "\x" then two digits per byte. */
        const char *hex = fm_db_result_value(r, j, 2);
        const uint8_t *img = ds.images + (size_t)(s->first + idx) * 784;
        char want[2 * 784 + 3] = "\\x";
        for (int p = 0; p < 784; p++)
            sprintf(want + 2 + 2 * p, "%02x", img[p]);
        if (strcmp(hex, want) != 0) {
            FM_TEST_FAIL_AT("sampled pixels of %s #%lld differ from the image sent", key.id, (long long)idx);
            bad++;
        }
    }
    fm_db_result_free(r);
    fm_db_close(db);
    return sampled;
}

/* After a crash some answered rows may be missing (they were in memory).
 * Every row of a request the client got an answer for must be exactly what
 * it received, and none twice (the primary key). The requests in flight when
 * the server died were computed, logged and maybe sent, but never reached
 * the client, so their ids are unknown to it: at most `max_unknown` such
 * requests may appear. Returns the rows; *unknown_rows counts theirs. */
static int64_t check_log_subset(const char *url, sent_list_t *l, int max_unknown, int64_t *unknown_rows) {
    fm_db_t *db;
    if (fm_db_connect(url, &db) != 0) {
        FM_TEST_FAIL_AT("connect: %s", fm_last_error());
        return -1;
    }
    qsort(l->v, l->n, sizeof *l->v, by_id);
    fm_db_result_t *r;
    if (fm_db_query(db,
                    "SELECT request_id::text, image_index, model_version, label, confidence::float8 FROM predictions "
                    "ORDER BY request_id, image_index",
                    0, NULL, &r) != 0) {
        FM_TEST_FAIL_AT("query: %s", fm_last_error());
        fm_db_close(db);
        return -1;
    }
    int64_t rows = fm_db_result_rows(r);
    int bad = 0, unknown_requests = 0;
    char last_unknown[40] = "";
    *unknown_rows = 0;
    for (int i = 0; i < rows && bad < 5; i++) {
        sent_t key;
        snprintf(key.id, sizeof key.id, "%s", fm_db_result_value(r, i, 0));
        const sent_t *q = bsearch(&key, l->v, l->n, sizeof *l->v, by_id);
        if (!q) {
            /* Ordered by id: the rows of one request are adjacent. */
            (*unknown_rows)++;
            if (strcmp(last_unknown, key.id) != 0) {
                snprintf(last_unknown, sizeof last_unknown, "%s", key.id);
                unknown_requests++;
            }
            continue;
        }
        int64_t idx = -1, label = -1;
        double conf = -1;
        fm_db_result_int64(r, i, 1, &idx);
        fm_db_result_int64(r, i, 3, &label);
        fm_db_result_double(r, i, 4, &conf);
        if (idx < 0 || idx >= q->n || strcmp(fm_db_result_value(r, i, 2), q->version) != 0 ||
            label != q->labels[idx] || conf != (double)q->conf[idx]) {
            FM_TEST_FAIL_AT("row %s #%lld is not what a client received", key.id, (long long)idx);
            bad++;
        }
    }
    fm_db_result_free(r);
    fm_db_close(db);
    if (unknown_requests > max_unknown)
        FM_TEST_FAIL_AT("%d logged requests were never answered; at most %d were in flight", unknown_requests,
                        max_unknown);
    return rows;
}

/* The rollups of the whole run equal what fm_rollup_rebuild() computes. */
static void check_rollups(const char *url) {
    fm_db_t *db;
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db,
                              "SELECT fm_bucket_start(min(ts))::text, (fm_bucket_start(max(ts)) + interval '60 s')::text "
                              "FROM predictions",
                              0, NULL, &r));
    char since[64], until[64];
    snprintf(since, sizeof since, "%s", fm_db_result_value(r, 0, 0));
    snprintf(until, sizeof until, "%s", fm_db_result_value(r, 0, 1));
    fm_db_result_free(r);
    int64_t before = -1, after = -1;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT coalesce(sum(predictions), 0) FROM rollup_buckets", &before));
    int64_t diffs = -1, buckets = 0;
    FM_CHECK_OK(dbtest_rollups_vs_rebuild(db, since, until, &diffs, &buckets));
    FM_CHECK_EQ(diffs, 0);
    FM_CHECK(buckets > 0);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM predictions", &after));
    FM_CHECK_EQ(before, after);
    fm_db_close(db);
}

static void stop_ok(fm_srv_t *s) {
    int code = fm_srv_stop(s, SIGTERM, 120000);
    if (code != 0)
        fm_srv_dump_log(s);
    FM_CHECK_EQ(code, 0);
}

/* ---- Cases ----------------------------------------------------------------- */

static void test_burst_content(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_burst", db, url);
    fm_db_close(db);
    char *sp = spool_dir("spool-burst");
    fm_srv_t s;
    const char *extra[] = {"FM_SAMPLE_RATE=0.3", NULL};
    FM_REQUIRE_OK(start(&s, url, sp, extra));
    sent_list_t l = {0};
    FM_CHECK_EQ(traffic(&s, 500, 16, 1, &l, NULL), 0);
    /* A second process on the same spool directory is refused at start. */
    fm_srv_t twin;
    FM_CHECK(start(&twin, url, sp, extra) != 0);
    FM_CHECK(fm_srv_log_contains(&twin, "in use by another process"));
    FM_CHECK_EQ(traffic(&s, 500, 16, 2, &l, NULL), 0);
    char want[64];
    snprintf(want, sizeof want, "%zu", l.images);
    FM_CHECK(wait_metric(&s, "fm_log_rows_written{kind=\"prediction\"} ", '=', (double)l.images, 30000));
    FM_CHECK_EQ(metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} "), 0);
    FM_CHECK_EQ(metric(&s, "fm_log_rows_dropped{kind=\"prediction\""), 0);
    FM_CHECK_EQ(metric(&s, "fm_log_database_connected "), 1);
    FM_CHECK(metric(&s, "fm_log_copy_duration_seconds_count ") > 0);
    stop_ok(&s);
    int64_t sampled = check_log(url, &l);
    /* 30 % of ~4,500 images: 1,350 expected, sd ~31. */
    FM_CHECK(sampled > (int64_t)(0.22 * (double)l.images) && sampled < (int64_t)(0.38 * (double)l.images));
    check_rollups(url);
    free(l.v);
    free(sp);
}

typedef struct bg {
    const fm_srv_t *srv;
    int nreq, errors;
    unsigned seed;
    sent_list_t l;
} bg_t;

static void *bg_traffic(void *arg) {
    bg_t *b = arg;
    b->errors = traffic(b->srv, b->nreq, 8, b->seed, &b->l, NULL);
    return NULL;
}

static void test_database_outage(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_outage", db, url);
    fm_db_close(db);
    fm_pg_t *pg = fm_pg_shared();
    char *sp = spool_dir("spool-outage");
    fm_srv_t s;
    FM_REQUIRE_OK(start(&s, url, sp, NULL));
    sent_list_t l = {0};
    FM_CHECK_EQ(traffic(&s, 300, 8, 3, &l, NULL), 0);
    /* PostgreSQL goes away mid-traffic: a client keeps sending meanwhile. */
    bg_t bg = {.srv = &s, .nreq = 600, .seed = 4};
    pthread_t t;
    FM_REQUIRE(pthread_create(&t, NULL, bg_traffic, &bg) == 0);
    usleep(150000);
    FM_CHECK_OK(fm_pg_stop(pg));
    pthread_join(t, NULL);
    FM_CHECK_EQ(bg.errors, 0);
    for (size_t i = 0; i < bg.l.n; i++)
        push(&l, &bg.l.v[i]);
    free(bg.l.v);
    /* A good second of traffic while it is down. */
    uint64_t down_until = fm_now_us() + 1500000;
    for (unsigned k = 0; fm_now_us() < down_until; k++)
        FM_CHECK_EQ(traffic(&s, 100, 8, 100 + k, &l, NULL), 0);
    FM_CHECK(wait_metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ", '>', 0, 20000));
    FM_CHECK_EQ(metric(&s, "fm_log_database_connected "), 0);
    FM_CHECK(metric(&s, "fm_log_spool_bytes ") > 0);
    FM_REQUIRE_OK(fm_pg_restart(pg));
    FM_CHECK_EQ(traffic(&s, 300, 8, 6, &l, NULL), 0);
    FM_CHECK(wait_metric(&s, "fm_log_rows_written{kind=\"prediction\"} ", '=', (double)l.images, 90000));
    FM_CHECK(wait_metric(&s, "fm_log_spool_bytes ", '=', 0, 30000));
    FM_CHECK(metric(&s, "fm_log_rows_replayed{kind=\"prediction\"} ") > 0);
    FM_CHECK_EQ(metric(&s, "fm_log_rows_dropped{kind=\"prediction\""), 0);
    FM_CHECK_EQ(metric(&s, "fm_log_database_connected "), 1);
    stop_ok(&s);
    FM_CHECK(fm_srv_log_contains(&s, "PostgreSQL unreachable"));
    FM_CHECK(fm_srv_log_contains(&s, "connected to PostgreSQL again; replaying the spool"));
    check_log(url, &l);
    check_rollups(url);
    free(l.v);
    free(sp);
}

static void test_killed_mid_replay(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_kill", db, url);
    fm_db_close(db);
    fm_pg_t *pg = fm_pg_shared();
    char *sp = spool_dir("spool-kill");
    /* Server 1 runs with the database down: everything goes to the spool,
     * in many small batches, and stays there when it stops. */
    FM_REQUIRE_OK(fm_pg_stop(pg));
    fm_srv_t s;
    const char *small[] = {"FM_LOG_BATCH_ROWS=40", "FM_SAMPLE_RATE=0.5", NULL};
    FM_REQUIRE_OK(start(&s, url, sp, small));
    sent_list_t l = {0};
    FM_CHECK_EQ(traffic(&s, 600, 8, 7, &l, NULL), 0);
    stop_ok(&s);
    FM_CHECK(fm_srv_log_contains(&s, "spool"));
    /* A crash mid-write leaves half a record at the end of the spool. */
    char path[700];
    snprintf(path, sizeof path, "%s/0000000000000099.spool", sp);
    FILE *f = fopen(path, "wb");
    FM_REQUIRE(f);
    static const char torn[] = "FMSPOOL\0\1\0\0\0\0\0\0\0FMR1\1\0\0\0\xff\xff";
    FM_CHECK_EQ(fwrite(torn, 1, sizeof torn - 1, f), 26);
    fclose(f);
    FM_REQUIRE_OK(fm_pg_restart(pg));
    /* Server 2 replays, and is killed part way. */
    fm_srv_t s2;
    FM_REQUIRE_OK(start(&s2, url, sp, NULL));
    FM_CHECK(wait_metric(&s2, "fm_log_rows_replayed{kind=\"prediction\"} ", '>', 0, 30000));
    kill(s2.pid, SIGKILL);
    fm_srv_stop(&s2, 0, 10000);
    int64_t mid = -1;
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM predictions", &mid));
    fm_db_close(db);
    if (mid == (int64_t)l.images)
        fprintf(stderr, "  note: server 2 replayed everything before the kill\n");
    /* Server 3 finishes the replay: no row twice, none missing. */
    fm_srv_t s3;
    FM_REQUIRE_OK(start(&s3, url, sp, NULL));
    FM_CHECK(wait_metric(&s3, "fm_log_spool_bytes ", '=', 0, 60000));
    stop_ok(&s3);
    /* The torn record was found by whichever server reached it. */
    FM_CHECK(fm_srv_log_contains(&s2, "torn or damaged record") + fm_srv_log_contains(&s3, "torn or damaged record") ==
             1);
    check_log(url, &l);
    /* The killed server took the rollup counts of what it had replayed with
     * it (in memory, for open buckets); the next one says so and how to
     * restore them, and the rebuild makes them whole. */
    if (mid > 0) {
        FM_CHECK(fm_srv_log_contains(&s3, "stopped without applying the rollup deltas"));
        FM_CHECK(fm_srv_log_contains(&s3, "SELECT fm_rollup_rebuild("));
    }
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    FM_CHECK_OK(fm_db_exec(db, "SELECT fm_rollup_rebuild(min(ts), max(ts) + interval '1 minute') FROM predictions"));
    fm_db_close(db);
    check_rollups(url);
    free(l.v);
    free(sp);
}

static void test_killed_mid_spool(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_kill_spool", db, url);
    fm_db_close(db);
    fm_pg_t *pg = fm_pg_shared();
    char *sp = spool_dir("spool-kill-spool");
    /* The database is down and the server spools, under traffic, when it is
     * killed. */
    FM_REQUIRE_OK(fm_pg_stop(pg));
    fm_srv_t s;
    const char *small[] = {"FM_LOG_BATCH_ROWS=50", NULL};
    FM_REQUIRE_OK(start(&s, url, sp, small));
    bg_t bg = {.srv = &s, .nreq = 100000, .seed = 31};
    pthread_t t;
    FM_REQUIRE(pthread_create(&t, NULL, bg_traffic, &bg) == 0);
    FM_CHECK(wait_metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ", '>', 2000, 30000));
    double spooled = metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ");
    kill(s.pid, SIGKILL);
    fm_srv_stop(&s, 0, 10000);
    pthread_join(t, NULL); /* its connection breaks: it stops */
    FM_CHECK(bg.l.n > 0);
    /* The next server replays what was spooled, once. */
    FM_REQUIRE_OK(fm_pg_restart(pg));
    fm_srv_t s2;
    FM_REQUIRE_OK(start(&s2, url, sp, NULL));
    FM_CHECK(wait_metric(&s2, "fm_log_spool_bytes ", '=', 0, 60000));
    stop_ok(&s2);
    /* traffic() keeps 8 requests of up to MAXN images in flight. */
    int64_t unknown = 0;
    int64_t rows = check_log_subset(url, &bg.l, 8, &unknown);
    fprintf(stderr,
            "  %zu images answered, %.0f spooled before the kill, %lld in the log after the replay "
            "(%lld of them of requests in flight at the kill)\n",
            bg.l.images, spooled, (long long)rows, (long long)unknown);
    FM_CHECK(rows >= (int64_t)spooled);
    FM_CHECK(rows - unknown <= (int64_t)bg.l.images);
    FM_CHECK(unknown <= 8 * MAXN);
    free(bg.l.v);
    free(sp);
}

static void test_deltas_spooled_at_shutdown(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_deltas", db, url);
    fm_db_close(db);
    fm_pg_t *pg = fm_pg_shared();
    char *sp = spool_dir("spool-deltas");
    /* Rows committed, their minute still open: the counts are in memory
     * when the database goes away and the server is stopped. */
    fm_srv_t s;
    const char *extra[] = {"FM_SAMPLE_RATE=0.2", NULL};
    FM_REQUIRE_OK(start(&s, url, sp, extra));
    sent_list_t l = {0};
    FM_CHECK_EQ(traffic(&s, 300, 8, 21, &l, NULL), 0);
    FM_CHECK(wait_metric(&s, "fm_log_rows_written{kind=\"prediction\"} ", '=', (double)l.images, 30000));
    FM_CHECK(metric(&s, "fm_log_rollup_deltas_pending ") > 0);
    FM_REQUIRE_OK(fm_pg_stop(pg));
    stop_ok(&s);
    FM_CHECK(fm_srv_log_contains(&s, "rollup deltas of the open buckets spooled for the next run"));
    /* The next run applies them, once. */
    FM_REQUIRE_OK(fm_pg_restart(pg));
    fm_srv_t s2;
    FM_REQUIRE_OK(start(&s2, url, sp, NULL));
    FM_CHECK(wait_metric(&s2, "fm_log_spool_bytes ", '=', 0, 60000));
    stop_ok(&s2);
    FM_CHECK(!fm_srv_log_contains(&s2, "stopped without applying"));
    check_log(url, &l);
    check_rollups(url);
    free(l.v);
    free(sp);
}

static void test_latency_database_down(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_latency", db, url);
    fm_db_close(db);
    fm_pg_t *pg = fm_pg_shared();
    char *sp = spool_dir("spool-latency");
    fm_srv_t s;
    FM_REQUIRE_OK(start(&s, url, sp, NULL));
    enum { N = 1500 };
    double *up1 = calloc(N, sizeof(double)), *down = calloc(N, sizeof(double)), *up2 = calloc(N, sizeof(double));
    sent_list_t l = {0};
    FM_CHECK_EQ(traffic(&s, 200, 1, 8, &l, up1), 0); /* warm-up */
    FM_CHECK_EQ(traffic(&s, N, 1, 9, &l, up1), 0);
    FM_REQUIRE_OK(fm_pg_stop(pg));
    FM_CHECK_EQ(traffic(&s, N, 1, 10, &l, down), 0);
    FM_CHECK(metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ") > 0);
    FM_REQUIRE_OK(fm_pg_restart(pg));
    FM_CHECK_EQ(traffic(&s, N, 1, 11, &l, up2), 0);
    double p50u = percentile(up1, N, 0.5), p99u = percentile(up1, N, 0.99);
    double p50u2 = percentile(up2, N, 0.5), p99u2 = percentile(up2, N, 0.99);
    double p50d = percentile(down, N, 0.5), p99d = percentile(down, N, 0.99);
    fprintf(stderr, "  latency us: database up p50 %.0f p99 %.0f | down p50 %.0f p99 %.0f | up again (replaying) "
                    "p50 %.0f p99 %.0f\n",
            p50u, p99u, p50d, p99d, p50u2, p99u2);
    double b50 = p50u > p50u2 ? p50u : p50u2, b99 = p99u > p99u2 ? p99u : p99u2;
    /* Generous for a shared machine, but an event loop that waited on the
     * database (a connect attempt blocks for up to seconds) would break it. */
    FM_CHECK(p50d <= 2.0 * b50 + 500);
    FM_CHECK(p99d <= 3.0 * b99 + 5000);
    FM_CHECK(wait_metric(&s, "fm_log_rows_written{kind=\"prediction\"} ", '=', (double)l.images, 90000));
    stop_ok(&s);
    check_log(url, &l);
    free(up1);
    free(down);
    free(up2);
    free(l.v);
    free(sp);
}

static void test_spool_full(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_full", db, url);
    fm_db_close(db);
    fm_pg_t *pg = fm_pg_shared();
    char *sp = spool_dir("spool-full");
    FM_REQUIRE_OK(fm_pg_stop(pg));
    fm_srv_t s;
    /* 1 MiB of spool holds about 1,200 rows with their pixels. */
    const char *extra[] = {"FM_SPOOL_MAX_MB=1", "FM_SAMPLE_RATE=1", "FM_LOG_BATCH_ROWS=200", NULL};
    FM_REQUIRE_OK(start(&s, url, sp, extra));
    sent_list_t l = {0};
    FM_CHECK_EQ(traffic(&s, 1000, 8, 12, &l, NULL), 0); /* every request answered */
    FM_CHECK_EQ(l.n, 1000);
    double total = (double)l.images;
    FM_CHECK(wait_metric(&s, "fm_log_buffer_rows ", '=', 0, 20000));
    double spooled = metric(&s, "fm_log_rows_spooled{kind=\"prediction\"} ");
    double full = metric(&s, "fm_log_rows_dropped{kind=\"prediction\",reason=\"spool_full\"} ");
    double dropped = metric(&s, "fm_log_rows_dropped{kind=\"prediction\"");
    fprintf(stderr, "  %g rows: %g spooled, %g dropped (spool full)\n", total, spooled, full);
    FM_CHECK(full > 0);
    FM_CHECK(spooled > 0);
    FM_CHECK_EQ(spooled + dropped, total); /* every row accounted for */
    FM_CHECK(metric(&s, "fm_log_last_error_timestamp_seconds ") > 1.7e9);
    char *body = NULL;
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/ready", &body), 200);
    free(body);
    FM_CHECK(fm_srv_log_contains(&s, "could not be spooled"));
    FM_CHECK(fm_srv_log_contains(&s, "is full"));
    stop_ok(&s);
    FM_REQUIRE_OK(fm_pg_restart(pg));
    /* What was spooled arrives, once, when the database is back. */
    fm_srv_t s2;
    FM_REQUIRE_OK(start(&s2, url, sp, NULL));
    FM_CHECK(wait_metric(&s2, "fm_log_spool_bytes ", '=', 0, 60000));
    stop_ok(&s2);
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    int64_t n = -1, distinct = -1;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM predictions", &n));
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(DISTINCT request_id) FROM predictions", &distinct));
    FM_CHECK_EQ(n, (int64_t)spooled);
    fm_db_close(db);
    free(l.v);
    free(sp);
}

/* Sends one feedback call; returns the error code name ("" when accepted). */
static const char *feedback(fm_client_t *c, const char *id, int index, int label, const char *source,
                            const char *extra_key) {
    static char code[32];
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_mp_pack_array(&b, 1);
    fm_mp_pack_map(&b, (uint32_t)(2 + (index >= 0) + (source != NULL) + (extra_key != NULL)));
    fm_mp_pack_key(&b, "request_id");
    fm_mp_pack_cstr(&b, id);
    fm_mp_pack_key(&b, "label");
    fm_mp_pack_uint(&b, (uint64_t)label);
    if (index >= 0) {
        fm_mp_pack_key(&b, "image_index");
        fm_mp_pack_uint(&b, (uint64_t)index);
    }
    if (source) {
        fm_mp_pack_key(&b, "source");
        fm_mp_pack_cstr(&b, source);
    }
    if (extra_key) {
        fm_mp_pack_key(&b, extra_key);
        fm_mp_pack_uint(&b, 1);
    }
    fm_mp_msg_t *msg;
    const fm_mp_obj_t *err, *res;
    int rc = fm_client_call(c, "feedback", &b, &msg, &err, &res);
    fm_mp_buf_free(&b);
    if (rc != 0)
        return "TRANSPORT";
    code[0] = '\0';
    if (err) {
        fm_proto_error_t e;
        fm_proto_read_error(err, &e);
        snprintf(code, sizeof code, "%s", e.code);
    }
    fm_mp_msg_free(msg);
    return code;
}

static void test_feedback_round_trip(void) {
    fm_db_t *db;
    char url[512];
    OPEN_DB("log_feedback", db, url);
    fm_db_close(db);
    fm_pg_t *pg = fm_pg_shared();
    char *sp = spool_dir("spool-feedback");
    fm_srv_t s;
    FM_REQUIRE_OK(start(&s, url, sp, NULL));
    sent_list_t l = {0};
    FM_CHECK_EQ(traffic(&s, 120, 4, 13, &l, NULL), 0);
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    /* Validation. */
    FM_CHECK_STR(feedback(c, "not-a-uuid", 0, 1, NULL, NULL), "INVALID_ARGUMENT");
    FM_CHECK_STR(feedback(c, "01234567-89ab-4def-8123-456789abcdef", 0, 1, NULL, NULL), "INVALID_ARGUMENT");
    FM_CHECK_STR(feedback(c, l.v[0].id, 0, 10, NULL, NULL), "INVALID_ARGUMENT");
    FM_CHECK_STR(feedback(c, l.v[0].id, 5000, 1, NULL, NULL), "INVALID_ARGUMENT");
    FM_CHECK_STR(feedback(c, l.v[0].id, 0, 1, "", NULL), "INVALID_ARGUMENT");
    FM_CHECK_STR(feedback(c, l.v[0].id, 0, 1, NULL, "labell"), "INVALID_ARGUMENT");
    /* Every image of the first 60 requests: right for even requests, wrong
     * for odd ones; the last 20 are sent while the database is down. */
    int expect[2] = {0}, right[2] = {0}, sent_fb = 0;
    for (int i = 0; i < 60; i++) {
        if (i == 40)
            FM_REQUIRE_OK(fm_pg_stop(pg));
        const sent_t *q = &l.v[i];
        for (int k = 0; k < q->n; k++) {
            int label = i % 2 == 0 ? q->labels[k] : (q->labels[k] + 1) % 10;
            FM_CHECK_STR(feedback(c, q->id, k, label, i % 3 ? "test" : NULL, NULL), "");
            int v = strcmp(q->version, "v1") == 0 ? 0 : 1;
            expect[v]++;
            right[v] += i % 2 == 0;
            sent_fb++;
        }
    }
    FM_CHECK(wait_metric(&s, "fm_log_rows_spooled{kind=\"feedback\"} ", '>', 0, 20000));
    FM_REQUIRE_OK(fm_pg_restart(pg));
    FM_CHECK(wait_metric(&s, "fm_log_rows_written{kind=\"feedback\"} ", '=', sent_fb, 60000));
    FM_CHECK(wait_metric(&s, "fm_log_rows_written{kind=\"prediction\"} ", '=', (double)l.images, 60000));
    fm_client_close(c);
    stop_ok(&s);
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    int64_t n = -1;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM feedback", &n));
    FM_CHECK_EQ(n, sent_fb);
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM feedback WHERE source = 'test'", &n));
    FM_CHECK(n > 0);
    fm_db_result_t *r;
    FM_REQUIRE_OK(fm_db_query(db, "SELECT model_version, labelled, correct FROM fm_accuracy(now() - interval '1 hour')",
                              0, NULL, &r));
    FM_CHECK_EQ(fm_db_result_rows(r), 2);
    for (int i = 0; i < fm_db_result_rows(r); i++) {
        int v = strcmp(fm_db_result_value(r, i, 0), "v1") == 0 ? 0 : 1;
        int64_t lab, cor;
        fm_db_result_int64(r, i, 1, &lab);
        fm_db_result_int64(r, i, 2, &cor);
        FM_CHECK_EQ(lab, expect[v]);
        FM_CHECK_EQ(cor, right[v]);
    }
    fm_db_result_free(r);
    fm_db_close(db);
    /* The same through the operator's command. */
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s db accuracy --database-url '%s' --window '1 hour'", dbtest_fmctl(), url);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 0);
    char line[128];
    snprintf(line, sizeof line, "%d", expect[0]);
    FM_CHECK_CONTAINS(out, "v1");
    FM_CHECK_CONTAINS(out, "v2");
    FM_CHECK_CONTAINS(out, line);
    FM_CHECK_CONTAINS(out, "95% interval");
    free(out);
    /* fmctl predict --stream --feedback sends the true labels of a share of
     * the images back: 100 of 200 here, all of them recorded. */
    FM_REQUIRE_OK(start(&s, url, sp, NULL));
    snprintf(cmd, sizeof cmd,
             "%s predict --server 127.0.0.1:%d --stream --data %s/fashion-mnist --split t10k --limit 200 "
             "--feedback 0.5 --connections 2 --depth 3",
             dbtest_fmctl(), s.rpc_port, fm_test_fixtures_dir());
    FM_CHECK_EQ(dbtest_run(cmd, &out), 0);
    FM_CHECK_CONTAINS(out, "100 true labels sent back");
    free(out);
    stop_ok(&s);
    FM_REQUIRE_OK(fm_db_connect(url, &db));
    FM_CHECK_OK(dbtest_query_int(db, "SELECT count(*) FROM feedback WHERE source = 'fmctl-predict'", &n));
    FM_CHECK_EQ(n, 100);
    fm_db_close(db);
    /* A server without a database refuses feedback, saying why. */
    fm_srv_t plain;
    const char *args[] = {"--stable-model", v1dir, "--canary-model", "", NULL};
    FM_REQUIRE_OK(fm_srv_start(&plain, args, NULL));
    c = fm_srv_connect(&plain);
    FM_REQUIRE(c);
    FM_CHECK_STR(feedback(c, l.v[0].id, 0, 1, NULL, NULL), "UNAVAILABLE");
    FM_CHECK_EQ(metric(&plain, "fm_log_rows_written"), -1); /* no log, no log series */
    fm_client_close(c);
    stop_ok(&plain);
    free(l.v);
    free(sp);
}

FM_TEST_MAIN({"burst_content", test_burst_content}, {"database_outage", test_database_outage},
             {"killed_mid_replay", test_killed_mid_replay}, {"killed_mid_spool", test_killed_mid_spool},
             {"deltas_spooled_at_shutdown", test_deltas_spooled_at_shutdown},
             {"latency_database_down", test_latency_database_down},
             {"spool_full", test_spool_full}, {"feedback_round_trip", test_feedback_round_trip})
