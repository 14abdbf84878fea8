/* fm_drift.h: drift reference profiles and drift checks, between the data,
 * the compute engine and the SQL in sql/ (docs/drift.md). The statistics
 * themselves run inside PostgreSQL (fm_drift_run); this module feeds them
 * and reads their results back for reports (fm_drift_report.h). */
#ifndef FM_DRIFT_H
#define FM_DRIFT_H

#include <stddef.h>
#include <stdint.h>

#include "fm_backend.h"
#include "fm_db.h"

#define FM_DRIFT_EXIT_DRIFT 3 /* fmctl drift check's exit code on dataset drift */

/* Where a reference profile came from (strings may be NULL). */
typedef struct fm_drift_reference_info {
    const char *description;
    const char *data_source; /* the images file */
    const char *data_sha256; /* fm_dataset_t.sha256 */
    const char *model_name;
    const char *model_version;
    const char *model_sha256;
} fm_drift_reference_info_t;

/* Runs the engine over n images in batches: the predicted label and its
 * confidence for each (probs optional, n*10). */
int fm_drift_predict(fm_engine_t *engine, fm_backend_model_t *bm, const uint8_t *images, size_t n, int32_t *labels,
                     float *confidence, float *probs);

/* Stores a reference profile, in one transaction: per-pixel 256-bin
 * histograms, the six summary features, and the distributions of the
 * model's predicted class and confidence over the same images. */
int fm_drift_reference_store(fm_db_t *db, const fm_drift_reference_info_t *info, const uint8_t *images, size_t n,
                             const int32_t *labels, const float *confidence, int64_t *profile_id);

/* One drift check (fm_drift_run in SQL). Times and the window are given as
 * PostgreSQL text (timestamptz, interval) and parsed by the server. */
typedef struct fm_drift_check_opts {
    const char *since;         /* NULL: until - window */
    const char *until;         /* NULL: now() */
    const char *window;        /* used when since is NULL; NULL: "1 hour" */
    const char *model_version; /* NULL: all versions */
    int64_t reference_id;      /* 0: the newest profile */
    const char *num_stattest;  /* NULL: Evidently's default choice */
    const char *cat_stattest;
    double num_threshold;      /* NAN: the test's default */
    double cat_threshold;
    double drift_share;        /* NAN: 0.5 */
} fm_drift_check_opts_t;

void fm_drift_check_opts_default(fm_drift_check_opts_t *o);
/* Runs the check and returns the new drift_runs.id. FM_ENOTFOUND (with the
 * server's message) when there is no reference or the window is empty. */
int fm_drift_check(fm_db_t *db, const fm_drift_check_opts_t *o, int64_t *run_id);

/* ---- a stored run, read back for reports ---- */

typedef struct fm_drift_feature {
    int fid;            /* 0..783 pixel, 1000.. summary, 2000 pred_class, 2001 confidence */
    char name[32];      /* px_RR_CC, mean_intensity, ... */
    char group[16];     /* pixel | summary | prediction */
    char column_type[4]; /* num | cat */
    char stattest[16];
    double score, threshold, p_value, statistic; /* p_value NAN when the test has none */
    int drifted;
    int64_t n_ref, n_cur;
    int n_values;
    double strength;    /* fm_drift_strength(): > 1 past the threshold */
} fm_drift_feature_t;

typedef struct fm_drift_run {
    int64_t id, reference_id;
    char model_version[128]; /* "" for all versions */
    char started_at[40], requested_start[40], requested_end[40], window_start[40], window_end[40];
    int64_t images, predictions;
    int features, drifted;
    double share, drift_share;
    int dataset_drift;
    char ref_description[256], ref_source[512], ref_model[256];
    int64_t ref_images;
    fm_drift_feature_t *f; /* nfeatures entries, by descending strength */
    int nfeatures;
    int64_t ref_class[10], cur_class[10]; /* predicted-class counts */
    double ref_mean[784], cur_mean[784];  /* per-pixel mean values (0..255) */
    int pixel_f[784];                     /* index into f of each pixel, -1 if absent */
} fm_drift_run_t;

int fm_drift_run_load(fm_db_t *db, int64_t run_id, fm_drift_run_t **out);
void fm_drift_run_free(fm_drift_run_t *r);
/* The pixel feature of a run, by pixel index (NULL if missing). */
const fm_drift_feature_t *fm_drift_run_pixel(const fm_drift_run_t *r, int pixel);

#endif /* FM_DRIFT_H */
