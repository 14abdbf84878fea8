/* train_tracking.h: MLflow tracking for `fmctl train`: a run with the
 * training configuration as parameters, per-epoch metrics with their step
 * numbers, the model files as artifacts, the run's real end status, a
 * registered model version and an alias.
 *
 * Tracking never stops training: a call that fails is recorded and training
 * goes on; once the tracking server cannot be reached at all (refused,
 * timed out) no more calls are sent, except one last attempt to end the
 * run. train_tracking_free() prints one summary of what was logged and what
 * was not. */
#ifndef TRAIN_TRACKING_H
#define TRAIN_TRACKING_H

#include "fm_idx.h"
#include "fm_model.h"
#include "fm_train.h"

typedef struct train_tracking train_tracking_t;

typedef struct train_tracking_opts {
    const char *uri;              /* tracking server (http[s]://...) */
    const char *experiment;       /* experiment name */
    const char *run_name;         /* NULL: "<model name>-<version>" */
    const char *registered_model; /* NULL: the model's name (one registered model per architecture) */
    const char *alias;            /* NULL or "": no alias */
    double timeout_s;             /* per call */
    double flush_interval_s;      /* metrics are sent at most this often (and at the end) */
} train_tracking_opts_t;

/* Creates the run (experiment found or created) and logs the parameters.
 * Returns a tracker even when the server cannot be reached (it then only
 * remembers what was not logged); NULL only when out of memory. */
train_tracking_t *train_tracking_start(const train_tracking_opts_t *o, const fm_train_config_t *cfg,
                                       const fm_dataset_t *train, const fm_model_t *m, const char *source_commit);
/* The run id ("" when no run was created). */
const char *train_tracking_run_id(const train_tracking_t *t);
/* Queues one epoch's metrics (step = epoch) and sends the queue when the
 * flush interval has passed. */
void train_tracking_epoch(train_tracking_t *t, const fm_train_epoch_stats_t *s);
/* Queues the test-set metrics (step = the last epoch). */
void train_tracking_test(train_tracking_t *t, double loss, double accuracy, size_t images, int step);
/* Before the model is saved: records the tracking server, experiment and
 * run id in the sidecar's "mlflow" section. */
void train_tracking_annotate(train_tracking_t *t, fm_model_t *m);
/* After the model was saved in `dir`: sends the queued metrics, uploads
 * model.safetensors, registers a model version (source = the run's
 * artifact URI + "/model"), sets the alias, adds the version to the sidecar
 * (rewriting `dir`), uploads model.json, and ends the run FINISHED. */
void train_tracking_publish(train_tracking_t *t, fm_model_t *m, const char *dir);
/* Ends the run with `status` (FAILED or KILLED) after sending what is queued. */
void train_tracking_end(train_tracking_t *t, const char *status, const char *why);
/* Prints the summary (stdout when everything was logged, else stderr) and frees. */
void train_tracking_free(train_tracking_t *t);

#endif /* TRAIN_TRACKING_H */
