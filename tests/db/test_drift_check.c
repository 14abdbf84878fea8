/* test_drift_check.c: drift checks end to end on real images. A reference
 * profile is stored by `fmctl drift reference` (2,000 training images of the
 * fixtures and a random MLP on the CPU engine); traffic is logged through the
 * writer; then: the Fashion-MNIST test images show no dataset drift (and all
 * 792 features equal the numpy/scipy oracle and evidently), the MNIST digits
 * and brightness-shifted Fashion-MNIST do, a detected drift sends NOTIFY
 * fm_drift with its JSON, and `fmctl drift check` gives exit codes 0/3/1/2,
 * JSON and a self-contained HTML report. With FM_DATA and FM_MNIST_DATA the
 * same on the full sets (60,000 reference images). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dbtest.h"
#include "fm_backend.h"
#include "fm_db.h"
#include "fm_drift.h"
#include "fm_drift_report.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_pixel_stats.h"
#include "fm_ref_forward.h"
#include "fm_rows.h"
#include "fm_store_sync.h"
#include "fm_test.h"
#include "fm_time.h"

#define MINUTE_US (60LL * 1000000LL)

#define OPEN_DB(name, db, url)                                                  \
    do {                                                                        \
        int rc_ = dbtest_open(name, &(db), url, sizeof url);                    \
        if (rc_ == FM_EUNSUPPORTED) {                                           \
            static char why_[1024];                                             \
            snprintf(why_, sizeof why_, "no PostgreSQL: %s", fm_last_error()); \
            FM_TEST_SKIP(why_);                                                 \
        }                                                                       \
        FM_REQUIRE_OK(rc_);                                                     \
    } while (0)

/* ---- shared fixtures: data, a model on disk, the engine ---- */

static fm_dataset_t fm_train, fm_t10k, mnist;
static char model_dir[600];
static fm_engine_t engine;
static fm_backend_model_t *bm;

static int setup(void) {
    static int done, ok;
    if (done)
        return ok;
    done = 1;
    char *fdir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    char *mdir = fm_test_path(fm_test_fixtures_dir(), "mnist");
    if (fm_dataset_load(fdir, "train", &fm_train) != 0 || fm_dataset_load(fdir, "t10k", &fm_t10k) != 0 ||
        fm_dataset_load(mdir, "t10k", &mnist) != 0) {
        fprintf(stderr, "setup: %s\n", fm_last_error());
        return 0;
    }
    free(fdir);
    free(mdir);
    /* A random MLP with weights large enough for confident, varied
     * predictions (see tests/engine). */
    fm_model_t *m = fm_model_new(FM_ARCH_MLP);
    if (!m)
        return 0;
    fm_ref_random_init(m, 7, 4.0);
    fm_model_set_identity(m, "drift-test-mlp", "v1");
    snprintf(model_dir, sizeof model_dir, "%s/model", fm_test_tmpdir());
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    if (fm_model_save(m, model_dir) != 0 || fm_engine_open("cpu", &cfg, &engine) != 0 ||
        fm_engine_prepare(&engine, m, &bm) != 0) {
        fprintf(stderr, "setup: %s\n", fm_last_error());
        fm_model_free(m);
        return 0;
    }
    fm_model_free(m);
    ok = 1;
    return ok;
}

/* Stores the reference with the real CLI; returns its id (0 on failure). */
static int64_t cli_reference(const char *url, const char *data_dir, const char *extra) {
    char cmd[2048], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' drift reference --data '%s' --model '%s' --database-url '%s' %s", dbtest_fmctl(),
             data_dir, model_dir, url, extra ? extra : "");
    int st = dbtest_run(cmd, &out);
    if (st != 0)
        FM_TEST_FAIL_AT("fmctl drift reference exited %d: %s", st, out ? out : "");
    long long id = 0;
    const char *p = out ? strstr(out, "reference profile #") : NULL;
    if (p)
        id = atoll(p + strlen("reference profile #"));
    free(out);
    return st == 0 ? id : 0;
}

/* Predicts n images with the engine and logs them all as sampled, spread
 * over ten minutes from t0 (minute-aligned), as version `version`. Returns
 * the confidences and labels when the pointers are given. */
static int log_images(fm_db_t *db, const uint8_t *images, size_t n, const char *version, int64_t t0,
                      float *conf_out, int32_t *label_out) {
    int32_t *labels = malloc(n * sizeof *labels);
    float *conf = malloc(n * sizeof *conf), *probs = malloc(n * 10 * sizeof *probs);
    fm_prediction_row_t *rows = calloc(n, sizeof *rows);
    const uint8_t **imgs = calloc(n, sizeof *imgs);
    int rc = labels && conf && probs && rows && imgs ? 0 : FM_ENOMEM;
    if (rc == 0)
        rc = fm_drift_predict(&engine, bm, images, n, labels, conf, probs);
    static int64_t next_id = 1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        fm_prediction_row_t *r = &rows[i];
        r->ts_us = t0 + (int64_t)((double)i / (double)n * 10 * MINUTE_US);
        fm_uuid7_make(r->ts_us / 1000, 0, (uint64_t)next_id++, r->request_id);
        r->model_version = version;
        r->label = labels[i];
        r->confidence = conf[i];
        memcpy(r->probs, probs + i * 10, sizeof r->probs);
        r->total_us = 1000;
        imgs[i] = images + i * 784;
    }
    fm_store_writer_t *w = NULL;
    if (rc == 0)
        rc = fm_store_writer_new(db, 1, &w);
    for (size_t off = 0; off < n && rc == 0; off += 1000)
        rc = fm_store_writer_write(w, rows + off, n - off < 1000 ? n - off : 1000, imgs + off);
    if (rc == 0)
        rc = fm_store_writer_flush(w);
    fm_store_writer_free(w);
    if (rc == 0 && conf_out)
        memcpy(conf_out, conf, n * sizeof *conf);
    if (rc == 0 && label_out)
        memcpy(label_out, labels, n * sizeof *labels);
    free(labels);
    free(conf);
    free(probs);
    free(rows);
    free(imgs);
    return rc;
}

static int64_t minute_now(int minutes_ago) {
    return fm_pixel_bucket_start_us(fm_wall_us()) - (int64_t)minutes_ago * MINUTE_US;
}

static int64_t check(fm_db_t *db, int64_t t0, const char *version, fm_drift_run_t **run) {
    char since[40], until[40];
    fm_rows_timestamp(since, sizeof since, t0);
    fm_rows_timestamp(until, sizeof until, t0 + 10 * MINUTE_US);
    fm_drift_check_opts_t o;
    fm_drift_check_opts_default(&o);
    o.since = since;
    o.until = until;
    o.model_version = version;
    int64_t id = 0;
    *run = NULL;
    if (fm_drift_check(db, &o, &id) != 0) {
        FM_TEST_FAIL_AT("drift check: %s", fm_last_error());
        return 0;
    }
    if (fm_drift_run_load(db, id, run) != 0)
        FM_TEST_FAIL_AT("loading run %lld: %s", (long long)id, fm_last_error());
    return id;
}

#define SETUP_OR_FAIL() \
    do {                \
        FM_REQUIRE(setup()); \
    } while (0)

/* ---- no drift, and equality with the oracle ---- */

static int write_file(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(p, 1, n, f);
    fclose(f);
    return w == n ? 0 : -1;
}

/* Expands reference_values of a feature into one value per image. */
static double *reference_column(fm_db_t *db, int64_t ref, const char *feature, size_t *n) {
    char id[24];
    snprintf(id, sizeof id, "%lld", (long long)ref);
    const char *p[] = {id, feature};
    fm_db_result_t *r;
    *n = 0;
    if (fm_db_query(db, "SELECT value, count FROM reference_values WHERE profile_id = $1::bigint AND feature = $2",
                    2, p, &r) != 0)
        return NULL;
    size_t total = 0;
    for (int i = 0; i < fm_db_result_rows(r); i++)
        total += (size_t)atoll(fm_db_result_value(r, i, 1));
    double *v = malloc((total ? total : 1) * sizeof *v);
    for (int i = 0; i < fm_db_result_rows(r) && v; i++) {
        double x;
        fm_db_result_double(r, i, 0, &x);
        for (long long k = atoll(fm_db_result_value(r, i, 1)); k > 0; k--)
            v[(*n)++] = x;
    }
    fm_db_result_free(r);
    return v;
}

static double grid(double c) { return nearbyint(c * 10000) / 10000; }

/* Compares every feature of a run with the oracle on the same data. */
static void compare_run_with_oracle(fm_db_t *db, const fm_drift_run_t *run, const uint8_t *ref_images, size_t nref,
                                    const uint8_t *cur_images, size_t ncur, const float *cur_conf,
                                    const int32_t *cur_labels) {
    const char *why;
    const char *py = dbtest_python(&why);
    if (!py) {
        fprintf(stderr, "  note: oracle comparison skipped: %s\n", why);
        return;
    }
    const char *dir = fm_test_tmpdir();
    char path[1024], spec_path[1024], out_path[1024];
    snprintf(path, sizeof path, "%s/ref.u8", dir);
    FM_REQUIRE(write_file(path, ref_images, nref * 784) == 0);
    snprintf(path, sizeof path, "%s/cur.u8", dir);
    FM_REQUIRE(write_file(path, cur_images, ncur * 784) == 0);
    size_t n1, n2;
    double *ref_class = reference_column(db, run->reference_id, "pred_class", &n1);
    double *ref_conf = reference_column(db, run->reference_id, "confidence", &n2);
    FM_REQUIRE(ref_class && ref_conf && n1 == nref && n2 == nref);
    /* The confidence feature is compared on the rollups' 1/10000 grid. */
    for (size_t i = 0; i < n2; i++)
        ref_conf[i] = grid(ref_conf[i]);
    double *cc = malloc(ncur * sizeof *cc), *cl = malloc(ncur * sizeof *cl);
    for (size_t i = 0; i < ncur; i++) {
        cc[i] = grid((double)cur_conf[i]);
        cl[i] = cur_labels[i];
    }
    const struct {
        const char *name;
        const double *v;
        size_t n;
    } files[] = {{"rc.f64", ref_class, n1}, {"rf.f64", ref_conf, n2}, {"cc.f64", cl, ncur}, {"cf.f64", cc, ncur}};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        FM_REQUIRE(write_file(path, files[i].v, files[i].n * sizeof(double)) == 0);
    }
    free(ref_class);
    free(ref_conf);
    free(cc);
    free(cl);
    snprintf(spec_path, sizeof spec_path, "%s/run.json", dir);
    snprintf(out_path, sizeof out_path, "%s/run.jsonl", dir);
    FILE *f = fopen(spec_path, "w");
    FM_REQUIRE(f);
    fprintf(f, "{\"options\": {}, \"images\": {\"ref\": \"ref.u8\", \"cur\": \"cur.u8\"}, \"columns\": ["
               "{\"fid\": 2000, \"cat\": true, \"ref\": \"rc.f64\", \"cur\": \"cc.f64\"},"
               "{\"fid\": 2001, \"cat\": false, \"ref\": \"rf.f64\", \"cur\": \"cf.f64\"}]}\n");
    fclose(f);
    char cmd[3072], *out = NULL;
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' '%s'", py, FM_DRIFT_ORACLE, spec_path, out_path);
    int st = dbtest_run(cmd, &out);
    if (st != 0)
        FM_TEST_FAIL_AT("oracle failed (%d): %s", st, out ? out : "");
    free(out);
    FM_REQUIRE(st == 0);
    char *text = dbtest_read_file(out_path, NULL);
    FM_REQUIRE(text);
    int compared = 0, ev = 0, bad = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        FM_REQUIRE(o);
        cJSON *summary = cJSON_GetObjectItem(o, "summary");
        if (summary) {
            FM_CHECK_EQ((int)cJSON_GetObjectItem(summary, "drifted")->valuedouble, run->drifted);
            FM_CHECK_EQ((int)cJSON_GetObjectItem(summary, "features")->valuedouble, run->features);
            FM_CHECK_EQ(cJSON_IsTrue(cJSON_GetObjectItem(summary, "dataset_drift")), run->dataset_drift);
            cJSON_Delete(o);
            continue;
        }
        int fid = (int)cJSON_GetObjectItem(o, "fid")->valuedouble;
        const fm_drift_feature_t *x = NULL;
        for (int i = 0; i < run->nfeatures; i++)
            if (run->f[i].fid == fid)
                x = &run->f[i];
        const char *test = cJSON_GetStringValue(cJSON_GetObjectItem(o, "stattest"));
        double score = cJSON_GetObjectItem(o, "score")->valuedouble;
        int drifted = cJSON_IsTrue(cJSON_GetObjectItem(o, "drifted"));
        if (!x) {
            FM_TEST_FAIL_AT("feature %d missing from the run", fid);
        } else if (strcmp(x->stattest, test) != 0 || !(fabs(x->score - score) <= 1e-9 * fmax(1, fabs(score))) ||
                   x->drifted != drifted) {
            if (bad++ < 10)
                FM_TEST_FAIL_AT("feature %s: SQL %s %.17g %d, oracle %s %.17g %d", x->name, x->stattest, x->score,
                                x->drifted, test, score, drifted);
        }
        compared++;
        cJSON *evs = cJSON_GetObjectItem(o, "ev_score");
        if (evs && x) {
            if (!(fabs(x->score - evs->valuedouble) <= 1e-9 * fmax(1, fabs(evs->valuedouble))) ||
                strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(o, "ev_stattest")), x->stattest) != 0) {
                if (bad++ < 10)
                    FM_TEST_FAIL_AT("feature %s: SQL %.17g, evidently %s %.17g", x->name, x->score,
                                    cJSON_GetStringValue(cJSON_GetObjectItem(o, "ev_stattest")), evs->valuedouble);
            }
            ev++;
        }
        cJSON_Delete(o);
    }
    free(text);
    FM_CHECK_EQ(compared, 792);
    fprintf(stderr, "  %d features equal to the numpy/scipy oracle, %d to evidently\n", compared, ev);
}

static void test_fashion_test_set_no_drift(void) {
    SETUP_OR_FAIL();
    fm_db_t *db;
    char url[512];
    OPEN_DB("drift_fashion", db, url);
    char *fdir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    int64_t ref = cli_reference(url, fdir, NULL);
    free(fdir);
    FM_REQUIRE(ref > 0);
    int64_t v = 0;
    FM_CHECK_OK(dbtest_query_int(db, "SELECT min(s) * 10000 + max(s) FROM (SELECT (SELECT sum(x) FROM unnest(counts) "
                                     "AS x) AS s FROM reference_pixel_hist) AS t",
                                 &v));
    FM_CHECK_EQ(v, 2000LL * 10000 + 2000);
    float *conf = malloc(fm_t10k.n * sizeof *conf);
    int32_t *labels = malloc(fm_t10k.n * sizeof *labels);
    int64_t t0 = minute_now(30);
    FM_REQUIRE_OK(log_images(db, fm_t10k.images, fm_t10k.n, "v1", t0, conf, labels));
    fm_drift_run_t *run;
    check(db, t0, "v1", &run);
    FM_REQUIRE(run);
    FM_CHECK_EQ(run->features, 792);
    FM_CHECK_EQ(run->images, (int64_t)fm_t10k.n);
    FM_CHECK_EQ(run->predictions, (int64_t)fm_t10k.n);
    FM_CHECK(!run->dataset_drift);
    FM_CHECK(run->share < 0.2);
    fprintf(stderr, "  Fashion-MNIST t10k vs train: %d of %d features drifted (share %.3f)\n", run->drifted,
            run->features, run->share);
    /* The class counts shown in reports are the engine's predictions. */
    int64_t counts[10] = {0};
    for (size_t i = 0; i < fm_t10k.n; i++)
        counts[labels[i]]++;
    for (int k = 0; k < 10; k++)
        FM_CHECK_EQ(run->cur_class[k], counts[k]);
    compare_run_with_oracle(db, run, fm_train.images, fm_train.n, fm_t10k.images, fm_t10k.n, conf, labels);
    fm_drift_run_free(run);
    free(conf);
    free(labels);
    fm_db_close(db);
}

/* ---- drift, NOTIFY, the CLI and its report ---- */

static void test_mnist_and_brightness_drift_notify(void) {
    SETUP_OR_FAIL();
    fm_db_t *db, *listener;
    char url[512];
    OPEN_DB("drift_shift", db, url);
    char *fdir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    FM_REQUIRE(cli_reference(url, fdir, NULL) > 0);
    free(fdir);
    FM_REQUIRE_OK(fm_db_connect(url, &listener));
    FM_REQUIRE_OK(fm_db_listen(listener, "fm_drift"));

    int64_t t_fash = minute_now(30), t_mnist = minute_now(60), t_bright = minute_now(90);
    FM_REQUIRE_OK(log_images(db, fm_t10k.images, fm_t10k.n, "fashion", t_fash, NULL, NULL));
    FM_REQUIRE_OK(log_images(db, mnist.images, mnist.n, "mnist", t_mnist, NULL, NULL));
    /* Brightness shift: every pixel 40 levels brighter (clipped at 255). */
    uint8_t *bright = malloc(fm_t10k.n * 784);
    FM_REQUIRE(bright);
    for (size_t i = 0; i < fm_t10k.n * 784; i++)
        bright[i] = (uint8_t)(fm_t10k.images[i] > 215 ? 255 : fm_t10k.images[i] + 40);
    FM_REQUIRE_OK(log_images(db, bright, fm_t10k.n, "bright", t_bright, NULL, NULL));
    free(bright);

    char *channel, *payload;
    fm_drift_run_t *run;
    check(db, t_fash, "fashion", &run);
    FM_REQUIRE(run);
    FM_CHECK(!run->dataset_drift);
    fm_drift_run_free(run);
    /* No drift, no notification. */
    FM_CHECK_ERR(fm_db_wait_notify(listener, 500, &channel, &payload), FM_EDEADLINE);

    int64_t id = check(db, t_mnist, "mnist", &run);
    FM_REQUIRE(run);
    FM_CHECK(run->dataset_drift);
    FM_CHECK(run->share >= 0.5);
    fprintf(stderr, "  MNIST digits: %d of %d features drifted (share %.3f)\n", run->drifted, run->features,
            run->share);
    FM_CHECK_OK(fm_db_wait_notify(listener, 5000, &channel, &payload));
    if (payload) {
        FM_CHECK_STR(channel, "fm_drift");
        cJSON *o = cJSON_Parse(payload);
        FM_REQUIRE(o);
        FM_CHECK_EQ((int64_t)cJSON_GetObjectItem(o, "run_id")->valuedouble, id);
        FM_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(o, "model_version")), "mnist");
        FM_CHECK_NEAR(cJSON_GetObjectItem(o, "share")->valuedouble, run->share, 1e-12);
        FM_CHECK_EQ((int)cJSON_GetObjectItem(o, "drifted")->valuedouble, run->drifted);
        FM_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(o, "top")), 5);
        FM_CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "top"), 0),
                                                              "feature")),
                     run->f[0].name);
        cJSON_Delete(o);
        free(channel);
        free(payload);
    }
    fm_drift_run_free(run);

    check(db, t_bright, "bright", &run);
    FM_REQUIRE(run);
    FM_CHECK(run->dataset_drift);
    fprintf(stderr, "  Fashion-MNIST +40 brightness: %d of %d features drifted (share %.3f)\n", run->drifted,
            run->features, run->share);
    /* The mean intensity moves by 40 levels: far past its threshold. */
    for (int i = 0; i < run->nfeatures; i++)
        if (strcmp(run->f[i].name, "mean_intensity") == 0)
            FM_CHECK(run->f[i].drifted && run->f[i].score > 1);
    fm_drift_run_free(run);
    FM_CHECK_OK(fm_db_wait_notify(listener, 5000, &channel, &payload));
    free(channel);
    free(payload);

    /* A version filter that matches nothing in the window: an error that
     * says so, not a silent "no drift". */
    char since[40], until[40];
    fm_rows_timestamp(since, sizeof since, t_bright);
    fm_rows_timestamp(until, sizeof until, t_bright + 10 * MINUTE_US);
    fm_drift_check_opts_t o;
    fm_drift_check_opts_default(&o);
    o.since = since;
    o.until = until;
    o.model_version = "fashion";
    FM_CHECK_ERR(fm_drift_check(db, &o, &id), FM_ENOTFOUND);
    FM_CHECK_CONTAINS(fm_last_error(), "nothing to compare");

    /* ---- the CLI ---- */
    char cmd[2048], *out = NULL, html[700];
    snprintf(html, sizeof html, "%s/report.html", fm_test_tmpdir());
    snprintf(cmd, sizeof cmd, "'%s' drift check --database-url '%s' --window 45min --version fashion", dbtest_fmctl(),
             url);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 0);
    FM_CHECK_CONTAINS(out, "no dataset drift");
    FM_CHECK_CONTAINS(out, "top 10 features");
    free(out);
    fm_rows_timestamp(since, sizeof since, t_mnist);
    fm_rows_timestamp(until, sizeof until, t_mnist + 10 * MINUTE_US);
    snprintf(cmd, sizeof cmd,
             "FM_DATABASE_URL='%s' '%s' drift check --since '%s' --until '%s' --version mnist --top 5 --html '%s'", url,
             dbtest_fmctl(), since, until, html);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 3);
    FM_CHECK_CONTAINS(out, "DATASET DRIFT");
    FM_CHECK_CONTAINS(out, "top 5 features");
    FM_CHECK_CONTAINS(out, "report written to");
    free(out);
    size_t len = 0;
    char *page = dbtest_read_file(html, &len);
    FM_REQUIRE(page);
    FM_CHECK_CONTAINS(page, "<!DOCTYPE html>");
    FM_CHECK_CONTAINS(page, "DATASET DRIFT");
    FM_CHECK_CONTAINS(page, "Trouser");
    FM_CHECK_CONTAINS(page, "Ankle boot");
    FM_CHECK(!strstr(page, "http://") && !strstr(page, "https://")); /* self-contained */
    /* The heat map: a PNG of 28x28 cells scaled to 280x280. base64 of the PNG
     * signature and IHDR length/type is "iVBORw0KGgoAAAANSUhEUg"; the width
     * and height follow as two big-endian 32-bit numbers. */
    const char *img = strstr(page, "data:image/png;base64,");
    FM_REQUIRE(img);
    img += strlen("data:image/png;base64,");
    FM_CHECK(strncmp(img, "iVBORw0KGgoAAAANSUhEUg", 22) == 0);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t head[24];
    for (int i = 0; i < 8; i++) {
        uint32_t v = 0;
        for (int k = 0; k < 4; k++)
            v = v << 6 | (uint32_t)(strchr(b64, img[i * 4 + k]) - b64);
        head[i * 3] = (uint8_t)(v >> 16);
        head[i * 3 + 1] = (uint8_t)(v >> 8);
        head[i * 3 + 2] = (uint8_t)v;
    }
    uint32_t w = (uint32_t)head[16] << 24 | head[17] << 16 | head[18] << 8 | head[19];
    uint32_t h = (uint32_t)head[20] << 24 | head[21] << 16 | head[22] << 8 | head[23];
    FM_CHECK_EQ(w, 280);
    FM_CHECK_EQ(h, 280);
    free(page);

    snprintf(cmd, sizeof cmd, "'%s' drift check --database-url '%s' --since '%s' --until '%s' --version mnist --json",
             dbtest_fmctl(), url, since, until);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 3);
    cJSON *j = out ? cJSON_Parse(out) : NULL;
    FM_CHECK(j != NULL);
    if (j) {
        FM_CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "dataset_drift")));
        FM_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "results")), 792);
        FM_CHECK_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j, "classes")), 10);
        cJSON_Delete(j);
    }
    free(out);
    /* An empty window fails with 1 and says why; bad usage is 2. */
    snprintf(cmd, sizeof cmd, "'%s' drift check --database-url '%s' --since 2001-01-01 --until 2001-01-02",
             dbtest_fmctl(), url);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 1);
    FM_CHECK_CONTAINS(out, "nothing to compare");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' drift check --database-url '%s' --reference 999", dbtest_fmctl(), url);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 1);
    FM_CHECK_CONTAINS(out, "reference profile 999 does not exist");
    free(out);
    snprintf(cmd, sizeof cmd, "'%s' drift check --since 1 --window 1h", dbtest_fmctl());
    FM_CHECK_EQ(dbtest_run(cmd, NULL), 2);
    snprintf(cmd, sizeof cmd, "'%s' drift check --top many", dbtest_fmctl());
    FM_CHECK_EQ(dbtest_run(cmd, NULL), 2);
    snprintf(cmd, sizeof cmd, "'%s' drift reference --data /nonexistent --model '%s' --database-url '%s'",
             dbtest_fmctl(), model_dir, url);
    FM_CHECK_EQ(dbtest_run(cmd, &out), 1);
    FM_CHECK_CONTAINS(out, "/nonexistent");
    free(out);
    fm_db_close(listener);
    fm_db_close(db);
}

/* ---- the full data sets ---- */

static void test_full_sets(void) {
    const char *full = fm_test_full_data_dir();
    const char *mdir = getenv("FM_MNIST_DATA");
    if (!full || !mdir || !*mdir)
        FM_TEST_SKIP("FM_DATA and FM_MNIST_DATA are not both set (full Fashion-MNIST and MNIST)");
    SETUP_OR_FAIL();
    fm_db_t *db;
    char url[512];
    OPEN_DB("drift_full", db, url);
    fm_dataset_t t10k = {0}, digits = {0};
    FM_REQUIRE_OK(fm_dataset_load(full, "t10k", &t10k));
    FM_REQUIRE_OK(fm_dataset_load(mdir, "t10k", &digits));
    FM_REQUIRE(cli_reference(url, full, NULL) > 0);
    int64_t t1 = minute_now(30), t2 = minute_now(60);
    FM_REQUIRE_OK(log_images(db, t10k.images, t10k.n, "fashion", t1, NULL, NULL));
    FM_REQUIRE_OK(log_images(db, digits.images, digits.n, "mnist", t2, NULL, NULL));
    fm_drift_run_t *run;
    check(db, t1, "fashion", &run);
    FM_REQUIRE(run);
    FM_CHECK(!run->dataset_drift);
    FM_CHECK_EQ(run->images, 10000);
    fprintf(stderr, "  full t10k vs 60,000 train: %d of %d drifted (share %.3f)\n", run->drifted, run->features,
            run->share);
    fm_drift_run_free(run);
    check(db, t2, "mnist", &run);
    FM_REQUIRE(run);
    FM_CHECK(run->dataset_drift);
    fprintf(stderr, "  full MNIST vs 60,000 train: %d of %d drifted (share %.3f)\n", run->drifted, run->features,
            run->share);
    fm_drift_run_free(run);
    fm_dataset_free(&t10k);
    fm_dataset_free(&digits);
    fm_db_close(db);
}

FM_TEST_MAIN({"fashion_test_set_no_drift", test_fashion_test_set_no_drift},
             {"mnist_and_brightness_drift_notify", test_mnist_and_brightness_drift_notify},
             {"full_sets", test_full_sets})
