/* test_server_pipeline.c: many connections, each with many requests in
 * flight, mixed sizes, versions and image encodings; every reply must match
 * its own request (checked against the offline engine) whatever order the
 * replies come back in, and replies must be able to overtake each other. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "fm_aclient.h"
#include "fm_srv_harness.h"
#include "fm_test.h"

static fm_srv_t srv;
static int started;
static fm_dataset_t ds;
static int32_t *want[2]; /* offline labels: [0] v1, [1] v2 */

static int setup(void) {
    if (started)
        return started > 0;
    started = -1;
    if (fm_srv_fixture(&ds) != 0)
        return 0;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    want[0] = malloc(ds.n * sizeof(int32_t));
    want[1] = malloc(ds.n * sizeof(int32_t));
    if (fm_srv_offline(v1, ds.images, ds.n, want[0], NULL) || fm_srv_offline(v2, ds.images, ds.n, want[1], NULL))
        return 0;
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, "--max-batch-size", "32", NULL};
    int rc = fm_srv_start(&srv, args, NULL);
    free(v1);
    free(v2);
    if (rc != 0)
        return 0;
    started = 1;
    return 1;
}

typedef struct conn_state conn_state_t;
typedef struct req_state {
    conn_state_t *cs;
    uint32_t seq;
    size_t first, n;
    int version; /* 0 stable, 1 canary */
} req_state_t;

struct conn_state {
    fm_aclient_t *c;
    uv_loop_t *loop;
    uint32_t sent, received, max_seq_seen;
    uint32_t total, depth;
    unsigned rng;
    int *done_conns, nconns;
    uint64_t *errors, *mismatches, *out_of_order, *replies;
};

static unsigned next_rand(unsigned *s) {
    *s = *s * 1103515245u + 12345u;
    return (*s >> 8) & 0xffffff;
}

static void send_more(conn_state_t *cs);

static void on_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                     uint64_t latency_us, void *user) {
    req_state_t *rq = user;
    conn_state_t *cs = rq->cs;
    (void)c;
    (void)latency_us;
    if (status != 0 || error) {
        (*cs->errors)++;
        if (error) {
            char t[256];
            fprintf(stderr, "  error reply: %s\n", fm_mp_to_text(error, t, sizeof t));
        }
    } else {
        (*cs->replies)++;
        const fm_mp_obj_t *preds = fm_mp_map_get(result, "predictions");
        if (fm_mp_len(preds) != rq->n)
            (*cs->mismatches)++;
        const char *role = rq->version ? "canary" : "stable";
        if (!fm_mp_str_eq(fm_mp_map_get(result, "model"), role))
            (*cs->mismatches)++;
        for (uint32_t i = 0; i < fm_mp_len(preds) && i < rq->n; i++) {
            uint64_t label = 99;
            fm_mp_get_u64(fm_mp_map_get(fm_mp_at(preds, i), "label"), &label);
            if ((int32_t)label != want[rq->version][rq->first + i])
                (*cs->mismatches)++;
        }
    }
    if (rq->seq < cs->max_seq_seen)
        (*cs->out_of_order)++;
    if (rq->seq > cs->max_seq_seen)
        cs->max_seq_seen = rq->seq;
    cs->received++;
    free(rq);
    if (status != 0)
        return;
    send_more(cs);
    if (cs->received == cs->total) {
        fm_aclient_close(cs->c, NULL, NULL);
        (*cs->done_conns)++;
    }
}

static void send_more(conn_state_t *cs) {
    while (cs->sent < cs->total && cs->sent - cs->received < cs->depth) {
        req_state_t *rq = calloc(1, sizeof *rq);
        rq->cs = cs;
        rq->seq = cs->sent++;
        unsigned r = next_rand(&cs->rng);
        rq->n = 1 + r % 40;
        rq->first = next_rand(&cs->rng) % (ds.n - rq->n);
        unsigned v = next_rand(&cs->rng) % 3; /* pinned stable, pinned canary, unpinned (ratio 0: stable) */
        rq->version = v == 1;
        fm_predict_opts_t o = {.version = v == 0 ? "stable" : v == 1 ? "v2" : NULL,
                               .images_as_array = (int)(next_rand(&cs->rng) & 1),
                               .probs = (int)(next_rand(&cs->rng) % 4 == 0)};
        if (fm_aclient_predict(cs->c, ds.images + rq->first * 784, rq->n, &o, on_reply, rq) != 0) {
            (*cs->errors)++;
            free(rq);
            return;
        }
    }
}

static void on_connect(fm_aclient_t *c, int status, void *user) {
    conn_state_t *cs = user;
    if (status != 0) {
        (*cs->errors)++;
        (*cs->done_conns)++;
        return;
    }
    cs->c = c;
    send_more(cs);
}

static void test_many_pipelined_connections(void) {
    FM_REQUIRE(setup());
    enum { NCONN = 8 };
    uv_loop_t loop;
    uv_loop_init(&loop);
    conn_state_t cs[NCONN];
    int done = 0;
    uint64_t errors = 0, mismatches = 0, ooo = 0, replies = 0;
    memset(cs, 0, sizeof cs);
    for (int i = 0; i < NCONN; i++) {
        cs[i] = (conn_state_t){.loop = &loop, .total = 300, .depth = 16, .rng = 17u + (unsigned)i * 7919u,
                               .done_conns = &done, .nconns = NCONN, .errors = &errors, .mismatches = &mismatches,
                               .out_of_order = &ooo, .replies = &replies};
        fm_aclient_t *c;
        FM_REQUIRE_OK(fm_aclient_connect(&loop, "127.0.0.1", srv.rpc_port, on_connect, &cs[i], &c));
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    FM_CHECK_EQ(uv_loop_close(&loop), 0);
    FM_CHECK_EQ(done, NCONN);
    FM_CHECK_EQ(errors, 0);
    FM_CHECK_EQ(mismatches, 0);
    FM_CHECK_EQ(replies, NCONN * 300);
    printf("    %llu replies, %llu came back out of order, all matched their requests\n",
           (unsigned long long)replies, (unsigned long long)ooo);
}

/* A slow request first, fast ones after it on the same connection: the fast
 * replies must not wait for the slow one. */
typedef struct order {
    int seq[8];
    int n;
    int errors;
} order_t;

typedef struct tag {
    order_t *o;
    int id;
} tag_t;

static void on_ordered(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                       uint64_t latency_us, void *user) {
    tag_t *t = user;
    (void)result;
    (void)latency_us;
    if (status != 0 || error)
        t->o->errors++;
    t->o->seq[t->o->n++] = t->id;
    if (t->o->n == 3)
        fm_aclient_close(c, NULL, NULL);
}

static void on_connect_ordered(fm_aclient_t *c, int status, void *user) {
    static tag_t tags[3];
    order_t *o = user;
    if (status != 0) {
        o->errors++;
        return;
    }
    for (int i = 0; i < 3; i++)
        tags[i] = (tag_t){o, i};
    fm_predict_opts_t slow = {.version = "canary"}, fast = {.version = "stable"};
    fm_aclient_predict(c, ds.images, ds.n, &slow, on_ordered, &tags[0]);
    fm_aclient_call(c, "health", NULL, on_ordered, &tags[1]);
    fm_aclient_predict(c, ds.images, 1, &fast, on_ordered, &tags[2]);
}

static void test_replies_overtake(void) {
    FM_REQUIRE(setup());
    uv_loop_t loop;
    uv_loop_init(&loop);
    order_t o = {0};
    fm_aclient_t *c;
    FM_REQUIRE_OK(fm_aclient_connect(&loop, "127.0.0.1", srv.rpc_port, on_connect_ordered, &o, &c));
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    FM_CHECK_EQ(o.errors, 0);
    FM_REQUIRE(o.n == 3);
    /* The 1000-image canary request (32 CNN batches) answers last. */
    FM_CHECK_EQ(o.seq[2], 0);
    FM_CHECK(o.seq[0] == 1 || o.seq[0] == 2);
}

static void test_shutdown(void) {
    if (started <= 0)
        FM_TEST_SKIP("server not started");
    FM_CHECK_EQ(fm_srv_stop(&srv, SIGTERM, 30000), 0);
    started = 0;
    free(want[0]);
    free(want[1]);
    fm_dataset_free(&ds);
}

FM_TEST_MAIN({"many_pipelined_connections", test_many_pipelined_connections},
             {"replies_overtake", test_replies_overtake}, {"shutdown", test_shutdown})
