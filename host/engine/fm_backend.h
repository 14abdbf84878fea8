/* fm_backend.h: the compute backend interface shared by the CPU engine and
 * the CUDA/cuDNN backend.
 *
 * A backend is a table of function pointers over opaque handles. Optional
 * slots may be NULL; the shared layer (fm_backend.c) then supplies the
 * fallback, so callers use the fm_backend_* wrappers rather than the slots.
 *
 * Ownership: the caller owns every buffer in fm_batch_t and keeps it alive and
 * untouched until the batch completes (infer returns, or `done` is called). */
#ifndef FM_BACKEND_H
#define FM_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "fm_model.h"

typedef enum {
    FM_PRECISION_FP32 = 0, /* exact fp32 arithmetic (the default) */
    FM_PRECISION_TF32,     /* fp32 storage, tensor-core TF32 math (CUDA only) */
    FM_PRECISION_FP16,     /* fp16 storage and tensor cores, fp32 accumulation (CUDA only) */
    FM_PRECISION_BF16      /* bf16 storage and tensor cores, fp32 accumulation (CUDA only) */
} fm_precision_t;

const char *fm_precision_name(fm_precision_t p);
int fm_precision_parse(const char *s, fm_precision_t *out);

typedef struct fm_backend_config {
    int threads;              /* CPU: threads one batch may use; 0 = every core */
    int streams;              /* CUDA: concurrent streams, each with its own handle and buffers; 0 = 2 */
    int device;               /* CUDA: device ordinal */
    int max_batch;            /* largest batch that will be submitted at once (plans are built up to it) */
    fm_precision_t precision; /* arithmetic; a backend refuses what it cannot do */
    int cuda_graphs;          /* CUDA: capture one CUDA graph per batch-size bucket */
} fm_backend_config_t;

/* Defaults: threads 0, streams 2, device 0, max_batch 256, fp32, graphs on. */
void fm_backend_config_default(fm_backend_config_t *cfg);

/* One batch of images and where its results go. */
typedef struct fm_batch {
    const uint8_t *pixels; /* n * 784 input bytes, image after image */
    size_t n;              /* >= 1 */
    float *probs;          /* out: n * 10 softmax probabilities */
    int32_t *labels;       /* out: n argmax classes */
    float *confidence;     /* out: n probabilities of the argmax class */
} fm_batch_t;

typedef struct fm_backend fm_backend_t;             /* an opened backend (device, pools) */
typedef struct fm_backend_model fm_backend_model_t; /* a model made ready on a backend */

/* Completion of an asynchronous batch. Runs on a backend-owned thread: do
 * little here (push to a queue and wake the loop). */
typedef void (*fm_batch_done_fn)(fm_batch_t *batch, int status, void *user);

typedef struct fm_backend_ops {
    const char *name; /* "cpu", "cuda" */
    /* 0 when the backend can run on this machine; otherwise FM_ENODEVICE with
     * a detail such as "no CUDA device: <driver message>". */
    int (*probe)(void);
    int (*create)(const fm_backend_config_t *cfg, fm_backend_t **out);
    void (*destroy)(fm_backend_t *b);
    /* Reorders weights, builds primitives or plans for every batch size up to
     * max_batch, and runs a warm-up. May be slow; may run on any thread while
     * other prepared models keep serving (live model swaps). */
    int (*prepare)(fm_backend_t *b, const fm_model_t *m, fm_backend_model_t **out);
    void (*release)(fm_backend_model_t *bm);
    /* Synchronous forward of any n >= 1; batches above max_batch are split.
     * Safe to call from several threads at once. */
    int (*infer)(fm_backend_model_t *bm, fm_batch_t *batch);
    /* Optional. Starts a batch and returns at once; `done` is then called
     * exactly once from a backend thread. When submit returns an error,
     * `done` is never called. NULL: callers run infer on their own threads. */
    int (*submit)(fm_backend_model_t *bm, fm_batch_t *batch, fm_batch_done_fn done, void *user);
    /* Optional. Host memory for batch buffers, page-locked where that makes
     * copies asynchronous. NULL: malloc/free. */
    void *(*host_alloc)(fm_backend_t *b, size_t bytes);
    void (*host_free)(fm_backend_t *b, void *p);
    /* Optional. One line about the device and library, for logs. */
    void (*describe)(fm_backend_t *b, char *buf, size_t len);
} fm_backend_ops_t;

/* The CPU engine, always built. */
extern const fm_backend_ops_t fm_backend_cpu_ops;
#ifdef FM_HAVE_CUDA
/* The CUDA/cuDNN backend, built when nvcc and cuDNN were found. */
extern const fm_backend_ops_t fm_backend_cuda_ops;
#endif

/* Finds a backend by name ("cpu", "cuda"); NULL when unknown or not built. */
const fm_backend_ops_t *fm_backend_lookup(const char *name);
/* Resolves a user's choice: "cpu", "cuda" (an error when no GPU), or "auto"
 * (CUDA when built and a device is present; otherwise the CPU, saying why in
 * one log line). */
int fm_backend_select(const char *choice, const fm_backend_ops_t **out);

/* An opened backend: the ops table and its instance, passed around together. */
typedef struct fm_engine {
    const fm_backend_ops_t *ops;
    fm_backend_t *backend;
} fm_engine_t;

int fm_engine_open(const char *choice, const fm_backend_config_t *cfg, fm_engine_t *out);
void fm_engine_close(fm_engine_t *e);
int fm_engine_prepare(fm_engine_t *e, const fm_model_t *m, fm_backend_model_t **out);
void fm_engine_release(fm_engine_t *e, fm_backend_model_t *bm);
int fm_engine_infer(fm_engine_t *e, fm_backend_model_t *bm, fm_batch_t *batch);
/* Asynchronous when the backend has `submit`; otherwise returns FM_EUNSUPPORTED
 * and the caller (the server's worker pool) uses fm_engine_infer. */
int fm_engine_submit(fm_engine_t *e, fm_backend_model_t *bm, fm_batch_t *batch, fm_batch_done_fn done, void *user);
int fm_engine_is_async(const fm_engine_t *e);
void *fm_engine_host_alloc(fm_engine_t *e, size_t bytes);
void fm_engine_host_free(fm_engine_t *e, void *p);
void fm_engine_describe(fm_engine_t *e, char *buf, size_t len);

/* Shared helper for backends: softmax over `n` rows of 10 logits in place,
 * writing labels and confidence (first maximum wins ties). */
void fm_softmax_argmax(float *logits_to_probs, size_t n, int32_t *labels, float *confidence);

#endif /* FM_BACKEND_H */
