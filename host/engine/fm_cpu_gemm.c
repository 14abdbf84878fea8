/* fm_cpu_gemm.c: the MLP as three dnnl_sgemm calls, each followed by one
 * vectorized bias (+ReLU) pass over the output while it is still in cache.
 * sgemm takes any number of rows, so unlike the primitive chain this needs no
 * batch-size buckets. Weights are transposed once to [in, out] so that every
 * call is a plain row-major A[n, in] x B[in, out]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "fm_cpu_impl.h"
#include "fm_error.h"

#define GEMM_LAYERS 3

typedef struct gemm_net {
    size_t tile;
    int in[GEMM_LAYERS], out[GEMM_LAYERS];
    float *w[GEMM_LAYERS]; /* [in, out] */
    float *b[GEMM_LAYERS];
} gemm_net_t;

typedef struct gemm_ctx {
    float *x;  /* tile x 784 */
    float *h1; /* tile x 256 */
    float *h2; /* tile x 128 */
} gemm_ctx_t;

static void *alloc64(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0)
        return NULL;
    return p;
}

static void gemm_free(void *opaque) {
    gemm_net_t *g = opaque;
    if (!g)
        return;
    for (int i = 0; i < GEMM_LAYERS; i++) {
        free(g->w[i]);
        free(g->b[i]);
    }
    free(g);
}

static int gemm_build(const fm_cpu_build_t *b, void **out) {
    if (fm_model_arch(b->model) != FM_ARCH_MLP)
        return fm_fail(FM_EUNSUPPORTED, "cpu engine: the sgemm implementation exists for the MLP only");
    gemm_net_t *g = calloc(1, sizeof *g);
    if (!g)
        return fm_fail(FM_ENOMEM, "cpu engine: out of memory");
    static const int wp[GEMM_LAYERS] = {FM_MLP_FC1_W, FM_MLP_FC2_W, FM_MLP_FC3_W};
    static const int bp[GEMM_LAYERS] = {FM_MLP_FC1_B, FM_MLP_FC2_B, FM_MLP_FC3_B};
    static const int sizes[GEMM_LAYERS + 1] = {FM_IMAGE_PIXELS, FM_MLP_H1, FM_MLP_H2, FM_NUM_CLASSES};
    g->tile = b->tile;
    for (int i = 0; i < GEMM_LAYERS; i++) {
        int in = sizes[i], o = sizes[i + 1];
        g->in[i] = in;
        g->out[i] = o;
        g->w[i] = alloc64(sizeof(float) * (size_t)in * (size_t)o);
        g->b[i] = alloc64(sizeof(float) * (size_t)o);
        if (!g->w[i] || !g->b[i]) {
            gemm_free(g);
            return fm_fail(FM_ENOMEM, "cpu engine: out of memory copying weights");
        }
        const float *w = fm_model_param(b->model, wp[i])->data; /* [out, in] */
        for (int r = 0; r < o; r++)
            for (int c = 0; c < in; c++)
                g->w[i][(size_t)c * o + r] = w[(size_t)r * in + c];
        memcpy(g->b[i], fm_model_param(b->model, bp[i])->data, sizeof(float) * (size_t)o);
    }
    *out = g;
    return 0;
}

static void gemm_ctx_free(void *opaque) {
    gemm_ctx_t *x = opaque;
    if (!x)
        return;
    free(x->x);
    free(x->h1);
    free(x->h2);
    free(x);
}

static int gemm_ctx_new(void *opaque, void **out) {
    gemm_net_t *g = opaque;
    gemm_ctx_t *x = calloc(1, sizeof *x);
    if (x) {
        x->x = alloc64(sizeof(float) * g->tile * FM_IMAGE_PIXELS);
        x->h1 = alloc64(sizeof(float) * g->tile * FM_MLP_H1);
        x->h2 = alloc64(sizeof(float) * g->tile * FM_MLP_H2);
    }
    if (!x || !x->x || !x->h1 || !x->h2) {
        gemm_ctx_free(x);
        return fm_fail(FM_ENOMEM, "cpu engine: out of memory for a caller context");
    }
    *out = x;
    return 0;
}

static int gemm_run(void *opaque, void *ctx, const uint8_t *pixels, size_t n, float *logits) {
    gemm_net_t *g = opaque;
    gemm_ctx_t *x = ctx;
    float *src[GEMM_LAYERS] = {x->x, x->h1, x->h2};
    float *dst[GEMM_LAYERS] = {x->h1, x->h2, logits};
    fm_cpu_u8_to_unit(pixels, x->x, n * FM_IMAGE_PIXELS);
    for (int i = 0; i < GEMM_LAYERS; i++) {
        dnnl_status_t st = dnnl_sgemm('N', 'N', (dnnl_dim_t)n, g->out[i], g->in[i], 1.0f, src[i], g->in[i], g->w[i],
                                      g->out[i], 0.0f, dst[i], g->out[i]);
        if (st != dnnl_success)
            return fm_fail(FM_EBACKEND, "cpu engine: dnnl_sgemm (layer %d, %zu rows) failed: %s", i + 1, n,
                           dnnl_status2str(st));
        fm_cpu_bias_act(dst[i], n, (size_t)g->out[i], g->b[i], i < GEMM_LAYERS - 1);
    }
    return 0;
}

static void gemm_describe(void *opaque, char *buf, size_t len) {
    (void)opaque;
    snprintf(buf, len, "sgemm + bias/ReLU pass");
}

const fm_cpu_impl_t fm_cpu_gemm_impl = {
    .name = "sgemm",
    .build = gemm_build,
    .free_net = gemm_free,
    .ctx_new = gemm_ctx_new,
    .ctx_free = gemm_ctx_free,
    .run = gemm_run,
    .describe = gemm_describe,
};
