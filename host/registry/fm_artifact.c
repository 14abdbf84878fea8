/* fm_artifact.c: model artifacts as local directories (fm_artifact.h):
 * local paths in place, MLflow artifacts downloaded into a per-SHA-256
 * cache and verified with the model loader before use. */
#include "fm_artifact.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_log.h"
#include "fm_mlflow.h"
#include "fm_model.h"
#include "fm_time.h"

int fm_artifact_local_dir(const char *uri, char *dir, size_t cap) {
    const char *p = NULL;
    if (strncmp(uri, "file://", 7) == 0)
        p = uri + 7;
    else if (strncmp(uri, "file:", 5) == 0)
        p = uri + 5;
    else if (uri[0] == '/')
        p = uri;
    if (!p)
        return 0;
    snprintf(dir, cap, "%s", p);
    return 1;
}

static int mkdir_p(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return fm_fail(FM_EIO, "%s: cannot create the directory: %s", buf, strerror(errno));
            *p = c;
            if (!c)
                break;
        }
    }
    return 0;
}

static void remove_dir(const char *dir) {
    char p[1100];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.json", dir);
    unlink(p);
    rmdir(dir);
}

/* 0 when `dir` holds a model that loads and has the expected weights. */
static int verify_dir(const char *dir, const char *expected_sha256, char *sha_out) {
    fm_model_t *m = NULL;
    int rc = fm_model_load(dir, &m);
    if (rc)
        return rc;
    if (expected_sha256 && strcmp(fm_model_weights_sha256(m), expected_sha256) != 0)
        rc = fm_fail(FM_ECHECKSUM, "%s: the weights have sha256 %.16s..., expected %.16s...", dir,
                     fm_model_weights_sha256(m), expected_sha256);
    if (sha_out)
        snprintf(sha_out, FM_SHA256_HEX_LEN + 1, "%s", fm_model_weights_sha256(m));
    fm_model_free(m);
    return rc;
}

int fm_artifact_fetch(const char *uri, const char *expected_sha256, const char *cache_dir, const char *tracking_uri,
                      int timeout_ms, char *dir, size_t cap) {
    if (fm_artifact_local_dir(uri, dir, cap))
        return 0;
    if (strncmp(uri, "mlflow-artifacts:", 17) != 0)
        return fm_fail(FM_EUNSUPPORTED,
                       "artifact location '%s': fmserve reads local directories (a shared volume) and MLflow "
                       "artifacts (mlflow-artifacts:)",
                       uri);
    if (!cache_dir || !*cache_dir)
        return fm_fail(FM_EINVAL, "artifact %s is in MLflow: a model cache directory is needed to download it", uri);
    if (!tracking_uri || !*tracking_uri)
        return fm_fail(FM_EINVAL,
                       "artifact %s is in MLflow: set MLFLOW_TRACKING_URI (the tracking server that proxies it)", uri);
    int rc = mkdir_p(cache_dir);
    if (rc)
        return rc;
    /* Already in the cache and intact: nothing to download. */
    if (expected_sha256) {
        snprintf(dir, cap, "%s/%s", cache_dir, expected_sha256);
        struct stat st;
        if (stat(dir, &st) == 0) {
            if (verify_dir(dir, expected_sha256, NULL) == 0)
                return 0;
            fm_warn("artifact", "cached copy %s is damaged (%s); downloading it again", dir, fm_last_error());
            remove_dir(dir);
        }
    }
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s/.incoming-%d-%llx", cache_dir, (int)getpid(), (unsigned long long)fm_now_ns());
    if (mkdir(tmp, 0755) != 0)
        return fm_fail(FM_EIO, "%s: %s", tmp, strerror(errno));
    fm_mlflow_t *mf = NULL;
    uint64_t t0 = fm_now_us();
    rc = fm_mlflow_open(tracking_uri, timeout_ms, &mf);
    char path[1100];
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/model.safetensors", tmp);
        rc = fm_mlflow_download(mf, uri, "model.safetensors", path, FM_ARTIFACT_MAX_WEIGHTS_BYTES);
    }
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/model.json", tmp);
        rc = fm_mlflow_download(mf, uri, "model.json", path, FM_ARTIFACT_MAX_SIDECAR_BYTES);
    }
    fm_mlflow_close(mf);
    char sha[FM_SHA256_HEX_LEN + 1] = "";
    if (rc == 0)
        rc = verify_dir(tmp, expected_sha256, sha);
    if (rc) {
        char detail[900];
        snprintf(detail, sizeof detail, "%s", fm_last_error());
        remove_dir(tmp);
        return fm_fail(rc, "downloading %s: %s", uri, detail);
    }
    snprintf(dir, cap, "%s/%s", cache_dir, sha);
    if (rename(tmp, dir) != 0) {
        /* Another process put the same weights there first. */
        remove_dir(tmp);
        if ((rc = verify_dir(dir, sha, NULL)) != 0)
            return rc;
    }
    fm_info("artifact", "downloaded %s into %s (sha256 %.12s) in %.0f ms", uri, dir, sha,
            (double)(fm_now_us() - t0) / 1000.0);
    return 0;
}

int fm_artifact_resolve_mlflow(const char *uri, const char *tracking_uri, int timeout_ms, char *source, size_t cap) {
    if (strncmp(uri, "models:/", 8) != 0) {
        snprintf(source, cap, "%s", uri);
        return 0;
    }
    if (!tracking_uri || !*tracking_uri)
        return fm_fail(FM_EINVAL, "%s: set MLFLOW_TRACKING_URI (or --mlflow) to resolve MLflow model URIs", uri);
    char spec[512];
    snprintf(spec, sizeof spec, "%s", uri + 8);
    char *at = strchr(spec, '@'), *slash = strchr(spec, '/');
    if ((!at && !slash) || (at && slash) || spec[0] == '@' || spec[0] == '/')
        return fm_fail(FM_EINVAL, "%s: expected models:/NAME/VERSION or models:/NAME@ALIAS", uri);
    char *sep = at ? at : slash;
    *sep = '\0';
    const char *name = spec, *what = sep + 1;
    if (!*what)
        return fm_fail(FM_EINVAL, "%s: expected models:/NAME/VERSION or models:/NAME@ALIAS", uri);
    fm_mlflow_t *mf;
    int rc = fm_mlflow_open(tracking_uri, timeout_ms, &mf);
    if (rc)
        return rc;
    char *qn = fm_mlflow_escape(mf, name), *qw = fm_mlflow_escape(mf, what);
    char path[1200];
    if (qn && qw)
        snprintf(path, sizeof path, at ? "/api/2.0/mlflow/registered-models/alias?name=%s&alias=%s"
                                       : "/api/2.0/mlflow/model-versions/get?name=%s&version=%s",
                 qn, qw);
    free(qn);
    free(qw);
    char *reply = NULL;
    rc = fm_mlflow_call(mf, "GET", path, NULL, &reply);
    fm_mlflow_close(mf);
    if (rc)
        return rc;
    cJSON *j = cJSON_Parse(reply);
    free(reply);
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "model_version"), "source");
    if (!cJSON_IsString(src)) {
        cJSON_Delete(j);
        return fm_fail(FM_EFORMAT, "%s: MLflow's reply has no model_version.source", uri);
    }
    snprintf(source, cap, "%s", src->valuestring);
    cJSON_Delete(j);
    return 0;
}
