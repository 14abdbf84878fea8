/* test_server_fuzz.c: a real fmserve under tests/server/fuzz_protocol.py
 * for a while: thousands of well-formed frames with wrong types, sizes and
 * values for every method (the admin ones too, after right and wrong
 * tokens), flipped bytes, cut frames and random bytes on short connections.
 * Afterwards the server must be up, healthy, hold no connection, answer a
 * real predict exactly as the offline engine does, and stop cleanly. Under
 * the sanitizer build this is where a memory error would show. Skips,
 * saying why, without the test Python and its msgpack package. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_client.h"
#include "fm_error.h"
#include "fm_srv_harness.h"
#include "fm_test.h"

#define ADMIN_TOKEN "fuzz-admin-token"

/* Open RPC connections, from /metrics (-1 when unreadable). */
static double open_connections(const fm_srv_t *s) {
    char *body = NULL;
    double v = -1;
    if (fm_srv_http_get(s->http_port, "/metrics", &body) == 200)
        v = fm_srv_metric(body, "fm_rpc_connections ");
    free(body);
    return v;
}

static void run_fuzz(unsigned seed, int seconds) {
    const char *py = fm_srv_python();
    if (!py)
        FM_TEST_SKIP("no test Python with msgpack (FM_TEST_PYTHON; scripts/test-env.sh makes it)");
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, "--max-batch-size", "32", NULL};
    const char *env[] = {"FM_ADMIN_TOKEN=" ADMIN_TOKEN, NULL};
    fm_srv_t s;
    FM_REQUIRE_OK(fm_srv_start(&s, args, env));

    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' '%s/tests/server/fuzz_protocol.py' %d %d %u '%s'", py, FM_SOURCE_DIR,
             s.rpc_port, seconds, seed, ADMIN_TOKEN);
    fflush(NULL);
    FM_CHECK_EQ(system(cmd), 0);

    FM_CHECK(fm_srv_alive(&s));
    char *body = NULL;
    FM_CHECK_EQ(fm_srv_http_get(s.http_port, "/health", &body), 200);
    free(body);
    /* Every fuzz connection is closed; the server lets go of all of them. */
    double open = -1;
    for (int i = 0; i < 50 && (open = open_connections(&s)) != 0; i++)
        usleep(100000);
    FM_CHECK_EQ(open, 0);

    /* Still right: the fixture images pinned to v1 give the offline labels. */
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    enum { N = 200 };
    int32_t want[N], got[N];
    float want_conf[N], conf[N];
    FM_REQUIRE_OK(fm_srv_offline(v1, ds.images, N, want, want_conf));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c);
    fm_predict_opts_t o = {.version = "stable"};
    fm_predict_result_t r = {.labels = got, .confidence = conf};
    if (fm_client_predict(c, ds.images, N, &o, &r, NULL) != 0)
        FM_TEST_FAIL_AT("predict after the fuzzing: %s", fm_last_error());
    else
        FM_CHECK(memcmp(got, want, sizeof want) == 0);
    fm_client_close(c);
    fm_dataset_free(&ds);

    int code = fm_srv_stop(&s, SIGTERM, 30000);
    if (code != 0)
        fm_srv_dump_log(&s);
    FM_CHECK_EQ(code, 0);
    free(v1);
    free(v2);
}

static void test_fuzz_seed_1(void) { run_fuzz(1, 10); }
static void test_fuzz_seed_2(void) { run_fuzz(2, 10); }

FM_TEST_MAIN({"fuzz_seed_1", test_fuzz_seed_1}, {"fuzz_seed_2", test_fuzz_seed_2})
