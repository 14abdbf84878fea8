/* fm_gpu_test.c: shared helpers of the CUDA backend's tests (fm_gpu_test.h). */
#include "fm_gpu_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fm_error.h"
#include "fm_idx.h"
#include "fm_ref_forward.h"
#include "fm_test.h"

const char *fm_gpu_skip_reason(void) {
    static char reason[512];
#ifdef FM_HAVE_CUDA
    if (fm_backend_cuda_ops.probe() == 0)
        return NULL;
    snprintf(reason, sizeof reason, "no usable GPU: %s", fm_last_error());
#else
    snprintf(reason, sizeof reason, "built without CUDA");
#endif
    return reason;
}

fm_gpu_tol_t fm_gpu_tolerance(fm_precision_t p) {
    switch (p) {
    /* fp32: summation order only. The others: about 20x (max) and 3-15x
     * (mean) what the CPU twin's emulation of each precision shows on
     * random weights (test_cuda_models), see docs/gpu.md. */
    case FM_PRECISION_FP32: return (fm_gpu_tol_t){1e-4, 1e-5};
    case FM_PRECISION_TF32: return (fm_gpu_tol_t){1e-2, 1e-3};
    case FM_PRECISION_FP16: return (fm_gpu_tol_t){1e-2, 1e-3};
    case FM_PRECISION_BF16: return (fm_gpu_tol_t){5e-2, 5e-3};
    }
    return (fm_gpu_tol_t){0, 0};
}

void fm_gpu_out_poison(fm_gpu_out_t *o) {
    for (size_t i = 0; i < o->n * FM_NUM_CLASSES; i++)
        o->probs[i] = NAN;
    for (size_t i = 0; i < o->n; i++) {
        o->labels[i] = -1;
        o->conf[i] = NAN;
    }
}

void fm_gpu_out_alloc(fm_gpu_out_t *o, size_t n) {
    o->n = n;
    o->probs = malloc(n * FM_NUM_CLASSES * sizeof(float));
    o->labels = malloc(n * sizeof(int32_t));
    o->conf = malloc(n * sizeof(float));
    if (!o->probs || !o->labels || !o->conf) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    fm_gpu_out_poison(o);
}

void fm_gpu_out_free(fm_gpu_out_t *o) {
    free(o->probs);
    free(o->labels);
    free(o->conf);
    memset(o, 0, sizeof *o);
}

fm_batch_t fm_gpu_batch(const uint8_t *pixels, fm_gpu_out_t *o) {
    return (fm_batch_t){.pixels = pixels, .n = o->n, .probs = o->probs, .labels = o->labels, .confidence = o->conf};
}

fm_gpu_cmp_t fm_gpu_compare(const fm_gpu_out_t *got, const fm_gpu_out_t *ref, double tol) {
    fm_gpu_cmp_t c;
    memset(&c, 0, sizeof c);
    double sum = 0;
    for (size_t i = 0; i < got->n; i++) {
        const float *g = got->probs + i * FM_NUM_CLASSES, *r = ref->probs + i * FM_NUM_CLASSES;
        double total = 0;
        int bad = 0;
        for (int k = 0; k < FM_NUM_CLASSES; k++) {
            if (!isfinite(g[k]) || g[k] < 0.0f || g[k] > 1.0f)
                bad = 1;
            double d = fabs((double)g[k] - (double)r[k]);
            if (!(d <= c.max_abs)) /* also catches NaN */
                c.max_abs = isnan(d) ? INFINITY : d;
            sum += isnan(d) ? 1.0 : d;
            total += g[k];
        }
        int32_t gl = got->labels[i];
        if (gl < 0 || gl >= FM_NUM_CLASSES || !(fabs(total - 1.0) < 1e-3) || !(got->conf[i] == g[gl]))
            bad = 1;
        c.invalid += (size_t)bad;
        if (gl != ref->labels[i]) {
            c.label_diff++;
            /* A near tie in the reference: its top two probabilities. */
            float a = -1, b = -1;
            for (int k = 0; k < FM_NUM_CLASSES; k++) {
                if (r[k] > a) {
                    b = a;
                    a = r[k];
                } else if (r[k] > b) {
                    b = r[k];
                }
            }
            if (a - b <= 2 * tol)
                c.label_diff_close++;
        }
    }
    c.mean_abs = got->n ? sum / ((double)got->n * FM_NUM_CLASSES) : 0;
    return c;
}

void fm_gpu_check_cmp(const char *what, const fm_gpu_cmp_t *c, fm_gpu_tol_t tol) {
    printf("    %-48s max|dp| %.2e mean %.2e, classes differ %zu (near ties %zu), invalid %zu\n", what, c->max_abs,
           c->mean_abs, c->label_diff, c->label_diff_close, c->invalid);
    if (!(c->max_abs <= tol.max_abs))
        FM_TEST_FAIL_AT("%s: max |dp| %.3e above the tolerance %.1e", what, c->max_abs, tol.max_abs);
    if (!(c->mean_abs <= tol.mean_abs))
        FM_TEST_FAIL_AT("%s: mean |dp| %.3e above the tolerance %.1e", what, c->mean_abs, tol.mean_abs);
    if (c->label_diff != c->label_diff_close)
        FM_TEST_FAIL_AT("%s: %zu class differences are not near ties", what, c->label_diff - c->label_diff_close);
    if (c->invalid)
        FM_TEST_FAIL_AT("%s: %zu images with invalid outputs (NaN, bad label, confidence or sum)", what, c->invalid);
}

uint8_t *fm_gpu_images(size_t n, int full, size_t *available) {
    fm_dataset_t ds;
    const char *dir = full ? fm_test_full_data_dir() : NULL;
    char *fixtures = NULL;
    if (!dir)
        dir = fixtures = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
    int rc = fm_dataset_load(dir, "t10k", &ds);
    free(fixtures);
    if (rc) {
        fprintf(stderr, "cannot load test images: %s\n", fm_last_error());
        return NULL;
    }
    uint8_t *px = malloc(n * FM_IMAGE_PIXELS);
    if (!px)
        abort();
    for (size_t i = 0; i < n; i++)
        memcpy(px + i * FM_IMAGE_PIXELS, ds.images + (i % ds.n) * FM_IMAGE_PIXELS, FM_IMAGE_PIXELS);
    if (available)
        *available = ds.n;
    fm_dataset_free(&ds);
    return px;
}

uint8_t *fm_gpu_random_images(size_t n, uint64_t seed) {
    uint8_t *px = malloc(n * FM_IMAGE_PIXELS);
    if (!px)
        abort();
    uint64_t s = seed;
    for (size_t i = 0; i < n * FM_IMAGE_PIXELS; i++) {
        uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        px[i] = (uint8_t)((z ^ (z >> 31)) >> 56);
    }
    return px;
}

fm_model_t *fm_gpu_random_model(fm_arch_t arch, uint64_t seed) {
    fm_model_t *m = fm_model_new(arch);
    if (!m)
        abort();
    /* Kaiming-uniform-like ranges keep the activations of a random net at
     * the scale of a trained one. */
    fm_ref_random_init(m, seed, sqrt(6.0));
    fm_model_set_identity(m, arch == FM_ARCH_MLP ? "random-mlp" : "random-cnn", "test");
    return m;
}

fm_model_t *fm_gpu_shipped_model(fm_arch_t arch) {
    char path[1024];
    snprintf(path, sizeof path, "%s/models/%s/model.json", FM_SOURCE_DIR, arch == FM_ARCH_MLP ? "v1" : "v2");
    struct stat st;
    if (stat(path, &st) != 0)
        return NULL;
    snprintf(path, sizeof path, "%s/models/%s", FM_SOURCE_DIR, arch == FM_ARCH_MLP ? "v1" : "v2");
    fm_model_t *m = NULL;
    if (fm_model_load(path, &m) != 0) {
        fprintf(stderr, "shipped model %s does not load: %s\n", path, fm_last_error());
        return NULL;
    }
    if (fm_model_arch(m) != arch) {
        fm_model_free(m);
        return NULL;
    }
    return m;
}

fm_backend_config_t fm_gpu_config(fm_precision_t p, int max_batch, int streams, int graphs) {
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.precision = p;
    cfg.max_batch = max_batch;
    cfg.streams = streams;
    cfg.cuda_graphs = graphs;
    return cfg;
}
