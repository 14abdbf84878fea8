/* fm_optim.c: Adam/AdamW/SGD updates and the learning-rate schedule (see fm_optim.h). */
#include "fm_optim.h"

#include <math.h>
#include <stdlib.h>

#include "fm_error.h"

#define FM_OPTIM_MAX 16

struct fm_optim {
    fm_train_config_t cfg;
    int n;
    size_t numel[FM_OPTIM_MAX];
    int decay[FM_OPTIM_MAX];
    float *m[FM_OPTIM_MAX]; /* first moment (Adam) or velocity (SGD) */
    float *v[FM_OPTIM_MAX]; /* second moment (Adam) */
    long t;
};

fm_optim_t *fm_optim_new(const fm_train_config_t *cfg, int ntensors, const size_t *numel, const int *decay) {
    if (ntensors < 1 || ntensors > FM_OPTIM_MAX) {
        fm_fail(FM_EINVAL, "optimizer: %d tensors (at most %d)", ntensors, FM_OPTIM_MAX);
        return NULL;
    }
    fm_optim_t *o = calloc(1, sizeof *o);
    if (!o) {
        fm_fail(FM_ENOMEM, "optimizer: out of memory");
        return NULL;
    }
    o->cfg = *cfg;
    o->n = ntensors;
    for (int i = 0; i < ntensors; i++) {
        o->numel[i] = numel[i];
        o->decay[i] = decay[i];
        o->m[i] = calloc(numel[i] ? numel[i] : 1, sizeof(float));
        o->v[i] = calloc(numel[i] ? numel[i] : 1, sizeof(float));
        if (!o->m[i] || !o->v[i]) {
            fm_optim_free(o);
            fm_fail(FM_ENOMEM, "optimizer: out of memory for its moments");
            return NULL;
        }
    }
    return o;
}

void fm_optim_free(fm_optim_t *o) {
    if (!o)
        return;
    for (int i = 0; i < o->n; i++) {
        free(o->m[i]);
        free(o->v[i]);
    }
    free(o);
}

static void adam_tensor(float *p, const float *g, float *m, float *v, size_t n, float lr, float b1, float b2,
                        float c1, float c2, float eps, float l2, float decoupled) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + l2 * p[i];
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        float mhat = m[i] / c1, vhat = v[i] / c2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + decoupled * p[i]);
    }
}

static void sgd_tensor(float *p, const float *g, float *vel, size_t n, float lr, float mu, float l2) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + l2 * p[i];
        vel[i] = mu * vel[i] + gi;
        p[i] -= lr * (gi + mu * vel[i]);
    }
}

void fm_optim_step(fm_optim_t *o, float *const *params, float *const *grads, double lr) {
    const fm_train_config_t *c = &o->cfg;
    o->t++;
    /* Bias corrections in double: 1 - beta^t loses its digits in float. */
    const float c1 = (float)(1.0 - pow(c->beta1, (double)o->t));
    const float c2 = (float)(1.0 - pow(c->beta2, (double)o->t));
    for (int i = 0; i < o->n; i++) {
        float wd = o->decay[i] ? (float)c->weight_decay : 0.0f;
        switch (c->optimizer) {
        case FM_OPT_ADAM:
            adam_tensor(params[i], grads[i], o->m[i], o->v[i], o->numel[i], (float)lr, (float)c->beta1,
                        (float)c->beta2, c1, c2, (float)c->eps, wd, 0.0f);
            break;
        case FM_OPT_ADAMW:
            adam_tensor(params[i], grads[i], o->m[i], o->v[i], o->numel[i], (float)lr, (float)c->beta1,
                        (float)c->beta2, c1, c2, (float)c->eps, 0.0f, wd);
            break;
        case FM_OPT_SGD:
            sgd_tensor(params[i], grads[i], o->m[i], o->numel[i], (float)lr, (float)c->momentum, wd);
            break;
        }
    }
}

double fm_optim_lr(const fm_train_config_t *cfg, long step, long total, long per_epoch) {
    const double peak = cfg->learning_rate;
    const double warm = cfg->warmup_epochs * (double)per_epoch;
    if (warm > 0 && (double)step < warm)
        return peak * ((double)step + 1.0) / warm;
    if (cfg->lr_schedule == FM_LR_CONSTANT)
        return peak;
    /* Cosine from the peak (after warm-up) down to lr_final * peak at the last step. */
    double span = (double)total - warm - 1.0;
    double t = span > 0 ? ((double)step - warm) / span : 1.0;
    if (t > 1.0)
        t = 1.0;
    if (t < 0.0)
        t = 0.0;
    const double lo = peak * cfg->lr_final;
    return lo + (peak - lo) * 0.5 * (1.0 + cos(M_PI * t));
}
