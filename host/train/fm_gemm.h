/* fm_gemm.h: the trainer's matrix multiply and thread count, the only door to
 * oneDNN in host/train (Debian's OpenBLAS misdetects the CPU of the build
 * machines and runs about 6x slower, so it is not used). */
#ifndef FM_GEMM_H
#define FM_GEMM_H

#include <stdint.h>

/* Row-major C[M][N] = alpha * op(A) * op(B) + beta * C, where op(X) is X or
 * its transpose (trans_x non-zero). lda/ldb/ldc are row strides in floats.
 * Returns 0 or FM_EBACKEND with oneDNN's status in the detail. */
int fm_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
            const float *b, int64_t ldb, float beta, float *c, int64_t ldc);

/* Sets the threads used by the trainer's loops and by oneDNN (one OpenMP
 * pool serves both); 0 means every core. Returns the count in effect. Results
 * are bit-identical for equal thread counts, not across counts. */
int fm_train_threads_set(int threads);
int fm_train_threads_get(void);

#endif /* FM_GEMM_H */
