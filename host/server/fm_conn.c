/* fm_conn.c: RPC connections: accepting (with the connection limit), reading
 * frames straight into the msgpack reader's buffer, backpressure (stop
 * reading at the in-flight or write-buffer limit), batched reply writes, and
 * closing without leaving a request pointing at a freed connection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_error.h"
#include "fm_log.h"
#include "fm_server_int.h"

#define READ_BULK_BYTES (256 * 1024)

typedef struct conn_wreq {
    uv_write_t req; /* first member */
    char *data;
    size_t len;
} conn_wreq_t;

static void conn_process(fm_conn_t *c);

static void schedule_flush(fm_conn_t *c) {
    if (c->in_flush)
        return;
    c->in_flush = 1;
    c->flush_next = c->srv->flush_list;
    c->srv->flush_list = c;
}

static int should_read(const fm_conn_t *c) {
    const fm_config_t *cfg = &c->srv->cfg;
    return !c->closing && !c->eof && !c->close_after_flush && c->inflight < cfg->max_inflight_per_connection &&
           c->out.len + c->write_pending < (size_t)cfg->max_write_buffer_bytes;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    fm_conn_t *c = h->data;
    char *p;
    size_t len;
    (void)suggested;
    if (fm_mp_reader_buffer(c->reader, &p, &len) != 0) {
        *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS to on_read */
        return;
    }
    *buf = uv_buf_init(p, (unsigned)(len > (1u << 30) ? (1u << 30) : len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void update_reading(fm_conn_t *c) {
    int want = should_read(c);
    if (want && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
        if (!c->closing && !c->eof && !c->close_after_flush)
            c->srv->metrics.backpressure_pauses++;
    }
}

static void on_close(uv_handle_t *h) {
    fm_conn_t *c = h->data;
    fm_server_t *srv = c->srv;
    if (c->in_flush) {
        for (fm_conn_t **pp = &srv->flush_list; *pp; pp = &(*pp)->flush_next)
            if (*pp == c) {
                *pp = c->flush_next;
                break;
            }
    }
    fm_mp_reader_free(c->reader);
    fm_mp_buf_free(&c->out);
    free(c);
    fm_server_drain_check(srv);
}

void fm_conn_close(fm_conn_t *c) {
    if (c->closing)
        return;
    fm_server_t *srv = c->srv;
    c->closing = 1;
    if (c->reading)
        uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->nconns--;
    /* Requests outlive their connection only while a batch holds them. */
    while (c->reqs)
        fm_req_orphan(c->reqs);
    fm_debug("server", "connection %llu from %s closed", (unsigned long long)c->id, c->peer);
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void maybe_finish(fm_conn_t *c) {
    if (c->closing || c->out.len || c->write_pending)
        return;
    if (c->close_after_flush || (c->eof && c->inflight == 0))
        fm_conn_close(c);
}

static void on_write(uv_write_t *req, int status) {
    conn_wreq_t *w = (conn_wreq_t *)req;
    fm_conn_t *c = req->handle->data;
    c->write_pending -= w->len;
    free(w->data);
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED)
            fm_debug("server", "connection %llu: write failed: %s", (unsigned long long)c->id, uv_strerror(status));
        fm_conn_close(c);
        return;
    }
    update_reading(c);
    maybe_finish(c);
    fm_server_drain_check(c->srv);
}

static void flush(fm_conn_t *c) {
    if (c->closing || c->out.len == 0)
        return;
    fm_server_t *srv = c->srv;
    uv_buf_t b = uv_buf_init(c->out.data, (unsigned)c->out.len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n < 0 && n != UV_EAGAIN) {
        fm_conn_close(c);
        return;
    }
    size_t sent = n > 0 ? (size_t)n : 0;
    srv->metrics.tx_bytes += sent;
    if (sent == c->out.len) {
        c->out.len = 0; /* keep the capacity for the next replies */
        return;
    }
    size_t len;
    char *data = fm_mp_buf_steal(&c->out, &len);
    conn_wreq_t *w = malloc(sizeof *w);
    if (!w) {
        free(data);
        fm_conn_close(c);
        return;
    }
    if (sent)
        memmove(data, data + sent, len - sent);
    w->data = data;
    w->len = len - sent;
    b = uv_buf_init(data, (unsigned)w->len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
        free(data);
        free(w);
        fm_conn_close(c);
        return;
    }
    c->write_pending += w->len;
    srv->metrics.tx_bytes += w->len;
}

void fm_conn_flush_all(uv_prepare_t *h) {
    fm_server_t *srv = h->data;
    fm_conn_t *list = srv->flush_list;
    srv->flush_list = NULL;
    while (list) {
        fm_conn_t *c = list;
        list = c->flush_next;
        c->in_flush = 0;
        if (c->resume) {
            c->resume = 0;
            conn_process(c); /* frames held back while the connection was at its in-flight limit */
        }
        flush(c);
        update_reading(c);
        maybe_finish(c);
    }
    fm_server_drain_check(srv);
}

int fm_conn_all_flushed(fm_server_t *srv) {
    for (fm_conn_t *c = srv->conns; c; c = c->next)
        if (c->out.len || c->write_pending)
            return 0;
    return 1;
}

void fm_conn_close_all(fm_server_t *srv) {
    while (srv->conns)
        fm_conn_close(srv->conns);
}

fm_mp_buf_t *fm_conn_reply_begin(fm_conn_t *c) { return c->closing ? NULL : &c->out; }

void fm_conn_reply_end(fm_conn_t *c, int was_request) {
    if (was_request) {
        int was_full = c->inflight >= c->srv->cfg.max_inflight_per_connection;
        c->inflight--;
        if (was_full)
            c->resume = 1;
    }
    if (c->closing)
        return;
    if (c->out.oom) {
        fm_error("server", "connection %llu: out of memory for replies; closing it", (unsigned long long)c->id);
        fm_conn_close(c);
        return;
    }
    schedule_flush(c);
}

void fm_conn_protocol_error(fm_conn_t *c, int have_msgid, uint64_t msgid, const char *message) {
    fm_server_t *srv = c->srv;
    srv->metrics.protocol_errors++;
    fm_warn("server", "connection %llu from %s: %s; closing it", (unsigned long long)c->id, c->peer, message);
    if (!c->closing) {
        if (have_msgid) {
            fm_proto_pack_error_response(&c->out, msgid, FM_PROTO_PROTOCOL_ERROR, message);
        } else {
            /* No msgid to answer: a notification the client can at least log. */
            fm_proto_begin_notification(&c->out, "error", 1);
            fm_proto_pack_error(&c->out, FM_PROTO_PROTOCOL_ERROR, message);
        }
        srv->metrics.rpc_errors[FM_PROTO_PROTOCOL_ERROR]++;
    }
    c->close_after_flush = 1;
    update_reading(c);
    schedule_flush(c);
}

/* Decodes and handles the frames already received, as long as the
 * connection is under its in-flight limit. */
static void conn_process(fm_conn_t *c) {
    fm_server_t *srv = c->srv;
    int handled = 0;
    while (!c->closing && !c->close_after_flush && c->inflight < srv->cfg.max_inflight_per_connection) {
        fm_mp_msg_t *msg;
        int rc = fm_mp_reader_next(c->reader, &msg);
        if (rc == 0)
            break;
        if (rc < 0) {
            uint64_t msgid = 0;
            int have = fm_mp_reader_frame_msgid(c->reader, &msgid);
            char detail[300];
            snprintf(detail, sizeof detail, "%s", fm_last_error());
            fm_conn_protocol_error(c, have, msgid, detail);
            break;
        }
        fm_rpc_handle_frame(c, msg);
        handled++;
    }
    if (!c->closing)
        update_reading(c);
    if (handled)
        fm_batcher_pump(srv); /* once per read: frames that came together batch together */
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    fm_conn_t *c = s->data;
    (void)buf;
    if (nread > 0) {
        fm_mp_reader_consumed(c->reader, (size_t)nread);
        c->srv->metrics.rx_bytes += (uint64_t)nread;
        conn_process(c);
        return;
    }
    if (nread == 0)
        return;
    if (nread == UV_EOF) {
        /* The client finished sending; answer what it sent, then close. */
        c->eof = 1;
        if (fm_mp_reader_pending(c->reader))
            fm_debug("server", "connection %llu: EOF inside a frame (%zu bytes dropped)", (unsigned long long)c->id,
                     fm_mp_reader_pending(c->reader));
        update_reading(c);
        maybe_finish(c);
        return;
    }
    if (nread == UV_ENOBUFS) {
        fm_error("server", "connection %llu: no memory for the read buffer: %s", (unsigned long long)c->id,
                 fm_last_error());
    } else {
        fm_debug("server", "connection %llu: read error: %s", (unsigned long long)c->id, uv_strerror((int)nread));
    }
    fm_conn_close(c);
}

static void on_reject_close(uv_handle_t *h) { free(h); }

void fm_conn_on_connection(uv_stream_t *listener, int status) {
    fm_server_t *srv = listener->data;
    if (status < 0) {
        fm_warn("server", "accept: %s", uv_strerror(status));
        return;
    }
    if (srv->nconns >= srv->cfg.max_connections || srv->draining) {
        uv_tcp_t *t = malloc(sizeof *t);
        if (!t)
            return;
        uv_tcp_init(&srv->loop, t);
        if (uv_accept(listener, (uv_stream_t *)t) == 0) {
            fm_mp_buf_t b;
            fm_mp_buf_init(&b);
            fm_proto_begin_notification(&b, "error", 1);
            fm_proto_pack_error(&b, srv->draining ? FM_PROTO_UNAVAILABLE : FM_PROTO_OVERLOADED,
                                srv->draining ? "the server is draining" : "too many connections");
            uv_buf_t ub = uv_buf_init(b.data, (unsigned)b.len);
            uv_try_write((uv_stream_t *)t, &ub, 1); /* best effort: a fresh socket has room */
            fm_mp_buf_free(&b);
        }
        srv->metrics.conns_rejected++;
        uv_close((uv_handle_t *)t, on_reject_close);
        return;
    }
    fm_conn_t *c = calloc(1, sizeof *c);
    if (!c)
        return;
    c->srv = srv;
    uv_tcp_init(&srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(listener, (uv_stream_t *)&c->tcp) != 0 || fm_mp_reader_new(&srv->limits, READ_BULK_BYTES, &c->reader) != 0) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    c->id = ++srv->next_conn_id;
    c->auth = srv->cfg.auth_token[0] ? FM_AUTH_NONE : FM_AUTH_USER;
    struct sockaddr_storage ss;
    int len = sizeof ss;
    snprintf(c->peer, sizeof c->peer, "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        char ip[64] = "";
        if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof ip);
            snprintf(c->peer, sizeof c->peer, "[%s]:%d", ip, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
        } else {
            uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof ip);
            snprintf(c->peer, sizeof c->peer, "%s:%d", ip, ntohs(((struct sockaddr_in *)&ss)->sin_port));
        }
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->nconns++;
    srv->metrics.conns_accepted++;
    fm_debug("server", "connection %llu from %s", (unsigned long long)c->id, c->peer);
    update_reading(c);
}
