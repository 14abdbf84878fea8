/* fm_cuda_internal.h: the CUDA backend's shared structures: streams ("lanes"),
 * jobs, and prepared models. Private to cuda/; see docs/gpu.md for the design.
 *
 * Locking: fm_backend.mu guards the lanes' busy state, the job queue, jobs'
 * counters and models' inflight counts. A lane that is busy belongs to the
 * thread that launched its chunk until the chunk's host callback frees it. */
#ifndef FM_CUDA_INTERNAL_H
#define FM_CUDA_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>
#include <cudnn.h>

#include "fm_backend.h"
#include "fm_cuda.h"
#include "fm_cuda_models.h"
#include "fm_cudnn_graph.h"

#define FM_CUDA_MAX_LANES 8
#define FM_CUDA_MAX_BUCKETS 32
/* Output row per image in the output buffers: 10 probabilities, the label
 * (int32) and the confidence, stored as [probs B*10 | labels B | conf B]. */
#define FM_CUDA_OUT_FLOATS 12

struct fm_cuda_job;

typedef struct fm_cuda_lane {
    int index;
    cudaStream_t stream;
    cudnnHandle_t dnn;  /* bound to `stream` */
    uint8_t *h_in;      /* pinned staging: max_batch * 784 bytes */
    float *h_out;       /* pinned staging: max_batch * FM_CUDA_OUT_FLOATS */
    /* The chunk in flight (valid while busy). */
    int busy;
    struct fm_cuda_job *job;
    fm_backend_model_t *model;
    size_t row0, n;     /* rows of job->batch */
    int bucket;         /* index into fm_backend.buckets */
    int direct;         /* user buffers are pinned: no staging copies */
    atomic_int claimed; /* set by whoever completes the chunk (callback or watchdog) */
    uint64_t started_us;
} fm_cuda_lane_t;

typedef struct fm_cuda_job {
    fm_backend_model_t *model;
    fm_batch_t *batch;
    fm_batch_done_fn done;
    void *user;
    size_t next_row;    /* rows handed to lanes so far */
    int outstanding;    /* chunks launched and not completed */
    int status;         /* first error */
    int direct;
    int sync;           /* infer(): the caller waits on `finished` */
    int finished;
    struct fm_cuda_job *next;
} fm_cuda_job_t;

struct fm_backend {
    fm_backend_config_t cfg;
    int device;
    char device_name[256];
    int sm_count, cc_major, cc_minor;
    size_t total_mem;
    int driver_version, runtime_version;
    size_t cudnn_version;
    int nlanes;
    fm_cuda_lane_t lanes[FM_CUDA_MAX_LANES];
    int max_batch;
    int nbuckets;
    int buckets[FM_CUDA_MAX_BUCKETS];
    pthread_mutex_t mu;
    pthread_cond_t cv_work; /* dispatcher: a lane freed, a job queued, a failure to report */
    pthread_cond_t cv_done; /* infer() waiters, release() and bench waiters */
    fm_cuda_job_t *q_head, *q_tail; /* jobs with rows not yet handed to a lane */
    fm_cuda_job_t *deferred;        /* failed async jobs whose `done` the dispatcher calls */
    int next_lane;
    int stop;
    int broken;                     /* a device fault was seen: refuse new work */
    pthread_t dispatcher;
    int dispatcher_started;
    int nmodels;
};

/* Per (model, lane): device buffers, variant packs and graphs. */
typedef struct fm_cuda_model_lane {
    uint8_t *d_in;    /* max_batch * 784 */
    void *buf[2];     /* activation ping-pong buffers */
    float *d_out;     /* max_batch * FM_CUDA_OUT_FLOATS */
    void *workspace;
    cudnnBackendDescriptor_t *vp;  /* [bucket * nlayers + layer] */
    cudaGraphExec_t *g_full;       /* [bucket]: staging H2D, compute, D2H staging */
    cudaGraphExec_t *g_compute;    /* [bucket]: compute only */
} fm_cuda_model_lane_t;

struct fm_backend_model {
    fm_backend_t *b;
    fm_cuda_net_t net;
    fm_precision_t precision;
    char name[160];
    void *d_w[FM_CUDA_MAX_LAYERS];
    void *d_b[FM_CUDA_MAX_LAYERS];
    fm_cudnn_plan_t *plans;        /* [layer * nbuckets + bucket] */
    int64_t workspace;             /* bytes, max over plans */
    fm_cuda_model_lane_t lanes[FM_CUDA_MAX_LANES];
    cudaStream_t prep_stream;      /* prepare's own stream and handle (kept: */
    cudnnHandle_t prep_dnn;        /* the graphs' HANDLE attribute points at it) */
    cudnnHandle_t plan_dnn[32];    /* the plan-building threads' handles (kept for the same reason) */
    int nplan_dnn;
    pthread_mutex_t exec_mu;       /* eager mode: one execution of a plan at a time */
    int graphs;
    int exact;
    int inflight;                  /* chunks in flight (under b->mu) */
    fm_cuda_model_info_t info;
};

/* fm_cuda_prepare.c */
int fm_cuda_prepare(fm_backend_t *b, const fm_model_t *m, fm_backend_model_t **out);
void fm_cuda_model_free(fm_backend_model_t *bm);
/* Enqueues the lane's chunk (copies in, compute, copies out) on lane->stream.
 * On error the stream has been synchronized and nothing of the chunk is
 * pending. */
int fm_cuda_chunk_launch(fm_backend_model_t *bm, fm_cuda_lane_t *lane);
/* Enqueues one bucket's work for benchmarks (no user buffers involved). */
int fm_cuda_bucket_launch(fm_backend_model_t *bm, fm_cuda_lane_t *lane, int bucket, int with_copies);

/* fm_cuda_backend.c */
int fm_cuda_bucket_for(const fm_backend_t *b, size_t n);
/* Takes lanes away from serving (blocking) and gives them back (for benchmarks). */
int fm_cuda_lanes_acquire(fm_backend_t *b, int count, fm_cuda_lane_t **out);
void fm_cuda_lanes_release(fm_backend_t *b, fm_cuda_lane_t **lanes, int count);

#endif /* FM_CUDA_INTERNAL_H */
