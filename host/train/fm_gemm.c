/* fm_gemm.c: oneDNN's sgemm and the OpenMP thread count (see fm_gemm.h). */
#include "fm_gemm.h"

#include <oneapi/dnnl/dnnl.h>
#include <omp.h>

#include "fm_error.h"

int fm_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a, int64_t lda,
            const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0)
        return 0;
    dnnl_status_t st = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    if (st != dnnl_success)
        return fm_fail(FM_EBACKEND, "dnnl_sgemm(%c%c, M=%lld N=%lld K=%lld) failed with status %d", trans_a ? 'T' : 'N',
                       trans_b ? 'T' : 'N', (long long)m, (long long)n, (long long)k, (int)st);
    return 0;
}

int fm_train_threads_set(int threads) {
    if (threads <= 0)
        threads = omp_get_num_procs();
    /* A fixed team size: dynamic adjustment would change how oneDNN splits
     * its reductions and with it the last bits of the weights. */
    omp_set_dynamic(0);
    omp_set_num_threads(threads);
    /* Layers called from inside the CNN's per-group parallel loop run on
     * their calling thread. */
    omp_set_max_active_levels(1);
    return threads;
}

int fm_train_threads_get(void) { return omp_get_max_threads(); }
