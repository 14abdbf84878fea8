/* fm_config.c: the option table and everything driven from it: parsing of
 * flags, environment and config file, bounds and cross-option checks, help
 * text and the documentation table. */
#include "fm_config.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "fm_log.h"

#define F(field) offsetof(fm_config_t, field), sizeof(((fm_config_t *)0)->field)

/* One row per option. Keep the help text a full sentence: it is the
 * documentation (docs/configuration.md is generated from this table). */
static const fm_option_t options[] = {
    {"listen_address", "--listen", "FM_LISTEN", FM_OPT_STRING, "0.0.0.0", 0, 0, NULL, F(listen_address), 0,
     "Address the RPC and HTTP ports bind to (IPv4 or IPv6 literal)."},
    {"port", "--port", "FM_PORT", FM_OPT_INT, "7070", 0, 65535, NULL, F(port), 0,
     "TCP port of the MessagePack-RPC protocol; 0 picks a free port (see ports_file)."},
    {"http_port", "--http-port", "FM_HTTP_PORT", FM_OPT_INT, "8080", 0, 65535, NULL, F(http_port), 0,
     "TCP port of /health, /ready and /metrics; 0 picks a free port."},
    {"ports_file", "--ports-file", "FM_PORTS_FILE", FM_OPT_STRING, "", 0, 0, NULL, F(ports_file), 0,
     "When set, the bound ports are written there as \"RPC_PORT HTTP_PORT\" once the models are loaded and the "
     "ports listen (written atomically)."},
    {"config_file", "--config", "FM_CONFIG", FM_OPT_STRING, "", 0, 0, NULL, F(config_file), 0,
     "Optional file of `name = value` lines using the names in this table; re-read on SIGHUP."},
    {"stable_model", "--stable-model", "FM_STABLE_MODEL", FM_OPT_STRING, "models/v1", 0, 0, NULL, F(stable_model),
     FM_OPT_RELOAD, "Model directory (model.safetensors + model.json) served as the stable version."},
    {"canary_model", "--canary-model", "FM_CANARY_MODEL", FM_OPT_STRING, "models/v2", 0, 0, NULL, F(canary_model),
     FM_OPT_RELOAD, "Model directory served as the canary version; empty runs without a canary."},
    {"model_source", "--models-from", "FM_MODEL_SOURCE", FM_OPT_ENUM, "dirs", 0, 0, "dirs|registry", F(model_source),
     0,
     "Where the stable and canary versions come from: the two directories above (dirs), or the model registry in "
     "PostgreSQL (registry; needs database_url), followed live through LISTEN/NOTIFY (see docs/lifecycle.md)."},
    {"model_cache_dir", "--model-cache-dir", "FM_MODEL_CACHE_DIR", FM_OPT_STRING, "/tmp/fmserve-models", 0, 0, NULL,
     F(model_cache_dir), 0,
     "Registry mode: where versions stored in MLflow (mlflow-artifacts:) are downloaded, one directory per "
     "weights SHA-256."},
    {"mlflow_tracking_uri", "--mlflow-tracking-uri", "MLFLOW_TRACKING_URI", FM_OPT_STRING, "", 0, 0, NULL,
     F(mlflow_tracking_uri), 0,
     "Registry mode: the MLflow tracking server that serves mlflow-artifacts: model locations."},
    {"backend", "--backend", "FM_BACKEND", FM_OPT_ENUM, "auto", 0, 0, "auto|cpu|cuda", F(backend), 0,
     "Compute backend: cuda when built and a GPU is present (auto), or forced."},
    {"cuda_device", "--cuda-device", "FM_CUDA_DEVICE", FM_OPT_INT, "0", 0, 63, NULL, F(cuda_device), 0,
     "CUDA device ordinal."},
    {"cuda_streams", "--cuda-streams", "FM_CUDA_STREAMS", FM_OPT_INT, "2", 1, 8, NULL, F(cuda_streams), 0,
     "CUDA streams, each with its own buffers; up to twice this many batches are in flight."},
    {"precision", "--precision", "FM_PRECISION", FM_OPT_ENUM, "fp32", 0, 0, "fp32|tf32|fp16|bf16", F(precision), 0,
     "Arithmetic of the compute backend (the CPU engine supports fp32 only)."},
    {"cuda_graphs", "--cuda-graphs", "FM_CUDA_GRAPHS", FM_OPT_BOOL, "true", 0, 0, NULL, F(cuda_graphs), 0,
     "Capture one CUDA graph per batch-size bucket."},
    {"cpu_workers", "--cpu-workers", "FM_CPU_WORKERS", FM_OPT_INT, "0", 0, 256, NULL, F(cpu_workers), 0,
     "CPU backend: worker threads, each running one batch at a time; 0 = one per core."},
    {"cpu_threads_per_batch", "--cpu-threads-per-batch", "FM_CPU_THREADS_PER_BATCH", FM_OPT_INT, "1", 0, 256, NULL,
     F(cpu_threads_per_batch), 0, "CPU backend: threads one batch may use; 0 = every core."},
    {"max_batch_size", "--max-batch-size", "FM_MAX_BATCH_SIZE", FM_OPT_INT, "64", 1, 4096, NULL, F(max_batch_size), 0,
     "Largest batch, in images, handed to the backend; 1 turns dynamic batching off."},
    {"max_queue_delay_us", "--max-queue-delay-us", "FM_MAX_QUEUE_DELAY_US", FM_OPT_INT, "0", 0, 1000000, NULL,
     F(max_queue_delay_us), FM_OPT_RELOAD,
     "How long a queued image may wait for a fuller batch; 0 dispatches what is queued as soon as an executor is "
     "free (Triton's default)."},
    {"max_queue_size", "--max-queue-size", "FM_MAX_QUEUE_SIZE", FM_OPT_INT, "16384", 1, 16777216, NULL,
     F(max_queue_size), FM_OPT_RELOAD,
     "Images waiting per model version; a request that does not fit is answered OVERLOADED at once."},
    {"ab_test_ratio", "--ab-test-ratio", "AB_TEST_RATIO", FM_OPT_DOUBLE, "0.0", 0, 1, NULL, F(ab_test_ratio),
     FM_OPT_RELOAD,
     "Share of unpinned requests sent to the canary (a request with a key is routed by a hash of the key)."},
    {"auth_token", NULL, "FM_AUTH_TOKEN", FM_OPT_STRING, "", 0, 0, NULL, F(auth_token), FM_OPT_SECRET,
     "When set, a connection must call auth with this token (or the admin token) before anything but health, "
     "ready and auth."},
    {"admin_token", NULL, "FM_ADMIN_TOKEN", FM_OPT_STRING, "", 0, 0, NULL, F(admin_token), FM_OPT_SECRET,
     "Token that authenticates a connection as admin (needed by set_split); empty disables admin methods."},
    {"max_message_bytes", "--max-message-bytes", "FM_MAX_MESSAGE_BYTES", FM_OPT_INT, "4194304", 1024, 268435456, NULL,
     F(max_message_bytes), 0,
     "Largest request frame; a frame declaring more is refused from its header and the connection closed."},
    {"max_images_per_request", "--max-images-per-request", "FM_MAX_IMAGES_PER_REQUEST", FM_OPT_INT, "4096", 1, 65536,
     NULL, F(max_images_per_request), 0, "Most images in one predict request."},
    {"max_connections", "--max-connections", "FM_MAX_CONNECTIONS", FM_OPT_INT, "1024", 1, 100000, NULL,
     F(max_connections), 0, "Open RPC connections; one more is told OVERLOADED and closed."},
    {"max_inflight_per_connection", "--max-inflight-per-connection", "FM_MAX_INFLIGHT_PER_CONNECTION", FM_OPT_INT,
     "128", 1, 65536, NULL, F(max_inflight_per_connection), 0,
     "Unanswered requests per connection; at the limit the server stops reading that socket until replies drain."},
    {"max_write_buffer_bytes", "--max-write-buffer-bytes", "FM_MAX_WRITE_BUFFER_BYTES", FM_OPT_INT, "8388608", 65536,
     1073741824, NULL, F(max_write_buffer_bytes), 0,
     "Reply bytes queued for a client that is not reading; above it the server stops reading that socket."},
    {"drain_timeout_ms", "--drain-timeout-ms", "FM_DRAIN_TIMEOUT_MS", FM_OPT_INT, "30000", 0, 3600000, NULL,
     F(drain_timeout_ms), 0,
     "Grace period after SIGTERM/SIGINT for accepted requests to finish before the rest are answered UNAVAILABLE."},
    {"log_level", "--log-level", "FM_LOG_LEVEL", FM_OPT_ENUM, "info", 0, 0, "debug|info|warn|error", F(log_level),
     FM_OPT_RELOAD, "Least severe log record written to stderr."},
    {"database_url", "--database-url", "FM_DATABASE_URL", FM_OPT_STRING, "", 0, 0, NULL, F(database_url),
     FM_OPT_SECRET,
     "PostgreSQL (libpq URI or key=value string, migrated with `fmctl db migrate`; keep passwords in PGPASSWORD or "
     "~/.pgpass) of the prediction log, where every prediction, a sample of the images and the feedback RPC go, and "
     "of the model registry in registry mode. Empty: logging off, feedback refused."},
    {"spool_dir", "--spool-dir", "FM_SPOOL_DIR", FM_OPT_STRING, "/var/spool/fmserve", 0, 0, NULL, F(spool_dir),
     0,
     "Local directory (one per fmserve process) where the prediction log spools batches while PostgreSQL is down "
     "or slow, replayed exactly once when it is back; empty: no spool (batches wait in the memory buffer)."},
    {"spool_max_mb", "--spool-max-mb", "FM_SPOOL_MAX_MB", FM_OPT_INT, "0", 0, 16777216, NULL, F(spool_max_mb), 0,
     "Largest size of the spool's files in MiB; beyond it batches are dropped and counted; 0 = until the disk is "
     "full."},
    {"sample_rate", "--sample-rate", "FM_SAMPLE_RATE", FM_OPT_DOUBLE, "0.05", 0, 1, NULL, F(sample_rate), 0,
     "Share of logged images whose 784 pixels are kept in sampled_inputs (drift checks read them)."},
    {"log_predictions", "--log-predictions", "FM_LOG_PREDICTIONS", FM_OPT_DOUBLE, "1.0", 0, 1, NULL,
     F(log_predictions), 0, "Share of predict requests whose predictions are logged (each request all or nothing)."},
    {"log_buffer_mb", "--log-buffer-mb", "FM_LOG_BUFFER_MB", FM_OPT_INT, "64", 1, 65536, NULL, F(log_buffer_mb), 0,
     "Memory for log rows not yet written or spooled, in MiB; above half of it batches go to the spool, and when "
     "it is full rows are dropped and counted."},
    {"log_batch_rows", "--log-batch-rows", "FM_LOG_BATCH_ROWS", FM_OPT_INT, "10000", 1, 1000000, NULL,
     F(log_batch_rows), 0, "Most predictions per COPY transaction of the prediction log."},
    {"log_flush_ms", "--log-flush-ms", "FM_LOG_FLUSH_MS", FM_OPT_INT, "100", 0, 60000, NULL, F(log_flush_ms), 0,
     "Longest a logged prediction waits in memory before its batch is sent."},
    {"log_connections", "--log-connections", "FM_LOG_CONNECTIONS", FM_OPT_INT, "2", 1, 64, NULL,
     F(log_connections), 0,
     "PostgreSQL connections the prediction log writes batches through at once (PostgreSQL parses each COPY on one "
     "core)."},
};
#define NOPTIONS ((int)(sizeof options / sizeof options[0]))
_Static_assert(sizeof options / sizeof options[0] <= sizeof(((fm_config_t *)0)->source) / sizeof(const char *),
               "fm_config_t.source needs a slot per option");

const fm_option_t *fm_config_options(int *count) {
    *count = NOPTIONS;
    return options;
}

static char *field(fm_config_t *cfg, const fm_option_t *o) { return (char *)cfg + o->offset; }

static const char *type_name(const fm_option_t *o) {
    switch (o->type) {
    case FM_OPT_INT: return "int";
    case FM_OPT_DOUBLE: return "float";
    case FM_OPT_STRING: return "string";
    case FM_OPT_BOOL: return "bool";
    case FM_OPT_ENUM: return "enum";
    }
    return "?";
}

/* "--port (FM_PORT)" for messages: the names a user can act on. */
static void option_label(const fm_option_t *o, char *buf, size_t cap) {
    if (o->flag)
        snprintf(buf, cap, "%s (%s, config key %s)", o->flag, o->env, o->name);
    else
        snprintf(buf, cap, "%s (config key %s)", o->env, o->name);
}

static int set_value(fm_config_t *cfg, int idx, const char *value, const char *source) {
    const fm_option_t *o = &options[idx];
    char label[160];
    option_label(o, label, sizeof label);
    char *dst = field(cfg, o);
    switch (o->type) {
    case FM_OPT_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (!*value || *end || errno)
            return fm_fail(FM_EINVAL, "%s: '%s' from %s is not an integer", label, value, source);
        if ((double)v < o->min || (double)v > o->max)
            return fm_fail(FM_EINVAL, "%s: %lld from %s is outside %.0f..%.0f", label, v, source, o->min, o->max);
        *(int *)dst = (int)v;
        break;
    }
    case FM_OPT_DOUBLE: {
        char *end;
        errno = 0;
        double v = strtod(value, &end);
        if (!*value || *end || errno || !isfinite(v))
            return fm_fail(FM_EINVAL, "%s: '%s' from %s is not a number", label, value, source);
        if (v < o->min || v > o->max)
            return fm_fail(FM_EINVAL, "%s: %g from %s is outside %g..%g", label, v, source, o->min, o->max);
        *(double *)dst = v;
        break;
    }
    case FM_OPT_BOOL: {
        static const char *const yes[] = {"1", "true", "yes", "on"}, *const no[] = {"0", "false", "no", "off"};
        int v = -1;
        for (int i = 0; i < 4; i++) {
            if (strcasecmp(value, yes[i]) == 0)
                v = 1;
            if (strcasecmp(value, no[i]) == 0)
                v = 0;
        }
        if (v < 0)
            return fm_fail(FM_EINVAL, "%s: '%s' from %s is not a boolean (true/false, 1/0, yes/no, on/off)", label,
                           value, source);
        *(int *)dst = v;
        break;
    }
    case FM_OPT_ENUM: {
        size_t n = strlen(value);
        const char *c = o->choices;
        int ok = 0;
        while (*c) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && strncmp(c, value, n) == 0)
                ok = 1;
            c += len + (bar ? 1 : 0);
        }
        if (!ok || n + 1 > o->size)
            return fm_fail(FM_EINVAL, "%s: '%s' from %s is not one of %s", label, value, source, o->choices);
        memcpy(dst, value, n + 1);
        break;
    }
    case FM_OPT_STRING: {
        size_t n = strlen(value);
        if (n + 1 > o->size)
            return fm_fail(FM_EINVAL, "%s: value from %s is %zu characters, the limit is %zu", label, source, n,
                           o->size - 1);
        memcpy(dst, value, n + 1);
        break;
    }
    }
    cfg->source[idx] = source;
    return 0;
}

static int find_option(const char *name, size_t len) {
    for (int i = 0; i < NOPTIONS; i++)
        if (strlen(options[i].name) == len && strncmp(options[i].name, name, len) == 0)
            return i;
    return -1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

static int read_file(fm_config_t *cfg, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f)
        return fm_fail(FM_EINVAL, "config file %s: %s", path, strerror(errno));
    char line[2048];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            rc = fm_fail(FM_EINVAL, "config file %s:%d: line longer than %zu characters", path, lineno,
                         sizeof line - 2);
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = fm_fail(FM_EINVAL, "config file %s:%d: expected 'name = value'", path, lineno);
            break;
        }
        *eq = '\0';
        char *name = trim(s), *value = trim(eq + 1);
        size_t vl = strlen(value);
        if (vl >= 2 && value[0] == '"' && value[vl - 1] == '"') {
            value[vl - 1] = '\0';
            value++;
        }
        int idx = find_option(name, strlen(name));
        if (idx < 0) {
            rc = fm_fail(FM_EINVAL, "config file %s:%d: unknown option '%s' (see fmserve --help)", path, lineno, name);
            break;
        }
        if (strcmp(options[idx].name, "config_file") == 0) {
            rc = fm_fail(FM_EINVAL, "config file %s:%d: config_file cannot be set inside a config file", path, lineno);
            break;
        }
        char src[600];
        snprintf(src, sizeof src, "%s:%d", path, lineno);
        /* cfg->source keeps static strings only, so the line goes into the
         * error detail rather than the source. */
        rc = set_value(cfg, idx, value, "file");
        if (rc) {
            char detail[512];
            snprintf(detail, sizeof detail, "%s", fm_last_error());
            fm_fail(rc, "%s (%s)", detail, src);
        }
    }
    fclose(f);
    return rc;
}

static int cross_checks(fm_config_t *cfg) {
    long long need = (long long)cfg->max_images_per_request * 784 + 1024;
    if (need > cfg->max_message_bytes)
        return fm_fail(FM_EINVAL,
                       "--max-images-per-request %d needs --max-message-bytes of at least %lld (it is %d): %d images "
                       "of 784 bytes plus 1024 bytes of framing",
                       cfg->max_images_per_request, need, cfg->max_message_bytes, cfg->max_images_per_request);
    if (cfg->max_images_per_request > cfg->max_queue_size)
        return fm_fail(FM_EINVAL, "--max-queue-size %d is smaller than --max-images-per-request %d: a largest request "
                                  "could never be queued",
                       cfg->max_queue_size, cfg->max_images_per_request);
    if (cfg->port != 0 && cfg->port == cfg->http_port)
        return fm_fail(FM_EINVAL, "--port and --http-port are both %d; they must differ", cfg->port);
    if (!cfg->stable_model[0] && strcmp(cfg->model_source, "registry") != 0)
        return fm_fail(FM_EINVAL, "--stable-model (FM_STABLE_MODEL) is empty: a stable model is required");
    if (strcmp(cfg->backend, "cpu") == 0 && strcmp(cfg->precision, "fp32") != 0)
        return fm_fail(FM_EINVAL, "--precision %s needs the cuda backend; the cpu backend computes in fp32",
                       cfg->precision);
    if (strcmp(cfg->model_source, "registry") == 0 && !cfg->database_url[0])
        return fm_fail(FM_EINVAL, "--models-from registry (FM_MODEL_SOURCE) needs --database-url (FM_DATABASE_URL): "
                                  "the registry's PostgreSQL database");
    if (cfg->admin_token[0] && cfg->auth_token[0] && strcmp(cfg->admin_token, cfg->auth_token) == 0)
        return fm_fail(FM_EINVAL, "FM_ADMIN_TOKEN equals FM_AUTH_TOKEN; the admin token must differ");
    return 0;
}

static int load_all(fm_config_t *cfg, int argc, char **argv, fm_config_action_t *action) {
    memset(cfg, 0, sizeof *cfg);
    cfg->argc = argc;
    cfg->argv = argv;
    *action = FM_CONFIG_RUN;
    for (int i = 0; i < NOPTIONS; i++) {
        int rc = set_value(cfg, i, options[i].def, "default");
        if (rc)
            return fm_fail(FM_EINTERNAL, "bad default in the option table: %s", fm_last_error());
    }
    /* Pass 1 over argv: actions, and where the config file is. */
    const char *file = getenv("FM_CONFIG");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            *action = FM_CONFIG_HELP;
        else if (strcmp(a, "--config-markdown") == 0)
            *action = FM_CONFIG_MARKDOWN;
        else if (strcmp(a, "--version") == 0)
            *action = FM_CONFIG_VERSION;
        else if (strcmp(a, "--config") == 0 && i + 1 < argc)
            file = argv[i + 1];
        else if (strncmp(a, "--config=", 9) == 0)
            file = a + 9;
    }
    if (*action != FM_CONFIG_RUN)
        return 0;
    int rc;
    if (file && *file && (rc = read_file(cfg, file)) != 0)
        return rc;
    for (int i = 0; i < NOPTIONS; i++) {
        const char *v = getenv(options[i].env);
        if (v && (rc = set_value(cfg, i, v, "env")) != 0)
            return rc;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0)
            return fm_fail(FM_EINVAL, "unexpected argument '%s' (options start with --; see fmserve --help)", a);
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        int idx = -1, negated = 0;
        for (int k = 0; k < NOPTIONS; k++) {
            const char *fl = options[k].flag;
            if (!fl)
                continue;
            if (strlen(fl) == nlen && strncmp(fl, a, nlen) == 0)
                idx = k;
            else if (options[k].type == FM_OPT_BOOL && !eq && nlen == strlen(fl) + 3 && strncmp(a, "--no-", 5) == 0 &&
                     strcmp(a + 5, fl + 2) == 0) {
                idx = k;
                negated = 1;
            }
        }
        if (idx < 0)
            return fm_fail(FM_EINVAL, "unknown option '%.*s' (see fmserve --help)", (int)nlen, a);
        const char *value;
        if (eq)
            value = eq + 1;
        else if (options[idx].type == FM_OPT_BOOL)
            value = negated ? "false" : "true";
        else if (i + 1 < argc)
            value = argv[++i];
        else
            return fm_fail(FM_EINVAL, "%s needs a value", options[idx].flag);
        if ((rc = set_value(cfg, idx, value, "flag")) != 0)
            return rc;
    }
    return cross_checks(cfg);
}

int fm_config_load(fm_config_t *cfg, int argc, char **argv, fm_config_action_t *action) {
    return load_all(cfg, argc, argv, action);
}

int fm_config_reload(const fm_config_t *current, fm_config_t *out) {
    fm_config_action_t action;
    return load_all(out, current->argc, current->argv, &action);
}

void fm_config_print_help(FILE *f) {
    fprintf(f, "usage: fmserve [options]\n\n"
               "Serves Fashion-MNIST classifiers over MessagePack-RPC (see docs/protocol.md),\n"
               "with /health, /ready and /metrics on the HTTP port.\n\n"
               "Every option can also be set by its environment variable or, by name, in the\n"
               "--config file. Precedence: flag > environment > config file > default.\n"
               "  --help               this text\n"
               "  --config-markdown    the option table as Markdown (docs/configuration.md)\n"
               "  --version            the version\n\n");
    for (int i = 0; i < NOPTIONS; i++) {
        const fm_option_t *o = &options[i];
        char left[96];
        if (o->flag)
            snprintf(left, sizeof left, "%s %s", o->flag,
                     o->type == FM_OPT_BOOL ? "[=BOOL]" : o->type == FM_OPT_ENUM ? o->choices : "VALUE");
        else
            snprintf(left, sizeof left, "(env only)");
        fprintf(f, "  %-44s %s\n", left, o->env);
        fprintf(f, "      %s", o->help);
        if (o->flags & FM_OPT_SECRET)
            fprintf(f, " [secret]\n");
        else
            fprintf(f, " [default: %s%s]\n", o->def[0] ? o->def : "empty", (o->flags & FM_OPT_RELOAD) ? "; SIGHUP" : "");
    }
}

/* Appends printf output to a growing string. */
static void sappend(char **s, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void sappend(char **s, size_t *len, size_t *cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (*len + (size_t)n + 1 > *cap) {
        size_t nc = (*cap ? *cap : 1024);
        while (*len + (size_t)n + 1 > nc)
            nc *= 2;
        char *p = realloc(*s, nc);
        if (!p)
            return;
        *s = p;
        *cap = nc;
    }
    va_start(ap, fmt);
    vsnprintf(*s + *len, *cap - *len, fmt, ap);
    va_end(ap);
    *len += (size_t)n;
}

char *fm_config_markdown(void) {
    char *s = NULL;
    size_t len = 0, cap = 0;
    sappend(&s, &len, &cap, "| Name | Flag | Environment | Type | Default | Bounds | SIGHUP | Description |\n");
    sappend(&s, &len, &cap, "|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < NOPTIONS; i++) {
        const fm_option_t *o = &options[i];
        char bounds[64] = "";
        if (o->type == FM_OPT_INT)
            snprintf(bounds, sizeof bounds, "%.0f..%.0f", o->min, o->max);
        else if (o->type == FM_OPT_DOUBLE)
            snprintf(bounds, sizeof bounds, "%g..%g", o->min, o->max);
        else if (o->type == FM_OPT_ENUM)
            snprintf(bounds, sizeof bounds, "%s", o->choices);
        char choices[64];
        snprintf(choices, sizeof choices, "%s", bounds);
        /* A literal | would split the Markdown cell. */
        char esc[96];
        size_t k = 0;
        for (const char *c = choices; *c && k + 3 < sizeof esc; c++) {
            if (*c == '|')
                esc[k++] = '\\';
            esc[k++] = *c;
        }
        esc[k] = '\0';
        sappend(&s, &len, &cap, "| `%s` | %s%s%s | `%s` | %s | %s%s%s | %s | %s | %s%s |\n", o->name,
                o->flag ? "`" : "", o->flag ? o->flag : "(none)", o->flag ? "`" : "", o->env, type_name(o),
                o->def[0] ? "`" : "", o->def[0] ? o->def : "(empty)", o->def[0] ? "`" : "", esc,
                (o->flags & FM_OPT_RELOAD) ? "yes" : "no", o->help, (o->flags & FM_OPT_SECRET) ? " Secret: never logged." : "");
    }
    return s;
}

void fm_config_log(const fm_config_t *cfg) {
    for (int i = 0; i < NOPTIONS; i++) {
        const fm_option_t *o = &options[i];
        const char *p = (const char *)cfg + o->offset;
        char val[600];
        if (o->flags & FM_OPT_SECRET)
            snprintf(val, sizeof val, "%s", p[0] ? "(set)" : "(unset)");
        else if (o->type == FM_OPT_INT)
            snprintf(val, sizeof val, "%d", *(const int *)p);
        else if (o->type == FM_OPT_BOOL)
            snprintf(val, sizeof val, "%s", *(const int *)p ? "true" : "false");
        else if (o->type == FM_OPT_DOUBLE)
            snprintf(val, sizeof val, "%g", *(const double *)p);
        else
            snprintf(val, sizeof val, "'%s'", p);
        fm_debug("config", "%s = %s (%s)", o->name, val, cfg->source[i] ? cfg->source[i] : "?");
    }
}
