/* test_cuda_kernels.c: the backend's own CUDA kernels against host
 * expectations, one kernel at a time, so a wrong result in the parity tests
 * can be told apart from a kernel bug: pixel conversion (exact: same
 * rounding of the same float), NHWC 2x2 max-pool (exact), softmax + argmax
 * (ties, NaN rows). Skips without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "fm_cuda_kernels.h"
#include "fm_cuda_models.h"
#include "fm_gpu_test.h"
#include "fm_test.h"

#define CU_REQUIRE(call)                                                                       \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess) {                                                               \
            FM_TEST_FAIL_AT("%s failed: %s (%s)", #call, cudaGetErrorString(e_), cudaGetErrorName(e_)); \
            return;                                                                            \
        }                                                                                      \
    } while (0)

static const fm_cuda_dtype_t k_dtypes[] = {FM_CUDA_F32, FM_CUDA_F16, FM_CUDA_BF16};

static float half_bits_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31u, mant = h & 1023u, u;
    if (exp == 0) {
        float f = ldexpf((float)mant, -24);
        return sign ? -f : f;
    }
    if (exp == 31)
        u = sign | 0x7f800000u | (mant << 13);
    else
        u = sign | ((exp + 112u) << 23) | (mant << 13);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t float_to_half_bits(float x) { /* x already representable as a half */
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    uint32_t sign = (u >> 16) & 0x8000u;
    float a = fabsf(x);
    if (isnan(x))
        return (uint16_t)(sign | 0x7e00u);
    if (isinf(x))
        return (uint16_t)(sign | 0x7c00u);
    if (a < 6.103515625e-05f)
        return (uint16_t)(sign | (uint32_t)lrintf(a / 5.9604644775390625e-08f));
    uint32_t exp = ((u >> 23) & 255u) - 112u, mant = (u >> 13) & 1023u;
    return (uint16_t)(sign | (exp << 10) | mant);
}

/* Element i of a device-layout buffer as float. */
static float elem(const void *buf, size_t i, fm_cuda_dtype_t dt) {
    if (dt == FM_CUDA_F32)
        return ((const float *)buf)[i];
    uint16_t h = ((const uint16_t *)buf)[i];
    if (dt == FM_CUDA_F16)
        return half_bits_to_float(h);
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static void set_elem(void *buf, size_t i, fm_cuda_dtype_t dt, float x) {
    if (dt == FM_CUDA_F32)
        ((float *)buf)[i] = x;
    else if (dt == FM_CUDA_F16)
        ((uint16_t *)buf)[i] = float_to_half_bits(fm_cuda_round_f16(x));
    else {
        float r = fm_cuda_round_bf16(x);
        uint32_t u;
        memcpy(&u, &r, sizeof u);
        ((uint16_t *)buf)[i] = (uint16_t)(u >> 16);
    }
}

static float round_to(fm_cuda_dtype_t dt, float x) {
    return dt == FM_CUDA_F16 ? fm_cuda_round_f16(x) : dt == FM_CUDA_BF16 ? fm_cuda_round_bf16(x) : x;
}

static void test_pixels_to_input(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    const size_t n = 37;
    uint8_t *px = fm_gpu_random_images(n, 5), *d_px = NULL;
    px[0] = 0;
    px[1] = 255;
    void *d_out = NULL;
    CU_REQUIRE(cudaMalloc((void **)&d_px, n * FM_IMAGE_PIXELS));
    CU_REQUIRE(cudaMalloc(&d_out, n * FM_IMAGE_PIXELS * 8 * 4));
    CU_REQUIRE(cudaMemcpy(d_px, px, n * FM_IMAGE_PIXELS, cudaMemcpyHostToDevice));
    void *host = malloc(n * FM_IMAGE_PIXELS * 8 * 4);
    static const int channels[] = {1, 2, 4, 8};
    for (int d = 0; d < 3; d++)
        for (int c = 0; c < 4; c++) {
            fm_cuda_dtype_t dt = k_dtypes[d];
            int C = channels[c];
            size_t bytes = n * FM_IMAGE_PIXELS * (size_t)C * fm_cuda_dtype_size(dt);
            CU_REQUIRE(cudaMemset(d_out, 0xff, bytes)); /* poison: NaN in every type */
            CU_REQUIRE(fm_cuda_pixels_to_input(d_out, d_px, n, C, dt, 0));
            CU_REQUIRE(cudaMemcpy(host, d_out, bytes, cudaMemcpyDeviceToHost));
            size_t bad = 0;
            for (size_t i = 0; i < n * FM_IMAGE_PIXELS; i++)
                for (int ch = 0; ch < C; ch++) {
                    float want = ch == 0 ? round_to(dt, (float)px[i] * (1.0f / 255.0f)) : 0.0f;
                    float got = elem(host, i * (size_t)C + (size_t)ch, dt);
                    bad += !(got == want);
                }
            if (bad)
                FM_TEST_FAIL_AT("pixels -> %s with %d channels: %zu wrong elements", fm_cuda_dtype_name(dt), C, bad);
        }
    /* Refusals: a misaligned source, an unsupported channel count. */
    FM_CHECK(fm_cuda_pixels_to_input(d_out, d_px + 1, 1, 1, FM_CUDA_F32, 0) == cudaErrorMisalignedAddress);
    FM_CHECK(fm_cuda_pixels_to_input(d_out, d_px, 1, 3, FM_CUDA_F32, 0) == cudaErrorInvalidValue);
    free(host);
    free(px);
    cudaFree(d_px);
    cudaFree(d_out);
}

static void test_maxpool(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    static const int shapes[2][3] = {{28, 28, 32}, {14, 14, 64}};
    const size_t n = 3;
    for (int d = 0; d < 3; d++)
        for (int s = 0; s < 2; s++) {
            fm_cuda_dtype_t dt = k_dtypes[d];
            int h = shapes[s][0], w = shapes[s][1], c = shapes[s][2];
            size_t in_elems = n * (size_t)h * w * c, out_elems = n * (size_t)(h / 2) * (w / 2) * c;
            size_t es = fm_cuda_dtype_size(dt);
            void *in = malloc(in_elems * es), *out = malloc(out_elems * es), *d_in = NULL, *d_out = NULL;
            uint64_t st = 99;
            for (size_t i = 0; i < in_elems; i++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                set_elem(in, i, dt, (float)((st >> 40) % 2001) / 100.0f - 10.0f);
            }
            CU_REQUIRE(cudaMalloc(&d_in, in_elems * es));
            CU_REQUIRE(cudaMalloc(&d_out, out_elems * es));
            CU_REQUIRE(cudaMemcpy(d_in, in, in_elems * es, cudaMemcpyHostToDevice));
            CU_REQUIRE(cudaMemset(d_out, 0xff, out_elems * es));
            CU_REQUIRE(fm_cuda_maxpool2x2_nhwc(d_out, d_in, n, h, w, c, dt, 0));
            CU_REQUIRE(cudaMemcpy(out, d_out, out_elems * es, cudaMemcpyDeviceToHost));
            size_t bad = 0;
            for (size_t img = 0; img < n; img++)
                for (int y = 0; y < h / 2; y++)
                    for (int x = 0; x < w / 2; x++)
                        for (int ch = 0; ch < c; ch++) {
                            size_t base = ((img * h + 2 * y) * (size_t)w + 2 * x) * c + ch;
                            float m = fmaxf(fmaxf(elem(in, base, dt), elem(in, base + c, dt)),
                                            fmaxf(elem(in, base + (size_t)w * c, dt), elem(in, base + (size_t)w * c + c, dt)));
                            bad += !(elem(out, ((img * (h / 2) + y) * (size_t)(w / 2) + x) * c + ch, dt) == m);
                        }
            if (bad)
                FM_TEST_FAIL_AT("maxpool %s %dx%dx%d: %zu wrong elements", fm_cuda_dtype_name(dt), h, w, c, bad);
            free(in);
            free(out);
            cudaFree(d_in);
            cudaFree(d_out);
        }
}

static void test_softmax_argmax(void) {
    const char *skip = fm_gpu_skip_reason();
    if (skip)
        FM_TEST_SKIP(skip);
    const size_t n = 1001;
    const int ld = 16;
    for (int d = 0; d < 3; d++) {
        fm_cuda_dtype_t dt = k_dtypes[d];
        size_t es = fm_cuda_dtype_size(dt);
        void *logits = calloc(n * ld, es), *d_logits = NULL;
        float *probs = malloc(n * 10 * sizeof(float)), *conf = malloc(n * sizeof(float)), *d_probs = NULL, *d_conf = NULL;
        int32_t *labels = malloc(n * sizeof(int32_t)), *d_labels = NULL;
        uint64_t st = 7;
        for (size_t r = 0; r < n; r++)
            for (int k = 0; k < ld; k++) {
                st = st * 6364136223846793005ull + 1442695040888963407ull;
                /* Columns 10..15 hold large values the kernel must ignore. */
                set_elem(logits, r * ld + k, dt, k < 10 ? (float)((st >> 40) % 2001) / 100.0f - 10.0f : 1000.0f);
            }
        for (int k = 0; k < 10; k++) /* row 0: all equal -> class 0 */
            set_elem(logits, 0 * ld + k, dt, 1.5f);
        set_elem(logits, 1 * ld + 3, dt, 50.0f); /* row 1: tie between classes 3 and 7 -> 3 */
        set_elem(logits, 1 * ld + 7, dt, 50.0f);
        set_elem(logits, 2 * ld + 4, dt, NAN); /* row 2: a NaN logit: the label stays in range */
        CU_REQUIRE(cudaMalloc(&d_logits, n * ld * es));
        CU_REQUIRE(cudaMalloc((void **)&d_probs, n * 10 * sizeof(float)));
        CU_REQUIRE(cudaMalloc((void **)&d_conf, n * sizeof(float)));
        CU_REQUIRE(cudaMalloc((void **)&d_labels, n * sizeof(int32_t)));
        CU_REQUIRE(cudaMemcpy(d_logits, logits, n * ld * es, cudaMemcpyHostToDevice));
        CU_REQUIRE(cudaMemset(d_labels, 0xff, n * sizeof(int32_t)));
        CU_REQUIRE(fm_cuda_softmax_argmax(d_logits, ld, n, d_probs, d_labels, d_conf, dt, 0));
        CU_REQUIRE(cudaMemcpy(probs, d_probs, n * 10 * sizeof(float), cudaMemcpyDeviceToHost));
        CU_REQUIRE(cudaMemcpy(conf, d_conf, n * sizeof(float), cudaMemcpyDeviceToHost));
        CU_REQUIRE(cudaMemcpy(labels, d_labels, n * sizeof(int32_t), cudaMemcpyDeviceToHost));
        FM_CHECK_EQ(labels[0], 0);
        FM_CHECK_EQ(labels[1], 3);
        FM_CHECK(labels[2] >= 0 && labels[2] < 10);
        size_t bad = 0;
        for (size_t r = 3; r < n; r++) {
            float mx = -INFINITY, e[10], sum = 0;
            int best = 0;
            for (int k = 0; k < 10; k++)
                if (elem(logits, r * ld + k, dt) > mx) {
                    mx = elem(logits, r * ld + k, dt);
                    best = k;
                }
            for (int k = 0; k < 10; k++)
                sum += e[k] = expf(elem(logits, r * ld + k, dt) - mx);
            for (int k = 0; k < 10; k++)
                bad += !(fabsf(probs[r * 10 + k] - e[k] / sum) <= 1e-6f);
            bad += labels[r] != best;
            bad += !(conf[r] == probs[r * 10 + labels[r]]);
        }
        if (bad)
            FM_TEST_FAIL_AT("softmax %s: %zu wrong values", fm_cuda_dtype_name(dt), bad);
        free(logits);
        free(probs);
        free(conf);
        free(labels);
        cudaFree(d_logits);
        cudaFree(d_probs);
        cudaFree(d_conf);
        cudaFree(d_labels);
    }
}

FM_TEST_MAIN({"pixels_to_input", test_pixels_to_input}, {"maxpool", test_maxpool},
             {"softmax_argmax", test_softmax_argmax})
