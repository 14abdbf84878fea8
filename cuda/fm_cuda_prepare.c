/* fm_cuda_prepare.c: makes a model ready on the CUDA backend and enqueues its
 * work: weights reordered and converted on the device, one cuDNN plan per
 * (layer, batch bucket), per-stream buffers and variant packs, a warm-up of
 * every plan, and one CUDA graph per (stream, bucket) captured from the
 * copy-in -> graphs -> kernels -> copy-out sequence. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_cuda_check.h"
#include "fm_cuda_internal.h"
#include "fm_cuda_kernels.h"
#include "fm_error.h"
#include "fm_log.h"
#include "fm_time.h"

static fm_cuda_dtype_t dtype_for(fm_precision_t p) {
    switch (p) {
    case FM_PRECISION_FP16: return FM_CUDA_F16;
    case FM_PRECISION_BF16: return FM_CUDA_BF16;
    default: return FM_CUDA_F32;
    }
}

/* Numerical notes an engine should not have for a precision (tried last).
 * fp32 means IEEE fp32 products: no TF32 tensor cores, no down-conversion.
 * Every precision accumulates in fp32: no reduced-precision reductions. */
static unsigned avoid_notes_for(fm_precision_t p) {
    unsigned notes = FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION);
    if (p == FM_PRECISION_FP32)
        notes |= FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_TENSOR_CORE) |
                 FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS);
    return notes;
}

static fm_cudnn_plan_t *plan_at(fm_backend_model_t *bm, int layer, int bucket) {
    return &bm->plans[layer * bm->b->nbuckets + bucket];
}

/* ---- plans ------------------------------------------------------------- */

/* Plans are built by a few threads at once: most matmul engines are compiled
 * with NVRTC when their plan is finalized, and cuDNN finalizes plans from
 * several threads (the frontend's parallel_compilation sample). Each worker
 * has its own handle, kept until release because the operation graphs point
 * at it. */
#define FM_CUDA_PLAN_THREADS 16

typedef struct plan_build_ctx {
    fm_backend_model_t *bm;
    unsigned avoid;
    int ntasks;
    int *tasks; /* layer * nbuckets + bucket */
    atomic_int next;
    atomic_int failed;
    pthread_mutex_t mu;
    int rc;
    char err[768];
} plan_build_ctx_t;

typedef struct plan_worker {
    plan_build_ctx_t *ctx;
    cudnnHandle_t *handle; /* where the worker's handle is kept */
} plan_worker_t;

static void *plan_worker_main(void *arg) {
    plan_worker_t *w = arg;
    plan_build_ctx_t *ctx = w->ctx;
    fm_backend_model_t *bm = ctx->bm;
    int rc = FM_DEV_STATUS(cudaSetDevice(bm->b->device), "cudaSetDevice(bm->b->device)");
    if (!rc)
        rc = FM_DEV_STATUS(cudnnCreate(w->handle), "cudnnCreate(w->handle)");
    while (!rc && !atomic_load(&ctx->failed)) {
        int i = atomic_fetch_add(&ctx->next, 1);
        if (i >= ctx->ntasks)
            break;
        int layer = ctx->tasks[i] / bm->b->nbuckets, bi = ctx->tasks[i] % bm->b->nbuckets;
        fm_cudnn_layer_t shape = fm_cuda_net_layer_shape(&bm->net, layer, bm->b->buckets[bi]);
        rc = fm_cudnn_plan_build(*w->handle, NULL, &shape, ctx->avoid, plan_at(bm, layer, bi));
    }
    if (rc) {
        pthread_mutex_lock(&ctx->mu);
        if (!ctx->rc) {
            ctx->rc = rc;
            snprintf(ctx->err, sizeof ctx->err, "%s", fm_last_error());
        }
        pthread_mutex_unlock(&ctx->mu);
        atomic_store(&ctx->failed, 1);
    }
    return NULL;
}

/* Builds every plan not built yet, on up to FM_CUDA_PLAN_THREADS threads. */
static int build_missing_plans(fm_backend_model_t *bm) {
    const int nb = bm->b->nbuckets;
    plan_build_ctx_t ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.bm = bm;
    ctx.avoid = avoid_notes_for(bm->precision);
    ctx.tasks = malloc(sizeof *ctx.tasks * (size_t)(bm->net.nlayers * nb));
    if (!ctx.tasks)
        return fm_fail(FM_ENOMEM, "cuda: out of host memory");
    /* Largest buckets first: they take longest, and the queue drains evenly. */
    for (int bi = nb - 1; bi >= 0; bi--)
        for (int l = 0; l < bm->net.nlayers; l++)
            if (!plan_at(bm, l, bi)->plan)
                ctx.tasks[ctx.ntasks++] = l * nb + bi;
    atomic_init(&ctx.next, 0);
    atomic_init(&ctx.failed, 0);
    pthread_mutex_init(&ctx.mu, NULL);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int nthreads = ctx.ntasks < FM_CUDA_PLAN_THREADS ? ctx.ntasks : FM_CUDA_PLAN_THREADS;
    if (cpus > 0 && nthreads > cpus)
        nthreads = (int)cpus;
    pthread_t threads[FM_CUDA_PLAN_THREADS];
    plan_worker_t workers[FM_CUDA_PLAN_THREADS];
    int started = 0;
    for (int t = 0; t < nthreads; t++) {
        workers[t] = (plan_worker_t){.ctx = &ctx, .handle = &bm->plan_dnn[bm->nplan_dnn + t]};
        if (pthread_create(&threads[t], NULL, plan_worker_main, &workers[t]) != 0)
            break;
        started++;
    }
    if (started == 0 && ctx.ntasks > 0) {
        /* No thread could be started: build on this one. */
        workers[0] = (plan_worker_t){.ctx = &ctx, .handle = &bm->plan_dnn[bm->nplan_dnn]};
        plan_worker_main(&workers[0]);
        started = -1;
    }
    for (int t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    bm->nplan_dnn += started < 0 ? 1 : started;
    pthread_mutex_destroy(&ctx.mu);
    free(ctx.tasks);
    if (ctx.rc)
        return fm_fail(ctx.rc, "%s", ctx.err);
    return 0;
}

/* conv1 reads one channel. fp32 engines may take C = 1; if none does, and for
 * half precision (whose engines want multiples of 8), the input is padded
 * with zero channels and zero filter taps. The largest bucket decides. */
static int choose_conv1_padding(fm_backend_model_t *bm) {
    static const int fp32_pads[] = {1, 4, 8}, half_pads[] = {8};
    const fm_cuda_dtype_t dt = bm->net.dtype;
    const int *pads = dt == FM_CUDA_F32 ? fp32_pads : half_pads;
    const int npads = dt == FM_CUDA_F32 ? 3 : 1;
    const int top = bm->b->nbuckets - 1;
    char first_error[512] = "";
    for (int i = 0; i < npads; i++) {
        int rc = fm_cuda_net_init(&bm->net, FM_ARCH_CNN, dt, pads[i]);
        if (rc)
            return rc;
        fm_cudnn_layer_t shape = fm_cuda_net_layer_shape(&bm->net, 0, bm->b->buckets[top]);
        rc = fm_cudnn_plan_build(bm->prep_dnn, NULL, &shape, avoid_notes_for(bm->precision), plan_at(bm, 0, top));
        if (!rc)
            return 0;
        if (i == 0)
            snprintf(first_error, sizeof first_error, "%s", fm_last_error());
        if (i + 1 < npads)
            fm_info("cuda", "%s: conv1 with %d input channel(s) has no engine; padding to %d", bm->name, pads[i],
                    pads[i + 1]);
    }
    return fm_fail(FM_EUNSUPPORTED, "%s: conv1 has no engine with any channel padding; first failure: %s", bm->name,
                   first_error);
}

static int build_plans(fm_backend_model_t *bm) {
    if (bm->net.arch == FM_ARCH_CNN) {
        int rc = choose_conv1_padding(bm);
        if (rc)
            return rc;
    }
    return build_missing_plans(bm);
}

/* Logs each layer's engines, grouping consecutive buckets that share one,
 * and works out whether the model is exact fp32. */
static void report_engines(fm_backend_model_t *bm) {
    fm_backend_t *b = bm->b;
    bm->exact = bm->precision == FM_PRECISION_FP32;
    size_t off = 0;
    bm->info.engines[0] = '\0';
    for (int l = 0; l < bm->net.nlayers; l++) {
        char line[768];
        int lo = snprintf(line, sizeof line, "%s:", bm->net.layers[l].shape.name);
        int start = 0;
        for (int bi = 0; bi < b->nbuckets; bi++) {
            fm_cudnn_plan_t *p = plan_at(bm, l, bi);
            if (p->relaxed || (p->numerical_notes & (FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_TENSOR_CORE) |
                                                     FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS))))
                bm->exact = 0;
            int last = bi + 1 == b->nbuckets || strcmp(p->engine_desc, plan_at(bm, l, bi + 1)->engine_desc) != 0;
            if (!last)
                continue;
            if (lo > 0 && (size_t)lo < sizeof line) {
                if (start == bi)
                    lo += snprintf(line + lo, sizeof line - (size_t)lo, " b%d %s", b->buckets[bi], p->engine_desc);
                else
                    lo += snprintf(line + lo, sizeof line - (size_t)lo, " b%d-%d %s", b->buckets[start],
                                   b->buckets[bi], p->engine_desc);
            }
            start = bi + 1;
        }
        fm_info("cuda", "%s engines %s", bm->name, line);
        fm_cudnn_plan_t *top = plan_at(bm, l, b->nbuckets - 1);
        if (off < sizeof bm->info.engines) {
            int w = snprintf(bm->info.engines + off, sizeof bm->info.engines - off, "%s%s=%s", l ? " " : "",
                             bm->net.layers[l].shape.name, top->engine_desc);
            if (w > 0)
                off += (size_t)w;
        }
        for (int bi = 0; bi < b->nbuckets; bi++)
            if (plan_at(bm, l, bi)->relaxed)
                fm_warn("cuda", "%s: %s b%d: no engine free of the avoided numerical notes for %s; using %s", bm->name,
                        bm->net.layers[l].shape.name, b->buckets[bi], fm_precision_name(bm->precision),
                        plan_at(bm, l, bi)->engine_desc);
    }
    if (bm->precision == FM_PRECISION_FP32 && !bm->exact)
        fm_warn("cuda", "%s: fp32 requested but some layers run on tensor-core (TF32) engines; results match the CPU "
                        "within the tf32 tolerance only",
                bm->name);
}

/* ---- weights and buffers ------------------------------------------------ */

static int upload_params(fm_backend_model_t *bm, const fm_model_t *m) {
    fm_cuda_net_t *net = &bm->net;
    size_t esize = fm_cuda_dtype_size(net->dtype);
    int rc = 0;
    float *host = NULL, *staging = NULL;
    for (int l = 0; l < net->nlayers && !rc; l++) {
        const fm_cuda_layer_spec_t *L = &net->layers[l];
        size_t total = L->w_elems + L->b_elems;
        host = malloc(total * sizeof *host);
        if (!host)
            return fm_fail(FM_ENOMEM, "cuda: out of host memory reordering %s", L->shape.name);
        fm_cuda_net_layer_weights(net, m, l, host, host + L->w_elems);
        FM_DEV_TRY(rc, cudaMalloc(&bm->d_w[l], L->w_elems * esize));
        FM_DEV_TRY(rc, cudaMalloc(&bm->d_b[l], L->b_elems * esize));
        FM_DEV_TRY(rc, cudaMalloc((void **)&staging, total * sizeof *staging));
        FM_DEV_TRY(rc, cudaMemcpyAsync(staging, host, total * sizeof *host, cudaMemcpyHostToDevice, bm->prep_stream));
        FM_DEV_TRY(rc, fm_cuda_convert_f32(bm->d_w[l], staging, L->w_elems, net->dtype, bm->prep_stream));
        FM_DEV_TRY(rc, fm_cuda_convert_f32(bm->d_b[l], staging + L->w_elems, L->b_elems, net->dtype, bm->prep_stream));
        FM_DEV_TRY(rc, cudaStreamSynchronize(bm->prep_stream));
        FM_DEV_TRY(rc, cudaFree(staging));
        staging = NULL;
        free(host);
        host = NULL;
    }
    return rc;
fail:
    if (staging) {
        cudaStreamSynchronize(bm->prep_stream);
        cudaFree(staging);
    }
    free(host);
    return rc;
}

static int alloc_lane(fm_backend_model_t *bm, int l) {
    fm_backend_t *b = bm->b;
    fm_cuda_model_lane_t *ml = &bm->lanes[l];
    size_t esize = fm_cuda_dtype_size(bm->net.dtype);
    size_t maxb = (size_t)b->max_batch;
    int nl = bm->net.nlayers, nb = b->nbuckets;
    FM_DEV_CHECK(cudaMalloc((void **)&ml->d_in, maxb * FM_IMAGE_PIXELS));
    /* Padding rows are zero-filled per batch; zero everything once too, so no
     * buffer is ever read uninitialized. */
    FM_DEV_CHECK(cudaMemsetAsync(ml->d_in, 0, maxb * FM_IMAGE_PIXELS, bm->prep_stream));
    for (int i = 0; i < 2; i++) {
        size_t bytes = maxb * bm->net.buf_elems[i] * esize;
        FM_DEV_CHECK(cudaMalloc(&ml->buf[i], bytes));
        FM_DEV_CHECK(cudaMemsetAsync(ml->buf[i], 0, bytes, bm->prep_stream));
    }
    FM_DEV_CHECK(cudaMalloc((void **)&ml->d_out, maxb * FM_CUDA_OUT_FLOATS * sizeof(float)));
    FM_DEV_CHECK(cudaMemsetAsync(ml->d_out, 0, maxb * FM_CUDA_OUT_FLOATS * sizeof(float), bm->prep_stream));
    if (bm->workspace > 0)
        FM_DEV_CHECK(cudaMalloc(&ml->workspace, (size_t)bm->workspace));
    ml->vp = calloc((size_t)nb * (size_t)nl, sizeof *ml->vp);
    ml->g_full = calloc((size_t)nb, sizeof *ml->g_full);
    ml->g_compute = calloc((size_t)nb, sizeof *ml->g_compute);
    if (!ml->vp || !ml->g_full || !ml->g_compute)
        return fm_fail(FM_ENOMEM, "cuda: out of host memory for variant packs");
    /* Variant packs are cached per (plan, buffers): the buffers of this lane
     * never move, so one pack per (bucket, layer) serves every batch. */
    for (int s = 0; s < bm->net.nsteps; s++) {
        const fm_cuda_step_t *st = &bm->net.steps[s];
        if (st->kind != FM_STEP_LAYER)
            continue;
        for (int bi = 0; bi < nb; bi++) {
            int rc = fm_cudnn_varpack_create(plan_at(bm, st->layer, bi), ml->buf[st->src], bm->d_w[st->layer],
                                             bm->d_b[st->layer], ml->buf[st->dst], ml->workspace,
                                             &ml->vp[bi * nl + st->layer]);
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* ---- the per-batch sequence -------------------------------------------- */

/* The compute part of one bucket: pixels in d_in -> outputs in d_out.
 * `dnn` must be bound to `stream`. */
static int run_compute(fm_backend_model_t *bm, int l, int bi, cudaStream_t stream, cudnnHandle_t dnn) {
    fm_cuda_model_lane_t *ml = &bm->lanes[l];
    const fm_cuda_net_t *net = &bm->net;
    const size_t B = (size_t)bm->b->buckets[bi];
    for (int s = 0; s < net->nsteps; s++) {
        const fm_cuda_step_t *st = &net->steps[s];
        switch (st->kind) {
        case FM_STEP_INPUT:
            FM_DEV_CHECK(fm_cuda_pixels_to_input(ml->buf[st->dst], ml->d_in, B, net->in_channels, net->dtype, stream));
            break;
        case FM_STEP_LAYER:
            FM_DEV_CHECK(cudnnBackendExecute(dnn, plan_at(bm, st->layer, bi)->plan, ml->vp[bi * net->nlayers + st->layer]));
            break;
        case FM_STEP_POOL:
            FM_DEV_CHECK(fm_cuda_maxpool2x2_nhwc(ml->buf[st->dst], ml->buf[st->src], B, st->h, st->w, st->c, net->dtype,
                                                 stream));
            break;
        case FM_STEP_SOFTMAX:
            FM_DEV_CHECK(fm_cuda_softmax_argmax(ml->buf[st->src], FM_CUDA_LOGITS_LD, B, ml->d_out,
                                                (int32_t *)(ml->d_out + B * 10), ml->d_out + B * 11, net->dtype, stream));
            break;
        }
    }
    return 0;
}

static int copy_in_staged(fm_backend_model_t *bm, fm_cuda_lane_t *lane, size_t B, cudaStream_t stream) {
    FM_DEV_CHECK(cudaMemcpyAsync(bm->lanes[lane->index].d_in, lane->h_in, B * FM_IMAGE_PIXELS, cudaMemcpyHostToDevice,
                                 stream));
    return 0;
}

static int copy_out_staged(fm_backend_model_t *bm, fm_cuda_lane_t *lane, size_t B, cudaStream_t stream) {
    FM_DEV_CHECK(cudaMemcpyAsync(lane->h_out, bm->lanes[lane->index].d_out, B * FM_CUDA_OUT_FLOATS * sizeof(float),
                                 cudaMemcpyDeviceToHost, stream));
    return 0;
}

/* Eager execution on a serving lane: plans are shared by the lanes, and cuDNN
 * does not allow one plan to be executed from two threads at once. */
static int run_eager(fm_backend_model_t *bm, fm_cuda_lane_t *lane, int bi) {
    pthread_mutex_lock(&bm->exec_mu);
    int rc = run_compute(bm, lane->index, bi, lane->stream, lane->dnn);
    pthread_mutex_unlock(&bm->exec_mu);
    return rc;
}

static int bucket_sequence(fm_backend_model_t *bm, fm_cuda_lane_t *lane, int bi, int with_copies) {
    size_t B = (size_t)bm->b->buckets[bi];
    fm_cuda_model_lane_t *ml = &bm->lanes[lane->index];
    if (bm->graphs) {
        FM_DEV_CHECK(cudaGraphLaunch(with_copies ? ml->g_full[bi] : ml->g_compute[bi], lane->stream));
        return 0;
    }
    int rc = with_copies ? copy_in_staged(bm, lane, B, lane->stream) : 0;
    if (!rc)
        rc = run_eager(bm, lane, bi);
    if (!rc && with_copies)
        rc = copy_out_staged(bm, lane, B, lane->stream);
    return rc;
}

int fm_cuda_bucket_launch(fm_backend_model_t *bm, fm_cuda_lane_t *lane, int bucket, int with_copies) {
    return bucket_sequence(bm, lane, bucket, with_copies);
}

int fm_cuda_chunk_launch(fm_backend_model_t *bm, fm_cuda_lane_t *lane) {
    const fm_batch_t *batch = lane->job->batch;
    const int bi = lane->bucket;
    const size_t B = (size_t)bm->b->buckets[bi], n = lane->n, row0 = lane->row0;
    fm_cuda_model_lane_t *ml = &bm->lanes[lane->index];
    cudaStream_t s = lane->stream;
    int rc = 0;
    if (lane->direct) {
        /* The caller's buffers are pinned: copy straight from and to them. */
        FM_DEV_TRY(rc, cudaMemcpyAsync(ml->d_in, batch->pixels + row0 * FM_IMAGE_PIXELS, n * FM_IMAGE_PIXELS,
                                       cudaMemcpyHostToDevice, s));
        if (n < B)
            FM_DEV_TRY(rc, cudaMemsetAsync(ml->d_in + n * FM_IMAGE_PIXELS, 0, (B - n) * FM_IMAGE_PIXELS, s));
        if ((rc = bucket_sequence(bm, lane, bi, 0)))
            goto fail;
        FM_DEV_TRY(rc, cudaMemcpyAsync(batch->probs + row0 * FM_NUM_CLASSES, ml->d_out, n * FM_NUM_CLASSES * sizeof(float),
                                       cudaMemcpyDeviceToHost, s));
        FM_DEV_TRY(rc, cudaMemcpyAsync(batch->labels + row0, ml->d_out + B * 10, n * sizeof(int32_t),
                                       cudaMemcpyDeviceToHost, s));
        FM_DEV_TRY(rc, cudaMemcpyAsync(batch->confidence + row0, ml->d_out + B * 11, n * sizeof(float),
                                       cudaMemcpyDeviceToHost, s));
        return 0;
    }
    /* Pageable buffers: stage through the lane's pinned buffers (the lane is
     * ours, and its previous chunk finished before it was freed). The
     * padding rows are zeros, so a padded batch computes on defined input. */
    memcpy(lane->h_in, batch->pixels + row0 * FM_IMAGE_PIXELS, n * FM_IMAGE_PIXELS);
    if (n < B)
        memset(lane->h_in + n * FM_IMAGE_PIXELS, 0, (B - n) * FM_IMAGE_PIXELS);
    if ((rc = bucket_sequence(bm, lane, bi, 1)))
        goto fail;
    return 0;
fail:
    /* Nothing of this chunk may still be running when the lane is freed. */
    FM_DEV_WARN(cudaStreamSynchronize(s));
    return rc;
}

/* ---- warm-up and graph capture ----------------------------------------- */

/* Captures one bucket's sequence for lane `l` on the model's own stream (the
 * serving streams keep running other models meanwhile). Relaxed mode leaves
 * cuDNN free to make calls that are illegal in global capture mode. */
static int capture(fm_backend_model_t *bm, int l, int bi, int with_copies, cudaGraphExec_t *out) {
    fm_cuda_lane_t *lane = &bm->b->lanes[l];
    size_t B = (size_t)bm->b->buckets[bi];
    cudaGraph_t graph = NULL;
    FM_DEV_CHECK(cudaStreamBeginCapture(bm->prep_stream, cudaStreamCaptureModeRelaxed));
    int rc = with_copies ? copy_in_staged(bm, lane, B, bm->prep_stream) : 0;
    if (!rc)
        rc = run_compute(bm, l, bi, bm->prep_stream, bm->prep_dnn);
    if (!rc && with_copies)
        rc = copy_out_staged(bm, lane, B, bm->prep_stream);
    /* Always end the capture, so the stream is usable whatever happened. */
    cudaError_t end = cudaStreamEndCapture(bm->prep_stream, &graph);
    if (!rc)
        rc = FM_DEV_STATUS(end, "cudaStreamEndCapture(bm->prep_stream, &graph)");
    if (!rc)
        rc = FM_DEV_STATUS(cudaGraphInstantiate(out, graph, 0), "cudaGraphInstantiate(out, graph, 0)");
    if (graph)
        FM_DEV_WARN(cudaGraphDestroy(graph));
    return rc;
}

static void destroy_graphs(fm_backend_model_t *bm) {
    for (int l = 0; l < bm->b->nlanes; l++) {
        fm_cuda_model_lane_t *ml = &bm->lanes[l];
        for (int bi = 0; bi < bm->b->nbuckets; bi++) {
            if (ml->g_full && ml->g_full[bi])
                FM_DEV_WARN(cudaGraphExecDestroy(ml->g_full[bi]));
            if (ml->g_compute && ml->g_compute[bi])
                FM_DEV_WARN(cudaGraphExecDestroy(ml->g_compute[bi]));
            if (ml->g_full)
                ml->g_full[bi] = NULL;
            if (ml->g_compute)
                ml->g_compute[bi] = NULL;
        }
    }
}

static int capture_all(fm_backend_model_t *bm) {
    fm_backend_t *b = bm->b;
    for (int l = 0; l < b->nlanes; l++)
        for (int bi = 0; bi < b->nbuckets; bi++) {
            int rc = capture(bm, l, bi, 1, &bm->lanes[l].g_full[bi]);
            if (!rc)
                rc = capture(bm, l, bi, 0, &bm->lanes[l].g_compute[bi]);
            /* Upload the staged graphs without running them (running would
             * write the lane's staging buffers, which may be serving another
             * model right now); run the compute graphs once. */
            if (!rc)
                rc = FM_DEV_STATUS(cudaGraphUpload(bm->lanes[l].g_full[bi], bm->prep_stream),
                                   "cudaGraphUpload(g_full, prep_stream)");
            if (!rc)
                rc = FM_DEV_STATUS(cudaGraphLaunch(bm->lanes[l].g_compute[bi], bm->prep_stream),
                                   "cudaGraphLaunch(g_compute, prep_stream)");
            if (rc)
                return rc;
        }
    FM_DEV_CHECK(cudaStreamSynchronize(bm->prep_stream));
    return 0;
}

/* Runs every plan once per lane: loads lazily-loaded kernels and modules
 * before capture and checks that each variant pack executes. */
static int warm_up(fm_backend_model_t *bm) {
    for (int l = 0; l < bm->b->nlanes; l++)
        for (int bi = 0; bi < bm->b->nbuckets; bi++) {
            int rc = run_compute(bm, l, bi, bm->prep_stream, bm->prep_dnn);
            if (rc)
                return rc;
        }
    FM_DEV_CHECK(cudaStreamSynchronize(bm->prep_stream));
    return 0;
}

/* ---- prepare / free ------------------------------------------------------ */

void fm_cuda_model_free(fm_backend_model_t *bm) {
    if (!bm)
        return;
    fm_backend_t *b = bm->b;
    if (bm->prep_stream)
        FM_DEV_WARN(cudaStreamSynchronize(bm->prep_stream));
    destroy_graphs(bm);
    for (int l = 0; l < b->nlanes; l++) {
        fm_cuda_model_lane_t *ml = &bm->lanes[l];
        if (ml->vp)
            for (int i = 0; i < b->nbuckets * bm->net.nlayers; i++)
                fm_cudnn_varpack_destroy(ml->vp[i]);
        free(ml->vp);
        free(ml->g_full);
        free(ml->g_compute);
        if (ml->d_in)
            FM_DEV_WARN(cudaFree(ml->d_in));
        for (int i = 0; i < 2; i++)
            if (ml->buf[i])
                FM_DEV_WARN(cudaFree(ml->buf[i]));
        if (ml->d_out)
            FM_DEV_WARN(cudaFree(ml->d_out));
        if (ml->workspace)
            FM_DEV_WARN(cudaFree(ml->workspace));
        memset(ml, 0, sizeof *ml);
    }
    if (bm->plans)
        for (int i = 0; i < bm->net.nlayers * b->nbuckets; i++)
            fm_cudnn_plan_destroy(&bm->plans[i]);
    free(bm->plans);
    for (int l = 0; l < FM_CUDA_MAX_LAYERS; l++) {
        if (bm->d_w[l])
            FM_DEV_WARN(cudaFree(bm->d_w[l]));
        if (bm->d_b[l])
            FM_DEV_WARN(cudaFree(bm->d_b[l]));
    }
    for (int i = 0; i < bm->nplan_dnn; i++)
        if (bm->plan_dnn[i])
            cudnnDestroy(bm->plan_dnn[i]);
    if (bm->prep_dnn)
        cudnnDestroy(bm->prep_dnn);
    if (bm->prep_stream)
        FM_DEV_WARN(cudaStreamDestroy(bm->prep_stream));
    pthread_mutex_destroy(&bm->exec_mu);
    free(bm);
}

int fm_cuda_prepare(fm_backend_t *b, const fm_model_t *m, fm_backend_model_t **out) {
    *out = NULL;
    uint64_t t0 = fm_now_us();
    FM_DEV_CHECK(cudaSetDevice(b->device));
    size_t free0 = 0, total = 0, free1 = 0;
    FM_DEV_CHECK(cudaMemGetInfo(&free0, &total));

    fm_backend_model_t *bm = calloc(1, sizeof *bm);
    if (!bm)
        return fm_fail(FM_ENOMEM, "cuda: out of host memory");
    bm->b = b;
    bm->precision = b->cfg.precision;
    pthread_mutex_init(&bm->exec_mu, NULL);
    snprintf(bm->name, sizeof bm->name, "%s %s", fm_model_name(m) && *fm_model_name(m) ? fm_model_name(m) : "model",
             fm_model_version(m) && *fm_model_version(m) ? fm_model_version(m) : "");
    int rc = fm_cuda_net_init(&bm->net, fm_model_arch(m), dtype_for(bm->precision), 1);
    if (!rc)
        rc = fm_cuda_net_check_model(&bm->net, m);
    if (rc)
        goto fail;
    FM_DEV_TRY(rc, cudaStreamCreateWithFlags(&bm->prep_stream, cudaStreamNonBlocking));
    FM_DEV_TRY(rc, cudnnCreate(&bm->prep_dnn));
    FM_DEV_TRY(rc, cudnnSetStream(bm->prep_dnn, bm->prep_stream));

    bm->plans = calloc((size_t)FM_CUDA_MAX_LAYERS * (size_t)b->nbuckets, sizeof *bm->plans);
    if (!bm->plans) {
        rc = fm_fail(FM_ENOMEM, "cuda: out of host memory");
        goto fail;
    }
    uint64_t tp = fm_now_us();
    if ((rc = build_plans(bm)))
        goto fail;
    double plan_ms = (double)(fm_now_us() - tp) / 1000.0;
    for (int i = 0; i < bm->net.nlayers * b->nbuckets; i++)
        if (bm->plans[i].workspace > bm->workspace)
            bm->workspace = bm->plans[i].workspace;
    report_engines(bm);

    if ((rc = upload_params(bm, m)))
        goto fail;
    for (int l = 0; l < b->nlanes; l++)
        if ((rc = alloc_lane(bm, l)))
            goto fail;
    if ((rc = warm_up(bm)))
        goto fail;
    if (b->cfg.cuda_graphs) {
        bm->graphs = 1;
        rc = capture_all(bm);
        if (rc) {
            /* Eager execution gives the same results; serve without graphs
             * rather than not at all, and say why. */
            fm_warn("cuda", "%s: CUDA graph capture failed, running eagerly: %s", bm->name, fm_last_error());
            destroy_graphs(bm);
            bm->graphs = 0;
            FM_DEV_TRY(rc, cudaStreamSynchronize(bm->prep_stream));
        }
    }
    FM_DEV_TRY(rc, cudaMemGetInfo(&free1, &total));

    bm->info.exact_fp32 = bm->exact;
    bm->info.graphs = bm->graphs;
    bm->info.in_channels = bm->net.in_channels;
    bm->info.nbuckets = b->nbuckets;
    for (int i = 0; i < b->nbuckets && i < 32; i++)
        bm->info.buckets[i] = b->buckets[i];
    bm->info.streams = b->nlanes;
    bm->info.prepare_ms = (double)(fm_now_us() - t0) / 1000.0;
    bm->info.device_bytes = free0 > free1 ? free0 - free1 : 0;
    fm_info("cuda",
            "prepared %s (%s, %s%s): %d buckets 1..%d x %d layers = %d plans in %.0f ms, %d streams, CUDA graphs %s, "
            "ready in %.0f ms, GPU memory +%.1f MiB (%.2f of %.2f GiB free)",
            bm->name, fm_arch_name(bm->net.arch), fm_precision_name(bm->precision),
            bm->precision == FM_PRECISION_FP32 ? (bm->exact ? " exact" : " with TF32 layers") : "", b->nbuckets,
            b->max_batch, bm->net.nlayers, b->nbuckets * bm->net.nlayers, plan_ms, b->nlanes,
            bm->graphs ? "on" : "off", bm->info.prepare_ms, (double)bm->info.device_bytes / (1024.0 * 1024.0),
            (double)free1 / (1024.0 * 1024.0 * 1024.0), (double)total / (1024.0 * 1024.0 * 1024.0));
    *out = bm;
    return 0;
fail:
    fm_cuda_model_free(bm);
    return rc;
}
