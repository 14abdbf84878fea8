/* test_cuda_server.c: the whole server on the GPU. A real fmserve with
 * --backend cuda serves the shipped models; its answers are compared with
 * the CPU engine's on the fixture images (and the 10,000 test images when
 * FM_DATA is set), first one client at a time in requests of many sizes,
 * then from several clients at once with pipelined requests, so that every
 * stream has batches in flight. Skips, saying why, where no GPU is usable. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_client.h"
#include "fm_error.h"
#include "fm_gpu_test.h"
#include "fm_proto.h"
#include "fm_srv_harness.h"
#include "fm_test.h"

#define V1_DIR FM_SOURCE_DIR "/models/v1"
#define V2_DIR FM_SOURCE_DIR "/models/v2"

typedef struct expected {
    const uint8_t *pixels;
    size_t n;
    int32_t *labels[2]; /* CPU engine, per version (0 = v1, 1 = v2) */
    float *conf[2];
} expected_t;

static fm_srv_t srv;
static int started;
static expected_t want;

static const char *skip_reason(void) {
    const char *why = fm_gpu_skip_reason();
    if (why)
        return why;
    if (access(V1_DIR "/model.json", R_OK) != 0 || access(V2_DIR "/model.json", R_OK) != 0)
        return "the shipped models (models/v1, models/v2) are not in the source tree";
    return NULL;
}

/* One fmserve with --backend cuda for every case, and the CPU engine's
 * answers for the images the cases send. */
static int start_once(void) {
    if (started)
        return started > 0;
    started = -1;
    size_t available = 0;
    want.n = 1000;
    uint8_t *px = fm_gpu_images(want.n, 1, &available);
    if (!px)
        return 0;
    if (available > want.n) {
        free(px);
        want.n = available;
        if (!(px = fm_gpu_images(want.n, 1, &available)))
            return 0;
    }
    want.pixels = px;
    const char *dirs[2] = {V1_DIR, V2_DIR};
    for (int v = 0; v < 2; v++) {
        want.labels[v] = malloc(want.n * sizeof *want.labels[v]);
        want.conf[v] = malloc(want.n * sizeof *want.conf[v]);
        if (fm_srv_offline(dirs[v], px, want.n, want.labels[v], want.conf[v]) != 0) {
            FM_TEST_FAIL_AT("CPU engine on %s: %s", dirs[v], fm_last_error());
            return 0;
        }
    }
    const char *args[] = {"--backend",        "cuda", "--stable-model", V1_DIR, "--canary-model", V2_DIR,
                          "--max-batch-size", "256",  "--cuda-streams", "4",    NULL};
    if (fm_srv_start(&srv, args, NULL) != 0) {
        FM_TEST_FAIL_AT("fmserve --backend cuda did not start");
        return 0;
    }
    started = 1;
    return 1;
}

/* Compares the server's answers for images [first, first + n) of version v
 * with the CPU engine's; counts class differences and confidence gaps. */
static void compare(int v, size_t first, size_t n, const int32_t *labels, const float *conf, size_t *label_diff,
                    double *max_gap) {
    for (size_t k = 0; k < n; k++) {
        size_t i = first + k;
        *label_diff += labels[k] != want.labels[v][i];
        double gap = (double)conf[k] - (double)want.conf[v][i];
        if (gap < 0)
            gap = -gap;
        if (labels[k] == want.labels[v][i] && gap > *max_gap)
            *max_gap = gap;
    }
}

/* Every image once per version, in requests of 1, 3, 127, 256 and 300
 * images (the last split across two batches), against the CPU engine:
 * the same class on >= 99.9 % and confidences within the fp32 tolerance. */
static void test_matches_cpu_engine(void) {
    const char *why = skip_reason();
    if (why)
        FM_TEST_SKIP(why);
    FM_REQUIRE(start_once());
    fm_client_t *c = fm_srv_connect(&srv);
    FM_REQUIRE(c);
    static const size_t sizes[] = {1, 3, 127, 256, 300};
    static const char *const versions[2] = {"v1", "v2"};
    int32_t *labels = malloc(300 * sizeof *labels);
    float *conf = malloc(300 * sizeof *conf);
    double tol = fm_gpu_tolerance(FM_PRECISION_FP32).max_abs;
    for (int v = 0; v < 2; v++) {
        size_t label_diff = 0, compared = 0, k = 0;
        double max_gap = 0;
        for (size_t i = 0; i < want.n; k++) {
            size_t n = sizes[k % 5];
            if (n > want.n - i)
                n = want.n - i;
            fm_predict_opts_t o = {.version = versions[v], .images_as_array = (int)(k & 1)};
            fm_predict_result_t r = {.labels = labels, .confidence = conf};
            if (fm_client_predict(c, want.pixels + i * 784, n, &o, &r, NULL) != 0) {
                FM_TEST_FAIL_AT("predict of images %zu..%zu on %s: %s", i, i + n, versions[v], fm_last_error());
                break;
            }
            FM_CHECK_EQ(r.n, n);
            FM_CHECK_STR(r.model_version, versions[v]);
            compare(v, i, n, labels, conf, &label_diff, &max_gap);
            compared += n;
            i += n;
        }
        fprintf(stderr, "  %s: %zu images, %zu classes differ from the CPU engine, largest confidence gap %.2e\n",
                versions[v], compared, label_diff, max_gap);
        FM_CHECK_EQ(compared, want.n);
        FM_CHECK(label_diff * 1000 <= compared);
        FM_CHECK(max_gap <= tol);
    }
    free(labels);
    free(conf);
    fm_client_close(c);
}

typedef struct load {
    int id, requests, failures;
    size_t label_diff, images;
} load_t;

/* One client: pipelines `depth` requests of 1..64 images on alternating
 * versions and checks each answer against the CPU engine. */
static void *load_client(void *arg) {
    load_t *l = arg;
    enum { DEPTH = 8 };
    fm_client_t *c = fm_srv_connect(&srv);
    if (!c) {
        l->failures++;
        return NULL;
    }
    static const char *const versions[2] = {"v1", "v2"};
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    uint32_t ids[DEPTH];
    size_t first[DEPTH], count[DEPTH];
    int ver[DEPTH];
    int32_t labels[64];
    float conf[64];
    int sent = 0, got = 0;
    unsigned seed = 2654435761u * (unsigned)(l->id + 1);
    while (got < l->requests) {
        while (sent < l->requests && sent - got < DEPTH) {
            int s = sent % DEPTH;
            seed = seed * 1103515245u + 12345u;
            count[s] = 1 + (seed >> 8) % 64;
            first[s] = (seed >> 4) % (want.n - count[s]);
            ver[s] = (l->id + sent) & 1;
            fm_predict_opts_t o = {.version = versions[ver[s]]};
            ids[s] = fm_client_next_msgid(c);
            b.len = 0;
            fm_proto_pack_predict(&b, ids[s], want.pixels + first[s] * 784, count[s], &o);
            if (fm_client_send_raw(c, b.data, b.len) != 0) {
                l->failures++;
                goto out;
            }
            sent++;
        }
        int s = got % DEPTH;
        fm_mp_msg_t *msg;
        if (fm_client_wait(c, ids[s], &msg) != 0) {
            l->failures++;
            goto out;
        }
        uint64_t mid;
        const fm_mp_obj_t *err, *res;
        fm_predict_result_t r = {.labels = labels, .confidence = conf};
        if (fm_proto_parse_response(msg->root, &mid, &err, &res) != 0 || err ||
            fm_proto_read_predict(res, 64, &r) != 0 || r.n != count[s]) {
            l->failures++;
        } else {
            double gap = 0;
            compare(ver[s], first[s], count[s], labels, conf, &l->label_diff, &gap);
            l->images += count[s];
        }
        fm_mp_msg_free(msg);
        got++;
    }
out:
    fm_mp_buf_free(&b);
    fm_client_close(c);
    return NULL;
}

/* Eight clients, eight requests in flight each, both versions: every
 * answer arrives and is right, and the server stops cleanly afterwards. */
static void test_concurrent_load(void) {
    const char *why = skip_reason();
    if (why)
        FM_TEST_SKIP(why);
    FM_REQUIRE(start_once());
    enum { CLIENTS = 8 };
    load_t l[CLIENTS];
    pthread_t t[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        l[i] = (load_t){.id = i, .requests = 500};
        FM_REQUIRE(pthread_create(&t[i], NULL, load_client, &l[i]) == 0);
    }
    size_t images = 0, label_diff = 0;
    int failures = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(t[i], NULL);
        images += l[i].images;
        label_diff += l[i].label_diff;
        failures += l[i].failures;
    }
    fprintf(stderr, "  %d clients: %zu images answered, %zu classes differ from the CPU engine, %d failures\n",
            CLIENTS, images, label_diff, failures);
    FM_CHECK_EQ(failures, 0);
    FM_CHECK(label_diff * 1000 <= images);
    FM_CHECK(fm_srv_alive(&srv));
    int code = fm_srv_stop(&srv, SIGTERM, 60000);
    if (code != 0)
        fm_srv_dump_log(&srv);
    FM_CHECK_EQ(code, 0);
    started = 0;
}

FM_TEST_MAIN({"matches_cpu_engine", test_matches_cpu_engine}, {"concurrent_load", test_concurrent_load})
