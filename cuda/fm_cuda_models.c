/* fm_cuda_models.c: the MLP and the CNN as step lists over ping-pong buffers,
 * and their weights reordered into the layouts the cuDNN graphs bind (see
 * fm_cuda_models.h). */
#include "fm_cuda_models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"

cudnnDataType_t fm_cuda_dtype_cudnn(fm_cuda_dtype_t dt) {
    switch (dt) {
    case FM_CUDA_F16: return CUDNN_DATA_HALF;
    case FM_CUDA_BF16: return CUDNN_DATA_BFLOAT16;
    default: return CUDNN_DATA_FLOAT;
    }
}

const char *fm_cuda_dtype_name(fm_cuda_dtype_t dt) {
    switch (dt) {
    case FM_CUDA_F16: return "fp16";
    case FM_CUDA_BF16: return "bf16";
    default: return "fp32";
    }
}

static void add_step(fm_cuda_net_t *net, fm_cuda_step_t s) {
    net->steps[net->nsteps++] = s;
    if (s.kind != FM_STEP_SOFTMAX && net->buf_elems[s.dst] < s.dst_elems)
        net->buf_elems[s.dst] = s.dst_elems;
}

static void add_dense(fm_cuda_net_t *net, const char *name, int w_param, int b_param, int64_t in, int64_t out, int relu,
                      int src, int dst) {
    int i = net->nlayers++;
    fm_cuda_layer_spec_t *L = &net->layers[i];
    memset(L, 0, sizeof *L);
    L->shape.name = name;
    L->shape.op = FM_CUDNN_MATMUL;
    L->shape.dtype = fm_cuda_dtype_cudnn(net->dtype);
    L->shape.relu = relu;
    L->shape.k = in;
    L->shape.n = out;
    L->w_param = w_param;
    L->b_param = b_param;
    L->w_elems = (size_t)(in * out);
    L->b_elems = (size_t)out;
    add_step(net, (fm_cuda_step_t){.kind = FM_STEP_LAYER, .layer = i, .src = src, .dst = dst, .dst_elems = (size_t)out});
}

static void add_conv(fm_cuda_net_t *net, const char *name, int w_param, int b_param, int64_t c, int64_t hw,
                     int64_t k, int src, int dst) {
    int i = net->nlayers++;
    fm_cuda_layer_spec_t *L = &net->layers[i];
    memset(L, 0, sizeof *L);
    L->shape.name = name;
    L->shape.op = FM_CUDNN_CONV;
    L->shape.dtype = fm_cuda_dtype_cudnn(net->dtype);
    L->shape.relu = 1;
    L->shape.c = c;
    L->shape.h = L->shape.w = hw;
    L->shape.kout = k;
    L->shape.r = L->shape.s = 3;
    L->shape.pad = 1;
    L->w_param = w_param;
    L->b_param = b_param;
    L->w_elems = (size_t)(k * 3 * 3 * c);
    L->b_elems = (size_t)k;
    add_step(net,
             (fm_cuda_step_t){.kind = FM_STEP_LAYER, .layer = i, .src = src, .dst = dst, .dst_elems = (size_t)(hw * hw * k)});
}

static void add_pool(fm_cuda_net_t *net, int h, int c, int src, int dst) {
    add_step(net, (fm_cuda_step_t){.kind = FM_STEP_POOL, .src = src, .dst = dst, .h = h, .w = h, .c = c,
                                   .dst_elems = (size_t)(h / 2) * (size_t)(h / 2) * (size_t)c});
}

int fm_cuda_net_init(fm_cuda_net_t *net, fm_arch_t arch, fm_cuda_dtype_t dt, int in_channels) {
    memset(net, 0, sizeof *net);
    net->arch = arch;
    net->dtype = dt;
    enum { A = FM_CUDA_BUF_A, B = FM_CUDA_BUF_B };
    if (arch == FM_ARCH_MLP) {
        if (in_channels != 1)
            return fm_fail(FM_EINVAL, "cuda net: the MLP takes 1 input channel, not %d", in_channels);
        net->in_channels = 1;
        add_step(net, (fm_cuda_step_t){.kind = FM_STEP_INPUT, .dst = B, .dst_elems = FM_IMAGE_PIXELS});
        add_dense(net, "fc1", FM_MLP_FC1_W, FM_MLP_FC1_B, FM_IMAGE_PIXELS, FM_MLP_H1, 1, B, A);
        add_dense(net, "fc2", FM_MLP_FC2_W, FM_MLP_FC2_B, FM_MLP_H1, FM_MLP_H2, 1, A, B);
        add_dense(net, "fc3", FM_MLP_FC3_W, FM_MLP_FC3_B, FM_MLP_H2, FM_CUDA_LOGITS_LD, 0, B, A);
        add_step(net, (fm_cuda_step_t){.kind = FM_STEP_SOFTMAX, .src = A});
        return 0;
    }
    if (arch == FM_ARCH_CNN) {
        if (in_channels != 1 && in_channels != 2 && in_channels != 4 && in_channels != 8)
            return fm_fail(FM_EINVAL, "cuda net: input channels must be 1, 2, 4 or 8, not %d", in_channels);
        net->in_channels = in_channels;
        add_step(net, (fm_cuda_step_t){.kind = FM_STEP_INPUT, .dst = B,
                                       .dst_elems = (size_t)FM_IMAGE_PIXELS * (size_t)in_channels});
        add_conv(net, "conv1", FM_CNN_CONV1_W, FM_CNN_CONV1_B, in_channels, 28, FM_CNN_C1, B, A);
        add_pool(net, 28, FM_CNN_C1, A, B);
        add_conv(net, "conv2", FM_CNN_CONV2_W, FM_CNN_CONV2_B, FM_CNN_C1, 14, FM_CNN_C2, B, A);
        add_pool(net, 14, FM_CNN_C2, A, B);
        add_dense(net, "fc1", FM_CNN_FC1_W, FM_CNN_FC1_B, FM_CNN_FLAT, FM_CNN_H, 1, B, A);
        add_dense(net, "fc2", FM_CNN_FC2_W, FM_CNN_FC2_B, FM_CNN_H, FM_CUDA_LOGITS_LD, 0, A, B);
        add_step(net, (fm_cuda_step_t){.kind = FM_STEP_SOFTMAX, .src = B});
        return 0;
    }
    return fm_fail(FM_EINVAL, "cuda net: unknown architecture %d", (int)arch);
}

fm_cudnn_layer_t fm_cuda_net_layer_shape(const fm_cuda_net_t *net, int i, int64_t batch) {
    fm_cudnn_layer_t s = net->layers[i].shape;
    if (s.op == FM_CUDNN_MATMUL)
        s.m = batch;
    else
        s.batch = batch;
    return s;
}

/* The PyTorch shape each parameter must have. */
static void expected_shape(const fm_cuda_net_t *net, int param, int *ndim, int64_t shape[4]) {
    memset(shape, 0, 4 * sizeof shape[0]);
    for (int i = 0; i < net->nlayers; i++) {
        const fm_cuda_layer_spec_t *L = &net->layers[i];
        const fm_cudnn_layer_t *s = &L->shape;
        /* The padded logits layer really has 10 outputs. */
        int64_t out = s->op == FM_CUDNN_MATMUL ? (s->n == FM_CUDA_LOGITS_LD ? FM_NUM_CLASSES : s->n) : s->kout;
        if (param == L->b_param) {
            *ndim = 1;
            shape[0] = out;
            return;
        }
        if (param == L->w_param) {
            if (s->op == FM_CUDNN_MATMUL) {
                *ndim = 2;
                shape[0] = out;
                shape[1] = s->k;
            } else {
                /* conv1's padded input channels are zeros: the model has 1. */
                *ndim = 4;
                shape[0] = s->kout;
                shape[1] = i == 0 ? 1 : s->c;
                shape[2] = s->r;
                shape[3] = s->s;
            }
            return;
        }
    }
    *ndim = 0;
}

int fm_cuda_net_check_model(const fm_cuda_net_t *net, const fm_model_t *m) {
    if (fm_model_arch(m) != net->arch)
        return fm_fail(FM_ESHAPE, "cuda: model architecture %s does not match the network %s",
                       fm_arch_name(fm_model_arch(m)), fm_arch_name(net->arch));
    int count = fm_model_param_count(m);
    for (int i = 0; i < net->nlayers; i++) {
        int params[2] = {net->layers[i].w_param, net->layers[i].b_param};
        for (int j = 0; j < 2; j++) {
            if (params[j] >= count)
                return fm_fail(FM_ESHAPE, "cuda: model has %d parameters, parameter %d missing", count, params[j]);
            const fm_tensor_t *t = fm_model_param(m, params[j]);
            int nd;
            int64_t want[4];
            expected_shape(net, params[j], &nd, want);
            int ok = t && t->data && t->ndim == nd;
            size_t numel = 1;
            for (int d = 0; ok && d < nd; d++) {
                ok = t->shape[d] == want[d];
                numel *= (size_t)want[d];
            }
            if (!ok || t->numel != numel)
                return fm_fail(FM_ESHAPE, "cuda: parameter %s has an unexpected shape for %s",
                               t && t->name ? t->name : "?", fm_arch_name(net->arch));
        }
    }
    return 0;
}

void fm_cuda_net_layer_weights(const fm_cuda_net_t *net, const fm_model_t *m, int i, float *w, float *b) {
    const fm_cuda_layer_spec_t *L = &net->layers[i];
    const fm_cudnn_layer_t *s = &L->shape;
    const fm_tensor_t *tw = fm_model_param(m, L->w_param);
    const fm_tensor_t *tb = fm_model_param(m, L->b_param);
    memset(w, 0, L->w_elems * sizeof *w);
    memset(b, 0, L->b_elems * sizeof *b);
    memcpy(b, tb->data, tb->numel * sizeof *b); /* padded entries stay 0 */
    if (s->op == FM_CUDNN_MATMUL) {
        /* PyTorch [out][in] -> row-major [in][n_padded], so y = x . w. */
        const int64_t in = s->k, n = s->n, out = (int64_t)tb->numel;
        /* The CNN's fc1 reads the NHWC-flattened pooled map (h, w, c) where
         * PyTorch flattens (c, h, w): permute its input index. */
        const int nhwc_flatten = net->arch == FM_ARCH_CNN && L->w_param == FM_CNN_FC1_W;
        for (int64_t o = 0; o < out; o++)
            for (int64_t k = 0; k < in; k++) {
                int64_t src_k = k;
                if (nhwc_flatten) {
                    int64_t hw = k / FM_CNN_C2, c = k % FM_CNN_C2; /* k = (h*7 + w)*64 + c */
                    src_k = c * 49 + hw;                          /* PyTorch: c*49 + h*7 + w */
                }
                w[k * n + o] = tw->data[o * in + src_k];
            }
        return;
    }
    /* PyTorch OIHW [k][cin][r][s] -> KRSC [k][r][s][c_padded]. */
    const int64_t K = s->kout, C = s->c, R = s->r, S = s->s;
    const int64_t cin = tw->shape[1];
    for (int64_t k = 0; k < K; k++)
        for (int64_t c = 0; c < cin; c++)
            for (int64_t r = 0; r < R; r++)
                for (int64_t x = 0; x < S; x++)
                    w[((k * R + r) * S + x) * C + c] = tw->data[((k * cin + c) * R + r) * S + x];
}

/* ---- the CPU twin ------------------------------------------------------------ */

float fm_cuda_round_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7f800000u) == 0x7f800000u)
        return x; /* inf, NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* Keeps `bits` significant bits (implicit one included), ties to even. */
static float round_significand(float x, int bits) {
    if (!isfinite(x) || x == 0.0f)
        return x;
    int e;
    frexpf(fabsf(x), &e);
    float q = ldexpf(1.0f, e - bits);
    return copysignf(nearbyintf(fabsf(x) / q) * q, x);
}

float fm_cuda_round_tf32(float x) { return round_significand(x, 11); }

float fm_cuda_round_f16(float x) {
    if (!isfinite(x))
        return x;
    float a = fabsf(x);
    if (a >= 65520.0f) /* rounds past the largest half, 65504 */
        return copysignf(INFINITY, x);
    if (a < 6.103515625e-05f) { /* subnormal halves: a fixed quantum of 2^-24 */
        const float q = 5.9604644775390625e-08f;
        return copysignf(nearbyintf(a / q) * q, x);
    }
    return round_significand(x, 11);
}

static float round_store(fm_cuda_dtype_t dt, float x) {
    switch (dt) {
    case FM_CUDA_F16: return fm_cuda_round_f16(x);
    case FM_CUDA_BF16: return fm_cuda_round_bf16(x);
    default: return x;
    }
}

int fm_cuda_net_forward_host(const fm_cuda_net_t *net, const fm_model_t *m, fm_precision_t precision,
                             const uint8_t *pixels, size_t n, float *probs, int32_t *labels, float *confidence) {
    const fm_cuda_dtype_t dt = net->dtype;
    const int tf32 = precision == FM_PRECISION_TF32;
    float *w[FM_CUDA_MAX_LAYERS] = {0}, *b[FM_CUDA_MAX_LAYERS] = {0};
    float *buf[2] = {malloc(net->buf_elems[0] * sizeof(float)), malloc(net->buf_elems[1] * sizeof(float))};
    int rc = 0;
    if (!buf[0] || !buf[1]) {
        rc = fm_fail(FM_ENOMEM, "cuda twin: out of memory");
        goto done;
    }
    for (int l = 0; l < net->nlayers; l++) {
        const fm_cuda_layer_spec_t *L = &net->layers[l];
        w[l] = malloc(L->w_elems * sizeof(float));
        b[l] = malloc(L->b_elems * sizeof(float));
        if (!w[l] || !b[l]) {
            rc = fm_fail(FM_ENOMEM, "cuda twin: out of memory");
            goto done;
        }
        fm_cuda_net_layer_weights(net, m, l, w[l], b[l]);
        for (size_t i = 0; i < L->w_elems; i++)
            w[l][i] = round_store(dt, w[l][i]);
        for (size_t i = 0; i < L->b_elems; i++)
            b[l][i] = round_store(dt, b[l][i]);
        if (tf32)
            for (size_t i = 0; i < L->w_elems; i++)
                w[l][i] = fm_cuda_round_tf32(w[l][i]);
    }
    for (size_t img = 0; img < n; img++) {
        const uint8_t *px = pixels + img * FM_IMAGE_PIXELS;
        for (int si = 0; si < net->nsteps; si++) {
            const fm_cuda_step_t *st = &net->steps[si];
            float *src = buf[st->src], *dst = buf[st->dst];
            switch (st->kind) {
            case FM_STEP_INPUT: {
                const int C = net->in_channels;
                for (int p = 0; p < FM_IMAGE_PIXELS; p++)
                    for (int c = 0; c < C; c++)
                        dst[p * C + c] = c == 0 ? round_store(dt, (float)px[p] * (1.0f / 255.0f)) : 0.0f;
                break;
            }
            case FM_STEP_LAYER: {
                const fm_cudnn_layer_t *s = &net->layers[st->layer].shape;
                const float *W = w[st->layer], *B = b[st->layer];
                if (s->op == FM_CUDNN_MATMUL) {
                    for (int64_t o = 0; o < s->n; o++) {
                        float acc = 0.0f;
                        for (int64_t k = 0; k < s->k; k++) {
                            float x = tf32 ? fm_cuda_round_tf32(src[k]) : src[k];
                            acc += x * W[k * s->n + o];
                        }
                        float v = acc + B[o];
                        dst[o] = round_store(dt, s->relu && v < 0.0f ? 0.0f : v);
                    }
                } else {
                    const int64_t H = s->h, Wd = s->w, C = s->c, K = s->kout, R = s->r, S = s->s, pad = s->pad;
                    const int64_t P = fm_cudnn_conv_out(H, R, pad), Q = fm_cudnn_conv_out(Wd, S, pad);
                    for (int64_t p = 0; p < P; p++)
                        for (int64_t q = 0; q < Q; q++)
                            for (int64_t k = 0; k < K; k++) {
                                float acc = 0.0f;
                                for (int64_t r = 0; r < R; r++) {
                                    int64_t y = p + r - pad;
                                    if (y < 0 || y >= H)
                                        continue;
                                    for (int64_t x = 0; x < S; x++) {
                                        int64_t xx = q + x - pad;
                                        if (xx < 0 || xx >= Wd)
                                            continue;
                                        const float *in = src + (y * Wd + xx) * C;
                                        const float *f = W + ((k * R + r) * S + x) * C;
                                        for (int64_t c = 0; c < C; c++)
                                            acc += (tf32 ? fm_cuda_round_tf32(in[c]) : in[c]) * f[c];
                                    }
                                }
                                float v = acc + B[k];
                                dst[(p * Q + q) * K + k] = round_store(dt, v < 0.0f ? 0.0f : v);
                            }
                }
                break;
            }
            case FM_STEP_POOL: {
                const int oh = st->h / 2, ow = st->w / 2, C = st->c;
                for (int y = 0; y < oh; y++)
                    for (int x = 0; x < ow; x++)
                        for (int c = 0; c < C; c++) {
                            const float *p0 = src + ((size_t)(2 * y) * st->w + 2 * x) * C + c;
                            const float *p1 = p0 + (size_t)st->w * C;
                            dst[((size_t)y * ow + x) * C + c] = fmaxf(fmaxf(p0[0], p0[C]), fmaxf(p1[0], p1[C]));
                        }
                break;
            }
            case FM_STEP_SOFTMAX: {
                /* As the kernel: first maximum wins, NaN counts as -inf. */
                float mx = -INFINITY;
                int best = 0;
                for (int k = 0; k < FM_NUM_CLASSES; k++) {
                    float v = isnan(src[k]) ? -INFINITY : src[k];
                    if (v > mx) {
                        mx = v;
                        best = k;
                    }
                }
                float e[FM_NUM_CLASSES], sum = 0.0f;
                for (int k = 0; k < FM_NUM_CLASSES; k++)
                    sum += e[k] = expf(src[k] - mx);
                for (int k = 0; k < FM_NUM_CLASSES; k++)
                    probs[img * FM_NUM_CLASSES + k] = e[k] / sum;
                labels[img] = best;
                confidence[img] = probs[img * FM_NUM_CLASSES + best];
                break;
            }
            }
        }
    }
done:
    for (int l = 0; l < FM_CUDA_MAX_LAYERS; l++) {
        free(w[l]);
        free(b[l]);
    }
    free(buf[0]);
    free(buf[1]);
    return rc;
}
