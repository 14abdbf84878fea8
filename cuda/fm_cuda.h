/* fm_cuda.h: what the CUDA backend exposes beyond fm_backend_cuda_ops, for
 * tests and benchmarks: the outcome of prepare (engines, exact fp32, graphs)
 * and device-side timing of one bucket with CUDA events. */
#ifndef FM_CUDA_H
#define FM_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "fm_backend.h"

typedef struct fm_cuda_model_info {
    int exact_fp32;      /* every plan runs without tensor-core / down-converting engines */
    int graphs;          /* CUDA graphs were captured (else eager execution) */
    int in_channels;     /* conv1's padded input channels (1 for the MLP) */
    int nbuckets;
    int buckets[32];
    int streams;
    double prepare_ms;
    size_t device_bytes; /* cudaMemGetInfo difference across prepare */
    char engines[1024];  /* per layer: the engine of the largest bucket */
} fm_cuda_model_info_t;

/* 0, or FM_EINVAL when `bm` was not prepared by the CUDA backend. */
int fm_cuda_model_info(const fm_backend_model_t *bm, fm_cuda_model_info_t *out);

/* Device-side throughput of one batch size: `pixels` (batch images) are put
 * in every stream's staging buffer, then each stream replays its captured
 * graph for the bucket `iters` times back to back (eagerly when graphs are
 * off), with (`with_copies`) or without the H2D/D2H copies; `all_streams`
 * uses every stream at once, else stream 0 only. Times come from CUDA events
 * around the whole run. The streams are taken from serving for the duration.
 * batch must be <= max_batch. */
typedef struct fm_cuda_bench_result {
    double ms_total;       /* first launch to last completion, GPU clock */
    double ms_per_batch;   /* ms_total / (iters * streams used) */
    double images_per_s;   /* batch * iters * streams used / seconds */
    int streams_used;
} fm_cuda_bench_result_t;

int fm_cuda_bench_device(fm_backend_model_t *bm, const uint8_t *pixels, size_t batch, int with_copies, int iters,
                         int all_streams, fm_cuda_bench_result_t *out);

#endif /* FM_CUDA_H */
