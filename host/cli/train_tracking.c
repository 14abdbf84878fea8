/* train_tracking.c: `fmctl train`'s MLflow run (see train_tracking.h): what
 * is logged when, how failures degrade to a summary instead of stopping
 * training, and the sidecar's "mlflow" section. */
#include "train_tracking.h"

#include <math.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_mlflow.h"
#include "fm_time.h"

#define MAX_NOTES 16

struct train_tracking {
    train_tracking_opts_t o;
    fm_mlflow_t *mf;
    int down;          /* the server could not be reached: send nothing more */
    int run_open;      /* a run exists and has no end status yet */
    fm_mlflow_run_t run;
    char experiment[256];
    char registered_model[128], model_version[32];
    char end_status[16];
    /* Metrics waiting to be sent. */
    fm_mlflow_metric_t *pending;
    char (*pending_keys)[32];
    int npending, cap;
    int first_epoch, last_epoch; /* epochs held in `pending` (0 = none) */
    uint64_t last_flush_us;
    int epochs_logged, params_logged, artifacts_logged;
    /* Epoch metrics dropped while the server was unreachable: one range in
     * the summary rather than a line per flush. */
    int unsent_first, unsent_last, unsent_test;
    /* What was not logged, and why (first reason kept per item). */
    char notes[MAX_NOTES][320];
    int nnotes;
};

static void note(train_tracking_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(train_tracking_t *t, const char *fmt, ...) {
    if (t->nnotes >= MAX_NOTES)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->notes[t->nnotes++], sizeof t->notes[0], fmt, ap);
    va_end(ap);
}

/* Records a failed call; a server that cannot be reached gets no more calls. */
static void failed(train_tracking_t *t, const char *what) {
    note(t, "%s: %s", what, fm_last_error());
    if (fm_mlflow_transport_failed(t->mf) && !t->down) {
        t->down = 1;
        fprintf(stderr, "fmctl train: MLflow tracking server %s cannot be reached (%s); training continues without "
                        "tracking\n",
                fm_mlflow_uri(t->mf), fm_last_error());
    }
}

static int usable(const train_tracking_t *t) { return t->mf && !t->down && t->run.run_id[0]; }

static int64_t wall_ms(void) { return fm_wall_us() / 1000; }

static void epochs_text(int a, int b, char *buf, size_t cap) {
    if (a == b)
        snprintf(buf, cap, "epoch %d", a);
    else
        snprintf(buf, cap, "epochs %d-%d", a, b);
}

/* Sends the queued metrics in as few log-batch calls as MLflow's limits allow. */
static void flush(train_tracking_t *t) {
    if (!t->npending)
        return;
    char range[64] = "the test set";
    if (t->first_epoch)
        epochs_text(t->first_epoch, t->last_epoch, range, sizeof range);
    if (!usable(t)) {
        /* Without a run, the run's own note says that nothing was logged. */
        if (t->run.run_id[0] && t->first_epoch) {
            if (!t->unsent_first)
                t->unsent_first = t->first_epoch;
            t->unsent_last = t->last_epoch;
        } else if (t->run.run_id[0]) {
            t->unsent_test = 1;
        }
    } else if (fm_mlflow_log_batch(t->mf, t->run.run_id, NULL, 0, t->pending, t->npending, NULL, 0) != 0) {
        char what[96];
        snprintf(what, sizeof what, "metrics of %s", range);
        failed(t, what);
    } else if (t->first_epoch) {
        t->epochs_logged += t->last_epoch - t->first_epoch + 1;
    }
    t->npending = 0;
    t->first_epoch = t->last_epoch = 0;
    t->last_flush_us = fm_now_us();
}

static void queue(train_tracking_t *t, const char *key, double value, int64_t step) {
    if (!isfinite(value))
        return; /* e.g. val_loss without a validation split */
    if (t->npending == t->cap) {
        int nc = t->cap ? t->cap * 2 : 64;
        fm_mlflow_metric_t *p = realloc(t->pending, (size_t)nc * sizeof *p);
        char(*k)[32] = p ? realloc(t->pending_keys, (size_t)nc * sizeof *k) : NULL;
        if (p)
            t->pending = p;
        if (!p || !k) {
            note(t, "metric %s of step %lld: out of memory", key, (long long)step);
            return;
        }
        t->pending_keys = k;
        t->cap = nc;
        for (int i = 0; i < t->npending; i++) /* keys moved with the realloc */
            t->pending[i].key = t->pending_keys[i];
    }
    snprintf(t->pending_keys[t->npending], sizeof t->pending_keys[0], "%s", key);
    t->pending[t->npending] = (fm_mlflow_metric_t){
        .key = t->pending_keys[t->npending], .value = value, .timestamp_ms = wall_ms(), .step = step};
    t->npending++;
}

static const char *user_name(void) {
    const char *u = getenv("USER");
    if (u && *u)
        return u;
    struct passwd *pw = getpwuid(getuid());
    return pw ? pw->pw_name : "unknown";
}

/* The parameters of a run: everything needed to train the same model again. */
static void log_params(train_tracking_t *t, const fm_train_config_t *cfg, const fm_dataset_t *train,
                       const fm_model_t *m, const char *commit) {
    char v[32][96];
    int n = 0;
    fm_mlflow_kv_t kv[40];
#define P(k, ...)                                      \
    do {                                               \
        snprintf(v[n], sizeof v[n], __VA_ARGS__);      \
        kv[n] = (fm_mlflow_kv_t){k, v[n]};             \
        n++;                                           \
    } while (0)
    P("model_type", "%s", fm_arch_name(cfg->arch));
    P("epochs", "%d", cfg->epochs);
    P("batch_size", "%d", cfg->batch_size);
    P("learning_rate", "%.9g", cfg->learning_rate);
    P("seed", "%llu", (unsigned long long)cfg->seed);
    P("optimizer", "%s", fm_optimizer_name(cfg->optimizer));
    if (cfg->optimizer == FM_OPT_SGD) {
        P("momentum", "%.9g", cfg->momentum);
    } else {
        P("beta1", "%.9g", cfg->beta1);
        P("beta2", "%.9g", cfg->beta2);
        P("eps", "%.9g", cfg->eps);
    }
    P("weight_decay", "%.9g", cfg->weight_decay);
    P("lr_schedule", "%s", fm_lr_schedule_name(cfg->lr_schedule));
    P("lr_final", "%.9g", cfg->lr_final);
    P("warmup_epochs", "%.9g", cfg->warmup_epochs);
    P("dropout", "%.9g", cfg->dropout);
    P("augment_shift", "%d", cfg->aug_shift);
    P("augment_flip", "%d", cfg->aug_hflip);
    P("val_split", "%zu", cfg->val_split);
    P("threads", "%d", cfg->threads);
    P("train_images", "%zu", train->n - cfg->val_split);
    P("data_images", "%zu", train->n);
    P("model_name", "%s", fm_model_name(m));
    P("model_version", "%s", fm_model_version(m));
#undef P
    /* Values that may be long go in without the 96-byte buffers. */
    kv[n++] = (fm_mlflow_kv_t){"data_sha256", train->sha256};
    kv[n++] = (fm_mlflow_kv_t){"data_path", train->images_path};
    kv[n++] = (fm_mlflow_kv_t){"source_commit", commit};
    if (fm_mlflow_log_batch(t->mf, t->run.run_id, kv, n, NULL, 0, NULL, 0) != 0)
        failed(t, "parameters");
    else
        t->params_logged = n;
}

train_tracking_t *train_tracking_start(const train_tracking_opts_t *o, const fm_train_config_t *cfg,
                                       const fm_dataset_t *train, const fm_model_t *m, const char *source_commit) {
    train_tracking_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->o = *o;
    snprintf(t->experiment, sizeof t->experiment, "%s", o->experiment);
    snprintf(t->registered_model, sizeof t->registered_model, "%s",
             o->registered_model && *o->registered_model ? o->registered_model : fm_model_name(m));
    t->last_flush_us = fm_now_us();
    if (fm_mlflow_open(o->uri, (int)(o->timeout_s * 1000), &t->mf) != 0) {
        note(t, "the run (nothing was logged): %s", fm_last_error());
        return t;
    }
    char eid[32];
    if (fm_mlflow_experiment(t->mf, o->experiment, eid, sizeof eid) != 0) {
        failed(t, "the run (nothing was logged)");
        return t;
    }
    char run_name[160];
    if (o->run_name && *o->run_name)
        snprintf(run_name, sizeof run_name, "%s", o->run_name);
    else
        snprintf(run_name, sizeof run_name, "%s-%s", fm_model_name(m), fm_model_version(m));
    const fm_mlflow_kv_t tags[] = {
        {"mlflow.source.name", "fmctl train"},
        {"mlflow.source.type", "LOCAL"},
        {"mlflow.source.git.commit", source_commit},
        {"mlflow.user", user_name()},
        {"fm.model_name", fm_model_name(m)},
        {"fm.model_version", fm_model_version(m)},
        {"fm.arch", fm_arch_name(cfg->arch)},
    };
    if (fm_mlflow_run_create(t->mf, eid, run_name, tags, (int)(sizeof tags / sizeof tags[0]), &t->run) != 0) {
        failed(t, "the run (nothing was logged)");
        return t;
    }
    t->run_open = 1;
    printf("mlflow   run %s in experiment '%s' (id %s) at %s\n", t->run.run_id, o->experiment, eid,
           fm_mlflow_uri(t->mf));
    fflush(stdout);
    log_params(t, cfg, train, m, source_commit);
    return t;
}

const char *train_tracking_run_id(const train_tracking_t *t) { return t ? t->run.run_id : ""; }

void train_tracking_epoch(train_tracking_t *t, const fm_train_epoch_stats_t *s) {
    if (!t)
        return;
    int64_t step = s->epoch;
    queue(t, "loss", s->loss, step);
    queue(t, "accuracy", s->accuracy, step);
    if (s->val_images) {
        queue(t, "val_loss", s->val_loss, step);
        queue(t, "val_accuracy", s->val_accuracy, step);
    }
    queue(t, "images_per_s", s->images_per_s, step);
    queue(t, "learning_rate", s->learning_rate, step);
    queue(t, "epoch_seconds", s->seconds, step);
    if (!t->first_epoch)
        t->first_epoch = s->epoch;
    t->last_epoch = s->epoch;
    /* One log-batch per flush interval keeps a long run's chart live without
     * a request per metric; the last epoch always goes out at once. */
    if (s->epoch == s->epochs || (double)(fm_now_us() - t->last_flush_us) >= t->o.flush_interval_s * 1e6)
        flush(t);
}

void train_tracking_test(train_tracking_t *t, double loss, double accuracy, size_t images, int step) {
    if (!t)
        return;
    queue(t, "test_loss", loss, step);
    queue(t, "test_accuracy", accuracy, step);
    queue(t, "test_images", (double)images, step);
}

void train_tracking_annotate(train_tracking_t *t, fm_model_t *m) {
    if (!t || !t->run.run_id[0])
        return;
    fm_model_meta_set_string(m, "mlflow", "tracking_uri", fm_mlflow_uri(t->mf));
    fm_model_meta_set_string(m, "mlflow", "experiment", t->experiment);
    fm_model_meta_set_string(m, "mlflow", "experiment_id", t->run.experiment_id);
    fm_model_meta_set_string(m, "mlflow", "run_id", t->run.run_id);
    fm_model_meta_set_string(m, "mlflow", "artifact_uri", t->run.artifact_uri);
}

static void end_run(train_tracking_t *t, const char *status) {
    flush(t);
    if (!t->run_open)
        return;
    /* Tried even when the server went away: a run left RUNNING misleads
     * everyone who looks at it later, and this is one bounded call. */
    if (fm_mlflow_run_end(t->mf, t->run.run_id, status) != 0) {
        char what[64];
        snprintf(what, sizeof what, "run status %s", status);
        failed(t, what);
    } else {
        snprintf(t->end_status, sizeof t->end_status, "%s", status);
    }
    t->run_open = 0;
}

static int upload(train_tracking_t *t, const char *dir, const char *file) {
    char local[1100], rel[128], what[160];
    snprintf(local, sizeof local, "%s/%s", dir, file);
    snprintf(rel, sizeof rel, "model/%s", file);
    snprintf(what, sizeof what, "artifact %s", rel);
    if (!usable(t)) {
        if (t->run.run_id[0])
            note(t, "%s: not sent (tracking server unreachable)", what);
        return -1;
    }
    if (fm_mlflow_upload(t->mf, t->run.artifact_uri, rel, local) != 0) {
        failed(t, what);
        return -1;
    }
    t->artifacts_logged++;
    return 0;
}

void train_tracking_publish(train_tracking_t *t, fm_model_t *m, const char *dir) {
    if (!t)
        return;
    flush(t);
    int weights_ok = upload(t, dir, "model.safetensors") == 0;
    /* A version whose source lacks the weights would be useless: register
     * only after they arrived. */
    if (weights_ok && usable(t)) {
        char source[600], desc[300];
        snprintf(source, sizeof source, "%s/model", t->run.artifact_uri);
        snprintf(desc, sizeof desc, "%s %s (%s), weights sha256 %s", fm_model_name(m), fm_model_version(m),
                 fm_arch_name(fm_model_arch(m)), fm_model_weights_sha256(m));
        if (fm_mlflow_register(t->mf, t->registered_model, source, t->run.run_id, desc, t->model_version,
                               sizeof t->model_version) != 0) {
            failed(t, "model version registration");
            t->model_version[0] = '\0';
        } else {
            if (fm_mlflow_set_version_tag(t->mf, t->registered_model, t->model_version, "weights_sha256",
                                          fm_model_weights_sha256(m)) != 0 ||
                fm_mlflow_set_version_tag(t->mf, t->registered_model, t->model_version, "fm_version",
                                          fm_model_version(m)) != 0)
                failed(t, "model version tags");
            if (t->o.alias && *t->o.alias &&
                fm_mlflow_set_alias(t->mf, t->registered_model, t->o.alias, t->model_version) != 0) {
                char what[96];
                snprintf(what, sizeof what, "alias '%s'", t->o.alias);
                failed(t, what);
            }
            /* The sidecar names the version it became, so a model directory
             * found anywhere leads back to its run and registry entry. */
            fm_model_meta_set_string(m, "mlflow", "registered_model", t->registered_model);
            fm_model_meta_set_string(m, "mlflow", "model_version", t->model_version);
            if (t->o.alias && *t->o.alias)
                fm_model_meta_set_string(m, "mlflow", "alias", t->o.alias);
            if (fm_model_save(m, dir) != 0)
                note(t, "model version in %s/model.json: %s", dir, fm_last_error());
        }
    } else if (!weights_ok && t->run.run_id[0]) {
        note(t, "model version registration: skipped (the weights were not uploaded)");
    }
    upload(t, dir, "model.json");
    end_run(t, "FINISHED");
}

void train_tracking_end(train_tracking_t *t, const char *status, const char *why) {
    if (!t)
        return;
    if (t->run_open && usable(t) && why && *why) {
        const fm_mlflow_kv_t tag = {"fm.end_reason", why};
        if (fm_mlflow_log_batch(t->mf, t->run.run_id, NULL, 0, NULL, 0, &tag, 1) != 0)
            failed(t, "end reason tag");
    }
    end_run(t, status);
}

void train_tracking_free(train_tracking_t *t) {
    if (!t)
        return;
    if (t->run_open) /* a path that forgot to end the run: never leave it RUNNING */
        end_run(t, "FAILED");
    if (t->unsent_first) {
        char range[64];
        epochs_text(t->unsent_first, t->unsent_last, range, sizeof range);
        note(t, "metrics of %s: not sent (tracking server unreachable)", range);
    }
    if (t->unsent_test)
        note(t, "test-set metrics: not sent (tracking server unreachable)");
    FILE *f = t->nnotes ? stderr : stdout;
    if (t->run.run_id[0]) {
        fprintf(f, "mlflow   run %s %s: %d params, metrics of %d epochs, %d artifacts", t->run.run_id,
                t->end_status[0] ? t->end_status : "(status not set)", t->params_logged, t->epochs_logged,
                t->artifacts_logged);
        if (t->model_version[0])
            fprintf(f, "; registered %s version %s%s%s", t->registered_model, t->model_version,
                    t->o.alias && *t->o.alias ? ", alias " : "", t->o.alias && *t->o.alias ? t->o.alias : "");
        fprintf(f, "\n");
    }
    if (t->nnotes) {
        fprintf(f, "mlflow   NOT logged to %s:\n", t->o.uri);
        for (int i = 0; i < t->nnotes; i++)
            fprintf(f, "  - %s\n", t->notes[i]);
    }
    fm_mlflow_close(t->mf);
    free(t->pending);
    free(t->pending_keys);
    free(t);
}
