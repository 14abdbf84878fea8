/* test_server_batching.c: the dynamic batcher's policy, observed from
 * outside: with max_queue_delay_us 0, requests that queue while executors
 * are busy go out together; with a delay, a lone request waits for it while
 * a full batch goes at once; max_batch_size 1 means one image per batch. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_srv_harness.h"
#include "fm_test.h"
#include "fm_time.h"

static fm_dataset_t ds;

static int start(fm_srv_t *s, const char *const *extra) {
    if (!ds.n && fm_srv_fixture(&ds) != 0)
        return 0;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1");
    const char *args[32] = {"--stable-model", v1, "--canary-model", ""};
    int a = 4;
    for (int i = 0; extra[i] && a < 31; i++)
        args[a++] = extra[i];
    args[a] = NULL;
    int rc = fm_srv_start(s, args, NULL);
    free(v1);
    return rc == 0;
}

static double metric(const fm_srv_t *s, const char *name) {
    char *body;
    double v = -1;
    if (fm_srv_http_get(s->http_port, "/metrics", &body) == 200)
        v = fm_srv_metric(body, name);
    free(body);
    return v;
}

/* Pipelines `count` one-image requests in one write; returns the largest
 * latency seen (µs) and fills queue_us of the first reply. */
static uint64_t burst(fm_client_t *c, int count, uint64_t *first_queue_us) {
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    for (int i = 0; i < count; i++)
        fm_proto_pack_predict(&b, fm_client_next_msgid(c), ds.images + (size_t)i * 784, 1, NULL);
    uint64_t t0 = fm_now_us(), worst = 0;
    if (fm_client_send_raw(c, b.data, b.len) != 0)
        return UINT64_MAX;
    fm_mp_buf_free(&b);
    for (int i = 0; i < count; i++) {
        fm_mp_msg_t *m;
        if (fm_client_recv(c, &m) != 0)
            return UINT64_MAX;
        uint64_t id;
        const fm_mp_obj_t *e, *r;
        if (fm_proto_parse_response(m->root, &id, &e, &r) != 0 || e)
            worst = UINT64_MAX;
        else if (i == 0 && first_queue_us)
            fm_mp_get_u64(fm_mp_map_get(r, "queue_us"), first_queue_us);
        fm_mp_msg_free(m);
        uint64_t t = fm_now_us() - t0;
        if (t > worst && worst != UINT64_MAX)
            worst = t;
    }
    return worst;
}

static void test_zero_delay_batches_what_queued(void) {
    fm_srv_t s;
    const char *extra[] = {"--cpu-workers", "1", "--max-batch-size", "64", NULL};
    FM_REQUIRE(start(&s, extra));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    double before = metric(&s, "fm_inference_exec_count{");
    FM_REQUIRE(burst(c, 300, NULL) != UINT64_MAX);
    double batches = metric(&s, "fm_inference_exec_count{") - before;
    double avg = metric(&s, "fm_inference_batch_size_sum{") / metric(&s, "fm_inference_batch_size_count{");
    printf("    300 pipelined one-image requests ran in %.0f batches (mean batch %.1f images)\n", batches, avg);
    FM_CHECK(batches < 300); /* while the worker ran one batch, the next ones queued up */
    FM_CHECK(batches >= 5);  /* and never more than 64 at a time */
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

static void test_delay_waits_unless_full(void) {
    fm_srv_t s;
    const char *extra[] = {"--max-queue-delay-us", "300000", "--max-batch-size", "64", NULL};
    FM_REQUIRE(start(&s, extra));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    /* A lone request waits for company for the whole delay. */
    uint64_t queue_us = 0;
    uint64_t lone = burst(c, 1, &queue_us);
    FM_CHECK(lone != UINT64_MAX);
    printf("    lone request: %.1f ms (queue_us %llu)\n", lone / 1000.0, (unsigned long long)queue_us);
    FM_CHECK(queue_us >= 290000);
    FM_CHECK(lone >= 290000);
    /* A full batch does not wait. */
    double before = metric(&s, "fm_inference_exec_count{");
    uint64_t full = burst(c, 64, NULL);
    printf("    64 pipelined requests: all answered in %.1f ms\n", full / 1000.0);
    FM_CHECK(full < 250000);
    FM_CHECK_EQ(metric(&s, "fm_inference_exec_count{") - before, 1);
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

static void test_batch_size_one(void) {
    fm_srv_t s;
    const char *extra[] = {"--max-batch-size", "1", NULL};
    FM_REQUIRE(start(&s, extra));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    int32_t lab[40];
    float conf[40];
    fm_predict_result_t r = {.labels = lab, .confidence = conf};
    FM_REQUIRE_OK(fm_client_predict(c, ds.images, 40, NULL, &r, NULL));
    FM_CHECK_EQ((int)metric(&s, "fm_inference_exec_count{"), 40);
    FM_CHECK_EQ((int)metric(&s, "fm_inference_batch_size_bucket{model=\"fashion-mnist-mlp\",version=\"v1\",role=\"stable\",le=\"1\"}"), 40);
    int32_t want[40];
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1");
    FM_REQUIRE_OK(fm_srv_offline(v1, ds.images, 40, want, NULL));
    free(v1);
    for (int i = 0; i < 40; i++)
        FM_CHECK_EQ(lab[i], want[i]);
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

FM_TEST_MAIN({"zero_delay_batches_what_queued", test_zero_delay_batches_what_queued},
             {"delay_waits_unless_full", test_delay_waits_unless_full}, {"batch_size_one", test_batch_size_one})
