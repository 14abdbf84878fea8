/* test_mlflow.c: `fmctl train` against a real MLflow 2.x tracking server
 * (`mlflow server`, SQLite store, proxied artifacts), checked through
 * MLflow's REST API: the parameters, every epoch's metrics at the right
 * step, artifacts byte-equal to the model files, the registered version,
 * its tags and the alias (moved by a second run); an interrupted training
 * ends KILLED, a failed one FAILED; an unreachable, silent or erroring
 * tracking server still gives a model and one clear summary. Then the
 * version goes from MLflow into the PostgreSQL registry and fmserve serves
 * it from a download. Skips (exit 77, saying why) where mlflow 2.x is not
 * installed in the test venv; the unreachable cases run regardless. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dbtest.h"
#include "fm_error.h"
#include "fm_model.h"
#include "fm_pg.h"
#include "fm_srv_harness.h"
#include "fm_test.h"
#include "fm_time.h"
#include "regtest.h"

#define FIXTURES FM_FIXTURES_DIR "/fashion-mnist"

static char base[128];
/* The model of the second logged run (alias champion), for the serving case. */
static char champion_dir[600], champion_version[16];

#define NEED_MLFLOW()                                      \
    do {                                                   \
        int rc_ = regtest_mlflow_start(base, sizeof base); \
        if (rc_ == FM_EUNSUPPORTED)                        \
            FM_TEST_SKIP(fm_last_error());                 \
        FM_REQUIRE_OK(rc_);                                \
    } while (0)

static int train(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int train(char **out, const char *fmt, ...) {
    char args[2048], full[2300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(full, sizeof full, "train --arch mlp --data '%s' --val-split 500 --threads 1 %s", FIXTURES, args);
    int rc = regtest_fmctl(NULL, full, out);
    if (rc != 0 && out && *out)
        fprintf(stderr, "  fmctl %s -> %d:\n%s\n", full, rc, *out);
    return rc;
}

/* GET base+path as JSON (path printf-style); NULL when not HTTP 200. */
static cJSON *get(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static cJSON *get(const char *fmt, ...) {
    char path[1024], url[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    snprintf(url, sizeof url, "%s%s", base, path);
    long http = 0;
    cJSON *j = regtest_get_json(url, &http);
    if (http != 200) {
        fprintf(stderr, "  GET %s: HTTP %ld\n", path, http);
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static const char *str_at(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* value of key in a [{key, value}] array */
static const char *kv_get(const cJSON *arr, const char *key) {
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        const char *k = str_at(e, "key");
        if (k && !strcmp(k, key))
            return str_at(e, "value");
    }
    return NULL;
}

static char *after(const char *text, const char *marker, char *buf, size_t cap) {
    const char *p = text ? strstr(text, marker) : NULL;
    buf[0] = '\0';
    if (!p)
        return NULL;
    p += strlen(marker);
    size_t n = strcspn(p, " \n");
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

/* Checks a metric's history: `steps` entries, steps 1..steps in order. */
static void check_history(const char *run_id, const char *key, int steps, double *values) {
    cJSON *h = get("/api/2.0/mlflow/metrics/get-history?run_id=%s&metric_key=%s", run_id, key);
    FM_REQUIRE(h != NULL);
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(h, "metrics");
    FM_CHECK_EQ(cJSON_GetArraySize(ms), steps);
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, ms) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(m, "step");
        FM_CHECK(cJSON_IsNumber(st) && (int)st->valuedouble == i + 1);
        if (values && i < steps)
            values[i] = cJSON_GetObjectItemCaseSensitive(m, "value")->valuedouble;
        FM_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(m, "timestamp")));
        i++;
    }
    cJSON_Delete(h);
}

static void check_artifact(const char *artifact_uri, const char *dir, const char *file) {
    /* mlflow-artifacts:/<exp>/<run>/artifacts -> the proxy path */
    const char *p = strstr(artifact_uri, "mlflow-artifacts:");
    FM_REQUIRE(p == artifact_uri);
    p += strlen("mlflow-artifacts:");
    while (*p == '/')
        p++;
    char url[1200];
    snprintf(url, sizeof url, "%s/api/2.0/mlflow-artifacts/artifacts/%s/model/%s", base, p, file);
    size_t n = 0, m = 0;
    long http = 0;
    char *remote = regtest_get_bytes(url, &n, &http);
    char *lp = fm_test_path(dir, file);
    char *local = dbtest_read_file(lp, &m);
    FM_CHECK_EQ(http, 200);
    FM_CHECK(remote && local);
    FM_CHECK_EQ(n, m);
    FM_CHECK(remote && local && n == m && memcmp(remote, local, n) == 0);
    free(remote);
    free(local);
    free(lp);
}

static void test_logged_run(void) {
    NEED_MLFLOW();
    char *dir = fm_test_path(fm_test_tmpdir(), "mlf-v11"), *out = NULL;
    FM_REQUIRE(train(&out, "--out '%s' --epochs 4 --version v11 --mlflow %s --experiment fm-test --alias champion "
                           "--mlflow-flush 0",
                     dir, base) == 0);
    FM_CHECK_CONTAINS(out, "FINISHED");
    FM_CHECK_CONTAINS(out, "registered fashion-mnist-mlp version");
    FM_CHECK(strstr(out, "NOT logged") == NULL);
    /* the per-epoch losses as printed (4 decimals) */
    double printed[4] = {0};
    for (int e = 1; e <= 4; e++) {
        char marker[32];
        snprintf(marker, sizeof marker, "epoch %d/4  loss ", e);
        const char *p = strstr(out, marker);
        FM_REQUIRE(p != NULL);
        printed[e - 1] = strtod(p + strlen(marker), NULL);
    }
    /* the sidecar names the run and the version */
    fm_model_t *m;
    FM_REQUIRE_OK(fm_model_load(dir, &m));
    char run_id[64], version[16], artifact_uri[512], data_sha[80], commit[80];
    snprintf(run_id, sizeof run_id, "%s", fm_model_meta_get_string(m, "mlflow", "run_id"));
    const char *mv = fm_model_meta_get_string(m, "mlflow", "model_version");
    snprintf(version, sizeof version, "%s", mv ? mv : "");
    snprintf(artifact_uri, sizeof artifact_uri, "%s", fm_model_meta_get_string(m, "mlflow", "artifact_uri"));
    snprintf(data_sha, sizeof data_sha, "%s", fm_model_meta_get_string(m, "training_data", "sha256"));
    snprintf(commit, sizeof commit, "%s", fm_model_meta_get_string(m, NULL, "source_commit"));
    FM_CHECK_STR(fm_model_meta_get_string(m, "mlflow", "registered_model"), "fashion-mnist-mlp");
    FM_CHECK_STR(fm_model_meta_get_string(m, "mlflow", "alias"), "champion");
    double train_loss = 0, val_acc = 0, test_acc = 0;
    FM_CHECK_OK(fm_model_meta_get_number(m, "metrics", "train_loss", &train_loss));
    FM_CHECK_OK(fm_model_meta_get_number(m, "metrics", "val_accuracy", &val_acc));
    FM_CHECK_OK(fm_model_meta_get_number(m, "metrics", "test_accuracy", &test_acc));
    char sha[65];
    snprintf(sha, sizeof sha, "%s", fm_model_weights_sha256(m));
    fm_model_free(m);
    FM_CHECK(run_id[0] && version[0]);

    /* the run: finished, with the training configuration */
    cJSON *r = get("/api/2.0/mlflow/runs/get?run_id=%s", run_id);
    FM_REQUIRE(r != NULL);
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(r, "run");
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(run, "info");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(run, "data");
    FM_CHECK_STR(str_at(info, "status"), "FINISHED");
    FM_CHECK_STR(str_at(info, "artifact_uri"), artifact_uri);
    FM_CHECK_STR(str_at(info, "run_name"), "fashion-mnist-mlp-v11");
    double t0 = cJSON_GetObjectItemCaseSensitive(info, "start_time")->valuedouble;
    const cJSON *t1 = cJSON_GetObjectItemCaseSensitive(info, "end_time");
    FM_CHECK(cJSON_IsNumber(t1) && t1->valuedouble >= t0);
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(data, "params");
    FM_CHECK_STR(kv_get(params, "epochs"), "4");
    FM_CHECK_STR(kv_get(params, "batch_size"), "128");
    FM_CHECK_STR(kv_get(params, "model_type"), "mlp");
    FM_CHECK_STR(kv_get(params, "learning_rate"), "0.001");
    FM_CHECK_STR(kv_get(params, "seed"), "1");
    FM_CHECK_STR(kv_get(params, "optimizer"), "adam");
    FM_CHECK_STR(kv_get(params, "val_split"), "500");
    FM_CHECK_STR(kv_get(params, "train_images"), "1500");
    FM_CHECK_STR(kv_get(params, "data_sha256"), data_sha);
    FM_CHECK_STR(kv_get(params, "source_commit"), commit);
    FM_CHECK_STR(kv_get(params, "model_version"), "v11");
    const cJSON *tags = cJSON_GetObjectItemCaseSensitive(data, "tags");
    FM_CHECK_STR(kv_get(tags, "mlflow.source.git.commit"), commit);
    FM_CHECK_STR(kv_get(tags, "mlflow.source.name"), "fmctl train");
    cJSON_Delete(r);

    /* every epoch's metrics at its step; the printed and sidecar values match */
    double loss[4], vacc[4];
    check_history(run_id, "loss", 4, loss);
    check_history(run_id, "accuracy", 4, NULL);
    check_history(run_id, "val_loss", 4, NULL);
    check_history(run_id, "val_accuracy", 4, vacc);
    check_history(run_id, "images_per_s", 4, NULL);
    check_history(run_id, "learning_rate", 4, NULL);
    for (int e = 0; e < 4; e++)
        FM_CHECK_NEAR(loss[e], printed[e], 5.1e-5);
    FM_CHECK_NEAR(loss[3], train_loss, 1e-12 * fabs(train_loss));
    FM_CHECK_NEAR(vacc[3], val_acc, 1e-12);
    cJSON *ta = get("/api/2.0/mlflow/metrics/get-history?run_id=%s&metric_key=test_accuracy", run_id);
    FM_REQUIRE(ta != NULL);
    const cJSON *tam = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(ta, "metrics"), 0);
    FM_CHECK_NEAR(cJSON_GetObjectItemCaseSensitive(tam, "value")->valuedouble, test_acc, 1e-12);
    FM_CHECK_EQ((int)cJSON_GetObjectItemCaseSensitive(tam, "step")->valuedouble, 4);
    cJSON_Delete(ta);

    /* artifacts: listed, and byte-equal to the model directory's files */
    cJSON *al = get("/api/2.0/mlflow/artifacts/list?run_id=%s&path=model", run_id);
    FM_REQUIRE(al != NULL);
    int listed = 0;
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItemCaseSensitive(al, "files")) {
        const char *p = str_at(f, "path");
        listed += p && (!strcmp(p, "model/model.safetensors") || !strcmp(p, "model/model.json"));
    }
    FM_CHECK_EQ(listed, 2);
    cJSON_Delete(al);
    check_artifact(artifact_uri, dir, "model.safetensors");
    check_artifact(artifact_uri, dir, "model.json");

    /* the registered version, its source, tags and the alias */
    cJSON *a = get("/api/2.0/mlflow/registered-models/alias?name=fashion-mnist-mlp&alias=champion");
    FM_REQUIRE(a != NULL);
    const cJSON *mvj = cJSON_GetObjectItemCaseSensitive(a, "model_version");
    FM_CHECK_STR(str_at(mvj, "version"), version);
    FM_CHECK_STR(str_at(mvj, "run_id"), run_id);
    FM_CHECK_STR(str_at(mvj, "status"), "READY");
    char source[600];
    snprintf(source, sizeof source, "%s/model", artifact_uri);
    FM_CHECK_STR(str_at(mvj, "source"), source);
    FM_CHECK_STR(kv_get(cJSON_GetObjectItemCaseSensitive(mvj, "tags"), "weights_sha256"), sha);
    FM_CHECK_STR(kv_get(cJSON_GetObjectItemCaseSensitive(mvj, "tags"), "fm_version"), "v11");
    cJSON_Delete(a);

    /* a second run, alias champion again: the alias moves to the new version */
    char *dir2 = fm_test_path(fm_test_tmpdir(), "mlf-v12");
    free(out);
    FM_REQUIRE(train(&out, "--out '%s' --epochs 2 --seed 2 --version v12 --mlflow %s --experiment fm-test "
                           "--alias champion",
                     dir2, base) == 0);
    FM_REQUIRE_OK(fm_model_load(dir2, &m));
    snprintf(champion_version, sizeof champion_version, "%s", fm_model_meta_get_string(m, "mlflow", "model_version"));
    fm_model_free(m);
    FM_CHECK(strcmp(champion_version, version) != 0);
    a = get("/api/2.0/mlflow/registered-models/alias?name=fashion-mnist-mlp&alias=champion");
    FM_REQUIRE(a != NULL);
    FM_CHECK_STR(str_at(cJSON_GetObjectItemCaseSensitive(a, "model_version"), "version"), champion_version);
    cJSON_Delete(a);
    cJSON *vs = get("/api/2.0/mlflow/model-versions/search?filter=name%%3D%%27fashion-mnist-mlp%%27");
    FM_REQUIRE(vs != NULL);
    FM_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(vs, "model_versions")), 2);
    cJSON_Delete(vs);
    snprintf(champion_dir, sizeof champion_dir, "%s", dir2);
    free(out);
    free(dir);
    free(dir2);
}

/* Starts fmctl train in the background with stdout+stderr in `log`. */
static pid_t train_bg(const char *log, const char *out_dir, int epochs) {
    char epochs_s[16];
    snprintf(epochs_s, sizeof epochs_s, "%d", epochs);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        setenv("FM_LOG_LEVEL", "warn", 1);
        execl(regtest_fmctl_path(), "fmctl", "train", "--arch", "mlp", "--data", FIXTURES, "--val-split", "500",
              "--threads", "1", "--out", out_dir, "--epochs", epochs_s, "--mlflow", base, "--experiment", "fm-test",
              "--mlflow-flush", "0", "--registered-model", "fm-test-interrupted", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static int wait_log(const char *log, const char *needle, int timeout_ms) {
    for (int t = 0; t < timeout_ms; t += 20) {
        char *text = dbtest_read_file(log, NULL);
        int found = text && strstr(text, needle);
        free(text);
        if (found)
            return 1;
        usleep(20000);
    }
    return 0;
}

static int wait_exit(pid_t pid, int timeout_ms) {
    for (int t = 0; t < timeout_ms; t += 20) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(20000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void test_interrupted_run_killed(void) {
    NEED_MLFLOW();
    char *log = fm_test_path(fm_test_tmpdir(), "interrupted.log"), *dir = fm_test_path(fm_test_tmpdir(), "mlf-int");
    pid_t pid = train_bg(log, dir, 300);
    FM_REQUIRE(wait_log(log, "epoch   2/300", 120000));
    kill(pid, SIGINT);
    FM_CHECK_EQ(wait_exit(pid, 60000), 130);
    char *text = dbtest_read_file(log, NULL);
    char run_id[64];
    FM_REQUIRE(after(text, "mlflow   run ", run_id, sizeof run_id) != NULL);
    int done = 0;
    const char *p = strstr(text, "interrupted after ");
    FM_REQUIRE(p != NULL);
    done = atoi(p + strlen("interrupted after "));
    FM_CHECK(done >= 2);
    FM_CHECK_CONTAINS(text, "KILLED");
    cJSON *r = get("/api/2.0/mlflow/runs/get?run_id=%s", run_id);
    FM_REQUIRE(r != NULL);
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(r, "run");
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(run, "info");
    FM_CHECK_STR(str_at(info, "status"), "KILLED");
    FM_CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(info, "end_time")));
    const char *why = kv_get(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(run, "data"), "tags"),
                             "fm.end_reason");
    FM_CHECK_CONTAINS(why, "interrupted after");
    cJSON_Delete(r);
    /* every finished epoch was logged, at its step, before the run ended */
    check_history(run_id, "loss", done, NULL);
    /* no model, so no version */
    cJSON *vs = get("/api/2.0/mlflow/model-versions/search?filter=run_id%%3D%%27%s%%27", run_id);
    FM_REQUIRE(vs != NULL);
    FM_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(vs, "model_versions")), 0);
    cJSON_Delete(vs);
    free(text);
    free(log);
    free(dir);
}

static void test_failed_run(void) {
    NEED_MLFLOW();
    char *log = fm_test_path(fm_test_tmpdir(), "failed.log"), *dir = fm_test_path(fm_test_tmpdir(), "mlf-fail");
    /* A directory where the weights file must go: training runs to the end,
     * then writing the model fails (the rename onto it is refused). */
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/model.safetensors' && touch '%s/model.safetensors/in-the-way'", dir, dir);
    FM_REQUIRE(system(cmd) == 0);
    pid_t pid = train_bg(log, dir, 8);
    FM_CHECK_EQ(wait_exit(pid, 120000), 1);
    char *text = dbtest_read_file(log, NULL);
    char run_id[64];
    FM_REQUIRE(after(text, "mlflow   run ", run_id, sizeof run_id) != NULL);
    FM_CHECK_CONTAINS(text, "writing the model");
    cJSON *r = get("/api/2.0/mlflow/runs/get?run_id=%s", run_id);
    FM_REQUIRE(r != NULL);
    const cJSON *run = cJSON_GetObjectItemCaseSensitive(r, "run");
    FM_CHECK_STR(str_at(cJSON_GetObjectItemCaseSensitive(run, "info"), "status"), "FAILED");
    FM_CHECK(kv_get(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(run, "data"), "tags"),
                    "fm.end_reason") != NULL);
    cJSON_Delete(r);
    check_history(run_id, "loss", 8, NULL);
    free(text);
    free(log);
    free(dir);
}

/* No tracking server: nothing listens on the port. */
static void test_unreachable_tracking(void) {
    int port = regtest_free_port();
    FM_REQUIRE(port > 0);
    char *dir = fm_test_path(fm_test_tmpdir(), "mlf-unreachable"), *out = NULL;
    uint64_t t0 = fm_now_us();
    char args[1200];
    snprintf(args, sizeof args,
             "train --arch mlp --data '%s' --val-split 500 --threads 1 --out '%s' --epochs 2 --quiet", FIXTURES, dir);
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "MLFLOW_TRACKING_URI=http://127.0.0.1:%d FM_LOG_LEVEL=warn '%s' %s", port,
             regtest_fmctl_path(), args);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 0);
    double secs = (double)(fm_now_us() - t0) / 1e6;
    printf("    unreachable tracking server: trained in %.1f s\n", secs);
    FM_CHECK_CONTAINS(out, "cannot be reached");
    FM_CHECK_CONTAINS(out, "training continues without tracking");
    FM_CHECK_CONTAINS(out, "NOT logged");
    FM_CHECK_CONTAINS(out, "the run (nothing was logged)");
    FM_CHECK_CONTAINS(out, "written to");
    /* one summary, not a complaint per epoch */
    const char *first = strstr(out, "NOT logged");
    FM_CHECK(first && !strstr(first + 1, "NOT logged"));
    fm_model_t *m;
    FM_CHECK_OK(fm_model_load(dir, &m));
    if (m) {
        FM_CHECK(fm_model_meta_get_string(m, "mlflow", "run_id") == NULL);
        fm_model_free(m);
    }
    free(out);
    /* an alias MLflow would refuse is a usage error before any training */
    FM_CHECK_EQ(regtest_fmctl(NULL, "train --arch mlp --out /nonexistent/x --alias v3", &out), 2);
    FM_CHECK_CONTAINS(out, "MLflow aliases");
    free(out);
    FM_CHECK_EQ(regtest_fmctl(NULL, "train --arch mlp --out /nonexistent/x --alias latest", &out), 2);
    free(out);
    free(dir);
}

/* A tracking server that accepts connections and never answers: every call
 * has a timeout, so training still finishes. */
static void test_silent_tracking_times_out(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    FM_REQUIRE(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0 &&
               getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    char *dir = fm_test_path(fm_test_tmpdir(), "mlf-silent"), *out = NULL;
    uint64_t t0 = fm_now_us();
    char args[1400];
    snprintf(args, sizeof args, "train --arch mlp --data '%s' --val-split 500 --threads 1 --out '%s' --epochs 2 "
                                "--quiet --mlflow http://127.0.0.1:%d --mlflow-timeout 1",
             FIXTURES, dir, ntohs(a.sin_port));
    FM_CHECK_EQ(regtest_fmctl(NULL, args, &out), 0);
    double secs = (double)(fm_now_us() - t0) / 1e6;
    printf("    silent tracking server, 1 s timeout: finished in %.1f s\n", secs);
    FM_CHECK(secs < 60);
    FM_CHECK_CONTAINS(out, "timed out");
    FM_CHECK_CONTAINS(out, "NOT logged");
    FM_CHECK_CONTAINS(out, "written to");
    close(fd);
    free(out);
    free(dir);
}

/* A server that answers with errors (no MLflow under that path). */
static void test_erroring_tracking(void) {
    NEED_MLFLOW();
    char *dir = fm_test_path(fm_test_tmpdir(), "mlf-404"), *out = NULL;
    FM_CHECK_EQ(train(&out, "--out '%s' --epochs 1 --quiet --mlflow %s/not-mlflow", dir, base), 0);
    FM_CHECK_CONTAINS(out, "NOT logged");
    FM_CHECK_CONTAINS(out, "HTTP 404");
    FM_CHECK_CONTAINS(out, "written to");
    free(out);
    free(dir);
}

/* MLflow -> PostgreSQL registry -> fmserve, with the files downloaded from
 * MLflow into the server's cache and verified. */
static void test_serve_from_mlflow(void) {
    NEED_MLFLOW();
    if (!champion_dir[0])
        FM_TEST_SKIP("needs the logged_run case's model");
    fm_db_t *db;
    char url[512];
    int rc = dbtest_open("mlflow_serve", &db, url, sizeof url);
    if (rc == FM_EUNSUPPORTED)
        FM_TEST_SKIP(fm_last_error());
    FM_REQUIRE_OK(rc);
    char *cache1 = fm_test_path(fm_test_tmpdir(), "cache-fmctl"), *cache2 = fm_test_path(fm_test_tmpdir(), "cache-srv");
    char args[1600], *out = NULL;
    snprintf(args, sizeof args, "models register models:/fashion-mnist-mlp@champion --mlflow %s --cache-dir '%s' "
                                "--role stable",
             base, cache1);
    FM_CHECK_EQ(regtest_fmctl(url, args, &out), 0);
    FM_CHECK_CONTAINS(out, "registered v12");
    FM_CHECK_CONTAINS(out, "from mlflow-artifacts:/");
    free(out);
    fm_srv_t s;
    const char *sargs[] = {"--models-from", "registry", "--database-url", url, "--mlflow-tracking-uri", base,
                           "--model-cache-dir", cache2, "--canary-model", "", NULL};
    FM_REQUIRE_OK(fm_srv_start(&s, sargs, NULL));
    FM_CHECK(fm_srv_log_contains(&s, "downloaded mlflow-artifacts:/"));
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_srv_fixture(&ds));
    int32_t want[64], got[64];
    float conf[64];
    FM_REQUIRE_OK(fm_srv_offline(champion_dir, ds.images, 64, want, NULL));
    fm_client_t *c = fm_srv_connect(&s);
    FM_REQUIRE(c != NULL);
    fm_predict_result_t r = {.labels = got, .confidence = conf};
    FM_CHECK_OK(fm_client_predict(c, ds.images, 64, NULL, &r, NULL));
    FM_CHECK_STR(r.model_version, "v12");
    FM_CHECK(memcmp(want, got, sizeof want) == 0);
    fm_client_close(c);
    /* the cache holds the verified copy under its sha256 */
    char sha[65], *cached;
    FM_REQUIRE_OK(regtest_model_sha(champion_dir, sha));
    cached = fm_test_path(cache2, sha);
    char cached_sha[65];
    FM_CHECK_OK(regtest_model_sha(cached, cached_sha));
    FM_CHECK_STR(cached_sha, sha);
    FM_CHECK_EQ(fm_srv_stop(&s, SIGTERM, 30000), 0);
    fm_dataset_free(&ds);
    free(cached);
    free(cache1);
    free(cache2);
    fm_db_close(db);
}

/* The tracking server goes away in the middle of training: training
 * finishes, the model is written, and one summary names what was lost.
 * Runs last: it stops the shared MLflow server. */
static void test_server_dies_mid_run(void) {
    NEED_MLFLOW();
    char *log = fm_test_path(fm_test_tmpdir(), "dies.log"), *dir = fm_test_path(fm_test_tmpdir(), "mlf-dies");
    pid_t pid = train_bg(log, dir, 200);
    FM_REQUIRE(wait_log(log, "epoch   3/200", 120000));
    regtest_mlflow_stop();
    FM_CHECK_EQ(wait_exit(pid, 300000), 0);
    char *text = dbtest_read_file(log, NULL);
    FM_REQUIRE(text != NULL);
    FM_CHECK_CONTAINS(text, "cannot be reached");
    FM_CHECK_CONTAINS(text, "written to");
    FM_CHECK_CONTAINS(text, "NOT logged");
    FM_CHECK_CONTAINS(text, "metrics of epochs");
    FM_CHECK_CONTAINS(text, "200: not sent (tracking server unreachable)");
    FM_CHECK_CONTAINS(text, "artifact model/model.safetensors");
    FM_CHECK_CONTAINS(text, "model version registration: skipped");
    FM_CHECK_CONTAINS(text, "run status FINISHED");
    const char *first = strstr(text, "NOT logged");
    FM_CHECK(first && !strstr(first + 1, "NOT logged"));
    /* The summary is short: a handful of lines, not one per epoch. */
    int lines = 0;
    for (const char *p = first; p && *p; p++)
        lines += *p == '\n';
    FM_CHECK(lines <= 10);
    fm_model_t *m;
    FM_CHECK_OK(fm_model_load(dir, &m));
    if (m) {
        FM_CHECK(fm_model_meta_get_string(m, "mlflow", "run_id") != NULL);
        FM_CHECK(fm_model_meta_get_string(m, "mlflow", "model_version") == NULL);
        fm_model_free(m);
    }
    printf("%s", first ? first : "");
    free(text);
    free(log);
    free(dir);
}

FM_TEST_MAIN({"unreachable_tracking", test_unreachable_tracking},
             {"silent_tracking_times_out", test_silent_tracking_times_out}, {"logged_run", test_logged_run},
             {"interrupted_run_killed", test_interrupted_run_killed}, {"failed_run", test_failed_run},
             {"erroring_tracking", test_erroring_tracking}, {"serve_from_mlflow", test_serve_from_mlflow},
             {"server_dies_mid_run", test_server_dies_mid_run})
