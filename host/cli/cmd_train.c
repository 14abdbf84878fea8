/* cmd_train.c: `fmctl train`: trains an MLP or CNN on the CPU, prints a line
 * per epoch, and writes the model directory with its training parameters,
 * metrics, data digest and source commit in the sidecar.
 *
 * With a tracking server (--mlflow URI or MLFLOW_TRACKING_URI) the run is
 * logged to MLflow as well (train_tracking.h); tracking problems never stop
 * training and are summarised at the end.
 *
 * Exit codes: 0 written, 1 failure, 2 usage error, 130 interrupted (SIGINT
 * or SIGTERM: training stops at the next batch and no model is written). */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_cli.h"
#include "fm_error.h"
#include "fm_idx.h"
#include "fm_model.h"
#include "fm_train.h"
#include "train_tracking.h"

#ifndef FM_SOURCE_COMMIT_DEFAULT
#define FM_SOURCE_COMMIT_DEFAULT "unknown"
#endif

#define EXIT_INTERRUPTED 130
/* Seeds are stored as JSON numbers, exact only up to 2^53. */
#define MAX_SEED 9007199254740991.0

/* Everything the command line can set; `given` marks what the user passed,
 * so the architecture's defaults fill in the rest. */
typedef struct train_args {
    const char *arch, *out, *data, *name, *version, *optimizer, *lr_schedule;
    const char *mlflow, *experiment, *run_name, *registered_model, *alias;
    double epochs, batch_size, learning_rate, seed, val_split, threads;
    double mlflow_timeout, mlflow_flush;
    double weight_decay, momentum, lr_final, warmup_epochs, dropout, aug_shift;
    int aug_flip, no_aug_flip, quiet;
    unsigned char given[64];
} train_args_t;

typedef enum { OPT_STR, OPT_INT, OPT_NUM, OPT_FLAG } opt_kind_t;

/* One row per option: the usage text and the parser are generated from it. */
typedef struct train_opt {
    const char *name;
    opt_kind_t kind;
    size_t offset;
    double lo, hi;
    const char *metavar;
    const char *help;
} train_opt_t;

#define A(field) offsetof(train_args_t, field)
static const train_opt_t opts_table[] = {
    {"arch", OPT_STR, A(arch), 0, 0, "mlp|cnn", "architecture (required): mlp = v1, cnn = v2"},
    {"out", OPT_STR, A(out), 0, 0, "DIR", "model directory to write (required)"},
    {"data", OPT_STR, A(data), 0, 0, "DIR", "Fashion-MNIST directory (default: $FM_DATA)"},
    {"epochs", OPT_INT, A(epochs), 1, 100000, "N", "passes over the training images (mlp 40, cnn 20)"},
    {"batch-size", OPT_INT, A(batch_size), 1, 65536, "B", "images per step (128)"},
    {"learning-rate", OPT_NUM, A(learning_rate), 1e-9, 10, "LR", "peak learning rate (0.001)"},
    {"seed", OPT_INT, A(seed), 0, MAX_SEED, "S", "seed of weights, split, shuffles, dropout, augmentation (1)"},
    {"val-split", OPT_INT, A(val_split), 0, 1e9, "N", "training images held out for validation (5000)"},
    {"threads", OPT_INT, A(threads), 0, 1024, "T", "threads, 0 = every core (0); equal counts reproduce bits"},
    {"name", OPT_STR, A(name), 0, 0, "NAME", "model name (fashion-mnist-mlp / fashion-mnist-cnn)"},
    {"version", OPT_STR, A(version), 0, 0, "V", "model version (v1 for mlp, v2 for cnn)"},
    {"optimizer", OPT_STR, A(optimizer), 0, 0, "adam|adamw|sgd", "optimizer (adam)"},
    {"weight-decay", OPT_NUM, A(weight_decay), 0, 0.999, "W", "weight decay on weights (0; decoupled for adamw)"},
    {"momentum", OPT_NUM, A(momentum), 0, 0.999, "M", "SGD Nesterov momentum (0.9)"},
    {"lr-schedule", OPT_STR, A(lr_schedule), 0, 0, "cosine|constant", "learning-rate schedule (cosine)"},
    {"lr-final", OPT_NUM, A(lr_final), 0, 1, "F", "cosine: last rate as a fraction of the peak (0)"},
    {"warmup-epochs", OPT_NUM, A(warmup_epochs), 0, 100000, "E", "linear warm-up length in epochs (0)"},
    {"dropout", OPT_NUM, A(dropout), 0, 0.95, "P", "dropout on hidden dense activations (mlp 0.2, cnn 0.4)"},
    {"augment-shift", OPT_INT, A(aug_shift), 0, 8, "PX", "random shifts up to PX pixels (mlp 0, cnn 1)"},
    {"augment-flip", OPT_FLAG, A(aug_flip), 0, 0, NULL, "random horizontal flips (mlp off, cnn on)"},
    {"no-augment-flip", OPT_FLAG, A(no_aug_flip), 0, 0, NULL, "no random flips"},
    {"quiet", OPT_FLAG, A(quiet), 0, 0, NULL, "no per-epoch lines"},
    {"mlflow", OPT_STR, A(mlflow), 0, 0, "URI", "log the run to this MLflow tracking server (default: $MLFLOW_TRACKING_URI)"},
    {"experiment", OPT_STR, A(experiment), 0, 0, "NAME", "MLflow experiment, created when missing (fashion-mnist)"},
    {"run-name", OPT_STR, A(run_name), 0, 0, "NAME", "MLflow run name (NAME-VERSION of the model)"},
    {"registered-model", OPT_STR, A(registered_model), 0, 0, "NAME", "MLflow registered model (the model name)"},
    {"alias", OPT_STR, A(alias), 0, 0, "ALIAS", "MLflow alias for the new version, e.g. champion, challenger (none)"},
    {"mlflow-timeout", OPT_NUM, A(mlflow_timeout), 0.1, 600, "S", "seconds per MLflow call (10)"},
    {"mlflow-flush", OPT_NUM, A(mlflow_flush), 0, 3600, "S", "send epoch metrics at most every S seconds (5)"},
};
#undef A
#define NOPTS ((int)(sizeof opts_table / sizeof opts_table[0]))

static void usage(FILE *f) {
    fprintf(f, "usage: fmctl train --arch mlp|cnn --out DIR [options]\n"
               "  Trains a model on the CPU from the training images in --data or $FM_DATA and writes\n"
               "  DIR/model.safetensors and DIR/model.json. Options (defaults in parentheses):\n");
    for (int i = 0; i < NOPTS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", opts_table[i].name, opts_table[i].metavar ? " " : "",
                 opts_table[i].metavar ? opts_table[i].metavar : "");
        fprintf(f, "    %-32s %s\n", left, opts_table[i].help);
    }
    fprintf(f, "  With --mlflow or MLFLOW_TRACKING_URI the run, its metrics, the model files, a registered model\n"
               "  version and the alias go to MLflow; tracking problems never stop training (summary at the end).\n");
    fprintf(f, "  Exit status: 0 model written, 1 failure, 2 usage error, 130 interrupted (no model written).\n");
}

/* Prints "fmctl train: <problem>" and the hint, and returns the usage exit code. */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fmctl train: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(fmctl train --help lists the options)\n");
    va_end(ap);
    return 2;
}

/* MLflow's alias rules (validation._validate_model_alias_name), checked
 * before training rather than after it. */
static int alias_ok(const char *a) {
    size_t n = strlen(a);
    if (n == 0 || n > 255 || strcasecmp(a, "latest") == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)a[i]) && a[i] != '_' && a[i] != '-')
            return 0;
    if ((a[0] == 'v' || a[0] == 'V') && n > 1 && strspn(a + 1, "0123456789") == n - 1)
        return 0;
    return 1;
}

/* Parses argv into args; 0, or 2 after printing the problem (-1 for --help). */
static int parse_args(int argc, char **argv, train_args_t *args) {
    struct option lopts[NOPTS + 2];
    for (int i = 0; i < NOPTS; i++)
        lopts[i] = (struct option){opts_table[i].name, opts_table[i].kind == OPT_FLAG ? no_argument : required_argument,
                                   NULL, 1000 + i};
    lopts[NOPTS] = (struct option){"help", no_argument, NULL, 'h'};
    lopts[NOPTS + 1] = (struct option){0, 0, 0, 0};
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, ":h", lopts, NULL)) != -1) {
        if (c == 'h')
            return -1;
        if (c == '?')
            return usage_error("unknown option '%s'", argv[optind - 1]);
        if (c == ':')
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        const train_opt_t *o = &opts_table[c - 1000];
        char *field = (char *)args + o->offset;
        if (args->given[c - 1000])
            return usage_error("--%s given twice", o->name);
        args->given[c - 1000] = 1;
        if (o->kind == OPT_FLAG) {
            *(int *)field = 1;
            continue;
        }
        if (o->kind == OPT_STR) {
            if (!*optarg)
                return usage_error("--%s needs a non-empty value", o->name);
            *(const char **)field = optarg;
            continue;
        }
        char *end;
        errno = 0;
        double v = strtod(optarg, &end);
        int bad = errno != 0 || end == optarg || *end || !isfinite(v) || v < o->lo || v > o->hi ||
                  (o->kind == OPT_INT && v != floor(v));
        if (bad) {
            char range[96];
            if (o->kind == OPT_INT)
                snprintf(range, sizeof range, "an integer in %.0f..%.0f", o->lo, o->hi);
            else
                snprintf(range, sizeof range, "a number in %g..%g", o->lo, o->hi);
            return usage_error("--%s must be %s, got '%s'", o->name, range, optarg);
        }
        *(double *)field = v;
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!args->arch)
        return usage_error("--arch is required (mlp or cnn)");
    if (!args->out)
        return usage_error("--out is required (the model directory to write)");
    if (args->alias && !alias_ok(args->alias))
        return usage_error("--alias '%s': MLflow aliases are letters, digits, '_' and '-', and neither 'latest' nor "
                           "v<number> (those name versions)",
                           args->alias);
    return 0;
}

static int was_given(const train_args_t *a, size_t offset) {
    for (int i = 0; i < NOPTS; i++)
        if (opts_table[i].offset == offset)
            return a->given[i];
    return 0;
}

/* The defaults of the architecture, overridden by what the user gave. */
static int build_config(const train_args_t *a, fm_train_config_t *cfg) {
    fm_arch_t arch;
    if (fm_arch_parse(a->arch, &arch) != 0)
        return usage_error("--arch must be mlp or cnn, got '%s'", a->arch);
    fm_train_config_default(cfg, arch);
#define GIVEN(field) was_given(a, offsetof(train_args_t, field))
    if (GIVEN(epochs))
        cfg->epochs = (int)a->epochs;
    if (GIVEN(batch_size))
        cfg->batch_size = (int)a->batch_size;
    if (GIVEN(learning_rate))
        cfg->learning_rate = a->learning_rate;
    if (GIVEN(seed))
        cfg->seed = (uint64_t)a->seed;
    if (GIVEN(val_split))
        cfg->val_split = (size_t)a->val_split;
    if (GIVEN(threads))
        cfg->threads = (int)a->threads;
    if (GIVEN(weight_decay))
        cfg->weight_decay = a->weight_decay;
    if (GIVEN(momentum))
        cfg->momentum = a->momentum;
    if (GIVEN(lr_final))
        cfg->lr_final = a->lr_final;
    if (GIVEN(warmup_epochs))
        cfg->warmup_epochs = a->warmup_epochs;
    if (GIVEN(dropout))
        cfg->dropout = a->dropout;
    if (GIVEN(aug_shift))
        cfg->aug_shift = (int)a->aug_shift;
    if (GIVEN(aug_flip) && GIVEN(no_aug_flip))
        return usage_error("--augment-flip and --no-augment-flip contradict each other");
    if (GIVEN(aug_flip))
        cfg->aug_hflip = 1;
    if (GIVEN(no_aug_flip))
        cfg->aug_hflip = 0;
#undef GIVEN
    if (a->optimizer && fm_optimizer_parse(a->optimizer, &cfg->optimizer) != 0)
        return usage_error("--optimizer must be adam, adamw or sgd, got '%s'", a->optimizer);
    if (a->lr_schedule && fm_lr_schedule_parse(a->lr_schedule, &cfg->lr_schedule) != 0)
        return usage_error("--lr-schedule must be cosine or constant, got '%s'", a->lr_schedule);
    if (fm_train_config_check(cfg) != 0)
        return usage_error("%s", fm_last_error());
    return 0;
}

/* ---- interruption ----
 * SIGINT and SIGTERM are blocked in the main thread before any compute
 * thread exists (OpenMP's and oneDNN's threads inherit the mask) and taken
 * with sigwait() by a watcher thread. No signal is then ever delivered into a
 * running GEMM kernel: with asynchronous handlers, a signal landing in
 * oneDNN's sgemm corrupted the heap about once in ten interrupted runs on
 * a test machine (AMX-capable CPU, kernel 6.18). The watcher sets the stop
 * flag the trainer polls before every batch; a second signal exits at once. */

static volatile sig_atomic_t stop_requested;

typedef struct sig_watch {
    pthread_t thread;
    sigset_t set;
    int running;
} sig_watch_t;

static void *watch_main(void *arg) {
    sig_watch_t *w = arg;
    for (;;) {
        int sig = 0;
        if (sigwait(&w->set, &sig) != 0)
            continue;
        if (stop_requested) {
            static const char msg[] = "fmctl train: second signal, quitting now; no model written\n";
            if (write(2, msg, sizeof msg - 1) < 0) {
                /* nothing more to say */
            }
            _exit(EXIT_INTERRUPTED);
        }
        stop_requested = 1;
        fprintf(stderr, "fmctl train: %s received, stopping at the next batch (again to quit at once)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
    }
    return NULL;
}

static int watch_signals(sig_watch_t *w) {
    sigemptyset(&w->set);
    sigaddset(&w->set, SIGINT);
    sigaddset(&w->set, SIGTERM);
    int err = pthread_sigmask(SIG_BLOCK, &w->set, NULL);
    if (!err)
        err = pthread_create(&w->thread, NULL, watch_main, w);
    w->running = !err;
    return err ? fm_fail(FM_EINTERNAL, "cannot watch for signals: %s", strerror(err)) : 0;
}

static void unwatch_signals(sig_watch_t *w) {
    if (!w->running)
        return;
    pthread_cancel(w->thread); /* sigwait is a cancellation point */
    pthread_join(w->thread, NULL);
    w->running = 0;
}

/* ---- progress ---- */

static void format_duration(double s, char *buf, size_t len) {
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, len, "?");
    else if (s < 60)
        snprintf(buf, len, "%.0fs", s);
    else if (s < 3600)
        snprintf(buf, len, "%dm%02ds", (int)s / 60, (int)s % 60);
    else
        snprintf(buf, len, "%dh%02dm", (int)s / 3600, ((int)s % 3600) / 60);
}

static void print_epoch(const fm_train_epoch_stats_t *s) {
    char eta[32], val[64] = "";
    format_duration(s->eta_seconds, eta, sizeof eta);
    if (s->val_images)
        snprintf(val, sizeof val, "  val_loss %.4f  val_acc %6.2f%%", s->val_loss, 100.0 * s->val_accuracy);
    printf("epoch %*d/%d  loss %.4f  acc %6.2f%%%s  lr %.2e  %6.0f img/s  %5.1fs  eta %s\n",
           s->epochs >= 100 ? 3 : s->epochs >= 10 ? 2 : 1, s->epoch, s->epochs, s->loss, 100.0 * s->accuracy, val,
           s->learning_rate, s->images_per_s, s->seconds, eta);
    fflush(stdout);
}

/* What the trainer's per-epoch hook drives: the progress line and tracking. */
typedef struct epoch_hook {
    int quiet;
    train_tracking_t *tracking;
} epoch_hook_t;

static int on_epoch(const fm_train_epoch_stats_t *s, void *user) {
    epoch_hook_t *h = user;
    if (!h->quiet)
        print_epoch(s);
    train_tracking_epoch(h->tracking, s);
    return 0;
}

/* ---- the model directory ---- */

/* "train-images-idx3-ubyte.gz,train-labels-idx1-ubyte.gz" from the images path. */
static void data_files(const char *images_path, char *buf, size_t len) {
    const char *base = strrchr(images_path, '/');
    base = base ? base + 1 : images_path;
    char labels[512];
    snprintf(labels, sizeof labels, "%s", base);
    char *p = strstr(labels, "images-idx3");
    if (p)
        memcpy(p, "labels-idx1", 11);
    snprintf(buf, len, "%s,%s", base, labels);
}

static const char *source_commit(void) {
    const char *env = getenv("FM_SOURCE_COMMIT");
    return env && *env ? env : FM_SOURCE_COMMIT_DEFAULT;
}

static int fill_metadata(fm_model_t *m, const train_args_t *a, const fm_train_config_t *cfg,
                         const fm_train_result_t *r, const fm_dataset_t *train, const fm_dataset_t *test,
                         double test_loss, double test_acc) {
    char files[1100];
    int rc = 0;
    const char *t = "training", *mx = "metrics", *d = "training_data";
    rc |= fm_model_meta_set_string(m, NULL, "source_commit", source_commit());
    rc |= fm_model_meta_set_number(m, t, "epochs", cfg->epochs);
    rc |= fm_model_meta_set_number(m, t, "batch_size", cfg->batch_size);
    rc |= fm_model_meta_set_number(m, t, "learning_rate", cfg->learning_rate);
    rc |= fm_model_meta_set_number(m, t, "seed", (double)cfg->seed);
    rc |= fm_model_meta_set_string(m, t, "optimizer", fm_optimizer_name(cfg->optimizer));
    if (cfg->optimizer == FM_OPT_SGD) {
        rc |= fm_model_meta_set_number(m, t, "momentum", cfg->momentum);
    } else {
        rc |= fm_model_meta_set_number(m, t, "beta1", cfg->beta1);
        rc |= fm_model_meta_set_number(m, t, "beta2", cfg->beta2);
        rc |= fm_model_meta_set_number(m, t, "eps", cfg->eps);
    }
    rc |= fm_model_meta_set_number(m, t, "weight_decay", cfg->weight_decay);
    rc |= fm_model_meta_set_string(m, t, "lr_schedule", fm_lr_schedule_name(cfg->lr_schedule));
    rc |= fm_model_meta_set_number(m, t, "lr_final", cfg->lr_final);
    rc |= fm_model_meta_set_number(m, t, "warmup_epochs", cfg->warmup_epochs);
    rc |= fm_model_meta_set_number(m, t, "dropout", cfg->dropout);
    rc |= fm_model_meta_set_number(m, t, "augment_shift", cfg->aug_shift);
    rc |= fm_model_meta_set_number(m, t, "augment_flip", cfg->aug_hflip);
    rc |= fm_model_meta_set_number(m, t, "validation_split", (double)r->val_images);
    rc |= fm_model_meta_set_number(m, t, "train_images", (double)r->train_images);
    rc |= fm_model_meta_set_number(m, t, "threads", r->threads);
    rc |= fm_model_meta_set_number(m, t, "seconds", round(r->seconds * 10) / 10);
    rc |= fm_model_meta_set_string(m, t, "trainer", "fmctl train (host/train, CPU, oneDNN sgemm)");
    rc |= fm_model_meta_set_number(m, mx, "train_loss", r->last.loss);
    rc |= fm_model_meta_set_number(m, mx, "train_accuracy", r->last.accuracy);
    if (r->val_images) {
        rc |= fm_model_meta_set_number(m, mx, "val_loss", r->last.val_loss);
        rc |= fm_model_meta_set_number(m, mx, "val_accuracy", r->last.val_accuracy);
    }
    if (test) {
        rc |= fm_model_meta_set_number(m, mx, "test_loss", test_loss);
        rc |= fm_model_meta_set_number(m, mx, "test_accuracy", test_acc);
        rc |= fm_model_meta_set_number(m, mx, "test_images", (double)test->n);
    }
    data_files(train->images_path, files, sizeof files);
    rc |= fm_model_meta_set_string(m, d, "sha256", train->sha256);
    rc |= fm_model_meta_set_string(m, d, "files", files);
    rc |= fm_model_meta_set_number(m, d, "images", (double)train->n);
    (void)a;
    return rc ? fm_fail(FM_EINVAL, "recording the training metadata: %s", fm_last_error()) : 0;
}

/* Fails early (before hours of training) when DIR cannot be created or written. */
static int check_out_dir(const char *dir, int *created) {
    *created = 0;
    if (mkdir(dir, 0755) == 0)
        *created = 1;
    else if (errno != EEXIST)
        return fm_fail(FM_EIO, "%s: cannot create the model directory: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return fm_fail(FM_EIO, "%s: not a directory", dir);
    if (access(dir, W_OK) != 0)
        return fm_fail(FM_EIO, "%s: not writable: %s", dir, strerror(errno));
    return 0;
}

int fm_cmd_train(int argc, char **argv) {
    train_args_t args;
    memset(&args, 0, sizeof args);
    int prc = parse_args(argc, argv, &args);
    if (prc == -1) {
        usage(stdout);
        return 0;
    }
    if (prc)
        return prc;
    fm_train_config_t cfg;
    if ((prc = build_config(&args, &cfg)) != 0)
        return prc;
    const char *data_dir = fm_data_dir(args.data);
    if (!data_dir)
        return fm_cli_fail("train");

    fm_dataset_t train = {0}, test = {0};
    fm_model_t *m = NULL;
    train_tracking_t *tracking = NULL;
    int have_test = 0, created = 0, rc = 1;
    sig_watch_t watch = {0};
    stop_requested = 0;
    if (watch_signals(&watch) != 0) {
        fm_cli_fail("train");
        goto done;
    }
    if (fm_dataset_load(data_dir, "train", &train) != 0) {
        fm_cli_fail("train: loading the training data");
        goto done;
    }
    if (cfg.val_split >= train.n) {
        fprintf(stderr, "fmctl train: --val-split %zu leaves none of the %zu training images to train on\n",
                cfg.val_split, train.n);
        rc = 2;
        goto done;
    }
    /* The test set is optional: metrics.test_accuracy is recorded when it is there. */
    int trc = fm_dataset_load(data_dir, "t10k", &test);
    if (trc == 0)
        have_test = 1;
    else if (trc != FM_ENOTFOUND) {
        fm_cli_fail("train: loading the test data");
        goto done;
    }
    if (check_out_dir(args.out, &created) != 0) {
        fm_cli_fail("train");
        goto done;
    }
    m = fm_model_new(cfg.arch);
    if (!m) {
        fm_cli_fail("train");
        goto done;
    }
    int is_mlp = cfg.arch == FM_ARCH_MLP;
    fm_model_set_identity(m, args.name ? args.name : is_mlp ? "fashion-mnist-mlp" : "fashion-mnist-cnn",
                          args.version ? args.version : is_mlp ? "v1" : "v2");

    cfg.stop = &stop_requested;
    const char *mlflow_uri = args.mlflow ? args.mlflow : getenv("MLFLOW_TRACKING_URI");
    if (mlflow_uri && *mlflow_uri) {
        train_tracking_opts_t to = {
            .uri = mlflow_uri,
            .experiment = args.experiment ? args.experiment : "fashion-mnist",
            .run_name = args.run_name,
            .registered_model = args.registered_model,
            .alias = args.alias,
            .timeout_s = was_given(&args, offsetof(train_args_t, mlflow_timeout)) ? args.mlflow_timeout : 10,
            .flush_interval_s = was_given(&args, offsetof(train_args_t, mlflow_flush)) ? args.mlflow_flush : 5,
        };
        tracking = train_tracking_start(&to, &cfg, &train, m, source_commit());
        if (!tracking) {
            fm_fail(FM_ENOMEM, "MLflow tracking");
            fm_cli_fail("train");
            goto done;
        }
    }
    epoch_hook_t hook = {.quiet = args.quiet, .tracking = tracking};
    cfg.on_epoch = on_epoch;
    cfg.user = &hook;
    if (!args.quiet) {
        printf("training %s %s (%s) on %zu images from %s (%zu held out for validation)\n", fm_model_name(m),
               fm_model_version(m), fm_arch_summary(cfg.arch), train.n - cfg.val_split, train.images_path,
               cfg.val_split);
        printf("  %d epochs, batch %d, %s lr %g (%s), seed %llu, dropout %g, shift %d, flip %s\n", cfg.epochs,
               cfg.batch_size, fm_optimizer_name(cfg.optimizer), cfg.learning_rate,
               fm_lr_schedule_name(cfg.lr_schedule), (unsigned long long)cfg.seed, cfg.dropout, cfg.aug_shift,
               cfg.aug_hflip ? "on" : "off");
        fflush(stdout);
    }
    fm_train_result_t res = {0};
    int trc2 = fm_train_run(&cfg, &train, m, &res);
    if (trc2 == FM_ECANCELED || stop_requested) {
        fprintf(stderr, "fmctl train: interrupted after %d of %d epochs; no model written\n", res.epochs_done,
                cfg.epochs);
        char why[96];
        snprintf(why, sizeof why, "interrupted after %d of %d epochs", res.epochs_done, cfg.epochs);
        train_tracking_end(tracking, "KILLED", why);
        rc = EXIT_INTERRUPTED;
        goto done;
    }
    if (trc2 != 0) {
        fm_cli_fail("train");
        train_tracking_end(tracking, "FAILED", fm_last_error());
        goto done;
    }
    double test_loss = 0, test_acc = 0;
    if (have_test && fm_train_evaluate(m, test.images, test.labels, test.n, cfg.threads, &test_loss, &test_acc) != 0) {
        fm_cli_fail("train: evaluating on the test set");
        train_tracking_end(tracking, "FAILED", fm_last_error());
        goto done;
    }
    if (have_test)
        train_tracking_test(tracking, test_loss, test_acc, test.n, res.epochs_done);
    train_tracking_annotate(tracking, m);
    if (fill_metadata(m, &args, &cfg, &res, &train, have_test ? &test : NULL, test_loss, test_acc) != 0 ||
        fm_model_save(m, args.out) != 0) {
        fm_cli_fail("train: writing the model");
        train_tracking_end(tracking, "FAILED", fm_last_error());
        goto done;
    }
    created = 0; /* the directory now holds a model: keep it */
    if (have_test)
        printf("test     accuracy %.2f%%  loss %.4f  (%zu images)\n", 100.0 * test_acc, test_loss, test.n);
    else
        printf("test     no t10k files in %s: test accuracy not recorded\n", data_dir);
    printf("model    %s %s written to %s (weights sha256 %.16s..., %.1fs of training)\n", fm_model_name(m),
           fm_model_version(m), args.out, fm_model_weights_sha256(m), res.seconds);
    fflush(stdout);
    train_tracking_publish(tracking, m, args.out);
    rc = 0;
done:
    unwatch_signals(&watch);
    train_tracking_free(tracking);
    if (created)
        rmdir(args.out); /* only succeeds while it is still empty */
    fm_model_free(m);
    fm_dataset_free(&train);
    if (have_test)
        fm_dataset_free(&test);
    return rc;
}
