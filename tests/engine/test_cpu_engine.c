/* test_cpu_engine.c: the CPU engine against the plain-C reference forward
 * pass (tests/common/fm_ref_forward.c) on real Fashion-MNIST images, plus its
 * contract: outputs fully written and nothing past them, concurrent callers,
 * thread settings, and refusal of bad arguments. */
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fm_backend.h"
#include "fm_cpu_backend.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_ref_forward.h"
#include "fm_test.h"

#define NIMAGES 1000
#define GUARD_BYTES 64
#define GUARD_BYTE 0xA5
#define PROB_TOL 1e-5
/* fm_ref_random_init draws from +-scale/sqrt(fan_in): at 1.0 the signal
 * shrinks layer by layer and the softmax is nearly flat (every probability
 * close to 0.1), which would make the parity check blind. These scales give
 * confident, varied predictions (checked in check_not_flat). */
#define MLP_SCALE 4.0
#define CNN_SCALE 4.0

static fm_dataset_t images;
static int images_loaded;

static const uint8_t *fixture_images(void) {
    if (!images_loaded) {
        char *dir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
        int rc = fm_dataset_load(dir, "t10k", &images);
        free(dir);
        if (rc != 0) {
            fprintf(stderr, "  cannot load the fixture: %s\n", fm_last_error());
            return NULL;
        }
        images_loaded = 1;
    }
    return images.n >= NIMAGES ? images.images : NULL;
}

/* Output buffers with a guard zone after each, poisoned before every call. */
typedef struct outputs {
    size_t n;
    float *probs;
    int32_t *labels;
    float *conf;
} outputs_t;

static void *guarded_alloc(size_t bytes) {
    uint8_t *p = malloc(bytes + GUARD_BYTES);
    if (!p)
        abort();
    memset(p + bytes, GUARD_BYTE, GUARD_BYTES);
    return p;
}

static void outputs_init(outputs_t *o, size_t n) {
    o->n = n;
    o->probs = guarded_alloc(n * FM_NUM_CLASSES * sizeof(float));
    o->labels = guarded_alloc(n * sizeof(int32_t));
    o->conf = guarded_alloc(n * sizeof(float));
}

static void outputs_poison(outputs_t *o) {
    for (size_t i = 0; i < o->n * FM_NUM_CLASSES; i++)
        o->probs[i] = NAN;
    for (size_t i = 0; i < o->n; i++) {
        o->labels[i] = -1;
        o->conf[i] = NAN;
    }
}

static int guard_intact(const void *buf, size_t bytes) {
    const uint8_t *g = (const uint8_t *)buf + bytes;
    for (int i = 0; i < GUARD_BYTES; i++)
        if (g[i] != GUARD_BYTE)
            return 0;
    return 1;
}

static void outputs_free(outputs_t *o) {
    free(o->probs);
    free(o->labels);
    free(o->conf);
}

/* Every output written and consistent, and the guard zones untouched. */
static void check_outputs(const outputs_t *o, const char *what) {
    size_t bad = 0;
    for (size_t i = 0; i < o->n; i++) {
        const float *p = o->probs + i * FM_NUM_CLASSES;
        double sum = 0;
        int finite = 1;
        for (int k = 0; k < FM_NUM_CLASSES; k++) {
            finite &= isfinite(p[k]) && p[k] >= 0.0f && p[k] <= 1.0f;
            sum += p[k];
        }
        int lab = o->labels[i];
        if (!finite || fabs(sum - 1.0) > 1e-5 || lab < 0 || lab >= FM_NUM_CLASSES || o->conf[i] != p[lab]) {
            if (bad++ < 3)
                FM_TEST_FAIL_AT("%s: image %zu: output not fully written or inconsistent (label %d, sum %g)", what, i,
                                lab, sum);
        }
    }
    FM_CHECK_EQ(bad, 0);
    FM_CHECK(guard_intact(o->probs, o->n * FM_NUM_CLASSES * sizeof(float)));
    FM_CHECK(guard_intact(o->labels, o->n * sizeof(int32_t)));
    FM_CHECK(guard_intact(o->conf, o->n * sizeof(float)));
}

/* Runs all NIMAGES images through `bm` in batches of `bs`. */
static int infer_all(fm_engine_t *e, fm_backend_model_t *bm, const uint8_t *px, size_t bs, outputs_t *o) {
    for (size_t off = 0; off < o->n; off += bs) {
        size_t c = o->n - off < bs ? o->n - off : bs;
        fm_batch_t b = {.pixels = px + off * FM_IMAGE_PIXELS,
                        .n = c,
                        .probs = o->probs + off * FM_NUM_CLASSES,
                        .labels = o->labels + off,
                        .confidence = o->conf + off};
        int rc = fm_engine_infer(e, bm, &b);
        if (rc)
            return rc;
    }
    return 0;
}

/* The reference outputs of one model on the fixture images. */
typedef struct expected {
    float probs[NIMAGES * FM_NUM_CLASSES];
    int32_t labels[NIMAGES];
} expected_t;

/* Computes the reference and checks that the model's predictions are not
 * trivially flat or constant (which would make parity meaningless). */
static expected_t *reference(const fm_model_t *m) {
    const uint8_t *px = fixture_images();
    expected_t *x = malloc(sizeof *x);
    if (!px || !x) {
        free(x);
        return NULL;
    }
    fm_ref_forward(m, px, NIMAGES, x->probs, x->labels);
    double mean_max = 0;
    int seen[FM_NUM_CLASSES] = {0}, classes = 0;
    for (size_t i = 0; i < NIMAGES; i++) {
        mean_max += x->probs[i * FM_NUM_CLASSES + x->labels[i]];
        if (!seen[x->labels[i]]++)
            classes++;
    }
    mean_max /= NIMAGES;
    fprintf(stderr, "  reference: mean top probability %.3f, %d distinct labels\n", mean_max, classes);
    FM_CHECK(mean_max > 0.3);
    FM_CHECK(classes >= 3);
    return x;
}

/* Engine vs reference for one model and one engine setup, at every batch size. */
static void parity(const fm_model_t *m, const expected_t *ref, const fm_backend_config_t *cfg,
                   const fm_cpu_tuning_t *tuning, const char *label) {
    const uint8_t *px = fixture_images();
    FM_REQUIRE(px && ref);
    fm_engine_t e;
    FM_REQUIRE_OK(fm_engine_open("cpu", cfg, &e));
    if (tuning)
        FM_REQUIRE_OK(fm_cpu_backend_set_tuning(e.backend, tuning));
    fm_backend_model_t *bm = NULL;
    FM_CHECK_OK(fm_engine_prepare(&e, m, &bm));
    static const size_t sizes[] = {1, 7, 64, 1000};
    outputs_t o;
    outputs_init(&o, NIMAGES);
    for (size_t s = 0; bm && s < sizeof sizes / sizeof sizes[0]; s++) {
        outputs_poison(&o);
        FM_CHECK_OK(infer_all(&e, bm, px, sizes[s], &o));
        char what[128];
        snprintf(what, sizeof what, "%s batch %zu", label, sizes[s]);
        check_outputs(&o, what);
        double maxd = 0;
        size_t label_diff = 0;
        for (size_t i = 0; i < NIMAGES * FM_NUM_CLASSES; i++) {
            double d = fabs((double)o.probs[i] - ref->probs[i]);
            if (!(d <= maxd))
                maxd = d; /* a NaN sticks and fails the check below */
        }
        for (size_t i = 0; i < NIMAGES; i++)
            label_diff += o.labels[i] != ref->labels[i];
        fprintf(stderr, "  %s: max |dp| %.3g, %zu label differences\n", what, maxd, label_diff);
        FM_CHECK(maxd <= PROB_TOL);
        FM_CHECK_EQ(label_diff, 0);
    }
    outputs_free(&o);
    fm_engine_release(&e, bm);
    fm_engine_close(&e);
}

static fm_model_t *random_model(fm_arch_t arch, uint64_t seed) {
    fm_model_t *m = fm_model_new(arch);
    if (m)
        fm_ref_random_init(m, seed, arch == FM_ARCH_MLP ? MLP_SCALE : CNN_SCALE);
    return m;
}

static void parity_random(fm_arch_t arch) {
    fm_model_t *m = random_model(arch, arch == FM_ARCH_MLP ? 11 : 12);
    FM_REQUIRE(m);
    expected_t *ref = reference(m);
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    parity(m, ref, &cfg, NULL, "default");
    /* A max_batch that is not a power of two exercises the bucket split, and
     * batches of 1000 are cut into several tiles. */
    cfg.max_batch = 100;
    parity(m, ref, &cfg, NULL, "max_batch 100");
    cfg.max_batch = 256;
    cfg.threads = 1;
    parity(m, ref, &cfg, NULL, "1 thread");
    /* Three threads whatever the machine: uneven chunks across helpers. */
    cfg.threads = 3;
    parity(m, ref, &cfg, NULL, "3 threads");
    free(ref);
    fm_model_free(m);
}

static void test_parity_random_mlp(void) { parity_random(FM_ARCH_MLP); }
static void test_parity_random_cnn(void) { parity_random(FM_ARCH_CNN); }

/* Both MLP implementations, so that the one not chosen by default stays correct. */
static void test_parity_mlp_impls(void) {
    fm_model_t *m = random_model(FM_ARCH_MLP, 21);
    FM_REQUIRE(m);
    expected_t *ref = reference(m);
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.max_batch = 4096;
    fm_cpu_tuning_t t;
    fm_cpu_tuning_default(&t);
    t.mlp_impl = FM_CPU_IMPL_PRIMITIVES;
    parity(m, ref, &cfg, &t, "mlp primitives");
    t.mlp_impl = FM_CPU_IMPL_SGEMM;
    parity(m, ref, &cfg, &t, "mlp sgemm");
    t.mlp_tile = 33;
    parity(m, ref, &cfg, &t, "mlp sgemm tile 33");
    t.mlp_impl = FM_CPU_IMPL_AUTO;
    t.mlp_tile = 0;
    t.parallel = FM_CPU_PARALLEL_INTRA;
    parity(m, ref, &cfg, &t, "mlp intra-op threads");
    free(ref);
    fm_model_free(m);
}

static void test_parity_cnn_tiles(void) {
    fm_model_t *m = random_model(FM_ARCH_CNN, 22);
    FM_REQUIRE(m);
    expected_t *ref = reference(m);
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.max_batch = 4096;
    fm_cpu_tuning_t t;
    fm_cpu_tuning_default(&t);
    t.cnn_tile = 256;
    parity(m, ref, &cfg, &t, "cnn tile 256");
    t.cnn_tile = 24;
    parity(m, ref, &cfg, &t, "cnn tile 24");
    t.cnn_tile = 0;
    t.cnn_nhwc = 1;
    parity(m, ref, &cfg, &t, "cnn nhwc");
    t.cnn_nhwc = 0;
    t.parallel = FM_CPU_PARALLEL_INTRA;
    parity(m, ref, &cfg, &t, "cnn intra-op threads");
    free(ref);
    fm_model_free(m);
}

static void shipped(const char *version) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", FM_MODELS_DIR, version);
    struct stat st;
    char *file = fm_test_path(dir, "model.safetensors");
    int present = stat(file, &st) == 0;
    free(file);
    if (!present) {
        static char reason[1200];
        snprintf(reason, sizeof reason, "no shipped model at %s yet (it is being trained)", dir);
        FM_TEST_SKIP(reason);
    }
    fm_model_t *m = NULL;
    FM_REQUIRE_OK(fm_model_load(dir, &m));
    /* v1 is the MLP, v2 the CNN (README). */
    FM_CHECK_EQ(fm_model_arch(m), strcmp(version, "v1") == 0 ? FM_ARCH_MLP : FM_ARCH_CNN);
    expected_t *ref = reference(m);
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    parity(m, ref, &cfg, NULL, version);
    free(ref);
    fm_model_free(m);
}

static void test_parity_shipped_v1(void) { shipped("v1"); }
static void test_parity_shipped_v2(void) { shipped("v2"); }

/* With the full data set ($FM_DATA): a shipped model on all 10,000 test
 * images, batch 256, against the reference and against the test accuracy
 * its trainer recorded in the sidecar. */
static void full_set(const char *version) {
    const char *data = fm_test_full_data_dir();
    if (!data)
        FM_TEST_SKIP("FM_DATA does not name the full Fashion-MNIST (the fixture cases cover parity)");
    static char reason[1200];
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", FM_MODELS_DIR, version);
    char *file = fm_test_path(dir, "model.safetensors");
    struct stat st;
    int present = stat(file, &st) == 0;
    free(file);
    if (!present) {
        snprintf(reason, sizeof reason, "no shipped model at %s yet (it is being trained)", dir);
        FM_TEST_SKIP(reason);
    }
    fm_model_t *m = NULL;
    fm_dataset_t ds;
    FM_REQUIRE_OK(fm_model_load(dir, &m));
    FM_REQUIRE_OK(fm_dataset_load(data, "t10k", &ds));
    size_t n = ds.n;
    float *ref = malloc(n * FM_NUM_CLASSES * sizeof(float));
    int32_t *ref_labels = malloc(n * sizeof(int32_t));
    outputs_t o;
    outputs_init(&o, n);
    outputs_poison(&o);
    FM_REQUIRE(ref && ref_labels);
    fm_ref_forward(m, ds.images, n, ref, ref_labels);
    fm_engine_t e;
    fm_backend_model_t *bm = NULL;
    FM_REQUIRE_OK(fm_engine_open("cpu", NULL, &e));
    FM_REQUIRE_OK(fm_engine_prepare(&e, m, &bm));
    FM_CHECK_OK(infer_all(&e, bm, ds.images, 256, &o));
    check_outputs(&o, version);
    double maxd = 0;
    size_t label_diff = 0, correct = 0;
    for (size_t i = 0; i < n * FM_NUM_CLASSES; i++) {
        double d = fabs((double)o.probs[i] - ref[i]);
        if (!(d <= maxd))
            maxd = d;
    }
    for (size_t i = 0; i < n; i++) {
        label_diff += o.labels[i] != ref_labels[i];
        correct += o.labels[i] == ds.labels[i];
    }
    double acc = (double)correct / (double)n, recorded = 0;
    fprintf(stderr, "  %s on %zu test images: accuracy %.4f, max |dp| %.3g, %zu label differences\n", version, n,
            acc, maxd, label_diff);
    FM_CHECK(maxd <= PROB_TOL);
    FM_CHECK_EQ(label_diff, 0);
    if (fm_model_meta_get_number(m, "metrics", "test_accuracy", &recorded) == 0) {
        fprintf(stderr, "  sidecar test_accuracy %.4f\n", recorded);
        FM_CHECK_NEAR(acc, recorded, 5e-4);
    }
    fm_engine_release(&e, bm);
    fm_engine_close(&e);
    outputs_free(&o);
    free(ref);
    free(ref_labels);
    fm_dataset_free(&ds);
    fm_model_free(m);
}

static void test_full_set_v1(void) { full_set("v1"); }
static void test_full_set_v2(void) { full_set("v2"); }

/* Several threads on one prepared model: each result equals the one a single
 * caller gets with the same batch size, bit for bit. */
typedef struct worker {
    fm_engine_t *e;
    fm_backend_model_t *bm;
    const uint8_t *px;
    size_t bs;
    const float *expect;
    int rounds;
    int mismatches;
    int errors;
} worker_t;

static void *worker_main(void *arg) {
    worker_t *w = arg;
    outputs_t o;
    outputs_init(&o, NIMAGES);
    for (int r = 0; r < w->rounds; r++) {
        outputs_poison(&o);
        if (infer_all(w->e, w->bm, w->px, w->bs, &o) != 0)
            w->errors++;
        else if (memcmp(o.probs, w->expect, NIMAGES * FM_NUM_CLASSES * sizeof(float)) != 0)
            w->mismatches++;
    }
    outputs_free(&o);
    return NULL;
}

static void concurrent(fm_arch_t arch) {
    const uint8_t *px = fixture_images();
    FM_REQUIRE(px);
    fm_model_t *m = random_model(arch, 31);
    FM_REQUIRE(m);
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.threads = 2; /* so that callers share the helper even on one core */
    fm_engine_t e;
    FM_REQUIRE_OK(fm_engine_open("cpu", &cfg, &e));
    fm_backend_model_t *bm = NULL;
    FM_REQUIRE_OK(fm_engine_prepare(&e, m, &bm));
    enum { NTHREADS = 4 };
    static const size_t sizes[NTHREADS] = {1000, 64, 7, 300};
    float *expect[NTHREADS];
    worker_t w[NTHREADS];
    pthread_t tid[NTHREADS];
    for (int t = 0; t < NTHREADS; t++) {
        outputs_t o;
        outputs_init(&o, NIMAGES);
        outputs_poison(&o);
        FM_CHECK_OK(infer_all(&e, bm, px, sizes[t], &o));
        expect[t] = o.probs;
        free(o.labels);
        free(o.conf);
        w[t] = (worker_t){.e = &e, .bm = bm, .px = px, .bs = sizes[t], .expect = expect[t],
                          .rounds = arch == FM_ARCH_MLP ? 20 : 3};
    }
    for (int t = 0; t < NTHREADS; t++)
        FM_REQUIRE(pthread_create(&tid[t], NULL, worker_main, &w[t]) == 0);
    for (int t = 0; t < NTHREADS; t++) {
        pthread_join(tid[t], NULL);
        FM_CHECK_EQ(w[t].errors, 0);
        FM_CHECK_EQ(w[t].mismatches, 0);
        free(expect[t]);
    }
    fm_engine_release(&e, bm);
    fm_engine_close(&e);
    fm_model_free(m);
}

static void test_concurrent_mlp(void) { concurrent(FM_ARCH_MLP); }
static void test_concurrent_cnn(void) { concurrent(FM_ARCH_CNN); }

/* infer leaves the calling thread's OpenMP setting as it found it. */
static void test_threads_restored(void) {
    const uint8_t *px = fixture_images();
    FM_REQUIRE(px);
    fm_model_t *m = random_model(FM_ARCH_MLP, 41);
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.threads = 1;
    fm_engine_t e;
    FM_REQUIRE_OK(fm_engine_open("cpu", &cfg, &e));
    fm_backend_model_t *bm = NULL;
    omp_set_num_threads(3);
    FM_REQUIRE_OK(fm_engine_prepare(&e, m, &bm));
    FM_CHECK_EQ(omp_get_max_threads(), 3);
    outputs_t o;
    outputs_init(&o, 10);
    outputs_poison(&o);
    FM_CHECK_OK(infer_all(&e, bm, px, 10, &o));
    FM_CHECK_EQ(omp_get_max_threads(), 3);
    check_outputs(&o, "threads 1");
    outputs_free(&o);
    char line[256];
    fm_engine_describe(&e, line, sizeof line);
    fprintf(stderr, "  describe: %s\n", line);
    FM_CHECK_CONTAINS(line, "oneDNN");
    FM_CHECK_CONTAINS(line, "1 threads");
    fm_engine_release(&e, bm);
    fm_engine_close(&e);
    fm_model_free(m);
}

static void test_bad_arguments(void) {
    const fm_backend_ops_t *ops = &fm_backend_cpu_ops;
    FM_CHECK_EQ(ops->probe(), 0);
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    fm_backend_t *b = NULL;
    cfg.max_batch = 0;
    FM_CHECK_ERR(ops->create(&cfg, &b), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "max_batch");
    cfg.max_batch = 256;
    cfg.threads = -1;
    FM_CHECK_ERR(ops->create(&cfg, &b), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "threads");
    cfg.threads = 0;
    cfg.precision = FM_PRECISION_FP16;
    FM_CHECK_ERR(ops->create(&cfg, &b), FM_EUNSUPPORTED);
    cfg.precision = FM_PRECISION_FP32;
    FM_CHECK_ERR(ops->create(NULL, &b), FM_EINVAL);
    FM_REQUIRE_OK(ops->create(&cfg, &b));

    fm_backend_model_t *bm = NULL;
    FM_CHECK_ERR(ops->prepare(b, NULL, &bm), FM_EINVAL);
    fm_cpu_tuning_t t;
    fm_cpu_tuning_default(&t);
    t.cnn_impl = FM_CPU_IMPL_SGEMM;
    FM_CHECK_ERR(fm_cpu_backend_set_tuning(b, &t), FM_EUNSUPPORTED);

    fm_model_t *m = random_model(FM_ARCH_MLP, 51);
    FM_REQUIRE_OK(ops->prepare(b, m, &bm));
    uint8_t px[2 * FM_IMAGE_PIXELS] = {0};
    float probs[2 * FM_NUM_CLASSES], conf[2];
    int32_t labels[2];
    fm_batch_t ok = {.pixels = px, .n = 2, .probs = probs, .labels = labels, .confidence = conf};
    fm_batch_t bad;
    FM_CHECK_ERR(ops->infer(bm, NULL), FM_EINVAL);
    FM_CHECK_ERR(ops->infer(NULL, &ok), FM_EINVAL);
    bad = ok;
    bad.n = 0;
    FM_CHECK_ERR(ops->infer(bm, &bad), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "n = 0");
    bad = ok;
    bad.pixels = NULL;
    FM_CHECK_ERR(ops->infer(bm, &bad), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "pixels");
    bad = ok;
    bad.probs = NULL;
    FM_CHECK_ERR(ops->infer(bm, &bad), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "probs");
    bad = ok;
    bad.labels = NULL;
    FM_CHECK_ERR(ops->infer(bm, &bad), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "labels");
    bad = ok;
    bad.confidence = NULL;
    FM_CHECK_ERR(ops->infer(bm, &bad), FM_EINVAL);
    FM_CHECK_CONTAINS(fm_last_error(), "confidence");
    bad = ok;
    bad.n = SIZE_MAX / 2;
    FM_CHECK_ERR(ops->infer(bm, &bad), FM_EINVAL);
    /* After all those refusals, a good batch still works. */
    FM_CHECK_OK(ops->infer(bm, &ok));
    FM_CHECK(labels[0] >= 0 && labels[0] < FM_NUM_CLASSES);

    ops->release(bm);
    ops->destroy(b);
    fm_model_free(m);
}

FM_TEST_MAIN({"parity_random_mlp", test_parity_random_mlp}, {"parity_random_cnn", test_parity_random_cnn},
             {"parity_mlp_impls", test_parity_mlp_impls}, {"parity_cnn_tiles", test_parity_cnn_tiles},
             {"parity_shipped_v1", test_parity_shipped_v1}, {"parity_shipped_v2", test_parity_shipped_v2},
             {"full_set_v1", test_full_set_v1}, {"full_set_v2", test_full_set_v2},
             {"concurrent_mlp", test_concurrent_mlp}, {"concurrent_cnn", test_concurrent_cnn},
             {"threads_restored", test_threads_restored}, {"bad_arguments", test_bad_arguments})
