/* test_server_predict.c: images through a real fmserve give exactly the
 * offline engine's labels for each version (fixtures, and the full test set
 * when FM_DATA is set), in both image encodings, with every documented
 * response field. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_client.h"
#include "fm_model.h"
#include "fm_srv_harness.h"
#include "fm_test.h"

static fm_srv_t srv;
static int started;

static int start_once(void) {
    if (started)
        return started > 0;
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, "--max-batch-size", "32", NULL};
    started = fm_srv_start(&srv, args, NULL) == 0 ? 1 : -1;
    free(v1);
    free(v2);
    return started > 0;
}

/* Sends every image of `ds` pinned to `version` in requests of `per` images
 * and checks each label against the offline engine on `model_dir`. */
static void check_version(fm_client_t *c, const fm_dataset_t *ds, size_t count, const char *version,
                          const char *model_dir, size_t per, int as_array, const char *want_role) {
    int32_t *want = malloc(count * sizeof *want);
    float *want_conf = malloc(count * sizeof *want_conf);
    FM_REQUIRE_OK(fm_srv_offline(model_dir, ds->images, count, want, want_conf));
    int32_t *got = malloc(per * sizeof *got);
    float *conf = malloc(per * sizeof *conf);
    size_t mismatches = 0, correct_server = 0, correct_offline = 0;
    fm_predict_opts_t opts = {.version = version, .images_as_array = as_array};
    for (size_t i = 0; i < count; i += per) {
        size_t n = count - i < per ? count - i : per;
        fm_predict_result_t r = {.labels = got, .confidence = conf};
        int rc = fm_client_predict(c, ds->images + i * 784, n, &opts, &r, NULL);
        if (rc != 0) {
            FM_TEST_FAIL_AT("predict of images %zu..%zu on %s: %s", i, i + n, version, fm_last_error());
            break;
        }
        FM_CHECK_EQ(r.n, n);
        FM_CHECK_STR(r.model, want_role);
        FM_CHECK_STR(r.routing, "pinned");
        for (size_t k = 0; k < n; k++) {
            if (got[k] != want[i + k])
                mismatches++;
            correct_server += (size_t)got[k] == ds->labels[i + k];
            correct_offline += (size_t)want[i + k] == ds->labels[i + k];
            if (fabsf(conf[k] - want_conf[i + k]) > 1e-5f)
                mismatches++;
        }
    }
    FM_CHECK_EQ(mismatches, 0);
    FM_CHECK_EQ(correct_server, correct_offline);
    printf("    %s: %zu images, accuracy %.4f through the server, %.4f offline\n", version, count,
           (double)correct_server / (double)count, (double)correct_offline / (double)count);
    free(want);
    free(want_conf);
    free(got);
    free(conf);
}

static void test_fixture_labels_match_offline(void) {
    FM_REQUIRE(start_once());
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    fm_client_t *c = fm_srv_connect(&srv);
    FM_REQUIRE(c);
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    check_version(c, &ds, ds.n, "stable", v1, 16, 0, "stable");
    check_version(c, &ds, ds.n, "v2", v2, 100, 1, "canary"); /* array of bins, larger than a batch */
    check_version(c, &ds, ds.n, "canary", v2, 7, 0, "canary");
    free(v1);
    free(v2);
    fm_client_close(c);
    fm_dataset_free(&ds);
}

static void test_full_test_set(void) {
    const char *dir = fm_test_full_data_dir();
    if (!dir)
        FM_TEST_SKIP("FM_DATA is not set to the full Fashion-MNIST: only the fixtures were checked");
    FM_REQUIRE(start_once());
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_dataset_load(dir, "t10k", &ds));
    FM_CHECK_EQ(ds.n, 10000);
    fm_client_t *c = fm_srv_connect(&srv);
    FM_REQUIRE(c);
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1"), *v2 = fm_test_path(fm_srv_models_dir(), "v2");
    check_version(c, &ds, ds.n, "v1", v1, 64, 0, "stable");
    check_version(c, &ds, ds.n, "canary", v2, 250, 0, "canary");
    free(v1);
    free(v2);
    fm_client_close(c);
    fm_dataset_free(&ds);
}

static void test_response_fields(void) {
    FM_REQUIRE(start_once());
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    fm_client_t *c = fm_srv_connect(&srv);
    FM_REQUIRE(c);
    /* Raw request so every field of the reply can be inspected. */
    fm_mp_buf_t b;
    fm_mp_buf_init(&b);
    fm_predict_opts_t opts = {.probs = 1};
    uint32_t id = fm_client_next_msgid(c);
    fm_proto_pack_predict(&b, id, ds.images, 3, &opts);
    FM_REQUIRE_OK(fm_client_send_raw(c, b.data, b.len));
    fm_mp_buf_free(&b);
    fm_mp_msg_t *m;
    FM_REQUIRE_OK(fm_client_wait(c, id, &m));
    uint64_t got_id;
    const fm_mp_obj_t *e, *r;
    FM_REQUIRE_OK(fm_proto_parse_response(m->root, &got_id, &e, &r));
    FM_CHECK_EQ(got_id, id);
    FM_CHECK(e == NULL);
    FM_CHECK(fm_mp_str_eq(fm_mp_map_get(r, "model"), "stable"));
    FM_CHECK(fm_mp_str_eq(fm_mp_map_get(r, "model_version"), "v1"));
    FM_CHECK(fm_mp_str_eq(fm_mp_map_get(r, "model_name"), "fashion-mnist-mlp"));
    FM_CHECK(fm_mp_str_eq(fm_mp_map_get(r, "routing"), "ab"));
    size_t idlen;
    const char *rid = fm_mp_get_str(fm_mp_map_get(r, "request_id"), &idlen);
    FM_CHECK(rid && idlen == 36 && rid[14] == '7'); /* UUIDv7 */
    uint64_t v;
    FM_CHECK_OK(fm_mp_get_u64(fm_mp_map_get(r, "queue_us"), &v));
    FM_CHECK_OK(fm_mp_get_u64(fm_mp_map_get(r, "compute_us"), &v));
    const fm_mp_obj_t *preds = fm_mp_map_get(r, "predictions");
    FM_CHECK_EQ(fm_mp_len(preds), 3);
    int32_t want[3];
    char *v1 = fm_test_path(fm_srv_models_dir(), "v1");
    FM_REQUIRE_OK(fm_srv_offline(v1, ds.images, 3, want, NULL));
    free(v1);
    for (uint32_t i = 0; i < fm_mp_len(preds); i++) {
        const fm_mp_obj_t *p = fm_mp_at(preds, i);
        uint64_t label;
        FM_CHECK_OK(fm_mp_get_u64(fm_mp_map_get(p, "label"), &label));
        FM_CHECK_EQ(label, want[i]);
        FM_CHECK(fm_mp_str_eq(fm_mp_map_get(p, "class"), fm_class_names[label]));
        const fm_mp_obj_t *probs = fm_mp_map_get(p, "probs");
        FM_CHECK_EQ(fm_mp_len(probs), 10);
        double sum = 0, conf = 0, best = -1;
        for (uint32_t k = 0; k < 10; k++) {
            double x = 0;
            fm_mp_get_double(fm_mp_at(probs, k), &x);
            sum += x;
            if (x > best)
                best = x;
        }
        fm_mp_get_double(fm_mp_map_get(p, "confidence"), &conf);
        FM_CHECK_NEAR(sum, 1.0, 1e-4);
        FM_CHECK_NEAR(conf, best, 1e-7);
    }
    fm_mp_msg_free(m);

    /* Request ids are unique and time-ordered (UUIDv7 text sorts by time). */
    char prev[40] = "";
    for (int i = 0; i < 50; i++) {
        fm_predict_result_t res = {0};
        int32_t lab;
        float cf;
        res.labels = &lab;
        res.confidence = &cf;
        FM_REQUIRE_OK(fm_client_predict(c, ds.images + (size_t)i * 784, 1, NULL, &res, NULL));
        FM_CHECK(strcmp(res.request_id, prev) > 0);
        snprintf(prev, sizeof prev, "%s", res.request_id);
    }
    fm_client_close(c);
    fm_dataset_free(&ds);
}

static void test_shutdown(void) {
    if (started <= 0)
        FM_TEST_SKIP("server not started");
    FM_CHECK_EQ(fm_srv_stop(&srv, SIGTERM, 30000), 0);
    started = 0;
}

FM_TEST_MAIN({"fixture_labels_match_offline", test_fixture_labels_match_offline},
             {"full_test_set", test_full_test_set}, {"response_fields", test_response_fields},
             {"shutdown", test_shutdown})
