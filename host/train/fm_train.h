/* fm_train.h: the CPU trainer for both architectures of fm_model.h.
 *
 * fm_train_run() initialises a model's parameters from a seed and trains
 * them on a data set with mini-batch Adam (or SGD), holding out a seeded
 * validation split. Per-epoch statistics go to an optional callback (the
 * hook behind progress lines and experiment tracking), and a caller-owned
 * stop flag, safe to set from a signal handler, ends training early with
 * FM_ECANCELED.
 *
 * Reproducibility: the same configuration, data and thread count produce
 * bit-identical weights. Different thread counts may differ in the last bits
 * (oneDNN splits its sums by thread). See docs/training.md. */
#ifndef FM_TRAIN_H
#define FM_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "fm_idx.h"
#include "fm_model.h"

typedef enum { FM_OPT_ADAM = 0, FM_OPT_ADAMW, FM_OPT_SGD } fm_optimizer_t;
typedef enum { FM_LR_CONSTANT = 0, FM_LR_COSINE } fm_lr_schedule_t;

/* Statistics of one finished epoch. */
typedef struct fm_train_epoch_stats {
    int epoch;                /* 1-based */
    int epochs;               /* planned total */
    double loss;              /* mean training cross-entropy over the epoch (training mode: dropout, augmentation) */
    double accuracy;          /* training accuracy over the epoch, same mode */
    double val_loss;          /* on the held-out split, inference mode; NAN when there is none */
    double val_accuracy;      /* NAN when there is no validation split */
    double learning_rate;     /* at the end of the epoch */
    double images_per_s;      /* training images per second (validation excluded) */
    double seconds;           /* this epoch, validation included */
    double elapsed_seconds;   /* since training started */
    double eta_seconds;       /* estimated time to finish the remaining epochs */
    size_t train_images;
    size_t val_images;
} fm_train_epoch_stats_t;

/* Called after every epoch on the training thread. A non-zero return stops
 * training as the stop flag does. */
typedef int (*fm_train_epoch_fn)(const fm_train_epoch_stats_t *stats, void *user);

typedef struct fm_train_config {
    fm_arch_t arch;
    int epochs;             /* >= 1 */
    int batch_size;         /* 1..65536 */
    double learning_rate;   /* peak learning rate */
    uint64_t seed;          /* weights, split, shuffles, dropout and augmentation all derive from it */
    size_t val_split;       /* training images held out for validation (0 = none) */
    int threads;            /* 0 = every core */
    /* optimizer */
    fm_optimizer_t optimizer;
    double beta1, beta2, eps; /* Adam/AdamW moments */
    double momentum;          /* SGD (Nesterov) */
    double weight_decay;      /* on weights, not biases: decoupled for AdamW, L2 otherwise */
    fm_lr_schedule_t lr_schedule;
    double lr_final;          /* cosine: the last step's rate as a fraction of learning_rate */
    double warmup_epochs;     /* linear warm-up from 0 over this many epochs */
    /* regularisation, training mode only (the served network is unchanged) */
    double dropout;           /* drop probability on hidden dense activations; 0 = off */
    int aug_shift;            /* random translation by up to this many pixels each way; 0 = off */
    int aug_hflip;            /* random horizontal flips */
    /* hooks */
    fm_train_epoch_fn on_epoch;
    void *user;
    /* When set (non-zero), training stops at the next batch. Safe to set from
     * a signal handler, but a signal delivered into a running oneDNN kernel
     * has been seen to corrupt the heap: prefer blocking the signals before
     * training and setting the flag from a sigwait() thread, as fmctl does. */
    volatile sig_atomic_t *stop;
} fm_train_config_t;

typedef struct fm_train_result {
    int epochs_done;
    fm_train_epoch_stats_t last; /* statistics of the last finished epoch */
    double seconds;              /* whole run */
    size_t train_images, val_images;
    int threads;                 /* thread count in effect */
} fm_train_result_t;

/* The defaults for an architecture: the settings the shipped models were
 * trained with (mlp: 40 epochs, dropout 0.2; cnn: 20 epochs, dropout 0.4,
 * 1-pixel shifts and flips; both batch 128, Adam 0.001 with a cosine schedule,
 * seed 1, 5,000 images held out, every core). */
void fm_train_config_default(fm_train_config_t *cfg, fm_arch_t arch);
/* FM_EINVAL naming the first field out of range. */
int fm_train_config_check(const fm_train_config_t *cfg);

const char *fm_optimizer_name(fm_optimizer_t opt);             /* "adam", "adamw", "sgd" */
int fm_optimizer_parse(const char *name, fm_optimizer_t *out); /* FM_EINVAL for others */
const char *fm_lr_schedule_name(fm_lr_schedule_t s);           /* "constant", "cosine" */
int fm_lr_schedule_parse(const char *name, fm_lr_schedule_t *out);

/* Overwrites every parameter of m with He/Kaiming-uniform weights drawn from
 * `seed` (bound sqrt(6/fan_in); sqrt(3/fan_in) for the output layer, which no
 * ReLU follows) and zero biases. */
void fm_train_init_params(fm_model_t *m, uint64_t seed);

/* Trains m (of cfg->arch; its parameters are re-initialised from cfg->seed)
 * on `data`. Returns 0; FM_ECANCELED when the stop flag or the callback ended
 * it (m then holds the last finished step's weights); FM_EINVAL for a bad
 * configuration or a split that leaves no training images; FM_ENOMEM. */
int fm_train_run(const fm_train_config_t *cfg, const fm_dataset_t *data, fm_model_t *m, fm_train_result_t *res);

/* Mean cross-entropy and accuracy of m on n labelled images, with the
 * trainer's own forward pass (threads as in the config; 0 = every core). */
int fm_train_evaluate(const fm_model_t *m, const uint8_t *pixels, const uint8_t *labels, size_t n, int threads,
                      double *loss, double *accuracy);

#endif /* FM_TRAIN_H */
