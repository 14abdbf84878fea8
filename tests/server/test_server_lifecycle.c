/* test_server_lifecycle.c: the operator's view: /health, /ready and
 * /metrics; SIGTERM drains every accepted request and exits 0 (and a drain
 * that runs out of time answers the rest UNAVAILABLE and exits 1); SIGHUP
 * reloads models and settings under load without a failed request, and a
 * reload that fails leaves the serving version alone; start-up failures. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "fm_aclient.h"
#include "fm_srv_harness.h"
#include "fm_test.h"
#include "fm_time.h"

static fm_dataset_t ds;

static int fixture(void) { return ds.n || fm_srv_fixture(&ds) == 0; }

static void test_http_endpoints(void) {
    FM_REQUIRE(fixture());
    fm_srv_t s;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, NULL};
    FM_REQUIRE_OK(fm_srv_start(&s, args, NULL));
    free(v1);
    free(v2);
    char *body;
    static const char *const live[] = {"/health", "/healthz", "/v2/health/live"};
    for (int i = 0; i < 3; i++) {
        FM_CHECK_EQ(fm_srv_http_get(s.http_port, live[i], &body), 200);
        FM_CHECK_CONTAINS(body, "ok");
        free(body);
    }
    static const char *const ready[] = {"/ready", "/readyz", "/v2/health/ready", "/ready?verbose=1"};
    for (int i = 0; i < 4; i++) {
        FM_CHECK_EQ(fm_srv_http_get(s.http_port, ready[i], &body), 200);
        free(body);
    }
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/nope", &body), 404);
    free(body);
    FM_CHECK_EQ(fm_srv_http_raw(s.http_port, "POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", &body),
                405);
    free(body);
    FM_CHECK_EQ(fm_srv_http_raw(s.http_port, "HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &body),
                200);
    FM_CHECK_STR(body, "");
    free(body);
    FM_CHECK_EQ(fm_srv_http_raw(s.http_port, "\x01\x02 garbage\r\n\r\n", &body), 400);
    free(body);

    /* Some traffic, then the metrics a Triton user looks for. */
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    int32_t lab[32];
    float conf[32];
    for (int i = 0; i < 10; i++) {
        fm_predict_result_t r = {.labels = lab, .confidence = conf};
        fm_predict_opts_t o = {.version = i % 2 ? "canary" : "stable"};
        FM_CHECK_OK(fm_client_predict(c, ds.images, 32, &o, &r, NULL));
    }
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/metrics", &body), 200);
    static const char *const names[] = {
        "fm_inference_request_success{", "fm_inference_request_failure{", "fm_inference_count{",
        "fm_inference_exec_count{", "fm_inference_request_duration_us{", "fm_inference_queue_duration_us{",
        "fm_inference_compute_infer_duration_us{", "fm_inference_batch_size_bucket{",
        "fm_inference_request_latency_seconds_bucket{", "fm_inference_pending_request_count{",
        "fm_inference_queue_images{", "fm_model_ready{", "fm_ab_test_ratio ", "fm_server_ready ",
        "fm_rpc_connections ", "fm_rpc_requests{method=\"predict\"}", "fm_rpc_errors{code=\"OVERLOADED\"}",
        "fm_batch_executors ", "fm_model_reloads{result=\"success\"}"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (fm_srv_metric(body, names[i]) < 0)
            FM_TEST_FAIL_AT("/metrics has no series %s", names[i]);
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_inference_request_success{model=\"fashion-mnist-mlp\",version=\"v1\""), 5);
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_inference_count{model=\"fashion-mnist-cnn\",version=\"v2\""), 160);
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_inference_batch_size_count{model=\"fashion-mnist-mlp\""),
                (int)fm_srv_metric(body, "fm_inference_exec_count{model=\"fashion-mnist-mlp\""));
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_rpc_connections "), 1);
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_server_ready "), 1);
    FM_CHECK_CONTAINS(body, "# TYPE fm_inference_batch_size histogram");
    free(body);
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

/* Pipelines `count` canary requests of `images` images; returns msgid of the first. */
static uint32_t send_batch(fm_client_t *c, int count, size_t images) {
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_predict_opts_t o = {.version = "canary"};
    uint32_t first = 0;
    for (int i = 0; i < count; i++) {
        uint32_t id = fm_client_next_msgid(c);
        if (!i)
            first = id;
        fm_proto_pack_predict(&b, id, ds.images, images, &o);
    }
    fm_client_send_raw(c, b.data, b.len);
    fm_mp_buf_free(&b);
    return first;
}

/* Waits until the server has read `count` predict calls (so they were
 * accepted before a signal that follows). */
static void wait_read(const fm_srv_t *s, int count) {
    for (int i = 0; i < 400; i++) {
        char *body;
        int code = fm_srv_http_get(s->http_port, "/metrics", &body);
        double n = code == 200 ? fm_srv_metric(body, "fm_rpc_requests{method=\"predict\"}") : -1;
        free(body);
        if (n >= count)
            return;
        usleep(10000);
    }
}

static void read_codes(fm_client_t *c, int count, int *ok, int *unavailable, int *other) {
    *ok = *unavailable = *other = 0;
    for (int k = 0; k < count; k++) {
        fm_mp_msg_t *m;
        if (fm_client_recv(c, &m) != 0) {
            (*other) += count - k;
            return;
        }
        uint64_t id;
        const fm_mp_obj_t *e, *r;
        if (fm_proto_parse_response(m->root, &id, &e, &r) != 0)
            (*other)++;
        else if (!e)
            (*ok)++;
        else if (fm_mp_str_eq(fm_mp_map_get(e, "code"), "UNAVAILABLE"))
            (*unavailable)++;
        else
            (*other)++;
        fm_mp_msg_free(m);
    }
}

static void test_sigterm_drains(void) {
    FM_REQUIRE(fixture());
    fm_srv_t s;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, "--cpu-workers", "1", NULL};
    FM_REQUIRE_OK(fm_srv_start(&s, args, NULL));
    free(v1);
    free(v2);
    fm_client_t *c = fm_srv_connect(&s), *idle = fm_srv_connect(&s);
    FM_REQUIRE(c && idle);
    send_batch(c, 40, 256);
    wait_read(&s, 40);
    uint64_t t0 = fm_now_us();
    kill(s.pid, SIGTERM);
    usleep(50000);
    /* Draining: not ready, still live, no new connections, new requests on
     * open connections are turned away as UNAVAILABLE. */
    char *body;
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/ready", &body), 503);
    FM_CHECK_CONTAINS(body, "draining");
    free(body);
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/health", &body), 200);
    free(body);
    fm_client_t *late = NULL;
    FM_CHECK(fm_client_connect("127.0.0.1", s.rpc_port, 2000, &late) != 0);
    fm_client_close(late);
    int32_t lab;
    float conf;
    fm_predict_result_t r = {.labels = &lab, .confidence = &conf};
    fm_proto_error_t e;
    FM_CHECK_ERR(fm_client_predict(idle, ds.images, 1, NULL, &r, &e), FM_EUNAVAILABLE);
    FM_CHECK_EQ(e.retryable, 1);
    /* Every accepted request is answered with its result. */
    int ok, unavailable, other;
    read_codes(c, 40, &ok, &unavailable, &other);
    FM_CHECK_EQ(ok, 40);
    FM_CHECK_EQ(unavailable + other, 0);
    int code = fm_srv_stop(&s, 0, 30000);
    FM_CHECK_EQ(code, 0);
    printf("    40 requests of 256 canary images answered; exit %d %.0f ms after SIGTERM\n", code,
           (double)(fm_now_us() - t0) / 1000.0);
    FM_CHECK(fm_srv_log_contains(&s, "drained"));
    /* The drain had work to finish (the log says how much was open). */
    FM_CHECK(fm_srv_log_contains(&s, "SIGTERM: not ready any more"));
    FM_CHECK(!fm_srv_log_contains(&s, "draining 0 open requests"));
    fm_client_close(c);
    fm_client_close(idle);
}

static void test_drain_timeout(void) {
    FM_REQUIRE(fixture());
    fm_srv_t s;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, "--cpu-workers", "1", "--drain-timeout-ms",
                          "200", NULL};
    FM_REQUIRE_OK(fm_srv_start(&s, args, NULL));
    free(v1);
    free(v2);
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    send_batch(c, 40, 256);
    wait_read(&s, 40);
    kill(s.pid, SIGTERM);
    int ok, unavailable, other;
    read_codes(c, 40, &ok, &unavailable, &other);
    printf("    grace 200 ms: %d finished, %d answered UNAVAILABLE\n", ok, unavailable);
    FM_CHECK_EQ(ok + unavailable, 40); /* every request answered, none lost */
    FM_CHECK(unavailable > 0);
    FM_CHECK_EQ(other, 0);
    FM_CHECK_EQ(fm_srv_stop(&s, 0, 30000), 1);
    fm_client_close(c);
}

/* ---- SIGHUP under load ------------------------------------------------------ */

typedef struct reload_load {
    uv_loop_t loop;
    uv_timer_t timer;
    fm_aclient_t *c[4];
    int stopping, closed;
    uint64_t replies, errors, wrong, by_version[2];
    int last_versions[64]; /* a ring of the newest replies' versions */
    uint64_t t_start;
    pid_t pid;
    const char *config;
    const char *new_dir;
    int hup_sent;
    int32_t *want[2];
} reload_load_t;

static reload_load_t L;

typedef struct rq {
    size_t first;
} rq_t;

static void send_next(fm_aclient_t *c);

static void on_reply(fm_aclient_t *c, int status, const fm_mp_obj_t *error, const fm_mp_obj_t *result,
                     uint64_t latency_us, void *user) {
    rq_t *q = user;
    (void)latency_us;
    if (status == 0) {
        if (error) {
            char t[200];
            fprintf(stderr, "  error during reload: %s\n", fm_mp_to_text(error, t, sizeof t));
            L.errors++;
        } else {
            int v = fm_mp_str_eq(fm_mp_map_get(result, "model_version"), "v3") ? 1 : 0;
            if (!v && !fm_mp_str_eq(fm_mp_map_get(result, "model_version"), "v1"))
                L.wrong++;
            const fm_mp_obj_t *preds = fm_mp_map_get(result, "predictions");
            for (uint32_t i = 0; i < fm_mp_len(preds); i++) {
                uint64_t label = 99;
                fm_mp_get_u64(fm_mp_map_get(fm_mp_at(preds, i), "label"), &label);
                if ((int32_t)label != L.want[v][q->first + i])
                    L.wrong++;
            }
            L.by_version[v]++;
            L.last_versions[L.replies % 64] = v;
            L.replies++;
        }
    }
    free(q);
    if (status != 0)
        return;
    if (!L.stopping)
        send_next(c);
    else if (fm_aclient_inflight(c) == 0) {
        fm_aclient_close(c, NULL, NULL);
        if (++L.closed == 4)
            uv_close((uv_handle_t *)&L.timer, NULL);
    }
}

static void send_next(fm_aclient_t *c) {
    rq_t *q = malloc(sizeof *q);
    q->first = (size_t)(fm_now_us() % (ds.n - 8));
    if (fm_aclient_predict(c, ds.images + q->first * 784, 8, NULL, on_reply, q) != 0) {
        free(q);
        L.errors++;
    }
}

static void on_connect(fm_aclient_t *c, int status, void *user) {
    int *idx = user;
    if (status != 0) {
        L.errors++;
        return;
    }
    L.c[*idx] = c;
    for (int i = 0; i < 8; i++)
        send_next(c);
}

static void on_tick(uv_timer_t *t) {
    uint64_t el = fm_now_us() - L.t_start;
    if (!L.hup_sent && el > 300000) {
        FILE *f = fopen(L.config, "w");
        fprintf(f, "# rewritten by the test\nstable_model = %s\ncanary_model =\nab_test_ratio = 0\n", L.new_dir);
        fclose(f);
        kill(L.pid, SIGHUP);
        L.hup_sent = 1;
    }
    /* Enough replies from the new version, or give up after 20 s. */
    if ((L.hup_sent && L.by_version[1] >= 300) || el > 20000000) {
        L.stopping = 1;
        uv_timer_stop(t);
    }
}

static int models_field(const fm_srv_t *s, const char *field, char *out, size_t cap, double *ratio, int *nmodels) {
    fm_client_t *c = fm_srv_connect(s);
    if (!c)
        return -1;
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *r;
    int rc = fm_srv_call0(c, "models", &m, &e, &r);
    if (rc == 0) {
        const fm_mp_obj_t *models = fm_mp_map_get(r, "models");
        *nmodels = (int)fm_mp_len(models);
        fm_mp_copy_str(fm_mp_map_get(fm_mp_at(models, 0), field), out, cap);
        fm_mp_get_double(fm_mp_map_get(r, "configured_ab_test_ratio"), ratio);
        fm_mp_msg_free(m);
    }
    fm_client_close(c);
    return rc;
}

static void hup_and_wait(fm_srv_t *s, const char *cfg, const char *text, const char *log_needle) {
    FILE *f = fopen(cfg, "w");
    fputs(text, f);
    fclose(f);
    kill(s->pid, SIGHUP);
    for (int i = 0; i < 500 && !fm_srv_log_contains(s, log_needle); i++)
        usleep(20000);
}

static void test_sighup_reload(void) {
    FM_REQUIRE(fixture());
    const char *dir = fm_srv_models_dir();
    char *v1 = fm_test_path(dir, "v1"), *v2 = fm_test_path(dir, "v2"), *v3 = fm_test_path(dir, "v3");
    FM_REQUIRE_OK(fm_srv_write_model(v3, 0, 5, "v3"));
    L.want[0] = malloc(ds.n * sizeof(int32_t));
    L.want[1] = malloc(ds.n * sizeof(int32_t));
    FM_REQUIRE_OK(fm_srv_offline(v1, ds.images, ds.n, L.want[0], NULL));
    FM_REQUIRE_OK(fm_srv_offline(v3, ds.images, ds.n, L.want[1], NULL));
    char *cfg = fm_test_path(fm_test_tmpdir(), "fmserve.conf");
    FILE *f = fopen(cfg, "w");
    fprintf(f, "stable_model = %s\ncanary_model =\nmax_batch_size = 16\n", v1);
    fclose(f);
    fm_srv_t s;
    const char *args[] = {"--config", cfg, NULL};
    FM_REQUIRE_OK(fm_srv_start(&s, args, NULL));

    /* Load from four pipelined connections; SIGHUP with a new stable model
     * in the middle. */
    uv_loop_init(&L.loop);
    uv_timer_init(&L.loop, &L.timer);
    L.pid = s.pid;
    L.config = cfg;
    L.new_dir = v3;
    L.t_start = fm_now_us();
    static int idx[4] = {0, 1, 2, 3};
    for (int i = 0; i < 4; i++) {
        fm_aclient_t *c;
        FM_REQUIRE_OK(fm_aclient_connect(&L.loop, "127.0.0.1", s.rpc_port, on_connect, &idx[i], &c));
    }
    uv_timer_start(&L.timer, on_tick, 10, 10);
    uv_run(&L.loop, UV_RUN_DEFAULT);
    uv_loop_close(&L.loop);
    printf("    %llu replies during the reload: %llu from v1, %llu from v3; %llu errors, %llu wrong labels\n",
           (unsigned long long)L.replies, (unsigned long long)L.by_version[0], (unsigned long long)L.by_version[1],
           (unsigned long long)L.errors, (unsigned long long)L.wrong);
    FM_CHECK_EQ(L.errors, 0);
    FM_CHECK_EQ(L.wrong, 0);
    FM_CHECK(L.by_version[0] > 0);
    FM_CHECK(L.by_version[1] >= 300);
    int tail_old = 0;
    for (int i = 0; i < 64; i++)
        tail_old += L.last_versions[i] == 0;
    FM_CHECK_EQ(tail_old, 0); /* after the swap every new request goes to v3 */
    FM_CHECK(fm_srv_log_contains(&s, "stable role: fashion-mnist-mlp v1 -> v3"));

    char version[64];
    double ratio = -1;
    int nmodels = 0;
    /* A reload that fails keeps the current version serving. */
    char text[1200];
    snprintf(text, sizeof text, "stable_model = %s/does-not-exist\ncanary_model =\n", dir);
    hup_and_wait(&s, cfg, text, "keeps serving");
    FM_CHECK(fm_srv_log_contains(&s, "keeps serving"));
    FM_REQUIRE_OK(models_field(&s, "version", version, sizeof version, &ratio, &nmodels));
    FM_CHECK_STR(version, "v3");
    char *body;
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/ready", &body), 200);
    free(body);
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/metrics", &body), 200);
    FM_CHECK(fm_srv_metric(body, "fm_model_reloads{result=\"failure\"}") >= 1);
    free(body);
    /* A canary and a new split arrive by SIGHUP too; a changed option that
     * needs a restart is named in the log. */
    snprintf(text, sizeof text, "stable_model = %s\ncanary_model = %s\nab_test_ratio = 0.25\nmax_batch_size = 32\n",
             v3, v2);
    hup_and_wait(&s, cfg, text, "canary role: ");
    for (int i = 0; i < 100; i++) {
        models_field(&s, "version", version, sizeof version, &ratio, &nmodels);
        if (nmodels == 2)
            break;
        usleep(50000);
    }
    FM_CHECK_EQ(nmodels, 2);
    FM_CHECK_NEAR(ratio, 0.25, 1e-12);
    FM_CHECK(fm_srv_log_contains(&s, "max_batch_size changed in the configuration; restart"));
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(L.want[0]);
    free(L.want[1]);
    free(cfg);
    free(v1);
    free(v2);
    free(v3);
}

static void test_startup_failures(void) {
    fm_srv_t s;
    const char *missing[] = {"--stable-model", "/nonexistent/model-dir", "--canary-model", "", NULL};
    FM_CHECK(fm_srv_start(&s, missing, NULL) != 0);
    FM_CHECK(fm_srv_log_contains(&s, "/nonexistent/model-dir"));
    FM_CHECK(fm_srv_log_contains(&s, "stable model"));
    /* A canary that does not load stops the start too, saying how to run without one. */
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1");
    const char *bad_canary[] = {"--stable-model", v1, "--canary-model", "/nonexistent/v2", NULL};
    FM_CHECK(fm_srv_start(&s, bad_canary, NULL) != 0);
    FM_CHECK(fm_srv_log_contains(&s, "--canary-model ''"));
    free(v1);
}

FM_TEST_MAIN({"http_endpoints", test_http_endpoints}, {"sigterm_drains", test_sigterm_drains},
             {"drain_timeout", test_drain_timeout}, {"sighup_reload", test_sighup_reload},
             {"startup_failures", test_startup_failures})
