/* fm_cpu_backend.c: the CPU engine's backend table (fm_backend_cpu_ops):
 * argument checks, the oneDNN engine, thread settings, cutting a batch into
 * chunks for the helper threads and tiles for the network, the pool of
 * per-caller contexts, and softmax. The arithmetic lives in the
 * implementations behind fm_cpu_impl.h, the threads in fm_cpu_pool.c. */
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "fm_backend.h"
#include "fm_cpu_backend.h"
#include "fm_cpu_impl.h"
#include "fm_error.h"
#include "fm_log.h"

/* Default tiles (images per pass of the network), chosen by
 * benchmarks/bench_engine: see docs/engine.md. */
#define FM_CPU_MLP_TILE_DEFAULT 256
#define FM_CPU_CNN_TILE_DEFAULT 64
#define FM_CPU_PARALLEL_DEFAULT FM_CPU_PARALLEL_IMAGES
/* Threads one batch may use: far above any core count this engine targets,
 * it only stops a typo from starting thousands of helpers. */
#define FM_CPU_MAX_THREADS 256
/* max_batch only sizes plans and tiles; this bound keeps a typo from asking
 * for gigabytes of activations. */
#define FM_CPU_MAX_BATCH_LIMIT (1 << 20)

struct fm_backend {
    dnnl_engine_t engine;
    fm_cpu_pool_t *pool; /* threads - 1 helpers, shared by the backend's models */
    fm_backend_config_t cfg;
    int threads; /* resolved: cfg.threads, or every core when 0 */
    fm_cpu_tuning_t tuning;
};

/* The private state of one infer call: one implementation context per
 * lane (per thread when images are split across threads, else one). Kept in
 * a pool, so steady-state calls allocate nothing. */
typedef struct caller {
    struct caller *next;
    int nlanes;
    void *lane[];
} caller_t;

struct fm_backend_model {
    const fm_cpu_impl_t *impl;
    fm_cpu_pool_t *pool; /* the backend's */
    void *net;
    int threads;
    int split;   /* FM_CPU_PARALLEL_IMAGES: one slice of the batch per thread */
    int nlanes;  /* contexts per caller: threads when split, else 1 */
    size_t tile;
    fm_arch_t arch;
    pthread_mutex_t lock; /* guards `idle` */
    caller_t *idle;       /* callers' state not in use; one per concurrent caller at most */
    char desc[384];
};

static const char *const impl_names[] = {"auto", "primitives", "sgemm"};
static const char *const parallel_names[] = {"auto", "intra", "images"};

const char *fm_cpu_parallel_name(fm_cpu_parallel_t p) {
    return (unsigned)p < sizeof parallel_names / sizeof parallel_names[0] ? parallel_names[p] : "?";
}

const char *fm_cpu_impl_name(fm_cpu_impl_kind_t k) {
    return (unsigned)k < sizeof impl_names / sizeof impl_names[0] ? impl_names[k] : "?";
}

void fm_cpu_tuning_default(fm_cpu_tuning_t *t) {
    memset(t, 0, sizeof *t);
    t->mlp_impl = FM_CPU_IMPL_AUTO;
    t->cnn_impl = FM_CPU_IMPL_AUTO;
}

int fm_cpu_backend_set_tuning(fm_backend_t *b, const fm_cpu_tuning_t *t) {
    if (!b || !t)
        return fm_fail(FM_EINVAL, "cpu engine: set_tuning needs a backend and a tuning");
    if ((unsigned)t->mlp_impl > FM_CPU_IMPL_SGEMM || (unsigned)t->cnn_impl > FM_CPU_IMPL_SGEMM)
        return fm_fail(FM_EINVAL, "cpu engine: unknown implementation kind");
    if ((unsigned)t->parallel > FM_CPU_PARALLEL_IMAGES)
        return fm_fail(FM_EINVAL, "cpu engine: unknown parallel mode %d", (int)t->parallel);
    if (t->cnn_impl == FM_CPU_IMPL_SGEMM)
        return fm_fail(FM_EUNSUPPORTED, "cpu engine: the sgemm implementation exists for the MLP only");
    b->tuning = *t;
    return 0;
}

static int cpu_probe(void) { return 0; }

static int cpu_create(const fm_backend_config_t *cfg, fm_backend_t **out) {
    if (!cfg || !out)
        return fm_fail(FM_EINVAL, "cpu engine: create needs a config and an output handle");
    *out = NULL;
    if (cfg->threads < 0 || cfg->threads > FM_CPU_MAX_THREADS)
        return fm_fail(FM_EINVAL, "cpu engine: threads must be in 0..%d (0 = every core), got %d", FM_CPU_MAX_THREADS,
                       cfg->threads);
    if (cfg->max_batch < 1 || cfg->max_batch > FM_CPU_MAX_BATCH_LIMIT)
        return fm_fail(FM_EINVAL, "cpu engine: max_batch must be in 1..%d, got %d", FM_CPU_MAX_BATCH_LIMIT,
                       cfg->max_batch);
    if (cfg->precision != FM_PRECISION_FP32)
        return fm_fail(FM_EUNSUPPORTED, "cpu engine: precision %s is not supported (fp32 only)",
                       fm_precision_name(cfg->precision));
    fm_backend_t *b = calloc(1, sizeof *b);
    if (!b)
        return fm_fail(FM_ENOMEM, "cpu engine: out of memory");
    dnnl_status_t st = dnnl_engine_create(&b->engine, dnnl_cpu, 0);
    if (st != dnnl_success) {
        free(b);
        return fm_fail(FM_EBACKEND, "cpu engine: dnnl_engine_create failed: %s", dnnl_status2str(st));
    }
    b->cfg = *cfg;
    b->threads = cfg->threads > 0 ? cfg->threads : omp_get_num_procs();
    if (b->threads > FM_CPU_MAX_THREADS)
        b->threads = FM_CPU_MAX_THREADS;
    fm_cpu_tuning_default(&b->tuning);
    int rc = fm_cpu_pool_new(b->threads - 1, &b->pool);
    if (rc) {
        dnnl_engine_destroy(b->engine);
        free(b);
        return rc;
    }
    *out = b;
    return 0;
}

static void cpu_destroy(fm_backend_t *b) {
    if (!b)
        return;
    fm_cpu_pool_free(b->pool);
    dnnl_engine_destroy(b->engine);
    free(b);
}

/* Checks that the model's tensors have the shapes of its architecture, so
 * that no implementation ever reads past a parameter. */
static int check_model(const fm_model_t *m) {
    fm_arch_t arch = fm_model_arch(m);
    if (arch != FM_ARCH_MLP && arch != FM_ARCH_CNN)
        return fm_fail(FM_EINVAL, "cpu engine: unknown architecture %d", (int)arch);
    int count = 0;
    const fm_param_spec_t *spec = fm_arch_params(arch, &count);
    if (fm_model_param_count(m) != count)
        return fm_fail(FM_ESHAPE, "cpu engine: model has %d parameters, %s needs %d", fm_model_param_count(m),
                       fm_arch_name(arch), count);
    for (int i = 0; i < count; i++) {
        const fm_tensor_t *t = fm_model_param(m, i);
        size_t numel = 1;
        for (int d = 0; d < spec[i].ndim; d++)
            numel *= (size_t)spec[i].shape[d];
        if (!t || !t->data || t->numel != numel)
            return fm_fail(FM_ESHAPE, "cpu engine: parameter %s has %zu values, expected %zu", spec[i].name,
                           t ? t->numel : 0, numel);
    }
    return 0;
}

/* Makes the calling thread's OpenMP team the engine's size and gives back
 * what it was. oneDNN sizes its per-thread work and scratchpads from
 * omp_get_max_threads() when a primitive is created, so creation and
 * execution must agree. */
static int threads_enter(int want) {
    int prev = omp_get_max_threads();
    if (prev != want)
        omp_set_num_threads(want);
    return prev;
}

static void threads_leave(int prev, int want) {
    if (prev != want)
        omp_set_num_threads(prev);
}

static void caller_free(fm_backend_model_t *bm, caller_t *c) {
    if (!c)
        return;
    for (int i = 0; i < c->nlanes; i++)
        if (c->lane[i])
            bm->impl->ctx_free(c->lane[i]);
    free(c);
}

/* A caller's state from the pool, or a new one (NULL with the detail recorded). */
static caller_t *caller_take(fm_backend_model_t *bm) {
    pthread_mutex_lock(&bm->lock);
    caller_t *c = bm->idle;
    if (c)
        bm->idle = c->next;
    pthread_mutex_unlock(&bm->lock);
    if (c)
        return c;
    c = calloc(1, sizeof *c + (size_t)bm->nlanes * sizeof(void *));
    if (!c) {
        fm_fail(FM_ENOMEM, "cpu engine: out of memory for a caller context");
        return NULL;
    }
    c->nlanes = bm->nlanes;
    for (int i = 0; i < c->nlanes; i++)
        if (bm->impl->ctx_new(bm->net, &c->lane[i]) != 0) {
            caller_free(bm, c);
            return NULL;
        }
    return c;
}

static void caller_give(fm_backend_model_t *bm, caller_t *c) {
    pthread_mutex_lock(&bm->lock);
    c->next = bm->idle;
    bm->idle = c;
    pthread_mutex_unlock(&bm->lock);
}

static void cpu_release(fm_backend_model_t *bm) {
    if (!bm)
        return;
    while (bm->idle) {
        caller_t *c = bm->idle;
        bm->idle = c->next;
        caller_free(bm, c);
    }
    if (bm->net)
        bm->impl->free_net(bm->net);
    pthread_mutex_destroy(&bm->lock);
    free(bm);
}

/* Images [first, first + n) of the batch on one lane, tile by tile. */
static int run_slice(fm_backend_model_t *bm, void *ctx, const fm_batch_t *batch, size_t first, size_t n) {
    for (size_t off = first; off < first + n; off += bm->tile) {
        size_t c = first + n - off < bm->tile ? first + n - off : bm->tile;
        float *probs = batch->probs + off * FM_NUM_CLASSES;
        int rc = bm->impl->run(bm->net, ctx, batch->pixels + off * FM_IMAGE_PIXELS, c, probs);
        if (rc)
            return rc;
        fm_cpu_softmax10(probs, c, batch->labels + off, batch->confidence + off);
    }
    return 0;
}

/* One batch cut into chunks for the pool. */
typedef struct batch_job {
    fm_backend_model_t *bm;
    caller_t *caller;
    const fm_batch_t *batch;
    size_t chunk; /* images per chunk */
} batch_job_t;

static int batch_chunk(void *arg, size_t index, int lane) {
    batch_job_t *j = arg;
    size_t first = index * j->chunk;
    size_t n = j->batch->n - first < j->chunk ? j->batch->n - first : j->chunk;
    return run_slice(j->bm, j->caller->lane[lane], j->batch, first, n);
}

/* The whole batch: on the calling thread alone, or (images split across
 * threads) as chunks shared with the pool's helpers. A chunk is at most a
 * tile and at most an even share per thread, so two threads on 256 images
 * take 128 each when both are running, and the caller takes everything when
 * the helper is descheduled. */
static int run_batch(fm_backend_model_t *bm, caller_t *c, const fm_batch_t *batch) {
    if (c->nlanes <= 1 || batch->n == 1)
        return run_slice(bm, c->lane[0], batch, 0, batch->n);
    size_t share = (batch->n + (size_t)c->nlanes - 1) / (size_t)c->nlanes;
    batch_job_t j = {.bm = bm, .caller = c, .batch = batch, .chunk = share < bm->tile ? share : bm->tile};
    size_t nchunks = (batch->n + j.chunk - 1) / j.chunk;
    return fm_cpu_pool_run(bm->pool, nchunks, c->nlanes, batch_chunk, &j);
}

/* The largest power of two strictly below s (s >= 2). */
static size_t pow2_below(size_t s) {
    size_t p = 1;
    while (p * 2 < s)
        p *= 2;
    return p;
}

static int cpu_prepare(fm_backend_t *b, const fm_model_t *m, fm_backend_model_t **out) {
    if (!b || !m || !out)
        return fm_fail(FM_EINVAL, "cpu engine: prepare needs a backend, a model and an output handle");
    *out = NULL;
    int rc = check_model(m);
    if (rc)
        return rc;
    fm_arch_t arch = fm_model_arch(m);
    fm_backend_model_t *bm = calloc(1, sizeof *bm);
    if (!bm)
        return fm_fail(FM_ENOMEM, "cpu engine: out of memory");
    pthread_mutex_init(&bm->lock, NULL);
    bm->arch = arch;
    bm->threads = b->threads;
    fm_cpu_parallel_t par = b->tuning.parallel == FM_CPU_PARALLEL_AUTO ? FM_CPU_PARALLEL_DEFAULT : b->tuning.parallel;
    bm->split = par == FM_CPU_PARALLEL_IMAGES && bm->threads > 1;
    bm->pool = b->pool;
    bm->nlanes = bm->split ? bm->threads : 1;

    fm_cpu_impl_kind_t kind = arch == FM_ARCH_MLP ? b->tuning.mlp_impl : b->tuning.cnn_impl;
    if (kind == FM_CPU_IMPL_AUTO)
        kind = FM_CPU_IMPL_PRIMITIVES;
    bm->impl = kind == FM_CPU_IMPL_SGEMM ? &fm_cpu_gemm_impl : &fm_cpu_chain_impl;
    size_t tile = arch == FM_ARCH_MLP ? b->tuning.mlp_tile : b->tuning.cnn_tile;
    if (tile == 0)
        tile = arch == FM_ARCH_MLP ? FM_CPU_MLP_TILE_DEFAULT : FM_CPU_CNN_TILE_DEFAULT;
    bm->tile = tile < (size_t)b->cfg.max_batch ? tile : (size_t)b->cfg.max_batch;

    /* Primitives are built for the team that will run each of them: the
     * whole thread budget, or one thread when images are split. */
    int team = bm->split ? 1 : bm->threads;
    fm_cpu_build_t build = {
        .model = m, .dnnl_engine = b->engine, .threads = team, .tile = bm->tile, .tuning = &b->tuning};
    int prev = threads_enter(team);
    rc = bm->impl->build(&build, &bm->net);
    if (rc == 0) {
        /* Warm-up: one pass of every bucket size an implementation may have
         * planned (the tile and each power of two below it), then a batch
         * that gives every lane a full tile; this also leaves one caller's
         * state in the pool. */
        caller_t *c = caller_take(bm);
        size_t n = bm->tile * (size_t)bm->nlanes;
        uint8_t *px = calloc(n, FM_IMAGE_PIXELS);
        float *probs = malloc(n * FM_NUM_CLASSES * sizeof(float));
        int32_t *labels = malloc(n * sizeof(int32_t));
        float *conf = malloc(n * sizeof(float));
        if (!c)
            rc = FM_ENOMEM; /* caller_take recorded the detail */
        else if (!px || !probs || !labels || !conf)
            rc = fm_fail(FM_ENOMEM, "cpu engine: out of memory for the warm-up");
        else {
            for (size_t s = bm->tile; rc == 0 && s >= 1; s = (s & (s - 1)) ? pow2_below(s) : s / 2)
                rc = bm->impl->run(bm->net, c->lane[0], px, s, probs);
            fm_batch_t wb = {.pixels = px, .n = n, .probs = probs, .labels = labels, .confidence = conf};
            if (rc == 0)
                rc = run_batch(bm, c, &wb);
        }
        if (c)
            caller_give(bm, c);
        free(px);
        free(probs);
        free(labels);
        free(conf);
    }
    threads_leave(prev, team);
    if (rc) {
        cpu_release(bm);
        return rc;
    }
    char impl[256];
    bm->impl->describe(bm->net, impl, sizeof impl);
    snprintf(bm->desc, sizeof bm->desc, "%s: %s, tile %zu, %d threads (%s)", fm_arch_name(arch), impl, bm->tile,
             bm->threads, bm->split ? "images split across threads" : "oneDNN threads per primitive");
    fm_debug("cpu", "prepared %s", bm->desc);
    *out = bm;
    return 0;
}

static int cpu_infer(fm_backend_model_t *bm, fm_batch_t *batch) {
    if (!bm)
        return fm_fail(FM_EINVAL, "cpu engine: infer on a model that was not prepared");
    if (!batch)
        return fm_fail(FM_EINVAL, "cpu engine: infer needs a batch");
    if (batch->n == 0)
        return fm_fail(FM_EINVAL, "cpu engine: empty batch (n = 0)");
    if (!batch->pixels || !batch->probs || !batch->labels || !batch->confidence)
        return fm_fail(FM_EINVAL, "cpu engine: batch of %zu images lacks %s", batch->n,
                       !batch->pixels ? "pixels" : !batch->probs ? "probs" : !batch->labels ? "labels" : "confidence");
    if (batch->n > SIZE_MAX / FM_IMAGE_PIXELS)
        return fm_fail(FM_EINVAL, "cpu engine: batch of %zu images is too large", batch->n);
    int team = bm->split ? 1 : bm->threads;
    int prev = threads_enter(team);
    int rc;
    caller_t *c = caller_take(bm);
    if (!c) {
        rc = FM_ENOMEM; /* caller_take recorded the detail */
    } else {
        rc = run_batch(bm, c, batch);
        caller_give(bm, c);
    }
    threads_leave(prev, team);
    return rc;
}

void fm_cpu_model_describe(const fm_backend_model_t *bm, char *buf, size_t len) {
    snprintf(buf, len, "%s", bm ? bm->desc : "(none)");
}

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    default: return "all";
    }
}

static void cpu_describe(fm_backend_t *b, char *buf, size_t len) {
    const dnnl_version_t *v = dnnl_version();
    snprintf(buf, len, "cpu: oneDNN %d.%d.%d (%s runtime), ISA %s, %d threads, max_batch %d", v->major, v->minor,
             v->patch, v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other", isa_name(dnnl_get_effective_cpu_isa()),
             b ? b->threads : 0, b ? b->cfg.max_batch : 0);
}

const fm_backend_ops_t fm_backend_cpu_ops = {
    .name = "cpu",
    .probe = cpu_probe,
    .create = cpu_create,
    .destroy = cpu_destroy,
    .prepare = cpu_prepare,
    .release = cpu_release,
    .infer = cpu_infer,
    .submit = NULL,
    .host_alloc = NULL,
    .host_free = NULL,
    .describe = cpu_describe,
};
