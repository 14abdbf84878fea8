/* test_server_sink.c: the prediction sink contract, with the real server
 * library running in this process (its loop on a second thread): one call
 * per completed request (notifications included, refused requests not), on
 * the loop thread, with the reply's request id, routing, labels and
 * latencies, the request's own pixels, and close() once at shutdown. The
 * swap API's model info and the bound-port getters are checked too. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_client.h"
#include "fm_server.h"
#include "fm_srv_harness.h"
#include "fm_test.h"

typedef struct record {
    char request_id[40], role[16], version[16], routing[16], key[32], sha[65];
    size_t n;
    int32_t labels[8];
    float probs_sum[8];
    uint8_t pixels[8][784];
    uint64_t queue_us, compute_us, total_us;
    int connected;
    pthread_t thread;
} record_t;

typedef struct rec_sink {
    fm_sink_t base; /* first member: the callbacks cast back */
    record_t rec[16];
    int calls, closes;
} rec_sink_t;

static void on_prediction(fm_sink_t *self, const fm_prediction_t *p) {
    rec_sink_t *s = (rec_sink_t *)self;
    if (s->calls >= 16)
        return;
    record_t *r = &s->rec[s->calls++];
    snprintf(r->request_id, sizeof r->request_id, "%s", p->request_id);
    snprintf(r->role, sizeof r->role, "%s", p->role);
    snprintf(r->version, sizeof r->version, "%s", p->model_version);
    snprintf(r->routing, sizeof r->routing, "%s", p->routing);
    snprintf(r->sha, sizeof r->sha, "%s", p->model_sha256);
    if (p->key)
        snprintf(r->key, sizeof r->key, "%.*s", (int)p->key_len, p->key);
    r->n = p->n;
    for (size_t i = 0; i < p->n && i < 8; i++) {
        r->labels[i] = p->labels[i];
        float sum = 0;
        for (int k = 0; k < 10; k++)
            sum += p->probs[i * 10 + (size_t)k];
        r->probs_sum[i] = sum;
        memcpy(r->pixels[i], fm_prediction_image(p, i), 784);
    }
    r->queue_us = p->queue_us;
    r->compute_us = p->compute_us;
    r->total_us = p->total_us;
    r->connected = p->client_connected;
    r->thread = pthread_self();
}

static void on_close(fm_sink_t *self) { ((rec_sink_t *)self)->closes++; }

static fm_server_t *srv;
static int exit_code = -1;
static pthread_t loop_thread;

static void *run_loop(void *arg) {
    (void)arg;
    exit_code = fm_server_run(srv);
    return NULL;
}

static void test_sink_contract(void) {
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    char *argv[] = {"fmserve", "--listen", "127.0.0.1", "--port", "0", "--http-port", "0", "--stable-model", v1,
                    "--canary-model", v2, "--log-level", "warn", NULL};
    unsetenv("AB_TEST_RATIO");
    unsetenv("FM_AUTH_TOKEN");
    unsetenv("FM_ADMIN_TOKEN");
    fm_config_t cfg;
    fm_config_action_t action;
    FM_REQUIRE_OK(fm_config_load(&cfg, 13, argv, &action));
    FM_REQUIRE_OK(fm_server_new(&cfg, &srv));
    static rec_sink_t sink = {.base = {.name = "test", .on_prediction = on_prediction, .close = on_close}};
    FM_REQUIRE_OK(fm_server_add_sink(srv, &sink.base));
    fm_model_info_t info;
    FM_REQUIRE_OK(fm_server_model_info(srv, FM_ROLE_CANARY, &info));
    FM_CHECK_STR(info.version, "v2");
    FM_CHECK_STR(info.arch, "cnn");
    FM_CHECK_EQ(strlen(info.sha256), 64);
    int port = fm_server_rpc_port(srv);
    FM_CHECK(port > 0 && fm_server_http_port(srv) > 0);
    FM_REQUIRE(pthread_create(&loop_thread, NULL, run_loop, NULL) == 0);

    fm_client_t *c;
    FM_REQUIRE_OK(fm_client_connect("127.0.0.1", port, 30000, &c));
    int32_t lab[8];
    float conf[8];
    char ids[3][40];
    fm_predict_opts_t pinned = {.version = "canary"}, keyed = {.key = "user-1"}, arr = {.images_as_array = 1};
    fm_predict_result_t r = {.labels = lab, .confidence = conf};
    FM_REQUIRE_OK(fm_client_predict(c, ds.images, 3, &pinned, &r, NULL));
    snprintf(ids[0], 40, "%s", r.request_id);
    FM_REQUIRE_OK(fm_client_predict(c, ds.images + 10 * 784, 2, &keyed, &r, NULL));
    snprintf(ids[1], 40, "%s", r.request_id);
    FM_REQUIRE_OK(fm_client_predict(c, ds.images + 20 * 784, 4, &arr, &r, NULL));
    snprintf(ids[2], 40, "%s", r.request_id);
    /* A refused request is not a prediction. */
    fm_predict_opts_t bad = {.version = "v9"};
    FM_CHECK(fm_client_predict(c, ds.images, 1, &bad, &r, NULL) != 0);
    /* A notification is computed and logged, never answered. */
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_proto_begin_notification(&b, "predict", 1);
    fm_mp_pack_map(&b, 1);
    fm_mp_pack_key(&b, "images");
    fm_mp_pack_bin(&b, ds.images + 30 * 784, 784);
    FM_REQUIRE_OK(fm_client_send_raw(c, b.data, b.len));
    fm_mp_buf_free(&b);
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *res;
    FM_REQUIRE_OK(fm_srv_call0(c, "health", &m, &e, &res)); /* after the notification on the same connection */
    fm_mp_msg_free(m);
    fm_client_close(c);

    usleep(200000);
    raise(SIGTERM); /* the loop's signal handler drains and returns */
    pthread_join(loop_thread, NULL);
    FM_CHECK_EQ(exit_code, 0);
    fm_server_free(srv);
    FM_CHECK_EQ(sink.closes, 1);

    FM_REQUIRE(sink.calls == 4);
    static const struct {
        const char *role, *routing, *key;
        size_t n, first;
    } want[4] = {{"canary", "pinned", "", 3, 0}, {"stable", "sticky", "user-1", 2, 10},
                 {"stable", "ab", "", 4, 20},    {"stable", "ab", "", 1, 30}};
    for (int i = 0; i < 4; i++) {
        record_t *rec = &sink.rec[i];
        FM_CHECK_STR(rec->role, want[i].role);
        FM_CHECK_STR(rec->routing, want[i].routing);
        FM_CHECK_STR(rec->key, want[i].key);
        FM_CHECK_STR(rec->version, strcmp(want[i].role, "canary") ? "v1" : "v2");
        FM_CHECK_EQ(rec->n, want[i].n);
        FM_CHECK_EQ(strlen(rec->sha), 64);
        if (i < 3)
            FM_CHECK_STR(rec->request_id, ids[i]);
        FM_CHECK(pthread_equal(rec->thread, loop_thread));
        FM_CHECK(rec->total_us >= rec->queue_us && rec->total_us >= rec->compute_us);
        FM_CHECK_EQ(rec->connected, 1);
        int32_t off[8];
        FM_REQUIRE_OK(fm_srv_offline(strcmp(want[i].role, "canary") ? v1 : v2,
                                     ds.images + want[i].first * 784, want[i].n, off, NULL));
        for (size_t k = 0; k < rec->n; k++) {
            FM_CHECK_EQ(rec->labels[k], off[k]);
            FM_CHECK_NEAR(rec->probs_sum[k], 1.0, 1e-4);
            FM_CHECK(memcmp(rec->pixels[k], ds.images + (want[i].first + k) * 784, 784) == 0);
        }
    }
    free(v1);
    free(v2);
    fm_dataset_free(&ds);
}

FM_TEST_MAIN({"sink_contract", test_sink_contract})
