/* test_server_limits.c: overload and limits: a full queue answers
 * OVERLOADED at once, expired deadlines are answered DEADLINE_EXCEEDED
 * without computing, the connection limit, the in-flight cap (reading stops,
 * then resumes), and a client that never reads cannot grow the server's
 * memory without bound. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fm_srv_harness.h"
#include "fm_test.h"
#include "fm_time.h"

static fm_dataset_t ds;

static int start(fm_srv_t *s, const char *const *extra) {
    if (!ds.n && fm_srv_fixture(&ds) != 0)
        return 0;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    const char *args[32] = {"--stable-model", v1, "--canary-model", v2};
    int a = 4;
    for (int i = 0; extra && extra[i] && a < 31; i++)
        args[a++] = extra[i];
    args[a] = NULL;
    int rc = fm_srv_start(s, args, NULL);
    free(v1);
    free(v2);
    return rc == 0;
}

static long rss_kb(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* Pipelines `count` predicts and returns the error code (or "OK") of each, in
 * msgid order; order[] receives the arrival rank of each reply. */
static int pipeline(fm_client_t *c, int count, size_t images, const fm_predict_opts_t *o, char codes[][24],
                    int *order) {
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    uint32_t first = 0;
    for (int i = 0; i < count; i++) {
        uint32_t id = fm_client_next_msgid(c);
        if (i == 0)
            first = id;
        fm_proto_pack_predict(&b, id, ds.images + ((size_t)i * images % (ds.n - images)) * 784, images, o);
    }
    int rc = fm_client_send_raw(c, b.data, b.len);
    fm_mp_buf_free(&b);
    if (rc)
        return rc;
    for (int k = 0; k < count; k++) {
        fm_mp_msg_t *m;
        if ((rc = fm_client_recv(c, &m)) != 0)
            return rc;
        uint64_t id;
        const fm_mp_obj_t *e, *r;
        if (fm_proto_parse_response(m->root, &id, &e, &r) != 0 || id < first || id >= first + (uint32_t)count) {
            fm_mp_msg_free(m);
            return FM_EFORMAT;
        }
        int i = (int)(id - first);
        if (e)
            fm_mp_copy_str(fm_mp_map_get(e, "code"), codes[i], 24);
        else
            snprintf(codes[i], 24, "OK");
        order[i] = k;
        fm_mp_msg_free(m);
    }
    return 0;
}

static void test_queue_full_is_overloaded(void) {
    fm_srv_t s;
    const char *extra[] = {"--max-queue-size", "64", "--max-images-per-request", "8", "--max-batch-size", "8",
                           "--cpu-workers", "1", NULL};
    FM_REQUIRE(start(&s, extra));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    enum { N = 100 };
    static char codes[N][24];
    static int order[N];
    fm_predict_opts_t o = {.version = "canary"};
    FM_REQUIRE_OK(pipeline(c, N, 8, &o, codes, order));
    int ok = 0, over = 0, last_ok = -1, first_over = N;
    for (int i = 0; i < N; i++) {
        if (!strcmp(codes[i], "OK")) {
            ok++;
            if (order[i] > last_ok)
                last_ok = order[i];
        } else if (!strcmp(codes[i], "OVERLOADED")) {
            over++;
            if (order[i] < first_over)
                first_over = order[i];
        } else {
            FM_TEST_FAIL_AT("request %d: unexpected %s", i, codes[i]);
        }
    }
    printf("    %d accepted, %d OVERLOADED\n", ok, over);
    FM_CHECK(ok >= 8);   /* a queue of 64 images holds 8 requests of 8 */
    FM_CHECK(over >= 1);
    /* Rejections do not wait for the queue: they overtake accepted work. */
    FM_CHECK(first_over < last_ok);
    char *body;
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/metrics", &body), 200);
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_inference_request_failure{model=\"fashion-mnist-cnn\",version=\"v2\",role=\"canary\",reason=\"OVERLOADED\"}"), over);
    free(body);
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

static void test_deadlines(void) {
    fm_srv_t s;
    const char *extra[] = {"--max-batch-size", "16", "--cpu-workers", "1", NULL};
    FM_REQUIRE(start(&s, extra));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    /* Occupy the only worker with a long canary request, then queue short
     * deadlines behind it. */
    enum { N = 21 };
    static char codes[N][24];
    static int order[N];
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    uint32_t first = fm_client_next_msgid(c);
    fm_predict_opts_t slow = {.version = "canary"};
    fm_proto_pack_predict(&b, first, ds.images, 1000, &slow);
    for (int i = 1; i < N; i++) {
        fm_predict_opts_t o = {.version = "canary", .deadline_ms = i <= 10 ? 1 : 600000};
        fm_proto_pack_predict(&b, fm_client_next_msgid(c), ds.images + (size_t)i * 784, 1, &o);
    }
    FM_REQUIRE_OK(fm_client_send_raw(c, b.data, b.len));
    fm_mp_buf_free(&b);
    for (int k = 0; k < N; k++) {
        fm_mp_msg_t *m;
        FM_REQUIRE_OK(fm_client_recv(c, &m));
        uint64_t id;
        const fm_mp_obj_t *e, *r;
        FM_REQUIRE_OK(fm_proto_parse_response(m->root, &id, &e, &r));
        int i = (int)(id - first);
        FM_REQUIRE(i >= 0 && i < N);
        if (e)
            fm_mp_copy_str(fm_mp_map_get(e, "code"), codes[i], 24);
        else
            snprintf(codes[i], 24, "OK");
        order[i] = k;
        fm_mp_msg_free(m);
    }
    FM_CHECK_STR(codes[0], "OK");
    for (int i = 1; i <= 10; i++) {
        FM_CHECK_STR(codes[i], "DEADLINE_EXCEEDED");
        FM_CHECK(order[i] < order[0]); /* answered while the long request still ran */
    }
    for (int i = 11; i < N; i++)
        FM_CHECK_STR(codes[i], "OK");
    /* Expired requests were never computed: 1000 + 10 images in all. */
    char *body;
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/metrics", &body), 200);
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_inference_count{model=\"fashion-mnist-cnn\""), 1010);
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_inference_request_failure{model=\"fashion-mnist-cnn\",version=\"v2\",role=\"canary\",reason=\"DEADLINE_EXCEEDED\"}"), 10);
    free(body);
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

static void test_max_connections(void) {
    fm_srv_t s;
    const char *extra[] = {"--max-connections", "3", NULL};
    FM_REQUIRE(start(&s, extra));
    fm_client_t *c[3];
    for (int i = 0; i < 3; i++) {
        c[i] = fm_srv_connect(&s);
        FM_REQUIRE(c[i]);
        fm_mp_msg_t *m;
        const fm_mp_obj_t *e, *r;
        FM_REQUIRE_OK(fm_srv_call0(c[i], "health", &m, &e, &r)); /* accepted for sure */
        fm_mp_msg_free(m);
    }
    /* The fourth is told OVERLOADED in an "error" notification and closed. */
    int fd = fm_srv_socket(&s);
    FM_REQUIRE(fd >= 0);
    fm_mp_limits_t lim = {.max_frame_bytes = 65536, .max_objects = 1024, .max_depth = 8};
    fm_mp_reader_t *rd;
    fm_mp_reader_new(&lim, 4096, &rd);
    fm_mp_msg_t *m;
    FM_CHECK_EQ(fm_srv_read_frame(fd, rd, 10000, &m), 1);
    if (m) {
        char text[256];
        fm_mp_to_text(m->root, text, sizeof text);
        FM_CHECK_CONTAINS(text, "\"error\"");
        FM_CHECK_CONTAINS(text, "OVERLOADED");
        fm_mp_msg_free(m);
    }
    FM_CHECK_EQ(fm_srv_read_frame(fd, rd, 10000, &m), 0);
    fm_mp_reader_free(rd);
    close(fd);
    /* Freeing a slot lets the next one in. */
    fm_client_close(c[0]);
    usleep(100000);
    fm_client_t *again = fm_srv_connect(&s);
    FM_REQUIRE(again);
    const fm_mp_obj_t *e, *r;
    FM_CHECK_OK(fm_srv_call0(again, "health", &m, &e, &r));
    fm_mp_msg_free(m);
    fm_client_close(again);
    fm_client_close(c[1]);
    fm_client_close(c[2]);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

static void test_inflight_cap(void) {
    fm_srv_t s;
    const char *extra[] = {"--max-inflight-per-connection", "4", "--cpu-workers", "1", NULL};
    FM_REQUIRE(start(&s, extra));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    enum { N = 60 };
    static char codes[N][24];
    static int order[N];
    fm_predict_opts_t o = {.version = "canary"};
    FM_REQUIRE_OK(pipeline(c, N, 16, &o, codes, order));
    for (int i = 0; i < N; i++)
        FM_CHECK_STR(codes[i], "OK");
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *r;
    char *body;
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/metrics", &body), 200);
    FM_CHECK(fm_srv_metric(body, "fm_rpc_backpressure_pauses ") >= 1);
    free(body);
    FM_CHECK_OK(fm_srv_call0(c, "health", &m, &e, &r));
    fm_mp_msg_free(m);
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

static void test_client_that_never_reads(void) {
    fm_srv_t s;
    const char *extra[] = {"--max-write-buffer-bytes", "65536", NULL};
    FM_REQUIRE(start(&s, extra));
    long before = rss_kb(s.pid);
    int fd = fm_srv_socket(&s);
    FM_REQUIRE(fd >= 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    /* Requests with probs make large replies; send as fast as the server
     * takes them for two seconds, never reading a byte. */
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_predict_opts_t o = {.probs = 1};
    for (int i = 0; i < 200; i++)
        fm_proto_pack_predict(&b, (uint32_t)i, ds.images, 64, &o);
    size_t sent_total = 0, off = 0;
    uint64_t until = fm_now_us() + 2000000;
    while (fm_now_us() < until) {
        ssize_t n = send(fd, b.data + off, b.len - off, MSG_NOSIGNAL);
        if (n > 0) {
            sent_total += (size_t)n;
            off = (off + (size_t)n) % b.len;
        } else {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            poll(&p, 1, 20);
        }
    }
    fm_mp_buf_free(&b);
    long during = rss_kb(s.pid);
    printf("    client wrote %.1f MB without reading; server RSS %ld -> %ld kB\n", (double)sent_total / 1e6, before,
           during);
    /* What the server holds is bounded by its limits (128 requests of
     * ~50 KB, 64 KiB of replies, socket buffers), not by what was sent. */
    FM_CHECK(during - before < 64 * 1024);
    /* Others are still served while that client hangs. */
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *r;
    FM_CHECK_OK(fm_srv_call0(c, "health", &m, &e, &r));
    fm_mp_msg_free(m);
    fm_client_close(c);
    close(fd);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

static void test_images_per_request(void) {
    fm_srv_t s;
    const char *extra[] = {"--max-images-per-request", "16", NULL};
    FM_REQUIRE(start(&s, extra));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    int32_t lab[17];
    float conf[17];
    fm_predict_result_t r = {.labels = lab, .confidence = conf};
    fm_proto_error_t e;
    FM_CHECK_OK(fm_client_predict(c, ds.images, 16, NULL, &r, &e));
    FM_CHECK_ERR(fm_client_predict(c, ds.images, 17, NULL, &r, &e), FM_EINVAL);
    FM_CHECK_STR(e.code, "INVALID_ARGUMENT");
    FM_CHECK_CONTAINS(e.message, "1..16");
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

FM_TEST_MAIN({"queue_full_is_overloaded", test_queue_full_is_overloaded}, {"deadlines", test_deadlines},
             {"max_connections", test_max_connections}, {"inflight_cap", test_inflight_cap},
             {"client_that_never_reads", test_client_that_never_reads},
             {"images_per_request", test_images_per_request})
