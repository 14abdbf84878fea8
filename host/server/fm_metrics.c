/* fm_metrics.c: counters kept on the loop thread (no atomics needed) and
 * their Prometheus text exposition, with Triton's metric names under the fm_
 * prefix and model/version labels on every per-model series. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_server_int.h"
#include "fm_time.h"

static const double latency_bounds_s[FM_LATENCY_BUCKETS - 1] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                                 0.005,  0.01,    0.025,  0.05,  0.1,
                                                                 0.25,   0.5,     1,      2.5,   5};

fm_model_stats_t *fm_metrics_model(fm_metrics_t *m, const char *role, const char *name, const char *version) {
    for (fm_model_stats_t *s = m->models; s; s = s->next)
        if (!strcmp(s->role, role) && !strcmp(s->name, name) && !strcmp(s->version, version))
            return s;
    fm_model_stats_t *s = calloc(1, sizeof *s);
    if (!s) /* counters are not worth failing a swap for: share a static sink */ {
        static fm_model_stats_t spare;
        return &spare;
    }
    snprintf(s->role, sizeof s->role, "%s", role);
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->version, sizeof s->version, "%s", version);
    /* Append, so series keep their order in the exposition. */
    fm_model_stats_t **pp = &m->models;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    return s;
}

void fm_metrics_free(fm_metrics_t *m) {
    while (m->models) {
        fm_model_stats_t *s = m->models;
        m->models = s->next;
        free(s);
    }
}

void fm_metrics_batch(fm_model_stats_t *s, size_t images, uint64_t compute_us) {
    s->batches++;
    s->images += images;
    s->batch_images += images;
    s->batch_compute_us += compute_us;
    int b = 0;
    while (b < FM_BATCH_BUCKETS - 1 && images > ((size_t)1 << b))
        b++;
    s->batch_hist[b]++;
}

void fm_metrics_request_ok(fm_model_stats_t *s, uint64_t queue_us, uint64_t compute_us, uint64_t total_us) {
    s->success++;
    s->queue_us += queue_us;
    s->compute_us += compute_us;
    s->request_us += total_us;
    double t = (double)total_us / 1e6;
    int b = 0;
    while (b < FM_LATENCY_BUCKETS - 1 && t > latency_bounds_s[b])
        b++;
    s->latency_hist[b]++;
}

/* ---- Exposition -------------------------------------------------------- */

static void put(fm_mp_buf_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(fm_mp_buf_t *o, const char *fmt, ...) {
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        fm_mp_buf_append(o, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void head(fm_mp_buf_t *o, const char *name, const char *type, const char *help) {
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values escaped per the text format (backslash, quote, newline). */
static void labels(char *dst, size_t cap, const fm_model_stats_t *s) {
    char name[140], version[140];
    const char *src[2] = {s->name, s->version};
    char *out[2] = {name, version};
    for (int k = 0; k < 2; k++) {
        size_t j = 0;
        for (const char *c = src[k]; *c && j + 3 < sizeof name; c++) {
            if (*c == '\\' || *c == '"') {
                out[k][j++] = '\\';
                out[k][j++] = *c;
            } else if (*c == '\n') {
                out[k][j++] = '\\';
                out[k][j++] = 'n';
            } else {
                out[k][j++] = *c;
            }
        }
        out[k][j] = '\0';
    }
    snprintf(dst, cap, "model=\"%s\",version=\"%s\",role=\"%s\"", name, version, s->role);
}

static const fm_slot_t *live_slot(const fm_server_t *srv, const fm_model_stats_t *s) {
    for (const fm_slot_t *sl = srv->slots; sl; sl = sl->next)
        if (sl->stats == s)
            return sl;
    return NULL;
}

static void emit_to_buf(void *ctx, const char *text, size_t len) { fm_mp_buf_append(ctx, text, len); }

void fm_metrics_render(fm_server_t *srv, fm_mp_buf_t *o) {
    const fm_metrics_t *m = &srv->metrics;
    char l[400];
    const fm_model_stats_t *s;

    head(o, "fm_inference_request_success", "counter", "Successful predict requests.");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        put(o, "fm_inference_request_success{%s} %llu\n", l, (unsigned long long)s->success);
    }
    head(o, "fm_inference_request_failure", "counter", "Failed predict requests after routing, by reason.");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        for (int k = 0; k < FM_NREASONS; k++) {
            if (k == FM_PROTO_INVALID_ARGUMENT || k == FM_PROTO_NOT_FOUND || k == FM_PROTO_UNAUTHENTICATED ||
                k == FM_PROTO_PERMISSION_DENIED || k == FM_PROTO_PROTOCOL_ERROR)
                continue; /* refused before a model was chosen: see fm_rpc_errors */
            put(o, "fm_inference_request_failure{%s,reason=\"%s\"} %llu\n", l,
                k == FM_REASON_CANCELLED ? "CANCELLED" : fm_proto_code_name((fm_proto_code_t)k),
                (unsigned long long)s->failure[k]);
        }
    }
    head(o, "fm_inference_count", "counter", "Images computed (Triton: inferences).");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        put(o, "fm_inference_count{%s} %llu\n", l, (unsigned long long)s->images);
    }
    head(o, "fm_inference_exec_count", "counter", "Batches executed (Triton: executions).");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        put(o, "fm_inference_exec_count{%s} %llu\n", l, (unsigned long long)s->batches);
    }
    head(o, "fm_inference_request_duration_us", "counter",
         "Total time of successful requests, read to reply queued, in microseconds.");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        put(o, "fm_inference_request_duration_us{%s} %llu\n", l, (unsigned long long)s->request_us);
    }
    head(o, "fm_inference_queue_duration_us", "counter",
         "Total time successful requests waited before their first batch, in microseconds.");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        put(o, "fm_inference_queue_duration_us{%s} %llu\n", l, (unsigned long long)s->queue_us);
    }
    head(o, "fm_inference_compute_infer_duration_us", "counter",
         "Total compute time of the batches that held successful requests, per request, in microseconds.");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        put(o, "fm_inference_compute_infer_duration_us{%s} %llu\n", l, (unsigned long long)s->compute_us);
    }
    head(o, "fm_inference_exec_duration_us", "counter", "Total compute time of all batches, in microseconds.");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        put(o, "fm_inference_exec_duration_us{%s} %llu\n", l, (unsigned long long)s->batch_compute_us);
    }
    head(o, "fm_inference_batch_size", "histogram", "Images per executed batch.");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        uint64_t cum = 0;
        for (int b = 0; b < FM_BATCH_BUCKETS; b++) {
            cum += s->batch_hist[b];
            if (b < FM_BATCH_BUCKETS - 1)
                put(o, "fm_inference_batch_size_bucket{%s,le=\"%d\"} %llu\n", l, 1 << b, (unsigned long long)cum);
            else
                put(o, "fm_inference_batch_size_bucket{%s,le=\"+Inf\"} %llu\n", l, (unsigned long long)cum);
        }
        put(o, "fm_inference_batch_size_sum{%s} %llu\n", l, (unsigned long long)s->batch_images);
        put(o, "fm_inference_batch_size_count{%s} %llu\n", l, (unsigned long long)s->batches);
    }
    head(o, "fm_inference_request_latency_seconds", "histogram",
         "Server-side latency of successful requests (read to reply queued).");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        uint64_t cum = 0;
        for (int b = 0; b < FM_LATENCY_BUCKETS; b++) {
            cum += s->latency_hist[b];
            if (b < FM_LATENCY_BUCKETS - 1)
                put(o, "fm_inference_request_latency_seconds_bucket{%s,le=\"%g\"} %llu\n", l, latency_bounds_s[b],
                    (unsigned long long)cum);
            else
                put(o, "fm_inference_request_latency_seconds_bucket{%s,le=\"+Inf\"} %llu\n", l,
                    (unsigned long long)cum);
        }
        put(o, "fm_inference_request_latency_seconds_sum{%s} %.6f\n", l, (double)s->request_us / 1e6);
        put(o, "fm_inference_request_latency_seconds_count{%s} %llu\n", l, (unsigned long long)s->success);
    }
    head(o, "fm_inference_routed", "counter", "Predict requests routed to a version, by routing decision.");
    for (s = m->models; s; s = s->next) {
        labels(l, sizeof l, s);
        for (int k = 0; k < FM_NROUTES; k++)
            put(o, "fm_inference_routed{%s,route=\"%s\"} %llu\n", l, fm_route_name((fm_route_t)k),
                (unsigned long long)s->routed[k]);
    }
    head(o, "fm_inference_pending_request_count", "gauge", "Requests waiting in the version's queue.");
    for (s = m->models; s; s = s->next) {
        const fm_slot_t *sl = live_slot(srv, s);
        labels(l, sizeof l, s);
        put(o, "fm_inference_pending_request_count{%s} %zu\n", l, sl ? sl->queued_requests : (size_t)0);
    }
    head(o, "fm_inference_queue_images", "gauge", "Images waiting in the version's queue (max_queue_size bounds it).");
    for (s = m->models; s; s = s->next) {
        const fm_slot_t *sl = live_slot(srv, s);
        labels(l, sizeof l, s);
        put(o, "fm_inference_queue_images{%s} %zu\n", l, sl ? sl->queued_images : (size_t)0);
    }
    head(o, "fm_model_ready", "gauge", "1 while the version serves its role, 0 once replaced.");
    for (s = m->models; s; s = s->next) {
        const fm_slot_t *sl = live_slot(srv, s);
        labels(l, sizeof l, s);
        put(o, "fm_model_ready{%s} %d\n", l, sl && !sl->retired ? 1 : 0);
    }

    head(o, "fm_ab_test_ratio", "gauge", "Share of unpinned traffic routed to the canary.");
    put(o, "fm_ab_test_ratio %g\n", srv->ab_ratio);
    head(o, "fm_server_ready", "gauge", "1 when /ready answers 200.");
    put(o, "fm_server_ready %d\n", fm_server_is_ready(srv, NULL));
    head(o, "fm_server_draining", "gauge", "1 after SIGTERM/SIGINT until exit.");
    put(o, "fm_server_draining %d\n", srv->draining);
    head(o, "fm_server_uptime_seconds", "gauge", "Seconds since the server started.");
    put(o, "fm_server_uptime_seconds %.3f\n", (double)(fm_now_us() - srv->started_us) / 1e6);
    head(o, "fm_server_live_requests", "gauge", "Predict requests accepted and not yet finished.");
    put(o, "fm_server_live_requests %zu\n", srv->live_requests);
    head(o, "fm_batch_executors", "gauge", "Batches that can run at once (worker threads or backend slots).");
    put(o, "fm_batch_executors %d\n", srv->njobs);
    head(o, "fm_batches_in_flight", "gauge", "Batches running now.");
    put(o, "fm_batches_in_flight %d\n", srv->jobs_inflight);
    head(o, "fm_model_reloads", "counter", "Model loads after start (SIGHUP or the swap API), by result.");
    put(o, "fm_model_reloads{result=\"success\"} %llu\n", (unsigned long long)m->reloads_ok);
    put(o, "fm_model_reloads{result=\"failure\"} %llu\n", (unsigned long long)m->reloads_failed);

    if (srv->registry_enabled) {
        const fm_registry_status_t *r = &srv->registry;
        head(o, "fm_registry_connected", "gauge", "1 while the registry's LISTEN connection is up.");
        put(o, "fm_registry_connected %d\n", r->connected);
        head(o, "fm_registry_in_sync", "gauge", "1 when the served versions are those the registry assigns.");
        put(o, "fm_registry_in_sync %d\n", r->in_sync);
        head(o, "fm_registry_notifications", "counter", "Role-change notifications received from the registry.");
        put(o, "fm_registry_notifications %llu\n", (unsigned long long)r->notifications);
        head(o, "fm_registry_syncs", "counter", "Reads of the registry's roles.");
        put(o, "fm_registry_syncs %llu\n", (unsigned long long)r->syncs);
        head(o, "fm_registry_reconnects", "counter", "Times the registry connection was re-established.");
        put(o, "fm_registry_reconnects %llu\n", (unsigned long long)r->reconnects);
        head(o, "fm_registry_swaps", "counter", "Model swaps the registry asked for, by result.");
        put(o, "fm_registry_swaps{result=\"success\"} %llu\n", (unsigned long long)r->swaps_ok);
        put(o, "fm_registry_swaps{result=\"failure\"} %llu\n", (unsigned long long)r->swaps_failed);
    }

    head(o, "fm_rpc_connections", "gauge", "Open RPC connections.");
    put(o, "fm_rpc_connections %d\n", srv->nconns);
    head(o, "fm_rpc_connections_accepted", "counter", "RPC connections accepted.");
    put(o, "fm_rpc_connections_accepted %llu\n", (unsigned long long)m->conns_accepted);
    head(o, "fm_rpc_connections_rejected", "counter", "RPC connections refused (max_connections, draining).");
    put(o, "fm_rpc_connections_rejected %llu\n", (unsigned long long)m->conns_rejected);
    head(o, "fm_rpc_requests", "counter", "RPC calls that reached their method, by method.");
    for (int i = 0; i < fm_rpc_method_count(); i++)
        put(o, "fm_rpc_requests{method=\"%s\"} %llu\n", fm_rpc_method_name(i), (unsigned long long)m->rpc_calls[i]);
    head(o, "fm_rpc_errors", "counter", "Error replies, by protocol error code.");
    for (int k = 0; k < FM_PROTO_NCODES; k++)
        put(o, "fm_rpc_errors{code=\"%s\"} %llu\n", fm_proto_code_name((fm_proto_code_t)k),
            (unsigned long long)m->rpc_errors[k]);
    head(o, "fm_rpc_protocol_errors", "counter", "Connections closed for a malformed or oversized frame.");
    put(o, "fm_rpc_protocol_errors %llu\n", (unsigned long long)m->protocol_errors);
    head(o, "fm_rpc_backpressure_pauses", "counter",
         "Times a connection stopped being read at its in-flight or write-buffer limit.");
    put(o, "fm_rpc_backpressure_pauses %llu\n", (unsigned long long)m->backpressure_pauses);
    head(o, "fm_rpc_received_bytes", "counter", "Bytes read from RPC connections.");
    put(o, "fm_rpc_received_bytes %llu\n", (unsigned long long)m->rx_bytes);
    head(o, "fm_rpc_sent_bytes", "counter", "Bytes handed to the kernel for RPC connections.");
    put(o, "fm_rpc_sent_bytes %llu\n", (unsigned long long)m->tx_bytes);
    head(o, "fm_http_requests", "counter", "Requests on the health/metrics port.");
    put(o, "fm_http_requests %llu\n", (unsigned long long)m->http_requests);
    head(o, "fm_sink_calls", "counter", "Completed predictions handed to the prediction sinks.");
    put(o, "fm_sink_calls %llu\n", (unsigned long long)m->sink_calls);
    /* The sinks' own series (the prediction log's fm_log_*). */
    for (int i = 0; i < srv->nsinks; i++)
        if (srv->sinks[i]->metrics)
            srv->sinks[i]->metrics(srv->sinks[i], emit_to_buf, o);
}
