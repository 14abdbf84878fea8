/* test_server_routing.c: the A/B split (observed canary share within a
 * stated statistical bound of AB_TEST_RATIO), sticky keys (never switch
 * version, agree with the documented hash, and survive a restart), version
 * pins, authentication and the admin set_split. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_client.h"
#include "fm_hash.h"
#include "fm_srv_harness.h"
#include "fm_test.h"

static fm_dataset_t ds;

static int start(fm_srv_t *s, const char *const *env) {
    if (!ds.n && fm_srv_fixture(&ds) != 0)
        return 0;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, NULL};
    int rc = fm_srv_start(s, args, env);
    free(v1);
    free(v2);
    return rc == 0;
}

/* Sends `count` one-image requests with `opts` (key may vary per request via
 * keys[]), pipelined `window` at a time, and records the role of each reply
 * (1 = canary). Returns the number of errors. */
static int send_many(fm_client_t *c, size_t count, const fm_predict_opts_t *opts, const char *const *keys,
                     int *canary, char routing[][8]) {
    int errors = 0;
    const size_t window = 100;
    for (size_t base = 0; base < count; base += window) {
        size_t n = count - base < window ? count - base : window;
        uint32_t ids[100];
        fm_mp_buf_t b;
        fm_mp_buf_init(&b);
        for (size_t i = 0; i < n; i++) {
            fm_predict_opts_t o = *opts;
            if (keys)
                o.key = keys[base + i];
            ids[i] = fm_client_next_msgid(c);
            fm_proto_pack_predict(&b, ids[i], ds.images + ((base + i) % ds.n) * 784, 1, &o);
        }
        if (fm_client_send_raw(c, b.data, b.len) != 0) {
            fm_mp_buf_free(&b);
            return (int)count;
        }
        fm_mp_buf_free(&b);
        for (size_t i = 0; i < n; i++) {
            fm_mp_msg_t *m;
            uint64_t id;
            const fm_mp_obj_t *e, *r;
            if (fm_client_wait(c, ids[i], &m) != 0)
                return (int)count;
            if (fm_proto_parse_response(m->root, &id, &e, &r) != 0 || e) {
                errors++;
            } else {
                canary[base + i] = fm_mp_str_eq(fm_mp_map_get(r, "model"), "canary");
                int version_ok = fm_mp_str_eq(fm_mp_map_get(r, "model_version"), canary[base + i] ? "v2" : "v1");
                if (!version_ok)
                    errors++;
                if (routing)
                    fm_mp_copy_str(fm_mp_map_get(r, "routing"), routing[base + i], 8);
            }
            fm_mp_msg_free(m);
        }
    }
    return errors;
}

static void test_ab_share(void) {
    fm_srv_t s;
    const char *env[] = {"AB_TEST_RATIO=0.3", NULL};
    FM_REQUIRE(start(&s, env));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    enum { N = 4000 };
    static int canary[N];
    static char routing[N][8];
    fm_predict_opts_t o = {0};
    FM_CHECK_EQ(send_many(c, N, &o, NULL, canary, routing), 0);
    int k = 0, ab = 0;
    for (int i = 0; i < N; i++) {
        k += canary[i];
        ab += strcmp(routing[i], "ab") == 0;
    }
    /* X ~ Binomial(4000, 0.3): sd = sqrt(4000*0.3*0.7) = 28.98. Five sd
     * (+-145 requests, a share of 0.3 +- 0.036) fails a correct server with
     * probability below 1e-6. */
    double sd = sqrt(N * 0.3 * 0.7);
    printf("    canary share %.4f of %d (expected 0.3, bound +-%.4f)\n", (double)k / N, N, 5 * sd / N);
    FM_CHECK(fabs(k - N * 0.3) <= 5 * sd);
    FM_CHECK_EQ(ab, N);
    /* /metrics counts the same decisions. */
    char *body;
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/metrics", &body), 200);
    FM_CHECK_EQ((int)fm_srv_metric(body, "fm_inference_routed{model=\"fashion-mnist-cnn\",version=\"v2\",role=\"canary\",route=\"ab\"}"), k);
    free(body);
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

/* The documented rule: canary when the first 8 bytes of SHA-256(key), as a
 * big-endian integer divided by 2^64, are below the ratio. */
static int expected_canary(const char *key, double ratio) {
    char hex[FM_SHA256_HEX_LEN + 1];
    fm_sha256_hex(key, strlen(key), hex);
    uint64_t v = 0;
    for (int i = 0; i < 16; i++)
        v = (v << 4) | (uint64_t)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
    return (double)v / 18446744073709551616.0 < ratio;
}

static void test_sticky_keys(void) {
    enum { KEYS = 300, REPEAT = 4 };
    static char keybuf[KEYS][24];
    static const char *keys[KEYS * REPEAT];
    static int canary[KEYS * REPEAT], canary2[KEYS * REPEAT];
    static char routing[KEYS * REPEAT][8];
    for (int i = 0; i < KEYS; i++)
        snprintf(keybuf[i], sizeof keybuf[i], "user-%d", i * 7 + 3);
    for (int r = 0; r < REPEAT; r++)
        for (int i = 0; i < KEYS; i++)
            keys[r * KEYS + i] = keybuf[i];
    fm_predict_opts_t o = {0};
    const char *env[] = {"AB_TEST_RATIO=0.5", NULL};
    for (int run = 0; run < 2; run++) { /* the second run is a fresh process */
        fm_srv_t s;
        FM_REQUIRE(start(&s, env));
        fm_client_t *c = fm_srv_connect(&s);
        FM_REQUIRE(c);
        int *out = run ? canary2 : canary;
        FM_CHECK_EQ(send_many(c, KEYS * REPEAT, &o, keys, out, routing), 0);
        fm_client_close(c);
        FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    }
    int switched = 0, across_restart = 0, rule = 0, nc = 0, sticky = 0;
    for (int i = 0; i < KEYS * REPEAT; i++) {
        switched += canary[i] != canary[i % KEYS];
        across_restart += canary[i] != canary2[i];
        rule += canary[i] != expected_canary(keys[i], 0.5);
        sticky += strcmp(routing[i], "sticky") == 0;
    }
    for (int i = 0; i < KEYS; i++)
        nc += canary[i];
    FM_CHECK_EQ(switched, 0);
    FM_CHECK_EQ(across_restart, 0);
    FM_CHECK_EQ(rule, 0);
    FM_CHECK_EQ(sticky, KEYS * REPEAT);
    /* Keys split too: Binomial(300, 0.5), sd 8.66, bound 5 sd. */
    FM_CHECK(fabs(nc - KEYS * 0.5) <= 5 * sqrt(KEYS * 0.25));
    printf("    %d of %d keys on the canary; no key switched version, across %d requests and a restart\n", nc, KEYS,
           KEYS * REPEAT);
}

static int predict_code(fm_client_t *c, const char *version, char *code, size_t cap, char *role, size_t rcap) {
    int32_t lab;
    float conf;
    fm_predict_result_t r = {.labels = &lab, .confidence = &conf};
    fm_predict_opts_t o = {.version = version};
    fm_proto_error_t e;
    memset(&e, 0, sizeof e);
    int rc = fm_client_predict(c, ds.images, 1, &o, &r, &e);
    snprintf(code, cap, "%s", rc ? e.code : "OK");
    snprintf(role, rcap, "%s", rc ? "" : r.model);
    return rc;
}

static void test_pins(void) {
    fm_srv_t s;
    const char *env[] = {"AB_TEST_RATIO=0.5", NULL};
    FM_REQUIRE(start(&s, env));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    char code[32], role[16];
    static const char *const pins[][2] = {{"stable", "stable"}, {"canary", "canary"}, {"v1", "stable"}, {"v2", "canary"}};
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 20; k++) {
            predict_code(c, pins[i][0], code, sizeof code, role, sizeof role);
            FM_CHECK_STR(code, "OK");
            FM_CHECK_STR(role, pins[i][1]);
        }
    predict_code(c, "v9", code, sizeof code, role, sizeof role);
    FM_CHECK_STR(code, "NOT_FOUND");
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

static int call1(fm_client_t *c, const char *method, const char *sarg, double darg, char *code, size_t cap) {
    fm_mp_buf_t p;
    fm_mp_buf_init(&p);
    fm_mp_pack_array(&p, 1);
    if (sarg)
        fm_mp_pack_cstr(&p, sarg);
    else
        fm_mp_pack_double(&p, darg);
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *r;
    int rc = fm_client_call(c, method, &p, &m, &e, &r);
    fm_mp_buf_free(&p);
    if (rc)
        return rc;
    fm_proto_error_t pe;
    if (e)
        fm_proto_read_error(e, &pe);
    snprintf(code, cap, "%s", e ? pe.code : "OK");
    fm_mp_msg_free(m);
    return 0;
}

static void test_auth_and_split(void) {
    fm_srv_t s;
    const char *env[] = {"FM_AUTH_TOKEN=user-secret", "FM_ADMIN_TOKEN=admin-secret", NULL};
    FM_REQUIRE(start(&s, env));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    char code[32], role[16];
    fm_mp_msg_t *m;
    const fm_mp_obj_t *e, *r;
    /* health and ready need no token; predict does. */
    FM_REQUIRE_OK(fm_srv_call0(c, "health", &m, &e, &r));
    FM_CHECK(e == NULL);
    fm_mp_msg_free(m);
    predict_code(c, NULL, code, sizeof code, role, sizeof role);
    FM_CHECK_STR(code, "UNAUTHENTICATED");
    FM_REQUIRE_OK(call1(c, "auth", "wrong", 0, code, sizeof code));
    FM_CHECK_STR(code, "UNAUTHENTICATED");
    FM_REQUIRE_OK(call1(c, "auth", "user-secret", 0, code, sizeof code));
    FM_CHECK_STR(code, "OK");
    predict_code(c, NULL, code, sizeof code, role, sizeof role);
    FM_CHECK_STR(code, "OK");
    FM_CHECK_STR(role, "stable");
    /* A user cannot change the split. */
    FM_REQUIRE_OK(call1(c, "set_split", NULL, 1.0, code, sizeof code));
    FM_CHECK_STR(code, "PERMISSION_DENIED");
    /* A second connection starts unauthenticated. */
    fm_client_t *c2 = fm_srv_connect(&s);
    FM_REQUIRE(c2);
    predict_code(c2, NULL, code, sizeof code, role, sizeof role);
    FM_CHECK_STR(code, "UNAUTHENTICATED");
    FM_REQUIRE_OK(call1(c2, "auth", "admin-secret", 0, code, sizeof code));
    FM_CHECK_STR(code, "OK");
    FM_REQUIRE_OK(call1(c2, "set_split", NULL, 1.5, code, sizeof code));
    FM_CHECK_STR(code, "INVALID_ARGUMENT");
    FM_REQUIRE_OK(call1(c2, "set_split", NULL, 1.0, code, sizeof code));
    FM_CHECK_STR(code, "OK");
    /* Every unpinned request now goes to the canary, on every connection. */
    for (int i = 0; i < 20; i++) {
        predict_code(c, NULL, code, sizeof code, role, sizeof role);
        FM_CHECK_STR(role, "canary");
    }
    FM_REQUIRE_OK(fm_srv_call0(c, "models", &m, &e, &r));
    double ratio = -1;
    fm_mp_get_double(fm_mp_map_get(r, "ab_test_ratio"), &ratio);
    FM_CHECK_NEAR(ratio, 1.0, 0);
    FM_CHECK_EQ(fm_mp_len(fm_mp_map_get(r, "models")), 2);
    fm_mp_msg_free(m);
    FM_REQUIRE_OK(call1(c2, "set_split", NULL, 0.0, code, sizeof code));
    for (int i = 0; i < 20; i++) {
        predict_code(c, NULL, code, sizeof code, role, sizeof role);
        FM_CHECK_STR(role, "stable");
    }
    fm_client_close(c);
    fm_client_close(c2);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);

    /* Without an admin token, set_split is disabled outright. */
    FM_REQUIRE(start(&s, NULL));
    c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    FM_REQUIRE_OK(call1(c, "set_split", NULL, 0.5, code, sizeof code));
    FM_CHECK_STR(code, "PERMISSION_DENIED");
    FM_REQUIRE_OK(call1(c, "auth", "anything", 0, code, sizeof code));
    FM_REQUIRE_OK(call1(c, "set_split", NULL, 0.5, code, sizeof code));
    FM_CHECK_STR(code, "PERMISSION_DENIED");
    fm_client_close(c);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
}

FM_TEST_MAIN({"ab_share", test_ab_share}, {"sticky_keys", test_sticky_keys}, {"pins", test_pins},
             {"auth_and_split", test_auth_and_split})
