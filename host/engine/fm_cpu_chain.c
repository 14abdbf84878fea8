/* fm_cpu_chain.c: both architectures as a chain of oneDNN primitives
 * (convolution and inner product with the ReLU fused as a post-op, max
 * pooling), with weights reordered once into the layouts the primitives
 * choose, one plan per batch-size bucket, and per-caller contexts.
 *
 * oneDNN primitives have fixed shapes, so a plan exists for the tile size and
 * every power of two below it; a run of n images is cut into the largest
 * buckets that fit (n = 100 runs 64 + 32 + 4), which wastes no arithmetic on
 * padding. Primitives use the user scratchpad mode: oneDNN documents that
 * mode as thread-safe as long as concurrent executions use different
 * scratchpads, and each caller context owns one. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "fm_cpu_impl.h"
#include "fm_error.h"

#define CHAIN_MAX_LAYERS 6
#define CHAIN_MAX_STEPS (CHAIN_MAX_LAYERS + 2) /* layers plus layout changes */
#define CHAIN_MAX_PLANS 24
#define CHAIN_ALIGN 64

typedef enum { LAYER_CONV, LAYER_POOL, LAYER_DENSE } layer_kind_t;

typedef struct layer_spec {
    layer_kind_t kind;
    int out;             /* output channels (conv, pool) or features (dense) */
    int w_param, b_param; /* model parameter indices; -1 for pooling */
    int relu;
} layer_spec_t;

/* Weights in one layout a primitive asked for. Buckets usually agree, but an
 * implementation may pick a different blocking for batch 1 than for 256. */
typedef struct weight_variant {
    dnnl_memory_desc_t md;
    dnnl_memory_t mem; /* library-allocated, reordered from the model */
} weight_variant_t;

typedef struct layer {
    layer_spec_t spec;
    weight_variant_t wv[CHAIN_MAX_PLANS];
    int nwv;
    dnnl_memory_t bias; /* points at bias_data */
    float *bias_data;   /* private copy: the prepared model outlives fm_model_t */
} layer_t;

/* The primitives of one batch size, in execution order. A step is a layer
 * or a reorder that changes the activations' layout between two layers. */
typedef struct plan {
    size_t batch;
    int nsteps;
    int layer[CHAIN_MAX_STEPS]; /* the layer a step computes; -1 for a reorder */
    dnnl_primitive_t prim[CHAIN_MAX_STEPS];
    dnnl_memory_desc_t act_md[CHAIN_MAX_STEPS + 1]; /* act 0 = input, act nsteps = logits */
    dnnl_memory_desc_t scratch_md[CHAIN_MAX_STEPS];
    size_t scratch_bytes[CHAIN_MAX_STEPS];
    int wv[CHAIN_MAX_STEPS]; /* index of the weight variant each layer step uses */
} plan_t;

typedef struct chain {
    dnnl_engine_t engine;
    int nlayers;
    layer_t layers[CHAIN_MAX_LAYERS];
    int nplans;
    plan_t plans[CHAIN_MAX_PLANS]; /* largest batch first */
    size_t buf_bytes[2];           /* ping-pong activation buffers */
    size_t scratch_bytes;
    char impls[256]; /* implementations chosen for the largest plan */
} chain_t;

typedef struct chain_ctx {
    chain_t *net;
    dnnl_stream_t stream;
    void *buf[2];
    void *scratch;
    dnnl_memory_t act[CHAIN_MAX_PLANS][CHAIN_MAX_STEPS + 1];
    dnnl_memory_t scr[CHAIN_MAX_PLANS][CHAIN_MAX_STEPS];
} chain_ctx_t;

#define DNNL_TRY(call)                                                                                   \
    do {                                                                                                 \
        dnnl_status_t st_ = (call);                                                                      \
        if (st_ != dnnl_success) {                                                                       \
            rc = fm_fail(FM_EBACKEND, "cpu engine: %s failed: %s (%s:%d)", #call, dnnl_status2str(st_), \
                         __FILE__, __LINE__);                                                            \
            goto out;                                                                                    \
        }                                                                                                \
    } while (0)

static const layer_spec_t mlp_layers[] = {
    {LAYER_DENSE, FM_MLP_H1, FM_MLP_FC1_W, FM_MLP_FC1_B, 1},
    {LAYER_DENSE, FM_MLP_H2, FM_MLP_FC2_W, FM_MLP_FC2_B, 1},
    {LAYER_DENSE, FM_NUM_CLASSES, FM_MLP_FC3_W, FM_MLP_FC3_B, 0},
};
static const layer_spec_t cnn_layers[] = {
    {LAYER_CONV, FM_CNN_C1, FM_CNN_CONV1_W, FM_CNN_CONV1_B, 1},
    {LAYER_POOL, FM_CNN_C1, -1, -1, 0},
    {LAYER_CONV, FM_CNN_C2, FM_CNN_CONV2_W, FM_CNN_CONV2_B, 1},
    {LAYER_POOL, FM_CNN_C2, -1, -1, 0},
    {LAYER_DENSE, FM_CNN_H, FM_CNN_FC1_W, FM_CNN_FC1_B, 1},
    {LAYER_DENSE, FM_NUM_CLASSES, FM_CNN_FC2_W, FM_CNN_FC2_B, 0},
};

static void *aligned_alloc64(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, CHAIN_ALIGN, bytes ? bytes : CHAIN_ALIGN) != 0)
        return NULL;
    return p;
}

static void chain_free(void *opaque) {
    chain_t *c = opaque;
    if (!c)
        return;
    for (int p = 0; p < c->nplans; p++)
        for (int i = 0; i < CHAIN_MAX_STEPS; i++)
            if (c->plans[p].prim[i])
                dnnl_primitive_destroy(c->plans[p].prim[i]);
    for (int i = 0; i < c->nlayers; i++) {
        layer_t *l = &c->layers[i];
        for (int v = 0; v < l->nwv; v++)
            dnnl_memory_destroy(l->wv[v].mem);
        if (l->bias)
            dnnl_memory_destroy(l->bias);
        free(l->bias_data);
    }
    free(c);
}

/* Finds or makes the weights of layer `l` in layout `want`, reordered from
 * the model's PyTorch layout described by `user`. */
static int weights_for(chain_t *c, layer_t *l, const dnnl_memory_desc_t *user, const float *data,
                       const dnnl_memory_desc_t *want, dnnl_stream_t stream, int *index) {
    int rc = 0;
    for (int v = 0; v < l->nwv; v++)
        if (dnnl_memory_desc_equal(&l->wv[v].md, want)) {
            *index = v;
            return 0;
        }
    if (l->nwv == CHAIN_MAX_PLANS)
        return fm_fail(FM_EINTERNAL, "cpu engine: too many weight layouts");
    dnnl_memory_t src = NULL, dst = NULL;
    dnnl_primitive_desc_t rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    DNNL_TRY(dnnl_memory_create(&src, user, c->engine, (void *)data));
    DNNL_TRY(dnnl_memory_create(&dst, want, c->engine, DNNL_MEMORY_ALLOCATE));
    DNNL_TRY(dnnl_reorder_primitive_desc_create(&rpd, user, c->engine, want, c->engine, NULL));
    DNNL_TRY(dnnl_primitive_create(&reorder, rpd));
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}};
    DNNL_TRY(dnnl_primitive_execute(reorder, stream, 2, args));
    DNNL_TRY(dnnl_stream_wait(stream));
    l->wv[l->nwv].md = *want;
    l->wv[l->nwv].mem = dst;
    dst = NULL;
    *index = l->nwv++;
out:
    if (reorder)
        dnnl_primitive_destroy(reorder);
    if (rpd)
        dnnl_primitive_desc_destroy(rpd);
    if (src)
        dnnl_memory_destroy(src);
    if (dst)
        dnnl_memory_destroy(dst);
    return rc;
}

/* Completes step `st` of a plan from its primitive descriptor (taking
 * ownership of `pd`): output layout, scratchpad, weights, primitive. */
static int step_finish(chain_t *c, plan_t *pl, int st, int layer, dnnl_primitive_desc_t pd, layer_t *l,
                       const dnnl_memory_desc_t *user, const float *wdata, dnnl_stream_t stream) {
    int rc = 0;
    if (st >= CHAIN_MAX_STEPS) {
        rc = fm_fail(FM_EINTERNAL, "cpu engine: too many steps in a plan");
        goto out;
    }
    pl->layer[st] = layer;
    pl->act_md[st + 1] = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    pl->scratch_md[st] = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    pl->scratch_bytes[st] = dnnl_memory_desc_get_size(&pl->scratch_md[st]);
    if (wdata) {
        const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
        rc = weights_for(c, l, user, wdata, want, stream, &pl->wv[st]);
        if (rc)
            goto out;
    }
    DNNL_TRY(dnnl_primitive_create(&pl->prim[st], pd));
    if (c->nplans == 0 && strlen(c->impls) + 40 < sizeof c->impls) {
        const char *impl = NULL;
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        size_t len = strlen(c->impls);
        snprintf(c->impls + len, sizeof c->impls - len, "%s%s%s", len ? "," : "", layer < 0 ? "reorder " : "",
                 impl ? impl : "?");
    }
out:
    dnnl_primitive_desc_destroy(pd);
    return rc;
}

/* Builds the primitives of one batch size. */
static int plan_build(chain_t *c, const fm_model_t *m, fm_arch_t arch, int nhwc, size_t batch,
                      dnnl_stream_t stream, plan_t *pl) {
    int rc = 0;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t relu = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_dim_t n = (dnnl_dim_t)batch;

    pl->batch = batch;
    /* The input is the pixels scaled to [0,1], image after image: that is
     * NCHW with C = 1 for the CNN, [N, 784] for the MLP. */
    int spatial = arch == FM_ARCH_CNN;
    int ch = spatial ? 1 : FM_IMAGE_PIXELS, h = FM_IMAGE_SIDE, w = FM_IMAGE_SIDE;
    if (spatial) {
        dnnl_dims_t d = {n, 1, h, w};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&pl->act_md[0], 4, d, dnnl_f32, dnnl_abcd));
    } else {
        dnnl_dims_t d = {n, FM_IMAGE_PIXELS};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&pl->act_md[0], 2, d, dnnl_f32, dnnl_ab));
    }
    DNNL_TRY(dnnl_post_ops_create(&relu));
    DNNL_TRY(dnnl_post_ops_append_eltwise(relu, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));

    int st = 0; /* the step being built */
    for (int i = 0; i < c->nlayers; i++) {
        layer_t *l = &c->layers[i];
        const layer_spec_t *s = &l->spec;
        dnnl_memory_desc_t wmd, bmd, dmd, user;
        /* Channels-last convolutions (brgconv) take NHWC activations; the
         * first convolution (one input channel) keeps the blocked layout its
         * dedicated kernel writes, and a reorder step converts after it. */
        int cl = nhwc && s->kind == LAYER_CONV && ch > 1;
        if (cl) {
            dnnl_dims_t sd = {n, ch, h, w};
            dnnl_memory_desc_t want;
            DNNL_TRY(dnnl_memory_desc_init_by_tag(&want, 4, sd, dnnl_f32, dnnl_acdb));
            if (!dnnl_memory_desc_equal(&want, &pl->act_md[st])) {
                DNNL_TRY(dnnl_primitive_attr_create(&attr));
                DNNL_TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
                DNNL_TRY(dnnl_reorder_primitive_desc_create(&pd, &pl->act_md[st], c->engine, &want, c->engine, attr));
                rc = step_finish(c, pl, st++, -1, pd, NULL, NULL, NULL, stream);
                pd = NULL;
                dnnl_primitive_attr_destroy(attr);
                attr = NULL;
                if (rc)
                    goto out;
            }
        }
        const dnnl_memory_desc_t *src = &pl->act_md[st];
        dnnl_dims_t bdims = {s->out};
        DNNL_TRY(dnnl_primitive_attr_create(&attr));
        DNNL_TRY(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
        if (s->relu)
            DNNL_TRY(dnnl_primitive_attr_set_post_ops(attr, relu));
        if (s->kind != LAYER_POOL)
            DNNL_TRY(dnnl_memory_desc_init_by_tag(&bmd, 1, bdims, dnnl_f32, dnnl_a));

        if (s->kind == LAYER_CONV) {
            dnnl_dims_t wd = {s->out, ch, 3, 3}, dd = {n, s->out, h, w};
            dnnl_dims_t one = {1, 1}, pad = {1, 1};
            DNNL_TRY(dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any));
            DNNL_TRY(dnnl_memory_desc_init_by_tag(&user, 4, wd, dnnl_f32, dnnl_abcd)); /* OIHW */
            DNNL_TRY(dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, cl ? dnnl_acdb : dnnl_format_tag_any));
            dnnl_convolution_desc_t d;
            DNNL_TRY(dnnl_convolution_forward_desc_init(&d, dnnl_forward_inference, dnnl_convolution_direct, src,
                                                        &wmd, &bmd, &dmd, one, pad, pad));
            DNNL_TRY(dnnl_primitive_desc_create(&pd, &d, attr, c->engine, NULL));
            ch = s->out;
        } else if (s->kind == LAYER_POOL) {
            dnnl_dims_t dd = {n, ch, h / 2, w / 2}, two = {2, 2}, zero = {0, 0};
            DNNL_TRY(dnnl_memory_desc_init_by_tag(&dmd, 4, dd, dnnl_f32, dnnl_format_tag_any));
            dnnl_pooling_desc_t d;
            DNNL_TRY(dnnl_pooling_forward_desc_init(&d, dnnl_forward_inference, dnnl_pooling_max, src, &dmd, two,
                                                    two, zero, zero));
            DNNL_TRY(dnnl_primitive_desc_create(&pd, &d, attr, c->engine, NULL));
            h /= 2;
            w /= 2;
        } else {
            int last = i == c->nlayers - 1;
            dnnl_dims_t dd = {n, s->out};
            /* A dense layer after a feature map takes it as [N, C, H, W]
             * with OIHW weights, which is exactly PyTorch's [out, C*H*W]
             * weight matrix flattened in C,H,W order. */
            if (spatial) {
                dnnl_dims_t wd = {s->out, ch, h, w};
                DNNL_TRY(dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any));
                DNNL_TRY(dnnl_memory_desc_init_by_tag(&user, 4, wd, dnnl_f32, dnnl_abcd));
            } else {
                dnnl_dims_t wd = {s->out, ch};
                DNNL_TRY(dnnl_memory_desc_init_by_tag(&wmd, 2, wd, dnnl_f32, dnnl_format_tag_any));
                DNNL_TRY(dnnl_memory_desc_init_by_tag(&user, 2, wd, dnnl_f32, dnnl_ab));
            }
            /* Logits land directly in the caller's probs buffer: plain rows. */
            DNNL_TRY(dnnl_memory_desc_init_by_tag(&dmd, 2, dd, dnnl_f32, last ? dnnl_ab : dnnl_format_tag_any));
            dnnl_inner_product_desc_t d;
            DNNL_TRY(dnnl_inner_product_forward_desc_init(&d, dnnl_forward_inference, src, &wmd, &bmd, &dmd));
            DNNL_TRY(dnnl_primitive_desc_create(&pd, &d, attr, c->engine, NULL));
            ch = s->out;
            h = w = 1;
            spatial = 0;
        }

        const float *wdata = s->kind != LAYER_POOL ? fm_model_param(m, s->w_param)->data : NULL;
        rc = step_finish(c, pl, st++, i, pd, l, &user, wdata, stream);
        pd = NULL;
        dnnl_primitive_attr_destroy(attr);
        attr = NULL;
        if (rc)
            goto out;
    }
    pl->nsteps = st;
out:
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (relu)
        dnnl_post_ops_destroy(relu);
    return rc;
}

static int chain_build(const fm_cpu_build_t *b, void **out) {
    int rc = 0;
    fm_arch_t arch = fm_model_arch(b->model);
    chain_t *c = calloc(1, sizeof *c);
    dnnl_stream_t stream = NULL;
    if (!c)
        return fm_fail(FM_ENOMEM, "cpu engine: out of memory building a plan");
    c->engine = (dnnl_engine_t)b->dnnl_engine;
    const layer_spec_t *specs = arch == FM_ARCH_MLP ? mlp_layers : cnn_layers;
    c->nlayers = arch == FM_ARCH_MLP ? 3 : 6;
    for (int i = 0; i < c->nlayers; i++) {
        layer_t *l = &c->layers[i];
        l->spec = specs[i];
        if (l->spec.kind == LAYER_POOL)
            continue;
        l->bias_data = aligned_alloc64(sizeof(float) * (size_t)l->spec.out);
        if (!l->bias_data) {
            rc = fm_fail(FM_ENOMEM, "cpu engine: out of memory copying biases");
            goto out;
        }
        memcpy(l->bias_data, fm_model_param(b->model, l->spec.b_param)->data, sizeof(float) * (size_t)l->spec.out);
        dnnl_memory_desc_t bmd;
        dnnl_dims_t bd = {l->spec.out};
        DNNL_TRY(dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a));
        DNNL_TRY(dnnl_memory_create(&l->bias, &bmd, c->engine, l->bias_data));
    }
    DNNL_TRY(dnnl_stream_create(&stream, c->engine, dnnl_stream_default_flags));

    /* Buckets: the tile, then every power of two below it. */
    size_t sizes[CHAIN_MAX_PLANS];
    int ns = 0;
    sizes[ns++] = b->tile;
    size_t p2 = 1;
    while (p2 * 2 < b->tile)
        p2 *= 2;
    for (; p2 >= 1 && ns < CHAIN_MAX_PLANS; p2 /= 2)
        if (p2 < b->tile)
            sizes[ns++] = p2;
    for (int p = 0; p < ns; p++) {
        rc = plan_build(c, b->model, arch, b->tuning->cnn_nhwc, sizes[p], stream, &c->plans[p]);
        c->nplans = p + 1; /* so that chain_free destroys what was built */
        if (rc)
            goto out;
        plan_t *pl = &c->plans[p];
        /* Activation i lives in buffer i % 2; the last one is the caller's. */
        for (int i = 0; i < pl->nsteps; i++) {
            size_t bytes = dnnl_memory_desc_get_size(&pl->act_md[i]);
            if (bytes > c->buf_bytes[i % 2])
                c->buf_bytes[i % 2] = bytes;
            if (pl->scratch_bytes[i] > c->scratch_bytes)
                c->scratch_bytes = pl->scratch_bytes[i];
        }
    }
out:
    if (stream)
        dnnl_stream_destroy(stream);
    if (rc) {
        chain_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

static void chain_ctx_free(void *opaque) {
    chain_ctx_t *x = opaque;
    if (!x)
        return;
    for (int p = 0; p < CHAIN_MAX_PLANS; p++)
        for (int i = 0; i <= CHAIN_MAX_STEPS; i++) {
            if (x->act[p][i])
                dnnl_memory_destroy(x->act[p][i]);
            if (i < CHAIN_MAX_STEPS && x->scr[p][i])
                dnnl_memory_destroy(x->scr[p][i]);
        }
    if (x->stream)
        dnnl_stream_destroy(x->stream);
    free(x->buf[0]);
    free(x->buf[1]);
    free(x->scratch);
    free(x);
}

static int chain_ctx_new(void *opaque, void **out) {
    chain_t *c = opaque;
    int rc = 0;
    chain_ctx_t *x = calloc(1, sizeof *x);
    if (!x)
        return fm_fail(FM_ENOMEM, "cpu engine: out of memory for a caller context");
    x->net = c;
    x->buf[0] = aligned_alloc64(c->buf_bytes[0]);
    x->buf[1] = aligned_alloc64(c->buf_bytes[1]);
    x->scratch = aligned_alloc64(c->scratch_bytes);
    if (!x->buf[0] || !x->buf[1] || !x->scratch) {
        rc = fm_fail(FM_ENOMEM, "cpu engine: out of memory for activations (%zu + %zu bytes)", c->buf_bytes[0],
                     c->buf_bytes[1]);
        goto out;
    }
    DNNL_TRY(dnnl_stream_create(&x->stream, c->engine, dnnl_stream_default_flags));
    for (int p = 0; p < c->nplans; p++) {
        const plan_t *pl = &c->plans[p];
        for (int i = 0; i <= pl->nsteps; i++) {
            void *handle = i < pl->nsteps ? x->buf[i % 2] : DNNL_MEMORY_NONE;
            DNNL_TRY(dnnl_memory_create(&x->act[p][i], &pl->act_md[i], c->engine, handle));
        }
        for (int i = 0; i < pl->nsteps; i++)
            if (pl->scratch_bytes[i])
                DNNL_TRY(dnnl_memory_create(&x->scr[p][i], &pl->scratch_md[i], c->engine, x->scratch));
    }
out:
    if (rc) {
        chain_ctx_free(x);
        return rc;
    }
    *out = x;
    return 0;
}

static int chain_run(void *opaque, void *ctx, const uint8_t *pixels, size_t n, float *logits) {
    chain_t *c = opaque;
    chain_ctx_t *x = ctx;
    int rc = 0;
    size_t done = 0;
    while (done < n) {
        int p = 0;
        while (c->plans[p].batch > n - done)
            p++; /* the last plan has batch 1, so this stops */
        const plan_t *pl = &c->plans[p];
        fm_cpu_u8_to_unit(pixels + done * FM_IMAGE_PIXELS, x->buf[0], pl->batch * FM_IMAGE_PIXELS);
        DNNL_TRY(dnnl_memory_set_data_handle_v2(x->act[p][pl->nsteps], logits + done * FM_NUM_CLASSES, x->stream));
        for (int i = 0; i < pl->nsteps; i++) {
            const layer_t *l = pl->layer[i] >= 0 ? &c->layers[pl->layer[i]] : NULL;
            dnnl_exec_arg_t args[5];
            int na = 0;
            /* DNNL_ARG_FROM/TO of a reorder are DNNL_ARG_SRC/DST. */
            args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, x->act[p][i]};
            args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, x->act[p][i + 1]};
            if (l && l->spec.kind != LAYER_POOL) {
                args[na++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, l->wv[pl->wv[i]].mem};
                args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, l->bias};
            }
            if (x->scr[p][i])
                args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, x->scr[p][i]};
            DNNL_TRY(dnnl_primitive_execute(pl->prim[i], x->stream, na, args));
        }
        done += pl->batch;
    }
    DNNL_TRY(dnnl_stream_wait(x->stream));
out:
    return rc;
}

static void chain_describe(void *opaque, char *buf, size_t len) {
    chain_t *c = opaque;
    snprintf(buf, len, "primitives[%s], %d buckets up to %zu", c->impls, c->nplans, c->plans[0].batch);
}

const fm_cpu_impl_t fm_cpu_chain_impl = {
    .name = "primitives",
    .build = chain_build,
    .free_net = chain_free,
    .ctx_new = chain_ctx_new,
    .ctx_free = chain_ctx_free,
    .run = chain_run,
    .describe = chain_describe,
};
