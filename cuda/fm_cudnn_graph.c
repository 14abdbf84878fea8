/* fm_cudnn_graph.c: builds one fused cuDNN backend graph per layer and finds
 * the first engine config whose execution plan finalizes (see
 * fm_cudnn_graph.h and docs/gpu.md). Every cuDNN call goes through
 * FM_DEV_CHECK, except the plan finalizations that are expected to fail for
 * unsupported configs. */
#include "fm_cudnn_graph.h"

#include <float.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cuda_check.h"
#include "fm_error.h"
#include "fm_log.h"

/* Unique ids of the virtual (fused, never bound) intermediates. */
enum { UID_OP_OUT = 10, UID_ADD_OUT = 11 };

/* Non-virtual tensors are bound to cudaMalloc'd buffers (256-byte aligned)
 * at offsets we keep 16-byte aligned; tensor-core engines need 16. */
static const int64_t k_alignment = 16;

const char *fm_cudnn_dtype_name(cudnnDataType_t dt) {
    switch (dt) {
    case CUDNN_DATA_FLOAT: return "fp32";
    case CUDNN_DATA_HALF: return "fp16";
    case CUDNN_DATA_BFLOAT16: return "bf16";
    default: return "?";
    }
}

int64_t fm_cudnn_conv_out(int64_t in, int64_t filter, int64_t pad) {
    /* P = (H + padPre + padPost - ((R - 1) * dilation + 1)) / stride + 1, dilation = stride = 1 */
    return (in + 2 * pad - filter) + 1;
}

void fm_cudnn_layer_describe(const fm_cudnn_layer_t *L, char *buf, size_t len) {
    if (L->op == FM_CUDNN_MATMUL)
        snprintf(buf, len, "%s matmul [%lld x %lld] . [%lld x %lld] +bias%s %s", L->name ? L->name : "?",
                 (long long)L->m, (long long)L->k, (long long)L->k, (long long)L->n, L->relu ? " relu" : "",
                 fm_cudnn_dtype_name(L->dtype));
    else
        snprintf(buf, len, "%s conv NHWC [%lld,%lld,%lld,%lld] * KRSC [%lld,%lld,%lld,%lld] pad %lld +bias%s %s",
                 L->name ? L->name : "?", (long long)L->batch, (long long)L->h, (long long)L->w, (long long)L->c,
                 (long long)L->kout, (long long)L->r, (long long)L->s, (long long)L->c, (long long)L->pad,
                 L->relu ? " relu" : "", fm_cudnn_dtype_name(L->dtype));
}

/* ---- descriptor helpers ------------------------------------------------ */

/* Takes ownership of `d`: it lives until fm_cudnn_plan_destroy. */
static int keep(fm_cudnn_plan_t *p, cudnnBackendDescriptor_t d) {
    if (p->nkeep >= FM_CUDNN_MAX_KEEP) {
        cudnnBackendDestroyDescriptor(d);
        return fm_fail(FM_EINTERNAL, "cudnn graph: more than %d descriptors", FM_CUDNN_MAX_KEEP);
    }
    p->keep[p->nkeep++] = d;
    return 0;
}

static int create_kept(fm_cudnn_plan_t *p, cudnnBackendDescriptorType_t type, cudnnBackendDescriptor_t *out) {
    *out = NULL;
    FM_DEV_CHECK(cudnnBackendCreateDescriptor(type, out));
    return keep(p, *out);
}

static int make_tensor(fm_cudnn_plan_t *p, int64_t uid, cudnnDataType_t dt, int nd, const int64_t *dims,
                       const int64_t *strides, bool is_virtual, cudnnBackendDescriptor_t *out) {
    cudnnBackendDescriptor_t t = NULL;
    int rc = create_kept(p, CUDNN_BACKEND_TENSOR_DESCRIPTOR, &t);
    if (rc)
        return rc;
    FM_DEV_CHECK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dt));
    FM_DEV_CHECK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, nd, dims));
    FM_DEV_CHECK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, nd, strides));
    FM_DEV_CHECK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid));
    FM_DEV_CHECK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &k_alignment));
    FM_DEV_CHECK(cudnnBackendSetAttribute(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &is_virtual));
    FM_DEV_CHECK(cudnnBackendFinalize(t));
    *out = t;
    return 0;
}

/* A pointwise op y = mode(x[, b]) with FLOAT math; b is NULL for unary modes. */
static int make_pointwise(fm_cudnn_plan_t *p, cudnnPointwiseMode_t mode, cudnnBackendDescriptor_t x,
                          cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t y, cudnnBackendDescriptor_t *op_out) {
    cudnnBackendDescriptor_t pw = NULL, op = NULL;
    cudnnDataType_t math = CUDNN_DATA_FLOAT;
    int rc = create_kept(p, CUDNN_BACKEND_POINTWISE_DESCRIPTOR, &pw);
    if (rc)
        return rc;
    FM_DEV_CHECK(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode));
    FM_DEV_CHECK(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math));
    if (mode == CUDNN_POINTWISE_RELU_FWD) {
        /* The frontend's defaults: plain ReLU, upper clip clamped to FLT_MAX for FLOAT math. */
        double lower = 0.0, upper = FLT_MAX, slope = 0.0;
        FM_DEV_CHECK(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP, CUDNN_TYPE_DOUBLE, 1, &lower));
        FM_DEV_CHECK(cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_RELU_UPPER_CLIP, CUDNN_TYPE_DOUBLE, 1, &upper));
        FM_DEV_CHECK(
            cudnnBackendSetAttribute(pw, CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP_SLOPE, CUDNN_TYPE_DOUBLE, 1, &slope));
    }
    FM_DEV_CHECK(cudnnBackendFinalize(pw));

    rc = create_kept(p, CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR, &op);
    if (rc)
        return rc;
    /* Runtime fusion supports only alpha1 = alpha2 = 1 (set as the frontend does). */
    float one = 1.0f;
    FM_DEV_CHECK(
        cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &pw));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    if (b)
        FM_DEV_CHECK(
            cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &b));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA1, CUDNN_TYPE_FLOAT, 1, &one));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_POINTWISE_ALPHA2, CUDNN_TYPE_FLOAT, 1, &one));
    FM_DEV_CHECK(cudnnBackendFinalize(op));
    *op_out = op;
    return 0;
}

/* The main op's tensors and descriptor: matmul x[1,m,k] . w[1,k,n] -> [1,m,n]. */
static int make_matmul(fm_cudnn_plan_t *p, const fm_cudnn_layer_t *L, cudnnBackendDescriptor_t *op_out,
                       cudnnBackendDescriptor_t *out_tensor, int *nd, int64_t *ydims, int64_t *ystrides,
                       int64_t *bdims, int64_t *bstrides) {
    const int64_t m = L->m, k = L->k, n = L->n;
    /* Matmul operands need >= 3 dims (a 2-D matmul gets candidates but no plan). */
    int64_t xd[3] = {1, m, k}, xs[3] = {m * k, k, 1};
    int64_t wd[3] = {1, k, n}, ws[3] = {k * n, n, 1};
    int64_t cd[3] = {1, m, n}, cs[3] = {m * n, n, 1};
    cudnnBackendDescriptor_t x = NULL, w = NULL, c = NULL, mm = NULL, op = NULL;
    int rc;
    if ((rc = make_tensor(p, FM_CUDNN_UID_X, L->dtype, 3, xd, xs, false, &x)) ||
        (rc = make_tensor(p, FM_CUDNN_UID_W, L->dtype, 3, wd, ws, false, &w)) ||
        (rc = make_tensor(p, UID_OP_OUT, CUDNN_DATA_FLOAT, 3, cd, cs, true, &c)))
        return rc;
    if ((rc = create_kept(p, CUDNN_BACKEND_MATMUL_DESCRIPTOR, &mm)))
        return rc;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    FM_DEV_CHECK(cudnnBackendSetAttribute(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp));
    FM_DEV_CHECK(cudnnBackendFinalize(mm));
    if ((rc = create_kept(p, CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, &op)))
        return rc;
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &c));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &mm));
    FM_DEV_CHECK(cudnnBackendFinalize(op));
    *op_out = op;
    *out_tensor = c;
    *nd = 3;
    memcpy(ydims, cd, sizeof cd);
    memcpy(ystrides, cs, sizeof cs);
    int64_t bd[3] = {1, 1, n}, bs[3] = {n, n, 1};
    memcpy(bdims, bd, sizeof bd);
    memcpy(bstrides, bs, sizeof bs);
    return 0;
}

/* The main op's tensors and descriptor: cross-correlation, NHWC x, KRSC w. */
static int make_conv(fm_cudnn_plan_t *p, const fm_cudnn_layer_t *L, cudnnBackendDescriptor_t *op_out,
                     cudnnBackendDescriptor_t *out_tensor, int *nd, int64_t *ydims, int64_t *ystrides, int64_t *bdims,
                     int64_t *bstrides) {
    const int64_t N = L->batch, C = L->c, H = L->h, W = L->w, K = L->kout, R = L->r, S = L->s;
    const int64_t P = fm_cudnn_conv_out(H, R, L->pad), Q = fm_cudnn_conv_out(W, S, L->pad);
    if (P <= 0 || Q <= 0)
        return fm_fail(FM_EINVAL, "cudnn graph %s: empty conv output", L->name ? L->name : "?");
    /* Logical dims are always N,C,H,W (K,C,R,S); NHWC/KRSC is in the strides. */
    int64_t xd[4] = {N, C, H, W}, xs[4] = {H * W * C, 1, W * C, C};
    int64_t wd[4] = {K, C, R, S}, ws[4] = {R * S * C, 1, S * C, C};
    int64_t yd[4] = {N, K, P, Q}, ys[4] = {P * Q * K, 1, Q * K, K};
    cudnnBackendDescriptor_t x = NULL, w = NULL, y = NULL, conv = NULL, op = NULL;
    int rc;
    if ((rc = make_tensor(p, FM_CUDNN_UID_X, L->dtype, 4, xd, xs, false, &x)) ||
        (rc = make_tensor(p, FM_CUDNN_UID_W, L->dtype, 4, wd, ws, false, &w)) ||
        (rc = make_tensor(p, UID_OP_OUT, CUDNN_DATA_FLOAT, 4, yd, ys, true, &y)))
        return rc;
    if ((rc = create_kept(p, CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR, &conv)))
        return rc;
    int64_t spatial = 2;
    cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    /* PyTorch's Conv2d is a cross-correlation. */
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    int64_t pads[2] = {L->pad, L->pad}, ones[2] = {1, 1};
    FM_DEV_CHECK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial));
    FM_DEV_CHECK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp));
    FM_DEV_CHECK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode));
    FM_DEV_CHECK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pads));
    FM_DEV_CHECK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pads));
    FM_DEV_CHECK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, ones));
    FM_DEV_CHECK(cudnnBackendSetAttribute(conv, CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, ones));
    FM_DEV_CHECK(cudnnBackendFinalize(conv));

    if ((rc = create_kept(p, CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR, &op)))
        return rc;
    /* FLOAT alpha/beta for FLOAT compute; fused graphs need beta = 0. */
    float alpha = 1.0f, beta = 0.0f;
    FM_DEV_CHECK(
        cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &x));
    FM_DEV_CHECK(
        cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &w));
    FM_DEV_CHECK(
        cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &y));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                                          CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &conv));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA, CUDNN_TYPE_FLOAT, 1, &alpha));
    FM_DEV_CHECK(cudnnBackendSetAttribute(op, CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA, CUDNN_TYPE_FLOAT, 1, &beta));
    FM_DEV_CHECK(cudnnBackendFinalize(op));
    *op_out = op;
    *out_tensor = y;
    *nd = 4;
    memcpy(ydims, yd, sizeof yd);
    memcpy(ystrides, ys, sizeof ys);
    int64_t bd[4] = {1, K, 1, 1}, bs[4] = {K, 1, K, K};
    memcpy(bdims, bd, sizeof bd);
    memcpy(bstrides, bs, sizeof bs);
    return 0;
}

static int check_layer(const fm_cudnn_layer_t *L) {
    const char *name = L->name ? L->name : "?";
    if (L->dtype != CUDNN_DATA_FLOAT && L->dtype != CUDNN_DATA_HALF && L->dtype != CUDNN_DATA_BFLOAT16)
        return fm_fail(FM_EINVAL, "cudnn graph %s: unsupported storage type %d", name, (int)L->dtype);
    if (L->op == FM_CUDNN_MATMUL) {
        if (L->m <= 0 || L->k <= 0 || L->n <= 0)
            return fm_fail(FM_EINVAL, "cudnn graph %s: bad matmul shape", name);
        return 0;
    }
    if (L->op == FM_CUDNN_CONV) {
        if (L->batch <= 0 || L->c <= 0 || L->h <= 0 || L->w <= 0 || L->kout <= 0 || L->r <= 0 || L->s <= 0 ||
            L->pad < 0)
            return fm_fail(FM_EINVAL, "cudnn graph %s: bad conv shape", name);
        return 0;
    }
    return fm_fail(FM_EINVAL, "cudnn graph %s: unknown op %d", name, (int)L->op);
}

/* Steps 1-4 of the sequence: tensors, op descriptors, operation graph. */
static int build_graph(cudnnHandle_t handle, const fm_cudnn_layer_t *L, fm_cudnn_plan_t *p,
                       cudnnBackendDescriptor_t *graph_out) {
    int rc = check_layer(L);
    if (rc)
        return rc;
    cudnnBackendDescriptor_t main_op = NULL, main_out = NULL, bias = NULL, add_out = NULL, y = NULL, add_op = NULL,
                             relu_op = NULL, graph = NULL;
    int nd = 0;
    int64_t yd[4], ys[4], bd[4], bs[4];
    rc = L->op == FM_CUDNN_MATMUL ? make_matmul(p, L, &main_op, &main_out, &nd, yd, ys, bd, bs)
                                  : make_conv(p, L, &main_op, &main_out, &nd, yd, ys, bd, bs);
    if (rc)
        return rc;
    if ((rc = make_tensor(p, FM_CUDNN_UID_B, L->dtype, nd, bd, bs, false, &bias)))
        return rc;
    if ((rc = make_tensor(p, FM_CUDNN_UID_Y, L->dtype, nd, yd, ys, false, &y)))
        return rc;
    if (L->relu) {
        if ((rc = make_tensor(p, UID_ADD_OUT, CUDNN_DATA_FLOAT, nd, yd, ys, true, &add_out)) ||
            (rc = make_pointwise(p, CUDNN_POINTWISE_ADD, main_out, bias, add_out, &add_op)) ||
            (rc = make_pointwise(p, CUDNN_POINTWISE_RELU_FWD, add_out, NULL, y, &relu_op)))
            return rc;
    } else if ((rc = make_pointwise(p, CUDNN_POINTWISE_ADD, main_out, bias, y, &add_op))) {
        return rc;
    }
    cudnnBackendDescriptor_t ops[3] = {main_op, add_op, relu_op};
    int64_t nops = L->relu ? 3 : 2;
    if ((rc = create_kept(p, CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, &graph)))
        return rc;
    FM_DEV_CHECK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, nops, ops));
    /* Deprecated in 9.19 but still set by the frontend whenever it has a handle. */
    if (handle)
        FM_DEV_CHECK(cudnnBackendSetAttribute(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle));
    FM_DEV_CHECK(cudnnBackendFinalize(graph));
    *graph_out = graph;
    return 0;
}

/* Step 5 for one mode: the heuristics' ranked configs, appended to cfgs.
 * A mode that cannot produce results is not an error (the other may). */
static int heuristics(fm_cudnn_plan_t *p, cudnnBackendDescriptor_t graph, cudnnBackendDescriptor_t target,
                      cudnnBackendHeurMode_t mode, cudnnBackendDescriptor_t **cfgs, int64_t *ncfgs, int64_t *ranked_out,
                      int64_t *got_out) {
    *got_out = *ranked_out = 0;
    cudnnBackendDescriptor_t heur = NULL;
    int rc = create_kept(p, CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, &heur);
    if (rc)
        return rc;
    FM_DEV_CHECK(
        cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &graph));
    FM_DEV_CHECK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode));
#if CUDNN_VERSION >= 90800
    if (target)
        FM_DEV_CHECK(cudnnBackendSetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                                              &target));
#else
    (void)target;
#endif
    cudnnStatus_t st = cudnnBackendFinalize(heur);
    if (st != CUDNN_STATUS_SUCCESS) {
        fm_debug("cudnn", "heuristics mode %d did not finalize: %s", (int)mode, cudnnGetErrorString(st));
        return 0;
    }
    int64_t count = 0;
    FM_DEV_CHECK(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                          NULL));
    *ranked_out = count;
    if (count <= 0)
        return 0;
    if (count > 1024)
        count = 1024;
    cudnnBackendDescriptor_t *grown = realloc(*cfgs, sizeof **cfgs * (size_t)(*ncfgs + count));
    if (!grown)
        return fm_fail(FM_ENOMEM, "cudnn heuristics: out of memory");
    *cfgs = grown;
    cudnnBackendDescriptor_t *fresh = grown + *ncfgs;
    /* cuDNN fills descriptors that already exist; it never allocates them. */
    for (int64_t i = 0; i < count; i++) {
        fresh[i] = NULL;
        cudnnStatus_t cs = cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, &fresh[i]);
        if (cs != CUDNN_STATUS_SUCCESS) {
            for (int64_t j = 0; j < i; j++)
                cudnnBackendDestroyDescriptor(fresh[j]);
            return FM_DEV_STATUS(cs, "cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR)");
        }
    }
    int64_t got = 0;
    cudnnStatus_t gs =
        cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, fresh);
    if (gs != CUDNN_STATUS_SUCCESS || got < 0)
        got = 0;
    if (got > count)
        got = count;
    for (int64_t i = got; i < count; i++)
        cudnnBackendDestroyDescriptor(fresh[i]);
    *ncfgs += got;
    *got_out = got;
    if (gs != CUDNN_STATUS_SUCCESS)
        return FM_DEV_STATUS(gs, "cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS)");
    return 0;
}

/* Reads the engine behind a config: global index and note bit sets. */
static int engine_info(cudnnBackendDescriptor_t cfg, int64_t *index, unsigned *numerical, unsigned *behavior) {
    *index = -1;
    *numerical = *behavior = 0;
    cudnnBackendDescriptor_t engine = NULL;
    FM_DEV_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_ENGINE_DESCRIPTOR, &engine));
    int rc = 0;
    int64_t n = 0;
    cudnnBackendNumericalNote_t nn[CUDNN_NUMERICAL_NOTE_TYPE_COUNT];
    cudnnBackendBehaviorNote_t bn[CUDNN_BEHAVIOR_NOTE_TYPE_COUNT];
    FM_DEV_TRY(rc, cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                                            &engine));
    FM_DEV_TRY(rc, cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, index));
    n = 0;
    FM_DEV_TRY(rc, cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                            CUDNN_NUMERICAL_NOTE_TYPE_COUNT, &n, nn));
    for (int64_t i = 0; i < n && i < CUDNN_NUMERICAL_NOTE_TYPE_COUNT; i++)
        if ((unsigned)nn[i] < 32)
            *numerical |= FM_CUDNN_NOTE_BIT(nn[i]);
    n = 0;
    FM_DEV_TRY(rc, cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_BEHAVIOR_NOTE, CUDNN_TYPE_BEHAVIOR_NOTE,
                                            CUDNN_BEHAVIOR_NOTE_TYPE_COUNT, &n, bn));
    for (int64_t i = 0; i < n && i < CUDNN_BEHAVIOR_NOTE_TYPE_COUNT; i++)
        if ((unsigned)bn[i] < 32)
            *behavior |= FM_CUDNN_NOTE_BIT(bn[i]);
fail:
    cudnnBackendDestroyDescriptor(engine);
    return rc;
}

static void describe_engine(fm_cudnn_plan_t *p) {
    static const struct {
        unsigned bit;
        const char *name;
    } notes[] = {
        {FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_TENSOR_CORE), "tensor_core"},
        {FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS), "down_convert"},
        {FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION), "reduced_precision"},
        {FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_FFT), "fft"},
        {FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC), "nondeterministic"},
        {FM_CUDNN_NOTE_BIT(CUDNN_NUMERICAL_NOTE_WINOGRAD), "winograd"},
    };
    size_t len = sizeof p->engine_desc;
    int off = snprintf(p->engine_desc, len, "eng%lld[", (long long)p->engine);
    const char *sep = "";
    for (size_t i = 0; i < sizeof notes / sizeof notes[0] && off > 0 && (size_t)off < len; i++)
        if (p->numerical_notes & notes[i].bit) {
            off += snprintf(p->engine_desc + off, len - (size_t)off, "%s%s", sep, notes[i].name);
            sep = ",";
        }
    if (off > 0 && (size_t)off < len && (p->behavior_notes & FM_CUDNN_NOTE_BIT(CUDNN_BEHAVIOR_NOTE_RUNTIME_COMPILATION)))
        off += snprintf(p->engine_desc + off, len - (size_t)off, "%srtc", sep);
    if (off > 0 && (size_t)off < len)
        snprintf(p->engine_desc + off, len - (size_t)off, "]");
}

void fm_cudnn_plan_destroy(fm_cudnn_plan_t *p) {
    if (!p)
        return;
    /* The plan first, then what it was built from (reverse creation order). */
    if (p->plan)
        cudnnBackendDestroyDescriptor(p->plan);
    if (p->cfg)
        cudnnBackendDestroyDescriptor(p->cfg);
    for (int i = p->nkeep - 1; i >= 0; i--)
        if (p->keep[i])
            cudnnBackendDestroyDescriptor(p->keep[i]);
    memset(p, 0, sizeof *p);
}

int fm_cudnn_deviceprop_from_json(const char *json, cudnnBackendDescriptor_t *out) {
    *out = NULL;
#if CUDNN_VERSION < 90800
    (void)json;
    return fm_fail(FM_EUNSUPPORTED, "cuDNN %d cannot describe a device by properties (needs 9.8+)", CUDNN_VERSION);
#else
    cudnnBackendDescriptor_t d = NULL;
    int rc = 0;
    FM_DEV_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_DEVICEPROP_DESCRIPTOR, &d));
    FM_DEV_TRY(rc, cudnnBackendSetAttribute(d, CUDNN_ATTR_DEVICEPROP_JSON_REPRESENTATION, CUDNN_TYPE_CHAR,
                                            (int64_t)strlen(json), json));
    FM_DEV_TRY(rc, cudnnBackendFinalize(d));
    *out = d;
    return 0;
fail:
    cudnnBackendDestroyDescriptor(d);
    return rc;
#endif
}

int fm_cudnn_graph_check(cudnnHandle_t handle, cudnnBackendDescriptor_t target, const fm_cudnn_layer_t *L,
                         int64_t *ranked_a, int64_t *ranked_fallback, int64_t *viable_a, int64_t *viable_fallback) {
    fm_cudnn_plan_t p;
    memset(&p, 0, sizeof p);
    cudnnBackendDescriptor_t graph = NULL, *cfgs = NULL;
    int64_t ncfgs = 0;
    *ranked_a = *ranked_fallback = *viable_a = *viable_fallback = 0;
    int rc = build_graph(handle, L, &p, &graph);
    if (!rc)
        rc = heuristics(&p, graph, target, CUDNN_HEUR_MODE_A, &cfgs, &ncfgs, ranked_a, viable_a);
    if (!rc)
        rc = heuristics(&p, graph, target, CUDNN_HEUR_MODE_FALLBACK, &cfgs, &ncfgs, ranked_fallback, viable_fallback);
    for (int64_t i = 0; i < ncfgs; i++)
        cudnnBackendDestroyDescriptor(cfgs[i]);
    free(cfgs);
    fm_cudnn_plan_destroy(&p);
    return rc;
}

int fm_cudnn_plan_build(cudnnHandle_t handle, cudnnBackendDescriptor_t target, const fm_cudnn_layer_t *L,
                        unsigned avoid_notes, fm_cudnn_plan_t *out) {
    fm_cudnn_plan_t *p = out;
    memset(p, 0, sizeof *p);
    char what[192];
    fm_cudnn_layer_describe(L, what, sizeof what);
    cudnnBackendDescriptor_t graph = NULL, *cfgs = NULL;
    int64_t ncfgs = 0, n_a = 0, n_fb = 0, ranked_a = 0, ranked_fb = 0;
    int rc = build_graph(handle, L, p, &graph);
    if (!rc)
        rc = heuristics(p, graph, target, CUDNN_HEUR_MODE_A, &cfgs, &ncfgs, &ranked_a, &n_a);
    if (!rc)
        rc = heuristics(p, graph, target, CUDNN_HEUR_MODE_FALLBACK, &cfgs, &ncfgs, &ranked_fb, &n_fb);
    if (rc)
        goto done;

    /* Step 6: configs in rank order (mode A's, then FALLBACK's). Pass 0 skips
     * engines whose numerical notes are to be avoided; pass 1 takes any. */
    cudnnStatus_t last = CUDNN_STATUS_NOT_SUPPORTED;
    char last_msg[256] = "";
    int64_t chosen = -1;
    for (int pass = 0; pass < 2 && chosen < 0; pass++) {
        if (pass == 1 && avoid_notes == 0)
            break;
        for (int64_t i = 0; i < ncfgs && chosen < 0; i++) {
            int64_t eng;
            unsigned nn, bn;
            if (engine_info(cfgs[i], &eng, &nn, &bn) != 0) {
                /* Notes unknown: not trusted to be free of avoided ones. */
                fm_debug("cudnn", "%s: config %lld: engine not readable: %s", what, (long long)i, fm_last_error());
                nn = avoid_notes;
                bn = 0;
            }
            int avoided = (nn & avoid_notes) != 0;
            if (avoided != pass) /* pass 0: only clean engines; pass 1: only the avoided ones */
                continue;
            p->tried++;
            cudnnBackendDescriptor_t plan = NULL;
            if ((rc = FM_DEV_STATUS(cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, &plan),
                                    "cudnnBackendCreateDescriptor(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)")))
                goto done;
            cudnnStatus_t st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                                                        CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cfgs[i]);
#if CUDNN_VERSION >= 90800
            if (st == CUDNN_STATUS_SUCCESS && target)
                st = cudnnBackendSetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_DEVICEPROP, CUDNN_TYPE_BACKEND_DESCRIPTOR,
                                              1, &target);
#endif
            if (st == CUDNN_STATUS_SUCCESS)
                st = cudnnBackendFinalize(plan);
            if (st != CUDNN_STATUS_SUCCESS) {
                /* NOT_SUPPORTED is normal here: try the next config. */
                last = st;
                cudnnGetLastErrorString(last_msg, sizeof last_msg);
                fm_debug("cudnn", "%s: config %lld (eng%lld) did not finalize: %s (%d)", what, (long long)i,
                         (long long)eng, cudnnGetErrorString(st), (int)st);
                cudnnBackendDestroyDescriptor(plan);
                continue;
            }
            int64_t ws = 0, n = 0;
            cudnnStatus_t wst =
                cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws);
            if (wst != CUDNN_STATUS_SUCCESS) {
                cudnnBackendDestroyDescriptor(plan);
                rc = FM_DEV_STATUS(wst, "cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE)");
                goto done;
            }
            chosen = i;
            p->plan = plan;
            p->cfg = cfgs[i];
            cfgs[i] = NULL; /* now owned by the plan */
            p->workspace = ws < 0 ? 0 : ws;
            p->engine = eng;
            p->numerical_notes = nn;
            p->behavior_notes = bn;
            p->relaxed = pass == 1;
        }
    }
    if (chosen < 0) {
        for (char *c = last_msg; *c; c++)
            if (*c == '\n' || *c == '\r')
                *c = ' ';
        rc = fm_fail(FM_EUNSUPPORTED,
                     "cuDNN has no engine for %s: heuristics ranked %lld (mode A) + %lld (fallback) configs, "
                     "%lld + %lld passed cuDNN's support checks, %d tried, none finalized; last: %s (%d)%s%s",
                     what, (long long)ranked_a, (long long)ranked_fb, (long long)n_a, (long long)n_fb, p->tried,
                     cudnnGetErrorString(last),
                     (int)last, last_msg[0] ? ": " : "", last_msg);
        goto done;
    }
    describe_engine(p);
    fm_debug("cudnn", "%s: %s after %d tried, workspace %lld B%s", what, p->engine_desc, p->tried,
             (long long)p->workspace, p->relaxed ? " (no engine without the avoided notes)" : "");
done:
    for (int64_t i = 0; i < ncfgs; i++)
        if (cfgs[i])
            cudnnBackendDestroyDescriptor(cfgs[i]);
    free(cfgs);
    if (rc)
        fm_cudnn_plan_destroy(p);
    return rc;
}

int fm_cudnn_varpack_create(const fm_cudnn_plan_t *p, void *x, const void *w, const void *b, void *y, void *workspace,
                            cudnnBackendDescriptor_t *out) {
    *out = NULL;
    const void *ptrs[4] = {x, w, b, y};
    for (int i = 0; i < 4; i++)
        if (!ptrs[i] || ((uintptr_t)ptrs[i] & 15u))
            return fm_fail(FM_EINVAL, "variant pack: tensor %d pointer %p is NULL or not 16-byte aligned", i + 1,
                           ptrs[i]);
    if (p->workspace > 0 && !workspace)
        return fm_fail(FM_EINVAL, "variant pack: plan needs %lld B of workspace, none given", (long long)p->workspace);
    int64_t uids[4] = {FM_CUDNN_UID_X, FM_CUDNN_UID_W, FM_CUDNN_UID_B, FM_CUDNN_UID_Y};
    void *data[4] = {x, (void *)w, (void *)b, y};
    void *ws = p->workspace > 0 ? workspace : NULL;
    cudnnBackendDescriptor_t vp = NULL;
    int rc = 0;
    FM_DEV_CHECK(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &vp));
    FM_DEV_TRY(rc, cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 4, uids));
    FM_DEV_TRY(rc, cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 4, data));
    FM_DEV_TRY(rc, cudnnBackendSetAttribute(vp, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &ws));
    FM_DEV_TRY(rc, cudnnBackendFinalize(vp));
    *out = vp;
    return 0;
fail:
    cudnnBackendDestroyDescriptor(vp);
    return rc;
}

void fm_cudnn_varpack_destroy(cudnnBackendDescriptor_t vp) {
    if (vp)
        cudnnBackendDestroyDescriptor(vp);
}
