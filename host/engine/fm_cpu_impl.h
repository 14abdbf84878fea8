/* fm_cpu_impl.h: internal to the CPU engine. The interface between the
 * backend shell (fm_cpu_backend.c: validation, chunking, threads, caller
 * contexts, softmax) and the implementations of a forward pass that compute
 * logits (fm_cpu_chain.c: oneDNN primitives; fm_cpu_gemm.c: dnnl_sgemm).
 * Nothing outside host/engine includes this file or sees oneDNN. */
#ifndef FM_CPU_IMPL_H
#define FM_CPU_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "fm_cpu_backend.h"
#include "fm_model.h"

/* Everything an implementation needs to build its plans. */
typedef struct fm_cpu_build {
    const fm_model_t *model;
    void *dnnl_engine;  /* dnnl_engine_t of the opened backend */
    int threads;        /* OpenMP threads set in the calling thread while building and running */
    size_t tile;        /* largest number of images one `run` call receives */
    const fm_cpu_tuning_t *tuning;
} fm_cpu_build_t;

/* One way of computing the forward pass. `net` is immutable after `build`
 * and shared by every caller; `ctx` is one caller's private state (stream,
 * activations, scratchpad), used by one thread at a time. */
typedef struct fm_cpu_impl {
    const char *name;
    int (*build)(const fm_cpu_build_t *b, void **net);
    void (*free_net)(void *net);
    int (*ctx_new)(void *net, void **ctx);
    void (*ctx_free)(void *ctx);
    /* Writes n (1..tile) rows of 10 logits for n images into `logits`. */
    int (*run)(void *net, void *ctx, const uint8_t *pixels, size_t n, float *logits);
    /* A short description of the plan, e.g. the oneDNN implementations chosen. */
    void (*describe)(void *net, char *buf, size_t len);
} fm_cpu_impl_t;

extern const fm_cpu_impl_t fm_cpu_chain_impl; /* oneDNN primitives with fused ReLU */
extern const fm_cpu_impl_t fm_cpu_gemm_impl;  /* MLP only: dnnl_sgemm + vectorized bias/ReLU */

/* Helper threads (fm_cpu_pool.c). */
typedef struct fm_cpu_pool fm_cpu_pool_t;
/* Runs one chunk of a job on `lane` (0 = the calling thread, 1.. = helpers
 * that joined); returns 0 or an fm status with fm_fail's detail recorded. */
typedef int (*fm_cpu_chunk_fn)(void *arg, size_t chunk, int lane);
/* Starts `helpers` threads (0 is allowed: then every job runs on its caller). */
int fm_cpu_pool_new(int helpers, fm_cpu_pool_t **out);
/* Stops and joins the helpers; no job may be running. */
void fm_cpu_pool_free(fm_cpu_pool_t *p);
/* Runs chunks 0..nchunks-1 on the calling thread and on up to lanes - 1
 * helpers, each chunk exactly once; returns when all are done. The first
 * failure stops the claiming of further chunks and is returned with its
 * detail. Safe to call from several threads at once. */
int fm_cpu_pool_run(fm_cpu_pool_t *p, size_t nchunks, int lanes, fm_cpu_chunk_fn fn, void *arg);

/* Vectorized elementwise helpers (fm_cpu_simd.c). */
/* dst[i] = src[i] / 255 for i < count. */
void fm_cpu_u8_to_unit(const uint8_t *src, float *dst, size_t count);
/* rows x cols: x = max(x + bias[col], 0) when relu, else x + bias[col]. */
void fm_cpu_bias_act(float *x, size_t rows, size_t cols, const float *bias, int relu);
/* Softmax over rows of 10 logits in place, labels and confidence; the same
 * results as fm_softmax_argmax (first maximum wins ties). */
void fm_cpu_softmax10(float *x, size_t n, int32_t *labels, float *confidence);

#endif /* FM_CPU_IMPL_H */
