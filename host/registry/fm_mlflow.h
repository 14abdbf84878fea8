/* fm_mlflow.h: a small MLflow 2.x client over the REST API (the only file
 * that talks HTTP to MLflow is fm_mlflow.c; libcurl and cJSON stay inside).
 *
 * Experiments, runs, batched params/metrics/tags, proxied artifact upload
 * and download (mlflow-artifacts:), model versions and aliases. Every call
 * has a connect timeout and a total timeout; uploads and downloads have a
 * low-speed limit instead of a total one, so a large file on a slow link is
 * not cut off while a stalled one is.
 *
 * Errors: FM_ENETWORK (no connection, reset), FM_EDEADLINE (a timeout),
 * FM_ENOTFOUND (HTTP 404 / RESOURCE_DOES_NOT_EXIST), FM_EUNAVAILABLE (HTTP
 * 5xx, 429), FM_EINVAL (another 4xx), FM_EFORMAT (a reply that is not the
 * JSON expected), each with a detail naming the endpoint and MLflow's
 * error_code and message. fm_mlflow_transport_failed() tells a server that
 * cannot be reached from one that answered with an error.
 *
 * Not thread-safe: one client per thread. */
#ifndef FM_MLFLOW_H
#define FM_MLFLOW_H

#include <stddef.h>
#include <stdint.h>

typedef struct fm_mlflow fm_mlflow_t;

/* MLflow's documented per-request limits of runs/log-batch. */
#define FM_MLFLOW_MAX_BATCH_METRICS 1000
#define FM_MLFLOW_MAX_BATCH_PARAMS 100
#define FM_MLFLOW_MAX_BATCH_TAGS 100
#define FM_MLFLOW_MAX_BATCH_ENTITIES 1000
/* Values longer than this are cut (MLflow 2.0-2.7 refuse params over 500). */
#define FM_MLFLOW_MAX_PARAM_VALUE 500

typedef struct fm_mlflow_kv {
    const char *key;
    const char *value;
} fm_mlflow_kv_t;

typedef struct fm_mlflow_metric {
    const char *key;
    double value;
    int64_t timestamp_ms; /* wall clock, ms since the epoch */
    int64_t step;
} fm_mlflow_metric_t;

typedef struct fm_mlflow_run {
    char run_id[64];
    char experiment_id[32];
    char artifact_uri[512]; /* e.g. mlflow-artifacts:/1/<run_id>/artifacts */
} fm_mlflow_run_t;

/* Connects nothing yet: checks the URI (http:// or https://, trailing
 * slashes dropped) and prepares a handle. timeout_ms bounds each JSON call
 * (0 = 10 s). Credentials come from MLFLOW_TRACKING_TOKEN (bearer) or
 * MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD (basic), as MLflow's own
 * client reads them; MLFLOW_TRACKING_INSECURE_TLS=true skips TLS checks. */
int fm_mlflow_open(const char *tracking_uri, int timeout_ms, fm_mlflow_t **out);
void fm_mlflow_close(fm_mlflow_t *mf);
const char *fm_mlflow_uri(const fm_mlflow_t *mf);
/* 1 when the last failed call never got an HTTP answer (refused, timed
 * out, DNS): callers stop sending more calls that would also time out. */
int fm_mlflow_transport_failed(const fm_mlflow_t *mf);
/* MLflow's error_code of the last failed call ("" when none). */
const char *fm_mlflow_error_code(const fm_mlflow_t *mf);

/* The id of experiment `name`, created when missing (a concurrent create
 * is handled). */
int fm_mlflow_experiment(fm_mlflow_t *mf, const char *name, char *id, size_t cap);
/* runs/create with run_name, start_time = now and the tags. */
int fm_mlflow_run_create(fm_mlflow_t *mf, const char *experiment_id, const char *run_name,
                         const fm_mlflow_kv_t *tags, int ntags, fm_mlflow_run_t *out);
/* runs/log-batch, split into as many requests as MLflow's limits need
 * (1000 metrics, 100 params, 100 tags, 1000 entities, 1 MB per request).
 * Param values are cut to FM_MLFLOW_MAX_PARAM_VALUE bytes. */
int fm_mlflow_log_batch(fm_mlflow_t *mf, const char *run_id, const fm_mlflow_kv_t *params, int nparams,
                        const fm_mlflow_metric_t *metrics, int nmetrics, const fm_mlflow_kv_t *tags, int ntags);
/* runs/update: status RUNNING, FINISHED, FAILED or KILLED, end_time = now
 * (for a terminal status). */
int fm_mlflow_run_end(fm_mlflow_t *mf, const char *run_id, const char *status);
/* Uploads a local file to <artifact_uri>/<rel_path> through the
 * tracking server's artifact proxy (mlflow-artifacts:), or copies it when
 * the artifact URI is a local path or file: URI on this machine. */
int fm_mlflow_upload(fm_mlflow_t *mf, const char *artifact_uri, const char *rel_path, const char *local_path);
/* Downloads <artifact_uri>/<rel_path> (mlflow-artifacts: through the proxy,
 * or a local path) into local_path, written to a temporary name and renamed;
 * refuses more than max_bytes. */
int fm_mlflow_download(fm_mlflow_t *mf, const char *artifact_uri, const char *rel_path, const char *local_path,
                       int64_t max_bytes);
/* registered-models/create (an existing one is fine), then
 * model-versions/create with source and run_id; the new version number
 * (e.g. "3") goes into `version`. */
int fm_mlflow_register(fm_mlflow_t *mf, const char *model_name, const char *source, const char *run_id,
                       const char *description, char *version, size_t cap);
/* registered-models/alias: points `alias` at `version` (moving it if set). */
int fm_mlflow_set_alias(fm_mlflow_t *mf, const char *model_name, const char *alias, const char *version);
/* model-versions/set-tag. */
int fm_mlflow_set_version_tag(fm_mlflow_t *mf, const char *model_name, const char *version, const char *key,
                              const char *value);

/* A raw JSON call for what the functions above do not cover (tests,
 * tools): method "GET" (body NULL; path carries the query), "POST",
 * "PATCH" or "DELETE" with a JSON body. `path` is relative to the tracking
 * URI, e.g. "/api/2.0/mlflow/runs/get?run_id=...". On 0, *json_out (may be
 * NULL) receives the reply text (malloc'd, caller frees). */
int fm_mlflow_call(fm_mlflow_t *mf, const char *method, const char *path, const char *body, char **json_out);
/* URL-escapes a query value (malloc'd). */
char *fm_mlflow_escape(fm_mlflow_t *mf, const char *s);

#endif /* FM_MLFLOW_H */
