/* fm_cuda_backend.c: the CUDA/cuDNN backend's ops table (fm_backend_cuda_ops):
 * device probing, streams ("lanes") with their cuDNN handles and pinned
 * staging buffers, batch-size buckets, and the scheduling of batches onto
 * lanes: infer() and submit() split a batch into chunks of at most
 * max_batch, each chunk runs on a free lane and completes through a
 * cudaLaunchHostFunc callback, and one dispatcher thread launches queued
 * chunks as lanes free up (host callbacks may not call CUDA). */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_cuda_check.h"
#include "fm_cuda_internal.h"
#include "fm_error.h"
#include "fm_log.h"
#include "fm_time.h"

#define FM_CUDA_MAX_BATCH_LIMIT 32768
/* A chunk still running after this long makes the watchdog look for a device
 * fault (after which host callbacks no longer run). */
#define FM_CUDA_WATCHDOG_US 2000000u

typedef struct fm_cuda_job_error {
    char msg[384];
} fm_cuda_job_error_t;

/* The detail of a job's first error, kept with the job because the failure
 * may happen on a thread other than the one that reports it. */
typedef struct fm_cuda_job_ext {
    fm_cuda_job_t job;
    fm_cuda_job_error_t err;
} fm_cuda_job_ext_t;

static fm_cuda_job_error_t *job_err(fm_cuda_job_t *job) { return &((fm_cuda_job_ext_t *)job)->err; }

static void job_fail_locked(fm_cuda_job_t *job, int rc, const char *detail) {
    if (job->status)
        return;
    job->status = rc ? rc : FM_EBACKEND;
    snprintf(job_err(job)->msg, sizeof job_err(job)->msg, "%s", detail ? detail : fm_strerror(job->status));
}

/* ---- probe and device facts --------------------------------------------- */

static int cuda_probe(void) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return fm_fail(FM_ENODEVICE, "no CUDA device: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
    if (n <= 0)
        return fm_fail(FM_ENODEVICE, "no CUDA device: the driver reports none");
    int major = 0, minor = 0;
    e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
    if (e == cudaSuccess)
        e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return fm_fail(FM_ENODEVICE, "no usable CUDA device: %s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    }
    /* cuDNN's fp32 runtime fusions need Ampere or newer. */
    if (major < 8)
        return fm_fail(FM_ENODEVICE, "CUDA device 0 is sm_%d%d; the cuDNN graphs need sm_80 (Ampere) or newer", major,
                       minor);
    return 0;
}

int fm_cuda_bucket_for(const fm_backend_t *b, size_t n) {
    for (int i = 0; i < b->nbuckets; i++)
        if ((size_t)b->buckets[i] >= n)
            return i;
    return b->nbuckets - 1;
}

/* ---- scheduling ----------------------------------------------------------- */

static fm_cuda_lane_t *take_free_lane_locked(fm_backend_t *b) {
    for (int i = 0; i < b->nlanes; i++) {
        int k = (b->next_lane + i) % b->nlanes;
        if (!b->lanes[k].busy) {
            b->next_lane = (k + 1) % b->nlanes;
            return &b->lanes[k];
        }
    }
    return NULL;
}

static int has_free_lane_locked(const fm_backend_t *b) {
    for (int i = 0; i < b->nlanes; i++)
        if (!b->lanes[i].busy)
            return 1;
    return 0;
}

static void dequeue_head_locked(fm_backend_t *b) {
    fm_cuda_job_t *job = b->q_head;
    b->q_head = job->next;
    if (!b->q_head)
        b->q_tail = NULL;
    job->next = NULL;
}

/* A job whose rows are all handed out and whose chunks have all completed.
 * Synchronous jobs wake their caller; failed asynchronous ones are reported
 * by the dispatcher thread, so `done` never runs inside submit(). Successful
 * asynchronous jobs are completed by the host callback itself. */
static void finish_locked(fm_backend_t *b, fm_cuda_job_t *job) {
    if (job->sync) {
        job->finished = 1;
        pthread_cond_broadcast(&b->cv_done);
    } else {
        job->next = b->deferred;
        b->deferred = job;
        pthread_cond_signal(&b->cv_work);
    }
}

static void free_lane_locked(fm_backend_t *b, fm_cuda_lane_t *lane) {
    lane->busy = 0;
    lane->job = NULL;
    lane->model = NULL;
    pthread_cond_signal(&b->cv_work);
    pthread_cond_broadcast(&b->cv_done);
}

static int job_complete(const fm_cuda_job_t *job) { return job->outstanding == 0 && job->next_row == job->batch->n; }

/* The host callback that ends a chunk, on CUDA's callback thread: copies
 * staged outputs to the caller's buffers, frees the lane and, for the last
 * chunk of an asynchronous job, calls `done`. It makes no CUDA calls. */
static void CUDART_CB lane_done(void *arg) {
    fm_cuda_lane_t *lane = arg;
    fm_backend_t *b = lane->model->b;
    if (atomic_exchange(&lane->claimed, 1))
        return; /* the watchdog already failed this chunk */
    fm_cuda_job_t *job = lane->job;
    if (!lane->direct) {
        fm_batch_t *bt = job->batch;
        const size_t B = (size_t)b->buckets[lane->bucket], n = lane->n, r = lane->row0;
        memcpy(bt->probs + r * FM_NUM_CLASSES, lane->h_out, n * FM_NUM_CLASSES * sizeof(float));
        memcpy(bt->labels + r, lane->h_out + B * 10, n * sizeof(int32_t));
        memcpy(bt->confidence + r, lane->h_out + B * 11, n * sizeof(float));
    }
    pthread_mutex_lock(&b->mu);
    fm_backend_model_t *bm = lane->model;
    bm->inflight--;
    job->outstanding--;
    free_lane_locked(b, lane);
    /* Read everything needed before unlocking: a synchronous job lives on its
     * caller's stack and may be gone the moment `finished` is seen. */
    int complete = job_complete(job), sync = job->sync;
    fm_batch_done_fn done = job->done;
    fm_batch_t *batch = job->batch;
    void *user = job->user;
    int status = job->status;
    if (complete && sync) {
        job->finished = 1;
        pthread_cond_broadcast(&b->cv_done);
    }
    pthread_mutex_unlock(&b->mu);
    if (complete && !sync) {
        done(batch, status, user);
        free(job); /* the first member of the fm_cuda_job_ext_t allocated by submit */
    }
}

/* Hands queued rows to free lanes and launches them, until the queue is empty
 * or no lane is free. Any thread may pump; a lane belongs to the pumping
 * thread from the moment it is taken until its chunk is enqueued. */
static void pump(fm_backend_t *b) {
    pthread_mutex_lock(&b->mu);
    while (b->q_head && !b->stop) {
        fm_cuda_job_t *job = b->q_head;
        if (job->status || b->broken) {
            /* A failed job's remaining rows are dropped. */
            if (!job->status)
                job_fail_locked(job, FM_EBACKEND, "the CUDA backend saw a device fault earlier; restart the process");
            dequeue_head_locked(b);
            job->next_row = job->batch->n;
            if (job->outstanding == 0)
                finish_locked(b, job);
            continue;
        }
        fm_cuda_lane_t *lane = take_free_lane_locked(b);
        if (!lane)
            break;
        size_t left = job->batch->n - job->next_row;
        size_t n = left < (size_t)b->max_batch ? left : (size_t)b->max_batch;
        lane->busy = 1;
        lane->job = job;
        lane->model = job->model;
        lane->row0 = job->next_row;
        lane->n = n;
        lane->bucket = fm_cuda_bucket_for(b, n);
        lane->direct = job->direct;
        atomic_store(&lane->claimed, 0);
        lane->started_us = fm_now_us();
        job->next_row += n;
        job->outstanding++;
        job->model->inflight++;
        if (job->next_row == job->batch->n)
            dequeue_head_locked(b);
        pthread_mutex_unlock(&b->mu);

        int rc = fm_cuda_chunk_launch(lane->model, lane);
        if (!rc) {
            rc = FM_DEV_STATUS(cudaLaunchHostFunc(lane->stream, lane_done, lane),
                               "cudaLaunchHostFunc(lane->stream, lane_done, lane)");
            if (rc) /* the chunk is enqueued but nobody would hear of it */
                FM_DEV_WARN(cudaStreamSynchronize(lane->stream));
        }
        char detail[384] = "";
        if (rc)
            snprintf(detail, sizeof detail, "%s", fm_last_error());

        pthread_mutex_lock(&b->mu);
        if (rc) {
            fm_error("cuda", "batch chunk failed: %s", detail);
            job_fail_locked(job, rc, detail);
            job->model->inflight--;
            job->outstanding--;
            free_lane_locked(b, lane);
            if (job_complete(job))
                finish_locked(b, job);
        }
    }
    pthread_mutex_unlock(&b->mu);
}

/* Fails the chunk of a lane whose stream hit a device fault (sticky errors
 * stop host callbacks), so no caller waits forever. */
static void watchdog(fm_backend_t *b) {
    uint64_t now = fm_now_us();
    for (int i = 0; i < b->nlanes; i++) {
        fm_cuda_lane_t *lane = &b->lanes[i];
        pthread_mutex_lock(&b->mu);
        int suspect = lane->busy && lane->job && now - lane->started_us > FM_CUDA_WATCHDOG_US;
        pthread_mutex_unlock(&b->mu);
        if (!suspect)
            continue;
        cudaError_t e = cudaStreamQuery(lane->stream);
        if (e == cudaSuccess || e == cudaErrorNotReady)
            continue;
        if (atomic_exchange(&lane->claimed, 1))
            continue;
        char detail[384];
        snprintf(detail, sizeof detail, "CUDA device fault on stream %d: %s (%s); restart the process", i,
                 cudaGetErrorString(e), cudaGetErrorName(e));
        fm_error("cuda", "%s", detail);
        pthread_mutex_lock(&b->mu);
        b->broken = 1;
        fm_cuda_job_t *job = lane->job;
        if (job) {
            job_fail_locked(job, FM_EBACKEND, detail);
            job->outstanding--;
            lane->model->inflight--;
            free_lane_locked(b, lane);
            if (job_complete(job))
                finish_locked(b, job);
        }
        pthread_mutex_unlock(&b->mu);
    }
}

static void call_deferred(fm_cuda_job_t *list) {
    while (list) {
        fm_cuda_job_t *job = list;
        list = job->next;
        job->done(job->batch, job->status, job->user);
        free(job);
    }
}

/* The dispatcher: launches queued chunks when lanes free up, reports failed
 * asynchronous jobs, and runs the watchdog. */
static void *dispatcher_main(void *arg) {
    fm_backend_t *b = arg;
    if (cudaSetDevice(b->device) != cudaSuccess)
        (void)cudaGetLastError();
    uint64_t last_watch = fm_now_us();
    pthread_mutex_lock(&b->mu);
    for (;;) {
        if (b->deferred) {
            fm_cuda_job_t *list = b->deferred;
            b->deferred = NULL;
            pthread_mutex_unlock(&b->mu);
            call_deferred(list);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        if (b->stop)
            break;
        if (b->q_head && (has_free_lane_locked(b) || b->q_head->status || b->broken)) {
            pthread_mutex_unlock(&b->mu);
            pump(b);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += 250 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int w = pthread_cond_timedwait(&b->cv_work, &b->mu, &until);
        if (w == ETIMEDOUT && fm_now_us() - last_watch > 500000u) {
            pthread_mutex_unlock(&b->mu);
            watchdog(b);
            last_watch = fm_now_us();
            pthread_mutex_lock(&b->mu);
        }
    }
    /* Stopping: jobs still queued are cancelled. */
    fm_cuda_job_t *cancelled = NULL;
    while (b->q_head) {
        fm_cuda_job_t *job = b->q_head;
        dequeue_head_locked(b);
        job_fail_locked(job, FM_ECANCELED, "the CUDA backend was destroyed with this batch queued");
        job->next_row = job->batch->n;
        if (job->outstanding == 0) {
            if (job->sync) {
                job->finished = 1;
                pthread_cond_broadcast(&b->cv_done);
            } else {
                job->next = cancelled;
                cancelled = job;
            }
        }
    }
    fm_cuda_job_t *list = b->deferred;
    b->deferred = NULL;
    pthread_mutex_unlock(&b->mu);
    call_deferred(list);
    call_deferred(cancelled);
    return NULL;
}

static int is_pinned(const void *p) {
    struct cudaPointerAttributes a;
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return a.type == cudaMemoryTypeHost;
}

static int check_batch(const fm_batch_t *batch) {
    if (!batch || batch->n == 0 || !batch->pixels || !batch->probs || !batch->labels || !batch->confidence)
        return fm_fail(FM_EINVAL, "cuda: empty batch or missing buffer");
    if (batch->n > (size_t)1 << 32)
        return fm_fail(FM_EINVAL, "cuda: batch of %zu images is too large", batch->n);
    return 0;
}

static void job_init(fm_cuda_job_t *job, fm_backend_model_t *bm, fm_batch_t *batch) {
    job->model = bm;
    job->batch = batch;
    job->direct = is_pinned(batch->pixels) && is_pinned(batch->probs) && is_pinned(batch->labels) &&
                  is_pinned(batch->confidence);
}

/* Queues a job, or refuses it when the backend is broken or stopping. */
static int enqueue(fm_backend_t *b, fm_cuda_job_t *job) {
    pthread_mutex_lock(&b->mu);
    if (b->broken || b->stop) {
        pthread_mutex_unlock(&b->mu);
        return fm_fail(FM_EBACKEND, b->broken ? "cuda: a device fault was seen earlier; restart the process"
                                              : "cuda: the backend is shutting down");
    }
    if (b->q_tail)
        b->q_tail->next = job;
    else
        b->q_head = job;
    b->q_tail = job;
    pthread_mutex_unlock(&b->mu);
    return 0;
}

static int cuda_infer(fm_backend_model_t *bm, fm_batch_t *batch) {
    int rc = check_batch(batch);
    if (rc)
        return rc;
    fm_backend_t *b = bm->b;
    FM_DEV_CHECK(cudaSetDevice(b->device));
    fm_cuda_job_ext_t ext;
    memset(&ext, 0, sizeof ext);
    fm_cuda_job_t *job = &ext.job;
    job_init(job, bm, batch);
    job->sync = 1;
    if ((rc = enqueue(b, job)))
        return rc;
    pump(b);
    pthread_mutex_lock(&b->mu);
    while (!job->finished)
        pthread_cond_wait(&b->cv_done, &b->mu);
    pthread_mutex_unlock(&b->mu);
    if (job->status)
        return fm_fail(job->status, "%s", ext.err.msg);
    return 0;
}

static int cuda_submit(fm_backend_model_t *bm, fm_batch_t *batch, fm_batch_done_fn done, void *user) {
    int rc = check_batch(batch);
    if (rc)
        return rc;
    if (!done)
        return fm_fail(FM_EINVAL, "cuda: submit without a completion callback");
    fm_backend_t *b = bm->b;
    FM_DEV_CHECK(cudaSetDevice(b->device));
    fm_cuda_job_ext_t *ext = calloc(1, sizeof *ext);
    if (!ext)
        return fm_fail(FM_ENOMEM, "cuda: out of memory queueing a batch");
    fm_cuda_job_t *job = &ext->job;
    job_init(job, bm, batch);
    job->done = done;
    job->user = user;
    if ((rc = enqueue(b, job))) {
        free(ext);
        return rc;
    }
    pump(b);
    return 0;
}

/* ---- lanes for benchmarks --------------------------------------------------- */

int fm_cuda_lanes_acquire(fm_backend_t *b, int count, fm_cuda_lane_t **out) {
    if (count < 1 || count > b->nlanes)
        return fm_fail(FM_EINVAL, "cuda: cannot take %d of %d streams", count, b->nlanes);
    pthread_mutex_lock(&b->mu);
    int got = 0;
    while (got < count) {
        fm_cuda_lane_t *lane = take_free_lane_locked(b);
        if (lane) {
            lane->busy = 1;
            lane->job = NULL;
            lane->model = NULL;
            out[got++] = lane;
            continue;
        }
        pthread_cond_wait(&b->cv_done, &b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return 0;
}

void fm_cuda_lanes_release(fm_backend_t *b, fm_cuda_lane_t **lanes, int count) {
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < count; i++)
        free_lane_locked(b, lanes[i]);
    pthread_mutex_unlock(&b->mu);
    pump(b);
}

/* ---- the ops ------------------------------------------------------------------ */

static void destroy_lanes(fm_backend_t *b) {
    for (int i = 0; i < b->nlanes; i++) {
        fm_cuda_lane_t *lane = &b->lanes[i];
        if (lane->stream)
            FM_DEV_WARN(cudaStreamSynchronize(lane->stream));
        if (lane->dnn)
            FM_DEV_WARN(cudnnDestroy(lane->dnn));
        if (lane->stream)
            FM_DEV_WARN(cudaStreamDestroy(lane->stream));
        if (lane->h_in)
            FM_DEV_WARN(cudaFreeHost(lane->h_in));
        if (lane->h_out)
            FM_DEV_WARN(cudaFreeHost(lane->h_out));
        memset(lane, 0, sizeof *lane);
    }
}

static void cuda_destroy(fm_backend_t *b) {
    if (!b)
        return;
    if (b->dispatcher_started) {
        pthread_mutex_lock(&b->mu);
        b->stop = 1;
        pthread_cond_broadcast(&b->cv_work);
        pthread_mutex_unlock(&b->mu);
        pthread_join(b->dispatcher, NULL);
    }
    if (b->nmodels > 0)
        fm_warn("cuda", "backend destroyed with %d model(s) still prepared; release them first", b->nmodels);
    destroy_lanes(b);
    pthread_cond_destroy(&b->cv_work);
    pthread_cond_destroy(&b->cv_done);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static int create_lanes(fm_backend_t *b) {
    size_t maxb = (size_t)b->max_batch;
    for (int i = 0; i < b->nlanes; i++) {
        fm_cuda_lane_t *lane = &b->lanes[i];
        lane->index = i;
        /* Non-blocking streams: no implicit sync with the legacy default
         * stream, and capturable. */
        FM_DEV_CHECK(cudaStreamCreateWithFlags(&lane->stream, cudaStreamNonBlocking));
        FM_DEV_CHECK(cudnnCreate(&lane->dnn));
        FM_DEV_CHECK(cudnnSetStream(lane->dnn, lane->stream));
        FM_DEV_CHECK(cudaHostAlloc((void **)&lane->h_in, maxb * FM_IMAGE_PIXELS, cudaHostAllocPortable));
        FM_DEV_CHECK(cudaHostAlloc((void **)&lane->h_out, maxb * FM_CUDA_OUT_FLOATS * sizeof(float),
                                   cudaHostAllocPortable));
        memset(lane->h_in, 0, maxb * FM_IMAGE_PIXELS);
        memset(lane->h_out, 0, maxb * FM_CUDA_OUT_FLOATS * sizeof(float));
    }
    return 0;
}

static void cuda_describe(fm_backend_t *b, char *buf, size_t len);

static int cuda_create(const fm_backend_config_t *cfg, fm_backend_t **out) {
    *out = NULL;
    int streams = cfg->streams ? cfg->streams : 2;
    if (streams < 1 || streams > FM_CUDA_MAX_LANES)
        return fm_fail(FM_EINVAL, "cuda: streams must be 1..%d, not %d", FM_CUDA_MAX_LANES, cfg->streams);
    if (cfg->max_batch < 1 || cfg->max_batch > FM_CUDA_MAX_BATCH_LIMIT)
        return fm_fail(FM_EINVAL, "cuda: max_batch must be 1..%d, not %d", FM_CUDA_MAX_BATCH_LIMIT, cfg->max_batch);
    if ((unsigned)cfg->precision > FM_PRECISION_BF16)
        return fm_fail(FM_EINVAL, "cuda: unknown precision %d", (int)cfg->precision);
    int rc = cuda_probe();
    if (rc)
        return rc;
    int ndev = 0;
    FM_DEV_CHECK(cudaGetDeviceCount(&ndev));
    if (cfg->device < 0 || cfg->device >= ndev)
        return fm_fail(FM_ENODEVICE, "cuda: device %d does not exist (%d device(s))", cfg->device, ndev);

    uint64_t t0 = fm_now_us();
    fm_backend_t *b = calloc(1, sizeof *b);
    if (!b)
        return fm_fail(FM_ENOMEM, "cuda: out of memory");
    b->cfg = *cfg;
    b->cfg.streams = streams;
    b->device = cfg->device;
    b->nlanes = streams;
    b->max_batch = cfg->max_batch;
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv_work, NULL);
    pthread_cond_init(&b->cv_done, NULL);
    /* Buckets: powers of two below max_batch, then max_batch itself. */
    for (int s = 1; s < b->max_batch && b->nbuckets < FM_CUDA_MAX_BUCKETS - 1; s *= 2)
        b->buckets[b->nbuckets++] = s;
    b->buckets[b->nbuckets++] = b->max_batch;

    struct cudaDeviceProp prop;
    FM_DEV_TRY(rc, cudaSetDevice(b->device));
    FM_DEV_TRY(rc, cudaFree(NULL)); /* creates the primary context now, not in the first batch */
    FM_DEV_TRY(rc, cudaGetDeviceProperties(&prop, b->device));
    snprintf(b->device_name, sizeof b->device_name, "%s", prop.name);
    b->sm_count = prop.multiProcessorCount;
    b->cc_major = prop.major;
    b->cc_minor = prop.minor;
    b->total_mem = prop.totalGlobalMem;
    FM_DEV_TRY(rc, cudaDriverGetVersion(&b->driver_version));
    FM_DEV_TRY(rc, cudaRuntimeGetVersion(&b->runtime_version));
    b->cudnn_version = cudnnGetVersion();
    if ((rc = create_lanes(b)))
        goto fail;
    if (pthread_create(&b->dispatcher, NULL, dispatcher_main, b) != 0) {
        rc = fm_fail(FM_EINTERNAL, "cuda: cannot start the dispatcher thread");
        goto fail;
    }
    b->dispatcher_started = 1;
    char desc[512];
    cuda_describe(b, desc, sizeof desc);
    fm_info("cuda", "%s; ready in %.0f ms", desc, (double)(fm_now_us() - t0) / 1000.0);
    *out = b;
    return 0;
fail:
    cuda_destroy(b);
    return rc;
}

static int cuda_prepare(fm_backend_t *b, const fm_model_t *m, fm_backend_model_t **out) {
    int rc = fm_cuda_prepare(b, m, out);
    if (rc)
        return rc;
    pthread_mutex_lock(&b->mu);
    b->nmodels++;
    pthread_mutex_unlock(&b->mu);
    return 0;
}

static void cuda_release(fm_backend_model_t *bm) {
    if (!bm)
        return;
    fm_backend_t *b = bm->b;
    if (cudaSetDevice(b->device) != cudaSuccess)
        (void)cudaGetLastError();
    /* Wait for the model's queued and running chunks (the caller should have
     * drained them; this only makes an early release safe). */
    pthread_mutex_lock(&b->mu);
    for (;;) {
        int queued = 0;
        for (fm_cuda_job_t *j = b->q_head; j; j = j->next)
            queued |= j->model == bm;
        if (!queued && bm->inflight == 0)
            break;
        pthread_cond_wait(&b->cv_done, &b->mu);
    }
    b->nmodels--;
    pthread_mutex_unlock(&b->mu);
    fm_cuda_model_free(bm);
}

static void *cuda_host_alloc(fm_backend_t *b, size_t bytes) {
    void *p = NULL;
    if (cudaSetDevice(b->device) != cudaSuccess) {
        (void)cudaGetLastError();
        return NULL;
    }
    cudaError_t e = cudaHostAlloc(&p, bytes ? bytes : 64, cudaHostAllocPortable);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        fm_fail(FM_ENOMEM, "cuda: cudaHostAlloc of %zu bytes failed: %s", bytes, cudaGetErrorString(e));
        return NULL;
    }
    return p;
}

static void cuda_host_free(fm_backend_t *b, void *p) {
    (void)b;
    if (p)
        FM_DEV_WARN(cudaFreeHost(p));
}

static void cuda_describe(fm_backend_t *b, char *buf, size_t len) {
    size_t v = b->cudnn_version;
    snprintf(buf, len,
             "cuda: %s (sm_%d%d, %d SMs, %.1f GiB), driver %d.%d, runtime %d.%d, cuDNN %zu.%zu.%zu; %d streams, "
             "buckets 1..%d, %s, CUDA graphs %s",
             b->device_name, b->cc_major, b->cc_minor, b->sm_count, (double)b->total_mem / (1024.0 * 1024.0 * 1024.0),
             b->driver_version / 1000, (b->driver_version % 1000) / 10, b->runtime_version / 1000,
             (b->runtime_version % 1000) / 10, v / 10000, (v % 10000) / 100, v % 100, b->nlanes, b->max_batch,
             fm_precision_name(b->cfg.precision), b->cfg.cuda_graphs ? "on" : "off");
}

const fm_backend_ops_t fm_backend_cuda_ops = {
    .name = "cuda",
    .probe = cuda_probe,
    .create = cuda_create,
    .destroy = cuda_destroy,
    .prepare = cuda_prepare,
    .release = cuda_release,
    .infer = cuda_infer,
    .submit = cuda_submit,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .describe = cuda_describe,
};

/* ---- fm_cuda.h ------------------------------------------------------------------ */

int fm_cuda_model_info(const fm_backend_model_t *bm, fm_cuda_model_info_t *out) {
    if (!bm || !bm->b)
        return fm_fail(FM_EINVAL, "cuda: not a CUDA-prepared model");
    *out = bm->info;
    return 0;
}

int fm_cuda_bench_device(fm_backend_model_t *bm, const uint8_t *pixels, size_t batch, int with_copies, int iters,
                         int all_streams, fm_cuda_bench_result_t *out) {
    fm_backend_t *b = bm->b;
    memset(out, 0, sizeof *out);
    if (batch < 1 || batch > (size_t)b->max_batch || iters < 1 || !pixels)
        return fm_fail(FM_EINVAL, "cuda bench: batch must be 1..%d and iters >= 1", b->max_batch);
    FM_DEV_CHECK(cudaSetDevice(b->device));
    int count = all_streams ? b->nlanes : 1;
    fm_cuda_lane_t *lanes[FM_CUDA_MAX_LANES];
    int rc = fm_cuda_lanes_acquire(b, count, lanes);
    if (rc)
        return rc;
    const int bi = fm_cuda_bucket_for(b, batch);
    const size_t B = (size_t)b->buckets[bi];
    cudaEvent_t start = NULL, stop = NULL, ends[FM_CUDA_MAX_LANES] = {0};
    FM_DEV_TRY(rc, cudaEventCreate(&start));
    FM_DEV_TRY(rc, cudaEventCreate(&stop));
    for (int i = 0; i < count; i++) {
        FM_DEV_TRY(rc, cudaEventCreateWithFlags(&ends[i], cudaEventDisableTiming));
        memcpy(lanes[i]->h_in, pixels, batch * FM_IMAGE_PIXELS);
        memset(lanes[i]->h_in + batch * FM_IMAGE_PIXELS, 0, (B - batch) * FM_IMAGE_PIXELS);
        /* The compute-only replay reads whatever d_in holds: the images. */
        FM_DEV_TRY(rc, cudaMemcpyAsync(bm->lanes[lanes[i]->index].d_in, lanes[i]->h_in, B * FM_IMAGE_PIXELS,
                                       cudaMemcpyHostToDevice, lanes[i]->stream));
        FM_DEV_TRY(rc, cudaStreamSynchronize(lanes[i]->stream));
    }
    FM_DEV_TRY(rc, cudaEventRecord(start, lanes[0]->stream));
    for (int i = 1; i < count; i++)
        FM_DEV_TRY(rc, cudaStreamWaitEvent(lanes[i]->stream, start, 0));
    for (int it = 0; it < iters; it++)
        for (int i = 0; i < count; i++)
            if ((rc = fm_cuda_bucket_launch(bm, lanes[i], bi, with_copies)))
                goto fail;
    for (int i = 1; i < count; i++) {
        FM_DEV_TRY(rc, cudaEventRecord(ends[i], lanes[i]->stream));
        FM_DEV_TRY(rc, cudaStreamWaitEvent(lanes[0]->stream, ends[i], 0));
    }
    FM_DEV_TRY(rc, cudaEventRecord(stop, lanes[0]->stream));
    FM_DEV_TRY(rc, cudaEventSynchronize(stop));
    float ms = 0;
    FM_DEV_TRY(rc, cudaEventElapsedTime(&ms, start, stop));
    out->ms_total = ms;
    out->streams_used = count;
    out->ms_per_batch = ms / ((double)iters * count);
    out->images_per_s = ms > 0 ? (double)batch * iters * count / (ms / 1000.0) : 0;
fail:
    for (int i = 0; i < count; i++)
        FM_DEV_WARN(cudaStreamSynchronize(lanes[i]->stream));
    if (start)
        FM_DEV_WARN(cudaEventDestroy(start));
    if (stop)
        FM_DEV_WARN(cudaEventDestroy(stop));
    for (int i = 0; i < count; i++)
        if (ends[i])
            FM_DEV_WARN(cudaEventDestroy(ends[i]));
    fm_cuda_lanes_release(b, lanes, count);
    return rc;
}
