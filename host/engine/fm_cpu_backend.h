/* fm_cpu_backend.h: knobs of the CPU engine beyond fm_backend_config_t, so
 * that benchmarks and tests can compare implementations side by side. The
 * server never needs this header: the defaults are the measured best. */
#ifndef FM_CPU_BACKEND_H
#define FM_CPU_BACKEND_H

#include <stddef.h>

typedef struct fm_backend fm_backend_t;

typedef enum {
    FM_CPU_IMPL_AUTO = 0,   /* the measured default for the architecture */
    FM_CPU_IMPL_PRIMITIVES, /* oneDNN inner product / convolution / pooling primitives */
    FM_CPU_IMPL_SGEMM       /* dnnl_sgemm plus a vectorized bias+ReLU pass (MLP only) */
} fm_cpu_impl_kind_t;

/* How one batch uses its threads. */
typedef enum {
    FM_CPU_PARALLEL_AUTO = 0, /* the measured default */
    /* oneDNN parallelises inside every primitive (an OpenMP team per layer,
     * with barriers inside the kernels). */
    FM_CPU_PARALLEL_INTRA,
    /* The batch is split into one slice of images per thread, and each thread
     * runs single-threaded primitives on its slice: one fork/join per batch. */
    FM_CPU_PARALLEL_IMAGES
} fm_cpu_parallel_t;

typedef struct fm_cpu_tuning {
    fm_cpu_impl_kind_t mlp_impl;
    fm_cpu_impl_kind_t cnn_impl;
    /* Largest number of images one pass of the network handles; bigger
     * batches are cut into tiles of this size (keeps activations in cache).
     * 0 = the default for the architecture; never more than max_batch. */
    size_t mlp_tile;
    size_t cnn_tile;
    /* CNN activations in NHWC (channels last) instead of the layout the
     * convolution prefers (blocked nChw16c on AVX-512). */
    int cnn_nhwc;
    fm_cpu_parallel_t parallel;
} fm_cpu_tuning_t;

/* The defaults (what a backend opened without this call uses). */
void fm_cpu_tuning_default(fm_cpu_tuning_t *t);
/* Replaces the tuning of a CPU backend (one created by fm_backend_cpu_ops);
 * affects models prepared afterwards. */
int fm_cpu_backend_set_tuning(fm_backend_t *b, const fm_cpu_tuning_t *t);
const char *fm_cpu_impl_name(fm_cpu_impl_kind_t k);
const char *fm_cpu_parallel_name(fm_cpu_parallel_t p);

typedef struct fm_backend_model fm_backend_model_t;
/* One line on a model prepared by the CPU engine: the implementation, the
 * oneDNN kernels chosen, the tile and the threads. */
void fm_cpu_model_describe(const fm_backend_model_t *bm, char *buf, size_t len);

#endif /* FM_CPU_BACKEND_H */
