/* fm_mlflow.c: the MLflow REST client behind fm_mlflow.h: JSON calls with
 * libcurl and cJSON, MLflow's error bodies turned into fm_fail details,
 * log-batch split to MLflow's limits, artifact upload and download. */
#include "fm_mlflow.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fm_error.h"
#include "fm_log.h"

#define MAX_REPLY_BYTES (64 << 20)        /* a JSON reply larger than this is refused */
#define MAX_BATCH_BODY_BYTES 1000000      /* MLflow's MAX_BATCH_LOG_REQUEST_SIZE */
#define CONNECT_TIMEOUT_MS 5000L
#define TRANSFER_STALL_S 30L              /* uploads/downloads: below 1 KiB/s for this long is a failure */

struct fm_mlflow {
    char base[512]; /* tracking URI without trailing slashes */
    CURL *curl;
    long timeout_ms;
    struct curl_slist *json_headers, *octet_headers;
    char userpwd[512];
    int insecure;
    int transport_failed;
    char error_code[64];
};

/* ---- setup ------------------------------------------------------------- */

static int curl_ready(void) {
    static int done = 0, rc = 0;
    if (!done) {
        /* Single-threaded callers (fmctl) or the follower's one thread:
         * curl_global_init is called before any other thread uses curl. */
        rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
        done = 1;
    }
    return rc;
}

int fm_mlflow_open(const char *tracking_uri, int timeout_ms, fm_mlflow_t **out) {
    *out = NULL;
    if (!tracking_uri || !*tracking_uri)
        return fm_fail(FM_EINVAL, "MLflow: empty tracking URI (set MLFLOW_TRACKING_URI or pass --mlflow URI)");
    if (strncmp(tracking_uri, "http://", 7) != 0 && strncmp(tracking_uri, "https://", 8) != 0)
        return fm_fail(FM_EUNSUPPORTED,
                       "MLflow tracking URI '%s': only http:// and https:// tracking servers are supported "
                       "(start one with `mlflow server`)",
                       tracking_uri);
    size_t n = strlen(tracking_uri);
    while (n > 0 && tracking_uri[n - 1] == '/')
        n--;
    fm_mlflow_t *mf = calloc(1, sizeof *mf);
    if (!mf)
        return fm_fail(FM_ENOMEM, "MLflow client");
    if (n >= sizeof mf->base) {
        free(mf);
        return fm_fail(FM_EINVAL, "MLflow tracking URI longer than %zu characters", sizeof mf->base - 1);
    }
    memcpy(mf->base, tracking_uri, n);
    mf->base[n] = '\0';
    mf->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
    if (curl_ready() != 0 || !(mf->curl = curl_easy_init())) {
        free(mf);
        return fm_fail(FM_EINTERNAL, "MLflow: libcurl could not be initialised");
    }
    const char *token = getenv("MLFLOW_TRACKING_TOKEN");
    char auth[600] = "";
    if (token && *token)
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    const char *user = getenv("MLFLOW_TRACKING_USERNAME"), *pass = getenv("MLFLOW_TRACKING_PASSWORD");
    if (user && *user)
        snprintf(mf->userpwd, sizeof mf->userpwd, "%s:%s", user, pass ? pass : "");
    const char *insecure = getenv("MLFLOW_TRACKING_INSECURE_TLS");
    mf->insecure = insecure && (!strcasecmp(insecure, "true") || !strcmp(insecure, "1"));
    mf->json_headers = curl_slist_append(NULL, "Content-Type: application/json");
    mf->json_headers = curl_slist_append(mf->json_headers, "Accept: application/json");
    mf->octet_headers = curl_slist_append(NULL, "Content-Type: application/octet-stream");
    if (auth[0]) {
        mf->json_headers = curl_slist_append(mf->json_headers, auth);
        mf->octet_headers = curl_slist_append(mf->octet_headers, auth);
    }
    if (!mf->json_headers || !mf->octet_headers) {
        fm_mlflow_close(mf);
        return fm_fail(FM_ENOMEM, "MLflow client headers");
    }
    *out = mf;
    return 0;
}

void fm_mlflow_close(fm_mlflow_t *mf) {
    if (!mf)
        return;
    if (mf->curl)
        curl_easy_cleanup(mf->curl);
    curl_slist_free_all(mf->json_headers);
    curl_slist_free_all(mf->octet_headers);
    free(mf);
}

const char *fm_mlflow_uri(const fm_mlflow_t *mf) { return mf->base; }
int fm_mlflow_transport_failed(const fm_mlflow_t *mf) { return mf->transport_failed; }
const char *fm_mlflow_error_code(const fm_mlflow_t *mf) { return mf->error_code; }

char *fm_mlflow_escape(fm_mlflow_t *mf, const char *s) {
    char *e = curl_easy_escape(mf->curl, s, 0);
    if (!e) {
        fm_fail(FM_ENOMEM, "URL escape");
        return NULL;
    }
    char *copy = strdup(e);
    curl_free(e);
    if (!copy)
        fm_fail(FM_ENOMEM, "URL escape");
    return copy;
}

/* ---- one HTTP exchange ------------------------------------------------- */

typedef struct membuf {
    char *data;
    size_t len, cap, limit;
    int overflow;
} membuf_t;

static size_t mem_write(char *ptr, size_t size, size_t nmemb, void *user) {
    membuf_t *b = user;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->limit) {
        b->overflow = 1;
        return 0; /* makes curl fail the transfer */
    }
    if (b->len + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n + 1)
            nc *= 2;
        char *p = realloc(b->data, nc);
        if (!p)
            return 0;
        b->data = p;
        b->cap = nc;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

typedef struct file_sink {
    FILE *f;
    int64_t written, limit;
    int overflow;
} file_sink_t;

static size_t file_write(char *ptr, size_t size, size_t nmemb, void *user) {
    file_sink_t *s = user;
    size_t n = size * nmemb;
    if (s->written + (int64_t)n > s->limit) {
        s->overflow = 1;
        return 0;
    }
    if (fwrite(ptr, 1, n, s->f) != n)
        return 0;
    s->written += (int64_t)n;
    return n;
}

static void common_options(fm_mlflow_t *mf, const char *url, char *errbuf) {
    CURL *c = mf->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L); /* no SIGALRM for timeouts: safe with threads and our handlers */
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "fmserve-mlflow/1");
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (mf->userpwd[0]) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERPWD, mf->userpwd);
    }
    if (mf->insecure) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
}

/* The endpoint for messages: the path without its query string. */
static void endpoint_of(const char *path, char *buf, size_t cap) {
    snprintf(buf, cap, "%s", path);
    buf[strcspn(buf, "?")] = '\0';
}

/* Maps a finished exchange to a status: curl failures, then HTTP codes
 * with MLflow's error body. */
static int finish_exchange(fm_mlflow_t *mf, CURLcode cc, const char *errbuf, const char *method, const char *path,
                           const char *body, size_t body_len) {
    char ep[256];
    endpoint_of(path, ep, sizeof ep);
    mf->error_code[0] = '\0';
    mf->transport_failed = 0;
    if (cc != CURLE_OK) {
        mf->transport_failed = 1;
        snprintf(mf->error_code, sizeof mf->error_code, "%s", cc == CURLE_OPERATION_TIMEDOUT ? "TIMEOUT" : "TRANSPORT");
        return fm_fail(cc == CURLE_OPERATION_TIMEDOUT ? FM_EDEADLINE : FM_ENETWORK, "MLflow %s %s%s: %s", method,
                       mf->base, ep, errbuf[0] ? errbuf : curl_easy_strerror(cc));
    }
    long http = 0;
    curl_easy_getinfo(mf->curl, CURLINFO_RESPONSE_CODE, &http);
    if (http >= 200 && http < 300)
        return 0;
    /* MLflow's error body: {"error_code": "...", "message": "..."}. */
    char message[512] = "";
    cJSON *j = body && body_len ? cJSON_ParseWithLength(body, body_len) : NULL;
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "error_code");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (cJSON_IsString(code))
        snprintf(mf->error_code, sizeof mf->error_code, "%s", code->valuestring);
    if (cJSON_IsString(msg))
        snprintf(message, sizeof message, "%s", msg->valuestring);
    else if (body && body_len) {
        /* Not MLflow's JSON (a proxy, another server): its first line. */
        snprintf(message, sizeof message, "%.*s", (int)(body_len < 200 ? body_len : 200), body);
        message[strcspn(message, "\r\n")] = '\0';
    }
    cJSON_Delete(j);
    int rc = http == 404 ? FM_ENOTFOUND : (http >= 500 || http == 429) ? FM_EUNAVAILABLE : FM_EINVAL;
    if (http == 401 || http == 403)
        rc = FM_EUNAUTHENTICATED;
    return fm_fail(rc, "MLflow %s %s%s: HTTP %ld%s%s%s%s", method, mf->base, ep, http, mf->error_code[0] ? " " : "",
                   mf->error_code, message[0] ? ": " : "", message);
}

int fm_mlflow_call(fm_mlflow_t *mf, const char *method, const char *path, const char *body, char **json_out) {
    if (json_out)
        *json_out = NULL;
    size_t ulen = strlen(mf->base) + strlen(path) + 1;
    char *url = malloc(ulen);
    if (!url)
        return fm_fail(FM_ENOMEM, "MLflow URL");
    snprintf(url, ulen, "%s%s", mf->base, path);
    char errbuf[CURL_ERROR_SIZE] = "";
    common_options(mf, url, errbuf);
    CURL *c = mf->curl;
    membuf_t reply = {.limit = MAX_REPLY_BYTES};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, mf->timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, mf->json_headers);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else {
        /* DELETE and PATCH carry their JSON in the body too (MLflow reads
         * DELETE parameters from the body, not the query string). */
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "{}");
    }
    CURLcode cc = curl_easy_perform(c);
    free(url);
    if (reply.overflow) {
        free(reply.data);
        return fm_fail(FM_EFORMAT, "MLflow %s %s: reply larger than %d MiB", method, path, MAX_REPLY_BYTES >> 20);
    }
    int rc = finish_exchange(mf, cc, errbuf, method, path, reply.data, reply.len);
    if (rc == 0 && json_out) {
        *json_out = reply.data ? reply.data : strdup("{}");
        if (!*json_out)
            return fm_fail(FM_ENOMEM, "MLflow reply");
        return 0;
    }
    free(reply.data);
    return rc;
}

/* A JSON call whose reply is parsed; *out (may be NULL) is the parsed
 * document, freed by the caller with cJSON_Delete. */
static int call_json(fm_mlflow_t *mf, const char *method, const char *path, cJSON *body, cJSON **out) {
    if (out)
        *out = NULL;
    char *text = NULL;
    if (body) {
        text = cJSON_PrintUnformatted(body);
        if (!text)
            return fm_fail(FM_ENOMEM, "MLflow request body");
    }
    char *reply = NULL;
    int rc = fm_mlflow_call(mf, method, path, text, out ? &reply : NULL);
    cJSON_free(text);
    if (rc || !out)
        return rc;
    *out = cJSON_Parse(reply);
    free(reply);
    if (!*out) {
        char ep[256];
        endpoint_of(path, ep, sizeof ep);
        return fm_fail(FM_EFORMAT, "MLflow %s %s%s: the reply is not JSON", method, mf->base, ep);
    }
    return 0;
}

static const char *json_str(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- experiments and runs ---------------------------------------------- */

static int experiment_by_name(fm_mlflow_t *mf, const char *name, char *id, size_t cap) {
    char *q = fm_mlflow_escape(mf, name);
    if (!q)
        return FM_ENOMEM;
    size_t n = strlen(q) + 96;
    char *path = malloc(n);
    if (!path) {
        free(q);
        return fm_fail(FM_ENOMEM, "MLflow path");
    }
    snprintf(path, n, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=%s", q);
    free(q);
    cJSON *r;
    int rc = call_json(mf, "GET", path, NULL, &r);
    free(path);
    if (rc)
        return rc;
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(r, "experiment");
    const char *eid = json_str(exp, "experiment_id");
    const char *stage = json_str(exp, "lifecycle_stage");
    if (!eid) {
        cJSON_Delete(r);
        return fm_fail(FM_EFORMAT, "MLflow experiments/get-by-name: no experiment_id in the reply");
    }
    if (stage && strcmp(stage, "deleted") == 0) {
        cJSON_Delete(r);
        return fm_fail(FM_EINVAL,
                       "MLflow experiment '%s' (id %s) is deleted: restore it in MLflow or choose another --experiment",
                       name, eid);
    }
    snprintf(id, cap, "%s", eid);
    cJSON_Delete(r);
    return 0;
}

int fm_mlflow_experiment(fm_mlflow_t *mf, const char *name, char *id, size_t cap) {
    int rc = experiment_by_name(mf, name, id, cap);
    if (rc != FM_ENOTFOUND)
        return rc;
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", name);
    cJSON *r;
    rc = call_json(mf, "POST", "/api/2.0/mlflow/experiments/create", body, &r);
    cJSON_Delete(body);
    if (rc == FM_EINVAL && strcmp(mf->error_code, "RESOURCE_ALREADY_EXISTS") == 0)
        return experiment_by_name(mf, name, id, cap); /* created by someone else meanwhile */
    if (rc)
        return rc;
    const char *eid = json_str(r, "experiment_id");
    if (!eid) {
        cJSON_Delete(r);
        return fm_fail(FM_EFORMAT, "MLflow experiments/create: no experiment_id in the reply");
    }
    snprintf(id, cap, "%s", eid);
    cJSON_Delete(r);
    fm_info("mlflow", "created experiment '%s' (id %s)", name, id);
    return 0;
}

static cJSON *kv_array(const fm_mlflow_kv_t *kv, int n, int cut) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "key", kv[i].key);
        const char *v = kv[i].value ? kv[i].value : "";
        if (cut && strlen(v) > FM_MLFLOW_MAX_PARAM_VALUE) {
            char buf[FM_MLFLOW_MAX_PARAM_VALUE + 1];
            memcpy(buf, v, FM_MLFLOW_MAX_PARAM_VALUE);
            buf[FM_MLFLOW_MAX_PARAM_VALUE] = '\0';
            cJSON_AddStringToObject(o, "value", buf);
        } else {
            cJSON_AddStringToObject(o, "value", v);
        }
        cJSON_AddItemToArray(a, o);
    }
    return a;
}

int fm_mlflow_run_create(fm_mlflow_t *mf, const char *experiment_id, const char *run_name,
                         const fm_mlflow_kv_t *tags, int ntags, fm_mlflow_run_t *out) {
    memset(out, 0, sizeof *out);
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "experiment_id", experiment_id);
    if (run_name && *run_name)
        cJSON_AddStringToObject(body, "run_name", run_name);
    cJSON_AddNumberToObject(body, "start_time", (double)now_ms());
    cJSON_AddItemToObject(body, "tags", kv_array(tags, ntags, 0));
    cJSON *r;
    int rc = call_json(mf, "POST", "/api/2.0/mlflow/runs/create", body, &r);
    cJSON_Delete(body);
    if (rc)
        return rc;
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "run"), "info");
    const char *id = json_str(info, "run_id"), *uri = json_str(info, "artifact_uri");
    if (!id || !uri) {
        cJSON_Delete(r);
        return fm_fail(FM_EFORMAT, "MLflow runs/create: the reply lacks run.info.run_id or artifact_uri");
    }
    snprintf(out->run_id, sizeof out->run_id, "%s", id);
    snprintf(out->experiment_id, sizeof out->experiment_id, "%s", experiment_id);
    snprintf(out->artifact_uri, sizeof out->artifact_uri, "%s", uri);
    cJSON_Delete(r);
    return 0;
}

int fm_mlflow_log_batch(fm_mlflow_t *mf, const char *run_id, const fm_mlflow_kv_t *params, int nparams,
                        const fm_mlflow_metric_t *metrics, int nmetrics, const fm_mlflow_kv_t *tags, int ntags) {
    int ip = 0, im = 0, it = 0;
    while (ip < nparams || im < nmetrics || it < ntags) {
        int np = nparams - ip < FM_MLFLOW_MAX_BATCH_PARAMS ? nparams - ip : FM_MLFLOW_MAX_BATCH_PARAMS;
        int nt = ntags - it < FM_MLFLOW_MAX_BATCH_TAGS ? ntags - it : FM_MLFLOW_MAX_BATCH_TAGS;
        int room = FM_MLFLOW_MAX_BATCH_ENTITIES - np - nt;
        int nm = nmetrics - im < room ? nmetrics - im : room;
        if (nm > FM_MLFLOW_MAX_BATCH_METRICS)
            nm = FM_MLFLOW_MAX_BATCH_METRICS;
        for (;;) {
            cJSON *body = cJSON_CreateObject();
            cJSON_AddStringToObject(body, "run_id", run_id);
            cJSON *ma = cJSON_AddArrayToObject(body, "metrics");
            for (int k = 0; k < nm; k++) {
                const fm_mlflow_metric_t *m = &metrics[im + k];
                /* JSON has no NaN or infinity; MLflow would refuse the batch. */
                if (!isfinite(m->value))
                    continue;
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "key", m->key);
                cJSON_AddNumberToObject(o, "value", m->value);
                cJSON_AddNumberToObject(o, "timestamp", (double)m->timestamp_ms);
                cJSON_AddNumberToObject(o, "step", (double)m->step);
                cJSON_AddItemToArray(ma, o);
            }
            cJSON_AddItemToObject(body, "params", kv_array(params + ip, np, 1));
            cJSON_AddItemToObject(body, "tags", kv_array(tags + it, nt, 0));
            char *text = cJSON_PrintUnformatted(body);
            cJSON_Delete(body);
            if (!text)
                return fm_fail(FM_ENOMEM, "MLflow log-batch body");
            if (strlen(text) > MAX_BATCH_BODY_BYTES && nm > 1) {
                /* Only very long keys get here: halve the metrics and retry. */
                cJSON_free(text);
                nm /= 2;
                continue;
            }
            int rc = fm_mlflow_call(mf, "POST", "/api/2.0/mlflow/runs/log-batch", text, NULL);
            cJSON_free(text);
            if (rc)
                return rc;
            break;
        }
        ip += np;
        it += nt;
        im += nm;
    }
    return 0;
}

int fm_mlflow_run_end(fm_mlflow_t *mf, const char *run_id, const char *status) {
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "run_id", run_id);
    cJSON_AddStringToObject(body, "status", status);
    if (strcmp(status, "RUNNING") != 0 && strcmp(status, "SCHEDULED") != 0)
        cJSON_AddNumberToObject(body, "end_time", (double)now_ms());
    int rc = call_json(mf, "POST", "/api/2.0/mlflow/runs/update", body, NULL);
    cJSON_Delete(body);
    return rc;
}

/* ---- artifacts --------------------------------------------------------- */

/* Where an artifact URI points: the proxy (mlflow-artifacts:), a local
 * directory, or something this client cannot reach. */
typedef enum { ART_PROXY, ART_LOCAL, ART_OTHER } art_kind_t;

static art_kind_t artifact_kind(const char *uri, const char **rest) {
    if (strncmp(uri, "mlflow-artifacts:", 17) == 0) {
        const char *p = uri + 17;
        if (strncmp(p, "//", 2) == 0) { /* mlflow-artifacts://host:port/path: the host is the tracking server */
            p = strchr(p + 2, '/');
            if (!p)
                p = "";
        }
        while (*p == '/')
            p++;
        *rest = p;
        return ART_PROXY;
    }
    if (strncmp(uri, "file://", 7) == 0) {
        *rest = uri + 7;
        return ART_LOCAL;
    }
    if (strncmp(uri, "file:", 5) == 0) {
        *rest = uri + 5;
        return ART_LOCAL;
    }
    if (uri[0] == '/') {
        *rest = uri;
        return ART_LOCAL;
    }
    *rest = uri;
    return ART_OTHER;
}

static int check_rel_path(const char *rel) {
    if (!*rel || rel[0] == '/' || strstr(rel, "..") || strchr(rel, '?') || strchr(rel, '#'))
        return fm_fail(FM_EINVAL, "artifact path '%s' must be relative, without '..'", rel);
    return 0;
}

/* Creates every directory of `path`'s parent. */
static int mkdirs_for(const char *path) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return fm_fail(FM_EIO, "%s: cannot create the directory: %s", buf, strerror(errno));
        *p = '/';
    }
    return 0;
}

static int copy_file(const char *from, const char *to, int64_t max_bytes) {
    int rc = mkdirs_for(to);
    if (rc)
        return rc;
    FILE *in = fopen(from, "rb");
    if (!in)
        return fm_fail(errno == ENOENT ? FM_ENOTFOUND : FM_EIO, "%s: %s", from, strerror(errno));
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", to, (int)getpid());
    FILE *outf = fopen(tmp, "wb");
    if (!outf) {
        fclose(in);
        return fm_fail(FM_EIO, "%s: %s", tmp, strerror(errno));
    }
    char buf[1 << 16];
    size_t n;
    int64_t total = 0;
    rc = 0;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0) {
        total += (int64_t)n;
        if (max_bytes > 0 && total > max_bytes)
            rc = fm_fail(FM_EFORMAT, "%s: larger than %lld bytes", from, (long long)max_bytes);
        else if (fwrite(buf, 1, n, outf) != n)
            rc = fm_fail(FM_EIO, "%s: write failed: %s", tmp, strerror(errno));
    }
    if (rc == 0 && ferror(in))
        rc = fm_fail(FM_EIO, "%s: read failed", from);
    fclose(in);
    if (fclose(outf) != 0 && rc == 0)
        rc = fm_fail(FM_EIO, "%s: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, to) != 0)
        rc = fm_fail(FM_EIO, "rename %s -> %s: %s", tmp, to, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}

static char *proxy_url(fm_mlflow_t *mf, const char *root, const char *rel) {
    size_t n = strlen(mf->base) + strlen(root) + strlen(rel) + 64;
    char *url = malloc(n);
    if (!url) {
        fm_fail(FM_ENOMEM, "MLflow URL");
        return NULL;
    }
    snprintf(url, n, "%s/api/2.0/mlflow-artifacts/artifacts/%s%s%s", mf->base, root, *root ? "/" : "", rel);
    return url;
}

int fm_mlflow_upload(fm_mlflow_t *mf, const char *artifact_uri, const char *rel_path, const char *local_path) {
    int rc = check_rel_path(rel_path);
    if (rc)
        return rc;
    const char *root;
    art_kind_t kind = artifact_kind(artifact_uri, &root);
    if (kind == ART_LOCAL) {
        char to[1100];
        snprintf(to, sizeof to, "%s/%s", root, rel_path);
        return copy_file(local_path, to, 0);
    }
    if (kind == ART_OTHER)
        return fm_fail(FM_EUNSUPPORTED,
                       "MLflow artifact store '%s' is not reachable from here: start `mlflow server` with artifact "
                       "proxying (the default, --serve-artifacts) so uploads go through the tracking server",
                       artifact_uri);
    FILE *f = fopen(local_path, "rb");
    if (!f)
        return fm_fail(FM_EIO, "%s: %s", local_path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        fclose(f);
        return fm_fail(FM_EIO, "%s: %s", local_path, strerror(errno));
    }
    char *url = proxy_url(mf, root, rel_path);
    if (!url) {
        fclose(f);
        return FM_ENOMEM;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    common_options(mf, url, errbuf);
    CURL *c = mf->curl;
    membuf_t reply = {.limit = 1 << 20};
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L); /* PUT */
    curl_easy_setopt(c, CURLOPT_READDATA, f);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, mf->octet_headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, mem_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &reply);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, TRANSFER_STALL_S);
    CURLcode cc = curl_easy_perform(c);
    fclose(f);
    char path[1200];
    snprintf(path, sizeof path, "/api/2.0/mlflow-artifacts/artifacts/%s/%s", root, rel_path);
    rc = finish_exchange(mf, cc, errbuf, "PUT", path, reply.data, reply.len);
    free(reply.data);
    free(url);
    return rc;
}

int fm_mlflow_download(fm_mlflow_t *mf, const char *artifact_uri, const char *rel_path, const char *local_path,
                       int64_t max_bytes) {
    int rc = check_rel_path(rel_path);
    if (rc)
        return rc;
    const char *root;
    art_kind_t kind = artifact_kind(artifact_uri, &root);
    if (kind == ART_LOCAL) {
        char from[1100];
        snprintf(from, sizeof from, "%s/%s", root, rel_path);
        return copy_file(from, local_path, max_bytes);
    }
    if (kind == ART_OTHER)
        return fm_fail(FM_EUNSUPPORTED, "artifact URI '%s': only mlflow-artifacts: and local paths can be downloaded",
                       artifact_uri);
    if ((rc = mkdirs_for(local_path)) != 0)
        return rc;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.part.%d", local_path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return fm_fail(FM_EIO, "%s: %s", tmp, strerror(errno));
    char *url = proxy_url(mf, root, rel_path);
    if (!url) {
        fclose(f);
        unlink(tmp);
        return FM_ENOMEM;
    }
    char errbuf[CURL_ERROR_SIZE] = "";
    common_options(mf, url, errbuf);
    CURL *c = mf->curl;
    file_sink_t sink = {.f = f, .limit = max_bytes > 0 ? max_bytes : INT64_MAX};
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, file_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1024L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, TRANSFER_STALL_S);
    CURLcode cc = curl_easy_perform(c);
    free(url);
    int close_failed = fclose(f) != 0;
    char path[1200];
    snprintf(path, sizeof path, "/api/2.0/mlflow-artifacts/artifacts/%s/%s", root, rel_path);
    if (sink.overflow)
        rc = fm_fail(FM_EFORMAT, "MLflow artifact %s/%s is larger than %lld bytes", artifact_uri, rel_path,
                     (long long)max_bytes);
    else {
        long http = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &http);
        /* An error reply's body went into the file: read it back for the message. */
        if (cc == CURLE_OK && (http < 200 || http >= 300)) {
            char body[1024] = "";
            FILE *e = fopen(tmp, "rb");
            size_t n = e ? fread(body, 1, sizeof body - 1, e) : 0;
            if (e)
                fclose(e);
            rc = finish_exchange(mf, cc, errbuf, "GET", path, body, n);
        } else {
            rc = finish_exchange(mf, cc, errbuf, "GET", path, NULL, 0);
        }
    }
    if (rc == 0 && close_failed)
        rc = fm_fail(FM_EIO, "%s: write failed", tmp);
    if (rc == 0 && rename(tmp, local_path) != 0)
        rc = fm_fail(FM_EIO, "rename %s -> %s: %s", tmp, local_path, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}

/* ---- registry ---------------------------------------------------------- */

int fm_mlflow_register(fm_mlflow_t *mf, const char *model_name, const char *source, const char *run_id,
                       const char *description, char *version, size_t cap) {
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", model_name);
    int rc = call_json(mf, "POST", "/api/2.0/mlflow/registered-models/create", body, NULL);
    cJSON_Delete(body);
    if (rc && !(rc == FM_EINVAL && strcmp(mf->error_code, "RESOURCE_ALREADY_EXISTS") == 0))
        return rc;
    body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", model_name);
    cJSON_AddStringToObject(body, "source", source);
    if (run_id && *run_id)
        cJSON_AddStringToObject(body, "run_id", run_id);
    if (description && *description)
        cJSON_AddStringToObject(body, "description", description);
    cJSON *r;
    rc = call_json(mf, "POST", "/api/2.0/mlflow/model-versions/create", body, &r);
    cJSON_Delete(body);
    if (rc)
        return rc;
    const char *v = json_str(cJSON_GetObjectItemCaseSensitive(r, "model_version"), "version");
    if (!v) {
        cJSON_Delete(r);
        return fm_fail(FM_EFORMAT, "MLflow model-versions/create: no model_version.version in the reply");
    }
    snprintf(version, cap, "%s", v);
    cJSON_Delete(r);
    return 0;
}

int fm_mlflow_set_alias(fm_mlflow_t *mf, const char *model_name, const char *alias, const char *version) {
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", model_name);
    cJSON_AddStringToObject(body, "alias", alias);
    cJSON_AddStringToObject(body, "version", version);
    int rc = call_json(mf, "POST", "/api/2.0/mlflow/registered-models/alias", body, NULL);
    cJSON_Delete(body);
    return rc;
}

int fm_mlflow_set_version_tag(fm_mlflow_t *mf, const char *model_name, const char *version, const char *key,
                              const char *value) {
    cJSON *body = cJSON_CreateObject();
    cJSON_AddStringToObject(body, "name", model_name);
    cJSON_AddStringToObject(body, "version", version);
    cJSON_AddStringToObject(body, "key", key);
    cJSON_AddStringToObject(body, "value", value);
    int rc = call_json(mf, "POST", "/api/2.0/mlflow/model-versions/set-tag", body, NULL);
    cJSON_Delete(body);
    return rc;
}
