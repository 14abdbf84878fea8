/* fm_cuda_check.c: turns CUDA runtime and cuDNN failures into FM_E* codes
 * with a detail naming the file, the line, the call and the library's words. */
#include "fm_cuda_check.h"

#include <string.h>

#include "fm_error.h"
#include "fm_log.h"

int fm_cuda_status_fail(cudaError_t e, const char *expr, const char *file, int line) {
    int code = FM_EBACKEND;
    if (e == cudaErrorMemoryAllocation)
        code = FM_ENOMEM;
    else if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver || e == cudaErrorInvalidDevice ||
             e == cudaErrorDevicesUnavailable || e == cudaErrorSystemDriverMismatch ||
             e == cudaErrorCompatNotSupportedOnDevice)
        code = FM_ENODEVICE;
    /* Reset the runtime's non-sticky "last error" so a later
     * cudaGetLastError() does not report this failure a second time. */
    (void)cudaGetLastError();
    return fm_fail(code, "%s:%d: %s failed: %s (%s)", file, line, expr, cudaGetErrorName(e), cudaGetErrorString(e));
}

int fm_cudnn_status_fail(cudnnStatus_t s, const char *expr, const char *file, int line) {
    char detail[512];
    detail[0] = '\0';
    cudnnGetLastErrorString(detail, sizeof detail);
    /* The last-error text can span several lines; keep the log record on one. */
    for (char *p = detail; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    int code = FM_EBACKEND;
    int category = CUDNN_STATUS_CATEGORY((int)s);
    if (category == CUDNN_STATUS_NOT_SUPPORTED)
        code = FM_EUNSUPPORTED;
    else if (s == CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED ||
             s == CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED)
        code = FM_ENOMEM;
    return fm_fail(code, "%s:%d: %s failed: %s (%d)%s%s", file, line, expr, cudnnGetErrorString(s), (int)s,
                   detail[0] ? ": " : "", detail);
}

void fm_cuda_log_last_error(const char *what) { fm_warn("cuda", "%s: %s", what, fm_last_error()); }
