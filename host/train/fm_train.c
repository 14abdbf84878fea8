/* fm_train.c: the training loop: configuration, initialisation, the seeded
 * validation split and shuffles, mini-batch steps, per-epoch statistics and
 * hooks, and evaluation (see fm_train.h). */
#include "fm_train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fm_augment.h"
#include "fm_error.h"
#include "fm_gemm.h"
#include "fm_net.h"
#include "fm_optim.h"
#include "fm_rng.h"
#include "fm_time.h"

/* Images per forward pass when evaluating. */
#define FM_EVAL_BATCH 256

void fm_train_config_default(fm_train_config_t *cfg, fm_arch_t arch) {
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = arch;
    cfg->epochs = arch == FM_ARCH_CNN ? 20 : 40;
    cfg->batch_size = 128;
    cfg->learning_rate = 1e-3;
    cfg->seed = 1;
    cfg->val_split = 5000;
    cfg->threads = 0;
    cfg->optimizer = FM_OPT_ADAM;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->momentum = 0.9;
    cfg->weight_decay = 0.0;
    cfg->lr_schedule = FM_LR_COSINE;
    cfg->lr_final = 0.0;
    cfg->warmup_epochs = 0.0;
    /* The shipped models' regularisation (docs/training.md lists what was
     * tried); flips and 1-pixel shifts keep the CNN's inputs plausible garments. */
    cfg->dropout = arch == FM_ARCH_CNN ? 0.4 : 0.2;
    cfg->aug_shift = arch == FM_ARCH_CNN ? 1 : 0;
    cfg->aug_hflip = arch == FM_ARCH_CNN;
}

int fm_train_config_check(const fm_train_config_t *c) {
    if (c->arch != FM_ARCH_MLP && c->arch != FM_ARCH_CNN)
        return fm_fail(FM_EINVAL, "arch: unknown architecture %d (mlp or cnn)", (int)c->arch);
    if (c->epochs < 1 || c->epochs > 100000)
        return fm_fail(FM_EINVAL, "epochs: %d outside 1..100000", c->epochs);
    if (c->batch_size < 1 || c->batch_size > 65536)
        return fm_fail(FM_EINVAL, "batch_size: %d outside 1..65536", c->batch_size);
    if (!(c->learning_rate > 0 && c->learning_rate <= 10))
        return fm_fail(FM_EINVAL, "learning_rate: %g outside (0, 10]", c->learning_rate);
    if (c->threads < 0 || c->threads > 1024)
        return fm_fail(FM_EINVAL, "threads: %d outside 0..1024", c->threads);
    if (c->optimizer != FM_OPT_ADAM && c->optimizer != FM_OPT_ADAMW && c->optimizer != FM_OPT_SGD)
        return fm_fail(FM_EINVAL, "optimizer: unknown optimizer %d", (int)c->optimizer);
    if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
        return fm_fail(FM_EINVAL, "beta1/beta2: %g/%g outside [0, 1)", c->beta1, c->beta2);
    if (!(c->eps > 0 && c->eps < 1))
        return fm_fail(FM_EINVAL, "eps: %g outside (0, 1)", c->eps);
    if (!(c->momentum >= 0 && c->momentum < 1))
        return fm_fail(FM_EINVAL, "momentum: %g outside [0, 1)", c->momentum);
    if (!(c->weight_decay >= 0 && c->weight_decay < 1))
        return fm_fail(FM_EINVAL, "weight_decay: %g outside [0, 1)", c->weight_decay);
    if (c->lr_schedule != FM_LR_CONSTANT && c->lr_schedule != FM_LR_COSINE)
        return fm_fail(FM_EINVAL, "lr_schedule: unknown schedule %d", (int)c->lr_schedule);
    if (!(c->lr_final >= 0 && c->lr_final <= 1))
        return fm_fail(FM_EINVAL, "lr_final: %g outside [0, 1]", c->lr_final);
    if (!(c->warmup_epochs >= 0 && c->warmup_epochs <= c->epochs))
        return fm_fail(FM_EINVAL, "warmup_epochs: %g outside [0, epochs]", c->warmup_epochs);
    if (!(c->dropout >= 0 && c->dropout < 1))
        return fm_fail(FM_EINVAL, "dropout: %g outside [0, 1)", c->dropout);
    if (c->aug_shift < 0 || c->aug_shift > 8)
        return fm_fail(FM_EINVAL, "aug_shift: %d outside 0..8 pixels", c->aug_shift);
    return 0;
}

static const char *const opt_names[] = {"adam", "adamw", "sgd"};
static const char *const sched_names[] = {"constant", "cosine"};

const char *fm_optimizer_name(fm_optimizer_t opt) {
    return (unsigned)opt < sizeof opt_names / sizeof opt_names[0] ? opt_names[opt] : "?";
}

int fm_optimizer_parse(const char *name, fm_optimizer_t *out) {
    for (int i = 0; i < (int)(sizeof opt_names / sizeof opt_names[0]); i++)
        if (name && strcmp(name, opt_names[i]) == 0) {
            *out = (fm_optimizer_t)i;
            return 0;
        }
    return fm_fail(FM_EINVAL, "optimizer '%s': expected adam, adamw or sgd", name ? name : "(null)");
}

const char *fm_lr_schedule_name(fm_lr_schedule_t s) {
    return (unsigned)s < sizeof sched_names / sizeof sched_names[0] ? sched_names[s] : "?";
}

int fm_lr_schedule_parse(const char *name, fm_lr_schedule_t *out) {
    for (int i = 0; i < (int)(sizeof sched_names / sizeof sched_names[0]); i++)
        if (name && strcmp(name, sched_names[i]) == 0) {
            *out = (fm_lr_schedule_t)i;
            return 0;
        }
    return fm_fail(FM_EINVAL, "learning-rate schedule '%s': expected constant or cosine", name ? name : "(null)");
}

void fm_train_init_params(fm_model_t *m, uint64_t seed) {
    fm_net_shape_t s;
    fm_net_shape_of(fm_model_arch(m), &s);
    fm_rng_t rng;
    fm_rng_seed(&rng, seed, FM_RNG_INIT);
    const int np = fm_model_param_count(m);
    for (int i = 0; i < np; i++) {
        fm_tensor_t *t = fm_model_param_mut(m, i);
        size_t numel;
        int fan_in;
        fm_net_param_size(&s, i, &numel, &fan_in);
        if (fan_in == 0) { /* bias */
            memset(t->data, 0, sizeof(float) * t->numel);
            continue;
        }
        /* He-uniform keeps the variance of ReLU layers' activations constant;
         * the output layer (np - 2) feeds no ReLU, so it gets gain 1. */
        const double gain2 = i == np - 2 ? 1.0 : 2.0;
        const double bound = sqrt(3.0 * gain2 / (double)fan_in);
        for (size_t k = 0; k < t->numel; k++)
            t->data[k] = (float)((2.0 * fm_rng_uniform(&rng) - 1.0) * bound);
    }
}

/* Pointers to a model's tensors, in parameter order. */
static int model_params(const fm_model_t *m, float **p) {
    int np = fm_model_param_count(m);
    for (int i = 0; i < np; i++)
        p[i] = fm_model_param(m, i)->data;
    return np;
}

/* Forward passes in inference mode over n images: loss sum and hits. */
static int eval_set(fm_net_t *net, float *const *params, const uint8_t *pixels, const uint8_t *labels, const size_t *idx,
                    size_t n, int max_batch, float *x, uint8_t *lab, size_t *ibuf, volatile sig_atomic_t *stop,
                    double *loss_sum, size_t *hits) {
    *loss_sum = 0;
    *hits = 0;
    for (size_t off = 0; off < n; off += (size_t)max_batch) {
        if (stop && *stop)
            return fm_fail(FM_ECANCELED, "training stopped");
        int b = (int)(n - off < (size_t)max_batch ? n - off : (size_t)max_batch);
        for (int i = 0; i < b; i++) {
            ibuf[i] = idx ? idx[off + i] : off + (size_t)i;
            lab[i] = labels[ibuf[i]];
        }
        int rc = fm_augment_gather(pixels, ibuf, b, FM_IMAGE_SIDE, x, 0, 0, NULL);
        double l = 0;
        int c = 0;
        if (!rc)
            rc = fm_net_forward(net, params, x, b, lab, 0.0f, NULL, &l, &c);
        if (rc)
            return rc;
        *loss_sum += l;
        *hits += (size_t)c;
    }
    return 0;
}

int fm_train_evaluate(const fm_model_t *m, const uint8_t *pixels, const uint8_t *labels, size_t n, int threads,
                      double *loss, double *accuracy) {
    if (n == 0)
        return fm_fail(FM_EINVAL, "evaluate: no images");
    fm_train_threads_set(threads);
    fm_net_shape_t s;
    fm_net_shape_of(fm_model_arch(m), &s);
    fm_net_t *net = fm_net_new(&s, FM_EVAL_BATCH);
    float *x = aligned_alloc(64, sizeof(float) * FM_EVAL_BATCH * FM_IMAGE_PIXELS);
    uint8_t lab[FM_EVAL_BATCH];
    size_t ibuf[FM_EVAL_BATCH];
    int rc;
    if (!net || !x) {
        rc = net ? fm_fail(FM_ENOMEM, "evaluate: out of memory") : FM_ENOMEM;
    } else {
        float *params[FM_MAX_PARAMS];
        model_params(m, params);
        double l;
        size_t hits;
        rc = eval_set(net, params, pixels, labels, NULL, n, FM_EVAL_BATCH, x, lab, ibuf, NULL, &l, &hits);
        if (!rc) {
            if (loss)
                *loss = l / (double)n;
            if (accuracy)
                *accuracy = (double)hits / (double)n;
        }
    }
    free(x);
    fm_net_free(net);
    return rc;
}

/* Everything one run allocates, freed in one place. */
typedef struct run_state {
    fm_net_t *net;
    fm_optim_t *opt;
    float *grads[FM_MAX_PARAMS];
    float *x;
    uint8_t *lab;
    size_t *order, *ibuf;
} run_state_t;

static void run_state_free(run_state_t *st) {
    fm_net_free(st->net);
    fm_optim_free(st->opt);
    for (int i = 0; i < FM_MAX_PARAMS; i++)
        free(st->grads[i]);
    free(st->x);
    free(st->lab);
    free(st->order);
    free(st->ibuf);
}

static void shuffle(size_t *a, size_t n, fm_rng_t *rng) {
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)fm_rng_below(rng, i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

int fm_train_run(const fm_train_config_t *cfg, const fm_dataset_t *data, fm_model_t *m, fm_train_result_t *res) {
    fm_train_result_t local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    int rc = fm_train_config_check(cfg);
    if (rc)
        return rc;
    if (fm_model_arch(m) != cfg->arch)
        return fm_fail(FM_EINVAL, "train: model is %s but the configuration asks for %s",
                       fm_arch_name(fm_model_arch(m)), fm_arch_name(cfg->arch));
    if (!data || data->n == 0 || !data->images || !data->labels)
        return fm_fail(FM_EINVAL, "train: no training images");
    if (cfg->val_split >= data->n)
        return fm_fail(FM_EINVAL, "val_split: %zu held out of %zu images leaves none to train on", cfg->val_split,
                       data->n);
    for (size_t i = 0; i < data->n; i++)
        if (data->labels[i] >= FM_NUM_CLASSES)
            return fm_fail(FM_EINVAL, "train: label %u of image %zu is not a class (0..9)", data->labels[i], i);

    res->threads = fm_train_threads_set(cfg->threads);

    const size_t n_val = cfg->val_split, n_train = data->n - n_val;
    const int bsz = cfg->batch_size, max_batch = bsz > FM_EVAL_BATCH ? bsz : FM_EVAL_BATCH;
    res->train_images = n_train;
    res->val_images = n_val;

    fm_net_shape_t shape;
    fm_net_shape_of(cfg->arch, &shape);
    run_state_t st;
    memset(&st, 0, sizeof st);
    const int np = fm_model_param_count(m);
    float *params[FM_MAX_PARAMS];
    size_t numel[FM_MAX_PARAMS];
    int decay[FM_MAX_PARAMS];
    model_params(m, params);
    for (int i = 0; i < np; i++) {
        int fan_in;
        fm_net_param_size(&shape, i, &numel[i], &fan_in);
        decay[i] = fan_in > 0;
        st.grads[i] = aligned_alloc(64, (numel[i] * sizeof(float) + 63) / 64 * 64);
        if (!st.grads[i]) {
            run_state_free(&st);
            return fm_fail(FM_ENOMEM, "train: out of memory for gradients");
        }
    }
    st.net = fm_net_new(&shape, max_batch);
    st.opt = fm_optim_new(cfg, np, numel, decay);
    st.x = aligned_alloc(64, sizeof(float) * (size_t)max_batch * FM_IMAGE_PIXELS);
    st.lab = malloc((size_t)max_batch);
    st.ibuf = malloc(sizeof(size_t) * (size_t)max_batch);
    st.order = malloc(sizeof(size_t) * data->n);
    if (!st.net || !st.opt) {
        run_state_free(&st);
        return FM_ENOMEM;
    }
    if (!st.x || !st.lab || !st.ibuf || !st.order) {
        run_state_free(&st);
        return fm_fail(FM_ENOMEM, "train: out of memory for batch buffers");
    }

    fm_train_init_params(m, cfg->seed);

    /* The split: a seeded permutation of all images; the first n_val are
     * held out, the rest (order[n_val..]) are trained on. */
    fm_rng_t split_rng, shuffle_rng, drop_rng, aug_rng;
    fm_rng_seed(&split_rng, cfg->seed, FM_RNG_SPLIT);
    fm_rng_seed(&shuffle_rng, cfg->seed, FM_RNG_SHUFFLE);
    fm_rng_seed(&drop_rng, cfg->seed, FM_RNG_DROPOUT);
    fm_rng_seed(&aug_rng, cfg->seed, FM_RNG_AUGMENT);
    for (size_t i = 0; i < data->n; i++)
        st.order[i] = i;
    if (n_val > 0)
        shuffle(st.order, data->n, &split_rng);
    size_t *train_idx = st.order + n_val;
    const size_t *val_idx = st.order;

    const long per_epoch = (long)((n_train + (size_t)bsz - 1) / (size_t)bsz);
    const long total_steps = per_epoch * cfg->epochs;
    long step = 0;
    const uint64_t t_start = fm_now_us();
    double lr = cfg->learning_rate;
    rc = 0;
    for (int epoch = 1; epoch <= cfg->epochs && !rc; epoch++) {
        const uint64_t t_epoch = fm_now_us();
        shuffle(train_idx, n_train, &shuffle_rng);
        double loss_sum = 0;
        size_t hits = 0;
        for (size_t off = 0; off < n_train; off += (size_t)bsz, step++) {
            if (cfg->stop && *cfg->stop) {
                rc = fm_fail(FM_ECANCELED, "training stopped in epoch %d", epoch);
                break;
            }
            const int b = (int)(n_train - off < (size_t)bsz ? n_train - off : (size_t)bsz);
            for (int i = 0; i < b; i++)
                st.lab[i] = data->labels[train_idx[off + (size_t)i]];
            double l = 0;
            int c = 0;
            rc = fm_augment_gather(data->images, train_idx + off, b, FM_IMAGE_SIDE, st.x, cfg->aug_shift,
                                   cfg->aug_hflip, &aug_rng);
            if (!rc)
                rc = fm_net_forward(st.net, params, st.x, b, st.lab, (float)cfg->dropout, &drop_rng, &l, &c);
            if (!rc)
                rc = fm_net_backward(st.net, params, st.grads, st.x, st.lab, b);
            if (rc)
                break;
            if (!isfinite(l)) {
                rc = fm_fail(FM_EINVAL, "training diverged: loss is %g in epoch %d step %ld; lower the learning rate",
                             l, epoch, step);
                break;
            }
            lr = fm_optim_lr(cfg, step, total_steps, per_epoch);
            fm_optim_step(st.opt, params, st.grads, lr);
            loss_sum += l;
            hits += (size_t)c;
        }
        if (rc)
            break;
        const double train_s = (double)(fm_now_us() - t_epoch) / 1e6;

        fm_train_epoch_stats_t es;
        memset(&es, 0, sizeof es);
        es.epoch = epoch;
        es.epochs = cfg->epochs;
        es.loss = loss_sum / (double)n_train;
        es.accuracy = (double)hits / (double)n_train;
        es.val_loss = es.val_accuracy = NAN;
        if (n_val > 0) {
            double vl;
            size_t vh;
            rc = eval_set(st.net, params, data->images, data->labels, val_idx, n_val, max_batch, st.x, st.lab, st.ibuf,
                          cfg->stop, &vl, &vh);
            if (rc)
                break;
            es.val_loss = vl / (double)n_val;
            es.val_accuracy = (double)vh / (double)n_val;
        }
        const uint64_t now = fm_now_us();
        es.learning_rate = lr;
        es.images_per_s = train_s > 0 ? (double)n_train / train_s : 0;
        es.seconds = (double)(now - t_epoch) / 1e6;
        es.elapsed_seconds = (double)(now - t_start) / 1e6;
        es.eta_seconds = es.elapsed_seconds / epoch * (cfg->epochs - epoch);
        es.train_images = n_train;
        es.val_images = n_val;
        res->epochs_done = epoch;
        res->last = es;
        if (cfg->on_epoch && cfg->on_epoch(&es, cfg->user) != 0)
            rc = fm_fail(FM_ECANCELED, "training stopped by the epoch callback after epoch %d", epoch);
    }
    res->seconds = (double)(fm_now_us() - t_start) / 1e6;
    run_state_free(&st);
    return rc;
}
