// fm_cuda_kernels.cu: the backend's own CUDA kernels, where cuDNN has nothing
// better: uint8 -> T input conversion with the 1/255 scale, fp32 -> T weight
// conversion, NHWC 2x2 max-pool, and warp-per-row softmax + argmax.
// Entry points are extern "C" (see fm_cuda_kernels.h).
#include "fm_cuda_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

namespace {

constexpr int kThreads = 256;
constexpr unsigned kFullMask = 0xffffffffu;

template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

template <typename T> __device__ __forceinline__ float to_float(T x);
template <> __device__ __forceinline__ float to_float<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }

// Grid for a grid-stride loop over `count` items; never 0 blocks for count > 0.
inline unsigned grid_for(size_t count) {
    size_t blocks = (count + kThreads - 1) / kThreads;
    const size_t cap = (size_t)1 << 20;
    return (unsigned)(blocks < cap ? blocks : cap);
}

// One thread per 16 input pixels (one uint4): every image is 784 = 49 * 16
// bytes, so chunks never straddle images and all loads and stores are 16-byte
// vectors. The chunk expands to 16 * C elements of T, written as C*sizeof(T)
// uint4 stores; element e of the chunk is pixel e / C, channel e % C.
template <typename T, int C>
__global__ void pixels_kernel(uint4 *__restrict__ dst, const uint4 *__restrict__ src, size_t chunks) {
    constexpr int E = 16 / (int)sizeof(T); // elements of T per uint4
    constexpr int V = C * (int)sizeof(T);  // uint4 stores per chunk (16*C*sizeof(T) / 16)
    const float scale = 1.0f / 255.0f;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < chunks; i += (size_t)gridDim.x * blockDim.x) {
        const uint4 raw = src[i];
        const uint8_t *px = reinterpret_cast<const uint8_t *>(&raw);
        uint4 *out = dst + i * V;
#pragma unroll
        for (int v = 0; v < V; v++) {
            uint4 u;
            T *t = reinterpret_cast<T *>(&u);
#pragma unroll
            for (int e = 0; e < E; e++) {
                const int el = v * E + e;
                t[e] = (el % C == 0) ? from_float<T>((float)px[el / C] * scale) : from_float<T>(0.0f);
            }
            out[v] = u;
        }
    }
}

template <typename T>
__global__ void convert_kernel(T *__restrict__ dst, const float *__restrict__ src, size_t count) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < count; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = from_float<T>(src[i]);
}

// Element-wise max of two 16-byte vectors of T. Converting to float and back
// is exact (the result is one of the inputs), so one code path serves all T.
template <typename T> __device__ __forceinline__ uint4 vmax(uint4 a, uint4 b) {
    constexpr int E = 16 / (int)sizeof(T);
    uint4 r;
    const T *pa = reinterpret_cast<const T *>(&a);
    const T *pb = reinterpret_cast<const T *>(&b);
    T *pr = reinterpret_cast<T *>(&r);
#pragma unroll
    for (int e = 0; e < E; e++)
        pr[e] = from_float<T>(fmaxf(to_float<T>(pa[e]), to_float<T>(pb[e])));
    return r;
}

// One thread per output pixel and 16-byte channel vector (vc vectors per pixel).
template <typename T>
__global__ void maxpool_kernel(uint4 *__restrict__ dst, const uint4 *__restrict__ src, size_t n, int h, int w,
                               int vc) {
    const int oh = h / 2, ow = w / 2;
    const size_t total = n * (size_t)oh * ow * vc;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t t = i;
        const int v = (int)(t % vc);
        t /= vc;
        const int x = (int)(t % ow);
        t /= ow;
        const int y = (int)(t % oh);
        const size_t img = t / oh;
        const uint4 *p = src + ((img * h + 2 * y) * (size_t)w + 2 * x) * vc + v;
        const size_t row = (size_t)w * vc;
        dst[i] = vmax<T>(vmax<T>(p[0], p[vc]), vmax<T>(p[row], p[row + vc]));
    }
}

// One warp per row of logits. Lanes 0..9 hold the classes. The argmax
// reduction orders by (value, lower index) so every lane agrees on one winner
// and the first maximum wins ties; NaN counts as -inf so the order stays total.
template <typename T>
__global__ void softmax_kernel(const T *__restrict__ logits, int ld, size_t n, float *__restrict__ probs,
                               int32_t *__restrict__ labels, float *__restrict__ confidence) {
    const size_t row = (blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x & 31;
    if (row >= n) // uniform across the warp: whole warps leave together
        return;
    const float v = lane < 10 ? to_float<T>(logits[row * ld + lane]) : -INFINITY;
    float best = isnan(v) ? -INFINITY : v;
    int best_i = lane < 10 ? lane : 32;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        const float ov = __shfl_xor_sync(kFullMask, best, off);
        const int oi = __shfl_xor_sync(kFullMask, best_i, off);
        if (ov > best || (ov == best && oi < best_i)) {
            best = ov;
            best_i = oi;
        }
    }
    const float e = lane < 10 ? expf(v - best) : 0.0f;
    float sum = e;
#pragma unroll
    for (int off = 16; off > 0; off >>= 1)
        sum += __shfl_xor_sync(kFullMask, sum, off);
    const float p = e / sum;
    if (lane < 10)
        probs[row * 10 + lane] = p;
    const float p_best = __shfl_sync(kFullMask, p, best_i & 31);
    if (lane == 0) {
        labels[row] = best_i;
        confidence[row] = p_best;
    }
}

template <typename T> cudaError_t launch_pixels(void *dst, const uint8_t *src, size_t n, int channels, cudaStream_t s) {
    const size_t chunks = n * 49; // 784 / 16
    const unsigned grid = grid_for(chunks);
    uint4 *d = static_cast<uint4 *>(dst);
    const uint4 *in = reinterpret_cast<const uint4 *>(src);
    switch (channels) {
    case 1: pixels_kernel<T, 1><<<grid, kThreads, 0, s>>>(d, in, chunks); break;
    case 2: pixels_kernel<T, 2><<<grid, kThreads, 0, s>>>(d, in, chunks); break;
    case 4: pixels_kernel<T, 4><<<grid, kThreads, 0, s>>>(d, in, chunks); break;
    case 8: pixels_kernel<T, 8><<<grid, kThreads, 0, s>>>(d, in, chunks); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

} // namespace

extern "C" size_t fm_cuda_dtype_size(fm_cuda_dtype_t dt) { return dt == FM_CUDA_F32 ? 4 : 2; }

extern "C" cudaError_t fm_cuda_pixels_to_input(void *dst, const uint8_t *src, size_t n, int channels,
                                               fm_cuda_dtype_t dt, cudaStream_t stream) {
    if (n == 0)
        return cudaSuccess;
    if (!aligned16(dst) || !aligned16(src))
        return cudaErrorMisalignedAddress;
    switch (dt) {
    case FM_CUDA_F32: return launch_pixels<float>(dst, src, n, channels, stream);
    case FM_CUDA_F16: return launch_pixels<__half>(dst, src, n, channels, stream);
    case FM_CUDA_BF16: return launch_pixels<__nv_bfloat16>(dst, src, n, channels, stream);
    }
    return cudaErrorInvalidValue;
}

extern "C" cudaError_t fm_cuda_convert_f32(void *dst, const float *src, size_t count, fm_cuda_dtype_t dt,
                                           cudaStream_t stream) {
    if (count == 0)
        return cudaSuccess;
    const unsigned grid = grid_for(count);
    switch (dt) {
    case FM_CUDA_F32: return cudaMemcpyAsync(dst, src, count * sizeof(float), cudaMemcpyDeviceToDevice, stream);
    case FM_CUDA_F16: convert_kernel<__half><<<grid, kThreads, 0, stream>>>(static_cast<__half *>(dst), src, count); break;
    case FM_CUDA_BF16:
        convert_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(static_cast<__nv_bfloat16 *>(dst), src, count);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t fm_cuda_maxpool2x2_nhwc(void *dst, const void *src, size_t n, int h, int w, int c,
                                               fm_cuda_dtype_t dt, cudaStream_t stream) {
    const int esize = (int)fm_cuda_dtype_size(dt);
    if (n == 0)
        return cudaSuccess;
    if (h < 2 || w < 2 || c <= 0 || (c * esize) % 16 != 0 || !aligned16(dst) || !aligned16(src))
        return cudaErrorInvalidValue;
    const int vc = c * esize / 16;
    const size_t total = n * (size_t)(h / 2) * (w / 2) * vc;
    const unsigned grid = grid_for(total);
    uint4 *d = static_cast<uint4 *>(dst);
    const uint4 *s = static_cast<const uint4 *>(src);
    switch (dt) {
    case FM_CUDA_F32: maxpool_kernel<float><<<grid, kThreads, 0, stream>>>(d, s, n, h, w, vc); break;
    case FM_CUDA_F16: maxpool_kernel<__half><<<grid, kThreads, 0, stream>>>(d, s, n, h, w, vc); break;
    case FM_CUDA_BF16: maxpool_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(d, s, n, h, w, vc); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t fm_cuda_softmax_argmax(const void *logits, int ld, size_t n, float *probs, int32_t *labels,
                                              float *confidence, fm_cuda_dtype_t dt, cudaStream_t stream) {
    if (n == 0)
        return cudaSuccess;
    if (ld < 10)
        return cudaErrorInvalidValue;
    const size_t rows_per_block = kThreads / 32;
    const size_t blocks = (n + rows_per_block - 1) / rows_per_block;
    if (blocks > 0x7fffffffu)
        return cudaErrorInvalidValue;
    const unsigned grid = (unsigned)blocks;
    switch (dt) {
    case FM_CUDA_F32:
        softmax_kernel<float><<<grid, kThreads, 0, stream>>>(static_cast<const float *>(logits), ld, n, probs, labels,
                                                             confidence);
        break;
    case FM_CUDA_F16:
        softmax_kernel<__half><<<grid, kThreads, 0, stream>>>(static_cast<const __half *>(logits), ld, n, probs,
                                                              labels, confidence);
        break;
    case FM_CUDA_BF16:
        softmax_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16 *>(logits), ld,
                                                                     n, probs, labels, confidence);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}
