/* test_train_grad.c: the trainer's backward passes against central finite
 * differences, on tiny networks built by the very code that trains the served
 * models (fm_net with small sizes), and its forward pass against the
 * independent reference of tests/common.
 *
 * The numeric gradient differentiates an independent double-precision
 * implementation of the loss (written here from the PyTorch definitions:
 * NCHW, conv-ReLU-pool, C,H,W flatten), so it checks layouts as well as
 * calculus. Bound, per parameter tensor: |analytic - numeric| <= 1e-3 *
 * max|numeric| + 1e-6. Why: the analytic gradient is float32, whose sums of
 * at most ~10^3 products carry relative errors around sqrt(10^3) * 6e-8 ~
 * 2e-6; the double central difference with h = 1e-5 has truncation error
 * ~h^2 ~ 1e-10 and rounding error ~1e-16/h ~ 1e-11. So 1e-3 leaves a margin
 * of ~500x over float noise, while an indexing or calculus bug gives errors of
 * the order of the gradient itself (the case `detects_a_wrong_gradient`
 * shows a 1% error in one entry is caught). Points where a ReLU or a max-pool
 * choice flips within +-h (kinks) are skipped, and must stay rare. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_gemm.h"
#include "fm_idx.h"
#include "fm_net.h"
#include "fm_ref_forward.h"
#include "fm_rng.h"
#include "fm_test.h"
#include "fm_train.h"

#define MAXP 8
#define H 1e-5
#define RTOL 1e-3
#define ATOL 1e-6

typedef struct tiny {
    fm_net_shape_t s;
    int np;
    size_t numel[MAXP];
    float *p[MAXP], *g[MAXP];
    double *pd[MAXP]; /* double copies the reference perturbs */
    int n;
    float *x;
    uint8_t *labels;
    const float *mask[2]; /* dropout factors of the hidden dense layers, or NULL */
} tiny_t;

static void tiny_init(tiny_t *t, const fm_net_shape_t *s, int n, uint64_t seed) {
    memset(t, 0, sizeof *t);
    t->s = *s;
    t->n = n;
    t->np = fm_net_param_count(s);
    fm_rng_t r;
    fm_rng_seed(&r, seed, 99);
    for (int i = 0; i < t->np; i++) {
        int fan_in;
        fm_net_param_size(s, i, &t->numel[i], &fan_in);
        t->p[i] = malloc(sizeof(float) * t->numel[i]);
        t->g[i] = malloc(sizeof(float) * t->numel[i]);
        t->pd[i] = malloc(sizeof(double) * t->numel[i]);
        /* Biases non-zero too, so their gradients are exercised away from 0. */
        double bound = fan_in ? sqrt(6.0 / fan_in) : 0.2;
        for (size_t k = 0; k < t->numel[i]; k++) {
            t->p[i][k] = (float)((2 * fm_rng_uniform(&r) - 1) * bound);
            t->pd[i][k] = t->p[i][k];
        }
    }
    size_t px = (size_t)s->side * s->side;
    t->x = malloc(sizeof(float) * px * n);
    t->labels = malloc((size_t)n);
    for (size_t k = 0; k < px * n; k++)
        t->x[k] = (float)fm_rng_uniform(&r);
    for (int i = 0; i < n; i++)
        t->labels[i] = (uint8_t)fm_rng_below(&r, (uint64_t)s->classes);
}

static void tiny_free(tiny_t *t) {
    for (int i = 0; i < t->np; i++) {
        free(t->p[i]);
        free(t->g[i]);
        free(t->pd[i]);
    }
    free(t->x);
    free(t->labels);
}

/* ---- the double-precision reference loss ---- */

static uint64_t mix(uint64_t h, uint64_t v) { return (h ^ v) * 0x100000001b3ull; }

/* y[o] = b[o] + sum_i W[o][i] x[i], optional ReLU (recorded in *sig). */
static void ref_dense(const double *x, int in, const double *w, const double *b, double *y, int out, int relu,
                      uint64_t *sig) {
    for (int o = 0; o < out; o++) {
        double acc = b[o];
        for (int i = 0; i < in; i++)
            acc += w[(size_t)o * in + i] * x[i];
        if (relu) {
            *sig = mix(*sig, acc > 0);
            acc = acc > 0 ? acc : 0;
        }
        y[o] = acc;
    }
}

/* NCHW conv3x3 pad 1, then ReLU, then 2x2 max-pool: PyTorch's order. */
static void ref_conv_relu_pool(const double *x, int cin, int hw, const double *w, const double *b, int cout, double *out,
                               uint64_t *sig) {
    double *c = malloc(sizeof(double) * cout * hw * hw);
    for (int co = 0; co < cout; co++)
        for (int y = 0; y < hw; y++)
            for (int xx = 0; xx < hw; xx++) {
                double acc = b[co];
                for (int ci = 0; ci < cin; ci++)
                    for (int ky = 0; ky < 3; ky++)
                        for (int kx = 0; kx < 3; kx++) {
                            int iy = y + ky - 1, ix = xx + kx - 1;
                            if (iy >= 0 && iy < hw && ix >= 0 && ix < hw)
                                acc += w[((co * cin + ci) * 3 + ky) * 3 + kx] * x[(ci * hw + iy) * hw + ix];
                        }
                *sig = mix(*sig, acc > 0);
                c[(co * hw + y) * hw + xx] = acc > 0 ? acc : 0;
            }
    int oh = hw / 2;
    for (int co = 0; co < cout; co++)
        for (int y = 0; y < oh; y++)
            for (int xx = 0; xx < oh; xx++) {
                const double *q = c + (co * hw + 2 * y) * hw + 2 * xx;
                double v[4] = {q[0], q[1], q[hw], q[hw + 1]};
                int a = 0;
                for (int k = 1; k < 4; k++)
                    if (v[k] > v[a])
                        a = k;
                if (v[a] > 0) /* a choice among zeros does not matter */
                    *sig = mix(*sig, (uint64_t)a + 7);
                out[(co * oh + y) * oh + xx] = v[a];
            }
    free(c);
}

static double ref_xent(const double *logits, int k, int label) {
    double mx = logits[0];
    for (int j = 1; j < k; j++)
        mx = logits[j] > mx ? logits[j] : mx;
    double sum = 0;
    for (int j = 0; j < k; j++)
        sum += exp(logits[j] - mx);
    return log(sum) - (logits[label] - mx);
}

/* Mean cross-entropy over the batch; *sig summarises every ReLU and max-pool
 * decision, so a perturbation that crosses a kink can be recognised. */
static double ref_loss(const tiny_t *t, uint64_t *sig) {
    const fm_net_shape_t *s = &t->s;
    const int px = s->side * s->side;
    double *x = malloc(sizeof(double) * px);
    double logits[256], total = 0;
    *sig = 1469598103934665603ull;
    for (int i = 0; i < t->n; i++) {
        for (int k = 0; k < px; k++)
            x[k] = t->x[(size_t)i * px + k];
        if (s->arch == FM_ARCH_MLP) {
            double *a1 = malloc(sizeof(double) * s->h1), *a2 = malloc(sizeof(double) * s->h2);
            ref_dense(x, px, t->pd[0], t->pd[1], a1, s->h1, 1, sig);
            if (t->mask[0])
                for (int k = 0; k < s->h1; k++)
                    a1[k] *= t->mask[0][(size_t)i * s->h1 + k];
            ref_dense(a1, s->h1, t->pd[2], t->pd[3], a2, s->h2, 1, sig);
            if (t->mask[1])
                for (int k = 0; k < s->h2; k++)
                    a2[k] *= t->mask[1][(size_t)i * s->h2 + k];
            ref_dense(a2, s->h2, t->pd[4], t->pd[5], logits, s->classes, 0, sig);
            free(a1);
            free(a2);
        } else {
            const int s2 = s->side / 2, s4 = s->side / 4, feat = s->c2 * s4 * s4;
            double *p1 = malloc(sizeof(double) * s->c1 * s2 * s2), *p2 = malloc(sizeof(double) * feat);
            double *h = malloc(sizeof(double) * s->hidden);
            ref_conv_relu_pool(x, 1, s->side, t->pd[0], t->pd[1], s->c1, p1, sig);
            ref_conv_relu_pool(p1, s->c1, s2, t->pd[2], t->pd[3], s->c2, p2, sig);
            ref_dense(p2, feat, t->pd[4], t->pd[5], h, s->hidden, 1, sig); /* p2 is already C,H,W */
            if (t->mask[0])
                for (int k = 0; k < s->hidden; k++)
                    h[k] *= t->mask[0][(size_t)i * s->hidden + k];
            ref_dense(h, s->hidden, t->pd[6], t->pd[7], logits, s->classes, 0, sig);
            free(p1);
            free(p2);
            free(h);
        }
        total += ref_xent(logits, s->classes, t->labels[i]);
    }
    free(x);
    return total / t->n;
}

/* ---- the check ---- */

typedef struct check_result {
    int checked, skipped, bad;
    double worst; /* largest |a - n| / (RTOL * max|n| + ATOL) seen; < 1 passes */
} check_result_t;

/* Compares t->g (analytic) with central differences of ref_loss. */
static check_result_t compare_gradients(tiny_t *t, int verbose) {
    check_result_t r = {0, 0, 0, 0.0};
    uint64_t sig0, sp, sm;
    ref_loss(t, &sig0);
    for (int i = 0; i < t->np; i++) {
        double *num = malloc(sizeof(double) * t->numel[i]);
        int *skip = calloc(t->numel[i], sizeof(int));
        double maxn = 0;
        for (size_t k = 0; k < t->numel[i]; k++) {
            double keep = t->pd[i][k];
            t->pd[i][k] = keep + H;
            double lp = ref_loss(t, &sp);
            t->pd[i][k] = keep - H;
            double lm = ref_loss(t, &sm);
            t->pd[i][k] = keep;
            num[k] = (lp - lm) / (2 * H);
            skip[k] = sp != sig0 || sm != sig0;
            if (!skip[k] && fabs(num[k]) > maxn)
                maxn = fabs(num[k]);
        }
        const double tol = RTOL * maxn + ATOL;
        for (size_t k = 0; k < t->numel[i]; k++) {
            if (skip[k]) {
                r.skipped++;
                continue;
            }
            r.checked++;
            double e = fabs((double)t->g[i][k] - num[k]);
            if (e / tol > r.worst)
                r.worst = e / tol;
            if (e > tol) {
                r.bad++;
                if (verbose && r.bad <= 10)
                    fprintf(stderr, "  tensor %d [%zu]: analytic %.9g numeric %.9g (tol %.3g)\n", i, k,
                            (double)t->g[i][k], num[k], tol);
            }
        }
        free(num);
        free(skip);
    }
    return r;
}

/* Forward + backward through fm_net (dropout p > 0 trains with a mask), then
 * returns the comparison. */
static check_result_t run_check(const fm_net_shape_t *s, int n, float dropout, uint64_t seed, int corrupt) {
    check_result_t bad = {0, 0, -1, 0};
    tiny_t t;
    tiny_init(&t, s, n, seed);
    fm_net_t *net = fm_net_new(s, n);
    if (!net) {
        tiny_free(&t);
        return bad;
    }
    fm_rng_t r;
    fm_rng_seed(&r, seed, FM_RNG_DROPOUT);
    double loss;
    int correct = 0;
    if (fm_net_forward(net, t.p, t.x, n, t.labels, dropout, &r, &loss, &correct) ||
        fm_net_backward(net, t.p, t.g, t.x, t.labels, n)) {
        fprintf(stderr, "  net failed: %s\n", fm_last_error());
        fm_net_free(net);
        tiny_free(&t);
        return bad;
    }
    t.mask[0] = fm_net_dropout_mask(net, 0);
    t.mask[1] = fm_net_dropout_mask(net, 1);
    /* The float forward and the double reference agree on the loss itself. */
    uint64_t sig;
    double ref = ref_loss(&t, &sig);
    if (fabs(ref - loss / n) > 1e-5 * (1 + fabs(ref))) {
        fprintf(stderr, "  loss: net %.9g vs reference %.9g\n", loss / n, ref);
        fm_net_free(net);
        tiny_free(&t);
        return bad;
    }
    if (corrupt) /* one entry of the first weight gradient off by 1% */
        t.g[2][corrupt] *= 1.01f;
    check_result_t res = compare_gradients(&t, !corrupt);
    fm_net_free(net);
    tiny_free(&t);
    return res;
}

static void report(const char *what, check_result_t r) {
    fprintf(stderr, "  %s: %d entries checked, %d skipped at kinks, %d outside the bound, worst %.2g of the bound\n",
            what, r.checked, r.skipped, r.bad, r.worst);
}

static fm_net_shape_t tiny_cnn(void) {
    /* 8x8 -> conv 3 ch -> pool 4x4 -> conv 4 ch -> pool 2x2 -> 16 -> 6 -> 5 */
    fm_net_shape_t s = {.arch = FM_ARCH_CNN, .side = 8, .classes = 5, .c1 = 3, .c2 = 4, .hidden = 6};
    return s;
}

static fm_net_shape_t tiny_mlp(void) {
    fm_net_shape_t s = {.arch = FM_ARCH_MLP, .side = 6, .classes = 4, .h1 = 7, .h2 = 5};
    return s;
}

static void check_ok(const char *what, check_result_t r, int total_min) {
    report(what, r);
    FM_CHECK_EQ(r.bad, 0);
    FM_CHECK_INT(r.checked, >=, total_min);
    /* Kinks are rare at random points; many skips would hollow out the check. */
    FM_CHECK_INT(r.skipped * 50, <=, r.checked);
}

static void cnn_gradients(void) {
    fm_train_threads_set(2);
    fm_net_shape_t s = tiny_cnn();
    /* 11 images: two convolution groups (8 + 3), one per thread, so the
     * accumulation across groups and the cross-thread sum are both used. */
    check_ok("cnn", run_check(&s, 11, 0.0f, 7, 0), 250);
    check_ok("cnn, one image", run_check(&s, 1, 0.0f, 8, 0), 250);
}

static void cnn_gradients_with_dropout(void) {
    fm_train_threads_set(2);
    fm_net_shape_t s = tiny_cnn();
    check_ok("cnn + dropout 0.3", run_check(&s, 11, 0.3f, 9, 0), 250);
}

static void mlp_gradients(void) {
    fm_train_threads_set(2);
    fm_net_shape_t s = tiny_mlp();
    check_ok("mlp", run_check(&s, 5, 0.0f, 11, 0), 300);
    check_ok("mlp + dropout 0.4", run_check(&s, 5, 0.4f, 12, 0), 300);
}

static void single_thread_gradients(void) {
    fm_train_threads_set(1);
    fm_net_shape_t s = tiny_cnn();
    check_ok("cnn, 1 thread", run_check(&s, 11, 0.0f, 13, 0), 250);
    fm_train_threads_set(2);
}

static void detects_a_wrong_gradient(void) {
    fm_train_threads_set(2);
    fm_net_shape_t s = tiny_cnn();
    /* Find a conv2 weight entry whose gradient is large enough that 1% of it
     * exceeds the bound's floor, then make sure the check rejects it. */
    check_result_t r = run_check(&s, 11, 0.0f, 7, 5);
    report("cnn with one entry off by 1%", r);
    FM_CHECK_INT(r.bad, >=, 1);
}

/* The trainer's forward pass on the served sizes equals the reference. */
static void forward_matches_reference(void) {
    fm_train_threads_set(2);
    fm_rng_t r;
    fm_rng_seed(&r, 5, 1);
    const int n = 37;
    uint8_t *px = malloc((size_t)n * FM_IMAGE_PIXELS);
    float *x = malloc(sizeof(float) * n * FM_IMAGE_PIXELS);
    float *ref = malloc(sizeof(float) * n * FM_NUM_CLASSES);
    for (int k = 0; k < n * FM_IMAGE_PIXELS; k++) {
        px[k] = (uint8_t)fm_rng_below(&r, 256);
        x[k] = px[k] / 255.0f;
    }
    for (int a = FM_ARCH_MLP; a <= FM_ARCH_CNN; a++) {
        fm_model_t *m = fm_model_new((fm_arch_t)a);
        FM_REQUIRE(m);
        fm_ref_random_init(m, 42 + a, 1.7);
        fm_ref_forward(m, px, n, ref, NULL);
        fm_net_shape_t s;
        fm_net_shape_of((fm_arch_t)a, &s);
        fm_net_t *net = fm_net_new(&s, n);
        FM_REQUIRE(net);
        float *p[FM_MAX_PARAMS];
        for (int i = 0; i < fm_model_param_count(m); i++)
            p[i] = fm_model_param_mut(m, i)->data;
        FM_CHECK_OK(fm_net_forward(net, p, x, n, NULL, 0.0f, NULL, NULL, NULL));
        double worst = 0;
        for (int k = 0; k < n * FM_NUM_CLASSES; k++)
            worst = fmax(worst, fabs((double)fm_net_probs(net)[k] - ref[k]));
        fprintf(stderr, "  %s: max |p_trainer - p_reference| = %.3g\n", fm_arch_name((fm_arch_t)a), worst);
        FM_CHECK(worst < 1e-4);
        fm_net_free(net);
        fm_model_free(m);
    }
    free(px);
    free(x);
    free(ref);
}

FM_TEST_MAIN({"cnn_gradients", cnn_gradients}, {"cnn_gradients_with_dropout", cnn_gradients_with_dropout},
             {"mlp_gradients", mlp_gradients}, {"single_thread_gradients", single_thread_gradients},
             {"detects_a_wrong_gradient", detects_a_wrong_gradient},
             {"forward_matches_reference", forward_matches_reference})
