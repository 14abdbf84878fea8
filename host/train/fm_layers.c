/* fm_layers.c: forward and backward passes of the trainer's layers (see
 * fm_layers.h). Loops split work by image or by element with a static
 * OpenMP schedule and never reduce across threads, so their results do not
 * depend on the thread count; GEMMs go through fm_gemm. */
#include "fm_layers.h"

#include <math.h>
#include <string.h>

#include "fm_gemm.h"

/* Adds b[cols] to every row of y[rows][cols]. */
static void add_bias_rows(float *y, const float *b, int64_t rows, int cols) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        float *row = y + r * cols;
        for (int c = 0; c < cols; c++)
            row[c] += b[c];
    }
}

/* db[cols] (+)= sum over rows of dy[rows][cols], in row order (a fixed order, so
 * the sum is the same for any thread count). */
static void sum_rows(const float *dy, float *db, int64_t rows, int cols, int accumulate) {
    if (!accumulate)
        memset(db, 0, sizeof(float) * (size_t)cols);
    for (int64_t r = 0; r < rows; r++) {
        const float *row = dy + r * cols;
        for (int c = 0; c < cols; c++)
            db[c] += row[c];
    }
}

int fm_dense_forward(const float *x, const float *w, const float *b, float *y, int n, int in, int out) {
    int rc = fm_gemm(0, 1, n, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    if (rc)
        return rc;
    add_bias_rows(y, b, n, out);
    return 0;
}

int fm_dense_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, float *db, int n, int in,
                      int out) {
    int rc = fm_gemm(1, 0, out, in, n, 1.0f, dy, out, x, in, 0.0f, dw, in);
    if (rc)
        return rc;
    sum_rows(dy, db, n, out, 0);
    if (dx)
        return fm_gemm(0, 0, n, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
    return 0;
}

void fm_relu_forward(float *y, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++)
        y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

void fm_relu_backward(const float *y, float *dy, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++)
        dy[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

size_t fm_conv3x3_col_floats(int n, int h, int w, int cin) { return (size_t)n * h * w * 9 * cin; }

void fm_conv3x3_pack(const float *wt, float *wpack, int cin, int cout) {
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int k = 0; k < 9; k++)
                wpack[(size_t)co * 9 * cin + (size_t)k * cin + ci] = wt[((size_t)co * cin + ci) * 9 + k];
}

void fm_conv3x3_unpack(const float *wpack, float *wt, int cin, int cout) {
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++)
            for (int k = 0; k < 9; k++)
                wt[((size_t)co * cin + ci) * 9 + k] = wpack[(size_t)co * 9 * cin + (size_t)k * cin + ci];
}

/* col[img*h*w + y*w + x][(ky*3+kx)*cin + ci] = x[img][y+ky-1][x+kx-1][ci], 0 outside. */
static void im2col(const float *x, float *col, int n, int h, int w, int cin) {
    const size_t kc = (size_t)9 * cin;
#pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++) {
        const float *xi = x + (size_t)img * h * w * cin;
        float *ci = col + (size_t)img * h * w * kc;
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                float *row = ci + ((size_t)y * w + xx) * kc;
                for (int ky = 0; ky < 3; ky++) {
                    int iy = y + ky - 1;
                    for (int kx = 0; kx < 3; kx++) {
                        int ix = xx + kx - 1;
                        float *dst = row + (size_t)(ky * 3 + kx) * cin;
                        int inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
                        if (cin == 1) /* the first layer: a call per float would dominate */
                            *dst = inside ? xi[(size_t)iy * w + ix] : 0.0f;
                        else if (!inside)
                            memset(dst, 0, sizeof(float) * (size_t)cin);
                        else
                            memcpy(dst, xi + ((size_t)iy * w + ix) * cin, sizeof(float) * (size_t)cin);
                    }
                }
            }
    }
}

/* The adjoint of im2col: dx[img][iy][ix][ci] = sum of the dcol entries that
 * im2col copied from there. One thread per image, so no write is shared. */
static void col2im(const float *dcol, float *dx, int n, int h, int w, int cin) {
    const size_t kc = (size_t)9 * cin;
#pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++) {
        float *xi = dx + (size_t)img * h * w * cin;
        const float *ci = dcol + (size_t)img * h * w * kc;
        memset(xi, 0, sizeof(float) * (size_t)h * w * cin);
        for (int y = 0; y < h; y++)
            for (int xx = 0; xx < w; xx++) {
                const float *row = ci + ((size_t)y * w + xx) * kc;
                for (int ky = 0; ky < 3; ky++) {
                    int iy = y + ky - 1;
                    if (iy < 0 || iy >= h)
                        continue;
                    for (int kx = 0; kx < 3; kx++) {
                        int ix = xx + kx - 1;
                        if (ix < 0 || ix >= w)
                            continue;
                        const float *src = row + (size_t)(ky * 3 + kx) * cin;
                        float *dst = xi + ((size_t)iy * w + ix) * cin;
                        for (int c = 0; c < cin; c++)
                            dst[c] += src[c];
                    }
                }
            }
    }
}

int fm_conv3x3_forward(const float *x, const float *wpack, const float *b, float *y, float *col, int n, int h, int w,
                       int cin, int cout) {
    const int64_t rows = (int64_t)n * h * w, kc = (int64_t)9 * cin;
    im2col(x, col, n, h, w, cin);
    /* y[rows][cout] = col[rows][kc] . wpack[cout][kc]^T */
    int rc = fm_gemm(0, 1, rows, cout, kc, 1.0f, col, kc, wpack, kc, 0.0f, y, cout);
    if (rc)
        return rc;
    add_bias_rows(y, b, rows, cout);
    return 0;
}

int fm_conv3x3_backward(const float *x, const float *wpack, const float *dy, float *dx, float *dwpack, float *db,
                        float *col, float *dcol, int n, int h, int w, int cin, int cout, int accumulate) {
    const int64_t rows = (int64_t)n * h * w, kc = (int64_t)9 * cin;
    im2col(x, col, n, h, w, cin);
    /* dwpack[cout][kc] (+)= dy[rows][cout]^T . col[rows][kc] */
    int rc = fm_gemm(1, 0, cout, kc, rows, 1.0f, dy, cout, col, kc, accumulate ? 1.0f : 0.0f, dwpack, kc);
    if (rc)
        return rc;
    sum_rows(dy, db, rows, cout, accumulate);
    if (!dx)
        return 0;
    /* dcol[rows][kc] = dy[rows][cout] . wpack[cout][kc] */
    rc = fm_gemm(0, 0, rows, kc, cout, 1.0f, dy, cout, wpack, kc, 0.0f, dcol, kc);
    if (rc)
        return rc;
    col2im(dcol, dx, n, h, w, cin);
    return 0;
}

void fm_maxpool2_forward(const float *x, float *y, uint8_t *arg, int n, int h, int w, int c) {
    const int oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                const float *p00 = x + (((size_t)img * h + 2 * oy) * w + 2 * ox) * c;
                const float *p01 = p00 + c, *p10 = p00 + (size_t)w * c, *p11 = p10 + c;
                size_t o = (((size_t)img * oh + oy) * ow + ox) * c;
                for (int ch = 0; ch < c; ch++) {
                    float m = p00[ch];
                    uint8_t a = 0;
                    if (p01[ch] > m) {
                        m = p01[ch];
                        a = 1;
                    }
                    if (p10[ch] > m) {
                        m = p10[ch];
                        a = 2;
                    }
                    if (p11[ch] > m) {
                        m = p11[ch];
                        a = 3;
                    }
                    y[o + ch] = m;
                    arg[o + ch] = a;
                }
            }
}

void fm_maxpool2_backward(const uint8_t *arg, const float *dy, float *dx, int n, int h, int w, int c) {
    const int oh = h / 2, ow = w / 2;
#pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float *q[4];
                q[0] = dx + (((size_t)img * h + 2 * oy) * w + 2 * ox) * c;
                q[1] = q[0] + c;
                q[2] = q[0] + (size_t)w * c;
                q[3] = q[2] + c;
                size_t o = (((size_t)img * oh + oy) * ow + ox) * c;
                for (int ch = 0; ch < c; ch++) {
                    int a = arg[o + ch];
                    float g = dy[o + ch];
                    q[0][ch] = a == 0 ? g : 0.0f;
                    q[1][ch] = a == 1 ? g : 0.0f;
                    q[2][ch] = a == 2 ? g : 0.0f;
                    q[3][ch] = a == 3 ? g : 0.0f;
                }
            }
}

void fm_flatten_chw_forward(const float *x, float *y, int n, int hw, int c) {
#pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++) {
        const float *xi = x + (size_t)img * hw * c;
        float *yi = y + (size_t)img * hw * c;
        for (int p = 0; p < hw; p++)
            for (int ch = 0; ch < c; ch++)
                yi[(size_t)ch * hw + p] = xi[(size_t)p * c + ch];
    }
}

void fm_flatten_chw_backward(const float *dy, float *dx, int n, int hw, int c) {
#pragma omp parallel for schedule(static)
    for (int img = 0; img < n; img++) {
        const float *yi = dy + (size_t)img * hw * c;
        float *xi = dx + (size_t)img * hw * c;
        for (int p = 0; p < hw; p++)
            for (int ch = 0; ch < c; ch++)
                xi[(size_t)p * c + ch] = yi[(size_t)ch * hw + p];
    }
}

void fm_dropout_forward(float *y, float *mask, size_t count, float p, fm_rng_t *rng) {
    /* Drawn sequentially from one stream: the mask must not depend on how
     * the work is split between threads. 24 random bits per value. */
    const uint64_t cut = (uint64_t)((double)p * (1 << 24));
    const float keep_scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < count; i++) {
        mask[i] = (fm_rng_next(rng) >> 40) < cut ? 0.0f : keep_scale;
        y[i] *= mask[i];
    }
}

void fm_dropout_backward(const float *mask, float *dy, size_t count) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < count; i++)
        dy[i] *= mask[i];
}

double fm_softmax_xent_forward(const float *logits, const uint8_t *labels, float *probs, int n, int k, int *correct) {
    double loss = 0.0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *l = logits + (size_t)i * k;
        float *p = probs + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (l[j] > l[best])
                best = j;
        double mx = l[best], sum = 0.0;
        for (int j = 0; j < k; j++)
            sum += exp((double)l[j] - mx);
        for (int j = 0; j < k; j++)
            p[j] = (float)(exp((double)l[j] - mx) / sum);
        if (labels) {
            loss += log(sum) - ((double)l[labels[i]] - mx);
            hits += best == labels[i];
        }
    }
    if (correct)
        *correct += hits;
    return loss;
}

void fm_softmax_xent_backward(const float *probs, const uint8_t *labels, float *dlogits, int n, int k, float scale) {
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        float *d = dlogits + (size_t)i * k;
        for (int j = 0; j < k; j++)
            d[j] = (p[j] - (j == labels[i] ? 1.0f : 0.0f)) * scale;
    }
}
