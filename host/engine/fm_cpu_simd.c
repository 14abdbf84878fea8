/* fm_cpu_simd.c: the CPU engine's small elementwise passes (pixel scaling,
 * bias + ReLU, softmax). Each is compiled for AVX-512, AVX2 and baseline
 * x86-64 and picked at load time (GCC target_clones), because the build does
 * not assume -march=native. */
#include <math.h>

#include "fm_backend.h"
#include "fm_cpu_impl.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FM_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FM_SIMD_CLONES
#endif

FM_SIMD_CLONES
void fm_cpu_u8_to_unit(const uint8_t *restrict src, float *restrict dst, size_t count) {
    /* Division, not multiplication by 1/255, so that values are the
     * correctly rounded p/255 (exact for 0 and 255). */
    for (size_t i = 0; i < count; i++)
        dst[i] = (float)src[i] / 255.0f;
}

FM_SIMD_CLONES
void fm_cpu_bias_act(float *restrict x, size_t rows, size_t cols, const float *restrict bias, int relu) {
    for (size_t r = 0; r < rows; r++) {
        float *row = x + r * cols;
        if (relu)
            for (size_t c = 0; c < cols; c++) {
                float v = row[c] + bias[c];
                row[c] = v > 0.0f ? v : 0.0f;
            }
        else
            for (size_t c = 0; c < cols; c++)
                row[c] += bias[c];
    }
}

void fm_cpu_softmax10(float *x, size_t n, int32_t *labels, float *confidence) {
    fm_softmax_argmax(x, n, labels, confidence);
}
