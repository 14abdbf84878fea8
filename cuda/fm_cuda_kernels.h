/* fm_cuda_kernels.h: the small CUDA kernels of the backend, callable from C:
 * pixel conversion (with the 1/255 scale), weight conversion, 2x2 max-pool in
 * NHWC, and softmax + argmax + confidence. Each launches on `stream` and
 * returns the launch status (cudaGetLastError), so callers put it through
 * FM_DEV_CHECK like any other runtime call. Launches are legal inside stream
 * capture. */
#ifndef FM_CUDA_KERNELS_H
#define FM_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Storage types of activations and weights. */
typedef enum { FM_CUDA_F32 = 0, FM_CUDA_F16 = 1, FM_CUDA_BF16 = 2 } fm_cuda_dtype_t;

size_t fm_cuda_dtype_size(fm_cuda_dtype_t dt);

/* dst[img][p][c] = c == 0 ? src[img][p] / 255 : 0, for n images of 784 pixels
 * and `channels` (1, 2, 4 or 8) channels per pixel: the NHWC input of the
 * first layer, zero-padded in C where a layer needs C > 1. */
cudaError_t fm_cuda_pixels_to_input(void *dst, const uint8_t *src, size_t n, int channels, fm_cuda_dtype_t dt,
                                    cudaStream_t stream);

/* dst[i] = (T)src[i] for weights uploaded as fp32. */
cudaError_t fm_cuda_convert_f32(void *dst, const float *src, size_t count, fm_cuda_dtype_t dt, cudaStream_t stream);

/* 2x2 max-pool, stride 2, NHWC: src [n][h][w][c] -> dst [n][h/2][w/2][c].
 * `c` must be a multiple of 16 / sizeof(T) (checked: cudaErrorInvalidValue). */
cudaError_t fm_cuda_maxpool2x2_nhwc(void *dst, const void *src, size_t n, int h, int w, int c, fm_cuda_dtype_t dt,
                                    cudaStream_t stream);

/* One warp per row: logits [n][ld] (the first 10 of each row are classes)
 * -> probs [n][10], labels [n], confidence [n] (the first maximum wins a tie,
 * as in fm_softmax_argmax). */
cudaError_t fm_cuda_softmax_argmax(const void *logits, int ld, size_t n, float *probs, int32_t *labels,
                                   float *confidence, fm_cuda_dtype_t dt, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* FM_CUDA_KERNELS_H */
