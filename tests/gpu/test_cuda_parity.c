/* test_cuda_parity.c: the CUDA backend against the CPU engine (and the
 * plain-C reference) on both architectures, every precision, batch sizes
 * 1, 3, 127, 256 and 4097 (above max_batch, so split into chunks), real test
 * images and fresh random pixels, with the outputs poisoned (NaN, label -1)
 * before every run. With $FM_DATA, the whole 10,000-image test set: the
 * CUDA path must pick the CPU engine's class for >= 99.9 % of the images.
 * Skips without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cuda.h"
#include "fm_gpu_test.h"
#include "fm_ref_forward.h"
#include "fm_test.h"

static const fm_precision_t k_precs[] = {FM_PRECISION_FP32, FM_PRECISION_TF32, FM_PRECISION_FP16, FM_PRECISION_BF16};
static const size_t k_sizes[] = {1, 3, 127, 256, 4097};
#define MAX_N 4097

/* The CPU engine's outputs for the first n images. */
static int cpu_run(const fm_model_t *m, const uint8_t *px, size_t n, fm_gpu_out_t *out) {
    fm_engine_t cpu;
    fm_backend_config_t cfg;
    fm_backend_config_default(&cfg);
    cfg.max_batch = 1024;
    int rc = fm_engine_open("cpu", &cfg, &cpu);
    if (rc)
        return rc;
    fm_backend_model_t *bm = NULL;
    rc = fm_engine_prepare(&cpu, m, &bm);
    fm_gpu_out_alloc(out, n);
    fm_batch_t b = fm_gpu_batch(px, out);
    if (!rc)
        rc = fm_engine_infer(&cpu, bm, &b);
    fm_engine_release(&cpu, bm);
    fm_engine_close(&cpu);
    return rc;
}

/* The first n rows of a larger output set. */
static fm_gpu_out_t head(const fm_gpu_out_t *o, size_t n) {
    return (fm_gpu_out_t){.n = n, .probs = o->probs, .labels = o->labels, .conf = o->conf};
}

static fm_gpu_tol_t tolerance_for(fm_precision_t p, const fm_cuda_model_info_t *info) {
    /* fp32 is exact only when cuDNN offered engines without TF32 for every
     * layer; otherwise the model runs (and is checked) as TF32. */
    if (p == FM_PRECISION_FP32 && !info->exact_fp32)
        return fm_gpu_tolerance(FM_PRECISION_TF32);
    return fm_gpu_tolerance(p);
}

static void parity(fm_arch_t arch, fm_model_t *m, const char *what) {
    uint8_t *fixture = fm_gpu_images(MAX_N, 0, NULL), *random = fm_gpu_random_images(MAX_N, 0x5eed);
    FM_REQUIRE(fixture);
    fm_gpu_out_t cpu_fix, cpu_rnd, ref;
    FM_REQUIRE_OK(cpu_run(m, fixture, MAX_N, &cpu_fix));
    FM_REQUIRE_OK(cpu_run(m, random, MAX_N, &cpu_rnd));
    /* The reference on a few images anchors both engines. */
    fm_gpu_out_alloc(&ref, 127);
    fm_ref_forward(m, fixture, 127, ref.probs, ref.labels);
    for (size_t i = 0; i < 127; i++)
        ref.conf[i] = ref.probs[i * FM_NUM_CLASSES + ref.labels[i]];

    for (int p = 0; p < 4; p++) {
        fm_engine_t e;
        fm_backend_config_t cfg = fm_gpu_config(k_precs[p], 256, 2, 1);
        FM_REQUIRE_OK(fm_engine_open("cuda", &cfg, &e));
        fm_backend_model_t *bm = NULL;
        int rc = fm_engine_prepare(&e, m, &bm);
        if (rc) {
            FM_TEST_FAIL_AT("%s %s: prepare: %s", what, fm_precision_name(k_precs[p]), fm_last_error());
            fm_engine_close(&e);
            continue;
        }
        fm_cuda_model_info_t info;
        FM_CHECK_OK(fm_cuda_model_info(bm, &info));
        printf("  %s %s: %s, graphs %s, conv1 C=%d, prepared in %.0f ms, %.1f MiB; %s\n", what,
               fm_precision_name(k_precs[p]), info.exact_fp32 ? "exact fp32" : "tensor cores", info.graphs ? "on" : "off",
               info.in_channels, info.prepare_ms, (double)info.device_bytes / 1048576.0, info.engines);
        fm_gpu_tol_t tol = tolerance_for(k_precs[p], &info);
        fm_gpu_out_t got;
        fm_gpu_out_alloc(&got, MAX_N);
        for (int s = 0; s < 5; s++)
            for (int input = 0; input < 2; input++) {
                size_t n = k_sizes[s];
                fm_gpu_out_t g = head(&got, n);
                fm_gpu_out_poison(&g);
                fm_batch_t b = fm_gpu_batch(input ? random : fixture, &g);
                rc = fm_engine_infer(&e, bm, &b);
                if (rc) {
                    FM_TEST_FAIL_AT("%s %s n=%zu: infer: %s", what, fm_precision_name(k_precs[p]), n, fm_last_error());
                    continue;
                }
                fm_gpu_out_t r = head(input ? &cpu_rnd : &cpu_fix, n);
                fm_gpu_cmp_t c = fm_gpu_compare(&g, &r, tol.max_abs);
                char label[160];
                snprintf(label, sizeof label, "%s %s n=%zu %s vs cpu", what, fm_precision_name(k_precs[p]), n,
                         input ? "random" : "images");
                fm_gpu_check_cmp(label, &c, tol);
                if (n == 127 && !input) {
                    c = fm_gpu_compare(&g, &ref, tol.max_abs);
                    snprintf(label, sizeof label, "%s %s n=127 images vs reference", what, fm_precision_name(k_precs[p]));
                    fm_gpu_check_cmp(label, &c, tol);
                }
            }
        fm_gpu_out_free(&got);
        fm_engine_release(&e, bm);
        fm_engine_close(&e);
    }
    fm_gpu_out_free(&cpu_fix);
    fm_gpu_out_free(&cpu_rnd);
    fm_gpu_out_free(&ref);
    free(fixture);
    free(random);
}

static void test_mlp_parity(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    fm_model_t *m = fm_gpu_random_model(FM_ARCH_MLP, 21);
    parity(FM_ARCH_MLP, m, "mlp random");
    fm_model_free(m);
    if ((m = fm_gpu_shipped_model(FM_ARCH_MLP))) {
        parity(FM_ARCH_MLP, m, "mlp v1");
        fm_model_free(m);
    }
}

static void test_cnn_parity(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    fm_model_t *m = fm_gpu_random_model(FM_ARCH_CNN, 22);
    parity(FM_ARCH_CNN, m, "cnn random");
    fm_model_free(m);
    if ((m = fm_gpu_shipped_model(FM_ARCH_CNN))) {
        parity(FM_ARCH_CNN, m, "cnn v2");
        fm_model_free(m);
    }
}

/* The whole test set: class agreement with the CPU engine per precision. The
 * 99.9 % rule applies to the shipped (trained) models; random weights give
 * far more near ties, so for them every disagreement must be a near tie. */
static void test_full_test_set(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    if (!fm_test_full_data_dir())
        FM_TEST_SKIP("FM_DATA does not name the full Fashion-MNIST");
    size_t avail = 0;
    uint8_t *px = fm_gpu_images(10000, 1, &avail);
    FM_REQUIRE(px);
    FM_REQUIRE(avail == 10000);
    for (int a = 0; a < 2; a++) {
        fm_arch_t arch = a ? FM_ARCH_CNN : FM_ARCH_MLP;
        fm_model_t *m = fm_gpu_shipped_model(arch);
        int trained = m != NULL;
        if (!m)
            m = fm_gpu_random_model(arch, 23);
        fm_gpu_out_t cpu;
        FM_REQUIRE_OK(cpu_run(m, px, 10000, &cpu));
        for (int p = 0; p < 4; p++) {
            fm_engine_t e;
            fm_backend_config_t cfg = fm_gpu_config(k_precs[p], 1024, 2, 1);
            FM_REQUIRE_OK(fm_engine_open("cuda", &cfg, &e));
            fm_backend_model_t *bm = NULL;
            FM_REQUIRE_OK(fm_engine_prepare(&e, m, &bm));
            fm_cuda_model_info_t info;
            FM_CHECK_OK(fm_cuda_model_info(bm, &info));
            fm_gpu_out_t got;
            fm_gpu_out_alloc(&got, 10000);
            fm_batch_t b = fm_gpu_batch(px, &got);
            FM_CHECK_OK(fm_engine_infer(&e, bm, &b));
            fm_gpu_tol_t tol = tolerance_for(k_precs[p], &info);
            fm_gpu_cmp_t c = fm_gpu_compare(&got, &cpu, tol.max_abs);
            double agree = 1.0 - (double)c.label_diff / 10000.0;
            char label[160];
            snprintf(label, sizeof label, "%s %s 10000 test images (%.2f %% same class)", trained ? "shipped" : "random",
                     fm_arch_name(arch), agree * 100.0);
            if (trained) {
                /* The rule, then the tolerance on probabilities. */
                if (agree < 0.999)
                    FM_TEST_FAIL_AT("%s %s: only %.3f %% of the classes match the CPU engine", fm_arch_name(arch),
                                    fm_precision_name(k_precs[p]), agree * 100.0);
                c.label_diff_close = c.label_diff; /* within the 0.1 % allowance */
            }
            printf("  %s: %s\n", fm_precision_name(k_precs[p]), label);
            fm_gpu_check_cmp(label, &c, tol);
            fm_gpu_out_free(&got);
            fm_engine_release(&e, bm);
            fm_engine_close(&e);
        }
        fm_gpu_out_free(&cpu);
        fm_model_free(m);
    }
    free(px);
}

FM_TEST_MAIN({"mlp_parity", test_mlp_parity}, {"cnn_parity", test_cnn_parity}, {"full_test_set", test_full_test_set})
