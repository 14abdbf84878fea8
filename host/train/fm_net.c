/* fm_net.c: the MLP and CNN as sequences of layer calls over one batch (see
 * fm_net.h). The CNN keeps its activations channels-last; only the flatten
 * before the first dense layer reorders to PyTorch's C,H,W. */
#include "fm_net.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "fm_gemm.h"
#include "fm_layers.h"

/* Images per convolution group: small enough that a group's im2col matrix
 * (8 x 196 x 288 floats = 1.8 MB for conv2) stays in a core's cache, large
 * enough for efficient GEMMs. Fixed, so results never depend on it varying. */
#define FM_NET_GROUP 8

struct fm_net {
    fm_net_shape_t s;
    int max_batch;
    int dropout_on;
    int nthreads; /* OpenMP team size for the convolution groups */
    /* MLP */
    float *a1, *a2, *m1, *m2, *d1, *d2;
    /* CNN, whole batch: pooled (then ReLU'd) maps and the max-pool choices */
    float *p1, *p2, *dp1, *dp2, *flat, *dflat, *h, *mh, *dh;
    uint8_t *arg1, *arg2;
    float *wpack1, *wpack2, *dwpack1, *dwpack2;
    /* CNN, one slice per thread: group scratch and partial gradients */
    float *t_col, *t_dcol, *t_y;
    float *t_dw1, *t_db1, *t_dw2, *t_db2;
    int *t_used;
    size_t col_stride, y_stride;
    /* both */
    float *logits, *probs, *dlogits;
    char err[512]; /* first failure inside a parallel region */
};

void fm_net_shape_of(fm_arch_t arch, fm_net_shape_t *s) {
    memset(s, 0, sizeof *s);
    s->arch = arch;
    s->side = FM_IMAGE_SIDE;
    s->classes = FM_NUM_CLASSES;
    if (arch == FM_ARCH_MLP) {
        s->h1 = FM_MLP_H1;
        s->h2 = FM_MLP_H2;
    } else {
        s->c1 = FM_CNN_C1;
        s->c2 = FM_CNN_C2;
        s->hidden = FM_CNN_H;
    }
}

int fm_net_shape_check(const fm_net_shape_t *s) {
    if (s->side < 1 || s->side > 4096 || s->classes < 2 || s->classes > 256)
        return fm_fail(FM_EINVAL, "net shape: side %d / classes %d out of range", s->side, s->classes);
    if (s->arch == FM_ARCH_MLP) {
        if (s->h1 < 1 || s->h2 < 1)
            return fm_fail(FM_EINVAL, "net shape: MLP hidden widths %d, %d must be positive", s->h1, s->h2);
        return 0;
    }
    if (s->arch == FM_ARCH_CNN) {
        if (s->side % 4 != 0)
            return fm_fail(FM_EINVAL, "net shape: CNN side %d must be a multiple of 4 (two 2x2 pools)", s->side);
        if (s->c1 < 1 || s->c2 < 1 || s->hidden < 1)
            return fm_fail(FM_EINVAL, "net shape: CNN widths %d, %d, %d must be positive", s->c1, s->c2, s->hidden);
        return 0;
    }
    return fm_fail(FM_EINVAL, "net shape: unknown architecture %d", (int)s->arch);
}

int fm_net_param_count(const fm_net_shape_t *s) { return s->arch == FM_ARCH_MLP ? FM_MLP_NPARAMS : FM_CNN_NPARAMS; }

void fm_net_param_size(const fm_net_shape_t *s, int index, size_t *numel, int *fan_in) {
    /* (inputs, outputs) of each weighted layer, in parameter order. */
    int in[4], out[4];
    if (s->arch == FM_ARCH_MLP) {
        in[0] = s->side * s->side, out[0] = s->h1;
        in[1] = s->h1, out[1] = s->h2;
        in[2] = s->h2, out[2] = s->classes;
    } else {
        in[0] = 9, out[0] = s->c1;
        in[1] = 9 * s->c1, out[1] = s->c2;
        in[2] = s->c2 * (s->side / 4) * (s->side / 4), out[2] = s->hidden;
        in[3] = s->hidden, out[3] = s->classes;
    }
    int layer = index / 2;
    if (index % 2 == 0) {
        *numel = (size_t)in[layer] * out[layer];
        *fan_in = in[layer];
    } else {
        *numel = (size_t)out[layer];
        *fan_in = 0;
    }
}

/* Zeroed, 64-byte aligned: oneDNN then sees the same alignment in every run. */
static void *buf(size_t bytes, int *failed) {
    size_t rounded = (bytes + 63) / 64 * 64;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        *failed = 1;
    else
        memset(p, 0, rounded ? rounded : 64);
    return p;
}

fm_net_t *fm_net_new(const fm_net_shape_t *s, int max_batch) {
    if (fm_net_shape_check(s))
        return NULL;
    if (max_batch < 1 || max_batch > 65536) {
        fm_fail(FM_EINVAL, "net: batch size %d out of range 1..65536", max_batch);
        return NULL;
    }
    fm_net_t *net = calloc(1, sizeof *net);
    if (!net) {
        fm_fail(FM_ENOMEM, "net: out of memory");
        return NULL;
    }
    net->s = *s;
    net->max_batch = max_batch;
    const size_t n = (size_t)max_batch, f = sizeof(float);
    int bad = 0;
    if (s->arch == FM_ARCH_MLP) {
        net->a1 = buf(n * s->h1 * f, &bad);
        net->m1 = buf(n * s->h1 * f, &bad);
        net->d1 = buf(n * s->h1 * f, &bad);
        net->a2 = buf(n * s->h2 * f, &bad);
        net->m2 = buf(n * s->h2 * f, &bad);
        net->d2 = buf(n * s->h2 * f, &bad);
    } else {
        const size_t px = (size_t)s->side * s->side, px2 = px / 4, feat = (size_t)s->c2 * (px / 16);
        /* One slice of scratch per thread, but never more threads than groups. */
        const size_t g = FM_NET_GROUP, groups = (n + g - 1) / g;
        const size_t t = (size_t)fm_train_threads_get() < groups ? (size_t)fm_train_threads_get() : groups;
        const size_t col1 = fm_conv3x3_col_floats(FM_NET_GROUP, s->side, s->side, 1);
        const size_t col2 = fm_conv3x3_col_floats(FM_NET_GROUP, s->side / 2, s->side / 2, s->c1);
        const size_t y1 = g * px * s->c1, y2 = g * px2 * s->c2;
        const size_t w1 = (size_t)9 * s->c1, w2 = (size_t)9 * s->c1 * s->c2;
        net->nthreads = (int)t;
        /* Strides rounded to 64 bytes so no two threads share a cache line. */
        net->col_stride = ((col1 > col2 ? col1 : col2) + 15) / 16 * 16;
        net->y_stride = ((y1 > y2 ? y1 : y2) + 15) / 16 * 16;
        net->p1 = buf(n * px2 * s->c1 * f, &bad);
        net->dp1 = buf(n * px2 * s->c1 * f, &bad);
        net->arg1 = buf(n * px2 * s->c1, &bad);
        net->p2 = buf(n * feat * f, &bad);
        net->dp2 = buf(n * feat * f, &bad);
        net->arg2 = buf(n * feat, &bad);
        net->flat = buf(n * feat * f, &bad);
        net->dflat = buf(n * feat * f, &bad);
        net->h = buf(n * s->hidden * f, &bad);
        net->mh = buf(n * s->hidden * f, &bad);
        net->dh = buf(n * s->hidden * f, &bad);
        net->wpack1 = buf(w1 * f, &bad);
        net->dwpack1 = buf(w1 * f, &bad);
        net->wpack2 = buf(w2 * f, &bad);
        net->dwpack2 = buf(w2 * f, &bad);
        net->t_col = buf(t * net->col_stride * f, &bad);
        net->t_dcol = buf(t * net->col_stride * f, &bad);
        net->t_y = buf(t * net->y_stride * f, &bad);
        net->t_dw1 = buf(t * ((w1 + 15) / 16 * 16) * f, &bad);
        net->t_db1 = buf(t * (((size_t)s->c1 + 15) / 16 * 16) * f, &bad);
        net->t_dw2 = buf(t * ((w2 + 15) / 16 * 16) * f, &bad);
        net->t_db2 = buf(t * (((size_t)s->c2 + 15) / 16 * 16) * f, &bad);
        net->t_used = buf(t * sizeof(int), &bad);
    }
    net->logits = buf(n * s->classes * f, &bad);
    net->probs = buf(n * s->classes * f, &bad);
    net->dlogits = buf(n * s->classes * f, &bad);
    if (bad) {
        fm_net_free(net);
        fm_fail(FM_ENOMEM, "net: out of memory for a batch of %d", max_batch);
        return NULL;
    }
    return net;
}

void fm_net_free(fm_net_t *net) {
    if (!net)
        return;
    void *all[] = {net->a1,     net->a2,      net->m1,     net->m2,      net->d1,    net->d2,     net->p1,
                   net->p2,     net->dp1,     net->dp2,    net->flat,    net->dflat, net->h,      net->mh,
                   net->dh,     net->arg1,    net->arg2,   net->wpack1,  net->wpack2, net->dwpack1, net->dwpack2,
                   net->t_col,  net->t_dcol,  net->t_y,    net->t_dw1,   net->t_db1, net->t_dw2,  net->t_db2,
                   net->t_used, net->logits,  net->probs,  net->dlogits};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i]);
    free(net);
}

static int mlp_forward(fm_net_t *net, float *const *p, const float *x, int n, float dropout, fm_rng_t *rng) {
    const fm_net_shape_t *s = &net->s;
    int rc;
    if ((rc = fm_dense_forward(x, p[0], p[1], net->a1, n, s->side * s->side, s->h1)))
        return rc;
    fm_relu_forward(net->a1, (size_t)n * s->h1);
    if (net->dropout_on)
        fm_dropout_forward(net->a1, net->m1, (size_t)n * s->h1, dropout, rng);
    if ((rc = fm_dense_forward(net->a1, p[2], p[3], net->a2, n, s->h1, s->h2)))
        return rc;
    fm_relu_forward(net->a2, (size_t)n * s->h2);
    if (net->dropout_on)
        fm_dropout_forward(net->a2, net->m2, (size_t)n * s->h2, dropout, rng);
    return fm_dense_forward(net->a2, p[4], p[5], net->logits, n, s->h2, s->classes);
}

static int mlp_backward(fm_net_t *net, float *const *p, float *const *g, const float *x, int n) {
    const fm_net_shape_t *s = &net->s;
    int rc;
    if ((rc = fm_dense_backward(net->a2, p[4], net->dlogits, net->d2, g[4], g[5], n, s->h2, s->classes)))
        return rc;
    if (net->dropout_on)
        fm_dropout_backward(net->m2, net->d2, (size_t)n * s->h2);
    fm_relu_backward(net->a2, net->d2, (size_t)n * s->h2);
    if ((rc = fm_dense_backward(net->a1, p[2], net->d2, net->d1, g[2], g[3], n, s->h1, s->h2)))
        return rc;
    if (net->dropout_on)
        fm_dropout_backward(net->m1, net->d1, (size_t)n * s->h1);
    fm_relu_backward(net->a1, net->d1, (size_t)n * s->h1);
    return fm_dense_backward(x, p[0], net->d1, NULL, g[0], g[1], n, s->side * s->side, s->h1);
}

/* Keeps the first failure of a parallel region (its detail lives in the
 * failing thread's fm_fail buffer, which the caller cannot see). */
static void note_failure(fm_net_t *net, int rc, int *shared_rc) {
#pragma omp critical(fm_net_err)
    {
        if (!*shared_rc) {
            *shared_rc = rc;
            snprintf(net->err, sizeof net->err, "%s", fm_last_error());
        }
    }
}

/* conv1 -> pool -> ReLU -> conv2 -> pool -> ReLU, one group of images per
 * iteration, groups split statically between threads. */
static int cnn_forward(fm_net_t *net, float *const *p, const float *x, int n, float dropout, fm_rng_t *rng) {
    const fm_net_shape_t *s = &net->s;
    const int s1 = s->side, s2 = s1 / 2, s4 = s1 / 4, feat = s->c2 * s4 * s4;
    const size_t px = (size_t)s1 * s1, px2 = px / 4, px4 = px / 16;
    const int groups = (n + FM_NET_GROUP - 1) / FM_NET_GROUP;
    int rc = 0;
    fm_conv3x3_pack(p[0], net->wpack1, 1, s->c1);
    fm_conv3x3_pack(p[2], net->wpack2, s->c1, s->c2);
#pragma omp parallel for schedule(static) num_threads(net->nthreads)
    for (int g = 0; g < groups; g++) {
        const int t = omp_get_thread_num(), i0 = g * FM_NET_GROUP;
        const int gn = n - i0 < FM_NET_GROUP ? n - i0 : FM_NET_GROUP;
        float *col = net->t_col + (size_t)t * net->col_stride, *y = net->t_y + (size_t)t * net->y_stride;
        float *p1 = net->p1 + (size_t)i0 * px2 * s->c1, *p2 = net->p2 + (size_t)i0 * px4 * s->c2;
        /* A one-channel NCHW image is also NHWC: x needs no reordering. */
        int e = fm_conv3x3_forward(x + (size_t)i0 * px, net->wpack1, p[1], y, col, gn, s1, s1, 1, s->c1);
        if (!e) {
            fm_maxpool2_forward(y, p1, net->arg1 + (size_t)i0 * px2 * s->c1, gn, s1, s1, s->c1);
            fm_relu_forward(p1, (size_t)gn * px2 * s->c1);
            e = fm_conv3x3_forward(p1, net->wpack2, p[3], y, col, gn, s2, s2, s->c1, s->c2);
        }
        if (!e) {
            fm_maxpool2_forward(y, p2, net->arg2 + (size_t)i0 * px4 * s->c2, gn, s2, s2, s->c2);
            fm_relu_forward(p2, (size_t)gn * px4 * s->c2);
        } else {
            note_failure(net, e, &rc);
        }
    }
    if (rc)
        return fm_fail(rc, "%s", net->err);
    fm_flatten_chw_forward(net->p2, net->flat, n, s4 * s4, s->c2);
    if ((rc = fm_dense_forward(net->flat, p[4], p[5], net->h, n, feat, s->hidden)))
        return rc;
    fm_relu_forward(net->h, (size_t)n * s->hidden);
    if (net->dropout_on)
        fm_dropout_forward(net->h, net->mh, (size_t)n * s->hidden, dropout, rng);
    return fm_dense_forward(net->h, p[6], p[7], net->logits, n, s->hidden, s->classes);
}

/* Sums the threads' partial gradients in thread order (a fixed order for a
 * given thread count) into out. */
static void reduce_partials(const float *parts, size_t stride, const int *used, int nthreads, float *out, size_t count) {
    memset(out, 0, sizeof(float) * count);
    for (int t = 0; t < nthreads; t++) {
        if (!used[t])
            continue;
        const float *q = parts + (size_t)t * stride;
        for (size_t i = 0; i < count; i++)
            out[i] += q[i];
    }
}

static int cnn_backward(fm_net_t *net, float *const *p, float *const *g, const float *x, int n) {
    const fm_net_shape_t *s = &net->s;
    const int s1 = s->side, s2 = s1 / 2, s4 = s1 / 4, feat = s->c2 * s4 * s4;
    const size_t px = (size_t)s1 * s1, px2 = px / 4, px4 = px / 16;
    const size_t w1 = (size_t)9 * s->c1, w2 = (size_t)9 * s->c1 * s->c2;
    const size_t w1s = (w1 + 15) / 16 * 16, w2s = (w2 + 15) / 16 * 16;
    const size_t b1s = ((size_t)s->c1 + 15) / 16 * 16, b2s = ((size_t)s->c2 + 15) / 16 * 16;
    const int groups = (n + FM_NET_GROUP - 1) / FM_NET_GROUP;
    int rc;
    if ((rc = fm_dense_backward(net->h, p[6], net->dlogits, net->dh, g[6], g[7], n, s->hidden, s->classes)))
        return rc;
    if (net->dropout_on)
        fm_dropout_backward(net->mh, net->dh, (size_t)n * s->hidden);
    fm_relu_backward(net->h, net->dh, (size_t)n * s->hidden);
    if ((rc = fm_dense_backward(net->flat, p[4], net->dh, net->dflat, g[4], g[5], n, feat, s->hidden)))
        return rc;
    fm_flatten_chw_backward(net->dflat, net->dp2, n, s4 * s4, s->c2);
    memset(net->t_used, 0, sizeof(int) * (size_t)net->nthreads);
#pragma omp parallel num_threads(net->nthreads)
    {
        const int t = omp_get_thread_num();
        float *col = net->t_col + (size_t)t * net->col_stride, *dcol = net->t_dcol + (size_t)t * net->col_stride;
        float *dy = net->t_y + (size_t)t * net->y_stride;
        float *dw1 = net->t_dw1 + (size_t)t * w1s, *db1 = net->t_db1 + (size_t)t * b1s;
        float *dw2 = net->t_dw2 + (size_t)t * w2s, *db2 = net->t_db2 + (size_t)t * b2s;
#pragma omp for schedule(static)
        for (int gi = 0; gi < groups; gi++) {
            const int i0 = gi * FM_NET_GROUP, gn = n - i0 < FM_NET_GROUP ? n - i0 : FM_NET_GROUP;
            const int acc = net->t_used[t];
            float *p1 = net->p1 + (size_t)i0 * px2 * s->c1, *dp1 = net->dp1 + (size_t)i0 * px2 * s->c1;
            float *p2 = net->p2 + (size_t)i0 * px4 * s->c2, *dp2 = net->dp2 + (size_t)i0 * px4 * s->c2;
            fm_relu_backward(p2, dp2, (size_t)gn * px4 * s->c2);
            fm_maxpool2_backward(net->arg2 + (size_t)i0 * px4 * s->c2, dp2, dy, gn, s2, s2, s->c2);
            int e = fm_conv3x3_backward(p1, net->wpack2, dy, dp1, dw2, db2, col, dcol, gn, s2, s2, s->c1, s->c2, acc);
            if (!e) {
                fm_relu_backward(p1, dp1, (size_t)gn * px2 * s->c1);
                fm_maxpool2_backward(net->arg1 + (size_t)i0 * px2 * s->c1, dp1, dy, gn, s1, s1, s->c1);
                /* The input needs no gradient: conv1 skips its dx GEMM. */
                e = fm_conv3x3_backward(x + (size_t)i0 * px, net->wpack1, dy, NULL, dw1, db1, col, NULL, gn, s1, s1,
                                        1, s->c1, acc);
            }
            if (e)
                note_failure(net, e, &rc);
            net->t_used[t] = 1;
        }
    }
    if (rc)
        return fm_fail(rc, "%s", net->err);
    reduce_partials(net->t_dw2, w2s, net->t_used, net->nthreads, net->dwpack2, w2);
    reduce_partials(net->t_db2, b2s, net->t_used, net->nthreads, g[3], (size_t)s->c2);
    reduce_partials(net->t_dw1, w1s, net->t_used, net->nthreads, net->dwpack1, w1);
    reduce_partials(net->t_db1, b1s, net->t_used, net->nthreads, g[1], (size_t)s->c1);
    fm_conv3x3_unpack(net->dwpack2, g[2], s->c1, s->c2);
    fm_conv3x3_unpack(net->dwpack1, g[0], 1, s->c1);
    return 0;
}

int fm_net_forward(fm_net_t *net, float *const *params, const float *x, int n, const uint8_t *labels, float dropout,
                   fm_rng_t *rng, double *loss_sum, int *correct) {
    if (n < 1 || n > net->max_batch)
        return fm_fail(FM_EINVAL, "net: batch of %d images outside 1..%d", n, net->max_batch);
    if (dropout < 0.0f || dropout >= 1.0f)
        return fm_fail(FM_EINVAL, "net: dropout %g outside [0, 1)", (double)dropout);
    net->dropout_on = dropout > 0.0f && rng != NULL;
    int rc = net->s.arch == FM_ARCH_MLP ? mlp_forward(net, params, x, n, dropout, rng)
                                        : cnn_forward(net, params, x, n, dropout, rng);
    if (rc)
        return rc;
    double loss = fm_softmax_xent_forward(net->logits, labels, net->probs, n, net->s.classes, correct);
    if (loss_sum)
        *loss_sum = loss;
    return 0;
}

const float *fm_net_probs(const fm_net_t *net) { return net->probs; }

int fm_net_backward(fm_net_t *net, float *const *params, float *const *grads, const float *x, const uint8_t *labels,
                    int n) {
    if (n < 1 || n > net->max_batch)
        return fm_fail(FM_EINVAL, "net: batch of %d images outside 1..%d", n, net->max_batch);
    fm_softmax_xent_backward(net->probs, labels, net->dlogits, n, net->s.classes, 1.0f / (float)n);
    return net->s.arch == FM_ARCH_MLP ? mlp_backward(net, params, grads, x, n)
                                       : cnn_backward(net, params, grads, x, n);
}

const float *fm_net_dropout_mask(const fm_net_t *net, int layer) {
    if (!net->dropout_on)
        return NULL;
    if (net->s.arch == FM_ARCH_MLP)
        return layer == 0 ? net->m1 : layer == 1 ? net->m2 : NULL;
    return layer == 0 ? net->mh : NULL;
}
