/* fm_ref_forward.c: reference forward passes (see fm_ref_forward.h). */
#include "fm_ref_forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void dense(const double *in, int nin, const fm_tensor_t *w, const fm_tensor_t *b, double *out, int nout,
                  int relu) {
    for (int o = 0; o < nout; o++) {
        double s = b->data[o];
        const float *row = w->data + (size_t)o * nin;
        for (int i = 0; i < nin; i++)
            s += (double)row[i] * in[i];
        out[o] = relu && s < 0 ? 0 : s;
    }
}

/* 3x3 convolution, padding 1, stride 1, then ReLU. in: [cin][h][w]. */
static void conv3x3_relu(const double *in, int cin, int h, int w, const fm_tensor_t *wt, const fm_tensor_t *b,
                         double *out, int cout) {
    for (int co = 0; co < cout; co++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                double s = b->data[co];
                for (int ci = 0; ci < cin; ci++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int iy = y + ky - 1, ix = x + kx - 1;
                            if (iy < 0 || iy >= h || ix < 0 || ix >= w)
                                continue;
                            s += (double)wt->data[((co * cin + ci) * 3 + ky) * 3 + kx] * in[(ci * h + iy) * w + ix];
                        }
                out[(co * h + y) * w + x] = s < 0 ? 0 : s;
            }
}

static void maxpool2(const double *in, int c, int h, int w, double *out) {
    int oh = h / 2, ow = w / 2;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                const double *p = in + (ch * h + 2 * y) * w + 2 * x;
                double m = p[0];
                if (p[1] > m) m = p[1];
                if (p[w] > m) m = p[w];
                if (p[w + 1] > m) m = p[w + 1];
                out[(ch * oh + y) * ow + x] = m;
            }
}

static void softmax_out(const double *logits, float *probs, int32_t *label) {
    double mx = logits[0];
    int best = 0;
    for (int k = 1; k < FM_NUM_CLASSES; k++)
        if (logits[k] > mx) {
            mx = logits[k];
            best = k;
        }
    double e[FM_NUM_CLASSES], sum = 0;
    for (int k = 0; k < FM_NUM_CLASSES; k++)
        sum += e[k] = exp(logits[k] - mx);
    for (int k = 0; k < FM_NUM_CLASSES; k++)
        probs[k] = (float)(e[k] / sum);
    if (label)
        *label = best;
}

void fm_ref_forward(const fm_model_t *m, const uint8_t *pixels, size_t n, float *probs, int32_t *labels) {
    double x[FM_IMAGE_PIXELS], logits[FM_NUM_CLASSES];
    if (fm_model_arch(m) == FM_ARCH_MLP) {
        double h1[FM_MLP_H1], h2[FM_MLP_H2];
        for (size_t i = 0; i < n; i++) {
            for (int p = 0; p < FM_IMAGE_PIXELS; p++)
                x[p] = pixels[i * FM_IMAGE_PIXELS + p] / 255.0;
            dense(x, FM_IMAGE_PIXELS, fm_model_param(m, FM_MLP_FC1_W), fm_model_param(m, FM_MLP_FC1_B), h1, FM_MLP_H1, 1);
            dense(h1, FM_MLP_H1, fm_model_param(m, FM_MLP_FC2_W), fm_model_param(m, FM_MLP_FC2_B), h2, FM_MLP_H2, 1);
            dense(h2, FM_MLP_H2, fm_model_param(m, FM_MLP_FC3_W), fm_model_param(m, FM_MLP_FC3_B), logits,
                  FM_NUM_CLASSES, 0);
            softmax_out(logits, probs + i * FM_NUM_CLASSES, labels ? labels + i : NULL);
        }
        return;
    }
    double *c1 = malloc(sizeof(double) * FM_CNN_C1 * 28 * 28);
    double *p1 = malloc(sizeof(double) * FM_CNN_C1 * 14 * 14);
    double *c2 = malloc(sizeof(double) * FM_CNN_C2 * 14 * 14);
    double *p2 = malloc(sizeof(double) * FM_CNN_FLAT);
    double h[FM_CNN_H];
    for (size_t i = 0; i < n; i++) {
        for (int p = 0; p < FM_IMAGE_PIXELS; p++)
            x[p] = pixels[i * FM_IMAGE_PIXELS + p] / 255.0;
        conv3x3_relu(x, 1, 28, 28, fm_model_param(m, FM_CNN_CONV1_W), fm_model_param(m, FM_CNN_CONV1_B), c1, FM_CNN_C1);
        maxpool2(c1, FM_CNN_C1, 28, 28, p1);
        conv3x3_relu(p1, FM_CNN_C1, 14, 14, fm_model_param(m, FM_CNN_CONV2_W), fm_model_param(m, FM_CNN_CONV2_B), c2,
                     FM_CNN_C2);
        maxpool2(c2, FM_CNN_C2, 14, 14, p2);
        dense(p2, FM_CNN_FLAT, fm_model_param(m, FM_CNN_FC1_W), fm_model_param(m, FM_CNN_FC1_B), h, FM_CNN_H, 1);
        dense(h, FM_CNN_H, fm_model_param(m, FM_CNN_FC2_W), fm_model_param(m, FM_CNN_FC2_B), logits, FM_NUM_CLASSES, 0);
        softmax_out(logits, probs + i * FM_NUM_CLASSES, labels ? labels + i : NULL);
    }
    free(c1);
    free(p1);
    free(c2);
    free(p2);
}

/* splitmix64: small, good-quality, reproducible. */
static uint64_t next_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void fm_ref_random_init(fm_model_t *m, uint64_t seed, double scale) {
    uint64_t s = seed;
    for (int p = 0; p < fm_model_param_count(m); p++) {
        fm_tensor_t *t = fm_model_param_mut(m, p);
        size_t fan_in = t->ndim > 1 ? t->numel / (size_t)t->shape[0] : 16;
        double bound = scale / sqrt((double)fan_in);
        for (size_t i = 0; i < t->numel; i++) {
            double u = (double)(next_u64(&s) >> 11) / 9007199254740992.0; /* [0,1) */
            t->data[i] = (float)((2 * u - 1) * bound);
        }
    }
}
