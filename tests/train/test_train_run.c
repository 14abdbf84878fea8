/* test_train_run.c: fm_train_run end to end on the committed fixtures:
 * reproducibility (same seed -> identical bits, other seed -> other bits),
 * a short run reaching >= 75 % on the 1,000 fixture test images within
 * seconds, the per-epoch hook and the stop flag, and configuration refusals. */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_idx.h"
#include "fm_model.h"
#include "fm_test.h"
#include "fm_time.h"
#include "fm_train.h"

static fm_dataset_t train_set, test_set;
static int loaded;

/* The fixture sets, loaded once; 0 when unavailable (the case fails). */
static int fixtures(void) {
    if (!loaded) {
        char *dir = fm_test_path(fm_test_fixtures_dir(), "fashion-mnist");
        int rc = fm_dataset_load(dir, "train", &train_set);
        if (!rc)
            rc = fm_dataset_load(dir, "t10k", &test_set);
        if (rc)
            fprintf(stderr, "  fixtures: %s\n", fm_last_error());
        free(dir);
        loaded = rc ? -1 : 1;
    }
    return loaded == 1;
}

/* The first n fixture training images as a data set (shares the buffers). */
static fm_dataset_t first(size_t n) {
    fm_dataset_t d = train_set;
    d.n = n < train_set.n ? n : train_set.n;
    return d;
}

/* Trains `arch` with everything random switched on (shuffles, split,
 * dropout, shifts, flips) and returns the model (NULL on failure). */
static fm_model_t *train_once(fm_arch_t arch, uint64_t seed, int threads, size_t n, int epochs) {
    fm_train_config_t cfg;
    fm_train_config_default(&cfg, arch);
    cfg.epochs = epochs;
    cfg.batch_size = 32;
    cfg.seed = seed;
    cfg.threads = threads;
    cfg.val_split = 64;
    cfg.dropout = 0.25;
    cfg.aug_shift = 2;
    cfg.aug_hflip = 1;
    cfg.weight_decay = 1e-4;
    cfg.optimizer = FM_OPT_ADAMW;
    fm_dataset_t d = first(n);
    fm_model_t *m = fm_model_new(arch);
    if (!m)
        return NULL;
    int rc = fm_train_run(&cfg, &d, m, NULL);
    if (rc) {
        fprintf(stderr, "  fm_train_run: %s\n", fm_last_error());
        fm_model_free(m);
        return NULL;
    }
    return m;
}

/* Number of parameters whose bits differ between two models. */
static size_t differing(const fm_model_t *a, const fm_model_t *b) {
    size_t diff = 0;
    for (int i = 0; i < fm_model_param_count(a); i++) {
        const fm_tensor_t *x = fm_model_param(a, i), *y = fm_model_param(b, i);
        for (size_t k = 0; k < x->numel; k++)
            diff += memcmp(&x->data[k], &y->data[k], sizeof(float)) != 0;
    }
    return diff;
}

static void check_reproducible(fm_arch_t arch, int threads, size_t n) {
    fm_model_t *a = train_once(arch, 7, threads, n, 2);
    fm_model_t *b = train_once(arch, 7, threads, n, 2);
    fm_model_t *c = train_once(arch, 8, threads, n, 2);
    FM_REQUIRE(a && b && c);
    size_t same_seed = differing(a, b), other_seed = differing(a, c);
    fprintf(stderr, "  %s, %d thread(s): seed 7 vs 7: %zu of %zu parameters differ; seed 7 vs 8: %zu differ\n",
            fm_arch_name(arch), threads, same_seed, fm_model_numel(a), other_seed);
    FM_CHECK_EQ(same_seed, 0);
    /* Another seed changes the initial weights, so nearly every parameter. */
    FM_CHECK_INT(other_seed, >, fm_model_numel(a) / 2);
    fm_model_free(a);
    fm_model_free(b);
    fm_model_free(c);
}

static void reproducible_mlp(void) {
    FM_REQUIRE(fixtures());
    check_reproducible(FM_ARCH_MLP, 2, 600);
    check_reproducible(FM_ARCH_MLP, 1, 600);
}

static void reproducible_cnn(void) {
    FM_REQUIRE(fixtures());
    /* 600 - 64 held out = 536 images: 16 full batches and one of 24, whose
     * 3 convolution groups exercise the partial last group too. */
    check_reproducible(FM_ARCH_CNN, 2, 600);
    check_reproducible(FM_ARCH_CNN, 1, 600);
}

/* Trains on the 2,000 fixture images and evaluates on the 1,000 fixture
 * test images; returns the accuracy and the seconds taken. */
static double fixture_accuracy(fm_arch_t arch, int epochs, double *seconds) {
    fm_train_config_t cfg;
    fm_train_config_default(&cfg, arch);
    cfg.epochs = epochs;
    cfg.batch_size = 32;
    cfg.learning_rate = arch == FM_ARCH_MLP ? 2e-3 : 2e-3;
    cfg.val_split = 200;
    /* One thread: on a shared machine two spinning OpenMP threads can be many
     * times slower than one, which would make the time bound below flaky. */
    cfg.threads = 1;
    /* Plain training: this checks the learning machinery, not the recipe. */
    cfg.dropout = 0;
    cfg.aug_shift = 0;
    cfg.aug_hflip = 0;
    fm_model_t *m = fm_model_new(arch);
    if (!m)
        return -1;
    fm_train_result_t r;
    uint64_t t0 = fm_now_us();
    double loss = 0, acc = -1;
    if (fm_train_run(&cfg, &train_set, m, &r) != 0 ||
        fm_train_evaluate(m, test_set.images, test_set.labels, test_set.n, 1, &loss, &acc) != 0)
        fprintf(stderr, "  %s\n", fm_last_error());
    *seconds = (double)(fm_now_us() - t0) / 1e6;
    fprintf(stderr, "  %s: %d epochs on %zu images: val %.2f %%, test %.2f %% (loss %.3f) in %.1f s\n",
            fm_arch_name(arch), epochs, r.train_images, 100 * r.last.val_accuracy, 100 * acc, loss, *seconds);
    fm_model_free(m);
    return acc;
}

static void fixture_training_reaches_75(void) {
    FM_REQUIRE(fixtures());
    FM_REQUIRE(train_set.n == 2000 && test_set.n == 1000);
    double s_mlp, s_cnn;
    double mlp = fixture_accuracy(FM_ARCH_MLP, 10, &s_mlp);
    double cnn = fixture_accuracy(FM_ARCH_CNN, 6, &s_cnn);
    FM_CHECK(mlp >= 0.75);
    FM_CHECK(cnn >= 0.75);
    /* Durations are printed, not asserted: speed is the benchmark's business
     * (benchmarks/bench_train.c); CTest's timeout catches a run that hangs. */
    (void)s_mlp;
    (void)s_cnn;
}

/* ---- hooks ---- */

typedef struct hook_log {
    int calls, last_epoch, bad;
    int stop_after;                   /* callback returns non-zero after this epoch (0 = never) */
    volatile sig_atomic_t *flag;      /* set after epoch `flag_after` */
    int flag_after;
} hook_log_t;

static int on_epoch(const fm_train_epoch_stats_t *s, void *user) {
    hook_log_t *h = user;
    h->calls++;
    if (s->epoch != h->last_epoch + 1 || s->epochs != 3 || !(s->loss > 0) || !(s->accuracy >= 0 && s->accuracy <= 1) ||
        !(s->val_accuracy >= 0 && s->val_accuracy <= 1) || !(s->images_per_s > 0) || !(s->seconds > 0) ||
        !(s->eta_seconds >= 0) || s->train_images + s->val_images != 500 || s->val_images != 100)
        h->bad++;
    if (s->epoch == s->epochs && s->eta_seconds != 0)
        h->bad++;
    h->last_epoch = s->epoch;
    if (h->flag && s->epoch == h->flag_after)
        *h->flag = 1;
    return h->stop_after && s->epoch >= h->stop_after;
}

static void small_config(fm_train_config_t *cfg, hook_log_t *h) {
    fm_train_config_default(cfg, FM_ARCH_MLP);
    cfg->epochs = 3;
    cfg->batch_size = 50;
    cfg->val_split = 100;
    cfg->on_epoch = on_epoch;
    cfg->user = h;
}

static void epoch_hook_sees_every_epoch(void) {
    FM_REQUIRE(fixtures());
    hook_log_t h = {0};
    fm_train_config_t cfg;
    small_config(&cfg, &h);
    fm_dataset_t d = first(500);
    fm_model_t *m = fm_model_new(FM_ARCH_MLP);
    fm_train_result_t r;
    FM_CHECK_OK(fm_train_run(&cfg, &d, m, &r));
    FM_CHECK_EQ(h.calls, 3);
    FM_CHECK_EQ(h.bad, 0);
    FM_CHECK_EQ(r.epochs_done, 3);
    FM_CHECK_EQ(r.train_images, 400);
    fm_model_free(m);
}

static void stop_flag_ends_training(void) {
    FM_REQUIRE(fixtures());
    volatile sig_atomic_t stop = 0;
    hook_log_t h = {0};
    h.flag = &stop;
    h.flag_after = 1;
    fm_train_config_t cfg;
    small_config(&cfg, &h);
    cfg.stop = &stop;
    fm_dataset_t d = first(500);
    fm_model_t *m = fm_model_new(FM_ARCH_MLP);
    fm_train_result_t r;
    FM_CHECK_ERR(fm_train_run(&cfg, &d, m, &r), FM_ECANCELED);
    FM_CHECK_EQ(r.epochs_done, 1);
    FM_CHECK_EQ(h.calls, 1);
    /* A flag already set stops before the first step. */
    h = (hook_log_t){0};
    stop = 1;
    FM_CHECK_ERR(fm_train_run(&cfg, &d, m, &r), FM_ECANCELED);
    FM_CHECK_EQ(r.epochs_done, 0);
    FM_CHECK_EQ(h.calls, 0);
    fm_model_free(m);
}

static void callback_can_stop(void) {
    FM_REQUIRE(fixtures());
    hook_log_t h = {0};
    h.stop_after = 2;
    fm_train_config_t cfg;
    small_config(&cfg, &h);
    fm_dataset_t d = first(500);
    fm_model_t *m = fm_model_new(FM_ARCH_MLP);
    fm_train_result_t r;
    FM_CHECK_ERR(fm_train_run(&cfg, &d, m, &r), FM_ECANCELED);
    FM_CHECK_EQ(r.epochs_done, 2);
    fm_model_free(m);
}

static void bad_configurations_are_refused(void) {
    FM_REQUIRE(fixtures());
    fm_train_config_t good, c;
    fm_train_config_default(&good, FM_ARCH_MLP);
    FM_CHECK_OK(fm_train_config_check(&good));
    fm_model_t *m = fm_model_new(FM_ARCH_MLP), *cnn = fm_model_new(FM_ARCH_CNN);
    fm_dataset_t d = first(100);
#define REFUSE(change, needle)                                   \
    do {                                                         \
        c = good;                                                \
        change;                                                  \
        FM_CHECK_ERR(fm_train_run(&c, &d, m, NULL), FM_EINVAL);  \
        FM_CHECK_CONTAINS(fm_last_error(), needle);              \
    } while (0)
    REFUSE(c.epochs = 0, "epochs");
    REFUSE(c.batch_size = 0, "batch_size");
    REFUSE(c.learning_rate = -1, "learning_rate");
    REFUSE(c.learning_rate = NAN, "learning_rate");
    REFUSE(c.dropout = 1.0, "dropout");
    REFUSE(c.beta2 = 1.0, "beta");
    REFUSE(c.aug_shift = 20, "aug_shift");
    REFUSE(c.threads = -1, "threads");
    REFUSE(c.val_split = 100, "val_split"); /* all 100 held out */
    REFUSE(c.arch = (fm_arch_t)7, "arch");
#undef REFUSE
    c = good;
    c.val_split = 10;
    FM_CHECK_ERR(fm_train_run(&c, &d, cnn, NULL), FM_EINVAL); /* config says mlp, model is cnn */
    FM_CHECK_CONTAINS(fm_last_error(), "cnn");
    fm_optimizer_t o;
    fm_lr_schedule_t s;
    FM_CHECK_OK(fm_optimizer_parse("adamw", &o));
    FM_CHECK_EQ(o, FM_OPT_ADAMW);
    FM_CHECK_ERR(fm_optimizer_parse("rmsprop", &o), FM_EINVAL);
    FM_CHECK_OK(fm_lr_schedule_parse("constant", &s));
    FM_CHECK_ERR(fm_lr_schedule_parse("step", &s), FM_EINVAL);
    fm_model_free(m);
    fm_model_free(cnn);
}

FM_TEST_MAIN({"reproducible_mlp", reproducible_mlp}, {"reproducible_cnn", reproducible_cnn},
             {"fixture_training_reaches_75", fixture_training_reaches_75},
             {"epoch_hook_sees_every_epoch", epoch_hook_sees_every_epoch},
             {"stop_flag_ends_training", stop_flag_ends_training}, {"callback_can_stop", callback_can_stop},
             {"bad_configurations_are_refused", bad_configurations_are_refused})
