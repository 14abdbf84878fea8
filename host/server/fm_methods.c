/* fm_methods.c: the RPC methods, one table row each (name, handler, auth
 * level, help), the checks every frame goes through before a handler sees
 * it, and the life of a predict request from admission to its reply. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "fm_log.h"
#include "fm_model.h"
#include "fm_server_int.h"
#include "fm_time.h"
#include "fm_uuid.h"

typedef struct rpc_call {
    fm_conn_t *conn;
    uint64_t msgid;
    int notify;
    const fm_mp_obj_t *params;
    fm_mp_msg_t *msg; /* a handler that keeps the frame sets this to NULL */
} rpc_call_t;

typedef void (*method_fn)(fm_server_t *srv, rpc_call_t *call);

typedef struct method {
    const char *name;
    method_fn fn;
    int auth; /* FM_AUTH_NONE, FM_AUTH_USER, FM_AUTH_ADMIN */
    const char *help;
} method_t;

static void m_predict(fm_server_t *srv, rpc_call_t *call);
static void m_health(fm_server_t *srv, rpc_call_t *call);
static void m_ready(fm_server_t *srv, rpc_call_t *call);
static void m_models(fm_server_t *srv, rpc_call_t *call);
static void m_stats(fm_server_t *srv, rpc_call_t *call);
static void m_auth(fm_server_t *srv, rpc_call_t *call);
static void m_set_split(fm_server_t *srv, rpc_call_t *call);
static void m_feedback(fm_server_t *srv, rpc_call_t *call);

/* docs/protocol.md specifies each method in full. */
static const method_t methods[] = {
    {"predict", m_predict, FM_AUTH_USER, "classify images with the stable or canary model"},
    {"health", m_health, FM_AUTH_NONE, "liveness: the loop answers"},
    {"ready", m_ready, FM_AUTH_NONE, "readiness: models loaded and warmed up, not draining"},
    {"models", m_models, FM_AUTH_USER, "the loaded versions, their roles and the A/B split"},
    {"stats", m_stats, FM_AUTH_USER, "per-version counters and latencies"},
    {"auth", m_auth, FM_AUTH_NONE, "authenticate this connection with a token"},
    {"set_split", m_set_split, FM_AUTH_ADMIN, "change the share of unpinned traffic sent to the canary"},
    {"feedback", m_feedback, FM_AUTH_USER, "record the true label of an image of an earlier prediction"},
};
#define NMETHODS ((int)(sizeof methods / sizeof methods[0]))
_Static_assert(sizeof methods / sizeof methods[0] <= sizeof(((fm_metrics_t *)0)->rpc_calls) / sizeof(uint64_t),
               "fm_metrics_t.rpc_calls needs a slot per method");

const char *fm_rpc_method_name(int i) { return i >= 0 && i < NMETHODS ? methods[i].name : "?"; }
int fm_rpc_method_count(void) { return NMETHODS; }

/* ---- Replies ------------------------------------------------------------ */

/* The buffer to pack a result value into, after [1, msgid, nil, ; NULL for a
 * notification or a closing connection (pack nothing then). */
static fm_mp_buf_t *result_begin(rpc_call_t *call) {
    if (call->notify)
        return NULL;
    fm_mp_buf_t *b = fm_conn_reply_begin(call->conn);
    if (b)
        fm_proto_begin_result(b, call->msgid);
    return b;
}

static void result_end(rpc_call_t *call) { fm_conn_reply_end(call->conn, 1); }

static void reply_error(fm_server_t *srv, rpc_call_t *call, fm_proto_code_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void reply_error(fm_server_t *srv, rpc_call_t *call, fm_proto_code_t code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    srv->metrics.rpc_errors[code]++;
    if (!call->notify) {
        fm_mp_buf_t *b = fm_conn_reply_begin(call->conn);
        if (b)
            fm_proto_pack_error_response(b, call->msgid, code, msg);
    }
    fm_conn_reply_end(call->conn, 1);
}

/* ---- Frames ------------------------------------------------------------- */

void fm_rpc_handle_frame(fm_conn_t *c, fm_mp_msg_t *msg) {
    fm_server_t *srv = c->srv;
    const fm_mp_obj_t *root = msg->root;
    uint32_t len = fm_mp_len(root);
    uint64_t type = 99, msgid = 0;
    int is_array = fm_mp_type(root) == FM_MP_ARRAY;
    if (is_array && len >= 1)
        fm_mp_get_u64(fm_mp_at(root, 0), &type);
    rpc_call_t call = {.conn = c, .msg = msg};
    const fm_mp_obj_t *method, *params;
    if (is_array && type == FM_PROTO_REQUEST && len >= 2 && fm_mp_get_u64(fm_mp_at(root, 1), &msgid) == 0) {
        call.msgid = msgid;
        c->inflight++;
        if (len != 4) {
            reply_error(srv, &call, FM_PROTO_INVALID_ARGUMENT,
                        "a request is [0, msgid, method, params]: 4 elements, this one has %u", len);
            goto out;
        }
        method = fm_mp_at(root, 2);
        params = fm_mp_at(root, 3);
    } else if (is_array && type == FM_PROTO_NOTIFICATION && len == 3) {
        call.notify = 1;
        c->inflight++;
        method = fm_mp_at(root, 1);
        params = fm_mp_at(root, 2);
    } else {
        /* Nothing to answer to: not a request with a msgid, not a notification. */
        char text[160];
        fm_mp_to_text(root, text, sizeof text);
        char detail[256];
        snprintf(detail, sizeof detail, "not a msgpack-rpc request or notification: %s", text);
        fm_conn_protocol_error(c, 0, 0, detail);
        fm_mp_msg_free(msg);
        return;
    }
    size_t mlen;
    const char *mname = fm_mp_get_str(method, &mlen);
    if (!mname) {
        reply_error(srv, &call, FM_PROTO_INVALID_ARGUMENT, "the method name is a %s, not a string",
                    fm_mp_type_name(fm_mp_type(method)));
        goto out;
    }
    if (fm_mp_type(params) != FM_MP_ARRAY) {
        reply_error(srv, &call, FM_PROTO_INVALID_ARGUMENT, "params is a %s, not an array",
                    fm_mp_type_name(fm_mp_type(params)));
        goto out;
    }
    call.params = params;
    int idx = -1;
    for (int i = 0; i < NMETHODS; i++)
        if (strlen(methods[i].name) == mlen && memcmp(methods[i].name, mname, mlen) == 0)
            idx = i;
    if (idx < 0) {
        reply_error(srv, &call, FM_PROTO_NOT_FOUND, "unknown method '%.*s'", (int)(mlen > 64 ? 64 : mlen), mname);
        goto out;
    }
    const method_t *m = &methods[idx];
    if (c->auth < m->auth) {
        if (m->auth == FM_AUTH_ADMIN && !srv->cfg.admin_token[0])
            reply_error(srv, &call, FM_PROTO_PERMISSION_DENIED,
                        "%s is disabled: the server has no admin token (FM_ADMIN_TOKEN)", m->name);
        else if (c->auth == FM_AUTH_NONE)
            reply_error(srv, &call, FM_PROTO_UNAUTHENTICATED, "%s needs an authenticated connection: call auth first",
                        m->name);
        else
            reply_error(srv, &call, FM_PROTO_PERMISSION_DENIED, "%s needs the admin token", m->name);
        goto out;
    }
    srv->metrics.rpc_calls[idx]++;
    m->fn(srv, &call);
out:
    fm_mp_msg_free(call.msg);
}

/* ---- predict ------------------------------------------------------------ */

static void req_release(fm_req_t *r) {
    fm_server_t *srv = r->srv;
    if (r->conn) {
        if (r->cprev)
            r->cprev->cnext = r->cnext;
        else
            r->conn->reqs = r->cnext;
        if (r->cnext)
            r->cnext->cprev = r->cprev;
    }
    fm_slot_unref(srv, r->slot);
    fm_mp_msg_free(r->msg);
    free(r);
    srv->live_requests--;
    fm_server_drain_check(srv);
}

void fm_req_fail(fm_req_t *r, fm_proto_code_t code, const char *message) {
    fm_server_t *srv = r->srv;
    r->slot->stats->failure[code]++;
    srv->metrics.rpc_errors[code]++;
    if (r->conn) {
        if (!r->notify) {
            fm_mp_buf_t *b = fm_conn_reply_begin(r->conn);
            if (b)
                fm_proto_pack_error_response(b, r->msgid, code, message);
        }
        fm_conn_reply_end(r->conn, 1);
    }
    req_release(r);
}

void fm_req_orphan(fm_req_t *r) {
    fm_conn_t *c = r->conn;
    if (!c)
        return;
    if (r->cprev)
        r->cprev->cnext = r->cnext;
    else
        c->reqs = r->cnext;
    if (r->cnext)
        r->cnext->cprev = r->cprev;
    r->cprev = r->cnext = NULL;
    r->conn = NULL;
    if (r->queued && r->next == 0) {
        fm_batcher_unqueue(r->srv, r);
        r->slot->stats->failure[FM_REASON_CANCELLED]++;
        req_release(r);
    } else if (r->queued) {
        /* Part of it is computing: drop the part still queued; the request
         * is released when its running batches complete. */
        fm_batcher_unqueue(r->srv, r);
        r->done += r->n - r->next;
        r->next = r->n;
        if (!r->status)
            r->status = FM_ECANCELED;
    }
    /* Otherwise batches hold all its images; it is released on completion. */
}

static void pack_predict_result(fm_mp_buf_t *b, const fm_req_t *r) {
    const fm_slot_t *s = r->slot;
    fm_mp_pack_map(b, 9);
    fm_mp_pack_key(b, "model");
    fm_mp_pack_cstr(b, fm_role_name(s->role));
    fm_mp_pack_key(b, "model_version");
    fm_mp_pack_cstr(b, s->version);
    fm_mp_pack_key(b, "model_name");
    fm_mp_pack_cstr(b, s->name);
    fm_mp_pack_key(b, "request_id");
    fm_mp_pack_cstr(b, r->request_id);
    fm_mp_pack_key(b, "routing");
    fm_mp_pack_cstr(b, fm_route_name(r->route));
    fm_mp_pack_key(b, "queue_us");
    fm_mp_pack_uint(b, r->t_dispatch - r->t_arrival);
    fm_mp_pack_key(b, "compute_us");
    fm_mp_pack_uint(b, r->compute_us);
    fm_mp_pack_key(b, "count");
    fm_mp_pack_uint(b, r->n);
    fm_mp_pack_key(b, "predictions");
    fm_mp_pack_array(b, r->n);
    for (uint32_t i = 0; i < r->n; i++) {
        int32_t label = r->labels[i];
        fm_mp_pack_map(b, r->want_probs ? 4 : 3);
        fm_mp_pack_key(b, "label");
        fm_mp_pack_uint(b, (uint64_t)label);
        fm_mp_pack_key(b, "class");
        fm_mp_pack_cstr(b, label >= 0 && label < FM_NUM_CLASSES ? fm_class_names[label] : "?");
        fm_mp_pack_key(b, "confidence");
        fm_mp_pack_float(b, r->confidence[i]);
        if (r->want_probs) {
            fm_mp_pack_key(b, "probs");
            fm_mp_pack_array(b, 10);
            for (int k = 0; k < 10; k++)
                fm_mp_pack_float(b, r->probs[(size_t)i * 10 + k]);
        }
    }
}

void fm_req_complete(fm_req_t *r) {
    fm_server_t *srv = r->srv;
    fm_slot_t *s = r->slot;
    if (r->status) {
        fm_proto_code_t code = fm_proto_code_from_status(r->status);
        char msg[160];
        snprintf(msg, sizeof msg, "%s",
                 code == FM_PROTO_INTERNAL ? "the compute backend failed on this request's batch (details in the "
                                             "server log)"
                                           : "the server stopped before this request's images were all computed");
        r->next = r->n; /* nothing left queued */
        if (r->status == FM_ECANCELED && !r->conn) {
            s->stats->failure[FM_REASON_CANCELLED]++; /* its client left */
        } else {
            s->stats->failure[code]++;
            srv->metrics.rpc_errors[code]++;
        }
        if (r->conn) {
            if (!r->notify) {
                fm_mp_buf_t *b = fm_conn_reply_begin(r->conn);
                if (b)
                    fm_proto_pack_error_response(b, r->msgid, code, msg);
            }
            fm_conn_reply_end(r->conn, 1);
        }
        req_release(r);
        return;
    }
    uint64_t now = fm_now_us();
    uint64_t queue_us = r->t_dispatch - r->t_arrival, total_us = now - r->t_arrival;
    fm_metrics_request_ok(s->stats, queue_us, r->compute_us, total_us);
    if (r->conn) {
        if (!r->notify) {
            fm_mp_buf_t *b = fm_conn_reply_begin(r->conn);
            if (b) {
                fm_proto_begin_result(b, r->msgid);
                pack_predict_result(b, r);
            }
        }
        fm_conn_reply_end(r->conn, 1);
    }
    if (srv->nsinks) {
        fm_prediction_t p = {
            .request_id = r->request_id,
            .received_wall_us = r->wall_arrival,
            .role = fm_role_name(s->role),
            .model_name = s->name,
            .model_version = s->version,
            .model_sha256 = s->sha256,
            .routing = fm_route_name(r->route),
            .key = r->key,
            .key_len = r->key_len,
            .n = r->n,
            .labels = r->labels,
            .confidence = r->confidence,
            .probs = r->probs,
            .queue_us = queue_us,
            .compute_us = r->compute_us,
            .total_us = total_us,
            .client_connected = r->conn != NULL,
            .pixels = r->pixels,
            .images = r->images,
        };
        for (int i = 0; i < srv->nsinks; i++)
            srv->sinks[i]->on_prediction(srv->sinks[i], &p);
        srv->metrics.sink_calls++;
    }
    req_release(r);
}

static void m_predict(fm_server_t *srv, rpc_call_t *call) {
    const fm_config_t *cfg = &srv->cfg;
    if (fm_mp_len(call->params) != 1 || fm_mp_type(fm_mp_at(call->params, 0)) != FM_MP_MAP) {
        reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "predict takes one parameter, a map (got %u parameters)",
                    fm_mp_len(call->params));
        return;
    }
    const fm_mp_obj_t *map = fm_mp_at(call->params, 0);
    const fm_mp_obj_t *images = NULL;
    const char *pin = NULL, *key = NULL;
    size_t pin_len = 0, key_len = 0;
    uint64_t deadline_ms = 0;
    int probs = 0;
    for (uint32_t i = 0; i < fm_mp_len(map); i++) {
        const fm_mp_obj_t *k = fm_mp_key_at(map, i), *v = fm_mp_val_at(map, i);
        if (fm_mp_str_eq(k, "images")) {
            images = v;
        } else if (fm_mp_str_eq(k, "version")) {
            if (!(pin = fm_mp_get_str(v, &pin_len)) || pin_len == 0 || pin_len > 64) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                            "version must be a string of 1..64 bytes: \"stable\", \"canary\" or a version id");
                return;
            }
        } else if (fm_mp_str_eq(k, "key")) {
            if (fm_mp_type(v) == FM_MP_NIL)
                continue;
            if (!(key = fm_mp_get_str(v, &key_len)) || key_len == 0 || key_len > 256) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "key must be a string of 1..256 bytes");
                return;
            }
        } else if (fm_mp_str_eq(k, "deadline_ms")) {
            if (fm_mp_get_u64(v, &deadline_ms) != 0 || deadline_ms > 3600000) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                            "deadline_ms must be an unsigned integer of at most 3600000 (0 = none)");
                return;
            }
        } else if (fm_mp_str_eq(k, "probs")) {
            if (fm_mp_get_bool(v, &probs) != 0) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "probs must be a boolean");
                return;
            }
        } else {
            char text[80];
            fm_mp_to_text(k, text, sizeof text);
            reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                        "unknown predict field %s (fields: images, version, key, deadline_ms, probs)", text);
            return;
        }
    }
    /* The images: one bin of N*784 bytes, or an array of 784-byte bins. */
    const uint8_t *pixels = NULL;
    uint32_t n = 0;
    uint32_t max_n = (uint32_t)cfg->max_images_per_request;
    if (!images) {
        reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "predict needs 'images'");
        return;
    }
    if (fm_mp_type(images) == FM_MP_BIN) {
        size_t blen;
        pixels = fm_mp_get_bin(images, &blen);
        if (blen == 0 || blen % 784 != 0 || blen / 784 > max_n) {
            reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                        "images is a bin of %zu bytes; it must hold 1..%u whole images of 784 bytes (28x28, one byte "
                        "per pixel)",
                        blen, max_n);
            return;
        }
        n = (uint32_t)(blen / 784);
    } else if (fm_mp_type(images) == FM_MP_ARRAY) {
        n = fm_mp_len(images);
        if (n == 0 || n > max_n) {
            reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "images is an array of %u entries; 1..%u allowed", n,
                        max_n);
            return;
        }
        for (uint32_t i = 0; i < n; i++) {
            size_t blen;
            if (!fm_mp_get_bin(fm_mp_at(images, i), &blen) || blen != 784) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                            "images[%u] must be a bin of exactly 784 bytes (got a %s of %zu bytes)", i,
                            fm_mp_type_name(fm_mp_type(fm_mp_at(images, i))),
                            fm_mp_get_bin(fm_mp_at(images, i), &blen) ? blen : (size_t)0);
                return;
            }
        }
    } else {
        reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                    "images must be a bin of N*784 bytes or an array of 784-byte bins, not a %s",
                    fm_mp_type_name(fm_mp_type(images)));
        return;
    }
    const char *why;
    if (srv->draining) {
        reply_error(srv, call, FM_PROTO_UNAVAILABLE, "the server is draining; send this request to another replica");
        return;
    }
    if (!fm_server_is_ready(srv, &why)) {
        reply_error(srv, call, FM_PROTO_UNAVAILABLE, "not ready: %s", why);
        return;
    }
    fm_slot_t *slot;
    fm_route_t route;
    char reason[200];
    int rc = fm_route(srv, pin, pin_len, key, key_len, &slot, &route, reason, sizeof reason);
    if (rc) {
        reply_error(srv, call, rc == FM_ENOTFOUND ? FM_PROTO_NOT_FOUND : FM_PROTO_UNAVAILABLE, "%s", reason);
        return;
    }
    if (slot->queued_images + n > (size_t)srv->max_queue_size) {
        slot->stats->failure[FM_PROTO_OVERLOADED]++;
        reply_error(srv, call, FM_PROTO_OVERLOADED,
                    "the %s model's queue is full (%zu of %d images waiting); retry later or on another replica",
                    fm_role_name(slot->role), slot->queued_images, srv->max_queue_size);
        return;
    }
    /* One block: the request, its result arrays, and (for an array of bins)
     * the image pointers. */
    size_t bytes = sizeof(fm_req_t) + (size_t)n * (sizeof(int32_t) + sizeof(float) + 10 * sizeof(float)) +
                   (pixels ? 0 : (size_t)n * sizeof(uint8_t *));
    fm_req_t *r = calloc(1, bytes);
    if (!r) {
        reply_error(srv, call, FM_PROTO_OVERLOADED, "out of memory for a request of %u images", n);
        return;
    }
    char *p = (char *)(r + 1);
    r->probs = (float *)p;
    p += (size_t)n * 10 * sizeof(float);
    r->confidence = (float *)p;
    p += (size_t)n * sizeof(float);
    r->labels = (int32_t *)p;
    p += (size_t)n * sizeof(int32_t);
    if (!pixels) {
        const uint8_t **ptrs = (const uint8_t **)(void *)p;
        for (uint32_t i = 0; i < n; i++) {
            size_t blen;
            ptrs[i] = fm_mp_get_bin(fm_mp_at(images, i), &blen);
        }
        r->images = ptrs;
    }
    r->srv = srv;
    r->conn = call->conn;
    r->msgid = call->msgid;
    r->notify = call->notify;
    r->msg = call->msg;
    call->msg = NULL; /* the request owns the frame, and with it the pixels */
    r->pixels = pixels;
    r->n = n;
    r->slot = slot;
    fm_slot_ref(slot);
    r->route = route;
    r->want_probs = probs;
    r->key = key;
    r->key_len = key_len;
    r->t_arrival = fm_now_us();
    r->wall_arrival = fm_wall_us();
    if (deadline_ms)
        r->deadline = r->t_arrival + deadline_ms * 1000;
    fm_uuid7(srv, r->request_id);
    slot->stats->routed[route]++;
    r->cnext = call->conn->reqs;
    if (r->cnext)
        r->cnext->cprev = r;
    call->conn->reqs = r;
    srv->live_requests++;
    fm_batcher_enqueue(srv, r);
}

/* ---- The small methods -------------------------------------------------- */

static void m_health(fm_server_t *srv, rpc_call_t *call) {
    fm_mp_buf_t *b = result_begin(call);
    if (b) {
        fm_mp_pack_map(b, 2);
        fm_mp_pack_key(b, "status");
        fm_mp_pack_cstr(b, "ok");
        fm_mp_pack_key(b, "uptime_s");
        fm_mp_pack_double(b, (double)(fm_now_us() - srv->started_us) / 1e6);
    }
    result_end(call);
}

static void m_ready(fm_server_t *srv, rpc_call_t *call) {
    const char *why = "";
    int ready = fm_server_is_ready(srv, &why);
    fm_mp_buf_t *b = result_begin(call);
    if (b) {
        fm_mp_pack_map(b, 2);
        fm_mp_pack_key(b, "ready");
        fm_mp_pack_bool(b, ready);
        fm_mp_pack_key(b, "reason");
        fm_mp_pack_cstr(b, ready ? "" : why);
    }
    result_end(call);
}

static void pack_slot(fm_mp_buf_t *b, const fm_slot_t *s) {
    fm_mp_pack_map(b, 9);
    fm_mp_pack_key(b, "role");
    fm_mp_pack_cstr(b, fm_role_name(s->role));
    fm_mp_pack_key(b, "name");
    fm_mp_pack_cstr(b, s->name);
    fm_mp_pack_key(b, "version");
    fm_mp_pack_cstr(b, s->version);
    fm_mp_pack_key(b, "arch");
    fm_mp_pack_cstr(b, s->arch);
    fm_mp_pack_key(b, "sha256");
    fm_mp_pack_cstr(b, s->sha256);
    fm_mp_pack_key(b, "dir");
    fm_mp_pack_cstr(b, s->dir);
    fm_mp_pack_key(b, "loaded_at_us");
    fm_mp_pack_int(b, s->loaded_wall_us);
    fm_mp_pack_key(b, "queued_images");
    fm_mp_pack_uint(b, s->queued_images);
    fm_mp_pack_key(b, "inflight_batches");
    fm_mp_pack_uint(b, (uint64_t)s->inflight_batches);
}

/* The registry follower's view (only when the server follows a registry). */
static void pack_registry(fm_mp_buf_t *b, const fm_registry_status_t *r) {
    fm_mp_pack_map(b, 11);
    fm_mp_pack_key(b, "connected");
    fm_mp_pack_bool(b, r->connected);
    fm_mp_pack_key(b, "in_sync");
    fm_mp_pack_bool(b, r->in_sync);
    fm_mp_pack_key(b, "stable");
    if (r->stable[0])
        fm_mp_pack_cstr(b, r->stable);
    else
        fm_mp_pack_nil(b);
    fm_mp_pack_key(b, "canary");
    if (r->canary[0])
        fm_mp_pack_cstr(b, r->canary);
    else
        fm_mp_pack_nil(b);
    fm_mp_pack_key(b, "last_error");
    fm_mp_pack_cstr(b, r->last_error);
    fm_mp_pack_key(b, "notifications");
    fm_mp_pack_uint(b, r->notifications);
    fm_mp_pack_key(b, "syncs");
    fm_mp_pack_uint(b, r->syncs);
    fm_mp_pack_key(b, "reconnects");
    fm_mp_pack_uint(b, r->reconnects);
    fm_mp_pack_key(b, "swaps");
    fm_mp_pack_uint(b, r->swaps_ok);
    fm_mp_pack_key(b, "failed_swaps");
    fm_mp_pack_uint(b, r->swaps_failed);
    fm_mp_pack_key(b, "last_sync_us");
    fm_mp_pack_int(b, r->last_sync_wall_us);
}

static void m_models(fm_server_t *srv, rpc_call_t *call) {
    fm_mp_buf_t *b = result_begin(call);
    if (b) {
        uint32_t n = (srv->active[0] != NULL) + (srv->active[1] != NULL);
        fm_mp_pack_map(b, 4 + (srv->registry_enabled ? 1 : 0));
        fm_mp_pack_key(b, "models");
        fm_mp_pack_array(b, n);
        for (int r = 0; r < FM_NROLES; r++)
            if (srv->active[r])
                pack_slot(b, srv->active[r]);
        fm_mp_pack_key(b, "ab_test_ratio");
        fm_mp_pack_double(b, srv->active[FM_ROLE_CANARY] ? srv->ab_ratio : 0.0);
        fm_mp_pack_key(b, "configured_ab_test_ratio");
        fm_mp_pack_double(b, srv->ab_ratio);
        fm_mp_pack_key(b, "backend");
        fm_mp_pack_cstr(b, srv->backend_desc);
        if (srv->registry_enabled) {
            fm_mp_pack_key(b, "registry");
            pack_registry(b, &srv->registry);
        }
    }
    result_end(call);
}

static void m_stats(fm_server_t *srv, rpc_call_t *call) {
    fm_mp_buf_t *b = result_begin(call);
    if (b) {
        uint32_t nm = 0;
        for (fm_model_stats_t *s = srv->metrics.models; s; s = s->next)
            nm++;
        fm_mp_pack_map(b, 5);
        fm_mp_pack_key(b, "uptime_s");
        fm_mp_pack_double(b, (double)(fm_now_us() - srv->started_us) / 1e6);
        fm_mp_pack_key(b, "connections");
        fm_mp_pack_uint(b, (uint64_t)srv->nconns);
        fm_mp_pack_key(b, "live_requests");
        fm_mp_pack_uint(b, srv->live_requests);
        fm_mp_pack_key(b, "draining");
        fm_mp_pack_bool(b, srv->draining);
        fm_mp_pack_key(b, "models");
        fm_mp_pack_array(b, nm);
        for (fm_model_stats_t *s = srv->metrics.models; s; s = s->next) {
            fm_mp_pack_map(b, 11);
            fm_mp_pack_key(b, "role");
            fm_mp_pack_cstr(b, s->role);
            fm_mp_pack_key(b, "name");
            fm_mp_pack_cstr(b, s->name);
            fm_mp_pack_key(b, "version");
            fm_mp_pack_cstr(b, s->version);
            fm_mp_pack_key(b, "success");
            fm_mp_pack_uint(b, s->success);
            uint32_t nf = 0;
            for (int k = 0; k < FM_NREASONS; k++)
                nf += s->failure[k] != 0;
            fm_mp_pack_key(b, "failure");
            fm_mp_pack_map(b, nf);
            for (int k = 0; k < FM_NREASONS; k++)
                if (s->failure[k]) {
                    fm_mp_pack_cstr(b, k == FM_REASON_CANCELLED ? "CANCELLED" : fm_proto_code_name((fm_proto_code_t)k));
                    fm_mp_pack_uint(b, s->failure[k]);
                }
            fm_mp_pack_key(b, "images");
            fm_mp_pack_uint(b, s->images);
            fm_mp_pack_key(b, "batches");
            fm_mp_pack_uint(b, s->batches);
            fm_mp_pack_key(b, "queue_us");
            fm_mp_pack_uint(b, s->queue_us);
            fm_mp_pack_key(b, "compute_us");
            fm_mp_pack_uint(b, s->compute_us);
            fm_mp_pack_key(b, "request_us");
            fm_mp_pack_uint(b, s->request_us);
            fm_mp_pack_key(b, "routed");
            fm_mp_pack_map(b, FM_NROUTES);
            for (int k = 0; k < FM_NROUTES; k++) {
                fm_mp_pack_cstr(b, fm_route_name((fm_route_t)k));
                fm_mp_pack_uint(b, s->routed[k]);
            }
        }
    }
    result_end(call);
}

/* Compares without stopping at the first difference, so the time taken does
 * not tell an attacker how much of a guess was right. */
static int token_eq(const char *given, size_t glen, const char *want) {
    size_t wlen = strlen(want);
    unsigned char diff = (unsigned char)(glen != wlen);
    for (size_t i = 0; i < wlen; i++)
        diff |= (unsigned char)(want[i] ^ (i < glen ? given[i] : 0));
    return wlen > 0 && diff == 0;
}

static void m_auth(fm_server_t *srv, rpc_call_t *call) {
    size_t tlen;
    const char *tok = fm_mp_len(call->params) == 1 ? fm_mp_get_str(fm_mp_at(call->params, 0), &tlen) : NULL;
    if (!tok) {
        reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "auth takes one parameter, the token (a string)");
        return;
    }
    const fm_config_t *cfg = &srv->cfg;
    if (token_eq(tok, tlen, cfg->admin_token)) {
        call->conn->auth = FM_AUTH_ADMIN;
    } else if (token_eq(tok, tlen, cfg->auth_token) || !cfg->auth_token[0]) {
        if (call->conn->auth < FM_AUTH_USER)
            call->conn->auth = FM_AUTH_USER;
    } else {
        fm_warn("server", "connection %llu from %s: wrong token", (unsigned long long)call->conn->id, call->conn->peer);
        reply_error(srv, call, FM_PROTO_UNAUTHENTICATED, "wrong token");
        return;
    }
    fm_mp_buf_t *b = result_begin(call);
    if (b) {
        fm_mp_pack_map(b, 1);
        fm_mp_pack_key(b, "level");
        fm_mp_pack_cstr(b, call->conn->auth == FM_AUTH_ADMIN ? "admin" : "user");
    }
    result_end(call);
}

static void m_set_split(fm_server_t *srv, rpc_call_t *call) {
    double ratio;
    if (fm_mp_len(call->params) != 1 || fm_mp_get_double(fm_mp_at(call->params, 0), &ratio) != 0 || !(ratio >= 0.0) ||
        !(ratio <= 1.0)) {
        reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "set_split takes one number, the canary share, in 0..1");
        return;
    }
    double previous = srv->ab_ratio;
    fm_server_set_split(srv, ratio);
    fm_info("server", "A/B split set to %.4f (was %.4f) by connection %llu from %s", ratio, previous,
            (unsigned long long)call->conn->id, call->conn->peer);
    fm_mp_buf_t *b = result_begin(call);
    if (b) {
        fm_mp_pack_map(b, 2);
        fm_mp_pack_key(b, "previous");
        fm_mp_pack_double(b, previous);
        fm_mp_pack_key(b, "ab_test_ratio");
        fm_mp_pack_double(b, ratio);
    }
    result_end(call);
}

/* ---- feedback ----------------------------------------------------------- */

/* The true label of one image of an earlier prediction, for the prediction
 * log (live accuracy). Checked here; queued by the sinks that take
 * feedback (the PostgreSQL log writer), which write it like everything
 * else: batched, spooled while the database is away, exactly once. */
static void m_feedback(fm_server_t *srv, rpc_call_t *call) {
    if (fm_mp_len(call->params) != 1 || fm_mp_type(fm_mp_at(call->params, 0)) != FM_MP_MAP) {
        reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "feedback takes one parameter, a map (got %u parameters)",
                    fm_mp_len(call->params));
        return;
    }
    const fm_mp_obj_t *map = fm_mp_at(call->params, 0);
    fm_feedback_t f = {.received_wall_us = fm_wall_us()};
    size_t idlen = 0;
    uint64_t label = 10, index = 0;
    int have_label = 0;
    for (uint32_t i = 0; i < fm_mp_len(map); i++) {
        const fm_mp_obj_t *k = fm_mp_key_at(map, i), *v = fm_mp_val_at(map, i);
        if (fm_mp_str_eq(k, "request_id")) {
            uint8_t id[FM_UUID_BYTES];
            f.request_id = fm_mp_get_str(v, &idlen);
            if (!f.request_id || fm_uuid_parse_n(f.request_id, idlen, id) != 0 || fm_uuid_version(id) != 7) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                            "request_id must be the 36-character UUIDv7 text a predict reply carried");
                return;
            }
        } else if (fm_mp_str_eq(k, "image_index")) {
            uint64_t lim = (uint64_t)srv->cfg.max_images_per_request < 32768 ? (uint64_t)srv->cfg.max_images_per_request
                                                                              : 32768;
            if (fm_mp_get_u64(v, &index) != 0 || index >= lim) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                            "image_index must be an unsigned integer below %llu (the image's position in the "
                            "predict request)",
                            (unsigned long long)lim);
                return;
            }
        } else if (fm_mp_str_eq(k, "label")) {
            if (fm_mp_get_u64(v, &label) != 0 || label > 9) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "label must be an unsigned integer 0..9");
                return;
            }
            have_label = 1;
        } else if (fm_mp_str_eq(k, "source")) {
            if (fm_mp_type(v) == FM_MP_NIL)
                continue;
            if (!(f.source = fm_mp_get_str(v, &f.source_len)) || f.source_len == 0 || f.source_len > 64) {
                reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "source must be a string of 1..64 bytes");
                return;
            }
        } else {
            char text[80];
            fm_mp_to_text(k, text, sizeof text);
            reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT,
                        "unknown feedback field %s (fields: request_id, image_index, label, source)", text);
            return;
        }
    }
    if (!f.request_id || !have_label) {
        reply_error(srv, call, FM_PROTO_INVALID_ARGUMENT, "feedback needs 'request_id' and 'label'");
        return;
    }
    f.image_index = (uint32_t)index;
    f.label = (int)label;
    int taken = 0;
    for (int i = 0; i < srv->nsinks; i++) {
        fm_sink_t *sk = srv->sinks[i];
        if (!sk->on_feedback)
            continue;
        int rc = sk->on_feedback(sk, &f);
        if (rc == FM_EOVERLOADED) {
            reply_error(srv, call, FM_PROTO_OVERLOADED, "%s", fm_last_error());
            return;
        }
        if (rc) {
            reply_error(srv, call, rc == FM_EINVAL ? FM_PROTO_INVALID_ARGUMENT : FM_PROTO_INTERNAL, "%s",
                        fm_last_error());
            return;
        }
        taken++;
    }
    if (!taken) {
        reply_error(srv, call, FM_PROTO_UNAVAILABLE,
                    "this server does not record feedback: it runs without a prediction log (FM_DATABASE_URL)");
        return;
    }
    fm_mp_buf_t *b = result_begin(call);
    if (b) {
        fm_mp_pack_map(b, 1);
        fm_mp_pack_key(b, "accepted");
        fm_mp_pack_bool(b, 1);
    }
    result_end(call);
}
