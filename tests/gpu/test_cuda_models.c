/* test_cuda_models.c: the CUDA backend's network definitions, checked on the
 * CPU (no GPU needed): the CPU twin of the device pipeline (same steps,
 * buffers, reordered KRSC / [in][out] weights, NHWC flatten order for the
 * CNN's fc1, padded input channels and logits) must reproduce the reference
 * forward pass in fp32, and its emulated TF32/fp16/bf16 runs must stay within
 * the tolerances the GPU tests use. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cuda_models.h"
#include "fm_gpu_test.h"
#include "fm_ref_forward.h"
#include "fm_test.h"

static void reference(const fm_model_t *m, const uint8_t *px, fm_gpu_out_t *o) {
    fm_ref_forward(m, px, o->n, o->probs, o->labels);
    for (size_t i = 0; i < o->n; i++)
        o->conf[i] = o->probs[i * FM_NUM_CLASSES + o->labels[i]];
}

static void twin(const fm_model_t *m, fm_precision_t p, int channels, const uint8_t *px, fm_gpu_out_t *o) {
    fm_cuda_net_t net;
    fm_cuda_dtype_t dt = p == FM_PRECISION_FP16 ? FM_CUDA_F16 : p == FM_PRECISION_BF16 ? FM_CUDA_BF16 : FM_CUDA_F32;
    FM_REQUIRE_OK(fm_cuda_net_init(&net, fm_model_arch(m), dt, channels));
    FM_REQUIRE_OK(fm_cuda_net_check_model(&net, m));
    FM_CHECK_OK(fm_cuda_net_forward_host(&net, m, p, px, o->n, o->probs, o->labels, o->conf));
}

static void twin_vs_reference(fm_arch_t arch, const fm_model_t *m, const char *what, size_t n) {
    uint8_t *px = fm_gpu_images(n, 0, NULL);
    FM_REQUIRE(px);
    fm_gpu_out_t ref, got;
    fm_gpu_out_alloc(&ref, n);
    fm_gpu_out_alloc(&got, n);
    reference(m, px, &ref);
    static const fm_precision_t precs[] = {FM_PRECISION_FP32, FM_PRECISION_TF32, FM_PRECISION_FP16, FM_PRECISION_BF16};
    for (int i = 0; i < 4; i++) {
        int pads[3] = {1, 4, 8};
        int npads = arch == FM_ARCH_CNN && precs[i] == FM_PRECISION_FP32 ? 3 : 1;
        for (int j = 0; j < npads; j++) {
            int ch = arch == FM_ARCH_MLP ? 1 : precs[i] == FM_PRECISION_FP32 || precs[i] == FM_PRECISION_TF32 ? pads[j] : 8;
            fm_gpu_out_poison(&got);
            twin(m, precs[i], ch, px, &got);
            char label[128];
            snprintf(label, sizeof label, "%s %s twin, C=%d, %zu images", what, fm_precision_name(precs[i]), ch, n);
            fm_gpu_cmp_t c = fm_gpu_compare(&got, &ref, fm_gpu_tolerance(precs[i]).max_abs);
            fm_gpu_tol_t tol = fm_gpu_tolerance(precs[i]);
            if (precs[i] == FM_PRECISION_FP32) /* the twin is the device path in exact fp32 */
                tol = (fm_gpu_tol_t){1e-5, 1e-6};
            fm_gpu_check_cmp(label, &c, tol);
        }
    }
    fm_gpu_out_free(&ref);
    fm_gpu_out_free(&got);
    free(px);
}

static void test_mlp_twin(void) {
    fm_model_t *m = fm_gpu_random_model(FM_ARCH_MLP, 11);
    twin_vs_reference(FM_ARCH_MLP, m, "mlp random", 300);
    fm_model_free(m);
}

static void test_cnn_twin(void) {
    fm_model_t *m = fm_gpu_random_model(FM_ARCH_CNN, 12);
    twin_vs_reference(FM_ARCH_CNN, m, "cnn random", 60);
    fm_model_free(m);
}

static void test_shipped_twins(void) {
    int any = 0;
    for (int a = 0; a < 2; a++) {
        fm_arch_t arch = a ? FM_ARCH_CNN : FM_ARCH_MLP;
        fm_model_t *m = fm_gpu_shipped_model(arch);
        if (!m)
            continue;
        any = 1;
        twin_vs_reference(arch, m, arch == FM_ARCH_MLP ? "mlp shipped" : "cnn shipped", arch == FM_ARCH_MLP ? 1000 : 150);
        fm_model_free(m);
    }
    if (!any)
        FM_TEST_SKIP("no shipped models (models/v1, models/v2) in the source tree yet");
}

/* Layout spot checks with weights that encode their own PyTorch index. */
static void test_reorder_layouts(void) {
    fm_model_t *m = fm_model_new(FM_ARCH_CNN);
    FM_REQUIRE(m);
    for (int p = 0; p < fm_model_param_count(m); p++) {
        fm_tensor_t *t = fm_model_param_mut(m, p);
        for (size_t i = 0; i < t->numel; i++)
            t->data[i] = (float)i;
    }
    fm_cuda_net_t net;
    FM_REQUIRE_OK(fm_cuda_net_init(&net, FM_ARCH_CNN, FM_CUDA_F32, 8));
    FM_REQUIRE_OK(fm_cuda_net_check_model(&net, m));
    /* conv1: KRSC with C padded to 8: w[k][r][s][0] = W[k][0][r][s], others 0. */
    float *w = calloc(net.layers[0].w_elems, sizeof(float)), *b = calloc(net.layers[0].b_elems, sizeof(float));
    fm_cuda_net_layer_weights(&net, m, 0, w, b);
    FM_CHECK_NEAR(w[((5 * 3 + 2) * 3 + 1) * 8 + 0], (5 * 9 + 2 * 3 + 1), 0);
    FM_CHECK_NEAR(w[((5 * 3 + 2) * 3 + 1) * 8 + 3], 0, 0);
    FM_CHECK_NEAR(b[31], 31, 0);
    free(w);
    free(b);
    /* conv2: w[k][r][s][c] = W[k][c][r][s]. */
    w = calloc(net.layers[1].w_elems, sizeof(float));
    b = calloc(net.layers[1].b_elems, sizeof(float));
    fm_cuda_net_layer_weights(&net, m, 1, w, b);
    FM_CHECK_NEAR(w[((7 * 3 + 1) * 3 + 2) * 32 + 9], ((7 * 32 + 9) * 3 + 1) * 3 + 2, 0);
    free(w);
    free(b);
    /* fc1: row (h*7 + w)*64 + c of [3136][128] holds PyTorch column c*49 + h*7 + w. */
    w = calloc(net.layers[2].w_elems, sizeof(float));
    b = calloc(net.layers[2].b_elems, sizeof(float));
    fm_cuda_net_layer_weights(&net, m, 2, w, b);
    int h = 3, x = 5, c = 17, o = 100;
    FM_CHECK_NEAR(w[(size_t)((h * 7 + x) * 64 + c) * 128 + o], (float)o * 3136 + c * 49 + h * 7 + x, 0);
    free(w);
    free(b);
    /* fc2: [128][16], columns 10..15 zero, biases padded with zeros. */
    w = calloc(net.layers[3].w_elems, sizeof(float));
    b = calloc(net.layers[3].b_elems, sizeof(float));
    fm_cuda_net_layer_weights(&net, m, 3, w, b);
    FM_CHECK_NEAR(w[20 * 16 + 9], 9 * 128 + 20, 0);
    FM_CHECK_NEAR(w[20 * 16 + 12], 0, 0);
    FM_CHECK_NEAR(b[9], 9, 0);
    FM_CHECK_NEAR(b[15], 0, 0);
    free(w);
    free(b);
    fm_model_free(m);
}

static void test_rounding(void) {
    FM_CHECK_NEAR(fm_cuda_round_f16(1.0f + 1.0f / 4096), 1.0f, 0);         /* below half an ulp (2^-11) */
    FM_CHECK_NEAR(fm_cuda_round_f16(1.0f + 3.0f / 2048), 1.0f + 2.0f / 1024, 0); /* tie to even */
    FM_CHECK(isinf(fm_cuda_round_f16(70000.0f)));                            /* beyond 65504 */
    FM_CHECK_NEAR(fm_cuda_round_f16(65504.0f), 65504.0f, 0);
    FM_CHECK_NEAR(fm_cuda_round_f16(1e-7f), 2 * 5.9604644775390625e-08, 0); /* subnormal: 1.68 quanta of 2^-24 */
    FM_CHECK_NEAR(fm_cuda_round_bf16(1.0f + 1.0f / 256), 1.0f, 0);         /* tie to even */
    FM_CHECK_NEAR(fm_cuda_round_bf16(1.0f + 3.0f / 256), 1.0f + 4.0f / 256, 0);
    FM_CHECK_NEAR(fm_cuda_round_tf32(1.0f + 1.0f / 4096), 1.0f, 0);
    FM_CHECK_NEAR(fm_cuda_round_tf32(3e38f), 3e38f, 3e38f * 1e-3);        /* fp32 range kept */
}

static void test_rejects_wrong_shapes(void) {
    fm_model_t *m = fm_model_new(FM_ARCH_MLP);
    fm_cuda_net_t net;
    FM_REQUIRE_OK(fm_cuda_net_init(&net, FM_ARCH_CNN, FM_CUDA_F32, 1));
    FM_CHECK_ERR(fm_cuda_net_check_model(&net, m), FM_ESHAPE);
    FM_CHECK_ERR(fm_cuda_net_init(&net, FM_ARCH_CNN, FM_CUDA_F32, 3), FM_EINVAL);
    FM_CHECK_ERR(fm_cuda_net_init(&net, FM_ARCH_MLP, FM_CUDA_F32, 8), FM_EINVAL);
    fm_model_free(m);
}

FM_TEST_MAIN({"reorder_layouts", test_reorder_layouts}, {"rounding", test_rounding},
             {"rejects_wrong_shapes", test_rejects_wrong_shapes}, {"mlp_twin", test_mlp_twin},
             {"cnn_twin", test_cnn_twin}, {"shipped_twins", test_shipped_twins})
