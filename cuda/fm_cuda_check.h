/* fm_cuda_check.h: the one check macro every CUDA runtime and cuDNN call in
 * the CUDA backend goes through. A failure records an fm_fail() detail that
 * names the file, the line, the call and the library's own message, and the
 * enclosing function returns the mapped FM_E* code. */
#ifndef FM_CUDA_CHECK_H
#define FM_CUDA_CHECK_H

#include <cuda_runtime_api.h>
#include <cudnn.h>

/* Map a failure to an FM_E* code and record the detail (see FM_DEV_CHECK). */
int fm_cuda_status_fail(cudaError_t e, const char *expr, const char *file, int line);
int fm_cudnn_status_fail(cudnnStatus_t s, const char *expr, const char *file, int line);
/* 0 on success, otherwise the fail functions above. */
static inline int fm_cuda_status_(cudaError_t e, const char *expr, const char *file, int line) {
    return e == cudaSuccess ? 0 : fm_cuda_status_fail(e, expr, file, line);
}
static inline int fm_cudnn_status_(cudnnStatus_t s, const char *expr, const char *file, int line) {
    return s == CUDNN_STATUS_SUCCESS ? 0 : fm_cudnn_status_fail(s, expr, file, line);
}

/* Picks the reporter from the type of `x`; `x` is evaluated once (the
 * controlling expression of _Generic is not evaluated). */
#define FM_DEV_STATUS(x, expr)                                                          \
    _Generic((x), cudaError_t: fm_cuda_status_, cudnnStatus_t: fm_cudnn_status_)(x, expr, \
                                                                                 __FILE__, __LINE__)

/* FM_DEV_CHECK(call): on failure, return the FM_E* code from the enclosing
 * function (which must return int). */
#define FM_DEV_CHECK(call)                                 \
    do {                                                   \
        int fm_dev_rc_ = FM_DEV_STATUS((call), #call);     \
        if (fm_dev_rc_ != 0)                               \
            return fm_dev_rc_;                             \
    } while (0)

/* FM_DEV_TRY(rc, call): on failure, store the code in `rc` and jump to the
 * enclosing function's `fail:` label (for functions that must clean up). */
#define FM_DEV_TRY(rc, call)                               \
    do {                                                   \
        (rc) = FM_DEV_STATUS((call), #call);               \
        if ((rc) != 0)                                     \
            goto fail;                                     \
    } while (0)

/* FM_DEV_WARN(call): for teardown paths that cannot return an error; a
 * failure is logged with the same detail and otherwise ignored. */
#define FM_DEV_WARN(call)                                             \
    do {                                                              \
        if (FM_DEV_STATUS((call), #call) != 0)                        \
            fm_cuda_log_last_error("teardown");                       \
    } while (0)

void fm_cuda_log_last_error(const char *what);

#endif /* FM_CUDA_CHECK_H */
