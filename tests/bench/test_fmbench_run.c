/* test_fmbench_run.c: fmbench against real fmserve processes on loopback.
 * Short closed- and open-loop runs whose JSON and CSV must hold every
 * field, with accuracy equal to the offline engine's on the same images; an
 * A/B run whose per-version accuracies match each model's; a deliberately
 * wrong label file, which must fail the run (exit 3) however fast it was;
 * an overloaded open loop whose queueing shows in its latency (no
 * coordinated omission); and the failures a user meets first (unknown
 * version, missing token). */
#include <cjson/cJSON.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fm_srv_harness.h"
#include "fm_test.h"
#include "fm_time.h"

#ifndef FMBENCH_BIN
#define FMBENCH_BIN "fmbench"
#endif

/* Runs fmbench with `args` (NULL-terminated); stdout and stderr go to files
 * under the test's tmpdir, returned in *out / *err (malloc'd contents).
 * Returns the exit code, or -1 when it had to be killed after 180 s. */
static int run_fmbench(const char *const *args, char **out, char **err) {
    static int counter;
    char opath[600], epath[600];
    counter++;
    snprintf(opath, sizeof opath, "%s/fmbench-%d.out", fm_test_tmpdir(), counter);
    snprintf(epath, sizeof epath, "%s/fmbench-%d.err", fm_test_tmpdir(), counter);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fo = open(opath, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(epath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fo, 1);
        dup2(fe, 2);
        unsetenv("FM_AUTH_TOKEN");
        unsetenv("FM_SERVER");
        const char *argv[80];
        int a = 0;
        argv[a++] = FMBENCH_BIN;
        for (int i = 0; args[i] && a < 79; i++)
            argv[a++] = args[i];
        argv[a] = NULL;
        execv(FMBENCH_BIN, (char *const *)argv);
        _exit(127);
    }
    int status = 0, code = -1;
    uint64_t until = fm_now_us() + 180 * 1000000ull;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            break;
        }
        if (fm_now_us() > until) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(20000);
    }
    const char *paths[2] = {opath, epath};
    char **dst[2] = {out, err};
    for (int k = 0; k < 2; k++) {
        FILE *f = fopen(paths[k], "r");
        size_t cap = 1 << 20, len = 0;
        char *buf = malloc(cap);
        if (f) {
            len = fread(buf, 1, cap - 1, f);
            fclose(f);
        }
        buf[len] = '\0';
        *dst[k] = buf;
    }
    if (code != 0)
        fprintf(stderr, "  fmbench exited %d; stderr:\n%s\n", code, *err);
    return code;
}

static cJSON *read_json(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    static char buf[8 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return cJSON_Parse(buf);
}

static double num(const cJSON *o, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(j) ? j->valuedouble : NAN;
}

static const cJSON *obj(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

static const char *str(const cJSON *o, const char *key) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(j) ? j->valuestring : NULL;
}

/* The offline engine's accuracy of `model` on the first n fixture images
 * (labels into `labels` when not NULL). */
static double offline_accuracy(const char *model, const fm_dataset_t *ds, size_t n, int32_t *labels) {
    int32_t *l = labels ? labels : malloc(n * sizeof *l);
    if (fm_srv_offline(model, ds->images, n, l, NULL) != 0) {
        fprintf(stderr, "  offline: %s\n", fm_last_error());
        if (!labels)
            free(l);
        return -1;
    }
    size_t ok = 0;
    for (size_t i = 0; i < n; i++)
        ok += l[i] == ds->labels[i];
    if (!labels)
        free(l);
    return (double)ok / (double)n;
}

/* Checks that a latency summary has every percentile, in order. */
static void check_hist(const cJSON *h, const char *name, int full) {
    if (!cJSON_IsObject(h)) {
        FM_TEST_FAIL_AT("%s missing", name);
        return;
    }
    const char *keys_full[] = {"min", "p50", "p90", "p95", "p99", "p99.9", "p99.99", "max"};
    const char *keys_short[] = {"min", "p50", "p90", "p99", "max"};
    const char *const *keys = full ? keys_full : keys_short;
    int nk = full ? 8 : 5;
    double prev = -1;
    for (int i = 0; i < nk; i++) {
        double v = num(h, keys[i]);
        if (!(v >= prev)) {
            FM_TEST_FAIL_AT("%s.%s = %g is missing or below the previous percentile %g", name, keys[i], v, prev);
            return;
        }
        prev = v;
    }
    FM_CHECK(num(h, "count") > 0);
    FM_CHECK(num(h, "mean") >= num(h, "min") && num(h, "mean") <= num(h, "max"));
}

static char *model_dir(const char *v) {
    char *d = fm_test_path(fm_srv_models_dir(), v);
    return d;
}

static void test_closed_and_open(void) {
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    char *v1 = model_dir("v1"), *v2 = model_dir("v2");
    double acc1 = offline_accuracy(v1, &ds, ds.n, NULL);
    FM_REQUIRE(acc1 >= 0);
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, "--backend", "cpu", "--cpu-workers", "2", NULL};
    fm_srv_t s;
    FM_REQUIRE_OK(fm_srv_start(&s, args, NULL));
    char server[64], minacc[32], *prefix = fm_test_path(fm_test_tmpdir(), "run1");
    char *fixtures = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    snprintf(server, sizeof server, "127.0.0.1:%d", s.rpc_port);
    snprintf(minacc, sizeof minacc, "%.4f", acc1 > 0.05 ? acc1 - 0.05 : 0);
    const char *bargs[] = {"--server", server, "--data", fixtures, "--version", "v1", "--concurrency", "1,4", "--rate",
                           "150", "--arrivals", "poisson", "--warmup", "0.2", "--window", "0.4", "--stable-windows",
                           "2", "--max-windows", "3", "--min-accuracy", minacc, "--out", prefix, "--tag",
                           "purpose=test", "--title", "test run", NULL};
    char *out, *err;
    int code = run_fmbench(bargs, &out, &err);
    FM_CHECK_EQ(code, 0);
    FM_CHECK_CONTAINS(out, "closed c=1");
    FM_CHECK_CONTAINS(out, "closed c=4");
    FM_CHECK_CONTAINS(out, "poisson 150/s");
    char path[700];
    snprintf(path, sizeof path, "%s.json", prefix);
    cJSON *j = read_json(path);
    FM_REQUIRE(j);
    FM_CHECK_STR(str(j, "tool"), "fmbench");
    FM_CHECK(str(j, "date") && strlen(str(j, "date")) == 20);
    FM_CHECK(str(j, "commit") && strlen(str(j, "commit")) > 0);
    FM_CHECK_STR(str(j, "title"), "test run");
    FM_CHECK(cJSON_IsTrue(obj(j, "ok")));
    FM_CHECK(num(obj(j, "machine"), "cores") >= 1);
    FM_CHECK(str(obj(j, "machine"), "cpu") != NULL);
    FM_CHECK_STR(str(obj(j, "tags"), "purpose"), "test");
    /* The server's own description, from its models and stats methods. */
    const cJSON *models = obj(obj(obj(j, "server"), "models"), "models");
    FM_CHECK_EQ(cJSON_GetArraySize(models), 2);
    FM_CHECK_STR(str(cJSON_GetArrayItem(models, 0), "version"), "v1");
    FM_CHECK(str(obj(obj(j, "server"), "models"), "backend") != NULL);
    FM_CHECK(cJSON_IsObject(obj(obj(j, "server"), "stats_start")));
    FM_CHECK(cJSON_IsObject(obj(obj(j, "server"), "stats_end")));
    FM_CHECK_EQ(num(obj(j, "data"), "images"), 1000);

    const cJSON *steps = obj(j, "steps");
    FM_REQUIRE(cJSON_GetArraySize(steps) == 3);
    for (int i = 0; i < 3; i++) {
        const cJSON *st = cJSON_GetArrayItem(steps, i);
        FM_CHECK_STR(str(st, "mode"), i < 2 ? "closed" : "open");
        FM_CHECK(num(obj(st, "throughput"), "requests_per_s") > 0);
        FM_CHECK_NEAR(num(obj(st, "throughput"), "images_per_s"), 16 * num(obj(st, "throughput"), "requests_per_s"),
                      1e-6 * num(obj(st, "throughput"), "images_per_s"));
        FM_CHECK(num(obj(st, "windows"), "used") >= 1 && num(obj(st, "windows"), "used") <= 2);
        FM_CHECK(num(obj(st, "windows"), "run") >= num(obj(st, "windows"), "used"));
        FM_CHECK(cJSON_IsBool(obj(st, "stable")));
        check_hist(obj(st, "latency_us"), "latency_us", 1);
        check_hist(obj(st, "service_us"), "service_us", 1);
        check_hist(obj(st, "server_queue_us"), "server_queue_us", 0);
        check_hist(obj(st, "server_compute_us"), "server_compute_us", 0);
        check_hist(obj(st, "overhead_us"), "overhead_us", 0);
        /* The server computed something for every reply. */
        FM_CHECK(num(obj(st, "server_compute_us"), "min") > 0);
        FM_CHECK_EQ(num(obj(st, "errors"), "total"), 0);
        FM_CHECK(cJSON_IsObject(obj(obj(st, "errors"), "by_code")));
        FM_CHECK(num(obj(st, "server"), "avg_batch_size") >= 1);
        /* Accuracy is measured, and close to the offline engine's (a step
         * sees the set in whole passes plus a part). */
        const cJSON *acc = obj(st, "accuracy");
        FM_REQUIRE(cJSON_IsObject(acc));
        FM_CHECK(num(acc, "labelled") >= 16);
        FM_CHECK_NEAR(num(acc, "accuracy"), num(acc, "correct") / num(acc, "labelled"), 1e-12);
        FM_CHECK_NEAR(num(acc, "accuracy"), acc1, 0.05);
        FM_CHECK_EQ(num(st, "answers_changed"), 0);
        const cJSON *vs = obj(st, "versions");
        FM_CHECK_EQ(cJSON_GetArraySize(vs), 1);
        FM_CHECK_STR(str(cJSON_GetArrayItem(vs, 0), "version"), "v1");
        if (i < 2) {
            FM_CHECK_EQ(num(st, "concurrency"), i == 0 ? 1 : 4);
            FM_CHECK(cJSON_IsNull(obj(st, "schedule")));
        } else {
            const cJSON *sch = obj(st, "schedule");
            FM_REQUIRE(cJSON_IsObject(sch));
            FM_CHECK_EQ(num(sch, "target_rps"), 150);
            FM_CHECK_STR(str(st, "arrivals"), "poisson");
            /* The schedule was kept (loosely: the machine may be busy). */
            FM_CHECK(num(sch, "sent_rps") > 75 && num(sch, "sent_rps") < 300);
            FM_CHECK(num(sch, "due") >= 1 && num(sch, "late") <= num(sch, "due"));
            check_hist(obj(sch, "send_lag_us"), "send_lag_us", 1);
            FM_CHECK(num(sch, "late_share") >= 0 && num(sch, "late_share") <= 1);
            /* Open-loop latency runs from the schedule: never below the service time. */
            FM_CHECK(num(obj(st, "latency_us"), "p50") >= num(obj(st, "service_us"), "p50"));
        }
    }
    /* Over the whole set, the server's answers give exactly the offline accuracy. */
    const cJSON *vers = obj(j, "versions");
    FM_REQUIRE(cJSON_GetArraySize(vers) == 1);
    const cJSON *vv = cJSON_GetArrayItem(vers, 0);
    FM_CHECK_STR(str(vv, "version"), "v1");
    FM_CHECK_EQ(num(vv, "images_covered"), 1000);
    FM_CHECK_NEAR(num(vv, "dataset_accuracy"), acc1, 1e-12);
    cJSON_Delete(j);

    /* CSV: a header and one row per step with the same figures. */
    snprintf(path, sizeof path, "%s.csv", prefix);
    FILE *f = fopen(path, "r");
    FM_REQUIRE(f);
    char line[4096];
    int rows = 0, ncols = 0;
    while (fgets(line, sizeof line, f)) {
        int cols = 1;
        for (char *p = line; *p; p++)
            cols += *p == ',';
        if (rows == 0) {
            ncols = cols;
            FM_CHECK_CONTAINS(line, "requests_per_s");
            FM_CHECK_CONTAINS(line, "latency_p999_us");
            FM_CHECK_CONTAINS(line, "server_queue_p50_us");
            FM_CHECK_CONTAINS(line, "send_lag_p99_us");
            FM_CHECK_CONTAINS(line, "accuracy");
        } else {
            FM_CHECK_EQ(cols, ncols);
        }
        rows++;
    }
    fclose(f);
    FM_CHECK_EQ(rows, 4);
    /* The plot, when gnuplot is here; otherwise a clear message. */
    snprintf(path, sizeof path, "%s.png", prefix);
    if (strstr(err, "gnuplot not found")) {
        fprintf(stderr, "  (gnuplot is not installed: the plot was skipped with a message, as intended)\n");
    } else {
        f = fopen(path, "rb");
        FM_REQUIRE(f);
        unsigned char magic[8] = {0};
        FM_CHECK_EQ(fread(magic, 1, 8, f), 8);
        fclose(f);
        FM_CHECK(memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0);
    }
    free(out);
    free(err);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(prefix);
    free(fixtures);
    free(v1);
    free(v2);
    fm_dataset_free(&ds);
}

static void test_ab_split_accuracy(void) {
    /* 100 images answered many times over with a 50 % random split: each
     * version answers every image, and its accuracy over the set must be
     * its offline accuracy. */
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    char *v1 = model_dir("v1"), *v2 = model_dir("v2");
    const size_t n = 100;
    double acc1 = offline_accuracy(v1, &ds, n, NULL), acc2 = offline_accuracy(v2, &ds, n, NULL);
    FM_REQUIRE(acc1 >= 0 && acc2 >= 0);
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, "--backend", "cpu", NULL};
    const char *env[] = {"AB_TEST_RATIO=0.5", NULL};
    fm_srv_t s;
    FM_REQUIRE_OK(fm_srv_start(&s, args, env));
    char server[64], *json = fm_test_path(fm_test_tmpdir(), "ab.json");
    char *fixtures = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    snprintf(server, sizeof server, "127.0.0.1:%d", s.rpc_port);
    const char *bargs[] = {"--server", server, "--data", fixtures, "--limit", "100", "--batch", "10", "--concurrency",
                           "4", "--rate-of-peak", "0.2", "--warmup", "0.3", "--window", "0.5", "--stable-windows",
                           "2", "--max-windows", "2", "--min-accuracy", "0", "--json", json, "--quiet", NULL};
    char *out, *err;
    FM_CHECK_EQ(run_fmbench(bargs, &out, &err), 0);
    cJSON *j = read_json(json);
    FM_REQUIRE(j);
    const cJSON *vers = obj(j, "versions");
    FM_REQUIRE(cJSON_GetArraySize(vers) == 2);
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetArrayItem(vers, i);
        int is1 = !strcmp(str(v, "version"), "v1");
        FM_CHECK_STR(str(v, "role"), is1 ? "stable" : "canary");
        FM_CHECK_EQ(num(v, "images_covered"), 100);
        FM_CHECK_NEAR(num(v, "dataset_accuracy"), is1 ? acc1 : acc2, 1e-12);
    }
    /* Both versions appear in the step, each with its requests. */
    const cJSON *st = cJSON_GetArrayItem(obj(j, "steps"), 0);
    FM_CHECK_EQ(cJSON_GetArraySize(obj(st, "versions")), 2);
    /* --rate-of-peak: the open step's rate is a share of the closed step's throughput. */
    const cJSON *open = cJSON_GetArrayItem(obj(j, "steps"), 1);
    FM_REQUIRE(open);
    double peak = num(obj(st, "throughput"), "requests_per_s");
    FM_CHECK_NEAR(num(obj(j, "closed_loop_peak"), "requests_per_s"), peak, 1e-9 * peak);
    FM_CHECK_STR(str(obj(j, "closed_loop_peak"), "step"), "closed c=4");
    FM_CHECK_NEAR(num(open, "target_rps"), 0.2 * peak, 1e-9 * peak);
    FM_CHECK_NEAR(num(open, "rate_of_peak"), 0.2, 1e-12);
    cJSON_Delete(j);
    free(out);
    free(err);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(json);
    free(fixtures);
    free(v1);
    free(v2);
    fm_dataset_free(&ds);
}

static int write_labels(const char *path, const int32_t *labels, size_t n, int shift) {
    uint8_t *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)((labels[i] + shift) % 10);
    fm_idx_t idx;
    memset(&idx, 0, sizeof idx);
    idx.ndim = 1;
    idx.dims[0] = (uint32_t)n;
    idx.count = n;
    idx.item_bytes = 1;
    idx.data = data;
    int rc = fm_idx_save(path, &idx, 1);
    free(data);
    return rc;
}

static void test_wrong_labels_fail(void) {
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    char *v1 = model_dir("v1");
    int32_t *labels = malloc(ds.n * sizeof *labels);
    double acc1 = offline_accuracy(v1, &ds, ds.n, labels);
    FM_REQUIRE(acc1 >= 0);
    /* A label file that disagrees with every answer of the model (each
     * offline label shifted by one class), and one that agrees with all. */
    char *wrong = fm_test_path(fm_test_tmpdir(), "wrong-labels-idx1-ubyte.gz");
    char *right = fm_test_path(fm_test_tmpdir(), "right-labels-idx1-ubyte.gz");
    FM_REQUIRE_OK(write_labels(wrong, labels, ds.n, 1));
    FM_REQUIRE_OK(write_labels(right, labels, ds.n, 0));
    const char *args[] = {"--stable-model", v1, "--canary-model", "", "--backend", "cpu", NULL};
    fm_srv_t s;
    FM_REQUIRE_OK(fm_srv_start(&s, args, NULL));
    char server[64], *images = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist/t10k-images-idx3-ubyte.gz");
    char *json = fm_test_path(fm_test_tmpdir(), "wrong.json");
    snprintf(server, sizeof server, "127.0.0.1:%d", s.rpc_port);

    /* Wrong labels, default --min-accuracy: the run fails with exit 3. */
    const char *bad[] = {"--server", server, "--images", images, "--labels", wrong, "--concurrency", "2,8", "--warmup",
                         "0.1", "--window", "0.3", "--stable-windows", "1", "--max-windows", "2", "--json", json, NULL};
    char *out, *err;
    int code = run_fmbench(bad, &out, &err);
    FM_CHECK_EQ(code, 3);
    FM_CHECK_CONTAINS(err, "wrong answers");
    FM_CHECK_CONTAINS(err, "below --min-accuracy");
    /* It stops at the first step: a wrong answer is not a result. */
    cJSON *j = read_json(json);
    FM_REQUIRE(j);
    FM_CHECK(cJSON_IsFalse(obj(j, "ok")));
    FM_CHECK(cJSON_GetArraySize(obj(j, "failures")) >= 1);
    FM_CHECK_EQ(cJSON_GetArraySize(obj(j, "steps")), 1);
    FM_CHECK_EQ(num(obj(cJSON_GetArrayItem(obj(j, "steps"), 0), "accuracy"), "accuracy"), 0);
    cJSON_Delete(j);
    free(out);
    free(err);

    /* The labels the model agrees with: accuracy 1, and the run passes the default floor. */
    const char *good[] = {"--server", server, "--images", images, "--labels", right, "--concurrency", "2", "--warmup",
                          "0.1", "--window", "0.3", "--stable-windows", "1", "--max-windows", "2", "--json", json, NULL};
    FM_CHECK_EQ(run_fmbench(good, &out, &err), 0);
    j = read_json(json);
    FM_REQUIRE(j);
    FM_CHECK(cJSON_IsTrue(obj(j, "ok")));
    FM_CHECK_EQ(num(obj(cJSON_GetArrayItem(obj(j, "steps"), 0), "accuracy"), "accuracy"), 1);
    cJSON_Delete(j);
    free(out);
    free(err);

    /* Images without labels: no accuracy, no verdict on it. */
    const char *nolab[] = {"--server", server, "--images", images, "--concurrency", "1", "--warmup", "0.1",
                           "--window", "0.2", "--stable-windows", "1", "--max-windows", "1", "--json", json, NULL};
    FM_CHECK_EQ(run_fmbench(nolab, &out, &err), 0);
    j = read_json(json);
    FM_REQUIRE(j);
    FM_CHECK(cJSON_IsNull(obj(cJSON_GetArrayItem(obj(j, "steps"), 0), "accuracy")));
    FM_CHECK(cJSON_IsFalse(obj(obj(j, "data"), "labelled")));
    cJSON_Delete(j);
    free(out);
    free(err);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(json);
    free(images);
    free(wrong);
    free(right);
    free(labels);
    free(v1);
    fm_dataset_free(&ds);
}

static void test_user_errors(void) {
    char *v1 = model_dir("v1");
    const char *args[] = {"--stable-model", v1, "--canary-model", "", "--backend", "cpu", NULL};
    const char *env[] = {"FM_AUTH_TOKEN=tok-123", NULL};
    fm_srv_t s;
    FM_REQUIRE_OK(fm_srv_start(&s, args, env));
    char server[64], *fixtures = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    snprintf(server, sizeof server, "127.0.0.1:%d", s.rpc_port);
    char *out, *err;
    /* No token: refused before any load, exit 1 with the server's reason. */
    const char *a1[] = {"--server", server, "--data", fixtures, "--warmup", "0", "--window", "0.2", "--max-windows",
                        "1", "--stable-windows", "1", "--min-accuracy", "0", NULL};
    FM_CHECK_EQ(run_fmbench(a1, &out, &err), 1);
    FM_CHECK_CONTAINS(err, "UNAUTHENTICATED");
    free(out);
    free(err);
    /* A version that is not loaded: the server's NOT_FOUND ends the run. */
    const char *a2[] = {"--server", server, "--data", fixtures, "--token", "tok-123", "--version", "v9", "--warmup",
                        "0", "--window", "0.2", "--max-windows", "1", "--stable-windows", "1", "--min-accuracy", "0",
                        NULL};
    FM_CHECK_EQ(run_fmbench(a2, &out, &err), 1);
    FM_CHECK_CONTAINS(err, "NOT_FOUND");
    free(out);
    free(err);
    /* With the token: a good run, and the JSON says auth was used. */
    const char *a3[] = {"--server", server, "--data", fixtures, "--token", "tok-123", "--warmup", "0", "--window",
                        "0.2", "--max-windows", "1", "--stable-windows", "1", "--min-accuracy", "0", "--quiet", NULL};
    FM_CHECK_EQ(run_fmbench(a3, &out, &err), 0);
    free(out);
    free(err);
    /* Bad flags: exit 2 with the flag named. */
    const char *a4[] = {"--concurrency", "8:2", NULL};
    FM_CHECK_EQ(run_fmbench(a4, &out, &err), 2);
    FM_CHECK_CONTAINS(err, "--concurrency");
    free(out);
    free(err);
    const char *a6[] = {"--rate-of-peak", "0.5", NULL};
    FM_CHECK_EQ(run_fmbench(a6, &out, &err), 2);
    FM_CHECK_CONTAINS(err, "--concurrency");
    free(out);
    free(err);
    const char *a5[] = {"--rate", "100", "--arrivals", "gamma", NULL};
    FM_CHECK_EQ(run_fmbench(a5, &out, &err), 2);
    FM_CHECK_CONTAINS(err, "--arrivals");
    free(out);
    free(err);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(fixtures);
    free(v1);
}

static void test_overload_is_not_hidden(void) {
    /* One connection with one request in flight at a time cannot keep a
     * schedule of 5000 requests/s to the CNN: requests queue in the client.
     * Their latency must count that wait (it runs from the schedule), the
     * step must say it saturated, and the heavier step must be skipped. */
    char *v1 = model_dir("v1"), *v2 = model_dir("v2");
    const char *args[] = {"--stable-model", v1, "--canary-model", v2, "--backend", "cpu", "--cpu-workers", "1", NULL};
    fm_srv_t s;
    FM_REQUIRE_OK(fm_srv_start(&s, args, NULL));
    char server[64], *json = fm_test_path(fm_test_tmpdir(), "overload.json");
    char *fixtures = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    snprintf(server, sizeof server, "127.0.0.1:%d", s.rpc_port);
    const char *bargs[] = {"--server", server, "--data", fixtures, "--version", "v2", "--connections", "1", "--depth",
                           "1", "--concurrency", "1", "--rate", "5000,10000", "--arrivals", "constant",
                           "--max-outstanding", "1500", "--warmup", "0", "--window", "0.3", "--stable-windows", "1",
                           "--max-windows", "2", "--min-accuracy", "0", "--json", json, "--quiet", NULL};
    char *out, *err;
    FM_CHECK_EQ(run_fmbench(bargs, &out, &err), 0);
    cJSON *j = read_json(json);
    FM_REQUIRE(j);
    const cJSON *steps = obj(j, "steps");
    FM_REQUIRE(cJSON_GetArraySize(steps) == 2);
    const cJSON *closed = cJSON_GetArrayItem(steps, 0), *open = cJSON_GetArrayItem(steps, 1);
    FM_CHECK(cJSON_IsFalse(obj(closed, "saturated")));
    FM_CHECK(cJSON_IsTrue(obj(open, "saturated")));
    FM_CHECK(str(open, "note") && strstr(str(open, "note"), "saturated"));
    /* The 10000/s step was skipped, saying why. */
    FM_REQUIRE(cJSON_GetArraySize(obj(j, "skipped")) == 1);
    FM_CHECK_CONTAINS(str(cJSON_GetArrayItem(obj(j, "skipped"), 0), "why"), "saturated");
    /* Requests left unanswered are counted, not dropped. */
    FM_CHECK(num(open, "incomplete") > 0);
    FM_CHECK(num(obj(obj(open, "errors"), "by_code"), "INCOMPLETE") == num(open, "incomplete"));
    /* The client fell behind its schedule and says so ... */
    const cJSON *sch = obj(open, "schedule");
    FM_CHECK(num(sch, "late_share") > 0.5);
    FM_CHECK(num(obj(sch, "send_lag_us"), "max") > 10000);
    /* ... and the wait is in the latency: every request due is in it (the
     * unanswered ones at their lower bound), it includes the longest send
     * lag, and it is far above the service time of the requests that were
     * answered and above the closed loop's latency. (About 1,500 requests
     * pile up in 0.3 s, so the median waits about 0.15 s; a service time
     * is a few ms even on a busy machine.) */
    FM_CHECK(num(obj(open, "service_us"), "count") > 0); /* some were answered */
    FM_CHECK_EQ(num(obj(open, "latency_us"), "count"), num(obj(open, "service_us"), "count") + num(open, "incomplete"));
    FM_CHECK(num(obj(open, "latency_us"), "max") >= num(obj(sch, "send_lag_us"), "max"));
    FM_CHECK(num(obj(open, "latency_us"), "p50") > 5 * num(obj(open, "service_us"), "p50"));
    FM_CHECK(num(obj(open, "latency_us"), "p50") > 5 * num(obj(closed, "latency_us"), "p50"));
    FM_CHECK(cJSON_IsTrue(obj(j, "ok"))); /* overload is a result, not a failure */
    cJSON_Delete(j);
    free(out);
    free(err);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    free(json);
    free(fixtures);
    free(v1);
    free(v2);
}

FM_TEST_MAIN({"closed_and_open", test_closed_and_open}, {"ab_split_accuracy", test_ab_split_accuracy},
             {"wrong_labels_fail", test_wrong_labels_fail}, {"overload_is_not_hidden", test_overload_is_not_hidden},
             {"user_errors", test_user_errors})
